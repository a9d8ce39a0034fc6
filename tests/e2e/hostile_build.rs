//! Hostile build code: a build step and an in-tree PEP 517 backend each attempt what a
//! malicious dependency would (poison the shared target root, hand hb a file of the
//! build machine as its output, block hb on a FIFO, run forever, write without end,
//! read a descriptor its caller holds), and each test fails if the attack succeeds.
//! A root tampered with by hand on disk is found and written again before anything
//! runs in it. CI runs these as root, the worst case: the sandbox keeps no privilege;
//! and once more with hb as nobody (`HB_E2E_AS_UID=65534`), where the roots in the
//! cache are owned by the very user the sandboxed code runs as.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::{Ws, show};

/// Every written-out tree of a cache's `roots/`.
fn written_roots(ws: &Ws) -> Vec<PathBuf> {
    let dir = ws.cache.join("v1/roots");
    hb_fs::read_dir_sorted(&dir)
        .map(|es| es.into_iter().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default()
}

/// Whether any blob of the cache holds `needle`.
fn cache_holds(ws: &Ws, needle: &[u8]) -> bool {
    hb_fs::walk_sorted(&ws.cache.join("v1/cas")).into_iter().flatten().any(|e| {
        e.file_type().is_file() && std::fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
    })
}

const STEP_WS: &str = r#"
[[build_step]]
name = "evil"
srcs = ["x.txt"]
cmd = ["/bin/sh", "-c", "CMD"]
outs = ["done"]
dest = "/usr/share/evil"
timeout = 60

[[deb]]
name = "deb"
package = "evil"
version = "1.0"
maintainer = "hb developers <hb@example.org>"
description = "a package of a hostile build step\nIt tries to escape."
deps = [":evil"]
"#;

fn step_ws(cmd: &str, workspace_extra: &str) -> Ws {
    let ws = Ws::empty();
    ws.write("BUILD.toml", &format!("[workspace]\nsource_date_epoch = 1700000000\n{workspace_extra}"));
    ws.write(
        "evil/BUILD.toml",
        &STEP_WS.replace("CMD", &cmd.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")),
    );
    ws.write("evil/x.txt", "x\n");
    ws
}

/// The attack of a build step on the shared root: remount `/` read-write (as root the
/// sandbox used to keep every capability), or get capabilities back in a nested user
/// namespace, then plant a `sitecustomize.py` that every later build would run.
const POISON: &str = r#"python3.11 - <<'EOF' || true
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND = 32, 4096
for target in (b"/", b"/usr"):
    libc.mount(b"none", target, None, MS_REMOUNT | MS_BIND, None)
try:
    os.unshare(os.CLONE_NEWUSER | os.CLONE_NEWNS)
    libc.mount(b"none", b"/", None, MS_REMOUNT | MS_BIND, None)
except Exception:
    pass
for path in ("/usr/lib/python3.11/sitecustomize.py", "/usr/lib/python3.11/hb_planted.py", "/usr/bin/hb-planted"):
    try:
        open(path, "a").write("print('backdoor')\n")
    except OSError:
        pass
EOF
echo ok > {out}/done"#;

#[test]
fn a_build_step_cannot_poison_the_shared_root() {
    let ws = step_ws(POISON, "");
    ws.ok(&["build", "//evil:deb"]);
    let roots = written_roots(&ws);
    assert!(!roots.is_empty(), "the step ran in a written-out root");
    for root in &roots {
        if let Some(uid) = crate::harness::runner() {
            use std::os::unix::fs::MetadataExt;
            let owner = std::fs::metadata(root).unwrap().uid();
            assert_eq!(owner, uid, "hb did not run as {uid}: {} is {owner}'s", root.display());
        }
        for planted in ["usr/lib/python3.11/hb_planted.py", "usr/bin/hb-planted"] {
            assert!(
                !root.join(planted).exists(),
                "the build step wrote {planted} into the shared root {}",
                root.display()
            );
        }
        // Debian's own sitecustomize (a symlink into /etc) is untouched.
        let site = std::fs::read_to_string(root.join("etc/python3.11/sitecustomize.py")).unwrap_or_default();
        assert!(!site.contains("backdoor"), "the build step changed sitecustomize.py in {}", root.display());
    }
}

#[test]
fn a_root_changed_on_disk_is_written_again_before_anything_runs_in_it() {
    let check = r#"test ! -e /usr/lib/python3.11/hb_planted.py && echo clean > {out}/done"#;
    let ws = step_ws(check, "");
    ws.ok(&["build", "//evil:deb"]);
    let roots = written_roots(&ws);
    let root = roots.first().expect("a written-out root");
    // Tampered by hand, as an escaped sandbox or a careless admin would.
    let site = root.join("usr/lib/python3.11/hb_planted.py");
    std::fs::write(&site, "print('backdoor')\n").unwrap();
    ws.write("evil/x.txt", "changed\n");
    let out = ws.cmd().args(["build", "//evil:deb"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the step saw the planted file:\n{}", show(&out));
    assert!(err.contains("was not as hb left it") && err.contains("written again"), "no warning:\n{err}");
    assert!(!site.exists(), "the planted file is still in the root");
}

/// A PEP 517 backend in the app's own tree (demosite's sources and lock), doing `EVIL`
/// in `build_wheel` and returning the name it gives.
fn backend_ws(evil: &str, workspace_extra: &str) -> Ws {
    let ws = Ws::demosite();
    let settings = std::fs::read_to_string(ws.path("BUILD.toml")).unwrap();
    ws.write("BUILD.toml", &settings.replace("[workspace]\n", &format!("[workspace]\n{workspace_extra}")));
    let pyproject = std::fs::read_to_string(ws.path("demosite/pyproject.toml")).unwrap();
    let pyproject = pyproject.replace(
        "build-backend = \"setuptools.build_meta\"",
        "build-backend = \"evil_backend\"\nbackend-path = [\".\"]",
    );
    ws.write("demosite/pyproject.toml", &pyproject);
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write(
        "demosite/BUILD.toml",
        &build.replace("\"demosite/templates/*.html\"]", "\"demosite/templates/*.html\", \"evil_backend.py\"]"),
    );
    ws.write(
        "demosite/evil_backend.py",
        &format!(
            "import os\n\ndef build_wheel(wheel_directory, config_settings=None, metadata_directory=None):\n{evil}\n"
        ),
    );
    ws
}

#[test]
fn a_backend_cannot_hand_hb_a_host_file_as_its_wheel() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("signing.key");
    let canary = b"canary-signing-key-3f9a1c";
    std::fs::write(&secret, canary).unwrap();
    // The user's own secret, as hb's user would have one.
    crate::harness::give_to_runner(secret_dir.path());
    let evil = format!(
        "    name = 'demosite-0.1.0-py3-none-any.whl'\n    os.symlink({:?}, os.path.join(wheel_directory, name))\n    return name",
        secret.display().to_string()
    );
    let ws = backend_ws(&evil, "");
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("symlink") && err.contains("demosite-0.1.0-py3-none-any.whl"), "{err}");
    assert!(!cache_holds(&ws, canary), "the host file's bytes reached the cache");

    // A name with a directory part, and a FIFO: refused at once, nothing blocks.
    let ws = backend_ws("    return '../../etc/passwd.whl'", "");
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("not the file name of a wheel"), "{err}");
    let ws = backend_ws(
        "    name = 'demosite-0.1.0-py3-none-any.whl'\n    os.mkfifo(os.path.join(wheel_directory, name))\n    return name",
        "",
    );
    let started = Instant::now();
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("a FIFO"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(120), "{:?}", started.elapsed());
}

#[test]
fn an_endless_backend_and_an_endless_output_end_at_their_bounds() {
    let ws = backend_ws("    while True:\n        pass", "action_timeout = 3\n");
    let started = Instant::now();
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("timeout of 3 s") && err.contains("action_timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(120), "{:?}", started.elapsed());

    // Writing without end (a 5 GiB output) stops at the output limit, with its name.
    let ws = step_ws("head -c 5368709120 /dev/zero > {out}/done", "action_max_output_mib = 16\n");
    let err = ws.fails(&["build", "//evil:deb"]);
    assert!(err.contains("larger than its limit of 16 MiB") && err.contains("action_max_output_mib"), "{err}");
    let big = hb_fs::walk_sorted(&ws.cache).into_iter().flatten().filter_map(|e| e.metadata().ok()).map(|m| m.len());
    assert!(big.max().unwrap_or(0) < 17 << 20, "a blob over the limit was kept");
}

#[test]
fn a_descriptor_the_caller_holds_is_not_readable_inside() {
    let secret = tempfile::NamedTempFile::new().unwrap();
    let canary = "canary-ci-token-77d1";
    std::fs::write(secret.path(), canary).unwrap();
    let ws = step_ws(
        "for f in /proc/self/fd/*; do case $f in */[0-2]) ;; *) cat $f 2>/dev/null;; esac; done > {out}/done; true",
        "",
    );
    let held = std::fs::File::open(secret.path()).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
    let mut cmd = ws.cmd();
    cmd.args(["build", "//evil:deb"]);
    // SAFETY: dup2 in the child before exec, as a CI script holding a token on fd 7.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let x = tempfile::tempdir().unwrap();
    crate::harness::run(
        std::process::Command::new("dpkg-deb").arg("-x").arg(ws.path("hb-out/evil/evil_1.0_amd64.deb")).arg(x.path()),
    );
    let done = std::fs::read_to_string(x.path().join("usr/share/evil/done")).unwrap();
    assert!(!done.contains(canary), "the caller's descriptor was read inside the sandbox");
}

#[test]
fn verify_names_a_build_that_writes_the_current_date() {
    // The clock read inside the sandbox, as a backend stamping its build date would.
    let ws = step_ws("date -u +%Y-%m-%d > {out}/done", "");
    ws.ok(&["build", "//evil:deb"]);
    let out = ws.cmd().args(["verify", "--vary", "time", "--json", "//evil:deb"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a build writing today's date passed as reproducible:\n{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first"], "//evil:evil", "{report}");
}

#[test]
fn verify_names_a_build_that_writes_the_cpu_count() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("one CPU here: the cpus variation cannot change what the sandbox sees");
        return;
    }
    // Python's count (glibc's, from /sys), as a build tool sizing its jobs reads it,
    // not only `nproc` (the affinity).
    let ws = step_ws("python3.11 -c 'import os; print(os.cpu_count())' > {out}/done", "");
    ws.ok(&["build", "//evil:deb"]);
    let out = ws.cmd().args(["verify", "--vary", "cpus", "--json", "//evil:deb"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a build writing the CPU count passed as reproducible:\n{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["first"], "//evil:evil", "{report}");
}
