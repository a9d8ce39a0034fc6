//! The remote cache server of hb (`hb cache serve`). It serves the layout that HTTP build
//! caches share: `GET|HEAD|PUT /cas/<blake3 hex>` for content-addressed blobs and
//! `GET|HEAD|PUT /ac/<key hex>` for action-cache entries, which the server stores as opaque
//! bytes (the client signs them). Uploads need a bearer token, are limited in size, are
//! written atomically, and CAS uploads are re-hashed so that a blob is only ever stored
//! under its own digest. With a maximum size the server evicts least-recently-used files,
//! a GET counting as a use (it bumps the file's mtime). The directory's layout is
//! `hb_store::layout`'s, whose [`stats`] and [`gc`] work on it.

mod http;
mod server;
mod storage;

use std::io;
use std::path::PathBuf;

pub use hb_store::layout::{Stats, gc, stats};
pub use server::Server;

/// The default limit of one request body (2 GiB).
pub const DEFAULT_MAX_REQUEST: u64 = 2 << 30;
/// The default cap on connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Action-cache entries are small; larger uploads to `/ac/` are refused.
pub const MAX_AC_ENTRY: u64 = 16 << 20;

/// What [`Server::start`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on, like `127.0.0.1:8080` (port 0 picks a free port).
    pub listen: String,
    /// The storage directory: `cas/`, `ac/` and `tmp/` are created inside it.
    pub dir: PathBuf,
    /// Evict least-recently-used files once the stored bytes exceed this.
    pub max_size: Option<u64>,
    /// The bearer token that uploads must carry; without one the server is read-only.
    pub token: Option<String>,
    /// The largest request body accepted (CAS blobs; AC entries are also held to [`MAX_AC_ENTRY`]).
    pub max_request: u64,
    /// The most connections served at once, each on its own thread; more are answered
    /// 503 and closed.
    pub max_connections: usize,
}

impl ServerConfig {
    /// A configuration with the defaults: no size limit, no token (read-only), 2 GiB
    /// requests, 512 connections.
    pub fn new(listen: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: listen.into(),
            dir: dir.into(),
            max_size: None,
            token: None,
            max_request: DEFAULT_MAX_REQUEST,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Everything that can go wrong outside of a single request (requests get HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Fs(#[from] hb_fs::FsError),
    #[error("listening on {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("starting a server thread: {0}")]
    Thread(io::Error),
    #[error(
        "invalid size {input:?}: expected a number of bytes, optionally decimal and followed by K, M, G or T \
         (powers of 1024) and an optional B or iB, like 1024, 512M, 1.5G or 10GiB"
    )]
    Size { input: String },
}

/// Parses a size like `10G`, `512M`, `1024`, `1.5G` or `10GiB` (K, M, G and T are powers
/// of 1024; case does not matter) into bytes.
pub fn parse_size(s: &str) -> Result<u64, ServerError> {
    let bad = || ServerError::Size { input: s.to_string() };
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let t = lower.strip_suffix("ib").or_else(|| lower.strip_suffix('b')).unwrap_or(&lower).trim_end();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        Some((i, 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let num = num.trim_end();
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (num.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    let whole: u64 = int.parse().map_err(|_| bad())?;
    let mut bytes = whole.checked_mul(mult).ok_or_else(bad)?;
    if !frac.is_empty() {
        // frac / 10^len of the unit, in integers.
        let frac = frac.trim_end_matches('0');
        if frac.len() > 12 {
            return Err(bad());
        }
        let scale = 10u128.pow(frac.len() as u32);
        let part = u128::from(frac.parse::<u64>().unwrap_or(0)) * u128::from(mult);
        if mult == 1 && part != 0 {
            return Err(bad()); // a fraction of a byte
        }
        // Rounded down to whole bytes.
        let part = u64::try_from(part / scale).map_err(|_| bad())?;
        bytes = bytes.checked_add(part).ok_or_else(bad)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases = [
            ("1024", 1024),
            ("0", 0),
            ("512M", 512 << 20),
            ("10G", 10 << 30),
            ("10g", 10 << 30),
            ("1.5G", 3 << 29),
            ("1.5K", 1536),
            ("2T", 2 << 40),
            ("10GB", 10 << 30),
            ("10GiB", 10 << 30),
            ("1 k", 1024),
            ("100B", 100),
            (" 7M ", 7 << 20),
            ("0.5k", 512),
            ("1.0", 1),
            ("1.1K", 1126),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s).unwrap(), want, "{s}");
        }
        for s in ["", "G", "-1", "1.5", "abc", "10X", "1..5G", "1.G", ".5G", "99999999999T", "1e3"] {
            let e = parse_size(s).unwrap_err().to_string();
            assert!(e.contains("512M"), "{s}: {e}");
        }
    }
}
