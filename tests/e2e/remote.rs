//! The team cache: a real `hb cache serve` (and a real nginx with WebDAV) on loopback.
//! CI builds and uploads signed entries; a colleague with an empty cache and no package
//! index builds nothing; corrupt, dead or hostile servers never change the result.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::harness::{NO_INDEX, Ws, build_with_remote, hb_bin, keygen, run, sha256, show};

const DEB: &str = "hb-out/demosite/demosite_0.1.0_amd64.deb";
const TOKEN: &str = "s3cret-token-for-tests";

/// A running `hb cache serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let token = tmp.path().join("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let mut child = Command::new(hb_bin())
            .args(["cache", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .arg("--token-file")
            .arg(&token)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
        let url =
            line.split_whitespace().find(|w| w.starts_with("http://")).expect("server prints its URL").to_string();
        Server { child, url, dir, _tmp: tmp }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every blob the server holds re-hashes to its name.
    fn all_blobs_whole(&self) -> usize {
        let mut n = 0;
        for e in hb_fs::walk_sorted(&self.dir.join("cas")) {
            let e = e.unwrap();
            if e.file_type().is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert_eq!(
                    blake3::hash(&std::fs::read(e.path()).unwrap()).to_hex().to_string(),
                    name,
                    "corrupt blob on the server"
                );
                n += 1;
            }
        }
        n
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Builds demosite in a new checkout with a new local cache and the given environment;
/// returns the `--json` report and the deb's sha256.
fn build(url: &str, env: &[(&str, &str)], args: &[&str]) -> (serde_json::Value, String, Vec<String>) {
    build_with_remote(&Ws::demosite(), url, env, args)
}

fn writer_env(key: &str) -> Vec<(&str, &str)> {
    vec![("HB_REMOTE_TOKEN", TOKEN), ("HB_REMOTE_SIGNING_KEY_FILE", key)]
}

fn shared_cache_story(url: &str) {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path(), "writer");
    let key = key.display().to_string();
    let (a, sha_a, _) = build(url, &writer_env(&key), &[]);
    assert!(a["executed"].as_u64().unwrap() > 10, "{a}");

    let mut env = NO_INDEX.to_vec();
    env.push(("HB_REMOTE_TRUSTED_KEYS", &public));
    let colleague = Ws::demosite();
    let (b, sha_b, warnings) = build_with_remote(&colleague, url, &env, &["--remote-read-only"]);
    assert_eq!(b["executed"], 0, "{b}");
    assert!(b["remote"].as_u64().unwrap() > 10, "{b}");
    assert_eq!(sha_a, sha_b);
    assert!(warnings.is_empty(), "{warnings:?}");
    // Hits taken on trust bring their entries, not their files: of the ~1,300 files of
    // the target root, the wheels and the venv, only what hb-out needed came down.
    let blobs = blob_count(&colleague.cache);
    assert!((1..100).contains(&blobs), "{blobs} blobs downloaded");
    // A change then runs actions whose inputs' files are still on the server: they are
    // downloaded as the actions start, and the result is the writer's again.
    let cfg = colleague.path("demosite/config.cfg");
    let original = std::fs::read(&cfg).unwrap();
    std::fs::write(&cfg, [original.as_slice(), b"\n# an edit\n"].concat()).unwrap();
    let (c, _, warnings) = build_with_remote(&colleague, url, &env, &["--remote-read-only"]);
    assert!(c["executed"].as_u64().unwrap() >= 1, "{c}");
    assert!(warnings.is_empty(), "{warnings:?}");
    std::fs::write(&cfg, original).unwrap();
    let (_, sha_c, warnings) = build_with_remote(&colleague, url, &env, &["--remote-read-only"]);
    assert_eq!(sha_c, sha_a);
    assert!(warnings.is_empty(), "{warnings:?}");
}

/// How many blobs a local cache holds.
fn blob_count(cache: &std::path::Path) -> usize {
    hb_fs::walk_sorted(&cache.join("v1/cas"))
        .into_iter()
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_type().is_file()))
        .count()
}

#[test]
fn a_colleague_builds_nothing_from_hb_cache_serve() {
    let server = Server::start();
    shared_cache_story(&server.url);
}

#[test]
fn a_colleague_builds_nothing_from_a_stock_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let script = crate::harness::repo().join("cache/nginx/test-server.sh");
    run(Command::new("bash").arg(&script).arg("start").arg(port.to_string()).arg(tmp.path()).arg(TOKEN));
    /// Stops nginx (before the temporary directory holding its pid file goes).
    struct Stop(PathBuf, PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("bash").arg(&self.0).arg("stop").arg(&self.1).status();
        }
    }
    let _stop = Stop(script.clone(), tmp.path().to_path_buf());
    shared_cache_story(&format!("http://127.0.0.1:{port}"));
    // nginx refuses uploads without the token, too.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "x"])
        .arg(format!("http://127.0.0.1:{port}/cas/{}", "a".repeat(64)))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

#[test]
fn corrupt_blobs_from_the_server_are_discarded_and_rebuilt() {
    let server = Server::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path(), "writer");
    let key = key.display().to_string();
    let (_, sha_a, _) = build(&server.url, &writer_env(&key), &[]);
    // Flip a byte of the deb itself on the server (its blob is named by its blake3).
    let ws = Ws::demosite();
    ws.ok(&["build", "//demosite:deb"]);
    let digest = blake3::hash(&std::fs::read(ws.path(DEB)).unwrap()).to_hex().to_string();
    let path = server.dir.join("cas").join(&digest[..2]).join(&digest);
    let mut bytes = std::fs::read(&path).expect("the deb was uploaded");
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();

    let mut env = NO_INDEX.to_vec();
    env.push(("HB_REMOTE_TRUSTED_KEYS", &public));
    let (b, sha_b, warnings) = build(&server.url, &env, &["--remote-read-only"]);
    assert_eq!(sha_a, sha_b);
    assert!(b["executed"].as_u64().unwrap() >= 1, "{b}");
    assert!(warnings.iter().any(|w| w.contains("corrupt")), "{warnings:?}");
}

#[test]
fn a_server_killed_mid_build_is_one_warning_and_a_local_build() {
    // The bytes to expect: a build that never saw a remote cache.
    let reference = Ws::demosite();
    reference.ok(&["build", "//demosite:deb"]);
    let want = sha256(&reference.path(DEB));

    let mut server = Server::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = keygen(keys.path(), "writer");
    let ws = Ws::demosite();
    let child = ws
        .cmd()
        .args(["build", "--json", "//demosite:deb"])
        .env("HB_REMOTE_CACHE", &server.url)
        .env("HB_REMOTE_TOKEN", TOKEN)
        .env("HB_REMOTE_SIGNING_KEY_FILE", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it upload for a while, then pull the plug.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    server.kill();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<&str> = report["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(warnings[0].contains("unreachable"), "{warnings:?}");
    assert_eq!(sha256(&ws.path(DEB)), want);

    // A server that is already gone: the same single warning.
    let (_, sha, warnings) = build(&server.url, &[], &[]);
    assert_eq!(sha, want);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
}

#[test]
fn uploads_need_the_token_and_entries_need_a_trusted_signature() {
    let server = Server::start();
    let put = |auth: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", "--data-binary", "hello"]);
        if let Some(a) = auth {
            c.args(["-H", &format!("Authorization: Bearer {a}")]);
        }
        let digest = blake3::hash(b"hello").to_hex().to_string();
        c.arg(format!("{}/cas/{digest}", server.url));
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    assert_eq!(put(None), "401");
    assert_eq!(put(Some("wrong")), "401");
    assert_eq!(server.all_blobs_whole(), 0, "nothing stored");
    assert!(put(Some(TOKEN)).starts_with("20"));
    assert_eq!(server.all_blobs_whole(), 1);

    // Entries signed by a key the reader does not trust are ignored.
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = keygen(keys.path(), "writer");
    let (_, other_public) = keygen(keys.path(), "someone-else");
    let key = key.display().to_string();
    build(&server.url, &writer_env(&key), &[]);
    let (b, _, warnings) = build(&server.url, &[("HB_REMOTE_TRUSTED_KEYS", &other_public)], &["--remote-read-only"]);
    assert_eq!(b["remote"], 0, "{b}");
    assert!(b["executed"].as_u64().unwrap() > 10, "{b}");
    assert!(warnings.iter().any(|w| w.contains("untrusted key")), "{warnings:?}");
}

#[test]
fn two_clients_uploading_at_once_leave_every_blob_whole() {
    let server = Server::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, _) = keygen(keys.path(), "writer");
    let key = key.display().to_string();
    std::thread::scope(|s| {
        let a = s.spawn(|| build(&server.url, &writer_env(&key), &[]));
        let b = s.spawn(|| build(&server.url, &writer_env(&key), &[]));
        let (_, sha_a, _) = a.join().unwrap();
        let (_, sha_b, _) = b.join().unwrap();
        assert_eq!(sha_a, sha_b);
    });
    assert!(server.all_blobs_whole() > 100);
}

/// A client sending its request head one byte a second until the server hangs up.
fn slowloris(url: &str) {
    let addr = url.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else { return };
        for b in b"GET /cas/".iter().chain(std::iter::repeat(&b'a')) {
            if std::io::Write::write_all(&mut s, &[*b]).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
}

#[test]
fn fifty_slow_clients_do_not_keep_a_colleague_from_the_cache() {
    let server = Server::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = keygen(keys.path(), "writer");
    let key = key.display().to_string();
    build(&server.url, &writer_env(&key), &[]);
    for _ in 0..50 {
        slowloris(&server.url);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut env = NO_INDEX.to_vec();
    env.push(("HB_REMOTE_TRUSTED_KEYS", &public));
    let start = std::time::Instant::now();
    let (b, _, warnings) = build(&server.url, &env, &["--remote-read-only"]);
    assert_eq!(b["executed"], 0, "{b}");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(30), "took {:?}", start.elapsed());
}

#[test]
fn a_server_answering_only_errors_is_switched_off_with_one_summary() {
    // Every request gets a 500: after three, the build stops asking and builds locally.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let _ = std::io::Write::write_all(
                &mut conn,
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops",
            );
        }
    });
    let (report, _, warnings) = build(&url, &[], &[]);
    assert!(report["executed"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("500") && warnings[1].contains("3 bad answers"), "{warnings:?}");
}
