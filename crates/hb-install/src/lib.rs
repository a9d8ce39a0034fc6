//! `hb test`: the install test of a built package, as an administrator would do it and
//! as piuparts checks it. A fresh Debian root of the package's release (made once by
//! mmdebstrap from this machine's apt sources and cached) is started, under real
//! systemd in `systemd-nspawn --boot` when it can be, else as a chroot driven through
//! the init script; its changes go to a throwaway overlay, so the cached root is never
//! modified. Maintainer scripts and the service are untrusted code: either way the root
//! runs in user, PID, mount and network namespaces of its own, sees no process, file or
//! network of this machine (the test's requests are made from inside its network
//! namespace), and nothing of it outlives the test. Then, each step named and timed:
//! install with `dpkg -i`, the service running, a request answered with the expected
//! text, a restart, an upgrade to the same version keeping an edited conffile,
//! `dpkg --remove` stopping it with no process left, `dpkg --purge` leaving no file
//! behind, and stopping the root (its PID namespace killed) leaving no process on this
//! machine. The first failing step ends the test with what it saw (the service's log,
//! the files left).

mod machine;
mod root;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use machine::Init;
use machine::Machine;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A step of the test failed.
    #[error("step `{step}` failed: {why}")]
    Step { step: String, why: String },
    /// The test could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// The service a package runs, as `hb test` checks it.
#[derive(Clone, Debug)]
pub struct Service {
    /// The systemd unit and init script name (the package name).
    pub name: String,
    /// The user it runs as.
    pub user: String,
    /// Where it listens.
    pub host: String,
    pub port: u16,
    /// The path to request and the text the answer must contain (`None`: any 2xx).
    pub path: String,
    pub expect: Option<String>,
}

/// What to test.
#[derive(Clone, Debug)]
pub struct Plan {
    pub deb: PathBuf,
    pub package: String,
    /// Debian suite and architecture of the root (`bookworm`, `amd64`).
    pub suite: String,
    pub architecture: String,
    pub service: Option<Service>,
    pub init: Init,
    /// Where test roots are kept (once per suite and architecture).
    pub roots_dir: PathBuf,
}

/// One step's outcome, for the caller to show.
pub struct StepDone {
    pub step: String,
    pub detail: String,
    pub took: Duration,
}

/// Runs the test, telling each finished step to `done`.
pub fn run(plan: &Plan, done: &mut dyn FnMut(StepDone)) -> Result<(), InstallError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(InstallError::Setup(
            "hb test installs the package in a container (systemd-nspawn or a chroot), which needs root; run it as root or with sudo".into(),
        ));
    }
    let host_arch = machine::host_architecture()?;
    if plan.architecture != host_arch && plan.architecture != "all" {
        return Err(InstallError::Setup(format!(
            "hb test runs packages of this machine's architecture ({host_arch}); {} is {}",
            plan.package, plan.architecture
        )));
    }
    let mut t = Tester { plan, done };
    let init = match plan.init {
        Init::Auto if machine::can_boot() => Init::Systemd,
        Init::Auto => Init::Sysv,
        other => other,
    };
    if init == Init::Systemd && !machine::can_boot() {
        return Err(InstallError::Setup("--init systemd needs systemd-nspawn (apt install systemd-container)".into()));
    }
    let mut root = None;
    t.step(&format!("a {} {} test root", plan.suite, plan.architecture), |_| {
        let (dir, made) =
            root::test_root(&plan.roots_dir, &plan.suite, &plan.architecture).map_err(|e| e.to_string())?;
        let detail = if made { "made with mmdebstrap" } else { "cached" };
        root = Some(dir);
        Ok(format!("{detail}, {}", plan.roots_dir.display()))
    })?;
    let root = root.ok_or_else(|| InstallError::Setup("no test root (a bug in hb)".into()))?;
    let debs = tempfile::Builder::new()
        .prefix("hb-test-debs")
        .tempdir_in(&plan.roots_dir)
        .map_err(|e| InstallError::Setup(format!("creating a directory in {}: {e}", plan.roots_dir.display())))?;
    let file = plan.deb.file_name().and_then(|f| f.to_str()).unwrap_or("package.deb").to_string();
    std::fs::copy(&plan.deb, debs.path().join(&file))
        .map_err(|e| InstallError::Setup(format!("copying {}: {e}", plan.deb.display())))?;
    let mut machine: Option<Box<dyn Machine>> = None;
    t.step(&format!("start it ({})", init.name()), |_| {
        machine = Some(match init {
            Init::Systemd => Box::new(machine::Booted::start(&root, debs.path()).map_err(|e| e.to_string())?),
            _ => Box::new(machine::Chroot::start(&root, debs.path()).map_err(|e| e.to_string())?),
        });
        Ok(String::new())
    })?;
    let mut m = machine.ok_or_else(|| InstallError::Setup("no machine (a bug in hb)".into()))?;
    match t.walk(m.as_ref(), &file, init) {
        Ok(()) => t.step("stop it: nothing of it left running", |_| m.stop()),
        Err(InstallError::Step { step, why }) => match m.stop() {
            Ok(_) => Err(InstallError::Step { step, why }),
            Err(left) => Err(InstallError::Step { step, why: format!("{why}\nand stopping the test root: {left}") }),
        },
        Err(e) => Err(e),
    }
}

struct Tester<'a> {
    plan: &'a Plan,
    done: &'a mut dyn FnMut(StepDone),
}

/// How long a started service must stay up to count as running.
const STABLE: Duration = Duration::from_secs(3);

/// How long a request may take to be answered after the service runs.
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// What must stay after purge, and what changes in any running system (piuparts'
/// list, shortened): the package database and logs, caches, runtime state.
const IGNORED: &[&str] = &[
    "/var/lib/dpkg/",
    "/var/log/",
    "/var/cache/",
    "/var/lib/apt/",
    "/var/lib/systemd/",
    "/var/lib/private/",
    "/run/",
    "/tmp/",
    "/var/tmp/",
    "/proc/",
    "/sys/",
    "/dev/",
    "/etc/ld.so.cache",
    "/var/lib/ucf/",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/subuid-",
    "/etc/subgid-",
    "/etc/machine-id",
    "/etc/.pwd.lock",
    "/usr/sbin/policy-rc.d",
    "/root/",
];

impl Tester<'_> {
    fn step(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<String, String>) -> Result<(), InstallError> {
        let began = Instant::now();
        match f(self) {
            Ok(detail) => {
                (self.done)(StepDone { step: name.to_string(), detail, took: began.elapsed() });
                Ok(())
            }
            Err(why) => Err(InstallError::Step { step: name.to_string(), why }),
        }
    }

    fn walk(&mut self, m: &dyn Machine, file: &str, init: Init) -> Result<(), InstallError> {
        let pkg = self.plan.package.clone();
        let before = files(m).map_err(|why| InstallError::Step { step: "list the root's files".into(), why })?;
        self.step(&format!("install: dpkg -i {file}"), |_| {
            let out = m.sh(&format!("dpkg -i /srv/hb/{file} 2>&1"));
            if out.ok {
                Ok(String::new())
            } else {
                Err(format!("dpkg -i failed (exit {}):\n{}", out.code, indent(&out.text)))
            }
        })?;
        if let Some(svc) = self.plan.service.clone() {
            self.started_and_serving(m, &svc, init, "")?;
            self.step("restart", |_| {
                let cmd = match init {
                    Init::Systemd => format!("systemctl restart {} 2>&1", svc.name),
                    _ => format!("/etc/init.d/{} restart 2>&1", svc.name),
                };
                let out = m.sh(&cmd);
                if !out.ok {
                    return Err(format!("`{cmd}` failed:\n{}\n{}", indent(&out.text), log_of(m, &svc, init)));
                }
                Ok(String::new())
            })?;
            self.started_and_serving(m, &svc, init, " after the restart")?;
            let default = format!("/etc/default/{}", svc.name);
            self.step("upgrade to the same version keeps an edited conffile", |_| {
                let mark = "# edited by hb test: kept across upgrades";
                let edit = m.sh(&format!("test -f {default} && printf '%s\\n' '{mark}' >>{default}"));
                if !edit.ok {
                    return Err(format!("{default} is not installed: {}", edit.text.trim()));
                }
                let out = m.sh(&format!("dpkg -i /srv/hb/{file} 2>&1"));
                if !out.ok {
                    return Err(format!("dpkg -i again failed:\n{}", indent(&out.text)));
                }
                let text = m.sh(&format!("cat {default}")).text;
                if !text.contains(mark) {
                    return Err(format!("the administrator's edit of {default} was lost"));
                }
                Ok(format!("{default} kept"))
            })?;
            if init == Init::Sysv {
                // An upgrade restarts the service through its init script only under
                // systemd's helpers; here, start it again as an administrator would.
                let _ = m.sh(&format!("/etc/init.d/{} start >/dev/null 2>&1", svc.name));
            }
            self.started_and_serving(m, &svc, init, " after the upgrade")?;
        }
        self.step("remove: dpkg --remove stops it", |_| {
            let out = m.sh(&format!("dpkg --remove {pkg} 2>&1"));
            if !out.ok {
                return Err(format!("dpkg --remove failed:\n{}", indent(&out.text)));
            }
            let Some(svc) = &self.plan.service else { return Ok(String::new()) };
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let left = m.processes_of(&svc.user);
                if left.is_empty() {
                    return Ok(format!("no process of {} left", svc.user));
                }
                if Instant::now() > deadline {
                    let shown: Vec<String> = left.iter().map(|(pid, cmd)| format!("{pid} {cmd}")).collect();
                    return Err(format!(
                        "processes of {} still run after removal:\n{}",
                        svc.user,
                        indent(&shown.join("\n"))
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })?;
        self.step("purge: dpkg --purge leaves nothing", |_| {
            let out = m.sh(&format!("dpkg --purge {pkg} 2>&1"));
            if !out.ok {
                return Err(format!("dpkg --purge failed:\n{}", indent(&out.text)));
            }
            let after = files(m)?;
            let left: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
            if !left.is_empty() {
                let shown: Vec<String> = left.iter().take(30).map(|f| format!("  {f}")).collect();
                let more =
                    if left.len() > 30 { format!("\n  … and {} more", left.len() - 30) } else { String::new() };
                return Err(format!("{} path(s) left after purge:\n{}{more}", left.len(), shown.join("\n")));
            }
            let user = self.plan.service.as_ref().map(|s| s.user.clone());
            Ok(user.map(|u| format!("the system user {u} stays, as Debian keeps system users")).unwrap_or_default())
        })
    }

    /// The service running and answering.
    fn started_and_serving(
        &mut self,
        m: &dyn Machine,
        svc: &Service,
        init: Init,
        when: &str,
    ) -> Result<(), InstallError> {
        self.step(&format!("service running{when}"), |_| {
            match init {
                Init::Systemd => {
                    let deadline = Instant::now() + Duration::from_secs(45);
                    loop {
                        let state = m.sh(&format!("systemctl is-active {}", svc.name)).text.trim().to_string();
                        if state == "active" {
                            break;
                        }
                        if state == "failed" || Instant::now() > deadline {
                            let ports = service_ports(m, &svc.user);
                            return Err(format!(
                                "{}.service is {state} (the package says it listens on {}; its processes listen on: {}):\n{}\n{}",
                                svc.name,
                                host_port(&svc.host, svc.port),
                                if ports.is_empty() { "none".to_string() } else { ports.join(", ") },
                                indent(&m.sh(&format!("systemctl status --no-pager --lines=0 {} 2>&1", svc.name)).text),
                                log_of(m, svc, init)
                            ));
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let enabled = m.sh(&format!("systemctl is-enabled {}", svc.name)).text.trim().to_string();
                    if enabled != "enabled" {
                        return Err(format!("{}.service is active but {enabled}, not enabled", svc.name));
                    }
                    // A simple service is active as soon as it is started: it must also
                    // stay up, not exit and be restarted.
                    let restarts = |m: &dyn Machine| {
                        m.sh(&format!("systemctl show -p NRestarts --value {}", svc.name)).stdout.trim().to_string()
                    };
                    let first = restarts(m);
                    let until = Instant::now() + STABLE;
                    while Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(500));
                        let state = m.sh(&format!("systemctl is-active {}", svc.name)).stdout.trim().to_string();
                        if state != "active" || restarts(m) != first {
                            return Err(format!(
                                "{}.service started, then exited (now {state}, restarted {} time(s)):\n{}",
                                svc.name,
                                restarts(m),
                                log_of(m, svc, init)
                            ));
                        }
                    }
                    Ok("active and enabled, and stays up".into())
                }
                _ => {
                    let out =
                        m.sh(&format!("/etc/init.d/{} start 2>&1 && /etc/init.d/{} status 2>&1", svc.name, svc.name));
                    if !out.ok {
                        return Err(format!(
                            "the init script did not start it:\n{}\n{}",
                            indent(&out.text),
                            log_of(m, svc, init)
                        ));
                    }
                    Ok(out.text.lines().last().unwrap_or_default().trim().to_string())
                }
            }
        })?;
        let url = format!("http://{}/{}", host_port(&svc.host, svc.port), svc.path.trim_start_matches('/'));
        self.step(&format!("request {url}{when}"), |_| {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into();
            // The machine's network is its own: the request is made from inside it.
            let answer = machine::in_network_of(m.init(), || {
                let deadline = Instant::now() + ANSWER_WITHIN;
                let mut last;
                loop {
                    match agent.get(&url).call() {
                        Ok(mut resp) => {
                            let status = resp.status().as_u16();
                            let body =
                                resp.body_mut().with_config().limit(1 << 20).read_to_string().unwrap_or_default();
                            if !(200..300).contains(&status) {
                                last = format!("it answered {status}:\n{}", indent(&clip(&body)));
                            } else if let Some(want) = svc.expect.as_ref().filter(|w| !body.contains(w.as_str())) {
                                return Ok(Err(format!(
                                    "the answer (status {status}) does not contain {want:?}:\n{}",
                                    indent(&clip(&body))
                                )));
                            } else {
                                return Ok(Ok(format!("{status}, {} bytes", body.len())));
                            }
                        }
                        Err(e) => last = format!("nothing answers on port {} ({e})", svc.port),
                    }
                    if Instant::now() > deadline {
                        return Err(last);
                    }
                    std::thread::sleep(Duration::from_millis(300));
                }
            })?;
            answer.unwrap_or_else(|last| {
                let ports = service_ports(m, &svc.user);
                Err(format!(
                    "{last}; the package says its service listens on {}; the service's processes listen on: {}\n{}",
                    host_port(&svc.host, svc.port),
                    if ports.is_empty() { "none".to_string() } else { ports.join(", ") },
                    log_of(m, svc, init)
                ))
            })
        })
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Every path of the root's own file systems, but those any running system changes.
fn files(m: &dyn Machine) -> Result<Vec<String>, String> {
    let out = m.sh("find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \\) -prune -o -print 2>/dev/null");
    let mut v: Vec<String> = out
        .text
        .lines()
        .filter(|l| !IGNORED.iter().any(|i| l.starts_with(i) || i.strip_suffix('/') == Some(*l) || l == i))
        .map(str::to_string)
        .collect();
    if v.len() < 100 {
        return Err(format!("listing the root's files gave only {} path(s):\n{}", v.len(), indent(&out.text)));
    }
    v.sort();
    Ok(v)
}

/// The service's log: the journal under systemd, else its log directory's files.
fn log_of(m: &dyn Machine, svc: &Service, init: Init) -> String {
    let cmd = match init {
        Init::Systemd => format!("journalctl --no-pager -n 80 -u {} 2>&1", svc.name),
        _ => format!("tail -n 80 /var/log/{}/*.log 2>&1", svc.name),
    };
    format!("the service's log (`{cmd}`):\n{}", indent(&m.sh(&cmd).text))
}

/// The TCP ports the processes of `user` listen on (their sockets' inodes looked up in
/// /proc/net/tcp*), as the service sees them.
fn service_ports(m: &dyn Machine, user: &str) -> Vec<String> {
    let pids: Vec<String> = m.processes_of(user).iter().map(|(pid, _)| pid.to_string()).collect();
    let inodes = m.sh(&format!(
        "for p in {}; do ls -l /proc/$p/fd 2>/dev/null; done | sed -n 's/.*socket:\\[\\([0-9]*\\)\\]$/\\1/p'",
        pids.join(" ")
    ));
    let inodes: Vec<&str> = inodes.stdout.lines().map(str::trim).collect();
    listening_ports(&m.sh("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null").stdout, &inodes)
}

/// Ports in LISTEN state (0A) in /proc/net/tcp* text, of sockets among `inodes`.
fn listening_ports(text: &str, inodes: &[&str]) -> Vec<String> {
    let mut ports: Vec<u16> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ours = f.get(9).is_some_and(|i| inodes.contains(i));
            (ours && f.get(3) == Some(&"0A"))
                .then(|| f.get(1)?.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()))?
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports.iter().map(u16::to_string).collect()
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(800).collect();
    if out.len() < s.len() {
        out.push_str(" …");
    }
    out
}

fn indent(s: &str) -> String {
    s.trim_end().lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// Where test roots live: `HB_TEST_ROOTS` when set (roots can be shared between
/// caches), else `test-roots/` in the cache directory.
pub fn roots_dir(cache: &Path, configured: Option<&Path>) -> PathBuf {
    configured.map_or_else(|| cache.join("test-roots"), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_are_read_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode\n   \
            0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000 999 0 4242 1\n   \
            1: 0100007F:1F41 0100007F:0016 01 00000000:00000000 00:00000000 00000000 999 0 4243 1\n   \
            2: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 17 1\n";
        assert_eq!(listening_ports(text, &["4242", "4243"]), ["8000"]);
        assert!(listening_ports(text, &[]).is_empty());
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(host_port("::1", 80), "[::1]:80");
        assert_eq!(host_port("127.0.0.1", 80), "127.0.0.1:80");
    }
}
