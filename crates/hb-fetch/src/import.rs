//! Standard lock files in: the runtime pins of a PEP 751 `pylock.toml`, of a `uv.lock`
//! (the packages the app's dependencies reach, walked from its entry), or of a pip
//! `requirements.txt` with `--hash` lines, as hb's locked files for one target. A
//! requirements file names versions and hashes but no files: each hash is matched to a
//! file of the wheelhouses (hashed) or of the configured index (the sha256 its simple
//! page lists). For each package the best wheel for the target (by the
//! target's tag order) is taken, with the sha256 the file records; nothing is resolved
//! and no index is asked. Environment markers (PEP 508) are evaluated for the target
//! ([`Markers`]: the release's CPython on Linux on its machine); a package whose
//! marker is false there is left out. What hb cannot honour exactly is refused with
//! the package named: markers on the kernel (`platform_release`, `platform_version`:
//! unknowable for a target), sources other than wheels (VCS, directories, archives,
//! sdists), and files without a sha256.

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
        last_component(self.path.as_deref().or(self.url.as_deref())?)
    }
}

/// The last component of a path or URL (its query and fragment dropped), if any.
fn last_component(from: &str) -> Option<String> {
    let last = from.split(['#', '?']).next()?.rsplit('/').next()?;
    (!last.is_empty()).then(|| last.to_string())
}

/// Of a locked package's wheels, each (file name, its sha256 if the lock gives one),
/// the best-ranked for `target` as a runtime file. A wheel named for another package
/// or, among those the target takes, one without a sha256 is refused; so is a package
/// with no wheel for the target.
fn best_wheel(
    name: &str,
    version: &str,
    wheels: &[(String, Option<&str>)],
    has_sdist: bool,
    target: &Target,
    bad: &dyn Fn(String) -> FetchError,
) -> Result<LockedFile, FetchError> {
    let mut best: Option<(usize, &str, String)> = None;
    for (file, sha256) in wheels {
        let wheel = WheelName::parse(file).map_err(|e| bad(format!("{file}: {e}")))?;
        if wheel.normalized_name() != name {
            return Err(bad(format!("{file} is listed under package {name}")));
        }
        let Some(rank) = target.rank(&wheel) else { continue };
        let Some(sha256) = sha256.filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())) else {
            return Err(bad(format!("{file} has no sha256 hash; hb verifies every file by its sha256")));
        };
        if best.as_ref().is_none_or(|(r, _, _)| rank < *r) {
            best = Some((rank, file, sha256.to_ascii_lowercase()));
        }
    }
    let Some((_, file, sha256)) = best else {
        let sdist =
            if has_sdist { " (only its sdist: hb compiles sdists it locks itself, see allow_sdist)" } else { "" };
        return Err(bad(format!("package {name} {version} has no wheel for {}{sdist}", target.describe())));
    };
    Ok(LockedFile {
        name: name.to_string(),
        version: version.to_string(),
        role: Role::Runtime,
        file: file.to_string(),
        sha256,
        targets: Vec::new(),
        pure: false,
    })
}

/// The environment markers of a target: a Debian release's CPython on Linux.
pub use hb_python::markers::Markers;

/// The runtime files of the pylock at `shown` (its text `text`) for `target`, whose
/// environment markers are `markers`.
pub fn pylock_runtime(
    text: &str,
    shown: &Path,
    target: &Target,
    markers: &Markers,
) -> Result<Vec<LockedFile>, FetchError> {
    let bad = |message: String| FetchError::Other(format!("{}: {message}", shown.display()));
    let lock: PyLock = toml::from_str(text).map_err(|e| bad(format!("not a PEP 751 lock file: {e}")))?;
    if !lock.lock_version.starts_with("1.") && lock.lock_version != "1" {
        return Err(bad(format!("lock-version {} is not one hb reads (1.x)", lock.lock_version)));
    }
    let mut out = Vec::new();
    for p in &lock.packages {
        let name = hb_python::normalize(&p.name);
        if let Some(m) = &p.marker
            && !markers.holds(m).map_err(|e| bad(format!("package {name}: {e}")))?
        {
            continue;
        }
        if p.vcs.is_some() || p.directory.is_some() || p.archive.is_some() {
            return Err(bad(format!("package {name} comes from a VCS, a directory or an archive; hb takes wheels")));
        }
        let Some(version) = &p.version else {
            return Err(bad(format!("package {name} has no version")));
        };
        let mut wheels = Vec::new();
        for w in &p.wheels {
            let Some(file) = w.file_name() else {
                return Err(bad(format!("a wheel of {name} has no name, path or URL")));
            };
            wheels.push((file, w.hashes.get("sha256").map(String::as_str)));
        }
        out.push(best_wheel(&name, version, &wheels, p.sdist.is_some(), target, &bad)?);
    }
    out.sort_by(|a, b| (&a.name, &a.file).cmp(&(&b.name, &b.file)));
    Ok(out)
}

#[derive(Deserialize)]
struct UvLock {
    version: u32,
    #[serde(default)]
    package: Vec<UvPackage>,
}

#[derive(Deserialize)]
struct UvPackage {
    name: String,
    version: Option<String>,
    source: Option<BTreeMap<String, toml::Value>>,
    #[serde(default)]
    dependencies: Vec<UvDep>,
    #[serde(default, rename = "optional-dependencies")]
    optional: BTreeMap<String, Vec<UvDep>>,
    sdist: Option<toml::Value>,
    #[serde(default)]
    wheels: Vec<UvWheel>,
    #[serde(default, rename = "resolution-markers")]
    resolution_markers: Vec<String>,
}

#[derive(Clone, Deserialize)]
struct UvDep {
    name: String,
    version: Option<String>,
    marker: Option<String>,
    #[serde(default)]
    extra: Vec<String>,
}

#[derive(Deserialize)]
struct UvWheel {
    url: Option<String>,
    path: Option<String>,
    filename: Option<String>,
    hash: Option<String>,
}

/// The runtime files of the app `project` (its normalized name) in the `uv.lock` at
/// `shown` for `target`: the packages its dependencies reach (with the extras they
/// ask for, not its optional or development dependencies), each edge's marker evaluated
/// for the target, and of each package the best wheel for the target with its sha256.
/// Packages from anywhere but an index (git, paths, URLs) and packages with no wheel
/// for the target are refused by name; the lock's URLs are never kept.
pub fn uv_runtime(
    text: &str,
    shown: &Path,
    project: &str,
    target: &Target,
    markers: &Markers,
) -> Result<Vec<LockedFile>, FetchError> {
    let bad = |message: String| FetchError::Other(format!("{}: {message}", shown.display()));
    let lock: UvLock = toml::from_str(text).map_err(|e| bad(format!("not a uv lock file: {e}")))?;
    if lock.version != 1 {
        return Err(bad(format!("uv.lock version {} is not one hb reads (1)", lock.version)));
    }
    let named = |name: &str| -> Vec<&UvPackage> {
        lock.package.iter().filter(|p| hb_python::normalize(&p.name) == name).collect()
    };
    let root = *named(project).first().ok_or_else(|| {
        bad(format!("it has no package {project}: lock this app's project (uv lock in its directory)"))
    })?;
    // Which of several locked versions of a package an edge means: the one it names, else
    // the one whose resolution markers hold for the target.
    let pick = |dep: &UvDep| -> Result<&UvPackage, FetchError> {
        let name = hb_python::normalize(&dep.name);
        let mut candidates: Vec<&UvPackage> =
            named(&name).into_iter().filter(|p| dep.version.is_none() || p.version == dep.version).collect();
        if candidates.len() > 1 {
            let mut fitting = Vec::new();
            for c in candidates {
                let mut holds = c.resolution_markers.is_empty();
                for m in &c.resolution_markers {
                    holds |= markers.holds(m).map_err(|e| bad(format!("package {name}: {e}")))?;
                }
                if holds {
                    fitting.push(c);
                }
            }
            candidates = fitting;
        }
        match candidates.as_slice() {
            [one] => Ok(*one),
            [] => Err(bad(format!("a dependency on {name} names no locked package for {}", target.describe()))),
            _ => Err(bad(format!(
                "{name} is locked at several versions and none is told apart for {}",
                target.describe()
            ))),
        }
    };
    let mut chosen: BTreeMap<String, &UvPackage> = BTreeMap::new();
    let mut seen: std::collections::BTreeSet<(String, String)> = Default::default();
    let mut queue: Vec<UvDep> = root.dependencies.clone();
    while let Some(dep) = queue.pop() {
        let name = hb_python::normalize(&dep.name);
        if let Some(m) = &dep.marker
            && !markers.holds(m).map_err(|e| bad(format!("the dependency on {name}: {e}")))?
        {
            continue;
        }
        let package = pick(&dep)?;
        let version = package.version.clone().unwrap_or_default();
        if let Some(other) = chosen.get(&name)
            && other.version != package.version
        {
            return Err(bad(format!(
                "{name} is reached at two versions ({} and {version}) for {}",
                other.version.as_deref().unwrap_or("?"),
                target.describe()
            )));
        }
        chosen.insert(name.clone(), package);
        // Each package's dependencies once, and each extra asked of it once.
        if seen.insert((name.clone(), String::new())) {
            queue.extend(package.dependencies.iter().cloned());
        }
        for extra in &dep.extra {
            if seen.insert((name.clone(), extra.clone())) {
                queue.extend(package.optional.get(extra).into_iter().flatten().cloned());
            }
        }
    }
    let mut out = Vec::new();
    for (name, p) in chosen {
        if name == project {
            continue;
        }
        let version = p.version.clone().ok_or_else(|| bad(format!("package {name} has no version")))?;
        if let Some(source) = &p.source
            && !source.contains_key("registry")
        {
            let kind = source.keys().next().map(String::as_str).unwrap_or("unknown");
            let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
            return Err(bad(format!(
                "package {name} comes from {article} {kind} source; hb takes packages from an index, by hash"
            )));
        }
        let mut wheels = Vec::new();
        for w in &p.wheels {
            let file = w
                .filename
                .clone()
                .or_else(|| last_component(w.path.as_deref().or(w.url.as_deref())?))
                .ok_or_else(|| bad(format!("a wheel of {name} has no file name")))?;
            wheels.push((file, w.hash.as_deref().and_then(|h| h.strip_prefix("sha256:"))));
        }
        out.push(best_wheel(&name, &version, &wheels, p.sdist.is_some(), target, &bad)?);
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
    /// Its environment marker (after `;`), if any.
    pub marker: Option<String>,
    /// 1-based line where the requirement starts.
    pub line: usize,
}

impl Pin {
    /// Whether the pin is for a target with `markers` (a line-located error if its
    /// marker cannot be evaluated).
    pub fn applies(&self, markers: &Markers, shown: &Path) -> Result<bool, FetchError> {
        match &self.marker {
            None => Ok(true),
            Some(m) => {
                markers.holds(m).map_err(|e| FetchError::Other(format!("{}:{}: {e}", shown.display(), self.line)))
            }
        }
    }
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
        let (requirement, marker) = match requirement.split_once(';') {
            Some((r, m)) => (r.trim().to_string(), Some(m.trim().to_string()).filter(|m| !m.is_empty())),
            None => (requirement, None),
        };
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
        pins.push(Pin { name: hb_python::normalize(name), version: version.to_string(), hashes, marker, line });
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

/// The best-ranked wheel of each located pin for `target` (whose environment markers
/// are `markers`), as runtime files.
pub fn select(
    located: &[(Pin, Vec<(String, String)>)],
    shown: &Path,
    target: &Target,
    markers: &Markers,
) -> Result<Vec<LockedFile>, FetchError> {
    let mut out = Vec::new();
    for (pin, files) in located {
        if !pin.applies(markers, shown)? {
            continue;
        }
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
            pure: false,
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

    fn bookworm() -> Markers {
        Markers::new((3, 11), "3.11.2", "x86_64").unwrap()
    }

    #[test]
    fn markers_are_those_of_the_target() {
        let m = bookworm();
        for yes in [
            "sys_platform == 'linux'",
            "python_version >= '3.8' and platform_machine == 'x86_64'",
            "python_full_version < '3.11.3'",
            "implementation_name == 'cpython' and os_name == 'posix'",
            "platform_system != \"Windows\"",
        ] {
            assert!(m.holds(yes).unwrap(), "{yes}");
        }
        for no in
            ["sys_platform == 'win32'", "python_version < '3.10'", "platform_machine == 'aarch64'", "extra == 'dev'"]
        {
            assert!(!m.holds(no).unwrap(), "{no}");
        }
        let arm = Markers::new((3, 13), "3.13.5", "aarch64").unwrap();
        assert!(arm.holds("platform_machine == 'aarch64' and python_version >= '3.13'").unwrap());
        assert!(m.holds("platform_release >= '6'").unwrap_err().contains("platform_release"));
        assert!(m.holds("python_version >>> '3'").unwrap_err().contains("not a PEP 508 marker"));
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
        let files = pylock_runtime(&text, Path::new("pylock.toml"), &amd64(), &bookworm()).unwrap();
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
        let err = |text: String| {
            pylock_runtime(&text, Path::new("pylock.toml"), &amd64(), &bookworm()).unwrap_err().to_string()
        };
        let wheel = format!(
            "wheels = [{{ name = \"p-1-py3-none-any.whl\", path = \"p.whl\", hashes = {{ sha256 = \"{SHA}\" }} }}]"
        );
        assert!(err(one(&format!("marker = \"platform_version > '1'\"\n{wheel}"))).contains("package p"));
        // A marker false for the target leaves the package out; a true one keeps it.
        let ok = |text: String| pylock_runtime(&text, Path::new("pylock.toml"), &amd64(), &bookworm()).unwrap();
        assert!(ok(one(&format!("marker = \"sys_platform == 'win32'\"\n{wheel}"))).is_empty());
        assert_eq!(ok(one(&format!("marker = \"sys_platform == 'linux'\"\n{wheel}"))).len(), 1);
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
        // Markers are kept for each target to evaluate (pip-compile puts them before
        // the continued hash lines).
        let marked = parse_requirements(
            &format!("colorama==0.4.6 ; platform_system == \"Windows\" \\\n    --hash=sha256:{}\n", h('a')),
            Path::new("r.txt"),
        )
        .unwrap();
        assert_eq!(marked[0].marker.as_deref(), Some("platform_system == \"Windows\""));
        assert!(!marked[0].applies(&bookworm(), Path::new("r.txt")).unwrap());
        let unknowable = Pin { marker: Some("platform_release > '5'".into()), ..marked[0].clone() };
        assert!(unknowable.applies(&bookworm(), Path::new("r.txt")).unwrap_err().to_string().contains("r.txt:1"));
        assert!(err("-r other.txt\n").contains("not supported"));
        assert!(err("\n\n-e .\n").contains("r.txt:3"));
        assert!(err("x==1 --hash=sha256:short\n").contains("not a sha256"));
    }

    #[test]
    fn a_uv_lock_is_walked_from_the_app_with_markers_extras_and_forks() {
        let w = |file: &str, c: char| {
            format!("{{ url = \"https://files.invalid/{file}\", hash = \"sha256:{}\" }}", c.to_string().repeat(64))
        };
        let text = format!(
            r#"version = 1
revision = 2
requires-python = ">=3.11"

[[package]]
name = "app"
version = "1.0"
source = {{ editable = "." }}
dependencies = [
    {{ name = "click" }},
    {{ name = "httpx", extra = ["http2"] }},
    {{ name = "numpy", version = "1.26.4", marker = "python_full_version < '3.12'" }},
    {{ name = "numpy", version = "2.1.0", marker = "python_full_version >= '3.12'" }},
]

[package.optional-dependencies]
docs = [{{ name = "sphinx" }}]

[[package]]
name = "click"
version = "8.1.7"
source = {{ registry = "https://index.invalid/simple" }}
dependencies = [{{ name = "colorama", marker = "platform_system == 'Windows'" }}]
wheels = [{}]

[[package]]
name = "colorama"
version = "0.4.6"
source = {{ registry = "https://index.invalid/simple" }}
wheels = [{}]

[[package]]
name = "httpx"
version = "0.27.0"
source = {{ registry = "https://index.invalid/simple" }}
wheels = [{}]

[package.optional-dependencies]
http2 = [{{ name = "h2" }}]

[[package]]
name = "h2"
version = "4.1.0"
source = {{ registry = "https://index.invalid/simple" }}
wheels = [{}]

[[package]]
name = "numpy"
version = "1.26.4"
source = {{ registry = "https://index.invalid/simple" }}
resolution-markers = ["python_full_version < '3.12'"]
wheels = [{}, {}]

[[package]]
name = "numpy"
version = "2.1.0"
source = {{ registry = "https://index.invalid/simple" }}
resolution-markers = ["python_full_version >= '3.12'"]
wheels = [{}]
"#,
            w("click-8.1.7-py3-none-any.whl", 'a'),
            w("colorama-0.4.6-py2.py3-none-any.whl", 'b'),
            w("httpx-0.27.0-py3-none-any.whl", 'c'),
            w("h2-4.1.0-py3-none-any.whl", 'd'),
            w("numpy-1.26.4-cp311-cp311-win_amd64.whl", 'e'),
            w("numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", 'f'),
            w("numpy-2.1.0-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", '1'),
        );
        let files = uv_runtime(&text, Path::new("uv.lock"), "app", &amd64(), &bookworm()).unwrap();
        let got: Vec<(&str, &str)> = files.iter().map(|f| (f.name.as_str(), f.version.as_str())).collect();
        // No colorama (Windows only), no sphinx (the app's own extra), h2 through the
        // extra asked of httpx, numpy 1 for Python 3.11.
        assert_eq!(got, [("click", "8.1.7"), ("h2", "4.1.0"), ("httpx", "0.27.0"), ("numpy", "1.26.4")]);
        assert!(files[3].file.contains("manylinux") && files[3].sha256 == "f".repeat(64));
        let trixie = Markers::new((3, 13), "3.13.5", "x86_64").unwrap();
        let files = uv_runtime(&text, Path::new("uv.lock"), "app", &Target::bookworm_amd64((3, 13)), &trixie).unwrap();
        assert!(files.iter().any(|f| f.name == "numpy" && f.version == "2.1.0"));

        let err =
            |t: String| uv_runtime(&t, Path::new("uv.lock"), "app", &amd64(), &bookworm()).unwrap_err().to_string();
        assert!(
            err(text.replacen(
                "{ registry = \"https://index.invalid/simple\" }",
                "{ git = \"https://g.invalid/c\" }",
                1
            ))
            .contains("package click comes from a git source")
        );
        assert!(err(text.replace("name = \"app\"", "name = \"other\"")).contains("no package app"));
        assert!(err(text.replace("version = 1\n", "version = 2\n")).contains("version 2"));
    }
}
