//! `[[apt_repo]]`: a signed apt repository of the debs built by other targets, written
//! to `hb-out/<package>/<name>/` (`pool/`, `dists/SUITE/`) ready to be served over
//! HTTP. Expands into one `apt_repo` action reading each deb target's package; the
//! signing key comes from `HB_APT_SIGNING_KEY_FILE` or `[workspace]
//! apt_signing_key_file` (an armored OpenPGP secret key, as `gpg --export-secret-keys
//! --armor` writes it). Without one the repository is unsigned, and apt will only use
//! it with `[trusted=yes]`.

use hb_config::{ConfigError, Package};
use serde::Deserialize;
use toml::Spanned;

use crate::RulesError;
use crate::actions::apt_repo::{AptRepoJob, RepoDeb, RepoKey, RepoMeta};
use crate::providers::DebPackage;
use crate::rule::{Cx, Providers, Rule};

/// The `apt_repo` rule.
pub struct AptRepo;

/// `[[apt_repo]]` attributes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AptRepoAttrs {
    pub name: Spanned<String>,
    /// The deb targets it holds.
    pub debs: Vec<Spanned<String>>,
    /// The suite clients name in their sources (`stable`).
    pub suite: Spanned<String>,
    /// Default: the suite.
    pub codename: Option<Spanned<String>>,
    /// One component (default `main`).
    #[serde(default = "default_components")]
    pub components: Spanned<Vec<String>>,
    /// Default: the architecture of the platform being built.
    pub architectures: Option<Spanned<Vec<String>>>,
    pub origin: Spanned<String>,
    /// Default: the origin.
    pub label: Option<Spanned<String>>,
    pub description: Option<Spanned<String>>,
}

fn default_components() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["main".to_string()])
}

/// A Release field value: one line of printable text.
fn field_ok(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_control())
}

/// A suite, codename or component: what apt puts in a URL path.
fn word_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+~".contains(&b)) && !s.starts_with('.')
}

impl Rule for AptRepo {
    const KIND: &'static str = "apt_repo";
    type Attrs = AptRepoAttrs;
    type Analysis = ();

    fn name(attrs: &AptRepoAttrs) -> &Spanned<String> {
        &attrs.name
    }

    fn deps(attrs: &AptRepoAttrs) -> Vec<Spanned<String>> {
        attrs.debs.clone()
    }

    fn check(pkg: &Package, r: &AptRepoAttrs) -> Result<(), ConfigError> {
        if r.debs.is_empty() {
            return Err(pkg.error(r.name.span(), "`debs` is empty: list the deb targets the repository holds"));
        }
        for w in [Some(&r.suite), r.codename.as_ref()].into_iter().flatten() {
            if !word_ok(w.get_ref()) {
                return Err(pkg.error(w.span(), "a suite or codename is letters, digits and `-_.+~`, like \"stable\""));
            }
        }
        match r.components.get_ref().as_slice() {
            [one] if word_ok(one) => {}
            _ => {
                return Err(pkg.error(
                    r.components.span(),
                    "`components` names exactly one component (letters, digits, `-_.+~`), like [\"main\"]",
                ));
            }
        }
        if let Some(a) = &r.architectures
            && (a.get_ref().is_empty() || a.get_ref().iter().any(|x| !word_ok(x) || x == "all"))
        {
            return Err(pkg.error(a.span(), "`architectures` lists Debian architectures, like [\"amd64\", \"arm64\"]"));
        }
        for f in [Some(&r.origin), r.label.as_ref(), r.description.as_ref()].into_iter().flatten() {
            if !field_ok(f.get_ref()) {
                return Err(pkg.error(f.span(), "one line of text, without control characters"));
            }
        }
        Ok(())
    }

    fn analyse(&self, _cx: &Cx, _attrs: &AptRepoAttrs) -> Result<(), RulesError> {
        Ok(())
    }

    fn expand(&self, cx: &mut Cx, r: &AptRepoAttrs, _: ()) -> Result<Providers, RulesError> {
        let mut debs = Vec::new();
        for (label, at, providers) in cx.deps() {
            let Some(d) = providers.get::<DebPackage>() else {
                return Err(RulesError::Invalid {
                    message: format!("{label} is not a deb target; `debs` lists deb targets"),
                    location: at.clone(),
                });
            };
            debs.push(RepoDeb {
                deb: d.deb,
                file_name: d.file_name.clone(),
                package: d.package.clone(),
                architecture: d.architecture.clone(),
            });
        }
        let architectures = match &r.architectures {
            Some(a) => a.get_ref().clone(),
            None => vec![cx.platform.architecture.to_string()],
        };
        for d in &debs {
            if d.architecture != "all" && !architectures.contains(&d.architecture) {
                return Err(cx.invalid(
                    r.name.span(),
                    format!(
                        "{} is for {}, which is not among the repository's architectures ({}); add it to `architectures`",
                        d.file_name,
                        d.architecture,
                        architectures.join(", ")
                    ),
                ));
            }
        }
        let key = match &cx.opts.apt_signing_key {
            Some(file) => {
                let bytes = hb_fs::read(file).map_err(|e| {
                    cx.invalid(
                        r.name.span(),
                        format!("the apt signing key (HB_APT_SIGNING_KEY_FILE / apt_signing_key_file): {e}"),
                    )
                })?;
                Some(RepoKey { file: file.clone(), digest: blake3::hash(&bytes).to_hex().to_string() })
            }
            None => None,
        };
        let suite = r.suite.get_ref().clone();
        let meta = RepoMeta {
            codename: r.codename.as_ref().map_or_else(|| suite.clone(), |c| c.get_ref().clone()),
            suite,
            component: r.components.get_ref().first().cloned().unwrap_or_else(|| "main".to_string()),
            architectures,
            origin: r.origin.get_ref().clone(),
            label: r.label.as_ref().map_or_else(|| r.origin.get_ref().clone(), |l| l.get_ref().clone()),
            description: r.description.as_ref().map(|d| d.get_ref().clone()),
            date: cx.settings.source_date_epoch(),
        };
        let name = cx.label();
        let job = AptRepoJob { label: name.clone(), dir: r.name.get_ref().clone(), debs, meta, key };
        let out = cx.actions.add(name, job).any();
        Ok(Providers::new(out))
    }
}
