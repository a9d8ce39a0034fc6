//! The same inputs give the same bytes, whatever the checkout path, umask, time zone,
//! clock, job count or cache state of the machine building them.

use std::process::Command;

use crate::harness::{Ws, copy_tree, hb_bin, repo, sha256, show};

/// Checks out the repository's demosite into `dir` under `umask`, then builds it there
/// with `env` and `wrapper` (e.g. faketime), returning the deb's sha256.
fn build_in(dir: &std::path::Path, umask: &str, env: &[(&str, &str)], wrapper: &str, jobs: &str) -> String {
    let staging = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("BUILD.toml"), staging.path().join("BUILD.toml")).unwrap();
    std::fs::copy(repo().join("hb-root.lock"), staging.path().join("hb-root.lock")).unwrap();
    copy_tree(&repo().join("demosite"), &staging.path().join("demosite"));
    let script = format!(
        "umask {umask} && mkdir -p '{dir}' && cp -r '{src}/.' '{dir}' && cd '{dir}' && exec {wrapper} '{hb}' build -j {jobs} //demosite:deb",
        dir = dir.display(),
        src = staging.path().display(),
        hb = hb_bin().display(),
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .env("HB_CACHE_DIR", dir.with_extension("cache"))
        .env("PIP_FIND_LINKS", crate::harness::wheelhouse())
        .env("HB_APT_DIR", crate::harness::apt_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{script}\n{}", show(&out));
    sha256(&dir.join("hb-out/demosite/demosite_0.1.0_amd64.deb"))
}

#[test]
fn two_checkouts_on_different_machines_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let a = build_in(
        &tmp.path().join("alice/src/demo"),
        "077",
        &[("TZ", "Pacific/Auckland"), ("LANG", "C"), ("HOME", "/nonexistent-a")],
        "",
        "1",
    );
    let b = build_in(
        &tmp.path().join("bob/work/a/much/longer/checkout/path"),
        "002",
        &[("TZ", "UTC"), ("LANG", "C.UTF-8"), ("HOME", "/tmp")],
        "faketime -f +1d",
        "2",
    );
    assert_eq!(a, b, "the same inputs built in two places differ");
}

#[test]
fn faketime_really_shifts_the_clock() {
    // Guards the test above: the wrapper must actually change what the process sees.
    let now = Command::new("date").arg("+%j").output().unwrap().stdout;
    let shifted = Command::new("faketime").args(["-f", "+1d", "date", "+%j"]).output().unwrap().stdout;
    assert_ne!(now, shifted);
}

#[test]
fn cold_and_warm_cache_agree_and_outputs_do_not_depend_on_jobs() {
    let ws = Ws::demosite();
    ws.ok(&["build", "-j", "1", "//demosite:deb"]);
    let deb = ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb");
    let cold = sha256(&deb);
    std::fs::remove_dir_all(&ws.cache).unwrap();
    std::fs::remove_dir_all(ws.path("hb-out")).unwrap();
    ws.ok(&["build", "-j", "2", "//demosite:deb"]);
    assert_eq!(sha256(&deb), cold);
}
