//! Native code from source: the PostgreSQL example (`examples/pgsite`) locks psycopg2
//! as its sdist, compiles it in the bookworm compile root against libpq, and ships
//! Pillow's manylinux wheel with its bundled libraries. The deb's Depends come from its
//! ELF files (equal to dpkg-shlibdeps'), `apt-get install` in a fresh root pulls
//! libpq5, and the service queries a real PostgreSQL server on loopback. Two cold
//! builds under different paths, umask and clock agree, and an edit of the app
//! compiles nothing again. Bad inputs: an sdist that is not allowed, a compile that
//! fails, a compile missing a header (named, with the `build_depends` fix, which then
//! works).

use std::path::Path;
use std::process::Command;

use crate::harness::{Chroot, Postgres, Ws, actions, get, run, sha256, show};

const DEB: &str = "hb-out/examples/pgsite/pgsite_0.1.0_amd64.deb";
/// The example's service port (its BUILD.toml) and the test server's.
const PORT: u16 = 8051;
const PG_PORT: u16 = 8052;

/// `dpkg-shlibdeps`'s Depends for the ELF objects of `deb`, on this bookworm machine.
fn dpkg_shlibdeps(deb: &Path) -> String {
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(x.path().join("root")));
    std::fs::create_dir(x.path().join("debian")).unwrap();
    std::fs::write(x.path().join("debian/control"), "Source: x\n").unwrap();
    // A package build tree (root/DEBIAN), so the libraries Pillow bundles, found
    // through `$ORIGIN` rpaths, count as the package's own.
    std::fs::create_dir(x.path().join("root/DEBIAN")).unwrap();
    let objects = run(Command::new("find").arg("root").args(["-type", "f", "-name", "*.so*"]).current_dir(x.path()));
    let out = run(Command::new("dpkg-shlibdeps").arg("-O").args(objects.lines()).current_dir(x.path()));
    out.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")).unwrap_or_default().to_string()
}

/// Builds pgsite in a fresh checkout at `dir` under `umask` and `wrapper` (faketime),
/// with a cache of its own; returns the deb's sha256.
fn cold_build_in(dir: &Path, umask: &str, wrapper: &str) -> String {
    let staging = Ws::example("pgsite");
    let script = format!(
        "umask {umask} && mkdir -p '{dir}' && cp -r '{src}/.' '{dir}' && cd '{dir}' && exec {wrapper} '{hb}' build //examples/pgsite:deb",
        dir = dir.display(),
        src = staging.root.display(),
        hb = crate::harness::hb_bin().display(),
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("HB_CACHE_DIR", dir.with_extension("cache"))
        .env("PIP_FIND_LINKS", crate::harness::wheelhouse())
        .env("HB_APT_DIR", crate::harness::apt_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}\n{}", show(&out));
    sha256(&dir.join(DEB))
}

#[test]
fn psycopg2_compiled_from_its_sdist_installs_with_libpq5_and_queries_postgresql() {
    let ws = Ws::example("pgsite");
    let report = ws.build_json("//examples/pgsite:deb");
    let compiled = actions(&report, "executed");
    assert!(compiled.iter().any(|a| a.contains("compile psycopg2-2.9.10.tar.gz")), "{compiled:?}");
    let deb = ws.path(DEB);

    // Another cold build, in another checkout path, under another umask and clock,
    // compiles the same bytes.
    let tmp = tempfile::tempdir().unwrap();
    let other = cold_build_in(&tmp.path().join("second/elsewhere/co"), "077", "faketime -f +3d");
    assert_eq!(sha256(&deb), other, "the same inputs gave two different pgsite debs");

    // Depends from the ELF files: libpq5 for psycopg2, the C library floor for all, and
    // nothing for Pillow's bundled libraries; what dpkg-shlibdeps says of the same files.
    let depends = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends")).trim().to_string();
    assert!(depends.contains("libpq5 (>= ") && depends.contains("libc6 (>= 2."), "{depends}");
    assert!(!depends.contains("libjpeg"), "Pillow's own libjpeg is in the package: {depends}");
    let theirs = dpkg_shlibdeps(&deb);
    assert!(depends.starts_with(&format!("{theirs}, python3 (>= ")), "hb says `{depends}`, dpkg-shlibdeps `{theirs}`");
    // What hb compiled itself is stripped (no symbol table, no debug sections).
    let x = tempfile::tempdir().unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()));
    let so =
        x.path().join("usr/lib/pgsite/lib/python3.11/site-packages/psycopg2/_psycopg.cpython-311-x86_64-linux-gnu.so");
    let sections = run(Command::new("readelf").arg("-SW").arg(&so));
    assert!(!sections.contains(".symtab") && !sections.contains(".debug_"), "{sections}");

    // lintian: no errors (Pillow's bundled libraries are overridden as private).
    let lint = Command::new("lintian").arg(&deb).output().unwrap();
    let text = String::from_utf8_lossy(&lint.stdout);
    assert!(!text.lines().any(|l| l.starts_with("E:")), "lintian errors:\n{text}");

    // A fresh bookworm root: apt pulls libpq5 in.
    let pg = Postgres::start(PG_PORT);
    pg.sql("CREATE USER pgsite");
    pg.sql("CREATE DATABASE pgsite OWNER pgsite");
    let chroot = Chroot::new();
    std::fs::copy(&deb, chroot.path("/tmp/pgsite_0.1.0_amd64.deb")).unwrap();
    chroot.ok("apt-get update -qq");
    let installed = chroot.ok("DEBIAN_FRONTEND=noninteractive apt-get install -y /tmp/pgsite_0.1.0_amd64.deb 2>&1");
    assert!(installed.contains("Setting up libpq5"), "{installed}");
    let versions = chroot
        .ok("/usr/lib/pgsite/bin/python -c 'import psycopg2, PIL; print(psycopg2.__libpq_version__, PIL.__version__)'");
    assert!(versions.trim().starts_with("150"), "{versions}");

    // The service queries the server on loopback, and draws with Pillow's libjpeg.
    let config = chroot.path("/etc/pgsite/config.cfg");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("port=5432", &format!("port={PG_PORT}"))).unwrap();
    chroot.ok("/etc/init.d/pgsite start");
    let page = get(&format!("http://127.0.0.1:{PORT}/"));
    assert!(page.contains("visits: 1") && page.contains("server: PostgreSQL 15"), "{page}");
    assert!(get(&format!("http://127.0.0.1:{PORT}/")).contains("visits: 2"));
    let badge =
        Command::new("curl").args(["--silent", &format!("http://127.0.0.1:{PORT}/badge.jpg")]).output().unwrap();
    assert!(badge.stdout.starts_with(&[0xff, 0xd8, 0xff]), "not a JPEG: {} bytes", badge.stdout.len());
    chroot.ok("/etc/init.d/pgsite stop");
    chroot.ok("dpkg --purge pgsite");
    assert!(!chroot.path("/usr/lib/pgsite").exists());
    drop(pg);

    // An edit of the app rebuilds its wheel and venv, and compiles nothing again.
    let init = ws.path("examples/pgsite/pgsite/__init__.py");
    let code = std::fs::read_to_string(&init).unwrap();
    std::fs::write(&init, code.replace("visits: {count}", "visits so far: {count}")).unwrap();
    let report = ws.build_json("//examples/pgsite:deb");
    let executed = actions(&report, "executed");
    assert!(executed.iter().any(|a| a.contains("pgsite:app wheel")), "{executed:?}");
    assert!(!executed.iter().any(|a| a.contains("compile ")), "compiled again: {executed:?}");
}

/// A small C extension's sdist, `NAME-1.0.tar.gz` in `dir`, whose C file is `c`.
fn c_sdist(dir: &Path, name: &str, c: &str) {
    let top = dir.join(format!("{name}-1.0"));
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(top.join("PKG-INFO"), format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")).unwrap();
    std::fs::write(
        top.join("setup.py"),
        format!(
            "from setuptools import setup, Extension\nsetup(name='{name}', version='1.0', ext_modules=[Extension('{name}', ['{name}.c'])])\n"
        ),
    )
    .unwrap();
    std::fs::write(top.join(format!("{name}.c")), c).unwrap();
    run(Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-czf"])
        .arg(format!("{name}-1.0.tar.gz"))
        .arg(format!("{name}-1.0"))
        .current_dir(dir));
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn sdists_not_allowed_failing_compiles_and_missing_build_dependencies_are_explained() {
    // Not allowed: the lock names the package and the setting.
    let ws = Ws::example("pgsite");
    let build = std::fs::read_to_string(ws.path("examples/pgsite/BUILD.toml")).unwrap();
    ws.write("examples/pgsite/BUILD.toml", &build.replace("allow_sdist = [\"psycopg2\"]", ""));
    let err = ws.fails(&["lock", "//examples/pgsite:app"]);
    assert!(
        err.contains("psycopg2 has no wheel for CPython 3.11") && err.contains("allow_sdist = [\"psycopg2\"]"),
        "{err}"
    );

    // Two sdists of our own: one that does not compile, one that needs a header the
    // compile root lacks.
    let ws = Ws::empty();
    let wheels = ws.path("sdists");
    std::fs::create_dir_all(&wheels).unwrap();
    c_sdist(&wheels, "cbroken", "#include <Python.h>\nint broken( {\n");
    c_sdist(
        &wheels,
        "needsffi",
        "#include <Python.h>\n#include <ffi.h>\nstatic struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \"needsffi\"};\nPyMODINIT_FUNC PyInit_needsffi(void) { ffi_cif cif; (void)cif; return PyModule_Create(&m); }\n",
    );
    ws.write(
        "BUILD.toml",
        "[workspace]\nsource_date_epoch = 1700000000\n\n[[python_app]]\nname = \"app\"\nmodule = \"app:app\"\nallow_sdist = true\n",
    );
    ws.write(
        "pyproject.toml",
        "[build-system]\nrequires = [\"setuptools>=68\"]\nbuild-backend = \"setuptools.build_meta\"\n\n[project]\nname = \"app\"\nversion = \"1.0\"\ndependencies = [\"cbroken\", \"needsffi\"]\n\n[tool.setuptools]\npy-modules = [\"app\"]\n",
    );
    ws.write("app.py", "def app(environ, start_response):\n    return []\n");
    let finds = format!("{} {}", wheels.display(), crate::harness::wheelhouse().display());
    let lock = ws.cmd().args(["lock", "//:app"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    assert!(lock.status.success(), "{}", show(&lock));
    let text = std::fs::read_to_string(ws.path("hb.lock")).unwrap();
    assert!(
        text.contains("file = \"cbroken-1.0.tar.gz\"") && text.contains("file = \"needsffi-1.0.tar.gz\""),
        "{text}"
    );

    let out = ws.cmd().args(["build", "-k", "//:app"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    assert!(!out.status.success());
    let err = show(&out);
    // The compiler's own words, and what it lacked with the fix.
    assert!(err.contains("compiling cbroken 1.0 from its sdist failed") && err.contains("cbroken.c:2:"), "{err}");
    assert!(err.contains("compiling needsffi 1.0 from its sdist failed"), "{err}");
    assert!(err.contains("The compile root lacks the header `ffi.h`") && err.contains("build_depends"), "{err}");

    // The fix: the header's package in build_depends, the root locked again.
    ws.write(
        "pyproject.toml",
        &std::fs::read_to_string(ws.path("pyproject.toml")).unwrap().replace("\"cbroken\", ", ""),
    );
    let build = std::fs::read_to_string(ws.path("BUILD.toml")).unwrap();
    ws.write("BUILD.toml", &format!("{build}build_depends = [\"libffi-dev\"]\n"));
    let lock = ws.cmd().args(["lock", "//:app"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    assert!(lock.status.success(), "{}", show(&lock));
    let roots = std::fs::read_to_string(ws.path("hb-root.lock")).unwrap();
    assert!(roots.contains("\"libffi-dev\""), "the compile root was not locked with libffi-dev");
    let out = ws.cmd().args(["build", "//:app"]).env("PIP_FIND_LINKS", &finds).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
}
