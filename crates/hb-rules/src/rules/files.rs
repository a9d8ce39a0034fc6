//! `[[files]]`: files of the package, matched by patterns, installed under one
//! directory of the target system. Expands into one `files` action; provides an
//! [`InstallTree`].

use hb_config::{ConfigError, Package};
use serde::Deserialize;
use toml::Spanned;

use crate::actions::files::FilesJob;
use crate::providers::InstallTree;
use crate::rule::{Cx, Providers, Rule};
use crate::{RulesError, short};

/// The `files` rule.
pub struct Files;

/// `[[files]]` attributes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesAttrs {
    pub name: Spanned<String>,
    /// Glob patterns relative to the package directory.
    pub srcs: Vec<Spanned<String>>,
    /// Absolute install directory; each file keeps its path relative to `strip_prefix`.
    pub dest: Spanned<String>,
    #[serde(default)]
    pub strip_prefix: String,
}

impl Rule for Files {
    const KIND: &'static str = "files";
    type Attrs = FilesAttrs;
    type Analysis = ();

    fn name(attrs: &FilesAttrs) -> &Spanned<String> {
        &attrs.name
    }

    fn check(pkg: &Package, f: &FilesAttrs) -> Result<(), ConfigError> {
        let dest = f.dest.get_ref();
        if !(dest == "/" || hb_config::build_file::clean_absolute(dest) && dest.starts_with('/')) {
            return Err(pkg.error(
                f.dest.span(),
                "`dest` must be a clean absolute path on the target system (no `.` or `..`), like \"/etc/myapp\"",
            ));
        }
        hb_config::build_file::check_globs(pkg, &f.srcs)
    }

    fn analyse(&self, _cx: &Cx, _attrs: &FilesAttrs) -> Result<(), RulesError> {
        Ok(())
    }

    fn expand(&self, cx: &mut Cx, f: &FilesAttrs, _: ()) -> Result<Providers, RulesError> {
        let name = cx.label();
        let job = FilesJob {
            label: name.clone(),
            dir: cx.package.dir.clone(),
            patterns: f.srcs.iter().map(|s| (s.get_ref().clone(), short(&cx.locate(s.span())))).collect(),
            dest: f.dest.get_ref().clone(),
            strip_prefix: f.strip_prefix.clone(),
            exact: false,
        };
        let tree = cx.actions.add(name, job).any();
        Ok(Providers::new(tree).with(InstallTree { tree }))
    }
}
