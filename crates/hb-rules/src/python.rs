//! Python apps: a `python_app` target expands into
//!
//! - one `fetch` action per locked file (the only actions allowed network; fixed-output,
//!   keyed by file name and sha256, verified before the bytes enter the store);
//! - `py_wheel`: the app's own wheel, built by its PEP 517 backend (from the lock's build
//!   files) in the sandbox, with the target interpreter;
//! - `py_venv`: the virtualenv for the install prefix, written natively by hb-python
//!   from the runtime wheels and the app wheel.
//!
//! `hb lock` (see [`lock`]) writes the lock these actions read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hb_config::Package;
use hb_config::build_file::PythonAppRule;
use hb_engine::{ActionResult, Ctx, Job, JobError, Source, encode_args};
use hb_fetch::{Lock, LockedFile, Role};
use hb_python::{Target, VenvSpec, Wheel};
use hb_sandbox::Mode;
use hb_store::{Digest, EntryKind, Store, StoreError, Tree, TreeEntry};
use serde::Serialize;

use crate::RulesError;

/// The interpreter on the target, and on the build machine for PEP 517 builds.
pub fn interpreter(python: (u32, u32)) -> String {
    format!("/usr/bin/python{}.{}", python.0, python.1)
}

/// What hb reads from a pyproject.toml.
#[derive(Clone, Debug)]
pub struct Project {
    /// PEP 503-normalized `[project].name`.
    pub name: String,
    pub dependencies: Vec<String>,
    pub build_requires: Vec<String>,
    pub build_backend: String,
    pub backend_path: Vec<String>,
}

/// Reads the python_app's pyproject.toml.
pub fn project(pkg: &Package, p: &PythonAppRule) -> Result<Project, RulesError> {
    let at = pkg.locate(p.pyproject.span());
    let invalid = |message: String| RulesError::Invalid { message, location: at.clone() };
    let path = pkg.dir.join(p.pyproject.get_ref());
    let text = hb_fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
    let value: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| invalid(format!("{} is not valid TOML: {}", path.display(), e.message())))?;
    let strings = |v: Option<&toml::Value>, what: &str| -> Result<Vec<String>, RulesError> {
        match v {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| invalid(format!("{what} must be a list of strings")))
                })
                .collect(),
            Some(_) => Err(invalid(format!("{what} must be a list of strings"))),
        }
    };
    let project = value.get("project");
    let name = project
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| invalid(format!("{} has no [project] name", p.pyproject.get_ref())))?;
    let build = value.get("build-system");
    let build_requires = match build.and_then(|b| b.get("requires")) {
        Some(v) => strings(Some(v), "[build-system] requires")?,
        // PEP 517's fallback for projects without a [build-system] table.
        None => vec!["setuptools>=40.8.0".to_string()],
    };
    let build_backend = build
        .and_then(|b| b.get("build-backend"))
        .and_then(|b| b.as_str())
        .unwrap_or("setuptools.build_meta:__legacy__")
        .to_string();
    Ok(Project {
        name: hb_python::normalize(name),
        dependencies: strings(project.and_then(|p| p.get("dependencies")), "[project] dependencies")?,
        build_requires,
        build_backend,
        backend_path: strings(build.and_then(|b| b.get("backend-path")), "[build-system] backend-path")?,
    })
}

/// The virtualenv's install prefix: the `prefix` setting, else `/usr/lib/<project>`.
pub fn prefix(p: &PythonAppRule, proj: &Project) -> String {
    p.prefix
        .as_ref()
        .map_or_else(|| format!("/usr/lib/{}", proj.name), |s| s.get_ref().trim_end_matches('/').to_string())
}

/// The lock file's path and how it is shown.
fn lock_path(pkg: &Package, p: &PythonAppRule) -> (PathBuf, PathBuf) {
    let name = p.lock.as_ref().map_or("hb.lock", |l| l.get_ref().as_str());
    (pkg.dir.join(name), Path::new(&pkg.path).join(name))
}

fn target_id(t: &Target) -> String {
    format!("cp{}{}-manylinux_{}_{}_{}", t.python.0, t.python.1, t.glibc.0, t.glibc.1, t.arch)
}

/// Reads the target's lock, checking it still matches pyproject.toml.
pub fn read_lock(
    pkg: &Package,
    p: &PythonAppRule,
    proj: &Project,
    target: &Target,
    label: &str,
) -> Result<Lock, RulesError> {
    let (path, shown) = lock_path(pkg, p);
    let at = pkg.locate(p.name.span());
    let text = hb_fs::read_to_string(&path).map_err(|e| RulesError::Invalid {
        message: if e.is_not_found() {
            format!("{label} has no lock ({}): run `hb lock {label}` to resolve its dependencies", shown.display())
        } else {
            e.to_string()
        },
        location: at.clone(),
    })?;
    let lock =
        Lock::parse(&text, &shown).map_err(|e| RulesError::Invalid { message: e.to_string(), location: at.clone() })?;
    let want = hb_fetch::inputs_digest(&proj.dependencies, &proj.build_requires, &target_id(target));
    if lock.inputs != want {
        return Err(RulesError::Invalid {
            message: format!(
                "{} is out of date: the dependencies in {} or the target changed since it was written; run `hb lock {label}`",
                shown.display(),
                p.pyproject.get_ref()
            ),
            location: at,
        });
    }
    Ok(lock)
}

/// `hb lock`: resolves the app's runtime and build requirements for the target and
/// writes the lock next to its BUILD.toml. Returns the lock's path (workspace-relative)
/// and the lock.
pub fn lock(pkg: &Package, p: &PythonAppRule, target: &Target, label: &str) -> Result<(PathBuf, Lock), RulesError> {
    let proj = project(pkg, p)?;
    let pip = hb_fetch::Pip::default();
    let at = pkg.locate(p.name.span());
    let fail = |e: hb_fetch::FetchError| RulesError::Invalid { message: format!("{label}: {e}"), location: at.clone() };
    let mut packages = hb_fetch::resolve(&pip, target, &proj.dependencies, Role::Runtime).map_err(fail)?;
    packages.extend(hb_fetch::resolve(&pip, target, &proj.build_requires, Role::Build).map_err(fail)?);
    let lock = Lock {
        inputs: hb_fetch::inputs_digest(&proj.dependencies, &proj.build_requires, &target_id(target)),
        target: target_id(target),
        packages,
    };
    let (path, shown) = lock_path(pkg, p);
    hb_fs::write_atomic(&path, lock.render(label).as_bytes(), None).map_err(|e| fail(hb_fetch::FetchError::Fs(e)))?;
    Ok((shown, lock))
}

/// `fetch`: one locked file into the store.
pub struct FetchJob {
    pub file: LockedFile,
    pub target: Target,
    pub wheelhouses: Vec<PathBuf>,
}

impl Job for FetchJob {
    fn kind(&self) -> &'static str {
        "fetch"
    }
    fn version(&self) -> u32 {
        1
    }
    fn args(&self) -> Vec<u8> {
        // Fixed output: the key is what the bytes must be, not where they come from.
        encode_args(&(&self.file.file, &self.file.sha256))
    }
    fn always_complete(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx, _: &[&ActionResult], _: &[Source]) -> Result<ActionResult, JobError> {
        let tmp = tempfile::tempdir_in(ctx.store.tmp_dir())
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &ctx.store.tmp_dir(), e)))?;
        let pip = hb_fetch::Pip::default();
        let path = hb_fetch::fetch(&pip, &self.target, &self.wheelhouses, &self.file, tmp.path())
            .map_err(|e| JobError::Failed(e.to_string()))?;
        let (digest, size) = ctx.store.put_file(&path)?;
        let tree = Tree::new(vec![TreeEntry::file(self.file.file.clone(), digest, size, false)])
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.file.file)))?;
        Ok(ActionResult { tree, ..Default::default() })
    }
}

/// The wheels (file name, bytes) in dependency results.
fn wheels_of(store: &Store, deps: &[&ActionResult]) -> Result<Vec<Wheel>, JobError> {
    let mut out = Vec::new();
    for d in deps {
        for e in d.tree.entries() {
            if let EntryKind::File { digest, .. } = &e.kind
                && e.path.ends_with(".whl")
            {
                let bytes = store.read_blob(digest)?;
                out.push(Wheel::open(&e.path, bytes).map_err(|err| JobError::Failed(err.to_string()))?);
            }
        }
    }
    Ok(out)
}

/// Writes a tree's files under `root` on this machine, contents from `read`.
fn materialize(
    read: &dyn Fn(&Digest) -> Result<Vec<u8>, StoreError>,
    entries: &[TreeEntry],
    root: &Path,
    mtime: u64,
) -> Result<(), JobError> {
    use std::os::unix::fs::PermissionsExt;
    let time = filetime::FileTime::from_unix_time(mtime as i64, 0);
    for e in entries {
        let dest = root.join(&e.path);
        match &e.kind {
            EntryKind::Dir => hb_fs::create_dir_all(&dest)?,
            EntryKind::File { digest, .. } => {
                if let Some(parent) = dest.parent() {
                    hb_fs::create_dir_all(parent)?;
                }
                let bytes = read(digest)?;
                std::fs::write(&dest, bytes).map_err(|err| hb_fs::FsError::new("writing", &dest, err))?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(e.mode))
                    .map_err(|err| hb_fs::FsError::new("setting mode of", &dest, err))?;
                filetime::set_file_mtime(&dest, time)
                    .map_err(|err| hb_fs::FsError::new("setting mtime of", &dest, err))?;
            }
            EntryKind::Symlink { target } => {
                if let Some(parent) = dest.parent() {
                    hb_fs::create_dir_all(parent)?;
                }
                std::os::unix::fs::symlink(target, &dest)
                    .map_err(|err| hb_fs::FsError::new("creating symlink", &dest, err))?;
            }
        }
    }
    Ok(())
}

/// The PEP 517 front end run in the sandbox: imports the backend and calls
/// `build_wheel`. Written by hb; its text is part of the action's key.
const FRONTEND: &str = r#"import importlib, json, os, sys

def main():
    backend_spec, backend_path, out_dir = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    sys.path[:0] = [os.path.abspath(p) for p in backend_path]
    module, _, attrs = backend_spec.partition(":")
    backend = importlib.import_module(module)
    for attr in filter(None, attrs.split(".")):
        backend = getattr(backend, attr)
    os.makedirs(out_dir, exist_ok=True)
    name = backend.build_wheel(out_dir, {}, None)
    print("HB_WHEEL=" + name)

main()
"#;

/// `py_wheel`: the app's wheel from its sources.
pub struct WheelJob {
    pub label: String,
    pub files: crate::files::FilesJob,
    pub backend: String,
    pub backend_path: Vec<String>,
    pub python: (u32, u32),
    pub target: Target,
    pub mtime: u64,
    pub sandbox: Mode,
}

#[derive(Serialize)]
struct WheelArgs<'a> {
    backend: &'a str,
    backend_path: &'a [String],
    python: (u32, u32),
    mtime: u64,
    frontend: &'a str,
    env: &'a [(&'a str, &'a str)],
}

const INTERPRETER_SOURCE: &str = "interpreter";

impl Job for WheelJob {
    fn kind(&self) -> &'static str {
        "py_wheel"
    }
    fn version(&self) -> u32 {
        1
    }
    fn args(&self) -> Vec<u8> {
        let mut v = encode_args(&WheelArgs {
            backend: &self.backend,
            backend_path: &self.backend_path,
            python: self.python,
            mtime: self.mtime,
            frontend: FRONTEND,
            env: hb_sandbox::BASE_ENV,
        });
        v.extend(self.files.args());
        v
    }
    fn sources(&self, ctx: &Ctx) -> Result<Vec<Source>, JobError> {
        let mut s = self.files.sources(ctx)?;
        let interp = interpreter(self.python);
        let info = ctx.source_file(Path::new(&interp)).map_err(|e| {
            JobError::Failed(format!(
                "{}: the target interpreter {interp} is needed to build the app's wheel ({e}); install Debian's python{}.{}",
                self.label, self.python.0, self.python.1
            ))
        })?;
        s.push(Source { name: INTERPRETER_SOURCE.into(), digest: info.digest, size: info.size, executable: true });
        Ok(s)
    }
    fn run(&self, ctx: &Ctx, deps: &[&ActionResult], sources: &[Source]) -> Result<ActionResult, JobError> {
        static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        if let Err(why) = PROBE.get_or_init(|| hb_sandbox::probe(self.sandbox).map_err(|e| e.to_string())) {
            return Err(JobError::Failed(format!("{}: {why}", self.label)));
        }
        let store = ctx.store;
        let tmp = tempfile::tempdir_in(store.tmp_dir())
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &store.tmp_dir(), e)))?;
        let work = tmp.path();
        // Inside the sandbox the work directory is always WORK; without it, its real path.
        let base = match self.sandbox {
            Mode::Bwrap => hb_sandbox::WORK.to_string(),
            Mode::Off => work.display().to_string(),
        };
        // The build environment: the backend's wheels in a venv of their own. Its files
        // are scaffolding, not outputs: they stay in memory and never enter the store.
        let build_wheels = wheels_of(store, deps)?;
        let spec =
            VenvSpec { prefix: format!("{base}/env"), python: self.python, interpreter: interpreter(self.python) };
        let mut blobs: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
        let mut put = |b: &[u8]| {
            let d = Digest::of(b);
            blobs.entry(d).or_insert_with(|| b.to_vec());
            Ok(d)
        };
        let env = hb_python::install(&spec, &self.target, &build_wheels, &mut put)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        let env_entries: Vec<TreeEntry> = env
            .entries
            .into_iter()
            .filter_map(|mut e| {
                let rel = e.path.strip_prefix(spec.prefix.trim_start_matches('/'))?.trim_start_matches('/').to_string();
                (!rel.is_empty()).then(|| {
                    e.path = rel;
                    e
                })
            })
            .collect();
        let from_memory = |d: &Digest| blobs.get(d).cloned().ok_or(StoreError::Missing(*d));
        materialize(&from_memory, &env_entries, &work.join("env"), self.mtime)?;
        // The sources, with one mtime and normalized modes.
        let src: Vec<TreeEntry> = sources
            .iter()
            .filter(|s| s.name != INTERPRETER_SOURCE)
            .map(|s| TreeEntry::file(s.name.clone(), s.digest, s.size, s.executable))
            .collect();
        materialize(&|d: &Digest| store.read_blob(d), &src, &work.join("src"), self.mtime)?;
        let frontend = work.join("pep517.py");
        std::fs::write(&frontend, FRONTEND).map_err(|e| JobError::Fs(hb_fs::FsError::new("writing", &frontend, e)))?;
        hb_fs::create_dir_all(&work.join("home"))?;

        let argv = vec![
            format!("{base}/env/bin/python"),
            format!("{base}/pep517.py"),
            self.backend.clone(),
            serde_json_array(&self.backend_path),
            format!("{base}/out"),
        ];
        let env = BTreeMap::from([("SOURCE_DATE_EPOCH".to_string(), self.mtime.to_string())]);
        let spec = hb_sandbox::Spec { work, cwd: &format!("{base}/src"), argv, env };
        let out = hb_sandbox::run(self.sandbox, &spec).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        if !out.success {
            return Err(JobError::Failed(format!(
                "{}: the build backend `{}` failed (exit {}). Its output:\n{}",
                self.label,
                self.backend,
                out.code.map_or("by signal".to_string(), |c| c.to_string()),
                tail(&format!("{}{}", out.stdout, out.stderr), 60)
            )));
        }
        let name = out
            .stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("HB_WHEEL="))
            .ok_or_else(|| JobError::Failed(format!("{}: the build backend reported no wheel", self.label)))?
            .to_string();
        let path = work.join("out").join(&name);
        let (digest, size) = store.put_file(&path)?;
        let tree =
            Tree::new(vec![TreeEntry::file(name, digest, size, false)]).map_err(|e| JobError::Failed(e.to_string()))?;
        Ok(ActionResult { tree, ..Default::default() })
    }
}

fn serde_json_array(items: &[String]) -> String {
    let quoted: Vec<String> =
        items.iter().map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("[{}]", quoted.join(","))
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// `py_venv`: the virtualenv of the app at its install prefix.
pub struct VenvJob {
    pub label: String,
    pub prefix: String,
    pub python: (u32, u32),
    pub target: Target,
}

impl Job for VenvJob {
    fn kind(&self) -> &'static str {
        "py_venv"
    }
    fn version(&self) -> u32 {
        1
    }
    fn args(&self) -> Vec<u8> {
        encode_args(&(&self.prefix, self.python, interpreter(self.python), target_id(&self.target)))
    }
    fn run(&self, ctx: &Ctx, deps: &[&ActionResult], _: &[Source]) -> Result<ActionResult, JobError> {
        let wheels = wheels_of(ctx.store, deps)?;
        let spec = VenvSpec { prefix: self.prefix.clone(), python: self.python, interpreter: interpreter(self.python) };
        let mut put = |b: &[u8]| ctx.store.put_bytes(b).map_err(hb_python::PyError::Store);
        let venv = hb_python::install(&spec, &self.target, &wheels, &mut put)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        let tree = Tree::new(venv.entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        let mut meta = vec![("native".to_string(), u64::from(venv.has_native_code))];
        if let Some((major, minor)) = venv.required_glibc {
            meta.push(("glibc".to_string(), u64::from(major) * 1000 + u64::from(minor)));
        }
        Ok(ActionResult { tree, meta, exports: Vec::new() })
    }
}
