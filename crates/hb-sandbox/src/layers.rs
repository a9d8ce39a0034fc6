//! Layers: directories of the build machine placed read-only at absolute paths of the
//! sandbox, over the target root (a build step's tools: an app's virtualenv at its
//! install prefix). The root is mounted read-only and may not have a directory to
//! mount on, so each directory on the way to a layer becomes a directory holding the
//! root's own entries (bound one by one) plus the way further down, all in
//! bubblewrap's own root tmpfs, which is remounted read-only once everything is in
//! place. Nothing is
//! copied, and the root stays shared and untouched.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::SandboxError;

/// A directory (or file) of the build machine seen read-only at `at` in the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub host: PathBuf,
    /// An absolute, clean path inside the sandbox.
    pub at: String,
}

/// What the root has at a path.
enum Has {
    Nothing,
    Dir,
    Other(&'static str),
}

fn has(root: &Path, rel: &str) -> Has {
    match std::fs::symlink_metadata(root.join(rel)) {
        Err(_) => Has::Nothing,
        Ok(m) if m.file_type().is_dir() => Has::Dir,
        Ok(m) if m.file_type().is_symlink() => Has::Other("a symlink"),
        Ok(_) => Has::Other("a file"),
    }
}

fn layer_error(at: &str, why: impl Into<String>) -> SandboxError {
    SandboxError::Layer { at: at.to_string(), why: why.into() }
}

/// The layers that place the contents of `tree` (a directory whose relative paths are
/// paths of the target system, like a written-out virtualenv tree `usr/lib/app/...`)
/// over `root`: the shallowest paths the root does not have. A path where the root
/// has a file or symlink and the tree has something else is an error.
pub fn layers_of_tree(root: &Path, tree: &Path) -> Result<Vec<Layer>, SandboxError> {
    let mut out = Vec::new();
    walk_tree(root, tree, "", &mut out)?;
    Ok(out)
}

fn walk_tree(root: &Path, tree: &Path, rel: &str, out: &mut Vec<Layer>) -> Result<(), SandboxError> {
    let dir = tree.join(rel);
    let entries = hb_fs::read_dir_sorted(&dir).map_err(|e| layer_error(&format!("/{rel}"), e.to_string()))?;
    for e in entries {
        let name = e.file_name();
        let Some(name) = name.to_str() else {
            return Err(layer_error(&format!("/{rel}"), format!("a name that is not UTF-8: {name:?}")));
        };
        let path = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        match has(root, &path) {
            Has::Nothing => out.push(Layer { host: tree.join(&path), at: format!("/{path}") }),
            Has::Dir if is_dir => walk_tree(root, tree, &path, out)?,
            Has::Dir => return Err(layer_error(&format!("/{path}"), "the target root has a directory there")),
            Has::Other(what) => {
                return Err(layer_error(&format!("/{path}"), format!("the target root has {what} there")));
            }
        }
    }
    Ok(())
}

/// bubblewrap arguments mounting `root` read-only as `/` with `layers` over it, and the
/// directories to remount read-only after every other mount is made (the caller adds
/// `--remount-ro` for each, last).
pub fn mount_args(root: &Path, layers: &[Layer]) -> Result<(Vec<OsString>, Vec<String>), SandboxError> {
    let mut args: Vec<OsString> = Vec::new();
    if layers.is_empty() {
        args.extend(["--ro-bind".into(), root.as_os_str().to_owned(), "/".into()]);
        return Ok((args, Vec::new()));
    }
    let mut targets: BTreeSet<String> = BTreeSet::new();
    // Directories on the way to a layer, without the leading `/` ("" is `/` itself).
    let mut ways: BTreeSet<String> = BTreeSet::new();
    for l in layers {
        let rel = l.at.strip_prefix('/').filter(|r| clean(r)).ok_or_else(|| {
            layer_error(&l.at, "a layer's path must be absolute and clean (no `.`, `..` or empty components)")
        })?;
        if !targets.insert(rel.to_string()) {
            return Err(layer_error(&l.at, "two layers at one path"));
        }
        let mut way = String::new();
        ways.insert(String::new());
        for c in rel.split('/').collect::<Vec<_>>().split_last().map_or(&[][..], |(_, init)| init) {
            way = if way.is_empty() { (*c).to_string() } else { format!("{way}/{c}") };
            ways.insert(way.clone());
        }
    }
    if let Some(t) = targets.iter().find(|t| ways.contains(*t)) {
        return Err(layer_error(&format!("/{t}"), "a layer lies inside another layer"));
    }
    // Parents sort before their children, so each directory exists before its entries.
    for way in &ways {
        match has(root, way) {
            Has::Dir => {}
            Has::Nothing => {
                args.extend(["--dir".into(), format!("/{way}").into()]);
                continue;
            }
            Has::Other(what) => {
                return Err(layer_error(
                    &format!("/{way}"),
                    format!("the target root has {what} there, not a directory"),
                ));
            }
        }
        for e in hb_fs::read_dir_sorted(&root.join(way)).map_err(|e| layer_error(&format!("/{way}"), e.to_string()))? {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = if way.is_empty() { name.to_string() } else { format!("{way}/{name}") };
            if targets.contains(&path) {
                continue;
            }
            let host = root.join(&path);
            if ways.contains(&path) {
                if matches!(has(root, &path), Has::Dir) {
                    args.extend(["--dir".into(), format!("/{path}").into()]);
                }
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_symlink()) {
                let to = hb_fs::read_link(&host).map_err(|e| layer_error(&format!("/{path}"), e.to_string()))?;
                args.extend(["--symlink".into(), to.into_os_string(), format!("/{path}").into()]);
            } else {
                args.extend(["--ro-bind".into(), host.into_os_string(), format!("/{path}").into()]);
            }
        }
    }
    for l in layers {
        args.extend(["--ro-bind".into(), l.host.as_os_str().to_owned(), l.at.clone().into()]);
    }
    // The directories on the way are all in bubblewrap's own root tmpfs.
    Ok((args, vec!["/".to_string()]))
}

fn clean(rel: &str) -> bool {
    !rel.is_empty() && rel.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for dir in ["usr/bin", "usr/lib/python3", "etc", "tmp"] {
            std::fs::create_dir_all(d.path().join(dir)).unwrap();
        }
        std::fs::write(d.path().join("usr/bin/python3"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", d.path().join("bin")).unwrap();
        d
    }

    #[test]
    fn a_tree_is_layered_where_the_root_has_nothing() {
        let r = root();
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/lib/app/bin")).unwrap();
        std::fs::create_dir_all(t.path().join("opt/x")).unwrap();
        let layers = layers_of_tree(r.path(), t.path()).unwrap();
        let at: Vec<&str> = layers.iter().map(|l| l.at.as_str()).collect();
        assert_eq!(at, ["/opt", "/usr/lib/app"]);
    }

    #[test]
    fn a_tree_that_collides_with_a_root_file_or_symlink_is_refused() {
        let r = root();
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("bin/x")).unwrap();
        let e = layers_of_tree(r.path(), t.path()).unwrap_err().to_string();
        assert!(e.contains("/bin") && e.contains("symlink"), "{e}");
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        std::fs::write(t.path().join("usr/bin/python3"), "").unwrap();
        let e = layers_of_tree(r.path(), t.path()).unwrap_err().to_string();
        assert!(e.contains("/usr/bin/python3") && e.contains("a file"), "{e}");
    }

    #[test]
    fn the_way_to_a_layer_binds_the_root_entries_one_by_one() {
        let r = root();
        let layers = [Layer { host: "/h/app".into(), at: "/usr/lib/app".into() }];
        let (args, remount) = mount_args(r.path(), &layers).unwrap();
        let args: Vec<String> =
            args.iter().map(|a| a.to_string_lossy().replace(&*r.path().to_string_lossy(), "R")).collect();
        let text = args.join(" ");
        assert_eq!(
            text,
            "--symlink usr/bin /bin --ro-bind R/etc /etc --ro-bind R/tmp /tmp --dir /usr \
             --ro-bind R/usr/bin /usr/bin --dir /usr/lib --ro-bind R/usr/lib/python3 /usr/lib/python3 \
             --ro-bind /h/app /usr/lib/app"
        );
        assert_eq!(remount, ["/"]);
        let (plain, none) = mount_args(r.path(), &[]).unwrap();
        assert_eq!(plain.len(), 3);
        assert!(none.is_empty());
    }

    #[test]
    fn bad_layers_are_refused() {
        let r = root();
        for (at, why) in [("usr/x", "absolute"), ("/usr/../x", "clean"), ("/bin/x", "symlink")] {
            let e = mount_args(r.path(), &[Layer { host: "/h".into(), at: at.into() }]).unwrap_err().to_string();
            assert!(e.contains(why), "{at}: {e}");
        }
        let nested =
            [Layer { host: "/h".into(), at: "/opt/a".into() }, Layer { host: "/h".into(), at: "/opt/a/b".into() }];
        assert!(mount_args(r.path(), &nested).unwrap_err().to_string().contains("inside another"));
    }
}
