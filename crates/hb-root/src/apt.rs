//! A private apt for one platform: the mirrors come from this machine's own sources
//! (`/etc/apt/sources.list` and `sources.list.d/*.list|*.sources`), with the host's
//! release swapped for the platform's suite (only the release itself: see
//! [`retarget`]) and the platform's architecture; the network settings
//! (`Acquire::*`: proxies, retries) come from the host's apt configuration; the state
//! (lists, an empty dpkg status, downloads) lives in a directory of hb's. Nothing of
//! this is written into a workspace: a lock keeps names, versions and hashes only.
//! apt itself resolves dependencies and checks the archive signatures.

use std::path::{Path, PathBuf};
use std::process::Command;

use hb_platform::Platform;

use crate::RootError;
use crate::lock::RootPackage;

/// One `deb` source of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// `Signed-By` (a keyring path), when given.
    pub signed_by: Option<String>,
}

/// Parses one-line style (`deb [opts] URI SUITE COMPONENT...`) sources.
pub fn parse_list(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ").or_else(|| line.strip_prefix("deb\t")) else { continue };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(opts) = rest.strip_prefix('[') {
            let Some((opts, after)) = opts.split_once(']') else { continue };
            for o in opts.split_whitespace() {
                if let Some(v) = o.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
            }
            rest = after.trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else { continue };
        out.push(Source {
            uri: uri.to_string(),
            suite: suite.to_string(),
            components: words.map(str::to_string).collect(),
            signed_by,
        });
    }
    out
}

/// Parses deb822 style (`Types:`, `URIs:`, `Suites:`, `Components:`) sources.
pub fn parse_sources(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(last) = fields.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if !get("types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb")) {
            continue;
        }
        if get("enabled").is_some_and(|e| e.eq_ignore_ascii_case("no")) {
            continue;
        }
        let components: Vec<String> = get("components").unwrap_or("").split_whitespace().map(str::to_string).collect();
        let signed_by = get("signed-by").filter(|s| s.starts_with('/') && !s.contains(' ')).map(str::to_string);
        for uri in get("uris").unwrap_or("").split_whitespace() {
            for suite in get("suites").unwrap_or("").split_whitespace() {
                out.push(Source {
                    uri: uri.to_string(),
                    suite: suite.to_string(),
                    components: components.clone(),
                    signed_by: signed_by.clone(),
                });
            }
        }
    }
    out
}

/// Debian's release codenames, to recognise the host's in a suite name.
const CODENAMES: &[&str] = &["buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"];

/// The host's sources of Debian's archive, re-pointed at `suite`: a source whose
/// suite is a release codename becomes `suite`. The `-security`, `-updates` and
/// `-backports` pockets are left out: a root runs offline in a sandbox, and their
/// packages are replaced within weeks (and vanish from the mirror), while the
/// release's own stay until its next point release. Third-party repositories are
/// dropped too.
pub fn retarget(sources: &[Source], suite: &str) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    for s in sources {
        if !CODENAMES.contains(&s.suite.as_str()) {
            continue;
        }
        let new = Source { suite: suite.to_string(), ..s.clone() };
        if !out.contains(&new) {
            out.push(new);
        }
    }
    out
}

/// The host's apt sources (`Dir::Etc` is `/etc/apt` unless `etc` says otherwise).
pub fn host_sources(etc: &Path) -> Result<Vec<Source>, RootError> {
    let mut out = Vec::new();
    let list = etc.join("sources.list");
    if list.is_file() {
        out.extend(parse_list(&hb_fs::read_to_string(&list)?));
    }
    let parts = etc.join("sources.list.d");
    if parts.is_dir() {
        for e in hb_fs::read_dir_sorted(&parts)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".list") {
                out.extend(parse_list(&hb_fs::read_to_string(&e.path())?));
            } else if name.ends_with(".sources") {
                out.extend(parse_sources(&hb_fs::read_to_string(&e.path())?));
            }
        }
    }
    Ok(out)
}

/// A private apt for one platform, with its state in `dir`.
pub struct Apt {
    pub dir: PathBuf,
    base: PathBuf,
    pub platform: &'static Platform,
}

impl Apt {
    /// The private apt of `platform` under `base` (one subdirectory per platform).
    pub fn new(base: &Path, platform: &'static Platform) -> Apt {
        Apt { dir: base.join(platform.name), base: base.to_path_buf(), platform }
    }

    /// Where downloaded packages are kept, for every platform (`base/debs`; each is
    /// verified again whenever used, so a directory of `.deb` files from anywhere may
    /// be put there).
    pub fn debs(&self) -> PathBuf {
        self.base.join("debs")
    }

    /// Writes the configuration (sources from the host's, retargeted) and holds the
    /// directory's lock while `f` runs.
    fn with_config<T>(&self, f: impl FnOnce() -> Result<T, RootError>) -> Result<T, RootError> {
        for d in ["lists/partial", "cache/archives/partial", "parts.d"] {
            hb_fs::create_dir_all(&self.dir.join(d))?;
        }
        hb_fs::create_dir_all(&self.debs())?;
        let lock_path = self.dir.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| hb_fs::FsError::new("opening", &lock_path, e))?;
        lock.lock().map_err(|e| hb_fs::FsError::new("locking", &lock_path, e))?;
        let sources = retarget(&host_sources(Path::new("/etc/apt"))?, self.platform.suite);
        if sources.is_empty() {
            return Err(RootError::NoSources { platform: self.platform.name.to_string() });
        }
        let mut list = String::new();
        for s in &sources {
            let opts = match &s.signed_by {
                Some(k) => format!("[arch={} signed-by={k}] ", self.platform.architecture),
                None => format!("[arch={}] ", self.platform.architecture),
            };
            list.push_str(&format!("deb {opts}{} {} {}\n", s.uri, s.suite, s.components.join(" ")));
        }
        hb_fs::write_atomic(&self.dir.join("sources.list"), list.as_bytes(), None)?;
        hb_fs::write_atomic(&self.dir.join("status"), b"", None)?;
        let mut conf =
            format!("Dir::Etc::Parts \"{0}/parts.d\";\nDir::Etc::Main \"{0}/none.conf\";\n", self.dir.display());
        conf.push_str(&host_network_settings());
        hb_fs::write_atomic(&self.dir.join("apt.conf"), conf.as_bytes(), None)?;
        let out = f();
        drop(lock);
        out
    }

    fn apt_get(&self) -> Command {
        self.apt("apt-get")
    }

    fn apt(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut c = hb_fs::env::command(program);
        c.env("APT_CONFIG", self.dir.join("apt.conf"))
            .env("LC_ALL", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive");
        for o in [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/parts.d"),
            format!("Dir::Etc::Preferences={d}/none.pref"),
            format!("Dir::Etc::PreferencesParts={d}/parts.d"),
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            format!("APT::Architecture={}", self.platform.architecture),
            format!("APT::Architectures={}", self.platform.architecture),
            "APT::Install-Recommends=false".into(),
            "APT::Sandbox::User=root".into(),
            "Debug::NoLocking=true".into(),
            "Acquire::Languages=none".into(),
        ] {
            c.arg("-o").arg(o);
        }
        c
    }

    fn run(&self, mut cmd: Command, what: &str) -> Result<String, RootError> {
        let out = cmd.output().map_err(|e| RootError::Apt {
            platform: self.platform.name.to_string(),
            what: what.to_string(),
            detail: format!("could not run apt-get ({e}); hb needs Debian's apt to fetch root packages"),
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() || stderr.lines().any(|l| l.starts_with("E:") || l.starts_with("W:")) {
            return Err(RootError::Apt {
                platform: self.platform.name.to_string(),
                what: what.to_string(),
                detail: stderr.trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `apt-get update` of the private lists.
    pub fn update(&self) -> Result<(), RootError> {
        self.with_config(|| self.update_locked())
    }

    fn update_locked(&self) -> Result<(), RootError> {
        // One failed update per directory and process is enough: without a network
        // every root package would otherwise wait for its own (each takes seconds).
        static FAILED: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
        let failed = |dir: &Path| {
            FAILED.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(d, _)| d == dir).map(|(_, e)| e.clone())
        };
        if let Some(detail) = failed(&self.dir) {
            return Err(RootError::Apt {
                platform: self.platform.name.to_string(),
                what: "updating the package lists (already failed in this build)".into(),
                detail,
            });
        }
        let mut c = self.apt_get();
        c.args(["-q", "update"]);
        let out = self.run(c, "updating the package lists").map(|_| ());
        if let Err(RootError::Apt { detail, .. }) = &out {
            FAILED.lock().unwrap_or_else(|p| p.into_inner()).push((self.dir.clone(), detail.clone()));
        }
        out
    }

    fn has_lists(&self) -> bool {
        hb_fs::read_dir_sorted(&self.dir.join("lists"))
            .map(|v| v.iter().any(|e| e.file_name().to_string_lossy().contains("_Packages")))
            .unwrap_or(false)
    }

    /// Resolves `packages` and everything they depend on, as apt would install them
    /// into an empty system (after updating the lists).
    pub fn resolve(&self, packages: &[&str]) -> Result<Vec<RootPackage>, RootError> {
        self.with_config(|| {
            self.update_locked()?;
            let mut c = self.apt_get();
            c.args(["-qq", "-y", "--print-uris", "install", "--"]).args(packages);
            let out = self.run(c, &format!("resolving {}", packages.join(" ")))?;
            let mut found = Vec::new();
            for line in out.lines().filter(|l| l.starts_with('\'')) {
                found.push(parse_uri_line(line).ok_or_else(|| RootError::Apt {
                    platform: self.platform.name.to_string(),
                    what: "resolving".into(),
                    detail: format!("unexpected apt output: {line}"),
                })?);
            }
            // --print-uris gives the weakest hash; the index has the sha256.
            let mut c = self.apt("apt-cache");
            c.arg("show").arg("--");
            c.args(found.iter().map(|p| format!("{}:{}={}", p.name, p.architecture, p.version)));
            let index = self.run(c, "reading the package index")?;
            for p in &mut found {
                p.sha256 = index_sha256(&index, p).ok_or_else(|| RootError::Apt {
                    platform: self.platform.name.to_string(),
                    what: "resolving".into(),
                    detail: format!("the package index has no SHA256 for {} {}", p.name, p.version),
                })?;
            }
            found.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(found)
        })
    }

    /// Downloads `p` into `dest` (a directory) through apt; returns the file's path.
    /// `Ok(None)` when the mirror no longer has that version. The other packages of
    /// `batch` missing from [`Apt::debs`] come along in the same apt run (apt fetches
    /// in parallel; one process instead of one per package) and are kept there when
    /// their sha256 matches; the caller verifies `p` itself.
    pub fn download(&self, p: &RootPackage, batch: &[RootPackage], dest: &Path) -> Result<Option<PathBuf>, RootError> {
        self.with_config(|| {
            // Another build may have fetched it while this one waited for the lock.
            let kept = self.debs().join(&p.file);
            if kept.is_file() && crate::sha256_file(&kept)? == p.sha256 {
                let copy = dest.join(&p.file);
                std::fs::copy(&kept, &copy).map_err(|e| hb_fs::FsError::new("copying", &kept, e))?;
                return Ok(Some(copy));
            }
            if !self.has_lists() {
                self.update_locked()?;
            }
            let missing: Vec<&RootPackage> =
                batch.iter().filter(|b| b.name != p.name && !self.debs().join(&b.file).is_file()).collect();
            if !missing.is_empty() {
                let mut c = self.apt_get();
                c.current_dir(dest).args(["-qq", "download", "--"]).arg(spec(p));
                c.args(missing.iter().map(|b| spec(b)));
                if self.run(c, "downloading root packages").is_ok() {
                    for b in &missing {
                        let got = dest.join(&b.file);
                        if got.is_file() && crate::sha256_file(&got)? == b.sha256 {
                            let keep = self.debs().join(&b.file);
                            std::fs::rename(&got, &keep).map_err(|e| hb_fs::FsError::new("keeping", &keep, e))?;
                        }
                    }
                    if let Some(path) = written(dest, p)? {
                        return Ok(Some(path));
                    }
                }
            }
            // Alone (the batch failed, perhaps for another package's version).
            for attempt in 0..2 {
                if attempt == 1 {
                    self.update_locked()?;
                }
                let mut c = self.apt_get();
                c.current_dir(dest).args(["-qq", "download", "--"]).arg(spec(p));
                match self.run(c, &format!("downloading {} {}", p.name, p.version)) {
                    Ok(_) => return written(dest, p),
                    Err(RootError::Apt { detail, .. })
                        if detail.contains("not found")
                            || detail.contains("Can't find a source")
                            || detail.contains("Unable to locate") =>
                    {
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(None)
        })
    }
}

/// `name:arch=version`, as apt-get takes a package.
fn spec(p: &RootPackage) -> String {
    format!("{}:{}={}", p.name, p.architecture, p.version)
}

/// The file apt wrote for `p` in `dest` (apt names it; normally `p.file`).
fn written(dest: &Path, p: &RootPackage) -> Result<Option<PathBuf>, RootError> {
    let path = dest.join(&p.file);
    if path.is_file() {
        return Ok(Some(path));
    }
    let prefix = format!("{}_", p.name);
    Ok(hb_fs::read_dir_sorted(dest)?.into_iter().map(|e| e.path()).find(|x| {
        x.extension().is_some_and(|e| e == "deb")
            && x.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
    }))
}

/// The host apt configuration's network settings (`Acquire::http::Proxy` and the
/// like), as apt.conf lines; index targets (appstream, translations) are left out.
fn host_network_settings() -> String {
    let Ok(out) = hb_fs::env::command("apt-config").arg("dump").output() else { return String::new() };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Acquire::") && !l.starts_with("Acquire::IndexTargets") && !l.contains("Languages"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The `SHA256` of `p` in `apt-cache show` stanzas.
fn index_sha256(index: &str, p: &RootPackage) -> Option<String> {
    for stanza in index.split("\n\n") {
        let field = |k: &str| stanza.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix(':').map(str::trim));
        if field("Package") == Some(p.name.as_str())
            && field("Version") == Some(p.version.as_str())
            && field("Architecture").is_some_and(|a| a == p.architecture || a == "all")
            && field("Size").and_then(|s| s.parse::<u64>().ok()) == Some(p.size)
        {
            return field("SHA256").filter(|h| h.len() == 64).map(str::to_string);
        }
    }
    None
}

/// `'URI' FILE SIZE HASH` from `apt-get --print-uris` (the hash, often MD5, is not
/// kept: the sha256 comes from the index).
fn parse_uri_line(line: &str) -> Option<RootPackage> {
    let mut words = line.split_whitespace();
    let _uri = words.next()?;
    let file = words.next()?.to_string();
    let size: u64 = words.next()?.parse().ok()?;
    let sha256 = String::new();
    let stem = file.strip_suffix(".deb")?;
    let mut parts = stem.split('_');
    let name = parts.next()?.to_string();
    let version = parts.next()?.replace("%3a", ":").replace("%3A", ":");
    let architecture = parts.next()?.to_string();
    if parts.next().is_some() {
        return None;
    }
    Some(RootPackage { name, version, architecture, file, size, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_source_formats() {
        let one = parse_list(
            "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://m.invalid/debian bookworm main contrib\ndeb-src http://m.invalid/debian bookworm main\n",
        );
        assert_eq!(
            one,
            [Source {
                uri: "http://m.invalid/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into(), "contrib".into()],
                signed_by: Some("/k.gpg".into())
            }]
        );
        let two = parse_sources(
            "Types: deb\n# note\nURIs: http://m.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb-src\nURIs: http://m.invalid/debian\nSuites: bookworm\nComponents: main\n\nTypes: deb\nURIs: http://x.invalid/node\nSuites: nodistro\nComponents: main\n",
        );
        assert_eq!(two.len(), 3);
        let re = retarget(&two, "trixie");
        let suites: Vec<&str> = re.iter().map(|s| s.suite.as_str()).collect();
        assert_eq!(suites, ["trixie"], "pockets and the third-party source are left out");
    }

    #[test]
    fn print_uris_lines() {
        let p = parse_uri_line("'http://m.invalid/pool/main/s/shadow/passwd_1%3a4.13+dfsg1-1_amd64.deb' passwd_1%3a4.13+dfsg1-1_amd64.deb 972580 SHA256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.architecture.as_str()),
            ("passwd", "1:4.13+dfsg1-1", "amd64")
        );
        assert_eq!(p.size, 972580);
        assert!(parse_uri_line("'u' f_1_amd64.deb twelve").is_none());
        assert!(parse_uri_line("'u' f_1_amd64.deb 12").is_some(), "the hash may be missing");
        let index = "Package: passwd\nVersion: 1:4.13+dfsg1-1\nArchitecture: amd64\nSize: 972580\nSHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
        assert_eq!(
            index_sha256(index, &p).as_deref(),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
    }

    mod hostile {
        //! apt sources and apt's output are read from files and processes this
        //! machine's owner controls: any text parses to something or nothing, never a
        //! panic.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_sources_text(text in "\\PC*") {
                let all: Vec<Source> = parse_list(&text).into_iter().chain(parse_sources(&text)).collect();
                let _ = retarget(&all, "trixie");
            }

            #[test]
            fn any_apt_line(line in "'\\PC*") {
                if let Some(p) = parse_uri_line(&line) {
                    let _ = index_sha256(&line, &p);
                }
            }
        }
    }
}
