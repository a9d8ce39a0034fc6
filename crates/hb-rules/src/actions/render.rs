//! The `render` action: files generated while planning (templates, changelog) put into
//! the store, `.gz` ones compressed here. Their paths, modes and texts are its
//! arguments, so its key changes exactly when a generated file would.

use hb_engine::{Action, Ctx, Inputs, JobError, Output, Source, encode_args};
use hb_store::{Tree, TreeEntry};

/// `render`: generated files into the store.
pub struct RenderJob {
    pub label: String,
    /// (path relative to `/`, mode, bytes). A path ending in `.gz` holds the text to
    /// compress: the action gzips it (`hb_deb::gzip`, deterministic) when it runs, so
    /// planning, which every no-op does, never compresses.
    pub files: Vec<(String, u32, Vec<u8>)>,
}

impl Action for RenderJob {
    type Facts = ();
    const KIND: &'static str = "render";
    const VERSION: u32 = 2;
    fn args(&self) -> Vec<u8> {
        encode_args(&self.files)
    }
    fn run(&self, ctx: &Ctx, _: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let mut entries = Vec::new();
        for (path, mode, text) in &self.files {
            let mut gz = Vec::new();
            let bytes = if path.ends_with(".gz") {
                hb_deb::gzip::compress_member(&mut text.as_slice(), &mut gz)
                    .map_err(|e| JobError::Failed(format!("{}: compressing {path}: {e}", self.label)))?;
                &gz
            } else {
                text
            };
            let digest = ctx.store.put_bytes(bytes)?;
            entries.push(TreeEntry::file(path.clone(), digest, bytes.len() as u64, *mode & 0o111 != 0));
        }
        let tree = Tree::new(entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output::tree(tree))
    }
}
