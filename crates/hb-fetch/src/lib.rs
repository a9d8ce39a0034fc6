//! Getting Python dependencies for the *target*: resolving requirements into a lock
//! (delegated to `pip download`, which reads the user's own index configuration:
//! `PIP_INDEX_URL`, `PIP_FIND_LINKS`, pip.conf), and fetching one locked file, from a
//! local wheelhouse or through pip, verified against its sha256 before anything else
//! sees it. This crate is the only part of hb that reaches the network.

pub mod lock;

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

/// Resolves `requirements` for `target` into locked files with `role`.
pub fn resolve(pip: &Pip, target: &Target, requirements: &[String], role: Role) -> Result<Vec<LockedFile>, FetchError> {
    if requirements.is_empty() {
        return Ok(Vec::new());
    }
    let tmp =
        tempfile::tempdir().map_err(|e| FetchError::Other(format!("cannot create a temporary directory: {e}")))?;
    let what = match role {
        Role::Runtime => "the app's dependencies",
        Role::Build => "the app's build requirements",
    };
    pip.download(target, requirements, false, tmp.path()).map_err(|detail| FetchError::Resolve {
        what: format!("{what} ({})", requirements.join(", ")),
        target: target.describe(),
        detail: with_available_tags(&detail, requirements, target),
    })?;
    let mut out = Vec::new();
    for entry in hb_fs::read_dir_sorted(tmp.path())? {
        let file = entry.file_name().to_string_lossy().into_owned();
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
    Ok(out)
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
    let pin = format!("{}=={}", f.name, f.version);
    pip.download(target, std::slice::from_ref(&pin), true, dest_dir).map_err(|detail| FetchError::NotFound {
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
