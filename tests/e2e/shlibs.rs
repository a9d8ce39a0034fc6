//! Depends computed from the package's ELF files: equal to what Debian's own
//! `dpkg-shlibdeps` says for the same files on this (bookworm) machine, for demosite
//! (markupsafe's extension) and the FastAPI example (pydantic-core, Rust); and an
//! object needing a library no package provides stops the build, naming both.

use std::process::Command;

use crate::harness::{Ws, run};

/// `dpkg-shlibdeps`'s Depends for the ELF objects of `deb`, run on this machine.
fn dpkg_shlibdeps(deb: &std::path::Path) -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    assert!(
        os.contains("VERSION_CODENAME=bookworm"),
        "this test compares with bookworm's dpkg-shlibdeps and libraries: run it on Debian 12 (as CI does)"
    );
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(x.path().join("root")));
    std::fs::create_dir(x.path().join("debian")).unwrap();
    std::fs::write(x.path().join("debian/control"), "Source: x\n").unwrap();
    let objects = run(Command::new("find").arg("root").args(["-type", "f", "-name", "*.so*"]).current_dir(x.path()));
    let out = run(Command::new("dpkg-shlibdeps").arg("-O").args(objects.lines()).current_dir(x.path()));
    out.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")).unwrap_or_default().to_string()
}

fn hb_depends(deb: &std::path::Path) -> String {
    run(Command::new("dpkg-deb").arg("-f").arg(deb).arg("Depends")).trim().to_string()
}

#[test]
fn depends_of_compiled_code_equal_dpkg_shlibdeps() {
    for (ws, deb) in [
        (Ws::demosite(), "hb-out/demosite/demosite_0.1.0_amd64.deb"),
        (Ws::example("fastapi"), "hb-out/examples/fastapi/fastapi-demo_0.1.0_amd64.deb"),
    ] {
        let label = if deb.contains("fastapi") { "//examples/fastapi:deb" } else { "//demosite:deb" };
        ws.ok(&["build", label]);
        let deb = ws.path(deb);
        let theirs = dpkg_shlibdeps(&deb);
        assert!(!theirs.is_empty(), "dpkg-shlibdeps found no dependency for {}", deb.display());
        let ours = hb_depends(&deb);
        assert!(
            ours.starts_with(&format!("{theirs}, python3 (>= ")),
            "{label}: hb says `{ours}`, dpkg-shlibdeps `{theirs}`"
        );
    }
}

#[test]
fn an_object_needing_a_library_no_package_provides_is_named() {
    let ws = Ws::demosite();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("empty.c"), "int nothing(void) { return 0; }\n").unwrap();
    std::fs::write(d.path().join("plugin.c"), "int nothing(void);\nint plugin(void) { return nothing(); }\n").unwrap();
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o", "libnothere.so", "empty.c", "-Wl,-soname,libnothere.so.7"])
        .current_dir(d.path()));
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o", "plugin.so", "plugin.c", "-L.", "-lnothere"])
        .current_dir(d.path()));
    std::fs::create_dir_all(ws.path("demosite/native")).unwrap();
    std::fs::copy(d.path().join("plugin.so"), ws.path("demosite/native/plugin.so")).unwrap();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    let build = build.replace("deps = [\":app\"]", "deps = [\":app\", \":native\"]");
    ws.write(
        "demosite/BUILD.toml",
        &format!("{build}\n[[files]]\nname = \"native\"\nsrcs = [\"native/plugin.so\"]\ndest = \"/usr/lib/demosite-plugins\"\n"),
    );
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(
        err.contains("plugin.so needs the library libnothere.so.7, which no package of the target root provides"),
        "{err}"
    );
    // Shipping the library in the package satisfies it.
    std::fs::copy(d.path().join("libnothere.so"), ws.path("demosite/native/libnothere.so.7")).unwrap();
    ws.write(
        "demosite/BUILD.toml",
        &format!(
            "{build}\n[[files]]\nname = \"native\"\nsrcs = [\"native/*\"]\ndest = \"/usr/lib/demosite-plugins\"\n"
        ),
    );
    ws.ok(&["build", "//demosite:deb"]);
}
