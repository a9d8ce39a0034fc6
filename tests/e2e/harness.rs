//! A small builder harness for end-to-end tests: a throwaway copy of a workspace (by
//! default the repository's own BUILD.toml and demosite/), its own cache directory, and
//! helpers to run the real `hb` binary against it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::Digest as _;

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The hb under test: this build's, or `HB_E2E_BIN` (an older hb, to show that a new
/// test fails where the defect it guards against is still there).
pub fn hb_bin() -> PathBuf {
    std::env::var_os("HB_E2E_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hb")), PathBuf::from)
}

/// The user ID hb runs as in these tests when `HB_E2E_AS_UID` names one (its group: the
/// same number), else `None`: the test's own user. `scripts/test.sh` runs the hostile
/// build tests again as nobody (65534) this way, after all of them ran as root.
pub fn runner() -> Option<u32> {
    std::env::var("HB_E2E_AS_UID").ok().and_then(|v| v.parse().ok())
}

/// Gives `path` (recursively) to the user hb runs as, so that what it holds is as
/// readable to hb as a user's own files are (a no-op when hb runs as the test's user).
pub fn give_to_runner(path: &Path) {
    if let Some(uid) = runner() {
        run(Command::new("chown").arg("-R").arg(format!("{uid}:{uid}")).arg(path));
    }
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
            files.extend(lock.packages);
        }
        for f in &files {
            let dest = dir.join(&f.file);
            if dest.is_file() && sha256(&dest) == f.sha256 {
                continue;
            }
            let tmp = tempfile::tempdir_in(&dir).unwrap();
            let mut error = None;
            // The index is across a network: a reset connection is retried.
            for attempt in 0..4 {
                match hb_fetch::fetch(&hb_fetch::Pip::default(), &[], f, tmp.path()) {
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

/// One private apt state and `.deb` download directory for every test: root packages
/// are downloaded once per machine (each test's cache still unpacks its own roots).
pub fn apt_dir() -> PathBuf {
    repo().join("target/e2e-apt")
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
        // The repository's target roots (a superset of what any test workspace builds).
        std::fs::copy(repo().join("hb-root.lock"), root.join("hb-root.lock")).unwrap();
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
        let mut c = self.bare_cmd();
        c.env("HB_CACHE_DIR", &self.cache)
            .env("NO_COLOR", "1")
            .env("PIP_FIND_LINKS", wheelhouse())
            .env("HB_APT_DIR", apt_dir())
            .env("HB_TEST_ROOTS", repo().join("target/e2e-test-roots"));
        c
    }

    /// hb in the workspace, as the user of [`runner`], with the test's environment.
    pub fn bare_cmd(&self) -> Command {
        let mut c = match runner() {
            Some(uid) => {
                // Everything the test wrote so far becomes that user's, as a checkout is.
                give_to_runner(self._tmp.path());
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups", "--"]);
                c.arg(hb_bin()).env("HOME", self._tmp.path());
                c
            }
            None => Command::new(hb_bin()),
        };
        c.current_dir(&self.root);
        c
    }

    /// Runs hb with `args` where the host's Python cannot be seen: in a mount
    /// namespace with /usr/bin/python3.11 covered, and PATH only /usr/bin:/bin.
    pub fn cmd_hiding_host_python(&self, args: &[&str]) -> Output {
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", "mount --bind /dev/null /usr/bin/python3.11 && exec \"$@\"", "sh"]);
        c.arg(hb_bin()).args(args).current_dir(&self.root);
        c.envs(self.cmd().get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))));
        c.env("PATH", "/usr/bin:/bin");
        c.output().unwrap()
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
    cached_platform_root(name, "bookworm", "amd64", include, marker)
}

/// A minbase root of `suite` on `arch` (foreign architectures through qemu-user),
/// made once per machine and kept in the test target directory.
fn cached_platform_root(name: &str, suite: &str, arch: &str, include: &str, marker: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.join(marker).exists() {
        return dir;
    }
    let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase", &format!("--include={include}"), "--format=directory"])
        .arg(format!("--architectures={arch}"))
        .arg(suite)
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

/// A root of `platform` (`trixie-arm64`) with python3 and adduser, for installing
/// that platform's debs in a chroot.
pub fn platform_root(platform: &str) -> PathBuf {
    let (suite, arch) = platform.split_once('-').unwrap();
    match platform {
        "bookworm-amd64" => return bookworm_root(),
        "trixie-amd64" => return trixie_build_host(),
        _ => {}
    }
    cached_platform_root(&format!("{platform}-minbase-python3"), suite, arch, "python3,adduser", "usr/bin/python3")
}

/// A trixie root to run hb in, as on a Debian 13 build machine (with bubblewrap), and
/// to install trixie-amd64 debs in (with python3 and adduser).
pub fn trixie_build_host() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let include = "python3,adduser,bubblewrap,ca-certificates";
        cached_platform_root("trixie-amd64-python3-bwrap", "trixie", "amd64", include, "usr/bin/bwrap")
    })
    .clone()
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
        Root::copy_of(&bookworm_root())
    }

    /// A private copy of the root at `from`.
    pub fn copy_of(from: &Path) -> Root {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("root");
        run(Command::new("cp").arg("-a").arg(from).arg(&path));
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

/// A bookworm root with /proc mounted and services kept from starting on install (the
/// `policy-rc.d` convention). Dropping it kills every process running inside it and
/// unmounts /proc.
pub struct Chroot {
    pub root: Root,
}

impl Chroot {
    pub fn new() -> Chroot {
        Chroot::of(Root::new())
    }

    /// `root` with /proc mounted and services kept from starting on install.
    pub fn of(root: Root) -> Chroot {
        let policy = root.path.join("usr/sbin/policy-rc.d");
        std::fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
        run(Command::new("chmod").arg("0755").arg(&policy));
        run(Command::new("mount").args(["-t", "proc", "proc"]).arg(root.path.join("proc")));
        Chroot { root }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path.join(rel.trim_start_matches('/'))
    }

    pub fn sh(&self, script: &str) -> Output {
        self.root.chroot(&["/bin/sh", "-c", script])
    }

    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "`{script}` failed in the chroot:\n{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (pid, uid, command line) of every process whose root is this chroot.
    pub fn processes(&self) -> Vec<(u32, u32, String)> {
        let mut out = Vec::new();
        let want = std::fs::canonicalize(&self.root.path).unwrap();
        for e in hb_fs::read_dir_sorted(Path::new("/proc")).unwrap() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(root) = std::fs::read_link(e.path().join("root")) else { continue };
            if root != want {
                continue;
            }
            let uid = std::fs::metadata(e.path()).map(|m| m.uid()).unwrap_or(u32::MAX);
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            out.push((pid, uid, cmd));
        }
        out
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for (pid, _, _) in self.processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = Command::new("umount").arg("-l").arg(self.root.path.join("proc")).status();
    }
}

/// A venv made once per machine under `~/.cache/hb-e2e/NAME` (XDG_CACHE_HOME is
/// honoured) by `python` with `packages` from the user's index; a marker says it is
/// complete (a venv cannot move, so it is made where it stays).
pub fn cached_venv(name: &str, python: &Path, packages: &[&str]) -> PathBuf {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _held = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".cache"));
    let venv = cache.join("hb-e2e").join(name);
    let done = venv.join(".hb-complete");
    if done.exists() {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new(python).args(["-m", "venv"]).arg(&venv));
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "--disable-pip-version-check"]).args(packages));
    std::fs::write(&done, packages.join("\n")).unwrap();
    venv
}

/// The files demosite's lock names for bookworm amd64: runtime, then build.
pub fn demosite_target_files(ws: &Ws) -> Vec<hb_fetch::LockedFile> {
    let path = ws.path("demosite/hb.lock");
    let lock = hb_fetch::Lock::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    let id = hb_python::Target::bookworm_amd64((3, 11)).id();
    let mut out: Vec<hb_fetch::LockedFile> = lock.files_for(hb_fetch::Role::Runtime, &id).cloned().collect();
    out.extend(lock.files_for(hb_fetch::Role::Build, &id).cloned());
    out
}

/// A package index nothing answers on, and no wheelhouse: a colleague's build that
/// must get everything from the remote cache.
pub const NO_INDEX: &[(&str, &str)] =
    &[("PIP_INDEX_URL", "http://127.0.0.1:9/simple"), ("PIP_FIND_LINKS", ""), ("PIP_RETRIES", "0")];

/// A signing key pair made by `hb cache keygen`: (secret key file, public key hex).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let out = run(Command::new(hb_bin()).args(["cache", "keygen", "--out"]).arg(&file));
    (file, out.trim().to_string())
}

/// `hb build --json ARGS //demosite:deb` in `ws` against the remote cache `url` with
/// `env`; returns the report, the deb's sha256 and the warnings.
pub fn build_with_remote(
    ws: &Ws,
    url: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (serde_json::Value, String, Vec<String>) {
    let mut cmd = ws.cmd();
    cmd.args(["build", "--json"]).args(args).arg("//demosite:deb").env("HB_REMOTE_CACHE", url);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = report["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect();
    (report, sha256(&ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb")), warnings)
}

/// A private PostgreSQL cluster on loopback, run as the `postgres` user with Debian's
/// server binaries; stopped on drop.
pub struct Postgres {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub fn start(port: u16) -> Postgres {
        let versions = hb_fs::read_dir_sorted(Path::new("/usr/lib/postgresql"))
            .expect("Debian's postgresql is installed (scripts/deps.sh)");
        let bin = versions.last().expect("a PostgreSQL version").path().join("bin");
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("chmod").arg("0755").arg(dir.path()));
        let data = dir.path().join("data");
        run(Command::new("install").args(["-d", "-o", "postgres", "-g", "postgres"]).arg(&data));
        let as_postgres = |program: &str| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        };
        run(as_postgres("initdb").arg("-D").arg(&data).args(["-A", "trust", "-U", "postgres", "--no-sync"]));
        let options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", data.display());
        run(as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-o", &options, "-w", "start"]));
        Postgres { _dir: dir, data, bin, port }
    }

    /// Runs one SQL statement as the superuser `postgres`.
    pub fn sql(&self, sql: &str) {
        run(Command::new("runuser").args(["-u", "postgres", "--"]).arg(self.bin.join("psql")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-c",
            sql,
        ]));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
