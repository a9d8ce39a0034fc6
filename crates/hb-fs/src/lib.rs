//! Filesystem access for hb: every I/O error carries the path it was about, directory
//! listings come back sorted by name (never in the order the filesystem happens to
//! keep), and files are written atomically (temp file in the same directory, fsync,
//! rename) so that a crash or `kill -9` never leaves a half-written file visible.
//! Other hb crates use these wrappers instead of raw `std::fs` calls. [`env`] gives the
//! host programs hb starts an environment without hb's settings or credentials.

pub mod env;

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub mod output;
pub mod seal;
pub use output::{OutputError, OutputFile, open_output};
pub use seal::{Sealed, dir_once_sealed};

/// An I/O error together with the operation and the path it concerned. The message
/// holds the cause, so the cause is not also reported as its `source()` (an error
/// chain would say it twice).
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {cause}")]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    pub cause: io::Error,
}

impl FsError {
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Self { op, path: path.to_path_buf(), cause: source }
    }

    pub fn is_not_found(&self) -> bool {
        self.cause.kind() == io::ErrorKind::NotFound
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

/// Adds the path to an `io::Result`.
pub trait Context<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| FsError::new(op, path, e))
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).ctx("reading", path)
}

pub fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).ctx("reading", path)
}

pub fn open(path: &Path) -> Result<fs::File> {
    fs::File::open(path).ctx("opening", path)
}

/// The sha256 of a file's bytes, as lowercase hex (how locks pin downloaded files).
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f = open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ctx("reading", path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

pub fn metadata(path: &Path) -> Result<fs::Metadata> {
    fs::metadata(path).ctx("reading metadata of", path)
}

pub fn symlink_metadata(path: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(path).ctx("reading metadata of", path)
}

pub fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).ctx("creating directory", path)
}

pub fn remove_file(path: &Path) -> Result<()> {
    fs::remove_file(path).ctx("removing", path)
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FsError::new("removing", path, e)),
        _ => Ok(()),
    }
}

pub fn remove_dir_all_if_exists(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FsError::new("removing", path, e)),
        _ => Ok(()),
    }
}

/// The directory `base/name`, made once: `fill` writes a fresh temporary directory in
/// `base`, which is then renamed into place, so a partial one is never seen. If another
/// process placed it first, theirs is kept: callers name directories by their content.
pub fn dir_once<E: From<FsError>>(
    base: &Path,
    name: &str,
    fill: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> std::result::Result<PathBuf, E> {
    let dir = base.join(name);
    if dir.is_dir() {
        return Ok(dir);
    }
    create_dir_all(base)?;
    let tmp = tempfile::tempdir_in(base).ctx("creating a directory in", base)?;
    fill(tmp.path())?;
    let staged = tmp.keep();
    match fs::rename(&staged, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if dir.is_dir() => {
            let _ = remove_dir_all_if_exists(&staged);
            Ok(dir)
        }
        Err(e) => Err(FsError::new("placing", &dir, e).into()),
    }
}

pub fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).ctx("renaming into", to)
}

/// Swaps the names of `a` and `b` in one step (Linux's `renameat2` with
/// `RENAME_EXCHANGE`); both must exist. Fails on filesystems without it.
pub fn exchange(a: &Path, b: &Path) -> Result<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, a, rustix::fs::CWD, b, rustix::fs::RenameFlags::EXCHANGE)
        .map_err(io::Error::from)
        .ctx("exchanging with", a)
}

/// Writes `bytes` over the file at `path` (which must exist) in place, and cuts it to
/// their length. Not atomic: for files whose old content may be lost.
pub fn overwrite(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new().write(true).truncate(false).open(path).ctx("opening", path)?;
    f.write_all(bytes).ctx("writing", path)?;
    f.set_len(bytes.len() as u64).ctx("writing", path)
}

pub fn read_link(path: &Path) -> Result<PathBuf> {
    fs::read_link(path).ctx("reading symlink", path)
}

/// The entries of a directory, sorted bytewise by file name.
pub fn read_dir_sorted(path: &Path) -> Result<Vec<fs::DirEntry>> {
    #[allow(clippy::disallowed_methods)] // sorted right below
    let iter = fs::read_dir(path).ctx("listing", path)?;
    let mut entries = iter.collect::<io::Result<Vec<_>>>().ctx("listing", path)?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// A recursive walk in sorted order (each directory's entries by file name).
pub fn walk_sorted(root: &Path) -> walkdir::WalkDir {
    #[allow(clippy::disallowed_methods)] // the one sanctioned use: sorted
    walkdir::WalkDir::new(root).sort_by_file_name()
}

/// A file being written in place of `dest`: invisible until [`AtomicFile::commit`].
/// Dropping it without committing removes the temporary file.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Starts writing `dest`; the temporary file lives in `tmp_dir` (which must be on
    /// the same filesystem), or next to `dest` when `tmp_dir` is `None`.
    pub fn create(dest: &Path, tmp_dir: Option<&Path>) -> Result<Self> {
        let dir = match tmp_dir {
            Some(d) => d.to_path_buf(),
            None => dest.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")),
        };
        create_dir_all(&dir)?;
        let tmp =
            tempfile::Builder::new().prefix(".hb-tmp-").tempfile_in(&dir).ctx("creating a temporary file in", &dir)?;
        Ok(Self { dest: dest.to_path_buf(), tmp })
    }

    /// Changes where [`AtomicFile::commit`] will put the file.
    pub fn retarget(mut self, dest: &Path) -> Self {
        self.dest = dest.to_path_buf();
        self
    }

    pub fn file(&mut self) -> &mut fs::File {
        self.tmp.as_file_mut()
    }

    /// Flushes to disk and renames over the destination.
    pub fn commit(self) -> Result<()> {
        self.tmp.as_file().sync_all().ctx("syncing", &self.dest)?;
        self.commit_unsynced()
    }

    /// Renames over the destination without waiting for the bytes to reach the disk:
    /// readers never see a partial file, but after a power loss the file may be empty.
    /// Only for state whose loss costs nothing but time (run logs, caches of parsed
    /// files), and whose readers treat an unreadable file as absent.
    pub fn commit_unsynced(self) -> Result<()> {
        let dest = self.dest;
        if let Some(parent) = dest.parent() {
            create_dir_all(parent)?;
        }
        self.tmp.persist(&dest).map_err(|e| FsError::new("renaming into", &dest, e.error))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Writes `bytes` to `dest` atomically as a file the user edits or shares (BUILD.toml,
/// locks, exports): mode 0666 less the process's umask, as any editor would write it,
/// not the 0600 of a temporary file.
pub fn write_atomic_shared(dest: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut f = AtomicFile::create(dest, None)?;
    f.write_all(bytes).ctx("writing", dest)?;
    f.file().set_permissions(fs::Permissions::from_mode(0o666 & !umask())).ctx("setting the mode of", dest)?;
    f.commit()
}

/// The process's umask, from `/proc/self/status` (reading it with umask(2) would set
/// it, racing other threads); 022 where the kernel does not say.
pub fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok()))
        })
        .unwrap_or(0o022)
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8], tmp_dir: Option<&Path>) -> Result<()> {
    let mut f = AtomicFile::create(dest, tmp_dir)?;
    f.write_all(bytes).ctx("writing", dest)?;
    f.commit()
}

/// Writes `bytes` to `dest` atomically but without syncing (see
/// [`AtomicFile::commit_unsynced`] for when that is right).
pub fn write_atomic_unsynced(dest: &Path, bytes: &[u8], tmp_dir: Option<&Path>) -> Result<()> {
    let mut f = AtomicFile::create(dest, tmp_dir)?;
    f.write_all(bytes).ctx("writing", dest)?;
    f.commit_unsynced()
}

/// Reads up to `buf.len()` bytes, fewer only at the end of the stream (retrying short
/// and interrupted reads), so callers see the same pieces whatever the reader returns.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a whole stream, naming `path` in the error.
pub fn read_all(mut r: impl Read, path: &Path) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).ctx("reading", path)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_listing() {
        let d = tempfile::tempdir().unwrap();
        for n in ["b", "a", "C", "c"] {
            fs::write(d.path().join(n), n).unwrap();
        }
        let names: Vec<_> =
            read_dir_sorted(d.path()).unwrap().iter().map(|e| e.file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["C", "a", "b", "c"]);
    }

    #[test]
    fn uncommitted_atomic_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out");
        {
            let mut f = AtomicFile::create(&dest, None).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(read_dir_sorted(d.path()).unwrap().len(), 0);
        write_atomic(&dest, b"whole", None).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
    }

    #[test]
    fn errors_name_the_path() {
        let e = read(Path::new("/nonexistent/hb-file")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/hb-file"), "{e}");
        assert!(e.is_not_found());
    }
}
