//! The `render` action: files generated while planning (templates, changelog) put into
//! the store. Their paths, modes and bytes are its arguments, so its key changes exactly
//! when a generated file would.

use hb_engine::{Action, Ctx, Inputs, JobError, Output, Source, encode_args};
use hb_store::{Tree, TreeEntry};

/// `render`: generated files into the store.
pub struct RenderJob {
    pub label: String,
    /// (path relative to `/`, mode, bytes)
    pub files: Vec<(String, u32, Vec<u8>)>,
}

impl Action for RenderJob {
    type Facts = ();
    const KIND: &'static str = "render";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        encode_args(&self.files)
    }
    fn run(&self, ctx: &Ctx, _: &Inputs, _: &[Source]) -> Result<Output<()>, JobError> {
        let mut entries = Vec::new();
        for (path, mode, bytes) in &self.files {
            let digest = ctx.store.put_bytes(bytes)?;
            entries.push(TreeEntry::file(path.clone(), digest, bytes.len() as u64, *mode & 0o111 != 0));
        }
        let tree = Tree::new(entries).map_err(|e| JobError::Failed(format!("{}: {e}", self.label)))?;
        Ok(Output::tree(tree))
    }
}
