//! The build engine: an action graph whose nodes are [`Action`]s, executed in
//! dependency order by a parallel scheduler, each action looked up in the action cache
//! by its key before it runs. Actions see the world only through [`Ctx`] (the store, the
//! stat cache for source files, the target platform, memoized sub-actions) and their
//! declared [`Inputs`]. The engine knows nothing about rules; `hb-rules` turns targets
//! into actions.

pub mod action;
pub mod key;
pub mod schedule;

use std::sync::Mutex;

use action::Job;

use hb_store::stat::{FileInfo, StatCache};

pub use action::{Action, AnyInput, Facts, Input, Inputs, Output, Tool};
pub use hb_store::{Digest, EntryKind, Store, StoreError, Tree, TreeEntry};
pub use key::{ActionResult, action_key, encode_args};
pub use schedule::{Failure, Options, Record, Report, Slot, Status, Timing, execute};

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] hb_fs::FsError),
    /// A failure with a message for the user (what, where, what to do).
    #[error("{0}")]
    Failed(String),
}

impl JobError {
    /// The blob this error says is missing from the store.
    pub fn missing_blob(&self) -> Option<Digest> {
        match self {
            JobError::Store(StoreError::Missing(digest)) => Some(*digest),
            _ => None,
        }
    }

    /// The corrupt blob this error is about, if it is a store corruption.
    pub fn corrupt_blob(&self) -> Option<Digest> {
        match self {
            JobError::Store(StoreError::Corrupt { digest, .. }) => Some(*digest),
            _ => None,
        }
    }
}

impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        match StoreError::from_io(&e) {
            Some((digest, actual)) => JobError::Store(StoreError::Corrupt { digest, actual }),
            None => JobError::Failed(e.to_string()),
        }
    }
}

/// A source file an action reads: its name within the action (a relative path), its
/// digest (the bytes are in the store) and the one permission bit hb keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub digest: Digest,
    pub size: u64,
    pub executable: bool,
}

impl Source {
    /// How the source enters the action key.
    pub fn key_input(&self) -> (String, Digest) {
        let kind = if self.executable { "exec" } else { "file" };
        (format!("{kind}:{}", self.name), self.digest)
    }
}

/// A shared cache on another machine (see hb-remote). Implementations verify what
/// they download and never fail a build: problems become warnings.
pub trait RemoteCache: Send + Sync {
    /// The result of action `key`, with every blob it names now in `store`.
    fn fetch(&self, key: &Digest, store: &Store) -> Option<ActionResult>;
    /// The result of action `key`, its blobs left on the server until something reads
    /// them ([`RemoteCache::fetch_blobs`]); by default, [`RemoteCache::fetch`].
    fn fetch_entry(&self, key: &Digest, store: &Store) -> Option<ActionResult> {
        self.fetch(key, store)
    }
    /// Downloads these blobs into `store`; whether all of them are there now. By
    /// default none is fetched (a cache whose `fetch_entry` fetches everything).
    fn fetch_blobs(&self, digests: &[Digest], store: &Store) -> bool {
        digests.iter().all(|d| store.has_blob(d))
    }
    /// Shares a result this machine computed.
    fn upload(&self, key: &Digest, result: &ActionResult, store: &Store);
    /// What went wrong so far, each said once.
    fn warnings(&self) -> Vec<String>;
}

/// A sandboxed command as data, for an executor on another machine (see hb-remote's
/// REAPI executor and `hb worker`). The command runs with `root` as `/` and `work` at
/// [`ExecCommand::work_at`], exactly as the local sandbox would run it.
pub struct ExecCommand<'a> {
    /// The action's name, for messages.
    pub name: &'a str,
    /// Everything the command reads besides the root: this directory of the build
    /// machine, seen at `work_at` inside the sandbox; outputs come back into it.
    pub work: &'a std::path::Path,
    pub work_at: &'a str,
    /// The working directory inside the sandbox (`work_at` or below it).
    pub cwd: &'a str,
    pub argv: &'a [String],
    /// The command's whole environment.
    pub env: &'a std::collections::BTreeMap<String, String>,
    /// The target root mounted as `/`.
    pub root: Option<&'a Tree>,
    /// Paths relative to `work` that the command writes and the build reads afterwards.
    pub outputs: &'a [String],
    /// The modification time of every file under `work`.
    pub mtime: u64,
    pub timeout: Option<std::time::Duration>,
    /// The Debian architecture the command runs on.
    pub arch: &'a str,
}

/// What a command did on an executor.
pub struct Ran {
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Which worker ran it, as the executor reports it.
    pub worker: String,
}

/// Runs sandboxed commands on other machines. Unavailable executors are told once as a
/// warning and the command runs locally, unless the user refused that.
pub trait Executor: Send + Sync {
    /// `Ok(None)`: the executor is unavailable; run the command here. `Err`: the command
    /// could not be run remotely and must not run locally (a message for the user).
    fn execute(&self, cmd: &ExecCommand<'_>, store: &Store) -> Result<Option<Ran>, String>;
    /// What went wrong so far, each said once.
    fn warnings(&self) -> Vec<String>;
}

/// An action's outcome as [`Ctx::memo_result`] found it.
pub(crate) struct Memo {
    pub key: Digest,
    /// `None` when the key was known from the last build and its entry not read.
    pub result: Option<ActionResult>,
    /// What dependents' keys name.
    pub digest: Digest,
    pub bytes_out: u64,
}

/// What the last build of a workspace (for one platform) found for each action key:
/// its result's digest and the bytes of its files. With [`Options::lazy_blobs`] a node
/// whose key is here is cached without reading its action-cache entry; its result is
/// read only when something needs it, and must then hash to the same digest.
///
/// Also, by result digest, the files each exported result names (a function of the
/// result's bytes, so never stale): a no-op checks `hb-out` against them without
/// reading the results.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownResults {
    results: std::collections::BTreeMap<Digest, (Digest, u64)>,
    exports: std::collections::BTreeMap<Digest, Vec<(String, Digest)>>,
}

impl KnownResults {
    fn get(&self, key: &Digest) -> Option<&(Digest, u64)> {
        self.results.get(key)
    }

    /// What `records` found.
    pub fn from_records(records: &[Record]) -> KnownResults {
        KnownResults {
            results: records.iter().map(|r| (r.key, (r.result, r.timing.bytes_out))).collect(),
            exports: Default::default(),
        }
    }

    /// The exported files (name, blob) of the result with digest `result`, when known.
    pub fn exports_of(&self, result: &Digest) -> Option<&[(String, Digest)]> {
        self.exports.get(result).map(Vec::as_slice)
    }

    /// Remembers the exported files of the result with digest `result`.
    pub fn set_exports(&mut self, result: Digest, files: Vec<(String, Digest)>) {
        self.exports.insert(result, files);
    }

    /// Reads an encoded set (anything undecodable is empty).
    pub fn decode(bytes: &[u8]) -> KnownResults {
        postcard::from_bytes(bytes).unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("known results encode")
    }
}

/// See [`Ctx::fetch_missing`].
pub fn fetch_missing(
    store: &Store,
    remote: Option<&dyn RemoteCache>,
    digests: impl Iterator<Item = Digest>,
) -> Result<(), JobError> {
    let mut missing: Vec<Digest> = digests.filter(|d| !store.has_blob(d)).collect();
    missing.sort();
    missing.dedup();
    let Some(&first) = missing.first() else { return Ok(()) };
    match remote {
        Some(r) if r.fetch_blobs(&missing, store) => Ok(()),
        _ => Err(JobError::Store(StoreError::Missing(first))),
    }
}

/// Receives progress events; must be cheap.
pub trait Reporter: Sync {
    fn started(&self, _name: &str) {}
    fn finished(&self, _name: &str, _status: Status) {}
    /// Something the user should know that does not stop the build.
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

/// A reporter that says nothing.
pub struct Quiet;
impl Reporter for Quiet {}

/// What determines an action's key: its name (for progress and `hb explain`, not in the
/// key), kind and version, canonical arguments and named input digests.
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub version: u32,
    pub args: &'a [u8],
    pub inputs: &'a [(String, Digest)],
    /// The bytes the action reads (for the build profile; not in the key).
    pub bytes_in: u64,
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What jobs may use while running.
pub struct Ctx<'a> {
    pub store: &'a Store,
    /// When the build started: records say when actions ran relative to it.
    epoch: std::time::Instant,
    pub platform: &'a str,
    pool: &'a std::sync::OnceLock<rayon::ThreadPool>,
    jobs: usize,
    remote: Option<&'a dyn RemoteCache>,
    executor: Option<&'a dyn Executor>,
    /// See [`Options::lazy_blobs`].
    lazy_blobs: bool,
    known: &'a KnownResults,
    stat: &'a Mutex<StatCache>,
    records: &'a Mutex<Vec<Record>>,
    reporter: &'a dyn Reporter,
}

impl Ctx<'_> {
    /// A pool of `jobs` threads for work inside one action (compressing chunks),
    /// started when first asked for.
    pub fn pool(&self) -> &rayon::ThreadPool {
        self.pool.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.jobs)
                .thread_name(|i| format!("hb-work-{i}"))
                .build()
                .expect("thread pool starts")
        })
    }

    /// How many actions may run at once (`-j`): also how many threads one action may
    /// use for work of its own.
    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Tells the user something that does not stop the build.
    pub fn warn(&self, message: &str) {
        self.reporter.warn(message);
    }

    /// Where sandboxed commands run when not here (`--remote-executor`).
    pub fn executor(&self) -> Option<&dyn Executor> {
        self.executor
    }

    /// A source file's digest (from the stat cache when unchanged); its bytes are in
    /// the store afterwards.
    pub fn source_file(&self, path: &std::path::Path) -> Result<FileInfo, StoreError> {
        let mut stat = self.stat.lock().unwrap_or_else(|p| p.into_inner());
        // Taken on trust like cached results: a node that runs checks its sources'
        // blobs first (see `run_node`).
        stat.file(self.store, path, self.lazy_blobs)
    }

    /// Makes sure the store holds `digests`, downloading the missing ones from the remote
    /// cache (results taken from it on trust left them there); a blob neither here nor
    /// there is [`StoreError::Missing`].
    pub fn fetch_missing(&self, digests: impl Iterator<Item = Digest>) -> Result<(), JobError> {
        fetch_missing(self.store, self.remote, digests)
    }

    /// A sub-action: runs `run` unless the action cache has a result for the key made of
    /// `step`; records it as executed or cached under its name.
    pub fn memo<F: Facts>(
        &self,
        step: &Step,
        run: impl FnOnce() -> Result<Output<F>, JobError>,
    ) -> Result<Output<F>, JobError> {
        let typed = |r: &ActionResult| Output::<F>::decode(r).is_some();
        let memo = self.memo_result(step, false, &typed, || Ok(run()?.encode()))?;
        let result = memo.result.ok_or_else(|| {
            JobError::Failed(format!("{}: a sub-action's result was not read (a bug in hb)", step.name))
        })?;
        Output::<F>::decode(&result)
            .ok_or_else(|| JobError::Failed(format!("{}: its result's facts do not decode (a bug in hb)", step.name)))
    }

    /// [`Ctx::memo`] on stored results; a cached result is used only if `usable` accepts it
    /// and, unless `trusted`, the store holds every blob it names. When `trusted`, a key
    /// the last build knew is cached without reading its entry: the memo has no result.
    pub(crate) fn memo_result(
        &self,
        step: &Step,
        trusted: bool,
        usable: &dyn Fn(&ActionResult) -> bool,
        run: impl FnOnce() -> Result<ActionResult, JobError>,
    ) -> Result<Memo, JobError> {
        let Step { name, kind, version, args, inputs, bytes_in } = *step;
        let args = Digest::of(args);
        let key = action_key(kind, version, self.platform, args, inputs);
        let started = std::time::Instant::now();
        let record = |digest: Digest, bytes_out: u64, status| Record {
            name: name.to_string(),
            kind: kind.to_string(),
            key,
            result: digest,
            status,
            args,
            inputs: inputs.to_vec(),
            timing: Timing {
                start_us: micros(started.saturating_duration_since(self.epoch)),
                duration_us: micros(started.elapsed()),
                bytes_in,
                bytes_out,
            },
        };
        if trusted && let Some(&(digest, bytes_out)) = self.known.get(&key) {
            self.record(record(digest, bytes_out, Status::Cached));
            return Ok(Memo { key, result: None, digest, bytes_out });
        }
        let memo = |result: ActionResult, digest| {
            let bytes_out = result.tree.file_bytes();
            Memo { key, result: Some(result), digest, bytes_out }
        };
        if let Some(bytes) = self.store.get_action(&key)?
            && let Some((result, digest)) = ActionResult::decode_with_digest(&bytes)
            && (trusted || result.tree.blobs().all(|d| self.store.has_blob(d)))
            && usable(&result)
        {
            let m = memo(result, digest);
            self.record(record(digest, m.bytes_out, Status::Cached));
            return Ok(m);
        }
        // Taking hits on trust, a remote hit brings only its entry: its blobs are
        // downloaded when something reads them (`Ctx::fetch_missing`).
        let fetched = |remote: &dyn RemoteCache| match trusted {
            true => remote.fetch_entry(&key, self.store),
            false => remote.fetch(&key, self.store),
        };
        if let Some(remote) = self.remote
            && let Some(result) = fetched(remote)
            && usable(&result)
        {
            let bytes = result.encode();
            self.store.put_action(&key, &bytes)?;
            let m = memo(result, Digest::of(&bytes));
            self.record(record(m.digest, m.bytes_out, Status::Remote));
            return Ok(m);
        }
        self.reporter.started(name);
        let result = run()?;
        let bytes = result.encode();
        self.store.put_action(&key, &bytes)?;
        if let Some(remote) = self.remote {
            remote.upload(&key, &result, self.store);
        }
        let m = memo(result, Digest::of(&bytes));
        self.record(record(m.digest, m.bytes_out, Status::Executed));
        Ok(m)
    }

    fn record(&self, record: Record) {
        self.reporter.finished(&record.name, record.status);
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        r.push(record);
    }
}

/// Index of a node in a [`Graph`].
pub type NodeId = usize;

/// One action of the graph, under its name (unique in the graph; it names the action in
/// progress, `hb explain` and its dependents' keys).
pub struct Node {
    pub name: String,
    job: Box<dyn Job>,
    /// The nodes whose results it reads, in key order, each once.
    pub deps: Vec<NodeId>,
}

impl Node {
    /// The action's kind.
    pub fn kind(&self) -> &'static str {
        self.job.kind()
    }
}

/// Actions and their dependencies; nodes are added after their dependencies (an action
/// can only hold handles that [`Graph::add`] gave out), so the graph is acyclic by
/// construction.
#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

impl Graph {
    /// Adds an action; its edges are the inputs it declares.
    pub fn add<A: Action>(&mut self, name: impl Into<String>, action: A) -> Input<A::Facts> {
        let mut deps: Vec<NodeId> = Vec::new();
        for i in Action::inputs(&action) {
            assert!(i.node() < self.nodes.len(), "inputs are added first");
            if !deps.contains(&i.node()) {
                deps.push(i.node());
            }
        }
        self.nodes.push(Node { name: name.into(), job: Box::new(action), deps });
        Input::new(self.nodes.len() - 1)
    }

    /// The node behind a handle.
    pub fn node(&self, input: impl Into<AnyInput>) -> &Node {
        &self.nodes[input.into().node()]
    }
}
