//! Remote execution over REAPI v2 (`--remote-executor grpc://host:port[/instance]`): a
//! sandboxed command of an action (a PEP 517 wheel build, an sdist compile, a build
//! step) becomes an `Action` whose `Command` is the command's argv, whole environment
//! and working directory, run by a scheduler's workers (`hb worker`).
//!
//! **The input root** has two directories: `root/`, the target root mounted as `/`, and
//! `work/`, the work directory the action prepared (seen at `/hb/build`), files with
//! their modes and the action's mtime. The working directory is `work/…`; output paths
//! are relative to it (`../out` when the command runs in `work/src`). Platform
//! properties: `OSFamily=linux`, `ISA=<Debian architecture>` and `hb-root=<digest of
//! root/>`, so workers can keep roots they have already written out.
//!
//! **Results** come back into the work directory, every blob checked against the
//! server's digest, and the action goes on exactly as after a local run: what it
//! records in hb's action cache does not depend on where the command ran. An executor
//! that cannot be reached (or answers wrongly) is given up with one warning and the
//! command runs here, unless `--remote-only` refuses that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hb_engine::{ExecCommand, Executor, Ran};
use hb_reapi::re;
use hb_reapi::re::execution_client::ExecutionClient;
use hb_store::tree::EntryKind;
use hb_store::{Digest, Store, Tree, TreeEntry};
use prost::Message;

use crate::grpc::{Fail, Grpc, Negotiated, Source, reapi_tree, status_fail};
use crate::{Health, RemoteConfig, RemoteError};

/// The input root's directory holding the target root.
pub const ROOT_DIR: &str = "root";
/// The input root's directory holding the action's work directory.
pub const WORK_DIR: &str = "work";
/// The platform property naming the target root's directory digest.
pub const ROOT_PROPERTY: &str = "hb-root";
/// Most entries hb walks in a tree a server sends (a hostile one cannot make it walk
/// forever).
pub(crate) const MAX_TREE_ENTRIES: usize = 1_000_000;
/// How long hb waits for a command without its own timeout (the server's own limit
/// applies first).
const DEFAULT_WAIT: Duration = Duration::from_secs(6 * 3600);

/// The REAPI execution client.
pub struct RemoteExecutor {
    grpc: Grpc,
    /// Refuse to run commands here when the executor cannot.
    remote_only: bool,
}

impl RemoteExecutor {
    pub fn new(cfg: RemoteConfig, remote_only: bool) -> Result<RemoteExecutor, RemoteError> {
        let instead = if remote_only { "the build fails (--remote-only)" } else { "running commands locally" };
        let grpc = Grpc::with_health(cfg, |url| Health::with_role(url, "remote executor", instead))?;
        Ok(RemoteExecutor { grpc, remote_only })
    }

    /// The executor is not usable: the caller runs the command here, or fails.
    fn unavailable(&self) -> Result<Option<Ran>, String> {
        if self.remote_only {
            let why = self.grpc.health.warnings().last().cloned().unwrap_or_else(|| "it is unavailable".to_string());
            return Err(format!("its command cannot run remotely, and --remote-only forbids running it here: {why}"));
        }
        Ok(None)
    }

    fn run(&self, n: &Negotiated, cmd: &ExecCommand<'_>, store: &Store) -> Result<Ran, Fail> {
        let g = &self.grpc;
        let bad = |why: String| Fail::Bad(format!("{}: {why}", cmd.name));
        // The input root: root/ and work/.
        let mut entries = vec![TreeEntry::dir(WORK_DIR)];
        if let Some(root) = cmd.root {
            entries.push(TreeEntry::dir(ROOT_DIR));
            entries.extend(root.entries().iter().map(|e| TreeEntry {
                path: format!("{ROOT_DIR}/{}", e.path),
                mode: e.mode,
                kind: e.kind.clone(),
            }));
        }
        entries
            .extend(capture(store, cmd.work, WORK_DIR).map_err(|e| bad(format!("reading its work directory: {e}")))?);
        let input = Tree::new(entries).map_err(|e| bad(e.to_string()))?;
        let work_prefix = format!("{WORK_DIR}/");
        let digest_of = |d: &Digest, size: u64| g.local_digest(n, store, d, size);
        let mtime_of = |p: &str| p.starts_with(&work_prefix).then_some(cmd.mtime);
        let tree = reapi_tree(&input, n.hash, &digest_of, &mtime_of)
            .ok_or_else(|| bad("its inputs could not be read".to_string()))?;
        let root_dir = tree.root.as_ref().ok_or_else(|| bad("no input root".to_string()))?;
        let root_digest = root_dir
            .directories
            .iter()
            .find(|d| d.name == ROOT_DIR)
            .and_then(|d| d.digest.clone())
            .map(|d| d.hash)
            .unwrap_or_default();

        // The command, as the worker will run it.
        let rel_cwd = cmd
            .cwd
            .strip_prefix(cmd.work_at)
            .filter(|r| r.is_empty() || r.starts_with('/'))
            .ok_or_else(|| bad(format!("its working directory {} is outside {}", cmd.cwd, cmd.work_at)))?;
        let working_directory = format!("{WORK_DIR}{rel_cwd}");
        let up = "../".repeat(working_directory.split('/').count() - 1);
        let output_paths: Vec<String> = cmd.outputs.iter().map(|o| format!("{up}{o}")).collect();
        let mut properties = vec![
            re::platform::Property { name: "ISA".into(), value: cmd.arch.into() },
            re::platform::Property { name: "OSFamily".into(), value: "linux".into() },
        ];
        if cmd.root.is_some() {
            properties.push(re::platform::Property { name: ROOT_PROPERTY.into(), value: root_digest.clone() });
        }
        properties.sort_by(|a, b| a.name.cmp(&b.name));
        let platform = re::Platform { properties };
        // The platform goes in the Command too, for servers older than REAPI 2.2.
        #[allow(deprecated)]
        let command = re::Command {
            arguments: cmd.argv.to_vec(),
            environment_variables: cmd
                .env
                .iter()
                .map(|(name, value)| re::command::EnvironmentVariable { name: name.clone(), value: value.clone() })
                .collect(),
            output_paths: output_paths.clone(),
            working_directory,
            platform: Some(platform.clone()),
            ..Default::default()
        };
        let command_bytes = command.encode_to_vec();
        let root_bytes = root_dir.encode_to_vec();
        let action = re::Action {
            command_digest: Some(n.hash.of(&command_bytes)),
            input_root_digest: Some(n.hash.of(&root_bytes)),
            // Without its own timeout a command gets the server's default.
            timeout: cmd
                .timeout
                .map(|t| prost_types::Duration { seconds: i64::try_from(t.as_secs()).unwrap_or(i64::MAX), nanos: 0 }),
            do_not_cache: false,
            platform: Some(platform),
            ..Default::default()
        };
        let action_bytes = action.encode_to_vec();
        let action_digest = n.hash.of(&action_bytes);

        // Everything the worker will read, then Execute.
        let mut blobs: BTreeMap<(String, i64), Source<'_>> = BTreeMap::new();
        for e in input.entries() {
            if let EntryKind::File { digest, size } = &e.kind
                && let Some(rd) = digest_of(digest, *size)
            {
                blobs.entry((rd.hash, rd.size_bytes)).or_insert(Source::Store(store, *digest));
            }
        }
        for dir in tree.children.iter().chain([root_dir]) {
            let bytes = dir.encode_to_vec();
            let d = n.hash.of(&bytes);
            blobs.insert((d.hash, d.size_bytes), Source::Memory(bytes));
        }
        for bytes in [command_bytes, action_bytes] {
            let d = n.hash.of(&bytes);
            blobs.insert((d.hash, d.size_bytes), Source::Memory(bytes));
        }
        if !g.upload_missing(n, blobs)? {
            return Err(Fail::Gone("uploading the action's inputs failed".to_string()));
        }
        let response = self.execute(n, &action_digest, cmd.timeout.unwrap_or(DEFAULT_WAIT))?;
        if let Some(status) = &response.status
            && status.code != 0
            && status.code != 4
        {
            // Anything but DEADLINE_EXCEEDED (the command's own timeout) is the
            // executor's failure, not the command's.
            return Err(bad(format!("the executor could not run it (status {}: {})", status.code, status.message)));
        }
        let timed_out = response.status.as_ref().is_some_and(|s| s.code == 4);
        let result = response.result.unwrap_or_default();
        let stdout = self.stream_text(n, &result.stdout_raw, result.stdout_digest.as_ref())?;
        let stderr = self.stream_text(n, &result.stderr_raw, result.stderr_digest.as_ref())?;
        if result.exit_code == 0 && !timed_out {
            self.place_outputs(n, store, cmd, &up, &result)?;
        }
        let worker = result.execution_metadata.map(|m| m.worker).unwrap_or_default();
        Ok(Ran { code: Some(result.exit_code), timed_out, stdout, stderr, worker })
    }

    /// `Execute`, followed to the end (through `WaitExecution` if the stream breaks).
    fn execute(&self, n: &Negotiated, action: &re::Digest, timeout: Duration) -> Result<re::ExecuteResponse, Fail> {
        let g = &self.grpc;
        let wait = timeout + Duration::from_secs(600);
        let mut client = ExecutionClient::new(g.channel.clone()).max_decoding_message_size(64 << 20);
        let mut req = g.request(re::ExecuteRequest {
            instance_name: g.target.instance.clone(),
            skip_cache_lookup: false,
            action_digest: Some(action.clone()),
            execution_policy: None,
            results_cache_policy: None,
            digest_function: n.hash.value(),
            ..Default::default()
        });
        req.set_timeout(wait);
        g.rt.block_on(async {
            let mut stream = client.execute(req).await.map_err(|s| status_fail("Execute", s))?.into_inner();
            let mut name = String::new();
            for _attempt in 0..8 {
                loop {
                    match stream.message().await {
                        Ok(Some(op)) => {
                            name.clone_from(&op.name);
                            if op.done {
                                return finished(op);
                            }
                        }
                        Ok(None) | Err(_) if !name.is_empty() => break,
                        Ok(None) => return Err(Fail::Gone("Execute ended without an operation".into())),
                        Err(s) => return Err(status_fail("Execute", s)),
                    }
                }
                let mut req = g.request(re::WaitExecutionRequest { name: name.clone() });
                req.set_timeout(wait);
                stream = client.wait_execution(req).await.map_err(|s| status_fail("WaitExecution", s))?.into_inner();
            }
            Err(Fail::Gone(format!("lost operation {name}")))
        })
    }

    /// A stream's text, inline or from the CAS.
    fn stream_text(&self, n: &Negotiated, raw: &[u8], digest: Option<&re::Digest>) -> Result<String, Fail> {
        if !raw.is_empty() {
            return Ok(String::from_utf8_lossy(raw).into_owned());
        }
        match digest {
            Some(d) if d.size_bytes > 0 => {
                let mut got = self.grpc.read_verified(n, std::slice::from_ref(d))?;
                Ok(String::from_utf8_lossy(&got.pop().unwrap_or_default()).into_owned())
            }
            _ => Ok(String::new()),
        }
    }

    /// Writes the result's outputs into the work directory (replacing what the
    /// command's inputs left at those paths).
    fn place_outputs(
        &self,
        n: &Negotiated,
        store: &Store,
        cmd: &ExecCommand<'_>,
        up: &str,
        result: &re::ActionResult,
    ) -> Result<(), Fail> {
        let g = &self.grpc;
        let local = |path: &str| -> Result<PathBuf, Fail> {
            let rel = path.strip_prefix(up).filter(|r| cmd.outputs.iter().any(|o| o == r)).ok_or_else(|| {
                Fail::Bad(format!("{}: the executor returned {path}, which is not a declared output", cmd.name))
            })?;
            Ok(cmd.work.join(rel))
        };
        for d in &result.output_directories {
            let dest = local(&d.path)?;
            let tree_digest =
                d.tree_digest.clone().ok_or_else(|| Fail::Bad("an output directory without a tree".into()))?;
            let bytes = g.read_verified(n, std::slice::from_ref(&tree_digest))?.pop().unwrap_or_default();
            let tree = re::Tree::decode(bytes.as_slice())
                .map_err(|e| Fail::Bad(format!("the executor's tree {} does not decode: {e}", tree_digest.hash)))?;
            let (entries, mtimes) = hb_entries(g, n, store, &tree)?;
            hb_fs::remove_dir_all_if_exists(&dest).map_err(|e| Fail::Bad(e.to_string()))?;
            hb_fs::create_dir_all(&dest).map_err(|e| Fail::Bad(e.to_string()))?;
            write_tree(store, &entries, &dest, &|p| mtimes.get(p).copied().unwrap_or(cmd.mtime))
                .map_err(|e| Fail::Bad(format!("{}: writing its outputs: {e}", cmd.name)))?;
        }
        let files: Vec<&re::OutputFile> = result.output_files.iter().collect();
        for f in files {
            let dest = local(&f.path)?;
            let digest = f.digest.clone().ok_or_else(|| Fail::Bad("an output file without a digest".into()))?;
            let got = download(g, n, store, std::slice::from_ref(&digest))?;
            let d = got.get(&digest.hash).ok_or_else(|| Fail::Bad(format!("output {} was not served", f.path)))?;
            let mode = if f.is_executable { 0o755 } else { 0o644 };
            if let Some(parent) = dest.parent() {
                hb_fs::create_dir_all(parent).map_err(|e| Fail::Bad(e.to_string()))?;
            }
            hb_fs::remove_file_if_exists(&dest).map_err(|e| Fail::Bad(e.to_string()))?;
            store.export_blob(d, &dest, mode).map_err(|e| Fail::Bad(e.to_string()))?;
        }
        #[allow(deprecated)]
        let symlinks = result.output_symlinks.iter().chain(&result.output_file_symlinks);
        for s in symlinks {
            let dest = local(&s.path)?;
            hb_fs::remove_file_if_exists(&dest).map_err(|e| Fail::Bad(e.to_string()))?;
            std::os::unix::fs::symlink(&s.target, &dest).map_err(|e| Fail::Bad(e.to_string()))?;
        }
        Ok(())
    }
}

/// The operation's `ExecuteResponse`, or why there is none.
fn finished(op: hb_reapi::google::longrunning::Operation) -> Result<re::ExecuteResponse, Fail> {
    use hb_reapi::google::longrunning::operation::Result as OpResult;
    match op.result {
        Some(OpResult::Response(any)) => re::ExecuteResponse::decode(any.value.as_slice())
            .map_err(|e| Fail::Bad(format!("the executor's response does not decode: {e}"))),
        Some(OpResult::Error(status)) => {
            Err(Fail::Bad(format!("the executor failed the operation (status {}: {})", status.code, status.message)))
        }
        None => Err(Fail::Bad("the executor finished the operation without a result".into())),
    }
}

impl Executor for RemoteExecutor {
    fn execute(&self, cmd: &ExecCommand<'_>, store: &Store) -> Result<Option<Ran>, String> {
        let Some(n) = self.grpc.negotiated() else { return self.unavailable() };
        match self.run(&n, cmd, store) {
            Ok(ran) => Ok(Some(ran)),
            Err(f) => {
                match f {
                    Fail::Gone(why) => self.grpc.health.give_up(why),
                    // One bad answer is enough to stop trusting it for this build.
                    Fail::Bad(why) => self.grpc.health.disable(why),
                    Fail::Absent => self.grpc.health.give_up("a blob it needed was missing"),
                }
                self.unavailable()
            }
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.grpc.warnings()
    }
}

/// The files, directories and symlinks under `dir` as tree entries under `prefix`,
/// their bytes put in the store; modes kept (0755 or 0644 for files).
pub(crate) fn capture(store: &Store, dir: &Path, prefix: &str) -> Result<Vec<TreeEntry>, String> {
    let mut out = Vec::new();
    for entry in hb_fs::walk_sorted(dir).min_depth(1) {
        let entry = entry.map_err(|e| e.to_string())?;
        let rel = entry.path().strip_prefix(dir).map_err(|e| e.to_string())?;
        let rel = rel.to_str().ok_or_else(|| format!("{} is not UTF-8", entry.path().display()))?;
        let path = if prefix.is_empty() { rel.to_string() } else { format!("{prefix}/{rel}") };
        let ft = entry.file_type();
        if ft.is_dir() {
            out.push(TreeEntry::dir(path));
        } else if ft.is_symlink() {
            let target = hb_fs::read_link(entry.path()).map_err(|e| e.to_string())?;
            let target = target.to_str().ok_or_else(|| format!("{} links to a non-UTF-8 path", rel))?;
            out.push(TreeEntry::symlink(path, target));
        } else if ft.is_file() {
            // As data, beneath `dir`: what a command wrote is never a path on this machine.
            let (digest, size, executable) =
                store.put_output(dir, rel, hb_sandbox::Limits::default().file_size).map_err(|e| e.to_string())?;
            out.push(TreeEntry::file(path, digest, size, executable));
        } else {
            return Err(format!("{} is not a file, directory or symlink", entry.path().display()));
        }
    }
    Ok(out)
}

/// Downloads blobs into the store, each checked against the server's digest; returns
/// the store's digest of each by server hash.
pub(crate) fn download(
    g: &Grpc,
    n: &Negotiated,
    store: &Store,
    ds: &[re::Digest],
) -> Result<BTreeMap<String, Digest>, Fail> {
    let mut out = BTreeMap::new();
    let mut small: Vec<re::Digest> = Vec::new();
    let flush = |small: &mut Vec<re::Digest>, out: &mut BTreeMap<String, Digest>| -> Result<(), Fail> {
        if small.is_empty() {
            return Ok(());
        }
        let got = g.read_verified(n, small)?;
        for (d, bytes) in small.iter().zip(got) {
            let local = store.put_bytes(&bytes).map_err(|e| Fail::Bad(e.to_string()))?;
            out.insert(d.hash.clone(), local);
        }
        small.clear();
        Ok(())
    };
    let mut batch_bytes = 0usize;
    let mut seen = std::collections::BTreeSet::new();
    for d in ds {
        if !seen.insert(d.hash.clone()) {
            continue;
        }
        let size = usize::try_from(d.size_bytes).map_err(|_| Fail::Bad("a negative blob size".into()))?;
        if size > n.max_batch / 2 {
            let w = store.blob_writer().map_err(|e| Fail::Bad(e.to_string()))?;
            let mut tee = crate::grpc::Tee { hasher: n.hash.hasher(), size: 0, inner: w };
            g.stream_read(n, d, &mut tee)?;
            let crate::grpc::Tee { hasher, size, inner: w } = tee;
            let actual = hasher.finish(size);
            if actual != *d {
                return Err(Fail::Bad(format!("blob {} arrived corrupt (it hashes to {})", d.hash, actual.hash)));
            }
            let (local, _) = w.finish().map_err(|e| Fail::Bad(e.to_string()))?;
            out.insert(d.hash.clone(), local);
            continue;
        }
        if batch_bytes + size > n.max_batch || small.len() >= 500 {
            flush(&mut small, &mut out)?;
            batch_bytes = 0;
        }
        batch_bytes += size;
        small.push(d.clone());
    }
    flush(&mut small, &mut out)?;
    Ok(out)
}

/// An hb tree of a REAPI `Tree` (its files downloaded into the store, checked), and
/// the mtimes its nodes carry.
#[allow(clippy::type_complexity)]
pub(crate) fn hb_entries(
    g: &Grpc,
    n: &Negotiated,
    store: &Store,
    tree: &re::Tree,
) -> Result<(Vec<TreeEntry>, BTreeMap<String, u64>), Fail> {
    let mut by_digest: BTreeMap<String, &re::Directory> = BTreeMap::new();
    for c in &tree.children {
        by_digest.insert(n.hash.of(&c.encode_to_vec()).hash, c);
    }
    let root = tree.root.as_ref().ok_or_else(|| Fail::Bad("a tree without a root".into()))?;
    let mut walked = 0usize;
    let mut files: Vec<(String, re::Digest, u32, Option<u64>)> = Vec::new();
    let mut entries = Vec::new();
    let mut stack: Vec<(String, &re::Directory)> = vec![(String::new(), root)];
    while let Some((prefix, dir)) = stack.pop() {
        walked += dir.files.len() + dir.directories.len() + dir.symlinks.len();
        if walked > MAX_TREE_ENTRIES {
            return Err(Fail::Bad(format!("a tree of more than {MAX_TREE_ENTRIES} entries")));
        }
        for f in &dir.files {
            check_name(&f.name)?;
            let mode = f.node_properties.as_ref().and_then(|p| p.unix_mode);
            let mode = if f.is_executable || mode.is_some_and(|m| m & 0o111 != 0) { 0o755 } else { 0o644 };
            let mtime =
                f.node_properties.as_ref().and_then(|p| p.mtime.as_ref()).and_then(|t| u64::try_from(t.seconds).ok());
            let digest = f.digest.clone().ok_or_else(|| Fail::Bad(format!("file {} has no digest", f.name)))?;
            files.push((format!("{prefix}{}", f.name), digest, mode, mtime));
        }
        for s in &dir.symlinks {
            check_name(&s.name)?;
            entries.push(TreeEntry::symlink(format!("{prefix}{}", s.name), s.target.clone()));
        }
        for d in &dir.directories {
            check_name(&d.name)?;
            let path = format!("{prefix}{}", d.name);
            let digest = d.digest.as_ref().ok_or_else(|| Fail::Bad(format!("directory {path} has no digest")))?;
            let child = by_digest
                .get(&digest.hash)
                .ok_or_else(|| Fail::Bad(format!("the tree lacks directory {path} ({})", digest.hash)))?;
            entries.push(TreeEntry::dir(path.clone()));
            stack.push((format!("{path}/"), child));
        }
    }
    let wanted: Vec<re::Digest> = files.iter().map(|(_, d, _, _)| d.clone()).collect();
    let got = download(g, n, store, &wanted)?;
    let mut mtimes = BTreeMap::new();
    for (path, rd, mode, mtime) in files {
        let d = got.get(&rd.hash).ok_or_else(|| Fail::Bad(format!("file {path} was not served")))?;
        let size = u64::try_from(rd.size_bytes).unwrap_or(0);
        let mut e = TreeEntry::file(path.clone(), *d, size, mode == 0o755);
        e.mode = mode;
        entries.push(e);
        if let Some(t) = mtime {
            mtimes.insert(path, t);
        }
    }
    Ok((entries, mtimes))
}

/// A name in a REAPI directory: one clean path component.
fn check_name(name: &str) -> Result<(), Fail> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Fail::Bad(format!("a tree names an entry {name:?}")));
    }
    Ok(())
}

/// Writes tree entries under `dir`: files from the store with their mode and the
/// mtime `mtime_of` gives, directories, symlinks.
pub(crate) fn write_tree(
    store: &Store,
    entries: &[TreeEntry],
    dir: &Path,
    mtime_of: &dyn Fn(&str) -> u64,
) -> Result<(), String> {
    // Unique, clean paths, and none below a symlink: a hostile tree cannot write
    // through a link out of `dir`.
    let tree = Tree::new(entries.to_vec()).map_err(|e| e.to_string())?;
    let links: std::collections::BTreeSet<&str> = tree
        .entries()
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Symlink { .. }))
        .map(|e| e.path.as_str())
        .collect();
    for e in tree.entries() {
        if e.path.match_indices('/').any(|(i, _)| links.contains(&e.path[..i])) {
            return Err(format!("{} lies below a symlink", e.path));
        }
        let dest = dir.join(&e.path);
        match &e.kind {
            EntryKind::Dir => hb_fs::create_dir_all(&dest).map_err(|e| e.to_string())?,
            EntryKind::File { digest, .. } => {
                if let Some(parent) = dest.parent() {
                    hb_fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                let bytes = store.read_blob(digest).map_err(|e| e.to_string())?;
                std::fs::write(&dest, bytes).map_err(|err| format!("writing {}: {err}", dest.display()))?;
                std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(e.mode))
                    .map_err(|err| format!("setting the mode of {}: {err}", dest.display()))?;
                let t = filetime::FileTime::from_unix_time(i64::try_from(mtime_of(&e.path)).unwrap_or(0), 0);
                filetime::set_file_mtime(&dest, t).map_err(|err| format!("setting the mtime of {}: {err}", e.path))?;
            }
            EntryKind::Symlink { target } => {
                if let Some(parent) = dest.parent() {
                    hb_fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::os::unix::fs::symlink(target, &dest).map_err(|err| format!("{}: {err}", e.path))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_directories_travel_with_modes_symlinks_and_mtimes() {
        use std::os::unix::fs::PermissionsExt;
        let cache = tempfile::tempdir().unwrap();
        let store = Store::open(cache.path()).unwrap();
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("src/pkg")).unwrap();
        std::fs::create_dir_all(from.path().join("out")).unwrap();
        std::fs::write(from.path().join("src/pkg/a.py"), "print('a')\n").unwrap();
        std::fs::write(from.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(from.path().join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("pkg/a.py", from.path().join("src/link.py")).unwrap();
        let entries = capture(&store, from.path(), "work").unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["work/out", "work/run.sh", "work/src", "work/src/link.py", "work/src/pkg", "work/src/pkg/a.py"]
        );

        let tree = Tree::new(entries).unwrap();
        let rel: Vec<TreeEntry> = tree
            .entries()
            .iter()
            .map(|e| TreeEntry { path: e.path.trim_start_matches("work/").to_string(), ..e.clone() })
            .collect();
        let to = tempfile::tempdir().unwrap();
        write_tree(&store, &rel, to.path(), &|_| 1_700_000_000).unwrap();
        let meta = std::fs::metadata(to.path().join("run.sh")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), 1_700_000_000);
        assert_eq!(std::fs::read_link(to.path().join("src/link.py")).unwrap(), Path::new("pkg/a.py"));
        assert_eq!(std::fs::read_to_string(to.path().join("src/pkg/a.py")).unwrap(), "print('a')\n");
        assert!(to.path().join("out").is_dir(), "empty directories travel too");
    }

    #[test]
    fn names_from_a_server_are_single_components() {
        for bad in ["", ".", "..", "a/b", "x\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("setup.py").is_ok());
        // A tree entry that would leave the directory is refused when written.
        let cache = tempfile::tempdir().unwrap();
        let store = Store::open(cache.path()).unwrap();
        let to = tempfile::tempdir().unwrap();
        let escape = [TreeEntry::symlink("../escape", "/etc/passwd")];
        assert!(write_tree(&store, &escape, to.path(), &|_| 0).is_err());
        // So is one written through a symlink it placed first.
        let d = store.put_bytes(b"owned").unwrap();
        let through = [TreeEntry::symlink("src", "/tmp"), TreeEntry::file("src/x", d, 5, false)];
        let err = write_tree(&store, &through, to.path(), &|_| 0).unwrap_err();
        assert!(err.contains("below a symlink"), "{err}");
    }
}
