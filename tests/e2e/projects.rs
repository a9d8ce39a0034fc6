//! Projects as they are, never silently wrong: each case below once gave a deb that
//! could not work (or a lock without the app's dependencies) without a word. Each now
//! ends in an error located at the file and line at fault that names the fix: a
//! dependency list the backend computes (`dynamic`), setup.py's `install_requires`
//! under a static list (setuptools ignores it), a `requires-python` the platform's
//! Python does not meet, a lock missing what a locked distribution requires (checked on
//! the venv as `pip check` does), and an entry point whose module the venv lacks. And
//! what once took a run per problem is said at once: every dependency that has only an
//! sdist.

use crate::harness::Ws;

/// demosite with `pyproject.toml` edited by `edit`.
fn demosite_with(edit: impl Fn(String) -> String) -> Ws {
    let ws = Ws::demosite();
    let text = std::fs::read_to_string(ws.path("demosite/pyproject.toml")).unwrap();
    ws.write("demosite/pyproject.toml", &edit(text));
    ws
}

#[test]
fn dependencies_the_backend_computes_are_not_locked_as_none() {
    let ws = demosite_with(|t| {
        t.replace("dependencies = [\"flask>=2.2\", \"gunicorn>=20.1\"]", "dynamic = [\"dependencies\"]")
            + "\n[tool.setuptools.dynamic]\ndependencies = {file = [\"requirements.in\"]}\n"
    });
    ws.write("demosite/requirements.in", "flask>=2.2\ngunicorn>=20.1\n");
    let err = ws.fails(&["lock", "//demosite:app"]);
    assert!(err.contains("demosite/pyproject.toml:10:"), "not located at the dynamic list:\n{err}");
    assert!(err.contains("dynamic") && err.contains("runtime_lock"), "{err}");
    assert!(!err.contains("locked 0 runtime"), "{err}");
}

#[test]
fn install_requires_under_a_static_list_is_named() {
    let ws = Ws::demosite();
    ws.write(
        "demosite/setup.py",
        "from setuptools import setup\n\n# the old list\nsetup(\n    install_requires=[\"flask\", \"markupsafe\"],\n)\n",
    );
    for args in [["lock", "//demosite:app"], ["build", "//demosite:deb"]] {
        let err = ws.fails(&args);
        assert!(err.contains("demosite/setup.py:5:5"), "hb {args:?}: not located at install_requires:\n{err}");
        assert!(err.contains("setuptools ignores install_requires"), "{err}");
    }
}

#[test]
fn a_python_the_platform_lacks_is_named_with_the_platforms_that_fit() {
    let ws = demosite_with(|t| t.replace("requires-python = \">=3.11\"", "requires-python = \">=3.12\""));
    let err = ws.fails(&["lock", "//demosite:app"]);
    assert!(err.contains("demosite/pyproject.toml:9:19"), "{err}");
    assert!(err.contains("bookworm-amd64 (Python 3.11.2)") && err.contains("\"trixie-amd64\""), "{err}");
}

#[test]
fn a_lock_missing_what_a_dependency_requires_fails_the_build() {
    let ws = Ws::demosite();
    // werkzeug dropped from the lock, as a hand-merged lock would.
    let lock = std::fs::read_to_string(ws.path("demosite/hb.lock")).unwrap();
    let kept: Vec<&str> = lock.split("\n\n").filter(|block| !block.contains("name = \"werkzeug\"")).collect();
    assert!(kept.len() < lock.split("\n\n").count(), "werkzeug was in demosite's lock");
    ws.write("demosite/hb.lock", &kept.join("\n\n"));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("requires `werkzeug"), "{err}");
    assert!(err.contains("which is not installed") && err.contains("hb lock //demosite:app"), "{err}");
    assert!(!ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb").exists(), "a deb was written");
}

#[test]
fn an_entry_module_the_venv_lacks_fails_the_build() {
    let ws = Ws::demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    ws.write("demosite/BUILD.toml", &build.replace("module = \"demosite:app\"", "module = \"wsgi:app\""));
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("module `wsgi`") && err.contains("demosite/BUILD.toml:6"), "{err}");
    assert!(err.contains("holds demosite"), "the wheel's modules are not named:\n{err}");
}

/// demosite whose templates reach the wheel only through MANIFEST.in
/// (`include_package_data`, setuptools' default), as older setuptools projects have it.
fn manifest_demosite() -> Ws {
    let ws = demosite_with(|t| {
        t.replace("[tool.setuptools.package-data]\ndemosite = [\"templates/*.html\"]\n", "")
            .replace("[tool.setuptools]\n", "[tool.setuptools]\ninclude-package-data = true\n")
    });
    ws.write("demosite/MANIFEST.in", "recursive-include demosite/templates *.html\n");
    ws
}

#[test]
fn data_that_only_manifest_in_names_reaches_the_deb() {
    // No srcs: hb takes what the backend reads, MANIFEST.in included.
    let ws = manifest_demosite();
    let build = std::fs::read_to_string(ws.path("demosite/BUILD.toml")).unwrap();
    let no_srcs: String = build.lines().filter(|l| !l.starts_with("srcs = ")).map(|l| format!("{l}\n")).collect();
    ws.write("demosite/BUILD.toml", &no_srcs);
    ws.ok(&["build", "//demosite:deb"]);
    let listing = crate::harness::run(
        std::process::Command::new("dpkg-deb").arg("-c").arg(ws.path("hb-out/demosite/demosite_0.1.0_amd64.deb")),
    );
    assert!(listing.contains("site-packages/demosite/templates/index.html"), "no template in the deb:\n{listing}");

    // Explicit srcs without MANIFEST.in: the build names it instead of losing the data.
    let ws = manifest_demosite();
    let err = ws.fails(&["build", "//demosite:deb"]);
    assert!(err.contains("`MANIFEST.in` (setuptools reads it) is not in srcs"), "{err}");
}

/// `hb lock` of an app depending on `dep`, with `allow` as its allow_sdist line (or
/// none), from the files of `finds` only.
fn lock_from(finds: &std::path::Path, dep: &str, allow: &str) -> (Ws, std::process::Output) {
    let ws = crate::hostile_fetch::workspace(dep);
    let build = std::fs::read_to_string(ws.path("BUILD.toml")).unwrap();
    ws.write("BUILD.toml", &build.replace("allow_sdist = true\n", allow));
    let out = ws.cmd().args(["lock", "//:app"]).env("PIP_FIND_LINKS", finds).env("PIP_NO_INDEX", "1").output().unwrap();
    (ws, out)
}

#[test]
fn every_dependency_with_only_an_sdist_is_named_at_once() {
    use crate::hostile_fetch::{build_tools, sdist};
    let finds = tempfile::tempdir().unwrap();
    build_tools(finds.path());
    let setup = || vec![("setup.py", "from setuptools import setup\nsetup()\n".to_string())];
    sdist(finds.path(), "alpha", &setup());
    sdist(finds.path(), "beta", &setup());
    let (_ws, out) = lock_from(finds.path(), "alpha\", \"beta", "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("allow_sdist = [\"alpha\", \"beta\"]"), "not both at once:\n{err}");
}

#[test]
fn a_poetry_format_project_is_initialised_built_and_passes_its_install_test() {
    // examples/poetry as a new user has it: no BUILD.toml, no hb.lock, no workspace.
    let ws = Ws::empty();
    let dir = tempfile::tempdir().unwrap();
    crate::harness::copy_tree(&crate::harness::repo().join("examples/poetry"), dir.path());
    for written in ["BUILD.toml", "hb.lock"] {
        std::fs::remove_file(dir.path().join(written)).unwrap();
    }
    let out = ws.cmd().arg("init").current_dir(dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    assert!(err.contains("entry point: notes_app:app") && err.contains("next: `hb build //:deb`"), "{err}");
    assert!(err.contains("notes_app/data/*.json"), "Poetry's include is not a source:\n{err}");
    let out = ws.cmd().args(["test", "//:deb", "--init", "sysv"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    let listing = crate::harness::run(
        std::process::Command::new("dpkg-deb").arg("-c").arg(dir.path().join("hb-out/poetry-notes_0.3.0_amd64.deb")),
    );
    assert!(listing.contains("site-packages/notes_app/data/notes.json"), "the included data is missing:\n{listing}");
}

/// A pure wheel `NAME-VERSION-py3-none-any.whl` in `dir` whose METADATA requires
/// `requires` (written with Python's zipfile, RECORD and all).
fn tiny_wheel(dir: &std::path::Path, name: &str, version: &str, requires: &[&str]) {
    let script = r#"
import base64, hashlib, sys, zipfile
d, name, version, *requires = sys.argv[1:]
dist = f"{name}-{version}.dist-info"
files = {
    f"{name}/__init__.py": b"",
    f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)).encode(),
    f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hb-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
rows = [f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}" for n, b in files.items()]
files[f"{dist}/RECORD"] = ("\n".join(rows + [f"{dist}/RECORD,,"]) + "\n").encode()
with zipfile.ZipFile(f"{d}/{name}-{version}-py3-none-any.whl", "w") as z:
    for n, b in files.items():
        z.writestr(n, b)
"#;
    crate::harness::run(
        std::process::Command::new("python3").arg("-c").arg(script).arg(dir).arg(name).arg(version).args(requires),
    );
}

#[test]
fn an_allowed_sdist_reached_through_a_ranged_requirement_is_locked() {
    use crate::hostile_fetch::{build_tools, sdist};
    let finds = tempfile::tempdir().unwrap();
    build_tools(finds.path());
    // Every version of `parent` needs xdep, which has only an sdist: pip says only that
    // the versions of parent conflict.
    tiny_wheel(finds.path(), "parent", "1.0", &["xdep"]);
    tiny_wheel(finds.path(), "parent", "2.0", &["xdep>=1"]);
    sdist(finds.path(), "xdep", &[("setup.py", "from setuptools import setup\nsetup()\n".to_string())]);
    let (ws, out) = lock_from(finds.path(), "parent>=1", "allow_sdist = [\"xdep\"]\n");
    assert!(out.status.success(), "{}", crate::harness::show(&out));
    let lock = std::fs::read_to_string(ws.path("hb.lock")).unwrap();
    assert!(
        lock.contains("file = \"xdep-1.0.tar.gz\"") && lock.contains("file = \"parent-2.0-py3-none-any.whl\""),
        "{lock}"
    );
}

#[test]
fn a_pure_python_sdist_builds_in_the_base_root_without_a_compiler() {
    use crate::hostile_fetch::{build_tools, sdist};
    let finds = tempfile::tempdir().unwrap();
    build_tools(finds.path());
    let setup = "from setuptools import setup\nsetup(name='alpha', version='1.0', py_modules=['alpha'])\n";
    sdist(finds.path(), "alpha", &[("setup.py", setup.to_string()), ("alpha.py", "ANSWER = 42\n".to_string())]);
    let ws = Ws::empty();
    ws.write(
        "BUILD.toml",
        "[workspace]\nsource_date_epoch = 1700000000\nplatform = \"bookworm-amd64\"\nplatforms = [\"bookworm-amd64\"]\n\n[[python_app]]\nname = \"app\"\nmodule = \"app:app\"\nallow_sdist = [\"alpha\"]\n",
    );
    ws.write(
        "pyproject.toml",
        "[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"app\"\nversion = \"1.0\"\ndependencies = [\"alpha\"]\n\n[tool.setuptools]\npy-modules = [\"app\"]\n",
    );
    ws.write("app.py", "import alpha\n\ndef app(environ, start_response):\n    return []\n");
    let run = |args: &[&str]| {
        let out = ws.cmd().args(args).env("PIP_FIND_LINKS", finds.path()).output().unwrap();
        assert!(out.status.success(), "hb {args:?}:\n{}", crate::harness::show(&out));
    };
    run(&["lock", "//:app"]);
    let lock = std::fs::read_to_string(ws.path("hb.lock")).unwrap();
    assert!(lock.contains("file = \"alpha-1.0.tar.gz\"") && lock.contains("pure = true"), "{lock}");
    let roots = std::fs::read_to_string(ws.path("hb-root.lock")).unwrap();
    assert!(!roots.contains("\"gcc\""), "a compile root was locked for a pure sdist:\n{roots}");
    run(&["build", "//:app"]);
}
