//! A small builder harness for end-to-end tests: a throwaway copy of a workspace (by
//! default the repository's own BUILD.toml and demosite/), its own cache directory, and
//! helpers to run the real `hb` binary against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::Digest as _;

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn hb_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hb"))
}

/// A wheelhouse holding every file demosite's and the examples' locks name, filled once per machine and
/// kept in target/, so that tests which are not about fetching do not depend on the
/// package index answering (each test's cache starts empty). hb's fetch reads it first,
/// through `PIP_FIND_LINKS`, and still verifies every file against the lock.
pub fn wheelhouse() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/e2e-wheelhouse");
        std::fs::create_dir_all(&dir).unwrap();
        let mut locks = vec![repo().join("demosite/hb.lock")];
        for e in hb_fs::read_dir_sorted(&repo().join("examples")).unwrap_or_default() {
            locks.push(e.path().join("hb.lock"));
        }
        let mut files = Vec::new();
        for path in locks.iter().filter(|p| p.is_file()) {
            let text = std::fs::read_to_string(path).unwrap();
            let lock = hb_fetch::Lock::parse(&text, path).unwrap();
            for f in lock.packages {
                // The target a file is fetched for: the first it serves.
                let id = f.targets.first().or(lock.targets.first()).unwrap();
                files.push((hb_python::Target::from_id(id).unwrap(), f));
            }
        }
        for (target, f) in &files {
            let dest = dir.join(&f.file);
            if dest.is_file() && sha256(&dest) == f.sha256 {
                continue;
            }
            let tmp = tempfile::tempdir_in(&dir).unwrap();
            let mut error = None;
            // The index is across a network: a reset connection is retried.
            for attempt in 0..4 {
                match hb_fetch::fetch(&hb_fetch::Pip::default(), target, &[], f, tmp.path()) {
                    Ok(p) => {
                        std::fs::rename(p, &dest).unwrap();
                        error = None;
                        break;
                    }
                    Err(e) => error = Some(e),
                }
                std::thread::sleep(std::time::Duration::from_secs(2 << attempt));
            }
            if let Some(e) = error {
                panic!("cannot fill the test wheelhouse {}: {e}", dir.display());
            }
        }
        dir
    })
}

pub struct Ws {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub cache: PathBuf,
}

/// Copies a directory tree (files and directories only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in hb_fs::read_dir_sorted(from).unwrap() {
        let name = e.file_name();
        if name == "__pycache__" {
            continue;
        }
        let ty = e.file_type().unwrap();
        if ty.is_dir() {
            copy_tree(&e.path(), &to.join(&name));
        } else if ty.is_file() {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

impl Ws {
    /// An empty workspace with only a root BUILD.toml.
    pub fn empty() -> Ws {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("BUILD.toml"), "[workspace]\nsource_date_epoch = 1700000000\n").unwrap();
        let cache = tmp.path().join("cache");
        Ws { _tmp: tmp, root, cache }
    }

    /// A copy of the repository's workspace settings and `examples/NAME`.
    pub fn example(name: &str) -> Ws {
        let ws = Ws::empty();
        std::fs::copy(repo().join("BUILD.toml"), ws.root.join("BUILD.toml")).unwrap();
        copy_tree(&repo().join("examples").join(name), &ws.root.join("examples").join(name));
        ws
    }

    /// A copy of the repository's workspace settings and demosite.
    pub fn demosite() -> Ws {
        let ws = Ws::empty();
        std::fs::copy(repo().join("BUILD.toml"), ws.root.join("BUILD.toml")).unwrap();
        copy_tree(&repo().join("demosite"), &ws.root.join("demosite"));
        ws
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(hb_bin());
        c.current_dir(&self.root)
            .env("HB_CACHE_DIR", &self.cache)
            .env("NO_COLOR", "1")
            .env("PIP_FIND_LINKS", wheelhouse());
        c
    }

    /// Runs hb with `args`; panics with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "hb {args:?} failed:\n{}", show(&out));
        out
    }

    /// Runs hb with `args`; panics unless it fails. Returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().unwrap();
        assert!(!out.status.success(), "hb {args:?} should have failed:\n{}", show(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `hb build --json LABEL`, parsed.
    pub fn build_json(&self, label: &str) -> serde_json::Value {
        let out = self.ok(&["build", "--json", label]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", show(&out)))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

pub fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex(&sha2::Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Names of the actions with `status` in a `--json` report, sorted.
pub fn actions(report: &serde_json::Value, status: &str) -> Vec<String> {
    let mut v: Vec<String> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["status"] == status)
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Runs a command, panicking with its output on failure; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Ws {
    /// Adds a `static` files target of `count` generated files (about 40 kB each) to
    /// demosite's deb, so its data member spans several chunks and takes xz real time.
    pub fn with_static_payload(self, count: usize) -> Ws {
        payload(&self, "demosite/static", count, 40_000);
        let build = std::fs::read_to_string(self.path("demosite/BUILD.toml"))
            .unwrap()
            .replace("deps = [\":app\"]", "deps = [\":app\", \":static\"]")
            + "\n[[files]]\nname = \"static\"\nsrcs = [\"static/*.txt\"]\ndest = \"/usr/share/demosite\"\n";
        self.write("demosite/BUILD.toml", &build);
        self
    }
}

/// Writes `count` files of deterministic, moderately compressible text (about `each`
/// bytes) under `rel` of the workspace: payload that takes xz real time to compress.
pub fn payload(ws: &Ws, rel: &str, count: usize, each: usize) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"];
    for i in 0..count {
        let mut text = String::with_capacity(each + 16);
        while text.len() < each {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(words[(state % 10) as usize]);
            text.push_str(&format!("{} ", state % 9973));
            if state.is_multiple_of(11) {
                text.push('\n');
            }
        }
        ws.write(&format!("{rel}/file{i:04}.txt"), &text);
    }
}

/// A bookworm root made once by mmdebstrap (minbase plus `include`) from the machine's
/// apt sources and kept in the target directory under `name`; `marker` is a file only a
/// finished root has.
fn cached_root(name: &str, include: &str, marker: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.join(marker).exists() {
        return dir;
    }
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase", &format!("--include={include}"), "--format=directory", "bookworm"])
        .arg(&tmp));
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// A bookworm root with python3 (minbase), for installing debs in a chroot.
pub fn bookworm_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| cached_root("bookworm-minbase-python3", "python3,adduser", "usr/bin/python3")).clone()
}

/// A bookworm root that boots systemd (systemd, systemd-sysv, dbus, python3).
pub fn systemd_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        cached_root("bookworm-systemd", "systemd,systemd-sysv,dbus,python3,adduser", "lib/systemd/systemd")
    })
    .clone()
}

/// GETs `url` with curl until it answers (a service takes a moment to bind).
pub fn get(url: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = Command::new("curl").args(["--silent", "--show-error", "--max-time", "5", url]).output().unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{url} never answered:\n{}", show(&out));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A private copy of the bookworm root, removed on drop.
pub struct Root {
    _tmp: tempfile::TempDir,
    pub path: PathBuf,
}

impl Root {
    pub fn new() -> Root {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("root");
        run(Command::new("cp").arg("-a").arg(bookworm_root()).arg(&path));
        Root { _tmp: tmp, path }
    }

    /// Runs a command chrooted into the root; returns its output.
    pub fn chroot(&self, argv: &[&str]) -> Output {
        Command::new("/usr/sbin/chroot")
            .arg(&self.path)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap()
    }
}
