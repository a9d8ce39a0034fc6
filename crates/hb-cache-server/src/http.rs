//! Just enough HTTP/1.1 for the cache protocol, written against `std::net` so that every
//! limit is ours: the request head is capped at 64 KiB, bodies come with a
//! `Content-Length` or chunked, `Expect: 100-continue` is answered only when the handler
//! starts reading the body (so a refused upload is never sent), and a body the handler did
//! not read is drained (when small) or the connection is closed after the reply.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;

/// The most bytes of request line and headers together.
const MAX_HEAD: u64 = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: u64 = 4096;

/// A request line and its headers (names lowercased).
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    pub target: String,
    pub http11: bool,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the client asked to close the connection after this request.
    pub fn wants_close(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase).unwrap_or_default();
        let has = |t: &str| conn.split(',').any(|x| x.trim() == t);
        if self.http11 { has("close") } else { !has("keep-alive") }
    }
}

#[derive(Debug)]
pub(crate) enum HeadError {
    /// The connection closed (or failed) before a request started.
    Closed,
    Io,
    Bad(&'static str),
    TooLarge,
}

/// Reads one line ending in `\n` (without it and a `\r` before it), taking its length
/// from `budget`. `Ok(None)` at a clean end of stream.
fn read_line(r: &mut impl BufRead, budget: &mut u64) -> Result<Option<Vec<u8>>, HeadError> {
    let mut line = Vec::new();
    let n = r.by_ref().take(*budget).read_until(b'\n', &mut line).map_err(|_| HeadError::Io)?;
    if n == 0 {
        return if *budget == 0 { Err(HeadError::TooLarge) } else { Ok(None) };
    }
    if line.pop() != Some(b'\n') {
        return Err(if n as u64 >= *budget { HeadError::TooLarge } else { HeadError::Io });
    }
    *budget -= n as u64;
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Reads a request line and headers.
pub(crate) fn read_head(conn: &mut impl BufRead) -> Result<Head, HeadError> {
    let mut budget = MAX_HEAD;
    let mut line = read_line(conn, &mut budget)?.ok_or(HeadError::Closed)?;
    if line.is_empty() {
        // RFC 9112 §2.2: ignore at least one empty line before the request line.
        line = read_line(conn, &mut budget)?.ok_or(HeadError::Io)?;
    }
    let line = String::from_utf8(line).map_err(|_| HeadError::Bad("request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Bad("malformed request line"));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HeadError::Bad("unsupported HTTP version")),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || !target.starts_with('/') {
        return Err(HeadError::Bad("malformed request line"));
    }
    let mut headers = Vec::new();
    loop {
        let line = read_line(conn, &mut budget)?.ok_or(HeadError::Io)?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(HeadError::TooLarge);
        }
        let line = String::from_utf8(line).map_err(|_| HeadError::Bad("header is not UTF-8"))?;
        let Some((name, value)) = line.split_once(':') else {
            return Err(HeadError::Bad("malformed header"));
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(HeadError::Bad("malformed header"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Head { method: method.to_string(), target: target.to_string(), http11, headers })
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Length(u64),
    Chunked,
}

/// The body framing from `Content-Length` and `Transfer-Encoding`; ambiguous framings
/// (both, or differing lengths) are refused since they let requests be smuggled.
pub(crate) fn framing(head: &Head) -> Result<Framing, &'static str> {
    let mut length = None;
    for (_, v) in head.headers.iter().filter(|(n, _)| n == "content-length") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid Content-Length");
        }
        let n: u64 = v.parse().map_err(|_| "invalid Content-Length")?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting Content-Length headers");
        }
        length = Some(n);
    }
    let te: Vec<&str> =
        head.headers.iter().filter(|(n, _)| n == "transfer-encoding").map(|(_, v)| v.as_str()).collect();
    if te.is_empty() {
        return Ok(Framing::Length(length.unwrap_or(0)));
    }
    if length.is_some() {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if te.len() == 1 && te[0].eq_ignore_ascii_case("chunked") {
        Ok(Framing::Chunked)
    } else {
        Err("unsupported Transfer-Encoding (only chunked)")
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers(usize),
    Done,
}

/// A request body being read from the connection.
pub(crate) struct Body<'a, R: BufRead> {
    conn: &'a mut R,
    continue_to: Option<&'a TcpStream>,
    state: State,
    declared: Option<u64>,
    failed: bool,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<'a, R: BufRead> Body<'a, R> {
    /// `continue_to` is where `100 Continue` is written before the first read, when the
    /// client sent `Expect: 100-continue`.
    pub fn new(conn: &'a mut R, framing: Framing, continue_to: Option<&'a TcpStream>) -> Self {
        let (state, declared) = match framing {
            Framing::Length(0) => (State::Done, Some(0)),
            Framing::Length(n) => (State::Length(n), Some(n)),
            Framing::Chunked => (State::ChunkSize, None),
        };
        Self { conn, continue_to, state, declared, failed: false }
    }

    /// The `Content-Length`, if the body has one.
    pub fn declared_length(&self) -> Option<u64> {
        self.declared
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Reads and discards what is left of the body if it is at most `max` bytes; false
    /// when it is larger, broken, or was never asked for (an unanswered
    /// `Expect: 100-continue`): then the connection cannot be reused.
    pub fn drain(&mut self, max: u64) -> bool {
        if self.is_done() {
            return true;
        }
        if self.failed || self.continue_to.is_some() || self.declared.is_some_and(|n| n > max) {
            return false;
        }
        let mut sink = [0u8; 8192];
        let mut left = max;
        while !self.is_done() {
            match self.read(&mut sink) {
                Ok(n) if (n as u64) <= left => left -= n as u64,
                _ => return false,
            }
        }
        true
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.conn.by_ref().take(MAX_CHUNK_LINE).read_until(b'\n', &mut line)?;
        if line.pop() != Some(b'\n') {
            return Err(invalid("chunked body: line too long or cut short"));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    fn read_data(&mut self, buf: &mut [u8], left: u64) -> io::Result<usize> {
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.conn.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the client closed the connection mid-body"));
        }
        Ok(n)
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(stream) = self.continue_to.take()
            && !self.is_done()
        {
            let mut w = stream;
            w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            w.flush()?;
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Length(left) => {
                    let n = self.read_data(buf, left)?;
                    let left = left - n as u64;
                    self.state = if left == 0 { State::Done } else { State::Length(left) };
                    return Ok(n);
                }
                State::ChunkSize => {
                    let line = self.read_line()?;
                    let line = std::str::from_utf8(&line).map_err(|_| invalid("chunked body: bad chunk size"))?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(invalid("chunked body: bad chunk size"));
                    }
                    let size = u64::from_str_radix(size, 16).map_err(|_| invalid("chunked body: bad chunk size"))?;
                    self.state = if size == 0 { State::Trailers(0) } else { State::ChunkData(size) };
                }
                State::ChunkData(left) => {
                    let n = self.read_data(buf, left)?;
                    let left = left - n as u64;
                    self.state = if left == 0 { State::ChunkEnd } else { State::ChunkData(left) };
                    return Ok(n);
                }
                State::ChunkEnd => {
                    if !self.read_line()?.is_empty() {
                        return Err(invalid("chunked body: missing CRLF after chunk"));
                    }
                    self.state = State::ChunkSize;
                }
                State::Trailers(count) => {
                    if self.read_line()?.is_empty() {
                        self.state = State::Done;
                    } else if count >= MAX_HEADERS {
                        return Err(invalid("chunked body: too many trailers"));
                    } else {
                        self.state = State::Trailers(count + 1);
                    }
                }
            }
        }
    }
}

impl<R: BufRead> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(invalid("the request body already failed"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let r = self.read_inner(buf);
        if r.is_err() {
            self.failed = true;
        }
        r
    }
}

/// What a reply carries.
pub(crate) enum ReplyBody {
    Empty,
    Text(String),
    /// An open file and its length.
    File(File, u64),
}

/// A response to write.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: ReplyBody,
    /// Close the connection after this reply, without draining the request body.
    pub close: bool,
}

impl Reply {
    pub fn empty(status: u16) -> Self {
        Self { status, headers: Vec::new(), body: ReplyBody::Empty, close: false }
    }

    /// A reply with a short plain-text explanation.
    pub fn text(status: u16, msg: impl Into<String>) -> Self {
        let mut msg = msg.into();
        msg.push('\n');
        let headers = vec![("Content-Type", "text/plain; charset=utf-8".into())];
        Self { status, headers, body: ReplyBody::Text(msg), close: false }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn len(&self) -> u64 {
        match &self.body {
            ReplyBody::Empty => 0,
            ReplyBody::Text(t) => t.len() as u64,
            ReplyBody::File(_, n) => *n,
        }
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Writes a reply; `head_only` (a HEAD request) sends the headers, with the length the
/// body would have, and no body.
pub(crate) fn write_reply(stream: &TcpStream, reply: Reply, head_only: bool, close: bool) -> io::Result<()> {
    let len = reply.len();
    let mut head = format!("HTTP/1.1 {} {}\r\nContent-Length: {len}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut w = stream;
    match reply.body {
        ReplyBody::Text(t) if !head_only => {
            head.push_str(&t);
            w.write_all(head.as_bytes())?;
        }
        ReplyBody::File(file, n) if !head_only => {
            w.write_all(head.as_bytes())?;
            // File to socket: std uses sendfile here. The file never changes once
            // renamed into place, but a short copy must not pass for a whole one.
            let sent = io::copy(&mut file.take(n), &mut w)?;
            if sent != n {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file got shorter while being sent"));
            }
        }
        _ => w.write_all(head.as_bytes())?,
    }
    w.flush()
}

/// Reads the head from a byte string (for the unit tests).
#[cfg(test)]
fn head_of(bytes: &[u8]) -> Result<Head, HeadError> {
    read_head(&mut io::BufReader::new(bytes))
}

/// Reads a whole body from a byte string (for the unit tests).
#[cfg(test)]
fn body_of(bytes: &[u8], framing: Framing) -> io::Result<Vec<u8>> {
    let mut r = io::BufReader::new(bytes);
    let mut body = Body::new(&mut r, framing, None);
    let mut out = Vec::new();
    body.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let h = head_of(
            b"PUT /cas/ab HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: Keep-Alive, close\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str(), h.http11), ("PUT", "/cas/ab", true));
        assert_eq!(h.header("content-length"), Some("5"));
        assert!(h.wants_close());
        assert_eq!(framing(&h), Ok(Framing::Length(5)));
        let h = head_of(b"\r\nGET / HTTP/1.0\n\n").unwrap();
        assert!(!h.http11 && h.wants_close());
        assert!(matches!(head_of(b""), Err(HeadError::Closed)));
        assert!(matches!(head_of(b"GET /\r\n\r\n"), Err(HeadError::Bad(_))));
        assert!(matches!(head_of(b"GET / HTTP/2\r\n\r\n"), Err(HeadError::Bad(_))));
        assert!(matches!(head_of(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), Err(HeadError::Bad(_))));
        assert!(matches!(head_of(b"GET / HTTP/1.1\r\nHost: x\r\n"), Err(HeadError::Io)));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 70_000));
        assert!(matches!(head_of(&big), Err(HeadError::TooLarge)));
    }

    #[test]
    fn framings() {
        let f = |hs: &[(&str, &str)]| {
            let headers = hs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            framing(&Head { method: "PUT".into(), target: "/".into(), http11: true, headers })
        };
        assert_eq!(f(&[]), Ok(Framing::Length(0)));
        assert_eq!(f(&[("transfer-encoding", "Chunked")]), Ok(Framing::Chunked));
        assert!(f(&[("transfer-encoding", "gzip, chunked")]).is_err());
        assert!(f(&[("transfer-encoding", "chunked"), ("content-length", "3")]).is_err());
        assert!(f(&[("content-length", "3"), ("content-length", "4")]).is_err());
        assert_eq!(f(&[("content-length", "3"), ("content-length", "3")]), Ok(Framing::Length(3)));
        assert!(f(&[("content-length", "+3")]).is_err());
        assert!(f(&[("content-length", "99999999999999999999999")]).is_err());
    }

    #[test]
    fn bodies() {
        assert_eq!(body_of(b"hello world", Framing::Length(5)).unwrap(), b"hello");
        assert!(body_of(b"hel", Framing::Length(5)).is_err());
        let chunked = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        assert_eq!(body_of(chunked, Framing::Chunked).unwrap(), b"hello world");
        assert!(body_of(b"5\r\nhelloXX0\r\n\r\n", Framing::Chunked).is_err());
        assert!(body_of(b"zz\r\n", Framing::Chunked).is_err());
        assert!(body_of(b"5\r\nhel", Framing::Chunked).is_err());
        assert!(body_of(b"+5\r\nhello\r\n0\r\n\r\n", Framing::Chunked).is_err());
    }

    mod hostile {
        //! Whatever a client sends, the parser answers with a head or an error, never a
        //! panic, and a body never yields more than its framing allows.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_are_a_head_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(h) = head_of(&bytes) {
                    let _ = framing(&h);
                }
            }

            #[test]
            fn damaged_requests_are_a_head_or_an_error(
                at in any::<prop::sample::Index>(),
                with in proptest::collection::vec(any::<u8>(), 0..8),
            ) {
                let good = b"PUT /cas/ab HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
                let i = at.index(good.len());
                let bytes = [&good[..i], &with[..], &good[i..]].concat();
                let mut r = io::BufReader::new(&bytes[..]);
                if let Ok(h) = read_head(&mut r)
                    && let Ok(f) = framing(&h)
                {
                    let mut body = Body::new(&mut r, f, None);
                    let mut out = Vec::new();
                    let _ = body.read_to_end(&mut out);
                    prop_assert!(out.len() <= bytes.len());
                }
            }

            #[test]
            fn chunked_bodies_never_exceed_their_input(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                if let Ok(out) = body_of(&bytes, Framing::Chunked) {
                    prop_assert!(out.len() <= bytes.len());
                }
            }
        }
    }
}
