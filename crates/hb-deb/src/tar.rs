//! GNU-format tar writing for the deb's `control.tar` and `data.tar` members: one fixed
//! header layout (root/root, uid/gid 0, the given mtime and mode, GNU magic), GNU
//! `././@LongLink` records for names and link targets over 100 bytes, and never a PAX
//! header (dpkg rejects them). Also the exact size of every entry, so chunks can be
//! planned without writing anything.

use crate::{DebError, copy_exact};
use std::io::{self, Read, Write};

const BLOCK: u64 = 512;
const NAME_LEN: usize = 100;
/// Largest value an 11-digit octal field can hold (8 GiB - 1 for sizes).
const MAX_OCTAL_11: u64 = 0o777_7777_7777;
/// Largest value a 7-digit octal field can hold (modes).
const MAX_OCTAL_7: u64 = 0o777_7777;
const LONGLINK_NAME: &str = "././@LongLink";

/// One tar entry: a directory, a regular file or a symbolic link.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TarEntry {
    /// Relative, '/'-separated, no leading "/" or "./"; "" means the root directory.
    pub path: String,
    /// What the entry is.
    pub kind: TarKind,
    /// Permission bits, e.g. 0o755 or 0o644 (written as given, never masked by umask).
    pub mode: u32,
}

/// The kind of a [`TarEntry`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TarKind {
    /// A directory (member name ends in '/').
    Dir,
    /// A regular file of exactly `size` bytes.
    File {
        /// Content length in bytes.
        size: u64,
    },
    /// A symbolic link pointing at `target` (stored verbatim).
    Symlink {
        /// The link target.
        target: String,
    },
}

impl TarEntry {
    /// The member name as dpkg-deb writes it: "./", "./etc/", "./etc/x.cfg".
    pub fn member_name(&self) -> String {
        match (&self.kind, self.path.is_empty()) {
            (_, true) => "./".to_string(),
            (TarKind::Dir, false) => format!("./{}/", self.path),
            (_, false) => format!("./{}", self.path),
        }
    }

    fn data_size(&self) -> u64 {
        match self.kind {
            TarKind::File { size } => size,
            _ => 0,
        }
    }
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn check_path(e: &TarEntry) -> io::Result<()> {
    let p = &e.path;
    if p.is_empty() {
        return match e.kind {
            TarKind::Dir => Ok(()),
            _ => Err(invalid("only the root directory may have an empty path".into())),
        };
    }
    if p.contains('\0') {
        return Err(invalid(format!("tar path {p:?} contains NUL")));
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(invalid(format!(
            "tar path {p:?} must be relative and normalized (no leading '/', './', '..' or empty components)"
        )));
    }
    if let TarKind::Symlink { target } = &e.kind
        && (target.is_empty() || target.contains('\0'))
    {
        return Err(invalid(format!("symlink {p:?} has an empty or NUL-containing target")));
    }
    Ok(())
}

/// Writes `value` as zero-padded octal filling `field` except for a final NUL.
fn put_octal(field: &mut [u8], value: u64, what: &str) -> io::Result<()> {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    if s.len() > digits {
        return Err(invalid(format!("{what} {value} does not fit a {digits}-digit octal field")));
    }
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
    Ok(())
}

/// Builds one 512-byte header block. `name`/`link` longer than their fields are truncated
/// (the caller has written the LongLink records carrying the full values).
fn header_block(name: &[u8], mode: u64, size: u64, mtime: u64, typeflag: u8, link: &[u8]) -> io::Result<[u8; 512]> {
    let mut h = [0u8; 512];
    let n = name.len().min(NAME_LEN);
    h[..n].copy_from_slice(&name[..n]);
    put_octal(&mut h[100..108], mode, "mode")?;
    put_octal(&mut h[108..116], 0, "uid")?;
    put_octal(&mut h[116..124], 0, "gid")?;
    put_octal(&mut h[124..136], size, "size")?;
    put_octal(&mut h[136..148], mtime, "mtime")?;
    h[156] = typeflag;
    let l = link.len().min(NAME_LEN);
    h[157..157 + l].copy_from_slice(&link[..l]);
    // GNU magic: "ustar " followed by version " \0".
    h[257..265].copy_from_slice(b"ustar  \0");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    // Checksum: sum of all bytes with the checksum field taken as eight spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    Ok(h)
}

/// Writes a GNU long-name ('L') or long-link ('K') record for `value`.
fn write_longlink(out: &mut impl Write, typeflag: u8, value: &[u8]) -> io::Result<u64> {
    let len = value.len() as u64 + 1;
    // Mode 0644, mtime 0, root/root: what GNU tar writes for these records.
    let h = header_block(LONGLINK_NAME.as_bytes(), 0o644, len, 0, typeflag, b"")?;
    out.write_all(&h)?;
    out.write_all(value)?;
    let pad = padded(len) - value.len() as u64;
    write_zeros(out, pad)?;
    Ok(BLOCK + padded(len))
}

fn write_zeros(out: &mut impl Write, n: u64) -> io::Result<()> {
    const ZEROS: [u8; 512] = [0u8; 512];
    let mut left = n;
    while left > 0 {
        let k = left.min(512) as usize;
        out.write_all(&ZEROS[..k])?;
        left -= k as u64;
    }
    Ok(())
}

fn longlink_len(value_len: usize) -> u64 {
    if value_len > NAME_LEN { BLOCK + padded(value_len as u64 + 1) } else { 0 }
}

/// Writes the header of `e` (preceded by any LongLink records it needs) and returns the
/// number of bytes written. File content and its padding are not included.
pub fn write_header(out: &mut impl Write, e: &TarEntry, mtime: u64) -> io::Result<u64> {
    check_path(e)?;
    if u64::from(e.mode) > MAX_OCTAL_7 {
        return Err(invalid(format!("mode {:o} does not fit", e.mode)));
    }
    let size = e.data_size();
    if size > MAX_OCTAL_11 {
        return Err(invalid(format!("file {:?} is too large for tar ({size} bytes)", e.path)));
    }
    if mtime > MAX_OCTAL_11 {
        return Err(invalid(format!("mtime {mtime} does not fit a tar header")));
    }
    let name = e.member_name();
    let (typeflag, link): (u8, &[u8]) = match &e.kind {
        TarKind::Dir => (b'5', b""),
        TarKind::File { .. } => (b'0', b""),
        TarKind::Symlink { target } => (b'2', target.as_bytes()),
    };
    // Build the real header first so that nothing is written if it is invalid.
    let h = header_block(name.as_bytes(), u64::from(e.mode), size, mtime, typeflag, link)?;
    let mut written = 0;
    if link.len() > NAME_LEN {
        written += write_longlink(out, b'K', link)?;
    }
    if name.len() > NAME_LEN {
        written += write_longlink(out, b'L', name.as_bytes())?;
    }
    out.write_all(&h)?;
    Ok(written + BLOCK)
}

/// Writes the whole entry: header, exactly `size` bytes of `content` (streamed), and zero
/// padding to a 512-byte boundary. `content` is ignored for directories and symlinks; for
/// files it must produce exactly `size` bytes. Returns the bytes written (= [`entry_len`]).
pub fn write_entry(out: &mut impl Write, e: &TarEntry, mtime: u64, content: &mut dyn Read) -> Result<u64, DebError> {
    let mut written = write_header(out, e, mtime)?;
    if let TarKind::File { size } = e.kind {
        copy_exact(&e.member_name(), size, content, out)?;
        write_zeros(out, padded(size) - size)?;
        written += padded(size);
    }
    Ok(written)
}

/// The exact number of bytes [`write_entry`] produces for `e`: LongLink records, header,
/// content and padding.
pub fn entry_len(e: &TarEntry) -> u64 {
    let name_len = e.member_name().len();
    let link_len = match &e.kind {
        TarKind::Symlink { target } => target.len(),
        _ => 0,
    };
    longlink_len(name_len) + longlink_len(link_len) + BLOCK + padded(e.data_size())
}

/// Writes the end-of-archive marker (two zero blocks) and returns its length (1024).
pub fn write_end(out: &mut impl Write) -> io::Result<u64> {
    write_zeros(out, 2 * BLOCK)?;
    Ok(2 * BLOCK)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    pub(crate) fn file(path: &str, size: u64) -> TarEntry {
        TarEntry { path: path.into(), kind: TarKind::File { size }, mode: 0o644 }
    }
    pub(crate) fn dir(path: &str) -> TarEntry {
        TarEntry { path: path.into(), kind: TarKind::Dir, mode: 0o755 }
    }
    pub(crate) fn symlink(path: &str, target: &str) -> TarEntry {
        TarEntry { path: path.into(), kind: TarKind::Symlink { target: target.into() }, mode: 0o777 }
    }

    fn checksum_ok(h: &[u8]) -> bool {
        let mut copy = h.to_vec();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u64 = copy.iter().map(|&b| u64::from(b)).sum();
        let field = std::str::from_utf8(&h[148..154]).expect("ascii");
        u64::from_str_radix(field, 8).expect("octal") == sum && h[154] == 0 && h[155] == b' '
    }

    #[test]
    fn header_fields_and_checksum() {
        let mut out = Vec::new();
        let n = write_header(&mut out, &file("etc/demosite/config.cfg", 5), 1_700_000_000).expect("header");
        assert_eq!(n, 512);
        assert_eq!(out.len(), 512);
        assert!(checksum_ok(&out));
        assert_eq!(&out[..26], b"./etc/demosite/config.cfg\0");
        assert_eq!(&out[100..108], b"0000644\0");
        assert_eq!(&out[108..116], b"0000000\0");
        assert_eq!(&out[124..136], b"00000000005\0");
        assert_eq!(&out[136..148], format!("{:011o}\0", 1_700_000_000u64).as_bytes());
        assert_eq!(out[156], b'0');
        assert_eq!(&out[257..265], b"ustar  \0");
        assert_eq!(&out[265..270], b"root\0");
        assert_eq!(&out[297..302], b"root\0");

        let mut root = Vec::new();
        write_header(&mut root, &dir(""), 0).expect("root");
        assert_eq!(&root[..3], b"./\0");
        assert_eq!(root[156], b'5');
        assert!(checksum_ok(&root));
    }

    #[test]
    fn rejects_bad_paths_and_sizes() {
        for p in ["/abs", "./x", "a//b", "a/../b", "a/", "a\0b"] {
            assert!(write_header(&mut Vec::new(), &file(p, 0), 0).is_err(), "{p}");
        }
        assert!(write_header(&mut Vec::new(), &file("", 0), 0).is_err());
        assert!(write_header(&mut Vec::new(), &file("big", 1 << 33), 0).is_err());
        assert!(write_header(&mut Vec::new(), &file("ok", (1 << 33) - 1), 0).is_ok());
    }

    #[test]
    fn content_size_is_enforced() {
        let e = file("f", 4);
        assert!(write_entry(&mut Vec::new(), &e, 0, &mut &b"abc"[..]).is_err());
        assert!(write_entry(&mut Vec::new(), &e, 0, &mut &b"abcde"[..]).is_err());
        assert!(write_entry(&mut Vec::new(), &e, 0, &mut &b"abcd"[..]).is_ok());
    }

    fn sample_entries() -> Vec<(TarEntry, Vec<u8>)> {
        let long_dir = "d".repeat(120);
        let long_file = format!("{long_dir}/{}", "f".repeat(60)); // 181 bytes
        let long_target = "t/".repeat(80);
        vec![
            (dir(""), vec![]),
            (dir("usr"), vec![]),
            (file("usr/empty", 0), vec![]),
            (file("usr/five", 5), b"hello".to_vec()),
            (file("usr/block", 512), vec![7u8; 512]),
            (file("usr/big", 1500), vec![9u8; 1500]),
            (symlink("usr/link", "five"), vec![]),
            (dir(&long_dir), vec![]),
            (file(&long_file, 3), b"xyz".to_vec()),
            (symlink(&format!("{long_dir}/longtarget"), &long_target), vec![]),
            (file(&"n".repeat(98), 1), b"n".to_vec()), // "./" + 98 = exactly 100
        ]
    }

    pub(crate) fn write_all(entries: &[(TarEntry, Vec<u8>)], mtime: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (e, data) in entries {
            let n = write_entry(&mut out, e, mtime, &mut &data[..]).expect("entry");
            assert_eq!(n, entry_len(e), "{e:?}");
        }
        write_end(&mut out).expect("end");
        out
    }

    #[test]
    fn entry_len_matches_written_bytes() {
        let entries = sample_entries();
        let out = write_all(&entries, 1_600_000_000);
        let expected: u64 = entries.iter().map(|(e, _)| entry_len(e)).sum::<u64>() + 1024;
        assert_eq!(out.len() as u64, expected);
        assert_eq!(out.len() % 512, 0);
    }

    #[test]
    fn gnu_tar_lists_long_names_without_pax() {
        let entries = sample_entries();
        let bytes = write_all(&entries, 1_600_000_000);
        // Walk the headers: only '0', '2', '5', 'L', 'K' typeflags, valid checksums.
        let mut off = 0usize;
        while off + 512 <= bytes.len() && bytes[off..off + 512].iter().any(|&b| b != 0) {
            let h = &bytes[off..off + 512];
            assert!(checksum_ok(h), "bad checksum at {off}");
            assert!(matches!(h[156], b'0' | b'2' | b'5' | b'L' | b'K'), "typeflag {}", h[156]);
            let size_field = std::str::from_utf8(&h[124..135]).expect("ascii");
            let size = u64::from_str_radix(size_field, 8).expect("octal");
            off += 512 + padded(size) as usize;
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.tar");
        std::fs::write(&path, &bytes).expect("write");
        let o = Command::new("tar").arg("-tvf").arg(&path).env("TZ", "UTC").output().expect("run tar");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let listing = String::from_utf8_lossy(&o.stdout);
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), entries.len(), "{listing}");
        for ((e, _), line) in entries.iter().zip(&lines) {
            assert!(line.contains("root/root"), "{line}");
            let name = e.member_name();
            match &e.kind {
                TarKind::Symlink { target } => {
                    assert!(line.ends_with(&format!("{name} -> {target}")), "{line}")
                }
                _ => assert!(line.ends_with(&name), "{line}"),
            }
        }
        assert!(o.stderr.is_empty(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn byte_identical_to_gnu_tar() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("r");
        let long = "d".repeat(120);
        let long_target = "t/".repeat(70);
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(root.join(&long)).expect("mkdir");
        std::fs::write(root.join("etc/f"), b"hello").expect("write");
        std::fs::write(root.join(format!("{long}/x")), b"xx").expect("write");
        std::os::unix::fs::symlink("f", root.join("etc/l")).expect("symlink");
        std::os::unix::fs::symlink(&long_target, root.join("etc/m")).expect("symlink");
        for (p, m) in [("", 0o755), ("etc", 0o755), ("etc/f", 0o644)] {
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).expect("chmod");
        }
        for p in [long.clone(), format!("{long}/x")] {
            let m = if p.ends_with('x') { 0o644 } else { 0o755 };
            std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).expect("chmod");
        }
        let out = tmp.path().join("g.tar");
        let o = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&out)
            .args(["--format=gnu", "--owner=root:0", "--group=root:0"])
            .args(["--mtime=@1700000000", "--sort=name", "."])
            .output()
            .expect("run tar");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let gnu = std::fs::read(&out).expect("read");
        let ours = write_all(
            &[
                (dir(""), vec![]),
                (dir(&long), vec![]),
                (file(&format!("{long}/x"), 2), b"xx".to_vec()),
                (dir("etc"), vec![]),
                (file("etc/f", 5), b"hello".to_vec()),
                (symlink("etc/l", "f"), vec![]),
                (symlink("etc/m", &long_target), vec![]),
            ],
            1_700_000_000,
        );
        assert!(gnu.len() >= ours.len());
        for (i, (g, o)) in gnu.chunks(512).zip(ours.chunks(512)).enumerate() {
            assert!(
                g == o,
                "block {i} differs:\n gnu {:?}\n our {:?}",
                g.escape_ascii().to_string(),
                o.escape_ascii().to_string()
            );
        }
        assert!(gnu[ours.len()..].iter().all(|&b| b == 0));
    }
}
