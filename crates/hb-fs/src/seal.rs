//! Directories hb writes once and then shares read-only between actions and processes
//! (target roots and tool trees under a cache's `roots/`, a worker's `worker-roots/`),
//! sealed so that a change made to one on disk afterwards — by hand, by another program,
//! by a sandbox that escaped — is found before anything runs in it. The seal is a
//! fingerprint of every entry below the directory: its name, type, mode, owner, size,
//! inode, and modification and change times. The kernel moves a file's change time
//! forward on every write, chmod, chown, link or rename, and nothing can set it back,
//! so a fingerprint that still matches means no entry was altered, added or removed.
//! It is written beside the directory (`NAME.seal`, never inside: the tree stays exactly
//! what its digest says) when the directory is placed, and compared on first use in a
//! process; a directory whose seal is missing or differs is moved aside, removed and
//! written again from the store, and the caller warns.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::Digest as _;

use crate::{FsError, Result};

/// What [`dir_once_sealed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Sealed {
    /// Written now, or found with a matching seal.
    Intact,
    /// Found changed since it was sealed (or unsealed), and written again: say so.
    Rewritten { why: &'static str },
}

/// The fingerprint of everything below `dir` (its own entry excluded: renaming it into
/// place changes it).
pub fn fingerprint(dir: &Path) -> Result<[u8; 32]> {
    let mut h = sha2::Sha256::new();
    for entry in crate::walk_sorted(dir).min_depth(1) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(dir).to_path_buf();
            FsError::new("reading", &path, e.into())
        })?;
        let m = entry.metadata().map_err(|e| FsError::new("reading", entry.path(), e.into()))?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update([0]);
        for n in [
            u64::from(m.mode()),
            u64::from(m.uid()),
            u64::from(m.gid()),
            m.size(),
            m.ino(),
            m.dev(),
            m.nlink(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ] {
            h.update(n.to_le_bytes());
        }
    }
    Ok(h.finalize().into())
}

fn seal_path(base: &Path, name: &str) -> PathBuf {
    base.join(format!("{name}.seal"))
}

/// Directories checked in this process already (each is checked once per process).
static CHECKED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// [`crate::dir_once`] for a directory shared read-only: written by `fill` if absent
/// and sealed, else its seal checked (once per process) and, when it does not match,
/// written again. Returns the directory and whether it had to be rewritten.
pub fn dir_once_sealed<E: From<FsError>>(
    base: &Path,
    name: &str,
    fill: impl Fn(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<(PathBuf, Sealed), E> {
    let dir = base.join(name);
    let mut status = Sealed::Intact;
    if dir.is_dir() {
        if CHECKED.lock().unwrap_or_else(|p| p.into_inner()).contains(&dir) {
            return Ok((dir, Sealed::Intact));
        }
        // A directory another process has just renamed into place has its seal a
        // moment later: wait for it briefly before calling it unsealed.
        let mut seal = None;
        for _ in 0..50 {
            seal = std::fs::read(seal_path(base, name)).ok();
            if seal.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let now = fingerprint(&dir)?;
        match seal {
            Some(s) if s == now => {
                CHECKED.lock().unwrap_or_else(|p| p.into_inner()).push(dir.clone());
                return Ok((dir, Sealed::Intact));
            }
            Some(_) => status = Sealed::Rewritten { why: "it was changed on disk after hb wrote it" },
            None => status = Sealed::Rewritten { why: "it has no seal (written by an older hb, or cut short)" },
        }
        let aside = base.join(format!(".{name}.unsealed-{}", std::process::id()));
        crate::rename(&dir, &aside)?;
        remove_read_only_tree(&aside)?;
    }
    crate::create_dir_all(base)?;
    let tmp = tempfile::tempdir_in(base).map_err(|e| FsError::new("creating a directory in", base, e))?;
    fill(tmp.path())?;
    let seal = fingerprint(tmp.path())?;
    let staged = tmp.keep();
    match std::fs::rename(&staged, &dir) {
        Ok(()) => {
            crate::write_atomic(&seal_path(base, name), &seal, None)?;
        }
        Err(_) if dir.is_dir() => {
            // Another process placed it first; its seal is the one that counts.
            let _ = remove_read_only_tree(&staged);
        }
        Err(e) => return Err(FsError::new("placing", &dir, e).into()),
    }
    CHECKED.lock().unwrap_or_else(|p| p.into_inner()).push(dir.clone());
    Ok((dir, status))
}

/// Removes a tree whose directories may be read-only.
fn remove_read_only_tree(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in crate::walk_sorted(dir).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755));
        }
    }
    crate::remove_dir_all_if_exists(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_tree_is_found_and_written_again() {
        let base = tempfile::tempdir().unwrap();
        let fill = |d: &Path| -> Result<()> {
            std::fs::create_dir_all(d.join("usr/lib")).unwrap();
            std::fs::write(d.join("usr/lib/site.py"), "clean").unwrap();
            Ok(())
        };
        let (dir, s) = dir_once_sealed(base.path(), "r", fill).unwrap();
        assert_eq!(s, Sealed::Intact);
        let before = fingerprint(&dir).unwrap();
        assert_eq!(before, fingerprint(&dir).unwrap());
        // Tampered: content written (even with the same size), a file added.
        std::fs::write(dir.join("usr/lib/site.py"), "pwned").unwrap();
        assert_ne!(before, fingerprint(&dir).unwrap());
        CHECKED.lock().unwrap().clear();
        let (dir, s) = dir_once_sealed(base.path(), "r", fill).unwrap();
        assert!(matches!(s, Sealed::Rewritten { .. }), "{s:?}");
        assert_eq!(std::fs::read_to_string(dir.join("usr/lib/site.py")).unwrap(), "clean");
        std::fs::write(dir.join("usr/lib/sitecustomize.py"), "x").unwrap();
        CHECKED.lock().unwrap().clear();
        let (dir, s) = dir_once_sealed(base.path(), "r", fill).unwrap();
        assert!(matches!(s, Sealed::Rewritten { .. }), "{s:?}");
        assert!(!dir.join("usr/lib/sitecustomize.py").exists());
        CHECKED.lock().unwrap().clear();
        let (_, s) = dir_once_sealed(base.path(), "r", fill).unwrap();
        assert_eq!(s, Sealed::Intact);
    }
}
