//! Building //demosite:deb: what dpkg and lintian think of it, and what a rebuild does.

use std::process::Command;

use crate::harness::{Ws, actions, run};

const DEB: &str = "hb-out/demosite/demosite_0.1.0_amd64.deb";

#[test]
fn deb_is_accepted_by_dpkg_deb_and_lintian() {
    let ws = Ws::demosite();
    let out = ws.ok(&["build", "//demosite:deb"]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let paths: Vec<&str> = printed.lines().collect();
    assert_eq!(
        paths,
        [DEB, &DEB.replace(".deb", ".spdx.json"), &DEB.replace(".deb", ".cdx.json")],
        "the deb, then its SBOMs"
    );
    let deb = ws.path(DEB);
    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in ["Package: demosite", "Version: 0.1.0", "Architecture: amd64", "Installed-Size: "] {
        assert!(info.contains(field), "{field} missing from:\n{info}");
    }
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(contents.contains("-rw-r--r-- root/root") && contents.contains("./etc/demosite/config.cfg"), "{contents}");
    assert!(contents.lines().all(|l| l.contains("root/root") && l.contains("2023-11-14")), "{contents}");
    // Extracted bytes are the sources' bytes.
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()));
    assert_eq!(
        std::fs::read(x.path().join("etc/demosite/config.cfg")).unwrap(),
        std::fs::read(ws.path("demosite/config.cfg")).unwrap()
    );
    let ctrl = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctrl.path()));
    let conffiles = std::fs::read_to_string(ctrl.path().join("conffiles")).unwrap();
    assert_eq!(
        conffiles,
        "/etc/default/demosite\n/etc/demosite/config.cfg\n/etc/demosite/logging.conf\n/etc/init.d/demosite\n"
    );
    // md5sums agree with the extracted files.
    run(Command::new("md5sum").arg("--check").arg("--quiet").arg(ctrl.path().join("md5sums")).current_dir(x.path()));

    // lintian: no errors at all; the warnings left are listed in the README.
    let lint = Command::new("lintian").args(["--no-tag-display-limit"]).arg(&deb).output().unwrap();
    let text = String::from_utf8_lossy(&lint.stdout).into_owned();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{text}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.starts_with("W:")).collect();
    assert!(warnings.iter().all(|w| w.contains("unusual-interpreter /usr/lib/demosite/bin/python")), "{text}");
}

#[test]
fn unchanged_rebuild_executes_nothing() {
    let ws = Ws::demosite();
    let first = ws.build_json("//demosite:deb");
    assert!(first["executed"].as_u64().unwrap() >= 5, "{first}");
    let second = ws.build_json("//demosite:deb");
    assert_eq!(second["executed"], 0, "{second}");
    assert_eq!(second["outputs"][0], DEB);
    // Deleting the output only re-exports it from the cache.
    let original = std::fs::read(ws.path(DEB)).unwrap();
    std::fs::remove_file(ws.path(DEB)).unwrap();
    let third = ws.build_json("//demosite:deb");
    assert_eq!(third["executed"], 0, "{third}");
    assert_eq!(std::fs::read(ws.path(DEB)).unwrap(), original);
    // An output edited in place is put back as the cache has it (the no-op knows what
    // the result exports without reading it, and checks hb-out against that).
    std::fs::write(ws.path(DEB), b"not a deb").unwrap();
    let fourth = ws.build_json("//demosite:deb");
    assert_eq!(fourth["executed"], 0, "{fourth}");
    assert_eq!(std::fs::read(ws.path(DEB)).unwrap(), original);
}

#[test]
fn config_edit_reruns_only_what_depends_on_it() {
    // A bulky second payload so the data member has several chunks.
    let ws = Ws::demosite().with_static_payload(110);
    let first = ws.build_json("//demosite:deb");
    let chunks = actions(&first, "executed").iter().filter(|n| n.contains("data chunk")).count();
    assert!(chunks >= 2, "expected several data chunks: {first}");

    ws.write("demosite/config.cfg", "TAGLINE = \"edited\"\n");
    let second = ws.build_json("//demosite:deb");
    assert_eq!(
        actions(&second, "executed"),
        [
            "//demosite:deb",
            "//demosite:deb config",
            "//demosite:deb control",
            "//demosite:deb data",
            "//demosite:deb data chunk 0",
            "//demosite:deb layout",
            "//demosite:deb pack",
            "//demosite:deb shlibdeps",
        ],
        "{second}"
    );
    // Depends are not computed again: no ELF file changed.
    assert!(actions(&second, "cached").contains(&"//demosite:deb (ELF files)".to_string()), "{second}");
    // The other chunks were reused from the cache.
    let reused = actions(&second, "cached").iter().filter(|n| n.contains("data chunk")).count();
    assert_eq!(reused, chunks - 1, "{second}");
    assert!(actions(&second, "cached").contains(&"//demosite:app".to_string()));
}

#[test]
fn query_and_graph_show_the_targets() {
    let ws = Ws::demosite();
    let out = String::from_utf8(ws.ok(&["query", "//..."]).stdout).unwrap();
    assert!(out.contains("//demosite:deb (deb) <- //demosite:app"), "{out}");
    assert!(out.contains("//demosite:app (python_app)"), "{out}");
    let dot = String::from_utf8(ws.ok(&["graph", "//demosite:deb"]).stdout).unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("\"//demosite:deb\" -> \"//demosite:app\""), "{dot}");
    let version = String::from_utf8(ws.ok(&["--version"]).stdout).unwrap();
    assert!(version.starts_with("hb "), "{version}");
    ws.ok(&["build", "//demosite:deb"]);
    ws.ok(&["clean"]);
    assert!(!ws.path("hb-out").exists());
}

#[test]
fn a_profile_shows_every_action_and_explain_lists_the_slowest() {
    let ws = Ws::demosite();
    let profile = ws.path("profile.json");
    let out = ws.ok(&["build", "--json", "--profile", profile.to_str().unwrap(), "//demosite:deb"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    let events = trace["traceEvents"].as_array().unwrap();
    let mut traced: Vec<&str> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    let mut actions: Vec<&str> =
        report["actions"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    traced.sort();
    actions.sort();
    assert_eq!(traced, actions, "one span per action");
    for e in events {
        assert_eq!(e["ph"], "X");
        assert!(e["dur"].as_u64().is_some() && e["ts"].as_u64().is_some(), "{e}");
        assert!(["executed", "cached", "remote"].contains(&e["args"]["status"].as_str().unwrap()), "{e}");
    }
    let pack = events.iter().find(|e| e["cat"] == "deb_pack").unwrap();
    let deb = std::fs::metadata(ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb")).unwrap().len();
    assert_eq!(pack["args"]["bytes_out"].as_u64(), Some(deb));

    let out = ws.ok(&["explain", "--timings", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!rows.is_empty() && rows.len() <= 15);
    let ms: Vec<f64> = rows.iter().map(|r| r["ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "slowest first: {ms:?}");
    let text = String::from_utf8(ws.ok(&["explain", "--timings"]).stdout).unwrap();
    assert!(text.lines().next().unwrap().contains("bytes out"), "{text}");
}
