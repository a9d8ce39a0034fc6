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
fn a_cache_that_lost_blobs_rebuilds_them_when_they_are_needed() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let good = sha256(&ws.path(DEB));
    // The deb's own blob goes (as `hb cache gc` or a hand could remove it).
    let hex = hb_store::Digest::of(&std::fs::read(ws.path(DEB)).unwrap()).hex();
    std::fs::remove_file(ws.cache.join("v1/cas").join(&hex[..2]).join(&hex)).unwrap();
    // hb-out still holds the deb: nothing reads the missing blob, nothing is rebuilt.
    let r = ws.build_json("//demosite:deb");
    assert_eq!(r["executed"], 0, "{r}");
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");
    // Now it must be read to be placed in hb-out: the build runs again checking every
    // cached result, says so, and rebuilds the deb, byte for byte.
    std::fs::remove_file(ws.path(DEB)).unwrap();
    let r = ws.build_json("//demosite:deb");
    let warnings = r["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("no longer holds")), "{r}");
    assert!(r["executed"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(sha256(&ws.path(DEB)), good);
    let again = ws.build_json("//demosite:deb");
    assert_eq!(again["executed"], 0, "{again}");
    assert_eq!(again["warnings"].as_array().map(Vec::len), Some(0), "{again}");

    // A source file's blob goes too, and another source of the same action changes:
    // the stat cache took the unchanged file on trust, so the wheel build, before it
    // starts, finds its blob gone; the next pass hashes the file into the cache again.
    let template = ws.path("demosite/demosite/templates/index.html");
    let hex = hb_store::Digest::of(&std::fs::read(&template).unwrap()).hex();
    std::fs::remove_file(ws.cache.join("v1/cas").join(&hex[..2]).join(&hex)).unwrap();
    let init = ws.path("demosite/demosite/__init__.py");
    let mut text = std::fs::read_to_string(&init).unwrap();
    text.push_str("# edited\n");
    std::fs::write(&init, text).unwrap();
    let r = ws.build_json("//demosite:deb");
    let warnings = r["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("no longer holds")), "{r}");
    assert!(ws.cache.join("v1/cas").join(&hex[..2]).join(&hex).is_file());
    assert_eq!(ws.build_json("//demosite:deb")["executed"], 0);
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

/// Runs `hb ARGS` in `ws` with its cache mounted read-only (in a private mount namespace:
/// the tests run as root, whom permission bits do not stop).
fn build_with_read_only_cache(ws: &Ws, args: &str) -> std::process::Output {
    let cache = ws.cache.display();
    let script = format!(
        "mount --bind '{cache}' '{cache}' && mount -o remount,bind,ro '{cache}' && exec '{}' {args}",
        crate::harness::hb_bin().display()
    );
    std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .current_dir(&ws.root)
        .env("HB_CACHE_DIR", &ws.cache)
        .env("NO_COLOR", "1")
        .env("PIP_FIND_LINKS", crate::harness::wheelhouse())
        .output()
        .unwrap()
}

fn listing(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    for e in hb_fs::walk_sorted(dir) {
        let e = e.unwrap();
        out.push((e.path().to_path_buf(), e.metadata().unwrap().len()));
    }
    out
}

#[test]
fn a_read_only_cache_builds_what_it_holds_and_writes_nothing() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let want = sha256(&ws.path(DEB));
    std::fs::remove_dir_all(ws.path("hb-out")).unwrap();
    let before = listing(&ws.cache);
    // A fresh checkout's sources are unknown to the stat cache: they are re-hashed, and
    // found in the cache, without writing to it.
    let stat = ws.cache.join("v1/stat");
    for e in hb_fs::read_dir_sorted(&stat).unwrap() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let before_stat = listing(&ws.cache);
    let out = build_with_read_only_cache(&ws, "build //demosite:deb");
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is read-only: it was only read"), "{err}");
    assert_eq!(sha256(&ws.path(DEB)), want);
    assert_eq!(listing(&ws.cache), before_stat, "the read-only cache changed");
    assert!(before.len() > before_stat.len());

    // Something new cannot be built into it: the error says why and what to do.
    ws.write("demosite/config.cfg", "TAGLINE = \"new\"\n");
    let out = build_with_read_only_cache(&ws, "build //demosite:deb");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is read-only and does not hold") && err.contains("--cache-dir"), "{err}");
    assert_eq!(listing(&ws.cache), before_stat);
}
