//! `hb-diff` explains how two builds differ: `hb diff A.deb B.deb` and the content
//! comparison behind `hb verify`. [`content`] compares two versions of one file's bytes
//! (unified text diff, binary summary, or member by member for zip/wheel and gzip
//! containers); [`tar`] reads tar streams (GNU, ustar and PAX headers); [`deb`] reads a
//! `.deb` (ar members, control fields and files, data entries); [`report`] compares two
//! parsed debs into an ordered list of [`Difference`]s without reporting derived data
//! (`md5sums`, `Installed-Size`) twice. Nothing here writes files or reads the clock.

pub mod content;
pub mod deb;
pub mod report;
pub mod tar;
pub mod time;

#[cfg(test)]
mod tests;

pub use content::{FileDiff, MemberChange, MemberDiff, compare_contents};
pub use deb::{
    ArMember, Content, DataEntry, Deb, EntryKind, OnDataFile, read_deb, read_deb_keeping, read_deb_streaming,
};
pub use report::{DebReport, Difference, diff_debs};

use std::path::PathBuf;

/// Everything that can go wrong while reading a package. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// Opening or reading the file failed.
    #[error(transparent)]
    Fs(#[from] hb_fs::FsError),
    /// The file does not start with the `!<arch>\n` magic.
    #[error("{}: not a Debian package (no ar magic `!<arch>`)", path.display())]
    NotAr {
        /// The package file.
        path: PathBuf,
    },
    /// The ar container is malformed (bad header, truncated member).
    #[error("{}: bad ar container: {reason}", path.display())]
    Ar {
        /// The package file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A required member (`control.tar*`, `data.tar*`) is absent.
    #[error("{}: no {what} member", path.display())]
    MissingMember {
        /// The package file.
        path: PathBuf,
        /// Which member, e.g. "control.tar.*".
        what: &'static str,
    },
    /// A member is compressed in a format this reader does not handle.
    #[error("{}: member {member}: unsupported compression", path.display())]
    UnsupportedCompression {
        /// The package file.
        path: PathBuf,
        /// The ar member name.
        member: String,
    },
    /// Decompressing or reading a member failed, or its tar stream is malformed.
    #[error("{}: member {member}: {reason}", path.display())]
    Member {
        /// The package file.
        path: PathBuf,
        /// The ar member name.
        member: String,
        /// What is wrong (decoder error, bad tar header, truncated entry...).
        reason: String,
    },
    /// The control member has no `control` file, or it is not a valid stanza.
    #[error("{}: control file: {reason}", path.display())]
    Control {
        /// The package file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}
