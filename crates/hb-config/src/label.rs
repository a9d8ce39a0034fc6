//! Labels name targets: `//pkg/path:target`, `//pkg/path` (the target named like the
//! last path component), and `:target` (relative to the package being read).

use std::fmt;

/// A fully qualified target name. `package` is the workspace-relative directory
/// holding the BUILD.toml (`""` for the root), `name` the target within it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    pub package: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label `{text}`: {why}")]
pub struct LabelError {
    pub text: String,
    pub why: &'static str,
}

impl Label {
    /// Parses `text`; `:name` is resolved against `current` (the package being read,
    /// or the package of the working directory on the command line).
    pub fn parse(text: &str, current: Option<&str>) -> Result<Label, LabelError> {
        let err = |why| LabelError { text: text.to_string(), why };
        let (package, name) = if let Some(rest) = text.strip_prefix("//") {
            match rest.split_once(':') {
                Some((p, n)) => (p.to_string(), n.to_string()),
                None => {
                    let last = rest.rsplit('/').next().unwrap_or(rest);
                    if last.is_empty() {
                        return Err(err("a label without `:target` needs a package path to name the target after"));
                    }
                    (rest.to_string(), last.to_string())
                }
            }
        } else if let Some(n) = text.strip_prefix(':') {
            match current {
                Some(p) => (p.to_string(), n.to_string()),
                None => return Err(err("`:target` is only meaningful inside a package; write `//package:target`")),
            }
        } else {
            return Err(err("labels start with `//` (workspace-absolute) or `:` (same package)"));
        };
        if package.starts_with('/')
            || package.ends_with('/')
            || package.split('/').any(|c| c == "." || c == ".." || (c.is_empty() && !package.is_empty()))
        {
            return Err(err("the package path must be a plain relative path like `apps/web`"));
        }
        if !valid_name(&name) {
            return Err(err("target names use letters, digits, `_`, `-` and `.` and are not empty"));
        }
        Ok(Label { package, name })
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(p: &str, n: &str) -> Label {
        Label { package: p.into(), name: n.into() }
    }

    #[test]
    fn forms() {
        assert_eq!(Label::parse("//demosite:deb", None).unwrap(), l("demosite", "deb"));
        assert_eq!(Label::parse("//apps/web", None).unwrap(), l("apps/web", "web"));
        assert_eq!(Label::parse(":app", Some("demosite")).unwrap(), l("demosite", "app"));
        assert_eq!(Label::parse("//:root", None).unwrap(), l("", "root"));
        assert_eq!(l("a/b", "c").to_string(), "//a/b:c");
    }

    #[test]
    fn rejects() {
        for bad in ["demosite:deb", "//a/../b:c", "//a:", "//a:b c", ":x", "///a:b", "//"] {
            assert!(Label::parse(bad, None).is_err(), "{bad}");
        }
    }
}
