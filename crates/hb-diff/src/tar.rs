//! A streaming tar reader for deb members written by any tool: GNU headers (with
//! `././@LongLink` 'L'/'K' records for long names and link targets, base-256 numbers),
//! POSIX ustar (name `prefix` field) and PAX 'x' extended headers (path, linkpath, size,
//! uid, gid, uname, gname, mtime applied; other keys and global 'g' headers ignored).
//! Entries are passed to a callback with a reader over their data; whatever the callback
//! does not read is skipped. Checksums are verified.

use hb_fs::read_full;
use std::io::{self, Read};

const BLOCK: usize = 512;

/// What is wrong with a tar stream.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    /// The underlying reader (usually a decompressor) failed.
    #[error("reading the tar stream: {0}")]
    Io(#[from] io::Error),
    /// A header or extended record is malformed, or the stream ends inside an entry.
    #[error("bad tar stream at byte {offset}: {reason}")]
    Format {
        /// Offset of the header concerned in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// One tar entry's header, after long names, PAX records and the ustar prefix apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarHeader {
    /// The member name as stored (e.g. "./usr/bin/x", "./etc/", "usr/lib").
    pub path: String,
    /// The typeflag ('0' file, '1' hard link, '2' symlink, '5' directory...; '\0' is '0').
    pub typeflag: u8,
    /// The mode field (permission bits, possibly with file-type bits).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u64,
    /// Numeric group.
    pub gid: u64,
    /// Owner name (may be empty).
    pub uname: String,
    /// Group name (may be empty).
    pub gname: String,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Bytes of data following the header.
    pub size: u64,
    /// Link target for symlinks and hard links.
    pub link: String,
    /// Device numbers for character and block devices.
    pub dev: (u64, u64),
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// An octal field (spaces/NULs around the digits) or a GNU base-256 field.
fn number(field: &[u8], what: &str) -> Result<u64, String> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        if first & 0x40 != 0 {
            return Err(format!("negative base-256 {what}"));
        }
        let mut v: u64 = u64::from(first & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256).and_then(|v| v.checked_add(u64::from(b))).ok_or(format!("{what} overflows"))?;
        }
        return Ok(v);
    }
    let text: &[u8] = {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        &field[..end]
    };
    let s = std::str::from_utf8(text).map_err(|_| format!("{what} field is not ASCII"))?.trim();
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| format!("{what} field {s:?} is not octal"))
}

fn checksum_ok(h: &[u8; BLOCK]) -> Result<bool, String> {
    let stored = number(&h[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    Ok(stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed))
}

/// Overrides collected from 'L', 'K' and 'x' records for the next real header.
#[derive(Default)]
struct Pending {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    uname: Option<String>,
    gname: Option<String>,
    mtime: Option<i64>,
}

fn parse_pax(data: &[u8], p: &mut Pending) -> Result<(), String> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest.iter().position(|&b| b == b' ').ok_or("PAX record without length")?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length is not a number")?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!("PAX record length {len} does not fit the record"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or("PAX record without '='")?;
        let key = String::from_utf8_lossy(&record[..eq]);
        let value = String::from_utf8_lossy(&record[eq + 1..]).into_owned();
        let num = |v: &str| v.parse::<u64>().map_err(|_| format!("PAX {key} {v:?} is not a number"));
        match &*key {
            "path" => p.path = Some(value),
            "linkpath" => p.link = Some(value),
            "size" => p.size = Some(num(&value)?),
            "uid" => p.uid = Some(num(&value)?),
            "gid" => p.gid = Some(num(&value)?),
            "uname" => p.uname = Some(value),
            "gname" => p.gname = Some(value),
            "mtime" => {
                let whole = value.split('.').next().unwrap_or("");
                p.mtime = Some(whole.parse().map_err(|_| format!("PAX mtime {value:?} is not a number"))?);
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// Largest 'L'/'K'/'x' record accepted (they hold names, not data).
const MAX_META: u64 = 1 << 20;

/// Reads every entry of the tar stream `r`, calling `f` with the header and a reader
/// over exactly the entry's data. Stops at the end-of-archive marker (or a clean end of
/// stream at a header boundary) without reading further.
pub fn read_tar<E: From<TarError>>(
    r: &mut dyn Read,
    mut f: impl FnMut(&TarHeader, &mut dyn Read) -> Result<(), E>,
) -> Result<(), E> {
    let mut offset: u64 = 0;
    let mut pending = Pending::default();
    let fmt = |offset: u64, reason: String| TarError::Format { offset, reason };
    loop {
        let mut h = [0u8; BLOCK];
        let n = read_full(r, &mut h).map_err(TarError::from)?;
        if n == 0 {
            return Ok(());
        }
        if n < BLOCK {
            return Err(fmt(offset, "stream ends inside a header".into()).into());
        }
        if h.iter().all(|&b| b == 0) {
            return Ok(());
        }
        if !checksum_ok(&h).map_err(|e| fmt(offset, e))? {
            return Err(fmt(offset, "header checksum mismatch".into()).into());
        }
        let header_offset = offset;
        let num =
            |range: std::ops::Range<usize>, what: &str| number(&h[range], what).map_err(|e| fmt(header_offset, e));
        let typeflag = if h[156] == 0 { b'0' } else { h[156] };
        let size = pending.size.take().map_or_else(|| num(124..136, "size"), Ok)?;
        offset += BLOCK as u64;
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;

        if matches!(typeflag, b'L' | b'K' | b'x' | b'g') {
            if size > MAX_META {
                return Err(fmt(header_offset, format!("extended header of {size} bytes")).into());
            }
            let mut data = vec![0u8; padded as usize];
            if read_full(r, &mut data).map_err(TarError::from)? < data.len() {
                return Err(fmt(header_offset, "stream ends inside an extended header".into()).into());
            }
            offset += padded;
            let data = &data[..size as usize];
            match typeflag {
                b'L' => pending.path = Some(cstr(data)),
                b'K' => pending.link = Some(cstr(data)),
                b'x' => parse_pax(data, &mut pending).map_err(|e| fmt(header_offset, e))?,
                _ => {} // global PAX headers: nothing in them matters for a comparison
            }
            continue;
        }

        let mut path = cstr(&h[0..100]);
        if &h[257..263] == b"ustar\0" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                path = format!("{prefix}/{path}");
            }
        }
        let p = std::mem::take(&mut pending);
        let header = TarHeader {
            path: p.path.unwrap_or(path),
            typeflag,
            mode: u32::try_from(num(100..108, "mode")? & 0o7777_7777).unwrap_or(0),
            uid: p.uid.map_or_else(|| num(108..116, "uid"), Ok)?,
            gid: p.gid.map_or_else(|| num(116..124, "gid"), Ok)?,
            uname: p.uname.unwrap_or_else(|| cstr(&h[265..297])),
            gname: p.gname.unwrap_or_else(|| cstr(&h[297..329])),
            mtime: match p.mtime {
                Some(m) => m,
                None => {
                    i64::try_from(num(136..148, "mtime")?).map_err(|_| fmt(header_offset, "mtime overflows".into()))?
                }
            },
            size,
            link: p.link.unwrap_or_else(|| cstr(&h[157..257])),
            dev: if matches!(typeflag, b'3' | b'4') {
                (num(329..337, "devmajor")?, num(337..345, "devminor")?)
            } else {
                (0, 0)
            },
        };
        let mut body = Read::take(&mut *r, size);
        f(&header, &mut body)?;
        io::copy(&mut body, &mut io::sink()).map_err(TarError::from)?;
        if body.limit() > 0 {
            return Err(fmt(header_offset, format!("stream ends inside the data of {:?}", header.path)).into());
        }
        let pad = (padded - size) as usize;
        let mut zeros = [0u8; BLOCK];
        if read_full(r, &mut zeros[..pad]).map_err(TarError::from)? < pad {
            return Err(fmt(header_offset, format!("stream ends inside the padding of {:?}", header.path)).into());
        }
        offset += padded;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header block with the given fields and a correct checksum.
    pub(crate) fn header(name: &str, typeflag: u8, size: u64, ustar_prefix: Option<&str>) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0001750\0");
        h[116..124].copy_from_slice(b"0001750\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(format!("{:011o}\0", 1_700_000_000u64).as_bytes());
        h[156] = typeflag;
        match ustar_prefix {
            Some(prefix) => {
                h[257..265].copy_from_slice(b"ustar\x0000");
                h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
            }
            None => h[257..265].copy_from_slice(b"ustar  \0"),
        }
        h[265..267].copy_from_slice(b"me");
        h[297..299].copy_from_slice(b"me");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn pad(v: &mut Vec<u8>) {
        v.resize(v.len().div_ceil(BLOCK) * BLOCK, 0);
    }

    fn list(bytes: &[u8]) -> Result<Vec<(TarHeader, Vec<u8>)>, TarError> {
        let mut out = Vec::new();
        read_tar(&mut &bytes[..], |h: &TarHeader, r: &mut dyn Read| {
            let mut data = Vec::new();
            r.read_to_end(&mut data)?;
            out.push((h.clone(), data));
            Ok::<(), TarError>(())
        })?;
        Ok(out)
    }

    #[test]
    fn pax_gnu_and_ustar_names() {
        let long = format!("./{}/file", "d".repeat(150));
        let mut t = Vec::new();
        // PAX path + mtime + uid for the next entry.
        let recs = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while len != body.len() + len.to_string().len() {
                len = body.len() + len.to_string().len();
            }
            format!("{len}{body}")
        };
        let pax = format!("{}{}{}", recs("path", &long), recs("mtime", "1600000000.5"), recs("uid", "42"));
        t.extend_from_slice(&header("./PaxHeaders/x", b'x', pax.len() as u64, None));
        t.extend_from_slice(pax.as_bytes());
        pad(&mut t);
        t.extend_from_slice(&header("./truncated", b'0', 3, None));
        t.extend_from_slice(b"abc");
        pad(&mut t);
        // GNU long name.
        let gnu_long = format!("./{}/g", "e".repeat(120));
        t.extend_from_slice(&header("././@LongLink", b'L', gnu_long.len() as u64 + 1, None));
        t.extend_from_slice(gnu_long.as_bytes());
        t.push(0);
        pad(&mut t);
        t.extend_from_slice(&header("./eee", b'5', 0, None));
        // ustar prefix.
        t.extend_from_slice(&header("name", b'0', 0, Some("some/prefix")));
        t.extend_from_slice(&[0u8; 1024]);
        let entries = list(&t).expect("parse");
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].0.path, long);
        assert_eq!(entries[0].0.mtime, 1_600_000_000);
        assert_eq!(entries[0].0.uid, 42);
        assert_eq!(entries[0].0.gid, 1000);
        assert_eq!(entries[0].0.uname, "me");
        assert_eq!(entries[0].1, b"abc");
        assert_eq!(entries[1].0.path, format!("{gnu_long}"));
        assert_eq!(entries[1].0.typeflag, b'5');
        assert_eq!(entries[2].0.path, "some/prefix/name");
    }

    #[test]
    fn rejects_bad_checksum_and_truncation() {
        let mut h = header("./x", b'0', 10, None);
        let mut t = h.to_vec();
        t.extend_from_slice(b"0123");
        assert!(matches!(list(&t), Err(TarError::Format { .. })), "truncated data");
        h[0] = b'y';
        assert!(matches!(list(&h), Err(TarError::Format { .. })), "bad checksum");
        assert!(matches!(list(&h[..100]), Err(TarError::Format { .. })), "truncated header");
    }

    #[test]
    fn numbers() {
        assert_eq!(number(b"0000644\0", "m"), Ok(0o644));
        assert_eq!(number(b"   644 \0", "m"), Ok(0o644));
        assert_eq!(number(b"\0\0\0", "m"), Ok(0));
        assert_eq!(number(&[0x80, 0, 0, 1, 0], "s"), Ok(256));
        assert!(number(b"98", "m").is_err());
    }
}
