//! The actions of target roots:
//!
//! - `deb_fetch`: one locked `.deb` into the store (fixed output, keyed by file name and
//!   sha256; taken from hb's download directory or apt's archive cache when the bytes
//!   match, else downloaded through the machine's apt; verified before it is stored);
//! - `root`: a platform's root tree, unpacked by hb from its `.deb` files (no
//!   maintainer scripts). Its result digest enters the key of every action run in it.
//!
//! [`materialized`] writes a root tree out once per digest, read-only, for the sandbox.

use std::path::{Path, PathBuf};

use hb_engine::{Action, Ctx, Input, Inputs, JobError, Output, Source, encode_args};
use hb_platform::Platform;
use hb_root::RootPackage;
use hb_root::apt::Apt;
use hb_store::{Digest, EntryKind, Store, Tree, TreeEntry};

/// The private apt's directory: `HB_APT_DIR`, else `apt/` in the cache directory.
pub fn apt_base(store: &Store, configured: Option<&Path>) -> PathBuf {
    configured.map(Path::to_path_buf).unwrap_or_else(|| store.location().join("apt"))
}

/// `deb_fetch`: one root package.
pub struct DebFetchJob {
    pub package: RootPackage,
    /// The root's other packages, downloaded in the same apt run when missing (not in
    /// the key).
    pub batch: std::sync::Arc<Vec<RootPackage>>,
    pub platform: &'static Platform,
    /// Where the private apt keeps its state (not in the key: where bytes come from
    /// never decides what they are).
    pub apt_dir: Option<PathBuf>,
}

fn root_error(e: hb_root::RootError) -> JobError {
    JobError::Failed(e.to_string())
}

impl Action for DebFetchJob {
    type Facts = ();
    const KIND: &'static str = "deb_fetch";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        encode_args(&(&self.package.file, &self.package.sha256))
    }
    fn always_complete(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx, _: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let p = &self.package;
        let apt = Apt::new(&apt_base(ctx.store, self.apt_dir.as_deref()), self.platform);
        let kept = apt.debs().join(&p.file);
        let host_cache = Path::new("/var/cache/apt/archives").join(&p.file);
        let mut found = None;
        for candidate in [&kept, &host_cache] {
            if candidate.is_file() && hb_root::sha256_file(candidate).map_err(root_error)? == p.sha256 {
                found = Some(candidate.clone());
                break;
            }
        }
        let path = match found {
            Some(path) => path,
            None => {
                hb_fs::create_dir_all(&apt.debs())?;
                let tmp = tempfile::tempdir_in(apt.debs())
                    .map_err(|e| JobError::Fs(hb_fs::FsError::new("creating a directory in", &apt.debs(), e)))?;
                let named = |e: hb_root::RootError| {
                    JobError::Failed(format!(
                        "could not fetch root package {} {} ({}): {e}",
                        p.name, p.version, p.architecture
                    ))
                };
                let Some(got) = apt.download(p, &self.batch, tmp.path()).map_err(named)? else {
                    return Err(root_error(hb_root::RootError::Vanished {
                        package: p.name.clone(),
                        version: p.version.clone(),
                        architecture: p.architecture.clone(),
                        platform: self.platform.name.to_string(),
                    }));
                };
                let actual = hb_root::sha256_file(&got).map_err(root_error)?;
                if actual != p.sha256 {
                    return Err(root_error(hb_root::RootError::HashMismatch {
                        file: format!("{} ({} {})", p.file, p.name, p.version),
                        expected: p.sha256.clone(),
                        actual,
                        source_desc: "apt".to_string(),
                    }));
                }
                std::fs::rename(&got, &kept).map_err(|e| hb_fs::FsError::new("keeping", &kept, e))?;
                kept
            }
        };
        let (digest, size) = ctx.store.put_file(&path)?;
        let tree = Tree::new(vec![TreeEntry::file(p.file.clone(), digest, size, false)])
            .map_err(|e| JobError::Failed(format!("{}: {e}", p.file)))?;
        Ok(Output::tree(tree))
    }
}

/// How roots are unpacked; a change here changes every root's key.
const UNPACK_FORMAT: u32 = 3;

/// `root`: a platform's root tree from its packages.
pub struct RootJob {
    pub platform: &'static Platform,
    pub debs: Vec<(String, Input<()>)>,
}

impl Action for RootJob {
    type Facts = ();
    const KIND: &'static str = "root";
    const VERSION: u32 = UNPACK_FORMAT;
    fn args(&self) -> Vec<u8> {
        let names: Vec<&str> = self.debs.iter().map(|(n, _)| n.as_str()).collect();
        encode_args(&(self.platform.name, hb_root::unpack::MOUNT_POINTS, names))
    }
    fn inputs(&self) -> Vec<hb_engine::AnyInput> {
        self.debs.iter().map(|(_, i)| i.any()).collect()
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let mut debs = Vec::new();
        for (name, input) in &self.debs {
            let tree = inputs.tree(*input)?;
            for e in tree.entries() {
                if let EntryKind::File { digest, .. } = &e.kind {
                    // The deb reader opens the blob's file itself: check it first, so a
                    // corrupt blob is removed and its fetch runs again (invariant 2).
                    ctx.store.verify_blob(digest)?;
                    debs.push((name.clone(), ctx.store.blob_path(digest)));
                }
            }
        }
        let put = |b: &[u8]| ctx.store.put_bytes(b).map_err(hb_root::RootError::Store);
        // Decompressing the packages is most of the work: on up to -j threads.
        let entries = hb_root::unpack::unpack(&debs, &put, ctx.jobs()).map_err(root_error)?;
        let tree = Tree::new(entries).map_err(|e| JobError::Failed(format!("root of {}: {e}", self.platform.name)))?;
        Ok(Output::tree(tree))
    }
}

/// The root `tree` written out under the store's `roots/` directory, once per digest
/// (atomically: a partial one is never seen), for the sandbox to mount read-only;
/// written on up to `threads` threads. It is sealed when written and its seal checked
/// on first use in a process ([`hb_fs::seal`]): one changed on disk is written again,
/// and `warn` says so, before any command runs in it.
pub fn materialized(store: &Store, tree: &Tree, threads: usize, warn: &dyn Fn(&str)) -> Result<PathBuf, JobError> {
    let bytes = postcard::to_stdvec(tree).map_err(|e| JobError::Failed(format!("encoding a root tree: {e}")))?;
    let digest = Digest::of(&bytes);
    let base = store.location().join("roots");
    let (dir, sealed) = hb_fs::dir_once_sealed(&base, &digest.hex(), |tmp| {
        crate::actions::python::materialize(&|d: &Digest| store.read_blob(d), tree.entries(), tmp, 0, threads)
    })?;
    if let hb_fs::Sealed::Rewritten { why } = sealed {
        warn(&format!(
            "the written-out tree {} was not as hb left it ({why}); it was written again from the cache before anything ran in it",
            dir.display()
        ));
    }
    Ok(dir)
}
