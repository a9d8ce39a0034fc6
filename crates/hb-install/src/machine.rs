//! The containers `hb test` installs into: a root booted under systemd with
//! `systemd-nspawn --boot --volatile=overlay` (driven with `nsenter` into its PID 1), or
//! a chroot on an overlay mount (with `/proc`), where maintainer scripts drive the
//! init script through invoke-rc.d as on a sysv machine. Either way the root itself is only read; what the test changes goes to
//! a throwaway layer, and dropping the machine kills every process in it and unmounts.

use std::path::{Path, PathBuf};
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

fn collect(cmd: &mut Command) -> Out {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
            let text = format!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
            Out { ok: o.status.success(), code: o.status.code().unwrap_or(-1), stdout, text }
        }
        Err(e) => Out { ok: false, code: -1, stdout: String::new(), text: format!("could not run {cmd:?}: {e}") },
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
}

impl Booted {
    /// Boots `root` (read-only, writes to a tmpfs overlay) with `debs` at /srv/hb.
    pub fn start(root: &Path, debs: &Path) -> Result<Booted, InstallError> {
        let setup = |why: String| InstallError::Setup(format!("booting the test root {}: {why}", root.display()));
        let nspawn = hb_fs::env::command("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .args(["--volatile=overlay", "--boot", "--register=no", "--keep-unit", "--console=passive", "--quiet"])
            .arg(format!("--bind-ro={}:/srv/hb", debs.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| setup(format!("cannot run systemd-nspawn: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut booted = Booted { nspawn, init: 0 };
        booted.init = loop {
            // The container's init is the child of systemd-nspawn that runs systemd (a
            // short-lived helper child comes first).
            let out = hb_fs::env::command("pgrep").args(["-P", &booted.nspawn.id().to_string()]).output();
            let children: Vec<u32> = out
                .map(|o| String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect())
                .unwrap_or_default();
            let init = children
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

impl Machine for Booted {
    fn sh(&self, script: &str) -> Out {
        collect(
            hb_fs::env::command("nsenter")
                .args(["-t", &self.init.to_string(), "-a", "/bin/sh", "-c", script])
                .env_clear()
                .env("PATH", PATH)
                .env("LANG", "C.UTF-8"),
        )
    }

    fn processes_of(&self, user: &str) -> Vec<(u32, String)> {
        // The container has its own PID namespace: its ps sees only its processes.
        parse_ps(&self.sh(&format!("ps -o pid=,args= -u {user} 2>/dev/null")).stdout)
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // Killing the container's init ends every process of its PID namespace; killing
        // only systemd-nspawn would leave them running.
        if self.init != 0 {
            // SAFETY: kill has no memory effects.
            unsafe {
                libc::kill(self.init as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// A chroot on an overlay of the root.
pub struct Chroot {
    merged: PathBuf,
    mounts: Vec<PathBuf>,
    _layer: tempfile::TempDir,
}

impl Chroot {
    pub fn start(root: &Path, debs: &Path) -> Result<Chroot, InstallError> {
        let base = root.parent().unwrap_or(root);
        let layer = tempfile::Builder::new()
            .prefix("hb-test-chroot")
            .tempdir_in(base)
            .map_err(|e| InstallError::Setup(format!("creating a directory in {}: {e}", base.display())))?;
        let (upper, work, merged) = (layer.path().join("upper"), layer.path().join("work"), layer.path().join("root"));
        for d in [&upper, &work, &merged] {
            hb_fs::create_dir_all(d).map_err(|e| InstallError::Setup(e.to_string()))?;
        }
        let mut c = Chroot { merged: merged.clone(), mounts: Vec::new(), _layer: layer };
        let opts = format!("lowerdir={},upperdir={},workdir={}", root.display(), upper.display(), work.display());
        c.mount(hb_fs::env::command("mount").args(["-t", "overlay", "overlay", "-o", &opts]).arg(&merged), &merged)?;
        let proc_dir = merged.join("proc");
        c.mount(hb_fs::env::command("mount").args(["-t", "proc", "proc"]).arg(&proc_dir), &proc_dir)?;
        let srv = merged.join("srv/hb");
        hb_fs::create_dir_all(&srv).map_err(|e| InstallError::Setup(e.to_string()))?;
        c.mount(hb_fs::env::command("mount").args(["--bind", "-o", "ro"]).arg(debs).arg(&srv), &srv)?;
        Ok(c)
    }

    fn mount(&mut self, cmd: &mut Command, at: &Path) -> Result<(), InstallError> {
        let out = collect(cmd);
        if !out.ok {
            return Err(InstallError::Setup(format!("mounting {}: {}", at.display(), out.text.trim())));
        }
        self.mounts.push(at.to_path_buf());
        Ok(())
    }

    /// Processes whose root is this chroot: pid and owner's uid. (A chroot shares the
    /// machine's PID namespace, so its `ps` would also show other containers' processes
    /// of a user with the same uid.)
    fn processes(&self) -> Vec<(i32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let Ok(want) = std::fs::canonicalize(&self.merged) else { return Vec::new() };
        let mut out = Vec::new();
        for e in hb_fs::read_dir_sorted(Path::new("/proc")).unwrap_or_default() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            if std::fs::read_link(e.path().join("root")).is_ok_and(|r| r == want) {
                let uid = std::fs::metadata(e.path()).map(|m| m.uid()).unwrap_or(u32::MAX);
                out.push((pid, uid));
            }
        }
        out
    }
}

impl Machine for Chroot {
    fn sh(&self, script: &str) -> Out {
        collect(
            hb_fs::env::command("chroot")
                .arg(&self.merged)
                .args(["/bin/sh", "-c", script])
                .env_clear()
                .env("PATH", PATH)
                .env("LANG", "C.UTF-8"),
        )
    }

    fn processes_of(&self, user: &str) -> Vec<(u32, String)> {
        let passwd = std::fs::read_to_string(self.merged.join("etc/passwd")).unwrap_or_default();
        let Some(uid) = passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user)).then(|| f.get(2)?.parse::<u32>().ok())?
        }) else {
            return Vec::new();
        };
        self.processes()
            .into_iter()
            .filter(|(_, u)| *u == uid)
            .map(|(pid, _)| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                (pid as u32, String::from_utf8_lossy(&cmd).replace('\0', " ").trim().to_string())
            })
            .collect()
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = self.processes();
            if pids.is_empty() {
                break;
            }
            for (pid, _) in pids {
                // SAFETY: kill has no memory effects.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        for m in self.mounts.iter().rev() {
            let _ = hb_fs::env::command("umount").arg("-l").arg(m).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_lines_are_parsed() {
        let text = "  12 /usr/bin/python3 -m x\n 7 sleep\nnot a line\n";
        assert_eq!(parse_ps(text), [(12, "/usr/bin/python3 -m x".to_string()), (7, "sleep".to_string())]);
    }
}
