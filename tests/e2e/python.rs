//! Python apps: the locked, fetched, sandbox-built, natively installed virtualenv, checked
//! in a real bookworm root and against pip's own install, plus every bad input the
//! Python pipeline must refuse with a clear message.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use crate::harness::{Root, Ws, run, sha256, show};

const DEB: &str = "hb-out/demosite/demosite_0.1.0_amd64.deb";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_venv_runs_in_a_bookworm_root_with_only_python3() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let deb = ws.path(DEB);
    let info = run(Command::new("dpkg-deb").arg("--field").arg(&deb).arg("Depends"));
    assert!(info.contains("python3 (>= 3.11~), python3 (<< 3.12)"), "{info}");
    assert!(info.contains("libc6 (>= 2."), "compiled extensions need libc6: {info}");

    // Unpacked by dpkg itself (not dpkg-deb -x, which would replace the merged-/usr
    // symlinks such as /lib with directories); nothing is configured or started.
    let root = Root::new();
    std::fs::copy(&deb, root.path.join("tmp/app.deb")).unwrap();
    let out = root.chroot(&["dpkg", "--unpack", "/tmp/app.deb"]);
    assert!(out.status.success(), "{}", show(&out));
    let out = root.chroot(&["/usr/lib/demosite/bin/gunicorn", "--version"]);
    assert!(out.status.success() && text(&out.stdout).contains("gunicorn"), "{}", show(&out));
    let out = root.chroot(&[
        "/usr/lib/demosite/bin/python",
        "-c",
        "import sys, demosite, flask, markupsafe._speedups; assert sys.prefix == '/usr/lib/demosite', sys.prefix; print(demosite.app.name)",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(text(&out.stdout).trim(), "demosite");
    // Nothing compiled is shipped.
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    assert!(!contents.contains("__pycache__") && !contents.contains(".pyc"), "{contents}");
}

/// Relative paths of files and symlinks under `root`.
fn file_set(root: &Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for e in hb_fs::walk_sorted(root) {
        let e = e.unwrap();
        if !e.file_type().is_dir() {
            out.insert(e.path().strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn the_venv_has_the_files_pip_would_install() {
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(ws.path(DEB)).arg(x.path()));
    let ours = file_set(&x.path().join("usr/lib/demosite"));

    // pip's install of the same locked files (found in hb's store by their sha256) and
    // of the app itself, into a venv made by Debian's python3.11.
    let wheels = tempfile::tempdir().unwrap();
    let wanted: std::collections::BTreeMap<String, String> = default_target_files(&ws)
        .into_iter()
        .filter(|f| f.role == hb_fetch::Role::Runtime)
        .map(|f| (f.sha256, f.file))
        .collect();
    for e in hb_fs::walk_sorted(&ws.cache) {
        let e = e.unwrap();
        if e.file_type().is_file()
            && let Some(file) = wanted.get(&sha256(e.path()))
        {
            std::fs::copy(e.path(), wheels.path().join(file)).unwrap();
        }
    }
    assert_eq!(
        hb_fs::read_dir_sorted(wheels.path()).unwrap().len(),
        wanted.len(),
        "every locked wheel is in the store"
    );
    let venv = x.path().join("pip-venv");
    run(Command::new("/usr/bin/python3.11").args(["-m", "venv", "--without-pip"]).arg(&venv));
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "--python"]).arg(venv.join("bin/python"));
    pip.args(["install", "--quiet", "--no-deps", "--no-compile", "--no-index", "--find-links"]).arg(wheels.path());
    for file in wanted.values() {
        pip.arg(wheels.path().join(file));
    }
    run(&mut pip);
    // The app: built by pip from the same sources (its build backend from the index).
    run(Command::new("python3")
        .args(["-m", "pip", "--python"])
        .arg(venv.join("bin/python"))
        .args(["install", "--quiet", "--no-deps", "--no-compile"])
        .arg(ws.path("demosite")));
    let theirs = file_set(&venv);

    // The differences the README explains: pip's venv has activation scripts; pip marks
    // what was asked for (REQUESTED) and where a local project came from
    // (direct_url.json); hb ships no bytecode (postinst compiles it).
    let explained = |p: &str| {
        p.starts_with("bin/activate")
            || p.starts_with("bin/Activate")
            || p.ends_with("/REQUESTED")
            || p.ends_with("/direct_url.json")
            || p.contains("__pycache__")
    };
    let only_ours: Vec<_> = ours.difference(&theirs).filter(|p| !explained(p)).collect();
    let only_pips: Vec<_> = theirs.difference(&ours).filter(|p| !explained(p)).collect();
    assert!(
        only_ours.is_empty() && only_pips.is_empty(),
        "only in hb's venv: {only_ours:?}\nonly in pip's: {only_pips:?}"
    );
}

#[test]
fn no_build_machine_path_appears_in_the_deb() {
    let ws = Ws::demosite();
    // A HOME that no upstream file can contain by chance.
    let home = ws.root.parent().unwrap().join("home-of-the-builder");
    std::fs::create_dir_all(&home).unwrap();
    let out = ws.cmd().args(["build", "//demosite:deb"]).env("HOME", &home).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-R").arg(ws.path(DEB)).arg(x.path()));
    let needles: Vec<String> = vec![
        home.display().to_string(),
        ws.root.display().to_string(),
        ws.cache.display().to_string(),
        std::env::temp_dir().join(".tmp").display().to_string(),
        "/hb/build".to_string(),
        env!("CARGO_MANIFEST_DIR").to_string(),
    ];
    let mut scanned = 0;
    for e in hb_fs::walk_sorted(x.path()) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        scanned += 1;
        let bytes = std::fs::read(e.path()).unwrap();
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{} contains the build machine's path {n}",
                e.path().display()
            );
        }
    }
    assert!(scanned > 100, "scanned only {scanned} files");
}

/// A workspace with one small app: `setup_py` is its setup.py, `extra` more BUILD.toml.
pub fn tiny_app(setup_py: &str) -> Ws {
    let ws = Ws::empty();
    ws.write(
        "tiny/BUILD.toml",
        "[[python_app]]\nname = \"app\"\nsrcs = [\"tiny/*.py\", \"setup.py\"]\nmodule = \"tiny:app\"\n\n[[deb]]\nname = \"deb\"\nversion = \"1.0\"\nmaintainer = \"T <t@example.org>\"\ndescription = \"tiny\"\ndeps = [\":app\"]\n",
    );
    ws.write(
        "tiny/pyproject.toml",
        "[build-system]\nrequires = [\"setuptools>=68\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"tiny\"\nversion = \"1.0\"\ndependencies = []\n",
    );
    ws.write("tiny/setup.py", setup_py);
    ws.write("tiny/tiny/__init__.py", "app = None\n");
    ws.ok(&["lock", "//tiny:app"]);
    ws
}

#[test]
fn a_failing_build_backend_shows_its_output() {
    let ws = tiny_app("raise SystemExit('tiny: this setup.py refuses to build')\n");
    let err = ws.fails(&["build", "//tiny:deb"]);
    assert!(err.contains("action `//tiny:app wheel` failed"), "{err}");
    assert!(err.contains("this setup.py refuses to build"), "{err}");
    assert!(!ws.path("hb-out").exists());
}

#[test]
fn the_sandbox_has_no_network_and_ignores_the_callers_environment() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let setup = format!(
        "import socket, setuptools\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n    verdict = 'REACHED'\nexcept OSError as e:\n    verdict = 'BLOCKED'\nopen('tiny/verdict.py', 'w').write('VERDICT = %r\\n' % verdict)\nsetuptools.setup(packages=['tiny'])\n"
    );
    let ws = tiny_app(&setup);
    let report = ws.build_json("//tiny:deb");
    assert!(listener.accept().is_err(), "the build connected to the host's loopback");
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(ws.path("hb-out/tiny/tiny_1.0_amd64.deb")).arg(x.path()));
    let verdict =
        std::fs::read_to_string(x.path().join("usr/lib/tiny/lib/python3.11/site-packages/tiny/verdict.py")).unwrap();
    assert_eq!(verdict, "VERDICT = 'BLOCKED'\n");

    // The same app built by another user in another place and language: same wheel.
    let wheel_result = |r: &serde_json::Value| {
        r["actions"].as_array().unwrap().iter().find(|a| a["name"] == "//tiny:app wheel").unwrap()["result"].clone()
    };
    std::fs::remove_dir_all(&ws.cache).unwrap();
    let out = ws
        .cmd()
        .args(["build", "--json", "//tiny:deb"])
        .env("HOME", "/nonexistent")
        .env("USER", "mallory")
        .env("LANG", "de_DE.UTF-8")
        .env("TZ", "Asia/Kathmandu")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(wheel_result(&again), wheel_result(&report));
}

/// Writes a wheel with the given members (RECORD computed) into `dir`, using Python's
/// zipfile so the wheel is an ordinary one.
fn write_wheel(dir: &Path, file: &str, dist_info: &str, members: &[(&str, &str)], tag: &str) {
    let mut script = String::from(
        "import base64, hashlib, sys, zipfile\nout, dist, tag = sys.argv[1], sys.argv[2], sys.argv[3]\nmembers = [\n",
    );
    for (name, body) in members {
        script.push_str(&format!("    ({name:?}, {body:?}),\n"));
    }
    script.push_str(
        "]\nmembers.append((dist + '/METADATA', 'Metadata-Version: 2.1\\nName: hb-test-evil\\nVersion: 1.0\\n'))\nmembers.append((dist + '/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: ' + tag + '\\n'))\nrecord = ''\nwith zipfile.ZipFile(out, 'w') as z:\n    for name, body in members:\n        data = body.encode()\n        z.writestr(name, data)\n        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()\n        record += '%s,sha256=%s,%d\\n' % (name, h, len(data))\n    record += dist + '/RECORD,,\\n'\n    z.writestr(dist + '/RECORD', record)\n",
    );
    let mut child = Command::new("python3")
        .args(["-", &dir.join(file).display().to_string(), dist_info, tag])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
}

/// A workspace whose app depends on `hb-test-evil`, with a private wheelhouse as the only index.
fn app_depending_on_evil() -> (Ws, std::path::PathBuf) {
    let ws = Ws::empty();
    let wheelhouse = ws.root.parent().unwrap().join("wheelhouse");
    std::fs::create_dir_all(&wheelhouse).unwrap();
    ws.write(
        "app/BUILD.toml",
        "[[python_app]]\nname = \"app\"\nsrcs = [\"app/*.py\"]\nmodule = \"app:app\"\n\n[[deb]]\nname = \"deb\"\nversion = \"1.0\"\nmaintainer = \"T <t@example.org>\"\ndescription = \"app\"\ndeps = [\":app\"]\n",
    );
    ws.write(
        "app/pyproject.toml",
        "[build-system]\nrequires = [\"setuptools>=68\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"app\"\nversion = \"1.0\"\ndependencies = [\"hb-test-evil\"]\n",
    );
    ws.write("app/app/__init__.py", "app = None\n");
    (ws, wheelhouse)
}

#[test]
fn wheels_escaping_the_venv_are_refused() {
    let (ws, wheelhouse) = app_depending_on_evil();
    write_wheel(
        &wheelhouse,
        "hb_test_evil-1.0-py3-none-any.whl",
        "hb_test_evil-1.0.dist-info",
        &[("hb_test_evil/__init__.py", ""), ("../../../etc/cron.d/evil", "* * * * * root id\n")],
        "py3-none-any",
    );
    let finds = format!("{}", wheelhouse.display());
    let out = ws.cmd().args(["lock", "//app:app"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = ws.cmd().args(["build", "//app:deb"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(err.contains("hb_test_evil-1.0-py3-none-any.whl") && err.contains("../../../etc/cron.d/evil"), "{err}");
    assert!(!ws.path("hb-out").exists());
}

#[test]
fn wheels_for_another_platform_are_refused_with_their_tags() {
    let (ws, wheelhouse) = app_depending_on_evil();
    write_wheel(
        &wheelhouse,
        "hb_test_evil-1.0-cp312-cp312-manylinux_2_17_x86_64.whl",
        "hb_test_evil-1.0.dist-info",
        &[("hb_test_evil/__init__.py", "")],
        "cp312-cp312-manylinux_2_17_x86_64",
    );
    let finds = format!("{}", wheelhouse.display());
    let out =
        ws.cmd().args(["lock", "//app:app"]).env("PIP_FIND_LINKS", &finds).env("PIP_NO_INDEX", "1").output().unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("cp312-cp312-manylinux_2_17_x86_64") && err.contains("CPython 3.11"), "{err}");
}

#[test]
fn a_lock_hash_that_does_not_match_is_refused_and_nothing_is_stored() {
    let ws = Ws::demosite();
    let lock = std::fs::read_to_string(ws.path("demosite/hb.lock")).unwrap();
    // Take the flask entry's hash and replace it with another valid-looking one.
    let start = lock.find("file = \"flask-").expect("flask is locked");
    let sha_at = start + lock[start..].find("sha256 = \"").unwrap() + "sha256 = \"".len();
    let real = lock[sha_at..sha_at + 64].to_string();
    let fake = "0".repeat(64);
    ws.write("demosite/hb.lock", &lock.replacen(&real, &fake, 1));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("flask-") && err.contains(&format!("expected sha256 {fake}, got {real}")), "{err}");
    for e in hb_fs::walk_sorted(&ws.cache.join("v1/cas")) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            assert_ne!(sha256(e.path()), real, "the mismatching file entered the store");
        }
    }
    assert!(!ws.path("hb-out").exists());
}

#[test]
fn no_network_and_a_cold_cache_names_the_missing_files() {
    let ws = Ws::demosite();
    let script = format!("exec '{}' build //demosite:deb", crate::harness::hb_bin().display());
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .current_dir(&ws.root)
        .env("HB_CACHE_DIR", &ws.cache)
        .env("PIP_RETRIES", "0")
        .env("PIP_TIMEOUT", "2")
        .env_remove("PIP_FIND_LINKS")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    let err = text(&out.stderr);
    let files = default_target_files(&ws);
    assert!(files.len() > 3);
    for f in files {
        assert!(err.contains(&format!("could not fetch {}", f.file)), "{} not named:\n{err}", f.file);
    }
    // The root's packages too (the private apt cannot reach the mirror either).
    let roots = hb_root_lock(&ws);
    for p in &roots.root("bookworm-amd64").unwrap().package {
        assert!(err.contains(&format!("root package {} {}", p.name, p.version)), "{} not named:\n{err}", p.name);
    }
}

/// The files demosite's lock holds for the default platform.
fn default_target_files(ws: &Ws) -> Vec<hb_fetch::LockedFile> {
    crate::harness::demosite_target_files(ws)
}

fn hb_root_lock(ws: &Ws) -> hb_root::RootLock {
    hb_root::RootLock::load(&ws.root).unwrap().unwrap()
}

#[test]
fn a_service_whose_app_lacks_gunicorn_is_refused_with_the_fix() {
    let ws = tiny_app("import setuptools\nsetuptools.setup(packages=['tiny'])\n");
    let build = std::fs::read_to_string(ws.path("tiny/BUILD.toml")).unwrap();
    ws.write("tiny/BUILD.toml", &format!("{build}\n[deb.service]\napp = \":app\"\n"));
    let err = ws.fails(&["build", "//tiny:deb"]);
    assert!(
        err.contains("does not depend on it") && err.contains("gunicorn") && err.contains("tiny/BUILD.toml:"),
        "{err}"
    );
    assert!(!ws.path("hb-out").exists());
}

#[test]
fn a_source_file_named_interpreter_reaches_the_build() {
    // Sources are never filtered by name (the interpreter is a tool of the action, not a
    // source): setup.py fails unless the package's own file `interpreter` is there.
    let ws = tiny_app(
        "import setuptools\nassert open('interpreter').read() == 'mine\\n', 'interpreter missing'\nsetuptools.setup(packages=['tiny'])\n",
    );
    ws.write("tiny/interpreter", "mine\n");
    let build = std::fs::read_to_string(ws.path("tiny/BUILD.toml")).unwrap();
    ws.write("tiny/BUILD.toml", &build.replace("\"setup.py\"]", "\"setup.py\", \"interpreter\"]"));
    ws.ok(&["build", "//tiny:deb"]);
}

#[test]
fn a_zip_bomb_wheel_is_stopped_while_inflating() {
    let (ws, wheelhouse) = app_depending_on_evil();
    // 64 MiB of zeros deflate to about 64 KiB: a thousandfold, past the default 200.
    let script = r#"
import base64, hashlib, sys, zipfile
out, dist = sys.argv[1], "hb_test_evil-1.0.dist-info"
members = [("hb_test_evil/__init__.py", b""), ("hb_test_evil/bomb.bin", b"\0" * (64 << 20)),
           (dist + "/METADATA", b"Metadata-Version: 2.1\nName: hb-test-evil\nVersion: 1.0\n"),
           (dist + "/WHEEL", b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")]
record = ""
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name, data in members:
        z.writestr(name, data)
        h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += "%s,sha256=%s,%d\n" % (name, h, len(data))
    record += dist + "/RECORD,,\n"
    z.writestr(dist + "/RECORD", record)
"#;
    let file = wheelhouse.join("hb_test_evil-1.0-py3-none-any.whl");
    let out = Command::new("python3").args(["-c", script, &file.display().to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let finds = format!("{}", wheelhouse.display());
    let out = ws.cmd().args(["lock", "//app:app"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let out = ws.cmd().args(["build", "//app:deb"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(err.contains("hb_test_evil/bomb.bin") && err.contains("200 times its compressed size"), "{err}");
    assert!(!ws.path("hb-out").exists());
    // Nothing inflated reached the store: every blob is small.
    for e in hb_fs::walk_sorted(&ws.cache.join("v1/cas")) {
        let e = e.unwrap();
        assert!(e.metadata().unwrap().len() < 8 << 20, "{} is large", e.path().display());
    }
}

#[test]
fn a_build_backend_that_is_not_locked_is_named() {
    let ws = tiny_app("import setuptools\nsetuptools.setup(packages=['tiny'])\n");
    let py = std::fs::read_to_string(ws.path("tiny/pyproject.toml")).unwrap();
    ws.write("tiny/pyproject.toml", &py.replace("setuptools.build_meta", "nosuch_backend.build"));
    let err = ws.fails(&["build", "//tiny:deb"]);
    assert!(err.contains("the build backend `nosuch_backend.build` cannot be imported"), "{err}");
    assert!(err.contains("[build-system] requires") && !err.contains("Traceback"), "{err}");
}

#[test]
fn sources_default_to_what_the_pyproject_names_and_left_out_files_are_named() {
    // Without `srcs`: the package and its package data, as the pyproject says; the same
    // wheel, so the same deb, as with demosite's own `srcs`.
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let deb = ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb");
    let listed = sha256(&deb);
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    let srcs = build.lines().find(|l| l.starts_with("srcs = ")).unwrap().to_string();
    ws.write("demosite/BUILD.toml", &build.replace(&srcs, ""));
    ws.ok(&["build", "//demosite:deb"]);
    assert_eq!(sha256(&deb), listed, "the derived sources give another wheel");

    // `srcs` that leave out the templates the pyproject's package-data names.
    ws.write("demosite/BUILD.toml", &build.replace(&srcs, "srcs = [\"demosite/**/*.py\"]"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("demosite/pyproject.toml refers to files `srcs` does not provide"), "{err}");
    assert!(err.contains("`demosite/templates/index.html` ([tool.setuptools.package-data] demosite"), "{err}");
    assert!(err.contains("demosite/BUILD.toml:"), "{err}");

    // A readme the pyproject names: missing, then present but not in `srcs`.
    let pyproject = std::fs::read_to_string(ws.path("demosite/pyproject.toml")).unwrap();
    ws.write(
        "demosite/pyproject.toml",
        &pyproject.replace("requires-python", "readme = \"README.md\"\nrequires-python"),
    );
    ws.write("demosite/BUILD.toml", &build);
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("[project] readme names `README.md`, which does not exist"), "{err}");
    ws.write("demosite/README.md", "# demosite\n");
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("`README.md` ([project] readme) is not in srcs"), "{err}");
    // Left out of `srcs`, it comes with the derived sources.
    ws.write("demosite/BUILD.toml", &build.replace(&srcs, ""));
    ws.ok(&["build", "//demosite:deb"]);
}
