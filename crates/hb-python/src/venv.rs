//! Writing a virtualenv for an install prefix without running Python: the layout of
//! `python3.X -m venv --without-pip` (pyvenv.cfg, relative interpreter symlinks, `lib64`)
//! plus what `pip install` of each wheel would add (site-packages, `.data/` directories
//! mapped per the wheel spec, `#!python` rewritten, console and GUI launchers, RECORD
//! rewritten, INSTALLER), minus bytecode. The result is a list of tree entries whose file
//! contents went to the caller's store; it depends only on the spec, target and wheels.

use std::collections::{BTreeMap, BTreeSet};

use hb_store::{Digest, TreeEntry};

use crate::tags::Target;
use crate::wheel::Wheel;
use crate::{PyError, record};

/// Where and for which interpreter the virtualenv is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VenvSpec {
    /// Absolute install prefix on the target, e.g. `/usr/lib/demosite`.
    pub prefix: String,
    /// The interpreter version, e.g. `(3, 11)`.
    pub python: (u32, u32),
    /// Absolute path of the target's interpreter, e.g. `/usr/bin/python3.11`.
    pub interpreter: String,
}

/// The written virtualenv.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Venv {
    /// Every directory, file and symlink, paths relative to `/`, sorted by path components.
    pub entries: Vec<TreeEntry>,
    /// The highest glibc the installed wheels need (`None` when all are pure).
    pub required_glibc: Option<(u32, u32)>,
    /// Some installed file is an ELF object (a compiled extension or library).
    pub has_native_code: bool,
    /// The distributions installed, by name: what an SBOM lists.
    pub installed: Vec<Installed>,
}

/// One installed distribution and the wheel it came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Installed {
    /// PEP 503-normalized.
    pub name: String,
    pub version: String,
    /// The wheel's file name and sha256.
    pub wheel: String,
    pub sha256: String,
    /// Its declared licence as an SPDX expression, when hb can state one.
    pub license: Option<String>,
}

/// The longest path Linux takes, with its terminating NUL.
const PATH_MAX: usize = 4096;

/// Owner label of the files the venv itself writes (for conflict messages).
const VENV_OWNER: &str = "the virtualenv itself";

/// Dist-info files the installer writes or drops instead of copying from the wheel.
const DIST_INFO_REPLACED: [&str; 6] =
    ["RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER", "REQUESTED", "direct_url.json"];

struct PlannedFile {
    owner: String,
    bytes: Vec<u8>,
    executable: bool,
}

/// Files and symlinks planned so far, keyed by path relative to the prefix.
#[derive(Default)]
struct Plan {
    files: BTreeMap<String, PlannedFile>,
    symlinks: BTreeMap<String, (String, String)>,
    dirs: BTreeSet<String>,
}

impl Plan {
    fn owner_of(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|f| f.owner.as_str()).or_else(|| self.symlinks.get(path).map(|(o, _)| o.as_str()))
    }

    fn add_file(&mut self, prefix: &str, path: String, owner: &str, bytes: Vec<u8>, exec: bool) -> Result<(), PyError> {
        if let Some(first) = self.owner_of(&path) {
            return Err(conflict(prefix, &path, first, owner));
        }
        self.files.insert(path, PlannedFile { owner: owner.to_string(), bytes, executable: exec });
        Ok(())
    }

    fn add_symlink(&mut self, path: &str, target: &str) {
        self.symlinks.insert(path.to_string(), (VENV_OWNER.to_string(), target.to_string()));
    }
}

fn conflict(prefix: &str, path: &str, first: &str, second: &str) -> PyError {
    let root = prefix.trim_start_matches('/');
    PyError::Conflict { path: format!("{root}/{path}"), first: first.to_string(), second: second.to_string() }
}

/// True for a clean absolute path without whitespace: `/a/b`.
fn clean_absolute(p: &str) -> bool {
    p.strip_prefix('/').is_some_and(|rel| {
        hb_store::tree::is_clean_relative(rel) && !p.contains(|c: char| c.is_whitespace() || c == '\0' || c == '\\')
    })
}

/// The relative path from directory `from` to `to`, both relative to the same root.
fn relative(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').filter(|c| !c.is_empty()).collect();
    let to: Vec<&str> = to.split('/').filter(|c| !c.is_empty()).collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

/// Python identifier (ASCII or Unicode letters, digits, `_`; not starting with a digit).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_') && chars.all(|c| c.is_alphanumeric() || c == '_')
}

fn is_dotted(s: &str) -> bool {
    s.split('.').all(is_identifier)
}

/// One console or GUI script.
#[derive(Debug, PartialEq, Eq)]
struct EntryPoint {
    name: String,
    module: String,
    attr: String,
}

/// The `[console_scripts]` and `[gui_scripts]` of an entry_points.txt.
fn parse_entry_points(wheel: &str, text: &str) -> Result<Vec<EntryPoint>, PyError> {
    let mut out = Vec::new();
    let mut in_scripts = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_scripts = matches!(section.trim(), "console_scripts" | "gui_scripts");
            continue;
        }
        if !in_scripts {
            continue;
        }
        let err = |reason: &str| PyError::EntryPoint {
            wheel: wheel.to_string(),
            line_no: i + 1,
            line: raw.to_string(),
            reason: reason.to_string(),
        };
        let (name, value) = line.split_once('=').ok_or_else(|| err("it is not `name = module:attr`"))?;
        let name = name.trim();
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '\\', '\0'])
            || name.contains(char::is_whitespace)
        {
            return Err(err("the script name must be one file name (no `/`, `\\`, spaces, `.` or `..`)"));
        }
        let mut value = value.trim();
        if let Some(open) = value.find('[') {
            if !value.ends_with(']') {
                return Err(err("the `[extras]` suffix is not closed"));
            }
            value = value[..open].trim();
        }
        let (module, attr) =
            value.split_once(':').ok_or_else(|| err("it has no `:attr` part; a script needs `module:callable`"))?;
        let (module, attr) = (module.trim(), attr.trim());
        if !is_dotted(module) || !is_dotted(attr) {
            return Err(err("`module:attr` must be dotted Python identifiers on both sides"));
        }
        out.push(EntryPoint { name: name.to_string(), module: module.to_string(), attr: attr.to_string() });
    }
    Ok(out)
}

/// The launcher pip writes for an entry point (distlib's script template).
fn launcher(python: &str, ep: &EntryPoint) -> String {
    let head = ep.attr.split('.').next().unwrap_or(&ep.attr);
    format!(
        "#!{python}\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {} import {head}\n\
         if __name__ == \"__main__\":\n    sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    \
         sys.exit({}())\n",
        ep.module, ep.attr
    )
}

/// Rewrites a `#!python` / `#!pythonw` first line (optionally with arguments) to the
/// venv's interpreter; other scripts are returned unchanged.
fn fix_shebang(python: &str, bytes: &[u8]) -> Vec<u8> {
    let Some(rest) = bytes.strip_prefix(b"#!python") else { return bytes.to_vec() };
    let rest = rest.strip_prefix(b"w").unwrap_or(rest);
    let (line, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(n) => (&rest[..n], &rest[n..]),
        None => (rest, &[][..]),
    };
    let args = line.strip_suffix(b"\r").unwrap_or(line);
    if !(args.is_empty() || args.starts_with(b" ") || args.starts_with(b"\t")) {
        return bytes.to_vec();
    }
    let mut out = format!("#!{python}").into_bytes();
    out.extend_from_slice(args);
    out.extend_from_slice(body);
    out
}

/// A shared library auditwheel vendored into a manylinux wheel (`pillow.libs/libjpeg-….so.62`):
/// installed 0644, as Debian wants shared libraries (lintian's
/// `shared-library-is-executable`); the dynamic loader never needs the bit.
fn vendored_library(member: &str) -> bool {
    match member.split_once('/') {
        Some((dir, name)) => {
            dir.ends_with(".libs") && !name.contains('/') && (name.ends_with(".so") || name.contains(".so."))
        }
        None => false,
    }
}

fn is_bytecode(path: &str) -> bool {
    path.ends_with(".pyc") || path.split('/').any(|c| c == "__pycache__")
}

/// Installs `wheels` (already opened and validated) into a virtualenv at `spec.prefix`.
/// File contents are passed to `put`, which stores them and returns their digest.
pub fn install(
    spec: &VenvSpec,
    target: &Target,
    wheels: &[Wheel],
    put: &mut dyn FnMut(&[u8]) -> Result<Digest, PyError>,
) -> Result<Venv, PyError> {
    let prefix = spec.prefix.trim_end_matches('/');
    if !clean_absolute(prefix) {
        return Err(PyError::Spec(format!(
            "the install prefix `{}` must be a clean absolute path other than `/`, without spaces",
            spec.prefix
        )));
    }
    if !clean_absolute(&spec.interpreter) {
        return Err(PyError::Spec(format!(
            "the interpreter `{}` must be a clean absolute path without spaces",
            spec.interpreter
        )));
    }
    if spec.python != target.python {
        return Err(PyError::Spec(format!(
            "the venv is for Python {}.{} but the target is {}; build both from the same setting",
            spec.python.0,
            spec.python.1,
            target.describe()
        )));
    }
    for w in wheels {
        // A wheel compiled in the target root (a locked sdist) carries `linux_<arch>`.
        if target.rank_built(w.name()).is_none() {
            return Err(PyError::Incompatible {
                wheel: w.filename().to_string(),
                tags: w.name().tags().join(", "),
                target: target.describe(),
            });
        }
    }

    let pyver = format!("python{}.{}", spec.python.0, spec.python.1);
    let site = format!("lib/{pyver}/site-packages");
    let venv_python = format!("{prefix}/bin/python");
    let (home, _) = spec.interpreter.rsplit_once('/').unwrap_or(("", ""));
    let home = if home.is_empty() { "/" } else { home };

    let mut plan = Plan::default();
    let cfg = format!(
        "home = {home}\ninclude-system-site-packages = false\nversion = {}.{}\nexecutable = {}\n\
         command = {} -m venv {prefix}\n",
        spec.python.0, spec.python.1, spec.interpreter, spec.interpreter
    );
    plan.add_file(prefix, "pyvenv.cfg".into(), VENV_OWNER, cfg.into_bytes(), false)?;
    plan.add_symlink(&format!("bin/{pyver}"), &relative(&format!("{prefix}/bin"), &spec.interpreter));
    plan.add_symlink("bin/python3", &pyver);
    plan.add_symlink("bin/python", &pyver);
    plan.add_symlink("lib64", "lib");
    for d in ["bin", "include", site.as_str()] {
        plan.dirs.insert(d.to_string());
    }

    let mut launchers: BTreeMap<String, String> = BTreeMap::new();
    for w in wheels {
        let owner = w.filename();
        let dist_info = w.dist_info();
        let data_prefix = format!("{}/", w.data_dir());
        let mut installed: Vec<String> = Vec::new();
        let mut add = |plan: &mut Plan, path: String, bytes: Vec<u8>, exec: bool| -> Result<(), PyError> {
            installed.push(path.clone());
            plan.add_file(prefix, path, owner, bytes, exec)
        };
        let mut entry_points = None;
        for m in w.members() {
            if is_bytecode(&m.name) {
                continue;
            }
            if let Some(rest) = m.name.strip_prefix(&data_prefix) {
                let Some((kind, inner)) = rest.split_once('/') else { continue };
                match kind {
                    "purelib" | "platlib" => add(&mut plan, format!("{site}/{inner}"), m.bytes.clone(), m.executable)?,
                    "scripts" => add(&mut plan, format!("bin/{inner}"), fix_shebang(&venv_python, &m.bytes), true)?,
                    "headers" => add(
                        &mut plan,
                        format!("include/site/{pyver}/{}/{inner}", w.name().distribution),
                        m.bytes.clone(),
                        m.executable,
                    )?,
                    // `data` (the only kind left after validation) is relative to the prefix.
                    _ => add(&mut plan, inner.to_string(), m.bytes.clone(), m.executable)?,
                }
                continue;
            }
            if let Some(file) = m.name.strip_prefix(dist_info).and_then(|r| r.strip_prefix('/')) {
                if DIST_INFO_REPLACED.contains(&file) {
                    continue;
                }
                if file == "entry_points.txt" {
                    entry_points = Some(&m.bytes);
                }
            }
            let executable = m.executable && !vendored_library(&m.name);
            add(&mut plan, format!("{site}/{}", m.name), m.bytes.clone(), executable)?;
        }
        if let Some(bytes) = entry_points {
            let text = std::str::from_utf8(bytes).map_err(|_| PyError::Metadata {
                wheel: owner.to_string(),
                member: format!("{dist_info}/entry_points.txt"),
                reason: "is not UTF-8 text; fix the project's metadata and rebuild the wheel".to_string(),
            })?;
            for ep in parse_entry_points(owner, text)? {
                if let Some(first) = launchers.insert(ep.name.clone(), owner.to_string()) {
                    return Err(PyError::LauncherConflict { name: ep.name, first, second: owner.to_string() });
                }
                add(&mut plan, format!("bin/{}", ep.name), launcher(&venv_python, &ep).into_bytes(), true)?;
            }
        }
        add(&mut plan, format!("{site}/{dist_info}/INSTALLER"), b"hb\n".to_vec(), false)?;

        let record_path = format!("{site}/{dist_info}/RECORD");
        let mut rows: Vec<record::Row> = installed
            .iter()
            .filter_map(|p| plan.files.get(p).map(|f| (p, f)))
            .map(|(p, f)| record::Row {
                path: relative(&site, p),
                hash: record::hash_of(&f.bytes),
                size: f.bytes.len().to_string(),
            })
            .collect();
        rows.push(record::Row { path: relative(&site, &record_path), hash: String::new(), size: String::new() });
        plan.add_file(prefix, record_path, owner, record::render(&rows).into_bytes(), false)?;
    }

    // Every parent directory; a file where a directory must be is a conflict.
    let mut parents: BTreeMap<String, &str> = BTreeMap::new();
    let leaves = plan
        .files
        .iter()
        .map(|(p, f)| (p.as_str(), f.owner.as_str()))
        .chain(plan.symlinks.iter().map(|(p, (o, _))| (p.as_str(), o.as_str())))
        .chain(plan.dirs.iter().map(|d| (d.as_str(), VENV_OWNER)));
    for (path, owner) in leaves {
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            parents.entry(parent.to_string()).or_insert(owner);
            p = parent;
        }
    }
    for d in &plan.dirs {
        parents.entry(d.clone()).or_insert(VENV_OWNER);
    }
    for (dir, child_owner) in &parents {
        if let Some(first) = plan.owner_of(dir) {
            return Err(conflict(prefix, dir, first, child_owner));
        }
    }

    let root = prefix.trim_start_matches('/');
    let mut entries = Vec::new();
    let mut p = root;
    loop {
        entries.push(TreeEntry::dir(p));
        match p.rsplit_once('/') {
            Some((parent, _)) => p = parent,
            None => break,
        }
    }
    for dir in parents.keys() {
        entries.push(TreeEntry::dir(format!("{root}/{dir}")));
    }
    let mut has_native_code = false;
    for (path, f) in &plan.files {
        // "/" + the path and its terminating NUL must fit in PATH_MAX.
        let len = root.len() + path.len() + 3;
        if len > PATH_MAX {
            return Err(PyError::PathTooLong { path: format!("{root}/{path}"), len });
        }
        has_native_code |= f.bytes.starts_with(b"\x7fELF");
        let digest = put(&f.bytes)?;
        entries.push(TreeEntry::file(format!("{root}/{path}"), digest, f.bytes.len() as u64, f.executable));
    }
    for (path, (_, target)) in &plan.symlinks {
        entries.push(TreeEntry::symlink(format!("{root}/{path}"), target.clone()));
    }
    entries.sort_by(|a, b| hb_store::tree::path_order(&a.path, &b.path));

    let required_glibc = wheels.iter().filter_map(|w| target.required_glibc(w.name())).max();
    let mut installed: Vec<Installed> = wheels
        .iter()
        .map(|w| Installed {
            name: w.name().normalized_name(),
            version: w.name().version.clone(),
            wheel: w.filename().to_string(),
            sha256: w.sha256().to_string(),
            license: w.license().map(str::to_string),
        })
        .collect();
    installed.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(Venv { entries, required_glibc, has_native_code, installed })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hb_store::{Digest, EntryKind, Tree, TreeEntry};

    use super::*;
    use crate::testutil::{WheelBuilder, pure_wheel};

    const PREFIX: &str = "/usr/lib/demosite";

    fn spec(prefix: &str) -> VenvSpec {
        VenvSpec { prefix: prefix.to_string(), python: (3, 11), interpreter: "/usr/bin/python3.11".to_string() }
    }

    fn target() -> Target {
        Target::bookworm_amd64((3, 11))
    }

    /// Installs into an in-memory blob map.
    fn run(spec: &VenvSpec, wheels: &[Wheel]) -> Result<(Venv, BTreeMap<Digest, Vec<u8>>), PyError> {
        let mut blobs = BTreeMap::new();
        let venv = install(spec, &target(), wheels, &mut |b: &[u8]| {
            let d = Digest::of(b);
            blobs.insert(d, b.to_vec());
            Ok(d)
        })?;
        Ok((venv, blobs))
    }

    fn wheel(name: &str, b: &WheelBuilder) -> Wheel {
        Wheel::open(name, b.build()).unwrap()
    }

    fn demo() -> Wheel {
        let (name, bytes) = pure_wheel();
        Wheel::open(&name, bytes).unwrap()
    }

    fn find<'a>(venv: &'a Venv, path: &str) -> &'a TreeEntry {
        venv.entries.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("{path} not installed"))
    }

    fn text(venv: &Venv, blobs: &BTreeMap<Digest, Vec<u8>>, path: &str) -> String {
        match &find(venv, path).kind {
            EntryKind::File { digest, size } => {
                let b = &blobs[digest];
                assert_eq!(b.len() as u64, *size);
                String::from_utf8(b.clone()).unwrap()
            }
            other => panic!("{path} is {other:?}"),
        }
    }

    #[test]
    fn installs_the_exact_layout() {
        let (venv, blobs) = run(&spec(PREFIX), &[demo()]).unwrap();
        let paths: Vec<&str> = venv.entries.iter().map(|e| e.path.as_str()).collect();
        let u = "usr/lib/demosite";
        let s = "usr/lib/demosite/lib/python3.11/site-packages";
        let di = "usr/lib/demosite/lib/python3.11/site-packages/demo_pkg-1.0.dist-info";
        let want: Vec<String> = [
            "usr".to_string(),
            "usr/lib".into(),
            u.into(),
            format!("{u}/bin"),
            format!("{u}/bin/demo"),
            format!("{u}/bin/demo-app"),
            format!("{u}/bin/demo-gui"),
            format!("{u}/bin/demo-script"),
            format!("{u}/bin/plain.sh"),
            format!("{u}/bin/python"),
            format!("{u}/bin/python3"),
            format!("{u}/bin/python3.11"),
            format!("{u}/include"),
            format!("{u}/include/site"),
            format!("{u}/include/site/python3.11"),
            format!("{u}/include/site/python3.11/demo_pkg"),
            format!("{u}/include/site/python3.11/demo_pkg/demo.h"),
            format!("{u}/lib"),
            format!("{u}/lib/python3.11"),
            s.into(),
            format!("{s}/demo_extra.py"),
            format!("{s}/demo_pkg"),
            format!("{s}/demo_pkg/__init__.py"),
            format!("{s}/demo_pkg/gui.py"),
            format!("{s}/demo_pkg/tool.sh"),
            di.into(),
            format!("{di}/INSTALLER"),
            format!("{di}/METADATA"),
            format!("{di}/RECORD"),
            format!("{di}/WHEEL"),
            format!("{di}/entry_points.txt"),
            format!("{u}/lib64"),
            format!("{u}/pyvenv.cfg"),
            format!("{u}/share"),
            format!("{u}/share/demo"),
            format!("{u}/share/demo/x.txt"),
        ]
        .into();
        assert_eq!(paths, want);
        assert!(Tree::new(venv.entries.clone()).is_ok());
        assert_eq!(venv.required_glibc, None);
        assert!(!venv.has_native_code);

        // Modes.
        let mode = |p: &str| find(&venv, &format!("{u}/{p}")).mode;
        for p in ["bin/demo", "bin/demo-app", "bin/demo-gui", "bin/demo-script", "bin/plain.sh"] {
            assert_eq!(mode(p), 0o755, "{p}");
        }
        assert_eq!(mode("lib/python3.11/site-packages/demo_pkg/tool.sh"), 0o755);
        assert_eq!(mode("lib/python3.11/site-packages/demo_pkg/__init__.py"), 0o644);
        assert_eq!(mode("share/demo/x.txt"), 0o644);
        assert_eq!(mode("pyvenv.cfg"), 0o644);
        assert_eq!(mode("include"), 0o755);

        // The venv itself.
        assert_eq!(
            text(&venv, &blobs, &format!("{u}/pyvenv.cfg")),
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11\n\
             executable = /usr/bin/python3.11\ncommand = /usr/bin/python3.11 -m venv /usr/lib/demosite\n"
        );
        let link = |p: &str| match &find(&venv, &format!("{u}/{p}")).kind {
            EntryKind::Symlink { target } => target.clone(),
            other => panic!("{p} is {other:?}"),
        };
        assert_eq!(link("bin/python3.11"), "../../../bin/python3.11");
        assert_eq!(link("bin/python3"), "python3.11");
        assert_eq!(link("bin/python"), "python3.11");
        assert_eq!(link("lib64"), "lib");

        // Launchers and scripts.
        assert_eq!(
            text(&venv, &blobs, &format!("{u}/bin/demo")),
            "#!/usr/lib/demosite/bin/python\n# -*- coding: utf-8 -*-\nimport re\nimport sys\n\
             from demo_pkg import main\nif __name__ == \"__main__\":\n    \
             sys.argv[0] = re.sub(r\"(-script\\.pyw|\\.exe)?$\", \"\", sys.argv[0])\n    sys.exit(main())\n"
        );
        let app = text(&venv, &blobs, &format!("{u}/bin/demo-app"));
        assert!(app.contains("\nfrom demo_pkg import App\n") && app.contains("sys.exit(App.run())\n"), "{app}");
        let gui = text(&venv, &blobs, &format!("{u}/bin/demo-gui"));
        assert!(gui.contains("\nfrom demo_pkg.gui import start\n") && gui.contains("sys.exit(start())"), "{gui}");
        assert_eq!(
            text(&venv, &blobs, &format!("{u}/bin/demo-script")),
            "#!/usr/lib/demosite/bin/python -u\nimport demo_pkg\nprint('script ok')\n"
        );
        assert_eq!(text(&venv, &blobs, &format!("{u}/bin/plain.sh")), "#!/bin/sh\necho plain\n");
        assert_eq!(text(&venv, &blobs, &format!("{di}/INSTALLER")), "hb\n");

        // RECORD lists every installed file of the distribution, with hashes that verify.
        let rec = text(&venv, &blobs, &format!("{di}/RECORD"));
        let rows = record::parse(&rec).unwrap();
        let listed: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(listed, sorted, "rows are sorted bytewise");
        assert!(rec.contains("\ndemo_pkg-1.0.dist-info/RECORD,,\n"), "{rec}");
        assert!(listed.contains(&"../../../bin/demo") && listed.contains(&"../../../share/demo/x.txt"));
        assert!(listed.contains(&"../../../include/site/python3.11/demo_pkg/demo.h"));
        for row in &rows {
            if row.path.ends_with("/RECORD") {
                continue;
            }
            let mut full: Vec<&str> = s.split('/').collect();
            for c in row.path.split('/') {
                if c == ".." {
                    full.pop();
                } else {
                    full.push(c);
                }
            }
            let body = text(&venv, &blobs, &full.join("/"));
            assert_eq!(row.hash, record::hash_of(body.as_bytes()), "{}", row.path);
            assert_eq!(row.size, body.len().to_string(), "{}", row.path);
        }
        let files = venv.entries.iter().filter(|e| matches!(e.kind, EntryKind::File { .. })).count();
        assert_eq!(rows.len(), files - 1, "every file but pyvenv.cfg belongs to demo_pkg");
        assert!(!rec.contains("pyc") && !rec.contains("__pycache__"));
        assert!(!paths.iter().any(|p| p.ends_with(".pyc") || p.contains("__pycache__")));
    }

    #[test]
    fn interpreter_link_is_relative_to_the_prefix() {
        let (venv, _) = run(&spec("/opt/app"), &[demo()]).unwrap();
        assert_eq!(
            find(&venv, "opt/app/bin/python3.11").kind,
            EntryKind::Symlink { target: "../../../usr/bin/python3.11".into() }
        );
        assert_eq!(relative("usr/lib/demosite/bin", "usr/bin/python3.11"), "../../../bin/python3.11");
        assert_eq!(relative("opt/app/bin", "/usr/bin/python3.11"), "../../../usr/bin/python3.11");
        assert_eq!(relative("a/b", "a/b/c"), "c");
    }

    #[test]
    fn identical_inputs_give_identical_entries() {
        let other = {
            let mut b = WheelBuilder::new("other", "2.0");
            b.file("other.py", b"X = 1\n");
            wheel("other-2.0-py3-none-any.whl", &b)
        };
        let (a, _) = run(&spec(PREFIX), &[demo(), other.clone()]).unwrap();
        let (b, _) = run(&spec(PREFIX), &[demo(), other.clone()]).unwrap();
        let (c, _) = run(&spec(PREFIX), &[other, demo()]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c, "the order of the wheels does not matter");
    }

    #[test]
    fn paths_past_path_max_are_refused() {
        let deep: Vec<String> = (0..22).map(|i| format!("{i:0>200}")).collect();
        let mut b = WheelBuilder::new("one", "1.0");
        b.file(&format!("one/{}/x.py", deep.join("/")), b"1\n");
        let e = run(&spec(PREFIX), &[wheel("one-1.0-py3-none-any.whl", &b)]).unwrap_err().to_string();
        assert!(e.contains("PATH_MAX") && e.contains("/usr/lib/demosite/lib/python3.11/site-packages/one/"), "{e}");
    }

    #[test]
    fn conflicts_are_errors() {
        let mut b1 = WheelBuilder::new("one", "1.0");
        b1.file("shared/x.py", b"1\n");
        let mut b2 = WheelBuilder::new("two", "1.0");
        b2.file("shared/x.py", b"2\n");
        let (w1, w2) = (wheel("one-1.0-py3-none-any.whl", &b1), wheel("two-1.0-py3-none-any.whl", &b2));
        let e = run(&spec(PREFIX), &[w1, w2]).unwrap_err().to_string();
        assert!(
            e.contains("one-1.0-py3-none-any.whl")
                && e.contains("two-1.0-py3-none-any.whl")
                && e.contains(" `/usr/lib/demosite/lib/python3.11/site-packages/shared/x.py`"),
            "{e}"
        );

        let mut b1 = WheelBuilder::new("one", "1.0");
        b1.file("one-1.0.dist-info/entry_points.txt", b"[console_scripts]\ntool = one:main\n");
        let mut b2 = WheelBuilder::new("two", "1.0");
        b2.file("two-1.0.dist-info/entry_points.txt", b"[gui_scripts]\ntool = two:main\n");
        let (w1, w2) = (wheel("one-1.0-py3-none-any.whl", &b1), wheel("two-1.0-py3-none-any.whl", &b2));
        let e = run(&spec(PREFIX), &[w1, w2]).unwrap_err().to_string();
        assert!(e.contains("`tool`") && e.contains("one-1.0-py3-none-any.whl") && e.contains("two-1.0"), "{e}");

        let mut b = WheelBuilder::new("one", "1.0");
        b.file("one-1.0.data/data/pyvenv.cfg", b"evil\n");
        let e = run(&spec(PREFIX), &[wheel("one-1.0-py3-none-any.whl", &b)]).unwrap_err().to_string();
        assert!(e.contains("the virtualenv itself") && e.contains(" `/usr/lib/demosite/pyvenv.cfg`"), "{e}");

        let mut b = WheelBuilder::new("one", "1.0");
        b.file("one-1.0.data/data/lib64/x", b"x\n");
        let e = run(&spec(PREFIX), &[wheel("one-1.0-py3-none-any.whl", &b)]).unwrap_err().to_string();
        assert!(e.contains("/usr/lib/demosite/lib64") && e.contains("one-1.0-py3-none-any.whl"), "{e}");

        let mut b1 = WheelBuilder::new("one", "1.0");
        b1.file("pkg", b"a file\n");
        let mut b2 = WheelBuilder::new("two", "1.0");
        b2.file("pkg/mod.py", b"x\n");
        let (w1, w2) = (wheel("one-1.0-py3-none-any.whl", &b1), wheel("two-1.0-py3-none-any.whl", &b2));
        let e = run(&spec(PREFIX), &[w1, w2]).unwrap_err().to_string();
        assert!(e.contains("site-packages/pkg`") && e.contains("one-1.0") && e.contains("two-1.0"), "{e}");
    }

    #[test]
    fn incompatible_wheels_are_refused_before_anything_is_stored() {
        let mut b = WheelBuilder::new("fast", "1.0");
        b.file("fast.so", b"\x7fELF....");
        let w = wheel("fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", &b);
        let mut calls = 0;
        let r = install(&spec(PREFIX), &target(), &[demo(), w], &mut |b: &[u8]| {
            calls += 1;
            Ok(Digest::of(b))
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("fast-1.0-cp312-cp312-manylinux_2_17_x86_64.whl")
                && e.contains("cp312-cp312-manylinux_2_17_x86_64")
                && e.contains("CPython 3.11, manylinux_2_36 and older, x86_64"),
            "{e}"
        );
        assert_eq!(calls, 0);
    }

    #[test]
    fn native_wheels_set_glibc_and_native_code() {
        let mut b = WheelBuilder::new("fast", "1.0");
        b.executable("fast/_speedups.cpython-311-x86_64-linux-gnu.so", b"\x7fELF\x02\x01\x01rest");
        b.executable("fast.libs/libz-1a2b3c4d.so.1.3", b"\x7fELF\x02\x01\x01lib");
        let w = wheel("fast-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", &b);
        let (venv, _) = run(&spec(PREFIX), &[demo(), w]).unwrap();
        assert!(venv.has_native_code);
        assert_eq!(venv.required_glibc, Some((2, 17)));
        let so =
            find(&venv, "usr/lib/demosite/lib/python3.11/site-packages/fast/_speedups.cpython-311-x86_64-linux-gnu.so");
        assert_eq!(so.mode, 0o755, "an extension module keeps the wheel's mode");
        let lib = find(&venv, "usr/lib/demosite/lib/python3.11/site-packages/fast.libs/libz-1a2b3c4d.so.1.3");
        assert_eq!(lib.mode, 0o644, "a vendored shared library is not executable");
    }

    #[test]
    fn bad_entry_points_name_the_wheel_and_line() {
        for (line, why) in [
            ("bad = nocolon", "no `:attr`"),
            ("bad nothing", "not `name = module:attr`"),
            ("bad = mod:1x", "identifiers"),
            ("../x = mod:f", "one file name"),
            ("bad = mod:f [open", "not closed"),
        ] {
            let mut b = WheelBuilder::new("one", "1.0");
            b.file("one-1.0.dist-info/entry_points.txt", format!("[console_scripts]\nok = one:f\n{line}\n").as_bytes());
            let e = run(&spec(PREFIX), &[wheel("one-1.0-py3-none-any.whl", &b)]).unwrap_err().to_string();
            assert!(e.contains("one-1.0-py3-none-any.whl") && e.contains("line 3") && e.contains(line), "{e}");
            assert!(e.contains(why), "{line}: {e}");
        }
    }

    #[test]
    fn parses_entry_points() {
        let eps = parse_entry_points(
            "w.whl",
            "# comment\n[console_scripts]\n a = pkg.mod:obj.attr.fn [x, y]\n\n[gui_scripts]\nb=pkg:g\n[x]\nc = ?\n",
        )
        .unwrap();
        assert_eq!(
            eps,
            vec![
                EntryPoint { name: "a".into(), module: "pkg.mod".into(), attr: "obj.attr.fn".into() },
                EntryPoint { name: "b".into(), module: "pkg".into(), attr: "g".into() },
            ]
        );
    }

    #[test]
    fn rewrites_only_python_shebangs() {
        let py = "/p/bin/python";
        assert_eq!(fix_shebang(py, b"#!python\nx\n"), b"#!/p/bin/python\nx\n");
        assert_eq!(fix_shebang(py, b"#!pythonw -E\r\nx\n"), b"#!/p/bin/python -E\nx\n");
        assert_eq!(fix_shebang(py, b"#!python"), b"#!/p/bin/python");
        assert_eq!(fix_shebang(py, b"#!python3\nx\n"), b"#!python3\nx\n");
        assert_eq!(fix_shebang(py, b"#!/usr/bin/env python\n"), b"#!/usr/bin/env python\n");
        assert_eq!(fix_shebang(py, b"\x7fELF"), b"\x7fELF");
    }

    #[test]
    fn rejects_bad_specs() {
        for (prefix, interp) in [("relative", "/usr/bin/python3.11"), ("/", "/usr/bin/python3.11"), ("/a b", "/x")] {
            let s = VenvSpec { prefix: prefix.into(), python: (3, 11), interpreter: interp.into() };
            assert!(matches!(run(&s, &[]), Err(PyError::Spec(_))), "{prefix}");
        }
        let s = VenvSpec { prefix: "/opt/x".into(), python: (3, 12), interpreter: "/usr/bin/python3.12".into() };
        assert!(matches!(run(&s, &[]), Err(PyError::Spec(_))));
        let (empty, _) = run(&spec("/opt/x/"), &[]).unwrap();
        assert!(Tree::new(empty.entries).is_ok());
    }

    /// The interpreter to run the venv with: /usr/bin/python3.11, or else the real path
    /// of a `python3.11` on PATH.
    fn real_python() -> Option<String> {
        if std::path::Path::new("/usr/bin/python3.11").exists() {
            return Some("/usr/bin/python3.11".into());
        }
        let out = std::process::Command::new("python3.11")
            .args(["-c", "import os, sys; print(os.path.realpath(sys.executable))"])
            .output()
            .ok()?;
        let p = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && clean_absolute(&p)).then_some(p)
    }

    #[test]
    fn end_to_end_with_a_real_interpreter() {
        use std::os::unix::fs::PermissionsExt;
        use std::process::Command;

        // The suite installs Debian's python3.11 (scripts/deps.sh): its absence is a failure.
        let python = real_python().expect("/usr/bin/python3.11 runs (apt install python3.11)");
        let tmp = tempfile::tempdir().unwrap();
        let store = hb_store::Store::open(&tmp.path().join("store")).unwrap();
        let prefix = tmp.path().join("venv").to_str().unwrap().to_string();
        let spec = VenvSpec { prefix: prefix.clone(), python: (3, 11), interpreter: python };
        let venv = install(&spec, &target(), &[demo()], &mut |b: &[u8]| Ok(store.put_bytes(b)?)).unwrap();
        let tree = Tree::new(venv.entries).unwrap();
        let root = prefix.trim_start_matches('/');
        for e in tree.entries() {
            let Some(rel) = e.path.strip_prefix(root) else { continue };
            let dest = format!("{prefix}{rel}");
            match &e.kind {
                EntryKind::Dir => std::fs::create_dir_all(&dest).unwrap(),
                EntryKind::File { digest, .. } => {
                    std::fs::write(&dest, store.read_blob(digest).unwrap()).unwrap();
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(e.mode)).unwrap();
                }
                EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &dest).unwrap(),
            }
        }
        let run = |cmd: &str, args: &[&str]| {
            let out = Command::new(cmd).args(args).env_remove("PYTHONPATH").env_remove("PYTHONHOME").output().unwrap();
            assert!(out.status.success(), "{cmd} failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        };
        let check = format!(
            "import sys, importlib.metadata as md; assert sys.prefix == {prefix:?}, sys.prefix; \
             assert sys.base_prefix != sys.prefix; import demo_pkg, demo_extra; \
             print(md.version('demo_pkg'), md.distribution('demo_pkg').read_text('INSTALLER').strip())"
        );
        assert_eq!(run(&format!("{prefix}/bin/python"), &["-c", &check]), "1.0 hb\n");
        assert_eq!(run(&format!("{prefix}/bin/demo"), &["a", "b"]), "hello from demo ['a', 'b']\n");
        assert_eq!(run(&format!("{prefix}/bin/demo-app"), &[]), "app run\n");
        assert_eq!(run(&format!("{prefix}/bin/demo-script"), &[]), "script ok\n");
    }
}
