//! The containers `hb test` installs into, sealed off from the build machine: a root
//! booted under systemd with `systemd-nspawn --boot --volatile=overlay
//! --private-network --private-users=BASE:65536` on a copy of the root owned by those
//! IDs, in a control group of its own (driven with `nsenter` into its PID 1),
//! or a chroot-like root on an overlay mount, where maintainer scripts drive the init
//! script through invoke-rc.d as on a sysv machine. The latter is made once per test:
//! `unshare --pid --mount` mounts the overlay and its own `/proc` (the kernel's
//! settings read-only) and makes the overlay the root with `pivot_root`; its PID 1 then
//! detaches the machine's file systems and makes user (IDs mapped to themselves),
//! mount (its mounts so locked), network, UTS and IPC namespaces, and stays as a
//! reaper; every command of the test joins them with `nsenter`. Either way the package
//! and its service see no process, file or network of the build machine (only their
//! own loopback, where the test's requests are made from a thread that joined the
//! namespace), can make no device node of its disks, the root itself is only read and
//! what the test changes goes to a throwaway layer. Under systemd, root in the
//! container is an ID that is nobody on the machine, so even a `/proc` it mounts
//! itself gives it no kernel setting to write. A command's output is read until it ends, not until a process it
//! left behind closes the pipes. Stopping the machine kills its PID namespace's init,
//! which ends every process in it, and checks that none is left.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::InstallError;

/// How the service is started in the test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// systemd when it can boot here, else the init script.
    Auto,
    Systemd,
    Sysv,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::Auto => "auto",
            Init::Systemd => "booted under systemd",
            Init::Sysv => "a chroot, with the init script",
        }
    }
}

/// What a command in the machine did.
pub struct Out {
    pub ok: bool,
    pub code: i32,
    pub stdout: String,
    /// Its standard output and error together.
    pub text: String,
}

/// A root the test runs commands in.
pub trait Machine {
    /// Runs a shell command line in the machine, as root.
    fn sh(&self, script: &str) -> Out;
    /// The processes of `user` in the machine (and no other's): pid as the machine
    /// sees it, and command line.
    fn processes_of(&self, user: &str) -> Vec<(u32, String)>;
    /// A process of the machine (its PID 1, as this machine numbers it), whose network
    /// namespace is where the machine's services are requested.
    fn init(&self) -> u32;
    /// Kills every process of the machine and checks that none is left; says which
    /// is, if one is.
    fn stop(&mut self) -> Result<String, String>;
}

/// Runs `f` on a thread that joined the network namespace of process `pid` (only
/// that thread: the network namespace is per thread), so that what it connects to is
/// the machine's loopback.
pub fn in_network_of<T: Send>(pid: u32, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/{pid}/ns/net");
    let ns = std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns with an open namespace file changes only this thread's
            // network namespace; the thread ends when `f` returns.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("cannot join {path}: {}", std::io::Error::last_os_error()));
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "the thread in the machine's network namespace panicked".to_string())?
    })
}

/// Sets the loopback interface of this thread's network namespace up (a new network
/// namespace has it down).
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a plain socket call; the descriptor is owned right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS read and write the ifreq passed.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req as *mut libc::ifreq) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req as *const libc::ifreq) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A PID namespace, by its init's pid on this machine and the namespace's identity
/// (`pid:[INODE]`).
struct PidNs {
    init: u32,
    id: String,
}

impl PidNs {
    fn of(init: u32) -> Result<PidNs, String> {
        let link = format!("/proc/{init}/ns/pid");
        let id = std::fs::read_link(&link).map_err(|e| format!("cannot read {link}: {e}"))?;
        let ns = PidNs { init, id: id.to_string_lossy().into_owned() };
        let ours =
            std::fs::read_link("/proc/self/ns/pid").map_err(|e| format!("cannot read our PID namespace: {e}"))?;
        if ns.id == ours.to_string_lossy() {
            return Err(format!("process {init} is not in a PID namespace of its own"));
        }
        Ok(ns)
    }

    /// The processes in the namespace (pid on this machine, command line).
    fn members(&self) -> Vec<(i32, String)> {
        let mut out = Vec::new();
        for e in hb_fs::read_dir_sorted(Path::new("/proc")).unwrap_or_default() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            if std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l.to_string_lossy() == self.id) {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                out.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ").trim().to_string()));
            }
        }
        out
    }

    /// Kills the namespace's init, which kills every process in it, and waits until
    /// none is left.
    fn kill_all(&self) -> Result<String, String> {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(self.init as libc::pid_t, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.members();
            if left.is_empty() {
                return Ok("its PID namespace killed, no process of it left".into());
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = left.iter().map(|(pid, cmd)| format!("  | {pid} {cmd}")).collect();
                return Err(format!(
                    "processes of the test root still run after its PID namespace ({}) was killed:\n{}",
                    self.id,
                    shown.join("\n")
                ));
            }
            for (pid, _) in left {
                // SAFETY: kill has no memory effects.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Runs `script` with /bin/sh in every namespace of `init`, at its root.
fn enter(init: u32, script: &str) -> Out {
    collect(
        hb_fs::env::command("nsenter")
            .args(["-t", &init.to_string(), "-a", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8"),
    )
}

/// `ps` lines (`PID ARGS`) as (pid, args).
fn parse_ps(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (pid, args) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            Some((pid.parse().ok()?, args.trim().to_string()))
        })
        .collect()
}

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a command's output is still read after it ended, while a process it left
/// running holds its standard output or error open.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// What the threads watching a command report.
enum Event {
    /// Bytes from its standard output (0) or error (1).
    Bytes(usize, Vec<u8>),
    /// That pipe closed.
    Closed,
    Exited(std::io::Result<std::process::ExitStatus>),
}

/// Runs `cmd` and collects its output. The command ends when its process does: a
/// process it started in the background (a hostile script's) may keep the pipes open
/// until the machine is stopped, and is not waited for beyond `OUTPUT_GRACE`.
fn collect(cmd: &mut Command) -> Out {
    use std::io::Read;
    let mut child = match cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            return Out { ok: false, code: -1, stdout: String::new(), text: format!("could not run {cmd:?}: {e}") };
        }
    };
    let (tx, rx) = std::sync::mpsc::channel::<Event>();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    let mut open = 0;
    for (i, pipe) in pipes.into_iter().enumerate() {
        let Some(mut pipe) = pipe else { continue };
        open += 1;
        let tx = tx.clone();
        // Ends at the pipe's end, or once nobody listens.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Event::Closed);
                        return;
                    }
                    Ok(n) => {
                        if tx.send(Event::Bytes(i, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exited(child.wait()));
    });
    let mut got = [Vec::new(), Vec::new()];
    let mut status = None;
    let mut until = None;
    while status.is_none() || open > 0 {
        let event = match until {
            None => rx.recv().ok(),
            Some(t) => rx.recv_timeout(Instant::saturating_duration_since(&t, Instant::now())).ok(),
        };
        match event {
            Some(Event::Bytes(i, bytes)) => got[i % 2].extend_from_slice(&bytes),
            Some(Event::Closed) => open -= 1,
            Some(Event::Exited(s)) => {
                status = Some(s);
                until = Some(Instant::now() + OUTPUT_GRACE);
            }
            None => break,
        }
    }
    let [stdout, stderr] = got;
    match status {
        Some(Ok(status)) => {
            let stdout = String::from_utf8_lossy(&stdout).into_owned();
            let text = format!("{stdout}{}", String::from_utf8_lossy(&stderr));
            Out { ok: status.success(), code: status.code().unwrap_or(-1), stdout, text }
        }
        Some(Err(e)) => Out { ok: false, code: -1, stdout: String::new(), text: format!("waiting for {cmd:?}: {e}") },
        None => Out { ok: false, code: -1, stdout: String::new(), text: format!("lost track of {cmd:?}") },
    }
}

/// Whether a root can be booted under systemd here.
pub fn can_boot() -> bool {
    hb_fs::env::command("systemd-nspawn")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// This machine's Debian architecture.
pub fn host_architecture() -> Result<String, InstallError> {
    let out = hb_fs::env::command("dpkg")
        .arg("--print-architecture")
        .output()
        .map_err(|e| InstallError::Setup(format!("cannot run dpkg --print-architecture: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A root booted under systemd.
pub struct Booted {
    nspawn: Child,
    /// The container's systemd (PID 1 inside).
    init: u32,
    /// Its PID namespace, once known; `None` once stopped.
    ns: Option<PidNs>,
    /// The control group it runs in (removed, with what its systemd made below it,
    /// when dropped).
    _group: hb_sandbox::cgroup::Group,
}

/// The first of the 65,536 IDs of this machine that are the IDs 0.. of a container
/// booted by `hb test`: nobody on this machine (systemd-nspawn's own range for
/// `--private-users=pick` is 0x80000..0x6FFF0000; this is one of those that are
/// multiples of 65,536).
pub const CONTAINER_UID_BASE: u32 = 0x5B2E_0000;

impl Booted {
    /// Boots a copy of `root` owned by [`CONTAINER_UID_BASE`].. (read-only, writes to
    /// a tmpfs overlay, no network but its own loopback, its IDs mapped there so that
    /// its root is nobody here) with `debs` at /srv/hb.
    pub fn start(root: &Path, debs: &Path) -> Result<Booted, InstallError> {
        let setup = |why: String| InstallError::Setup(format!("booting the test root {}: {why}", root.display()));
        let shifted = crate::root::shifted(root, CONTAINER_UID_BASE)?;
        // The container's root is nobody to these files: they must be world-readable.
        readable_to_all(debs).map_err(&setup)?;
        // systemd-nspawn hands the control group it starts in to the container's
        // systemd, which is not root here: it must be a group of its own.
        let group = hb_sandbox::cgroup::Group::for_container()
            .map_err(|e| setup(format!("{e}; `hb test --init sysv` tests the package without booting it")))?;
        let mut cmd = hb_fs::env::command("systemd-nspawn");
        cmd.arg("-D")
            .arg(&shifted)
            .args([
                "--volatile=overlay",
                "--boot",
                "--private-network",
                // Root in the container is root only there: it cannot make device
                // nodes of this machine's disks or change its kernel's settings, and
                // owns nothing here.
                &format!("--private-users={CONTAINER_UID_BASE}:65536"),
                "--register=no",
                "--keep-unit",
                "--console=passive",
                "--quiet",
            ])
            .arg(format!("--bind-ro={}:/srv/hb", debs.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        group.join_on_spawn(&mut cmd);
        let nspawn = cmd.spawn().map_err(|e| setup(format!("cannot run systemd-nspawn: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut booted = Booted { nspawn, init: 0, ns: None, _group: group };
        booted.init = loop {
            // The container's init is the child of systemd-nspawn that runs systemd (a
            // short-lived helper child comes first).
            let init = children(booted.nspawn.id())
                .into_iter()
                .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd"));
            if let Some(pid) = init {
                break pid;
            }
            if let Ok(Some(status)) = booted.nspawn.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = booted.nspawn.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(setup(format!("systemd-nspawn exited ({status}): {}", err.trim())));
            }
            if Instant::now() > deadline {
                return Err(setup("systemd-nspawn started no init within 30 s".into()));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        booted.ns = Some(PidNs::of(booted.init).map_err(setup)?);
        // systemd's bus exists a moment after it starts; then wait for the boot to end.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = booted.sh("timeout 60 systemctl is-system-running --wait");
            let state = out.stdout.trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(booted);
            }
            if Instant::now() > deadline {
                return Err(setup(format!("the root did not finish booting: {}", out.text.trim())));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Makes `dir` and the files in it readable (and the directory searchable) by anyone.
fn readable_to_all(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("making {} readable: {e}", p.display()))
    };
    set(dir, 0o755)?;
    for entry in hb_fs::read_dir_sorted(dir).map_err(|e| e.to_string())? {
        set(&entry.path(), 0o644)?;
    }
    Ok(())
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<u32> {
    let out = hb_fs::env::command("pgrep").args(["-P", &pid.to_string()]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

impl Machine for Booted {
    fn sh(&self, script: &str) -> Out {
        enter(self.init, script)
    }

    fn processes_of(&self, user: &str) -> Vec<(u32, String)> {
        // The container has its own PID namespace: its ps sees only its processes.
        parse_ps(&self.sh(&format!("ps -o pid=,args= -u {user} 2>/dev/null")).stdout)
    }

    fn init(&self) -> u32 {
        self.init
    }

    fn stop(&mut self) -> Result<String, String> {
        // Killing the container's init ends every process of its PID namespace; killing
        // only systemd-nspawn would leave them running.
        let killed = match self.ns.take() {
            Some(ns) => ns.kill_all(),
            None => Ok(String::new()),
        };
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        killed
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The setup of the chroot's namespaces, run by this machine's `sh` inside new mount
/// and PID namespaces (as their PID 1) with the overlay's directories as arguments:
/// mount the overlay, the packages and a `/proc` of the new PID namespace with the
/// kernel's settings (`/proc/sys`, `sysrq-trigger`, `irq`, `bus`, `fs`) read-only, and
/// make the overlay the root with `pivot_root`. The root's python3 (the root is still
/// as made, no package installed) then detaches the machine's file systems and makes
/// user, mount, network, UTS and IPC namespaces of their own: root inside is root only
/// there (no device nodes, no module, nothing of the machine's kernel), and the mounts
/// made before are locked, so that it cannot unmount or remount them, nor mount another
/// `/proc`. It says `unshared`, waits for its IDs to be mapped (a line `mapped` on its
/// input), says `ready` and stays as the namespaces' init, reaping the orphans
/// reparented to it (a service's daemonized processes) so that none stays a zombie.
const CHROOT_SETUP: &str = r#"set -e
lower=$1 upper=$2 work=$3 merged=$4 debs=$5
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work" "$merged"
mkdir -p "$merged/srv/hb"
mount --bind "$debs" "$merged/srv/hb"
mount -o remount,bind,ro "$merged/srv/hb"
mount -t proc -o nosuid,nodev,noexec proc "$merged/proc"
for p in sys sysrq-trigger irq bus fs; do
  if [ -e "$merged/proc/$p" ]; then
    mount --bind "$merged/proc/$p" "$merged/proc/$p"
    mount -o remount,bind,ro "$merged/proc/$p"
  fi
done
cd "$merged"
pivot_root . .
exec /usr/bin/python3 -I -c '
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
def check(result, what):
    if result != 0:
        sys.exit("cannot " + what + ": " + os.strerror(ctypes.get_errno()))
check(libc.umount2(b".", 2), "detach the build machine file systems")
os.chdir("/")
NEWUSER, NEWNS, NEWNET, NEWUTS, NEWIPC = 0x10000000, 0x20000, 0x40000000, 0x4000000, 0x8000000
check(libc.unshare(NEWUSER | NEWNS | NEWNET | NEWUTS | NEWIPC), "make the user, mount, network, UTS and IPC namespaces")
print("unshared", flush=True)
if sys.stdin.readline().strip() != "mapped":
    sys.exit("the user namespace was not mapped")
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.2)
'
"#;

/// A chroot on an overlay of the root, in namespaces of its own.
pub struct Chroot {
    /// `unshare`, the parent of the namespaces' init.
    holder: Child,
    init: u32,
    /// The PID namespace; `None` once stopped.
    ns: Option<PidNs>,
    _layer: tempfile::TempDir,
}

impl Chroot {
    pub fn start(root: &Path, debs: &Path) -> Result<Chroot, InstallError> {
        use std::os::unix::process::CommandExt;
        let setup = |why: String| InstallError::Setup(format!("starting the test root {}: {why}", root.display()));
        let base = root.parent().unwrap_or(root);
        let layer = tempfile::Builder::new()
            .prefix("hb-test-chroot")
            .tempdir_in(base)
            .map_err(|e| InstallError::Setup(format!("creating a directory in {}: {e}", base.display())))?;
        let (upper, work, merged) = (layer.path().join("upper"), layer.path().join("work"), layer.path().join("root"));
        for d in [&upper, &work, &merged] {
            hb_fs::create_dir_all(d).map_err(|e| InstallError::Setup(e.to_string()))?;
        }
        let mut cmd = hb_fs::env::command("unshare");
        cmd.args(["--pid", "--fork", "--kill-child", "--mount", "--propagation=private"])
            .args(["/bin/sh", "-c", CHROOT_SETUP, "sh"])
            .args([root, upper.as_path(), work.as_path(), merged.as_path(), debs])
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe and touches no memory of this process.
        unsafe {
            // If hb dies, unshare dies, and with it (--kill-child) the namespaces' init.
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut holder = cmd.spawn().map_err(|e| setup(format!("cannot run unshare: {e}")))?;
        match Chroot::handshake(&mut holder) {
            Ok(init) => {
                let mut c = Chroot { holder, init, ns: None, _layer: layer };
                c.ns = Some(PidNs::of(init).map_err(setup)?);
                in_network_of(init, loopback_up).map_err(setup)?.map_err(|e| {
                    setup(format!("cannot set the loopback interface of its network namespace up: {e}"))
                })?;
                Ok(c)
            }
            Err(why) => {
                let _ = holder.kill();
                let mut err = String::new();
                if let Some(mut e) = holder.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                let _ = holder.wait();
                Err(setup(format!("{why}: {}", err.trim())))
            }
        }
    }

    /// Follows the setup to its end: maps user and group IDs 0-65535 of the user
    /// namespace the init made to the same IDs here (as `systemd-nspawn
    /// --private-users=identity` does) and returns the init's pid.
    fn handshake(holder: &mut Child) -> Result<u32, String> {
        use std::io::{BufRead, Write};
        let out = holder.stdout.take().ok_or("no output from unshare (a bug in hb)")?;
        let mut out = std::io::BufReader::new(out);
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        if line.trim() != "unshared" {
            return Err("setting up its namespaces failed".into());
        }
        let init = children(holder.id()).into_iter().next().ok_or("unshare started no init")?;
        for map in ["uid_map", "gid_map"] {
            let path = format!("/proc/{init}/{map}");
            std::fs::write(&path, "0 0 65536\n").map_err(|e| format!("cannot write {path}: {e}"))?;
        }
        let mut stdin = holder.stdin.take().ok_or("no input to unshare (a bug in hb)")?;
        stdin.write_all(b"mapped\n").map_err(|e| format!("cannot tell the init its IDs are mapped: {e}"))?;
        line.clear();
        let _ = out.read_line(&mut line);
        if line.trim() != "ready" {
            return Err("setting up its user namespace failed".into());
        }
        Ok(init)
    }
}

impl Machine for Chroot {
    fn sh(&self, script: &str) -> Out {
        enter(self.init, script)
    }

    fn processes_of(&self, user: &str) -> Vec<(u32, String)> {
        // The chroot has its own PID namespace: its ps sees only its processes.
        parse_ps(&self.sh(&format!("ps -o pid=,args= -u {user} 2>/dev/null")).stdout)
    }

    fn init(&self) -> u32 {
        self.init
    }

    fn stop(&mut self) -> Result<String, String> {
        // Its mounts belong to its mount namespace, which ends with its last process.
        let killed = match self.ns.take() {
            Some(ns) => ns.kill_all(),
            None => Ok(String::new()),
        };
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        killed
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_not_waited_for_beyond_the_command() {
        // The background sleep keeps both pipes open; the command ends at once.
        let began = Instant::now();
        let out = collect(Command::new("/bin/sh").args(["-c", "sleep 30 & echo $!; echo done >&2; exit 3"]));
        assert!(began.elapsed() < Duration::from_secs(10), "took {:?}", began.elapsed());
        assert_eq!((out.ok, out.code), (false, 3));
        assert!(out.text.contains("done"), "{}", out.text);
        let pid: i32 = out.stdout.trim().parse().unwrap_or(0);
        assert!(pid > 0, "{}", out.stdout);
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }

    #[test]
    fn ps_lines_are_parsed() {
        let text = "  12 /usr/bin/python3 -m x\n 7 sleep\nnot a line\n";
        assert_eq!(parse_ps(text), [(12, "/usr/bin/python3 -m x".to_string()), (7, "sleep".to_string())]);
    }
}
