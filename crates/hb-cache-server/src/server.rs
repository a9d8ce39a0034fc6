//! The running server: one thread accepts connections and gives each its own thread, up
//! to a cap (`max_connections`); past the cap a connection is answered 503 at once and
//! closed. A request's head must arrive within a deadline however slowly its bytes
//! trickle in, and an idle kept-alive connection is closed after a while, so slow or
//! idle clients hold only their own thread and never keep others from being served.
//! Requests are routed here to the storage; uploads are checked for the bearer token
//! first.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::{self, Body, HeadError, Reply, ReplyBody};
use crate::storage::{Kind, PutError, PutOutcome, Storage, is_hex64};
use crate::{MAX_AC_ENTRY, ServerConfig, ServerError};

/// How long one read or write of a request may block.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request's head (request line and headers) may take to arrive in all.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// How long a connection may sit idle between requests: longer than clients keep idle
/// connections (ureq: 15 s), so that it is the client that drops them, never mid-request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often an idle connection looks whether the server is stopping.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// An unread request body up to this size is read and dropped to keep the connection.
const DRAIN_MAX: u64 = 64 * 1024;
/// A connection thread needs little stack: bodies stream through fixed buffers.
const STACK: usize = 256 * 1024;

struct Shared {
    storage: Storage,
    /// blake3 of the token: comparing hashes (blake3's `==` is constant-time) reveals
    /// neither the token's bytes nor its length.
    token: Option<blake3::Hash>,
    max_request: u64,
    max_connections: usize,
    log: bool,
    stopping: AtomicBool,
    /// Connections being served.
    active: AtomicUsize,
    /// Their threads, joined on shutdown.
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// A running cache server.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: JoinHandle<()>,
}

/// Counts a connection as active while it lives.
struct Active<'a>(&'a AtomicUsize);
impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Server {
    /// Opens the directory, binds and starts serving on background threads; returns once
    /// listening, so callers can connect immediately.
    pub fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        let storage = Storage::open(&cfg.dir, cfg.max_size)?;
        let bind_err = |source| ServerError::Bind { addr: cfg.listen.clone(), source };
        let listener = TcpListener::bind(&cfg.listen).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let shared = Arc::new(Shared {
            storage,
            token: cfg.token.as_deref().map(|t| blake3::hash(t.as_bytes())),
            max_request: cfg.max_request,
            max_connections: cfg.max_connections.max(1),
            log: std::env::var_os("HB_CACHE_SERVER_LOG").is_some_and(|v| v == "1"),
            stopping: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let acceptor_shared = shared.clone();
        let acceptor = thread::Builder::new()
            .name("hb-cache-accept".into())
            .spawn(move || accept(&acceptor_shared, &listener))
            .map_err(ServerError::Thread)?;
        Ok(Server { addr, shared, acceptor })
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks until the server stops (it only stops through [`Server::shutdown`] from
    /// another handle, so for `hb cache serve` this is forever).
    pub fn wait(self) {
        let _ = self.acceptor.join();
        let conns = std::mem::take(&mut *self.shared.connections.lock().unwrap_or_else(|e| e.into_inner()));
        for t in conns {
            let _ = t.join();
        }
    }

    /// Stops accepting, lets the requests in progress finish and joins every thread.
    pub fn shutdown(self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        self.wait();
    }
}

/// The acceptor: a thread per connection up to the cap, 503 beyond it.
fn accept(shared: &Arc<Shared>, listener: &TcpListener) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut stream) = conn else {
            // Out of file descriptors and the like: wait instead of spinning.
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.max_connections {
            shared.active.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            continue;
        }
        let s = shared.clone();
        let spawned = thread::Builder::new().name("hb-cache-conn".into()).stack_size(STACK).spawn(move || {
            let _active = Active(&s.active);
            serve_connection(&s, stream);
        });
        let mut conns = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|t| !t.is_finished());
        match spawned {
            Ok(t) => conns.push(t),
            Err(_) => {
                shared.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// A socket whose reads fail with `TimedOut` once a deadline passes, however the bytes
/// trickle in (a per-read timeout alone lets a client send one byte a second forever).
struct DeadlineStream {
    stream: TcpStream,
    deadline: Cell<Option<Instant>>,
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = match self.deadline.get() {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "request head deadline passed"));
                }
                left.min(IO_TIMEOUT)
            }
            None => IO_TIMEOUT,
        };
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.read(buf)
    }
}

/// Waits until the next request starts; false when the connection should be closed
/// instead (the client left, it idled too long, or the server is stopping or full).
fn wait_for_request(shared: &Shared, conn: &mut BufReader<DeadlineStream>) -> bool {
    if !conn.buffer().is_empty() {
        return true;
    }
    let since = Instant::now();
    loop {
        conn.get_ref().deadline.set(Some(Instant::now() + IDLE_POLL));
        match conn.fill_buf() {
            Ok(buf) => return !buf.is_empty(),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        let full = shared.active.load(Ordering::SeqCst) >= shared.max_connections;
        if shared.stopping.load(Ordering::SeqCst) || since.elapsed() > IDLE_TIMEOUT || full {
            return false;
        }
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(writer) = stream.try_clone() else { return };
    let mut conn = BufReader::with_capacity(64 * 1024, DeadlineStream { stream, deadline: Cell::new(None) });
    let mut first = true;
    loop {
        if !first && !wait_for_request(shared, &mut conn) {
            return;
        }
        first = false;
        let started = Instant::now();
        conn.get_ref().deadline.set(Some(started + HEAD_DEADLINE));
        let head = http::read_head(&mut conn);
        conn.get_ref().deadline.set(None);
        let head = match head {
            Ok(h) => h,
            Err(HeadError::Closed | HeadError::Io) => return,
            Err(e) => {
                let reply = match e {
                    HeadError::Bad(msg) => Reply::text(400, msg),
                    _ => Reply::text(431, "request head too large"),
                };
                let _ = http::write_reply(&writer, reply, false, true);
                linger(&writer, &mut conn);
                return;
            }
        };
        let framing = match http::framing(&head) {
            Ok(f) => f,
            Err(msg) => {
                let _ = http::write_reply(&writer, Reply::text(400, msg), false, true);
                linger(&writer, &mut conn);
                return;
            }
        };
        let expects_continue = head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let mut body = Body::new(&mut conn, framing, expects_continue.then_some(&writer));
        let reply = handle(shared, &head, &mut body);
        let body_done = !reply.close && body.drain(DRAIN_MAX);
        let close = head.wants_close() || !body_done || shared.stopping.load(Ordering::SeqCst);
        let (status, len) = (reply.status, reply.len());
        let written = http::write_reply(&writer, reply, head.method == "HEAD", close);
        if shared.log {
            let ms = started.elapsed().as_millis();
            eprintln!("{peer} {} {} {status} {len} {ms}ms", head.method, head.target.escape_default());
        }
        if written.is_err() {
            return;
        }
        if close {
            if !body_done {
                linger(&writer, &mut conn);
            }
            return;
        }
    }
}

/// Closes a connection whose client may still be sending: stops writing, then reads and
/// drops for a moment, so that the reply is not lost to a reset caused by unread data.
fn linger(writer: &TcpStream, conn: &mut BufReader<DeadlineStream>) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(Duration::from_millis(500)));
    let since = Instant::now();
    let mut sink = [0u8; 16 * 1024];
    conn.get_ref().deadline.set(Some(since + Duration::from_secs(2)));
    while since.elapsed() < Duration::from_secs(2) {
        match conn.get_mut().read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// Whether the request carries `Authorization: Bearer <the token>`.
fn authorized(shared: &Shared, head: &http::Head) -> bool {
    let Some(want) = shared.token else { return false };
    let Some((scheme, token)) = head.header("authorization").and_then(|v| v.split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && blake3::hash(token.trim().as_bytes()) == want
}

fn handle<R: BufRead>(shared: &Shared, head: &http::Head, body: &mut Body<'_, R>) -> Reply {
    let path = head.target.split('?').next().unwrap_or("");
    let (kind, hex) = if let Some(hex) = path.strip_prefix("/cas/") {
        (Kind::Cas, hex)
    } else if let Some(hex) = path.strip_prefix("/ac/") {
        (Kind::Ac, hex)
    } else {
        return Reply::text(404, "not found: the cache serves /cas/<blake3 hex> and /ac/<key hex>");
    };
    let bad_name = || Reply::text(400, "expected 64 lowercase hex digits after /cas/ or /ac/");
    match head.method.as_str() {
        "GET" | "HEAD" => {
            if !is_hex64(hex) {
                return bad_name();
            }
            match shared.storage.get(kind, hex) {
                Ok(Some((file, len))) => Reply {
                    status: 200,
                    headers: vec![("Content-Type", "application/octet-stream".into())],
                    body: ReplyBody::File(file, len),
                    close: false,
                },
                Ok(None) => Reply::empty(404),
                Err(e) => {
                    eprintln!("hb cache server: {e}");
                    Reply::text(500, "could not read the stored file")
                }
            }
        }
        "PUT" => {
            if !authorized(shared, head) {
                let msg = match shared.token {
                    None => "this cache is read-only",
                    Some(_) => "uploads need Authorization: Bearer <token>",
                };
                return Reply::text(401, msg).header("WWW-Authenticate", "Bearer");
            }
            if !is_hex64(hex) {
                return bad_name();
            }
            let limit = match kind {
                Kind::Cas => shared.max_request,
                Kind::Ac => shared.max_request.min(MAX_AC_ENTRY),
            };
            // A file larger than the whole cache would evict everything and still not fit.
            let limit = limit.min(shared.storage.max_size().unwrap_or(u64::MAX));
            // The rest of the body is not worth reading: close instead.
            let too_large = || Reply { close: true, ..Reply::text(413, format!("the limit is {limit} bytes")) };
            if body.declared_length().is_some_and(|n| n > limit) {
                return too_large();
            }
            match shared.storage.put(kind, hex, body, limit) {
                Ok(PutOutcome::Created) => Reply::empty(201),
                Ok(PutOutcome::Existed) => Reply::empty(200),
                Err(PutError::TooLarge) => too_large(),
                Err(PutError::Mismatch { actual }) => {
                    Reply::text(400, format!("the body's blake3 is {actual}, not the name {hex}"))
                }
                Err(PutError::Client(e)) => Reply::text(400, format!("reading the body: {e}")),
                Err(PutError::Store(e)) => {
                    eprintln!("hb cache server: {e}");
                    Reply::text(500, "could not store the upload")
                }
            }
        }
        _ => Reply::text(405, "the cache answers GET, HEAD and PUT").header("Allow", "GET, HEAD, PUT"),
    }
}
