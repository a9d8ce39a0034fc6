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
use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod cgroup;
pub mod layers;
pub use layers::Layer;

/// The uid and gid sandboxed commands run as (in a user namespace of their own,
/// mapped to hb's): `nobody`, never root.
pub const SANDBOX_ID: &str = "65534";

/// The clock offset (libfaketime's `FAKETIME` syntax, like `+400d`) every sandboxed
/// command of this process sees, for `hb verify --vary time` only: see [`fake_clock`].
static FAKE_CLOCK: std::sync::OnceLock<(String, PathBuf)> = std::sync::OnceLock::new();

/// Where the faked clock's library appears inside the sandbox (on its home tmpfs).
const FAKETIME_AT: &str = "/hb/home/.hb-faketime/libfaketime.so.1";

/// Makes every later sandboxed command of this process see the clock moved by `offset`
/// (libfaketime preloaded; its library found among the build machine's multiarch
/// directories). Only `hb verify` asks for it, through the rebuild's environment: the
/// commands' keys do not change, so a result that depends on the date shows up as a
/// divergence. An error says what is missing.
pub fn fake_clock(offset: &str) -> Result<(), SandboxError> {
    let found = hb_fs::read_dir_sorted(Path::new("/usr/lib"))
        .map_err(|e| SandboxError::Unavailable { why: e.to_string() })?
        .into_iter()
        .map(|e| e.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.is_file());
    let Some(lib) = found else {
        return Err(SandboxError::Unavailable {
            why: "varying the clock inside the sandbox needs libfaketime (apt install faketime)".to_string(),
        });
    };
    let _ = FAKE_CLOCK.set((offset.to_string(), lib));
    Ok(())
}

/// How many CPUs every later sandboxed command of this process may run on (`None`: all
/// of hb's); see [`limit_cpus`].
static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Makes every later sandboxed command of this process run on at most `n` CPUs (its
/// affinity, which `nproc` and `os.sched_getaffinity` report) and see `n` CPUs in its
/// `/proc/stat` (where glibc's `get_nprocs`, so `os.cpu_count()`, counts them when
/// there is no `/sys`, as in the sandbox). Only `hb verify --vary
/// cpus` asks for it; a result that depends on the CPU count then shows as a divergence.
pub fn limit_cpus(n: usize) {
    let _ = CPUS.set(n.max(1));
}

/// A `/proc/stat` of `n` idle CPUs (what `hb verify --vary cpus` shows the sandbox).
fn proc_stat(n: usize) -> String {
    let mut text = String::from("cpu  0 0 0 0 0 0 0 0 0 0\n");
    for i in 0..n {
        text.push_str(&format!("cpu{i} 0 0 0 0 0 0 0 0 0 0\n"));
    }
    text.push_str("intr 0\nctxt 0\nbtime 0\nprocesses 0\nprocs_running 1\nprocs_blocked 0\nsoftirq 0\n");
    text
}

/// The first `n` CPUs of hb's own affinity, as a set for `sched_setaffinity`.
fn first_cpus(n: usize) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; the calls only read and write `own` and `set`.
    unsafe {
        let mut own: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut own) != 0 {
            return None;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let mut taken = 0;
        for cpu in 0..libc::CPU_SETSIZE as usize {
            if taken == n {
                break;
            }
            if libc::CPU_ISSET(cpu, &own) {
                libc::CPU_SET(cpu, &mut set);
                taken += 1;
            }
        }
        Some(set)
    }
}

/// Bounds on one sandboxed command besides its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Processes and threads at once (a control group; where hb can make none,
    /// `RLIMIT_NPROC`, which counts all of the user's processes and spares root;
    /// `None`: unbounded).
    pub processes: Option<u64>,
    /// Bytes of memory, its tmpfs files included (a control group; where hb can make
    /// none, `RLIMIT_DATA` of each process; `None`: unbounded).
    pub memory: Option<u64>,
    /// The largest file it may write (`RLIMIT_FSIZE`; beyond it, `SIGXFSZ`).
    pub file_size: u64,
    /// The size of its `/tmp` and home tmpfs.
    pub tmp_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { processes: Some(4096), memory: Some(8 << 30), file_size: 4 << 30, tmp_size: 4 << 30 }
    }
}

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
        "cannot create a build sandbox: {why}\n  hb runs package builds with bubblewrap (`bwrap`) in fresh namespaces so they cannot reach the network or see this machine.\n  Install it (`apt install bubblewrap`, 0.8 or newer: hb drops every capability and runs builds as an unprivileged user of their own user namespace) and allow user namespaces, or, knowing builds then see this machine, opt out with `--no-sandbox` (or HB_SANDBOX=off)."
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
    pub limits: Limits,
}

/// What a sandboxed command did.
pub struct Outcome {
    pub success: bool,
    pub code: Option<i32>,
    /// Killed because it ran past [`Spec::timeout`].
    pub timed_out: bool,
    /// The bounds of [`Limits`] it ran into, each said as a sentence.
    pub limit_hit: Vec<String>,
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
        .args(["--unshare-user", "--uid", SANDBOX_ID, "--gid", SANDBOX_ID, "--cap-drop", "ALL"])
        .args(["--size", "1048576", "--tmpfs", "/tmp"])
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

/// Whether bubblewrap can forbid further user namespaces inside the sandbox
/// (`--disable-userns`: it writes the new namespace's `max_user_namespaces`, which a
/// host whose `/proc/sys` is read-only, such as an nspawn container, refuses). Without
/// it a command could still make a nested user namespace, but its capabilities there
/// cannot undo the read-only mounts, which are locked to the namespace that made them.
fn disable_userns_works() -> bool {
    static WORKS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WORKS.get_or_init(|| {
        Command::new("bwrap")
            .env_clear()
            .args(["--unshare-all", "--unshare-user", "--uid", SANDBOX_ID, "--gid", SANDBOX_ID, "--disable-userns"])
            .args(["--die-with-parent", "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib"])
            .args(["--symlink", "usr/lib64", "/lib64", "/usr/bin/true"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    })
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
    let limits = &spec.limits;
    let mut cmd;
    // bubblewrap's options go through a memory file, so they are not on its command
    // line (the sandbox's /proc/1/cmdline would show the host paths of every mount).
    let mut args_fd: Option<std::fs::File> = None;
    // Files whose bytes bubblewrap places in the sandbox (`--ro-bind-data`).
    let mut data_fds: Vec<std::fs::File> = Vec::new();
    match mode {
        Mode::Bwrap => {
            cmd = Command::new("bwrap");
            // bwrap itself gets no environment either: nothing of the caller's (say an
            // LD_PRELOAD) may reach the sandbox, even through the launcher.
            cmd.env_clear();
            let mut a: Vec<OsString> = Vec::new();
            let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
            push(&["--unshare-all", "--die-with-parent", "--new-session", "--hostname", "hb"]);
            // An unprivileged user of a user namespace of its own, even when hb runs as
            // root: no capability (no mount, remount or ptrace), and no way to get one
            // back through a nested user namespace.
            push(&["--unshare-user", "--uid", SANDBOX_ID, "--gid", SANDBOX_ID]);
            if disable_userns_works() {
                push(&["--disable-userns"]);
            }
            push(&["--cap-drop", "ALL"]);
            let tmp_size = limits.tmp_size.to_string();
            let mut remount = Vec::new();
            match spec.root {
                Some(root) => {
                    let (mounts, ro) = layers::mount_args(root, &spec.layers)?;
                    a.extend(mounts);
                    remount = ro;
                    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
                    push(&["--proc", "/proc", "--dev", "/dev"]);
                    push(&["--size", &tmp_size, "--tmpfs", "/tmp", "--size", &tmp_size, "--tmpfs", "/hb/home"]);
                }
                None if !spec.layers.is_empty() => {
                    return Err(SandboxError::Layer {
                        at: spec.layers.iter().map(|l| l.at.as_str()).collect::<Vec<_>>().join(", "),
                        why: "layers need a target root (a bug in hb)".to_string(),
                    });
                }
                None => {
                    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
                    push(&["--ro-bind", "/usr", "/usr"]);
                    for (link, to) in
                        [("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"), ("/sbin", "usr/sbin")]
                    {
                        push(&["--symlink", to, link]);
                    }
                    push(&["--dir", "/etc", "--proc", "/proc", "--dev", "/dev"]);
                    push(&["--size", &tmp_size, "--tmpfs", "/tmp", "--dir", "/hb/home"]);
                }
            }
            a.extend([OsString::from("--bind"), spec.work.as_os_str().to_owned(), OsString::from(WORK)]);
            if let Some((offset, lib)) = FAKE_CLOCK.get() {
                a.extend([OsString::from("--ro-bind"), lib.as_os_str().to_owned(), OsString::from(FAKETIME_AT)]);
                env.insert("LD_PRELOAD".to_string(), FAKETIME_AT.to_string());
                env.insert("FAKETIME".to_string(), offset.clone());
                env.insert("FAKETIME_DONT_RESET".to_string(), "1".to_string());
            }
            if let Some(n) = CPUS.get() {
                // Without /sys, glibc counts the CPUs online (`os.cpu_count()`,
                // `sysconf`) in /proc/stat: this one has `n`, as the affinity.
                let file = memory_file(c"hb-sandbox-stat", proc_stat(*n).as_bytes())?;
                a.extend([OsString::from("--ro-bind-data"), OsString::from(file.as_raw_fd().to_string())]);
                a.push(OsString::from("/proc/stat"));
                data_fds.push(file);
            }
            for dir in &remount {
                a.extend([OsString::from("--remount-ro"), OsString::from(dir)]);
            }
            a.extend(["--chdir", spec.cwd, "--clearenv"].map(OsString::from));
            for (k, v) in &env {
                a.extend(["--setenv", k.as_str(), v.as_str()].map(OsString::from));
            }
            let file = args_file(&a)?;
            // The command itself must follow on the command line; it names only
            // paths inside the sandbox.
            cmd.arg("--args").arg(file.as_raw_fd().to_string()).arg("--").args(inner);
            args_fd = Some(file);
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
    let group = cgroup::Group::create(limits.processes, limits.memory);
    {
        use std::os::unix::process::CommandExt;
        // Its own process group, so a timeout kills everything it started.
        cmd.process_group(0);
        let keep: Vec<i32> = args_fd.iter().chain(&data_fds).map(|f| f.as_raw_fd()).collect();
        let join = group.as_ref().map(cgroup::Group::join_fds).unwrap_or_default();
        let file_size = limits.file_size;
        // Where no control group bounds them, rlimits do what they can: processes of
        // this user (RLIMIT_NPROC), each process's data (RLIMIT_DATA).
        let (in_group_pids, in_group_mem) = group.as_ref().map_or((false, false), cgroup::Group::bounds);
        let nproc = limits.processes.filter(|_| !in_group_pids);
        let data = limits.memory.filter(|_| !in_group_mem);
        let cpus = CPUS.get().and_then(|n| first_cpus(*n));
        // SAFETY: only async-signal-safe calls (umask, write, close_range, fcntl,
        // sched_setaffinity, setrlimit) on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(0o022);
                for fd in &join {
                    // "0": the writing process itself joins the group.
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // Every descriptor the caller may hold (a CI script's token on fd 7)
                // closes at exec; only the arguments' file stays open for bubblewrap.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
                for fd in &keep {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(set) = &cpus
                    && libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                let fsize = libc::rlimit { rlim_cur: file_size, rlim_max: file_size };
                let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &fsize) != 0 || libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (resource, bound) in [(libc::RLIMIT_NPROC, nproc), (libc::RLIMIT_DATA, data)] {
                    if let Some(n) = bound {
                        let r = libc::rlimit { rlim_cur: n, rlim_max: n };
                        if libc::setrlimit(resource, &r) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                Ok(())
            });
        }
    }
    let kill_group = || {
        if let Some(g) = &group {
            g.kill_all();
        }
    };
    let waited = spawn_and_wait(&mut cmd, spec.timeout, &kill_group)?;
    drop(args_fd);
    drop(data_fds);
    let Waited { status, timed_out, stdout, stderr } = waited;
    // Nothing it started outlives it: its pid namespace ended with it, and the group
    // (where there is one) is emptied before its output is read.
    let (hit_processes, hit_memory) = match &group {
        Some(g) => {
            g.kill_all();
            g.hit()
        }
        None => (false, false),
    };
    drop(group);
    let mut limit_hit = Vec::new();
    if hit_processes {
        limit_hit.push(format!(
            "it was refused a new process at its limit of {} (action_max_processes in [workspace])",
            limits.processes.unwrap_or_default()
        ));
    }
    if hit_memory {
        limit_hit.push(format!(
            "a process was killed for using more than its {} MiB of memory (action_max_memory_mib in [workspace])",
            limits.memory.unwrap_or_default() >> 20
        ));
    }
    if status.signal() == Some(libc::SIGXFSZ) || status.code() == Some(128 + libc::SIGXFSZ) {
        limit_hit.push(format!(
            "it wrote a file larger than its limit of {} MiB (action_max_output_mib in [workspace])",
            limits.file_size >> 20
        ));
    }
    Ok(Outcome { success: status.success() && !timed_out, code: status.code(), timed_out, limit_hit, stdout, stderr })
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
        if disable_userns_works() {
            cmd.arg("--disable-userns");
        }
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
        // SAFETY: umask and close_range are async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0o022);
                // No descriptor of the caller's reaches pip or what it runs.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
                Ok(())
            });
        }
    }
    let Waited { status, timed_out, stdout, stderr } = spawn_and_wait(&mut cmd, timeout, &|| {})?;
    Ok(Outcome {
        success: status.success() && !timed_out,
        code: status.code(),
        timed_out,
        limit_hit: Vec::new(),
        stdout,
        stderr,
    })
}

/// How a command ended, and the end of its output.
struct Waited {
    status: std::process::ExitStatus,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Spawns `cmd` (its own process group: the caller sets it) and waits for it,
/// killing its group and calling `on_timeout` once `timeout` has passed, while the
/// last [`OUTPUT_KEPT`] bytes of each stream are read.
fn spawn_and_wait(cmd: &mut Command, timeout: Option<Duration>, on_timeout: &dyn Fn()) -> Result<Waited, SandboxError> {
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
            on_timeout();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let joined = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
        h.and_then(|h| h.join().ok()).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    };
    Ok(Waited { status, timed_out, stdout: joined(stdout), stderr: joined(stderr) })
}

/// An anonymous memory file holding `args` NUL-separated (bubblewrap's `--args`), at
/// offset 0, closed at exec unless the child keeps it.
fn args_file(args: &[OsString]) -> Result<std::fs::File, SandboxError> {
    let mut bytes = Vec::new();
    for a in args {
        bytes.extend_from_slice(a.as_bytes());
        bytes.push(0);
    }
    memory_file(c"hb-sandbox-args", &bytes)
}

/// An anonymous memory file holding `bytes`, at offset 0, closed at exec unless the
/// child keeps it.
fn memory_file(name: &std::ffi::CStr, bytes: &[u8]) -> Result<std::fs::File, SandboxError> {
    let spawn = |source: std::io::Error| SandboxError::Spawn { program: "bwrap".to_string(), source };
    // SAFETY: a NUL-terminated name; the returned descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(spawn(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(bytes).map_err(spawn)?;
    file.seek(std::io::SeekFrom::Start(0)).map_err(spawn)?;
    Ok(file)
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
            limits: Limits::default(),
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
                limits: Limits::default(),
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

    /// Hostile code in the sandbox, with hb as root where CI runs it (the worst case):
    /// no capability, no uid 0, no remount of the read-only root, no nested user
    /// namespace to get capabilities back, no descriptor of the caller's, no host path
    /// on bubblewrap's command line.
    #[test]
    fn hostile_code_has_no_privilege_and_no_inherited_descriptor() {
        probe(Mode::Bwrap).expect("bubblewrap works here (scripts/deps.sh installs it)");
        // A secret the caller holds open, as a CI script's token on a descriptor.
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "canary-fd-secret").unwrap();
        let held = std::fs::File::open(secret.path()).unwrap();
        // SAFETY: clearing FD_CLOEXEC on a descriptor we own, as an inheriting caller would have it.
        unsafe {
            libc::fcntl(held.as_raw_fd(), libc::F_SETFD, 0);
        }
        let work = tempfile::tempdir().unwrap();
        let spec = Spec {
            work: work.path(),
            cwd: WORK,
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "grep CapEff /proc/self/status; id -u; \
                 mount -o remount,bind,rw /usr 2>/dev/null && echo REMOUNTED; \
                 unshare -Urm true 2>/dev/null && echo NESTED-USERNS; \
                 for f in /proc/self/fd/*; do case $f in */[0-2]) ;; *) cat $f 2>/dev/null;; esac; done | grep -c canary-fd-secret; \
                 tr '\\0' ' ' < /proc/1/cmdline"
                    .into(),
            ],
            env: BTreeMap::new(),
            root: None,
            layers: Vec::new(),
            timeout: Some(Duration::from_secs(20)),
            limits: Limits::default(),
        };
        let o = run(Mode::Bwrap, &spec).unwrap();
        drop(held);
        let lines: Vec<&str> = o.stdout.lines().collect();
        assert_eq!(lines.first().copied(), Some("CapEff:\t0000000000000000"), "{}{}", o.stdout, o.stderr);
        assert_eq!(lines.get(1).copied(), Some(SANDBOX_ID), "{}", o.stdout);
        assert!(!lines.iter().any(|l| *l == "REMOUNTED" || *l == "NESTED-USERNS"), "{}", o.stdout);
        assert_eq!(lines.get(2).copied(), Some("0"), "an inherited descriptor was readable: {}", o.stdout);
        let work_path = work.path().to_string_lossy();
        assert!(!o.stdout.contains(&*work_path), "host path on bwrap's command line: {}", o.stdout);
    }

    /// A fork bomb, a huge file and memory hunger each end at their bound, with the
    /// bound named, and leave no process behind.
    #[test]
    fn processes_files_and_memory_are_bounded() {
        probe(Mode::Bwrap).expect("bubblewrap works here (scripts/deps.sh installs it)");
        let work = tempfile::tempdir().unwrap();
        let limits = Limits { processes: Some(64), memory: Some(256 << 20), file_size: 8 << 20, tmp_size: 8 << 20 };
        let run_sh = |script: &str| {
            let spec = Spec {
                work: work.path(),
                cwd: WORK,
                argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: BTreeMap::new(),
                root: None,
                layers: Vec::new(),
                timeout: Some(Duration::from_secs(20)),
                limits,
            };
            run(Mode::Bwrap, &spec).unwrap()
        };
        let started = Instant::now();
        let o = run_sh("for i in $(seq 200); do sleep 3 & done; wait");
        let group = cgroup::Group::create(Some(1), None);
        if group.as_ref().is_some_and(|g| g.bounds().0) {
            assert!(o.limit_hit.iter().any(|l| l.contains("process")), "{:?} {}", o.limit_hit, o.stderr);
            assert!(started.elapsed() < Duration::from_secs(25));
        } else {
            // SAFETY: geteuid has no memory effects.
            let root = unsafe { libc::geteuid() } == 0;
            // No group: RLIMIT_NPROC refuses the fork bomb (root is exempt from it).
            assert!(root || o.stderr.contains("fork"), "200 processes started: {:?} {}", o.limit_hit, o.stderr);
        }
        drop(group);
        // Memory: the group kills it, or RLIMIT_DATA refuses the allocation.
        let o = run_sh("exec python3 -c 'b = bytearray(1 << 30); print(len(b))'");
        assert!(!o.success && !o.stdout.contains("1073741824"), "1 GiB allocated under a 256 MiB bound: {}", o.stderr);
        let o = run_sh("head -c 100000000 /dev/zero > /hb/build/big");
        assert!(!o.success && o.limit_hit.iter().any(|l| l.contains("larger than")), "{:?}", o.limit_hit);
        assert!(std::fs::metadata(work.path().join("big")).unwrap().len() <= 8 << 20);
        let o = run_sh("head -c 100000000 /dev/zero > /tmp/big");
        assert!(!o.success, "a full /tmp fails the write");
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
