//! The store under abuse: corrupted blobs and builds killed half way.

use std::time::Duration;

use crate::harness::{Ws, sha256, show};

const DEB: &str = "hb-out/demosite/demosite_0.1.0_amd64.deb";

fn blobs(ws: &Ws) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for shard in hb_fs::read_dir_sorted(&ws.cache.join("v1/cas")).unwrap() {
        for blob in hb_fs::read_dir_sorted(&shard.path()).unwrap() {
            v.push(blob.path());
        }
    }
    v.sort();
    v
}

#[test]
fn corrupted_blobs_are_detected_and_their_actions_rerun() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let good = sha256(&ws.path(DEB));
    // Flip a byte in every blob of the store, and drop the output so it must be read.
    for b in blobs(&ws) {
        let mut bytes = std::fs::read(&b).unwrap();
        if bytes.is_empty() {
            bytes.push(0);
        } else {
            bytes[0] ^= 0xff;
        }
        std::fs::write(&b, bytes).unwrap();
    }
    std::fs::remove_file(ws.path(DEB)).unwrap();
    let out = ws.cmd().args(["build", "--json", "//demosite:deb"]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].as_array().unwrap();
    assert!(!warnings.is_empty() && warnings.iter().all(|w| w.as_str().unwrap().contains("corrupt")), "{report}");
    assert!(report["executed"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(sha256(&ws.path(DEB)), good);
    // Everything in the store is whole again.
    let again = ws.build_json("//demosite:deb");
    assert_eq!(again["executed"], 0);
}

#[test]
fn a_build_killed_with_sigkill_resumes_to_the_same_bytes() {
    let ws = Ws::demosite().with_static_payload(150);

    // Reference: an uninterrupted build in a separate cache.
    let reference = Ws::empty();
    std::fs::remove_dir_all(&reference.root).unwrap();
    crate::harness::copy_tree(&ws.root, &reference.root);
    reference.ok(&["build", "//demosite:deb"]);
    let want = sha256(&reference.path(DEB));

    let mut child = ws.cmd().args(["build", "//demosite:deb"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the build finished before it could be killed; make the payload bigger");
    assert!(!ws.path(DEB).exists(), "a killed build left an output behind");
    // Anything left in hb-out, at any depth, is an unfinished temporary file, never an
    // output under its real name.
    let mut stack = vec![ws.path("hb-out")];
    while let Some(dir) = stack.pop() {
        for e in hb_fs::read_dir_sorted(&dir).unwrap_or_default() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(name.starts_with(".hb-tmp-"), "hb-out holds {} after the kill", e.path().display());
            }
        }
    }

    ws.ok(&["build", "//demosite:deb"]);
    assert_eq!(sha256(&ws.path(DEB)), want);
}

#[test]
fn two_concurrent_builds_share_one_cache_safely() {
    let ws = Ws::demosite().with_static_payload(40);
    let children: Vec<_> = (0..3)
        .map(|_| {
            ws.cmd()
                .args(["build", "--json", "//demosite:deb"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
    }
    let first = sha256(&ws.path(DEB));
    std::fs::remove_file(ws.path(DEB)).unwrap();
    let again = ws.build_json("//demosite:deb");
    assert_eq!(again["executed"], 0, "{again}");
    assert_eq!(sha256(&ws.path(DEB)), first);
}
