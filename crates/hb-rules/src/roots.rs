//! Target roots in the build: `hb lock` resolves each platform's root into
//! `hb-root.lock` ([`lock_roots`]), and the compile roots the workspace's locked sdists
//! need (the base root plus a compiler, the Python headers and an app's
//! `build_depends`); a rule whose actions run in a root asks [`root_input`] (or
//! [`root_input_with`]) for it, which checks the lock is current and adds the shared
//! `deb_fetch` and `root` actions once per root.

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

/// `hb lock`: resolves the root of every platform the workspace builds, and each
/// compile root in `compile` (platform, extra packages), that has none in the lock or
/// whose lock is stale (all of them with `update`), and writes `hb-root.lock`. Roots
/// nothing needs any more are dropped. Returns the roots resolved, by name.
pub fn lock_roots(
    ws: &Workspace,
    compile: &[(&'static Platform, Vec<String>)],
    apt_dir: &std::path::Path,
    update: bool,
    progress: &dyn Fn(&str),
) -> Result<Vec<String>, RulesError> {
    let mut lock = match RootLock::load(&ws.root) {
        Ok(l) => l.unwrap_or_default(),
        Err(e) if update => {
            progress(&format!("replacing the unreadable root lock ({e})"));
            RootLock::default()
        }
        Err(e) => return Err(root_error(e)),
    };
    let mut done = Vec::new();
    let mut wanted: Vec<(&'static Platform, Vec<String>)> = ws.platforms.iter().map(|p| (*p, Vec::new())).collect();
    for (p, extra) in compile {
        let extra = hb_root::canonical_extra(extra);
        if ws.platforms.iter().any(|w| w.name == p.name) && !wanted.iter().any(|(q, e)| q.name == p.name && *e == extra)
        {
            wanted.push((p, extra));
        }
    }
    for (p, extra) in &wanted {
        let want = hb_root::inputs_digest_with(p, extra);
        if !update && lock.root_with(p.name, extra).is_some_and(|r| r.inputs == want) {
            continue;
        }
        let name = root_name(p, extra);
        let mut packages: Vec<&str> = p.root_packages.to_vec();
        packages.extend(extra.iter().map(String::as_str));
        progress(&format!("resolving the {name} ({}) through apt", packages.join(", ")));
        let apt = hb_root::apt::Apt::new(apt_dir, p);
        let package = apt.resolve(&packages).map_err(root_error)?;
        lock.set(Root { platform: p.name.to_string(), extra: extra.clone(), inputs: want, package });
        done.push(name);
    }
    // Roots nothing builds in any more are dropped.
    lock.roots.retain(|r| wanted.iter().any(|(p, e)| p.name == r.platform && *e == r.extra));
    let text = lock.render();
    let path = ws.root.join(ROOT_LOCK);
    if hb_fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        hb_fs::write_atomic_shared(&path, text.as_bytes()).map_err(|e| RulesError::Other(e.to_string()))?;
    }
    Ok(done)
}

/// How a root is named in messages and action names: `bookworm-amd64 root`, or
/// `bookworm-amd64 compile root (+ gcc, libc6-dev, ...)`.
pub fn root_name(p: &Platform, extra: &[String]) -> String {
    if extra.is_empty() {
        format!("{} root", p.name)
    } else {
        format!("{} compile root (+ {})", p.name, extra.join(", "))
    }
}

/// The root of the platform being built, as an action input (shared by every target
/// that runs in it).
pub fn root_input(cx: &mut Cx) -> Result<Input<()>, RulesError> {
    root_input_with(cx, &[])
}

/// The root of the platform being built with `extra` packages (canonical form), as an
/// action input shared by every target that runs in it.
pub fn root_input_with(cx: &mut Cx, extra: &[String]) -> Result<Input<()>, RulesError> {
    let platform: &'static Platform = cx.platform;
    let at = cx.target.location.clone();
    let lock = cx.root_lock().map_err(|message| RulesError::Invalid { message, location: at.clone() })?;
    let stale = |why: &str| RulesError::Invalid {
        message: format!("{why}; run `hb lock` to resolve it (the roots live in {ROOT_LOCK} at the workspace root)"),
        location: at.clone(),
    };
    let Some(lock) = lock else {
        return Err(stale(&format!("no target root is locked for {} ({ROOT_LOCK} is missing)", platform.name)));
    };
    let name = root_name(platform, extra);
    let Some(root) = lock.root_with(platform.name, extra) else {
        return Err(stale(&format!("{ROOT_LOCK} has no {name}")));
    };
    if root.inputs != hb_root::inputs_digest_with(platform, extra) {
        return Err(stale(&format!(
            "the {name} in {ROOT_LOCK} was resolved for other packages than this hb's platform table names"
        )));
    }
    let apt_dir: Option<PathBuf> = cx.opts.apt_dir.clone();
    let mut debs = Vec::new();
    let batch = std::sync::Arc::new(root.package.clone());
    for p in batch.iter() {
        let job = || DebFetchJob { package: p.clone(), batch: batch.clone(), platform, apt_dir: apt_dir.clone() };
        debs.push((p.name.clone(), cx.actions.shared(format!("fetch {}", p.file), job)));
    }
    let action = if extra.is_empty() { format!("root {}", platform.name) } else { name };
    Ok(cx.actions.shared(action, || RootJob { platform, debs }))
}

/// A root's packages as an SBOM lists them: (name, version, architecture, sha256),
/// sorted. Made once per plan and root, and shared by every target that lists it.
pub type RootSummary = std::sync::Arc<Vec<(String, String, String, String)>>;

/// The [`RootSummary`] of the platform's root with `extra` (empty when it is not
/// locked: whatever needs the root has said so already).
pub fn locked_summary(cx: &Cx, extra: &[String]) -> RootSummary {
    if let Some(known) = cx.root_summaries.borrow().get(extra) {
        return known.clone();
    }
    let mut list: Vec<(String, String, String, String)> = cx
        .root_lock()
        .ok()
        .flatten()
        .and_then(|l| l.root_with(cx.platform.name, extra))
        .map(|r| {
            r.package
                .iter()
                .map(|p| (p.name.clone(), p.version.clone(), p.architecture.clone(), p.sha256.clone()))
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    let summary = RootSummary::new(list);
    cx.root_summaries.borrow_mut().insert(extra.to_vec(), summary.clone());
    summary
}
