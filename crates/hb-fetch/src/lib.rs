//! Getting Python dependencies for the *target*: resolving requirements into a lock
//! (delegated to `pip download`, binary-only, which reads the user's own index
//! configuration: `PIP_INDEX_URL`, `PIP_FIND_LINKS`, pip.conf; it runs in a bubblewrap
//! sandbox that shares only the network, see [`Pip`]), and fetching one locked file,
//! from a local wheelhouse, else from the index — the configured one, else pip's
//! default, asked of pip — with hb's own client ([`index`]), verified against its
//! sha256 before anything else sees it. pip never fetches a locked file. Standard lock
//! files: [`pylock`] writes a lock as PEP 751, [`import`] reads a PEP 751 lock's pins for
//! a target. Wheels are binary-only for the target; a dependency the app allows to come
//! from source is locked as its sdist, which hb picks and fetches itself from the
//! wheelhouses or the index and reads without running it ([`sdist`]: pip resolves the
//! rest around a stand-in wheel carrying the sdist's metadata), so no dependency code
//! runs at `hb lock` either. This crate is the only part of hb that reaches the
//! network.

pub mod import;
pub mod index;
pub mod lock;
pub mod pylock;
pub mod sdist;

use std::collections::BTreeMap;
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
/// Every pip process gets an environment without hb's settings or credentials
/// ([`hb_fs::env`]); `pip download` runs in the network sandbox
/// ([`hb_sandbox::run_networked`]).
#[derive(Clone, Debug)]
pub struct Pip {
    pub python: String,
}

impl Default for Pip {
    fn default() -> Self {
        Pip { python: std::env::var("HB_PIP_PYTHON").unwrap_or_else(|_| "python3".to_string()) }
    }
}

/// Where the interpreter pip runs with lives, as it says itself.
struct Interpreter {
    executable: PathBuf,
    /// `sys.prefix` and `sys.base_prefix` (one for an interpreter outside a venv).
    prefixes: Vec<PathBuf>,
}

/// Variables `pip download` may see in the sandbox besides pip's own (`PIP_*`): the
/// network's settings and certificate bundles.
const NETWORK_ENV: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "CURL_CA_BUNDLE",
];

/// Host files the sandboxed pip reads at their own path, when they exist: name
/// resolution, the certificate store and pip's site-wide configuration.
const HOST_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/pip.conf",
    "/etc/xdg/pip/pip.conf",
];

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from)
}

impl Pip {
    fn pip_command(&self) -> Command {
        let mut cmd = hb_fs::env::command(&self.python);
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// The interpreter behind `self.python` (which may be a shim or a wrapper),
    /// asked without importing anything (`-I -S`).
    fn interpreter(&self) -> Result<Interpreter, String> {
        let out = self
            .pip_command()
            .args(["-I", "-S", "-c", "import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix)"])
            .output()
            .map_err(|e| format!("could not run `{}`: {e} (install Python: apt install python3-pip)", self.python))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(PathBuf::from);
        let executable = lines.next().filter(|p| out.status.success() && p.is_absolute()).ok_or_else(|| {
            format!(
                "`{}` did not say where its interpreter is: {}",
                self.python,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        let mut prefixes: Vec<PathBuf> = Vec::new();
        for p in lines.filter(|p| p.is_absolute()) {
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if !prefixes.contains(&p) {
                prefixes.push(p);
            }
        }
        Ok(Interpreter { executable, prefixes })
    }

    /// `pip download` of `requirements` for `target`, binary only, into `dest`, in the
    /// network sandbox: `local` (find-links directories, stand-in wheels) shown
    /// read-only, `dest` writable.
    fn download(
        &self,
        target: &Target,
        requirements: &[String],
        no_deps: bool,
        local: &[&Path],
        dest: &Path,
    ) -> Result<(), String> {
        let python = self.interpreter()?;
        let (major, minor) = target.python;
        let mut argv: Vec<String> = vec![python.executable.display().to_string()];
        let mut arg = |a: &str| argv.push(a.to_string());
        // Not --quiet: pip says what a conflict is caused by only at its info level
        // (standard output), read below when it fails.
        for a in ["-m", "pip", "download", "--disable-pip-version-check", "--no-input"] {
            arg(a);
        }
        arg("--dest");
        arg(&dest.display().to_string());
        for a in ["--only-binary=:all:", "--implementation", "cp", "--python-version", &format!("{major}.{minor}")] {
            arg(a);
        }
        for a in ["--abi", &format!("cp{major}{minor}"), "--abi", "abi3", "--abi", "none"] {
            arg(a);
        }
        for p in target.pip_platforms() {
            arg("--platform");
            arg(&p);
        }
        if no_deps {
            arg("--no-deps");
        }
        arg("--");
        argv.extend(requirements.iter().cloned());
        let spec = self.sandbox_spec(&python, argv, local, dest);
        let out = hb_sandbox::run_networked(&spec).map_err(|e| e.to_string())?;
        if out.success {
            return Ok(());
        }
        let mut detail = out.stderr.trim().to_string();
        if let Some((_, block)) = out.stdout.split_once("The conflict is caused by:") {
            detail.push_str("\nThe conflict is caused by:");
            for line in block.lines().skip(1).take_while(|l| !l.trim().is_empty()) {
                detail.push('\n');
                detail.push_str(line);
            }
        }
        Err(detail)
    }

    /// What the sandboxed pip sees: the interpreter's prefixes, the host files of
    /// [`HOST_FILES`], pip's own configuration files and certificate bundles, the
    /// find-links directories, `local` (read-only); `dest` (writable); pip's variables
    /// and the network's, never hb's or anything credential-like.
    fn sandbox_spec(
        &self,
        python: &Interpreter,
        argv: Vec<String>,
        local: &[&Path],
        dest: &Path,
    ) -> hb_sandbox::NetSpec {
        let mut read_only: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut show = |host: PathBuf, at: PathBuf| {
            // /usr is there already; a path inside one shown before needs no mount
            // point of its own (and could not get one in a read-only directory).
            let covered = at.starts_with("/usr") || read_only.iter().any(|(_, a)| at.starts_with(a));
            if host.exists() && !covered {
                read_only.push((host, at));
            }
        };
        for p in &python.prefixes {
            show(p.clone(), p.clone());
        }
        for f in HOST_FILES {
            show(PathBuf::from(f), PathBuf::from(f));
        }
        // PIP_CLIENT_CERT is the client certificate an index may require: like netrc
        // below, pip needs it to reach that index.
        for k in [
            "PIP_CONFIG_FILE",
            "PIP_CERT",
            "PIP_CLIENT_CERT",
            "REQUESTS_CA_BUNDLE",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "CURL_CA_BUNDLE",
        ] {
            if let Some(p) = env_path(k).filter(|p| p.is_absolute()) {
                show(p.clone(), p);
            }
        }
        // The user's pip configuration, at the sandbox's home.
        let home = env_path("HOME");
        let sandbox_home =
            Path::new(&hb_sandbox::BASE_ENV.iter().find(|(k, _)| *k == "HOME").map_or("/hb/home", |(_, v)| v))
                .to_path_buf();
        if let Some(home) = &home {
            for rel in [".config/pip/pip.conf", ".pip/pip.conf"] {
                show(home.join(rel), sandbox_home.join(rel));
            }
        }
        // Credentials for an index that needs them, when the user keeps them in netrc
        // (pip's HTTP client reads ~/.netrc): this one file, read-only. pip here only
        // resolves wheels and never runs a dependency's code.
        if let Some(netrc) = env_path("NETRC").or_else(|| home.as_ref().map(|h| h.join(".netrc"))) {
            show(netrc, sandbox_home.join(".netrc"));
        }
        let finds = wheelhouses(&[]).into_iter().chain(self.configured_find_links());
        for dir in finds.chain(local.iter().map(|p| p.to_path_buf())) {
            show(dir.clone(), dir);
        }
        let mut env: BTreeMap<String, String> =
            hb_sandbox::BASE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.insert("PIP_PROGRESS_BAR".into(), "off".into());
        // pip's own settings (PIP_INDEX_URL, PIP_CERT…), read by name to pass them on.
        #[allow(clippy::disallowed_methods)]
        let pips: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PIP_") && !hb_fs::env::is_withheld(std::ffi::OsStr::new(k)))
            .collect();
        for (k, v) in pips {
            env.insert(k, v);
        }
        for k in NETWORK_ENV {
            if let Ok(v) = std::env::var(k) {
                env.insert(k.to_string(), v);
            }
        }
        hb_sandbox::NetSpec { argv, env, read_only, writable: vec![dest.to_path_buf()], timeout: None }
    }

    /// The local directories pip's configuration files name as `find-links` (pip
    /// reads them at `hb lock`, so the sandbox shows them); asked once per process.
    fn configured_find_links(&self) -> Vec<PathBuf> {
        static DIRS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
        DIRS.get_or_init(|| {
            let listing = self.config_list().unwrap_or_default();
            let value = index::pip_config_value(&listing, "find-links").unwrap_or_default();
            value
                .split_whitespace()
                .map(|v| PathBuf::from(v.strip_prefix("file://").unwrap_or(v)))
                .filter(|p| p.is_absolute() && p.is_dir())
                .collect()
        })
        .clone()
    }

    /// `pip config list`: pip's configuration files and variables, as pip reads them.
    fn config_list(&self) -> Option<String> {
        let out = self
            .pip_command()
            .args(["-m", "pip", "config", "list", "--disable-pip-version-check", "--no-input"])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The index pip uses when none is configured, from pip's own code.
    fn default_index(&self) -> Option<String> {
        let out = self
            .pip_command()
            .args(["-c", "from pip._internal.models.index import PyPI; print(PyPI.simple_url)"])
            .output()
            .ok()?;
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !url.is_empty()).then_some(url)
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
/// fetched for: an sdist is the same file for every target, so each is fetched and
/// read once per lock, not once per target.
#[derive(Default)]
pub struct SdistCache {
    dir: Option<tempfile::TempDir>,
    found: Vec<(String, LockedFile, sdist::SdistInfo)>,
}

impl SdistCache {
    /// The sdist for `req`: found before, or now in the wheelhouses or on the index.
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
        let (path, sha256, version) = find_sdist(pip, req, &dir)?;
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // Read, never run: an in-tree backend is refused here, before anything could.
        let info = sdist::read(&path)?;
        if parse_version(&info.version).ok() != Some(version) {
            return Err(FetchError::Other(format!(
                "{file}: its PKG-INFO says version {}, not the file name's; hb locks only sdists that agree",
                info.version
            )));
        }
        let locked = LockedFile {
            name: info.name.clone(),
            version: info.version.clone(),
            role,
            file,
            sha256,
            targets: Vec::new(),
            pure: info.pure,
        };
        self.found.push((req.to_string(), locked.clone(), info.clone()));
        Ok((locked, info))
    }
}

fn parse_version(v: &str) -> Result<pep508_rs::pep440_rs::Version, String> {
    v.parse::<pep508_rs::pep440_rs::Version>().map_err(|e| e.to_string())
}

/// Where an sdist was found.
enum SdistSource {
    Dir(PathBuf),
    Index,
}

/// The newest sdist (final releases before pre-releases) matching `req` in the
/// wheelhouses or on the index, copied or downloaded into `dest`: its path, sha256
/// and version. Nothing of it is read but its name here.
fn find_sdist(
    pip: &Pip,
    req: &str,
    dest: &Path,
) -> Result<(PathBuf, String, pep508_rs::pep440_rs::Version), FetchError> {
    let parsed: pep508_rs::Requirement = req.parse().map_err(|e: pep508_rs::Pep508Error| {
        FetchError::Other(format!("pip found nothing for `{req}`, which hb cannot read as a requirement: {e}"))
    })?;
    let name = hb_python::normalize(parsed.name.as_ref());
    let specifiers = match &parsed.version_or_url {
        None => None,
        Some(pep508_rs::VersionOrUrl::VersionSpecifier(s)) => Some(s.clone()),
        Some(pep508_rs::VersionOrUrl::Url(_)) => {
            return Err(FetchError::Other(format!(
                "`{req}` names a URL; hb locks sdists from the wheelhouses or the index only"
            )));
        }
    };
    // (version, file, where, yanked)
    let mut candidates: Vec<(pep508_rs::pep440_rs::Version, String, SdistSource, bool)> = Vec::new();
    let dirs = wheelhouses(&[]);
    for dir in &dirs {
        for e in hb_fs::read_dir_sorted(dir)? {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(v) =
                sdist::parse_name(&file).filter(|(n, _)| *n == name).and_then(|(_, v)| parse_version(&v).ok())
            {
                candidates.push((v, file, SdistSource::Dir(dir.clone()), false));
            }
        }
    }
    let index = index::Index::for_fetching(pip);
    if let Some(index) = index {
        // An index that cannot be reached is passed over when a wheelhouse has the
        // sdist, as pip passes over it.
        let listed = match index.files(&name) {
            Ok(listed) => listed,
            Err(_) if !candidates.is_empty() => Vec::new(),
            Err(d) => {
                return Err(FetchError::Resolve {
                    what: format!("the sdist of {req} (allowed by `allow_sdist`)"),
                    target: "any target (an sdist is the same for all)".to_string(),
                    detail: d,
                });
            }
        };
        for (file, yanked) in listed {
            if let Some(v) =
                sdist::parse_name(&file).filter(|(n, _)| *n == name).and_then(|(_, v)| parse_version(&v).ok())
            {
                candidates.push((v, file, SdistSource::Index, yanked));
            }
        }
    }
    let fits = |v: &pep508_rs::pep440_rs::Version| specifiers.as_ref().is_none_or(|s| s.contains(v));
    // Final releases before pre-releases, and a yanked file only when nothing else
    // fits (PEP 592), as pip chooses.
    let pick = |pre: bool, yanked: bool| {
        let mut best: Option<&(pep508_rs::pep440_rs::Version, String, SdistSource, bool)> = None;
        for c in candidates.iter().filter(|c| fits(&c.0) && (pre || !c.0.any_prerelease()) && (yanked || !c.3)) {
            if best.is_none_or(|b| c.0 > b.0) {
                best = Some(c);
            }
        }
        best
    };
    let chosen = pick(false, false).or_else(|| pick(true, false)).or_else(|| pick(true, true));
    let Some((version, file, source, _)) = chosen else {
        let places: Vec<String> = dirs
            .iter()
            .map(|d| d.display().to_string())
            .chain(index.map(|i| format!("the index {}", i.describe())))
            .collect();
        return Err(FetchError::Other(format!(
            "no sdist (`NAME-VERSION.tar.gz`) of {name} matching `{req}` in {}; hb compiles only PEP 517 sdists, fetched from the wheelhouses (PIP_FIND_LINKS) or the index",
            if places.is_empty() {
                "no wheelhouse or index (PIP_NO_INDEX is set)".to_string()
            } else {
                places.join(", ")
            }
        )));
    };
    let (path, sha256) = match (source, index) {
        (SdistSource::Dir(dir), _) => {
            let to = dest.join(file);
            std::fs::copy(dir.join(file), &to).map_err(|e| {
                FetchError::Other(format!("copying {} to {}: {e}", dir.join(file).display(), to.display()))
            })?;
            let sha = sha256_file(&to)?;
            (to, sha)
        }
        (SdistSource::Index, Some(index)) => index.fetch_listed(&name, file, dest)?,
        (SdistSource::Index, None) => {
            return Err(FetchError::Other(format!("{file}: listed by no index (a bug in hb)")));
        }
    };
    Ok((path, sha256, version.clone()))
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

/// The requirements pip's "The conflict is caused by:" block names
/// (`    parent 2.0 depends on x>=1`), in its order.
fn conflict_requirements(detail: &str) -> Vec<String> {
    let Some((_, block)) = detail.split_once("The conflict is caused by:") else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for line in block.lines().skip(1) {
        let Some((_, req)) = line.split_once(" depends on ") else {
            if line.trim().is_empty() {
                break;
            }
            continue;
        };
        let req = req.trim().to_string();
        if !req.is_empty() && !out.contains(&req) {
            out.push(req);
        }
    }
    out
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
    // Runtime dependencies with only an sdist that the policy does not allow: each is
    // stood in for (its metadata read, never run) so that pip goes on and every one of
    // them is named at once.
    let mut refused: Vec<String> = Vec::new();
    let refused_error = |refused: &[String], detail: &str| {
        let (has, it, they) =
            if refused.len() == 1 { ("has", "it", "its sdist") } else { ("have", "them", "their sdists") };
        FetchError::Resolve {
            what: format!("{what} ({})", requirements.join(", ")),
            target: target.describe(),
            detail: format!(
                "{detail}{}{} {has} no wheel for {}, only an sdist. To compile {it} from {they} in the target \
                 root, allow {it} on the python_app: `allow_sdist = [{}]`, and list the Debian packages the \
                 builds need in `build_depends` (headers, libraries, tools such as pg_config).",
                if detail.is_empty() { "" } else { "\n  " },
                refused.join(", "),
                target.describe(),
                refused.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
            ),
        }
    };
    let tmp = loop {
        let tmp = tempfile::tempdir().map_err(tmp_err)?;
        let Err(detail) = pip.download(target, &reqs, false, &[stand_ins.path()], tmp.path()) else { break tmp };
        // A dependency of a ranged requirement without a wheel shows as a conflict
        // between the versions of what requires it: an allowed sdist among those it
        // names is stood in like a direct one.
        let unmatched = unmatched_requirement(&detail).or_else(|| {
            conflict_requirements(&detail).into_iter().find(|r| {
                let n = requirement_name(r);
                allow.allows(&n) && !sdists.iter().any(|(f, _, _)| f.name == n)
            })
        });
        let name = unmatched.as_deref().map(requirement_name).unwrap_or_default();
        let fail = |detail: String| FetchError::Resolve {
            what: format!("{what} ({})", requirements.join(", ")),
            target: target.describe(),
            detail: with_available_tags(&detail, &reqs, target),
        };
        let Some(req) = unmatched.filter(|_| !name.is_empty()) else {
            if !refused.is_empty() {
                return Err(refused_error(&refused, &detail));
            }
            return Err(fail(detail));
        };
        if !allow.allows(&name) && role == Role::Runtime && !refused.contains(&name) {
            match cache.get(pip, &req, role) {
                Ok((_, info)) if info.name == name => {
                    let stand_in = sdist::write_stand_in(stand_ins.path(), &info)?;
                    reqs.insert(
                        0,
                        format!("{} @ file://{}", info.name, stand_in.display().to_string().replace(' ', "%20")),
                    );
                    refused.push(name);
                    continue;
                }
                // No sdist either: pip's own words, with those refused so far.
                _ if !refused.is_empty() => return Err(refused_error(&refused, &detail)),
                _ => {}
            }
        }
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
    if !refused.is_empty() {
        return Err(refused_error(&refused, ""));
    }
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
            pure: false,
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

/// Fetches one locked file into `dest_dir`, verified; returns its path there. From a
/// wheelhouse, else from the index with hb's own client; never through pip, whose
/// download of an sdist would run its build backend before the hash is checked.
pub fn fetch(pip: &Pip, wheelhouses: &[PathBuf], f: &LockedFile, dest_dir: &Path) -> Result<PathBuf, FetchError> {
    for dir in wheelhouses {
        let candidate = dir.join(&f.file);
        if candidate.is_file() {
            let actual = sha256_file(&candidate)?;
            if actual != f.sha256 {
                return Err(FetchError::HashMismatch {
                    file: format!("{} ({} {})", f.file, f.name, f.version),
                    expected: f.sha256.clone(),
                    actual,
                    source_desc: candidate.display().to_string(),
                });
            }
            return Ok(candidate);
        }
    }
    match index::Index::for_fetching(pip) {
        Some(index) => index.fetch(f, dest_dir),
        None => Err(FetchError::NotFound {
            file: f.file.clone(),
            name: f.name.clone(),
            version: f.version.clone(),
            detail: format!(
                "no wheelhouse holds it, and there is no index to fetch it from (PIP_NO_INDEX is set, or `{} -m pip` could not say which index it uses)",
                pip.python
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflicts_requirements_are_read() {
        let detail = "ERROR: Cannot install parent==1.0 and parent==2.0 because these package versions have conflicting dependencies.\n\nThe conflict is caused by:\n    parent 2.0 depends on xdep>=1\n    parent 1.0 depends on xdep\n\nTo fix this you could try to:\n1. loosen the range\n";
        assert_eq!(conflict_requirements(detail), ["xdep>=1", "xdep"]);
        assert!(conflict_requirements("ERROR: No matching distribution found for x").is_empty());
    }

    #[test]
    fn pip_names_its_default_index() {
        // pip's own code says where it looks by default; hb names no index itself.
        let url = Pip { python: "python3".into() }.default_index().expect("pip is installed (scripts/deps.sh)");
        let url = url::Url::parse(&url).unwrap();
        assert_eq!(url.scheme(), "https");
        assert!(url.path().trim_end_matches('/').ends_with("/simple"), "{url}");
    }

    #[test]
    fn the_sandboxed_pip_gets_pip_settings_and_no_secrets() {
        // SAFETY: these names are read by no other test of this crate.
        unsafe {
            std::env::set_var("HB_REMOTE_TOKEN", "canary");
            std::env::set_var("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
            std::env::set_var("PIP_ACCESS_TOKEN", "canary");
            std::env::set_var("https_proxy", "http://127.0.0.1:3128");
        }
        let pip = Pip { python: "python3".into() };
        let python =
            Interpreter { executable: "/opt/py/bin/python3".into(), prefixes: vec!["/usr".into(), "/opt/py".into()] };
        let local = tempfile::tempdir().unwrap();
        let dest = Path::new("/tmp/hb-dest");
        let spec = pip.sandbox_spec(&python, vec!["python3".into()], &[local.path()], dest);
        assert_eq!(spec.env.get("PIP_INDEX_URL").map(String::as_str), Some("http://127.0.0.1:9/simple"));
        assert_eq!(spec.env.get("https_proxy").map(String::as_str), Some("http://127.0.0.1:3128"));
        assert_eq!(spec.env.get("HOME").map(String::as_str), Some("/hb/home"));
        assert!(spec.env.keys().all(|k| !k.starts_with("HB_") && !k.contains("TOKEN")), "{:?}", spec.env);
        assert_eq!(spec.writable, [dest]);
        let shown: Vec<&Path> = spec.read_only.iter().map(|(_, at)| at.as_path()).collect();
        assert!(shown.contains(&local.path()), "{shown:?}");
        // /usr is there already; nothing of the host but what is listed.
        assert!(!shown.contains(&Path::new("/usr")), "{shown:?}");
        assert!(shown.iter().all(|p| !p.starts_with("/root") || p.starts_with("/root/.pyenv")), "{shown:?}");
    }
}
