//! The actions rules expand into, one module per family. Each is an
//! [`hb_engine::Action`] with named, typed inputs and typed facts; none reads the
//! workspace except through its declared sources.

pub mod apt_repo;
pub mod deb;
pub mod exec;
pub mod files;
pub mod python;
pub mod render;
pub mod root;
pub mod sbom;
pub mod shlibs;
pub mod sources;
pub mod step;
