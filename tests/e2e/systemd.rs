//! The systemd path, under real systemd: a bookworm root booted by `systemd-nspawn`
//! (its root read-only, writes going to a throwaway overlay), where the debs are
//! installed, enabled, started, queried, restarted, upgraded, removed and purged, and
//! where `systemd-analyze security` rates their units. The container is killed by a
//! guard, whatever happens.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Ws, get, show, systemd_root};

/// A booted container; killed on drop.
struct Booted {
    nspawn: Child,
    /// The container's systemd (PID 1 inside).
    init: u32,
}

impl Booted {
    /// Boots the systemd root with `debs` (a host directory) at /srv/hb, read-only.
    fn start(debs: &Path) -> Booted {
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(systemd_root())
            .args(["--volatile=overlay", "--boot", "--register=no", "--keep-unit", "--console=passive"])
            .arg(format!("--bind-ro={}:/srv/hb", debs.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let init = loop {
            // The child of systemd-nspawn that runs systemd (a short-lived helper comes first).
            let out = Command::new("pgrep").args(["-P", &nspawn.id().to_string()]).output().unwrap();
            let init = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "systemd"));
            if let Some(pid) = init {
                break pid;
            }
            assert!(Instant::now() < deadline, "systemd-nspawn started no init");
            std::thread::sleep(Duration::from_millis(100));
        };
        let booted = Booted { nspawn, init };
        // systemd's bus exists a moment after it starts; then wait for the boot to end.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = booted.run("timeout 60 systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(Instant::now() < deadline, "the container did not boot: {}", show(&out));
            std::thread::sleep(Duration::from_millis(300));
        }
        booted
    }

    /// Runs a shell command inside the container.
    fn run(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "/bin/sh", "-c", script])
            .env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .output()
            .unwrap()
    }

    fn ok(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(out.status.success(), "`{script}` failed in the container:\n{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemd-analyze security`'s overall exposure of a unit (0 best, 10 worst).
    fn exposure(&self, unit: &str) -> f64 {
        let text = self.ok(&format!("systemd-analyze security --no-pager {unit}"));
        let line = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
        line.split_whitespace().find_map(|w| w.parse::<f64>().ok()).unwrap_or_else(|| panic!("{line}"))
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        // Killing the container's init ends every process of its PID namespace; killing
        // only systemd-nspawn would leave them running.
        let _ = Command::new("kill").args(["-9", &self.init.to_string()]).status();
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

fn copy_deb(ws: &Ws, rel: &str, dir: &Path) {
    let from = ws.path(rel);
    std::fs::copy(&from, dir.join(from.file_name().unwrap())).unwrap();
}

#[test]
fn under_real_systemd_services_run_confined_and_leave_nothing_on_purge() {
    // Ports of their own: other tests serve on 8000 and 8042 on this machine meanwhile.
    let demo = Ws::demosite();
    let build = std::fs::read_to_string(demo.path("demosite/BUILD.toml")).unwrap();
    demo.write("demosite/BUILD.toml", &build.replace("port = 8000", "port = 8031"));
    demo.ok(&["build", "//demosite:deb"]);
    let fast = Ws::example("fastapi");
    let fbuild = std::fs::read_to_string(fast.path("examples/fastapi/BUILD.toml")).unwrap();
    fast.write("examples/fastapi/BUILD.toml", &fbuild.replace("port = 8042", "port = 8032"));
    fast.ok(&["build", "//examples/fastapi:deb"]);
    let django = Ws::example("django");
    let dbuild = std::fs::read_to_string(django.path("examples/django/BUILD.toml")).unwrap();
    django.write("examples/django/BUILD.toml", &dbuild.replace("port = 8043", "port = 8033"));
    django.ok(&["build", "//examples/django:deb"]);
    // Outside /tmp: the container's /tmp is its own.
    let debs = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    copy_deb(&demo, "hb-out/demosite/demosite_0.1.0_amd64.deb", debs.path());
    copy_deb(&fast, "hb-out/examples/fastapi/fastapi-demo_0.1.0_amd64.deb", debs.path());
    copy_deb(&django, "hb-out/examples/django/django-demo_0.1.0_amd64.deb", debs.path());
    demo.write("demosite/BUILD.toml", &build.replace("port = 8000", "port = 8031").replace("0.1.0", "0.1.1"));
    demo.ok(&["build", "//demosite:deb"]);
    copy_deb(&demo, "hb-out/demosite/demosite_0.1.1_amd64.deb", debs.path());

    let c = Booted::start(debs.path());
    // Installed: enabled and active, serving, as the service user, confined.
    c.ok("dpkg -i /srv/hb/demosite_0.1.0_amd64.deb");
    assert_eq!(c.ok("systemctl is-enabled demosite").trim(), "enabled");
    assert_eq!(c.ok("systemctl is-active demosite").trim(), "active");
    assert!(get("http://127.0.0.1:8031/").contains("Built by hb, byte for byte."));
    assert_eq!(c.ok("systemctl show -p User --value demosite").trim(), "demosite");
    let exposure = c.exposure("demosite.service");
    assert!(exposure <= 2.0, "demosite.service exposure {exposure} > 2.0");
    // The confined service writes its log (a moment after the request it served).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.ok("cat /var/log/demosite/demosite.log 2>/dev/null || true").contains("serving index") {
        let log = c.ok("cat /var/log/demosite/demosite.log 2>/dev/null || true");
        assert!(Instant::now() < deadline, "the confined service does not log its requests:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ok("test -d /var/lib/demosite && test \"$(stat -c %U:%a /var/lib/demosite)\" = demosite:750");

    // Restart; an upgrade keeps the administrator's edit of a conffile.
    c.ok("systemctl restart demosite");
    assert!(get("http://127.0.0.1:8031/").contains("Built by hb"));
    c.ok("printf 'TAGLINE = \"edited under systemd\"\\n' > /etc/demosite/config.cfg");
    c.ok("dpkg -i /srv/hb/demosite_0.1.1_amd64.deb");
    assert_eq!(c.ok("dpkg-query -W -f '${Version}' demosite"), "0.1.1");
    assert!(get("http://127.0.0.1:8031/").contains("edited under systemd"));

    // Remove stops it; purge removes its files, /etc, logs, state and enablement links.
    c.ok("dpkg --remove demosite");
    assert_ne!(c.run("systemctl is-active demosite").status.code(), Some(0));
    c.ok("dpkg --purge demosite");
    for gone in [
        "/etc/demosite",
        "/var/log/demosite",
        "/var/lib/demosite",
        "/usr/lib/demosite",
        "/etc/systemd/system/multi-user.target.wants/demosite.service",
    ] {
        assert!(!c.run(&format!("test -e {gone} || test -L {gone}")).status.success(), "{gone} is left after purge");
    }

    // An ASGI app under uvicorn, confined the same way.
    c.ok("dpkg -i /srv/hb/fastapi-demo_0.1.0_amd64.deb");
    assert!(get("http://127.0.0.1:8032/items/6").contains("\"square\":36"));
    let exposure = c.exposure("fastapi-demo.service");
    assert!(exposure <= 2.0, "fastapi-demo.service exposure {exposure} > 2.0");
    c.ok("dpkg --purge fastapi-demo");
    assert!(!c.run("test -e /usr/lib/fastapi-demo").status.success());

    // Django: migrated at install, its confined service writes its sqlite database in
    // its state directory and serves the static files collected at build time.
    c.ok("dpkg -i /srv/hb/django-demo_0.1.0_amd64.deb");
    assert_eq!(c.ok("systemctl is-active django-demo").trim(), "active");
    assert!(get("http://127.0.0.1:8033/").contains("visits: 1"));
    assert!(get("http://127.0.0.1:8033/").contains("visits: 2"));
    assert!(get("http://127.0.0.1:8033/static/djdemo/site.css").contains("font-family"));
    let exposure = c.exposure("django-demo.service");
    assert!(exposure <= 2.0, "django-demo.service exposure {exposure} > 2.0");
    c.ok("dpkg --purge django-demo");
    for gone in ["/usr/lib/django-demo", "/usr/share/django-demo", "/var/lib/django-demo", "/etc/django-demo"] {
        assert!(!c.run(&format!("test -e {gone}")).status.success(), "{gone} is left after purge");
    }
}
