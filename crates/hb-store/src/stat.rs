//! The stat cache: for each source file of a workspace, the (size, mtime, ctime, inode,
//! mode) it had when last hashed, and its digest. An unchanged file is then known by a
//! `stat` alone, which is what makes a no-op build take milliseconds. Files modified
//! within the last two seconds are not remembered (their mtime may not yet tell a
//! later edit apart).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Digest, Result, Store};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    mode: u32,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
            ino: m.ino(),
            mode: m.mode(),
        }
    }
}

/// Keyed by the path's bytes: compared as bytes (a `PathBuf` key compares component by
/// component, which showed in no-op profiles), and any path encodes, UTF-8 or not.
#[derive(Default, Serialize, Deserialize)]
struct Entries(BTreeMap<Vec<u8>, (Stamp, Digest)>);

fn key(path: &Path) -> &[u8] {
    path.as_os_str().as_encoded_bytes()
}

/// A file of the workspace as the store knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub digest: Digest,
    pub size: u64,
    /// The owner-executable bit: the only permission bit hb takes from a source.
    pub executable: bool,
}

pub struct StatCache {
    file: PathBuf,
    entries: Entries,
    dirty: bool,
    now_ns: i128,
}

impl StatCache {
    /// Loads the stat cache of the workspace at `workspace_root` (an unreadable or
    /// outdated cache is simply empty).
    pub fn load(store: &Store, workspace_root: &Path) -> StatCache {
        let id = Digest::of(workspace_root.as_os_str().as_encoded_bytes());
        let file = store.stat_dir().join(id.hex());
        let entries = std::fs::read(&file).ok().and_then(|b| postcard::from_bytes(&b).ok()).unwrap_or_default();
        // Only used to decide which stamps are too fresh to trust; never reaches an output.
        #[allow(clippy::disallowed_methods)]
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        StatCache { file, entries, dirty: false, now_ns: now }
    }

    /// The digest of the file at `path`, from the cache when its stamp is unchanged
    /// (and, unless `trust`, the store still holds its blob), otherwise by hashing it
    /// into the store. With `trust` the caller checks the blob before reading it.
    pub fn file(&mut self, store: &Store, path: &Path, trust: bool) -> Result<FileInfo> {
        let meta = hb_fs::metadata(path)?;
        let stamp = Stamp::of(&meta);
        let executable = stamp.mode & 0o100 != 0;
        if let Some((old, digest)) = self.entries.0.get(key(path))
            && *old == stamp
            && (trust || store.has_blob(digest))
        {
            return Ok(FileInfo { digest: *digest, size: stamp.size, executable });
        }
        let (digest, size) = store.put_file(path)?;
        let after = Stamp::of(&hb_fs::metadata(path)?);
        let fresh = self.now_ns - after.mtime_ns < 2_000_000_000;
        if after == stamp && !fresh {
            self.entries.0.insert(key(path).to_vec(), (stamp, digest));
            self.dirty = true;
        } else if self.entries.0.remove(key(path)).is_some() {
            self.dirty = true;
        }
        Ok(FileInfo { digest, size, executable })
    }

    /// Remembers that `path`, just written by hb itself, holds `digest`.
    pub fn record(&mut self, path: &Path, digest: Digest) -> Result<()> {
        let stamp = Stamp::of(&hb_fs::metadata(path)?);
        self.entries.0.insert(key(path).to_vec(), (stamp, digest));
        self.dirty = true;
        Ok(())
    }

    /// The digest of `path` if the cache knows it unchanged (a `stat`, no hashing).
    pub fn known(&self, path: &Path) -> Option<Digest> {
        let meta = std::fs::metadata(path).ok()?;
        let (old, digest) = self.entries.0.get(key(path))?;
        (*old == Stamp::of(&meta)).then_some(*digest)
    }

    /// Writes the cache back if it changed.
    pub fn save(&mut self, store: &Store) -> Result<()> {
        if self.dirty && !store.read_only() {
            let bytes = postcard::to_stdvec(&self.entries).expect("stat cache encodes");
            // Unsynced: a cache lost to a power cut is read as empty (files hashed again).
            hb_fs::write_atomic_unsynced(&self.file, &bytes, Some(&store.tmp_dir()))?;
            self.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_then_remembers() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("cache")).unwrap();
        let f = d.path().join("a.txt");
        std::fs::write(&f, b"one").unwrap();
        let old = filetime::FileTime::from_unix_time(1_000_000, 0);
        filetime::set_file_mtime(&f, old).unwrap();
        let mut sc = StatCache::load(&store, d.path());
        let info = sc.file(&store, &f, false).unwrap();
        assert_eq!(info.digest, Digest::of(b"one"));
        sc.save(&store).unwrap();
        let mut sc = StatCache::load(&store, d.path());
        assert!(sc.entries.0.contains_key(key(&f)));
        std::fs::write(&f, b"two").unwrap();
        filetime::set_file_mtime(&f, old).unwrap();
        // same mtime, but size/ctime differ: re-hashed
        assert_eq!(sc.file(&store, &f, false).unwrap().digest, Digest::of(b"two"));
    }

    #[test]
    fn a_file_name_that_is_not_utf8_is_remembered() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("cache")).unwrap();
        let f = d.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.txt"));
        std::fs::write(&f, b"latin-1").unwrap();
        filetime::set_file_mtime(&f, filetime::FileTime::from_unix_time(1_000_000, 0)).unwrap();
        let mut sc = StatCache::load(&store, d.path());
        sc.file(&store, &f, false).unwrap();
        sc.save(&store).unwrap();
        let sc = StatCache::load(&store, d.path());
        assert_eq!(sc.known(&f), Some(Digest::of(b"latin-1")));
    }
}
