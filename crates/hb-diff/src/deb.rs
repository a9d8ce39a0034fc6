//! Reading a `.deb` into what [`crate::report`] compares: the ar members (names, header
//! fields, sizes, blake3 of their bytes), the control fields in file order, the control
//! member's files and the data member's entries keyed by their dpkg path ("/", "/etc",
//! "/usr/bin/x"). Members are streamed: `control.tar` and `data.tar`, uncompressed or
//! compressed with xz (every block and stream), gzip (every member) or zstd (every
//! frame), are decoded completely and their uncompressed bytes hashed too. File contents
//! up to [`MAX_KEPT`] are kept in memory; larger files keep only their size, blake3 and
//! md5.

use crate::DiffError;
use crate::tar::{TarError, TarHeader, read_tar};
use hb_fs::read_full;
use md5::Digest as _;
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// Largest file whose bytes are kept for a content diff.
pub const MAX_KEPT: u64 = 16 << 20;
/// Largest ar member other than control/data whose bytes are kept (debian-binary...).
const MAX_SMALL_MEMBER: u64 = 1 << 20;

/// One member of the ar container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArMember {
    /// Member name (trailing '/' of GNU ar removed).
    pub name: String,
    /// Header fields as written (trimmed): mtime, uid, gid, octal mode.
    pub mtime: String,
    /// Owner field.
    pub uid: String,
    /// Group field.
    pub gid: String,
    /// Mode field (octal text).
    pub mode: String,
    /// Member size in bytes.
    pub size: u64,
    /// blake3 of the member's bytes (hex).
    pub blake3: String,
    /// blake3 of the decompressed tar stream, for `control.tar*` and `data.tar*`.
    pub tar_blake3: Option<String>,
    /// The bytes of small members other than control/data (e.g. `debian-binary`).
    pub bytes: Option<Vec<u8>>,
}

/// A file's content: its bytes, or for large files only their digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// The whole content.
    Bytes(Vec<u8>),
    /// Size and blake3 (hex) of a file larger than [`MAX_KEPT`].
    Digest {
        /// Length in bytes.
        size: u64,
        /// blake3, hex.
        blake3: String,
    },
}

impl Content {
    /// Content length in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Digest { size, .. } => *size,
        }
    }

    /// blake3 of the content, hex.
    pub fn blake3(&self) -> String {
        match self {
            Content::Bytes(b) => blake3::hash(b).to_hex().to_string(),
            Content::Digest { blake3, .. } => blake3.clone(),
        }
    }

    /// Whether both contents are the same bytes.
    pub fn same_as(&self, other: &Content) -> bool {
        match (self, other) {
            (Content::Bytes(a), Content::Bytes(b)) => a == b,
            _ => self.size() == other.size() && self.blake3() == other.blake3(),
        }
    }
}

/// What a tar entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to `target` (verbatim).
    Symlink {
        /// The link target as stored.
        target: String,
    },
    /// A hard link to another entry (`target` is its dpkg path).
    Hardlink {
        /// The linked entry's path, "/..." like every path here.
        target: String,
    },
    /// A character device.
    CharDevice {
        /// Major, minor.
        dev: (u64, u64),
    },
    /// A block device.
    BlockDevice {
        /// Major, minor.
        dev: (u64, u64),
    },
    /// A named pipe.
    Fifo,
    /// Any other typeflag.
    Other {
        /// The typeflag byte.
        typeflag: u8,
    },
}

impl EntryKind {
    /// "file", "directory", "symlink", "hardlink", "character device 1,3"...
    pub fn describe(&self) -> String {
        match self {
            EntryKind::File => "file".into(),
            EntryKind::Dir => "directory".into(),
            EntryKind::Symlink { .. } => "symlink".into(),
            EntryKind::Hardlink { .. } => "hardlink".into(),
            EntryKind::CharDevice { dev } => format!("character device {},{}", dev.0, dev.1),
            EntryKind::BlockDevice { dev } => format!("block device {},{}", dev.0, dev.1),
            EntryKind::Fifo => "fifo".into(),
            EntryKind::Other { typeflag } => format!("tar type {:?}", char::from(*typeflag)),
        }
    }
}

/// One entry of a control or data tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataEntry {
    /// dpkg path: "/" for the root, "/usr/bin/x" (control files: just the name, "postinst").
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Regular files only.
    pub content: Option<Content>,
    /// md5 of a regular file's content.
    pub md5: Option<[u8; 16]>,
}

impl DataEntry {
    /// "root:root (0:0)", or "0:0" when the tar has no names.
    pub fn owner(&self) -> String {
        if self.uname.is_empty() && self.gname.is_empty() {
            format!("{}:{}", self.uid, self.gid)
        } else {
            format!("{}:{} ({}:{})", self.uname, self.gname, self.uid, self.gid)
        }
    }
}

/// A parsed Debian package.
#[derive(Clone, Debug)]
pub struct Deb {
    /// Where it was read from.
    pub path: PathBuf,
    /// File size.
    pub size: u64,
    /// blake3 of the whole file, hex.
    pub blake3: String,
    /// The ar members in order.
    pub members: Vec<ArMember>,
    /// Name of the control member (`control.tar.xz`...).
    pub control_member: String,
    /// Name of the data member (`data.tar.xz`...).
    pub data_member: String,
    /// The `control` file's fields in order (continuation lines joined with '\n', kept verbatim).
    pub control_fields: Vec<(String, String)>,
    /// The control member's files by name ("control", "md5sums", "postinst"...).
    pub control_files: BTreeMap<String, DataEntry>,
    /// The data member's entries by dpkg path.
    pub data: BTreeMap<String, DataEntry>,
}

impl Deb {
    /// The value of a control field (names compare case-insensitively, as in deb822).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.control_fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// `Installed-Size` as dpkg-gencontrol computes it from this package's data: for
    /// files and symlinks `ceil(size / 1024)` (a symlink's size is its target's length;
    /// further hard links to a file count 0), 1 for every other object including each
    /// directory, and 1 for the root directory even if the tar has no "./" entry. The
    /// same rule as `hb_deb::installed_size_kib`.
    pub fn computed_installed_size(&self) -> u64 {
        let mut total: u64 = if self.data.contains_key("/") { 0 } else { 1 };
        for e in self.data.values() {
            total += match &e.kind {
                EntryKind::File => e.content.as_ref().map_or(0, Content::size).div_ceil(1024),
                EntryKind::Symlink { target } => (target.len() as u64).div_ceil(1024),
                EntryKind::Hardlink { .. } => 0,
                _ => 1,
            };
        }
        total
    }

    /// Conffiles listed by the `conffiles` control file (dpkg paths).
    pub fn conffiles(&self) -> Vec<String> {
        let Some(Content::Bytes(bytes)) = self.control_files.get("conffiles").and_then(|e| e.content.as_ref()) else {
            return Vec::new();
        };
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            // dpkg ≥ 1.20.1 allows flags before the path ("remove-on-upgrade /etc/x").
            .map(|l| if l.starts_with('/') { l } else { l.split_once(' ').map_or(l, |(_, p)| p.trim()) })
            .map(str::to_string)
            .collect()
    }

    /// `None` if `md5sums` is absent or agrees with the data (every listed path is a
    /// regular file with that md5, and every regular file is listed unless it is a
    /// conffile, which dh_md5sums leaves out). Otherwise what disagrees, briefly.
    pub fn md5sums_problems(&self) -> Option<String> {
        let mut problems = self.md5sums_problem_list();
        if problems.is_empty() {
            return None;
        }
        let more = problems.len().saturating_sub(5);
        problems.truncate(5);
        let mut s = problems.join("; ");
        if more > 0 {
            s.push_str(&format!("; and {more} more"));
        }
        Some(s)
    }

    /// Every disagreement between `md5sums` and the data (empty if consistent or absent).
    pub fn md5sums_problem_list(&self) -> Vec<String> {
        let bytes = match self.control_files.get("md5sums").and_then(|e| e.content.as_ref()) {
            Some(Content::Bytes(b)) => b,
            Some(Content::Digest { .. }) => return vec!["md5sums is too large to check".into()],
            None => return Vec::new(),
        };
        let mut problems = Vec::new();
        let text = String::from_utf8_lossy(bytes);
        let mut listed = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let Some((hex, path)) = line.split_once(' ') else {
                problems.push(format!("line {} is malformed", i + 1));
                continue;
            };
            let path = dpkg_path(path.trim_start());
            if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                problems.push(format!("line {} has no md5", i + 1));
                continue;
            }
            listed.insert(path, hex.to_ascii_lowercase());
        }
        for (path, hex) in &listed {
            let entry = match self.data.get(path).map(|e| (&e.kind, e)) {
                Some((EntryKind::Hardlink { target }, _)) => self.data.get(target),
                Some((_, e)) => Some(e),
                None => None,
            };
            match entry {
                None => problems.push(format!("lists {path}, which is not in the data")),
                Some(e) => match &e.md5 {
                    None => problems.push(format!("lists {path}, which is a {}", e.kind.describe())),
                    Some(d) => {
                        let actual = to_hex(d);
                        if &actual != hex {
                            problems.push(format!("{path}: listed {hex}, data has {actual}"));
                        }
                    }
                },
            }
        }
        let conffiles = self.conffiles();
        for (path, e) in &self.data {
            if e.kind == EntryKind::File && !listed.contains_key(path) && !conffiles.contains(path) {
                problems.push(format!("{path} is not listed"));
            }
        }
        problems
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path dpkg shows for a tar member name: "./usr/bin/" → "/usr/bin", "./" → "/".
pub fn dpkg_path(raw: &str) -> String {
    let mut s = raw;
    loop {
        if let Some(r) = s.strip_prefix("./") {
            s = r;
        } else if let Some(r) = s.strip_prefix('/') {
            s = r;
        } else {
            break;
        }
    }
    let s = s.trim_end_matches('/');
    if s.is_empty() || s == "." { "/".to_string() } else { format!("/{s}") }
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    count: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing { inner, hasher: blake3::Hasher::new(), count: 0 }
    }
    fn hex(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Turns one tar header and its data into an entry (reading the content of files).
/// Receives each regular file of a data member as it is read: its dpkg path and bytes.
pub type OnDataFile<'a> = &'a mut dyn FnMut(&str, &[u8]) -> io::Result<()>;

fn entry_from(
    h: &TarHeader,
    data: &mut dyn Read,
    path: String,
    max_kept: u64,
    on_file: Option<&mut OnDataFile>,
) -> io::Result<DataEntry> {
    let kind = match h.typeflag {
        b'0' | b'7' => EntryKind::File,
        b'1' => EntryKind::Hardlink { target: dpkg_path(&h.link) },
        b'2' => EntryKind::Symlink { target: h.link.clone() },
        b'3' => EntryKind::CharDevice { dev: h.dev },
        b'4' => EntryKind::BlockDevice { dev: h.dev },
        b'5' => EntryKind::Dir,
        b'6' => EntryKind::Fifo,
        other => EntryKind::Other { typeflag: other },
    };
    let (content, md5) = if kind == EntryKind::File {
        let mut md5 = md5::Md5::new();
        if let Some(on_file) = on_file {
            // Handed over, not kept: one file in memory at a time.
            let mut bytes = Vec::with_capacity(h.size.min(1 << 30) as usize);
            data.read_to_end(&mut bytes)?;
            md5.update(&bytes);
            on_file(&path, &bytes)?;
            (None, Some(md5.finalize().into()))
        } else if h.size <= max_kept {
            let mut bytes = Vec::with_capacity(h.size as usize);
            data.read_to_end(&mut bytes)?;
            md5.update(&bytes);
            (Some(Content::Bytes(bytes)), Some(md5.finalize().into()))
        } else {
            let mut b3 = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut size = 0u64;
            loop {
                let n = read_full(data, &mut buf)?;
                if n == 0 {
                    break;
                }
                md5.update(&buf[..n]);
                b3.update(&buf[..n]);
                size += n as u64;
            }
            (Some(Content::Digest { size, blake3: b3.finalize().to_hex().to_string() }), Some(md5.finalize().into()))
        }
    } else {
        (None, None)
    };
    Ok(DataEntry {
        path,
        kind,
        mode: h.mode & 0o7777,
        uid: h.uid,
        gid: h.gid,
        uname: h.uname.clone(),
        gname: h.gname.clone(),
        mtime: h.mtime,
        content,
        md5,
    })
}

/// Decodes a compressed tar member completely, calling `f` per entry; returns the
/// blake3 of the uncompressed stream.
fn read_member_tar(
    ext: &str,
    raw: &mut dyn Read,
    f: &mut dyn FnMut(&TarHeader, &mut dyn Read) -> io::Result<()>,
) -> Result<String, TarError> {
    let decoder: Box<dyn Read + '_> = match ext {
        "" => Box::new(raw),
        ".xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(raw)),
        ".gz" => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        ".zst" => Box::new(zstd::stream::read::Decoder::new(raw)?),
        _ => unreachable!("compression checked by the caller"),
    };
    let mut tar = Hashing::new(decoder);
    read_tar(&mut tar, |h: &TarHeader, r: &mut dyn Read| f(h, r).map_err(TarError::from))?;
    // Decode to the very end: trailing blocks, further xz blocks/streams, gzip members.
    io::copy(&mut tar, &mut io::sink())?;
    Ok(tar.hex())
}

fn compression_of(name: &str, prefix: &str) -> Option<&'static str> {
    match name.strip_prefix(prefix)? {
        "" => Some(""),
        ".xz" => Some(".xz"),
        ".gz" => Some(".gz"),
        ".zst" => Some(".zst"),
        _ => None,
    }
}

/// Reads and parses the package at `path`, keeping the contents of files up to
/// [`MAX_KEPT`].
pub fn read_deb(path: &Path) -> Result<Deb, DiffError> {
    read_deb_keeping(path, MAX_KEPT)
}

/// Reads and parses the package at `path`, keeping the contents of files up to
/// `max_kept` bytes (`u64::MAX`: every file's).
pub fn read_deb_keeping(path: &Path, max_kept: u64) -> Result<Deb, DiffError> {
    read_deb_inner(path, max_kept, None)
}

/// Reads and parses the package at `path`, handing each regular file of its data member
/// to `on_file` as it is read instead of keeping it (unpacking holds one file in memory,
/// not the package): those entries have no `content`, only their `md5`. Control files
/// are kept whole. An error from `on_file` stops the reading and is returned.
pub fn read_deb_streaming(path: &Path, mut on_file: OnDataFile) -> Result<Deb, DiffError> {
    read_deb_inner(path, MAX_KEPT, Some(&mut on_file))
}

fn read_deb_inner(path: &Path, max_kept: u64, mut on_file: Option<&mut OnDataFile>) -> Result<Deb, DiffError> {
    let file = hb_fs::open(path)?;
    let mut r = Hashing::new(BufReader::with_capacity(256 * 1024, file));
    let fs_err = |e: io::Error| DiffError::Fs(hb_fs::FsError::new("reading", path, e));
    let ar_err = |reason: String| DiffError::Ar { path: path.to_path_buf(), reason };
    let mut magic = [0u8; 8];
    if read_full(&mut r, &mut magic).map_err(fs_err)? < 8 || &magic != b"!<arch>\n" {
        return Err(DiffError::NotAr { path: path.to_path_buf() });
    }
    let mut members = Vec::new();
    let mut control: Option<(String, Vec<DataEntry>)> = None;
    let mut data: Option<(String, Vec<DataEntry>)> = None;
    loop {
        let mut h = [0u8; 60];
        let n = read_full(&mut r, &mut h).map_err(fs_err)?;
        if n == 0 {
            break;
        }
        if n < 60 || &h[58..60] != b"`\n" {
            return Err(ar_err(format!("bad member header after {} member(s)", members.len())));
        }
        let text = |range: std::ops::Range<usize>| String::from_utf8_lossy(&h[range]).trim().to_string();
        let name = text(0..16).trim_end_matches('/').to_string();
        let size: u64 = text(48..58).parse().map_err(|_| ar_err(format!("member {name}: bad size field")))?;
        let mut raw = Hashing::new(Read::take(&mut r, size));
        let member_err = |reason: String| DiffError::Member { path: path.to_path_buf(), member: name.clone(), reason };
        let mut tar_blake3 = None;
        let mut bytes = None;
        let kind = if name.starts_with("control.tar") {
            Some(("control.tar", &mut control))
        } else if name.starts_with("data.tar") {
            Some(("data.tar", &mut data))
        } else {
            None
        };
        match kind {
            Some((prefix, slot)) => {
                if slot.is_some() {
                    return Err(ar_err(format!("a second {prefix} member {name}")));
                }
                let ext = compression_of(&name, prefix).ok_or_else(|| DiffError::UnsupportedCompression {
                    path: path.to_path_buf(),
                    member: name.clone(),
                })?;
                let mut entries = Vec::new();
                let is_control = prefix == "control.tar";
                let mut on_entry = |h: &TarHeader, data: &mut dyn Read| -> io::Result<()> {
                    let p = dpkg_path(&h.path);
                    let p = if is_control { p.trim_start_matches('/').to_string() } else { p };
                    let sink = if is_control { None } else { on_file.as_deref_mut() };
                    entries.push(entry_from(h, data, p, max_kept, sink)?);
                    Ok(())
                };
                let hex = read_member_tar(ext, &mut raw, &mut on_entry).map_err(|e| member_err(e.to_string()))?;
                tar_blake3 = Some(hex);
                *slot = Some((name.clone(), entries));
            }
            None if size <= MAX_SMALL_MEMBER => {
                let mut v = Vec::new();
                raw.read_to_end(&mut v).map_err(fs_err)?;
                bytes = Some(v);
            }
            None => {}
        }
        io::copy(&mut raw, &mut io::sink()).map_err(fs_err)?;
        if raw.count != size {
            return Err(ar_err(format!("member {name} is truncated ({} of {size} bytes)", raw.count)));
        }
        let blake3 = raw.hex();
        if size % 2 == 1 {
            let mut pad = [0u8; 1];
            read_full(&mut r, &mut pad).map_err(fs_err)?;
        }
        members.push(ArMember {
            name,
            mtime: text(16..28),
            uid: text(28..34),
            gid: text(34..40),
            mode: text(40..48),
            size,
            blake3,
            tar_blake3,
            bytes,
        });
    }
    let (control_member, control_entries) =
        control.ok_or(DiffError::MissingMember { path: path.to_path_buf(), what: "control.tar*" })?;
    let (data_member, data_entries) =
        data.ok_or(DiffError::MissingMember { path: path.to_path_buf(), what: "data.tar*" })?;
    let control_files: BTreeMap<String, DataEntry> =
        control_entries.into_iter().filter(|e| e.kind != EntryKind::Dir).map(|e| (e.path.clone(), e)).collect();
    let control_err = |reason: String| DiffError::Control { path: path.to_path_buf(), reason };
    let control_text = match control_files.get("control").and_then(|e| e.content.as_ref()) {
        Some(Content::Bytes(b)) => std::str::from_utf8(b).map_err(|_| control_err("not UTF-8".into()))?.to_string(),
        Some(Content::Digest { .. }) => return Err(control_err("larger than 16 MiB".into())),
        None => return Err(control_err(format!("no control file in {control_member}"))),
    };
    let control_fields = parse_control(&control_text).map_err(control_err)?;
    Ok(Deb {
        path: path.to_path_buf(),
        size: r.count,
        blake3: r.hex(),
        members,
        control_member,
        data_member,
        control_fields,
        control_files,
        data: data_entries.into_iter().map(|e| (e.path.clone(), e)).collect(),
    })
}

/// The first stanza's fields in order; continuation lines are appended with '\n'
/// verbatim (leading space included).
pub fn parse_control(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if fields.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = fields.last_mut() else {
                return Err(format!("line {} continues no field", i + 1));
            };
            last.1.push('\n');
            last.1.push_str(line);
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {} is not a field: {line:?}", i + 1));
        };
        fields.push((name.trim().to_string(), value.trim().to_string()));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_paths() {
        assert_eq!(dpkg_path("./"), "/");
        assert_eq!(dpkg_path("."), "/");
        assert_eq!(dpkg_path("./usr/bin/"), "/usr/bin");
        assert_eq!(dpkg_path("usr/bin/x"), "/usr/bin/x");
        assert_eq!(dpkg_path("/etc/x"), "/etc/x");
    }

    #[test]
    fn control_stanza() {
        let f = parse_control("Package: x\nDescription: short\n long\n .\n more\nSection: web\n").expect("parse");
        assert_eq!(
            f,
            vec![
                ("Package".into(), "x".into()),
                ("Description".into(), "short\n long\n .\n more".into()),
                ("Section".into(), "web".into())
            ]
        );
        assert!(parse_control(" x\n").is_err());
        assert!(parse_control("no colon\n").is_err());
    }
}
