//! Gzip members for the chunked data tar: each chunk becomes one complete gzip member
//! (dpkg reads multi-member gzip), compressed at level 9 like `dpkg-deb -z9`, with a
//! fixed header (mtime 0, no file name, OS byte 255 "unknown") so that the bytes depend
//! only on the chunk's content. Uses flate2's pure-Rust backend, pinned in the workspace.

use crate::xz::pump;
use crate::{CountingWriter, DebError};
use std::io::{Read, Write};

/// Compresses all of `input` into one gzip member written to `out`; returns its length.
pub fn compress_member(input: &mut dyn Read, out: &mut dyn Write) -> Result<u64, DebError> {
    let counter = CountingWriter { inner: out, count: 0 };
    let mut enc = flate2::GzBuilder::new().mtime(0).operating_system(255).write(counter, flate2::Compression::best());
    pump(input, &mut enc, 64 * 1024)?;
    let counter = enc.finish()?;
    Ok(counter.count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn members_concatenate_and_are_deterministic() {
        let a: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second member\n".repeat(100);
        let mut out = Vec::new();
        let na = compress_member(&mut &a[..], &mut out).expect("a");
        assert_eq!(na, out.len() as u64);
        let nb = compress_member(&mut &b[..], &mut out).expect("b");
        assert_eq!(na + nb, out.len() as u64);
        // Fixed header: magic, deflate, no flags, mtime 0, xfl 2 (best), OS 255.
        assert_eq!(&out[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);

        let mut again = Vec::new();
        compress_member(&mut &a[..], &mut again).expect("a");
        compress_member(&mut &b[..], &mut again).expect("b");
        assert_eq!(out, again);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.gz");
        std::fs::write(&path, &out).expect("write");
        let o = Command::new("gzip").arg("-dc").arg(&path).output().expect("run gzip");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, [a, b].concat());
    }
}
