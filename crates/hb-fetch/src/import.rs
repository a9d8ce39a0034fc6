//! Standard lock files in: the runtime pins of a PEP 751 `pylock.toml`, or of a pip
//! `requirements.txt` with `--hash` lines, as hb's locked files for one target. A
//! requirements file names versions and hashes but no files: each hash is matched to a
//! file of the wheelhouses (hashed) or of the configured index (the sha256 its simple
//! page lists). For each package the best wheel for the target (by the
//! target's tag order) is taken, with the sha256 the file records; nothing is resolved
//! and no index is asked. What hb cannot honour exactly is refused with the package
//! named: environment markers (hb does not evaluate them yet), sources other than
//! wheels (VCS, directories, archives, sdists), and files without a sha256.

use std::collections::BTreeMap;
use std::path::Path;

use hb_python::{Target, WheelName};
use serde::Deserialize;

use crate::{FetchError, LockedFile, Role, index::Index, sdist};

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

/// One pinned requirement of a requirements file: `name==version --hash=sha256:…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub hashes: Vec<String>,
    /// 1-based line where the requirement starts.
    pub line: usize,
}

/// Options that only say where pip looks; hb fetches from the user's configuration.
const INDEX_OPTIONS: &[&str] = &[
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--trusted-host",
    "--require-hashes",
    "--prefer-binary",
];

/// Parses a requirements file whose every requirement is pinned (`==`) with at least
/// one `--hash=sha256:`. Comments and line continuations are understood; includes,
/// editables, URLs and markers are refused with their line.
pub fn parse_requirements(text: &str, shown: &Path) -> Result<Vec<Pin>, FetchError> {
    let bad = |line: usize, message: String| FetchError::Other(format!("{}:{line}: {message}", shown.display()));
    // Join continuation lines, remembering where each logical line starts.
    let mut logical: Vec<(usize, String)> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let no_comment = match raw.find(" #").or_else(|| raw.trim_start().starts_with('#').then_some(0)) {
            Some(at) => raw.get(..at).unwrap_or_default(),
            None => raw,
        };
        let (body, continues) = match no_comment.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (no_comment, false),
        };
        let entry = current.get_or_insert_with(|| (i + 1, String::new()));
        entry.1.push(' ');
        entry.1.push_str(body.trim());
        if !continues && let Some(done) = current.take() {
            logical.push(done);
        }
    }
    logical.extend(current);
    let mut pins = Vec::new();
    for (line, text) in logical {
        let words: Vec<&str> = text.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        if first.starts_with('-') {
            let option = first.split('=').next().unwrap_or_default();
            if INDEX_OPTIONS.contains(&option) {
                continue;
            }
            return Err(bad(line, format!("`{first}` is not supported: hb reads pinned requirements with hashes")));
        }
        let (requirement, rest): (Vec<&str>, Vec<&str>) = words.iter().partition(|w| !w.starts_with("--"));
        let requirement = requirement.join(" ");
        if requirement.contains(';') {
            return Err(bad(
                line,
                format!("`{requirement}` has an environment marker; hb does not evaluate markers yet"),
            ));
        }
        if requirement.contains(" @ ") || requirement.contains("://") {
            return Err(bad(line, format!("`{requirement}` is a direct reference; hb takes pinned index packages")));
        }
        let Some((name, version)) = requirement.split_once("==") else {
            return Err(bad(line, format!("`{requirement}` is not pinned with ==")));
        };
        let name = name.split('[').next().unwrap_or_default().trim();
        let version = version.trim_start_matches('=').trim();
        if name.is_empty() || version.is_empty() || version.contains([',', '*', ' ']) {
            return Err(bad(line, format!("`{requirement}` is not one exact version")));
        }
        let mut hashes = Vec::new();
        for option in rest {
            let Some(h) = option.strip_prefix("--hash=") else {
                return Err(bad(line, format!("`{option}` is not supported on a requirement")));
            };
            match h.split_once(':') {
                Some(("sha256", hex)) if hex.len() == 64 => hashes.push(hex.to_ascii_lowercase()),
                Some((algo, _)) if algo != "sha256" => {}
                _ => return Err(bad(line, format!("`{option}` is not a sha256 hash"))),
            }
        }
        if hashes.is_empty() {
            return Err(bad(
                line,
                format!("`{requirement}` has no --hash=sha256: hb verifies every file by its sha256"),
            ));
        }
        pins.push(Pin { name: hb_python::normalize(name), version: version.to_string(), hashes, line });
    }
    Ok(pins)
}

/// A pin and the files its hashes name: (file name, sha256).
pub type Located = (Pin, Vec<(String, String)>);

/// Each pin with the files its hashes name: (file name, sha256), from the wheelhouses
/// (files of the pin's name hashed) and the configured index (the hashes its pages
/// list). A hash matching no file is an error naming the pin.
pub fn locate(
    pins: &[Pin],
    shown: &Path,
    wheelhouses: &[std::path::PathBuf],
    index: Option<&Index>,
) -> Result<Vec<Located>, FetchError> {
    let mut out = Vec::new();
    for pin in pins {
        let mut found: Vec<(String, String)> = Vec::new();
        for dir in wheelhouses {
            for e in hb_fs::read_dir_sorted(dir).unwrap_or_default() {
                let file = e.file_name().to_string_lossy().into_owned();
                let named = if let Ok(w) = WheelName::parse(&file) {
                    w.normalized_name() == pin.name && w.version == pin.version
                } else {
                    sdist::parse_name(&file)
                        .is_some_and(|(n, v)| hb_python::normalize(&n) == pin.name && v == pin.version)
                };
                if named
                    && let Ok(sha) = crate::sha256_file(&e.path())
                    && pin.hashes.contains(&sha)
                    && !found.iter().any(|(f, _)| *f == file)
                {
                    found.push((file, sha));
                }
            }
        }
        if let Some(index) = index {
            let listed = index.listed_hashes(&pin.name).map_err(|e| {
                FetchError::Other(format!(
                    "{}:{}: looking up {}=={}: {e}",
                    shown.display(),
                    pin.line,
                    pin.name,
                    pin.version
                ))
            })?;
            for (file, sha) in listed {
                if pin.hashes.contains(&sha) && !found.iter().any(|(f, _)| *f == file) {
                    found.push((file, sha));
                }
            }
        }
        if found.is_empty() {
            let place = if index.is_some() {
                "in the wheelhouses or the index"
            } else {
                "in the wheelhouses (no index is configured: set PIP_INDEX_URL or pip's index-url)"
            };
            return Err(FetchError::Other(format!(
                "{}:{}: no file of {}=={} with one of its hashes is {place}",
                shown.display(),
                pin.line,
                pin.name,
                pin.version
            )));
        }
        out.push((pin.clone(), found));
    }
    Ok(out)
}

/// The best-ranked wheel of each located pin for `target`, as runtime files.
pub fn select(
    located: &[(Pin, Vec<(String, String)>)],
    shown: &Path,
    target: &Target,
) -> Result<Vec<LockedFile>, FetchError> {
    let mut out = Vec::new();
    for (pin, files) in located {
        let best = files
            .iter()
            .filter_map(|(file, sha)| {
                let w = WheelName::parse(file).ok()?;
                Some((target.rank(&w)?, file, sha))
            })
            .min_by_key(|(rank, _, _)| *rank);
        let Some((_, file, sha)) = best else {
            return Err(FetchError::Other(format!(
                "{}:{}: none of the files {}=={}'s hashes name is a wheel for {}",
                shown.display(),
                pin.line,
                pin.name,
                pin.version,
                target.describe()
            )));
        };
        out.push(LockedFile {
            name: pin.name.clone(),
            version: pin.version.clone(),
            role: Role::Runtime,
            file: file.clone(),
            sha256: sha.clone(),
            targets: Vec::new(),
        });
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

    #[test]
    fn requirements_with_hashes_are_read_and_the_rest_refused_by_line() {
        let h = |c: char| c.to_string().repeat(64);
        let text = format!(
            "# pinned\n--index-url http://127.0.0.1:9/simple\nFlask[async]==3.1.0 \\\n    --hash=sha256:{} \\\n    --hash=sha256:{}\n    # via app\nclick===8.1.7 --hash=sha256:{}  # comment\n",
            h('a'),
            h('B'),
            h('c')
        );
        let pins = parse_requirements(&text, Path::new("requirements.txt")).unwrap();
        assert_eq!(pins.len(), 2);
        assert_eq!((pins[0].name.as_str(), pins[0].version.as_str(), pins[0].line), ("flask", "3.1.0", 3));
        assert_eq!(pins[0].hashes, [h('a'), h('b')]);
        assert_eq!((pins[1].name.as_str(), pins[1].version.as_str()), ("click", "8.1.7"));
        let err = |t: &str| parse_requirements(t, Path::new("r.txt")).unwrap_err().to_string();
        assert!(err("flask>=3\n").contains("r.txt:1") && err("flask>=3\n").contains("pinned"));
        assert!(err("flask==3.1\n").contains("no --hash"));
        assert!(err(&format!("x==1 ; sys_platform == 'win32' --hash=sha256:{}\n", h('a'))).contains("marker"));
        assert!(err("-r other.txt\n").contains("not supported"));
        assert!(err("\n\n-e .\n").contains("r.txt:3"));
        assert!(err("x==1 --hash=sha256:short\n").contains("not a sha256"));
    }
}
