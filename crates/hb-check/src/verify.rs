//! `hb verify`: rebuild a label's whole action graph from nothing, in a throwaway cache
//! and a copy of the workspace, optionally under variations of the machine (checkout
//! path, umask, time zone, locale, clock (hb's and the sandbox's), HOME/USER, job count,
//! the CPUs the sandbox sees), and compare every
//! action's result with the one the user's cache holds. The first action (in the order
//! results became available, so its dependencies all agreed) whose result differs is
//! the source of the nondeterminism; its differing files are shown, down to the member
//! of a wheel and the line of a text file. The user's cache is only read.
//!
//! Both builds are real `hb build --json` runs of this same executable. Locked files are
//! handed to the rebuild as a local wheelhouse, so verifying needs no network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hb_diff::FileDiff;

/// The variable through which a rebuild's sandboxed commands get a faked clock: read
/// by the `hb` binary at start, set only by `hb verify --vary time`.
pub const SANDBOX_CLOCK_VARIABLE: &str = "HB_VERIFY_FAKETIME";
/// Likewise the number of CPUs the rebuild's sandboxed commands may run on
/// (`hb verify --vary cpus`).
pub const SANDBOX_CPUS_VARIABLE: &str = "HB_VERIFY_CPUS";
use hb_engine::ActionResult;
use hb_store::{Digest, EntryKind, Store};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variation {
    /// The checkout at another, longer path.
    Path,
    /// umask 077 for the checkout and the build.
    Umask,
    /// TZ=Pacific/Kiritimati.
    Tz,
    /// LANG/LC_ALL=fr_FR.UTF-8.
    Locale,
    /// The clock 400 days ahead (faketime).
    Time,
    /// Another HOME and USER.
    Home,
    /// One job instead of many (or two instead of one).
    Jobs,
    /// Another `python3` first on PATH (one that fails if anything runs it).
    Python,
    /// The sandboxed commands see one CPU (their affinity), whatever the machine has.
    Cpus,
}

impl Variation {
    pub const ALL: [Variation; 9] = [
        Variation::Path,
        Variation::Umask,
        Variation::Tz,
        Variation::Locale,
        Variation::Time,
        Variation::Home,
        Variation::Jobs,
        Variation::Python,
        Variation::Cpus,
    ];

    pub fn parse(s: &str) -> Option<Vec<Variation>> {
        match s {
            "all" => Some(Self::ALL.to_vec()),
            "none" => Some(Vec::new()),
            "path" => Some(vec![Variation::Path]),
            "umask" => Some(vec![Variation::Umask]),
            "tz" => Some(vec![Variation::Tz]),
            "locale" => Some(vec![Variation::Locale]),
            "time" => Some(vec![Variation::Time]),
            "home" => Some(vec![Variation::Home]),
            "jobs" => Some(vec![Variation::Jobs]),
            "python" => Some(vec![Variation::Python]),
            "cpus" => Some(vec![Variation::Cpus]),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Setup(String),
    #[error("the {which} build failed:\n{output}")]
    Build { which: &'static str, output: String },
    #[error(transparent)]
    Fs(#[from] hb_fs::FsError),
    #[error(transparent)]
    Store(#[from] hb_store::StoreError),
}

pub struct VerifyRequest {
    /// The hb executable to run.
    pub exe: PathBuf,
    pub workspace_root: PathBuf,
    /// The user's cache directory (only read, apart from the reference build).
    pub cache_dir: PathBuf,
    pub label: String,
    pub vary: Vec<Variation>,
    /// Keep the throwaway checkout and cache (their path is in the report).
    pub keep: bool,
}

#[derive(Debug, Serialize)]
pub struct FileDivergence {
    pub path: String,
    /// "content", "only in the reference", "only in the rebuild", "mode 0644 vs 0755", …
    pub change: String,
    pub diff: Option<FileDiff>,
}

#[derive(Debug, Serialize)]
pub struct Divergence {
    pub action: String,
    pub kind: String,
    /// Whether the action's inputs were the same (then this action itself is
    /// nondeterministic) or already different (it only inherits a difference).
    pub same_inputs: bool,
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub label: String,
    pub variations: Vec<Variation>,
    /// Actions compared (present in both builds).
    pub compared: usize,
    pub diverging: Vec<Divergence>,
    /// The first action whose own result differs although its inputs agree.
    pub first: Option<String>,
    pub files: Vec<FileDivergence>,
    /// Where the rebuild happened, when kept.
    pub kept: Option<PathBuf>,
}

impl VerifyReport {
    pub fn reproducible(&self) -> bool {
        self.diverging.is_empty()
    }

    pub fn render(&self) -> String {
        let vary: Vec<String> = self.variations.iter().map(|v| format!("{v:?}").to_lowercase()).collect();
        let mut out = format!(
            "verify {}: rebuilt from scratch{}; {} action(s) compared\n",
            self.label,
            if vary.is_empty() { String::new() } else { format!(" varying {}", vary.join(", ")) },
            self.compared
        );
        if self.reproducible() {
            out.push_str("reproducible: every action gave the same result\n");
            return out;
        }
        if let Some(first) = &self.first {
            out.push_str(&format!("NOT reproducible: the first diverging action is {first}\n"));
        }
        for f in &self.files {
            out.push_str(&format!("  {}: {}\n", f.path, f.change));
            if let Some(d) = &f.diff {
                out.push_str(&d.render("    "));
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        let downstream: Vec<&str> = self
            .diverging
            .iter()
            .filter(|d| Some(&d.action) != self.first.as_ref())
            .map(|d| d.action.as_str())
            .collect();
        if !downstream.is_empty() {
            out.push_str(&format!("also different (downstream or independent): {}\n", downstream.join(", ")));
        }
        if let Some(k) = &self.kept {
            out.push_str(&format!("the rebuild is kept in {}\n", k.display()));
        }
        out
    }
}

/// One action of a `--json` build report.
#[derive(Clone, Debug)]
struct Act {
    name: String,
    kind: String,
    key: Digest,
    result: Digest,
}

fn build_json(cmd: &mut Command, which: &'static str) -> Result<Vec<Act>, VerifyError> {
    let out = cmd.output().map_err(|e| VerifyError::Setup(format!("could not run the {which} build: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(VerifyError::Build {
            which,
            output: format!("{}{}", stdout, String::from_utf8_lossy(&out.stderr)),
        });
    }
    let doc: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| VerifyError::Setup(format!("the {which} build printed no JSON report ({e})")))?;
    let mut acts = Vec::new();
    for a in doc["actions"].as_array().into_iter().flatten() {
        let field = |k: &str| a[k].as_str().unwrap_or_default().to_string();
        let (Some(key), Some(result)) = (Digest::from_hex(&field("key")), Digest::from_hex(&field("result"))) else {
            continue;
        };
        acts.push(Act { name: field("name"), kind: field("kind"), key, result });
    }
    Ok(acts)
}

/// Copies the workspace (without outputs, caches and VCS data) to `to`, with file modes
/// as a checkout under `umask` would have them.
fn copy_workspace(from: &Path, to: &Path, umask: u32) -> Result<(), VerifyError> {
    use std::os::unix::fs::PermissionsExt;
    let walk = hb_fs::walk_sorted(from).into_iter().filter_entry(|e| {
        let n = e.file_name().to_string_lossy();
        e.depth() == 0 || !(n == "hb-out" || n == "target" || n == ".git")
    });
    for e in walk {
        let e = e.map_err(|e| VerifyError::Setup(format!("walking the workspace: {e}")))?;
        let rel = e.path().strip_prefix(from).unwrap_or(e.path());
        let dest = to.join(rel);
        let ft = e.file_type();
        if ft.is_dir() {
            hb_fs::create_dir_all(&dest)?;
            let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o777 & !umask));
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dest).map_err(|err| hb_fs::FsError::new("copying to", &dest, err))?;
            let exec = e.metadata().map(|m| m.permissions().mode() & 0o100 != 0).unwrap_or(false);
            let mode = if exec { 0o777 } else { 0o666 } & !umask;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .map_err(|err| hb_fs::FsError::new("setting mode of", &dest, err))?;
        } else if ft.is_symlink() {
            let target = hb_fs::read_link(e.path())?;
            std::os::unix::fs::symlink(&target, &dest).map_err(|err| hb_fs::FsError::new("linking", &dest, err))?;
        }
    }
    Ok(())
}

fn load(store: &Store, key: &Digest) -> Option<ActionResult> {
    store.get_action(key).ok().flatten().and_then(|b| ActionResult::decode(&b))
}

/// Compares two results of the same action file by file.
fn compare_results(a_store: &Store, a: &ActionResult, b_store: &Store, b: &ActionResult) -> Vec<FileDivergence> {
    let index = |r: &ActionResult| -> BTreeMap<String, hb_store::TreeEntry> {
        r.tree.entries().iter().map(|e| (e.path.clone(), e.clone())).collect()
    };
    let (ia, ib) = (index(a), index(b));
    let mut out = Vec::new();
    for (path, ea) in &ia {
        let Some(eb) = ib.get(path) else {
            out.push(FileDivergence { path: path.clone(), change: "only in the reference build".into(), diff: None });
            continue;
        };
        if ea.mode != eb.mode {
            out.push(FileDivergence {
                path: path.clone(),
                change: format!("mode {:04o} vs {:04o}", ea.mode, eb.mode),
                diff: None,
            });
        }
        match (&ea.kind, &eb.kind) {
            (EntryKind::File { digest: da, .. }, EntryKind::File { digest: db, .. }) if da != db => {
                let diff = match (a_store.read_blob(da), b_store.read_blob(db)) {
                    (Ok(x), Ok(y)) => hb_diff::compare_contents(path, &x, &y),
                    _ => None,
                };
                out.push(FileDivergence { path: path.clone(), change: "content differs".into(), diff });
            }
            (ka, kb) if ka != kb => {
                out.push(FileDivergence { path: path.clone(), change: format!("{ka:?} vs {kb:?}"), diff: None });
            }
            _ => {}
        }
    }
    for path in ib.keys().filter(|p| !ia.contains_key(*p)) {
        out.push(FileDivergence { path: path.clone(), change: "only in the rebuild".into(), diff: None });
    }
    if out.is_empty() && a.facts != b.facts {
        out.push(FileDivergence {
            path: "(facts)".into(),
            change: format!("encoded facts {} vs {}", hex_bytes(&a.facts), hex_bytes(&b.facts)),
            diff: None,
        });
    }
    out
}

pub fn verify(req: &VerifyRequest) -> Result<VerifyReport, VerifyError> {
    let vary = |v: Variation| req.vary.contains(&v);
    // 1. The reference: an ordinary build with the user's cache. Both builds are this
    // hb run again (through sh, and faketime when the clock varies, which only exec it):
    // they keep hb's settings (HB_*), and scrub the environment of what they start.
    let reference = build_json(
        Command::new(&req.exe)
            .args(["build", "--json"])
            .arg("--cache-dir")
            .arg(&req.cache_dir)
            .arg(&req.label)
            .current_dir(&req.workspace_root),
        "reference",
    )?;
    let user_store = Store::open(&req.cache_dir)?;

    // 2. A throwaway checkout and cache.
    let tmp = tempfile::Builder::new()
        .prefix("hb-verify-")
        .tempdir()
        .map_err(|e| VerifyError::Setup(format!("cannot create a temporary directory: {e}")))?;
    let base = tmp.path().to_path_buf();
    let checkout = if vary(Variation::Path) {
        base.join("elsewhere/a/much/longer/path/to/the/checkout")
    } else {
        base.join("checkout")
    };
    let umask = if vary(Variation::Umask) { 0o077 } else { 0o022 };
    copy_workspace(&req.workspace_root, &checkout, umask)?;
    let cache = base.join("cache");
    // Locked files from the user's cache, as a wheelhouse: no network needed.
    let wheelhouse = base.join("wheelhouse");
    hb_fs::create_dir_all(&wheelhouse)?;
    // Root packages likewise, where the rebuild's private apt looks first.
    let apt = base.join("apt");
    let debs = apt.join("debs");
    hb_fs::create_dir_all(&debs)?;
    for a in reference.iter().filter(|a| a.kind == "fetch" || a.kind == "deb_fetch") {
        let dir = if a.kind == "fetch" { &wheelhouse } else { &debs };
        if let Some(r) = load(&user_store, &a.key) {
            for e in r.tree.entries() {
                if let EntryKind::File { digest, .. } = &e.kind {
                    user_store.export_blob(digest, &dir.join(&e.path), 0o644)?;
                }
            }
        }
    }

    // 3. The rebuild, under the variations.
    let mut cmd = if vary(Variation::Time) {
        if hb_fs::env::command("faketime").arg("--version").output().is_err() {
            return Err(VerifyError::Setup("varying the clock needs faketime (apt install faketime)".into()));
        }
        let mut c = Command::new("faketime");
        c.args(["-f", "+400d"]);
        c.arg("/bin/sh");
        c
    } else {
        Command::new("/bin/sh")
    };
    cmd.arg("-c").arg(format!("umask {umask:03o} && exec \"$@\"")).arg("sh").arg(&req.exe);
    cmd.args(["build", "--json", "--cache-dir"]).arg(&cache);
    if vary(Variation::Jobs) {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        cmd.args(["-j", if n > 1 { "1" } else { "2" }]);
    }
    cmd.arg(&req.label).current_dir(&checkout);
    let finds = match std::env::var("PIP_FIND_LINKS") {
        Ok(v) if !v.is_empty() => format!("{} {v}", wheelhouse.display()),
        _ => wheelhouse.display().to_string(),
    };
    cmd.env("PIP_FIND_LINKS", finds).env("HB_APT_DIR", &apt).env_remove("HB_CACHE_DIR");
    if vary(Variation::Time) {
        // The clock of the code in the sandbox too (hb clears the sandbox's environment,
        // so faketime around hb never reaches it).
        cmd.env(SANDBOX_CLOCK_VARIABLE, "+400d");
    } else {
        cmd.env_remove(SANDBOX_CLOCK_VARIABLE);
    }
    if vary(Variation::Cpus) {
        cmd.env(SANDBOX_CPUS_VARIABLE, "1");
    } else {
        cmd.env_remove(SANDBOX_CPUS_VARIABLE);
    }
    if vary(Variation::Python) {
        // Another `python3` first on PATH: nothing that runs in a root may notice.
        let bin = base.join("other-python");
        hb_fs::create_dir_all(&bin)?;
        let fake = "#!/bin/sh\necho \"hb verify: the host's python3 was run ($0 $*)\" >&2\nexit 97\n";
        for name in ["python3", "python3.11", "python3.13", "python"] {
            use std::os::unix::fs::PermissionsExt;
            let p = bin.join(name);
            hb_fs::write_atomic(&p, fake.as_bytes(), None)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| hb_fs::FsError::new("setting the mode of", &p, e))?;
        }
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        cmd.env("PATH", format!("{}:{path}", bin.display()));
    }
    if vary(Variation::Tz) {
        cmd.env("TZ", "Pacific/Kiritimati");
    }
    if vary(Variation::Locale) {
        cmd.env("LANG", "fr_FR.UTF-8").env("LC_ALL", "fr_FR.UTF-8");
    }
    if vary(Variation::Home) {
        let home = base.join("another-home");
        hb_fs::create_dir_all(&home)?;
        cmd.env("HOME", &home).env("USER", "hb-verify").env("LOGNAME", "hb-verify");
    }
    let rebuild = build_json(&mut cmd, "rebuild")?;
    let rebuild_store = Store::open(&cache)?;

    // 4. Compare, in the order the rebuild produced results.
    let by_name: BTreeMap<&str, &Act> = reference.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut compared = 0;
    let mut diverging = Vec::new();
    let mut first = None;
    let mut files = Vec::new();
    for b in &rebuild {
        let Some(a) = by_name.get(b.name.as_str()) else { continue };
        compared += 1;
        if a.result == b.result {
            continue;
        }
        let same_inputs = a.key == b.key;
        diverging.push(Divergence { action: b.name.clone(), kind: b.kind.clone(), same_inputs });
        if first.is_none() && same_inputs {
            first = Some(b.name.clone());
            if let (Some(ra), Some(rb)) = (load(&user_store, &a.key), load(&rebuild_store, &b.key)) {
                files = compare_results(&user_store, &ra, &rebuild_store, &rb);
            }
        }
    }
    let kept = req.keep.then(|| tmp.keep());
    Ok(VerifyReport { label: req.label.clone(), variations: req.vary.clone(), compared, diverging, first, files, kept })
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
