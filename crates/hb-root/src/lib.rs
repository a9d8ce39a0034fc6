//! Target roots: the minimal Debian system a platform's build steps run in. A root is
//! locked ([`lock`]: package, version, architecture, sha256 of each `.deb`, resolved by
//! the machine's own apt through [`apt`]), fetched as fixed outputs (each `.deb`
//! verified by sha256 before it is used), and unpacked by hb ([`unpack`]) into a tree
//! whose digest enters the key of every action run in it. Foreign architectures run
//! under qemu-user through binfmt_misc ([`check_emulation`]).

pub mod apt;
pub mod lock;
pub mod unpack;

use std::path::Path;

use hb_config::Location;
use hb_platform::Platform;

pub use lock::{ROOT_LOCK, Root, RootLock, RootPackage, canonical_extra, inputs_digest, inputs_digest_with};

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{message}\n  --> {location}")]
    Lock { location: Box<Location>, message: String },
    #[error(
        "no Debian source in this machine's apt configuration (/etc/apt/sources.list, sources.list.d) to fetch the {platform} root from.\n  hb takes the mirror from there (with the suite swapped); add your Debian mirror to it."
    )]
    NoSources { platform: String },
    #[error("apt failed {what} for the {platform} root:\n{detail}")]
    Apt { platform: String, what: String, detail: String },
    #[error(
        "root package {package} {version} ({architecture}) of {platform} is in no cache and no longer on the mirror your apt sources name (old versions vanish after point releases).\n  Run `hb lock --update-root` to move the root to what the mirror has now, or point HB_REMOTE_CACHE at a cache that still holds it."
    )]
    Vanished { package: String, version: String, architecture: String, platform: String },
    #[error(
        "{file} does not match the root lock: expected sha256 {expected}, got {actual} (from {source_desc}).\n  The file was not stored. If the lock is right, the mirror serves different bytes; otherwise run `hb lock --update-root`."
    )]
    HashMismatch { file: String, expected: String, actual: String, source_desc: String },
    #[error("cannot unpack root package {package}: {detail}")]
    Unpack { package: String, detail: String },
    #[error(
        "building for {platform} runs its root's programs ({machine}) under emulation, and this machine cannot: {why}.\n  Install qemu-user-static and binfmt-support (apt install qemu-user-static binfmt-support); if binfmt_misc is not mounted, mount it (mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc) and run update-binfmts --enable."
    )]
    NoEmulation { platform: String, machine: String, why: String },
    #[error(transparent)]
    Fs(#[from] hb_fs::FsError),
    #[error(transparent)]
    Store(#[from] hb_store::StoreError),
}

/// Where the kernel lists binfmt_misc handlers.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// Checks that `platform`'s programs can run here: natively, or through a qemu-user
/// binfmt_misc handler registered with the `F` flag (the interpreter is opened at
/// registration, so it works inside a sandbox that cannot see it).
pub fn check_emulation(platform: &Platform) -> Result<(), RootError> {
    if platform.runs_natively() {
        return Ok(());
    }
    check_emulation_in(platform, Path::new(BINFMT_DIR))
}

fn check_emulation_in(platform: &Platform, dir: &Path) -> Result<(), RootError> {
    let fail = |why: String| RootError::NoEmulation {
        platform: platform.name.to_string(),
        machine: platform.machine.to_string(),
        why,
    };
    let handler = dir.join(format!("qemu-{}", platform.machine));
    let text = match std::fs::read_to_string(&handler) {
        Ok(t) => t,
        Err(_) if !dir.join("status").exists() => return Err(fail(format!("{} is not mounted", dir.display()))),
        Err(_) => return Err(fail(format!("no binfmt_misc handler {} is registered", handler.display()))),
    };
    if !text.lines().any(|l| l.trim() == "enabled") {
        return Err(fail(format!("the handler {} is disabled", handler.display())));
    }
    let flags = text.lines().find_map(|l| l.strip_prefix("flags:")).unwrap_or("").trim().to_string();
    if !flags.contains('F') {
        return Err(fail(format!(
            "the handler {} lacks the F (fix binary) flag, so a sandbox cannot reach its interpreter",
            handler.display()
        )));
    }
    Ok(())
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, RootError> {
    Ok(hb_fs::sha256_file(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulation_needs_an_f_handler() {
        let d = tempfile::tempdir().unwrap();
        let p = &hb_platform::TRIXIE_ARM64;
        let err = check_emulation_in(p, d.path()).unwrap_err().to_string();
        assert!(err.contains("is not mounted") && err.contains("apt install qemu-user-static binfmt-support"), "{err}");
        std::fs::write(d.path().join("status"), "enabled\n").unwrap();
        let err = check_emulation_in(p, d.path()).unwrap_err().to_string();
        assert!(err.contains("no binfmt_misc handler"), "{err}");
        std::fs::write(
            d.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POC\n",
        )
        .unwrap();
        let err = check_emulation_in(p, d.path()).unwrap_err().to_string();
        assert!(err.contains("lacks the F"), "{err}");
        std::fs::write(
            d.path().join("qemu-aarch64"),
            "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\n",
        )
        .unwrap();
        check_emulation_in(p, d.path()).unwrap();
    }
}
