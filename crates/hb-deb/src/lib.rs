//! `hb-deb` writes byte-identical Debian binary packages: the `ar` outer container,
//! GNU tar members (never PAX), the compressed member formats (one xz stream of
//! independently compressed blocks, concatenated gzip members, or one zstd frame), the
//! file-list-driven chunk planner that makes those blocks cacheable, and the control
//! member's text files. Nothing here reads the clock, the environment or the machine:
//! every byte written is a function of the arguments.

pub mod ar;
pub mod chunk;
pub mod control;
pub mod gzip;
pub mod tar;
pub mod xz;
pub mod zstd_frame;

pub use ar::{ArWriter, write_deb};
pub use chunk::{ChunkParams, plan};
pub use control::{ControlFile, installed_size_kib, md5sums, render_control};
pub use tar::{TarEntry, TarKind, entry_len, write_end, write_entry, write_header};
pub use xz::XzBlockInfo;

use std::io;

/// Everything that can go wrong while writing a package.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// An underlying read or write failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// A reader produced a different number of bytes than the size announced for it.
    #[error("{what}: expected {expected} bytes, content was {found}")]
    SizeMismatch {
        /// The member or tar entry being written.
        what: String,
        /// The size that was announced (and already written into a header).
        expected: u64,
        /// What the reader actually produced (`expected + 1` means "at least one more").
        found: String,
    },
    /// An ar member name that cannot be stored in the 16-byte name field.
    #[error("invalid ar member name {0:?}")]
    ArName(String),
    /// A value too large for the fixed-width field of a header.
    #[error("{field} value {value} does not fit its header field")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// The rejected value.
        value: u64,
    },
    /// An invalid control field name or value.
    #[error("invalid control field {name:?}: {reason}")]
    ControlField {
        /// The field name as given.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// liblzma produced output that does not have the expected .xz structure.
    #[error("unexpected xz encoder output: {0}")]
    XzFormat(&'static str),
    /// liblzma reported an error.
    #[error("xz encoder error: {0}")]
    Xz(#[from] xz2::stream::Error),
}

/// Compression of the data/control members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// One xz stream of independently compressed LZMA2 blocks (the default).
    Xz,
    /// Concatenated gzip members.
    Gzip,
    /// Exactly one zstd frame.
    Zstd,
}

impl Compression {
    /// The file-name extension of a member compressed this way (`data.tar.<ext>`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Gzip => "gz",
            Compression::Zstd => "zst",
        }
    }

    /// Parses a user-facing name: `xz`, `gzip`/`gz`, `zstd`/`zst`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "xz" => Some(Compression::Xz),
            "gzip" | "gz" => Some(Compression::Gzip),
            "zstd" | "zst" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Copies exactly `size` bytes from `data` to `out`, then checks that `data` is exhausted.
/// Shared by the tar and ar writers, whose headers announce the size before the content.
pub(crate) fn copy_exact(
    what: &str,
    size: u64,
    data: &mut dyn io::Read,
    out: &mut dyn io::Write,
) -> Result<(), DebError> {
    let copied = io::copy(&mut io::Read::take(&mut *data, size), out)?;
    if copied != size {
        return Err(DebError::SizeMismatch { what: what.to_string(), expected: size, found: copied.to_string() });
    }
    let mut probe = [0u8; 1];
    loop {
        match data.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                return Err(DebError::SizeMismatch {
                    what: what.to_string(),
                    expected: size,
                    found: format!("more than {size}"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// A writer adaptor that counts the bytes passed through it.
pub(crate) struct CountingWriter<W> {
    pub(crate) inner: W,
    pub(crate) count: u64,
}

impl<W: io::Write> io::Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names_round_trip() {
        for c in [Compression::Xz, Compression::Gzip, Compression::Zstd] {
            assert_eq!(Compression::parse(c.extension()), Some(c));
        }
        assert_eq!(Compression::parse("gzip"), Some(Compression::Gzip));
        assert_eq!(Compression::parse("zstd"), Some(Compression::Zstd));
        assert_eq!(Compression::parse("bzip2"), None);
    }

    #[test]
    fn copy_exact_rejects_wrong_sizes() {
        let mut out = Vec::new();
        assert!(copy_exact("x", 3, &mut &b"abc"[..], &mut out).is_ok());
        assert!(copy_exact("x", 4, &mut &b"abc"[..], &mut out).is_err());
        assert!(copy_exact("x", 2, &mut &b"abc"[..], &mut out).is_err());
    }
}

#[cfg(test)]
mod e2e_tests;
