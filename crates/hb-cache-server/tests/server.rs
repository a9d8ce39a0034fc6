//! The cache server over real sockets: a `Server` on 127.0.0.1:0 and a raw HTTP/1.1 client
//! on `TcpStream`, so that the tests control every byte (framing, early replies, keep-alive).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hb_cache_server::{Server, ServerConfig, Stats, stats};

const TOKEN: &str = "s3cret-token";

fn hex_of(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    server: Option<Server>,
    addr: SocketAddr,
}

impl Fixture {
    fn new(edit: impl FnOnce(&mut ServerConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let mut cfg = ServerConfig::new("127.0.0.1:0", &dir);
        cfg.token = Some(TOKEN.into());
        edit(&mut cfg);
        let server = Server::start(cfg).unwrap();
        let addr = server.local_addr();
        Self { _dir: tmp, dir, server: Some(server), addr }
    }

    fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<&[u8]>) -> Resp {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n").into_bytes();
        if let Some(t) = token {
            raw.extend(format!("Authorization: Bearer {t}\r\n").bytes());
        }
        if let Some(b) = body {
            raw.extend(format!("Content-Length: {}\r\n\r\n", b.len()).bytes());
            raw.extend(b);
        } else {
            raw.extend(b"\r\n");
        }
        send(self.addr, &raw)
    }

    fn put(&self, kind: &str, hex: &str, body: &[u8]) -> Resp {
        self.req("PUT", &format!("/{kind}/{hex}"), Some(TOKEN), Some(body))
    }

    fn get(&self, kind: &str, hex: &str) -> Resp {
        self.req("GET", &format!("/{kind}/{hex}"), None, None)
    }

    fn stats(&self) -> Stats {
        stats(&self.dir).unwrap()
    }

    fn tmp_is_empty(&self) -> bool {
        hb_fs::read_dir_sorted(&self.dir.join("tmp")).unwrap().is_empty()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Parses one response from the front of `buf`; returns it and the bytes it took.
fn parse(buf: &[u8], head_only: bool) -> Option<(Resp, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..end]).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let len =
        headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).map_or(0, |h| h.1.parse().unwrap());
    let len = if head_only || status == 100 { 0 } else { len };
    if buf.len() < end + len {
        return None;
    }
    Some((Resp { status, headers, body: buf[end..end + len].to_vec() }, end + len))
}

/// Sends raw bytes (ignoring a write failure: the server may answer and close early) and
/// reads the response until the server closes.
fn send(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let head_only = raw.starts_with(b"HEAD ");
    let (resp, used) =
        parse(&buf, head_only).unwrap_or_else(|| panic!("no response in {:?}", String::from_utf8_lossy(&buf)));
    assert_eq!(used, buf.len(), "extra bytes after the response");
    resp
}

/// Reads from a kept-alive connection until one whole response is there.
fn read_one(s: &mut TcpStream, pending: &mut Vec<u8>, head_only: bool) -> Resp {
    loop {
        if let Some((resp, used)) = parse(pending, head_only) {
            pending.drain(..used);
            return resp;
        }
        let mut chunk = [0u8; 8192];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before a whole response");
        pending.extend(&chunk[..n]);
    }
}

/// Every stored blob re-hashes to its name.
fn assert_cas_consistent(dir: &Path) {
    for sub in hb_fs::read_dir_sorted(&dir.join("cas")).unwrap() {
        for f in hb_fs::read_dir_sorted(&sub.path()).unwrap() {
            let name = f.file_name().into_string().unwrap();
            assert_eq!(hex_of(&std::fs::read(f.path()).unwrap()), name);
        }
    }
}

#[test]
fn put_then_get_and_head() {
    let fx = Fixture::new(|_| {});
    let blob = b"hello blob".to_vec();
    let h = hex_of(&blob);
    assert_eq!(fx.get("cas", &h).status, 404);
    assert_eq!(fx.put("cas", &h, &blob).status, 201);
    assert_eq!(fx.put("cas", &h, &blob).status, 200);
    let r = fx.get("cas", &h);
    assert_eq!((r.status, r.body.as_slice()), (200, blob.as_slice()));
    assert_eq!(r.header("content-length"), Some("10"));
    let r = fx.req("HEAD", &format!("/cas/{h}"), None, None);
    assert_eq!((r.status, r.header("content-length"), r.body.len()), (200, Some("10"), 0));
    assert_eq!(fx.req("HEAD", &format!("/cas/{}", "0".repeat(64)), None, None).status, 404);

    // Action-cache entries are opaque and may be replaced.
    let key = "c0ffee".repeat(10) + "abcd";
    assert_eq!(fx.get("ac", &key).status, 404);
    assert_eq!(fx.put("ac", &key, b"entry one").status, 201);
    assert_eq!(fx.get("ac", &key).body, b"entry one");
    assert_eq!(fx.put("ac", &key, b"entry two!").status, 201);
    let r = fx.get("ac", &key);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"entry two!"[..]));
    assert_eq!(fx.stats(), Stats { blobs: 1, blob_bytes: 10, entries: 1, entry_bytes: 10 });

    // A large blob is sent with its Content-Length, not chunked.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let hb = hex_of(&big);
    assert_eq!(fx.put("cas", &hb, &big).status, 201);
    let r = fx.get("cas", &hb);
    assert_eq!(r.header("content-length"), Some("3000000"));
    assert!(r.body == big);
    assert!(fx.tmp_is_empty());
}

#[test]
fn bad_paths_methods_and_digests() {
    let fx = Fixture::new(|_| {});
    let h = hex_of(b"x");
    assert_eq!(fx.get("cas", &h.to_uppercase()).status, 400);
    assert_eq!(fx.get("cas", &h[..63]).status, 400);
    assert_eq!(fx.get("ac", &format!("{h}0")).status, 400);
    assert_eq!(fx.req("GET", &format!("/cas/../{h}"), None, None).status, 400);
    assert_eq!(fx.put("cas", "nothex", b"x").status, 400);
    assert_eq!(fx.req("GET", "/", None, None).status, 404);
    assert_eq!(fx.req("GET", &format!("/blobs/{h}"), None, None).status, 404);
    let r = fx.req("DELETE", &format!("/cas/{h}"), Some(TOKEN), None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD, PUT")));
    assert_eq!(fx.req("POST", &format!("/ac/{h}"), Some(TOKEN), Some(b"x")).status, 405);
    assert_eq!(send(fx.addr, b"NONSENSE\r\n\r\n").status, 400);

    // A body that does not hash to its name is refused and leaves nothing.
    let r = fx.put("cas", &h, b"not x");
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains(&hex_of(b"not x")));
    assert_eq!(fx.get("cas", &h).status, 404);
    assert_eq!(fx.stats(), Stats::default());
    assert!(fx.tmp_is_empty());
}

#[test]
fn uploads_need_the_token() {
    let fx = Fixture::new(|_| {});
    let blob = b"guarded".to_vec();
    let h = hex_of(&blob);
    let path = format!("/cas/{h}");
    let r = fx.req("PUT", &path, None, Some(&blob));
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Bearer")));
    assert_eq!(fx.req("PUT", &path, Some("wrong"), Some(&blob)).status, 401);
    assert_eq!(fx.req("PUT", &path, Some(&format!("{TOKEN}x")), Some(&blob)).status, 401);
    assert_eq!(fx.req("PUT", &format!("/ac/{h}"), Some(""), Some(&blob)).status, 401);
    let basic = format!(
        "PUT {path} HTTP/1.1\r\nConnection: close\r\nAuthorization: Basic {TOKEN}\r\nContent-Length: 7\r\n\r\nguarded"
    );
    assert_eq!(send(fx.addr, basic.as_bytes()).status, 401);
    // A big refused upload still gets its answer.
    let big = vec![1u8; 4 << 20];
    assert_eq!(fx.req("PUT", &format!("/cas/{}", hex_of(&big)), Some("nope"), Some(&big)).status, 401);
    assert_eq!(fx.stats(), Stats::default());
    assert!(fx.tmp_is_empty());
    // The scheme's case does not matter.
    let lower = format!(
        "PUT {path} HTTP/1.1\r\nConnection: close\r\nAuthorization: bearer {TOKEN}\r\nContent-Length: 7\r\n\r\nguarded"
    );
    assert_eq!(send(fx.addr, lower.as_bytes()).status, 201);
}

#[test]
fn read_only_without_a_token() {
    let fx = Fixture::new(|c| c.token = None);
    let h = hex_of(b"ro");
    assert_eq!(fx.put("cas", &h, b"ro").status, 401);
    assert_eq!(fx.req("PUT", &format!("/ac/{h}"), Some(""), Some(b"ro")).status, 401);
    assert_eq!(fx.stats(), Stats::default());
    // Reads work: a blob placed by other means is served.
    let p = fx.dir.join("cas").join(&h[..2]).join(&h);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"ro").unwrap();
    assert_eq!(fx.get("cas", &h).body, b"ro");
}

#[test]
fn oversized_bodies_are_refused() {
    let fx = Fixture::new(|c| c.max_request = 100);
    let blob = vec![7u8; 101];
    let h = hex_of(&blob);
    // Refused from the Content-Length alone: the body is never sent.
    let head = format!("PUT /cas/{h} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 101\r\n\r\n");
    assert_eq!(send(fx.addr, head.as_bytes()).status, 413);
    // A huge declared length is no trouble either.
    let head =
        format!("PUT /cas/{h} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 99999999999999\r\n\r\n");
    assert_eq!(send(fx.addr, head.as_bytes()).status, 413);
    // Chunked: counted while reading.
    let mut raw =
        format!("PUT /cas/{h} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for _ in 0..2 {
        raw.extend(b"40\r\n");
        raw.extend(&blob[..64]);
        raw.extend(b"\r\n");
    }
    raw.extend(b"0\r\n\r\n");
    assert_eq!(send(fx.addr, &raw).status, 413);
    assert_eq!(fx.stats(), Stats::default());
    assert!(fx.tmp_is_empty());
    // At the limit it fits.
    assert_eq!(fx.put("cas", &hex_of(&blob[..100]), &blob[..100]).status, 201);

    // Action-cache entries are held to 16 MiB whatever the request limit.
    let fx = Fixture::new(|_| {});
    let key = "ab".repeat(32);
    let head = format!(
        "PUT /ac/{key} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
        (16 << 20) + 1
    );
    assert_eq!(send(fx.addr, head.as_bytes()).status, 413);
}

#[test]
fn keep_alive_chunked_and_expect_continue() {
    let fx = Fixture::new(|_| {});
    let blob = b"chunky blob".to_vec();
    let h = hex_of(&blob);
    let mut s = TcpStream::connect(fx.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut pending = Vec::new();

    // Chunked upload, then two reads, on one connection.
    let raw = format!(
        "PUT /cas/{h} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n6\r\ny blob\r\n0\r\n\r\n"
    );
    s.write_all(raw.as_bytes()).unwrap();
    assert_eq!(read_one(&mut s, &mut pending, false).status, 201);
    s.write_all(format!("HEAD /cas/{h} HTTP/1.1\r\n\r\nGET /cas/{h} HTTP/1.1\r\n\r\n").as_bytes()).unwrap();
    let r = read_one(&mut s, &mut pending, true);
    assert_eq!((r.status, r.header("content-length")), (200, Some("11")));
    assert_eq!(read_one(&mut s, &mut pending, false).body, blob);

    // Expect: 100-continue: the server asks for the body only when it will take it.
    let key = "ef".repeat(32);
    let head = format!(
        "PUT /ac/{key} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    assert_eq!(read_one(&mut s, &mut pending, false).status, 100);
    s.write_all(b"entry").unwrap();
    assert_eq!(read_one(&mut s, &mut pending, false).status, 201);
    let head = format!("PUT /ac/{key} HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let r = read_one(&mut s, &mut pending, false);
    assert_eq!((r.status, r.header("connection")), (401, Some("close")));
    assert_eq!(fx.get("ac", &key).body, b"entry");
}

#[test]
fn a_cut_upload_leaves_nothing() {
    let fx = Fixture::new(|_| {});
    let blob = vec![3u8; 100_000];
    let h = hex_of(&blob);
    let mut s = TcpStream::connect(fx.addr).unwrap();
    let head = format!("PUT /cas/{h} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100000\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&blob[..50_000]).unwrap();
    drop(s);
    // The server notices the cut and removes its temporary file; allow it up to 10 s
    // (the suite's other servers keep a 2-core machine busy; 2 s once was not enough).
    for _ in 0..500 {
        if fx.tmp_is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(fx.tmp_is_empty());
    assert_eq!(fx.get("cas", &h).status, 404);
    assert_eq!(fx.stats(), Stats::default());
}

#[test]
fn concurrent_uploads() {
    let fx = Arc::new(Fixture::new(|_| {}));
    let same: Arc<Vec<u8>> = Arc::new((0..1u32 << 20).map(|i| (i % 253) as u8).collect());
    let barrier = Arc::new(Barrier::new(16));
    let mut handles = Vec::new();
    for i in 0..16u8 {
        let (fx, same, barrier) = (fx.clone(), same.clone(), barrier.clone());
        handles.push(std::thread::spawn(move || {
            let blob = if i < 8 { same.to_vec() } else { vec![i; 300_000 + usize::from(i)] };
            let h = hex_of(&blob);
            barrier.wait();
            let status = fx.put("cas", &h, &blob).status;
            (i, status)
        }));
    }
    let results: Vec<(u8, u16)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let same_created = results.iter().filter(|(i, s)| *i < 8 && *s == 201).count();
    assert_eq!(same_created, 1, "{results:?}");
    assert!(results.iter().all(|(i, s)| if *i < 8 { *s == 200 || *s == 201 } else { *s == 201 }), "{results:?}");
    assert_cas_consistent(&fx.dir);
    assert!(fx.tmp_is_empty());
    let st = fx.stats();
    assert_eq!(st.blobs, 9);
    assert_eq!(fx.get("cas", &hex_of(&same)).body.len(), 1 << 20);
}

#[test]
fn least_recently_used_is_evicted() {
    let fx = Fixture::new(|c| c.max_size = Some(2500));
    let [a, b, c] = [vec![1u8; 1000], vec![2u8; 1000], vec![3u8; 1000]];
    let pause = || std::thread::sleep(Duration::from_millis(20));
    assert_eq!(fx.put("cas", &hex_of(&a), &a).status, 201);
    pause();
    assert_eq!(fx.put("cas", &hex_of(&b), &b).status, 201);
    pause();
    assert_eq!(fx.get("cas", &hex_of(&a)).status, 200);
    pause();
    assert_eq!(fx.put("cas", &hex_of(&c), &c).status, 201);
    assert_eq!(fx.get("cas", &hex_of(&b)).status, 404);
    assert_eq!(fx.get("cas", &hex_of(&a)).body, a);
    assert_eq!(fx.get("cas", &hex_of(&c)).body, c);
    assert_eq!(fx.stats().blob_bytes, 2000);
}

#[test]
fn restart_counts_what_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let blobs: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
    {
        let mut cfg = ServerConfig::new("127.0.0.1:0", &dir);
        cfg.token = Some(TOKEN.into());
        let server = Server::start(cfg).unwrap();
        for b in &blobs {
            let raw = format!(
                "PUT /cas/{} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n",
                hex_of(b)
            );
            let mut raw = raw.into_bytes();
            raw.extend(b);
            assert_eq!(send(server.local_addr(), &raw).status, 201);
            std::thread::sleep(Duration::from_millis(10));
        }
        server.shutdown();
    }
    // Restarted with a smaller limit, it evicts the oldest at once, down to under 90%.
    let mut cfg = ServerConfig::new("127.0.0.1:0", &dir);
    cfg.max_size = Some(3000);
    let server = Server::start(cfg).unwrap();
    assert_eq!(stats(&dir).unwrap().blobs, 2);
    let raw = format!("GET /cas/{} HTTP/1.1\r\nConnection: close\r\n\r\n", hex_of(&blobs[3]));
    assert_eq!(send(server.local_addr(), raw.as_bytes()).status, 200);
    server.shutdown();
}

#[test]
fn the_ureq_client_hb_uses() {
    let fx = Fixture::new(|_| {});
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = |kind: &str, hex: &str| format!("http://{}/{kind}/{hex}", fx.addr);
    let auth = format!("Bearer {TOKEN}");
    // Many requests through one agent reuse kept-alive connections.
    for i in 0..40u32 {
        let blob: Vec<u8> = (0..(i * 997)).map(|j| (j % 241) as u8).collect();
        let h = hex_of(&blob);
        let r = agent.put(&url("cas", &h)).header("Authorization", &auth).send(&blob[..]).unwrap();
        assert_eq!(r.status(), 201);
        let mut r = agent.get(&url("cas", &h)).call().unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.body_mut().read_to_vec().unwrap() == blob);
        let r = agent.head(&url("cas", &h)).call().unwrap();
        assert_eq!(r.headers().get("content-length").unwrap(), &blob.len().to_string());
    }
    // A streamed body goes chunked.
    let blob = vec![9u8; 200_000];
    let mut reader = &blob[..];
    let r = agent
        .put(&url("cas", &hex_of(&blob)))
        .header("Authorization", &auth)
        .send(ureq::SendBody::from_reader(&mut reader))
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = "12".repeat(32);
    assert_eq!(agent.put(&url("ac", &key)).send(&b"entry"[..]).unwrap().status(), 401);
    assert_eq!(agent.get(&url("ac", &key)).call().unwrap().status(), 404);
    assert_eq!(agent.put(&url("ac", &key)).header("Authorization", &auth).send(&b"entry"[..]).unwrap().status(), 201);
    assert_eq!(agent.get(&url("ac", &key)).call().unwrap().body_mut().read_to_vec().unwrap(), b"entry");
    assert_cas_consistent(&fx.dir);
}

#[test]
fn many_kept_alive_clients() {
    // Kept-alive connections must not starve the others, and clients must never see a
    // connection closed under a request they sent.
    let fx = Arc::new(Fixture::new(|c| c.max_connections = 16));
    let handles: Vec<_> = (0..6u32)
        .map(|t| {
            let fx = fx.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
                for i in 0..30u32 {
                    let blob = format!("client {t} blob {i}").into_bytes();
                    let url = format!("http://{}/cas/{}", fx.addr, hex_of(&blob));
                    let r = agent.put(&url).header("Authorization", format!("Bearer {TOKEN}")).send(&blob[..]).unwrap();
                    assert_eq!(r.status(), 201);
                    let mut r = agent.get(&url).call().unwrap();
                    assert_eq!(r.body_mut().read_to_vec().unwrap(), blob);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(fx.stats().blobs, 180);
}

/// A client sending its request head one byte a second, forever.
fn slowloris(addr: std::net::SocketAddr) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(mut s) = std::net::TcpStream::connect(addr) else { return };
        for b in b"GET /cas/".iter().chain(std::iter::repeat(&b'a')) {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

#[test]
fn slow_clients_do_not_hold_up_the_others() {
    let fx = Fixture::new(|_| {});
    let blob = b"served while others dawdle".to_vec();
    assert_eq!(fx.put("cas", &hex_of(&blob), &blob).status, 201);
    let slow: Vec<_> = (0..50).map(|_| slowloris(fx.addr)).collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        let start = Instant::now();
        let r = fx.get("cas", &hex_of(&blob));
        assert_eq!((r.status, r.body.as_slice()), (200, blob.as_slice()));
        assert!(start.elapsed() < Duration::from_secs(1), "a GET took {:?}", start.elapsed());
    }
    // The server gives up on each slow head after its deadline: their writes fail.
    let start = Instant::now();
    for h in slow {
        h.join().unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(30), "slow clients were served for {:?}", start.elapsed());
}

#[test]
fn past_the_connection_cap_clients_hear_503_at_once() {
    let fx = Fixture::new(|c| c.max_connections = 2);
    let idle: Vec<_> = (0..2).map(|_| std::net::TcpStream::connect(fx.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(fx.addr).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(start.elapsed() < Duration::from_secs(1));
    drop(idle);
}

#[test]
fn a_blob_larger_than_the_cache_is_refused_and_evicts_nothing() {
    let fx = Fixture::new(|c| c.max_size = Some(10_000));
    let small = vec![1u8; 3000];
    assert_eq!(fx.put("cas", &hex_of(&small), &small).status, 201);
    let big = vec![2u8; 20_000];
    assert_eq!(fx.put("cas", &hex_of(&big), &big).status, 413);
    assert_eq!(fx.get("cas", &hex_of(&small)).body, small);
}
