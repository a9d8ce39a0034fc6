//! The schema of BUILD.toml files and their loading: `[workspace]` settings in the root
//! file, and targets declared as arrays of tables named after their rule
//! (`[[files]]`, `[[python_app]]`, `[[deb]]`). Unknown keys are errors; every error
//! points at the file, line and column at fault.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::ConfigError;
use crate::label::{Label, valid_name};
use crate::location::Location;

/// The name of the file declaring a package's targets.
pub const BUILD_FILE: &str = "BUILD.toml";

/// Compression of a deb's members.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Xz,
    Gzip,
    Zstd,
}

/// Settings from the root BUILD.toml's `[workspace]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceSettings {
    /// Target platform; `bookworm-amd64` is the one hb knows so far.
    #[serde(default = "default_platform")]
    pub platform: Spanned<String>,
    /// Target interpreter version (`major.minor`).
    #[serde(default = "default_python")]
    pub python: Spanned<String>,
    /// Default compression of debs.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// The one timestamp of every packaged file, unless a target sets its own.
    pub source_date_epoch: Option<u64>,
    /// Local directories of wheels searched before the package index (relative to the
    /// workspace root), in addition to `PIP_FIND_LINKS`.
    #[serde(default)]
    pub wheelhouse: Vec<String>,
    /// The team's remote cache (HB_REMOTE_CACHE and --remote-cache override it).
    pub remote_cache: Option<String>,
    /// A file holding the upload token (HB_REMOTE_TOKEN / HB_REMOTE_TOKEN_FILE override it).
    pub remote_token_file: Option<String>,
    /// The key signing uploaded action entries (HB_REMOTE_SIGNING_KEY_FILE overrides it).
    pub remote_signing_key_file: Option<String>,
    /// Public keys (hex) whose action entries are trusted.
    #[serde(default)]
    pub remote_trusted_keys: Vec<Spanned<String>>,
}

fn default_platform() -> Spanned<String> {
    Spanned::new(0..0, "bookworm-amd64".into())
}
fn default_python() -> Spanned<String> {
    Spanned::new(0..0, "3.11".into())
}
fn default_compression() -> Compression {
    Compression::Xz
}

/// Known target platforms: name → (Debian architecture, Debian suite).
pub const PLATFORMS: &[(&str, &str, &str)] = &[("bookworm-amd64", "amd64", "bookworm")];

/// Timestamp used when neither target nor workspace sets one: 2000-01-01T00:00:00Z.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 946_684_800;

impl WorkspaceSettings {
    pub fn architecture(&self) -> &'static str {
        PLATFORMS.iter().find(|p| p.0 == self.platform.get_ref()).map_or("amd64", |p| p.1)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    workspace: Option<WorkspaceSettings>,
    #[serde(default)]
    files: Vec<Spanned<FilesRule>>,
    #[serde(default)]
    python_app: Vec<Spanned<PythonAppRule>>,
    #[serde(default)]
    deb: Vec<Spanned<DebRule>>,
}

/// `[[files]]`: files of the package installed into one directory of the target system.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesRule {
    pub name: Spanned<String>,
    /// Glob patterns relative to the package directory.
    pub srcs: Vec<Spanned<String>>,
    /// Absolute install directory; each file keeps its path relative to `strip_prefix`.
    pub dest: Spanned<String>,
    #[serde(default)]
    pub strip_prefix: String,
}

/// `[[python_app]]`: a Python application with a `pyproject.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PythonAppRule {
    pub name: Spanned<String>,
    /// Source globs relative to the package directory (the pyproject is always included).
    pub srcs: Vec<Spanned<String>>,
    /// WSGI entry point, `module:attribute`.
    pub module: Spanned<String>,
    #[serde(default = "default_pyproject")]
    pub pyproject: Spanned<String>,
    /// Install prefix on the target; default `/usr/lib/<project name>`.
    pub prefix: Option<Spanned<String>>,
    /// The lock file, relative to the package; default `hb.lock`.
    pub lock: Option<Spanned<String>>,
}

fn default_pyproject() -> Spanned<String> {
    Spanned::new(0..0, "pyproject.toml".into())
}

/// `[[deb]]`: a Debian binary package made of its dependencies' trees.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebRule {
    pub name: Spanned<String>,
    /// Debian package name; default: the package directory's name.
    pub package: Option<Spanned<String>>,
    pub version: Spanned<String>,
    pub maintainer: Spanned<String>,
    /// First line: the synopsis; further lines: the long description.
    pub description: Spanned<String>,
    #[serde(default = "default_section")]
    pub section: String,
    #[serde(default = "default_priority")]
    pub priority: String,
    pub homepage: Option<String>,
    /// Extra `Depends` entries, verbatim.
    #[serde(default)]
    pub depends: Vec<Spanned<String>>,
    pub compression: Option<Compression>,
    pub source_date_epoch: Option<u64>,
    #[serde(default)]
    pub deps: Vec<Spanned<String>>,
    /// License name for the generated copyright file (default "proprietary").
    pub license: Option<String>,
    /// A copyright file of the package to ship instead of the generated one.
    pub copyright: Option<Spanned<String>>,
    /// Template overrides: template name → file of the package.
    #[serde(default)]
    pub templates: BTreeMap<String, Spanned<String>>,
    /// Run an app of the package as a system service.
    pub service: Option<ServiceSettings>,
}

/// `[deb.service]`: a WSGI app served by gunicorn as a system service.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// The python_app target to serve (a label).
    pub app: Spanned<String>,
    /// Address gunicorn binds to.
    #[serde(default = "default_bind")]
    pub bind: Spanned<String>,
    #[serde(default = "default_port")]
    pub port: Spanned<u16>,
    #[serde(default = "default_workers")]
    pub workers: Spanned<u32>,
    /// The system user the service runs as; default: the package name.
    pub user: Option<Spanned<String>>,
    /// Extra `KEY = "value"` lines for /etc/default/NAME.
    #[serde(default)]
    pub environment: BTreeMap<String, Spanned<String>>,
    /// The app's configuration file in the package, installed as /etc/NAME/config.cfg
    /// (default: a generated one).
    pub config: Option<Spanned<String>>,
}

fn default_bind() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1".into())
}
fn default_port() -> Spanned<u16> {
    Spanned::new(0..0, 8000)
}
fn default_workers() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}

/// adduser's rule for system user names (its SYS_NAME_REGEX), at most 32 characters.
pub fn valid_system_user(name: &str) -> bool {
    name.len() <= 32
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn default_section() -> String {
    "misc".into()
}
fn default_priority() -> String {
    "optional".into()
}

/// What a target is.
#[derive(Clone, Debug)]
pub enum Rule {
    Files(FilesRule),
    PythonApp(PythonAppRule),
    Deb(Box<DebRule>),
}

impl Rule {
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Files(_) => "files",
            Rule::PythonApp(_) => "python_app",
            Rule::Deb(_) => "deb",
        }
    }
}

/// A declared target, its dependencies resolved to labels.
#[derive(Clone, Debug)]
pub struct Target {
    pub label: Label,
    pub rule: Rule,
    /// Where the target's `name` is written.
    pub location: Location,
    pub deps: Vec<(Label, Location)>,
}

/// One BUILD.toml: the targets of one package directory.
#[derive(Clone, Debug)]
pub struct Package {
    /// Workspace-relative path ("" for the root).
    pub path: String,
    /// The BUILD.toml's path as shown in messages (workspace-relative).
    pub file: PathBuf,
    pub dir: PathBuf,
    pub text: String,
    pub workspace: Option<WorkspaceSettings>,
    pub targets: BTreeMap<String, Target>,
}

impl Package {
    /// Location of a span of this package's BUILD.toml.
    pub fn locate(&self, span: Range<usize>) -> Location {
        Location::from_span(&self.file, &self.text, span)
    }

    /// An error at a span of this file.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { location: self.locate(span), message: message.into() }
    }

    /// Parses the BUILD.toml text of package `path`. `shown` is how the file is named in
    /// messages.
    pub fn parse(path: &str, dir: &Path, shown: &Path, text: String) -> Result<Package, ConfigError> {
        let raw: RawFile = toml::from_str(&text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ConfigError::Invalid { location: Location::from_span(shown, &text, span), message: e.message().to_string() }
        })?;
        let mut pkg = Package {
            path: path.to_string(),
            file: shown.to_path_buf(),
            dir: dir.to_path_buf(),
            text,
            workspace: raw.workspace,
            targets: BTreeMap::new(),
        };
        if let Some(ws) = &pkg.workspace {
            if !PLATFORMS.iter().any(|p| p.0 == ws.platform.get_ref()) {
                let known: Vec<_> = PLATFORMS.iter().map(|p| p.0).collect();
                return Err(pkg.error(ws.platform.span(), format!("unknown platform; known: {}", known.join(", "))));
            }
            let py = ws.python.get_ref();
            if py.split('.').count() != 2
                || !py.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(pkg.error(ws.python.span(), "python must be `major.minor`, e.g. \"3.11\""));
            }
        }
        let mut declared: Vec<(Spanned<String>, Vec<Spanned<String>>, Rule)> = Vec::new();
        for r in raw.files {
            let r = r.into_inner();
            declared.push((r.name.clone(), Vec::new(), Rule::Files(r)));
        }
        for r in raw.python_app {
            let r = r.into_inner();
            declared.push((r.name.clone(), Vec::new(), Rule::PythonApp(r)));
        }
        for r in raw.deb {
            let r = r.into_inner();
            declared.push((r.name.clone(), r.deps.clone(), Rule::Deb(Box::new(r))));
        }
        for (name, deps, rule) in declared {
            if !valid_name(name.get_ref()) {
                return Err(pkg.error(name.span(), "target names use letters, digits, `_`, `-` and `.`"));
            }
            if let Some(prev) = pkg.targets.get(name.get_ref()) {
                return Err(pkg.error(
                    name.span(),
                    format!("target `{}` is declared twice (first at line {})", name.get_ref(), prev.location.line),
                ));
            }
            let mut resolved = Vec::new();
            for d in deps {
                let label = Label::parse(d.get_ref(), Some(path)).map_err(|e| pkg.error(d.span(), e.to_string()))?;
                resolved.push((label, pkg.locate(d.span())));
            }
            let label = Label { package: path.to_string(), name: name.get_ref().clone() };
            let target = Target { label, rule, location: pkg.locate(name.span()), deps: resolved };
            pkg.targets.insert(name.into_inner(), target);
        }
        for t in pkg.targets.values() {
            validate(&pkg, &t.rule)?;
        }
        Ok(pkg)
    }

    /// Reads `<workspace>/<path>/BUILD.toml`.
    pub fn load(workspace_root: &Path, path: &str) -> Result<Package, ConfigError> {
        let dir = if path.is_empty() { workspace_root.to_path_buf() } else { workspace_root.join(path) };
        let file = dir.join(BUILD_FILE);
        let shown = if path.is_empty() { PathBuf::from(BUILD_FILE) } else { Path::new(path).join(BUILD_FILE) };
        let text = hb_fs::read_to_string(&file).map_err(|e| {
            if e.is_not_found() {
                ConfigError::NoPackage { package: path.to_string(), file: shown.clone(), suggestions: Vec::new() }
            } else {
                ConfigError::Io(e)
            }
        })?;
        Package::parse(path, &dir, &shown, text)
    }
}

fn validate(pkg: &Package, rule: &Rule) -> Result<(), ConfigError> {
    match rule {
        Rule::Files(f) => {
            if !f.dest.get_ref().starts_with('/') {
                return Err(pkg.error(
                    f.dest.span(),
                    "`dest` must be an absolute path on the target system, like \"/etc/myapp\"",
                ));
            }
            check_globs(pkg, &f.srcs)?;
        }
        Rule::PythonApp(p) => {
            let m = p.module.get_ref();
            let ok = m.split_once(':').is_some_and(|(module, attr)| {
                !module.is_empty() && !attr.is_empty() && module.split('.').all(is_identifier) && is_identifier(attr)
            });
            if !ok {
                return Err(
                    pkg.error(p.module.span(), "`module` must be `package.module:attribute`, e.g. \"myapp:app\"")
                );
            }
            if let Some(prefix) = &p.prefix
                && !(prefix.get_ref().starts_with('/') && hb_store_clean(prefix.get_ref()))
            {
                return Err(pkg.error(prefix.span(), "`prefix` must be a clean absolute path, like \"/usr/lib/myapp\""));
            }
            if let Some(lock) = &p.lock
                && (lock.get_ref().starts_with('/') || lock.get_ref().split('/').any(|c| c == ".." || c.is_empty()))
            {
                return Err(pkg.error(lock.span(), "`lock` is a file name relative to the package directory"));
            }
            check_globs(pkg, &p.srcs)?;
        }
        Rule::Deb(d) => {
            if let Some(name) = &d.package
                && !valid_debian_package_name(name.get_ref())
            {
                return Err(pkg.error(
                    name.span(),
                    "Debian package names are lowercase letters, digits, `+`, `-` and `.`, start with a letter or digit, and are at least 2 characters long",
                ));
            }
            if let Err(why) = check_debian_version(d.version.get_ref()) {
                return Err(pkg.error(d.version.span(), format!("invalid Debian version: {why}")));
            }
            if d.description.get_ref().lines().next().is_none_or(|l| l.trim().is_empty()) {
                return Err(
                    pkg.error(d.description.span(), "the description's first line (the synopsis) must not be empty")
                );
            }
            if d.maintainer.get_ref().trim().is_empty() || d.maintainer.get_ref().contains('\n') {
                return Err(pkg.error(
                    d.maintainer.span(),
                    "`maintainer` must be one line, like \"Jane Doe <jane@example.org>\"",
                ));
            }
            if let Some(svc) = &d.service {
                validate_service(pkg, svc)?;
            }
            for file in
                d.templates.values().chain(d.copyright.iter()).chain(d.service.iter().filter_map(|s| s.config.as_ref()))
            {
                let f = file.get_ref();
                if f.starts_with('/') || f.split('/').any(|c| c == ".." || c.is_empty()) {
                    return Err(pkg.error(file.span(), "files are named relative to the package directory"));
                }
            }
            for dep in &d.depends {
                if dep.get_ref().trim().is_empty() || dep.get_ref().contains('\n') || dep.get_ref().contains(',') {
                    return Err(pkg.error(
                        dep.span(),
                        "each `depends` entry is one relation, like \"curl (>= 7.88)\" (alternatives with `|`)",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// `/a/b` with no empty, `.` or `..` components.
fn hb_store_clean(path: &str) -> bool {
    let rest = path.trim_start_matches('/').trim_end_matches('/');
    !rest.is_empty() && rest.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn validate_service(pkg: &Package, s: &ServiceSettings) -> Result<(), ConfigError> {
    if s.bind.get_ref().parse::<std::net::IpAddr>().is_err() {
        return Err(pkg.error(s.bind.span(), "`bind` must be an IP address, like \"127.0.0.1\" or \"::1\""));
    }
    if *s.port.get_ref() == 0 {
        return Err(pkg.error(s.port.span(), "`port` must be between 1 and 65535"));
    }
    if !(1..=1024).contains(s.workers.get_ref()) {
        return Err(pkg.error(s.workers.span(), "`workers` must be between 1 and 1024"));
    }
    if let Some(user) = &s.user
        && !valid_system_user(user.get_ref())
    {
        return Err(pkg.error(
            user.span(),
            "adduser refuses this system user name: use lowercase letters, digits, `_` and `-`, starting with a letter or `_`, at most 32 characters",
        ));
    }
    for (key, value) in &s.environment {
        let ok_key = key.bytes().next().is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !ok_key {
            return Err(pkg.error(
                value.span(),
                format!("environment variable `{key}`: names are uppercase letters, digits and `_`"),
            ));
        }
        if value.get_ref().chars().any(|c| matches!(c, '"' | '\\' | '$' | '`' | '\n' | '\r')) {
            return Err(pkg.error(
                value.span(),
                format!("environment variable `{key}`: the value may not contain quotes, backslashes, `$`, backticks or newlines (it is read by sh and by systemd)"),
            ));
        }
    }
    Ok(())
}

fn check_globs(pkg: &Package, globs: &[Spanned<String>]) -> Result<(), ConfigError> {
    for g in globs {
        let s = g.get_ref();
        if s.starts_with('/') || s.split('/').any(|c| c == "..") {
            return Err(pkg.error(g.span(), "source patterns are relative to the package directory and stay inside it"));
        }
    }
    Ok(())
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic()) && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Debian policy 5.6.1.
pub fn valid_debian_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'))
}

/// Debian policy 5.6.12: `[epoch:]upstream[-revision]`.
pub fn check_debian_version(v: &str) -> Result<(), &'static str> {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, v),
    };
    if let Some(e) = epoch
        && (e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("the epoch before `:` must be a number");
    }
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, Some(r)),
        None => (rest, None),
    };
    if !upstream.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        return Err("the upstream version must start with a digit");
    }
    let ok_up = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~' | b'-' | b':');
    if !upstream.bytes().all(ok_up) {
        return Err("the upstream version may only contain letters, digits and `.+~-:`");
    }
    if let Some(r) = revision
        && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'~')))
    {
        return Err("the Debian revision after the last `-` may only contain letters, digits and `.+~`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Package, ConfigError> {
        Package::parse("app", Path::new("/ws/app"), Path::new("app/BUILD.toml"), text.to_string())
    }

    #[test]
    fn unknown_key_points_at_it() {
        let err = parse("[[files]]\nname = \"c\"\nsrcz = [\"x\"]\n").unwrap_err().to_string();
        assert!(err.contains("app/BUILD.toml:3:1"), "{err}");
        assert!(err.contains("srcz"), "{err}");
    }

    #[test]
    fn bad_version_and_relative_dest() {
        let err = parse("[[files]]\nname = \"c\"\nsrcs = []\ndest = \"etc\"\n").unwrap_err().to_string();
        assert!(err.contains("app/BUILD.toml:4:8"), "{err}");
        let err = parse("[[deb]]\nname = \"d\"\nversion = \"x1\"\nmaintainer = \"m <m@x>\"\ndescription = \"d\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3:11") && err.contains("start with a digit"), "{err}");
    }

    #[test]
    fn targets_and_deps() {
        let p = parse(
            "[[files]]\nname = \"c\"\nsrcs = [\"a\"]\ndest = \"/etc/a\"\n[[deb]]\nname = \"d\"\nversion = \"1.0-1\"\nmaintainer = \"m <m@x>\"\ndescription = \"d\"\ndeps = [\":c\", \"//other:x\"]\n",
        )
        .unwrap();
        let d = &p.targets["d"];
        assert_eq!(d.deps.iter().map(|(l, _)| l.to_string()).collect::<Vec<_>>(), ["//app:c", "//other:x"]);
        assert_eq!(d.location.line, 6);
    }

    #[test]
    fn versions() {
        for ok in ["0.1.0", "1:2.0-1", "1.0~rc1+dfsg-2.1"] {
            assert!(check_debian_version(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a1", "1.0-", "x:1", "1 0"] {
            assert!(check_debian_version(bad).is_err(), "{bad}");
        }
    }
}
