//! `hb worker`: a Remote Execution worker that takes leases from a scheduler through
//! the Remote Workers API (the Bots service: `CreateBotSession`, then
//! `UpdateBotSession` to report and receive leases), as BuildGrid's bots do.
//!
//! A lease names an `Action` in the scheduler's CAS. The worker reads it and its
//! `Command`, writes the input root's `root/` directory out once per digest (kept under
//! its cache directory, like hb's own roots) and `work/` into a fresh directory, runs
//! the command in hb's bubblewrap sandbox exactly as `hb build` would locally (the
//! root as `/`, `work/` at `/hb/build`, the command's environment only), uploads the
//! declared outputs, stdout and stderr, and completes the lease with the
//! `ActionResult`. A failing command is a result too (its exit code and output); only a
//! worker-side problem fails the lease. Each of `--jobs` slots is its own bot session.
//! While a command runs the session is kept alive; a worker that dies stops doing
//! that, and the scheduler gives its lease to another.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hb_reapi::bots;
use hb_reapi::bots::bots_client::BotsClient;
use hb_reapi::re;
use hb_store::{Store, Tree};
use prost::Message;

use crate::exec::{MAX_TREE_ENTRIES, ROOT_DIR, WORK_DIR, capture, hb_entries, write_tree};
use crate::grpc::{Fail, Grpc, Negotiated, Source, reapi_tree};
use crate::{Health, RemoteConfig, RemoteError};

/// How the worker is set up.
pub struct WorkerConfig {
    /// The scheduler (its URL names the instance) and how to reach it.
    pub remote: RemoteConfig,
    /// This worker's own cache: blobs and the roots it has written out.
    pub cache: PathBuf,
    /// How many commands run at once (one bot session each).
    pub jobs: usize,
    /// The bot id prefix (the slot number is appended).
    pub name: String,
    /// Platform properties advertised to the scheduler (`ISA`, `OSFamily`, …).
    pub properties: Vec<(String, String)>,
}

/// Set (by the binary's SIGTERM/SIGINT handler) to stop taking work: each slot finishes
/// its command, tells the scheduler it is terminating, and returns.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn stopping() -> bool {
    STOP.load(std::sync::atomic::Ordering::SeqCst)
}

/// How long an idle poll may be held by the scheduler (it answers at once when it has
/// work), so a stop request is noticed within a few seconds.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// How often a running lease is reported while its command runs.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long to wait before trying the scheduler again after it failed.
const RETRY: Duration = Duration::from_secs(2);
/// The `type_url` of a lease result.
const RESULT_TYPE_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ActionResult";

/// Runs the worker until the process is stopped. `log` receives one line per event.
pub fn serve(cfg: WorkerConfig, log: &(dyn Fn(&str) + Sync)) -> Result<(), RemoteError> {
    let store = Store::open(&cfg.cache).map_err(|e| RemoteError::Key {
        what: format!("the worker cache {}", cfg.cache.display()),
        why: e.to_string(),
    })?;
    let url = cfg.remote.url.clone();
    let grpc = Grpc::with_health(cfg.remote.clone(), |u| Health::with_role(u, "scheduler", "retrying"))?;
    let worker = Worker { grpc, store, cfg: &cfg, log };
    log(&format!("hb worker {}: {} slot(s), scheduler {url}", cfg.name, cfg.jobs));
    std::thread::scope(|s| {
        for slot in 0..cfg.jobs.max(1) {
            let worker = &worker;
            s.spawn(move || worker.slot(slot));
        }
    });
    Ok(())
}

struct Worker<'a> {
    grpc: Grpc,
    store: Store,
    cfg: &'a WorkerConfig,
    log: &'a (dyn Fn(&str) + Sync),
}

impl Worker<'_> {
    fn bot_session(&self, bot_id: &str) -> bots::BotSession {
        let props: Vec<bots::worker::Property> = self
            .cfg
            .properties
            .iter()
            .map(|(k, v)| bots::worker::Property { key: k.clone(), value: v.clone() })
            .collect();
        bots::BotSession {
            bot_id: bot_id.to_string(),
            status: bots::BotStatus::Ok as i32,
            worker: Some(bots::Worker {
                devices: vec![bots::Device {
                    handle: bot_id.to_string(),
                    properties: self
                        .cfg
                        .properties
                        .iter()
                        .map(|(k, v)| bots::device::Property { key: k.clone(), value: v.clone() })
                        .collect(),
                }],
                properties: props,
                configs: Vec::new(),
            }),
            ..Default::default()
        }
    }

    /// One bot session: forever take a lease, run it, report it.
    fn slot(&self, slot: usize) {
        let bot_id = format!("{}-{slot}", self.cfg.name);
        while !stopping() {
            match self.session(&bot_id) {
                Ok(()) => break,
                Err(why) => {
                    (self.log)(&format!(
                        "{bot_id}: {why} (scheduler {}); trying again in {} s",
                        self.cfg.remote.url,
                        RETRY.as_secs()
                    ));
                    std::thread::sleep(RETRY);
                }
            }
        }
        (self.log)(&format!("{bot_id}: stopped"));
    }

    fn session(&self, bot_id: &str) -> Result<(), String> {
        let g = &self.grpc;
        let mut client = BotsClient::new(g.channel.clone());
        let req = g.request(bots::CreateBotSessionRequest {
            parent: g.target.instance.clone(),
            bot_session: Some(self.bot_session(bot_id)),
        });
        let mut session =
            g.rt.block_on(client.create_bot_session(req))
                .map_err(|s| format!("CreateBotSession: {}", s.message()))?
                .into_inner();
        (self.log)(&format!("{bot_id}: session {}", session.name));
        loop {
            // A lease to run: the scheduler hands them out PENDING (the API) or already
            // ACTIVE (BuildGrid).
            let open = |l: &bots::Lease| {
                l.state == bots::LeaseState::Pending as i32 || l.state == bots::LeaseState::Active as i32
            };
            // Leases the scheduler has dropped or finished are not reported again.
            session.leases.retain(open);
            let Some(lease) = session.leases.first().cloned() else {
                if stopping() {
                    // No more work for this session; the scheduler closes it.
                    session.status = bots::BotStatus::BotTerminating as i32;
                    self.update(&mut client, session, IDLE_POLL)?;
                    return Ok(());
                }
                // Nothing to do: the scheduler holds this call until it has work.
                session = self.update(&mut client, session, IDLE_POLL)?;
                continue;
            };
            for l in session.leases.iter_mut().filter(|l| l.id == lease.id) {
                l.state = bots::LeaseState::Active as i32;
            }
            let (result, status) = self.run_with_heartbeat(&mut client, &mut session, &lease, bot_id)?;
            for l in session.leases.iter_mut().filter(|l| l.id == lease.id) {
                l.state = bots::LeaseState::Completed as i32;
                l.result = result
                    .as_ref()
                    .map(|r| prost_types::Any { type_url: RESULT_TYPE_URL.to_string(), value: r.encode_to_vec() });
                l.status = Some(status.clone());
            }
            session = self.update(&mut client, session, IDLE_POLL)?;
            // The answer may still list the lease as done; it is not run again.
            session.leases.retain(|l| l.id != lease.id);
        }
    }

    fn update(
        &self,
        client: &mut BotsClient<tonic::transport::Channel>,
        session: bots::BotSession,
        wait: Duration,
    ) -> Result<bots::BotSession, String> {
        let g = &self.grpc;
        let mut req = g.request(bots::UpdateBotSessionRequest {
            name: session.name.clone(),
            bot_session: Some(session),
            update_mask: None,
        });
        // An idle session's request is held until there is work (or most of `wait`).
        req.set_timeout(wait);
        g.rt.block_on(client.update_bot_session(req))
            .map(|r| r.into_inner())
            .map_err(|s| format!("UpdateBotSession: {}", s.message()))
    }

    /// Runs the lease's action on another thread while this one keeps the session alive.
    fn run_with_heartbeat(
        &self,
        client: &mut BotsClient<tonic::transport::Channel>,
        session: &mut bots::BotSession,
        lease: &bots::Lease,
        bot_id: &str,
    ) -> Result<(Option<re::ActionResult>, hb_reapi::google::rpc::Status), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(move || {
                let _ = tx.send(self.run_lease(lease, bot_id));
            });
            loop {
                match rx.recv_timeout(HEARTBEAT) {
                    Ok(done) => {
                        let status = |code: i32, message: String| hb_reapi::google::rpc::Status {
                            code,
                            message,
                            details: Vec::new(),
                        };
                        return Ok(match done {
                            Ok((result, timed_out)) => (
                                Some(result),
                                if timed_out {
                                    status(4, "the command ran past its timeout".into())
                                } else {
                                    status(0, String::new())
                                },
                            ),
                            Err(why) => {
                                (self.log)(&format!("{bot_id}: lease {} failed: {why}", lease.id));
                                (None, status(13, why))
                            }
                        });
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let current = std::mem::take(session);
                        let mut answer = self.update(client, current, IDLE_POLL)?;
                        // Still this lease's: keep reporting it as running.
                        answer.leases.retain(|l| l.id == lease.id);
                        for l in &mut answer.leases {
                            l.state = bots::LeaseState::Active as i32;
                        }
                        *session = answer;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        return Err("the command's thread ended without a result".to_string());
                    }
                }
            }
        })
    }

    /// Runs one lease's action: inputs from the CAS, the sandbox, outputs to the CAS.
    fn run_lease(&self, lease: &bots::Lease, bot_id: &str) -> Result<(re::ActionResult, bool), String> {
        let g = &self.grpc;
        // What went wrong before is logged, and this lease starts with the CAS in use.
        for w in g.health.reset() {
            (self.log)(&format!("{bot_id}: {w}"));
        }
        let n = g.negotiated().ok_or_else(|| "the scheduler's capabilities are unknown".to_string())?;
        let fail = |f: Fail| match f {
            Fail::Gone(w) | Fail::Bad(w) => w,
            Fail::Absent => "a blob is missing from the CAS".to_string(),
        };
        let payload = lease.payload.as_ref().ok_or("a lease without a payload")?;
        // The payload is the Action (BuildGrid) or its digest.
        let (action_digest, action) = if payload.type_url.ends_with("build.bazel.remote.execution.v2.Action") {
            let action = re::Action::decode(payload.value.as_slice())
                .map_err(|e| format!("lease {}: its Action does not decode: {e}", lease.id))?;
            (n.hash.of(&payload.value), action)
        } else if payload.type_url.ends_with("build.bazel.remote.execution.v2.Digest") {
            let d = re::Digest::decode(payload.value.as_slice())
                .map_err(|e| format!("lease {}: its Digest does not decode: {e}", lease.id))?;
            let action = self.read_message::<re::Action>(&n, &d).map_err(fail)?;
            (d, action)
        } else {
            return Err(format!(
                "lease {}: payload {} is neither an Action nor its digest",
                lease.id, payload.type_url
            ));
        };
        let command_digest = action.command_digest.clone().ok_or("an action without a command")?;
        let command = self.read_message::<re::Command>(&n, &command_digest).map_err(fail)?;
        let input_digest = action.input_root_digest.clone().ok_or("an action without an input root")?;
        let input = self.read_message::<re::Directory>(&n, &input_digest).map_err(fail)?;
        let child = |name: &str| input.directories.iter().find(|d| d.name == name).and_then(|d| d.digest.clone());
        let started = Instant::now();
        let program = |c: &re::Command| {
            c.arguments.iter().take(2).map(|a| a.rsplit('/').next().unwrap_or(a)).collect::<Vec<_>>().join(" ")
        };
        (self.log)(&format!("{bot_id}: running action {} ({})", action_digest.hash, program(&command)));

        // The root, written out once per digest.
        let root = match child(ROOT_DIR) {
            Some(d) => Some(self.root(&n, &d).map_err(fail)?),
            None => None,
        };
        let tmp = tempfile::tempdir_in(self.store.tmp_dir()).map_err(|e| format!("a work directory: {e}"))?;
        let work = tmp.path().join("work");
        hb_fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        if let Some(d) = child(WORK_DIR) {
            let tree = self.fetch_tree(&n, &d).map_err(fail)?;
            let (entries, mtimes) = hb_entries(g, &n, &self.store, &tree).map_err(fail)?;
            write_tree(&self.store, &entries, &work, &|p| mtimes.get(p).copied().unwrap_or(0))?;
        }

        // Where it runs, inside the sandbox.
        let rel = command
            .working_directory
            .strip_prefix(WORK_DIR)
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .ok_or_else(|| format!("working directory {:?} is not under {WORK_DIR}/", command.working_directory))?;
        if !hb_store::tree::is_clean_relative(&command.working_directory) {
            return Err(format!("working directory {:?} is not a clean path", command.working_directory));
        }
        let cwd = format!("{}{rel}", hb_sandbox::WORK);
        let env: BTreeMap<String, String> =
            command.environment_variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
        let timeout = action
            .timeout
            .as_ref()
            .and_then(|t| u64::try_from(t.seconds).ok())
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let spec = hb_sandbox::Spec {
            work: &work,
            cwd: &cwd,
            argv: command.arguments.clone(),
            env,
            root: root.as_deref(),
            layers: Vec::new(),
            timeout,
            limits: hb_sandbox::Limits::default(),
        };
        let out = hb_sandbox::run(hb_sandbox::Mode::Bwrap, &spec).map_err(|e| e.to_string())?;

        // Outputs, by path relative to the working directory.
        let mut result = re::ActionResult { exit_code: out.code.unwrap_or(-1), ..Default::default() };
        let mut blobs: Vec<(re::Digest, Source<'_>)> = Vec::new();
        // Clients older than REAPI 2.1 name outputs by kind.
        #[allow(deprecated)]
        let paths: Vec<String> = if command.output_paths.is_empty() {
            command.output_files.iter().chain(&command.output_directories).cloned().collect()
        } else {
            command.output_paths.clone()
        };
        if out.success {
            for p in &paths {
                let local = resolve(&command.working_directory, p)
                    .ok_or_else(|| format!("output path {p:?} leaves the work directory"))?;
                let host = work.join(&local);
                // Nothing on the way to an output may be a symlink: the path is the
                // command's, and must not lead out of its work directory.
                if let Some(link) = symlink_on_the_way(&work, &local) {
                    return Err(format!("output path {p:?} goes through the symlink {link}: refused"));
                }
                let Ok(meta) = std::fs::symlink_metadata(&host) else { continue };
                if meta.is_dir() {
                    let entries = capture(&self.store, &host, "")?;
                    let tree = Tree::new(entries).map_err(|e| e.to_string())?;
                    let digest_of = |d: &hb_store::Digest, size: u64| g.local_digest(&n, &self.store, d, size);
                    let rt = reapi_tree(&tree, n.hash, &digest_of, &|_| None).ok_or("reading an output tree")?;
                    for e in tree.entries() {
                        if let hb_store::EntryKind::File { digest, size } = &e.kind
                            && let Some(rd) = digest_of(digest, *size)
                        {
                            blobs.push((rd, Source::Store(&self.store, *digest)));
                        }
                    }
                    let bytes = rt.encode_to_vec();
                    let td = n.hash.of(&bytes);
                    blobs.push((td.clone(), Source::Memory(bytes)));
                    result.output_directories.push(re::OutputDirectory {
                        path: p.clone(),
                        tree_digest: Some(td),
                        ..Default::default()
                    });
                } else if meta.is_symlink() {
                    let target = hb_fs::read_link(&host).map_err(|e| e.to_string())?;
                    result.output_symlinks.push(re::OutputSymlink {
                        path: p.clone(),
                        target: target.to_string_lossy().into_owned(),
                        node_properties: None,
                    });
                } else {
                    let (d, size, executable) = self
                        .store
                        .put_output(&work, &local, hb_sandbox::Limits::default().file_size)
                        .map_err(|e| e.to_string())?;
                    let rd = g.local_digest(&n, &self.store, &d, size).ok_or("hashing an output")?;
                    blobs.push((rd.clone(), Source::Store(&self.store, d)));
                    result.output_files.push(re::OutputFile {
                        path: p.clone(),
                        digest: Some(rd),
                        is_executable: executable,
                        ..Default::default()
                    });
                }
            }
        }
        for (text, slot) in [(&out.stdout, &mut result.stdout_digest), (&out.stderr, &mut result.stderr_digest)] {
            let bytes = text.as_bytes().to_vec();
            let d = n.hash.of(&bytes);
            *slot = Some(d.clone());
            blobs.push((d, Source::Memory(bytes)));
        }
        let mut unique: BTreeMap<(String, i64), Source<'_>> = BTreeMap::new();
        for (d, s) in blobs {
            unique.entry((d.hash, d.size_bytes)).or_insert(s);
        }
        if !g.upload_missing(&n, unique).map_err(fail)? {
            return Err(g.warnings().last().cloned().unwrap_or_else(|| "uploading the outputs failed".into()));
        }
        result.execution_metadata =
            Some(re::ExecutedActionMetadata { worker: bot_id.to_string(), ..Default::default() });
        (self.log)(&format!(
            "{bot_id}: ran action {} ({}) exit {} in {:.1}s",
            action_digest.hash,
            program(&command),
            result.exit_code,
            started.elapsed().as_secs_f64()
        ));
        Ok((result, out.timed_out))
    }

    fn read_message<M: Message + Default>(&self, n: &Negotiated, d: &re::Digest) -> Result<M, Fail> {
        let bytes = self.grpc.read_verified(n, std::slice::from_ref(d))?.pop().unwrap_or_default();
        M::decode(bytes.as_slice()).map_err(|e| Fail::Bad(format!("blob {} does not decode: {e}", d.hash)))
    }

    /// The directory `d` and everything below it, read level by level.
    fn fetch_tree(&self, n: &Negotiated, d: &re::Digest) -> Result<re::Tree, Fail> {
        let root: re::Directory = self.read_message(n, d)?;
        let mut children: BTreeMap<String, re::Directory> = BTreeMap::new();
        let mut next: Vec<re::Digest> = root.directories.iter().filter_map(|c| c.digest.clone()).collect();
        while !next.is_empty() {
            next.sort_by(|a, b| a.hash.cmp(&b.hash));
            next.dedup_by(|a, b| a.hash == b.hash);
            next.retain(|c| !children.contains_key(&c.hash));
            if children.len() + next.len() > MAX_TREE_ENTRIES {
                return Err(Fail::Bad("an input tree with too many directories".into()));
            }
            let mut found = Vec::new();
            for chunk in next.chunks(500) {
                let got = self.grpc.read_verified(n, chunk)?;
                for (cd, bytes) in chunk.iter().zip(got) {
                    let dir = re::Directory::decode(bytes.as_slice())
                        .map_err(|e| Fail::Bad(format!("directory {} does not decode: {e}", cd.hash)))?;
                    found.extend(dir.directories.iter().filter_map(|c| c.digest.clone()));
                    children.insert(cd.hash.clone(), dir);
                }
            }
            next = found;
        }
        Ok(re::Tree { root: Some(root), children: children.into_values().collect() })
    }

    /// The root directory `d` written out under the worker's cache, once.
    fn root(&self, n: &Negotiated, d: &re::Digest) -> Result<PathBuf, Fail> {
        let bad = |e: String| Fail::Bad(format!("writing out root {}: {e}", d.hash));
        let base = self.store.location().join("worker-roots");
        // Fetched only when it must be written (absent, or changed since it was sealed).
        // A fetch's failure is kept as it was (a server gone is not a bad root).
        let fetch_failed: std::cell::RefCell<Option<Fail>> = std::cell::RefCell::new(None);
        let placed = hb_fs::dir_once_sealed(&base, &d.hash, |tmp| {
            let fetched = self.fetch_tree(n, d).and_then(|tree| hb_entries(&self.grpc, n, &self.store, &tree));
            match fetched {
                Ok((entries, _)) => write_tree(&self.store, &entries, tmp, &|_| 0).map_err(Failed),
                Err(f) => {
                    *fetch_failed.borrow_mut() = Some(f);
                    Err(Failed("fetching the root".to_string()))
                }
            }
        });
        let (dir, sealed) = match placed {
            Ok(placed) => placed,
            Err(Failed(e)) => return Err(fetch_failed.into_inner().unwrap_or_else(|| bad(e))),
        };
        if let hb_fs::Sealed::Rewritten { why } = sealed {
            (self.log)(&format!(
                "warning: root {} in {} was not as this worker left it ({why}); written again before running",
                d.hash,
                dir.display()
            ));
        }
        Ok(dir)
    }
}

/// The first directory on the way to `rel` under `work` that is a symlink.
fn symlink_on_the_way(work: &Path, rel: &str) -> Option<String> {
    let mut at = work.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        at.push(part);
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(at.strip_prefix(work).unwrap_or(&at).display().to_string());
        }
    }
    None
}

/// A failure writing a root out (for [`hb_fs::dir_once`]).
struct Failed(String);

impl From<hb_fs::FsError> for Failed {
    fn from(e: hb_fs::FsError) -> Self {
        Failed(e.to_string())
    }
}

/// `path` (relative to `cwd`, both relative to the input root, `..` allowed) as a path
/// relative to `work/`, or `None` if it leaves it.
fn resolve(cwd: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = cwd.split('/').filter(|p| !p.is_empty()).collect();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    match parts.split_first() {
        Some((&first, rest)) if first == WORK_DIR && !rest.is_empty() => Some(rest.join("/")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn output_paths_stay_in_the_work_directory() {
        assert_eq!(resolve("work/src", "../out").as_deref(), Some("out"));
        assert_eq!(resolve("work", "out").as_deref(), Some("out"));
        assert_eq!(resolve("work/src", "../../root/etc"), None);
        assert_eq!(resolve("work", ".."), None);
        assert_eq!(resolve("work/a/b", "../../out/x").as_deref(), Some("out/x"));
    }
}
