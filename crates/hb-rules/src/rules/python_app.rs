//! `[[python_app]]`: a Python application with a `pyproject.toml` and a hash-locked set
//! of dependencies, installed as a virtualenv. Analysis reads the pyproject and the lock
//! (checking the lock is current for the platform); expansion adds one shared `fetch` per
//! locked file, the `py_wheel` build of the app and the `py_venv` that installs it all.
//! Provides an [`InstallTree`] and a [`PythonApp`]. `hb lock` ([`lock`]) writes the
//! lock. Its sources are `srcs`, which must hold every file the pyproject refers to, or
//! else what the pyproject names (`crate::pyproject`).

use std::path::{Path, PathBuf};

use hb_config::{ConfigError, Label, Package, Platform, Workspace};
use hb_fetch::{Lock, Role};
use serde::Deserialize;
use toml::Spanned;

use crate::actions::files::FilesJob;
use crate::actions::python::{FetchJob, SdistJob, VenvJob, WheelJob, target_id};
use crate::providers::{InstallTree, PythonApp as PythonAppInfo};
use crate::rule::{Cx, Providers, Rule, attrs_of};
use crate::{RulesError, short};
use hb_fetch::sdist::is_sdist;

/// The `python_app` rule.
pub struct PythonApp;

/// `[[python_app]]` attributes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonAppAttrs {
    pub name: Spanned<String>,
    /// Source globs relative to the package directory (the pyproject is always
    /// included). Default: what the pyproject names (see `crate::pyproject`).
    pub srcs: Option<Spanned<Vec<Spanned<String>>>>,
    /// WSGI entry point, `module:attribute`.
    pub module: Spanned<String>,
    #[serde(default = "default_pyproject")]
    pub pyproject: Spanned<String>,
    /// Install prefix on the target; default `/usr/lib/<project name>`.
    pub prefix: Option<Spanned<String>>,
    /// The lock file, relative to the package; default `hb.lock`.
    pub lock: Option<Spanned<String>>,
    /// A PEP 751 `pylock.toml`, a `uv.lock`, or a pip requirements file (`*.txt`, every
    /// requirement pinned with `--hash`), relative to the package, whose pins are the
    /// app's runtime files: `hb lock` takes them from it for each target (the best wheel by the
    /// target's tags, its sha256) instead of resolving `[project].dependencies`.
    pub runtime_lock: Option<Spanned<String>>,
    /// Dependencies that may be locked as their sdist and compiled in the target root
    /// when they publish no wheel for it: `true` for any, or a list of names.
    pub allow_sdist: Option<Spanned<AllowSdist>>,
    /// Debian packages the sdists' builds need besides the compiler and the Python
    /// headers (`libpq-dev`), installed in the compile root and locked with it.
    pub build_depends: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `allow_sdist = true` or `allow_sdist = ["psycopg2"]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum AllowSdist {
    All(bool),
    Only(Vec<String>),
}

impl PythonAppAttrs {
    /// Which dependencies may come from an sdist.
    pub fn sdist_policy(&self) -> hb_fetch::SdistPolicy {
        match self.allow_sdist.as_ref().map(|a| a.get_ref()) {
            None | Some(AllowSdist::All(false)) => hb_fetch::SdistPolicy::None,
            Some(AllowSdist::All(true)) => hb_fetch::SdistPolicy::All,
            Some(AllowSdist::Only(names)) if names.is_empty() => hb_fetch::SdistPolicy::None,
            Some(AllowSdist::Only(names)) => {
                hb_fetch::SdistPolicy::Only(names.iter().map(|n| hb_python::normalize(n)).collect())
            }
        }
    }

    /// Whether its lock's sdists need the compile root: any that is not pure, or any
    /// `build_depends` asked for (pure sdists alone build in the base root).
    pub fn needs_compile_root(&self, lock: &Lock) -> bool {
        let listed = self.build_depends.as_ref().is_some_and(|b| !b.get_ref().is_empty());
        let mut sdists = lock.sdists().peekable();
        sdists.peek().is_some() && (listed || sdists.any(|s| !s.pure))
    }

    /// The packages of the root sdists compile in, on top of the platform's base root.
    pub fn compile_extra(&self, platform: &Platform) -> Vec<String> {
        let mut v = platform.compile_packages();
        v.extend(self.build_depends.iter().flat_map(|b| b.get_ref().iter().map(|d| d.get_ref().clone())));
        hb_root::canonical_extra(&v)
    }
}

fn default_pyproject() -> Spanned<String> {
    Spanned::new(0..0, "pyproject.toml".into())
}

/// What analysis of a python_app found.
pub struct Analysis {
    project: Project,
    lock: Lock,
    prefix: String,
    /// The source patterns, each with where it comes from (a BUILD.toml location, or
    /// the pyproject and why).
    sources: Vec<(String, String)>,
}

impl Rule for PythonApp {
    const KIND: &'static str = "python_app";
    type Attrs = PythonAppAttrs;
    type Analysis = Analysis;

    fn name(attrs: &PythonAppAttrs) -> &Spanned<String> {
        &attrs.name
    }

    fn check(pkg: &Package, p: &PythonAppAttrs) -> Result<(), ConfigError> {
        let m = p.module.get_ref();
        let ok = m.split_once(':').is_some_and(|(module, attr)| {
            use hb_config::build_file::is_identifier;
            !module.is_empty() && !attr.is_empty() && module.split('.').all(is_identifier) && is_identifier(attr)
        });
        if !ok {
            return Err(pkg.error(p.module.span(), "`module` must be `package.module:attribute`, e.g. \"myapp:app\""));
        }
        if let Some(prefix) = &p.prefix
            && !(prefix.get_ref().starts_with('/') && hb_config::build_file::clean_absolute(prefix.get_ref()))
        {
            return Err(pkg.error(prefix.span(), "`prefix` must be a clean absolute path, like \"/usr/lib/myapp\""));
        }
        if let Some(lock) = &p.lock
            && (lock.get_ref().starts_with('/') || lock.get_ref().split('/').any(|c| c == ".." || c.is_empty()))
        {
            return Err(pkg.error(lock.span(), "`lock` is a file name relative to the package directory"));
        }
        if let Some(allow) = &p.allow_sdist
            && let AllowSdist::Only(names) = allow.get_ref()
            && let Some(bad) = names.iter().find(|n| !hb_config::build_file::valid_python_name(n))
        {
            return Err(pkg.error(
                allow.span(),
                format!("`{bad}` is not a Python distribution name (letters, digits, `-`, `_`, `.`)"),
            ));
        }
        if let Some(deps) = &p.build_depends {
            for d in deps.get_ref() {
                if !hb_config::build_file::valid_debian_package_name(d.get_ref()) {
                    return Err(pkg.error(
                        d.span(),
                        "a Debian package name: lowercase letters, digits, `+`, `-`, `.`, at least two characters, starting with a letter or digit (no version: the compile root is locked in hb-root.lock)",
                    ));
                }
            }
        }
        match &p.srcs {
            Some(srcs) if srcs.get_ref().is_empty() => Err(pkg.error(
                srcs.span(),
                "`srcs` is empty: list the app's source patterns, or leave `srcs` out to take what pyproject.toml names",
            )),
            Some(srcs) => hb_config::build_file::check_globs(pkg, srcs.get_ref()),
            None => Ok(()),
        }
    }

    fn analyse(&self, cx: &Cx, p: &PythonAppAttrs) -> Result<Analysis, RulesError> {
        let project = project(cx.package, p)?;
        if p.runtime_lock.is_none() {
            check_install_requires(&cx.label(), cx.package, p, &project)?;
        }
        let lock = read_lock(cx.package, p, &project, cx.platforms, &cx.label())?;
        let prefix = prefix(p, &project);
        let sources = sources(cx, p, &project)?;
        Ok(Analysis { project, lock, prefix, sources })
    }

    fn expand(&self, cx: &mut Cx, p: &PythonAppAttrs, a: Analysis) -> Result<Providers, RulesError> {
        let name = cx.label();
        let platform = cx.platform;
        let target = wheel_target(platform);
        let id = target_id(&target);
        let build: Vec<_> = a.lock.files_for(Role::Build, &id).map(|f| fetch(cx, f)).collect();
        let mut runtime: Vec<_> =
            a.lock.files_for(Role::Runtime, &id).filter(|f| !is_sdist(&f.file)).map(|f| fetch(cx, f)).collect();
        // Each locked sdist is compiled in the compile root; its wheel joins the venv.
        let sdists: Vec<hb_fetch::LockedFile> =
            a.lock.files_for(Role::Runtime, &id).filter(|f| is_sdist(&f.file)).cloned().collect();
        let mut compile_root = None;
        let mut root_packages = match cx.opts.sandbox {
            hb_sandbox::Mode::Bwrap => crate::roots::locked_summary(cx, &[]),
            hb_sandbox::Mode::Off => Default::default(),
        };
        if let Some(first) = sdists.first() {
            let compiles = p.needs_compile_root(&a.lock);
            if cx.opts.sandbox == hb_sandbox::Mode::Off {
                return Err(cx.invalid(
                    p.name.span(),
                    format!(
                        "{name} compiles {} from its sdist, which needs the sandbox and the target root; build without --no-sandbox",
                        first.name
                    ),
                ));
            }
            // Pure sdists (no compiler needed, no build_depends) build in the base root.
            let extra = if compiles { p.compile_extra(platform) } else { Vec::new() };
            let root = crate::roots::root_input_with(cx, &extra)?;
            if compiles {
                compile_root = Some(root);
                root_packages = crate::roots::locked_summary(cx, &extra);
            }
            let build_depends: Vec<String> =
                p.build_depends.iter().flat_map(|b| b.get_ref().iter().map(|d| d.get_ref().clone())).collect();
            for f in &sdists {
                let sdist = fetch(cx, f);
                let job = SdistJob {
                    label: name.clone(),
                    name: f.name.clone(),
                    version: f.version.clone(),
                    file: f.file.clone(),
                    sdist,
                    root,
                    platform,
                    target: target.clone(),
                    python: platform.python,
                    interpreter: platform.interpreter(),
                    mtime: cx.settings.source_date_epoch(),
                    build: build.clone(),
                    build_depends: build_depends.clone(),
                    limits: wheel_limits(cx.settings),
                    bounds: crate::actions::exec::Bounds::of(cx.settings),
                };
                // Shared: two apps with the same sdist, root and build files compile it once.
                runtime.push(cx.actions.add(format!("{name} compile {}", f.file), job));
            }
        }
        let mut patterns = a.sources;
        patterns.push((p.pyproject.get_ref().clone(), short(&cx.locate(p.pyproject.span()))));
        let files = FilesJob {
            label: name.clone(),
            dir: cx.package.dir.clone(),
            patterns,
            dest: "/".to_string(),
            strip_prefix: String::new(),
            exact: false,
        };
        let root = match cx.opts.sandbox {
            hb_sandbox::Mode::Bwrap => Some(crate::roots::root_input(cx)?),
            hb_sandbox::Mode::Off => None,
        };
        let wheel = WheelJob {
            label: name.clone(),
            files,
            root,
            platform,
            backend: a.project.build_backend.clone(),
            backend_path: a.project.backend_path.clone(),
            python: platform.python,
            interpreter: platform.interpreter(),
            target: target.clone(),
            mtime: cx.settings.source_date_epoch(),
            sandbox: cx.opts.sandbox,
            build,
            limits: wheel_limits(cx.settings),
            bounds: crate::actions::exec::Bounds::of(cx.settings),
        };
        let app = cx.actions.add(format!("{name} wheel"), wheel);
        let venv = VenvJob {
            label: name.clone(),
            prefix: a.prefix.clone(),
            python: platform.python,
            python_full: platform.python_full,
            machine: platform.machine,
            entry_module: p.module.get_ref().split(':').next().unwrap_or_default().to_string(),
            entry_at: {
                let at = cx.locate(p.module.span());
                format!("set at {}:{}", at.file.display(), at.line)
            },
            interpreter: platform.interpreter(),
            target,
            runtime,
            app,
            limits: wheel_limits(cx.settings),
        };
        let venv = cx.actions.add(name, venv);
        let info = PythonAppInfo {
            prefix: a.prefix,
            interpreter: platform.interpreter(),
            python: platform.python,
            pyproject: p.pyproject.get_ref().clone(),
            entry_point: p.module.get_ref().clone(),
            requirements: a.lock.files(Role::Runtime).map(|f| f.name.clone()).collect(),
            venv,
            compile_root,
            build_files: a.lock.files_for(Role::Build, &id).cloned().collect(),
            locked_wheels: a
                .lock
                .files_for(Role::Runtime, &id)
                .filter(|f| !is_sdist(&f.file))
                .map(|f| f.file.clone())
                .collect(),
            sdists,
            root_packages,
        };
        Ok(Providers::new(venv).with(InstallTree { tree: venv.any() }).with(info))
    }
}

/// The app's source patterns: `srcs` (every file the pyproject refers to must be among
/// them), else what the pyproject names.
fn sources(cx: &Cx, p: &PythonAppAttrs, project: &Project) -> Result<Vec<(String, String)>, RulesError> {
    let dir = &cx.package.dir;
    let shown = Path::new(&cx.package.path).join(p.pyproject.get_ref());
    match &p.srcs {
        Some(srcs) => {
            let written: Vec<String> = srcs.get_ref().iter().map(|s| s.get_ref().clone()).collect();
            let problems = crate::pyproject::missing_from(&project.doc, dir, &written)
                .map_err(|why| cx.invalid(srcs.span(), why))?;
            if !problems.is_empty() {
                let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
                return Err(cx.invalid(
                    srcs.span(),
                    format!(
                        "{} refers to files `srcs` does not provide:\n{}\nadd them to `srcs`, or leave `srcs` out to take what {} names",
                        shown.display(),
                        list.join("\n"),
                        shown.display()
                    ),
                ));
            }
            Ok(srcs.get_ref().iter().map(|s| (s.get_ref().clone(), short(&cx.locate(s.span())))).collect())
        }
        None => {
            let derived = crate::pyproject::sources(&project.doc, dir, &project.name, &project.build_backend)
                .map_err(|why| cx.invalid(p.name.span(), format!("{}: {why}", shown.display())))?;
            Ok(derived.into_iter().map(|d| (d.pattern, format!("{} ({})", shown.display(), d.why))).collect())
        }
    }
}

/// The shared fetch of one locked file.
fn fetch(cx: &mut Cx, f: &hb_fetch::LockedFile) -> hb_engine::Input<()> {
    let extra: Vec<PathBuf> = cx.settings.wheelhouse.iter().map(|w| cx.workspace_root.join(w)).collect();
    cx.actions.shared(format!("fetch {}", f.file), || FetchJob {
        file: f.clone(),
        wheelhouses: hb_fetch::wheelhouses(&extra),
    })
}

/// How far wheels may inflate: the workspace's settings, else hb's defaults.
fn wheel_limits(settings: &hb_config::WorkspaceSettings) -> hb_python::Limits {
    let d = hb_python::Limits::default();
    hb_python::Limits {
        max_unpacked: settings.max_wheel_unpacked.unwrap_or(d.max_unpacked),
        max_ratio: settings.max_compression_ratio.unwrap_or(d.max_ratio),
    }
}

/// The wheel tags a platform accepts.
/// Whether a runtime_lock is uv's (`uv.lock`) rather than a pylock.
fn is_uv_lock(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "uv.lock")
}

/// The environment markers of a platform's interpreter (PEP 508).
fn markers(p: &Platform) -> Result<hb_fetch::import::Markers, hb_fetch::FetchError> {
    hb_fetch::import::Markers::new(p.python, p.python_full, p.machine).map_err(hb_fetch::FetchError::Other)
}

pub fn wheel_target(p: &Platform) -> hb_python::Target {
    hb_python::Target { python: p.python, glibc: p.glibc, arch: p.wheel_arch.to_string() }
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
    /// `[project].dynamic`: the fields the backend computes, and where that list is.
    pub dynamic: Vec<String>,
    pub dynamic_at: Option<hb_config::Location>,
    /// `[project].requires-python`, and where it is.
    pub requires_python: Option<(String, hb_config::Location)>,
    /// The whole document, for what it says about files (`crate::pyproject`).
    pub doc: toml::Value,
}

/// The parts of pyproject.toml hb reads (other keys are the backend's business).
#[derive(Deserialize)]
struct PyProjectFile {
    project: Option<ProjectTable>,
    #[serde(rename = "build-system")]
    build_system: Option<BuildSystemTable>,
}

#[derive(Deserialize)]
struct ProjectTable {
    name: Option<String>,
    #[serde(default)]
    dependencies: Vec<String>,
    dynamic: Option<toml::Spanned<Vec<String>>>,
    #[serde(rename = "requires-python")]
    requires_python: Option<toml::Spanned<String>>,
}

#[derive(Deserialize)]
struct BuildSystemTable {
    requires: Option<Vec<String>>,
    #[serde(rename = "build-backend")]
    build_backend: Option<String>,
    #[serde(rename = "backend-path", default)]
    backend_path: Vec<String>,
}

/// Reads the python_app's pyproject.toml. A file that cannot be read is reported at the
/// BUILD.toml line naming it; a mistake inside it, at its own line of the pyproject.
pub fn project(pkg: &Package, p: &PythonAppAttrs) -> Result<Project, RulesError> {
    let named_at = if p.pyproject.span() == (0..0) { p.name.span() } else { p.pyproject.span() };
    let path = pkg.dir.join(p.pyproject.get_ref());
    let shown = Path::new(&pkg.path).join(p.pyproject.get_ref());
    let text = hb_fs::read_to_string(&path).map_err(|e| {
        let setup_py = path.parent().is_some_and(|d| d.join("setup.py").is_file()) && !path.exists();
        let hint = if setup_py {
            "; the project has only a setup.py: add a pyproject.toml with [build-system] (requires = \
             [\"setuptools>=61\"], build-backend = \"setuptools.build_meta\") and a [project] table holding \
             setup.py's name, version and install_requires as `dependencies`, and remove those from setup.py"
        } else {
            ""
        };
        RulesError::Invalid { message: format!("{e}{hint}"), location: pkg.locate(named_at) }
    })?;
    let inside = |span: std::ops::Range<usize>, message: String| RulesError::Invalid {
        message,
        location: hb_config::Location::from_span(&shown, &text, span),
    };
    let file: PyProjectFile = toml::from_str(&text)
        .map_err(|e| inside(e.span().unwrap_or(0..0), format!("{}: {}", shown.display(), e.message())))?;
    let doc: toml::Value = toml::from_str(&text)
        .map_err(|e| inside(e.span().unwrap_or(0..0), format!("{}: {}", shown.display(), e.message())))?;
    // Poetry's own format is read as the [project] table it stands for.
    let poetry = crate::poetry::as_project(&doc).map_err(|e| inside(0..0, format!("{}: {e}", shown.display())))?;
    // Poetry's `python = "..."` dependency, located at its line.
    let poetry_python =
        poetry.as_ref().and_then(|t| t.get("requires-python")).and_then(toml::Value::as_str).map(|rp| {
            let at = text.find("\npython").map_or(0..0, |i| i + 1..i + 7);
            (rp.to_string(), hb_config::Location::from_span(&shown, &text, at))
        });
    let doc = crate::poetry::with_project(&doc).map_err(|e| inside(0..0, format!("{}: {e}", shown.display())))?;
    let project = match (file.project, poetry) {
        (Some(p), _) => p,
        (None, Some(table)) => ProjectTable {
            name: table.get("name").and_then(toml::Value::as_str).map(str::to_string),
            dependencies: table
                .get("dependencies")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(toml::Value::as_str)
                .map(str::to_string)
                .collect(),
            dynamic: None,
            requires_python: None,
        },
        (None, None) => {
            return Err(inside(
                0..0,
                format!(
                    "{} has no [project] table (nor Poetry's [tool.poetry]): add one with the project's name, \
                     version and dependencies (PEP 621)",
                    shown.display()
                ),
            ));
        }
    };
    let name = project.name.ok_or_else(|| inside(0..0, format!("{} has no [project] name", shown.display())))?;
    let build = file.build_system;
    Ok(Project {
        name: hb_python::normalize(&name),
        dependencies: project.dependencies,
        // PEP 517's fallback for projects without a [build-system] table.
        build_requires: build
            .as_ref()
            .and_then(|b| b.requires.clone())
            .unwrap_or_else(|| vec!["setuptools>=40.8.0".to_string()]),
        build_backend: build
            .as_ref()
            .and_then(|b| b.build_backend.clone())
            .unwrap_or_else(|| "setuptools.build_meta:__legacy__".to_string()),
        backend_path: build.map(|b| b.backend_path).unwrap_or_default(),
        dynamic: project.dynamic.as_ref().map(|d| d.get_ref().clone()).unwrap_or_default(),
        dynamic_at: project.dynamic.as_ref().map(|d| hb_config::Location::from_span(&shown, &text, d.span())),
        requires_python: project
            .requires_python
            .as_ref()
            .map(|r| (r.get_ref().clone(), hb_config::Location::from_span(&shown, &text, r.span())))
            .or(poetry_python),
        doc,
    })
}

/// The virtualenv's install prefix: the `prefix` setting, else `/usr/lib/<project>`.
pub fn prefix(p: &PythonAppAttrs, proj: &Project) -> String {
    p.prefix
        .as_ref()
        .map_or_else(|| format!("/usr/lib/{}", proj.name), |s| s.get_ref().trim_end_matches('/').to_string())
}

/// The lock file's path and how it is shown.
fn lock_path(pkg: &Package, p: &PythonAppAttrs) -> (PathBuf, PathBuf) {
    let name = p.lock.as_ref().map_or("hb.lock", |l| l.get_ref().as_str());
    (pkg.dir.join(name), Path::new(&pkg.path).join(name))
}

/// The requirement list a lock is resolved from: `[project].dependencies`, and with a
/// `runtime_lock` its name and sha256 (an edit to it makes hb.lock out of date).
fn runtime_inputs(pkg: &Package, p: &PythonAppAttrs, proj: &Project) -> Result<Vec<String>, RulesError> {
    let mut out = proj.dependencies.clone();
    if let Some(rl) = &p.runtime_lock {
        let path = pkg.dir.join(rl.get_ref());
        let sha = hb_fs::sha256_file(&path).map_err(|e| RulesError::Invalid {
            message: format!("runtime_lock: {e}"),
            location: pkg.locate(rl.span()),
        })?;
        out.push(format!("runtime_lock {} sha256:{sha}", rl.get_ref()));
    }
    Ok(out)
}

/// The lock targets of a workspace: one per platform it builds, in order.
pub fn lock_targets(platforms: &[&Platform]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in platforms {
        let id = target_id(&wheel_target(p));
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Reads the app's lock, checking it still matches pyproject.toml and covers every
/// platform the workspace builds.
pub fn read_lock(
    pkg: &Package,
    p: &PythonAppAttrs,
    proj: &Project,
    platforms: &[&Platform],
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
    let want = hb_fetch::inputs_digest(
        &runtime_inputs(pkg, p, proj)?,
        &proj.build_requires,
        &lock_targets(platforms),
        &p.sdist_policy().describe(),
    );
    if lock.inputs != want {
        return Err(RulesError::Invalid {
            message: format!(
                "{} is out of date: the dependencies in {} or the workspace's platforms changed since it was written; run `hb lock {label}`",
                shown.display(),
                p.pyproject.get_ref()
            ),
            location: at,
        });
    }
    Ok(lock)
}

/// Every python_app of the workspace whose lock reads: its attributes, the lock's path
/// as shown, and the lock. Apps without a readable lock are left out (building them
/// asks for `hb lock` first).
fn locked_apps(ws: &mut Workspace) -> Result<Vec<(PythonAppAttrs, String, Lock)>, RulesError> {
    let mut out = Vec::new();
    for path in ws.package_paths()? {
        let pkg = ws.package(&path)?.clone();
        for t in pkg.targets.values() {
            let Some(p) = attrs_of::<PythonApp>(t) else { continue };
            let (file, shown) = lock_path(&pkg, p);
            let Ok(text) = hb_fs::read_to_string(&file) else { continue };
            if let Ok(lock) = Lock::parse(&text, &shown) {
                out.push((p.clone(), shown.display().to_string(), lock));
            }
        }
    }
    Ok(out)
}

/// The compile roots the workspace's python_apps need: for each app whose lock holds
/// an sdist, its compile packages on every platform the workspace builds.
pub fn compile_roots(ws: &mut Workspace) -> Result<Vec<(&'static Platform, Vec<String>)>, RulesError> {
    let mut out: Vec<(&'static Platform, Vec<String>)> = Vec::new();
    for (p, _, lock) in locked_apps(ws)? {
        if !p.needs_compile_root(&lock) {
            continue;
        }
        for platform in &ws.platforms {
            let extra = p.compile_extra(platform);
            if !out.iter().any(|(q, e)| q.name == platform.name && *e == extra) {
                out.push((*platform, extra));
            }
        }
    }
    Ok(out)
}

/// Every python_app lock of the workspace that reads, with its path as shown.
pub fn workspace_locks(ws: &mut Workspace) -> Result<Vec<(String, Lock)>, RulesError> {
    Ok(locked_apps(ws)?.into_iter().map(|(_, shown, lock)| (shown, lock)).collect())
}

/// Fails when a setuptools project's setup.py passes `install_requires` while
/// pyproject.toml lists its dependencies statically: setuptools then takes only the
/// static list, and a lock of it would leave out what setup.py names.
fn check_install_requires(
    label: &dyn std::fmt::Display,
    pkg: &Package,
    p: &PythonAppAttrs,
    proj: &Project,
) -> Result<(), RulesError> {
    if !proj.build_backend.starts_with("setuptools") || proj.dynamic.iter().any(|d| d == "dependencies") {
        return Ok(());
    }
    let pyproject = Path::new(p.pyproject.get_ref());
    let rel = pyproject.parent().unwrap_or(Path::new("")).join("setup.py");
    let Ok(text) = hb_fs::read_to_string(&pkg.dir.join(&rel)) else { return Ok(()) };
    let Some(at) = text.match_indices("install_requires").map(|(i, _)| i).find(|i| {
        let line = text.get(..*i).and_then(|before| before.rsplit('\n').next()).unwrap_or_default();
        !line.trim_start().starts_with('#')
    }) else {
        return Ok(());
    };
    let shown = Path::new(&pkg.path).join(&rel);
    Err(RulesError::Invalid {
        message: format!(
            "{label}: setup.py passes install_requires, but pyproject.toml lists [project] dependencies, \
             so setuptools ignores install_requires and the wheel (and the lock) would lack what it names. \
             Move its requirements into [project] dependencies and remove install_requires from setup.py, \
             then run `hb lock {label}`"
        ),
        location: hb_config::Location::from_span(&shown, &text, at..at + "install_requires".len()),
    })
}

/// Fails, naming the platforms whose Python would do, when a platform the workspace
/// builds has a Python that `requires-python` excludes.
fn check_requires_python(
    label: &Label,
    requires: &str,
    at: &hb_config::Location,
    platforms: &[&'static Platform],
) -> Result<(), RulesError> {
    use std::str::FromStr;
    let bad = |message: String| RulesError::Invalid { message, location: at.clone() };
    let spec = pep508_rs::pep440_rs::VersionSpecifiers::from_str(requires)
        .map_err(|e| bad(format!("{label}: requires-python `{requires}` is not a version specifier: {e}")))?;
    let fits = |p: &Platform| pep508_rs::pep440_rs::Version::from_str(p.python_full).is_ok_and(|v| spec.contains(&v));
    let wrong: Vec<String> =
        platforms.iter().filter(|p| !fits(p)).map(|p| format!("{} (Python {})", p.name, p.python_full)).collect();
    if wrong.is_empty() {
        return Ok(());
    }
    let good: Vec<&str> = hb_platform::PLATFORMS.iter().filter(|p| fits(p)).map(|p| p.name).collect();
    let fix = if good.is_empty() {
        "no platform hb knows has such a Python".to_string()
    } else {
        let names = good.iter().map(|g| format!("\"{g}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "build for platforms whose Python does: in [workspace], `platform = {}` and `platforms = [{names}]`",
            good.first().map(|g| format!("\"{g}\"")).unwrap_or_default()
        )
    };
    Err(bad(format!(
        "{label} requires Python {requires}, which {} lack{}: {fix}",
        wrong.join(", "),
        if wrong.len() == 1 { "s" } else { "" }
    )))
}

/// `hb lock LABEL`: resolves the app's runtime and build requirements for the
/// workspace's platform and writes the lock next to its BUILD.toml. Returns the lock's
/// path (workspace-relative) and the lock.
pub fn lock(ws: &mut Workspace, label: &Label, progress: &dyn Fn(&str)) -> Result<(PathBuf, Lock), RulesError> {
    let t = ws.target(label)?.clone();
    let Some(p) = attrs_of::<PythonApp>(&t) else {
        return Err(RulesError::Invalid {
            message: format!("{label} is a {} target; `hb lock` takes python_app targets", t.rule.kind()),
            location: t.location.clone(),
        });
    };
    let pkg = ws.package(&label.package)?.clone();
    let proj = project(&pkg, p)?;
    let pip = hb_fetch::Pip::default();
    let policy = p.sdist_policy();
    let mut sdists = hb_fetch::SdistCache::default();
    let at = pkg.locate(p.name.span());
    let fail = |e: hb_fetch::FetchError| RulesError::Invalid { message: format!("{label}: {e}"), location: at.clone() };
    if p.runtime_lock.is_none() && proj.dynamic.iter().any(|d| d == "dependencies") {
        return Err(RulesError::Invalid {
            message: format!(
                "{label}: pyproject.toml leaves its dependencies to the backend (`dynamic = [\"dependencies\"]`), \
                 and hb locks the static [project] dependencies list: locking now would give a venv \
                 without them. List them in [project] dependencies (from setup.py's install_requires or \
                 the requirements file the backend reads) and drop \"dependencies\" from dynamic, or set \
                 `runtime_lock` in BUILD.toml to the project's own lock (a hashed requirements.txt, \
                 uv.lock or pylock.toml); then run `hb lock {label}`"
            ),
            location: proj.dynamic_at.clone().unwrap_or_else(|| at.clone()),
        });
    }
    if let Some((rp, rp_at)) = &proj.requires_python {
        check_requires_python(label, rp, rp_at, &ws.platforms)?;
    }
    if p.runtime_lock.is_none() {
        check_install_requires(label, &pkg, p, &proj)?;
    }
    let runtime_pins = match &p.runtime_lock {
        Some(rl) => {
            let path = pkg.dir.join(rl.get_ref());
            let text = hb_fs::read_to_string(&path).map_err(|e| RulesError::Invalid {
                message: format!("runtime_lock: {e}"),
                location: pkg.locate(rl.span()),
            })?;
            let shown = Path::new(&pkg.path).join(rl.get_ref());
            // A requirements file names hashes, not files: find them once for all targets.
            let located = if rl.get_ref().ends_with(".txt") {
                let mut pins = hb_fetch::import::parse_requirements(&text, &shown).map_err(&fail)?;
                // Only pins some platform of the workspace installs are looked for.
                let every: Vec<hb_fetch::import::Markers> =
                    ws.platforms.iter().map(|p| markers(p)).collect::<Result<_, _>>().map_err(&fail)?;
                let mut kept = Vec::new();
                for pin in pins.drain(..) {
                    let mut any = false;
                    for m in &every {
                        any |= pin.applies(m, &shown).map_err(&fail)?;
                    }
                    if any {
                        kept.push(pin);
                    }
                }
                let pins = kept;
                let extra: Vec<PathBuf> = ws.settings.wheelhouse.iter().map(|w| ws.root.join(w)).collect();
                progress(&format!("finding the files the hashes of {} name", shown.display()));
                let located = hb_fetch::import::locate(
                    &pins,
                    &shown,
                    &hb_fetch::wheelhouses(&extra),
                    hb_fetch::index::Index::configured(&pip),
                )
                .map_err(&fail)?;
                Some(located)
            } else {
                None
            };
            Some((text, shown, located))
        }
        None => None,
    };
    let mut resolved = Vec::new();
    let mut done = Vec::new();
    for platform in &ws.platforms {
        let target = wheel_target(platform);
        if done.contains(&target_id(&target)) {
            continue;
        }
        let runtime = match &runtime_pins {
            Some((text, shown, located)) => {
                progress(&format!("taking {label}'s runtime files for {} from {}", target.describe(), shown.display()));
                let markers = markers(platform).map_err(&fail)?;
                let files = match located {
                    Some(located) => hb_fetch::import::select(located, shown, &target, &markers),
                    None if is_uv_lock(shown) => {
                        hb_fetch::import::uv_runtime(text, shown, &proj.name, &target, &markers)
                    }
                    None => hb_fetch::import::pylock_runtime(text, shown, &target, &markers),
                }
                .map_err(&fail)?;
                hb_fetch::Resolution { files, sdists: Vec::new() }
            }
            None => {
                progress(&format!("resolving {label} for {}", target.describe()));
                hb_fetch::resolve(&pip, &target, &proj.dependencies, Role::Runtime, &policy, &mut sdists)
                    .map_err(&fail)?
            }
        };
        // The sdists' build requirements are resolved with the app's, into one
        // build environment.
        let mut build_requires = proj.build_requires.clone();
        for s in &runtime.sdists {
            progress(&format!("{} {} has no wheel for {}: locked its sdist", s.name, s.version, target.describe()));
            for r in &s.build_requires {
                if !build_requires.contains(r) {
                    build_requires.push(r.clone());
                }
            }
        }
        let build =
            hb_fetch::resolve(&pip, &target, &build_requires, Role::Build, &hb_fetch::SdistPolicy::None, &mut sdists)
                .map_err(&fail)?;
        let mut packages = runtime.files;
        packages.extend(build.files);
        done.push(target_id(&target));
        resolved.push((target_id(&target), packages));
    }
    let inputs = hb_fetch::inputs_digest(
        &runtime_inputs(&pkg, p, &proj)?,
        &proj.build_requires,
        &lock_targets(&ws.platforms),
        &policy.describe(),
    );
    let lock = Lock::merge(inputs, resolved);
    let (path, shown) = lock_path(&pkg, p);
    hb_fs::write_atomic_shared(&path, lock.render(&label.to_string()).as_bytes())
        .map_err(|e| fail(hb_fetch::FetchError::Fs(e)))?;
    Ok((shown, lock))
}
