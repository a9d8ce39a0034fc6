//! `hb test`: the install test users run, on demosite (which passes, under systemd and
//! under the init script) and on packages broken three ways, each failing at the step
//! that shows it: a service that dies at start, one listening on another port than its
//! package says, and a package whose purge leaves a file behind.

use crate::harness::{Ws, show};

/// demosite on a port of its own (other tests serve on 8000 meanwhile), changed by `edit`.
fn demosite(port: u16, edit: impl Fn(&str) -> String) -> Ws {
    let ws = Ws::demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &edit(&build.replace("port = 8000", &format!("port = {port}"))));
    ws
}

fn hb_test(ws: &Ws, args: &[&str]) -> (bool, String) {
    let out = ws.cmd().arg("test").arg("//demosite:deb").args(args).output().unwrap();
    (out.status.success(), format!("{}\n{}", show(&out), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn hb_test_passes_a_good_package_under_systemd_and_sysv() {
    let ws = demosite(8071, |b| format!("{b}\n[deb.test]\npath = \"/\"\nexpect = \"Built by hb, byte for byte.\"\n"));
    for init in ["systemd", "sysv"] {
        let (ok, out) = hb_test(&ws, &["--init", init]);
        assert!(ok, "--init {init}:\n{out}");
        for step in [
            "install: dpkg -i demosite_0.1.0_amd64.deb",
            "service running",
            "request http://127.0.0.1:8071/",
            "restart",
            "upgrade to the same version keeps an edited conffile",
            "remove: dpkg --remove stops it: no process of demosite left",
            "purge: dpkg --purge leaves nothing",
            "passed its install test",
        ] {
            assert!(out.contains(step), "--init {init}: no `{step}` in\n{out}");
        }
    }
    // What the answer must contain is checked.
    let (ok, out) = hb_test(&ws, &["--init", "sysv", "--expect", "no such text"]);
    assert!(!ok && out.contains("step `request http://127.0.0.1:8071/` failed"), "{out}");
    assert!(out.contains("does not contain \"no such text\""), "{out}");
}

#[test]
fn hb_test_names_the_failing_step_of_broken_packages() {
    // A service that dies right after it starts.
    let ws = demosite(8072, str::to_string);
    let init = std::fs::read_to_string(ws.path("demosite/demosite/__init__.py")).unwrap();
    ws.write("demosite/demosite/__init__.py", &format!("{init}\nraise RuntimeError('broken on purpose')\n"));
    let (ok, out) = hb_test(&ws, &["--init", "systemd"]);
    assert!(!ok, "{out}");
    assert!(out.contains("step `service running` failed"), "{out}");
    // The unit's start check says why, and the journal shows the server's end.
    assert!(out.contains("the server exited right after it started"), "{out}");
    assert!(out.contains("Worker failed to boot") || out.contains("broken on purpose"), "{out}");

    // A server listening on another port than the package's.
    let ws = demosite(8073, |b| {
        b.replace(
            "workers = 2",
            "workers = 2\ncommand = [\"{prefix}/bin/gunicorn\", \"--bind\", \"127.0.0.1:8074\", \"{module}\"]",
        )
    });
    // Under systemd the unit's start check fails it; with the init script, the request.
    let (ok, out) = hb_test(&ws, &["--init", "systemd"]);
    assert!(!ok, "{out}");
    assert!(out.contains("step `service running` failed"), "{out}");
    assert!(out.contains("its processes listen on: 8074"), "{out}");
    assert!(out.contains("did not listen on port 8073"), "the unit says why: {out}");

    // A purge that leaves a file.
    let ws = demosite(8075, |b| format!("{b}\n[deb.scripts]\npostinst = \"postinst.sh\"\n"));
    ws.write(
        "demosite/postinst.sh",
        "#!/bin/sh\nset -e\n#HB#\nmkdir -p /var/opt/demosite && touch /var/opt/demosite/cache.db\n",
    );
    let (ok, out) = hb_test(&ws, &["--init", "sysv"]);
    assert!(!ok, "{out}");
    assert!(out.contains("step `purge: dpkg --purge leaves nothing` failed"), "{out}");
    assert!(out.contains("/var/opt/demosite/cache.db"), "{out}");

    // Not a deb target.
    let (ok, out) = {
        let o = ws.cmd().args(["test", "//demosite:app"]).output().unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    assert!(!ok && out.contains("is a python_app target; hb test installs packages"), "{out}");
}
