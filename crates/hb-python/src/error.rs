//! The one error type of the crate. Every message names the wheel file (and the member
//! or line at fault where there is one) and says what the user can do about it.

/// Everything that can go wrong while reading wheels or writing a virtualenv.
#[derive(Debug, thiserror::Error)]
pub enum PyError {
    #[error(
        "`{filename}` is not a wheel file name: {reason}; wheels are named \
         {{distribution}}-{{version}}(-{{build}})?-{{python}}-{{abi}}-{{platform}}.whl (PEP 427), \
         so rename the file or download it again from the index"
    )]
    WheelName { filename: String, reason: String },

    #[error("{wheel}: the zip archive cannot be read ({reason}); the file is truncated or corrupt, download it again")]
    Archive { wheel: String, reason: String },

    #[error(
        "{wheel}: member `{member}` {reason}; hb refuses to install such a wheel, use another build or release \
         of this distribution"
    )]
    Member { wheel: String, member: String, reason: String },

    #[error(
        "{wheel}: {reason}; the wheel does not follow the wheel format (PEP 427), rebuild it or use another release"
    )]
    Layout { wheel: String, reason: String },

    #[error("{wheel}: `{member}` {reason}")]
    Metadata { wheel: String, member: String, reason: String },

    #[error(
        "{wheel}: RECORD check failed for `{member}`: {reason}; the wheel was altered or corrupted after it was \
         built, download it again (or rebuild it)"
    )]
    Record { wheel: String, member: String, reason: String },

    #[error(
        "{wheel} cannot run on the target: its tags are {tags} and the target is {target}; \
         pick a wheel built for the target (or build one from the source distribution)"
    )]
    Incompatible { wheel: String, tags: String, target: String },

    #[error(
        "{wheel}: entry_points.txt line {line_no} `{line}`: {reason}; fix the entry point in the project's metadata"
    )]
    EntryPoint { wheel: String, line_no: usize, line: String, reason: String },

    #[error("{first} and {second} both install `/{path}`; remove one of them from the requirements")]
    Conflict { path: String, first: String, second: String },

    #[error(
        "{first} and {second} both declare the script `{name}`; remove one of them from the requirements \
         (a venv has one bin/{name})"
    )]
    LauncherConflict { name: String, first: String, second: String },

    #[error(
        "`/{path}` would be {len} bytes long once installed, more than PATH_MAX (4096) allows; use a shorter \
         `prefix` or another release of the distribution that installs it"
    )]
    PathTooLong { path: String, len: usize },

    #[error("invalid virtualenv settings: {0}")]
    Spec(String),

    #[error("storing an installed file in the cache failed: {0}")]
    Store(#[from] hb_store::StoreError),
}
