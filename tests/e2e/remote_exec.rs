//! Remote execution: a real BuildGrid with its execution service (its scheduler's state
//! in a private PostgreSQL on loopback) and two `hb worker`s taking leases through the
//! Bots API. Builds for four platforms at once, on a machine with no `bwrap` on its
//! PATH, run their four wheel builds on both workers (their logs name them; arm64 under qemu) and
//! writes the same deb as a local build; a command that fails or times out remotely
//! reads exactly as a local one; a worker killed while it runs a command costs time,
//! not bytes: the scheduler gives the lease to the other.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Postgres, Ws, hb_bin, run, sha256, show};

const DEMOSITE_DEB: &str = "hb-out/demosite/demosite_0.1.0_amd64.deb";
const STEP_DEB: &str = "hb-out/job/job_1.0_amd64.deb";
const PLATFORMS: [(&str, &str); 4] =
    [("bookworm-amd64", "amd64"), ("bookworm-arm64", "arm64"), ("trixie-amd64", "amd64"), ("trixie-arm64", "arm64")];

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// BuildGrid's execution service with its database, and the workers; all stopped on
/// drop.
struct Grid {
    bgd: Child,
    url: String,
    dir: tempfile::TempDir,
    workers: Vec<(Child, PathBuf)>,
    _pg: Postgres,
}

impl Grid {
    fn start() -> Grid {
        let venv = crate::reapi::buildgrid_venv();
        let pg = Postgres::start(free_port());
        pg.sql("CREATE DATABASE bgd");
        let db = format!("postgresql+psycopg://postgres@127.0.0.1:{}/bgd", pg.port);
        run(Command::new(venv.join("bin/bgd")).args(["migrate", "apply", &db]));
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let template =
            std::fs::read_to_string(crate::harness::repo().join("cache/buildgrid/buildgrid-exec.yml")).unwrap();
        assert!(template.contains("bot-session-keepalive-timeout: 15"), "the template changed");
        let config = template
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@STORAGE@", &dir.path().join("cas").display().to_string())
            .replace("@DB@", &db)
            // A dead worker is noticed sooner than a team would want.
            .replace("bot-session-keepalive-timeout: 15", "bot-session-keepalive-timeout: 6");
        let bgd = crate::reapi::spawn_bgd(&venv, dir.path(), &config, port);
        let mut grid = Grid { bgd, url: format!("grpc://127.0.0.1:{port}/main"), dir, workers: Vec::new(), _pg: pg };
        for name in ["w1", "w2"] {
            grid.add_worker(name);
        }
        grid
    }

    fn add_worker(&mut self, name: &str) {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new(hb_bin())
            // This amd64 machine runs arm64 commands under qemu-user too.
            .args(["worker", "--scheduler", &self.url, "-j", "1", "--name", name, "--property", "ISA=arm64"])
            .env("HB_CACHE_DIR", self.dir.path().join(format!("{name}-cache")))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.workers.push((child, log));
    }

    /// Each worker's log so far.
    fn logs(&self) -> Vec<String> {
        self.workers.iter().map(|(_, log)| std::fs::read_to_string(log).unwrap_or_default()).collect()
    }

    fn all_logs(&self) -> String {
        self.logs().join("\n---\n")
    }

    /// `hb build ARGS` on the workers (never here), on a machine without bubblewrap.
    fn build(&self, ws: &Ws, args: &[&str]) -> Output {
        self.command(ws, args).output().unwrap()
    }

    fn command(&self, ws: &Ws, args: &[&str]) -> Command {
        let no_tools = ws.path("../no-tools");
        std::fs::create_dir_all(&no_tools).unwrap();
        let mut cmd = ws.cmd();
        cmd.arg("build").args(args).args(["--remote-executor", &self.url, "--remote-only"]).env("PATH", &no_tools);
        cmd
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        for (child, _) in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.bgd.kill();
        let _ = self.bgd.wait();
    }
}

/// The error block of a failed build's stderr: from `error:` to the end, without the
/// closing summary line (its time differs).
fn error_block(stderr: &str) -> String {
    let from = stderr.find("error: action").unwrap_or_else(|| panic!("no error in:\n{stderr}"));
    stderr[from..].lines().filter(|l| !l.contains(" action(s): ")).collect::<Vec<_>>().join("\n")
}

/// A workspace whose deb holds what one build step writes.
fn step_ws(cmd: &str) -> Ws {
    step_ws_with(cmd, 300)
}

fn step_ws_with(cmd: &str, timeout: u64) -> Ws {
    let ws = Ws::empty();
    ws.write(
        "job/BUILD.toml",
        &format!(
            r#"
[[build_step]]
name = "step"
srcs = ["in.txt"]
cmd = ["/bin/sh", "-c", {cmd:?}]
outs = ["result.txt"]
dest = "/usr/share/job"
timeout = {timeout}

[[deb]]
name = "deb"
package = "job"
version = "1.0"
maintainer = "hb developers <hb@example.org>"
description = "a build step's output\nWritten by one build step."
deps = [":step"]
"#
        ),
    );
    ws.write("job/in.txt", "input\n");
    ws
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill(pid: u32) {
    // SAFETY: kill has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

#[test]
fn builds_run_their_commands_on_workers_and_write_the_same_bytes() {
    let mut grid = Grid::start();

    // 1. demosite for all four platforms, cold, from a machine that cannot sandbox:
    //    the workers build the four wheels (arm64 under qemu), both take some, and the
    //    deb is the one a local build writes.
    let ws = Ws::demosite();
    // The four roots first (with a trivial step each, run remotely too), so that the
    // four wheel builds are ready at once and sent together: then both workers must
    // take some, however fast each wheel builds.
    ws.write(
        "warm/BUILD.toml",
        "[[build_step]]\nname = \"step\"\ncmd = [\"/bin/sh\", \"-c\", \"echo ok > {out}/ok\"]\nouts = [\"ok\"]\ndest = \"/usr/share/warm\"\n",
    );
    let out = grid.build(&ws, &["//warm:step", "--platform", "all"]);
    assert!(out.status.success(), "remote build failed:\n{}\nworkers:\n{}", show(&out), grid.all_logs());
    // One build per platform, all at once (`--platform all` builds the platforms one
    // after another, so its wheel builds would reach the scheduler one at a time, and
    // one idle worker may be handed every one of them).
    let builds: Vec<Child> = PLATFORMS
        .iter()
        .map(|(platform, _)| {
            let mut cmd = grid.command(&ws, &["//demosite:deb", "--platform", platform]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for b in builds {
        let out = b.wait_with_output().unwrap();
        assert!(out.status.success(), "remote build failed:\n{}\nworkers:\n{}", show(&out), grid.all_logs());
    }
    for (platform, arch) in PLATFORMS {
        // The workspace's default platform goes to hb-out/ itself when built alone.
        let deb = match platform {
            "bookworm-amd64" => ws.path(DEMOSITE_DEB),
            _ => ws.path(&format!("hb-out/{platform}/demosite/demosite_0.1.0_{arch}.deb")),
        };
        assert!(deb.is_file(), "{platform}: no deb");
    }
    let wheels = |log: &str| {
        log.lines().filter(|l| l.contains(": ran action ") && l.contains("(python pep517.py) exit 0")).count()
    };
    let per_worker: Vec<usize> = grid.logs().iter().map(|l| wheels(l)).collect();
    assert_eq!(per_worker.iter().sum::<usize>(), 4, "four wheel builds:\n{}", grid.all_logs());
    assert!(per_worker.iter().all(|n| *n > 0), "one worker did all the work:\n{}", grid.all_logs());
    let local = Ws::demosite();
    local.ok(&["build", "//demosite:deb"]);
    assert_eq!(sha256(&ws.path(DEMOSITE_DEB)), sha256(&local.path(DEMOSITE_DEB)), "remote and local debs differ");

    // 2. A command failing remotely reads as it does locally.
    let failing = "echo building; echo 'oops: the input is bad' >&2; exit 3";
    let remote = step_ws(failing);
    let out = grid.build(&remote, &["//job:deb"]);
    assert!(!out.status.success(), "{}", show(&out));
    let remote_error = error_block(&String::from_utf8_lossy(&out.stderr));
    let local = step_ws(failing);
    let local_error = error_block(&local.fails(&["build", "//job:deb"]));
    assert_eq!(remote_error, local_error);
    assert!(remote_error.contains("oops: the input is bad") && remote_error.contains("status 3"), "{remote_error}");
    // So does one running past its timeout (the worker stops it).
    let hanging = "echo started; sleep 60";
    let out = grid.build(&step_ws_with(hanging, 2), &["//job:deb"]);
    assert!(!out.status.success(), "{}", show(&out));
    let remote_error = error_block(&String::from_utf8_lossy(&out.stderr));
    let local_error = error_block(&step_ws_with(hanging, 2).fails(&["build", "//job:deb"]));
    assert_eq!(remote_error, local_error);
    assert!(remote_error.contains("ran past its timeout of 2 s") && remote_error.contains("started"), "{remote_error}");

    // 3. The worker running a command is killed: the scheduler hands the lease to the
    //    other worker once the first stops reporting, and the bytes are the same.
    let slow = "sleep 3; tr a-z A-Z < in.txt > {out}/result.txt";
    let ws = step_ws(slow);
    let build = {
        let no_tools = ws.path("../no-tools");
        std::fs::create_dir_all(&no_tools).unwrap();
        ws.cmd()
            .args(["build", "//job:deb", "--remote-executor", &grid.url, "--remote-only"])
            .env("PATH", &no_tools)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut victim = None;
    wait_for("a worker to start the step", Duration::from_secs(120), || {
        victim =
            grid.logs().iter().position(|l| l.lines().any(|x| x.contains("running action") && x.contains("(sh -c)")));
        victim.is_some()
    });
    let victim = victim.unwrap();
    kill(grid.workers[victim].0.id());
    let _ = grid.workers[victim].0.wait();
    let out = build.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the build did not survive a dead worker:\n{}\nworkers:\n{}",
        show(&out),
        grid.all_logs()
    );
    let survivor = &grid.logs()[1 - victim];
    assert!(survivor.lines().any(|l| l.contains("ran action") && l.contains("(sh -c) exit 0")), "{survivor}");
    let local = step_ws(slow);
    local.ok(&["build", "//job:deb"]);
    assert_eq!(sha256(&ws.path(STEP_DEB)), sha256(&local.path(STEP_DEB)));
    let text = run(Command::new("dpkg-deb").arg("--fsys-tarfile").arg(ws.path(STEP_DEB)));
    assert!(text.contains("INPUT"), "the step's output is packaged");
}
