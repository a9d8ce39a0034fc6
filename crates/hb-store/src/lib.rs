//! The local store under the cache directory (inside a layout version directory): a
//! content-addressed store of blobs and an action cache mapping action keys to encoded
//! results (both in the [`layout`] shared with `hb cache serve`), per-workspace stat
//! caches (`stat/<workspace>`), run logs (`runs/<workspace>/{last,previous}`) and other
//! per-workspace run files (`runs/<workspace>/<name>`: the last build's known results). No
//! other crate knows where anything is under the cache directory.
//!
//! Every write goes to a temporary file in `tmp/` and is renamed into place, so a
//! crash or a concurrent `hb` never exposes a half-written blob or entry. Every blob
//! read is re-hashed; a blob whose bytes no longer match its name is removed and
//! reported as [`StoreError::Corrupt`], so the action that produced it runs again.

mod digest;
pub mod layout;
pub mod stat;
pub mod tree;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use hb_fs::{AtomicFile, Context, FsError};

pub use digest::{Digest, Hasher};
pub use tree::{EntryKind, Tree, TreeEntry, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cache blob {digest} is corrupt (its bytes hash to {actual}); it was removed and will be rebuilt")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("cache blob {0} is missing from the store")]
    Missing(Digest),
    #[error(
        "the cache in {dir} is read-only and does not hold {what}; build with a writable cache (--cache-dir) to add it"
    )]
    ReadOnly { dir: PathBuf, what: String },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Output(#[from] hb_fs::OutputError),
}

impl StoreError {
    /// Recovers a [`StoreError::Corrupt`] passed through an `io::Error`.
    pub fn from_io(e: &io::Error) -> Option<(Digest, Digest)> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<CorruptBlob>()).map(|c| (c.digest, c.actual))
    }
}

/// The payload of the `io::Error` a [`BlobReader`] returns on a digest mismatch.
#[derive(Debug, thiserror::Error)]
#[error("cache blob {digest} is corrupt (its bytes hash to {actual}); it was removed and will be rebuilt")]
pub struct CorruptBlob {
    pub digest: Digest,
    pub actual: Digest,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Version of the on-disk layout; bumping it starts a fresh cache beside the old one.
const LAYOUT: &str = "v1";
const STAT: &str = "stat";
const RUNS: &str = "runs";

#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    /// A shared lock on the store, held while it is open, so that removing the whole
    /// cache (which takes the lock exclusively) waits for no one and breaks no build.
    _lock: std::sync::Arc<std::fs::File>,
    /// The cache cannot be written (a read-only mount): it is only read, and nothing,
    /// not even a stat cache or run log, is written to it.
    read_only: bool,
}

/// Why the cache could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(
        "the cache in {0} is in use by a running hb (a build, explain or verify); let it finish, then run this again"
    )]
    Busy(PathBuf),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The lock file of the store at `root` (the layout version directory), opened.
fn lock_file(root: &Path) -> std::result::Result<std::fs::File, FsError> {
    let path = root.join("lock");
    std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).ctx("opening", &path)
}

/// Removes the whole cache directory `dir`, unless a running hb has its store open.
pub fn remove_cache(dir: &Path) -> std::result::Result<(), RemoveError> {
    let root = dir.join(LAYOUT);
    if root.is_dir() {
        let lock = lock_file(&root)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(RemoveError::Busy(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(FsError::new("locking", &root.join("lock"), e).into()),
        }
        // Held while removing: a build starting now waits, then starts a fresh cache.
        hb_fs::remove_dir_all_if_exists(dir)?;
        drop(lock);
        return Ok(());
    }
    Ok(hb_fs::remove_dir_all_if_exists(dir)?)
}

impl Store {
    /// Opens (creating as needed) the store at `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        let root = dir.join(LAYOUT);
        layout::create(&root)?;
        for sub in [STAT, RUNS] {
            hb_fs::create_dir_all(&root.join(sub))?;
        }
        let (lock, read_only) = match lock_file(&root) {
            Ok(f) => (f, false),
            Err(e) if matches!(e.cause.kind(), io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied) => {
                (hb_fs::open(&root.join("lock"))?, true)
            }
            Err(e) => return Err(e.into()),
        };
        lock.lock_shared().ctx("locking", &root.join("lock"))?;
        Ok(Store { root, _lock: std::sync::Arc::new(lock), read_only })
    }

    /// Whether the cache is only read (see [`Store::open`]).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    fn refuse(&self, what: impl Into<String>) -> StoreError {
        StoreError::ReadOnly { dir: self.root.clone(), what: what.into() }
    }

    /// The directory of per-workspace stat caches.
    pub(crate) fn stat_dir(&self) -> PathBuf {
        self.root.join(STAT)
    }

    /// A directory for temporary files of this store's file system (renamed into it).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(layout::TMP)
    }

    fn sharded(&self, ns: layout::Namespace, d: &Digest) -> PathBuf {
        layout::path(&self.root, ns, &d.hex())
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.sharded(layout::Namespace::Cas, d)
    }

    /// What the store holds.
    pub fn stats(&self) -> Result<layout::Stats> {
        Ok(layout::stats(&self.root)?)
    }

    /// Removes least-recently-used blobs and entries until at most `max_size` bytes are
    /// left; returns the files removed and the bytes freed.
    pub fn gc(&self, max_size: u64) -> Result<(u64, u64)> {
        Ok(layout::gc(&self.root, max_size)?)
    }

    /// Where the store is, for messages.
    pub fn location(&self) -> &Path {
        &self.root
    }

    fn runs_dir(&self, workspace: &Path) -> PathBuf {
        let id = Digest::of(workspace.as_os_str().as_encoded_bytes());
        self.root.join(RUNS).join(id.hex())
    }

    /// Keeps `log` as the last build's log of `workspace`; the log that was last becomes
    /// the previous one.
    pub fn save_run(&self, workspace: &Path, log: &[u8]) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let dir = self.runs_dir(workspace);
        hb_fs::create_dir_all(&dir)?;
        let (last, previous) = (dir.join("last"), dir.join("previous"));
        // Builds of one workspace save their logs one at a time.
        let lock = lock_file(&dir)?;
        lock.lock().ctx("locking", &dir.join("lock"))?;
        // The new log is written over the one before last, which it replaces anyway, and
        // the two then swap names in one step: no file is freed and another allocated on
        // every build (replacing `previous` took ~0.7 ms of a no-op on ext4). A crash
        // while writing leaves `previous` unreadable, which reads as absent; `last` is
        // whole. Where the swap is not supported, the rename below puts things right.
        if last.exists()
            && previous.exists()
            && hb_fs::overwrite(&previous, log).is_ok()
            && hb_fs::exchange(&previous, &last).is_ok()
        {
            return Ok(());
        }
        if last.exists() {
            hb_fs::rename(&last, &previous)?;
        }
        // Unsynced: a log lost to a power cut only leaves `hb explain` less to say.
        Ok(hb_fs::write_atomic_unsynced(&last, log, Some(&self.tmp_dir()))?)
    }

    /// Keeps `bytes` as `workspace`'s run file `name` (beside its run logs; unsynced,
    /// like them: a file lost to a power cut is read as absent).
    pub fn save_run_file(&self, workspace: &Path, name: &str, bytes: &[u8]) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let dir = self.runs_dir(workspace);
        hb_fs::create_dir_all(&dir)?;
        Ok(hb_fs::write_atomic_unsynced(&dir.join(name), bytes, Some(&self.tmp_dir()))?)
    }

    /// `workspace`'s run file `name`, if there is one.
    pub fn load_run_file(&self, workspace: &Path, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.runs_dir(workspace).join(name)).ok()
    }

    /// The last and the previous build logs of `workspace`, when there are any.
    pub fn load_runs(&self, workspace: &Path) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let dir = self.runs_dir(workspace);
        let read = |name: &str| std::fs::read(dir.join(name)).ok();
        (read("last"), read("previous"))
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Starts writing a blob whose digest is known only at the end.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        if self.read_only {
            return Err(self.refuse("a new blob"));
        }
        let file = AtomicFile::create(&self.root.join("tmp/blob"), Some(&self.tmp_dir()))?;
        Ok(BlobWriter { store: self.clone(), file, hasher: Hasher::new(), size: 0 })
    }

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let d = Digest::of(bytes);
        if !self.has_blob(&d) {
            if self.read_only {
                return Err(self.refuse(format!("blob {d}")));
            }
            hb_fs::write_atomic(&self.blob_path(&d), bytes, Some(&self.tmp_dir()))?;
        }
        Ok(d)
    }

    /// Copies a file into the store, returning its digest and size.
    pub fn put_file(&self, path: &Path) -> Result<(Digest, u64)> {
        let mut src = hb_fs::open(path)?;
        if self.read_only {
            // Hashed only: a read-only cache can still say it holds these bytes.
            let mut h = Hasher::new();
            let size = io::copy(&mut src, &mut HashWriter(&mut h)).ctx("reading", path)?;
            let d = h.finish();
            return if self.has_blob(&d) { Ok((d, size)) } else { Err(self.refuse(path.display().to_string())) };
        }
        let mut w = self.blob_writer()?;
        io::copy(&mut src, &mut w).ctx("copying into the cache", path)?;
        w.finish()
    }

    /// Copies what a sandboxed command wrote at `name` beneath `dir` into the store
    /// ([`hb_fs::open_output`]: a regular file reached through no symlink, at most
    /// `limit` bytes, checked before a byte is read), with whether it is executable.
    /// On a refusal nothing is stored.
    pub fn put_output(&self, dir: &Path, name: &str, limit: u64) -> Result<(Digest, u64, bool)> {
        let out = hb_fs::open_output(dir, name, limit)?;
        let path = dir.join(name);
        // Never more than the size it had when it was checked.
        let mut src = io::Read::take(out.file, out.size);
        if self.read_only {
            let mut h = Hasher::new();
            let size = io::copy(&mut src, &mut HashWriter(&mut h)).ctx("reading", &path)?;
            let d = h.finish();
            return if self.has_blob(&d) { Ok((d, size, out.executable)) } else { Err(self.refuse(name.to_string())) };
        }
        let mut w = self.blob_writer()?;
        io::copy(&mut src, &mut w).ctx("copying into the cache", &path)?;
        let (d, size) = w.finish()?;
        Ok((d, size, out.executable))
    }

    /// Opens a blob for reading; the reader fails at the end if the bytes do not hash
    /// to `d` (and removes the blob).
    pub fn open_blob(&self, d: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(d);
        let file = hb_fs::open(&path).map_err(|e| if e.is_not_found() { StoreError::Missing(*d) } else { e.into() })?;
        Ok(BlobReader { file: io::BufReader::with_capacity(1 << 16, file), hasher: Hasher::new(), expected: *d, path })
    }

    /// Reads a whole blob, verified.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut r = self.open_blob(d)?;
        let mut v = Vec::new();
        match r.read_to_end(&mut v) {
            Ok(_) => Ok(v),
            Err(e) => Err(match StoreError::from_io(&e) {
                Some((digest, actual)) => StoreError::Corrupt { digest, actual },
                None => FsError::new("reading", &self.blob_path(d), e).into(),
            }),
        }
    }

    /// Re-hashes a blob; removes it and reports corruption on mismatch.
    pub fn verify_blob(&self, d: &Digest) -> Result<()> {
        let mut r = self.open_blob(d)?;
        match io::copy(&mut r, &mut io::sink()) {
            Ok(_) => Ok(()),
            Err(e) => Err(match StoreError::from_io(&e) {
                Some((digest, actual)) => StoreError::Corrupt { digest, actual },
                None => FsError::new("reading", &self.blob_path(d), e).into(),
            }),
        }
    }

    /// The action-cache entry for `key`, if any.
    pub fn get_action(&self, key: &Digest) -> Result<Option<Vec<u8>>> {
        let path = self.sharded(layout::Namespace::Ac, key);
        match std::fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::new("reading", &path, e).into()),
        }
    }

    pub fn put_action(&self, key: &Digest, bytes: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(self.refuse(format!("the result of action {key}")));
        }
        Ok(hb_fs::write_atomic(&self.sharded(layout::Namespace::Ac, key), bytes, Some(&self.tmp_dir()))?)
    }

    pub fn remove_action(&self, key: &Digest) -> Result<()> {
        Ok(hb_fs::remove_file_if_exists(&self.sharded(layout::Namespace::Ac, key))?)
    }

    /// Writes blob `d` to `dest` atomically (used to place outputs in `hb-out/`).
    pub fn export_blob(&self, d: &Digest, dest: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut r = self.open_blob(d)?;
        let mut f = AtomicFile::create(dest, None)?;
        if let Err(e) = io::copy(&mut r, &mut f) {
            return Err(match StoreError::from_io(&e) {
                Some((digest, actual)) => StoreError::Corrupt { digest, actual },
                None => FsError::new("writing", dest, e).into(),
            });
        }
        f.file().set_permissions(std::fs::Permissions::from_mode(mode)).ctx("setting mode of", dest)?;
        f.commit()?;
        Ok(())
    }
}

/// Feeds written bytes to a hasher.
struct HashWriter<'a>(&'a mut Hasher);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blob being written; it enters the store under its digest on [`BlobWriter::finish`].
pub struct BlobWriter {
    store: Store,
    file: AtomicFile,
    hasher: Hasher,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Stores the blob only if its bytes hash to `expected` (else drops them, leaving
    /// nothing behind). For bytes from an untrusted source.
    pub fn finish_expecting(self, expected: &Digest) -> Result<Option<u64>> {
        if self.hasher.finish() != *expected {
            return Ok(None);
        }
        Ok(Some(self.finish()?.1))
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.finish()
    }

    pub fn finish(self) -> Result<(Digest, u64)> {
        let d = self.hasher.finish();
        let dest = self.store.blob_path(&d);
        if dest.is_file() {
            // Same bytes are already there; the temporary file is dropped.
            return Ok((d, self.size));
        }
        // Renamed only now that the hash is final: a visible blob is always complete.
        self.file.retarget(&dest).commit()?;
        Ok((d, self.size))
    }
}

/// Reads a blob, hashing as it goes; at end of file a mismatch is an error.
pub struct BlobReader {
    file: io::BufReader<std::fs::File>,
    hasher: Hasher,
    expected: Digest,
    path: PathBuf,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let actual = self.hasher.finish();
            if actual != self.expected {
                let _ = std::fs::remove_file(&self.path);
                return Err(io::Error::new(io::ErrorKind::InvalidData, CorruptBlob { digest: self.expected, actual }));
            }
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_logs_keep_the_last_two() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("cache")).unwrap();
        let ws = d.path().join("ws");
        assert_eq!(s.load_runs(&ws), (None, None));
        s.save_run(&ws, b"first, a long log").unwrap();
        assert_eq!(s.load_runs(&ws), (Some(b"first, a long log".to_vec()), None));
        s.save_run(&ws, b"second").unwrap();
        assert_eq!(s.load_runs(&ws), (Some(b"second".to_vec()), Some(b"first, a long log".to_vec())));
        // From here on the new log is written over the older one and the names swap:
        // a shorter log leaves nothing of the longer one behind.
        s.save_run(&ws, b"third").unwrap();
        assert_eq!(s.load_runs(&ws), (Some(b"third".to_vec()), Some(b"second".to_vec())));
        s.save_run(&ws, b"fourth, longer than before").unwrap();
        assert_eq!(s.load_runs(&ws), (Some(b"fourth, longer than before".to_vec()), Some(b"third".to_vec())));
    }

    #[test]
    fn blobs_round_trip_and_corruption_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let dg = s.put_bytes(b"hello").unwrap();
        assert_eq!(s.read_blob(&dg).unwrap(), b"hello");
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.finish().unwrap(), (dg, 5));
        let mut w = s.blob_writer().unwrap();
        w.write_all(b"not hello").unwrap();
        assert_eq!(w.finish_expecting(&Digest::of(b"expected")).unwrap(), None);
        assert!(!s.has_blob(&Digest::of(b"not hello")));
        std::fs::write(s.blob_path(&dg), b"jello").unwrap();
        assert!(matches!(s.read_blob(&dg), Err(StoreError::Corrupt { .. })));
        assert!(!s.has_blob(&dg), "corrupt blob is removed");
        assert!(matches!(s.read_blob(&dg), Err(StoreError::Missing(_))));
        // nothing half-written is left in tmp/
        assert_eq!(hb_fs::read_dir_sorted(&s.tmp_dir()).unwrap().len(), 0);
    }

    #[test]
    fn the_cache_is_not_removed_under_an_open_store() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let s = Store::open(&cache).unwrap();
        assert!(matches!(remove_cache(&cache), Err(RemoveError::Busy(_))));
        assert!(cache.is_dir());
        drop(s);
        remove_cache(&cache).unwrap();
        assert!(!cache.exists());
        remove_cache(&cache).unwrap();
    }

    #[test]
    fn action_entries() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let k = Digest::of(b"key");
        assert_eq!(s.get_action(&k).unwrap(), None);
        s.put_action(&k, b"v").unwrap();
        assert_eq!(s.get_action(&k).unwrap().as_deref(), Some(&b"v"[..]));
    }
}
