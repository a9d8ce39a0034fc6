//! The root lock (`hb-root.lock` at the workspace root): for each platform the
//! workspace builds, every Debian package of its target root by name, version,
//! architecture, file name, size and sha256 of the `.deb`. Never a URL or a mirror:
//! where packages come from is the machine's apt configuration. `inputs` digests what
//! the root was resolved from (suite, architecture, requested packages), so a lock that
//! no longer matches the platform table is caught before anything builds.

use std::path::Path;

use hb_config::Location;
use hb_platform::Platform;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use toml::Spanned;

use crate::RootError;

/// The file name, at the workspace root.
pub const ROOT_LOCK: &str = "hb-root.lock";
pub const ROOT_LOCK_VERSION: u32 = 1;

/// One `.deb` of a root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The file name apt gives the package (`name_version_arch.deb`, epoch as `%3a`).
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// The packages of one platform's root: its base root, or (with `extra`) the base root
/// plus more packages, resolved together (a compile root: the compiler and a package's
/// `build_depends`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub platform: String,
    /// The packages requested on top of the platform's, sorted; empty for the base root
    /// (and then not written: see [`RootLock::render`]).
    #[serde(default)]
    pub extra: Vec<String>,
    pub inputs: String,
    #[serde(default)]
    pub package: Vec<RootPackage>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootLock {
    pub roots: Vec<Root>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Spanned<u32>,
    #[serde(default)]
    root: Vec<Spanned<Root>>,
}

/// What a platform's base root is resolved from.
pub fn inputs_digest(p: &Platform) -> String {
    inputs_digest_with(p, &[])
}

/// What a platform's root with `extra` packages is resolved from (the base root's
/// digest when there are none).
pub fn inputs_digest_with(p: &Platform, extra: &[String]) -> String {
    let mut text =
        format!("suite={}\narchitecture={}\npackages={}\n", p.suite, p.architecture, p.root_packages.join(" "));
    if !extra.is_empty() {
        text.push_str(&format!("extra={}\n", extra.join(" ")));
    }
    hex(&sha2::Sha256::digest(text.as_bytes()))
}

/// A list of extra packages in its canonical form: sorted, each once.
pub fn canonical_extra(extra: &[String]) -> Vec<String> {
    let mut v = extra.to_vec();
    v.sort();
    v.dedup();
    v
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A Debian package name (policy 5.6.1), a version's characters (5.6.12), an
/// architecture name.
fn valid_name(s: &str) -> bool {
    s.len() >= 2
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}
fn valid_version(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.~:".contains(&b))
        && s.bytes().next().is_some_and(|b| b.is_ascii_digit())
}
fn valid_file(s: &str) -> bool {
    s.ends_with(".deb") && !s.starts_with('.') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.~_%".contains(&b))
}

impl RootLock {
    /// Parses a root lock; errors name the file, line and column.
    pub fn parse(text: &str, shown: &Path) -> Result<RootLock, RootError> {
        let at = |span: std::ops::Range<usize>, message: String| RootError::Lock {
            location: Box::new(Location::from_span(shown, text, span)),
            message,
        };
        let raw: Raw = toml::from_str(text).map_err(|e| at(e.span().unwrap_or(0..0), e.message().to_string()))?;
        if *raw.version.get_ref() != ROOT_LOCK_VERSION {
            return Err(at(
                raw.version.span(),
                format!(
                    "root lock format {} is not supported (this hb reads {ROOT_LOCK_VERSION}); run `hb lock --update-root`",
                    raw.version.get_ref()
                ),
            ));
        }
        let mut roots: Vec<Root> = Vec::new();
        for r in raw.root {
            let span = r.span();
            let r = r.into_inner();
            if hb_platform::lookup(&r.platform).is_none() {
                return Err(at(span, format!("unknown platform `{}`", r.platform)));
            }
            if roots.iter().any(|o| o.platform == r.platform && o.extra == r.extra) {
                return Err(at(span, format!("platform `{}` has two roots with the same packages", r.platform)));
            }
            if r.extra != canonical_extra(&r.extra) || r.extra.iter().any(|e| !valid_name(e)) {
                return Err(at(
                    span,
                    format!("root of {}: `extra` is a sorted list of Debian package names", r.platform),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for p in &r.package {
                let bad = if !valid_name(&p.name) {
                    Some("a Debian package name")
                } else if !valid_version(&p.version) {
                    Some("a Debian version")
                } else if !valid_name(&p.architecture) {
                    Some("an architecture")
                } else if !valid_file(&p.file) {
                    Some("a plain .deb file name")
                } else if !valid_sha256(&p.sha256) {
                    Some("a sha256 of 64 lowercase hex digits")
                } else {
                    None
                };
                if let Some(what) = bad {
                    return Err(at(
                        span.clone(),
                        format!("root of {}: package `{}` is not {what}", r.platform, p.name),
                    ));
                }
                if !seen.insert(&p.name) {
                    return Err(at(
                        span.clone(),
                        format!("root of {}: package `{}` is listed twice", r.platform, p.name),
                    ));
                }
            }
            roots.push(r);
        }
        Ok(RootLock { roots })
    }

    /// The lock's text, in a fixed order.
    pub fn render(&self) -> String {
        let mut out = format!(
            "# Generated by `hb lock`: the Debian packages of each platform's target root, pinned by sha256.\n# Do not edit by hand; `hb lock --update-root` moves the roots forward.\nversion = {ROOT_LOCK_VERSION}\n"
        );
        let mut roots = self.roots.clone();
        roots.sort_by_key(|r| (hb_platform::PLATFORMS.iter().position(|p| p.name == r.platform), r.extra.clone()));
        for r in &roots {
            out.push_str(&format!("\n[[root]]\nplatform = \"{}\"\n", r.platform));
            if !r.extra.is_empty() {
                let quoted: Vec<String> = r.extra.iter().map(|e| format!("\"{e}\"")).collect();
                out.push_str(&format!("extra = [{}]\n", quoted.join(", ")));
            }
            out.push_str(&format!("inputs = \"{}\"\n", r.inputs));
            let mut packages = r.package.clone();
            packages.sort_by(|a, b| a.name.cmp(&b.name));
            for p in &packages {
                out.push_str(&format!(
                    "\n[[root.package]]\nname = \"{}\"\nversion = \"{}\"\narchitecture = \"{}\"\nfile = \"{}\"\nsize = {}\nsha256 = \"{}\"\n",
                    p.name, p.version, p.architecture, p.file, p.size, p.sha256
                ));
            }
        }
        out
    }

    /// A platform's base root.
    pub fn root(&self, platform: &str) -> Option<&Root> {
        self.root_with(platform, &[])
    }

    /// A platform's root with `extra` packages (canonical form).
    pub fn root_with(&self, platform: &str, extra: &[String]) -> Option<&Root> {
        self.roots.iter().find(|r| r.platform == platform && r.extra == extra)
    }

    /// Replaces (or adds) a root.
    pub fn set(&mut self, root: Root) {
        self.roots.retain(|r| !(r.platform == root.platform && r.extra == root.extra));
        self.roots.push(root);
    }

    /// Reads the lock like [`RootLock::load`], keeping its parsed form in the directory
    /// `cache`: an unchanged lock (the same bytes) is decoded from there rather than
    /// parsed again, which a no-op build would otherwise spend most of its planning
    /// on (the lock holds every platform's roots). The cache file is one per workspace
    /// path, overwritten when the lock changes; failing to write it changes nothing.
    pub fn load_cached(workspace_root: &Path, cache: &Path) -> Result<Option<RootLock>, RootError> {
        let path = workspace_root.join(ROOT_LOCK);
        let bytes = match hb_fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(RootError::Fs(e)),
        };
        // The parsed form's layout is this hb's: its version is in the digest.
        let mut h = hb_store::Hasher::new();
        h.update(format!("hb-root.lock parsed by hb {}\n", env!("CARGO_PKG_VERSION")).as_bytes());
        h.update(&bytes);
        let digest = h.finish();
        let file = cache.join(format!("root-lock-{}", hb_store::Digest::of(path.as_os_str().as_encoded_bytes()).hex()));
        if let Ok(saved) = std::fs::read(&file)
            && let Ok((d, lock)) = postcard::from_bytes::<(hb_store::Digest, RootLock)>(&saved)
            && d == digest
        {
            return Ok(Some(lock));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            RootError::Fs(hb_fs::FsError::new(
                "reading",
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            ))
        })?;
        let lock = RootLock::parse(&text, Path::new(ROOT_LOCK))?;
        if let Ok(encoded) = postcard::to_stdvec(&(digest, &lock))
            && hb_fs::create_dir_all(cache).is_ok()
        {
            let _ = hb_fs::write_atomic_unsynced(&file, &encoded, None);
        }
        Ok(Some(lock))
    }

    /// Reads the lock at the workspace root (`None` if there is none).
    pub fn load(workspace_root: &Path) -> Result<Option<RootLock>, RootError> {
        let path = workspace_root.join(ROOT_LOCK);
        match hb_fs::read_to_string(&path) {
            Ok(text) => Ok(Some(RootLock::parse(&text, Path::new(ROOT_LOCK))?)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(RootError::Fs(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_parse_is_the_parse_and_follows_edits() {
        let ws = tempfile::tempdir().unwrap();
        let cache = ws.path().join("cache");
        assert_eq!(RootLock::load_cached(ws.path(), &cache).unwrap(), None);
        let lock = RootLock::parse(&sample().render(), Path::new(ROOT_LOCK)).unwrap();
        std::fs::write(ws.path().join(ROOT_LOCK), lock.render()).unwrap();
        let first = RootLock::load_cached(ws.path(), &cache).unwrap();
        assert_eq!(first.as_ref(), Some(&lock));
        let kept = hb_fs::read_dir_sorted(&cache).unwrap();
        assert_eq!(kept.len(), 1, "the parsed form is kept");
        let saved = std::fs::read(kept[0].path()).unwrap();
        let (_, decoded) = postcard::from_bytes::<(hb_store::Digest, RootLock)>(&saved).expect("the kept form decodes");
        assert_eq!(Some(decoded), first);
        assert_eq!(RootLock::load_cached(ws.path(), &cache).unwrap(), first);
        // An edit is parsed again (and a broken one still fails with its location).
        let mut other = lock.clone();
        other.roots[0].platform = "bookworm-amd64".into();
        std::fs::write(ws.path().join(ROOT_LOCK), other.render()).unwrap();
        assert_eq!(RootLock::load_cached(ws.path(), &cache).unwrap(), Some(other));
        std::fs::write(ws.path().join(ROOT_LOCK), "version = 1\n[[root]]\nplatform = 3\n").unwrap();
        let err = RootLock::load_cached(ws.path(), &cache).unwrap_err().to_string();
        assert!(err.contains("hb-root.lock:"), "{err}");
    }

    fn sample() -> RootLock {
        RootLock {
            roots: vec![Root {
                platform: "trixie-arm64".into(),
                extra: Vec::new(),
                inputs: inputs_digest(&hb_platform::TRIXIE_ARM64),
                package: vec![
                    RootPackage {
                        name: "python3.13-minimal".into(),
                        version: "3.13.5-2".into(),
                        architecture: "arm64".into(),
                        file: "python3.13-minimal_3.13.5-2_arm64.deb".into(),
                        size: 2_000_000,
                        sha256: "a".repeat(64),
                    },
                    RootPackage {
                        name: "libc6".into(),
                        version: "2.41-12".into(),
                        architecture: "arm64".into(),
                        file: "libc6_2.41-12_arm64.deb".into(),
                        size: 3_000_000,
                        sha256: "b".repeat(64),
                    },
                ],
            }],
        }
    }

    #[test]
    fn round_trips_without_urls() {
        let text = sample().render();
        assert!(!text.contains("://"));
        let back = RootLock::parse(&text, Path::new(ROOT_LOCK)).unwrap();
        assert_eq!(back.render(), text);
        assert_eq!(back.root("trixie-arm64").unwrap().package[0].name, "libc6", "sorted by name");
    }

    #[test]
    fn a_compile_root_sits_beside_the_base_root() {
        let mut lock = sample();
        let mut compile = lock.roots[0].clone();
        compile.extra = canonical_extra(&["libpq-dev".into(), "gcc".into(), "gcc".into()]);
        compile.inputs = inputs_digest_with(&hb_platform::TRIXIE_ARM64, &compile.extra);
        assert_eq!(compile.extra, ["gcc", "libpq-dev"]);
        assert_ne!(compile.inputs, inputs_digest(&hb_platform::TRIXIE_ARM64));
        lock.set(compile.clone());
        let text = lock.render();
        assert!(text.contains("extra = [\"gcc\", \"libpq-dev\"]\n"), "{text}");
        let back = RootLock::parse(&text, Path::new(ROOT_LOCK)).unwrap();
        assert_eq!(back.roots.len(), 2);
        assert_eq!(back.root_with("trixie-arm64", &compile.extra).map(|r| &r.inputs), Some(&compile.inputs));
        assert_eq!(back.root("trixie-arm64").map(|r| r.extra.len()), Some(0));
        let unsorted = text.replace("[\"gcc\", \"libpq-dev\"]", "[\"libpq-dev\", \"gcc\"]");
        let err = RootLock::parse(&unsorted, Path::new(ROOT_LOCK)).unwrap_err().to_string();
        assert!(err.contains("sorted list of Debian package names"), "{err}");
    }

    #[test]
    fn bad_entries_are_located() {
        let text = sample().render().replace("\"b", "\"B");
        let err = RootLock::parse(&text, Path::new(ROOT_LOCK)).unwrap_err().to_string();
        assert!(err.contains("hb-root.lock:") && err.contains("`libc6` is not a sha256"), "{err}");
        let text = sample().render().replace("libc6_2.41-12_arm64.deb", "../libc6.deb");
        let err = RootLock::parse(&text, Path::new(ROOT_LOCK)).unwrap_err().to_string();
        assert!(err.contains("plain .deb file name"), "{err}");
        let text = sample().render().replace("trixie-arm64", "sid-arm64");
        let err = RootLock::parse(&text, Path::new(ROOT_LOCK)).unwrap_err().to_string();
        assert!(err.contains("unknown platform `sid-arm64`"), "{err}");
    }

    mod hostile {
        //! Any text, and any damage to a real root lock: parsing returns a lock or an
        //! error with a location, never a panic.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_parses_or_errs(text in "\\PC*") {
                let _ = RootLock::parse(&text, Path::new(ROOT_LOCK));
            }

            #[test]
            fn damaged_locks_parse_or_err(at in any::<prop::sample::Index>(), with in "\\PC{0,4}", cut in any::<bool>()) {
                let good = sample().render();
                let mut i = at.index(good.len());
                while !good.is_char_boundary(i) {
                    i -= 1;
                }
                let text = if cut { good[..i].to_string() } else { format!("{}{with}{}", &good[..i], &good[i..]) };
                let _ = RootLock::parse(&text, Path::new(ROOT_LOCK));
            }
        }
    }
}
