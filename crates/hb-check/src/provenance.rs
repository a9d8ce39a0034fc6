//! `hb provenance verify`: a deb against its signed provenance. The envelope must be
//! signed by a trusted key (`hb_sbom::provenance::open`), its subject must be the deb's
//! sha256, and, given the workspace's locks, every Python file and root package it
//! lists must be locked with the same sha256 (a statement whose inputs disagree with
//! the lock describes another build).

use hb_fetch::Lock;
use hb_root::RootLock;
use hb_sbom::provenance::{self, ProvenanceError};

/// The locks of the workspace the deb is checked in.
pub struct Locks {
    /// Each python_app's lock, with its path as shown.
    pub python: Vec<(String, Lock)>,
    pub root: Option<RootLock>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Envelope(#[from] ProvenanceError),
    #[error("the provenance states no subject")]
    NoSubject,
    #[error(
        "the deb is not the one the provenance describes: its sha256 is {actual}, the statement's subject {name} has {stated}"
    )]
    Subject { name: String, stated: String, actual: String },
    #[error("the provenance's inputs disagree with the locks:\n{0}")]
    Inputs(String),
}

/// Checks `envelope` for a deb whose sha256 is `deb_sha256`; returns what was checked,
/// a line each.
pub fn check(
    envelope: &str,
    trusted: &[ed25519_dalek::VerifyingKey],
    deb_sha256: &str,
    locks: Option<&Locks>,
) -> Result<Vec<String>, CheckError> {
    let v = provenance::open(envelope, trusted)?;
    let (name, stated) = v.subject().ok_or(CheckError::NoSubject)?;
    if stated != deb_sha256 {
        return Err(CheckError::Subject {
            name: name.to_string(),
            stated: stated.to_string(),
            actual: deb_sha256.to_string(),
        });
    }
    let mut report = vec![
        format!("signed by trusted key {}", v.keyid),
        format!("subject {name}: sha256 {stated} matches"),
        format!(
            "built as {} for {}",
            v.parameter("label").unwrap_or("(no label)"),
            v.parameter("platform").unwrap_or("(no platform)")
        ),
    ];
    let Some(locks) = locks else {
        report.push("not in a workspace: the inputs were not compared with any lock".to_string());
        return Ok(report);
    };
    let mut problems = Vec::new();
    let deps = v.dependencies();
    for (file, uri, sha256) in &deps {
        if uri.starts_with("pkg:pypi/") {
            let found: Vec<(&str, &str)> = locks
                .python
                .iter()
                .flat_map(|(path, lock)| {
                    lock.packages.iter().filter(|p| p.file == *file).map(move |p| (path.as_str(), p.sha256.as_str()))
                })
                .collect();
            if found.is_empty() {
                problems.push(format!("  {file} is in no hb.lock of the workspace"));
            } else if !found.iter().any(|(_, s)| s == sha256) {
                let (path, locked) = found[0];
                problems.push(format!("  {file}: the provenance says sha256 {sha256}, {path} says {locked}"));
            }
        } else if uri.starts_with("pkg:deb/") {
            let Some(root) = &locks.root else {
                problems.push(format!("  {file}: the workspace has no {}", hb_root::ROOT_LOCK));
                continue;
            };
            let found = root
                .roots
                .iter()
                .flat_map(|r| &r.package)
                .find(|p| format!("{}_{}_{}", p.name, p.version, p.architecture) == *file);
            match found {
                None => problems.push(format!("  root package {file} is not in {}", hb_root::ROOT_LOCK)),
                Some(p) if p.sha256 != *sha256 => problems.push(format!(
                    "  root package {file}: the provenance says sha256 {sha256}, {} says {}",
                    hb_root::ROOT_LOCK,
                    p.sha256
                )),
                Some(_) => {}
            }
        }
    }
    if !problems.is_empty() {
        return Err(CheckError::Inputs(problems.join("\n")));
    }
    report.push(format!("{} inputs match the workspace's locks", deps.len()));
    Ok(report)
}
