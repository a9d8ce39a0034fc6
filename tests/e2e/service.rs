//! The service, as a Debian administrator meets it: `dpkg -i` in a fresh bookworm root,
//! start, serve, log, stop, upgrade with an edited conffile, purge. Mounts and processes
//! are cleaned up by a guard, whatever happens.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::harness::{Chroot, Ws, get, show};

fn uid_of(chroot: &Chroot, user: &str) -> u32 {
    let passwd = std::fs::read_to_string(chroot.path("/etc/passwd")).unwrap();
    let line = passwd.lines().find(|l| l.starts_with(&format!("{user}:"))).expect("user exists");
    line.split(':').nth(2).unwrap().parse().unwrap()
}

fn gid_of_group(chroot: &Chroot, group: &str) -> u32 {
    let groups = std::fs::read_to_string(chroot.path("/etc/group")).unwrap();
    let line = groups.lines().find(|l| l.starts_with(&format!("{group}:"))).expect("group exists");
    line.split(':').nth(2).unwrap().parse().unwrap()
}

#[test]
fn installs_serves_logs_stops_upgrades_and_purges_in_a_bookworm_root() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let chroot = Chroot::new();
    std::fs::copy(ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb"), chroot.path("/tmp/demosite_0.1.0_amd64.deb"))
        .unwrap();
    chroot.ok("dpkg -i /tmp/demosite_0.1.0_amd64.deb");
    let files_of_package = chroot.ok("dpkg -L demosite");

    // Start it the administrator's way and ask for the page.
    chroot.ok("/etc/init.d/demosite start");
    let page = get("http://127.0.0.1:8000/");
    assert!(page.contains("Built by hb, byte for byte."), "{page}");
    chroot.ok("/etc/init.d/demosite status");

    // gunicorn runs as the service user, master and workers.
    let uid = uid_of(&chroot, "demosite");
    let gunicorns: Vec<_> = chroot.processes().into_iter().filter(|(_, _, cmd)| cmd.contains("gunicorn")).collect();
    assert!(gunicorns.len() >= 3, "master and 2 workers expected: {gunicorns:?}");
    assert!(gunicorns.iter().all(|(_, u, _)| *u == uid), "{gunicorns:?} should all run as uid {uid}");

    // Logs: /var/log/demosite, demosite:adm, 0750, and it receives lines.
    let log_dir = std::fs::metadata(chroot.path("/var/log/demosite")).unwrap();
    assert_eq!((log_dir.uid(), log_dir.gid(), log_dir.mode() & 0o7777), (uid, gid_of_group(&chroot, "adm"), 0o750));
    // State: /var/lib/demosite, demosite's alone.
    let state = std::fs::metadata(chroot.path("/var/lib/demosite")).unwrap();
    assert_eq!((state.uid(), state.mode() & 0o7777), (uid, 0o750));
    std::fs::write(chroot.path("/var/lib/demosite/db.sqlite"), "state").unwrap();
    let log = std::fs::read_to_string(chroot.path("/var/log/demosite/demosite.log")).unwrap();
    assert!(log.contains("serving index") && log.contains("\"GET / HTTP/1.1\" 200"), "{log}");

    // Stop leaves no process behind.
    chroot.ok("/etc/init.d/demosite stop");
    let deadline = Instant::now() + Duration::from_secs(10);
    while chroot.processes().iter().any(|(_, _, c)| c.contains("gunicorn")) {
        assert!(Instant::now() < deadline, "still running after stop: {:?}", chroot.processes());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(chroot.sh("/etc/init.d/demosite status").status.code(), Some(3));

    // An administrator edits the config; a newer version keeps the edit.
    std::fs::write(chroot.path("/etc/demosite/config.cfg"), "TAGLINE = \"edited by the admin\"\n").unwrap();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &build.replace("version = \"0.1.0\"", "version = \"0.1.1\""));
    ws.ok(&["build", "//demosite:deb"]);
    std::fs::copy(ws.path("hb-out/demosite/demosite_0.1.1_amd64.deb"), chroot.path("/tmp/demosite_0.1.1_amd64.deb"))
        .unwrap();
    chroot.ok("dpkg -i /tmp/demosite_0.1.1_amd64.deb");
    assert_eq!(chroot.ok("dpkg-query -W -f '${Version}' demosite"), "0.1.1");
    assert_eq!(
        std::fs::read_to_string(chroot.path("/etc/demosite/config.cfg")).unwrap(),
        "TAGLINE = \"edited by the admin\"\n"
    );
    chroot.ok("/etc/init.d/demosite start");
    assert!(get("http://127.0.0.1:8000/").contains("edited by the admin"));
    chroot.ok("/etc/init.d/demosite stop");

    // Removal keeps the state; purge removes every file of the package, its /etc, its
    // logs and its state; the user stays.
    chroot.ok("dpkg --remove demosite");
    assert_eq!(std::fs::read_to_string(chroot.path("/var/lib/demosite/db.sqlite")).unwrap(), "state");
    chroot.ok("dpkg --purge demosite");
    for path in files_of_package.lines().filter(|p| !p.is_empty() && *p != "/.") {
        let p = chroot.path(path);
        let shared = [
            "/etc",
            "/etc/default",
            "/etc/init.d",
            "/lib",
            "/lib/systemd",
            "/lib/systemd/system",
            "/usr",
            "/usr/lib",
            "/usr/share",
            "/usr/share/doc",
            "/usr/share/lintian",
            "/usr/share/lintian/overrides",
        ];
        if shared.contains(&path) {
            continue;
        }
        assert!(std::fs::symlink_metadata(&p).is_err(), "{path} is left after purge");
    }
    assert!(!chroot.path("/etc/demosite").exists());
    assert!(!chroot.path("/var/log/demosite").exists());
    assert!(!chroot.path("/var/lib/demosite").exists());
    assert!(std::fs::read_to_string(chroot.path("/etc/passwd")).unwrap().contains("demosite:"));
}

#[test]
fn an_asgi_app_under_uvicorn_installs_serves_and_purges() {
    let ws = Ws::example("fastapi");
    ws.ok(&["build", "//examples/fastapi:deb"]);
    let chroot = Chroot::new();
    let deb = "fastapi-demo_0.1.0_amd64.deb";
    std::fs::copy(ws.path(&format!("hb-out/examples/fastapi/{deb}")), chroot.path(&format!("/tmp/{deb}"))).unwrap();
    chroot.ok(&format!("dpkg -i /tmp/{deb}"));
    chroot.ok("/etc/init.d/fastapi-demo start");
    // The environment of /etc/default reaches the app; requests go through ASGI.
    let page = get("http://127.0.0.1:8042/");
    assert!(page.contains("\"greeting\":\"hello from uvicorn\""), "{page}");
    assert!(get("http://127.0.0.1:8042/items/7").contains("\"square\":49"));
    let uid = uid_of(&chroot, "fastapi-demo");
    let servers: Vec<_> = chroot.processes().into_iter().filter(|(_, _, c)| c.contains("uvicorn")).collect();
    assert!(!servers.is_empty() && servers.iter().all(|(_, u, _)| *u == uid), "{servers:?} should run as {uid}");
    let log = std::fs::read_to_string(chroot.path("/var/log/fastapi-demo/fastapi-demo.log")).unwrap();
    assert!(log.contains("uvicorn.error") || log.contains("Application startup complete"), "{log}");
    chroot.ok("/etc/init.d/fastapi-demo stop");
    let deadline = Instant::now() + Duration::from_secs(10);
    while chroot.processes().iter().any(|(_, _, c)| c.contains("uvicorn")) {
        assert!(Instant::now() < deadline, "still running after stop: {:?}", chroot.processes());
        std::thread::sleep(Duration::from_millis(100));
    }
    chroot.ok("dpkg --purge fastapi-demo");
    assert!(!chroot.path("/usr/lib/fastapi-demo").exists() && !chroot.path("/etc/fastapi-demo").exists());
}

#[test]
fn a_service_that_dies_at_start_is_reported_as_failed() {
    let ws = Ws::demosite();
    // A port of its own: the other service tests serve on 8000 meanwhile.
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &build.replace("port = 8000", "port = 8017"));
    let init = std::fs::read_to_string(ws.path("demosite/demosite/__init__.py")).unwrap();
    ws.write("demosite/demosite/__init__.py", &format!("{init}\nraise RuntimeError('broken on purpose')\n"));
    ws.ok(&["build", "//demosite:deb"]);
    let chroot = Chroot::new();
    std::fs::copy(ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb"), chroot.path("/tmp/demosite.deb")).unwrap();
    chroot.ok("dpkg -i /tmp/demosite.deb");
    let out = chroot.sh("/etc/init.d/demosite start");
    assert!(!out.status.success(), "a service that cannot start was reported started:\n{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited right after it started"), "{}", show(&out));
    assert!(err.contains("broken on purpose"), "the log's end is shown:\n{}", show(&out));
}

#[test]
fn a_config_with_secrets_is_not_world_readable_and_a_generated_secret_stays_until_purge() {
    let ws = Ws::demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    // A port of its own: other tests serve demosite on 8000 meanwhile.
    let build = build.replace("port = 8000", "port = 8061").replace(
        "config = \"config.cfg\"",
        "config = \"config.cfg\"\nconfig_mode = \"0640\"\nsecrets = [\"secret_key\", \"api.token\"]",
    );
    ws.write("demosite/BUILD.toml", &build);
    ws.ok(&["build", "//demosite:deb"]);
    let chroot = Chroot::new();
    std::fs::copy(ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb"), chroot.path("/tmp/demosite.deb")).unwrap();
    chroot.ok("dpkg -i /tmp/demosite.deb");
    let stat = |p: &str| chroot.ok(&format!("stat -c '%U:%G %a' {p}")).trim().to_string();
    assert_eq!(stat("/etc/demosite/config.cfg"), "root:demosite 640");
    assert_eq!(
        chroot.ok("dpkg-statoverride --list /etc/demosite/config.cfg").trim(),
        "root demosite 640 /etc/demosite/config.cfg"
    );
    let secret = chroot.ok("cat /var/lib/demosite/secret_key");
    assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret:?}");
    assert_eq!(stat("/var/lib/demosite/secret_key"), "demosite:demosite 600");
    assert_ne!(secret, chroot.ok("cat /var/lib/demosite/api.token"), "each secret is its own");
    // The service user still reads its config (the group grants it).
    chroot.ok("/etc/init.d/demosite start");
    assert!(get("http://127.0.0.1:8061/").contains("Built by hb, byte for byte."));
    chroot.ok("/etc/init.d/demosite stop");
    // Reinstalling keeps the secret; purge removes it and the override.
    chroot.ok("dpkg -i /tmp/demosite.deb");
    assert_eq!(chroot.ok("cat /var/lib/demosite/secret_key"), secret);
    assert_eq!(stat("/etc/demosite/config.cfg"), "root:demosite 640");
    chroot.ok("dpkg --purge demosite");
    assert!(!chroot.path("/var/lib/demosite").exists());
    assert_eq!(chroot.sh("dpkg-statoverride --list /etc/demosite/config.cfg").status.code(), Some(1));
}

#[test]
fn a_django_app_collects_static_at_build_migrates_at_install_and_serves() {
    let ws = Ws::example("django");
    ws.ok(&["build", "//examples/django:deb"]);
    let chroot = Chroot::new();
    let deb = "django-demo_0.1.0_amd64.deb";
    std::fs::copy(ws.path(&format!("hb-out/examples/django/{deb}")), chroot.path(&format!("/tmp/{deb}"))).unwrap();
    let installed = chroot.ok(&format!("dpkg -i /tmp/{deb} 2>&1"));
    // migrate ran at configure, as the service user, into the state directory.
    assert!(installed.contains("Applying djdemo.0001_initial"), "{installed}");
    let stat = |p: &str| chroot.ok(&format!("stat -c '%U:%G %a' {p}")).trim().to_string();
    assert!(stat("/var/lib/django-demo/db.sqlite3").starts_with("django-demo:django-demo "));
    assert_eq!(stat("/var/lib/django-demo/secret_key"), "django-demo:django-demo 600");
    assert_eq!(stat("/etc/django-demo/config.cfg"), "root:django-demo 640");
    chroot.ok("/etc/init.d/django-demo start");
    let page = get("http://127.0.0.1:8043/");
    assert!(page.contains("hello from django") && page.contains("visits: 1"), "{page}");
    assert!(get("http://127.0.0.1:8043/").contains("visits: 2"));
    assert_eq!(get("http://127.0.0.1:8043/health").trim(), "ok");
    // The static files collected at build time are installed and served.
    let css = std::fs::read_to_string(ws.path("examples/django/djdemo/static/djdemo/site.css")).unwrap();
    assert_eq!(std::fs::read_to_string(chroot.path("/usr/share/django-demo/static/djdemo/site.css")).unwrap(), css);
    assert_eq!(get("http://127.0.0.1:8043/static/djdemo/site.css"), css);
    let uid = uid_of(&chroot, "django-demo");
    let servers: Vec<_> = chroot.processes().into_iter().filter(|(_, _, c)| c.contains("gunicorn")).collect();
    assert!(!servers.is_empty() && servers.iter().all(|(_, u, _)| *u == uid), "{servers:?} should run as {uid}");
    chroot.ok("/etc/init.d/django-demo stop");
    // Reconfiguring runs migrate again, harmlessly; the data stays.
    chroot.ok(&format!("dpkg -i /tmp/{deb}"));
    chroot.ok("/etc/init.d/django-demo start");
    assert!(get("http://127.0.0.1:8043/").contains("visits: 3"));
    chroot.ok("/etc/init.d/django-demo stop");
    chroot.ok("dpkg --purge django-demo");
    for gone in ["/usr/lib/django-demo", "/usr/share/django-demo", "/etc/django-demo", "/var/lib/django-demo"] {
        assert!(!chroot.path(gone).exists(), "{gone} is left after purge");
    }
}

#[test]
fn a_failing_configure_hook_fails_the_install_with_its_output_and_a_rerun_succeeds_after_the_fix() {
    let ws = Ws::demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    // A port of its own: other tests serve demosite on 8000 meanwhile.
    let hook = "on_configure = [\"test -e {state}/ready || { echo \\\"the database is not ready\\\" >&2; exit 3; }\", \"id -un >{state}/hook-ran-as\"]";
    let scripts = "\n[deb.scripts]\npreinst = \"preinst.sh\"\npostinst = \"postinst.sh\"\n";
    ws.write(
        "demosite/BUILD.toml",
        &format!("{}{scripts}", build.replace("port = 8000", &format!("port = 8062\n{hook}"))),
    );
    // The package's own scripts around hb's part (debhelper's #DEBHELPER# model).
    ws.write("demosite/preinst.sh", "#!/bin/sh\nset -e\necho \"preinst $1\" >/var/tmp/demosite-preinst\n");
    ws.write(
        "demosite/postinst.sh",
        "#!/bin/sh\nset -e\necho \"before hb: $1\" >>/var/tmp/demosite-order\n#HB#\necho \"after hb: $(id -un demosite)\" >>/var/tmp/demosite-order\n",
    );
    ws.ok(&["build", "//demosite:deb"]);
    let chroot = Chroot::new();
    std::fs::copy(ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb"), chroot.path("/tmp/demosite.deb")).unwrap();
    let out = chroot.sh("dpkg -i /tmp/demosite.deb");
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the database is not ready") && err.contains("the configure hook failed"), "{}", show(&out));
    assert!(chroot.ok("dpkg-query -W -f '${Status}' demosite").contains("half-configured"));
    // hb's part failed, so the package's script stopped there.
    assert_eq!(chroot.ok("cat /var/tmp/demosite-order"), "before hb: configure\n");
    assert_eq!(chroot.ok("cat /var/tmp/demosite-preinst"), "preinst install\n");
    // The administrator fixes what the hook needs; configuring again succeeds.
    chroot.ok("touch /var/lib/demosite/ready");
    chroot.ok("dpkg --configure demosite");
    assert_eq!(chroot.ok("cat /var/lib/demosite/hook-ran-as").trim(), "demosite");
    assert_eq!(
        chroot.ok("cat /var/tmp/demosite-order"),
        "before hb: configure\nbefore hb: configure\nafter hb: demosite\n"
    );
    chroot.ok("/etc/init.d/demosite start");
    assert!(get("http://127.0.0.1:8062/").contains("Built by hb, byte for byte."));
    chroot.ok("/etc/init.d/demosite stop");
    chroot.ok("dpkg --purge demosite");
}

#[test]
fn an_asgi_app_runs_under_gunicorn_with_uvicorn_workers_and_under_a_command_of_its_own() {
    let ws = Ws::example("fastapi");
    let build = std::fs::read_to_string(ws.path("examples/fastapi/BUILD.toml")).unwrap();
    let chroot = Chroot::new();
    let deb = "fastapi-demo_0.1.0_amd64.deb";
    // Ports of their own: the other FastAPI test serves on 8042 meanwhile.
    let variants = [
        ("server = \"gunicorn-uvicorn\"\noptions = { timeout = 45, graceful-timeout = 5 }", "8044", "gunicorn"),
        (
            "command = [\"{prefix}/bin/uvicorn\", \"--host\", \"{host}\", \"--port\", \"{port}\", \"--app-dir\", \"/\", \"{module}\"]",
            "8045",
            "uvicorn",
        ),
    ];
    for (server, port, process) in variants {
        let text = build.replace("server = \"uvicorn\"", server).replace("port = 8042", &format!("port = {port}"));
        ws.write("examples/fastapi/BUILD.toml", &text);
        ws.ok(&["build", "//examples/fastapi:deb"]);
        std::fs::copy(ws.path(&format!("hb-out/examples/fastapi/{deb}")), chroot.path(&format!("/tmp/{deb}"))).unwrap();
        chroot.ok(&format!("dpkg -i /tmp/{deb}"));
        chroot.ok("/etc/init.d/fastapi-demo start");
        assert!(get(&format!("http://127.0.0.1:{port}/items/5")).contains("\"square\":25"), "{server}");
        let uid = uid_of(&chroot, "fastapi-demo");
        let servers: Vec<_> = chroot.processes().into_iter().filter(|(_, _, c)| c.contains(process)).collect();
        assert!(!servers.is_empty() && servers.iter().all(|(_, u, _)| *u == uid), "{server}: {servers:?}");
        if process == "gunicorn" {
            let cmdline = &servers[0].2;
            assert!(cmdline.contains("UvicornWorker") && cmdline.contains("--timeout 45"), "{cmdline}");
        } else {
            // A command of its own logs to its output, which the init script keeps.
            let log = std::fs::read_to_string(chroot.path("/var/log/fastapi-demo/fastapi-demo.log")).unwrap();
            assert!(log.contains("Uvicorn running") || log.contains("Application startup complete"), "{log}");
        }
        chroot.ok("/etc/init.d/fastapi-demo stop");
        chroot.ok("dpkg --purge fastapi-demo");
    }
}
