//! BUILD.toml files and their loading: `[workspace]` settings in the root file, and
//! targets declared as arrays of tables named after their rule (`[[files]]`,
//! `[[python_app]]`, `[[deb]]`), each read by the rule's registered
//! [`Schema`](crate::schema::Schema). Unknown keys and rule kinds are errors; every
//! error points at the file, line and column at fault. Also the Debian and Python
//! naming rules that rules' schemas check with.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::ConfigError;
use crate::label::{Label, valid_name};
use crate::location::Location;
use crate::schema::{Attrs, Document, Schemas, TomlError};

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
    /// The default target platform, a row of `hb_platform::PLATFORMS` (when unset: the
    /// first of `platforms`, else bookworm-amd64).
    #[serde(default = "default_platform")]
    pub platform: Spanned<String>,
    /// Every platform the workspace builds (`hb build --platform all`); locks cover
    /// each. Default: only `platform`.
    #[serde(default)]
    pub platforms: Vec<Spanned<String>>,
    /// Target interpreter version (`major.minor`) of the default platform; when given,
    /// it must be that platform's (the platform decides it).
    pub python: Option<Spanned<String>>,
    /// Default compression of debs.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// The one timestamp of every packaged file, unless a target sets its own.
    pub source_date_epoch: Option<Spanned<u64>>,
    /// Local directories of wheels searched before the package index (relative to the
    /// workspace root), in addition to `PIP_FIND_LINKS`.
    #[serde(default)]
    pub wheelhouse: Vec<String>,
    /// The team's remote cache (HB_REMOTE_CACHE and --remote-cache override it).
    pub remote_cache: Option<String>,
    /// The Remote Execution service that runs sandboxed commands
    /// (HB_REMOTE_EXECUTOR and --remote-executor override it).
    pub remote_executor: Option<String>,
    /// A file holding the upload token (HB_REMOTE_TOKEN / HB_REMOTE_TOKEN_FILE override it).
    pub remote_token_file: Option<String>,
    /// The key signing uploaded action entries (HB_REMOTE_SIGNING_KEY_FILE overrides it).
    pub remote_signing_key_file: Option<String>,
    /// Public keys (hex) whose action entries, and provenance, are trusted.
    #[serde(default)]
    pub remote_trusted_keys: Vec<Spanned<String>>,
    /// The ed25519 key signing each deb's provenance (HB_PROVENANCE_SIGNING_KEY_FILE
    /// overrides it); default: the remote cache's signing key. Without one, no
    /// provenance is written.
    pub provenance_signing_key_file: Option<String>,
    /// The armored OpenPGP secret key signing `apt_repo` targets
    /// (HB_APT_SIGNING_KEY_FILE overrides it).
    pub apt_signing_key_file: Option<String>,
    /// The most bytes one wheel may inflate to (default 1 GiB).
    pub max_wheel_unpacked: Option<u64>,
    /// The largest inflated/compressed ratio of a wheel member over 16 MiB (default 200).
    pub max_compression_ratio: Option<u64>,
    /// Seconds a PEP 517 build or an sdist compile may run before it is stopped
    /// (default 3600; a build step has its own `timeout`).
    pub action_timeout: Option<u64>,
    /// Processes (and threads) one sandboxed command may have at once (default 4096).
    pub action_max_processes: Option<u64>,
    /// MiB of memory one sandboxed command may use, its /tmp included (default 8192).
    pub action_max_memory_mib: Option<u64>,
    /// MiB one sandboxed command may write: its largest file, all of its outputs
    /// together, and its /tmp (default 4096).
    pub action_max_output_mib: Option<u64>,
}

fn default_platform() -> Spanned<String> {
    Spanned::new(0..0, hb_platform::DEFAULT.name.into())
}
fn default_compression() -> Compression {
    Compression::Xz
}

/// Timestamp used when neither target nor workspace sets one: 2000-01-01T00:00:00Z.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 946_684_800;

/// The range a package's one timestamp may take: zip (wheels) starts at 1980, and a tar
/// header holds 11 octal digits.
pub const SOURCE_DATE_EPOCH_RANGE: std::ops::RangeInclusive<u64> = 315_532_800..=8_589_934_591;

/// Checks a `source_date_epoch` setting.
pub fn check_source_date_epoch(pkg: &Package, t: &Spanned<u64>) -> Result<(), ConfigError> {
    let r = SOURCE_DATE_EPOCH_RANGE;
    if !r.contains(t.get_ref()) {
        return Err(pkg.error(
            t.span(),
            format!(
                "source_date_epoch must be between {} (1980-01-01, the oldest time a zip holds) and {} (the latest a tar header holds)",
                r.start(),
                r.end()
            ),
        ));
    }
    Ok(())
}

impl WorkspaceSettings {
    /// The one timestamp of packaged files, unless a target sets its own.
    pub fn source_date_epoch(&self) -> u64 {
        self.source_date_epoch.as_ref().map_or(DEFAULT_SOURCE_DATE_EPOCH, |t| *t.get_ref())
    }
}

/// A declared target, its dependencies resolved to labels.
#[derive(Clone, Debug)]
pub struct Target {
    pub label: Label,
    /// The rule's attributes; [`Attrs::kind`] says which rule.
    pub rule: Arc<dyn Attrs>,
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

    /// A TOML error of this file, at its span.
    pub fn toml_error(&self, e: &TomlError) -> ConfigError {
        self.error(e.span.clone().unwrap_or(0..0), e.message.clone())
    }

    /// Parses the BUILD.toml text of package `path` with the rule kinds of `schemas`.
    /// `shown` is how the file is named in messages.
    pub fn parse(
        path: &str,
        dir: &Path,
        shown: &Path,
        text: String,
        schemas: &Schemas,
    ) -> Result<Package, ConfigError> {
        let mut pkg = Package {
            path: path.to_string(),
            file: shown.to_path_buf(),
            dir: dir.to_path_buf(),
            text,
            workspace: None,
            targets: BTreeMap::new(),
        };
        // Parsed once; every rule kind's tables are read from this tree.
        let doc = Document::parse(&pkg.text).map_err(|e| pkg.toml_error(&e))?;
        let keys = doc.top_level_keys();
        for key in &keys {
            if key.get_ref() != "workspace" && !schemas.iter().any(|s| s.kind() == key.get_ref()) {
                let known: Vec<String> = schemas.iter().map(|s| s.kind().to_string()).collect();
                let close = crate::close_matches(key.get_ref(), known.clone());
                let hint = match close.first() {
                    Some(c) => format!("did you mean `[[{c}]]`?"),
                    None => format!("rules: {}", known.join(", ")),
                };
                return Err(pkg.error(key.span(), format!("unknown rule `{}`; {hint}", key.get_ref())));
            }
        }
        let has = |kind: &str| keys.iter().any(|k| k.get_ref() == kind);
        if has("workspace") {
            pkg.workspace = doc.table::<WorkspaceSettings>("workspace").map_err(|e| pkg.toml_error(&e))?;
        }
        if let Some(ws) = &pkg.workspace {
            check_workspace(&pkg, ws)?;
        }
        let mut declared = Vec::new();
        for schema in schemas.iter().filter(|s| has(s.kind())) {
            declared.extend(schema.parse(&pkg, &doc)?);
        }
        // In the order they are written, so a duplicate is reported at the second one.
        declared.sort_by_key(|d| d.name.span().start);
        for d in declared {
            pkg.declare(d)?;
        }
        Ok(pkg)
    }

    fn declare(&mut self, d: crate::schema::Declared) -> Result<(), ConfigError> {
        let name = d.name;
        if !valid_name(name.get_ref()) {
            return Err(self.error(name.span(), "target names use letters, digits, `_`, `-` and `.`"));
        }
        if let Some(prev) = self.targets.get(name.get_ref()) {
            return Err(self.error(
                name.span(),
                format!("target `{}` is declared twice (first at line {})", name.get_ref(), prev.location.line),
            ));
        }
        let mut resolved = Vec::new();
        for dep in d.deps {
            let label =
                Label::parse(dep.get_ref(), Some(&self.path)).map_err(|e| self.error(dep.span(), e.to_string()))?;
            resolved.push((label, self.locate(dep.span())));
        }
        let label = Label { package: self.path.clone(), name: name.get_ref().clone() };
        let target = Target { label, rule: d.attrs, location: self.locate(name.span()), deps: resolved };
        self.targets.insert(name.into_inner(), target);
        Ok(())
    }

    /// Reads `<workspace>/<path>/BUILD.toml`.
    pub fn load(workspace_root: &Path, path: &str, schemas: &Schemas) -> Result<Package, ConfigError> {
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
        Package::parse(path, &dir, &shown, text, schemas)
    }
}

fn check_workspace(pkg: &Package, ws: &WorkspaceSettings) -> Result<(), ConfigError> {
    if let Some(t) = &ws.source_date_epoch {
        check_source_date_epoch(pkg, t)?;
    }
    let known = |name: &Spanned<String>| {
        hb_platform::lookup(name.get_ref()).ok_or_else(|| {
            pkg.error(
                name.span(),
                format!("unknown platform `{}`; known: {}", name.get_ref(), hb_platform::names().join(", ")),
            )
        })
    };
    let mut seen = std::collections::BTreeSet::new();
    for p in &ws.platforms {
        known(p)?;
        if !seen.insert(p.get_ref().as_str()) {
            return Err(pkg.error(p.span(), format!("platform `{}` is listed twice", p.get_ref())));
        }
    }
    let default = match ws.platforms.first() {
        Some(first) if ws.platform.span() == (0..0) => first,
        _ => &ws.platform,
    };
    let platform = known(default)?;
    if !ws.platforms.is_empty() && !seen.contains(platform.name) {
        return Err(pkg.error(
            ws.platform.span(),
            format!("the default platform `{}` is not in `platforms`: add it there, or leave `platform` out (the first of `platforms` is the default)", platform.name),
        ));
    }
    if let Some(py) = &ws.python {
        let (major, minor) = platform.python;
        if *py.get_ref() != format!("{major}.{minor}") {
            return Err(pkg.error(
                py.span(),
                format!(
                    "{} runs Python {major}.{minor}: set `python = \"{major}.{minor}\"` or leave it out (the platform decides)",
                    platform.name
                ),
            ));
        }
    }
    Ok(())
}

/// Reads a rule's `[[kind]]` tables of `doc` (`pkg`'s text) as `A`, checking each with
/// `check`.
pub fn parse_rule<A>(
    pkg: &Package,
    doc: &Document,
    kind: &str,
    check: impl Fn(&Package, &A) -> Result<(), ConfigError>,
    declare: impl Fn(A) -> crate::schema::Declared,
) -> Result<Vec<crate::schema::Declared>, ConfigError>
where
    A: serde::de::DeserializeOwned,
{
    let mut out = Vec::new();
    for t in doc.tables::<A>(kind).map_err(|e| pkg.toml_error(&e))? {
        let attrs = t.into_inner();
        check(pkg, &attrs)?;
        out.push(declare(attrs));
    }
    Ok(out)
}

/// adduser's rule for system user names (its SYS_NAME_REGEX), at most 32 characters.
pub fn valid_system_user(name: &str) -> bool {
    name.len() <= 32
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `/a/b` with no empty, `.` or `..` components.
pub fn clean_absolute(path: &str) -> bool {
    let rest = path.trim_start_matches('/').trim_end_matches('/');
    !rest.is_empty() && rest.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Source patterns stay inside the package directory.
pub fn check_globs(pkg: &Package, globs: &[Spanned<String>]) -> Result<(), ConfigError> {
    for g in globs {
        let s = g.get_ref();
        if s.starts_with('/') || s.split('/').any(|c| c == "..") {
            return Err(pkg.error(g.span(), "source patterns are relative to the package directory and stay inside it"));
        }
    }
    Ok(())
}

/// A file named relative to the package directory, staying inside it.
pub fn check_relative_file(pkg: &Package, file: &Spanned<String>) -> Result<(), ConfigError> {
    let f = file.get_ref();
    if f.starts_with('/') || f.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(pkg.error(file.span(), "files are named relative to the package directory"));
    }
    Ok(())
}

/// A Python identifier.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic()) && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// A Python distribution name as PEP 508 allows it: ASCII letters and digits, with
/// `-`, `_` and `.` inside.
pub fn valid_python_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Debian policy 5.6.1.
pub fn valid_debian_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'))
}

/// Debian policy 7.1: one relationship of a `Depends`-like field, alternatives
/// separated by `|`, each `name[:arch] [(op version)] [[arch list]] [<profiles>]`.
pub fn check_relation(text: &str) -> Result<(), String> {
    for alt in text.split('|') {
        check_alternative(alt.trim()).map_err(|why| {
            if text.contains('|') { format!("in the alternative `{}`: {why}", alt.trim()) } else { why }
        })?;
    }
    Ok(())
}

fn check_alternative(alt: &str) -> Result<(), String> {
    if alt.is_empty() {
        return Err("an alternative is empty (two `|` in a row, or one at an end)".into());
    }
    let end = alt.find(|c: char| c.is_whitespace() || matches!(c, '(' | '[' | '<')).unwrap_or(alt.len());
    let (name, arch) = match alt[..end].split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (&alt[..end], None),
    };
    if !valid_debian_package_name(name) {
        return Err(format!(
            "`{name}` is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`; at least 2 characters)"
        ));
    }
    if let Some(a) = arch
        && !valid_arch(a)
    {
        return Err(format!("`{a}` after `:` is not an architecture qualifier (like `any` or `amd64`)"));
    }
    let mut rest = alt[end..].trim_start();
    if let Some(inner) = rest.strip_prefix('(') {
        let close = inner.find(')').ok_or("the version restriction has no closing `)`")?;
        check_version_restriction(inner[..close].trim())?;
        rest = inner[close + 1..].trim_start();
    }
    if let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']').ok_or("the architecture list has no closing `]`")?;
        let archs: Vec<&str> = inner[..close].split_whitespace().collect();
        if archs.is_empty() || !archs.iter().all(|a| valid_arch(a.strip_prefix('!').unwrap_or(a))) {
            return Err(format!("`[{}]` is not a list of architectures, like `[amd64 arm64]`", &inner[..close]));
        }
        rest = inner[close + 1..].trim_start();
    }
    while let Some(inner) = rest.strip_prefix('<') {
        let close = inner.find('>').ok_or("the build profile list has no closing `>`")?;
        let ok = |p: &str| {
            let p = p.strip_prefix('!').unwrap_or(p);
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        };
        if inner[..close].split_whitespace().next().is_none() || !inner[..close].split_whitespace().all(ok) {
            return Err(format!("`<{}>` is not a list of build profiles", &inner[..close]));
        }
        rest = inner[close + 1..].trim_start();
    }
    if !rest.is_empty() {
        return Err(format!("unexpected `{rest}` (a relation is `name (op version) [archs]`)"));
    }
    Ok(())
}

fn check_version_restriction(s: &str) -> Result<(), String> {
    let op_len = s.bytes().take_while(|b| b"<>=".contains(b)).count();
    let (op, version) = (&s[..op_len], s[op_len..].trim());
    if !matches!(op, "<<" | "<=" | "=" | ">=" | ">>") {
        return Err(format!("`({s})` needs one of the operators <<, <=, =, >=, >> before the version"));
    }
    if version.is_empty() {
        return Err(format!("`({s})` has no version after `{op}`"));
    }
    check_debian_version(version).map_err(|why| format!("`{version}` is not a Debian version: {why}"))
}

fn valid_arch(a: &str) -> bool {
    !a.is_empty() && a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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

    #[test]
    fn relations() {
        for ok in [
            "curl",
            "curl (>= 7.88)",
            "curl (>= 7.88) | wget",
            "libc6 (>> 2.36-1~) [amd64 !i386]",
            "python3:any (<< 3.12)",
            "foo <!nocheck>",
            "a.b+c (= 1:2.0-1)",
        ] {
            assert_eq!(check_relation(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("curl (>= 7.88", "no closing `)`"),
            ("curl (>= )", "no version"),
            ("curl [amd64", "no closing `]`"),
            ("curl | | wget", "empty"),
            ("cu~rl", "not a Debian package name"),
            ("curl (~ 1)", "operators"),
            ("curl (>= x1)", "not a Debian version"),
            ("curl []", "list of architectures"),
            ("curl wget", "unexpected `wget`"),
            ("curl:AMD64", "architecture qualifier"),
        ] {
            let err = check_relation(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
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

    fn parse(text: &str) -> Result<Package, ConfigError> {
        let none: Schemas = Arc::new([]);
        Package::parse("", Path::new("/ws"), Path::new("BUILD.toml"), text.to_string(), &none)
    }

    #[test]
    fn workspace_settings() {
        let err = parse("[workspace]\nplatform = \"bookworm-armhf\"\n").unwrap_err().to_string();
        assert!(err.contains("BUILD.toml:2:12") && err.contains("known: bookworm-amd64"), "{err}");
        let err = parse("[workspace]\npython = \"3.12\"\n").unwrap_err().to_string();
        assert!(err.contains("BUILD.toml:2:10") && err.contains("runs Python 3.11"), "{err}");
        assert!(parse("[workspace]\npython = \"3.11\"\n").is_ok());
        let err = parse("[workspace]\nplatforms = [\"trixie-amd64\", \"sid-amd64\"]\n").unwrap_err().to_string();
        assert!(err.contains("BUILD.toml:2:30") && err.contains("unknown platform `sid-amd64`"), "{err}");
        let err = parse("[workspace]\nplatforms = [\"trixie-amd64\", \"trixie-amd64\"]\n").unwrap_err().to_string();
        assert!(err.contains("listed twice"), "{err}");
        let err = parse("[workspace]\nplatform = \"bookworm-amd64\"\nplatforms = [\"trixie-amd64\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("BUILD.toml:2:12") && err.contains("not in `platforms`"), "{err}");
        // The first of `platforms` is the default, so `python` is checked against trixie's.
        assert!(parse("[workspace]\nplatforms = [\"trixie-arm64\", \"bookworm-amd64\"]\npython = \"3.13\"\n").is_ok());
        let err = parse("[workspace]\nplatform = 3\n").unwrap_err().to_string();
        assert!(err.contains("BUILD.toml:2:12"), "{err}");
        let err = parse("[workspace]\n[[pyhton_app]]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("BUILD.toml:2:3") && err.contains("unknown rule `pyhton_app`"), "{err}");
    }
}
