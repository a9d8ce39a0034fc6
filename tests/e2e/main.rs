//! End-to-end tests: the real `hb` binary against real workspaces, real dpkg-deb,
//! lintian, faketime and signals. Each test tells one story.

mod harness;

mod apt_repo;
mod bad_input;
mod build;
mod cache;
mod check;
mod hostile;
mod hostile_build;
mod hostile_fetch;
mod index;
mod init;
mod install_test;
mod native;
mod platforms;
mod projects;
mod pylock;
mod python;
mod reapi;
mod remote;
mod remote_exec;
mod reproducible;
mod sbom;
mod service;
mod shlibs;
mod snapshots;
mod steps;
mod systemd;
