//! The roots `hb test` installs into: a minimal Debian of the package's release and
//! architecture that boots (minbase plus systemd, systemd-sysv, dbus, python3, adduser
//! and procps), made once by mmdebstrap from this machine's apt sources and kept under
//! the cache directory. It is written to a temporary name and renamed when complete, so
//! an interrupted run never leaves half a root in use. Tests only ever read it.
//! [`shifted`] keeps a copy of it owned by a range of IDs that are nobody on this
//! machine, for a container whose root is root only inside (made the same way: staged,
//! then renamed; remade when its root is).

use std::path::{Path, PathBuf};

use crate::InstallError;

/// What a test root holds besides minbase.
pub const INCLUDE: &str = "systemd,systemd-sysv,dbus,python3,adduser,procps";

/// The test root of `suite` on `architecture`, made if it does not exist yet (then
/// `true`).
pub fn test_root(dir: &Path, suite: &str, architecture: &str) -> Result<(PathBuf, bool), InstallError> {
    let root = dir.join(format!("{suite}-{architecture}"));
    if root.join("usr/bin/python3").exists() {
        return Ok((root, false));
    }
    // A copy shifted from an earlier root of this name is stale now.
    if let Some(parent) = root.parent() {
        let prefix = format!("{suite}-{architecture}.uid-");
        for entry in hb_fs::read_dir_sorted(parent).unwrap_or_default() {
            if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) {
                let _ = hb_fs::remove_dir_all_if_exists(&entry.path());
            }
        }
    }
    hb_fs::create_dir_all(dir).map_err(|e| InstallError::Setup(e.to_string()))?;
    let staged = tempfile::Builder::new()
        .prefix(&format!(".{suite}-{architecture}-"))
        .tempdir_in(dir)
        .map_err(|e| InstallError::Setup(format!("creating a directory in {}: {e}", dir.display())))?;
    let out = hb_fs::env::command("mmdebstrap")
        .args(["--quiet", "--variant=minbase", &format!("--include={INCLUDE}"), "--format=directory"])
        .arg(format!("--architectures={architecture}"))
        .arg(suite)
        .arg(staged.path())
        .output()
        .map_err(|e| {
            InstallError::Setup(format!(
                "cannot run mmdebstrap ({e}): install it (apt install mmdebstrap) to make test roots"
            ))
        })?;
    if !out.status.success() {
        return Err(InstallError::Setup(format!(
            "mmdebstrap could not make the {suite} {architecture} root from this machine's apt sources:\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let staged = staged.keep();
    if std::fs::rename(&staged, &root).is_err() {
        // Another hb test made it meanwhile: theirs is as good.
        let _ = hb_fs::remove_dir_all_if_exists(&staged);
    }
    Ok((root, true))
}

/// A copy of the test root `root` whose files are owned by IDs `base`.. instead of
/// 0.. (so that a container mapping its IDs there sees its own root's files as
/// root's), made by `systemd-nspawn --private-users-ownership=chown` on a staged copy.
pub fn shifted(root: &Path, base: u32) -> Result<PathBuf, InstallError> {
    let name = root.file_name().and_then(|n| n.to_str()).unwrap_or("root");
    let parent = root.parent().unwrap_or(Path::new("."));
    let shifted = parent.join(format!("{name}.uid-{base}"));
    if shifted.join("usr/bin/python3").exists() {
        return Ok(shifted);
    }
    let fail =
        |why: String| InstallError::Setup(format!("making a copy of {} owned by IDs {base}..: {why}", root.display()));
    let staged = tempfile::Builder::new()
        .prefix(&format!(".{name}.uid-"))
        .tempdir_in(parent)
        .map_err(|e| fail(format!("creating a directory in {}: {e}", parent.display())))?;
    let tree = staged.path().join("root");
    let out = hb_fs::env::command("cp")
        .args(["-a", "--reflink=auto"])
        .arg(root)
        .arg(&tree)
        .output()
        .map_err(|e| fail(format!("cannot run cp: {e}")))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let out = hb_fs::env::command("systemd-nspawn")
        .arg("-D")
        .arg(&tree)
        .arg(format!("--private-users={base}:65536"))
        .args([
            "--private-users-ownership=chown",
            "--private-network",
            "--register=no",
            "--keep-unit",
            "--quiet",
            "/bin/true",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(format!("cannot run systemd-nspawn: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!("systemd-nspawn: {}", String::from_utf8_lossy(&out.stderr).trim())));
    }
    if std::fs::rename(&tree, &shifted).is_err() && !shifted.join("usr/bin/python3").exists() {
        return Err(fail(format!("cannot rename {} to {}", tree.display(), shifted.display())));
    }
    Ok(shifted)
}
