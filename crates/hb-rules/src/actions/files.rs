//! The `files` action: source files of a package, matched by patterns (symlinks and
//! non-UTF-8 names refused, see `actions::sources`), placed under an install directory
//! of the target system. Its key holds the patterns, the destination and each matched
//! file's relative path, digest and executable bit — never where the workspace is on
//! the build machine.

use std::path::PathBuf;

use hb_engine::{Action, Ctx, Inputs, JobError, Output, Source, encode_args};
use hb_store::{Tree, TreeEntry};
use serde::Serialize;

use crate::actions::sources::{self, SourceError};

#[derive(Serialize)]
struct Args<'a> {
    patterns: &'a [String],
    dest: &'a str,
    strip_prefix: &'a str,
    exact: bool,
}

/// Files matched by `patterns` in `dir`, installed under `dest`.
pub struct FilesJob {
    pub label: String,
    /// Absolute package directory (never part of the key).
    pub dir: PathBuf,
    /// Patterns (see `actions::sources`), each with where it is written (`file:line:col`)
    /// for error messages; with `exact`, plain relative paths.
    pub patterns: Vec<(String, String)>,
    /// Absolute install directory on the target (with `exact`: the file's own path).
    pub dest: String,
    pub strip_prefix: String,
    /// The patterns name one file, installed exactly at `dest`.
    pub exact: bool,
}

impl Action for FilesJob {
    type Facts = ();
    const KIND: &'static str = "files";
    const VERSION: u32 = 1;

    fn args(&self) -> Vec<u8> {
        let patterns: Vec<String> = self.patterns.iter().map(|(p, _)| p.clone()).collect();
        encode_args(&Args {
            patterns: &patterns,
            dest: &self.dest,
            strip_prefix: &self.strip_prefix,
            exact: self.exact,
        })
    }

    fn sources(&self, ctx: &Ctx) -> Result<Vec<Source>, JobError> {
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for (pattern, at) in &self.patterns {
            let bad = |e: SourceError| JobError::Failed(format!("{at}: {e}"));
            let matched = if self.exact {
                sources::find_file(&self.dir, pattern).map_err(bad)?.into_iter().collect()
            } else {
                sources::find(&self.dir, pattern).map_err(bad)?
            };
            if matched.is_empty() {
                return Err(JobError::Failed(format!(
                    "{at}: pattern `{pattern}` of {} matches no file in {}",
                    self.label,
                    self.dir.display()
                )));
            }
            found.extend(matched);
        }
        found.sort();
        found.dedup();
        let mut out = Vec::with_capacity(found.len());
        for (rel, path) in found {
            let info = ctx.source_file(&path)?;
            out.push(Source { name: rel, digest: info.digest, size: info.size, executable: info.executable });
        }
        Ok(out)
    }

    fn run(&self, _ctx: &Ctx, _: &Inputs, sources: &[Source]) -> Result<Output<()>, JobError> {
        let dest = self.dest.trim_matches('/');
        if self.exact {
            let [s] = sources else {
                return Err(JobError::Failed(format!(
                    "{}: expected exactly one file, matched {}",
                    self.label,
                    sources.len()
                )));
            };
            let tree = Tree::new(vec![TreeEntry::file(dest, s.digest, s.size, s.executable)])
                .map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
            return Ok(Output::tree(tree));
        }
        let strip = self.strip_prefix.trim_matches('/');
        let mut entries = Vec::new();
        for s in sources {
            let rel = if strip.is_empty() {
                s.name.as_str()
            } else {
                s.name.strip_prefix(strip).and_then(|r| r.strip_prefix('/')).ok_or_else(|| {
                    JobError::Failed(format!("{}: `{}` is not under strip_prefix `{strip}`", self.label, s.name))
                })?
            };
            let path = if dest.is_empty() { rel.to_string() } else { format!("{dest}/{rel}") };
            entries.push(TreeEntry::file(path, s.digest, s.size, s.executable));
        }
        let tree = Tree::new(entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output::tree(tree))
    }
}
