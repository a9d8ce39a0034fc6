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
        let path = hb_fetch::fetch(&pip, &self.wheelhouses, &self.file, tmp.path())
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

/// Writes a tree's files under `root` on this machine, contents from `read`: the
/// directories first, then files and symlinks on up to `threads` threads (a root is
/// ~1,200 small files, and creating a file is mostly waiting on the filesystem).
pub(crate) fn materialize(
    read: &(dyn Fn(&Digest) -> Result<Vec<u8>, StoreError> + Sync),
    entries: &[TreeEntry],
    root: &Path,
    mtime: u64,
    threads: usize,
) -> Result<(), JobError> {
    use std::os::unix::fs::PermissionsExt;
    let time = filetime::FileTime::from_unix_time(mtime as i64, 0);
    for e in entries {
        if e.kind == EntryKind::Dir {
            hb_fs::create_dir_all(&root.join(&e.path))?;
        }
    }
    let others: Vec<&TreeEntry> = entries.iter().filter(|e| e.kind != EntryKind::Dir).collect();
    par_each(&others, threads, |e| {
        let dest = root.join(&e.path);
        if let Some(parent) = dest.parent() {
            hb_fs::create_dir_all(parent)?;
        }
        match &e.kind {
            EntryKind::Dir => {}
            EntryKind::File { digest, .. } => {
                let bytes = read(digest)?;
                std::fs::write(&dest, bytes).map_err(|err| hb_fs::FsError::new("writing", &dest, err))?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(e.mode))
                    .map_err(|err| hb_fs::FsError::new("setting mode of", &dest, err))?;
                filetime::set_file_mtime(&dest, time)
                    .map_err(|err| hb_fs::FsError::new("setting mtime of", &dest, err))?;
            }
            EntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &dest)
                    .map_err(|err| hb_fs::FsError::new("creating symlink", &dest, err))?;
            }
        }
        Ok(())
    })
}

/// Runs `f` on every item, on up to `threads` threads; the error is that of the first
/// failing item in order (whichever thread met it first), so it does not vary.
fn par_each<T: Sync>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> Result<(), JobError> + Sync,
) -> Result<(), JobError> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None::<(usize, JobError)>);
    let work = || {
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            if let Err(e) = f(item) {
                let mut failed = failed.lock().unwrap_or_else(|p| p.into_inner());
                if failed.as_ref().is_none_or(|(j, _)| i < *j) {
                    *failed = Some((i, e));
                }
                // Items after this one are not needed; earlier ones still run.
                next.fetch_max(items.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads.clamp(1, items.len().max(1))).map(|_| s.spawn(work)).collect();
        work();
        for h in helpers {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    match failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
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
    /// How long the backend may run and what it may use (not in the key either).
    pub bounds: crate::actions::exec::Bounds,
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
        let store = ctx.store;
        let root = match self.root {
            Some(r) => Some(inputs.tree(r)?),
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
        self.build_env().write(ctx, inputs, &base, &work.join("env"))?;
        // The sources, with one mtime and normalized modes.
        let src: Vec<TreeEntry> =
            sources.iter().map(|s| TreeEntry::file(s.name.clone(), s.digest, s.size, s.executable)).collect();
        materialize(&|d: &Digest| store.read_blob(d), &src, &work.join("src"), self.mtime, ctx.jobs())?;
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
        let cmd = crate::actions::exec::Command {
            label: &self.label,
            work,
            cwd: &format!("{base}/src"),
            argv,
            env,
            root,
            layers: Vec::new(),
            timeout: Some(self.bounds.timeout),
            limits: self.bounds.limits,
            outputs: vec!["out".to_string()],
            mtime: self.mtime,
            platform: self.platform,
        };
        let out = crate::actions::exec::run(ctx, self.sandbox, cmd)?;
        if let Some(why) = out.stdout.lines().find_map(|l| l.strip_prefix("HB_ERROR=")) {
            return Err(JobError::Failed(format!("{}: {why}", self.label)));
        }
        if !out.success {
            return Err(JobError::Failed(format!(
                "{}: the build backend `{}` failed (exit {}){}. Its output:\n{}",
                self.label,
                self.backend,
                out.code.map_or("by signal".to_string(), |c| c.to_string()),
                self.bounds.explain(&out, "action_timeout in [workspace]"),
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
        let (digest, size) = collect_wheel(store, work, &name, &self.bounds)
            .map_err(|why| JobError::Failed(format!("{}: the build backend's wheel: {why}", self.label)))?;
        let tree =
            Tree::new(vec![TreeEntry::file(name, digest, size, false)]).map_err(|e| JobError::Failed(e.to_string()))?;
        Ok(Output::tree(tree))
    }
}

impl WheelJob {
    fn build_env(&self) -> BuildEnv<'_> {
        BuildEnv {
            label: &self.label,
            build: &self.build,
            python: self.python,
            interpreter: &self.interpreter,
            target: &self.target,
            mtime: self.mtime,
            limits: &self.limits,
        }
    }
}

/// A PEP 517 build environment: the locked build requirements' wheels in a venv of
/// their own.
struct BuildEnv<'a> {
    label: &'a str,
    build: &'a [Input<()>],
    python: (u32, u32),
    interpreter: &'a str,
    target: &'a Target,
    mtime: u64,
    limits: &'a Limits,
}

impl BuildEnv<'_> {
    /// Writes the environment under `dir` (seen as `{base}/env`). Its files are
    /// scaffolding, not outputs: they stay in memory and never enter the store.
    fn write(&self, ctx: &Ctx, inputs: &Inputs, base: &str, dir: &Path) -> Result<(), JobError> {
        let trees = self.build.iter().map(|b| inputs.tree(*b)).collect::<Result<Vec<_>, _>>()?;
        let build_wheels = wheels_of(ctx.store, &trees, self.limits)?;
        let spec =
            VenvSpec { prefix: format!("{base}/env"), python: self.python, interpreter: self.interpreter.to_string() };
        let mut blobs: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
        let mut put = |b: &[u8]| {
            let d = Digest::of(b);
            blobs.entry(d).or_insert_with(|| b.to_vec());
            Ok(d)
        };
        let env = hb_python::install(&spec, self.target, &build_wheels, &mut put)
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
        materialize(&from_memory, &env_entries, dir, self.mtime, 1)
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
    /// The distributions installed, with their wheels' sha256 and declared licences.
    pub installed: Vec<hb_python::venv::Installed>,
}

/// `py_venv`: the virtualenv of the app at its install prefix.
pub struct VenvJob {
    pub label: String,
    pub prefix: String,
    pub python: (u32, u32),
    /// The target's full Python version and machine, for the markers of the
    /// requirements check.
    pub python_full: &'static str,
    pub machine: &'static str,
    /// The module of the app's entry point (`module` without its `:attribute`), which
    /// the venv must hold, and where it is set (for the message only).
    pub entry_module: String,
    pub entry_at: String,
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
    const VERSION: u32 = 4;
    fn args(&self) -> Vec<u8> {
        encode_args(&(
            &self.prefix,
            self.python,
            &self.interpreter,
            target_id(&self.target),
            self.python_full,
            self.machine,
            &self.entry_module,
        ))
    }
    fn inputs(&self) -> Vec<hb_engine::AnyInput> {
        self.runtime.iter().chain(std::iter::once(&self.app)).map(Input::any).collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<VenvFacts>, JobError> {
        let trees = self.runtime.iter().chain([&self.app]).map(|i| inputs.tree(*i)).collect::<Result<Vec<_>, _>>()?;
        let wheels = wheels_of(ctx.store, &trees, &self.limits)?;
        self.check_requirements(&wheels)?;
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
        let facts = VenvFacts {
            native_code: venv.has_native_code,
            required_glibc: venv.required_glibc,
            console_scripts,
            installed: venv.installed.clone(),
        };
        self.check_entry_module(&venv.entries, &wheels)?;
        let tree = Tree::new(venv.entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output { tree, facts, exports: Vec::new() })
    }
}

impl VenvJob {
    /// Fails when the venv holds no module the entry point names (a `.py` file, a
    /// package, an extension module or a namespace directory in site-packages): the
    /// service could not start.
    fn check_entry_module(&self, entries: &[TreeEntry], wheels: &[Wheel]) -> Result<(), JobError> {
        // A .pth file with a line that is a path may put any directory on sys.path:
        // then hb cannot tell. (`import` lines, like setuptools' own, add none.)
        let adds_path = |text: &[u8]| {
            String::from_utf8_lossy(text).lines().map(str::trim).any(|l| {
                !l.is_empty() && !l.starts_with('#') && !l.starts_with("import ") && !l.starts_with("import\t")
            })
        };
        let pth = wheels
            .iter()
            .flat_map(Wheel::files)
            .any(|(name, bytes)| name.rsplit('/').next().is_some_and(|n| n.ends_with(".pth")) && adds_path(bytes));
        if pth {
            return Ok(());
        }
        let site = format!(
            "{}/lib/python{}.{}/site-packages/",
            self.prefix.trim_start_matches('/'),
            self.python.0,
            self.python.1
        );
        let path = self.entry_module.replace('.', "/");
        let (module, package, extension) = (format!("{path}.py"), format!("{path}/"), format!("{path}."));
        let found = entries.iter().filter_map(|e| e.path.strip_prefix(&site)).any(|p| {
            p == module
                || p.starts_with(&package)
                || p.strip_prefix(&extension).is_some_and(|rest| !rest.contains('/') && p.ends_with(".so"))
        });
        if found {
            return Ok(());
        }
        // What the app's own wheel (the last) does hold at the top of site-packages.
        let app = wheels.last();
        let mut tops: Vec<&str> = Vec::new();
        for (name, _) in app.into_iter().flat_map(Wheel::files) {
            let top = name.split('/').next().unwrap_or(name);
            let top = top.strip_suffix(".py").unwrap_or(top);
            if !top.ends_with(".dist-info") && !top.ends_with(".data") && !tops.contains(&top) {
                tops.push(top);
            }
        }
        let app = app.map(|w| w.name().distribution.as_str()).unwrap_or_default();
        Err(JobError::Failed(format!(
            "{}: the entry point's module `{}` ({}) is nowhere in the venv (no {path}.py, {path}/ or \
             extension module in site-packages), so the service could not start. The app's wheel ({app}) \
             holds {}: point `module` at one of those, or make the backend put `{path}` in the wheel \
             (setuptools: `py-modules` or `packages` in [tool.setuptools]) and check it is in `srcs`",
            self.label,
            self.entry_module,
            self.entry_at,
            if tops.is_empty() { "nothing importable".to_string() } else { tops.join(", ") }
        )))
    }

    /// Fails, naming each one, when an installed distribution's requirement (or
    /// Python) is not met by the venv, as `pip check` would.
    fn check_requirements(&self, wheels: &[Wheel]) -> Result<(), JobError> {
        let markers = hb_python::markers::Markers::new(self.python, self.python_full, self.machine)
            .map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        let dists: Vec<_> = wheels.iter().map(Wheel::requirements).collect();
        let unmet = hb_python::requires::unmet(&dists, &markers);
        if unmet.is_empty() {
            return Ok(());
        }
        // The app's wheel is the last one.
        let app = dists.last().map(|d| format!("{} {}", d.name, d.version)).unwrap_or_default();
        let lines: Vec<String> = unmet.iter().map(|u| format!("  {u}")).collect();
        let of_app = unmet.iter().any(|u| u.who() == app && !matches!(u, hb_python::requires::Unmet::Python { .. }));
        let python = unmet.iter().any(|u| matches!(u, hb_python::requires::Unmet::Python { .. }));
        let mut fix = Vec::new();
        if of_app {
            fix.push(format!(
                "The app's wheel requires what hb.lock does not hold: hb locks the app's [project] \
                 dependencies in pyproject.toml, and these come from elsewhere (setup.py's \
                 install_requires, a dynamic field, or a static list that replaced them). Name them \
                 all in [project] dependencies, then run `hb lock {}`.",
                self.label
            ));
        }
        if python {
            fix.push(format!(
                "A distribution needs another Python than this platform's {}: lock a version that \
                 supports it, or build for a platform whose Python does ([workspace] platforms).",
                self.python_full
            ));
        }
        if fix.is_empty() {
            fix.push(format!("The lock is not whole: run `hb lock {}` again.", self.label));
        }
        Err(JobError::Failed(format!(
            "{}: the venv would not work: its distributions require what it does not hold (as `pip check` \
             would say):\n{}\n{}",
            self.label,
            lines.join("\n"),
            fix.join("\n")
        )))
    }
}

/// The sdist front end run in the sandbox: unpacks the sdist (refusing members that
/// would land outside the build directory), then calls its backend's `build_wheel`.
/// Written by hb; its text is part of the action's key.
const SDIST_FRONTEND: &str = r#"import importlib, os, sys, tarfile

def fail(why):
    print("HB_ERROR=" + why)
    sys.exit(3)

def unpack(sdist, dest):
    with tarfile.open(sdist, "r:gz") as t:
        members = t.getmembers()
        for m in members:
            parts = m.name.split("/")
            if m.name.startswith("/") or ".." in parts:
                fail("the sdist member %r would land outside its directory" % m.name)
            if not (m.isfile() or m.isdir() or m.issym()):
                fail("the sdist member %r is neither a file, a directory nor a symlink" % m.name)
            if m.issym() and (m.linkname.startswith("/") or os.path.normpath(
                    os.path.join(os.path.dirname(m.name), m.linkname)).split("/")[0] == ".."):
                fail("the sdist symlink %r points outside its directory" % m.name)
        if hasattr(tarfile, "data_filter"):
            t.extractall(dest, members=members, filter="data")
        else:
            t.extractall(dest, members=members)
    tops = sorted(os.listdir(dest))
    if len(tops) != 1 or not os.path.isdir(os.path.join(dest, tops[0])):
        fail("the sdist holds %s at its top, not one directory" % (", ".join(tops) or "nothing"))
    return os.path.join(dest, tops[0])

def main():
    sdist, out_dir = sys.argv[1], sys.argv[2]
    src = unpack(sdist, os.path.abspath("src"))
    os.chdir(src)
    backend_spec = "setuptools.build_meta:__legacy__"
    if os.path.exists("pyproject.toml"):
        import tomllib
        with open("pyproject.toml", "rb") as f:
            bs = tomllib.load(f).get("build-system", {})
        if "build-backend" in bs:
            backend_spec = bs["build-backend"]
    sys.path.insert(0, src)
    module, _, attrs = backend_spec.partition(":")
    try:
        backend = importlib.import_module(module)
    except ImportError as e:
        fail("the sdist's build backend `%s` cannot be imported (%s): run `hb lock` again so its build "
             "requirements are locked" % (module, e))
    for attr in filter(None, attrs.split(".")):
        backend = getattr(backend, attr)
    os.makedirs(out_dir, exist_ok=True)
    name = backend.build_wheel(out_dir, {}, None)
    print("HB_WHEEL=" + name)

main()
"#;

/// Flags of a compile in the root, after Debian's reproducible builds: build paths
/// mapped away, `__DATE__` from `SOURCE_DATE_EPOCH` (GCC reads it), and objects
/// stripped at link time (so the wheel's RECORD stays true). Part of the key.
const COMPILE_ENV: &[(&str, &str)] = &[
    ("CFLAGS", "-O2 -ffile-prefix-map=/hb/build=. -Wdate-time"),
    ("CXXFLAGS", "-O2 -ffile-prefix-map=/hb/build=. -Wdate-time"),
    ("LDFLAGS", "-Wl,--strip-all"),
    ("MAKEFLAGS", "-j1"),
];

/// `py_sdist`: the wheel of a locked sdist, compiled in the platform's compile root
/// (its base root plus the compiler, the Python headers and the app's
/// `build_depends`), without network. The result is a cached action like any other:
/// a team compiles each sdist once per root.
pub struct SdistJob {
    pub label: String,
    /// The sdist's name and version, as locked.
    pub name: String,
    pub version: String,
    pub file: String,
    pub sdist: Input<()>,
    pub root: Input<()>,
    pub platform: &'static hb_platform::Platform,
    pub target: Target,
    pub python: (u32, u32),
    pub interpreter: String,
    pub mtime: u64,
    /// The locked build requirements' files.
    pub build: Vec<Input<()>>,
    /// Named in messages only: how to add a Debian package to the compile root.
    pub build_depends: Vec<String>,
    pub limits: Limits,
    /// How long the compile may run and what it may use (not in the key).
    pub bounds: crate::actions::exec::Bounds,
}

impl Action for SdistJob {
    type Facts = ();
    const KIND: &'static str = "py_sdist";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        encode_args(&(
            &self.name,
            &self.version,
            self.python,
            self.mtime,
            SDIST_FRONTEND,
            hb_sandbox::BASE_ENV,
            COMPILE_ENV,
            target_id(&self.target),
        ))
    }
    fn inputs(&self) -> Vec<hb_engine::AnyInput> {
        self.build.iter().chain([&self.sdist, &self.root]).map(Input::any).collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let what = format!("{}: compiling {} {} from its sdist", self.label, self.name, self.version);
        let store = ctx.store;
        let root = inputs.tree(self.root)?;
        let tmp = tempfile::tempdir_in(store.tmp_dir())
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &store.tmp_dir(), e)))?;
        let work = tmp.path();
        let base = hb_sandbox::WORK;
        let env = BuildEnv {
            label: &what,
            build: &self.build,
            python: self.python,
            interpreter: &self.interpreter,
            target: &self.target,
            mtime: self.mtime,
            limits: &self.limits,
        };
        env.write(ctx, inputs, base, &work.join("env"))?;
        let sdist_tree = inputs.tree(self.sdist)?;
        materialize(&|d: &Digest| store.read_blob(d), sdist_tree.entries(), work, self.mtime, ctx.jobs())?;
        let frontend = work.join("sdist.py");
        std::fs::write(&frontend, SDIST_FRONTEND)
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("writing", &frontend, e)))?;
        hb_fs::create_dir_all(&work.join("home"))?;
        let argv = vec![
            format!("{base}/env/bin/python"),
            format!("{base}/sdist.py"),
            format!("{base}/{}", self.file),
            format!("{base}/out"),
        ];
        let mut env = BTreeMap::from([("SOURCE_DATE_EPOCH".to_string(), self.mtime.to_string())]);
        env.extend(COMPILE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cmd = crate::actions::exec::Command {
            label: &what,
            work,
            cwd: base,
            argv,
            env,
            root: Some(root),
            layers: Vec::new(),
            timeout: Some(self.bounds.timeout),
            limits: self.bounds.limits,
            outputs: vec!["out".to_string()],
            mtime: self.mtime,
            platform: self.platform,
        };
        let out = crate::actions::exec::run(ctx, Mode::Bwrap, cmd)?;
        if let Some(why) = out.stdout.lines().find_map(|l| l.strip_prefix("HB_ERROR=")) {
            return Err(JobError::Failed(format!("{what}: {why}")));
        }
        if !out.success {
            let output = format!("{}{}", out.stdout, out.stderr);
            return Err(JobError::Failed(format!(
                "{what} failed (exit {}){}. Its output:\n{}{}",
                out.code.map_or("by signal".to_string(), |c| c.to_string()),
                self.bounds.explain(&out, "action_timeout in [workspace]"),
                tail(&output, 60),
                missing_hint(&output, &self.build_depends)
            )));
        }
        let name = out
            .stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("HB_WHEEL="))
            .ok_or_else(|| JobError::Failed(format!("{what}: the build backend reported no wheel")))?
            .to_string();
        let wheel = hb_python::WheelName::parse(&name)
            .map_err(|e| JobError::Failed(format!("{what}: the backend wrote {name}, which is not a wheel: {e}")))?;
        if wheel.normalized_name() != self.name || wheel.version != self.version {
            return Err(JobError::Failed(format!(
                "{what}: the backend built {name}, which is not {} {} as locked",
                self.name, self.version
            )));
        }
        if self.target.rank_built(&wheel).is_none() {
            return Err(JobError::Failed(format!(
                "{what}: the backend built {name}, tagged {}, which does not run on {}",
                wheel.tags().join(", "),
                self.target.describe()
            )));
        }
        let (digest, size) = collect_wheel(store, work, &name, &self.bounds)
            .map_err(|why| JobError::Failed(format!("{what}: the wheel it built: {why}")))?;
        let tree =
            Tree::new(vec![TreeEntry::file(name, digest, size, false)]).map_err(|e| JobError::Failed(e.to_string()))?;
        Ok(Output::tree(tree))
    }
}

/// The wheel a backend named (`name`, from its own output: untrusted) taken from the
/// work directory's `out/` as data: a bare file name, a regular file reached through
/// no symlink and within the output limit, checked before a byte is stored.
fn collect_wheel(
    store: &Store,
    work: &Path,
    name: &str,
    bounds: &crate::actions::exec::Bounds,
) -> Result<(Digest, u64), String> {
    if name.contains('/') || !name.ends_with(".whl") {
        return Err(format!("{name:?} is not the file name of a wheel in its output directory"));
    }
    match store.put_output(&work.join("out"), name, bounds.limits.file_size) {
        Ok((digest, size, _)) => Ok((digest, size)),
        Err(hb_store::StoreError::Output(e)) => Err(e.to_string()),
        Err(other) => Err(other.to_string()),
    }
}

/// What a failed compile's output says is missing from the root, as advice: a header
/// (`fatal error: libpq-fe.h: No such file or directory`), a library
/// (`cannot find -lpq`) or a program (`pg_config: not found`).
fn missing_hint(output: &str, build_depends: &[String]) -> String {
    let mut missing = Vec::new();
    for line in output.lines() {
        if let Some((_, rest)) = line.split_once("fatal error: ")
            && let Some(header) = rest.strip_suffix(": No such file or directory")
        {
            missing.push(format!("the header `{header}`"));
        } else if let Some((_, rest)) = line.split_once("cannot find -l") {
            let lib: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != ':').collect();
            missing.push(format!("the library `lib{lib}.so`"));
        } else if let Some(program) = line
            .strip_suffix(": not found")
            .or_else(|| line.strip_suffix(": command not found"))
            .or_else(|| line.strip_suffix(" executable not found."))
            .and_then(|l| l.rsplit([' ', ':']).find(|w| !w.is_empty()))
        {
            missing.push(format!("the program `{program}`"));
        }
    }
    missing.dedup();
    let Some(first) = missing.first() else { return String::new() };
    let now = if build_depends.is_empty() {
        "it has none".to_string()
    } else {
        format!("it has {}", build_depends.join(", "))
    };
    format!(
        "\n  The compile root lacks {}. Add the Debian package that ships it to the python_app's `build_depends` ({now}; e.g. `build_depends = [\"libpq-dev\"]` for libpq-fe.h and pg_config; `apt-file search {}` names the package), then run `hb lock`.",
        missing.join(", "),
        first.split('`').nth(1).unwrap_or_default()
    )
}

#[cfg(test)]
mod sdist_tests {
    use super::missing_hint;

    #[test]
    fn names_what_the_compile_lacked() {
        let out = "gcc -c psycopg/psycopgmodule.c\npsycopg/psycopg.h:36:10: fatal error: libpq-fe.h: No such file or directory\ncompilation terminated.";
        let hint = missing_hint(out, &[]);
        assert!(
            hint.contains("the header `libpq-fe.h`") && hint.contains("build_depends") && hint.contains("it has none"),
            "{hint}"
        );
        let hint = missing_hint("/usr/bin/ld: cannot find -lffi: No such file or directory", &["libpq-dev".into()]);
        assert!(hint.contains("the library `libffi.so`") && hint.contains("it has libpq-dev"), "{hint}");
        let hint = missing_hint("Error: pg_config executable not found.", &[]);
        assert!(hint.contains("the program `pg_config`"), "{hint}");
        assert_eq!(missing_hint("error: a plain C error", &[]), "");
    }
}
