//! The `build_step` action: a user's command in the sandbox, with the platform's target
//! root as `/`, its tools' trees layered read-only at their install paths (written out
//! once per tree digest, like roots), its sources at [`SRC_DIR`] and an empty
//! [`OUT_DIR`]. The result is what it wrote under its declared outputs, placed under
//! the install directory, with modes normalized (0755 if any execute bit, else 0644)
//! and one mtime. Writing anything else in the work directory (a source changed, a
//! stray file), a declared output missing or of the wrong kind, a special file, or
//! running past the timeout fails the action with what went wrong; its key holds the
//! command, environment, outputs, destination, sources, tools' and root's digests, but
//! not the timeout (it decides only whether the step fails, never what it writes).

use std::collections::BTreeMap;
use std::path::Path;

use hb_engine::{Action, AnyInput, Ctx, Input, Inputs, JobError, Output, Source, encode_args};
use hb_store::{Digest, Tree, TreeEntry};
use serde::Serialize;

use crate::actions::files::FilesJob;
use crate::actions::python::{materialize, tail};

/// Where the step's sources are, inside the sandbox (its working directory).
pub const SRC_DIR: &str = "/hb/build/src";
/// Where it writes its outputs, inside the sandbox.
pub const OUT_DIR: &str = "/hb/build/out";

/// `build_step`: one command run at build time.
pub struct StepJob {
    pub label: String,
    pub files: FilesJob,
    pub root: Input<()>,
    /// Tools by label, each an install tree layered over the root.
    pub tools: Vec<(String, AnyInput)>,
    pub cmd: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Declared outputs relative to [`OUT_DIR`]; a trailing `/` marks a directory.
    pub outs: Vec<String>,
    pub dest: String,
    pub mtime: u64,
    pub platform: &'static hb_platform::Platform,
    /// Seconds (not in the key).
    pub timeout: u64,
    /// Where the timeout is set, for the message when it is exceeded.
    pub timeout_at: String,
    /// What the command may use (not in the key, like the timeout).
    pub limits: hb_sandbox::Limits,
}

#[derive(Serialize)]
struct Args<'a> {
    cmd: &'a [String],
    env: &'a BTreeMap<String, String>,
    outs: &'a [String],
    dest: &'a str,
    mtime: u64,
    base_env: &'a [(&'a str, &'a str)],
    tools: Vec<&'a str>,
}

impl Action for StepJob {
    type Facts = ();
    const KIND: &'static str = "build_step";
    const VERSION: u32 = 1;

    fn args(&self) -> Vec<u8> {
        let mut v = encode_args(&Args {
            cmd: &self.cmd,
            env: &self.env,
            outs: &self.outs,
            dest: &self.dest,
            mtime: self.mtime,
            base_env: hb_sandbox::BASE_ENV,
            tools: self.tools.iter().map(|(l, _)| l.as_str()).collect(),
        });
        v.extend(self.files.args());
        v
    }

    fn inputs(&self) -> Vec<AnyInput> {
        std::iter::once(self.root.any()).chain(self.tools.iter().map(|(_, t)| *t)).collect()
    }

    fn sources(&self, ctx: &Ctx) -> Result<Vec<Source>, JobError> {
        if self.files.patterns.is_empty() {
            return Ok(Vec::new());
        }
        self.files.sources(ctx)
    }

    fn run(&self, ctx: &Ctx, inputs: &Inputs, sources: &[Source]) -> Result<Output<()>, JobError> {
        let fail = |why: String| JobError::Failed(format!("{}: {why}", self.label));
        let store = ctx.store;
        let root = inputs.tree(self.root)?;
        let mut layers = Vec::new();
        for (label, tree) in &self.tools {
            layers.push((label.as_str(), inputs.tree(*tree)?));
        }
        let tmp = tempfile::tempdir_in(store.tmp_dir())
            .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &store.tmp_dir(), e)))?;
        let work = tmp.path();
        let src: Vec<TreeEntry> =
            sources.iter().map(|s| TreeEntry::file(s.name.clone(), s.digest, s.size, s.executable)).collect();
        hb_fs::create_dir_all(&work.join("src"))?;
        hb_fs::create_dir_all(&work.join("out"))?;
        materialize(&|d: &Digest| store.read_blob(d), &src, &work.join("src"), self.mtime, ctx.jobs())?;

        let mut env = self.env.clone();
        env.insert("SOURCE_DATE_EPOCH".to_string(), self.mtime.to_string());
        let cmd = crate::actions::exec::Command {
            label: &self.label,
            work,
            cwd: SRC_DIR,
            argv: self.cmd.clone(),
            env,
            root: Some(root),
            layers,
            timeout: Some(std::time::Duration::from_secs(self.timeout)),
            limits: self.limits,
            // The sources come back too, so a command that changed them is caught
            // wherever it ran.
            outputs: vec!["out".to_string(), "src".to_string()],
            mtime: self.mtime,
            platform: self.platform,
        };
        let out = crate::actions::exec::run(ctx, hb_sandbox::Mode::Bwrap, cmd)?;
        let output = || tail(&format!("{}{}", out.stdout, out.stderr), 60);
        if out.timed_out {
            return Err(fail(format!(
                "ran past its timeout of {} s (timeout at {}) and was stopped. Its output:\n{}",
                self.timeout,
                self.timeout_at,
                output()
            )));
        }
        if !out.success {
            let code = out.code.map_or("by a signal".to_string(), |c| format!("with status {c}"));
            let limits =
                if out.limit_hit.is_empty() { String::new() } else { format!("; {}", out.limit_hit.join("; ")) };
            return Err(fail(format!(
                "the command `{}` failed ({code}{limits}). Its output:\n{}",
                self.cmd.join(" "),
                output()
            )));
        }
        self.check_work(work, sources)?;
        let tree = self.collect(store, &work.join("out"))?;
        Ok(Output::tree(tree))
    }
}

impl StepJob {
    /// Nothing but `src/` (unchanged) and `out/` may be in the work directory.
    fn check_work(&self, work: &Path, sources: &[Source]) -> Result<(), JobError> {
        let mut stray = Vec::new();
        for e in hb_fs::read_dir_sorted(work)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "src" && name != "out" {
                stray.push(format!("/hb/build/{name}"));
            }
        }
        let expected: BTreeMap<&str, &Source> = sources.iter().map(|s| (s.name.as_str(), s)).collect();
        // Every directory the sources sit in (a directory holding none is the command's).
        let source_dirs: std::collections::BTreeSet<&str> =
            sources.iter().flat_map(|s| s.name.match_indices('/').map(|(i, _)| &s.name[..i])).collect();
        let mut seen = 0usize;
        for entry in hb_fs::walk_sorted(&work.join("src")).min_depth(1) {
            let entry =
                entry.map_err(|e| JobError::Failed(format!("{}: reading its sources back: {e}", self.label)))?;
            let rel = entry.path().strip_prefix(work.join("src")).unwrap_or(entry.path());
            let rel = rel.to_string_lossy().into_owned();
            if entry.file_type().is_dir() {
                if !source_dirs.contains(rel.as_str()) {
                    stray.push(format!("{SRC_DIR}/{rel}/"));
                }
                continue;
            }
            match expected.get(rel.as_str()) {
                Some(s) if entry.file_type().is_file() => {
                    seen += 1;
                    let bytes = hb_fs::read(entry.path())?;
                    if Digest::of(&bytes) != s.digest {
                        stray.push(format!("{SRC_DIR}/{rel} (a source, changed)"));
                    }
                }
                _ => stray.push(format!("{SRC_DIR}/{rel}")),
            }
        }
        if seen != sources.len() {
            stray.push(format!("{} source file(s) removed from {SRC_DIR}", sources.len().saturating_sub(seen)));
        }
        if stray.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = stray.iter().take(10).map(|s| format!("  {s}")).collect();
        let more = if stray.len() > 10 { format!("\n  … and {} more", stray.len() - 10) } else { String::new() };
        Err(JobError::Failed(format!(
            "{}: the command wrote outside its declared outputs (it may write only under {OUT_DIR}: {}; /tmp is scratch):\n{}{more}",
            self.label,
            self.outs.join(", "),
            shown.join("\n")
        )))
    }

    /// The declared outputs as a tree under `dest`.
    fn collect(&self, store: &hb_store::Store, out: &Path) -> Result<Tree, JobError> {
        let fail = |why: String| JobError::Failed(format!("{}: {why}", self.label));
        let dest = self.dest.trim_matches('/');
        let place = |rel: &str| if dest.is_empty() { rel.to_string() } else { format!("{dest}/{rel}") };
        let declared: Vec<(&str, bool)> =
            self.outs.iter().map(|o| (o.trim_end_matches('/'), o.ends_with('/'))).collect();
        let mut entries = Vec::new();
        let mut undeclared = Vec::new();
        // All outputs together stay within the one limit of what a command may write.
        let mut left = self.limits.file_size;
        for entry in hb_fs::walk_sorted(out).min_depth(1) {
            let entry = entry.map_err(|e| fail(format!("reading its outputs: {e}")))?;
            let rel = entry.path().strip_prefix(out).unwrap_or(entry.path());
            let Some(rel) = rel.to_str().map(str::to_string) else {
                return Err(fail(format!("it wrote a file name that is not UTF-8: {:?}", rel)));
            };
            let kind = entry.file_type();
            // Inside a declared directory, or a declared file, or a directory on the way.
            let inside = declared
                .iter()
                .any(|(o, dir)| rel == *o || (*dir && rel.strip_prefix(o).is_some_and(|r| r.starts_with('/'))));
            let on_the_way = kind.is_dir()
                && declared.iter().any(|(o, _)| o.strip_prefix(rel.as_str()).is_some_and(|r| r.starts_with('/')));
            if on_the_way {
                continue;
            }
            if !inside {
                undeclared.push(format!("{OUT_DIR}/{rel}"));
                continue;
            }
            if kind.is_dir() {
                entries.push(TreeEntry::dir(place(&rel)));
            } else if kind.is_symlink() {
                let target = hb_fs::read_link(entry.path())?;
                let Some(target) = target.to_str() else {
                    return Err(fail(format!("{OUT_DIR}/{rel} is a symlink to a name that is not UTF-8")));
                };
                entries.push(TreeEntry::symlink(place(&rel), target));
            } else if kind.is_file() {
                let (digest, size, executable) = store.put_output(out, &rel, left).map_err(|e| match e {
                    hb_store::StoreError::Output(hb_fs::OutputError::TooLarge { .. }) => fail(format!(
                        "its outputs add up to more than {} MiB at {OUT_DIR}/{rel}, the limit of what one command may write (raise action_max_output_mib in [workspace] if that is right)",
                        self.limits.file_size >> 20
                    )),
                    hb_store::StoreError::Output(o) => fail(format!("{OUT_DIR}/{rel}: {o}")),
                    other => JobError::Store(other),
                })?;
                left = left.saturating_sub(size);
                entries.push(TreeEntry::file(place(&rel), digest, size, executable));
            } else {
                return Err(fail(format!(
                    "{OUT_DIR}/{rel} is not a file, directory or symlink (a socket, pipe or device cannot be packaged)"
                )));
            }
        }
        if !undeclared.is_empty() {
            let shown: Vec<String> = undeclared.iter().take(10).map(|s| format!("  {s}")).collect();
            return Err(fail(format!(
                "the command wrote outputs it did not declare (outs = [{}]):\n{}",
                self.outs.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(", "),
                shown.join("\n")
            )));
        }
        for (o, dir) in &declared {
            let path = out.join(o);
            match hb_fs::symlink_metadata(&path) {
                Ok(m) if *dir && !m.is_dir() => {
                    return Err(fail(format!("the output `{o}/` is declared a directory but is not one")));
                }
                Ok(m) if !*dir && m.is_dir() => {
                    return Err(fail(format!(
                        "the output `{o}` is a directory: declare it as `{o}/` to keep what is inside"
                    )));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(fail(format!(
                        "the command did not write the declared output `{}` (expected at {OUT_DIR}/{o})",
                        if *dir { format!("{o}/") } else { o.to_string() }
                    )));
                }
            }
        }
        Tree::new(entries).map_err(|e| fail(e.to_string()))
    }
}
