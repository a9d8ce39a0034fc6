//! The deb's outer container: a System V `ar` archive written the way dpkg-deb writes it
//! (`!<arch>\n`, 60-byte member headers with names space-padded to 16 bytes and no
//! trailing '/', uid/gid 0, mode 100644, one fixed mtime, odd members padded with '\n').
//! Member contents are streamed; their sizes must be known before they are written.

use crate::{DebError, copy_exact};
use std::io::{self, Read, Write};

/// Streams an ar archive into `W`.
pub struct ArWriter<W: Write> {
    out: W,
    mtime: u64,
}

fn field(buf: &mut Vec<u8>, value: &str, width: usize) {
    buf.extend_from_slice(value.as_bytes());
    buf.extend(std::iter::repeat_n(b' ', width - value.len()));
}

impl<W: Write> ArWriter<W> {
    /// Starts an archive (writes the `!<arch>\n` magic). Every member gets `mtime`.
    pub fn new(mut w: W, mtime: u64) -> io::Result<Self> {
        if mtime > 999_999_999_999 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("ar mtime {mtime} does not fit 12 decimal digits"),
            ));
        }
        w.write_all(b"!<arch>\n")?;
        Ok(ArWriter { out: w, mtime })
    }

    /// Appends member `name` of exactly `size` bytes read from `data`, plus the '\n'
    /// padding byte if `size` is odd. Errors if `data` is shorter or longer than `size`.
    pub fn append(&mut self, name: &str, size: u64, data: &mut dyn Read) -> Result<(), DebError> {
        if name.is_empty() || name.len() > 16 || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
            return Err(DebError::ArName(name.to_string()));
        }
        if size > 9_999_999_999 {
            return Err(DebError::TooLarge { field: "ar member size", value: size });
        }
        let mut h = Vec::with_capacity(60);
        field(&mut h, name, 16);
        field(&mut h, &self.mtime.to_string(), 12);
        field(&mut h, "0", 6);
        field(&mut h, "0", 6);
        field(&mut h, "100644", 8);
        field(&mut h, &size.to_string(), 10);
        h.extend_from_slice(b"`\n");
        debug_assert_eq!(h.len(), 60);
        self.out.write_all(&h)?;
        copy_exact(name, size, data, &mut self.out)?;
        if size % 2 == 1 {
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_dpkg_deb() {
        let mut ar = ArWriter::new(Vec::new(), 1_700_000_000).expect("new");
        ar.append("debian-binary", 4, &mut &b"2.0\n"[..]).expect("append");
        ar.append("odd", 3, &mut &b"abc"[..]).expect("append");
        let out = ar.finish().expect("finish");
        let mut expected = b"!<arch>\n".to_vec();
        expected.extend_from_slice(b"debian-binary   1700000000  0     0     100644  4         `\n2.0\n");
        expected.extend_from_slice(b"odd             1700000000  0     0     100644  3         `\nabc\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn rejects_bad_names_and_sizes() {
        let mut ar = ArWriter::new(Vec::new(), 0).expect("new");
        assert!(ar.append("a/b", 0, &mut &b""[..]).is_err());
        assert!(ar.append("seventeen-chars-x", 0, &mut &b""[..]).is_err());
        assert!(ar.append("short", 5, &mut &b"abc"[..]).is_err());
        assert!(ar.append("long", 1, &mut &b"abc"[..]).is_err());
    }
}

/// A whole `.deb`: `debian-binary` ("2.0\n"), then `control.tar.<ext>` and
/// `data.tar.<ext>` (already compressed, streamed from the readers with the given
/// sizes), every member with `mtime`. Returns the writer.
pub fn write_deb<W: Write>(
    out: W,
    mtime: u64,
    compression: crate::Compression,
    control: (u64, &mut dyn Read),
    data: (u64, &mut dyn Read),
) -> Result<W, DebError> {
    let ext = compression.extension();
    let mut ar = ArWriter::new(out, mtime)?;
    ar.append("debian-binary", 4, &mut &b"2.0\n"[..])?;
    ar.append(&format!("control.tar.{ext}"), control.0, control.1)?;
    ar.append(&format!("data.tar.{ext}"), data.0, data.1)?;
    Ok(ar.finish()?)
}
