//! hb's rule kinds, one module each, registered in [`crate::Rules::builtin`].

pub mod apt_repo;
pub mod build_step;
pub mod deb;
pub mod files;
pub mod python_app;
