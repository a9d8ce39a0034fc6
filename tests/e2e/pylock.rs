//! Standard lock files out and in: `hb lock --format pylock` writes a PEP 751
//! `pylock.toml` (every platform's runtime files in `wheels/` beside it, named by path,
//! never by URL) that a third-party installer, uv from PyPI, installs into a scratch
//! venv of the target's Python: the same versions hb installs. And a python_app whose
//! `runtime_lock` names that pylock locks its runtime files from it and builds the same
//! deb as from hb.lock; so does one naming a requirements file with hashes and markers,
//! or the `uv.lock` uv writes for it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Ws, run, sha256};

/// uv from PyPI, in a venv made once per machine.
fn uv() -> PathBuf {
    crate::harness::cached_venv("uv", Path::new("python3"), &["uv"]).join("bin/uv")
}

#[test]
fn a_pylock_written_by_hb_installs_with_uv() {
    let ws = Ws::demosite();
    let out = ws.ok(&["lock", "--format", "pylock", "//demosite:app"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pylock.toml"));
    let pylock = std::fs::read_to_string(ws.path("demosite/pylock.toml")).unwrap();
    assert!(!pylock.contains("://"), "a URL in the pylock:\n{pylock}");

    // The pylock's files are the lock's runtime files for bookworm amd64, verified.
    let lock_path = ws.path("demosite/hb.lock");
    let lock = hb_fetch::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path).unwrap();
    let id = hb_python::Target::bookworm_amd64((3, 11)).id();
    let files: Vec<hb_fetch::LockedFile> = lock.files_for(hb_fetch::Role::Runtime, &id).cloned().collect();
    assert!(files.len() > 5);
    for f in &files {
        assert!(pylock.contains(&f.sha256), "{} missing from the pylock", f.file);
        assert_eq!(sha256(&ws.path(&format!("demosite/wheels/{}", f.file))), f.sha256);
    }

    // uv installs it, offline, into a venv of the target's Python.
    let scratch = tempfile::tempdir().unwrap();
    let venv = scratch.path().join("venv");
    run(Command::new("/usr/bin/python3.11").args(["-m", "venv", "--without-pip"]).arg(&venv));
    run(Command::new(uv())
        .args(["pip", "install", "--offline", "--python"])
        .arg(venv.join("bin/python"))
        .arg("-r")
        .arg(ws.path("demosite/pylock.toml"))
        .env("UV_CACHE_DIR", scratch.path().join("uv-cache")));
    let listed = run(Command::new(venv.join("bin/python")).args([
        "-c",
        "import importlib.metadata as m; print('\\n'.join(sorted(f\"{d.metadata['Name'].lower()}=={d.version}\" for d in m.distributions())))",
    ]));
    for f in &files {
        let want = format!("{}=={}", hb_python::normalize(&f.name), f.version);
        assert!(
            listed
                .lines()
                .any(|l| hb_python::normalize(l.split("==").next().unwrap()) == hb_python::normalize(&f.name)
                    && l.ends_with(&format!("=={}", f.version))),
            "{want} not installed:\n{listed}"
        );
    }
    run(Command::new(venv.join("bin/python")).args(["-c", "import flask, gunicorn, jinja2"]));
}

#[test]
fn an_app_locked_from_a_pylock_builds_the_same_deb() {
    // The reference: demosite from its own hb.lock, and the pylock hb writes of it.
    let a = Ws::demosite();
    a.ok(&["lock", "--format", "pylock", "//demosite:app"]);
    a.ok(&["build", "//demosite:deb"]);
    let deb = "hb-out/demosite/demosite_0.1.0_amd64.deb";
    let want = sha256(&a.path(deb));

    // Another checkout whose app takes its runtime files from that pylock.
    let b = Ws::demosite();
    std::fs::copy(a.path("demosite/pylock.toml"), b.path("demosite/pylock.toml")).unwrap();
    let build = std::fs::read_to_string(b.path("demosite/BUILD.toml")).unwrap();
    b.write(
        "demosite/BUILD.toml",
        &build.replace("module = \"demosite:app\"", "module = \"demosite:app\"\nruntime_lock = \"pylock.toml\""),
    );
    // Until hb lock has read it, the build says the lock is out of date.
    let err = b.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("out of date"), "{err}");
    let out = b.ok(&["lock", "//demosite:app"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("from demosite/pylock.toml"),
        "{}",
        crate::harness::show(&out)
    );
    b.ok(&["build", "//demosite:deb"]);
    assert_eq!(sha256(&b.path(deb)), want);

    // A requirements file with hashes (as pip-compile --generate-hashes writes: every
    // file of each pinned version), the files found in the wheelhouse by their hashes.
    let lock_path = a.path("demosite/hb.lock");
    let lock = hb_fetch::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path).unwrap();
    let mut pins: std::collections::BTreeMap<(String, String), Vec<String>> = Default::default();
    for f in lock.files(hb_fetch::Role::Runtime) {
        pins.entry((f.name.clone(), f.version.clone())).or_default().push(f.sha256.clone());
    }
    // Markers as uv and pip-compile write them: true ones keep their pin, a package for
    // another system is left out (its hash is nowhere, so it must not be looked for).
    let mut requirements = format!(
        "# generated for the test\npywin32==306 ; sys_platform == \"win32\" \\\n    --hash=sha256:{}\n",
        "f".repeat(64)
    );
    for ((name, version), hashes) in &pins {
        requirements.push_str(&format!("{name}=={version} ; python_full_version >= \"3.9\""));
        for h in hashes {
            requirements.push_str(&format!(" \\\n    --hash=sha256:{h}"));
        }
        requirements.push('\n');
    }
    let c = Ws::demosite();
    c.write("demosite/requirements.txt", &requirements);
    c.write(
        "demosite/BUILD.toml",
        &build.replace("module = \"demosite:app\"", "module = \"demosite:app\"\nruntime_lock = \"requirements.txt\""),
    );
    c.ok(&["lock", "//demosite:app"]);
    c.ok(&["build", "//demosite:deb"]);
    assert_eq!(sha256(&c.path(deb)), want);

    // An edited pylock makes hb.lock out of date again; a marker hb cannot evaluate for
    // a target (the kernel it will run on) is named.
    let pylock = std::fs::read_to_string(b.path("demosite/pylock.toml")).unwrap();
    b.write(
        "demosite/pylock.toml",
        &pylock.replacen("\nversion = ", "\nmarker = \"platform_release >= '6'\"\nversion = ", 1),
    );
    assert!(b.fails(&["build", "//demosite:deb"]).contains("out of date"));
    let err = b.fails(&["lock", "//demosite:app"]);
    assert!(err.contains("demosite/pylock.toml") && err.contains("platform_release"), "{err}");
}

#[test]
fn an_app_locked_from_a_uv_lock_builds_the_same_deb() {
    // The reference: demosite from its own hb.lock.
    let a = Ws::demosite();
    a.ok(&["build", "//demosite:deb"]);
    let deb = "hb-out/demosite/demosite_0.1.0_amd64.deb";
    let want = sha256(&a.path(deb));

    // uv (from PyPI) locks the project from the wheelhouse, for Linux, with hb.lock's
    // versions as constraints (the wheelhouse holds other versions too).
    let lock_path = a.path("demosite/hb.lock");
    let lock = hb_fetch::Lock::parse(&std::fs::read_to_string(&lock_path).unwrap(), &lock_path).unwrap();
    let mut pins: Vec<String> =
        lock.files(hb_fetch::Role::Runtime).map(|f| format!("\"{}=={}\"", f.name, f.version)).collect();
    pins.sort();
    pins.dedup();
    let b = Ws::demosite();
    // uv takes these from the project (setuptools, building the wheel, ignores them).
    let pyproject = std::fs::read_to_string(b.path("demosite/pyproject.toml")).unwrap();
    b.write(
        "demosite/pyproject.toml",
        &format!(
            "{pyproject}\n[tool.uv]\nenvironments = [\"sys_platform == 'linux'\"]\nconstraint-dependencies = [{}]\n",
            pins.join(", ")
        ),
    );
    let scratch = tempfile::tempdir().unwrap();
    // The wheelhouse as an index on loopback (uv records hashes of index files only).
    let (index, _) = crate::index::serve_index(crate::harness::wheelhouse().to_path_buf());
    run(Command::new(uv())
        .args(["lock", "--default-index", &index])
        .args(["--python", "/usr/bin/python3.11"])
        .current_dir(b.path("demosite"))
        .env("UV_CACHE_DIR", scratch.path().join("uv-cache")));
    let uv_lock = std::fs::read_to_string(b.path("demosite/uv.lock")).unwrap();
    assert!(uv_lock.contains("name = \"flask\""), "{uv_lock}");

    let build = std::fs::read_to_string(b.path("demosite/BUILD.toml")).unwrap();
    b.write(
        "demosite/BUILD.toml",
        &build.replace("module = \"demosite:app\"", "module = \"demosite:app\"\nruntime_lock = \"uv.lock\""),
    );
    let out = b.ok(&["lock", "//demosite:app"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("from demosite/uv.lock"), "{}", crate::harness::show(&out));
    b.ok(&["build", "//demosite:deb"]);
    assert_eq!(sha256(&b.path(deb)), want, "the deb from uv.lock differs from the one from hb.lock");
    // hb.lock names no URL, though uv.lock does.
    assert!(!std::fs::read_to_string(b.path("demosite/hb.lock")).unwrap().contains("://"));

    // A package from a git repository is refused by name.
    b.write(
        "demosite/uv.lock",
        &uv_lock.replacen("source = { registry = ", "source = { git = \"https://example.invalid/x.git\" }\n# was ", 1),
    );
    let err = b.fails(&["lock", "//demosite:app"]);
    assert!(err.contains("demosite/uv.lock") && err.contains("git source"), "{err}");
}
