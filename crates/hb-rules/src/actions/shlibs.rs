//! `deb_shlibdeps`: the Depends a package's compiled code needs, computed from its ELF
//! files the way `dpkg-shlibdeps` does (`hb-shlibs`), against the `symbols` and `shlibs`
//! files of the platform's target root. The scan is a sub-action keyed by the files
//! that may be ELF objects and the root, so an edit elsewhere in the package (a config
//! file) reads nothing again; a library no root package provides, and the package does
//! not ship, fails it with the object named.

use std::collections::BTreeSet;

use hb_engine::{Action, AnyInput, Ctx, Input, Inputs, JobError, Output, Source, Step, encode_args};
use hb_store::{Digest, EntryKind, Tree};
use serde::{Deserialize, Serialize};

/// The relations the package's ELF objects need, sorted (`libc6 (>= 2.14)`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShlibsFacts {
    pub depends: Vec<String>,
    /// How many ELF objects were read.
    pub objects: usize,
}

/// `deb_shlibdeps` of one package.
pub struct ShlibsJob {
    pub label: String,
    pub layout: Input<()>,
    pub root: Input<()>,
}

/// Whether a packaged file may be an ELF object worth opening: shared objects by name,
/// and executables.
fn candidate(path: &str, executable: bool) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    executable || name.ends_with(".so") || name.contains(".so.")
}

impl Action for ShlibsJob {
    type Facts = ShlibsFacts;
    const KIND: &'static str = "deb_shlibdeps";
    const VERSION: u32 = 1;
    fn args(&self) -> Vec<u8> {
        encode_args(&())
    }
    fn inputs(&self) -> Vec<AnyInput> {
        vec![self.layout.any(), self.root.any()]
    }
    fn run(&self, ctx: &Ctx, inputs: &Inputs, _: &[Source]) -> Result<Output<ShlibsFacts>, JobError> {
        let fail = |e: hb_shlibs::ShlibsError| JobError::Failed(format!("{}: {e}", self.label));
        let layout = inputs.tree(self.layout)?;
        let root = inputs.tree(self.root)?;
        // The files that may be ELF objects, and the root: a sub-action keyed by them
        // alone, so a package edit that touches no such file (a config) reads nothing.
        let candidates: Vec<(String, Digest)> = layout
            .entries()
            .iter()
            .filter_map(|e| match &e.kind {
                EntryKind::File { digest, .. } if candidate(&e.path, e.mode & 0o111 != 0) => {
                    Some((format!("/{}", e.path), *digest))
                }
                _ => None,
            })
            .collect();
        let mut keyed = candidates.clone();
        keyed.push(("root".to_string(), root.digest()));
        let name = format!("{} (ELF files)", self.label);
        let args = encode_args(&());
        let step =
            Step { name: &name, kind: "deb_shlibdeps_scan", version: 1, args: &args, inputs: &keyed, bytes_in: 0 };
        ctx.memo::<ShlibsFacts>(&step, || {
            let mut objects = Vec::new();
            let mut shipped = BTreeSet::new();
            for (path, digest) in &candidates {
                let bytes = ctx.store.read_blob(digest)?;
                if let Some(obj) = hb_shlibs::read(path, &bytes).map_err(fail)? {
                    shipped.insert(path.rsplit('/').next().unwrap_or(path).to_string());
                    shipped.extend(obj.soname.clone());
                    objects.push((path.clone(), obj));
                }
            }
            let mut db = hb_shlibs::Db::default();
            if !objects.is_empty() {
                read_db(ctx, root, &mut db)?;
            }
            let depends = hb_shlibs::depends(&objects, &shipped, &db).map_err(fail)?;
            Ok(Output {
                tree: Tree::default(),
                facts: ShlibsFacts { depends, objects: objects.len() },
                exports: Vec::new(),
            })
        })
    }
}

/// The root's symbols and shlibs files, as hb-root keeps them.
fn read_db(ctx: &Ctx, root: &Tree, db: &mut hb_shlibs::Db) -> Result<(), JobError> {
    let dir = format!("{}/", hb_root::unpack::INFO_DIR);
    for e in root.entries() {
        let (EntryKind::File { digest, .. }, Some(name)) = (&e.kind, e.path.strip_prefix(&dir)) else { continue };
        let read =
            || -> Result<String, JobError> { Ok(String::from_utf8_lossy(&ctx.store.read_blob(digest)?).into_owned()) };
        if let Some(package) = name.strip_suffix(".symbols") {
            db.add_symbols(package, &read()?);
        } else if let Some(package) = name.strip_suffix(".shlibs") {
            db.add_shlibs(package, &read()?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_objects_and_executables_are_opened() {
        assert!(candidate("usr/lib/x/_speedups.cpython-311-x86_64-linux-gnu.so", false));
        assert!(candidate("usr/lib/x/libz-abc.so.1.2.13", false));
        assert!(candidate("usr/bin/tool", true));
        assert!(!candidate("usr/lib/x/site.css", false));
    }
}
