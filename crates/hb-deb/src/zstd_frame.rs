//! The zstd data member: exactly one zstd frame (dpkg stops after the first frame, so
//! zstd output is never chunked), single-threaded, no content checksum, content size left
//! unknown so that the input is streamed. The bytes depend only on the input and level.

use crate::xz::pump;
use crate::{CountingWriter, DebError};
use std::io::{Read, Write};

/// The level callers use unless configured otherwise: far faster than 19 and still
/// well ahead of gzip -9 in ratio.
pub const DEFAULT_LEVEL: i32 = 9;

/// Compresses all of `input` into one zstd frame written to `out`; returns its length.
pub fn compress(input: &mut dyn Read, out: &mut dyn Write, level: i32) -> Result<u64, DebError> {
    let counter = CountingWriter { inner: out, count: 0 };
    let mut enc = zstd::stream::write::Encoder::new(counter, level)?;
    enc.include_checksum(false)?;
    enc.include_contentsize(false)?;
    pump(input, &mut enc, 128 * 1024)?;
    let counter = enc.finish()?;
    Ok(counter.count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn one_frame_round_trip() {
        let data = b"zstd frame contents ".repeat(20_000);
        let mut out = Vec::new();
        let n = compress(&mut &data[..], &mut out, DEFAULT_LEVEL).expect("compress");
        assert_eq!(n, out.len() as u64);
        let mut again = Vec::new();
        compress(&mut &data[..], &mut again, DEFAULT_LEVEL).expect("compress");
        assert_eq!(out, again);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.zst");
        std::fs::write(&path, &out).expect("write");
        let o = Command::new("zstd").arg("-dc").arg(&path).output().expect("run zstd");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, data);
        let o = Command::new("zstd").arg("-lv").arg(&path).output().expect("zstd -l");
        let listing = String::from_utf8_lossy(&o.stdout);
        assert!(listing.contains("# Zstandard Frames: 1"), "{listing}");
    }
}
