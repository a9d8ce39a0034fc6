//! The actions of Python apps:
//!
//! - `fetch`: one locked file (the only actions allowed network; fixed-output, keyed by
//!   file name and sha256, verified before the bytes enter the store);
//! - `py_wheel`: an app's own wheel, built by its PEP 517 backend (from the lock's build
//!   files) in the sandbox whose `/` is the platform's target root (an input, so its
//!   digest is in the key; the root's Python runs it, under emulation for a foreign
//!   architecture). Only with the sandbox off does the host's interpreter run it, as a
//!   declared tool;
//! - `py_venv`: the virtualenv for an install prefix, written natively by hb-python from
//!   the runtime wheels and the app wheel; its facts ([`VenvFacts`]) say what native code
//!   it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hb_engine::{Action, Ctx, Input, Inputs, JobError, Output, Source, Tool, encode_args};
use hb_fetch::LockedFile;
use hb_python::{Limits, Target, VenvSpec, Wheel};
use hb_sandbox::Mode;
use hb_store::{Digest, EntryKind, Store, StoreError, Tree, TreeEntry};
use serde::{Deserialize, Serialize};

/// How a target's wheel tags are named in locks: `cp311-manylinux_2_36_x86_64`.
pub fn target_id(t: &Target) -> String {
    t.id()
}

/// `fetch`: one locked file into the store.
pub struct FetchJob {
    pub file: LockedFile,
    pub target: Target,
    pub wheelhouses: Vec<PathBuf>,
}

impl Action for FetchJob {
    type Facts = ();
    const KIND: &'static str = "fetch";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        // Fixed output: the key is what the bytes must be, not where they come from.
        encode_args(&(&self.file.file, &self.file.sha256))
    }
    fn always_complete(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx, _: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let tmp = tempfile::tempdir_in(ctx.store.tmp_dir())
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &ctx.store.tmp_dir(), e)))?;
        let pip = hb_fetch::Pip::default();
        let path = hb_fetch::fetch(&pip, &self.target, &self.wheelhouses, &self.file, tmp.path())
            .map_err(|e| JobError::Failed(e.to_string()))?;
        let (digest, size) = ctx.store.put_file(&path)?;
        let tree = Tree::new(vec![TreeEntry::file(self.file.file.clone(), digest, size, false)])
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.file.file)))?;
        Ok(Output::tree(tree))
    }
}

/// The wheels (file name, bytes) in input trees, opened within `limits`.
fn wheels_of(store: &Store, trees: &[&Tree], limits: &Limits) -> Result<Vec<Wheel>, JobError> {
    let mut out = Vec::new();
    for t in trees {
        for e in t.entries() {
            if let EntryKind::File { digest, .. } = &e.kind
                && e.path.ends_with(".whl")
            {
                let bytes = store.read_blob(digest)?;
                out.push(Wheel::open_with(&e.path, bytes, limits).map_err(|err| JobError::Failed(err.to_string()))?);
            }
        }
    }
    Ok(out)
}

/// Writes a tree's files under `root` on this machine, contents from `read`.
pub(crate) fn materialize(
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
    try:
        backend = importlib.import_module(module)
    except ImportError as e:
        print("HB_ERROR=the build backend `%s` cannot be imported (%s): it is not among the locked build "
              "requirements; add the distribution that provides it to [build-system] requires and run `hb lock`"
              % (module, e))
        sys.exit(3)
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
    /// The app's sources (the pyproject among them).
    pub files: crate::actions::files::FilesJob,
    pub backend: String,
    pub backend_path: Vec<String>,
    pub python: (u32, u32),
    /// The interpreter that runs the build: a path in the target root (or, with the
    /// sandbox off, of the build machine).
    pub interpreter: String,
    /// The platform's target root, where the build runs (`None` with the sandbox off).
    pub root: Option<Input<()>>,
    pub platform: &'static hb_platform::Platform,
    pub target: Target,
    pub mtime: u64,
    pub sandbox: Mode,
    /// The locked build requirements' files (the backend and its dependencies).
    pub build: Vec<Input<()>>,
    /// How far wheels may inflate (not in the key: it decides only whether a wheel is
    /// refused, never what an accepted one gives).
    pub limits: Limits,
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

impl Action for WheelJob {
    type Facts = ();
    const KIND: &'static str = "py_wheel";
    const VERSION: u32 = 1;
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
    fn inputs(&self) -> Vec<hb_engine::AnyInput> {
        self.build.iter().chain(self.root.iter()).map(Input::any).collect()
    }
    fn sources(&self, ctx: &Ctx) -> Result<Vec<Source>, JobError> {
        self.files.sources(ctx)
    }
    fn tools(&self, ctx: &Ctx) -> Result<Vec<Tool>, JobError> {
        if self.root.is_some() {
            // The interpreter is the root's: its digest is in the root's.
            return Ok(Vec::new());
        }
        let interp = &self.interpreter;
        let info = ctx.source_file(Path::new(interp)).map_err(|e| match e {
            StoreError::Fs(f) if f.is_not_found() => JobError::Failed(format!(
                "{}: the target interpreter {interp} is needed to build the app's wheel and is not installed; install Debian's python{}.{}",
                self.label, self.python.0, self.python.1
            )),
            other => JobError::Failed(format!("{}: reading the interpreter {interp}: {other}", self.label)),
        })?;
        Ok(vec![Tool { path: interp.clone(), digest: info.digest }])
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, sources: &[Source]) -> Result<Output<()>, JobError> {
        static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
        if let Err(why) = PROBE.get_or_init(|| hb_sandbox::probe(self.sandbox).map_err(|e| e.to_string())) {
            return Err(JobError::Failed(format!("{}: {why}", self.label)));
        }
        let store = ctx.store;
        let root = match self.root {
            Some(r) => {
                hb_root::check_emulation(self.platform)
                    .map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
                Some(crate::actions::root::materialized(store, inputs.tree(r)?)?)
            }
            None => None,
        };
        let tmp = tempfile::tempdir_in(store.tmp_dir())
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &store.tmp_dir(), e)))?;
        let work = tmp.path();
        // Inside the sandbox the work directory is always WORK; without it, its real path.
        let base = match self.sandbox {
            Mode::Bwrap => hb_sandbox::WORK.to_string(),
            Mode::Off => work.display().to_string(),
        };
        self.build_env(ctx, inputs, &base, &work.join("env"))?;
        // The sources, with one mtime and normalized modes.
        let src: Vec<TreeEntry> =
            sources.iter().map(|s| TreeEntry::file(s.name.clone(), s.digest, s.size, s.executable)).collect();
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
        let spec = hb_sandbox::Spec {
            work,
            cwd: &format!("{base}/src"),
            argv,
            env,
            root: root.as_deref(),
            layers: Vec::new(),
            timeout: None,
        };
        let out = hb_sandbox::run(self.sandbox, &spec).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        if let Some(why) = out.stdout.lines().find_map(|l| l.strip_prefix("HB_ERROR=")) {
            return Err(JobError::Failed(format!("{}: {why}", self.label)));
        }
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
        Ok(Output::tree(tree))
    }
}

impl WheelJob {
    /// Writes the build environment under `dir` (seen as `{base}/env`): the backend's
    /// wheels in a venv of their own. Its files are scaffolding, not outputs: they stay
    /// in memory and never enter the store.
    fn build_env(&self, ctx: &Ctx, inputs: &Inputs, base: &str, dir: &Path) -> Result<(), JobError> {
        let trees = self.build.iter().map(|b| inputs.tree(*b)).collect::<Result<Vec<_>, _>>()?;
        let build_wheels = wheels_of(ctx.store, &trees, &self.limits)?;
        let spec =
            VenvSpec { prefix: format!("{base}/env"), python: self.python, interpreter: self.interpreter.clone() };
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
        materialize(&from_memory, &env_entries, dir, self.mtime)
    }
}

fn serde_json_array(items: &[String]) -> String {
    let quoted: Vec<String> =
        items.iter().map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("[{}]", quoted.join(","))
}

/// The last `n` lines of a command's output, each indented as quoted output.
pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines
        .get(lines.len().saturating_sub(n)..)
        .unwrap_or_default()
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a virtualenv holds besides its files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenvFacts {
    /// Some installed file is an ELF object (a compiled extension or library).
    pub native_code: bool,
    /// The newest glibc its wheels' manylinux tags need (`None` when all are pure).
    pub required_glibc: Option<(u32, u32)>,
    /// The launchers in its `bin/` (console scripts), by name.
    pub console_scripts: Vec<String>,
}

/// `py_venv`: the virtualenv of the app at its install prefix.
pub struct VenvJob {
    pub label: String,
    pub prefix: String,
    pub python: (u32, u32),
    pub interpreter: String,
    pub target: Target,
    /// The locked runtime files.
    pub runtime: Vec<Input<()>>,
    /// The app's own wheel.
    pub app: Input<()>,
    /// How far wheels may inflate (not in the key, as for [`WheelJob::limits`]).
    pub limits: Limits,
}

impl Action for VenvJob {
    type Facts = VenvFacts;
    const KIND: &'static str = "py_venv";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        encode_args(&(&self.prefix, self.python, &self.interpreter, target_id(&self.target)))
    }
    fn inputs(&self) -> Vec<hb_engine::AnyInput> {
        self.runtime.iter().chain(std::iter::once(&self.app)).map(Input::any).collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<VenvFacts>, JobError> {
        let trees = self.runtime.iter().chain([&self.app]).map(|i| inputs.tree(*i)).collect::<Result<Vec<_>, _>>()?;
        let wheels = wheels_of(ctx.store, &trees, &self.limits)?;
        let spec = VenvSpec { prefix: self.prefix.clone(), python: self.python, interpreter: self.interpreter.clone() };
        let mut put = |b: &[u8]| ctx.store.put_bytes(b).map_err(hb_python::PyError::Store);
        let venv = hb_python::install(&spec, &self.target, &wheels, &mut put)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        let bin = format!("{}/bin/", self.prefix.trim_start_matches('/'));
        let console_scripts = venv
            .entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .filter_map(|e| e.path.strip_prefix(&bin))
            .filter(|name| !name.contains('/'))
            .map(str::to_string)
            .collect();
        let facts =
            VenvFacts { native_code: venv.has_native_code, required_glibc: venv.required_glibc, console_scripts };
        let tree = Tree::new(venv.entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output { tree, facts, exports: Vec::new() })
    }
}
