//! Getting Python dependencies for the *target*: resolving requirements into a lock
//! (delegated to `pip download`, which reads the user's own index configuration:
//! `PIP_INDEX_URL`, `PIP_FIND_LINKS`, pip.conf), and fetching one locked file, from a
//! local wheelhouse, else from the configured index with hb's own client ([`index`]),
//! else through pip when hb cannot tell the index, verified against its sha256 before
//! anything else sees it. Standard lock files: [`pylock`] writes a lock as PEP 751,
//! [`import`] reads a PEP 751 lock's pins for a target. Wheels are binary-only for the target; a dependency the app allows to come
//! from source is locked as its sdist ([`sdist`]: pip resolves the rest around a
//! stand-in wheel carrying the sdist's metadata). This crate is the only part of hb that
//! reaches the network.

pub mod import;
pub mod index;
pub mod lock;
pub mod pylock;
pub mod sdist;

use std::path::{Path, PathBuf};
use std::process::Command;

use hb_config::Location;
use hb_python::{Target, WheelName};

pub use lock::{Lock, LockedFile, Role, inputs_digest};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{message}\n  --> {location}")]
    Lock { location: Box<Location>, message: String },
    #[error(
        "{file} does not match the lock: expected sha256 {expected}, got {actual} (from {source_desc}).\n  The file was not stored. If the lock is right, the index serves different bytes; otherwise run `hb lock` again."
    )]
    HashMismatch { file: String, expected: String, actual: String, source_desc: String },
    #[error(
        "could not fetch {file} ({name}=={version}): {detail}\n  Files come from the wheelhouses in PIP_FIND_LINKS and the index pip is configured with (PIP_INDEX_URL, pip.conf); check them, or the network."
    )]
    NotFound { file: String, name: String, version: String, detail: String },
    #[error("pip could not resolve {what} for {target}:\n{detail}")]
    Resolve { what: String, target: String, detail: String },
    #[error("{0}")]
    Other(String),
    #[error(transparent)]
    Fs(#[from] hb_fs::FsError),
}

/// How to run pip: `python3 -m pip` unless `HB_PIP_PYTHON` names another interpreter.
#[derive(Clone, Debug)]
pub struct Pip {
    pub python: String,
}

impl Default for Pip {
    fn default() -> Self {
        Pip { python: std::env::var("HB_PIP_PYTHON").unwrap_or_else(|_| "python3".to_string()) }
    }
}

impl Pip {
    /// `pip download` of `requirements` for `target`, binary only, into `dest`.
    fn download(&self, target: &Target, requirements: &[String], no_deps: bool, dest: &Path) -> Result<(), String> {
        let (major, minor) = target.python;
        let mut cmd = Command::new(&self.python);
        cmd.args(["-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--quiet"]);
        cmd.arg("--dest").arg(dest);
        cmd.env("PIP_PROGRESS_BAR", "off");
        cmd.args(["--only-binary=:all:", "--implementation", "cp"]);
        cmd.args(["--python-version", &format!("{major}.{minor}")]);
        cmd.args(["--abi", &format!("cp{major}{minor}"), "--abi", "abi3", "--abi", "none"]);
        for p in target.pip_platforms() {
            cmd.args(["--platform", &p]);
        }
        if no_deps {
            cmd.arg("--no-deps");
        }
        cmd.arg("--");
        cmd.args(requirements);
        let out = cmd.output().map_err(|e| {
            format!("could not run `{} -m pip`: {e} (install pip: apt install python3-pip)", self.python)
        })?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
    }

    /// `pip config list`: pip's configuration files and variables, as pip reads them.
    fn config_list(&self) -> Option<String> {
        let out = Command::new(&self.python)
            .args(["-m", "pip", "config", "list", "--disable-pip-version-check", "--no-input"])
            .stdin(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `pip download` of the sdist of one requirement into `dest`, without its
    /// dependencies. pip prepares the sdist's metadata on this machine to check it,
    /// which runs its build backend (as pip and uv do whenever they meet an sdist).
    fn download_sdist(&self, requirement: &str, dest: &Path) -> Result<(), String> {
        let mut cmd = Command::new(&self.python);
        cmd.args(["-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--quiet"]);
        cmd.args(["--no-deps", "--no-binary=:all:", "--ignore-requires-python"]);
        cmd.arg("--dest").arg(dest);
        cmd.env("PIP_PROGRESS_BAR", "off");
        cmd.arg("--").arg(requirement);
        let out = cmd.output().map_err(|e| {
            format!("could not run `{} -m pip`: {e} (install pip: apt install python3-pip)", self.python)
        })?;
        if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
    }
}

/// Which dependencies may come from an sdist, compiled in the target root, when they
/// publish no wheel for the target (`allow_sdist` of a python_app).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SdistPolicy {
    /// Wheels only (the default).
    #[default]
    None,
    /// Any dependency.
    All,
    /// These (PEP 503-normalized names).
    Only(Vec<String>),
}

impl SdistPolicy {
    pub fn allows(&self, name: &str) -> bool {
        match self {
            SdistPolicy::None => false,
            SdistPolicy::All => true,
            SdistPolicy::Only(names) => names.iter().any(|n| *n == hb_python::normalize(name)),
        }
    }

    /// How the policy enters a lock's `inputs` (empty for the default, so locks written
    /// before sdists existed stay current).
    pub fn describe(&self) -> String {
        match self {
            SdistPolicy::None => String::new(),
            SdistPolicy::All => "*".to_string(),
            SdistPolicy::Only(names) => {
                let mut v = names.clone();
                v.sort();
                v.join(",")
            }
        }
    }
}

/// The sdists one `hb lock` has fetched and read, by the requirement they were
/// fetched for: an sdist is the same file for every target, so each is fetched (and
/// its metadata prepared by pip) once per lock, not once per target.
#[derive(Default)]
pub struct SdistCache {
    dir: Option<tempfile::TempDir>,
    found: Vec<(String, LockedFile, sdist::SdistInfo)>,
}

impl SdistCache {
    /// The sdist for `req`: fetched before, or now through pip.
    fn get(&mut self, pip: &Pip, req: &str, role: Role) -> Result<(LockedFile, sdist::SdistInfo), FetchError> {
        if let Some((_, f, info)) = self.found.iter().find(|(r, _, _)| r == req) {
            return Ok((LockedFile { role, ..f.clone() }, info.clone()));
        }
        let tmp_err = |e: std::io::Error| FetchError::Other(format!("cannot create a temporary directory: {e}"));
        if self.dir.is_none() {
            self.dir = Some(tempfile::tempdir().map_err(tmp_err)?);
        }
        let base = self.dir.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default();
        let dir = tempfile::tempdir_in(&base).map_err(tmp_err)?.keep();
        pip.download_sdist(req, &dir).map_err(|d| FetchError::Resolve {
            what: format!("the sdist of {req} (allowed by `allow_sdist`)"),
            target: "any target (an sdist is the same for all)".to_string(),
            detail: d,
        })?;
        let found = hb_fs::read_dir_sorted(&dir)?;
        let Some(entry) = found.iter().find(|e| sdist::is_sdist(&e.file_name().to_string_lossy())) else {
            let got: Vec<String> = found.iter().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            return Err(FetchError::Other(format!(
                "pip fetched no .tar.gz sdist for {req} (it fetched: {}); hb compiles only PEP 517 sdists (`NAME-VERSION.tar.gz`)",
                got.join(", ")
            )));
        };
        let file = entry.file_name().to_string_lossy().into_owned();
        let info = sdist::read(&entry.path())?;
        let locked = LockedFile {
            name: info.name.clone(),
            version: info.version.clone(),
            role,
            file,
            sha256: sha256_file(&entry.path())?,
            targets: Vec::new(),
        };
        self.found.push((req.to_string(), locked.clone(), info.clone()));
        Ok((locked, info))
    }
}

/// What a resolution found: the locked files, and for each sdist among them what hb
/// read from it (its build requirements are resolved next, with the app's).
pub struct Resolution {
    pub files: Vec<LockedFile>,
    pub sdists: Vec<sdist::SdistInfo>,
}

/// The requirement pip found nothing for, from its error (`No matching distribution
/// found for psycopg2>=2.8`).
fn unmatched_requirement(detail: &str) -> Option<String> {
    let line =
        detail.lines().rev().find_map(|l| l.split_once("No matching distribution found for ").map(|(_, r)| r))?;
    let req = line.trim().to_string();
    (!req.is_empty()).then_some(req)
}

/// The distribution name at the start of a requirement.
fn requirement_name(req: &str) -> String {
    let name: String = req.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    hb_python::normalize(&name)
}

/// Local directories holding wheels: `PIP_FIND_LINKS` entries that are directories,
/// then `extra` (from BUILD.toml settings).
pub fn wheelhouses(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(v) = std::env::var("PIP_FIND_LINKS") {
        for item in v.split_whitespace() {
            let p = PathBuf::from(item.strip_prefix("file://").unwrap_or(item));
            if p.is_dir() {
                out.push(p);
            }
        }
    }
    out.extend(extra.iter().cloned());
    out
}

pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    Ok(hb_fs::sha256_file(path)?)
}

/// Resolves `requirements` for `target` into locked files with `role`: wheels for the
/// target, and the sdist of each dependency with no wheel that `allow` admits. Each
/// such sdist is fetched, read, and stands in for itself as a pure wheel with its
/// metadata while pip resolves again, so its dependencies are resolved for the target
/// like any other's.
pub fn resolve(
    pip: &Pip,
    target: &Target,
    requirements: &[String],
    role: Role,
    allow: &SdistPolicy,
    cache: &mut SdistCache,
) -> Result<Resolution, FetchError> {
    if requirements.is_empty() {
        return Ok(Resolution { files: Vec::new(), sdists: Vec::new() });
    }
    let tmp_err = |e: std::io::Error| FetchError::Other(format!("cannot create a temporary directory: {e}"));
    let what = match role {
        Role::Runtime => "the app's dependencies",
        Role::Build => "the build requirements (of the app and of its sdists)",
    };
    let stand_ins = tempfile::tempdir().map_err(tmp_err)?;
    let mut reqs: Vec<String> = requirements.to_vec();
    let mut sdists: Vec<(LockedFile, sdist::SdistInfo, String)> = Vec::new();
    let tmp = loop {
        let tmp = tempfile::tempdir().map_err(tmp_err)?;
        let Err(detail) = pip.download(target, &reqs, false, tmp.path()) else { break tmp };
        let unmatched = unmatched_requirement(&detail);
        let name = unmatched.as_deref().map(requirement_name).unwrap_or_default();
        let fail = |detail: String| FetchError::Resolve {
            what: format!("{what} ({})", requirements.join(", ")),
            target: target.describe(),
            detail: with_available_tags(&detail, &reqs, target),
        };
        let Some(req) = unmatched.filter(|_| !name.is_empty()) else { return Err(fail(detail)) };
        if !allow.allows(&name) {
            let hint = if role == Role::Runtime {
                format!(
                    "\n  {name} has no wheel for {}. To compile it from its sdist in the target root, allow it on the python_app: `allow_sdist = [\"{name}\"]`, and list the Debian packages its build needs in `build_depends` (headers, libraries, tools such as pg_config).",
                    target.describe()
                )
            } else {
                String::new()
            };
            return Err(fail(format!("{detail}{hint}")));
        }
        if sdists.iter().any(|(f, _, _)| f.name == name) {
            return Err(fail(detail));
        }
        let (locked, info) = cache.get(pip, &req, role)?;
        if info.name != name {
            return Err(FetchError::Other(format!(
                "{}: its PKG-INFO names `{}`, not `{name}`",
                locked.file, info.name
            )));
        }
        let stand_in = sdist::write_stand_in(stand_ins.path(), &info)?;
        // A direct reference by name, so pip takes it for every requirement of the
        // name; first, since pip 23 looks the name up in the index when a plain
        // requirement of it comes before.
        reqs.insert(0, format!("{} @ file://{}", info.name, stand_in.display().to_string().replace(' ', "%20")));
        let stand_in_file = stand_in.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        sdists.push((locked, info, stand_in_file));
    };
    let mut out = Vec::new();
    for entry in hb_fs::read_dir_sorted(tmp.path())? {
        let file = entry.file_name().to_string_lossy().into_owned();
        if sdists.iter().any(|(_, _, stand_in)| *stand_in == file) {
            continue;
        }
        let wheel = WheelName::parse(&file)
            .map_err(|e| FetchError::Other(format!("pip downloaded {file}, which hb cannot use: {e}")))?;
        if target.rank(&wheel).is_none() {
            return Err(FetchError::Other(format!(
                "pip chose {file}, which does not run on {}; its tags: {}",
                target.describe(),
                wheel.tags().join(", ")
            )));
        }
        out.push(LockedFile {
            name: wheel.normalized_name(),
            version: wheel.version.clone(),
            role,
            file,
            sha256: sha256_file(&entry.path())?,
            targets: Vec::new(),
        });
    }
    let mut infos = Vec::new();
    for (locked, info, _) in sdists {
        out.push(locked);
        infos.push(info);
    }
    Ok(Resolution { files: out, sdists: infos })
}

/// When pip finds nothing for a requirement, the wheels a wheelhouse does have for it,
/// with their tags, say why.
fn with_available_tags(detail: &str, requirements: &[String], target: &Target) -> String {
    let mut out = detail.to_string();
    for dir in wheelhouses(&[]) {
        let Ok(entries) = hb_fs::read_dir_sorted(&dir) else { continue };
        for e in entries {
            let file = e.file_name().to_string_lossy().into_owned();
            let Ok(w) = WheelName::parse(&file) else { continue };
            let wanted = requirements.iter().any(|r| {
                let name: String =
                    r.chars().take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
                hb_python::normalize(&name) == w.normalized_name()
            });
            if wanted && target.rank(&w).is_none() {
                out.push_str(&format!(
                    "\n  {file} in {} is not compatible with {}; available tags: {}",
                    dir.display(),
                    target.describe(),
                    w.tags().join(", ")
                ));
            }
        }
    }
    out
}

/// Fetches one locked file into `dest_dir`, verified; returns its path there.
pub fn fetch(
    pip: &Pip,
    target: &Target,
    wheelhouses: &[PathBuf],
    f: &LockedFile,
    dest_dir: &Path,
) -> Result<PathBuf, FetchError> {
    let verify = |path: &Path, source_desc: String| -> Result<(), FetchError> {
        let actual = sha256_file(path)?;
        if actual != f.sha256 {
            return Err(FetchError::HashMismatch {
                file: format!("{} ({} {})", f.file, f.name, f.version),
                expected: f.sha256.clone(),
                actual,
                source_desc,
            });
        }
        Ok(())
    };
    for dir in wheelhouses {
        let candidate = dir.join(&f.file);
        if candidate.is_file() {
            verify(&candidate, candidate.display().to_string())?;
            return Ok(candidate);
        }
    }
    if let Some(index) = index::Index::configured(pip) {
        return index.fetch(f, dest_dir);
    }
    let pin = format!("{}=={}", f.name, f.version);
    let got = if sdist::is_sdist(&f.file) {
        pip.download_sdist(&pin, dest_dir)
    } else {
        pip.download(target, std::slice::from_ref(&pin), true, dest_dir)
    };
    got.map_err(|detail| FetchError::NotFound {
        file: f.file.clone(),
        name: f.name.clone(),
        version: f.version.clone(),
        detail: last_lines(&detail, 4),
    })?;
    let path = dest_dir.join(&f.file);
    if !path.is_file() {
        let got: Vec<String> =
            hb_fs::read_dir_sorted(dest_dir)?.iter().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        return Err(FetchError::NotFound {
            file: f.file.clone(),
            name: f.name.clone(),
            version: f.version.clone(),
            detail: format!("the index offered {} instead; run `hb lock` again", got.join(", ")),
        });
    }
    verify(&path, "the package index (through pip)".to_string())?;
    Ok(path)
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
