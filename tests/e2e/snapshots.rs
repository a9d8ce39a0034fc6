//! Snapshot tests: every file hb renders for demosite (the /etc files, init script,
//! systemd unit, copyright, changelog, lintian overrides, control file and maintainer
//! scripts), as found in the built package. A template change shows up as a reviewed
//! snapshot diff (`cargo insta review`).

use std::process::Command;

use crate::harness::{Ws, run};

#[test]
fn rendered_files_of_demosite() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let deb = ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb");
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(x.path()));
    let read = |rel: &str| std::fs::read_to_string(x.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    for (name, rel) in [
        ("control", "DEBIAN/control"),
        ("conffiles", "DEBIAN/conffiles"),
        ("postinst", "DEBIAN/postinst"),
        ("prerm", "DEBIAN/prerm"),
        ("postrm", "DEBIAN/postrm"),
        ("config.cfg", "etc/demosite/config.cfg"),
        ("logging.conf", "etc/demosite/logging.conf"),
        ("default", "etc/default/demosite"),
        ("init.d", "etc/init.d/demosite"),
        ("systemd.service", "lib/systemd/system/demosite.service"),
        ("copyright", "usr/share/doc/demosite/copyright"),
        ("lintian-overrides", "usr/share/lintian/overrides/demosite"),
        ("pyvenv.cfg", "usr/lib/demosite/pyvenv.cfg"),
        ("gunicorn-launcher", "usr/lib/demosite/bin/gunicorn"),
    ] {
        insta::assert_snapshot!(name, read(rel));
    }
    let changelog = run(Command::new("gzip").arg("-dc").arg(x.path().join("usr/share/doc/demosite/changelog.gz")));
    insta::assert_snapshot!("changelog", changelog);
}

/// The Django example's maintainer scripts and service files: an `on_configure` hook,
/// a config file with a mode and group, a generated secret.
#[test]
fn rendered_files_of_the_django_example() {
    let ws = Ws::example("django");
    ws.ok(&["build", "//examples/django:deb"]);
    let deb = ws.path("hb-out/examples/django/django-demo_0.1.0_amd64.deb");
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(x.path()));
    let read = |rel: &str| std::fs::read_to_string(x.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    for (name, rel) in [
        ("django-postinst", "DEBIAN/postinst"),
        ("django-postrm", "DEBIAN/postrm"),
        ("django-default", "etc/default/django-demo"),
        ("django-systemd.service", "lib/systemd/system/django-demo.service"),
    ] {
        insta::assert_snapshot!(name, read(rel));
    }
}
