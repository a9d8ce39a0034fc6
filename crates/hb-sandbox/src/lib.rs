//! The sandbox for subprocess actions (today: the PEP 517 wheel build). A command runs
//! under bubblewrap in fresh namespaces: no network (only its own loopback), its own
//! hostname, a target root (a Debian tree of hb's, see hb-root) mounted read-only as
//! `/` — or, without one, the host's read-only `/usr` and an empty `/etc` — an empty
//! `/tmp`, the action's work directory bind-mounted at a fixed path, a cleared
//! environment with only the variables given, and umask 022 (set before bubblewrap
//! starts, so no shell is needed inside). Where the build happens therefore cannot
//! leak into what it produces. Build steps run here. [`run_networked`] is the one
//! variant with the host's network: `hb lock`'s `pip download`, which must reach the
//! index but sees nothing else of the host.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod layers;
pub use layers::Layer;

/// Where the work directory appears inside the sandbox.
pub const WORK: &str = "/hb/build";

/// The environment every sandboxed command starts from (plus the spec's own variables).
pub const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/bin:/bin"),
    ("LANG", "C.UTF-8"),
    ("LC_ALL", "C.UTF-8"),
    ("TZ", "UTC"),
    ("PYTHONHASHSEED", "0"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
    ("HOME", "/hb/home"),
    ("USER", "hb"),
    ("LOGNAME", "hb"),
    ("TMPDIR", "/tmp"),
];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "cannot create a build sandbox: {why}\n  hb runs package builds with bubblewrap (`bwrap`) in fresh namespaces so they cannot reach the network or see this machine.\n  Install it (`apt install bubblewrap`) and allow unprivileged user namespaces, or, knowing builds then see this machine, opt out with `--no-sandbox` (or HB_SANDBOX=off)."
    )]
    Unavailable { why: String },
    #[error(
        "cannot create the sandbox `hb lock` runs pip in: {why}\n  hb resolves with pip under bubblewrap (`bwrap`), sharing only the network, so that nothing pip fetches sees this machine. Install it (`apt install bubblewrap`); there is no opting out."
    )]
    NetworkedUnavailable { why: String },
    #[error("could not start {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("cannot place {at} in the sandbox: {why}")]
    Layer { at: String, why: String },
    #[error(
        "{what} needs the sandbox: it runs in the target root with its tools at their install paths, which only a sandbox can show; drop `--no-sandbox` (HB_SANDBOX=off)"
    )]
    Needed { what: String },
}

/// How subprocess actions are isolated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// bubblewrap namespaces (the default).
    Bwrap,
    /// Same cleared environment and umask, but no namespaces: an explicit opt-out.
    Off,
}

/// A command to run in the sandbox.
pub struct Spec<'a> {
    /// Host directory mounted read-write at [`WORK`].
    pub work: &'a Path,
    /// Working directory inside the sandbox.
    pub cwd: &'a str,
    pub argv: Vec<String>,
    /// Variables added to [`BASE_ENV`] (overriding it).
    pub env: BTreeMap<String, String>,
    /// A root directory to mount read-only as `/` (it must have the mount points
    /// `proc`, `dev`, `tmp`, `hb/build` and `hb/home`); `None`: the host's `/usr`.
    pub root: Option<&'a Path>,
    /// Directories of the build machine placed read-only over the root (needs a root).
    pub layers: Vec<Layer>,
    /// The command and everything it started are killed after this long.
    pub timeout: Option<Duration>,
}

/// What a sandboxed command did.
pub struct Outcome {
    pub success: bool,
    pub code: Option<i32>,
    /// Killed because it ran past [`Spec::timeout`].
    pub timed_out: bool,
    /// Its output (the last [`OUTPUT_KEPT`] bytes of each stream).
    pub stdout: String,
    pub stderr: String,
}

/// How much of each output stream is kept: the end, where failures are told.
pub const OUTPUT_KEPT: usize = 1 << 20;

/// Checks that the sandbox can be created here; an error says how to fix it.
pub fn probe(mode: Mode) -> Result<(), SandboxError> {
    if mode == Mode::Off {
        return Ok(());
    }
    let out = Command::new("bwrap")
        .env_clear()
        .args(["--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr"])
        .args(["--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib"])
        .args(["--symlink", "usr/lib64", "/lib64", "/usr/bin/true"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) => Err(SandboxError::Unavailable { why: format!("`bwrap` could not be run ({e})") }),
        Ok(o) if !o.status.success() => {
            Err(SandboxError::Unavailable { why: String::from_utf8_lossy(&o.stderr).trim().to_string() })
        }
        Ok(_) => Ok(()),
    }
}

/// Runs `spec` in the sandbox and collects its output.
pub fn run(mode: Mode, spec: &Spec) -> Result<Outcome, SandboxError> {
    let mut env: BTreeMap<String, String> = BASE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let inner = &spec.argv;
    let Some(program) = inner.first() else {
        return Err(SandboxError::Spawn {
            program: String::new(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let mut cmd;
    match mode {
        Mode::Bwrap => {
            cmd = Command::new("bwrap");
            // bwrap itself gets no environment either: nothing of the caller's (say an
            // LD_PRELOAD) may reach the sandbox, even through the launcher.
            cmd.env_clear();
            cmd.args(["--unshare-all", "--die-with-parent", "--new-session", "--hostname", "hb"]);
            let mut remount = Vec::new();
            match spec.root {
                Some(root) => {
                    let (mounts, ro) = layers::mount_args(root, &spec.layers)?;
                    cmd.args(mounts);
                    remount = ro;
                    cmd.args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/hb/home"]);
                }
                None if !spec.layers.is_empty() => {
                    return Err(SandboxError::Layer {
                        at: spec.layers.iter().map(|l| l.at.as_str()).collect::<Vec<_>>().join(", "),
                        why: "layers need a target root (a bug in hb)".to_string(),
                    });
                }
                None => {
                    cmd.args(["--ro-bind", "/usr", "/usr"]);
                    for (link, to) in
                        [("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/sbin", "usr/sbin")]
                    {
                        cmd.args(["--symlink", to, link]);
                    }
                    cmd.args(["--dir", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]);
                    cmd.args(["--dir", "/hb/home"]);
                }
            }
            cmd.arg("--bind").arg(spec.work).arg(WORK);
            for dir in &remount {
                cmd.args(["--remount-ro", dir]);
            }
            cmd.args(["--chdir", spec.cwd, "--clearenv"]);
            for (k, v) in &env {
                cmd.args(["--setenv", k, v]);
            }
            cmd.arg("--");
            cmd.args(inner);
        }
        Mode::Off if !spec.layers.is_empty() => {
            return Err(SandboxError::Needed { what: "a command with tools".to_string() });
        }
        Mode::Off => {
            // Without namespaces the fixed path cannot exist; paths in `spec` that
            // start with WORK are rewritten to the real work directory.
            let real = |s: &str| match s.strip_prefix(WORK) {
                Some(rest) => format!("{}{rest}", spec.work.display()),
                None => s.to_string(),
            };
            cmd = Command::new(real(program));
            cmd.args(inner.iter().skip(1).map(|a| real(a)));
            cmd.current_dir(real(spec.cwd)).env_clear();
            for (k, v) in &env {
                cmd.env(k, real(v));
            }
            let home = PathBuf::from(real("/hb/home"));
            cmd.env("HOME", &home);
        }
    }
    collect(cmd, spec.timeout)
}

/// A command that must reach the network and nothing else of the build machine:
/// `pip download` resolving a lock (`hb lock`), which talks to the index.
pub struct NetSpec {
    pub argv: Vec<String>,
    /// Its whole environment (nothing else is inherited).
    pub env: BTreeMap<String, String>,
    /// Host files or directories shown read-only: (host path, path inside).
    pub read_only: Vec<(PathBuf, PathBuf)>,
    /// Host directories shown writable at the same path.
    pub writable: Vec<PathBuf>,
    /// The command and everything it started are killed after this long.
    pub timeout: Option<Duration>,
}

/// Whether bubblewrap can give the command a user namespace of its own (then it runs
/// as `nobody` there); asked once.
fn user_namespace_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        hb_fs::env::command("bwrap")
            .env_clear()
            .args(["--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--die-with-parent"])
            .args(["--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64"])
            .arg("/usr/bin/true")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs `spec` under bubblewrap with the host's network but nothing else of the host:
/// every other namespace unshared (a user namespace, as uid and gid 65534, when the
/// kernel allows it), all capabilities dropped, the host's read-only `/usr`, a fresh
/// `/tmp` and home (`/hb/home`), an `/etc` holding only what [`NetSpec::read_only`]
/// places, the environment exactly [`NetSpec::env`], its own session, and killed with
/// hb. There is no opting out: this runs code hb does not trust with the network.
pub fn run_networked(spec: &NetSpec) -> Result<Outcome, SandboxError> {
    probe(Mode::Bwrap).map_err(|e| match e {
        SandboxError::Unavailable { why } => SandboxError::NetworkedUnavailable { why },
        e => e,
    })?;
    let mut cmd = Command::new("bwrap");
    cmd.env_clear();
    cmd.args(["--unshare-all", "--share-net", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
    if user_namespace_works() {
        cmd.args(["--unshare-user", "--uid", "65534", "--gid", "65534"]);
    }
    cmd.args(["--ro-bind", "/usr", "/usr"]);
    for (link, to) in [("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/sbin", "usr/sbin")] {
        cmd.args(["--symlink", to, link]);
    }
    cmd.args(["--dir", "/etc", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/hb/home"]);
    for (host, at) in &spec.read_only {
        cmd.arg("--ro-bind").arg(host).arg(at);
    }
    for dir in &spec.writable {
        cmd.arg("--bind").arg(dir).arg(dir);
    }
    cmd.args(["--chdir", "/", "--clearenv"]);
    for (k, v) in &spec.env {
        cmd.args(["--setenv", k, v]);
    }
    cmd.arg("--");
    cmd.args(&spec.argv);
    collect(cmd, spec.timeout)
}

/// Starts `cmd` in its own process group with umask 022 and collects its output,
/// killing the group after `timeout`.
fn collect(mut cmd: Command, timeout: Option<Duration>) -> Result<Outcome, SandboxError> {
    {
        use std::os::unix::process::CommandExt;
        // Its own process group, so a timeout kills everything it started.
        cmd.process_group(0);
        // SAFETY: umask is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                Ok(())
            });
        }
    }
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| SandboxError::Spawn { program: program.clone(), source })?;
    let stdout = child.stdout.take().map(|s| std::thread::spawn(move || keep_tail(s)));
    let stderr = child.stderr.take().map(|s| std::thread::spawn(move || keep_tail(s)));
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(SandboxError::Spawn { program, source }),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
            timed_out = true;
            // SAFETY: kill has no memory effects; the group is the child's own.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let joined = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    };
    Ok(Outcome {
        success: status.success() && !timed_out,
        code: status.code(),
        timed_out,
        stdout: joined(stdout),
        stderr: joined(stderr),
    })
}

/// Reads a stream to its end, keeping the last [`OUTPUT_KEPT`] bytes.
fn keep_tail(mut r: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(buf.get(..n).unwrap_or_default());
                if kept.len() > 2 * OUTPUT_KEPT {
                    kept.drain(..kept.len() - OUTPUT_KEPT);
                }
            }
        }
    }
    if kept.len() > OUTPUT_KEPT {
        kept.drain(..kept.len() - OUTPUT_KEPT);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Outcome {
        let d = tempfile::tempdir().unwrap();
        let spec = Spec {
            work: d.path(),
            cwd: WORK,
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: BTreeMap::from([("EXTRA".to_string(), "1".to_string())]),
            root: None,
            layers: Vec::new(),
            timeout: None,
        };
        run(Mode::Bwrap, &spec).unwrap()
    }

    #[test]
    fn environment_is_cleared_and_fixed() {
        probe(Mode::Bwrap).expect("bubblewrap works here (scripts/deps.sh installs it)");
        let o = sh(
            "echo $PWD $HOME $LANG $TZ $EXTRA $(umask) $(hostname 2>/dev/null || cat /proc/sys/kernel/hostname); env | wc -l",
        );
        assert!(o.success, "{}", o.stderr);
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines[0], "/hb/build /hb/home C.UTF-8 UTC 1 0022 hb");
        // BASE_ENV + EXTRA + PWD/SHLVL/_ that sh itself sets.
        assert!(lines[1].trim().parse::<usize>().unwrap() <= BASE_ENV.len() + 4, "{}", o.stdout);
    }

    #[test]
    fn no_network_and_no_host_files() {
        probe(Mode::Bwrap).expect("bubblewrap works here (scripts/deps.sh installs it)");
        let o = sh("ls /etc | wc -l; ls /root 2>&1 >/dev/null | wc -l; cat /proc/net/dev | grep -c ':'");
        assert!(o.success, "{}", o.stderr);
        let lines: Vec<&str> = o.stdout.lines().map(str::trim).collect();
        assert_eq!(lines[0], "0", "/etc is empty");
        assert_eq!(lines[1], "1", "/root is not visible");
        assert_eq!(lines[2], "1", "only the loopback interface exists");
    }

    #[test]
    fn layers_appear_over_a_read_only_root_and_timeouts_kill() {
        probe(Mode::Bwrap).expect("bubblewrap works here (scripts/deps.sh installs it)");
        let work = tempfile::tempdir().unwrap();
        let tool = tempfile::tempdir().unwrap();
        std::fs::write(tool.path().join("hello"), "from the tool").unwrap();
        let run_sh = |script: &str, timeout: Option<Duration>| {
            let spec = Spec {
                work: work.path(),
                cwd: WORK,
                argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: BTreeMap::new(),
                // The build machine's own `/` stands in for a target root.
                root: Some(Path::new("/")),
                layers: vec![Layer { host: tool.path().to_path_buf(), at: "/usr/lib/hb-layer-test".into() }],
                timeout,
            };
            run(Mode::Bwrap, &spec).unwrap()
        };
        let o = run_sh(
            "cat /usr/lib/hb-layer-test/hello; echo; test -x /usr/bin/sh && echo root-visible; \
             touch /usr/lib/x 2>/dev/null || echo usr-read-only; touch /x 2>/dev/null || echo slash-read-only; \
             touch /usr/lib/hb-layer-test/y 2>/dev/null || echo layer-read-only; touch /hb/build/ok && echo work-writable",
            None,
        );
        assert!(o.success, "{}", o.stderr);
        assert_eq!(
            o.stdout.lines().collect::<Vec<_>>(),
            ["from the tool", "root-visible", "usr-read-only", "slash-read-only", "layer-read-only", "work-writable"]
        );
        let started = Instant::now();
        let o = run_sh("sleep 30 & sleep 30", Some(Duration::from_millis(300)));
        assert!(o.timed_out && !o.success);
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    #[test]
    fn the_networked_sandbox_shows_only_what_it_is_given() {
        probe(Mode::Bwrap).expect("bubblewrap works here (scripts/deps.sh installs it)");
        let shown = tempfile::tempdir().unwrap();
        std::fs::write(shown.path().join("conf"), "visible").unwrap();
        let out = tempfile::tempdir().unwrap();
        let spec = NetSpec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "cat /etc/x.conf; echo; ls /root 2>/dev/null | wc -l; ls /etc; env | grep -c HB_; \
                 touch /usr/x 2>/dev/null || echo usr-read-only; touch \"$OUT/w\" && echo out-writable"
                    .into(),
            ],
            env: BTreeMap::from([("OUT".to_string(), out.path().display().to_string())]),
            read_only: vec![(shown.path().join("conf"), PathBuf::from("/etc/x.conf"))],
            writable: vec![out.path().to_path_buf()],
            timeout: Some(Duration::from_secs(30)),
        };
        let o = run_networked(&spec).unwrap();
        assert!(o.success, "{}", o.stderr);
        assert_eq!(
            o.stdout.lines().collect::<Vec<_>>(),
            ["visible", "0", "x.conf", "0", "usr-read-only", "out-writable"]
        );
    }
}
