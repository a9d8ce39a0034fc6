//! Rules: from declared targets to the action graph. Each rule kind (`files`,
//! `python_app`, `deb`) is a module of [`rules`] implementing [`rule::Rule`]: its schema,
//! its analysis and its expansion into the [`actions`], returning typed
//! [`providers`] that its dependents consume. [`plan`] walks the targets and has each
//! rule expand them; [`build`] runs a build request end to end.

pub mod actions;
pub mod build;
pub mod init;
pub mod placeholders;
pub mod plan;
pub mod poetry;
pub mod providers;
pub mod pyproject;
pub mod roots;
pub mod rule;
pub mod rules;
pub mod service;

#[cfg(test)]
mod tests;

use hb_config::{ConfigError, Location};

pub use plan::{Plan, collect, plan};
pub use rule::{Cx, Provider, Providers, Rule, Rules};

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("dependency cycle: {cycle}\n  --> {location}")]
    Cycle { cycle: String, location: Location },
    #[error("{message}\n  --> {location}")]
    Invalid { message: String, location: Location },
    #[error("{0}")]
    Other(String),
}

/// `file:line:col` of a location, for one-line messages.
pub fn short(loc: &Location) -> String {
    format!("{}:{}:{}", loc.file.display(), loc.line, loc.col)
}

/// Choices of the build request that shape actions without entering their keys.
#[derive(Clone, Debug)]
pub struct PlanOptions {
    pub sandbox: hb_sandbox::Mode,
    /// Where the private apt that fetches root packages keeps its state (HB_APT_DIR);
    /// default `apt/` in the cache directory.
    pub apt_dir: Option<std::path::PathBuf>,
    /// Place outputs in `hb-out/<platform>/<package>/` rather than `hb-out/<package>/`
    /// (when several platforms are built, or another than the default).
    pub platform_out_dir: bool,
    /// The key signing each deb's provenance (none: no provenance is written). Only
    /// its public half enters action keys.
    pub provenance_key: Option<std::sync::Arc<ed25519_dalek::SigningKey>>,
    /// The armored OpenPGP secret key signing apt repositories (none: unsigned).
    pub apt_signing_key: Option<std::path::PathBuf>,
    /// Where parsed forms of large workspace files (hb-root.lock) are kept between
    /// builds (in the cache directory); none: parse them every time.
    pub parsed_cache: Option<std::path::PathBuf>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            sandbox: hb_sandbox::Mode::Bwrap,
            apt_dir: None,
            platform_out_dir: false,
            provenance_key: None,
            apt_signing_key: None,
            parsed_cache: None,
        }
    }
}
