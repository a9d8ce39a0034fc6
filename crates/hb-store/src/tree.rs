//! Tree manifests: the output of every action. A sorted list of entries (path, kind,
//! mode, content digest or symlink target) with no mtimes and no owners; those are
//! set only when packaging, from the normalization policy.

use serde::{Deserialize, Serialize};

use crate::Digest;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir,
    File { digest: Digest, size: u64 },
    Symlink { target: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Relative, `/`-separated, no `.` or `..` components, no leading or trailing `/`.
    pub path: String,
    pub mode: u32,
    pub kind: EntryKind,
}

impl TreeEntry {
    pub fn file(path: impl Into<String>, digest: Digest, size: u64, executable: bool) -> Self {
        let mode = if executable { 0o755 } else { 0o644 };
        TreeEntry { path: path.into(), mode, kind: EntryKind::File { digest, size } }
    }
    pub fn dir(path: impl Into<String>) -> Self {
        TreeEntry { path: path.into(), mode: 0o755, kind: EntryKind::Dir }
    }
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        TreeEntry { path: path.into(), mode: 0o777, kind: EntryKind::Symlink { target: target.into() } }
    }
}

/// A sorted set of entries; paths are unique.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    entries: Vec<TreeEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    #[error("path `{0}` appears twice")]
    Duplicate(String),
    #[error("path `{0}` is not a clean relative path")]
    BadPath(String),
}

/// True for `a/b/c`: relative, no empty, `.` or `..` components.
pub fn is_clean_relative(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Bytewise order of paths where a directory sorts right before its contents
/// (compare component by component).
pub fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

impl Tree {
    pub fn new(mut entries: Vec<TreeEntry>) -> Result<Tree, TreeError> {
        for e in &entries {
            if !is_clean_relative(&e.path) {
                return Err(TreeError::BadPath(e.path.clone()));
            }
        }
        entries.sort_by(|a, b| path_order(&a.path, &b.path));
        for w in entries.windows(2) {
            if w[0].path == w[1].path {
                return Err(TreeError::Duplicate(w[0].path.clone()));
            }
        }
        Ok(Tree { entries })
    }

    pub fn entries(&self) -> &[TreeEntry] {
        &self.entries
    }

    pub fn into_entries(self) -> Vec<TreeEntry> {
        self.entries
    }

    /// Canonical encoding; its blake3 is the tree's digest.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("trees always encode")
    }

    pub fn digest(&self) -> Digest {
        Digest::of(&self.encode())
    }

    /// Every file digest in the tree.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.entries.iter().filter_map(|e| match &e.kind {
            EntryKind::File { digest, .. } => Some(digest),
            _ => None,
        })
    }

    /// The total size of the tree's files.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_with_dirs_before_contents() {
        let t = Tree::new(vec![
            TreeEntry::dir("a-b"),
            TreeEntry::file("a/x", Digest::of(b""), 0, false),
            TreeEntry::dir("a"),
        ])
        .unwrap();
        let paths: Vec<_> = t.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/x", "a-b"]);
    }

    #[test]
    fn rejects_duplicates_and_unclean_paths() {
        assert!(Tree::new(vec![TreeEntry::dir("a"), TreeEntry::dir("a")]).is_err());
        for bad in ["/a", "a/../b", "a//b", "", "./a"] {
            assert!(Tree::new(vec![TreeEntry::dir(bad)]).is_err(), "{bad}");
        }
    }
}
