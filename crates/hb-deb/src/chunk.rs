//! Chunk planning for the data tar: groups consecutive whole tar entries into chunks,
//! each of which is compressed on its own (one xz block or gzip member) and cached.
//! Boundaries come from the file list, never from byte offsets: a cut happens after an
//! entry once the chunk has reached `min_bytes` and a stable hash of that entry's path
//! (blake3 of its bytes) says so, or unconditionally at `max_bytes`. Editing one file
//! therefore leaves the other chunks' boundaries, and compressed bytes, unchanged.
//! A chunk also ends where the top-level directory changes (`etc/` → `lib/` → `usr/`):
//! the configuration under `etc/`, what users edit most, then sits in a small chunk
//! of its own, and an edit recompresses a few kilobytes rather than a chunk of the
//! virtualenv.

use crate::tar::{TarEntry, entry_len};
use std::ops::Range;

/// Tuning of [`plan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkParams {
    /// No content-defined cut before a chunk holds this many tar bytes.
    pub min_bytes: u64,
    /// A chunk is always cut once it holds at least this many tar bytes.
    pub max_bytes: u64,
    /// Past `min_bytes`, cut after an entry whose path hash is divisible by this.
    pub cut_one_in: u64,
}

impl Default for ChunkParams {
    fn default() -> Self {
        ChunkParams { min_bytes: 512 << 10, max_bytes: 4 << 20, cut_one_in: 16 }
    }
}

/// A well-mixed, stable hash of a path (the first 8 bytes of its blake3, little endian).
/// CRC32 would be stable too, but it is linear: paths differing only in a counter
/// (`file0001`, `file0002` …) rarely hit a given residue, so cuts would be scarce.
fn path_hash(path: &str) -> u64 {
    let h = blake3::hash(path.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Splits `entries` into consecutive non-empty index ranges covering every entry once, in
/// order. An empty list gives no ranges. The end-of-archive blocks belong to no entry:
/// the caller appends them to the last chunk's tar bytes.
pub fn plan(entries: &[TarEntry], p: &ChunkParams) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    let mut acc = 0u64;
    let one_in = p.cut_one_in.max(1);
    let top = |path: &str| path.split('/').next().unwrap_or("").to_string();
    for (i, e) in entries.iter().enumerate() {
        acc += entry_len(e);
        let here = top(&e.path);
        let leaves = !here.is_empty() && entries.get(i + 1).is_some_and(|next| top(&next.path) != here);
        let cut = acc >= p.max_bytes || leaves || (acc >= p.min_bytes && path_hash(&e.path).is_multiple_of(one_in));
        if cut {
            ranges.push(start..i + 1);
            start = i + 1;
            acc = 0;
        }
    }
    if start < entries.len() {
        ranges.push(start..entries.len());
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::TarKind;

    fn files(n: usize, size: u64) -> Vec<TarEntry> {
        (0..n)
            .map(|i| TarEntry { path: format!("usr/lib/app/file{i:05}.py"), kind: TarKind::File { size }, mode: 0o644 })
            .collect()
    }

    fn check_cover(ranges: &[Range<usize>], n: usize) {
        let mut next = 0;
        for r in ranges {
            assert_eq!(r.start, next);
            assert!(r.end > r.start);
            next = r.end;
        }
        assert_eq!(next, n);
    }

    #[test]
    fn covers_everything_in_order() {
        let p = ChunkParams::default();
        assert!(plan(&[], &p).is_empty());
        for (n, size) in [(1, 10), (500, 30_000), (3000, 1000), (5, 10 << 20)] {
            let e = files(n, size);
            let r = plan(&e, &p);
            check_cover(&r, n);
            for range in &r {
                let total: u64 = e[range.clone()].iter().map(entry_len).sum();
                let last = entry_len(&e[range.end - 1]);
                assert!(total - last < p.max_bytes, "chunk over max before its last entry");
            }
        }
        assert_eq!(plan(&files(5, 10 << 20), &p).len(), 5);
    }

    #[test]
    fn top_level_directories_end_chunks() {
        let entry = |path: &str, size: u64| TarEntry { path: path.into(), kind: TarKind::File { size }, mode: 0o644 };
        let dir = |path: &str| TarEntry { path: path.into(), kind: TarKind::Dir, mode: 0o755 };
        let mut e = vec![dir(""), dir("etc"), dir("etc/app"), entry("etc/app/config.cfg", 100), dir("lib")];
        e.push(entry("lib/app.service", 300));
        e.push(dir("usr"));
        e.extend(files(100, 30_000));
        let r = plan(&e, &ChunkParams::default());
        check_cover(&r, e.len());
        // The root entry goes with etc/; etc/ and lib/ are chunks of their own.
        assert_eq!(r[0], 0..4);
        assert_eq!(r[1], 4..6);
        assert_eq!(r[2].start, 6);
    }

    #[test]
    fn editing_one_file_keeps_other_boundaries() {
        let p = ChunkParams { min_bytes: 64 << 10, max_bytes: 1 << 20, cut_one_in: 8 };
        let a = files(2000, 3000);
        let mut b = a.clone();
        b[1000].kind = TarKind::File { size: 9000 };
        let ra = plan(&a, &p);
        let rb = plan(&b, &p);
        assert!(ra.len() > 10);
        let differ = ra.iter().zip(&rb).filter(|(x, y)| x != y).count() + ra.len().abs_diff(rb.len());
        assert!(differ <= 2, "{differ} chunks changed");
        assert_eq!(ra.first(), rb.first());
        assert_eq!(ra.last(), rb.last());
    }
}
