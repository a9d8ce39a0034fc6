//! Standard lock files in: the runtime pins of a PEP 751 `pylock.toml`, as hb's locked
//! files for one target. For each package the best wheel for the target (by the
//! target's tag order) is taken, with the sha256 the file records; nothing is resolved
//! and no index is asked. What hb cannot honour exactly is refused with the package
//! named: environment markers (hb does not evaluate them yet), sources other than
//! wheels (VCS, directories, archives, sdists), and files without a sha256.

use std::collections::BTreeMap;
use std::path::Path;

use hb_python::{Target, WheelName};
use serde::Deserialize;

use crate::{FetchError, LockedFile, Role};

#[derive(Deserialize)]
struct PyLock {
    #[serde(rename = "lock-version")]
    lock_version: String,
    #[serde(default)]
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    wheels: Vec<File>,
    sdist: Option<File>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<toml::Value>,
}

#[derive(Deserialize)]
struct File {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

impl File {
    /// The file's name: `name`, else the last component of its path or URL.
    fn file_name(&self) -> Option<String> {
        if let Some(n) = &self.name {
            return Some(n.clone());
        }
        let from = self.path.as_deref().or(self.url.as_deref())?;
        let last = from.split(['#', '?']).next()?.rsplit('/').next()?;
        (!last.is_empty()).then(|| last.to_string())
    }
}

/// The runtime files of the pylock at `shown` (its text `text`) for `target`.
pub fn pylock_runtime(text: &str, shown: &Path, target: &Target) -> Result<Vec<LockedFile>, FetchError> {
    let bad = |message: String| FetchError::Other(format!("{}: {message}", shown.display()));
    let lock: PyLock = toml::from_str(text).map_err(|e| bad(format!("not a PEP 751 lock file: {e}")))?;
    if !lock.lock_version.starts_with("1.") && lock.lock_version != "1" {
        return Err(bad(format!("lock-version {} is not one hb reads (1.x)", lock.lock_version)));
    }
    let mut out = Vec::new();
    for p in &lock.packages {
        let name = hb_python::normalize(&p.name);
        if let Some(m) = &p.marker {
            return Err(bad(format!(
                "package {name} has the marker `{m}`; hb does not evaluate environment markers yet: lock for one environment without markers"
            )));
        }
        if p.vcs.is_some() || p.directory.is_some() || p.archive.is_some() {
            return Err(bad(format!("package {name} comes from a VCS, a directory or an archive; hb takes wheels")));
        }
        let Some(version) = &p.version else {
            return Err(bad(format!("package {name} has no version")));
        };
        let mut best: Option<(usize, String, String)> = None;
        for w in &p.wheels {
            let Some(file) = w.file_name() else {
                return Err(bad(format!("a wheel of {name} has no name, path or URL")));
            };
            let wheel = WheelName::parse(&file).map_err(|e| bad(format!("{file}: {e}")))?;
            if wheel.normalized_name() != name {
                return Err(bad(format!("{file} is listed under package {name}")));
            }
            let Some(rank) = target.rank(&wheel) else { continue };
            let Some(sha256) = w.hashes.get("sha256").filter(|h| h.len() == 64) else {
                return Err(bad(format!("{file} has no sha256 in its hashes; hb verifies every file by its sha256")));
            };
            if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
                best = Some((rank, file, sha256.to_ascii_lowercase()));
            }
        }
        let Some((_, file, sha256)) = best else {
            let sdist = if p.sdist.is_some() {
                " (only its sdist: hb compiles sdists it locks itself, see allow_sdist)"
            } else {
                ""
            };
            return Err(bad(format!("package {name} {version} has no wheel for {}{sdist}", target.describe())));
        };
        out.push(LockedFile { name, version: version.clone(), role: Role::Runtime, file, sha256, targets: Vec::new() });
    }
    out.sort_by(|a, b| (&a.name, &a.file).cmp(&(&b.name, &b.file)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn amd64() -> Target {
        Target::bookworm_amd64((3, 11))
    }

    #[test]
    fn the_best_wheel_for_the_target_is_taken() {
        let text = format!(
            r#"lock-version = "1.0"
[[packages]]
name = "MarkupSafe"
version = "3.0.2"
wheels = [
  {{ url = "https://index.invalid/m/markupsafe-3.0.2-cp311-cp311-win_amd64.whl", hashes = {{ sha256 = "{SHA}" }} }},
  {{ name = "markupsafe-3.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", path = "w/x.whl", hashes = {{ sha256 = "{SHA}" }} }},
  {{ path = "wheels/markupsafe-3.0.2-cp311-cp311-musllinux_1_2_x86_64.whl", hashes = {{ sha256 = "{SHA}" }} }},
]
[[packages]]
name = "flask"
version = "3.1.0"
wheels = [{{ path = "wheels/flask-3.1.0-py3-none-any.whl", hashes = {{ sha256 = "{SHA}" }} }}]
"#
        );
        let files = pylock_runtime(&text, Path::new("pylock.toml"), &amd64()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.file.as_str()).collect();
        assert_eq!(
            names,
            [
                "flask-3.1.0-py3-none-any.whl",
                "markupsafe-3.0.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
            ]
        );
        assert_eq!(files[1].name, "markupsafe");
    }

    #[test]
    fn what_hb_cannot_honour_is_refused_by_name() {
        let one = |body: &str| format!("lock-version = \"1.0\"\n[[packages]]\nname = \"p\"\nversion = \"1\"\n{body}\n");
        let err = |text: String| pylock_runtime(&text, Path::new("pylock.toml"), &amd64()).unwrap_err().to_string();
        let wheel = format!(
            "wheels = [{{ name = \"p-1-py3-none-any.whl\", path = \"p.whl\", hashes = {{ sha256 = \"{SHA}\" }} }}]"
        );
        assert!(err(one(&format!("marker = \"sys_platform == 'win32'\"\n{wheel}"))).contains("marker"));
        assert!(
            err(one("wheels = [{ name = \"p-1-py3-none-any.whl\", hashes = { md5 = \"00\" } }]")).contains("sha256")
        );
        assert!(
            err(one("wheels = [{ name = \"p-1-cp311-cp311-win_amd64.whl\", hashes = { sha256 = \"x\" } }]"))
                .contains("no wheel for")
        );
        assert!(err(one("[packages.vcs]\ntype = \"git\"\nurl = \"u\"\ncommit-id = \"c\"")).contains("VCS"));
        assert!(err("lock-version = \"2.0\"\n".into()).contains("lock-version"));
        assert!(err("not toml [".into()).contains("not a PEP 751"));
    }
}
