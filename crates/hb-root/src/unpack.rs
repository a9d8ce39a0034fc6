//! Unpacking a root's `.deb` files into one tree, the way dpkg would place their data
//! but without running any maintainer script: packages are applied in name order (a
//! path shipped twice keeps the later package's), `/bin`, `/sbin` and `/lib*` are the
//! merged-/usr symlinks into `/usr` and what packages ship there lands under `/usr`,
//! hard links become copies, devices and fifos are dropped, and modes are normalized
//! to 0755/0644 (no setuid in a build root). Directories a sandbox mounts over (`proc`,
//! `dev`, `tmp`, the work directory) are added, empty.

use std::collections::BTreeMap;

use hb_diff::{Content, EntryKind as DebKind};
use hb_store::{Digest, EntryKind, TreeEntry};

use crate::RootError;

/// Top-level directories that are symlinks into `/usr` in a merged-/usr system.
const MERGED: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Empty directories every root has, for the sandbox's mounts.
pub const MOUNT_POINTS: &[&str] = &["dev", "proc", "tmp", "hb", "hb/build", "hb/home", "root", "run", "var/tmp"];

/// Where a dpkg path ("/lib/x/y") goes in the merged-/usr root ("usr/lib/x/y");
/// `None` for the root itself.
fn place(dpkg_path: &str) -> Option<String> {
    let rel = dpkg_path.trim_start_matches('/');
    if rel.is_empty() {
        return None;
    }
    let first = rel.split('/').next().unwrap_or(rel);
    if MERGED.contains(&first) { Some(format!("usr/{rel}")) } else { Some(rel.to_string()) }
}

/// Builds the root's entries from `debs` (name, path of the verified `.deb`), storing
/// file contents with `put`.
pub fn unpack(
    debs: &[(String, std::path::PathBuf)],
    put: &mut dyn FnMut(&[u8]) -> Result<Digest, RootError>,
) -> Result<Vec<TreeEntry>, RootError> {
    let mut entries: BTreeMap<String, TreeEntry> = BTreeMap::new();
    for d in MOUNT_POINTS {
        entries.insert(d.to_string(), TreeEntry::dir(*d));
    }
    let mut sorted: Vec<&(String, std::path::PathBuf)> = debs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, path) in sorted {
        let deb = hb_diff::read_deb_keeping(path, u64::MAX)
            .map_err(|e| RootError::Unpack { package: name.clone(), detail: e.to_string() })?;
        // Contents by dpkg path, for hard links.
        let mut contents: BTreeMap<&str, (Digest, u64, bool)> = BTreeMap::new();
        for (dpkg_path, e) in &deb.data {
            let Some(rel) = place(dpkg_path) else { continue };
            if !hb_store::tree::is_clean_relative(&rel) {
                return Err(RootError::Unpack {
                    package: name.clone(),
                    detail: format!("unsafe path {dpkg_path:?} in its data"),
                });
            }
            if rel.strip_prefix("usr/").is_some_and(|top| MERGED.contains(&top)) {
                // A package shipping `/lib64` itself (a symlink or directory): the root
                // has its own merged-/usr links.
                if !matches!(e.kind, DebKind::Dir) {
                    continue;
                }
            }
            let entry = match &e.kind {
                DebKind::Dir => TreeEntry::dir(rel.clone()),
                DebKind::File => {
                    let bytes = match &e.content {
                        Some(Content::Bytes(b)) => b,
                        _ => {
                            return Err(RootError::Unpack {
                                package: name.clone(),
                                detail: format!("{dpkg_path}: content not read"),
                            });
                        }
                    };
                    let digest = put(bytes)?;
                    let exec = e.mode & 0o111 != 0;
                    contents.insert(dpkg_path.as_str(), (digest, bytes.len() as u64, exec));
                    TreeEntry::file(rel.clone(), digest, bytes.len() as u64, exec)
                }
                DebKind::Symlink { target } => TreeEntry::symlink(rel.clone(), target.clone()),
                DebKind::Hardlink { target } => match contents.get(target.as_str()) {
                    Some((digest, size, exec)) => TreeEntry::file(rel.clone(), *digest, *size, *exec),
                    None => {
                        return Err(RootError::Unpack {
                            package: name.clone(),
                            detail: format!("{dpkg_path} is a hard link to {target}, which comes later or not at all"),
                        });
                    }
                },
                _ => continue,
            };
            match entries.get(&rel) {
                // A directory stays a directory when another package ships it too.
                Some(old) if old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {}
                _ => {
                    entries.insert(rel, entry);
                }
            }
        }
    }
    for m in MERGED {
        let usr = format!("usr/{m}");
        if entries.contains_key(&usr) || *m == "bin" || *m == "sbin" || *m == "lib" {
            entries.entry(usr.clone()).or_insert_with(|| TreeEntry::dir(usr.clone()));
            entries.insert(m.to_string(), TreeEntry::symlink(*m, usr));
        }
    }
    // Every file's parent directories exist as entries.
    let paths: Vec<String> = entries.keys().cloned().collect();
    for p in paths {
        let mut parent = p.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            entries.entry(up.to_string()).or_insert_with(|| TreeEntry::dir(up));
            parent = up;
        }
    }
    Ok(entries.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_placement() {
        assert_eq!(place("/lib/x86_64-linux-gnu/libc.so.6").as_deref(), Some("usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert_eq!(place("/lib64/ld-linux-x86-64.so.2").as_deref(), Some("usr/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(place("/usr/bin/python3.11").as_deref(), Some("usr/bin/python3.11"));
        assert_eq!(place("/libexec/x").as_deref(), Some("libexec/x"));
        assert_eq!(place("/"), None);
    }
}
