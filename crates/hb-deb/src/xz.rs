//! One .xz stream made of independently compressed blocks, so that each chunk of the
//! data tar can be compressed (and cached) on its own and the stream reassembled as
//! `stream_header() ++ blocks ++ index_and_footer(infos)`. dpkg reads a single stream with
//! many blocks, but stops after the first of several concatenated streams, so the
//! container (stream header, index, footer) is written here rather than by liblzma.
//!
//! Each block's bytes come from liblzma's single-threaded stream encoder (LZMA2, preset
//! 6, CRC32 check, the dictionary sized to the block: see [`dict_for`]), whose output is `header ++ block ++ index ++
//! footer`: the block is passed through verbatim and its sizes are read back from the
//! one-record index, which is then dropped. (xz2 0.1.7 has no safe raw-encoder API; this
//! yields the same block a raw LZMA2 encoder plus a hand-written block header would.)
//! Single-threaded, so the bytes never depend on the core count.

use crate::DebError;
use hb_fs::read_full;
use std::io::{self, Read, Write};
use xz2::stream::{Check, Filters, LzmaOptions, Stream};

/// Length of the stream header.
pub const STREAM_HEADER_LEN: u64 = 12;
/// The preset whose LZMA2 options every block uses (dpkg-deb's default is also 6).
pub const PRESET: u32 = 6;
/// The largest dictionary a block gets (preset 6's own, 8 MiB; dpkg-deb's too).
pub const DICT_SIZE: u32 = 8 << 20;
/// The smallest dictionary liblzma takes.
pub const MIN_DICT_SIZE: u32 = 4096;

/// The dictionary of a block of `len` bytes: the smallest power of two holding it,
/// between [`MIN_DICT_SIZE`] and [`DICT_SIZE`]. A dictionary larger than the block
/// finds nothing more to refer back to, but liblzma sizes its match finder by it (about
/// 94 MiB of encoder memory at 8 MiB, most of it touched), so small chunks compress
/// in a fraction of the memory, and decompress in a fraction too.
pub fn dict_for(len: u64) -> u32 {
    let mut dict = MIN_DICT_SIZE;
    while u64::from(dict) < len && dict < DICT_SIZE {
        dict <<= 1;
    }
    dict
}

const MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0x00];
/// Stream flags: no reserved bits, check type 0x01 = CRC32.
const STREAM_FLAGS: [u8; 2] = [0x00, 0x01];
const FOOTER_MAGIC: [u8; 2] = [b'Y', b'Z'];
/// Bytes of encoder output held back so that the trailing index and footer can be
/// removed once the encoder finishes (a one-record index plus footer is < 64 bytes).
const HOLDBACK: usize = 64;
const READ_BUF: usize = 64 * 1024;

/// The sizes of one block, as recorded in the stream's index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XzBlockInfo {
    /// Block header + compressed data + check, without block padding.
    pub unpadded_size: u64,
    /// Bytes of uncompressed data in the block.
    pub uncompressed_size: u64,
}

/// The 12-byte stream header (magic, flags for a CRC32 check, CRC32 of the flags).
pub fn stream_header() -> [u8; 12] {
    let mut h = [0u8; 12];
    h[..6].copy_from_slice(&MAGIC);
    h[6..8].copy_from_slice(&STREAM_FLAGS);
    h[8..12].copy_from_slice(&crc32fast::hash(&STREAM_FLAGS).to_le_bytes());
    h
}

/// Bytes a block occupies in the stream: its unpadded size rounded up to a multiple of 4.
pub fn block_padded_len(info: &XzBlockInfo) -> u64 {
    info.unpadded_size.div_ceil(4) * 4
}

/// The LZMA2 dictionary-size property byte: the smallest encoding `b` whose size
/// `(2 | (b & 1)) << (b / 2 + 11)` is at least `dict` (40 means 4 GiB - 1).
pub fn dict_size_byte(dict: u32) -> u8 {
    for b in 0u8..40 {
        let size = (2u64 | u64::from(b & 1)) << (u32::from(b) / 2 + 11);
        if size >= u64::from(dict) {
            return b;
        }
    }
    40
}

/// The 12-byte block header liblzma writes for our filter chain with dictionary
/// `dict`: header size byte, flags (one filter, no size fields), LZMA2 filter id,
/// property size 1, the dictionary byte, zero padding to a multiple of 4, CRC32 of the
/// preceding bytes.
pub fn block_header(dict: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = (12 / 4 - 1) as u8;
    h[1] = 0x00;
    h[2] = 0x21;
    h[3] = 0x01;
    h[4] = dict_size_byte(dict);
    let crc = crc32fast::hash(&h[..8]);
    h[8..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The stream's index (one record per block, in order) followed by the stream footer.
pub fn index_and_footer(blocks: &[XzBlockInfo]) -> Vec<u8> {
    let mut idx = vec![0x00];
    put_varint(&mut idx, blocks.len() as u64);
    for b in blocks {
        put_varint(&mut idx, b.unpadded_size);
        put_varint(&mut idx, b.uncompressed_size);
    }
    while idx.len() % 4 != 0 {
        idx.push(0);
    }
    let crc = crc32fast::hash(&idx);
    idx.extend_from_slice(&crc.to_le_bytes());

    let backward = (idx.len() / 4 - 1) as u32;
    let mut tail = Vec::with_capacity(6);
    tail.extend_from_slice(&backward.to_le_bytes());
    tail.extend_from_slice(&STREAM_FLAGS);
    idx.extend_from_slice(&crc32fast::hash(&tail).to_le_bytes());
    idx.extend_from_slice(&tail);
    idx.extend_from_slice(&FOOTER_MAGIC);
    idx
}

/// Receives the encoder's whole-stream output, drops the stream header, passes the block
/// through to `out`, and keeps the last bytes back until the end.
struct BlockExtractor<'a> {
    out: &'a mut dyn Write,
    header: Vec<u8>,
    tail: Vec<u8>,
    passed: u64,
}

impl Write for BlockExtractor<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        let need = STREAM_HEADER_LEN as usize - self.header.len();
        if need > 0 {
            let k = need.min(rest.len());
            self.header.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
        }
        self.tail.extend_from_slice(rest);
        if self.tail.len() > HOLDBACK {
            let k = self.tail.len() - HOLDBACK;
            self.out.write_all(&self.tail[..k])?;
            self.tail.drain(..k);
            self.passed += k as u64;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn encoder(dict: u32) -> Result<Stream, DebError> {
    let mut opts = LzmaOptions::new_preset(PRESET)?;
    opts.dict_size(dict);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    Ok(Stream::new_stream_encoder(&filters, Check::Crc32)?)
}

/// Compresses all of `input` into one block written to `out` (block header, LZMA2 data,
/// block padding, CRC32 check). `len` is the input's length, which sizes the
/// dictionary ([`dict_for`]); the bytes depend on it and on the input only. Returns the
/// block's index record and the bytes written (= [`block_padded_len`]). Streams with
/// bounded memory.
pub fn compress_block(input: &mut dyn Read, len: u64, out: &mut dyn Write) -> Result<(XzBlockInfo, u64), DebError> {
    let dict = dict_for(len);
    let sink = BlockExtractor { out, header: Vec::new(), tail: Vec::new(), passed: 0 };
    let mut enc = xz2::write::XzEncoder::new_stream(sink, encoder(dict)?);
    let mut buf = vec![0u8; READ_BUF];
    let mut total_in = 0u64;
    loop {
        let n = read_full(input, &mut buf)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])?;
        total_in += n as u64;
    }
    let sink = enc.finish()?;
    if total_in == 0 {
        // liblzma writes no block at all for empty input; write the one valid empty
        // block by hand: header, the LZMA2 end marker, padding, CRC32 of nothing.
        let mut block = block_header(dict).to_vec();
        block.extend_from_slice(&[0x00, 0, 0, 0]);
        block.extend_from_slice(&crc32fast::hash(b"").to_le_bytes());
        sink.out.write_all(&block)?;
        let info = XzBlockInfo { unpadded_size: 12 + 1 + 4, uncompressed_size: 0 };
        return Ok((info, block.len() as u64));
    }
    if sink.header[..] != stream_header()[..] {
        return Err(DebError::XzFormat("stream header differs from the expected one"));
    }
    let t = &sink.tail;
    let len = t.len();
    if len < 12 || t[len - 2..] != FOOTER_MAGIC {
        return Err(DebError::XzFormat("missing stream footer"));
    }
    let mut bs = [0u8; 4];
    bs.copy_from_slice(&t[len - 8..len - 4]);
    let index_len = (u64::from(u32::from_le_bytes(bs)) + 1) * 4;
    let index_start = (len as u64)
        .checked_sub(12 + index_len)
        .ok_or(DebError::XzFormat("index longer than the held-back output"))? as usize;
    let index = &t[index_start..len - 12];
    let mut pos = 1;
    let parsed = (|| {
        if index.first() != Some(&0) || get_varint(index, &mut pos)? != 1 {
            return None;
        }
        let unpadded_size = get_varint(index, &mut pos)?;
        let uncompressed_size = get_varint(index, &mut pos)?;
        Some(XzBlockInfo { unpadded_size, uncompressed_size })
    })();
    let info = parsed.ok_or(DebError::XzFormat("index is not a single-record index"))?;
    sink.out.write_all(&t[..index_start])?;
    let written = sink.passed + index_start as u64;
    if written != block_padded_len(&info) || info.uncompressed_size != total_in {
        return Err(DebError::XzFormat("block sizes disagree with the index"));
    }
    Ok((info, written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample(seed: u32, len: usize) -> Vec<u8> {
        // Compressible but not trivial: words chosen by a small LCG.
        let words: [&[u8]; 6] = [b"alpha ", b"beta ", b"gamma\n", b"delta ", b"x", b"\0\0"];
        let mut s = seed;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            v.extend_from_slice(words[(s >> 16) as usize % words.len()]);
        }
        v.truncate(len);
        v
    }

    fn build_stream(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = stream_header().to_vec();
        let mut infos = Vec::new();
        for c in chunks {
            let before = out.len();
            let (info, n) = compress_block(&mut &c[..], c.len() as u64, &mut out).expect("block");
            assert_eq!(n, (out.len() - before) as u64);
            assert_eq!(n, block_padded_len(&info));
            assert_eq!(info.uncompressed_size, c.len() as u64);
            infos.push(info);
        }
        out.extend_from_slice(&index_and_footer(&infos));
        out
    }

    #[test]
    fn dict_byte() {
        assert_eq!(dict_size_byte(8 << 20), 22);
        assert_eq!(dict_size_byte(4096), 0);
        assert_eq!(dict_size_byte(3 << 20), 19);
        assert_eq!(dict_size_byte(u32::MAX), 40);
    }

    #[test]
    fn block_header_uses_the_dictionary_we_set() {
        for (len, byte) in [(5u64, 0u8), (100_000, 10), (3 << 20, 20), (100 << 20, 22)] {
            let mut out = Vec::new();
            let data = sample(4, 5);
            compress_block(&mut &data[..], len, &mut out).expect("block");
            // size byte, flags (1 filter, no sizes), LZMA2 id, props size 1, dict byte.
            assert_eq!(&out[1..5], &[0x00, 0x21, 0x01, byte], "{len}");
            assert_eq!(out[..12], block_header(dict_for(len)));
        }
    }

    #[test]
    fn dictionaries_fit_their_blocks() {
        assert_eq!(dict_for(0), MIN_DICT_SIZE);
        assert_eq!(dict_for(4096), 4096);
        assert_eq!(dict_for(4097), 8192);
        assert_eq!(dict_for(1 << 20), 1 << 20);
        assert_eq!(dict_for(u64::MAX), DICT_SIZE);
        // What a small dictionary decodes to is still the input, with the xz tool too.
        let chunks = vec![sample(5, 3000), sample(6, 5 << 20)];
        let stream = build_stream(&chunks);
        let mut got = Vec::new();
        xz2::read::XzDecoder::new(&stream[..]).read_to_end(&mut got).expect("decode");
        assert_eq!(got, chunks.concat());
    }

    #[test]
    fn three_blocks_one_stream() {
        let chunks = vec![sample(1, 100_000), sample(2, 7), sample(3, 70_001)];
        let stream = build_stream(&chunks);
        let expected = chunks.concat();

        // The xz2 crate's ordinary (single-stream) decoder.
        let mut dec = xz2::read::XzDecoder::new(&stream[..]);
        let mut got = Vec::new();
        dec.read_to_end(&mut got).expect("decode");
        assert_eq!(got, expected);

        // The xz tool.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.xz");
        std::fs::write(&path, &stream).expect("write");
        let o = Command::new("xz").arg("-dc").arg(&path).output().expect("run xz");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.stdout, expected);
        let o = Command::new("xz").args(["--robot", "-lvv"]).arg(&path).output().expect("xz -l");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let listing = String::from_utf8_lossy(&o.stdout);
        let totals = listing.lines().find(|l| l.starts_with("totals\t")).expect("totals");
        let cols: Vec<&str> = totals.split('\t').collect();
        assert_eq!(cols[1], "1", "streams: {listing}");
        assert_eq!(cols[2], "3", "blocks: {listing}");
        assert!(listing.contains("CRC32"), "{listing}");
    }

    #[test]
    fn empty_block_and_empty_stream() {
        for chunks in [vec![], vec![Vec::new()]] {
            let stream = build_stream(&chunks);
            let mut got = Vec::new();
            xz2::read::XzDecoder::new(&stream[..]).read_to_end(&mut got).expect("decode");
            assert!(got.is_empty());
        }
    }

    #[test]
    fn deterministic_and_independent_of_read_sizes() {
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let k = self.0.len().min(buf.len()).min(777);
                buf[..k].copy_from_slice(&self.0[..k]);
                self.0 = &self.0[k..];
                Ok(k)
            }
        }
        let data = sample(9, 300_000);
        let mut a = Vec::new();
        let mut b = Vec::new();
        let ia = compress_block(&mut &data[..], data.len() as u64, &mut a).expect("a");
        let ib = compress_block(&mut Dribble(&data), data.len() as u64, &mut b).expect("b");
        assert_eq!(ia, ib);
        assert_eq!(a, b);
    }
}

/// Feeds all of `input` to `enc` in full `buf_size` pieces, so the encoder sees the same
/// sequence of writes whatever sizes the reader returns.
pub(crate) fn pump(input: &mut dyn Read, enc: &mut dyn Write, buf_size: usize) -> io::Result<u64> {
    let mut buf = vec![0u8; buf_size];
    let mut total = 0u64;
    loop {
        let n = read_full(input, &mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        enc.write_all(&buf[..n])?;
        total += n as u64;
    }
}
