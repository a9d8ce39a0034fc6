//! A build request end to end: plan the requested labels, execute the graph, and place
//! each requested target's exported files in `hb-out/<package path>/`, or
//! `hb-out/<platform>/<package path>/` beside other platforms (atomically, and
//! only when they differ from what is there). A blob found corrupt during a pass is
//! removed by the store; the build then runs again, and the action that produced the
//! blob, no longer satisfied by the cache, re-executes. The first pass takes cached
//! results on trust ([`Options::lazy_blobs`], and the last build's known results by
//! key, kept per workspace and platform); a blob found missing when read (a cache
//! trimmed by `hb cache gc` or by hand) makes the build run again checking every hit.

use std::path::{Path, PathBuf};

use std::sync::Mutex;

use hb_config::{Label, Workspace};
use hb_engine::{Failure, JobError, KnownResults, Options, Record, Reporter, Status};
use hb_store::stat::StatCache;
use hb_store::{EntryKind, Store, StoreError};

use crate::RulesError;

/// Directory of the workspace receiving outputs.
pub const OUT_DIR: &str = "hb-out";

/// A bound on passes; each pass must find a blob corrupt that no earlier pass found, so
/// a store with N corrupt blobs needs at most N + 1 passes anyway.
const MAX_PASSES: usize = 1000;

#[derive(Debug, Default)]
pub struct Outcome {
    pub records: Vec<Record>,
    /// Exported files, workspace-relative.
    pub outputs: Vec<PathBuf>,
    pub failures: Vec<Failure>,
    pub skipped: Vec<String>,
    /// Problems hb recovered from (corrupt cache blobs).
    pub warnings: Vec<String>,
}

impl Outcome {
    pub fn count(&self, status: Status) -> usize {
        self.records.iter().filter(|r| r.status == status).count()
    }
}

pub fn build(
    ws: &mut Workspace,
    rules: &crate::Rules,
    store: &Store,
    labels: &[Label],
    opts: &Options,
    plan_opts: &crate::PlanOptions,
    reporter: &dyn Reporter,
) -> Result<Outcome, RulesError> {
    let plan = crate::plan(ws, rules, labels, plan_opts)?;
    let stat = Mutex::new(StatCache::load(store, &ws.root));
    let mut outcome = Outcome::default();
    let mut seen_corrupt = std::collections::BTreeSet::new();
    let mut opts = opts.clone();
    // What the last build of this workspace and platform found, by action key.
    let known_file = format!("known-{}", opts.platform);
    let known = std::sync::Arc::new(
        store.load_run_file(&ws.root, &known_file).map(|b| KnownResults::decode(&b)).unwrap_or_default(),
    );
    if opts.lazy_blobs {
        opts.known = known.clone();
    }
    // What the last successful export found each exported result to hold.
    let mut exports = Vec::new();
    for pass in 1..=MAX_PASSES {
        let report = hb_engine::execute(&plan.graph, store, &stat, &opts, reporter);
        merge_records(&mut outcome.records, report.records);
        if opts.lazy_blobs && report.failures.iter().any(|f| f.error.missing_blob().is_some()) {
            lazy_pass_missed(&mut opts, &mut outcome);
            continue;
        }
        let (corrupt, other): (Vec<Failure>, Vec<Failure>) =
            report.failures.into_iter().partition(|f| f.error.corrupt_blob().is_some());
        let mut progress = false;
        for f in &corrupt {
            outcome.warnings.push(format!("{}: {}", f.name, f.error));
            progress |= seen_corrupt.insert(f.error.corrupt_blob());
        }
        if !other.is_empty() || (!corrupt.is_empty() && (!progress || pass == MAX_PASSES)) {
            outcome.failures = other.into_iter().chain(corrupt).collect();
            outcome.skipped = report.skipped;
            break;
        }
        if !corrupt.is_empty() {
            // Corrupt blobs are removed: from now on a missing blob is expected, and
            // every hit is checked.
            opts.lazy_blobs = false;
            // Find every other corrupt blob now, rather than one per pass.
            let removed = scrub(store, &outcome.records);
            if removed > 0 {
                outcome.warnings.push(format!("removed {removed} more corrupt blob(s) from the cache"));
            }
            continue;
        }
        // Export the requested targets' files.
        let mut stat = stat.lock().unwrap_or_else(|p| p.into_inner());
        exports.clear();
        let exported = export(
            ws,
            store,
            &mut stat,
            labels,
            &plan,
            &report.results,
            plan_opts.platform_out_dir,
            &known,
            &mut exports,
            opts.remote.as_deref(),
        );
        match exported {
            Ok(outputs) => {
                outcome.outputs = outputs;
                break;
            }
            Err(JobError::Store(e @ StoreError::Corrupt { digest, .. })) if seen_corrupt.insert(Some(digest)) => {
                outcome.warnings.push(e.to_string());
                opts.lazy_blobs = false;
            }
            Err(JobError::Store(StoreError::Missing(_))) if opts.lazy_blobs => {
                lazy_pass_missed(&mut opts, &mut outcome);
            }
            Err(error) => {
                outcome.failures.push(Failure { name: "export to hb-out".into(), error });
                break;
            }
        }
    }
    if store.read_only() {
        outcome.warnings.push(format!(
            "the cache in {} is read-only: it was only read, and nothing was written to it",
            store.location().display()
        ));
    }
    let mut stat = stat.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = stat.save(store) {
        outcome.warnings.push(format!("could not save the stat cache: {e}"));
    }
    let mut now_known = KnownResults::from_records(&outcome.records);
    for (result, files) in exports {
        now_known.set_exports(result, files);
    }
    if now_known != *known
        && let Err(e) = store.save_run_file(&ws.root, &known_file, &now_known.encode())
    {
        outcome.warnings.push(format!("could not save what this build found: {e}"));
    }
    let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    if let Err(e) = RunLog::save(store, &ws.root, &labels, &outcome.records) {
        outcome.warnings.push(format!("could not save the build log for `hb explain`: {e}"));
    }
    Ok(outcome)
}

/// A pass that trusted cached results read a blob the store no longer has: the next
/// pass checks every hit's blobs, so the results that lost theirs are rebuilt.
fn lazy_pass_missed(opts: &mut Options, outcome: &mut Outcome) {
    opts.lazy_blobs = false;
    outcome.warnings.push(
        "some cached results name blobs the cache no longer holds (trimmed by `hb cache gc`, removed by hand, or \
         left on a remote cache that did not give them); \
         the build ran again checking every cached result, and rebuilt what was missing"
            .into(),
    );
}

/// What a build did, kept for `hb explain`: the store keeps the last build of a
/// workspace and the one before it.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunLog {
    pub labels: Vec<String>,
    pub records: Vec<Record>,
}

/// A [`RunLog`] borrowed for saving (the same encoding; the records are not copied).
#[derive(serde::Serialize)]
struct RunLogRef<'a> {
    labels: &'a [String],
    records: &'a [Record],
}

impl RunLog {
    fn save(store: &Store, workspace_root: &Path, labels: &[String], records: &[Record]) -> Result<(), StoreError> {
        let bytes = postcard::to_stdvec(&RunLogRef { labels, records }).expect("run logs encode");
        store.save_run(workspace_root, &bytes)
    }

    /// The last build's log and the previous one's (`None` when absent or unreadable).
    pub fn load(store: &Store, workspace_root: &Path) -> (Option<RunLog>, Option<RunLog>) {
        let (last, previous) = store.load_runs(workspace_root);
        let decode = |b: Option<Vec<u8>>| b.and_then(|b| postcard::from_bytes(&b).ok());
        (decode(last), decode(previous))
    }
}

/// Re-hashes every blob the recorded actions' cached results refer to; corrupt ones
/// are removed (so their producers run again). Returns how many were removed.
fn scrub(store: &Store, records: &[Record]) -> usize {
    let mut removed = 0;
    for r in records {
        let Ok(Some(bytes)) = store.get_action(&r.key) else { continue };
        let Some(result) = hb_engine::ActionResult::decode(&bytes) else { continue };
        for d in result.tree.blobs() {
            if matches!(store.verify_blob(d), Err(StoreError::Corrupt { .. })) {
                removed += 1;
            }
        }
    }
    removed
}

/// Adds a pass's records: an action seen again keeps one record, `Executed` if it ran
/// in any pass.
fn merge_records(all: &mut Vec<Record>, pass: Vec<Record>) {
    for r in pass {
        match all.iter_mut().find(|a| a.name == r.name) {
            Some(a) if a.status == Status::Executed => {}
            Some(a) => *a = r,
            None => all.push(r),
        }
    }
}

/// Places the requested targets' exported files in `hb-out`, writing only those that
/// differ, downloading from `remote` the ones a remote hit left there. Which files a
/// result exports is taken from `known` (the last build's) when it has that result,
/// else read from the result; either way it is added to `found`.
#[allow(clippy::too_many_arguments)]
fn export(
    ws: &Workspace,
    store: &Store,
    stat: &mut StatCache,
    labels: &[Label],
    plan: &crate::Plan,
    results: &[Option<hb_engine::Slot>],
    platform_out_dir: bool,
    known: &KnownResults,
    found: &mut Vec<(hb_store::Digest, Vec<(String, hb_store::Digest)>)>,
    remote: Option<&dyn hb_engine::RemoteCache>,
) -> Result<Vec<PathBuf>, JobError> {
    let mut outputs = Vec::new();
    let out = if platform_out_dir { Path::new(OUT_DIR).join(ws.platform.name) } else { PathBuf::from(OUT_DIR) };
    for label in labels {
        let Some(slot) = plan.output(label).and_then(|o| results.get(o.node())).and_then(|r| r.as_ref()) else {
            continue;
        };
        let files = match known.exports_of(&slot.digest()) {
            Some(files) => files.to_vec(),
            None => exported_files(slot.result(store)?),
        };
        for (name, digest) in &files {
            let rel = out.join(&label.package).join(name);
            let dest = ws.root.join(&rel);
            if stat.known(&dest) != Some(*digest) {
                // A remote hit taken on trust left its files on the server.
                hb_engine::fetch_missing(store, remote, std::iter::once(*digest))?;
                store.export_blob(digest, &dest, 0o644)?;
                stat.record(&dest, *digest)?;
            }
            outputs.push(rel);
        }
        found.push((slot.digest(), files));
    }
    Ok(outputs)
}

/// The files a result exports: (name, blob) for each of its `exports` that is a file of
/// its tree.
fn exported_files(result: &hb_engine::ActionResult) -> Vec<(String, hb_store::Digest)> {
    result
        .exports
        .iter()
        .filter_map(|name| {
            let entry = result.tree.entries().iter().find(|e| &e.path == name)?;
            match entry.kind {
                EntryKind::File { digest, .. } => Some((name.clone(), digest)),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_run_log_reads_back_as_a_run_log() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let record = Record {
            name: "//a:b".into(),
            kind: "files".into(),
            key: hb_store::Digest::of(b"k"),
            result: hb_store::Digest::of(b"r"),
            status: Status::Cached,
            args: hb_store::Digest::of(b"a"),
            inputs: vec![("src/x".into(), hb_store::Digest::of(b"x"))],
            timing: Default::default(),
        };
        RunLog::save(&store, d.path(), &["//a:b".into()], std::slice::from_ref(&record)).unwrap();
        let (last, previous) = RunLog::load(&store, d.path());
        let last = last.unwrap();
        assert!(previous.is_none());
        assert_eq!(last.labels, ["//a:b"]);
        assert_eq!((last.records.len(), last.records[0].key, &last.records[0].inputs), (1, record.key, &record.inputs));
    }
}
