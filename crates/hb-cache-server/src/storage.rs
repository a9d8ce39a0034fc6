//! The storage directory, in the layout of `hb_store::layout` (blobs under `cas/`,
//! action-cache entries under `ac/`, uploads in progress in `tmp/`). A file's mtime is its last use
//! (set when it is stored and on every read), which is the order of LRU eviction. A
//! running total of the stored bytes is kept under one lock, which also covers the rename
//! of each upload into place, so that concurrent uploads of one blob count it once.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use filetime::FileTime;
use hb_fs::{Context, FsError};

use crate::ServerError;

pub(crate) use hb_store::layout::{Namespace as Kind, is_hex64};
use hb_store::layout::{scan, sort_lru};

/// Why an upload was not stored.
#[derive(Debug)]
pub(crate) enum PutError {
    /// The body is larger than the limit.
    TooLarge,
    /// A CAS body whose blake3 is not its name.
    Mismatch { actual: String },
    /// Reading the body from the client failed.
    Client(io::Error),
    /// The server could not store it.
    Store(FsError),
}

impl From<FsError> for PutError {
    fn from(e: FsError) -> Self {
        PutError::Store(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    Created,
    Existed,
}

/// A server's storage directory and its running total.
pub(crate) struct Storage {
    root: PathBuf,
    tmp: PathBuf,
    max_size: Option<u64>,
    /// Bytes stored in cas/ and ac/. Held while renaming uploads into place and while evicting.
    total: Mutex<u64>,
}

/// Temp files older than this found at start are leftovers of a crash.
const STALE_TMP_SECS: i64 = 3600;

impl Storage {
    /// Creates the layout under `root` if needed, removes stale temp files, counts what is
    /// stored and evicts at once if that is over `max_size`.
    pub fn open(root: &Path, max_size: Option<u64>) -> Result<Self, ServerError> {
        hb_store::layout::create(root)?;
        let tmp = root.join(hb_store::layout::TMP);
        let now = FileTime::now().unix_seconds();
        for e in hb_fs::read_dir_sorted(&tmp)? {
            let path = e.path();
            let stale = match e.metadata() {
                Ok(m) => m.is_file() && now - FileTime::from_last_modification_time(&m).unix_seconds() > STALE_TMP_SECS,
                Err(_) => false,
            };
            if stale && e.file_name().to_string_lossy().starts_with(".hb-tmp-") {
                hb_fs::remove_file_if_exists(&path)?;
            }
        }
        let total = scan(root)?.iter().map(|f| f.len).sum();
        let storage = Self { root: root.to_path_buf(), tmp, max_size, total: Mutex::new(total) };
        if let Some(max) = max_size
            && total > max
        {
            let mut guard = storage.lock();
            storage.evict(&mut guard, max, None)?;
            drop(guard);
        }
        Ok(storage)
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // A panic while holding the lock leaves a number that the next eviction rescans.
        self.total.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most bytes kept, if there is a limit.
    pub fn max_size(&self) -> Option<u64> {
        self.max_size
    }

    /// The bytes stored, as counted.
    #[cfg(test)]
    pub fn total(&self) -> u64 {
        *self.lock()
    }

    pub fn path(&self, kind: Kind, hex: &str) -> PathBuf {
        hb_store::layout::path(&self.root, kind, hex)
    }

    /// Opens a stored file and marks it used; `None` when absent.
    pub fn get(&self, kind: Kind, hex: &str) -> Result<Option<(File, u64)>, FsError> {
        let path = self.path(kind, hex);
        let file = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            r => r.ctx("opening", &path)?,
        };
        let len = file.metadata().ctx("reading metadata of", &path)?.len();
        // Last use for LRU; a failure (read-only disk) only makes eviction less fair.
        let _ = filetime::set_file_handle_times(&file, None, Some(FileTime::now()));
        Ok(Some((file, len)))
    }

    /// Stores a body of at most `limit` bytes. A CAS body must hash to `hex`; if the blob
    /// is already there the body is only hashed. AC entries replace what was there.
    pub fn put(&self, kind: Kind, hex: &str, body: &mut dyn Read, limit: u64) -> Result<PutOutcome, PutError> {
        let dest = self.path(kind, hex);
        let mut hasher = blake3::Hasher::new();
        if kind == Kind::Cas && dest.is_file() {
            copy_limited(body, None, limit, &mut hasher)?;
            check_digest(&hasher, hex)?;
            let _ = filetime::set_file_mtime(&dest, FileTime::now());
            return Ok(PutOutcome::Existed);
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".hb-tmp-")
            .tempfile_in(&self.tmp)
            .ctx("creating a temporary file in", &self.tmp)?;
        let len = copy_limited(body, Some((tmp.as_file_mut(), &dest)), limit, &mut hasher)?;
        if kind == Kind::Cas {
            check_digest(&hasher, hex)?;
        }
        tmp.as_file().sync_all().ctx("syncing", &dest)?;
        filetime::set_file_handle_times(tmp.as_file(), None, Some(FileTime::now())).ctx("setting mtime of", &dest)?;
        if let Some(parent) = dest.parent() {
            hb_fs::create_dir_all(parent)?;
        }
        let mut total = self.lock();
        let old = match dest.symlink_metadata() {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(FsError::new("reading metadata of", &dest, e).into()),
        };
        if kind == Kind::Cas && old.is_some() {
            // Another upload of the same blob won the race; its bytes are the same.
            return Ok(PutOutcome::Existed);
        }
        tmp.persist(&dest).map_err(|e| FsError::new("renaming into", &dest, e.error))?;
        *total = total.saturating_sub(old.unwrap_or(0)) + len;
        if let Some(max) = self.max_size
            && *total > max
            && let Err(e) = self.evict(&mut total, max, Some(&dest))
        {
            // The upload itself is stored; a failed eviction is retried by the next one.
            eprintln!("hb cache server: evicting: {e}");
        }
        Ok(PutOutcome::Created)
    }

    /// Removes least-recently-used files until the total is under 90% of `max`, never
    /// `keep` (the upload that triggered it). Rescans, so the total is exact afterwards.
    fn evict(&self, total: &mut u64, max: u64, keep: Option<&Path>) -> Result<(), FsError> {
        let mut files = scan(&self.root)?;
        *total = files.iter().map(|f| f.len).sum();
        sort_lru(&mut files);
        let target = max - max / 10;
        for f in files {
            if *total < target {
                break;
            }
            if keep == Some(f.path.as_path()) {
                continue;
            }
            hb_fs::remove_file_if_exists(&f.path)?;
            *total -= f.len;
        }
        Ok(())
    }
}

/// Copies `body` into `out` (if any) and the hasher, failing once more than `limit` bytes
/// came; returns the length.
fn copy_limited(
    body: &mut dyn Read,
    mut out: Option<(&mut File, &Path)>,
    limit: u64,
    hasher: &mut blake3::Hasher,
) -> Result<u64, PutError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(len),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(PutError::Client(e)),
        };
        len += n as u64;
        if len > limit {
            return Err(PutError::TooLarge);
        }
        hasher.update(&buf[..n]);
        if let Some((file, dest)) = out.as_mut() {
            file.write_all(&buf[..n]).ctx("writing", dest)?;
        }
    }
}

fn check_digest(hasher: &blake3::Hasher, hex: &str) -> Result<(), PutError> {
    let actual = hasher.finalize().to_hex();
    if actual.as_str() == hex { Ok(()) } else { Err(PutError::Mismatch { actual: actual.to_string() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    fn put(s: &Storage, kind: Kind, hex: &str, bytes: &[u8]) -> Result<PutOutcome, PutError> {
        s.put(kind, hex, &mut &bytes[..], 1 << 20)
    }

    #[test]
    fn put_get_and_count() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::open(d.path(), None).unwrap();
        let h = hex_of(b"blob");
        assert_eq!(put(&s, Kind::Cas, &h, b"blob").unwrap(), PutOutcome::Created);
        assert_eq!(put(&s, Kind::Cas, &h, b"blob").unwrap(), PutOutcome::Existed);
        assert!(matches!(put(&s, Kind::Cas, &h, b"blub"), Err(PutError::Mismatch { .. })));
        assert!(matches!(s.put(Kind::Cas, &h, &mut &b"blob"[..], 3), Err(PutError::TooLarge)));
        let key = "ab".repeat(32);
        assert_eq!(put(&s, Kind::Ac, &key, b"entry one").unwrap(), PutOutcome::Created);
        assert_eq!(put(&s, Kind::Ac, &key, b"entry").unwrap(), PutOutcome::Created);
        assert_eq!(s.total(), 4 + 5);
        let (mut f, len) = s.get(Kind::Ac, &key).unwrap().unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        assert_eq!((v.as_slice(), len), (&b"entry"[..], 5));
        assert!(s.get(Kind::Cas, &key).unwrap().is_none());
        assert_eq!(
            hb_store::layout::stats(d.path()).unwrap(),
            hb_store::layout::Stats { blobs: 1, blob_bytes: 4, entries: 1, entry_bytes: 5 }
        );
        assert!(hb_fs::read_dir_sorted(&d.path().join("tmp")).unwrap().is_empty());
        // A reopened storage counts the same.
        assert_eq!(Storage::open(d.path(), None).unwrap().total(), 9);
    }

    #[test]
    fn eviction_keeps_recently_used() {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::open(d.path(), Some(2500)).unwrap();
        let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000]).collect();
        let hexes: Vec<String> = blobs.iter().map(|b| hex_of(b)).collect();
        let pause = || std::thread::sleep(std::time::Duration::from_millis(20));
        put(&s, Kind::Cas, &hexes[0], &blobs[0]).unwrap();
        pause();
        put(&s, Kind::Cas, &hexes[1], &blobs[1]).unwrap();
        pause();
        s.get(Kind::Cas, &hexes[0]).unwrap().unwrap();
        pause();
        put(&s, Kind::Cas, &hexes[2], &blobs[2]).unwrap();
        assert!(s.get(Kind::Cas, &hexes[1]).unwrap().is_none());
        assert!(s.get(Kind::Cas, &hexes[0]).unwrap().is_some());
        assert!(s.get(Kind::Cas, &hexes[2]).unwrap().is_some());
        assert_eq!(s.total(), 2000);
    }

    #[test]
    fn stale_temp_files_are_removed_at_start() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let (old, new) = (tmp.join(".hb-tmp-old"), tmp.join(".hb-tmp-new"));
        std::fs::write(&old, "x").unwrap();
        std::fs::write(&new, "x").unwrap();
        filetime::set_file_mtime(&old, FileTime::from_unix_time(1_000_000, 0)).unwrap();
        Storage::open(d.path(), None).unwrap();
        assert!(!old.exists() && new.exists());
    }
}
