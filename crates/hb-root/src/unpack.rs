//! Unpacking a root's `.deb` files into one tree, the way dpkg would place their data
//! but without running any maintainer script: packages are applied in name order (a
//! path shipped twice keeps the later package's), `/bin`, `/sbin` and `/lib*` are the
//! merged-/usr symlinks into `/usr` and what packages ship there lands under `/usr`,
//! hard links become copies, devices and fifos are dropped, and modes are normalized
//! to 0755/0644 (no setuid in a build root), documentation, manual pages and
//! translations are left out. Directories a sandbox mounts over (`proc`, `dev`, `tmp`,
//! the work directory) are added, empty. Of the control members only the `symbols` and
//! `shlibs` files are kept, as `var/lib/dpkg/info/PACKAGE.{symbols,shlibs}`: Depends are
//! computed from them. Packages are decompressed on several threads, each file stored
//! as it is read (one file in memory per thread, never a whole package); the tree is
//! assembled afterwards in name order, so it is the same whatever the threads did.

use std::collections::BTreeMap;

use hb_diff::{Content, EntryKind as DebKind};
use hb_store::{Digest, EntryKind, TreeEntry};

use crate::RootError;

/// Top-level directories that are symlinks into `/usr` in a merged-/usr system.
const MERGED: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// What a build root leaves out, like a minimal image's dpkg `path-exclude`:
/// documentation, manual pages and translations (builds run with `LANG=C.UTF-8`).
const EXCLUDED: &[&str] =
    &["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian"];

/// Whether `rel` is left out of a root.
fn excluded(rel: &str) -> bool {
    EXCLUDED.iter().any(|x| rel.strip_prefix(x).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
}

/// Where a root keeps its packages' control files (dpkg's own place).
pub const INFO_DIR: &str = "var/lib/dpkg/info";

/// The control files a root keeps: what mapping a library to its package needs.
const KEPT_CONTROL_FILES: &[&str] = &["shlibs", "symbols"];

/// Empty directories every root has, for the sandbox's mounts.
pub const MOUNT_POINTS: &[&str] = &["dev", "proc", "tmp", "hb", "hb/build", "hb/home", "root", "run", "var/tmp"];

/// Where a dpkg path ("/lib/x/y") goes in the merged-/usr root ("usr/lib/x/y");
/// `None` for the root itself.
fn place(dpkg_path: &str) -> Option<String> {
    let rel = dpkg_path.trim_start_matches('/');
    if rel.is_empty() {
        return None;
    }
    let first = rel.split('/').next().unwrap_or(rel);
    if MERGED.contains(&first) { Some(format!("usr/{rel}")) } else { Some(rel.to_string()) }
}

/// Stores a file's bytes, giving their digest; called from several threads at once.
pub type Put<'a> = &'a (dyn Fn(&[u8]) -> Result<Digest, RootError> + Sync);

/// One package's entries (root path, entry), in the order it lists them.
type Part = Vec<(String, TreeEntry)>;

/// Builds the root's entries from `debs` (name, path of the verified `.deb`), storing
/// file contents with `put`. The packages are read (decompressed, their files stored) on
/// up to `threads` threads; their entries are then applied one package after another
/// in name order, so the tree does not depend on which thread finished first.
pub fn unpack(debs: &[(String, std::path::PathBuf)], put: Put, threads: usize) -> Result<Vec<TreeEntry>, RootError> {
    let mut sorted: Vec<&(String, std::path::PathBuf)> = debs.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((name, path)) = sorted.get(i) else { break };
            let part = unpack_one(name, path, put);
            let failed = part.is_err();
            done.push((i, part));
            if failed {
                break;
            }
        }
        done
    };
    let mut parts: Vec<(usize, Result<Part, RootError>)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads.clamp(1, sorted.len().max(1))).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            // A helper that panicked is a bug in hb: it would leave packages out.
            all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        all
    });
    parts.sort_by_key(|(i, _)| *i);
    let mut entries: BTreeMap<String, TreeEntry> = BTreeMap::new();
    for d in MOUNT_POINTS {
        entries.insert(d.to_string(), TreeEntry::dir(*d));
    }
    for (_, part) in parts {
        for (rel, entry) in part? {
            match entries.get(&rel) {
                // A directory stays a directory when another package ships it too.
                Some(old) if old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {}
                _ => {
                    entries.insert(rel, entry);
                }
            }
        }
    }
    for m in MERGED {
        let usr = format!("usr/{m}");
        if entries.contains_key(&usr) || *m == "bin" || *m == "sbin" || *m == "lib" {
            entries.entry(usr.clone()).or_insert_with(|| TreeEntry::dir(usr.clone()));
            entries.insert(m.to_string(), TreeEntry::symlink(*m, usr));
        }
    }
    // Every entry's parent directories exist as directories. One under a symlink
    // (packages disagreeing whether a path is a directory) is refused: writing it out
    // would follow the link, perhaps out of the root.
    let paths: Vec<String> = entries.keys().cloned().collect();
    for p in paths {
        let mut parent = p.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            match entries.get(up) {
                Some(e) if e.kind != EntryKind::Dir => {
                    return Err(RootError::Unpack {
                        package: "(the root)".into(),
                        detail: format!("/{p} would be under /{up}, which a package ships as a symlink or file"),
                    });
                }
                Some(_) => {}
                None => {
                    entries.insert(up.to_string(), TreeEntry::dir(up));
                }
            }
            parent = up;
        }
    }
    Ok(entries.into_values().collect())
}

/// One package's entries, in the order its data lists them (then its kept control
/// files), its files stored with `put`.
fn unpack_one(name: &str, path: &std::path::Path, put: Put) -> Result<Part, RootError> {
    let mut out = Vec::new();
    // Each file is stored as it is decompressed (one file in memory, not the package);
    // what the root leaves out is not stored at all.
    let mut stored: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    let mut failed = None;
    let mut on_file = |dpkg_path: &str, bytes: &[u8]| -> std::io::Result<()> {
        if place(dpkg_path).is_none_or(|rel| excluded(&rel)) {
            return Ok(());
        }
        match put(bytes) {
            Ok(digest) => {
                stored.insert(dpkg_path.to_string(), (digest, bytes.len() as u64));
                Ok(())
            }
            Err(e) => {
                failed = Some(e);
                Err(std::io::Error::other("the store refused a file"))
            }
        }
    };
    let read = hb_diff::read_deb_streaming(path, &mut on_file);
    let deb = match (read, failed) {
        (Ok(deb), None) => deb,
        (_, Some(e)) => return Err(e),
        (Err(e), None) => return Err(RootError::Unpack { package: name.to_string(), detail: e.to_string() }),
    };
    // Contents by dpkg path, for hard links.
    let mut contents: BTreeMap<&str, (Digest, u64, bool)> = BTreeMap::new();
    for (dpkg_path, e) in &deb.data {
        let Some(rel) = place(dpkg_path) else { continue };
        if excluded(&rel) {
            continue;
        }
        if !hb_store::tree::is_clean_relative(&rel) {
            return Err(RootError::Unpack {
                package: name.to_string(),
                detail: format!("unsafe path {dpkg_path:?} in its data"),
            });
        }
        if rel.strip_prefix("usr/").is_some_and(|top| MERGED.contains(&top)) {
            // A package shipping `/lib64` itself (a symlink or directory): the root
            // has its own merged-/usr links.
            if !matches!(e.kind, DebKind::Dir) {
                continue;
            }
        }
        let entry = match &e.kind {
            DebKind::Dir => TreeEntry::dir(rel.clone()),
            DebKind::File => {
                let Some(&(digest, size)) = stored.get(dpkg_path.as_str()) else {
                    return Err(RootError::Unpack {
                        package: name.to_string(),
                        detail: format!("{dpkg_path}: content not read"),
                    });
                };
                let exec = e.mode & 0o111 != 0;
                contents.insert(dpkg_path.as_str(), (digest, size, exec));
                TreeEntry::file(rel.clone(), digest, size, exec)
            }
            DebKind::Symlink { target } => TreeEntry::symlink(rel.clone(), target.clone()),
            DebKind::Hardlink { target } => match contents.get(target.as_str()) {
                Some((digest, size, exec)) => TreeEntry::file(rel.clone(), *digest, *size, *exec),
                None => {
                    return Err(RootError::Unpack {
                        package: name.to_string(),
                        detail: format!("{dpkg_path} is a hard link to {target}, which comes later or not at all"),
                    });
                }
            },
            _ => continue,
        };
        out.push((rel, entry));
    }
    // What dpkg-shlibdeps reads of an installed library package: its symbols and
    // shlibs control files, where dpkg keeps them.
    let package = deb.field("Package").unwrap_or(name).to_string();
    for control in KEPT_CONTROL_FILES {
        if let Some(Content::Bytes(bytes)) = deb.control_files.get(*control).and_then(|e| e.content.as_ref()) {
            let rel = format!("{INFO_DIR}/{package}.{control}");
            if !hb_store::tree::is_clean_relative(&rel) {
                return Err(RootError::Unpack {
                    package: name.to_string(),
                    detail: format!("unsafe package name {package:?}"),
                });
            }
            let digest = put(bytes)?;
            out.push((rel.clone(), TreeEntry::file(rel, digest, bytes.len() as u64, false)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A real .deb named `name` from `files` (path, content; content `->T` makes a
    /// symlink to T), built by dpkg-deb.
    fn deb(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = dir.join(format!("{name}-tree"));
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            format!("Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"),
        )
        .unwrap();
        for (path, content) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            match content.strip_prefix("->") {
                Some(target) => std::os::unix::fs::symlink(target, &p).unwrap(),
                None => std::fs::write(&p, content).unwrap(),
            }
        }
        let out = dir.join(format!("{name}.deb"));
        let status = Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&out)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        out
    }

    fn unpack_all(debs: &[(String, PathBuf)]) -> Result<Vec<TreeEntry>, RootError> {
        let put = |b: &[u8]| Ok(Digest::of(b));
        let one = unpack(debs, &put, 1)?;
        // Read on several threads, the same tree.
        assert_eq!(unpack(debs, &put, 3)?, one);
        Ok(one)
    }

    #[test]
    fn real_debs_make_a_merged_usr_tree() {
        let d = tempfile::tempdir().unwrap();
        let a = deb(d.path(), "aa", &[("lib/x86_64-linux-gnu/libz.so.1", "z"), ("bin/tool", "#!/bin/sh\n")]);
        let b = deb(d.path(), "bb", &[("usr/lib/x86_64-linux-gnu/libz.so", "->libz.so.1"), ("etc/bb.conf", "b")]);
        let entries = unpack_all(&[("bb".into(), b), ("aa".into(), a)]).unwrap();
        let find = |p: &str| entries.iter().find(|e| e.path == p).unwrap_or_else(|| panic!("no {p}")).kind.clone();
        assert!(matches!(find("usr/lib/x86_64-linux-gnu/libz.so.1"), EntryKind::File { .. }));
        assert!(matches!(find("usr/bin/tool"), EntryKind::File { .. }));
        assert_eq!(find("lib"), EntryKind::Symlink { target: "usr/lib".into() });
        assert_eq!(find("bin"), EntryKind::Symlink { target: "usr/bin".into() });
        assert_eq!(find("usr/lib/x86_64-linux-gnu/libz.so"), EntryKind::Symlink { target: "libz.so.1".into() });
        for m in MOUNT_POINTS {
            assert_eq!(find(m), EntryKind::Dir);
        }
        assert!(hb_store::Tree::new(entries).is_ok(), "a valid tree");
    }

    #[test]
    fn a_path_under_another_packages_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = deb(d.path(), "aa", &[("opt/x/file", "f")]);
        let b = deb(d.path(), "bb", &[("opt/x", "->/etc")]);
        let err = unpack_all(&[("aa".into(), a), ("bb".into(), b)]).unwrap_err().to_string();
        assert!(err.contains("/opt/x/file would be under /opt/x"), "{err}");
    }

    #[test]
    fn merged_usr_placement() {
        assert_eq!(place("/lib/x86_64-linux-gnu/libc.so.6").as_deref(), Some("usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert_eq!(place("/lib64/ld-linux-x86-64.so.2").as_deref(), Some("usr/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(place("/usr/bin/python3.11").as_deref(), Some("usr/bin/python3.11"));
        assert_eq!(place("/libexec/x").as_deref(), Some("libexec/x"));
        assert_eq!(place("/"), None);
        assert!(excluded("usr/share/doc/libc6/copyright") && excluded("usr/share/locale"));
        assert!(!excluded("usr/share/docs-not") && !excluded("usr/share/python3"));
    }
}
