//! The roots `hb test` installs into: a minimal Debian of the package's release and
//! architecture that boots (minbase plus systemd, systemd-sysv, dbus, python3, adduser
//! and procps), made once by mmdebstrap from this machine's apt sources and kept under
//! the cache directory. It is written to a temporary name and renamed when complete, so
//! an interrupted run never leaves half a root in use. Tests only ever read it.

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
