//! Reading and validating one wheel archive before anything of it is installed: safe
//! member names (relative, no `..`, no backslashes or control characters, components
//! within NAME_MAX, no links or special files, no duplicates), local file headers that
//! agree with the central directory, members inflated only up to the [`Limits`] (size
//! and compression ratio, checked while inflating), exactly one `.dist-info` matching
//! the file name, a METADATA whose `Name` and `Version` match it too, a supported
//! `Wheel-Version`, known `.data/` subdirectories, and a RECORD whose sha256 hashes and
//! sizes match every member. A [`Wheel`] holds the validated regular files in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};

use crate::tags::{WheelName, normalize};
use crate::{PyError, record};

/// The `.data/` subdirectories the wheel format defines.
pub(crate) const DATA_KINDS: [&str; 5] = ["purelib", "platlib", "scripts", "headers", "data"];

/// A regular file of a validated wheel.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub name: String,
    pub bytes: Vec<u8>,
    /// The zip entry's unix mode had an execute bit.
    pub executable: bool,
}

/// An opened and validated wheel.
#[derive(Clone, Debug)]
pub struct Wheel {
    filename: String,
    name: WheelName,
    dist_info: String,
    root_is_purelib: bool,
    members: Vec<Member>,
    /// sha256 of the wheel file, lowercase hex.
    sha256: String,
    /// The licence METADATA declares, as an SPDX expression hb can vouch for.
    license: Option<String>,
    /// METADATA's `Version`, `Requires-Dist` lines and `Requires-Python`.
    version: String,
    requires_dist: Vec<String>,
    requires_python: Option<String>,
}

/// How much a wheel may inflate to. Checked while inflating, so a zip bomb is stopped
/// before it is in memory, let alone written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes all members of one wheel may inflate to.
    pub max_unpacked: u64,
    /// The largest ratio of a member's inflated to compressed size, for members larger
    /// than [`Limits::RATIO_FLOOR`].
    pub max_ratio: u64,
}

impl Limits {
    /// Members smaller than this may compress as well as they like. Real wheels hold
    /// megabytes of zero padding: Pillow's bundled libXau inflates 9 KiB to over 1 MiB.
    pub const RATIO_FLOOR: u64 = 16 << 20;
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_unpacked: 1 << 30, max_ratio: 200 }
    }
}

/// The longest path component Linux file systems take (NAME_MAX).
pub const NAME_MAX: usize = 255;

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// Why a member name is unsafe, if it is.
fn unsafe_name(name: &str) -> Option<&'static str> {
    let path = name.strip_suffix('/').unwrap_or(name);
    if path.is_empty() {
        return Some("has an empty name");
    }
    if name.contains('\0') {
        return Some("contains a NUL byte in its name");
    }
    if name.contains('\\') {
        return Some("contains a backslash in its name (wheel paths are '/'-separated)");
    }
    if name.chars().any(char::is_control) {
        return Some("has a control character (such as a newline) in its name, which dpkg cannot package");
    }
    if name.starts_with('/') {
        return Some("is an absolute path");
    }
    let first = path.split('/').next().unwrap_or(path).as_bytes();
    if first.len() >= 2 && first[0].is_ascii_alphabetic() && first[1] == b':' {
        return Some("starts with a drive letter");
    }
    for c in path.split('/') {
        match c {
            "" => return Some("has an empty path component"),
            "." | ".." => return Some("has a `.` or `..` path component (it could escape the install directory)"),
            _ if c.len() > NAME_MAX => return Some("has a path component longer than 255 bytes (NAME_MAX)"),
            _ => {}
        }
    }
    None
}

/// Checks that each central directory entry's local file header agrees with it: the
/// same name and, unless sizes follow the data (bit 3), the same sizes. The zip reader
/// trusts the central directory; a tool reading local headers would see other files.
fn check_local_headers(bytes: &[u8], start: u64) -> Result<(), (String, String)> {
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], i: usize| b.get(i..i + 4).map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
    let mut pos =
        usize::try_from(start).map_err(|_| (String::new(), "the central directory is out of range".into()))?;
    while let Some(h) = bytes.get(pos..pos.saturating_add(46)) {
        if h[..4] != [0x50, 0x4b, 0x01, 0x02] {
            break;
        }
        let field = |i| usize::from(u16_at(h, i).unwrap_or(0));
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let name = bytes.get(pos + 46..pos + 46 + name_len).unwrap_or_default();
        let shown = String::from_utf8_lossy(name).into_owned();
        let bad = |why: &str| Err((shown.clone(), why.to_string()));
        let (csize, usize_) = (u32_at(h, 20).unwrap_or(0), u32_at(h, 24).unwrap_or(0));
        let offset = u32_at(h, 42).unwrap_or(0);
        if offset != u32::MAX {
            let lh = offset as usize;
            let Some(local) = bytes.get(lh..lh.saturating_add(30)) else {
                return bad("has a local file header outside the archive");
            };
            if local[..4] != [0x50, 0x4b, 0x03, 0x04] {
                return bad("has no local file header where the central directory says");
            }
            let lname_len = usize::from(u16_at(local, 26).unwrap_or(0));
            if bytes.get(lh + 30..lh + 30 + lname_len) != Some(name) {
                return bad("has a local file header with another name than the central directory's");
            }
            let descriptor = u16_at(local, 6).unwrap_or(0) & 0x8 != 0;
            let (lc, lu) = (u32_at(local, 18).unwrap_or(0), u32_at(local, 22).unwrap_or(0));
            let zip64 = [csize, usize_, lc, lu].contains(&u32::MAX);
            if !descriptor && !zip64 && (lc, lu) != (csize, usize_) {
                return bad("has a local file header whose sizes disagree with the central directory's");
            }
        }
        pos += 46 + name_len + extra_len + comment_len;
    }
    Ok(())
}

/// Inflates a member, stopping as soon as it passes the limits.
fn inflate(f: &mut impl Read, compressed: u64, budget: &u64, limits: &Limits) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("cannot be decompressed: {e}"))?;
        if n == 0 {
            return Ok(data);
        }
        data.extend_from_slice(&buf[..n]);
        let len = data.len() as u64;
        if len > *budget {
            return Err(format!(
                "inflates past the wheel's limit of {} bytes unpacked (a zip bomb?)",
                limits.max_unpacked
            ));
        }
        if len > Limits::RATIO_FLOOR && len > compressed.max(1).saturating_mul(limits.max_ratio) {
            return Err(format!(
                "inflates more than {} times its compressed size of {compressed} bytes (a zip bomb?)",
                limits.max_ratio
            ));
        }
    }
}

/// The raw names of every central directory header from `start`, in archive order.
/// The zip reader keys its entries by name, so duplicates are only visible here.
fn central_directory_names(bytes: &[u8], start: u64) -> Result<Vec<Vec<u8>>, String> {
    let mut pos = usize::try_from(start).map_err(|_| "the central directory offset is out of range".to_string())?;
    let mut names = Vec::new();
    while let Some(h) = bytes.get(pos..pos.saturating_add(46)) {
        if h[..4] != [0x50, 0x4b, 0x01, 0x02] {
            break;
        }
        let u16_at = |i: usize| usize::from(u16::from_le_bytes([h[i], h[i + 1]]));
        let (name_len, extra_len, comment_len) = (u16_at(28), u16_at(30), u16_at(32));
        let name =
            bytes.get(pos + 46..pos + 46 + name_len).ok_or_else(|| "the central directory is truncated".to_string())?;
        names.push(name.to_vec());
        pos += 46 + name_len + extra_len + comment_len;
    }
    Ok(names)
}

/// Parses `Key: Value` header lines (RFC 822 style, as in WHEEL); stops at the first
/// blank line. Continuation lines are appended to the previous value.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            match out.last_mut() {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                None => return Err(format!("line {} is a continuation with no header before it", i + 1)),
            }
            continue;
        }
        let (k, v) =
            line.split_once(':').ok_or_else(|| format!("line {} `{line}` is not a `Key: Value` header", i + 1))?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

impl Wheel {
    /// Opens and validates a wheel (see the module documentation for the checks).
    /// `filename` is the wheel's file name (a path is accepted), `bytes` its contents.
    pub fn open(filename: &str, bytes: Vec<u8>) -> Result<Wheel, PyError> {
        Wheel::open_with(filename, bytes, &Limits::default())
    }

    /// [`Wheel::open`] with explicit inflation limits.
    pub fn open_with(filename: &str, bytes: Vec<u8>, limits: &Limits) -> Result<Wheel, PyError> {
        let name = WheelName::parse(filename)?;
        let wheel = filename.rsplit('/').next().unwrap_or(filename).to_string();
        let archive_err = |reason: String| PyError::Archive { wheel: wheel.clone(), reason };
        let member_err = |member: &str, reason: &str| PyError::Member {
            wheel: wheel.clone(),
            member: member.to_string(),
            reason: reason.to_string(),
        };

        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes[..])).map_err(|e| archive_err(e.to_string()))?;
        let raw_names = central_directory_names(&bytes, archive.central_directory_start()).map_err(&archive_err)?;
        let mut seen = BTreeSet::new();
        for raw in &raw_names {
            if !seen.insert(raw.as_slice()) {
                return Err(member_err(&String::from_utf8_lossy(raw), "appears twice in the archive"));
            }
        }
        check_local_headers(&bytes, archive.central_directory_start())
            .map_err(|(member, reason)| member_err(&member, &reason))?;
        if raw_names.len() != archive.len() {
            return Err(archive_err(format!(
                "the central directory lists {} entries but {} distinct names were read",
                raw_names.len(),
                archive.len()
            )));
        }

        let mut files: BTreeMap<String, Member> = BTreeMap::new();
        let mut dirs: BTreeSet<String> = BTreeSet::new();
        let mut budget = limits.max_unpacked;
        for i in 0..archive.len() {
            let mut f = archive.by_index(i).map_err(|e| archive_err(format!("entry {i}: {e}")))?;
            let member = f.name().to_string();
            if let Some(reason) = unsafe_name(&member) {
                return Err(member_err(&member, reason));
            }
            let mode = f.unix_mode();
            let kind = mode.map_or(0, |m| m & S_IFMT);
            if kind == S_IFLNK {
                return Err(member_err(&member, "is a symbolic link (wheels may contain only regular files)"));
            }
            if kind != 0 && kind != S_IFREG && kind != S_IFDIR {
                return Err(member_err(&member, "is a special file (wheels may contain only regular files)"));
            }
            if f.encrypted() {
                return Err(member_err(&member, "is encrypted"));
            }
            if member.ends_with('/') || kind == S_IFDIR {
                if f.size() != 0 {
                    return Err(member_err(&member, "is a directory entry with contents"));
                }
                dirs.insert(member.trim_end_matches('/').to_string());
                continue;
            }
            let compressed = f.compressed_size();
            let data = inflate(&mut f, compressed, &budget, limits).map_err(|why| member_err(&member, &why))?;
            budget -= data.len() as u64;
            let executable = mode.is_some_and(|m| m & 0o111 != 0);
            files.insert(member.clone(), Member { name: member, bytes: data, executable });
        }
        for d in &dirs {
            if files.contains_key(d) {
                return Err(member_err(d, "is both a file and a directory"));
            }
        }

        // Exactly one .dist-info, named after the wheel.
        let tops: BTreeSet<&str> =
            files.keys().chain(dirs.iter()).filter_map(|p| p.split_once('/').map(|(top, _)| top)).collect();
        let infos: Vec<&str> = tops.iter().copied().filter(|t| t.ends_with(".dist-info")).collect();
        let dist_info = match infos.as_slice() {
            [one] => one.to_string(),
            [] => {
                return Err(PyError::Layout {
                    wheel,
                    reason: "it has no `{name}-{version}.dist-info/` directory".into(),
                });
            }
            many => {
                return Err(PyError::Layout {
                    wheel,
                    reason: format!("it has {} .dist-info directories ({})", many.len(), many.join(", ")),
                });
            }
        };
        let stem = dist_info.strip_suffix(".dist-info").unwrap_or(&dist_info);
        let matches = stem
            .rsplit_once('-')
            .is_some_and(|(n, v)| normalize(n) == name.normalized_name() && v.eq_ignore_ascii_case(&name.version));
        if !matches {
            return Err(PyError::Layout {
                wheel,
                reason: format!(
                    "its metadata directory `{dist_info}/` does not match the file name (expected `{}-{}.dist-info/`)",
                    name.distribution, name.version
                ),
            });
        }
        let data_dir = format!("{stem}.data");
        for top in &tops {
            if top.ends_with(".data") && *top != data_dir {
                return Err(member_err(
                    top,
                    &format!(
                        "is a .data directory that does not match the metadata directory (expected `{data_dir}/`)"
                    ),
                ));
            }
        }
        for p in files.keys().chain(dirs.iter()) {
            if let Some(rest) = p.strip_prefix(&format!("{data_dir}/")) {
                let (kind, inner) = rest.split_once('/').unwrap_or((rest, ""));
                if !DATA_KINDS.contains(&kind) {
                    return Err(member_err(
                        p,
                        &format!("is in an unknown .data directory `{kind}` (allowed: {})", DATA_KINDS.join(", ")),
                    ));
                }
                if inner.is_empty() && files.contains_key(p.as_str()) {
                    return Err(member_err(p, "is a file where a .data directory must be"));
                }
            } else if files.contains_key(p.as_str()) && *p == data_dir {
                return Err(member_err(p, "is a file where the .data directory must be"));
            }
        }

        // WHEEL metadata.
        let wheel_path = format!("{dist_info}/WHEEL");
        let meta_err = |reason: String| PyError::Metadata { wheel: wheel.clone(), member: wheel_path.clone(), reason };
        let wheel_file = files
            .get(&wheel_path)
            .ok_or_else(|| meta_err("is missing; every wheel needs it, rebuild the wheel".to_string()))?;
        let text = std::str::from_utf8(&wheel_file.bytes)
            .map_err(|_| meta_err("is not UTF-8 text; rebuild the wheel".to_string()))?;
        let headers = parse_headers(text).map_err(|e| meta_err(format!("cannot be parsed: {e}; rebuild the wheel")))?;
        let header = |key: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str());
        let version = header("Wheel-Version")
            .ok_or_else(|| meta_err("has no Wheel-Version header; rebuild the wheel".to_string()))?;
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.trim().parse::<u32>().ok())
            .ok_or_else(|| meta_err(format!("has an unreadable Wheel-Version `{version}`; rebuild the wheel")))?;
        if major != 1 {
            return Err(meta_err(format!(
                "says Wheel-Version {version}; hb installs only wheel format 1.x, use a wheel built by a \
                 tool that writes format 1"
            )));
        }
        let root_is_purelib = header("Root-Is-Purelib").is_some_and(|v| v.eq_ignore_ascii_case("true"));

        // METADATA names the same distribution and version as the file name.
        let metadata_path = format!("{dist_info}/METADATA");
        let md_err = |reason: String| PyError::Metadata { wheel: wheel.clone(), member: metadata_path.clone(), reason };
        let metadata = files
            .get(&metadata_path)
            .ok_or_else(|| md_err("is missing; every wheel needs it, rebuild the wheel".to_string()))?;
        let text = std::str::from_utf8(&metadata.bytes)
            .map_err(|_| md_err("is not UTF-8 text; rebuild the wheel".to_string()))?;
        let headers = parse_headers(text).map_err(|e| md_err(format!("cannot be parsed: {e}; rebuild the wheel")))?;
        let field = |key: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str());
        let md_name = field("Name").ok_or_else(|| md_err("has no Name field".to_string()))?;
        let md_version = field("Version").ok_or_else(|| md_err("has no Version field".to_string()))?;
        if normalize(md_name) != name.normalized_name() {
            return Err(md_err(format!("says Name: {md_name}, but the file name says {}", name.distribution)));
        }
        if !md_version.replace('-', "_").eq_ignore_ascii_case(&name.version) {
            return Err(md_err(format!("says Version: {md_version}, but the file name says {}", name.version)));
        }
        let classifiers: Vec<&str> =
            headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("Classifier")).map(|(_, v)| v.as_str()).collect();
        let license = crate::license::declared(field("License-Expression"), field("License"), &classifiers);
        let requires_dist: Vec<String> = headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("Requires-Dist"))
            .map(|(_, v)| v.trim().to_string())
            .collect();
        let requires_python = field("Requires-Python").map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let version = md_version.trim().to_string();

        // RECORD covers every member with a matching hash.
        let record_path = format!("{dist_info}/RECORD");
        let rec_err =
            |member: &str, reason: String| PyError::Record { wheel: wheel.clone(), member: member.to_string(), reason };
        let record_file =
            files.get(&record_path).ok_or_else(|| rec_err(&record_path, "the RECORD file is missing".to_string()))?;
        let text = std::str::from_utf8(&record_file.bytes)
            .map_err(|_| rec_err(&record_path, "RECORD is not UTF-8 text".to_string()))?;
        let rows = record::parse(text).map_err(|e| rec_err(&record_path, format!("RECORD cannot be parsed: {e}")))?;
        let unsigned = [record_path.clone(), format!("{record_path}.jws"), format!("{record_path}.p7s")];
        let mut listed: BTreeMap<&str, &record::Row> = BTreeMap::new();
        for row in &rows {
            if let Some(reason) = unsafe_name(&row.path) {
                return Err(rec_err(&row.path, format!("the RECORD row's path {reason}")));
            }
            if listed.insert(row.path.as_str(), row).is_some() {
                return Err(rec_err(&row.path, "RECORD lists it twice".to_string()));
            }
            if !files.contains_key(&row.path) {
                return Err(rec_err(&row.path, "RECORD lists it but the archive has no such file".to_string()));
            }
        }
        for (path, m) in &files {
            if unsigned.contains(path) {
                continue;
            }
            let row =
                listed.get(path.as_str()).ok_or_else(|| rec_err(path, "it is not listed in RECORD".to_string()))?;
            match record::check_hash(&row.hash, &m.bytes) {
                Ok(()) => {}
                Err(record::HashProblem::Unsupported) => {
                    return Err(rec_err(
                        path,
                        format!("RECORD gives hash `{}`, not a `sha256=` (or sha384/sha512) hash", row.hash),
                    ));
                }
                Err(record::HashProblem::Mismatch(actual)) => {
                    return Err(rec_err(path, format!("its hash is {actual} but RECORD says {}", row.hash)));
                }
            }
            if !row.size.is_empty() {
                let size: u64 = row
                    .size
                    .parse()
                    .map_err(|_| rec_err(path, format!("RECORD gives an unreadable size `{}`", row.size)))?;
                if size != m.bytes.len() as u64 {
                    return Err(rec_err(path, format!("its size is {} but RECORD says {size}", m.bytes.len())));
                }
            }
        }

        let sha256 = {
            use sha2::Digest as _;
            sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
        };
        Ok(Wheel {
            filename: wheel,
            name,
            dist_info,
            root_is_purelib,
            members: files.into_values().collect(),
            sha256,
            license,
            version,
            requires_dist,
            requires_python,
        })
    }

    /// What it needs installed beside it, for [`crate::requires::unmet`].
    pub fn requirements(&self) -> crate::requires::Dist<'_> {
        crate::requires::Dist {
            name: &self.name.distribution,
            version: &self.version,
            requires_dist: &self.requires_dist,
            requires_python: self.requires_python.as_deref(),
        }
    }

    /// The parsed file name.
    pub fn name(&self) -> &WheelName {
        &self.name
    }

    /// The wheel's file name (without any directory).
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// sha256 of the wheel file, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The licence its METADATA declares, as an SPDX expression of well-known
    /// identifiers (`License-Expression`, a one-identifier `License`, or an unambiguous
    /// classifier); `None` when it says nothing hb can state exactly.
    pub fn license(&self) -> Option<&str> {
        self.license.as_deref()
    }

    /// The `{name}-{version}.dist-info` directory name.
    pub fn dist_info(&self) -> &str {
        &self.dist_info
    }

    /// The `{name}-{version}.data` directory name (it need not exist).
    pub fn data_dir(&self) -> String {
        format!("{}.data", self.dist_info.strip_suffix(".dist-info").unwrap_or(&self.dist_info))
    }

    /// `Root-Is-Purelib` from WHEEL (both roots land in site-packages in a venv).
    pub fn root_is_purelib(&self) -> bool {
        self.root_is_purelib
    }

    /// Its regular files (name and bytes), sorted by name.
    pub fn files(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.members.iter().map(|m| (m.name.as_str(), m.bytes.as_slice()))
    }

    /// The regular files, sorted by name.
    pub(crate) fn members(&self) -> &[Member] {
        &self.members
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{WheelBuilder, pure_wheel};

    fn open_err(name: &str, bytes: Vec<u8>) -> String {
        match Wheel::open(name, bytes) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    const DEMO: &str = "demo-1.0-py3-none-any.whl";

    #[test]
    fn metadata_must_exist_and_agree_with_the_file_name() {
        let err = open_err(DEMO, WheelBuilder::new("demo", "1.0").no_metadata().build());
        assert!(err.contains("METADATA") && err.contains("missing"), "{err}");
        let err = open_err(DEMO, WheelBuilder::new("demo", "1.0").metadata("Name: other\nVersion: 1.0\n").build());
        assert!(err.contains("says Name: other"), "{err}");
        let err = open_err(DEMO, WheelBuilder::new("demo", "1.0").metadata("Name: Demo\nVersion: 2.0\n").build());
        assert!(err.contains("says Version: 2.0"), "{err}");
        assert!(
            Wheel::open(DEMO, WheelBuilder::new("demo", "1.0").metadata("Name: DEMO\nVersion: 1.0\n").build()).is_ok()
        );
    }

    #[test]
    fn names_dpkg_cannot_hold_are_refused() {
        let err = open_err(DEMO, WheelBuilder::new("demo", "1.0").file("demo/a\nb.py", b"x").build());
        assert!(err.contains("demo/a\nb.py") && err.contains("control character"), "{err}");
        let long = format!("demo/{}.py", "x".repeat(300));
        let err = open_err(DEMO, WheelBuilder::new("demo", "1.0").file(&long, b"x").build());
        assert!(err.contains("NAME_MAX"), "{err}");
    }

    /// The offset of the first local file header's name (the archive starts with it).
    fn patch(mut bytes: Vec<u8>, at: usize, with: &[u8]) -> Vec<u8> {
        bytes[at..at + with.len()].copy_from_slice(with);
        bytes
    }

    #[test]
    fn local_headers_must_agree_with_the_central_directory() {
        let bytes = WheelBuilder::new("demo", "1.0").file("demo/__init__.py", b"x = 1\n").build();
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        // The first member's name in its local header only.
        let err = open_err(DEMO, patch(bytes.clone(), 30, b"X"));
        assert!(err.contains("local file header with another name"), "{err}");
        // Its uncompressed size in the local header only.
        let err = open_err(DEMO, patch(bytes, 22, &[0xff, 0xff, 0, 0]));
        assert!(err.contains("sizes disagree"), "{err}");
    }

    #[test]
    fn zip_bombs_stop_while_inflating() {
        let zeros = vec![0u8; 24 << 20];
        let bytes = WheelBuilder::new("demo", "1.0").file("demo/zeros.bin", &zeros).build();
        assert!(bytes.len() < 100_000, "24 MiB of zeros compress well");
        let err = open_err(DEMO, bytes.clone());
        assert!(err.contains("demo/zeros.bin") && err.contains("200 times its compressed size"), "{err}");
        let lenient = Limits { max_unpacked: 1 << 30, max_ratio: 100_000 };
        assert!(Wheel::open_with(DEMO, bytes.clone(), &lenient).is_ok());
        let small = Limits { max_unpacked: 1 << 20, max_ratio: 100_000 };
        let err = Wheel::open_with(DEMO, bytes, &small).unwrap_err().to_string();
        assert!(err.contains("past the wheel's limit of 1048576 bytes"), "{err}");
    }

    #[test]
    fn opens_a_valid_wheel() {
        let (name, bytes) = pure_wheel();
        let w = Wheel::open(&name, bytes).unwrap();
        assert_eq!(w.dist_info(), "demo_pkg-1.0.dist-info");
        assert_eq!(w.data_dir(), "demo_pkg-1.0.data");
        assert!(w.root_is_purelib());
        assert_eq!(w.name().normalized_name(), "demo-pkg");
        assert!(w.members().iter().any(|m| m.name == "demo_pkg/__init__.py"));
        assert!(w.members().windows(2).all(|p| p[0].name < p[1].name));
    }

    #[test]
    fn rejects_a_bad_hash() {
        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("demo.py", b"print(1)\n");
        b.tamper("demo.py", b"print(2)\n");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("demo-1.0-py3-none-any.whl") && e.contains("`demo.py`") && e.contains("sha256"), "{e}");
    }

    #[test]
    fn rejects_a_wrong_size() {
        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("demo.py", b"print(1)\n");
        b.record_override("demo.py", None, Some("3"));
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("`demo.py`") && e.contains("size"), "{e}");
    }

    #[test]
    fn rejects_members_missing_from_record_and_rows_without_members() {
        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("demo.py", b"x = 1\n");
        b.unrecorded("extra.py", b"x = 2\n");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("`extra.py`") && e.contains("not listed in RECORD"), "{e}");

        let mut b = WheelBuilder::new("demo", "1.0");
        b.extra_record_row("ghost.py,sha256=AAAA,4");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("`ghost.py`") && e.contains("no such file"), "{e}");

        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("demo.py", b"x = 1\n");
        b.record_override("demo.py", Some("md5=abc"), None);
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("`demo.py`") && e.contains("md5=abc") && e.contains("not a `sha256=`"), "{e}");
    }

    #[test]
    fn rejects_unsafe_names() {
        for (bad, why) in [
            ("../evil", "`..`"),
            ("demo/../../evil", "`..`"),
            ("/etc/passwd", "absolute"),
            ("demo\\evil.py", "backslash"),
            ("C:/evil.py", "drive letter"),
            ("demo//x.py", "empty path component"),
            ("./x.py", "`.`"),
            ("a\0b", "NUL"),
        ] {
            let mut b = WheelBuilder::new("demo", "1.0");
            b.file(bad, b"evil\n");
            let e = open_err("demo-1.0-py3-none-any.whl", b.build());
            assert!(e.contains("demo-1.0-py3-none-any.whl") && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_symlinks_and_duplicates() {
        let mut b = WheelBuilder::new("demo", "1.0");
        b.symlink("demo/link", "/etc/shadow");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("`demo/link`") && e.contains("symbolic link"), "{e}");

        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("demo.py", b"a\n");
        b.duplicate("demo.py", b"b\n");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("`demo.py`") && e.contains("twice"), "{e}");
    }

    #[test]
    fn rejects_unknown_data_dirs() {
        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("demo-1.0.data/etc/passwd", b"x\n");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("`demo-1.0.data/etc/passwd`") && e.contains("unknown .data directory `etc`"), "{e}");

        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("other-2.0.data/purelib/x.py", b"x\n");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("other-2.0.data") && e.contains("does not match"), "{e}");
    }

    #[test]
    fn rejects_unsupported_wheel_versions_and_missing_metadata() {
        let mut b = WheelBuilder::new("demo", "1.0");
        b.wheel_version("2.0");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("demo-1.0.dist-info/WHEEL") && e.contains("Wheel-Version 2.0"), "{e}");

        let mut b = WheelBuilder::new("demo", "1.0");
        b.wheel_version("1.9");
        assert!(Wheel::open("demo-1.0-py3-none-any.whl", b.build()).is_ok(), "1.x minor versions are fine");

        let mut b = WheelBuilder::new("demo", "1.0");
        b.no_wheel_file();
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("WHEEL") && e.contains("missing"), "{e}");

        let mut b = WheelBuilder::new("demo", "1.0");
        b.no_record();
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("RECORD") && e.contains("missing"), "{e}");
    }

    #[test]
    fn rejects_dist_info_mismatch() {
        let b = WheelBuilder::new("other", "1.0");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("other-1.0.dist-info") && e.contains("does not match the file name"), "{e}");

        let b = WheelBuilder::new("demo", "1.1");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("does not match the file name"), "{e}");

        // Normalized comparison: `Demo.Pkg` matches `demo_pkg`.
        let b = WheelBuilder::new("demo_pkg", "1.0");
        assert!(Wheel::open("Demo.Pkg-1.0-py3-none-any.whl", b.build()).is_ok());

        let mut b = WheelBuilder::new("demo", "1.0");
        b.file("extra-1.0.dist-info/METADATA", b"x\n");
        let e = open_err("demo-1.0-py3-none-any.whl", b.build());
        assert!(e.contains("2 .dist-info directories"), "{e}");
    }

    #[test]
    fn rejects_garbage() {
        let e = open_err("demo-1.0-py3-none-any.whl", b"not a zip".to_vec());
        assert!(e.contains("demo-1.0-py3-none-any.whl") && e.contains("cannot be read"), "{e}");
        let e = open_err("demo.whl", Vec::new());
        assert!(e.contains("not a wheel file name"), "{e}");
    }

    mod hostile {
        //! Damaged wheels: whatever bytes are flipped, cut or added, opening never panics
        //! and never inflates past the limits; it returns a wheel or an error.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn damaged_wheels_never_panic(
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
                cut in any::<prop::sample::Index>(),
                do_cut in any::<bool>(),
            ) {
                let (name, mut bytes) = pure_wheel();
                for (at, b) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= b;
                }
                if do_cut {
                    bytes.truncate(cut.index(bytes.len()));
                }
                let small = Limits { max_unpacked: 1 << 20, max_ratio: 50 };
                if let Ok(w) = Wheel::open_with(&name, bytes, &small) {
                    let total: usize = w.members.iter().map(|m| m.bytes.len()).sum();
                    prop_assert!(total as u64 <= small.max_unpacked);
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
                let mut zip = b"PK\x03\x04".to_vec();
                zip.extend(bytes);
                let _ = Wheel::open("demo-1.0-py3-none-any.whl", zip);
            }
        }
    }
}
