//! Checking reproducibility: `hb verify` catches planted nondeterminism and names the
//! action and file, passes on demosite under every variation; `hb diff` reports exactly
//! what differs between two debs; `hb explain` names the edited source.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{Ws, show};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", show(out)))
}

#[test]
fn verify_names_the_action_and_file_of_planted_nondeterminism() {
    let ws = crate::python::tiny_app(
        "import random, setuptools\nopen('tiny/stamp.py', 'w').write('STAMP = %r\\n' % random.random())\nsetuptools.setup(packages=['tiny'])\n",
    );
    let out = ws.cmd().args(["verify", "--vary", "none", "--json", "//tiny:deb"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report = json(&out);
    assert_eq!(report["first"], "//tiny:app wheel", "{report}");
    let files = report["files"].as_array().unwrap();
    assert_eq!(files[0]["path"], "tiny-1.0-py3-none-any.whl", "{report}");
    let members: Vec<&str> =
        files[0]["diff"]["members"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert!(members.contains(&"tiny/stamp.py"), "{report}");
    // The human report shows the changed line.
    let out = ws.cmd().args(["verify", "--vary", "none", "//tiny:deb"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("//tiny:app wheel") && text.contains("tiny/stamp.py") && text.contains("+STAMP = "),
        "{text}"
    );
}

#[test]
fn verify_finds_demosite_reproducible_under_every_variation() {
    let ws = Ws::demosite();
    let out = ws.cmd().args(["verify", "--vary", "all", "--json", "//demosite:deb"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let report = json(&out);
    assert!(report["diverging"].as_array().unwrap().is_empty(), "{report}");
    assert!(report["compared"].as_u64().unwrap() > 15, "{report}");
    assert_eq!(report["variations"].as_array().unwrap().len(), 9);
}

#[test]
fn diff_reports_exactly_a_mode_a_content_and_a_control_field() {
    let extra = "\n[[files]]\nname = \"extra\"\nsrcs = [\"extra/*\"]\ndest = \"/usr/share/demosite\"\n";
    let make = || {
        let ws = Ws::demosite();
        let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
        ws.write("demosite/BUILD.toml", &(build.replace("deps = [\":app\"]", "deps = [\":app\", \":extra\"]") + extra));
        ws.write("demosite/extra/notes.txt", "some notes\n");
        ws.write("demosite/extra/run.sh", "#!/bin/sh\necho one\n");
        ws
    };
    let a = make();
    let b = make();
    std::fs::set_permissions(b.path("demosite/extra/notes.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    b.write("demosite/extra/run.sh", "#!/bin/sh\necho two\n");
    let build = std::fs::read_to_string(b.path("demosite/BUILD.toml")).unwrap();
    b.write("demosite/BUILD.toml", &build.replace("section = \"web\"", "section = \"net\""));
    a.ok(&["build", "//demosite:deb"]);
    b.ok(&["build", "//demosite:deb"]);
    let deb = "hb-out/demosite/demosite_0.1.0_amd64.deb";

    let out = a.cmd().arg("diff").arg(a.path(deb)).arg(a.path(deb)).output().unwrap();
    assert!(out.status.success(), "a deb equals itself: {}", show(&out));

    let out = a.cmd().args(["diff", "--json"]).arg(a.path(deb)).arg(b.path(deb)).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let report = json(&out);
    let diffs = report["differences"].as_array().unwrap();
    let whats: Vec<(&str, &str)> = diffs
        .iter()
        .map(|d| (d["what"].as_str().unwrap(), d["path"].as_str().or(d["field"].as_str()).unwrap_or("")))
        .collect();
    assert_eq!(
        whats,
        [
            ("control_field", "Section"),
            ("mode", "/usr/share/demosite/extra/notes.txt"),
            ("content", "/usr/share/demosite/extra/run.sh"),
        ],
        "{report}"
    );
    let text =
        String::from_utf8(a.cmd().arg("diff").arg(a.path(deb)).arg(b.path(deb)).output().unwrap().stdout).unwrap();
    assert!(text.contains("-echo one") && text.contains("+echo two"), "{text}");
}

#[test]
fn explain_names_the_edited_source_for_every_rerun_action() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    ws.write("demosite/config.cfg", "TAGLINE = \"explained\"\n");
    ws.ok(&["build", "//demosite:deb"]);
    let report = json(&ws.ok(&["explain", "--json"]));
    let ran: Vec<&serde_json::Value> =
        report["actions"].as_array().unwrap().iter().filter(|a| a["status"] == "executed").collect();
    assert!(ran.len() >= 5, "{report}");
    for a in ran {
        let reasons = a["reasons"].to_string();
        assert!(reasons.contains("config.cfg"), "{} ran for {reasons}", a["name"]);
    }
    let text = String::from_utf8(ws.ok(&["explain"]).stdout).unwrap();
    assert!(text.contains("//demosite:deb config") && text.contains("source config.cfg changed"), "{text}");
}
