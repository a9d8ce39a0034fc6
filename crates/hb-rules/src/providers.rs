//! The typed providers rules exchange (Bazel's `PyInfo`, `DefaultInfo`): what a target
//! offers the targets that depend on it. A provider holds facts known while planning
//! and handles ([`Input`]) to the actions whose results hold the rest.

use hb_engine::{AnyInput, Input};

use crate::actions::python::VenvFacts;
use crate::rule::Provider;

/// Files for a package's file system: a tree of paths relative to `/`, which a `deb`
/// containing the target merges into its data member.
#[derive(Clone, Debug)]
pub struct InstallTree {
    pub tree: AnyInput,
}
impl Provider for InstallTree {}

/// A Python application installed as a virtualenv.
#[derive(Clone, Debug)]
pub struct PythonApp {
    /// The virtualenv's install prefix on the target (`/usr/lib/demosite`).
    pub prefix: String,
    /// The target interpreter the venv runs (`/usr/bin/python3.11`).
    pub interpreter: String,
    /// Its version.
    pub python: (u32, u32),
    /// Its pyproject.toml, as written in its BUILD.toml.
    pub pyproject: String,
    /// The entry point a server runs, `module:attribute`.
    pub entry_point: String,
    /// PEP 503 names of the locked runtime distributions (what the venv will contain).
    pub requirements: Vec<String>,
    /// The venv action; its facts say whether it holds native code, the glibc it needs
    /// and its console scripts.
    pub venv: Input<VenvFacts>,
    /// The root its sdists were compiled in (the base root plus the compiler and its
    /// `build_depends`), when it has any: the libraries they link are described there.
    pub compile_root: Option<Input<()>>,
    /// The locked files of the platform being built that are not installed: build
    /// requirements and compiled sdists (what an SBOM lists as build inputs).
    pub build_files: Vec<hb_fetch::LockedFile>,
    pub sdists: Vec<hb_fetch::LockedFile>,
    /// The locked runtime wheels of the platform being built (file names).
    pub locked_wheels: Vec<String>,
    /// The packages of the root its sdists compiled in, else of the base root (none
    /// without the sandbox), as an SBOM lists them (see [`crate::roots::RootSummary`]).
    pub root_packages: crate::roots::RootSummary,
}
impl Provider for PythonApp {}

impl PythonApp {
    /// Whether the locked runtime distributions include `name` (PEP 503 normalized).
    pub fn requires(&self, name: &str) -> bool {
        self.requirements.iter().any(|r| r == name)
    }
}

/// A Debian binary package.
#[derive(Clone, Debug)]
pub struct DebPackage {
    pub package: String,
    pub version: String,
    pub architecture: String,
    /// `NAME_VERSION_ARCH.deb`.
    pub file_name: String,
    /// The action whose tree is the `.deb`.
    pub deb: AnyInput,
}
impl Provider for DebPackage {}
