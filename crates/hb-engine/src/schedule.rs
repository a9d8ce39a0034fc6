//! The scheduler: runs the graph's actions in dependency order on `jobs` worker
//! threads. A node's life is Waiting (counting unfinished dependencies) → Ready
//! (queued) → Running → Done or Failed; nodes downstream of a failure are Skipped.
//! On the first failure nothing new starts unless `keep_going` is set, in which case
//! only the failed node's dependents are skipped. A finished node is a [`Slot`]: the
//! digest its dependents' keys name, and its result, read from the action cache only
//! when something needs it (see [`crate::KnownResults`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use hb_store::stat::StatCache;
use hb_store::{Digest, Store};

use crate::{ActionResult, Ctx, Graph, Inputs, JobError, NodeId, Reporter};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Executed,
    /// Found in the local action cache.
    Cached,
    /// Downloaded from the remote cache.
    Remote,
}

/// One action that ran or was found in the cache, with what its key was made of.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub name: String,
    pub kind: String,
    pub key: Digest,
    /// Digest of the action's result (what dependents see).
    pub result: Digest,
    pub status: Status,
    /// Digest of the canonical arguments.
    pub args: Digest,
    /// Named input digests: dependencies by action name, sources by relative path.
    pub inputs: Vec<(String, Digest)>,
    /// When it ran and how much it moved: for `hb build --profile` and `hb explain
    /// --timings`. Never hashed, never in an output.
    pub timing: Timing,
}

/// When an action ran (or was looked up), relative to the start of the build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Timing {
    pub start_us: u64,
    pub duration_us: u64,
    /// The bytes of its inputs' trees and its sources.
    pub bytes_in: u64,
    /// The bytes of the files of its result.
    pub bytes_out: u64,
}

#[derive(Debug)]
pub struct Failure {
    pub name: String,
    pub error: JobError,
}

#[derive(Clone)]
pub struct Options {
    /// When the build started (records' times are relative to it).
    pub started: std::time::Instant,
    pub jobs: usize,
    pub keep_going: bool,
    pub platform: String,
    pub remote: Option<std::sync::Arc<dyn crate::RemoteCache>>,
    /// Where sandboxed commands run, if not on this machine.
    pub executor: Option<std::sync::Arc<dyn crate::Executor>>,
    /// Use a node's cached result without checking that the store still holds every
    /// blob it names (a no-op reads no blob, so checking them all is most of its
    /// time). A blob found missing later, when an action that runs or the export reads
    /// it, fails with [`hb_store::StoreError::Missing`]; the build then runs another
    /// pass with this off, in which every hit is checked and a result whose blobs
    /// are gone is rebuilt. Sub-actions ([`crate::Ctx::memo`]) are always checked.
    pub lazy_blobs: bool,
    /// The last build's results by key (used only with `lazy_blobs`).
    pub known: Arc<crate::KnownResults>,
}

/// A node's outcome: the digest dependents' keys name, and its result, read from the
/// action cache only when something needs it (a node known from the last build).
pub struct Slot {
    key: Digest,
    digest: Digest,
    bytes_out: u64,
    result: OnceLock<Arc<ActionResult>>,
}

impl Slot {
    /// The digest of the node's result (what its dependents' keys name).
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The node's result, read from the action cache on first use. An entry that is
    /// gone, or no longer hashes to the digest the build used, is reported as a missing
    /// blob: the build then runs again without taking anything on trust.
    pub fn result(&self, store: &Store) -> Result<&Arc<ActionResult>, JobError> {
        if let Some(r) = self.result.get() {
            return Ok(r);
        }
        let missing = || JobError::Store(hb_store::StoreError::Missing(self.digest));
        let bytes = store.get_action(&self.key)?.ok_or_else(missing)?;
        let (result, digest) = ActionResult::decode_with_digest(&bytes).ok_or_else(missing)?;
        if digest != self.digest {
            return Err(missing());
        }
        Ok(self.result.get_or_init(|| Arc::new(result)))
    }
}

pub struct Report {
    /// Each node's outcome, `None` when it failed or was skipped.
    pub results: Vec<Option<Slot>>,
    /// Every action (nodes and their sub-actions) in completion order.
    pub records: Vec<Record>,
    pub failures: Vec<Failure>,
    /// Nodes not run because a dependency failed (or the build stopped).
    pub skipped: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many dependencies have not finished.
    Waiting(usize),
    /// Queued or running.
    Started,
    Done,
    Failed,
    /// A dependency failed, or the build stopped before it could start.
    Skipped,
}

/// What the workers share: the nodes' states, the ready queue and how it ends.
struct Board {
    state: Vec<State>,
    ready: VecDeque<NodeId>,
    /// Nodes a worker has taken and not yet reported.
    running: usize,
    /// A node failed without `keep_going`: only fetches still start.
    stopping: bool,
    failures: Vec<Failure>,
}

/// Runs every node of `graph`.
///
/// Each worker takes a ready node, runs it, and records the outcome itself (marking
/// dependents ready) before taking the next, so a cached node costs no hand-off to
/// another thread; a no-op build is one cache lookup after another on `jobs` threads.
pub fn execute(
    graph: &Graph,
    store: &Store,
    stat: &Mutex<StatCache>,
    opts: &Options,
    reporter: &dyn Reporter,
) -> Report {
    let n = graph.nodes.len();
    let jobs = opts.jobs.max(1);
    let mut dependents = vec![Vec::new(); n];
    for (i, node) in graph.nodes.iter().enumerate() {
        for &d in &node.deps {
            dependents[d].push(i);
        }
    }
    let state: Vec<State> = graph.nodes.iter().map(|node| State::Waiting(node.deps.len())).collect();
    let ready = (0..n).filter(|&i| state[i] == State::Waiting(0)).collect();
    let board = Mutex::new(Board { state, ready, running: 0, stopping: false, failures: Vec::new() });
    let wake = std::sync::Condvar::new();
    let results: Vec<OnceLock<Slot>> = (0..n).map(|_| OnceLock::new()).collect();
    let records = Mutex::new(Vec::new());
    // Built on first use: a no-op build compresses nothing and starts no pool threads.
    let pool = OnceLock::new();
    let ctx = Ctx {
        epoch: opts.started,
        store,
        platform: &opts.platform,
        pool: &pool,
        jobs,
        remote: opts.remote.as_deref(),
        executor: opts.executor.as_deref(),
        lazy_blobs: opts.lazy_blobs,
        known: &opts.known,
        stat,
        records: &records,
        reporter,
    };

    let work = || {
        let lock = || board.lock().unwrap_or_else(|p| p.into_inner());
        let mut b = lock();
        loop {
            if b.stopping {
                // Only actions that must complete (fetches) still start.
                b.ready.retain(|&i| graph.nodes[i].job.always_complete());
            }
            let Some(i) = b.ready.pop_front() else {
                if b.running == 0 {
                    // Nothing runs, so nothing can become ready: every worker stops.
                    wake.notify_all();
                    return;
                }
                b = wake.wait(b).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            b.state[i] = State::Started;
            b.running += 1;
            drop(b);
            // A panic is a bug in hb; it fails the node rather than leaving the other
            // workers waiting for a report that never comes.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_node(graph, i, &ctx, &results)))
                .unwrap_or_else(|_| {
                    Err(JobError::Failed(format!(
                        "{}: hb panicked running this action (a bug in hb)",
                        graph.nodes[i].name
                    )))
                });
            b = lock();
            b.running -= 1;
            match outcome {
                Ok(slot) => {
                    b.state[i] = State::Done;
                    let _ = results[i].set(slot);
                    let mut woken = 0;
                    for &d in &dependents[i] {
                        if let State::Waiting(k) = b.state[d] {
                            b.state[d] = State::Waiting(k - 1);
                            if k == 1 {
                                b.ready.push_back(d);
                                woken += 1;
                            }
                        }
                    }
                    // This worker takes one of them; others may take the rest.
                    for _ in 1..woken {
                        wake.notify_one();
                    }
                }
                Err(error) => {
                    b.state[i] = State::Failed;
                    b.failures.push(Failure { name: graph.nodes[i].name.clone(), error });
                    if opts.keep_going {
                        skip_dependents(i, &dependents, &mut b.state);
                    } else {
                        b.stopping = true;
                    }
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..jobs {
            s.spawn(work);
        }
        work();
    });

    let board = board.into_inner().unwrap_or_else(|p| p.into_inner());
    let skipped = (0..n)
        .filter(|&i| !matches!(board.state[i], State::Done | State::Failed))
        .map(|i| graph.nodes[i].name.clone())
        .collect();
    Report {
        results: results.into_iter().map(OnceLock::into_inner).collect(),
        records: records.into_inner().unwrap_or_else(|p| p.into_inner()),
        failures: board.failures,
        skipped,
    }
}

fn skip_dependents(i: NodeId, dependents: &[Vec<NodeId>], state: &mut [State]) {
    let mut stack = dependents[i].clone();
    while let Some(d) = stack.pop() {
        if state[d] != State::Skipped {
            state[d] = State::Skipped;
            stack.extend(&dependents[d]);
        }
    }
}

fn run_node(graph: &Graph, i: NodeId, ctx: &Ctx, results: &[OnceLock<Slot>]) -> Result<Slot, JobError> {
    let node = &graph.nodes[i];
    // Dependencies enter the key under their action names, so `hb explain` can say which.
    let mut key_inputs: Vec<(String, Digest)> = Vec::new();
    let mut bytes_in = 0;
    let mut deps = Vec::with_capacity(node.deps.len());
    for &d in &node.deps {
        let slot = results[d].get().expect("dependencies finish first");
        deps.push((d, slot));
        key_inputs.push((graph.nodes[d].name.clone(), slot.digest));
        bytes_in += slot.bytes_out;
    }
    let sources = node.job.sources(ctx)?;
    bytes_in += sources.iter().map(|s| s.size).sum::<u64>();
    key_inputs.extend(sources.iter().map(|s| s.key_input()));
    key_inputs.extend(node.job.tools(ctx)?.into_iter().map(|t| (format!("tool:{}", t.path), t.digest)));
    let args = node.job.args();
    let step = crate::Step {
        name: &node.name,
        kind: node.job.kind(),
        version: node.job.version(),
        args: &args,
        inputs: &key_inputs,
        bytes_in,
    };
    let memo = ctx.memo_result(&step, ctx.lazy_blobs, &|_| true, || {
        // The job runs: read its inputs' results (those known from the last build were
        // not read yet).
        let mut inputs = Inputs { name: &node.name, results: Vec::with_capacity(deps.len()) };
        for (d, slot) in &deps {
            inputs.results.push((*d, slot.result(ctx.store)?.as_ref()));
        }
        if ctx.lazy_blobs {
            // The inputs may be hits taken on trust: the job reads their blobs, so
            // make sure they are here before it starts (from the remote cache for its
            // hits; else a typed error, not whatever the job would make of a missing
            // file).
            let blobs = inputs.results.iter().flat_map(|(_, r)| r.tree.blobs().copied());
            ctx.fetch_missing(blobs.chain(sources.iter().map(|s| s.digest)))?;
        }
        node.job.run(ctx, &inputs, &sources)
    })?;
    let result = OnceLock::new();
    if let Some(r) = memo.result {
        let _ = result.set(Arc::new(r));
    }
    Ok(Slot { key: memo.key, digest: memo.digest, bytes_out: memo.bytes_out, result })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, AnyInput, Graph, Input, Output, Quiet};
    use hb_store::{Tree, TreeEntry};

    /// Writes its name plus the lengths its inputs report as facts.
    struct Put(&'static str, bool, Vec<Input<u64>>);
    impl Action for Put {
        type Facts = u64;
        const KIND: &'static str = "put";
        const VERSION: u32 = 1;
        fn args(&self) -> Vec<u8> {
            self.0.as_bytes().to_vec()
        }
        fn inputs(&self) -> Vec<AnyInput> {
            self.2.iter().map(Input::any).collect()
        }
        fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[crate::Source]) -> Result<Output<u64>, JobError> {
            if self.1 {
                return Err(JobError::Failed(format!("{} failed", self.0)));
            }
            let mut text = self.0.to_string();
            for i in &self.2 {
                text.push_str(&inputs.get(i)?.1.to_string());
            }
            let digest = ctx.store.put_bytes(text.as_bytes())?;
            let tree = Tree::new(vec![TreeEntry::file(self.0, digest, text.len() as u64, false)]).unwrap();
            Ok(Output { tree, facts: text.len() as u64, exports: Vec::new() })
        }
    }

    fn run(g: &Graph, dir: &std::path::Path, keep_going: bool) -> Report {
        run_with(g, dir, keep_going, false)
    }

    fn run_with(g: &Graph, dir: &std::path::Path, keep_going: bool, lazy_blobs: bool) -> Report {
        run_known(g, dir, keep_going, lazy_blobs, Default::default())
    }

    fn run_known(
        g: &Graph,
        dir: &std::path::Path,
        keep_going: bool,
        lazy_blobs: bool,
        known: crate::KnownResults,
    ) -> Report {
        let store = Store::open(dir).unwrap();
        let stat = Mutex::new(StatCache::load(&store, dir));
        let opts = Options {
            started: std::time::Instant::now(),
            jobs: 2,
            keep_going,
            platform: "test".into(),
            remote: None,
            executor: None,
            lazy_blobs,
            known: Arc::new(known),
        };
        execute(g, &store, &stat, &opts, &Quiet)
    }

    #[test]
    fn runs_then_caches() {
        let d = tempfile::tempdir().unwrap();
        let mut g = Graph::default();
        let a = g.add("a", Put("a", false, vec![]));
        let b = g.add("b", Put("b", false, vec![]));
        g.add("c", Put("c", false, vec![a, b, a]));
        assert_eq!(g.nodes[2].deps, [0, 1], "each input is an edge once");
        let r = run(&g, d.path(), false);
        assert!(r.failures.is_empty());
        assert!(r.records.iter().all(|r| r.status == Status::Executed));
        assert_eq!(r.records.last().unwrap().name, "c");
        let r2 = run(&g, d.path(), false);
        assert_eq!(r2.records.len(), 3);
        assert!(r2.records.iter().all(|r| r.status == Status::Cached));
        let digest = |r: &Report| r.results[2].as_ref().unwrap().digest();
        assert_eq!(digest(&r), digest(&r2));
        // c read its inputs' facts (each 1 byte of text) by handle: "c" + "1" + "1" + "1".
        let store = Store::open(d.path()).unwrap();
        let c = r2.results[2].as_ref().unwrap().result(&store).unwrap();
        assert_eq!(postcard::from_bytes::<u64>(&c.facts).unwrap(), 4);
    }

    #[test]
    fn failure_skips_dependents_and_keep_going_runs_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let mut g = Graph::default();
        let a = g.add("a", Put("a", true, vec![]));
        g.add("b", Put("b", false, vec![a]));
        g.add("c", Put("c", false, vec![]));
        let r = run(&g, d.path(), true);
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].name, "a");
        assert_eq!(r.skipped, ["b"]);
        assert!(r.results[2].is_some());
    }

    #[test]
    fn lazy_hits_are_checked_when_read_and_an_eager_pass_rebuilds_them() {
        let d = tempfile::tempdir().unwrap();
        let mut g = Graph::default();
        let a = g.add("a", Put("a", false, vec![]));
        g.add("b", Put("b", false, vec![a]));
        let first = run(&g, d.path(), false);
        let store = Store::open(d.path()).unwrap();
        let blob =
            |i: usize| first.results[i].as_ref().unwrap().result(&store).unwrap().tree.blobs().next().copied().unwrap();
        std::fs::remove_file(store.blob_path(&blob(0))).unwrap();

        // Nothing reads a's blob: a lazy pass takes both hits as they are.
        let r = run_with(&g, d.path(), false, true);
        assert!(r.failures.is_empty() && r.records.iter().all(|r| r.status == Status::Cached));
        // An eager pass finds a's blob gone and runs a again (b's key is unchanged).
        let r = run(&g, d.path(), false);
        assert_eq!(r.records[0].status, Status::Executed);
        assert!(store.has_blob(&blob(0)));

        // b must run and a's blob is gone: the lazy pass fails before b starts, typed.
        std::fs::remove_file(store.blob_path(&blob(0))).unwrap();
        store.remove_action(&r.records[1].key).unwrap();
        let r = run_with(&g, d.path(), false, true);
        assert_eq!(r.failures.len(), 1);
        assert_eq!(r.failures[0].error.missing_blob(), Some(blob(0)));
    }

    #[test]
    fn known_results_are_cached_without_reading_their_entries_until_needed() {
        let d = tempfile::tempdir().unwrap();
        let mut g = Graph::default();
        let a = g.add("a", Put("a", false, vec![]));
        g.add("b", Put("b", false, vec![a]));
        let first = run(&g, d.path(), false);
        let known = crate::KnownResults::from_records(&first.records);
        let store = Store::open(d.path()).unwrap();
        // a's entry goes: the last build knew it, so nothing reads it.
        store.remove_action(&first.records[0].key).unwrap();
        let r = run_known(&g, d.path(), false, true, known.clone());
        assert!(r.failures.is_empty() && r.records.iter().all(|r| r.status == Status::Cached));
        // Not without lazy_blobs: a runs again.
        let r = run_known(&g, d.path(), false, false, known.clone());
        assert_eq!(r.records[0].status, Status::Executed);
        // b must run (the last build knew only a), and a's result is needed: an entry
        // that no longer hashes to what the last build saw is reported as missing (the
        // build then runs again without trusting anything).
        assert_eq!(first.records[0].name, "a");
        let known_a = crate::KnownResults::from_records(&first.records[..1]);
        store.put_action(&first.records[0].key, &ActionResult::default().encode()).unwrap();
        store.remove_action(&first.records[1].key).unwrap();
        let r = run_known(&g, d.path(), false, true, known_a);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert!(r.failures[0].error.missing_blob().is_some());
    }
}
