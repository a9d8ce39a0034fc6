//! The lock file (`hb.lock` next to the BUILD.toml): every runtime and build dependency
//! of a Python app pinned by name, version, file name and sha256, for each target (a
//! wheel-tag set such as `cp311-manylinux_2_36_x86_64`, one per platform the workspace
//! builds). A lock for one target is format 1; for several, format 2, where each file
//! lists the targets it serves (a pure wheel appears once for all of them). It
//! never holds an index URL or host: where files come from is the user's configuration.
//! `inputs` is a digest of the requirements the lock was made from, so a lock that no
//! longer matches pyproject.toml is caught before anything builds. An sdist that needs
//! no compiler carries `pure = true` (it builds in the base root).

use std::path::Path;

use hb_config::Location;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::FetchError;

/// The format of a lock for one target.
pub const LOCK_VERSION: u32 = 1;
/// The format of a lock for several targets.
pub const MULTI_LOCK_VERSION: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Installed into the virtualenv.
    Runtime,
    /// Only used to build the app's own wheel (the PEP 517 backend and its needs).
    Build,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedFile {
    pub name: String,
    pub version: String,
    pub role: Role,
    pub file: String,
    pub sha256: String,
    /// The targets this file serves (format 2); empty in a one-target lock, where it
    /// serves the one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// An sdist that builds without a compiler (`pure = true`): compiled in the base
    /// root, not a compile root. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pure: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// Digest of the requirement lists (and targets) the lock was resolved from.
    pub inputs: String,
    /// The targets it was resolved for, e.g. `cp311-manylinux_2_36_x86_64`, in order.
    pub targets: Vec<String>,
    pub packages: Vec<LockedFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    version: Spanned<u32>,
    inputs: String,
    target: Option<Spanned<String>>,
    targets: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    package: Vec<Spanned<LockedFile>>,
}

impl Lock {
    /// Parses a lock; errors point at the file, line and column.
    pub fn parse(text: &str, shown: &Path) -> Result<Lock, FetchError> {
        let at = |span: std::ops::Range<usize>, message: String| FetchError::Lock {
            location: Box::new(Location::from_span(shown, text, span)),
            message,
        };
        let raw: RawLock = toml::from_str(text).map_err(|e| at(e.span().unwrap_or(0..0), e.message().to_string()))?;
        let version = *raw.version.get_ref();
        let targets = match (version, raw.target, raw.targets) {
            (LOCK_VERSION, Some(t), None) => vec![t.into_inner()],
            (MULTI_LOCK_VERSION, None, Some(t)) if !t.get_ref().is_empty() => t.into_inner(),
            (LOCK_VERSION | MULTI_LOCK_VERSION, _, _) => {
                return Err(at(
                    raw.version.span(),
                    format!(
                        "lock format {version} has exactly one of `target` (format 1) or a non-empty `targets` (format 2); run `hb lock` again"
                    ),
                ));
            }
            _ => {
                return Err(at(
                    raw.version.span(),
                    format!(
                        "lock format {version} is not supported (this hb reads {LOCK_VERSION} and {MULTI_LOCK_VERSION}); run `hb lock` again"
                    ),
                ));
            }
        };
        let mut packages = Vec::new();
        for p in raw.package {
            let span = p.span();
            let p = p.into_inner();
            if p.sha256.len() != 64 || !p.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                return Err(at(span, format!("`{}`: sha256 must be 64 lowercase hex digits", p.file)));
            }
            if p.file.contains('/') || p.file.contains('\\') || p.file.starts_with('.') {
                return Err(at(span, format!("`{}`: a locked file is a plain file name", p.file)));
            }
            match version {
                LOCK_VERSION if !p.targets.is_empty() => {
                    return Err(at(span, format!("`{}`: `targets` belongs in format 2 locks", p.file)));
                }
                MULTI_LOCK_VERSION => {
                    if let Some(t) = p.targets.iter().find(|t| !targets.contains(t)) {
                        return Err(at(span, format!("`{}`: target `{t}` is not among the lock's `targets`", p.file)));
                    }
                    if p.targets.is_empty() {
                        return Err(at(span, format!("`{}`: a format 2 lock names each file's `targets`", p.file)));
                    }
                }
                _ => {}
            }
            packages.push(p);
        }
        Ok(Lock { inputs: raw.inputs, targets, packages })
    }

    /// A lock from each target's resolution (`(target, files)`, in the order given):
    /// one file serving several targets is listed once.
    pub fn merge(inputs: String, resolved: Vec<(String, Vec<LockedFile>)>) -> Lock {
        let targets: Vec<String> = resolved.iter().map(|(t, _)| t.clone()).collect();
        let mut by_file: std::collections::BTreeMap<(Role, String, String), LockedFile> = Default::default();
        for (target, files) in resolved {
            for mut f in files {
                let key = (f.role, f.file.clone(), f.sha256.clone());
                let entry = by_file.entry(key).or_insert_with(|| {
                    f.targets.clear();
                    f
                });
                if !entry.targets.contains(&target) {
                    entry.targets.push(target.clone());
                }
            }
        }
        let mut packages: Vec<LockedFile> = by_file.into_values().collect();
        packages.sort_by(|a, b| (a.role, &a.name, &a.file).cmp(&(b.role, &b.name, &b.file)));
        if targets.len() == 1 {
            packages.iter_mut().for_each(|p| p.targets.clear());
        }
        Lock { inputs, targets, packages }
    }

    /// The files of `role` serving `target`.
    pub fn files_for<'a>(&'a self, role: Role, target: &'a str) -> impl Iterator<Item = &'a LockedFile> {
        let single = self.targets.len() == 1 && self.targets.first().is_some_and(|t| t == target);
        self.files(role).filter(move |p| if single { true } else { p.targets.iter().any(|t| t == target) })
    }

    /// The lock's text: fixed order, so the same resolution always writes the same file.
    pub fn render(&self, label: &str) -> String {
        let quoted = |v: &[String]| v.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(", ");
        let multi = self.targets.len() != 1;
        let head = if multi {
            format!(
                "version = {MULTI_LOCK_VERSION}\ninputs = \"{}\"\ntargets = [{}]\n",
                self.inputs,
                quoted(&self.targets)
            )
        } else {
            format!(
                "version = {LOCK_VERSION}\ninputs = \"{}\"\ntarget = \"{}\"\n",
                self.inputs,
                quoted(&self.targets).trim_matches('"')
            )
        };
        let mut out = format!(
            "# Generated by `hb lock {label}`: every file the app needs, pinned by sha256.\n# Do not edit by hand; run `hb lock {label}` again after changing dependencies.\n{head}"
        );
        let mut packages = self.packages.clone();
        packages.sort_by(|a, b| (a.role, &a.name, &a.file).cmp(&(b.role, &b.name, &b.file)));
        for p in &packages {
            let role = match p.role {
                Role::Runtime => "runtime",
                Role::Build => "build",
            };
            out.push_str(&format!(
                "\n[[package]]\nname = \"{}\"\nversion = \"{}\"\nrole = \"{role}\"\nfile = \"{}\"\nsha256 = \"{}\"\n",
                p.name, p.version, p.file, p.sha256
            ));
            if p.pure {
                out.push_str("pure = true\n");
            }
            if multi {
                let mut targets = p.targets.clone();
                targets.sort_by_key(|t| self.targets.iter().position(|x| x == t));
                out.push_str(&format!("targets = [{}]\n", quoted(&targets)));
            }
        }
        out
    }

    /// The locked sdists (compiled in the target root; the same file for every target).
    pub fn sdists(&self) -> impl Iterator<Item = &LockedFile> {
        self.packages.iter().filter(|p| crate::sdist::is_sdist(&p.file))
    }

    pub fn files(&self, role: Role) -> impl Iterator<Item = &LockedFile> {
        self.packages.iter().filter(move |p| p.role == role)
    }
}

/// Digest of the requirement lists a lock is resolved from (order-insensitive), for
/// its targets (in order; one target gives the digest format 1 always had), and which
/// sdists it may hold (`SdistPolicy::describe`; empty adds nothing).
pub fn inputs_digest(runtime: &[String], build: &[String], targets: &[String], sdists: &str) -> String {
    let target = targets.join(",");
    use sha2::Digest as _;
    let norm = |reqs: &[String]| {
        let mut v: Vec<String> = reqs.iter().map(|r| r.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        v.sort();
        v.join("\n")
    };
    let mut text = format!("target={target}\nruntime:\n{}\nbuild:\n{}\n", norm(runtime), norm(build));
    if !sdists.is_empty() {
        text.push_str(&format!("sdists:\n{sdists}\n"));
    }
    let h = sha2::Sha256::digest(text.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        Lock {
            inputs: "abc".into(),
            targets: vec!["cp311-manylinux_2_36_x86_64".into()],
            packages: vec![
                LockedFile {
                    name: "zeta".into(),
                    version: "1.0".into(),
                    role: Role::Runtime,
                    file: "zeta-1.0-py3-none-any.whl".into(),
                    sha256: "a".repeat(64),
                    targets: Vec::new(),
                    pure: false,
                },
                LockedFile {
                    name: "setuptools".into(),
                    version: "75.0".into(),
                    role: Role::Build,
                    file: "setuptools-75.0-py3-none-any.whl".into(),
                    sha256: "b".repeat(64),
                    targets: Vec::new(),
                    pure: false,
                },
            ],
        }
    }

    #[test]
    fn round_trips_in_a_fixed_order() {
        let text = sample().render("//x:app");
        let back = Lock::parse(&text, Path::new("x/hb.lock")).unwrap();
        assert_eq!(back.packages[0].name, "zeta", "runtime first");
        assert_eq!(back.render("//x:app"), text);
        assert!(!text.contains("://"), "no URLs in locks");
        assert!(text.contains("version = 1\n") && text.contains("target = \"cp311-manylinux_2_36_x86_64\"\n"));
    }

    #[test]
    fn several_targets_share_pure_files() {
        let one = sample().packages;
        let mut native = one[0].clone();
        native.file = "zeta-1.0-cp313-cp313-manylinux_2_17_aarch64.whl".into();
        native.sha256 = "c".repeat(64);
        let (a, b) = ("cp311-manylinux_2_36_x86_64".to_string(), "cp313-manylinux_2_41_aarch64".to_string());
        let lock = Lock::merge("d".into(), vec![(a.clone(), one.clone()), (b.clone(), vec![native, one[1].clone()])]);
        let text = lock.render("//x:app");
        assert!(text.contains("version = 2\n"), "{text}");
        let back = Lock::parse(&text, Path::new("x/hb.lock")).unwrap();
        assert_eq!(back, lock);
        assert_eq!(back.render("//x:app"), text);
        let names = |t: &str, role| back.files_for(role, t).map(|f| f.file.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a, Role::Runtime), ["zeta-1.0-py3-none-any.whl"]);
        assert_eq!(names(&b, Role::Runtime), ["zeta-1.0-cp313-cp313-manylinux_2_17_aarch64.whl"]);
        assert_eq!(names(&b, Role::Build), ["setuptools-75.0-py3-none-any.whl"]);
        assert_eq!(back.packages.iter().filter(|p| p.role == Role::Build).count(), 1, "shared once");
        let bad = text.replacen("targets = [\"cp311", "targets = [\"cp312", 2);
        let err = Lock::parse(&bad, Path::new("x/hb.lock")).unwrap_err().to_string();
        assert!(err.contains("not among the lock's `targets`") && err.contains("x/hb.lock:"), "{err}");
    }

    #[test]
    fn bad_hash_is_located() {
        let text = sample().render("//x:app").replace(&"a".repeat(64), "nothex");
        let err = Lock::parse(&text, Path::new("x/hb.lock")).unwrap_err().to_string();
        assert!(err.contains("x/hb.lock:") && err.contains("64 lowercase hex"), "{err}");
    }

    #[test]
    fn inputs_digest_ignores_order() {
        let a = inputs_digest(&["flask>=2".into(), "gunicorn".into()], &[], &["t".into()], "");
        let b = inputs_digest(&["gunicorn".into(), "flask>=2".into()], &[], &["t".into()], "");
        assert_eq!(a, b);
        assert_ne!(a, inputs_digest(&["flask>=3".into(), "gunicorn".into()], &[], &["t".into()], ""));
        assert_ne!(a, inputs_digest(&["flask>=2".into(), "gunicorn".into()], &[], &["t".into()], "psycopg2"));
    }

    mod hostile {
        //! Any text, and any damage to a real lock: parsing returns a lock or an error
        //! with a location, never a panic.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_parses_or_errs(text in "\\PC*") {
                let _ = Lock::parse(&text, Path::new("hb.lock"));
            }

            #[test]
            fn damaged_locks_parse_or_err(at in any::<prop::sample::Index>(), with in "\\PC{0,4}", cut in any::<bool>()) {
                let good = sample().render("//x:y");
                let mut i = at.index(good.len());
                while !good.is_char_boundary(i) {
                    i -= 1;
                }
                let text = if cut { good[..i].to_string() } else { format!("{}{with}{}", &good[..i], &good[i..]) };
                let _ = Lock::parse(&text, Path::new("hb.lock"));
            }
        }
    }
}
