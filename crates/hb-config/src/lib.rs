//! Reading a workspace: finding its root (the nearest directory upwards whose
//! BUILD.toml has a `[workspace]` table), its settings, its packages and their
//! targets. Everything here is pure parsing and validation; nothing runs or builds.

pub mod build_file;
pub mod label;
pub mod location;
pub mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use build_file::{BUILD_FILE, Compression, Package, Target, WorkspaceSettings};
pub use hb_platform::Platform;
pub use label::Label;
pub use location::Location;
pub use schema::{Attrs, Declared, Document, Schema, Schemas};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{message}\n  --> {location}")]
    Invalid { location: Location, message: String },
    #[error(
        "no hb workspace found from {start}: create a BUILD.toml with a `[workspace]` table at the root of your project"
    )]
    NoWorkspace { start: PathBuf },
    #[error("{file} has no `[workspace]` table, but it is the workspace root")]
    NotWorkspaceRoot { file: PathBuf },
    #[error("no package `//{package}`: {file} does not exist{}", suggestion(.suggestions))]
    NoPackage { package: String, file: PathBuf, suggestions: Vec<String> },
    #[error("no target `{label}` in {file}{}", suggestion(.suggestions))]
    NoTarget { label: Label, file: PathBuf, suggestions: Vec<String> },
    #[error("{0}")]
    Platform(String),
    #[error(transparent)]
    Label(#[from] label::LabelError),
    #[error(transparent)]
    Io(#[from] hb_fs::FsError),
}

fn suggestion(s: &[String]) -> String {
    match s {
        [] => String::new(),
        [one] => format!("; did you mean `{one}`?"),
        many => {
            format!("; did you mean one of: {}?", many.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))
        }
    }
}

/// Up to three candidates close to `wanted`, closest first.
pub fn close_matches(wanted: &str, candidates: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut scored: Vec<(u32, String)> = candidates
        .into_iter()
        .filter_map(|c| {
            let score = strsim::jaro_winkler(wanted, &c).max(strsim::normalized_damerau_levenshtein(wanted, &c));
            let contains = !wanted.is_empty() && !c.is_empty() && (c.contains(wanted) || wanted.contains(c.as_str()));
            (score >= 0.6 || contains).then_some(((score * 1000.0) as u32, c))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// A loaded workspace: its root, settings, target platform, the rule kinds its
/// BUILD.toml files are read with, and the packages read so far.
pub struct Workspace {
    pub root: PathBuf,
    pub settings: WorkspaceSettings,
    /// The platform being built: the default one (see [`WorkspaceSettings::platform`])
    /// until [`Workspace::set_platform`] picks another of [`Workspace::platforms`].
    pub platform: &'static Platform,
    /// Every platform the workspace builds, the default first.
    pub platforms: Vec<&'static Platform>,
    pub schemas: Schemas,
    packages: BTreeMap<String, Package>,
}

impl Workspace {
    /// Finds the workspace containing `start` and reads its root BUILD.toml.
    pub fn discover(start: &Path, schemas: &Schemas) -> Result<Workspace, ConfigError> {
        let mut dir = Some(start);
        while let Some(d) = dir {
            let file = d.join(BUILD_FILE);
            if let Ok(text) = hb_fs::read_to_string(&file)
                && let Ok(doc) = schema::Document::parse(&text)
                && doc.top_level_keys().iter().any(|k| k.get_ref() == "workspace")
            {
                return Workspace::open(d, schemas);
            }
            dir = d.parent();
        }
        Err(ConfigError::NoWorkspace { start: start.to_path_buf() })
    }

    /// Opens the workspace rooted at `root`.
    pub fn open(root: &Path, schemas: &Schemas) -> Result<Workspace, ConfigError> {
        let pkg = Package::load(root, "", schemas)?;
        let mut settings =
            pkg.workspace.clone().ok_or_else(|| ConfigError::NotWorkspaceRoot { file: root.join(BUILD_FILE) })?;
        // Without an explicit `platform`, the first of `platforms` is the default.
        if settings.platform.span() == (0..0)
            && let Some(first) = settings.platforms.first()
        {
            settings.platform = first.clone();
        }
        // Package::parse checked the names against the table.
        let lookup = |name: &toml::Spanned<String>| {
            hb_platform::lookup(name.get_ref()).ok_or_else(|| pkg.error(name.span(), "unknown platform"))
        };
        let platform = lookup(&settings.platform)?;
        let mut platforms = vec![platform];
        for p in &settings.platforms {
            let p = lookup(p)?;
            if !platforms.contains(&p) {
                platforms.push(p);
            }
        }
        let mut packages = BTreeMap::new();
        packages.insert(String::new(), pkg);
        Ok(Workspace { root: root.to_path_buf(), settings, platform, platforms, schemas: schemas.clone(), packages })
    }

    /// Builds for `name` from now on. It must be one of the workspace's platforms.
    pub fn set_platform(&mut self, name: &str) -> Result<&'static Platform, ConfigError> {
        let Some(p) = hb_platform::lookup(name) else {
            return Err(ConfigError::Platform(format!(
                "unknown platform `{name}`; known: {}",
                hb_platform::names().join(", ")
            )));
        };
        if !self.platforms.contains(&p) {
            let listed: Vec<&str> = self.platforms.iter().map(|p| p.name).collect();
            return Err(ConfigError::Platform(format!(
                "platform `{name}` is not one this workspace builds ({}): add it to `platforms` in [workspace] of {} and run `hb lock` for it",
                listed.join(", "),
                self.root.join(BUILD_FILE).display()
            )));
        }
        self.platform = p;
        Ok(p)
    }

    /// Reads the packages at `paths` not read yet, on a few threads (a workspace of many
    /// packages is mostly parsing); errors are left for [`Workspace::package`] to
    /// report, so they come in path order and with their suggestions.
    pub fn preload(&mut self, paths: &[String]) {
        let missing: Vec<&String> = paths.iter().filter(|p| !self.packages.contains_key(p.as_str())).collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        if missing.len() < 8 || threads < 2 {
            return;
        }
        let (root, schemas) = (&self.root, &self.schemas);
        let loaded: Vec<(String, Package)> = std::thread::scope(|s| {
            let per = missing.len().div_ceil(threads);
            let handles: Vec<_> = missing
                .chunks(per)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .filter_map(|p| Package::load(root, p, schemas).ok().map(|pkg| (p.to_string(), pkg)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        for (path, pkg) in loaded {
            // A `[workspace]` table where it does not belong is reported by `package`.
            if pkg.workspace.is_none() {
                self.packages.insert(path, pkg);
            }
        }
    }

    /// The package at workspace-relative `path`, read on first use.
    pub fn package(&mut self, path: &str) -> Result<&Package, ConfigError> {
        if !self.packages.contains_key(path) {
            let pkg = Package::load(&self.root, path, &self.schemas).map_err(|e| match e {
                ConfigError::NoPackage { package, file, .. } => {
                    let all = self.package_paths().unwrap_or_default();
                    let suggestions = close_matches(&package, all).into_iter().map(|p| format!("//{p}")).collect();
                    ConfigError::NoPackage { package, file, suggestions }
                }
                other => other,
            })?;
            if pkg.workspace.is_some() {
                return Err(pkg.error(0..0, "only the workspace root's BUILD.toml may have a `[workspace]` table"));
            }
            self.packages.insert(path.to_string(), pkg);
        }
        Ok(&self.packages[path])
    }

    /// The target named by `label`, with "did you mean" suggestions when absent.
    pub fn target(&mut self, label: &Label) -> Result<&Target, ConfigError> {
        let pkg = self.package(&label.package)?;
        match pkg.targets.get(&label.name) {
            Some(t) => Ok(t),
            None => {
                let names: Vec<String> = pkg.targets.keys().cloned().collect();
                let mut suggestions: Vec<String> = close_matches(&label.name, names.clone())
                    .into_iter()
                    .map(|n| Label { package: label.package.clone(), name: n }.to_string())
                    .collect();
                if suggestions.is_empty() {
                    // Nothing close: say what is there instead.
                    suggestions = names
                        .into_iter()
                        .take(12)
                        .map(|n| Label { package: label.package.clone(), name: n }.to_string())
                        .collect();
                }
                Err(ConfigError::NoTarget { label: label.clone(), file: pkg.file.clone(), suggestions })
            }
        }
    }

    /// Workspace-relative paths of every package (directories holding a BUILD.toml),
    /// sorted; skips hidden directories, `hb-out` and `target`.
    pub fn package_paths(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        let walk = hb_fs::walk_sorted(&self.root).into_iter().filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0 || !(name.starts_with('.') || name == "hb-out" || name == "target")
        });
        for entry in walk {
            let entry = entry.map_err(|e| {
                let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                hb_fs::FsError::new("walking", &path, e.into())
            })?;
            if entry.file_type().is_file() && entry.file_name() == BUILD_FILE {
                let dir = entry.path().parent().unwrap_or(&self.root);
                let rel = dir.strip_prefix(&self.root).unwrap_or(dir);
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(out)
    }

    /// The package containing `dir` (for resolving `:target` on the command line).
    pub fn package_of(&self, dir: &Path) -> Option<String> {
        let rel = dir.strip_prefix(&self.root).ok()?;
        let mut cur = rel.to_path_buf();
        loop {
            if self.root.join(&cur).join(BUILD_FILE).is_file() {
                return Some(cur.to_string_lossy().into_owned());
            }
            if !cur.pop() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule kind `t` whose tables have only a name.
    fn test_schemas() -> Schemas {
        #[derive(Debug, serde::Deserialize)]
        struct T {
            name: toml::Spanned<String>,
        }
        impl Attrs for T {
            fn kind(&self) -> &'static str {
                "t"
            }
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
        struct S;
        impl Schema for S {
            fn kind(&self) -> &'static str {
                "t"
            }
            fn parse(&self, pkg: &Package, doc: &Document) -> Result<Vec<Declared>, ConfigError> {
                build_file::parse_rule(
                    pkg,
                    doc,
                    "t",
                    |_, _: &T| Ok(()),
                    |t| Declared { name: t.name.clone(), deps: Vec::new(), attrs: std::sync::Arc::new(t) },
                )
            }
        }
        std::sync::Arc::new([std::sync::Arc::new(S) as std::sync::Arc<dyn Schema>])
    }

    #[test]
    fn suggestions() {
        let c = ["deb", "app", "config"].map(String::from);
        assert_eq!(close_matches("dep", c.clone()), ["deb"]);
        assert_eq!(close_matches("confg", c.clone()), ["config"]);
        assert!(close_matches("zzzz", c).is_empty());
    }

    #[test]
    fn workspace_discovery_and_missing_targets() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("BUILD.toml"), "[workspace]\n").unwrap();
        std::fs::create_dir_all(d.path().join("web/sub")).unwrap();
        std::fs::write(d.path().join("web/BUILD.toml"), "[[t]]\nname = \"config\"\n").unwrap();
        let mut ws = Workspace::discover(&d.path().join("web/sub"), &test_schemas()).unwrap();
        assert_eq!(ws.package_paths().unwrap(), ["", "web"]);
        assert_eq!(ws.package_of(&d.path().join("web/sub")).as_deref(), Some("web"));
        let err = ws.target(&Label::parse("//web:confg", None).unwrap()).unwrap_err().to_string();
        assert!(err.contains("did you mean `//web:config`"), "{err}");
        let err = ws.target(&Label::parse("//wbe:config", None).unwrap()).unwrap_err().to_string();
        assert!(err.contains("did you mean `//web`"), "{err}");
    }
}
