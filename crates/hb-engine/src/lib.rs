//! The build engine: an action graph whose nodes are [`Job`]s, executed in dependency
//! order by a parallel scheduler, each action looked up in the action cache by its key
//! before it runs. Jobs see the world only through [`Ctx`]: the store, the stat cache
//! (for source files), the target platform and memoized sub-actions. The engine knows
//! nothing about rules; `hb-rules` turns targets into jobs.

pub mod key;
pub mod schedule;

use std::sync::Mutex;

use hb_store::stat::{FileInfo, StatCache};

pub use hb_store::{Digest, EntryKind, Store, StoreError, Tree, TreeEntry};
pub use key::{ActionResult, action_key, encode_args};
pub use schedule::{Failure, Options, Record, Report, Status, execute};

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

/// One kind of action. Implementations are pure functions of their key material:
/// [`Job::args`], [`Job::sources`] and the results of their dependencies.
pub trait Job: Send + Sync {
    /// Action kind, part of the key.
    fn kind(&self) -> &'static str;
    /// Bumped whenever the job's output for the same inputs changes.
    fn version(&self) -> u32;
    /// Canonical arguments (see [`encode_args`]).
    fn args(&self) -> Vec<u8>;
    /// True for actions that should finish even when the build is stopping because of
    /// another failure (fetches: the user learns about every missing file at once).
    fn always_complete(&self) -> bool {
        false
    }
    /// Inputs from outside the graph (source files), named and digested.
    fn sources(&self, _ctx: &Ctx) -> Result<Vec<Source>, JobError> {
        Ok(Vec::new())
    }
    /// Produces the result; `deps` are the results of the node's dependencies in order,
    /// `sources` what [`Job::sources`] returned.
    fn run(&self, ctx: &Ctx, deps: &[&ActionResult], sources: &[Source]) -> Result<ActionResult, JobError>;
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
    /// Shares a result this machine computed.
    fn upload(&self, key: &Digest, result: &ActionResult, store: &Store);
    /// What went wrong so far, each said once.
    fn warnings(&self) -> Vec<String>;
}

/// Receives progress events; must be cheap.
pub trait Reporter: Sync {
    fn started(&self, _name: &str) {}
    fn finished(&self, _name: &str, _status: Status) {}
}

/// A reporter that says nothing.
pub struct Quiet;
impl Reporter for Quiet {}

/// What jobs may use while running.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub platform: &'a str,
    pub pool: &'a rayon::ThreadPool,
    remote: Option<&'a dyn RemoteCache>,
    stat: &'a Mutex<StatCache>,
    records: &'a Mutex<Vec<Record>>,
    reporter: &'a dyn Reporter,
}

impl Ctx<'_> {
    /// A source file's digest (from the stat cache when unchanged); its bytes are in
    /// the store afterwards.
    pub fn source_file(&self, path: &std::path::Path) -> Result<FileInfo, StoreError> {
        let mut stat = self.stat.lock().unwrap_or_else(|p| p.into_inner());
        stat.file(self.store, path)
    }

    /// Runs `run` unless the action cache has a result for the key made of the other
    /// arguments; records the action as executed or cached under `name`.
    pub fn memo(
        &self,
        name: &str,
        kind: &str,
        version: u32,
        args: &[u8],
        inputs: &[(String, Digest)],
        run: impl FnOnce() -> Result<ActionResult, JobError>,
    ) -> Result<ActionResult, JobError> {
        let key = action_key(kind, version, self.platform, args, inputs);
        let record = |result: &ActionResult, status| Record {
            name: name.to_string(),
            kind: kind.to_string(),
            key,
            result: result.digest(),
            status,
            args: Digest::of(args),
            inputs: inputs.to_vec(),
        };
        if let Some(bytes) = self.store.get_action(&key)?
            && let Some(result) = ActionResult::decode(&bytes)
            && result.tree.blobs().all(|d| self.store.has_blob(d))
        {
            self.record(record(&result, Status::Cached));
            return Ok(result);
        }
        if let Some(remote) = self.remote
            && let Some(result) = remote.fetch(&key, self.store)
        {
            self.store.put_action(&key, &result.encode())?;
            self.record(record(&result, Status::Remote));
            return Ok(result);
        }
        self.reporter.started(name);
        let result = run()?;
        self.store.put_action(&key, &result.encode())?;
        if let Some(remote) = self.remote {
            remote.upload(&key, &result, self.store);
        }
        self.record(record(&result, Status::Executed));
        Ok(result)
    }

    fn record(&self, record: Record) {
        self.reporter.finished(&record.name, record.status);
        let mut r = self.records.lock().unwrap_or_else(|p| p.into_inner());
        r.push(record);
    }
}

/// Index of a node in a [`Graph`].
pub type NodeId = usize;

pub struct Node {
    pub name: String,
    pub job: Box<dyn Job>,
    pub deps: Vec<NodeId>,
}

/// Actions and their dependencies; nodes are added after their dependencies, so the
/// graph is acyclic by construction.
#[derive(Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
}

impl Graph {
    pub fn add(&mut self, name: String, job: Box<dyn Job>, deps: Vec<NodeId>) -> NodeId {
        assert!(deps.iter().all(|&d| d < self.nodes.len()), "dependencies are added first");
        self.nodes.push(Node { name, job, deps });
        self.nodes.len() - 1
    }
}
