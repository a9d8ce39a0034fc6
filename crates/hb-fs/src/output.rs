//! What sandboxed code leaves behind, read as data and never as a path on the build
//! machine: a name it gives (a wheel's file name, a declared output) is resolved
//! beneath the directory hb gave it, with no symlink followed on the way or at the
//! end (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or component by
//! component with `O_NOFOLLOW` where the kernel lacks it), opened without blocking
//! (a FIFO cannot stall hb) and refused unless it is a regular file within the size
//! limit — all before one byte of it is read. Every action that collects a command's
//! outputs goes through [`open_output`].

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A regular file a command wrote, opened for reading.
#[derive(Debug)]
pub struct OutputFile {
    pub file: File,
    pub size: u64,
    /// Any execute bit set.
    pub executable: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{name} is not a plain name of a file inside {dir} (it has `..`, is absolute or empty)")]
    NotBeneath { dir: PathBuf, name: String },
    #[error(
        "{name} in {dir} is reached through a symlink or is one; a command's outputs are read as files it wrote, never as links to files of the build machine"
    )]
    Symlink { dir: PathBuf, name: String },
    #[error("{name} in {dir} is {kind}, not a regular file; only regular files are collected")]
    NotRegular { dir: PathBuf, name: String, kind: &'static str },
    #[error(
        "{name} in {dir} is {size} bytes, over the limit of {limit} bytes for what one command may write (raise action_max_output_mib in [workspace] if it is right)"
    )]
    TooLarge { dir: PathBuf, name: String, size: u64, limit: u64 },
    #[error("opening {name} in {dir}: {cause}")]
    Io { dir: PathBuf, name: String, cause: std::io::Error },
}

fn clean(name: &str) -> bool {
    !name.is_empty() && name.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Opens `name` (relative, clean) beneath `dir` as a regular file of at most `limit`
/// bytes, following no symlink; see the module documentation.
pub fn open_output(dir: &Path, name: &str, limit: u64) -> Result<OutputFile, OutputError> {
    let err = |cause: Errno| OutputError::Io { dir: dir.to_path_buf(), name: name.to_string(), cause: cause.into() };
    if !clean(name) {
        return Err(OutputError::NotBeneath { dir: dir.to_path_buf(), name: name.to_string() });
    }
    let base =
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(err)?;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let symlink = || OutputError::Symlink { dir: dir.to_path_buf(), name: name.to_string() };
    let fd: OwnedFd = match rustix::fs::openat2(&base, name, flags, Mode::empty(), resolve) {
        Ok(fd) => fd,
        // ELOOP: a symlink on the way or at the end; EXDEV: a way out of `dir`.
        Err(Errno::LOOP | Errno::XDEV) => return Err(symlink()),
        Err(Errno::NOSYS | Errno::PERM) => open_by_components(&base, name, flags).map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => symlink(),
            other => err(other),
        })?,
        Err(e) => return Err(err(e)),
    };
    let st = rustix::fs::fstat(&fd).map_err(err)?;
    let kind = match st.st_mode & libc_mode::S_IFMT {
        libc_mode::S_IFREG => None,
        libc_mode::S_IFIFO => Some("a FIFO"),
        libc_mode::S_IFSOCK => Some("a socket"),
        libc_mode::S_IFCHR | libc_mode::S_IFBLK => Some("a device"),
        libc_mode::S_IFDIR => Some("a directory"),
        _ => Some("not a file"),
    };
    if let Some(kind) = kind {
        return Err(OutputError::NotRegular { dir: dir.to_path_buf(), name: name.to_string(), kind });
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return Err(OutputError::TooLarge { dir: dir.to_path_buf(), name: name.to_string(), size, limit });
    }
    let file = File::from(fd);
    // Back to blocking reads (a regular file never blocks; this only tidies the flags).
    let _ = rustix::fs::fcntl_setfl(&file, OFlags::empty());
    Ok(OutputFile { file, size, executable: st.st_mode & 0o111 != 0 })
}

/// `name` opened beneath `base` one component at a time, none a symlink.
fn open_by_components(base: &OwnedFd, name: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let parts: Vec<&str> = name.split('/').collect();
    let Some((last, dirs)) = parts.split_last() else { return Err(Errno::INVAL) };
    let mut at: Option<OwnedFd> = None;
    for d in dirs {
        let next = rustix::fs::openat(
            at.as_ref().unwrap_or(base),
            *d,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        at = Some(next);
    }
    rustix::fs::openat(at.as_ref().unwrap_or(base), *last, flags, Mode::empty())
}

/// File-type bits of `st_mode` (as the kernel defines them).
mod libc_mode {
    pub const S_IFMT: u32 = 0o170000;
    pub const S_IFREG: u32 = 0o100000;
    pub const S_IFDIR: u32 = 0o040000;
    pub const S_IFIFO: u32 = 0o010000;
    pub const S_IFSOCK: u32 = 0o140000;
    pub const S_IFCHR: u32 = 0o020000;
    pub const S_IFBLK: u32 = 0o060000;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_file_is_read_and_everything_else_refused_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "secret").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/ok.whl"), "wheel").unwrap();
        std::os::unix::fs::symlink(secret.path(), d.path().join("link.whl")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("dirlink")).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(d.path().join("fifo.whl")).status().unwrap().success());
        std::fs::write(d.path().join("big"), vec![0u8; 100]).unwrap();

        let mut ok = open_output(d.path(), "sub/ok.whl", 1 << 20).unwrap();
        let mut text = String::new();
        ok.file.read_to_string(&mut text).unwrap();
        assert_eq!((text.as_str(), ok.size), ("wheel", 5));
        for (name, want) in [
            ("link.whl", "symlink"),
            ("dirlink/passwd", "symlink"),
            ("../x", "plain name"),
            ("/etc/passwd", "plain name"),
            ("fifo.whl", "a FIFO"),
            ("sub", "a directory"),
            ("big", "over the limit"),
        ] {
            let e = open_output(d.path(), name, 50).unwrap_err().to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
    }
}
