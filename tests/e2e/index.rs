//! The native fetcher against a package index: a PEP 691 index served from the test
//! wheelhouse by a small server written here, on loopback. hb fetches every locked file
//! from it with no pip process (PIP_INDEX_URL), or finds it through pip's configuration
//! (a pip.conf, read with `pip config list`, and still no `pip download`); wrong bytes
//! are refused and never stored; an index that is down is named with the files.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::harness::{Ws, sha256, show, wheelhouse};

#[derive(Default)]
pub(crate) struct State {
    /// Files served, by name.
    pub(crate) served: Vec<String>,
    /// A file whose bytes are served with one byte flipped.
    corrupt: Option<String>,
}

/// A PEP 691 index of `dir` on loopback: `/simple/<project>/` lists the files whose
/// name starts with the project (links relative to the page), `/files/<name>` serves one.
pub(crate) fn serve_index(dir: PathBuf) -> (String, Arc<Mutex<State>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/simple", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(State::default()));
    let shared = state.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (dir, state) = (dir.clone(), shared.clone());
            std::thread::spawn(move || answer(conn, &dir, &state));
        }
    });
    (url, state)
}

fn answer(mut conn: std::net::TcpStream, dir: &Path, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) <= 2 {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, ctype, body) = if let Some(project) = path.strip_prefix("/simple/") {
        let project = project.trim_end_matches('/');
        let files: Vec<serde_json::Value> = hb_fs::read_dir_sorted(dir)
            .unwrap()
            .iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| {
                let dist = name.split('-').next().unwrap_or_default();
                hb_python::normalize(dist) == project
            })
            .map(|name| {
                serde_json::json!({
                    "filename": name,
                    "url": format!("../../files/{name}"),
                    "hashes": {"sha256": sha256(&dir.join(&name))},
                })
            })
            .collect();
        if files.is_empty() {
            ("404 Not Found", "text/plain", b"no such project".to_vec())
        } else {
            let page = serde_json::json!({"meta": {"api-version": "1.1"}, "name": project, "files": files});
            ("200 OK", "application/vnd.pypi.simple.v1+json", page.to_string().into_bytes())
        }
    } else if let Some(name) = path.strip_prefix("/files/") {
        match std::fs::read(dir.join(name)) {
            Ok(mut bytes) => {
                let mut s = state.lock().unwrap();
                s.served.push(name.to_string());
                if s.corrupt.as_deref() == Some(name) {
                    let mid = bytes.len() / 2;
                    bytes[mid] ^= 0xff;
                }
                ("200 OK", "application/octet-stream", bytes)
            }
            Err(_) => ("404 Not Found", "text/plain", Vec::new()),
        }
    } else {
        ("404 Not Found", "text/plain", Vec::new())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(&body));
}

fn locked_files(ws: &Ws) -> Vec<hb_fetch::LockedFile> {
    crate::harness::demosite_target_files(ws)
}

/// `HB_PIP_PYTHON` that records each pip command line in `log`, then runs python3.
fn recording_python(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("pip.log");
    let script = dir.join("python");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec python3 \"$@\"\n", log.display())).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, log)
}

/// hb with the index settings of `env` and no wheelhouse or inherited pip settings.
fn hb(ws: &Ws, env: &[(&str, &str)], label: &str) -> std::process::Output {
    let mut cmd = ws.cmd();
    cmd.args(["build", label]);
    for k in [
        "PIP_FIND_LINKS",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "UV_DEFAULT_INDEX",
        "UV_INDEX_URL",
        "PIP_CONFIG_FILE",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn every_locked_file_comes_from_the_configured_index_without_pip() {
    let (url, state) = serve_index(wheelhouse().to_path_buf());
    let tmp = tempfile::tempdir().unwrap();
    let (python, log) = recording_python(tmp.path());
    let python = python.display().to_string();

    // PIP_INDEX_URL: hb's own client, no pip process at all.
    let ws = Ws::demosite();
    let out = hb(&ws, &[("PIP_INDEX_URL", &url), ("HB_PIP_PYTHON", &python)], "//demosite:deb");
    assert!(out.status.success(), "{}", show(&out));
    assert!(!log.exists(), "pip ran: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let served = state.lock().unwrap().served.clone();
    let files = locked_files(&ws);
    assert!(files.len() > 5);
    for f in &files {
        assert!(served.contains(&f.file), "{} was not fetched from the index: {served:?}", f.file);
    }

    // No variable, a pip.conf naming the index: pip is asked for its configuration
    // (`pip config list`) and downloads nothing.
    let conf = tmp.path().join("pip.conf");
    std::fs::write(&conf, format!("[global]\nindex-url = {url}\n")).unwrap();
    let conf = conf.display().to_string();
    state.lock().unwrap().served.clear();
    let ws = Ws::demosite();
    let out = hb(&ws, &[("PIP_CONFIG_FILE", &conf), ("HB_PIP_PYTHON", &python)], "//demosite:app");
    assert!(out.status.success(), "{}", show(&out));
    let pip = std::fs::read_to_string(&log).unwrap();
    assert!(pip.lines().all(|l| l.contains("pip config list")), "pip did more than list its config:\n{pip}");
    let served = state.lock().unwrap().served.clone();
    for f in &files {
        assert!(served.contains(&f.file), "{} was not fetched from the index: {served:?}", f.file);
    }
}

#[test]
fn wrong_bytes_from_the_index_are_refused_and_a_dead_index_is_named() {
    let (url, state) = serve_index(wheelhouse().to_path_buf());
    let ws = Ws::demosite();
    let flask = locked_files(&ws).into_iter().find(|f| f.name == "flask").expect("flask is locked");
    state.lock().unwrap().corrupt = Some(flask.file.clone());
    let out = hb(&ws, &[("PIP_INDEX_URL", &url)], "//demosite:deb");
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&flask.file) && err.contains("does not match the lock"), "{err}");
    // The served bytes are nowhere in the store.
    let mut bad = std::fs::read(wheelhouse().join(&flask.file)).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xff;
    let bad_blake3 = blake3::hash(&bad).to_hex().to_string();
    for e in hb_fs::walk_sorted(&ws.cache).into_iter().filter_map(Result::ok) {
        assert_ne!(e.file_name().to_string_lossy(), bad_blake3, "the refused file entered the store");
    }

    // An index nothing listens on: every file is named, with the index.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = format!("http://127.0.0.1:{port}/simple");
    let ws = Ws::demosite();
    let out = hb(&ws, &[("PIP_INDEX_URL", &dead)], "//demosite:app");
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}/simple")), "{err}");
    for f in locked_files(&ws) {
        assert!(err.contains(&format!("could not fetch {}", f.file)), "{} not named:\n{err}", f.file);
    }
}

#[test]
fn a_requirements_file_finds_its_files_on_the_index_by_hash() {
    let (url, _state) = serve_index(wheelhouse().to_path_buf());
    let ws = Ws::demosite();
    let mut requirements = String::new();
    for f in locked_files(&ws).iter().filter(|f| f.role == hb_fetch::Role::Runtime) {
        requirements.push_str(&format!("{}=={} --hash=sha256:{}\n", f.name, f.version, f.sha256));
    }
    ws.write("demosite/requirements.txt", &requirements);
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write(
        "demosite/BUILD.toml",
        &build.replace("module = \"demosite:app\"", "module = \"demosite:app\"\nruntime_lock = \"requirements.txt\""),
    );
    // Only bookworm amd64's hashes are listed: lock for that platform alone.
    let root = std::fs::read_to_string(ws.path("BUILD.toml")).unwrap();
    let start = root.find("platforms = [").unwrap();
    let end = start + root[start..].find(']').unwrap() + 1;
    ws.write("BUILD.toml", &format!("{}platforms = [\"bookworm-amd64\"]{}", &root[..start], &root[end..]));
    let mut cmd = ws.cmd();
    cmd.args(["lock", "//demosite:app"]).env_remove("PIP_FIND_LINKS").env("PIP_INDEX_URL", &url);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("from demosite/requirements.txt"), "{}", show(&out));
    let lock = std::fs::read_to_string(ws.path("demosite/hb.lock")).unwrap();
    assert!(!lock.contains("aarch64"), "the lock was not rewritten for one platform:\n{lock}");
    for f in locked_files(&Ws::demosite()).iter().filter(|f| f.role == hb_fetch::Role::Runtime) {
        assert!(lock.contains(&f.sha256) && lock.contains(&f.file), "{} not locked:\n{lock}", f.file);
    }
}
