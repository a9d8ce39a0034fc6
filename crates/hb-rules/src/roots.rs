//! Target roots in the build: `hb lock` resolves each platform's root into
//! `hb-root.lock` ([`lock_roots`]); a rule whose actions run in the root asks
//! [`root_input`] for it, which checks the lock is current and adds the shared
//! `deb_fetch` and `root` actions once per platform.

use std::path::PathBuf;

use hb_config::Workspace;
use hb_engine::Input;
use hb_platform::Platform;
pub use hb_root::ROOT_LOCK;
use hb_root::{Root, RootLock};

use crate::RulesError;
use crate::actions::root::{DebFetchJob, RootJob};
use crate::rule::Cx;

fn root_error(e: hb_root::RootError) -> RulesError {
    RulesError::Other(e.to_string())
}

/// `hb lock`: resolves the root of every platform the workspace builds that has none
/// in the lock or whose lock is stale (all of them with `update`), and writes
/// `hb-root.lock`. Returns the platforms resolved.
pub fn lock_roots(
    ws: &Workspace,
    apt_dir: &std::path::Path,
    update: bool,
    progress: &dyn Fn(&str),
) -> Result<Vec<&'static str>, RulesError> {
    let mut lock = match RootLock::load(&ws.root) {
        Ok(l) => l.unwrap_or_default(),
        Err(e) if update => {
            progress(&format!("replacing the unreadable root lock ({e})"));
            RootLock::default()
        }
        Err(e) => return Err(root_error(e)),
    };
    let mut done = Vec::new();
    for p in &ws.platforms {
        let want = hb_root::inputs_digest(p);
        if !update && lock.root(p.name).is_some_and(|r| r.inputs == want) {
            continue;
        }
        progress(&format!("resolving the {} root ({}) through apt", p.name, p.root_packages.join(", ")));
        let apt = hb_root::apt::Apt::new(apt_dir, p);
        let package = apt.resolve(p.root_packages).map_err(root_error)?;
        lock.set(Root { platform: p.name.to_string(), inputs: want, package });
        done.push(p.name);
    }
    // Roots of platforms the workspace no longer builds are dropped.
    lock.roots.retain(|r| ws.platforms.iter().any(|p| p.name == r.platform));
    let text = lock.render();
    let path = ws.root.join(ROOT_LOCK);
    if hb_fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        hb_fs::write_atomic(&path, text.as_bytes(), None).map_err(|e| RulesError::Other(e.to_string()))?;
    }
    Ok(done)
}

/// The root of the platform being built, as an action input (shared by every target
/// that runs in it).
pub fn root_input(cx: &mut Cx) -> Result<Input<()>, RulesError> {
    let platform: &'static Platform = cx.platform;
    let at = cx.target.location.clone();
    let lock = RootLock::load(cx.workspace_root)
        .map_err(|e| RulesError::Invalid { message: e.to_string(), location: at.clone() })?;
    let stale = |why: &str| RulesError::Invalid {
        message: format!("{why}; run `hb lock` to resolve it (the roots live in {ROOT_LOCK} at the workspace root)"),
        location: at.clone(),
    };
    let Some(lock) = lock else {
        return Err(stale(&format!("no target root is locked for {} ({ROOT_LOCK} is missing)", platform.name)));
    };
    let Some(root) = lock.root(platform.name) else {
        return Err(stale(&format!("{ROOT_LOCK} has no root for {}", platform.name)));
    };
    if root.inputs != hb_root::inputs_digest(platform) {
        return Err(stale(&format!(
            "the {} root in {ROOT_LOCK} was resolved for other packages than this hb's platform table names",
            platform.name
        )));
    }
    let apt_dir: Option<PathBuf> = cx.opts.apt_dir.clone();
    let mut debs = Vec::new();
    let batch = std::sync::Arc::new(root.package.clone());
    for p in &root.package {
        let job = || DebFetchJob { package: p.clone(), batch: batch.clone(), platform, apt_dir: apt_dir.clone() };
        debs.push((p.name.clone(), cx.actions.shared(format!("fetch {}", p.file), job)));
    }
    Ok(cx.actions.shared(format!("root {}", platform.name), || RootJob { platform, debs }))
}
