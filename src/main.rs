//! The `hb` command line: parses arguments, finds the workspace and the cache, and hands
//! each command to the library crates. No build logic lives here.

mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hb_config::{Label, Workspace};
use hb_engine::{Options, Status};
use hb_rules::build::OUT_DIR;
use hb_store::Store;

/// hb: hermetic, reproducible builds with a content-addressed cache.
///
/// Targets are declared in BUILD.toml files and named by labels: `//pkg/path:target`
/// (from the workspace root, the directory whose BUILD.toml has a `[workspace]` table),
/// `//pkg/path` (the target named like the directory) or `:target` (in the package of
/// the current directory). `//...` means every target.
#[derive(Parser)]
#[command(name = "hb", version, about, long_about = None, after_help = "Example:\n  hb build //demosite:deb      # → hb-out/demosite/demosite_0.1.0_amd64.deb")]
struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', long, global = true, value_name = "DIR")]
    directory: Option<PathBuf>,
    /// Cache directory (content-addressed store, action cache, stat cache).
    /// Default: $XDG_CACHE_HOME/hb, else ~/.cache/hb.
    #[arg(long, global = true, env = "HB_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build targets and place their outputs in hb-out/<package path>/.
    ///
    /// Every action is looked up in the cache by a key made of its inputs; only actions
    /// whose inputs changed run. Prints each output path, one per line.
    Build {
        /// Labels to build, e.g. //demosite:deb.
        #[arg(required = true)]
        labels: Vec<String>,
        /// Print one JSON object: {"executed", "cached", "outputs", "actions"}.
        #[arg(long)]
        json: bool,
        /// Run at most N actions at once [default: number of CPUs].
        #[arg(short = 'j', long, value_name = "N")]
        jobs: Option<usize>,
        /// Keep building what does not depend on a failed action.
        #[arg(short = 'k', long)]
        keep_going: bool,
        /// Run PEP 517 builds without namespaces (they can then reach the network and
        /// see this machine). Also HB_SANDBOX=off.
        #[arg(long)]
        no_sandbox: bool,
    },
    /// Resolve a python_app's dependencies for the target platform and write its lock.
    ///
    /// Runtime dependencies ([project].dependencies) and build requirements
    /// ([build-system].requires) are resolved by `pip download` for the workspace's
    /// target (e.g. CPython 3.11, manylinux_2_36 x86_64), using your pip configuration
    /// (PIP_INDEX_URL, PIP_FIND_LINKS, pip.conf). The lock (hb.lock next to BUILD.toml)
    /// holds names, versions, file names and sha256 hashes, never URLs.
    Lock {
        /// python_app labels, e.g. //demosite:app.
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// List targets with their rule and dependencies (`//...` for all).
    Query { labels: Vec<String> },
    /// Print the dependency graph of targets as Graphviz DOT.
    Graph { labels: Vec<String> },
    /// Rebuild a label from scratch, under variations, and compare every action.
    ///
    /// The rebuild runs in a throwaway copy of the workspace with an empty cache (the
    /// locked files come from your cache, so no network is needed); your cache is only
    /// read. On a difference, names the first action whose result differs although its
    /// inputs agree, and shows its differing files (unified diff for text, digests and
    /// first differing byte for binary, members for wheels). Exit status 1 then.
    Verify {
        label: String,
        /// What to vary: all, none, or a comma-separated list of path, umask, tz,
        /// locale, time, home, jobs.
        #[arg(long, default_value = "all", value_name = "LIST")]
        vary: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Keep the throwaway checkout and cache for inspection.
        #[arg(long)]
        keep: bool,
    },
    /// Compare two .deb files: container, control fields, scripts, file list, modes,
    /// owners, mtimes and contents. Exit status 0 only when byte-identical.
    Diff {
        a: PathBuf,
        b: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Say why each action of the last build ran or came from the cache: which of its
    /// inputs changed since the build before, traced back to the source that changed.
    Explain {
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
        /// Also list the actions that came from the cache.
        #[arg(long)]
        all: bool,
    },
    /// Remove hb-out/ (and with --cache, the whole cache).
    Clean {
        #[arg(long)]
        cache: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            progress::error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cwd = match &cli.directory {
        Some(d) => std::path::absolute(d).with_context(|| format!("cannot use directory {}", d.display()))?,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let cache_dir = cache_dir(cli.cache_dir)?;
    match cli.command {
        Command::Build { labels, json, jobs, keep_going, no_sandbox } => {
            let off = no_sandbox || std::env::var("HB_SANDBOX").is_ok_and(|v| v == "off" || v == "0");
            let sandbox = if off { hb_sandbox::Mode::Off } else { hb_sandbox::Mode::Bwrap };
            build(&cwd, &cache_dir, &labels, json, jobs, keep_going, sandbox)
        }
        Command::Lock { labels } => lock(&cwd, &labels),
        Command::Verify { label, vary, json, keep } => verify(&cwd, &cache_dir, &label, &vary, json, keep),
        Command::Diff { a, b, json } => diff(&a, &b, json),
        Command::Explain { json, all } => explain(&cwd, &cache_dir, json, all),
        Command::Query { labels } => query(&cwd, &labels),
        Command::Graph { labels } => graph(&cwd, &labels),
        Command::Clean { cache } => {
            let ws = Workspace::discover(&cwd)?;
            hb_fs::remove_dir_all_if_exists(&ws.root.join(OUT_DIR))?;
            if cache {
                hb_fs::remove_dir_all_if_exists(&cache_dir)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cache_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(std::path::absolute(&d)?);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("hb"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/hb")),
        None => bail!("no cache directory: set HB_CACHE_DIR, XDG_CACHE_HOME or HOME, or pass --cache-dir"),
    }
}

/// Resolves command-line labels; `//...` expands to every target of the workspace.
fn resolve(ws: &mut Workspace, cwd: &Path, texts: &[String]) -> Result<Vec<Label>> {
    let current = ws.package_of(cwd);
    let mut labels = Vec::new();
    for text in texts {
        if text == "//..." {
            for pkg in ws.package_paths()? {
                let names: Vec<String> = ws.package(&pkg)?.targets.keys().cloned().collect();
                labels.extend(names.into_iter().map(|name| Label { package: pkg.clone(), name }));
            }
        } else {
            let label = Label::parse(text, current.as_deref())?;
            ws.target(&label)?;
            labels.push(label);
        }
    }
    labels.dedup();
    Ok(labels)
}

fn lock(cwd: &Path, texts: &[String]) -> Result<ExitCode> {
    let mut ws = Workspace::discover(cwd)?;
    let labels = resolve(&mut ws, cwd, texts)?;
    let target = hb_rules::python_target(&ws.settings);
    for label in labels {
        let t = ws.target(&label)?.clone();
        let hb_config::Rule::PythonApp(p) = &t.rule else {
            bail!("{label} is a {} target; `hb lock` takes python_app targets", t.rule.kind());
        };
        let pkg = ws.package(&label.package)?.clone();
        progress::note(&format!("resolving {label} for {}", target.describe()));
        let (path, lock) = hb_rules::python::lock(&pkg, p, &target, &label.to_string())?;
        let runtime = lock.files(hb_fetch::Role::Runtime).count();
        let build = lock.files(hb_fetch::Role::Build).count();
        println!("{}", path.display());
        progress::note(&format!("locked {runtime} runtime and {build} build file(s)"));
    }
    Ok(ExitCode::SUCCESS)
}

fn build(
    cwd: &Path,
    cache_dir: &Path,
    texts: &[String],
    json: bool,
    jobs: Option<usize>,
    keep_going: bool,
    sandbox: hb_sandbox::Mode,
) -> Result<ExitCode> {
    let start = Instant::now();
    let mut ws = Workspace::discover(cwd)?;
    let labels = resolve(&mut ws, cwd, texts)?;
    let store = Store::open(cache_dir).with_context(|| format!("cannot open the cache in {}", cache_dir.display()))?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = Options { jobs, keep_going, platform: ws.settings.platform.get_ref().clone() };
    let reporter = progress::Progress::new();
    if sandbox == hb_sandbox::Mode::Off {
        progress::warning("building without the sandbox (--no-sandbox): PEP 517 builds can see this machine");
    }
    let plan_opts = hb_rules::PlanOptions { sandbox };
    let outcome = hb_rules::build::build(&mut ws, &store, &labels, &opts, &plan_opts, &reporter)?;
    reporter.finish();
    for w in &outcome.warnings {
        progress::warning(w);
    }
    let (executed, cached) = (outcome.count(Status::Executed), outcome.count(Status::Cached));
    for f in &outcome.failures {
        progress::error(&format!("action `{}` failed:\n{}", f.name, indent(&f.error.to_string())));
    }
    if !outcome.skipped.is_empty() {
        progress::note(&format!("{} action(s) not run because of the failure", outcome.skipped.len()));
    }
    let shown: Vec<String> = outcome.outputs.iter().map(|p| p.display().to_string()).collect();
    if json {
        let actions: Vec<_> = outcome
            .records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "kind": r.kind,
                    "status": if r.status == Status::Executed { "executed" } else { "cached" },
                    "key": r.key.hex(),
                    "result": r.result.hex(),
                })
            })
            .collect();
        let failures: Vec<_> = outcome
            .failures
            .iter()
            .map(|f| serde_json::json!({"name": f.name, "error": f.error.to_string()}))
            .collect();
        let doc = serde_json::json!({
            "executed": executed,
            "cached": cached,
            "outputs": shown,
            "actions": actions,
            "failures": failures,
            "warnings": outcome.warnings,
        });
        println!("{doc}");
    } else {
        for s in &shown {
            println!("{s}");
        }
    }
    progress::note(&format!(
        "{} action(s): {executed} executed, {cached} cached, in {:.2}s",
        executed + cached,
        start.elapsed().as_secs_f64()
    ));
    Ok(if outcome.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn verify(cwd: &Path, cache_dir: &Path, label: &str, vary: &str, json: bool, keep: bool) -> Result<ExitCode> {
    let mut ws = Workspace::discover(cwd)?;
    let labels = resolve(&mut ws, cwd, &[label.to_string()])?;
    let mut variations = Vec::new();
    for item in vary.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match hb_check::Variation::parse(item) {
            Some(v) => variations.extend(v),
            None => bail!("unknown variation `{item}`: use all, none, path, umask, tz, locale, time, home or jobs"),
        }
    }
    variations.sort();
    variations.dedup();
    progress::note(&format!("verifying {}: building it, then rebuilding from scratch", labels[0]));
    let req = hb_check::VerifyRequest {
        exe: std::env::current_exe().context("cannot find the hb executable")?,
        workspace_root: ws.root.clone(),
        cache_dir: cache_dir.to_path_buf(),
        label: labels[0].to_string(),
        vary: variations,
        keep,
    };
    let report = hb_check::verify(&req)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.reproducible() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn diff(a: &Path, b: &Path, json: bool) -> Result<ExitCode> {
    let report = hb_diff::diff_debs(a, b)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.identical { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn explain(cwd: &Path, cache_dir: &Path, json: bool, all: bool) -> Result<ExitCode> {
    let ws = Workspace::discover(cwd)?;
    let store = Store::open(cache_dir)?;
    let (last, previous) = hb_rules::build::RunLog::load(&store, &ws.root);
    let Some(last) = last else {
        bail!("no build of this workspace is recorded in {}: run `hb build` first", cache_dir.display());
    };
    let explanations = hb_check::explain(&last, previous.as_ref());
    if json {
        println!("{}", serde_json::json!({ "labels": last.labels, "actions": explanations }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("last build: {}", last.labels.join(" "));
    let width = explanations.iter().map(|e| e.name.len()).max().unwrap_or(0);
    let mut cached = 0;
    for e in &explanations {
        if e.status == "cached" {
            cached += 1;
            if !all {
                continue;
            }
            println!("{:width$}  cached", e.name);
        } else {
            println!("{:width$}  ran: {}", e.name, e.reasons.join("; "));
        }
    }
    if !all && cached > 0 {
        println!("({cached} action(s) came from the cache; --all lists them)");
    }
    Ok(ExitCode::SUCCESS)
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

fn query(cwd: &Path, texts: &[String]) -> Result<ExitCode> {
    let mut ws = Workspace::discover(cwd)?;
    let texts = if texts.is_empty() { vec!["//...".to_string()] } else { texts.to_vec() };
    let labels = resolve(&mut ws, cwd, &texts)?;
    for t in hb_rules::collect(&mut ws, &labels)? {
        let deps: Vec<String> = t.deps.iter().map(|(l, _)| l.to_string()).collect();
        if deps.is_empty() {
            println!("{} ({})", t.label, t.rule.kind());
        } else {
            println!("{} ({}) <- {}", t.label, t.rule.kind(), deps.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn graph(cwd: &Path, texts: &[String]) -> Result<ExitCode> {
    let mut ws = Workspace::discover(cwd)?;
    let texts = if texts.is_empty() { vec!["//...".to_string()] } else { texts.to_vec() };
    let labels = resolve(&mut ws, cwd, &texts)?;
    let mut out = String::from("digraph hb {\n  rankdir=LR;\n  node [shape=box];\n");
    for t in hb_rules::collect(&mut ws, &labels)? {
        out.push_str(&format!("  \"{}\" [label=\"{}\\n{}\"];\n", t.label, t.label, t.rule.kind()));
        for (d, _) in &t.deps {
            out.push_str(&format!("  \"{}\" -> \"{}\";\n", t.label, d));
        }
    }
    out.push_str("}\n");
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
