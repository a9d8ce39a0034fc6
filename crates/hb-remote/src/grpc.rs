//! The REAPI v2 transport (`grpc://host:port[/instance]`, `grpcs://…`): hb's remote
//! cache on the servers teams already run for Bazel, Buck2 and Pants (bazel-remote,
//! Buildbarn, BuildGrid, NativeLink).
//!
//! - **Capabilities first.** The server's `digest_functions` decide the hash: BLAKE3
//!   where offered (then remote digests are hb's own), SHA-256 otherwise. hb's store
//!   stays BLAKE3; every blob that comes back is hashed with the function that named it
//!   *and* with BLAKE3 against the signed entry before it enters the store.
//! - **Action keys** are the digests of a canonical REAPI `Action` whose `Command` is
//!   `hb action <key>` over the empty input root: any two hb clients agree on them.
//! - **Results**: the output tree is one output directory (`out`, a REAPI `Tree` with
//!   executable bits, modes and symlinks); hb's own result (facts, exports, BLAKE3 tree),
//!   signed by the uploader, is a blob named in `execution_metadata.auxiliary_metadata`
//!   and listed as the output file `.hb-entry`, so servers that check an entry's blobs
//!   keep it with the result. Other clients ignore both.
//! - **Blobs** go in `BatchUpdateBlobs`/`BatchReadBlobs` within the server's batch limit,
//!   larger ones through ByteStream, zstd-compressed when the server lists zstd. Outputs
//!   are uploaded before the action result.
//!
//! Failures behave as in the HTTP transport ([`crate::Health`]): the first transport
//! failure switches the remote off for the build with one warning; wrong bytes are
//! discarded and counted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use hb_engine::{ActionResult, RemoteCache};
use hb_reapi::bs::byte_stream_client::ByteStreamClient;
use hb_reapi::bs::{ReadRequest, WriteRequest};
use hb_reapi::re;
use hb_reapi::re::action_cache_client::ActionCacheClient;
use hb_reapi::re::capabilities_client::CapabilitiesClient;
use hb_reapi::re::content_addressable_storage_client::ContentAddressableStorageClient;
use hb_store::tree::EntryKind;
use hb_store::{Digest, Store, Tree};
use prost::Message;
use rayon::prelude::*;
use sha2::Digest as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{Health, RemoteConfig, RemoteError, open_entry, sign_entry};

/// The `type_url` of the auxiliary metadata naming hb's signed entry (its value is a
/// REAPI `Digest`).
const ENTRY_TYPE_URL: &str = "hb.signed-entry/build.bazel.remote.execution.v2.Digest";
/// The output file listing the signed entry, so a server's blob check covers it.
const ENTRY_PATH: &str = ".hb-entry";
/// The output directory holding the action's tree.
const OUT_DIR: &str = "out";
/// gRPC's usual message limit; batches stay below it whatever the server says.
const GRPC_MESSAGE_LIMIT: usize = 4 << 20;
/// Room left in a batch for the per-blob framing (digest, status).
const BATCH_OVERHEAD: usize = 256 << 10;
const MAX_BLOBS_PER_BATCH: usize = 1000;
/// ByteStream messages carry this much each.
const CHUNK: usize = 1 << 20;
/// Digests per FindMissingBlobs request.
const FIND_MISSING_CHUNK: usize = 5000;

/// The hash a server names blobs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFn {
    Sha256,
    Blake3,
}

impl HashFn {
    pub(crate) fn value(self) -> i32 {
        match self {
            HashFn::Sha256 => re::digest_function::Value::Sha256 as i32,
            HashFn::Blake3 => re::digest_function::Value::Blake3 as i32,
        }
    }

    pub(crate) fn hasher(self) -> Hasher {
        match self {
            HashFn::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashFn::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub(crate) fn of(self, bytes: &[u8]) -> re::Digest {
        let mut h = self.hasher();
        h.update(bytes);
        h.finish(bytes.len() as u64)
    }
}

pub(crate) enum Hasher {
    Sha256(sha2::Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub(crate) fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Blake3(h) => {
                h.update(b);
            }
        }
    }
    pub(crate) fn finish(self, size: u64) -> re::Digest {
        let hash = match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        };
        re::Digest { hash, size_bytes: i64::try_from(size).unwrap_or(i64::MAX) }
    }
}

/// What the server offers, as hb uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub hash: HashFn,
    /// Most payload bytes per batch request.
    pub max_batch: usize,
    /// ByteStream transfers are zstd-compressed.
    pub zstd: bool,
    /// The server accepts action-cache updates from clients.
    pub ac_updates: bool,
}

/// Picks what to use from a `GetCapabilities` answer: BLAKE3 where offered, else
/// SHA-256 (also when the list is empty, as servers older than REAPI 2.1 answer), else
/// nothing hb can use.
pub fn negotiate(caps: &re::ServerCapabilities) -> Result<Negotiated, String> {
    let cache = caps.cache_capabilities.clone().unwrap_or_default();
    let offered = &cache.digest_functions;
    let hash = if offered.contains(&(re::digest_function::Value::Blake3 as i32)) {
        HashFn::Blake3
    } else if offered.is_empty() || offered.contains(&(re::digest_function::Value::Sha256 as i32)) {
        HashFn::Sha256
    } else {
        let names: Vec<String> = offered
            .iter()
            .map(|v| re::digest_function::Value::try_from(*v).map_or(v.to_string(), |v| v.as_str_name().to_string()))
            .collect();
        return Err(format!("it offers only the digest functions {}; hb needs BLAKE3 or SHA256", names.join(", ")));
    };
    let server_max = usize::try_from(cache.max_batch_total_size_bytes).unwrap_or(0);
    let limit = if server_max == 0 { GRPC_MESSAGE_LIMIT } else { server_max.min(GRPC_MESSAGE_LIMIT) };
    let zstd = cache.supported_compressors.contains(&(re::compressor::Value::Zstd as i32));
    let ac_updates = cache.action_cache_update_capabilities.is_some_and(|c| c.update_enabled);
    Ok(Negotiated { hash, max_batch: limit.saturating_sub(BATCH_OVERHEAD).max(64 << 10), zstd, ac_updates })
}

/// Where a `grpc://` or `grpcs://` URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// `host:port`.
    pub authority: String,
    pub instance: String,
}

/// Parses `grpc://HOST:PORT[/INSTANCE]` (`grpcs://` for TLS; its port defaults to 443).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("grpcs://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("grpc://") {
        (false, r)
    } else {
        return Err("expected grpc://HOST:PORT[/INSTANCE] or grpcs://HOST[:PORT][/INSTANCE]".into());
    };
    let (authority, instance) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err(format!("`{authority}` is not HOST:PORT"));
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && !p.contains(']'));
    let authority = match (has_port, tls) {
        (true, _) => authority.to_string(),
        (false, true) => format!("{authority}:443"),
        (false, false) => return Err(format!("`{authority}` has no port: write grpc://{authority}:PORT")),
    };
    let instance = instance.trim_end_matches('/').to_string();
    if instance.split('/').any(|c| matches!(c, "blobs" | "uploads" | "compressed-blobs" | "actions" | "operations")) {
        return Err(format!("instance name `{instance}` uses a name REAPI reserves"));
    }
    Ok(Target { tls, authority, instance })
}

/// Why a request came to nothing.
pub(crate) enum Fail {
    /// The server cannot be reached: stop using it.
    Gone(String),
    /// The server answered wrongly (bad bytes, refused request).
    Bad(String),
    /// Not there.
    Absent,
}

pub(crate) fn status_fail(what: &str, s: tonic::Status) -> Fail {
    use tonic::Code;
    // Transport errors say only "transport error"; their causes say what happened.
    let mut message = s.message().to_string();
    let mut cause = std::error::Error::source(&s);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        cause = c.source();
    }
    let s = tonic::Status::new(s.code(), message);
    match s.code() {
        Code::NotFound => Fail::Absent,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Aborted => {
            Fail::Gone(format!("{what}: {}", s.message()))
        }
        Code::Unauthenticated | Code::PermissionDenied => Fail::Bad(format!(
            "the server refused {what} ({}: {}); is the token right?",
            s.code().description(),
            s.message()
        )),
        _ => Fail::Bad(format!("the server failed {what} ({}: {})", s.code().description(), s.message())),
    }
}

/// The REAPI client. Shared by every worker of a build; each call blocks its worker
/// thread on a small private tokio runtime.
pub struct Grpc {
    pub(crate) cfg: RemoteConfig,
    pub(crate) target: Target,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) channel: Channel,
    /// Known once the server has answered GetCapabilities (a failure is not kept: a
    /// long-running worker asks again).
    negotiated: Mutex<Option<Negotiated>>,
    pub(crate) health: Health,
    /// hb's BLAKE3 → the server's digest, for blobs hashed in this build.
    mapped: Mutex<BTreeMap<Digest, re::Digest>>,
}

impl Grpc {
    pub fn new(cfg: RemoteConfig) -> Result<Grpc, RemoteError> {
        Grpc::with_health(cfg, Health::new)
    }

    /// A client whose warnings name it by `health`'s role.
    pub(crate) fn with_health(mut cfg: RemoteConfig, health: impl Fn(&str) -> Health) -> Result<Grpc, RemoteError> {
        let bad = |why: String| RemoteError::Key { what: format!("remote {}", cfg.url), why };
        let target = parse_url(&cfg.url).map_err(bad)?;
        if let Some(k) = &cfg.signing_key {
            let own = k.verifying_key();
            if !cfg.trusted.contains(&own) {
                cfg.trusted.push(own);
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hb-grpc")
            .on_thread_start(block_sigpipe)
            .enable_all()
            .build()
            .map_err(|e| bad(format!("cannot start the gRPC runtime: {e}")))?;
        let scheme = if target.tls { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.authority))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(cfg.response_timeout.min(Duration::from_secs(3)))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        if target.tls {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(ca) = &cfg.tls.ca {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &cfg.tls.client {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(format!("TLS settings: {e}")))?;
        }
        let channel = {
            let _guard = rt.enter();
            endpoint.connect_lazy()
        };
        Ok(Grpc {
            health: health(&cfg.url),
            cfg,
            target,
            rt,
            channel,
            negotiated: Mutex::new(None),
            mapped: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn warnings(&self) -> Vec<String> {
        self.health.warnings()
    }

    /// What was negotiated with the server (asks it on first use); `None` once the
    /// remote is off.
    pub fn negotiated(&self) -> Option<Negotiated> {
        if !self.health.active() {
            return None;
        }
        if let Some(n) = self.negotiated.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(n);
        }
        let mut client = CapabilitiesClient::new(self.channel.clone());
        let req = self.request(re::GetCapabilitiesRequest { instance_name: self.target.instance.clone() });
        let n = match self.rt.block_on(client.get_capabilities(req)) {
            Ok(caps) => match negotiate(caps.get_ref()) {
                Ok(n) => {
                    if self.writable() && !n.ac_updates {
                        self.health.warn(format!(
                            "remote cache {} does not accept action-cache updates from clients; nothing will be uploaded",
                            self.cfg.url
                        ));
                    }
                    n
                }
                Err(why) => {
                    self.health.give_up(why);
                    return None;
                }
            },
            Err(s) => {
                self.fail(status_fail("GetCapabilities", s));
                self.health.give_up("no answer to GetCapabilities");
                return None;
            }
        };
        *self.negotiated.lock().unwrap_or_else(|p| p.into_inner()) = Some(n.clone());
        self.health.active().then_some(n)
    }

    pub(crate) fn writable(&self) -> bool {
        !self.cfg.read_only && self.cfg.signing_key.is_some()
    }

    pub(crate) fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.cfg.response_timeout);
        if let Some(token) = &self.cfg.token
            && let Ok(v) = format!("Bearer {token}").parse()
        {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }

    pub(crate) fn fail(&self, f: Fail) {
        match f {
            Fail::Gone(why) => self.health.give_up(why),
            Fail::Bad(why) => self.health.bad_answer(why),
            Fail::Absent => {}
        }
    }

    pub(crate) fn prefix(&self) -> String {
        if self.target.instance.is_empty() { String::new() } else { format!("{}/", self.target.instance) }
    }

    /// The ByteStream path of a blob: `blobs/[blake3/]HASH/SIZE`, or its zstd form.
    pub(crate) fn blob_resource(&self, n: &Negotiated, d: &re::Digest) -> String {
        let function = if n.hash == HashFn::Blake3 { "blake3/" } else { "" };
        let kind = if n.zstd { "compressed-blobs/zstd" } else { "blobs" };
        format!("{kind}/{function}{}/{}", d.hash, d.size_bytes)
    }

    /// The action digest hb's `key` has on this server.
    pub fn action_digest(hash: HashFn, key: &Digest) -> (re::Digest, Vec<(re::Digest, Vec<u8>)>) {
        let command = re::Command { arguments: vec!["hb".into(), "action".into(), key.hex()], ..Default::default() };
        let command_bytes = command.encode_to_vec();
        let empty_dir = re::Directory::default().encode_to_vec();
        let action = re::Action {
            command_digest: Some(hash.of(&command_bytes)),
            input_root_digest: Some(hash.of(&empty_dir)),
            ..Default::default()
        };
        let action_bytes = action.encode_to_vec();
        let digest = hash.of(&action_bytes);
        (digest.clone(), vec![(hash.of(&command_bytes), command_bytes), (digest, action_bytes)])
    }

    /// The server's digest of a local blob (hashing it once per build for SHA-256).
    pub(crate) fn local_digest(&self, n: &Negotiated, store: &Store, d: &Digest, size: u64) -> Option<re::Digest> {
        if n.hash == HashFn::Blake3 {
            return Some(re::Digest { hash: d.hex(), size_bytes: i64::try_from(size).ok()? });
        }
        if let Some(m) = self.mapped.lock().unwrap_or_else(|p| p.into_inner()).get(d) {
            return Some(m.clone());
        }
        let mut r = store.open_blob(d).ok()?;
        let mut h = n.hash.hasher();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let k = r.read(&mut buf).ok()?;
            if k == 0 {
                break;
            }
            h.update(buf.get(..k)?);
            total += k as u64;
        }
        let rd = h.finish(total);
        self.mapped.lock().unwrap_or_else(|p| p.into_inner()).insert(*d, rd.clone());
        Some(rd)
    }

    /// Reads blobs into memory, each checked against its digest: one batch when they
    /// fit, else one by one (ByteStream for the large).
    pub(crate) fn read_verified(&self, n: &Negotiated, ds: &[re::Digest]) -> Result<Vec<Vec<u8>>, Fail> {
        let total: usize =
            ds.iter().map(|d| usize::try_from(d.size_bytes).unwrap_or(usize::MAX)).fold(0, usize::saturating_add);
        let got: Vec<Vec<u8>> = if total <= n.max_batch {
            self.batch_read(n, ds)?.into_iter().map(|(_, b)| b).collect()
        } else {
            let mut all = Vec::new();
            for d in ds {
                let size = usize::try_from(d.size_bytes).map_err(|_| Fail::Bad("negative blob size".into()))?;
                if size <= n.max_batch {
                    all.extend(self.batch_read(n, std::slice::from_ref(d))?.into_iter().map(|(_, b)| b));
                } else {
                    let mut v = Vec::new();
                    self.stream_read(n, d, &mut v)?;
                    all.push(v);
                }
            }
            all
        };
        for (d, bytes) in ds.iter().zip(&got) {
            let actual = n.hash.of(bytes);
            if actual != *d {
                return Err(Fail::Bad(format!(
                    "remote cache served corrupt bytes for blob {} (they hash to {}); discarded, the action runs locally",
                    d.hash, actual.hash
                )));
            }
        }
        Ok(got)
    }

    /// `BatchReadBlobs`: every blob of `ds`, in order, unverified.
    pub(crate) fn batch_read(&self, n: &Negotiated, ds: &[re::Digest]) -> Result<Vec<(re::Digest, Vec<u8>)>, Fail> {
        let mut client = ContentAddressableStorageClient::new(self.channel.clone())
            .max_decoding_message_size(GRPC_MESSAGE_LIMIT * 2);
        let req = self.request(re::BatchReadBlobsRequest {
            instance_name: self.target.instance.clone(),
            digests: ds.to_vec(),
            acceptable_compressors: Vec::new(),
            digest_function: n.hash.value(),
        });
        let resp = self.rt.block_on(client.batch_read_blobs(req)).map_err(|s| status_fail("BatchReadBlobs", s))?;
        let mut by_hash: BTreeMap<(String, i64), Vec<u8>> = BTreeMap::new();
        for r in resp.into_inner().responses {
            let code = r.status.as_ref().map_or(0, |s| s.code);
            let Some(d) = r.digest else { continue };
            match code {
                0 => {
                    by_hash.insert((d.hash, d.size_bytes), r.data);
                }
                5 => return Err(Fail::Absent), // NOT_FOUND
                _ => {
                    let msg = r.status.map(|s| s.message).unwrap_or_default();
                    return Err(Fail::Bad(format!("remote cache could not read blob {} ({code}: {msg})", d.hash)));
                }
            }
        }
        ds.iter()
            .map(|d| by_hash.get(&(d.hash.clone(), d.size_bytes)).map(|b| (d.clone(), b.clone())).ok_or(Fail::Absent))
            .collect()
    }

    /// ByteStream `Read` of a blob into `out` (decompressed), unverified.
    pub(crate) fn stream_read(&self, n: &Negotiated, d: &re::Digest, out: &mut dyn Write) -> Result<(), Fail> {
        let mut client = ByteStreamClient::new(self.channel.clone());
        let mut req = self.request(ReadRequest {
            resource_name: format!("{}{}", self.prefix(), self.blob_resource(n, d)),
            read_offset: 0,
            read_limit: 0,
        });
        req.set_timeout(self.cfg.response_timeout.saturating_mul(12));
        let io = |e: std::io::Error| Fail::Bad(format!("reading blob {}: {e}", d.hash));
        // A server sending more than the digest's size is cut off there.
        let mut out = Capped { inner: out, left: u64::try_from(d.size_bytes).unwrap_or(0) };
        let out = &mut out;
        self.rt.block_on(async {
            let mut stream = client.read(req).await.map_err(|s| status_fail("ByteStream Read", s))?.into_inner();
            if n.zstd {
                let mut dec = zstd::stream::write::Decoder::new(out).map_err(io)?;
                while let Some(msg) = stream.message().await.map_err(|s| status_fail("ByteStream Read", s))? {
                    dec.write_all(&msg.data).map_err(io)?;
                }
                dec.flush().map_err(io)?;
            } else {
                while let Some(msg) = stream.message().await.map_err(|s| status_fail("ByteStream Read", s))? {
                    out.write_all(&msg.data).map_err(io)?;
                }
            }
            Ok(())
        })
    }

    /// Downloads `(server digest, hb digest)` pairs into the store, each checked with
    /// both hashes. False if any is absent or wrong.
    fn download(&self, n: &Negotiated, store: &Store, wanted: Vec<(re::Digest, Digest)>) -> bool {
        let (batches, large) = batches(wanted, n.max_batch);
        let ok_small = batches.par_iter().map(|b| self.download_batch(n, store, b)).all(|ok| ok);
        ok_small && large.par_iter().map(|(rd, d)| self.download_stream(n, store, rd, d)).all(|ok| ok)
    }

    fn download_batch(&self, n: &Negotiated, store: &Store, items: &[(re::Digest, Digest)]) -> bool {
        if !self.health.active() {
            return false;
        }
        let ds: Vec<re::Digest> = items.iter().map(|(rd, _)| rd.clone()).collect();
        let got = match self.batch_read(n, &ds) {
            Ok(g) => g,
            Err(f) => {
                self.fail(f);
                return false;
            }
        };
        got.iter().zip(items).all(|((_, bytes), (rd, d))| self.accept(n, store, rd, d, bytes))
    }

    /// Stores `bytes` if they hash to both names.
    fn accept(&self, n: &Negotiated, store: &Store, rd: &re::Digest, d: &Digest, bytes: &[u8]) -> bool {
        let actual = n.hash.of(bytes);
        if actual != *rd {
            self.corrupt(rd, &actual);
            return false;
        }
        if Digest::of(bytes) != *d {
            self.health.bad_answer(format!(
                "remote cache's blob {} is not the file hb's signed entry names ({}); discarded, the action runs locally",
                rd.hash,
                d.hex()
            ));
            return false;
        }
        store.put_bytes(bytes).is_ok()
    }

    fn corrupt(&self, rd: &re::Digest, actual: &re::Digest) {
        self.health.bad_answer(format!(
            "remote cache served corrupt bytes for blob {} (they hash to {}); discarded, the action runs locally",
            rd.hash, actual.hash
        ));
    }

    fn download_stream(&self, n: &Negotiated, store: &Store, rd: &re::Digest, d: &Digest) -> bool {
        if !self.health.active() {
            return false;
        }
        let Ok(w) = store.blob_writer() else { return false };
        let mut tee = Tee { hasher: n.hash.hasher(), size: 0, inner: w };
        if let Err(f) = self.stream_read(n, rd, &mut tee) {
            self.fail(f);
            return false;
        }
        let Tee { hasher, size, inner } = tee;
        let actual = hasher.finish(size);
        if actual != *rd {
            self.corrupt(rd, &actual);
            return false;
        }
        match inner.finish_expecting(d) {
            Ok(Some(_)) => true,
            Ok(None) => {
                self.health.bad_answer(format!(
                    "remote cache's blob {} is not the file hb's signed entry names ({}); discarded, the action runs locally",
                    rd.hash,
                    d.hex()
                ));
                false
            }
            Err(_) => false,
        }
    }

    /// The blobs of `all` the server lacks.
    pub(crate) fn find_missing(&self, n: &Negotiated, all: &[re::Digest]) -> Result<Vec<re::Digest>, Fail> {
        let mut missing = Vec::new();
        for chunk in all.chunks(FIND_MISSING_CHUNK) {
            let mut client = ContentAddressableStorageClient::new(self.channel.clone());
            let req = self.request(re::FindMissingBlobsRequest {
                instance_name: self.target.instance.clone(),
                blob_digests: chunk.to_vec(),
                digest_function: n.hash.value(),
            });
            let resp =
                self.rt.block_on(client.find_missing_blobs(req)).map_err(|s| status_fail("FindMissingBlobs", s))?;
            missing.extend(resp.into_inner().missing_blob_digests);
        }
        Ok(missing)
    }

    /// Uploads the blobs of `blobs` (by server hash and size) the server lacks.
    pub(crate) fn upload_missing(
        &self,
        n: &Negotiated,
        mut blobs: BTreeMap<(String, i64), Source<'_>>,
    ) -> Result<bool, Fail> {
        let all: Vec<re::Digest> =
            blobs.keys().map(|(hash, size_bytes)| re::Digest { hash: hash.clone(), size_bytes: *size_bytes }).collect();
        let missing = self.find_missing(n, &all)?;
        let to_send: Vec<(re::Digest, Source<'_>)> = missing
            .into_iter()
            .filter_map(|d| {
                let src = blobs.remove(&(d.hash.clone(), d.size_bytes))?;
                Some((d, src))
            })
            .collect();
        Ok(self.upload_blobs(n, to_send))
    }

    /// Uploads blobs from their sources, small ones batched.
    pub(crate) fn upload_blobs(&self, n: &Negotiated, blobs: Vec<(re::Digest, Source<'_>)>) -> bool {
        let (batches, large) = batches(blobs, n.max_batch);
        let ok_small = batches.par_iter().map(|b| self.upload_batch(n, b)).all(|ok| ok);
        ok_small && large.par_iter().map(|(rd, src)| self.upload_stream(n, rd, src)).all(|ok| ok)
    }

    fn upload_batch(&self, n: &Negotiated, items: &[(re::Digest, Source<'_>)]) -> bool {
        if !self.health.active() {
            return false;
        }
        let mut requests = Vec::with_capacity(items.len());
        for (rd, src) in items {
            let Some(data) = src.bytes() else { return false };
            requests.push(re::batch_update_blobs_request::Request { digest: Some(rd.clone()), data, compressor: 0 });
        }
        let mut client = ContentAddressableStorageClient::new(self.channel.clone())
            .max_encoding_message_size(GRPC_MESSAGE_LIMIT * 2);
        let req = self.request(re::BatchUpdateBlobsRequest {
            instance_name: self.target.instance.clone(),
            requests,
            digest_function: n.hash.value(),
        });
        match self.rt.block_on(client.batch_update_blobs(req)) {
            Ok(resp) => {
                for r in resp.into_inner().responses {
                    if let Some(s) = r.status
                        && s.code != 0
                    {
                        self.health.bad_answer(format!(
                            "remote cache refused blob {} ({}: {})",
                            r.digest.map(|d| d.hash).unwrap_or_default(),
                            s.code,
                            s.message
                        ));
                        return false;
                    }
                }
                true
            }
            Err(s) => {
                self.fail(status_fail("BatchUpdateBlobs", s));
                false
            }
        }
    }

    fn upload_stream(&self, n: &Negotiated, rd: &re::Digest, src: &Source<'_>) -> bool {
        if !self.health.active() {
            return false;
        }
        let Some(mut reader) = src.reader() else { return false };
        let mut uuid = [0u8; 16];
        if getrandom::fill(&mut uuid).is_err() {
            return false;
        }
        // A UUID's layout (version 4) for servers that parse it.
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let h = hex::encode(uuid);
        let uuid = format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
        let resource = format!("{}uploads/{uuid}/{}", self.prefix(), self.blob_resource(n, rd));
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
        let mut client = ByteStreamClient::new(self.channel.clone()).max_encoding_message_size(CHUNK * 2);
        let mut req = self.request(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.set_timeout(self.cfg.response_timeout.saturating_mul(12));
        let call = self.rt.spawn(async move { client.write(req).await });
        // This thread reads (and compresses) while the runtime sends.
        let sent = (|| -> Option<()> {
            let mut offset = 0i64;
            let mut first = true;
            let mut send = |data: Vec<u8>, last: bool| -> Option<()> {
                let len = i64::try_from(data.len()).ok()?;
                let msg = WriteRequest {
                    resource_name: if first { resource.clone() } else { String::new() },
                    write_offset: offset,
                    finish_write: last,
                    data,
                };
                first = false;
                offset += len;
                tx.blocking_send(msg).ok()
            };
            let mut buf = vec![0u8; CHUNK];
            if n.zstd {
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).ok()?;
                loop {
                    let k = reader.read(&mut buf).ok()?;
                    if k == 0 {
                        break;
                    }
                    enc.write_all(buf.get(..k)?).ok()?;
                    if enc.get_ref().len() >= CHUNK {
                        let out = std::mem::take(enc.get_mut());
                        send(out, false)?;
                    }
                }
                let rest = enc.finish().ok()?;
                send(rest, true)
            } else {
                let mut pending: Option<Vec<u8>> = None;
                loop {
                    let k = reader.read(&mut buf).ok()?;
                    if k == 0 {
                        break;
                    }
                    if let Some(p) = pending.take() {
                        send(p, false)?;
                    }
                    pending = Some(buf.get(..k)?.to_vec());
                }
                send(pending.unwrap_or_default(), true)
            }
        })();
        drop(tx);
        let result = self.rt.block_on(call);
        match result {
            Ok(Ok(_)) if sent.is_some() => true,
            Ok(Ok(_)) => false,
            Ok(Err(s)) => {
                // A server that already has the blob may end the stream early.
                if s.code() == tonic::Code::AlreadyExists {
                    return true;
                }
                self.fail(status_fail("ByteStream Write", s));
                false
            }
            Err(e) => {
                self.health.give_up(e);
                false
            }
        }
    }
}

/// Splits blobs into batches of at most `max` bytes (and [`MAX_BLOBS_PER_BATCH`]
/// blobs) and the ones larger than half a batch, which go through ByteStream.
#[allow(clippy::type_complexity)]
fn batches<T>(items: Vec<(re::Digest, T)>, max: usize) -> (Vec<Vec<(re::Digest, T)>>, Vec<(re::Digest, T)>) {
    let (small, large): (Vec<_>, Vec<_>) =
        items.into_iter().partition(|(rd, _)| usize::try_from(rd.size_bytes).is_ok_and(|s| s <= max / 2));
    let mut out: Vec<Vec<(re::Digest, T)>> = Vec::new();
    let mut current: Vec<(re::Digest, T)> = Vec::new();
    let mut bytes = 0usize;
    for item in small {
        let s = usize::try_from(item.0.size_bytes).unwrap_or(0);
        if !current.is_empty() && (bytes + s > max || current.len() >= MAX_BLOBS_PER_BATCH) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += s;
        current.push(item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    (out, large)
}

/// The CLI restores SIGPIPE's default (death) for `hb … | head`, but the runtime's
/// threads write to sockets with `writev`, which raises SIGPIPE when a server closes the
/// connection (a TLS handshake refused, a server killed): blocked in these threads, the
/// write fails with EPIPE instead and the remote is given up with one warning.
fn block_sigpipe() {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only
    // changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Where an upload's bytes come from.
pub(crate) enum Source<'a> {
    Memory(Vec<u8>),
    Store(&'a Store, Digest),
}

impl Source<'_> {
    fn bytes(&self) -> Option<Vec<u8>> {
        match self {
            Source::Memory(v) => Some(v.clone()),
            Source::Store(s, d) => s.read_blob(d).ok(),
        }
    }
    fn reader(&self) -> Option<Box<dyn Read + '_>> {
        match self {
            Source::Memory(v) => Some(Box::new(v.as_slice())),
            Source::Store(s, d) => s.open_blob(d).ok().map(|r| Box::new(r) as Box<dyn Read>),
        }
    }
}

/// A writer refusing bytes past `left`.
struct Capped<'a> {
    inner: &'a mut dyn Write,
    left: u64,
}

impl Write for Capped<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other("the server sent more bytes than the blob's size"));
        }
        let k = self.inner.write(buf)?;
        self.left -= k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes what passes through on its way to the store.
pub(crate) struct Tee {
    pub(crate) hasher: Hasher,
    pub(crate) size: u64,
    pub(crate) inner: hb_store::BlobWriter,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(buf.get(..k).unwrap_or_default());
        self.size += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The REAPI `Tree` of an hb tree: one `Directory` per directory, files with their
/// server digests, executable bits and modes, symlinks. Canonical: entries sorted by
/// name, children in path order without repeats, so two clients agree on its digest.
/// `mtime_of` gives a file's modification time by path, if it is to travel.
pub fn reapi_tree(
    tree: &Tree,
    hash: HashFn,
    digest_of: &dyn Fn(&Digest, u64) -> Option<re::Digest>,
    mtime_of: &dyn Fn(&str) -> Option<u64>,
) -> Option<re::Tree> {
    #[derive(Default)]
    struct Dir {
        files: Vec<re::FileNode>,
        dirs: Vec<String>,
        symlinks: Vec<re::SymlinkNode>,
        mode: Option<u32>,
    }
    let mut dirs: BTreeMap<String, Dir> = BTreeMap::new();
    dirs.insert(String::new(), Dir::default());
    fn ensure(dirs: &mut BTreeMap<String, Dir>, path: &str) {
        if dirs.contains_key(path) {
            return;
        }
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        ensure(dirs, parent);
        if let Some(p) = dirs.get_mut(parent) {
            p.dirs.push(name.to_string());
        }
        dirs.insert(path.to_string(), Dir::default());
    }
    let props = |mode: u32| re::NodeProperties { unix_mode: Some(mode), ..Default::default() };
    for e in tree.entries() {
        let (parent, name) = e.path.rsplit_once('/').unwrap_or(("", e.path.as_str()));
        ensure(&mut dirs, parent);
        match &e.kind {
            EntryKind::Dir => {
                ensure(&mut dirs, &e.path);
                if let Some(d) = dirs.get_mut(&e.path) {
                    d.mode = Some(e.mode);
                }
            }
            EntryKind::File { digest, size } => {
                let mut properties = props(e.mode);
                properties.mtime = mtime_of(&e.path)
                    .map(|t| prost_types::Timestamp { seconds: i64::try_from(t).unwrap_or(i64::MAX), nanos: 0 });
                let node = re::FileNode {
                    name: name.to_string(),
                    digest: Some(digest_of(digest, *size)?),
                    is_executable: e.mode & 0o111 != 0,
                    node_properties: Some(properties),
                };
                dirs.get_mut(parent)?.files.push(node);
            }
            EntryKind::Symlink { target } => {
                let node = re::SymlinkNode { name: name.to_string(), target: target.clone(), node_properties: None };
                dirs.get_mut(parent)?.symlinks.push(node);
            }
        }
    }
    // Children before parents: deepest paths first.
    let mut order: Vec<&String> = dirs.keys().collect();
    order.sort_by_key(|p| std::cmp::Reverse(if p.is_empty() { 0 } else { p.split('/').count() }));
    let mut built: BTreeMap<String, (re::Directory, Vec<u8>)> = BTreeMap::new();
    for path in order {
        let d = dirs.get(path)?;
        let mut out = re::Directory {
            files: d.files.clone(),
            symlinks: d.symlinks.clone(),
            node_properties: d.mode.map(props),
            ..Default::default()
        };
        let mut names = d.dirs.clone();
        names.sort();
        names.dedup();
        for name in names {
            let child = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
            let (_, bytes) = built.get(&child)?;
            out.directories.push(re::DirectoryNode { name, digest: Some(hash.of(bytes)) });
        }
        out.files.sort_by(|a, b| a.name.cmp(&b.name));
        out.symlinks.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = out.encode_to_vec();
        built.insert(path.clone(), (out, bytes));
    }
    let (root, _) = built.remove("")?;
    // Children in path order, each distinct directory once.
    let mut seen = std::collections::BTreeSet::new();
    let mut children = Vec::new();
    let mut paths: Vec<&String> = built.keys().collect();
    paths.sort_by(|a, b| hb_store::tree::path_order(a, b));
    for p in paths {
        let (dir, bytes) = built.get(p)?;
        if seen.insert(bytes.clone()) {
            children.push(dir.clone());
        }
    }
    Some(re::Tree { root: Some(root), children })
}

/// The server digest of each file of a REAPI tree, by path. Walks at most `limit`
/// entries (a hostile tree cannot make hb walk forever).
fn file_digests(tree: &re::Tree, hash: HashFn, limit: usize) -> Option<BTreeMap<String, re::Digest>> {
    let mut by_digest: BTreeMap<String, &re::Directory> = BTreeMap::new();
    for c in &tree.children {
        by_digest.insert(hash.of(&c.encode_to_vec()).hash, c);
    }
    let mut out = BTreeMap::new();
    let mut stack: Vec<(String, &re::Directory)> = vec![(String::new(), tree.root.as_ref()?)];
    let mut walked = 0usize;
    while let Some((prefix, dir)) = stack.pop() {
        for f in &dir.files {
            walked += 1;
            if walked > limit {
                return None;
            }
            out.insert(format!("{prefix}{}", f.name), f.digest.clone()?);
        }
        for d in &dir.directories {
            walked += 1;
            if walked > limit {
                return None;
            }
            let child = by_digest.get(&d.digest.as_ref()?.hash)?;
            stack.push((format!("{prefix}{}/", d.name), child));
        }
    }
    Some(out)
}

impl RemoteCache for Grpc {
    fn fetch(&self, key: &Digest, store: &Store) -> Option<ActionResult> {
        let n = self.negotiated()?;
        let (action, _) = Grpc::action_digest(n.hash, key);
        let mut client = ActionCacheClient::new(self.channel.clone());
        let req = self.request(re::GetActionResultRequest {
            instance_name: self.target.instance.clone(),
            action_digest: Some(action),
            inline_stdout: false,
            inline_stderr: false,
            inline_output_files: Vec::new(),
            digest_function: n.hash.value(),
        });
        let ar = match self.rt.block_on(client.get_action_result(req)) {
            Ok(r) => r.into_inner(),
            Err(s) => {
                self.fail(status_fail("GetActionResult", s));
                return None;
            }
        };
        // hb's signed entry, and the server's tree of the outputs, in one request.
        let entry_digest = ar
            .execution_metadata
            .as_ref()?
            .auxiliary_metadata
            .iter()
            .find(|a| a.type_url == ENTRY_TYPE_URL)
            .and_then(|a| re::Digest::decode(a.value.as_slice()).ok())?;
        let tree_digest = ar.output_directories.iter().find(|d| d.path == OUT_DIR)?.tree_digest.clone()?;
        let mut both = self.read_verified(&n, &[entry_digest, tree_digest.clone()]).map_err(|f| self.fail(f)).ok()?;
        let tree_bytes = both.pop()?;
        let entry = both.pop()?;
        let payload = match open_entry(&entry, key, &self.cfg.trusted) {
            Ok(p) => p,
            Err(why) => {
                self.health.rejected(why);
                return None;
            }
        };
        let result = ActionResult::decode(payload)?;
        let missing: Vec<(String, Digest)> = result
            .tree
            .entries()
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::File { digest, .. } if !store.has_blob(digest) => Some((e.path.clone(), *digest)),
                _ => None,
            })
            .collect();
        if missing.is_empty() {
            return Some(result);
        }
        // Where the server keeps those files: its tree of the output directory.
        let Ok(tree) = re::Tree::decode(tree_bytes.as_slice()) else {
            self.health.bad_answer(format!("remote cache served an unreadable Tree {}", tree_digest.hash));
            return None;
        };
        let limit = result.tree.entries().len() * 2 + 16;
        let Some(paths) = file_digests(&tree, n.hash, limit) else {
            self.health.bad_answer(format!("remote cache's Tree {} does not match hb's entry", tree_digest.hash));
            return None;
        };
        let mut wanted: Vec<(re::Digest, Digest)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (path, d) in missing {
            let Some(rd) = paths.get(&path) else {
                self.health.bad_answer(format!("remote cache's Tree {} lacks {path}", tree_digest.hash));
                return None;
            };
            if seen.insert(d) {
                wanted.push((rd.clone(), d));
            }
        }
        self.download(&n, store, wanted).then_some(result)
    }

    fn upload(&self, key: &Digest, result: &ActionResult, store: &Store) {
        if !self.writable() {
            return;
        }
        let Some(n) = self.negotiated() else { return };
        if !n.ac_updates {
            return;
        }
        let Some(signer) = &self.cfg.signing_key else { return };
        let digest_of = |d: &Digest, size: u64| self.local_digest(&n, store, d, size);
        let Some(tree) = reapi_tree(&result.tree, n.hash, &digest_of, &|_| None) else {
            self.health.warn(format!("could not read the outputs of action {} to upload them", key.hex()));
            return;
        };
        let tree_bytes = tree.encode_to_vec();
        let tree_digest = n.hash.of(&tree_bytes);
        let entry = sign_entry(signer, key, &result.encode());
        let entry_digest = n.hash.of(&entry);
        let (action, extra) = Grpc::action_digest(n.hash, key);

        // Every blob the result names, then the result.
        let mut blobs: BTreeMap<(String, i64), Source<'_>> = BTreeMap::new();
        for e in result.tree.entries() {
            if let EntryKind::File { digest, size } = &e.kind
                && let Some(rd) = digest_of(digest, *size)
            {
                blobs.entry((rd.hash, rd.size_bytes)).or_insert(Source::Store(store, *digest));
            }
        }
        blobs.insert((tree_digest.hash.clone(), tree_digest.size_bytes), Source::Memory(tree_bytes));
        blobs.insert((entry_digest.hash.clone(), entry_digest.size_bytes), Source::Memory(entry));
        for (d, b) in extra {
            blobs.insert((d.hash, d.size_bytes), Source::Memory(b));
        }
        match self.upload_missing(&n, blobs) {
            Ok(true) => {}
            Ok(false) => return,
            Err(f) => {
                self.fail(f);
                return;
            }
        }
        let ar = re::ActionResult {
            output_files: vec![re::OutputFile {
                path: ENTRY_PATH.into(),
                digest: Some(entry_digest.clone()),
                ..Default::default()
            }],
            output_directories: vec![re::OutputDirectory {
                path: OUT_DIR.into(),
                tree_digest: Some(tree_digest),
                is_topologically_sorted: false,
                root_directory_digest: None,
            }],
            exit_code: 0,
            execution_metadata: Some(re::ExecutedActionMetadata {
                worker: "hb".into(),
                auxiliary_metadata: vec![prost_types::Any {
                    type_url: ENTRY_TYPE_URL.into(),
                    value: entry_digest.encode_to_vec(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut client = ActionCacheClient::new(self.channel.clone());
        let req = self.request(re::UpdateActionResultRequest {
            instance_name: self.target.instance.clone(),
            action_digest: Some(action),
            action_result: Some(ar),
            results_cache_policy: None,
            digest_function: n.hash.value(),
        });
        if let Err(s) = self.rt.block_on(client.update_action_result(req)) {
            self.fail(status_fail("UpdateActionResult", s));
        }
    }

    fn warnings(&self) -> Vec<String> {
        Grpc::warnings(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(functions: &[re::digest_function::Value], max: i64, zstd: bool) -> re::ServerCapabilities {
        re::ServerCapabilities {
            cache_capabilities: Some(re::CacheCapabilities {
                digest_functions: functions.iter().map(|f| *f as i32).collect(),
                max_batch_total_size_bytes: max,
                supported_compressors: if zstd { vec![re::compressor::Value::Zstd as i32] } else { Vec::new() },
                action_cache_update_capabilities: Some(re::ActionCacheUpdateCapabilities { update_enabled: true }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn blake3_is_chosen_where_offered_sha256_otherwise() {
        use re::digest_function::Value as V;
        let n = negotiate(&caps(&[V::Sha256, V::Blake3], 0, true)).unwrap();
        assert_eq!((n.hash, n.zstd, n.ac_updates), (HashFn::Blake3, true, true));
        assert_eq!(negotiate(&caps(&[V::Sha256], 1 << 20, false)).unwrap().hash, HashFn::Sha256);
        // Servers older than REAPI 2.1 list nothing and mean SHA-256.
        assert_eq!(negotiate(&caps(&[], 0, false)).unwrap().hash, HashFn::Sha256);
        let err = negotiate(&caps(&[V::Md5, V::Sha1], 0, false)).unwrap_err();
        assert!(err.contains("MD5") && err.contains("SHA1"), "{err}");
        // A batch never exceeds gRPC's message limit, whatever the server says.
        assert!(negotiate(&caps(&[V::Sha256], 1 << 30, false)).unwrap().max_batch < GRPC_MESSAGE_LIMIT);
    }

    #[test]
    fn batches_stay_within_the_limit_and_large_blobs_stream() {
        let d = |size: i64| (re::Digest { hash: size.to_string(), size_bytes: size }, ());
        let (small, large) = batches(vec![d(40), d(40), d(30), d(60), d(10)], 100);
        let sizes: Vec<Vec<i64>> = small.iter().map(|b| b.iter().map(|(x, _)| x.size_bytes).collect()).collect();
        assert_eq!(sizes, [vec![40, 40], vec![30, 10]]);
        assert_eq!(large.iter().map(|(x, _)| x.size_bytes).collect::<Vec<_>>(), [60]);
    }

    #[test]
    fn urls_name_host_port_and_instance() {
        let t = parse_url("grpc://127.0.0.1:50051/main").unwrap();
        assert_eq!((t.tls, t.authority.as_str(), t.instance.as_str()), (false, "127.0.0.1:50051", "main"));
        let t = parse_url("grpcs://cache.example/a/b/").unwrap();
        assert_eq!((t.tls, t.authority.as_str(), t.instance.as_str()), (true, "cache.example:443", "a/b"));
        assert!(parse_url("grpc://host/main").unwrap_err().contains("no port"));
        assert!(parse_url("http://host:1").is_err());
        assert!(parse_url("grpc://h:1/x/blobs").unwrap_err().contains("reserves"));
    }

    #[test]
    fn action_digests_are_canonical() {
        let key = Digest::of(b"k");
        let (a, blobs) = Grpc::action_digest(HashFn::Sha256, &key);
        let (b, _) = Grpc::action_digest(HashFn::Sha256, &key);
        assert_eq!(a, b);
        assert_eq!(a.hash.len(), 64);
        assert_ne!(a, Grpc::action_digest(HashFn::Sha256, &Digest::of(b"other")).0);
        assert_ne!(a, Grpc::action_digest(HashFn::Blake3, &key).0);
        // The action blob is among those uploaded and hashes to the digest.
        assert!(blobs.iter().any(|(d, bytes)| *d == a && HashFn::Sha256.of(bytes) == a));
    }

    #[test]
    fn trees_keep_modes_symlinks_and_empty_directories() {
        use hb_store::TreeEntry;
        let f = Digest::of(b"x");
        let tree = Tree::new(vec![
            TreeEntry::dir("a"),
            TreeEntry::file("a/run", f, 1, true),
            TreeEntry::file("a/b/data", f, 1, false),
            TreeEntry::symlink("a/link", "run"),
            TreeEntry::dir("empty"),
            TreeEntry::file("top", f, 1, false),
        ])
        .unwrap();
        let sha = |_: &Digest, size: u64| Some(HashFn::Sha256.of(&vec![b'x'; usize::try_from(size).unwrap()]));
        let t = reapi_tree(&tree, HashFn::Sha256, &sha, &|_| None).unwrap();
        let root = t.root.clone().unwrap();
        assert_eq!(root.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["top"]);
        assert_eq!(root.directories.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["a", "empty"]);
        let paths = file_digests(&t, HashFn::Sha256, 100).unwrap();
        assert_eq!(paths.keys().map(String::as_str).collect::<Vec<_>>(), ["a/b/data", "a/run", "top"]);
        let a = t.children.iter().find(|c| c.files.iter().any(|f| f.name == "run")).unwrap();
        assert!(a.files[0].is_executable);
        assert_eq!(a.symlinks[0].target, "run");
        // Same input, same bytes; the walk refuses to go past its limit.
        assert_eq!(reapi_tree(&tree, HashFn::Sha256, &sha, &|_| None).unwrap().encode_to_vec(), t.encode_to_vec());
        assert!(file_digests(&t, HashFn::Sha256, 2).is_none());
    }
}
