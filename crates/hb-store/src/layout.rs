//! The on-disk layout of a cache directory, shared by hb's local store and the
//! directory `hb cache serve` keeps: blobs at `cas/<2 hex>/<64 hex>`, action-cache
//! entries at `ac/<2 hex>/<64 hex>`, writes in progress in `tmp/`. This module is the
//! only place that knows these names; [`scan`] lists what a directory holds (only
//! regular files with well-formed names, so nothing else there is ever touched), and
//! [`stats`] and [`gc`] (least recently used first, by mtime) work on it.

use std::io;
use std::path::{Path, PathBuf};

use filetime::FileTime;
use hb_fs::{Context, FsError};

/// The directory of writes in progress.
pub const TMP: &str = "tmp";

/// The two content namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Blobs, named by their blake3 digest.
    Cas,
    /// Action-cache entries, named by action key.
    Ac,
}

impl Namespace {
    pub fn dir_name(self) -> &'static str {
        match self {
            Namespace::Cas => "cas",
            Namespace::Ac => "ac",
        }
    }
}

/// Whether `s` is exactly 64 lowercase hex digits (a blake3 digest or an action key).
pub fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_hex2(s: &str) -> bool {
    s.len() == 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where the file named `hex` (64 hex digits) of `ns` lives under `root`.
pub fn path(root: &Path, ns: Namespace, hex: &str) -> PathBuf {
    root.join(ns.dir_name()).join(hex.get(..2).unwrap_or("00")).join(hex)
}

/// Creates the layout's directories under `root`.
pub fn create(root: &Path) -> Result<(), FsError> {
    for sub in [Namespace::Cas.dir_name(), Namespace::Ac.dir_name(), TMP] {
        hb_fs::create_dir_all(&root.join(sub))?;
    }
    Ok(())
}

/// One stored file, as found by [`scan`].
#[derive(Debug, Clone)]
pub struct Stored {
    pub namespace: Namespace,
    pub path: PathBuf,
    pub len: u64,
    /// Last use (set when stored and, by the server, on every read).
    pub mtime: FileTime,
}

/// Lists the blobs and entries under `root`: only regular files named by 64 hex digits in
/// the directory of their first two, so that anything else there is never touched.
pub fn scan(root: &Path) -> Result<Vec<Stored>, FsError> {
    let mut out = Vec::new();
    for namespace in [Namespace::Cas, Namespace::Ac] {
        let dir = root.join(namespace.dir_name());
        let subdirs = match hb_fs::read_dir_sorted(&dir) {
            Err(e) if e.is_not_found() => continue,
            r => r?,
        };
        for sub in subdirs {
            let sub_name = sub.file_name();
            let Some(prefix) = sub_name.to_str().filter(|n| is_hex2(n)) else { continue };
            let sub_path = sub.path();
            let files = match hb_fs::read_dir_sorted(&sub_path) {
                Err(e) if e.is_not_found() => continue,
                Err(e) if e.cause.kind() == io::ErrorKind::NotADirectory => continue,
                r => r?,
            };
            for f in files {
                let name = f.file_name();
                if !name.to_str().is_some_and(|n| is_hex64(n) && n.starts_with(prefix)) {
                    continue;
                }
                let path = f.path();
                let meta = match f.metadata() {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                    r => r.ctx("reading metadata of", &path)?,
                };
                if meta.is_file() {
                    let mtime = FileTime::from_last_modification_time(&meta);
                    out.push(Stored { namespace, path, len: meta.len(), mtime });
                }
            }
        }
    }
    Ok(out)
}

/// Least recently used first (ties broken by path, so the order is always the same).
pub fn sort_lru(files: &mut [Stored]) {
    files.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
}

/// What a directory holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub entries: u64,
    pub entry_bytes: u64,
}

/// Counts the blobs (`cas/xx/<hex>`) and action-cache entries (`ac/xx/<hex>`) under `dir`:
/// a server's directory, or hb's local store root, which has the same layout.
pub fn stats(dir: &Path) -> Result<Stats, FsError> {
    hb_fs::metadata(dir)?;
    let mut s = Stats::default();
    for f in scan(dir)? {
        match f.namespace {
            Namespace::Cas => (s.blobs, s.blob_bytes) = (s.blobs + 1, s.blob_bytes + f.len),
            Namespace::Ac => (s.entries, s.entry_bytes) = (s.entries + 1, s.entry_bytes + f.len),
        }
    }
    Ok(s)
}

/// Deletes least-recently-used (oldest mtime) files of `cas/` and `ac/` until their total
/// is at most `max_size`; returns the number of files removed and the bytes freed.
pub fn gc(dir: &Path, max_size: u64) -> Result<(u64, u64), FsError> {
    hb_fs::metadata(dir)?;
    let mut files = scan(dir)?;
    sort_lru(&mut files);
    let mut total: u64 = files.iter().map(|f| f.len).sum();
    let (mut removed, mut freed) = (0, 0);
    for f in files {
        if total <= max_size {
            break;
        }
        hb_fs::remove_file_if_exists(&f.path)?;
        total -= f.len;
        removed += 1;
        freed += f.len;
    }
    Ok((removed, freed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    #[test]
    fn stats_and_gc_on_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for (i, kind) in ["cas", "cas", "ac", "cas"].iter().enumerate() {
            let bytes = vec![i as u8; 100 * (i + 1)];
            let h = hex_of(&bytes);
            let p = d.path().join(kind).join(&h[..2]).join(&h);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &bytes).unwrap();
            filetime::set_file_mtime(&p, FileTime::from_unix_time(1_000_000 + i as i64, 0)).unwrap();
            names.push(p);
        }
        // Things that are not blobs are neither counted nor deleted.
        std::fs::write(d.path().join("cas").join("README"), "x").unwrap();
        let odd = d.path().join("cas/zz");
        std::fs::create_dir_all(&odd).unwrap();
        std::fs::write(odd.join("a".repeat(64)), "x").unwrap();
        let s = stats(d.path()).unwrap();
        assert_eq!(s, Stats { blobs: 3, blob_bytes: 100 + 200 + 400, entries: 1, entry_bytes: 300 });
        // 1000 bytes; down to 800 removes the oldest (100) and the next (200).
        assert_eq!(gc(d.path(), 800).unwrap(), (2, 300));
        assert!(!names[0].exists() && !names[1].exists() && names[2].exists() && names[3].exists());
        assert_eq!(gc(d.path(), 700).unwrap(), (0, 0));
        assert_eq!(gc(d.path(), 0).unwrap(), (2, 700));
        assert!(odd.join("a".repeat(64)).exists());
        assert_eq!(stats(d.path()).unwrap(), Stats::default());
        assert!(stats(&d.path().join("missing")).is_err());
    }
}
