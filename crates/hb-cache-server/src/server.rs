//! The running server: one thread accepts connections and hands them to a fixed pool of
//! worker threads, each serving one connection at a time (keep-alive included). An idle
//! kept-alive connection is closed after a while, and connections are not kept alive
//! while others wait for a worker, so that idle clients cannot starve busy ones. Requests are
//! routed here to the storage; uploads are checked for the bearer token first.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::http::{self, Body, HeadError, Reply, ReplyBody};
use crate::storage::{Kind, PutError, PutOutcome, Storage, is_hex64};
use crate::{MAX_AC_ENTRY, ServerConfig, ServerError};

/// How long one read or write of a request may block.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection may sit idle between requests: longer than clients keep idle
/// connections (ureq: 15 s), so that it is the client that drops them, never mid-request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often an idle worker looks whether it should give up its connection.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// An unread request body up to this size is read and dropped to keep the connection.
const DRAIN_MAX: u64 = 64 * 1024;

struct Shared {
    storage: Storage,
    /// blake3 of the token: comparing hashes (blake3's `==` is constant-time) reveals
    /// neither the token's bytes nor its length.
    token: Option<blake3::Hash>,
    max_request: u64,
    log: bool,
    stopping: AtomicBool,
    /// Connections accepted and not yet picked up by a worker.
    queued: AtomicUsize,
}

/// A running cache server.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
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
            log: std::env::var_os("HB_CACHE_SERVER_LOG").is_some_and(|v| v == "1"),
            stopping: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::channel::<TcpStream>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..cfg.threads.max(1) {
            let (shared, rx) = (shared.clone(), rx.clone());
            let t = thread::Builder::new().name(format!("hb-cache-{i}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for the next connection.
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(stream) = next else { return };
                    shared.queued.fetch_sub(1, Ordering::SeqCst);
                    serve_connection(&shared, stream);
                }
            });
            threads.push(t.map_err(ServerError::Thread)?);
        }
        let acceptor_shared = shared.clone();
        let acceptor = thread::Builder::new().name("hb-cache-accept".into()).spawn(move || {
            for conn in listener.incoming() {
                if acceptor_shared.stopping.load(Ordering::SeqCst) {
                    break;
                }
                match conn {
                    Ok(stream) => {
                        acceptor_shared.queued.fetch_add(1, Ordering::SeqCst);
                        if tx.send(stream).is_err() {
                            break;
                        }
                    }
                    // Out of file descriptors and the like: wait instead of spinning.
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
            // Dropping `tx` ends the workers once they are idle.
        });
        threads.push(acceptor.map_err(ServerError::Thread)?);
        Ok(Server { addr, shared, threads })
    }

    /// The bound address (useful when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Blocks until the server stops (it only stops through [`Server::shutdown`] from
    /// another handle, so for `hb cache serve` this is forever).
    pub fn wait(self) {
        for t in self.threads {
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

/// Waits until the next request starts; false when the connection should be closed
/// instead (the client left, it idled too long, or a waiting connection needs the worker).
fn wait_for_request(shared: &Shared, conn: &mut BufReader<TcpStream>, first: bool) -> bool {
    if !conn.buffer().is_empty() {
        return true;
    }
    let since = Instant::now();
    if conn.get_ref().set_read_timeout(Some(IDLE_POLL)).is_err() {
        return false;
    }
    loop {
        match conn.fill_buf() {
            Ok(buf) => return !buf.is_empty(),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        if shared.stopping.load(Ordering::SeqCst)
            || since.elapsed() > IDLE_TIMEOUT
            || (!first && shared.queued.load(Ordering::SeqCst) > 0)
        {
            return false;
        }
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(writer) = stream.try_clone() else { return };
    let mut conn = BufReader::with_capacity(64 * 1024, stream);
    let mut first = true;
    loop {
        if !wait_for_request(shared, &mut conn, first) {
            return;
        }
        first = false;
        if conn.get_ref().set_read_timeout(Some(IO_TIMEOUT)).is_err() {
            return;
        }
        let started = Instant::now();
        let head = match http::read_head(&mut conn) {
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
        // When connections are waiting for a worker, this one says it closes, so that its
        // client does not send another request into a closing socket.
        let close = head.wants_close()
            || !body_done
            || shared.stopping.load(Ordering::SeqCst)
            || shared.queued.load(Ordering::SeqCst) > 0;
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
fn linger(writer: &TcpStream, conn: &mut BufReader<TcpStream>) {
    let _ = writer.shutdown(Shutdown::Write);
    let _ = writer.set_read_timeout(Some(Duration::from_millis(500)));
    let since = Instant::now();
    let mut sink = [0u8; 16 * 1024];
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
