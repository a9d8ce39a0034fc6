//! `hb init`: a Python project with only a pyproject.toml becomes a buildable package,
//! inside an existing workspace or starting its own, with every guess told; an existing
//! BUILD.toml is never overwritten.

use std::process::Command;

use crate::harness::{Ws, copy_tree, repo, run, show};

#[test]
fn hb_init_makes_a_project_buildable_and_says_what_it_guessed() {
    // Inside a workspace: only the package's BUILD.toml.
    let ws = Ws::empty();
    std::fs::copy(repo().join("BUILD.toml"), ws.path("BUILD.toml")).unwrap();
    let dir = ws.path("services/api");
    copy_tree(&repo().join("examples/fastapi/fastapi_demo"), &dir.join("fastapi_demo"));
    std::fs::copy(repo().join("examples/fastapi/pyproject.toml"), dir.join("pyproject.toml")).unwrap();
    let out = ws.cmd().arg("init").current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry point: fastapi_demo:app (an ASGI application"), "{err}");
    assert!(err.contains("set `maintainer`") && err.contains("hb build //services/api:deb"), "{err}");
    let build = std::fs::read_to_string(dir.join("BUILD.toml")).unwrap();
    assert!(!build.contains("[workspace]") && build.contains("server = \"uvicorn\""), "{build}");
    assert!(dir.join("hb.lock").exists());
    ws.ok(&["build", "//services/api:deb"]);
    let deb = ws.path("hb-out/services/api/fastapi-demo_0.1.0_amd64.deb");
    let unit = run(Command::new("sh")
        .arg("-c")
        .arg(format!("dpkg-deb --fsys-tarfile {} | tar -xO ./lib/systemd/system/fastapi-demo.service", deb.display())));
    assert!(unit.contains("uvicorn --host 127.0.0.1 --port 8000") && unit.contains("fastapi_demo:app"), "{unit}");

    // Again: refused, the file kept.
    let out = ws.cmd().arg("init").current_dir(&dir).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exists already"), "{}", show(&out));
    assert_eq!(std::fs::read_to_string(dir.join("BUILD.toml")).unwrap(), build);

    // Outside any workspace: the BUILD.toml starts one, and hb-root.lock is made.
    let alone = tempfile::tempdir().unwrap();
    copy_tree(&repo().join("examples/django"), alone.path());
    std::fs::remove_file(alone.path().join("BUILD.toml")).unwrap();
    std::fs::remove_file(alone.path().join("hb.lock")).unwrap();
    let out = ws.cmd().arg("init").current_dir(alone.path()).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let build = std::fs::read_to_string(alone.path().join("BUILD.toml")).unwrap();
    assert!(build.contains("[workspace]") && build.contains("migrate --noinput"), "{build}");
    assert!(alone.path().join("hb-root.lock").exists() && alone.path().join("hb.lock").exists());
    let out = ws.cmd().args(["build", "//:deb"]).current_dir(alone.path()).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(alone.path().join("hb-out/django-demo_0.1.0_amd64.deb").exists());

    // A directory without a pyproject.toml.
    let empty = tempfile::tempdir().unwrap();
    let out = ws.cmd().arg("init").current_dir(empty.path()).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("pyproject.toml"), "{}", show(&out));
}
