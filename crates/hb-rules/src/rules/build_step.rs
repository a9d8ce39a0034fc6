//! `[[build_step]]`: a command run at build time (Bazel's genrule), such as Django's
//! `collectstatic` or a frontend asset build. It runs in the sandbox with the platform's
//! target root as `/`, its `srcs` at `/hb/build/src` (the working directory), its
//! `tools` (targets whose install trees, like an app's virtualenv, appear read-only at
//! their install paths), no network and a timeout. What it writes under its declared
//! `outs` in `/hb/build/out` becomes a tree installed under `dest`; writing anything
//! else, or missing a declared output, fails the step. Expands into one `build_step`
//! action (plus the shared root actions); provides an [`InstallTree`], so a `deb`
//! installs it like `files`.

use std::collections::{BTreeMap, BTreeSet};

use hb_config::{ConfigError, Label, Package};
use serde::Deserialize;
use toml::Spanned;

use crate::actions::files::FilesJob;
use crate::actions::step::{OUT_DIR, SRC_DIR, StepJob};
use crate::providers::{InstallTree, PythonApp};
use crate::rule::{Cx, Providers, Rule};
use crate::{RulesError, placeholders, short};

/// The placeholders of a step's `cmd` and `env`.
const PLACEHOLDERS: &[&str] = &["src", "out", "prefix"];

/// The `build_step` rule.
pub struct BuildStep;

/// `[[build_step]]` attributes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildStepAttrs {
    pub name: Spanned<String>,
    /// Source globs relative to the package directory, placed under `{src}`.
    #[serde(default)]
    pub srcs: Vec<Spanned<String>>,
    /// Targets whose install trees the command uses (a python_app: its virtualenv at
    /// its prefix).
    #[serde(default)]
    pub tools: Vec<Spanned<String>>,
    /// The command: a program and its arguments, with `{src}`, `{out}` and `{prefix}`.
    pub cmd: Spanned<Vec<Spanned<String>>>,
    /// Variables added to the sandbox's fixed environment (placeholders allowed).
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<String>>,
    /// What the command writes under `{out}`: files, or directories written with a
    /// trailing `/`.
    pub outs: Spanned<Vec<Spanned<String>>>,
    /// The absolute directory the outputs are installed under.
    pub dest: Spanned<String>,
    /// Seconds the command may run before it and everything it started are killed.
    #[serde(default = "default_timeout")]
    pub timeout: Spanned<u64>,
}

fn default_timeout() -> Spanned<u64> {
    Spanned::new(0..0, 600)
}

/// The longest timeout a step may ask for: a day.
const MAX_TIMEOUT: u64 = 86_400;

/// What analysis found: the command and environment with placeholders replaced.
pub struct Analysis {
    cmd: Vec<String>,
    env: BTreeMap<String, String>,
    tools: Vec<(String, hb_engine::AnyInput)>,
}

impl Rule for BuildStep {
    const KIND: &'static str = "build_step";
    type Attrs = BuildStepAttrs;
    type Analysis = Analysis;

    fn name(attrs: &BuildStepAttrs) -> &Spanned<String> {
        &attrs.name
    }

    fn deps(attrs: &BuildStepAttrs) -> Vec<Spanned<String>> {
        attrs.tools.clone()
    }

    fn check(pkg: &Package, s: &BuildStepAttrs) -> Result<(), ConfigError> {
        hb_config::build_file::check_globs(pkg, &s.srcs)?;
        if s.cmd.get_ref().is_empty() {
            return Err(pkg.error(s.cmd.span(), "`cmd` is empty: give the program and its arguments"));
        }
        for arg in s.cmd.get_ref() {
            placeholders::split(arg.get_ref(), PLACEHOLDERS).map_err(|why| pkg.error(arg.span(), why))?;
        }
        for (key, value) in &s.env {
            if !valid_env_name(key) {
                return Err(pkg.error(value.span(), format!("`{key}` is not a variable name (letters, digits, `_`)")));
            }
            placeholders::split(value.get_ref(), PLACEHOLDERS).map_err(|why| pkg.error(value.span(), why))?;
        }
        check_outs(pkg, &s.outs)?;
        let dest = s.dest.get_ref();
        if !(dest.starts_with('/') && (dest == "/" || hb_config::build_file::clean_absolute(dest))) {
            return Err(pkg.error(
                s.dest.span(),
                "`dest` must be a clean absolute path on the target system, like \"/usr/share/myapp\"",
            ));
        }
        let t = *s.timeout.get_ref();
        if t == 0 || t > MAX_TIMEOUT {
            return Err(pkg.error(s.timeout.span(), format!("`timeout` is in seconds, from 1 to {MAX_TIMEOUT}")));
        }
        Ok(())
    }

    fn analyse(&self, cx: &Cx, s: &BuildStepAttrs) -> Result<Analysis, RulesError> {
        if cx.opts.sandbox == hb_sandbox::Mode::Off {
            return Err(cx.invalid(
                s.name.span(),
                format!("{}: {}", cx.label(), hb_sandbox::SandboxError::Needed { what: "a build step".to_string() }),
            ));
        }
        let mut tools = Vec::new();
        let mut prefixes = Vec::new();
        for written in &s.tools {
            let label = Label::parse(written.get_ref(), Some(&cx.target.label.package))
                .map_err(|e| cx.invalid(written.span(), e.to_string()))?;
            let providers = cx.dep(&label).ok_or_else(|| {
                cx.invalid(written.span(), format!("{label} is not built before this step (a bug in hb)"))
            })?;
            let Some(tree) = providers.get::<InstallTree>() else {
                return Err(cx.invalid(
                    written.span(),
                    format!(
                        "{label} installs no files, so it cannot be a tool (tools are python_app or files targets)"
                    ),
                ));
            };
            if let Some(app) = providers.get::<PythonApp>() {
                prefixes.push((label.to_string(), app.prefix.clone()));
            }
            tools.push((label.to_string(), tree.tree));
        }
        let expand = |text: &Spanned<String>| {
            placeholders::expand(text.get_ref(), PLACEHOLDERS, |name| match name {
                "src" => Ok(SRC_DIR.to_string()),
                "out" => Ok(OUT_DIR.to_string()),
                _ => match prefixes.as_slice() {
                    [(_, prefix)] => Ok(prefix.clone()),
                    [] => {
                        Err("`{prefix}` is the virtualenv of the step's python_app tool, and `tools` lists none".into())
                    }
                    several => {
                        let names: Vec<String> = several.iter().map(|(l, p)| format!("{l} ({p})")).collect();
                        Err(format!(
                            "`{{prefix}}` is ambiguous: the tools {} each have one; write the path instead",
                            names.join(", ")
                        ))
                    }
                },
            })
            .map_err(|why| cx.invalid(text.span(), why))
        };
        let cmd = s.cmd.get_ref().iter().map(&expand).collect::<Result<Vec<_>, _>>()?;
        let env =
            s.env.iter().map(|(k, v)| Ok((k.clone(), expand(v)?))).collect::<Result<BTreeMap<_, _>, RulesError>>()?;
        Ok(Analysis { cmd, env, tools })
    }

    fn expand(&self, cx: &mut Cx, s: &BuildStepAttrs, a: Analysis) -> Result<Providers, RulesError> {
        let name = cx.label();
        let root = crate::roots::root_input(cx)?;
        let files = FilesJob {
            label: name.clone(),
            dir: cx.package.dir.clone(),
            patterns: s.srcs.iter().map(|p| (p.get_ref().clone(), short(&cx.locate(p.span())))).collect(),
            dest: "/".to_string(),
            strip_prefix: String::new(),
            exact: false,
        };
        let job = StepJob {
            label: name.clone(),
            files,
            root,
            tools: a.tools,
            cmd: a.cmd,
            env: a.env,
            outs: s.outs.get_ref().iter().map(|o| o.get_ref().clone()).collect(),
            dest: s.dest.get_ref().clone(),
            mtime: cx.settings.source_date_epoch(),
            platform: cx.platform,
            timeout: *s.timeout.get_ref(),
            timeout_at: short(&cx.locate(s.timeout.span())),
            limits: crate::actions::exec::Bounds::of(cx.settings).limits,
        };
        let tree = cx.actions.add(name, job).any();
        Ok(Providers::new(tree).with(InstallTree { tree }))
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Outputs are clean relative paths (a trailing `/` for a directory), none twice and
/// none inside another.
fn check_outs(pkg: &Package, outs: &Spanned<Vec<Spanned<String>>>) -> Result<(), ConfigError> {
    if outs.get_ref().is_empty() {
        return Err(pkg.error(outs.span(), "`outs` is empty: name the files (or `dir/` directories) the step writes"));
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for out in outs.get_ref() {
        let path = out.get_ref().strip_suffix('/').unwrap_or(out.get_ref());
        let clean = !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean || path.starts_with('/') {
            return Err(pkg.error(
                out.span(),
                "an output is a clean path relative to `{out}`, like \"static/\" (a directory) or \"app.css\"",
            ));
        }
        if !seen.insert(path) {
            return Err(pkg.error(out.span(), format!("`{path}` is listed twice")));
        }
    }
    for out in outs.get_ref() {
        let path = out.get_ref().trim_end_matches('/');
        if let Some(outer) = seen.iter().find(|o| path.strip_prefix(**o).is_some_and(|r| r.starts_with('/'))) {
            return Err(pkg.error(out.span(), format!("`{path}` is inside the output `{outer}/` already")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert!(valid_env_name("DJANGO_SETTINGS_MODULE") && valid_env_name("_x1"));
        assert!(!valid_env_name("1X") && !valid_env_name("A-B") && !valid_env_name(""));
    }
}
