//! The check `pip check` makes, made on a venv before hb writes it: every installed
//! distribution's `Requires-Dist` that applies to the target (its marker evaluated for
//! the target, with the extras other distributions ask of it) is met by an installed
//! distribution of a version it allows, and every `Requires-Python` admits the target's
//! Python. A venv that fails it would fail at import time on the machine it is
//! installed on; hb says so when it builds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use pep508_rs::pep440_rs::{Version, VersionSpecifiers};
use pep508_rs::{ExtraName, Requirement, VersionOrUrl};

use crate::markers::Markers;
use crate::normalize;

/// One installed distribution, as its METADATA says.
pub struct Dist<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub requires_dist: &'a [String],
    pub requires_python: Option<&'a str>,
}

/// A requirement the venv does not meet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unmet {
    /// `who` requires `requirement`, and nothing of that name is installed.
    Missing { who: String, requirement: String },
    /// `who` requires `requirement`, and the version installed is not one it allows.
    Version { who: String, requirement: String, installed: String },
    /// `who` requires a Python the target's is not.
    Python { who: String, requires: String, python: String },
    /// A field hb cannot read as PEP 508 / PEP 440.
    Unreadable { who: String, what: String, why: String },
}

impl Unmet {
    /// The distribution (`name version`) whose requirement is not met.
    pub fn who(&self) -> &str {
        match self {
            Unmet::Missing { who, .. }
            | Unmet::Version { who, .. }
            | Unmet::Python { who, .. }
            | Unmet::Unreadable { who, .. } => who,
        }
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::Missing { who, requirement } => write!(f, "{who} requires `{requirement}`, which is not installed"),
            Unmet::Version { who, requirement, installed } => {
                write!(f, "{who} requires `{requirement}`, but {installed} is installed")
            }
            Unmet::Python { who, requires, python } => {
                write!(f, "{who} requires Python {requires}, but the target's is {python}")
            }
            Unmet::Unreadable { who, what, why } => write!(f, "{who}: {what} cannot be read: {why}"),
        }
    }
}

/// Every requirement of `dists` that applies on the target of `markers` and is not met
/// by `dists` themselves, in the order of `dists`.
pub fn unmet(dists: &[Dist], markers: &Markers) -> Vec<Unmet> {
    let who = |d: &Dist| format!("{} {}", d.name, d.version);
    let index: BTreeMap<String, usize> = dists.iter().enumerate().map(|(i, d)| (normalize(d.name), i)).collect();
    let mut out = Vec::new();
    let parsed: Vec<Vec<Requirement>> = dists
        .iter()
        .map(|d| {
            d.requires_dist
                .iter()
                .filter_map(|line| match Requirement::from_str(line) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        out.push(Unmet::Unreadable {
                            who: who(d),
                            what: format!("Requires-Dist `{line}`"),
                            why: e.to_string(),
                        });
                        None
                    }
                })
                .collect()
        })
        .collect();
    // The extras asked of each distribution, to a fixed point (an extra may ask for
    // another distribution's extra).
    let mut extras: Vec<BTreeSet<ExtraName>> = vec![BTreeSet::new(); dists.len()];
    let applies = |r: &Requirement, asked: &BTreeSet<ExtraName>| {
        let asked: Vec<ExtraName> = asked.iter().cloned().collect();
        markers.holds_with(&r.marker, &asked)
    };
    loop {
        let mut grew = false;
        for (i, reqs) in parsed.iter().enumerate() {
            for r in reqs {
                let Some(asked) = extras.get(i) else { continue };
                if !applies(r, asked).unwrap_or(false) || r.extras.is_empty() {
                    continue;
                }
                if let Some(set) = index.get(r.name.as_ref()).and_then(|j| extras.get_mut(*j)) {
                    for e in &r.extras {
                        grew |= set.insert(e.clone());
                    }
                }
            }
        }
        if !grew {
            break;
        }
    }
    let python = markers.python();
    for (i, d) in dists.iter().enumerate() {
        if let Some(rp) = d.requires_python {
            match VersionSpecifiers::from_str(rp) {
                Ok(s) if !s.contains(python) => {
                    out.push(Unmet::Python { who: who(d), requires: rp.to_string(), python: python.to_string() })
                }
                Ok(_) => {}
                Err(e) => out.push(Unmet::Unreadable {
                    who: who(d),
                    what: format!("Requires-Python `{rp}`"),
                    why: e.to_string(),
                }),
            }
        }
        let (Some(reqs), Some(asked)) = (parsed.get(i), extras.get(i)) else { continue };
        for r in reqs {
            let requirement = r.to_string();
            match applies(r, asked) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(why) => {
                    out.push(Unmet::Unreadable { who: who(d), what: format!("Requires-Dist `{requirement}`"), why });
                    continue;
                }
            }
            let Some(installed) = index.get(r.name.as_ref()).and_then(|j| dists.get(*j)) else {
                out.push(Unmet::Missing { who: who(d), requirement });
                continue;
            };
            let Some(VersionOrUrl::VersionSpecifier(spec)) = &r.version_or_url else { continue };
            match Version::from_str(installed.version) {
                Ok(v) if spec.contains(&v) => {}
                Ok(_) => out.push(Unmet::Version { who: who(d), requirement, installed: who(installed) }),
                Err(e) => out.push(Unmet::Unreadable {
                    who: who(installed),
                    what: format!("its version `{}`", installed.version),
                    why: e.to_string(),
                }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bookworm() -> Markers {
        Markers::new((3, 11), "3.11.2", "x86_64").unwrap()
    }

    fn dist<'a>(name: &'a str, version: &'a str, requires: &'a [String], python: Option<&'a str>) -> Dist<'a> {
        Dist { name, version, requires_dist: requires, requires_python: python }
    }

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_met_venv_passes_and_markers_and_extras_are_evaluated() {
        let app = lines(&["Flask>=3", "gunicorn", "pywin32; sys_platform == 'win32'", "uvicorn[standard]"]);
        let flask = lines(&["Werkzeug>=3.0", "asgiref>=3.2; extra == 'async'"]);
        let uvicorn = lines(&["click>=7", "httptools>=0.5; extra == 'standard'"]);
        let none: Vec<String> = Vec::new();
        let dists = [
            dist("app", "1.0", &app, Some(">=3.9")),
            dist("flask", "3.0.3", &flask, None),
            dist("werkzeug", "3.0.1", &none, None),
            dist("gunicorn", "22.0.0", &none, None),
            dist("uvicorn", "0.30.0", &uvicorn, None),
            dist("click", "8.1.7", &none, None),
            dist("httptools", "0.6.1", &none, None),
        ];
        assert_eq!(unmet(&dists, &bookworm()), Vec::new());
        // Without httptools, the extra asked of uvicorn is unmet.
        let short = &dists[..6];
        assert_eq!(
            unmet(short, &bookworm()),
            [Unmet::Missing {
                who: "uvicorn 0.30.0".into(),
                requirement: "httptools>=0.5 ; extra == 'standard'".into()
            }]
        );
    }

    #[test]
    fn missing_versions_and_python_are_named() {
        let app = lines(&["Flask>=3", "gunicorn"]);
        let none: Vec<String> = Vec::new();
        let dists = [dist("my-app", "0.1", &app, Some(">=3.12")), dist("Flask", "2.3.0", &none, None)];
        let found: Vec<String> = unmet(&dists, &bookworm()).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "my-app 0.1 requires Python >=3.12, but the target's is 3.11.2",
                "my-app 0.1 requires `flask>=3`, but Flask 2.3.0 is installed",
                "my-app 0.1 requires `gunicorn`, which is not installed",
            ]
        );
    }

    #[test]
    fn kernel_markers_and_bad_lines_are_unreadable_not_ignored() {
        let app = lines(&["x; platform_release >= '6'", "not a requirement !!"]);
        let dists = [dist("app", "1", &app, None)];
        let found = unmet(&dists, &bookworm());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|u| matches!(u, Unmet::Unreadable { .. })), "{found:?}");
    }
}
