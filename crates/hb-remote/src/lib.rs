//! The remote cache client. It speaks the layout existing HTTP build caches use
//! (`GET|HEAD|PUT /cas/<blake3>` and `/ac/<key>`) to `hb cache serve` or a stock nginx
//! with WebDAV. Every downloaded blob is re-hashed before it enters the local store, so a
//! server can make hb slower but never wrong. Action-cache entries are signed
//! (ed25519): readers use an entry only if it is signed by a key they trust, which
//! closes the hole where anyone with write access could map an action to any output.
//! The first transport failure disables the remote for the rest of the build, with one
//! warning: a dead or slow server never fails a build. `fetch_entry` gives a hit's
//! result without its files, which `fetch_blobs` downloads when the build reads them.

pub mod exec;
pub mod grpc;
pub mod worker;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hb_engine::{ActionResult, RemoteCache};
use hb_store::{Digest, Store};
use rayon::prelude::*;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{what}: {why}")]
    Key { what: String, why: String },
    #[error(transparent)]
    Fs(#[from] hb_fs::FsError),
}

/// Where and how to reach the remote cache.
#[derive(Clone)]
pub struct RemoteConfig {
    /// Base URL, e.g. `http://cache.internal:8080`.
    pub url: String,
    /// Bearer token for uploads; without one the client only reads.
    pub token: Option<String>,
    /// Never upload, even with a token.
    pub read_only: bool,
    /// Key signing uploaded action-cache entries (writers).
    pub signing_key: Option<SigningKey>,
    /// Public keys whose entries this client uses.
    pub trusted: Vec<VerifyingKey>,
    /// How long to wait for a server to start answering a request (connecting and
    /// sending each take at most this too). A server slower than this is given up on.
    pub response_timeout: Duration,
    /// TLS settings of `grpcs://` remotes.
    pub tls: TlsFiles,
}

/// PEM bytes for TLS: a CA to trust besides the system's, and a client certificate.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// (certificate chain, private key).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// The default [`RemoteConfig::response_timeout`].
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// After this many bad answers (corrupt blobs, server errors) the remote is not used for
/// the rest of the build.
pub const MAX_BAD_ANSWERS: usize = 3;

/// A signing key from a file holding its 32-byte seed in hex.
pub fn read_signing_key(path: &std::path::Path) -> Result<SigningKey, RemoteError> {
    let text = hb_fs::read_to_string(path)?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|e| RemoteError::Key {
        what: format!("signing key {}", path.display()),
        why: format!("expected 64 hex digits ({e}); create one with `hb cache keygen`"),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A public key from 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, RemoteError> {
    let bad = |why: String| RemoteError::Key { what: format!("trusted key `{text}`"), why };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|e| bad(format!("expected 64 hex digits ({e})")))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// A new key pair: (secret seed hex, public key hex).
pub fn generate_key() -> Result<(String, String), RemoteError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| RemoteError::Key { what: "new key".into(), why: format!("no randomness: {e}") })?;
    let key = SigningKey::from_bytes(&seed);
    Ok((hex::encode(seed), hex::encode(key.verifying_key().as_bytes())))
}

const ENTRY_MAGIC: &[u8; 8] = b"hbsig\x00\x00\x01";
const SIGNED_DOMAIN: &[u8] = b"hb action cache entry v1\x00";

fn signed_message(key: &Digest, payload: &[u8]) -> Vec<u8> {
    let mut m = SIGNED_DOMAIN.to_vec();
    m.extend_from_slice(&key.0);
    m.extend_from_slice(payload);
    m
}

/// Wraps an encoded action result for action `key`, signed.
pub fn sign_entry(signer: &SigningKey, key: &Digest, payload: &[u8]) -> Vec<u8> {
    let sig = signer.sign(&signed_message(key, payload));
    let mut out = ENTRY_MAGIC.to_vec();
    out.extend_from_slice(signer.verifying_key().as_bytes());
    out.extend_from_slice(&sig.to_bytes());
    out.extend_from_slice(payload);
    out
}

/// Why an entry was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    Unsigned,
    UntrustedKey(String),
    BadSignature,
}

/// The payload of a signed entry, if it is signed by one of `trusted` for `key`.
pub fn open_entry<'a>(entry: &'a [u8], key: &Digest, trusted: &[VerifyingKey]) -> Result<&'a [u8], Rejected> {
    let rest = entry.strip_prefix(ENTRY_MAGIC.as_slice()).ok_or(Rejected::Unsigned)?;
    if rest.len() < 96 {
        return Err(Rejected::Unsigned);
    }
    let (pk, rest) = rest.split_at(32);
    let (sig, payload) = rest.split_at(64);
    let signer = trusted.iter().find(|t| t.as_bytes() == pk).ok_or_else(|| Rejected::UntrustedKey(hex::encode(pk)))?;
    let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| Rejected::BadSignature)?;
    signer.verify(&signed_message(key, payload), &sig).map_err(|_| Rejected::BadSignature)?;
    Ok(payload)
}

/// The client. Shared by every worker of a build.
pub struct Remote {
    cfg: RemoteConfig,
    agent: ureq::Agent,
    health: Health,
}

/// How a remote has behaved so far in this build: warnings (each said once), bad
/// answers counted, and whether it is still used. Shared by both transports.
pub(crate) struct Health {
    url: String,
    /// What the server is to this build: "remote cache" or "remote executor".
    role: &'static str,
    /// What happens when it is given up.
    instead: &'static str,
    disabled: AtomicBool,
    bad_answers: std::sync::atomic::AtomicUsize,
    warnings: Mutex<Vec<String>>,
}

impl Health {
    pub(crate) fn new(url: &str) -> Health {
        Health::with_role(url, "remote cache", "building locally")
    }

    pub(crate) fn with_role(url: &str, role: &'static str, instead: &'static str) -> Health {
        Health {
            url: url.to_string(),
            role,
            instead,
            disabled: AtomicBool::new(false),
            bad_answers: std::sync::atomic::AtomicUsize::new(0),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// Notes a bad answer: the first is told in full; after [`MAX_BAD_ANSWERS`] the remote
    /// is switched off with one summary line.
    pub(crate) fn bad_answer(&self, what: String) {
        let n = self.bad_answers.fetch_add(1, Ordering::SeqCst) + 1;
        if n == 1 {
            self.warn(what);
        }
        if n == MAX_BAD_ANSWERS && !self.disabled.swap(true, Ordering::SeqCst) {
            self.warn(format!(
                "{} {} gave {n} bad answers; it is not used for the rest of this build",
                self.role, self.url
            ));
        }
    }

    pub(crate) fn warnings(&self) -> Vec<String> {
        self.warnings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The warnings so far, forgotten, and the remote in use again with no bad answers
    /// counted: for a long-running process (`hb worker`), where one lease's trouble must
    /// not stop the next.
    pub(crate) fn reset(&self) -> Vec<String> {
        self.disabled.store(false, Ordering::SeqCst);
        self.bad_answers.store(0, Ordering::SeqCst);
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn warn(&self, w: String) {
        let mut ws = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
        if !ws.contains(&w) {
            ws.push(w);
        }
    }

    /// Stops using the remote for this build after a transport failure.
    pub(crate) fn give_up(&self, why: impl std::fmt::Display) {
        if !self.disabled.swap(true, Ordering::SeqCst) {
            self.warn(format!("{} {} is unreachable ({why}); {}", self.role, self.url, self.instead));
        }
    }

    /// Stops using the remote for this build, saying why.
    pub(crate) fn disable(&self, why: impl std::fmt::Display) {
        if !self.disabled.swap(true, Ordering::SeqCst) {
            self.warn(format!("{} {}: {why}; {}", self.role, self.url, self.instead));
        }
    }

    pub(crate) fn active(&self) -> bool {
        !self.disabled.load(Ordering::SeqCst)
    }

    /// Why an action-cache entry was not used, as a warning.
    pub(crate) fn rejected(&self, why: Rejected) {
        self.warn(match why {
            Rejected::Unsigned => "remote cache holds unsigned action entries; they are ignored".to_string(),
            Rejected::UntrustedKey(k) => {
                format!("remote cache entries signed by untrusted key {k} are ignored (add it to remote_trusted_keys to use them)")
            }
            Rejected::BadSignature => "remote cache holds action entries with bad signatures; they are ignored".to_string(),
        });
    }
}

enum Fetched {
    Found(Vec<u8>),
    Absent,
}

impl Remote {
    pub fn new(mut cfg: RemoteConfig) -> Remote {
        cfg.url = cfg.url.trim_end_matches('/').to_string();
        if let Some(k) = &cfg.signing_key {
            // A writer trusts its own entries.
            let own = k.verifying_key();
            if !cfg.trusted.contains(&own) {
                cfg.trusted.push(own);
            }
        }
        let t = Some(cfg.response_timeout);
        let config = ureq::Agent::config_builder()
            .timeout_connect(t.map(|t| t.min(Duration::from_secs(3))))
            .timeout_send_request(t)
            .timeout_recv_response(t)
            // A blob may be large; its body has longer, but not forever.
            .timeout_global(Some(cfg.response_timeout.saturating_mul(12)))
            .http_status_as_error(false)
            .build();
        Remote { agent: config.into(), health: Health::new(&cfg.url), cfg }
    }

    /// Problems met so far (each said once).
    pub fn warnings(&self) -> Vec<String> {
        self.health.warnings()
    }

    fn warn(&self, w: String) {
        self.health.warn(w)
    }

    fn bad_answer(&self, w: String) {
        self.health.bad_answer(w)
    }

    fn give_up(&self, why: impl std::fmt::Display) {
        self.health.give_up(why)
    }

    fn active(&self) -> bool {
        self.health.active()
    }

    pub fn writable(&self) -> bool {
        !self.cfg.read_only && self.cfg.token.is_some()
    }

    fn get(&self, path: &str) -> Option<Fetched> {
        if !self.active() {
            return None;
        }
        let url = format!("{}/{path}", self.cfg.url);
        match self.agent.get(&url).call() {
            Ok(mut resp) => match resp.status().as_u16() {
                // Only action entries come this way (blobs stream); they are small.
                200 => match resp.body_mut().with_config().limit(64 << 20).read_to_vec() {
                    Ok(v) => Some(Fetched::Found(v)),
                    Err(e) => {
                        self.give_up(e);
                        None
                    }
                },
                404 => Some(Fetched::Absent),
                code => {
                    self.bad_answer(format!("remote cache answered {code} for GET /{path}"));
                    Some(Fetched::Absent)
                }
            },
            Err(e) => {
                self.give_up(e);
                None
            }
        }
    }

    fn exists(&self, path: &str) -> Option<bool> {
        if !self.active() {
            return None;
        }
        match self.agent.head(format!("{}/{path}", self.cfg.url)).call() {
            Ok(resp) => Some(resp.status().as_u16() == 200),
            Err(e) => {
                self.give_up(e);
                None
            }
        }
    }

    fn put(&self, path: &str, body: &[u8]) -> bool {
        if !self.active() {
            return false;
        }
        let token = self.cfg.token.as_deref().unwrap_or_default();
        let req = self.agent.put(format!("{}/{path}", self.cfg.url)).header("Authorization", format!("Bearer {token}"));
        match req.send(body) {
            Ok(resp) if resp.status().is_success() => true,
            Ok(resp) => {
                let code = resp.status().as_u16();
                let hint = if code == 401 { " (is the write token right?)" } else { "" };
                self.warn(format!("remote cache refused an upload with {code}{hint}"));
                false
            }
            Err(e) => {
                self.give_up(e);
                false
            }
        }
    }

    /// A blob from the remote, streamed into `store` and verified on the way: bytes that
    /// do not hash to `d` never become visible. False when absent or bad.
    fn download_blob(&self, store: &Store, d: &Digest) -> bool {
        if !self.active() {
            return false;
        }
        let url = format!("{}/cas/{}", self.cfg.url, d.hex());
        let mut resp = match self.agent.get(&url).call() {
            Ok(r) if r.status().as_u16() == 200 => r,
            Ok(_) => return false,
            Err(e) => {
                self.give_up(e);
                return false;
            }
        };
        let Ok(mut w) = store.blob_writer() else { return false };
        if let Err(e) = std::io::copy(&mut resp.body_mut().as_reader(), &mut w) {
            self.give_up(e);
            return false;
        }
        let actual = w.digest();
        match w.finish_expecting(d) {
            Ok(Some(_)) => true,
            Ok(None) => {
                self.bad_answer(format!(
                    "remote cache served corrupt bytes for blob {} (they hash to {}); discarded, the action runs locally",
                    d.hex(),
                    actual.hex()
                ));
                false
            }
            Err(_) => false,
        }
    }
}

impl RemoteCache for Remote {
    fn fetch(&self, key: &Digest, store: &Store) -> Option<ActionResult> {
        let result = self.fetch_entry(key, store)?;
        let blobs: Vec<Digest> = result.tree.blobs().copied().collect();
        self.fetch_blobs(&blobs, store).then_some(result)
    }

    fn fetch_entry(&self, key: &Digest, _store: &Store) -> Option<ActionResult> {
        let Fetched::Found(entry) = self.get(&format!("ac/{}", key.hex()))? else { return None };
        let payload = match open_entry(&entry, key, &self.cfg.trusted) {
            Ok(p) => p,
            Err(why) => {
                self.health.rejected(why);
                return None;
            }
        };
        ActionResult::decode(payload)
    }

    fn fetch_blobs(&self, digests: &[Digest], store: &Store) -> bool {
        let missing: Vec<&Digest> = digests.iter().filter(|d| !store.has_blob(d)).collect();
        let ok = missing.par_iter().map(|d| self.download_blob(store, d)).collect::<Vec<bool>>();
        ok.iter().all(|&b| b)
    }

    fn upload(&self, key: &Digest, result: &ActionResult, store: &Store) {
        if !self.writable() || !self.active() {
            return;
        }
        let Some(signer) = &self.cfg.signing_key else {
            self.warn("uploads need a signing key (HB_REMOTE_SIGNING_KEY_FILE); nothing was uploaded".to_string());
            return;
        };
        let blobs: Vec<&Digest> = result.tree.blobs().collect();
        let uploaded = blobs
            .par_iter()
            .map(|d| {
                let path = format!("cas/{}", d.hex());
                match self.exists(&path) {
                    Some(true) => true,
                    Some(false) => store.read_blob(d).is_ok_and(|bytes| self.put(&path, &bytes)),
                    None => false,
                }
            })
            .collect::<Vec<bool>>();
        // The entry goes up only once every blob it names is there.
        if uploaded.iter().all(|&b| b) {
            self.put(&format!("ac/{}", key.hex()), &sign_entry(signer, key, &result.encode()));
        }
    }

    fn warnings(&self) -> Vec<String> {
        Remote::warnings(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_accepted_only_from_trusted_signers() {
        let (seed, public) = generate_key().unwrap();
        let mut s = [0u8; 32];
        hex::decode_to_slice(&seed, &mut s).unwrap();
        let signer = SigningKey::from_bytes(&s);
        let key = Digest::of(b"action");
        let entry = sign_entry(&signer, &key, b"payload");
        let trusted = vec![parse_public_key(&public).unwrap()];
        assert_eq!(open_entry(&entry, &key, &trusted), Ok(&b"payload"[..]));
        // Another action's key, a tampered payload, an untrusted signer, no signature.
        assert_eq!(open_entry(&entry, &Digest::of(b"other"), &trusted), Err(Rejected::BadSignature));
        let mut tampered = entry.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(open_entry(&tampered, &key, &trusted), Err(Rejected::BadSignature));
        let (_, other) = generate_key().unwrap();
        assert!(matches!(
            open_entry(&entry, &key, &[parse_public_key(&other).unwrap()]),
            Err(Rejected::UntrustedKey(_))
        ));
        assert_eq!(open_entry(b"plain bytes", &key, &trusted), Err(Rejected::Unsigned));
    }

    #[test]
    fn an_unreachable_server_is_one_warning() {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let r = Remote::new(RemoteConfig {
            url: format!("http://127.0.0.1:{port}"),
            token: None,
            read_only: true,
            signing_key: None,
            trusted: Vec::new(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            tls: TlsFiles::default(),
        });
        for i in 0..5u8 {
            assert!(r.fetch(&Digest::of(&[i]), &store).is_none());
        }
        assert_eq!(r.warnings().len(), 1, "{:?}", r.warnings());
    }

    /// A server on loopback answering every request with `answer(path)`, or never.
    fn serve(answer: impl Fn(&str) -> Option<Vec<u8>> + Send + 'static) -> String {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let _ = reader.read_line(&mut line);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                match answer(&path) {
                    Some(body) => {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        let _ = conn.write_all(head.as_bytes()).and_then(|_| conn.write_all(&body));
                    }
                    None => held.push(conn), // accepted, never answered
                }
            }
        });
        url
    }

    fn client(url: String, trusted: Vec<VerifyingKey>, timeout: Duration) -> Remote {
        Remote::new(RemoteConfig {
            url,
            token: None,
            read_only: true,
            signing_key: None,
            trusted,
            response_timeout: timeout,
            tls: TlsFiles::default(),
        })
    }

    #[test]
    fn a_server_that_never_answers_costs_one_timeout() {
        let url = serve(|_| None);
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let r = client(url, Vec::new(), Duration::from_millis(500));
        let start = std::time::Instant::now();
        for i in 0..5u8 {
            assert!(r.fetch(&Digest::of(&[i]), &store).is_none());
        }
        assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
        assert_eq!(r.warnings().len(), 1, "{:?}", r.warnings());
    }

    #[test]
    fn a_server_serving_garbage_is_switched_off_with_one_summary() {
        let (seed, public) = generate_key().unwrap();
        let mut s = [0u8; 32];
        hex::decode_to_slice(&seed, &mut s).unwrap();
        let signer = SigningKey::from_bytes(&s);
        // Every action entry is validly signed and names a blob; every blob is garbage.
        let url = serve(move |path| {
            let hex = path.rsplit('/').next().unwrap_or_default().to_string();
            if path.starts_with("/ac/") {
                let key = Digest::from_hex(&hex)?;
                let blob = Digest::of(key.hex().as_bytes());
                let tree = hb_store::Tree::new(vec![hb_store::TreeEntry::file("f", blob, 3, false)]).unwrap();
                let result = ActionResult { tree, ..Default::default() };
                Some(sign_entry(&signer, &key, &result.encode()))
            } else {
                Some(b"garbage".to_vec())
            }
        });
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let r = client(url, vec![parse_public_key(&public).unwrap()], DEFAULT_RESPONSE_TIMEOUT);
        for i in 0..20u8 {
            assert!(r.fetch(&Digest::of(&[i]), &store).is_none());
        }
        let w = r.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("corrupt bytes") && w[1].contains("3 bad answers"), "{w:?}");
        assert!(!r.active());
    }
}
