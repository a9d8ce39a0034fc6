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
    /// Default: $HB_CACHE_DIR, else $XDG_CACHE_HOME/hb, else ~/.cache/hb.
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// Labels to build, e.g. //demosite:deb.
    #[arg(required = true)]
    labels: Vec<String>,
    /// Print one JSON object: {"executed", "cached", "outputs", "actions"}.
    #[arg(long)]
    json: bool,
    /// Build for PLATFORM (one of `[workspace] platforms`, e.g. trixie-arm64), or
    /// `all` of them. Default: the workspace's default platform. Outputs of another
    /// platform than the default, or of several, go to hb-out/<platform>/<package>/.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
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
    /// Write where the time went as Chrome trace-event JSON to FILE (one span per
    /// action, with its kind, status and bytes in and out); open it in Perfetto or
    /// chrome://tracing. `hb explain --timings` lists the slowest actions.
    #[arg(long, value_name = "FILE")]
    profile: Option<PathBuf>,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// How to reach the team's remote cache.
#[derive(clap::Args, Clone, Default)]
struct RemoteArgs {
    /// Remote cache URL (else HB_REMOTE_CACHE, else `remote_cache` in [workspace]):
    /// `http(s)://HOST[:PORT]` for `hb cache serve` or nginx, `grpc://HOST:PORT[/INSTANCE]`
    /// or `grpcs://…` for a Remote Execution API cache (bazel-remote, Buildbarn,
    /// BuildGrid, NativeLink). Uploads need a signing key (HB_REMOTE_SIGNING_KEY_FILE),
    /// and over HTTP a token (HB_REMOTE_TOKEN or HB_REMOTE_TOKEN_FILE; sent as a bearer
    /// token over gRPC too). Downloads trust entries signed by `remote_trusted_keys` /
    /// HB_REMOTE_TRUSTED_KEYS. grpcs: HB_REMOTE_TLS_CA_FILE, HB_REMOTE_TLS_CERT_FILE and
    /// HB_REMOTE_TLS_KEY_FILE (PEM) add a CA and a client certificate.
    #[arg(long, value_name = "URL")]
    remote_cache: Option<String>,
    /// Only download from the remote cache, never upload.
    #[arg(long)]
    remote_read_only: bool,
    /// Do not use a remote cache even if one is configured.
    #[arg(long)]
    no_remote: bool,
    /// Run sandboxed commands (PEP 517 wheel builds, sdist compiles, build steps) on a
    /// Remote Execution service: `grpc://HOST:PORT[/INSTANCE]` or `grpcs://…` (else
    /// HB_REMOTE_EXECUTOR, else `remote_executor` in [workspace]), e.g. BuildGrid with
    /// `hb worker`s. Results are the same bytes as a local run and enter the local
    /// cache. If it cannot be reached, commands run here after one warning.
    #[arg(long, value_name = "URL")]
    remote_executor: Option<String>,
    /// With a remote executor: fail rather than run a command on this machine.
    #[arg(long)]
    remote_only: bool,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Serve a remote cache over HTTP (GET/HEAD/PUT /cas/<digest> and /ac/<key>).
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:8080.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where blobs and entries are stored.
        #[arg(long)]
        dir: PathBuf,
        /// Evict least-recently-used files beyond this size (e.g. 50G).
        #[arg(long)]
        max_size: Option<String>,
        /// File holding the token uploads must present; without it the server is read-only.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Sizes of the local cache (or of a server's --dir).
    Stats {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Evict least-recently-used files of the local cache (or a server's --dir) down to a size.
    Gc {
        #[arg(long)]
        max_size: String,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Create a signing key pair for remote cache uploads: writes the secret to FILE
    /// (mode 0600) and prints the public key to list in `remote_trusted_keys`.
    Keygen {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct TestArgs {
    /// The deb target to test, e.g. //demosite:deb.
    label: String,
    /// Test the package of PLATFORM (default: the workspace's default). The root is of
    /// that platform's release; its architecture must be this machine's.
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// How to run the service: systemd (a root booted with systemd-nspawn), sysv (a
    /// chroot and the init script) or auto (systemd when systemd-nspawn is installed).
    #[arg(long, value_name = "INIT", default_value = "auto", value_parser = parse_init)]
    init: InitChoice,
    /// The path to request (default: `path` in [deb.test], else /).
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Text the answer must contain (default: `expect` in [deb.test]; else any 2xx).
    #[arg(long, value_name = "TEXT")]
    expect: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Build targets and place their outputs in hb-out/<package path>/.
    ///
    /// Every action is looked up in the cache by a key made of its inputs; only actions
    /// whose inputs changed run. Prints each output path, one per line.
    Build(BuildArgs),
    /// Lock the target roots and python_apps' dependencies for every platform the
    /// workspace builds.
    ///
    /// Target roots: the Debian packages each platform's build steps run in (its
    /// Python and what that needs) are resolved by apt, from this machine's apt sources
    /// with the platform's suite and architecture, into hb-root.lock at the workspace
    /// root; roots already locked are kept unless --update-root.
    ///
    /// Python apps: runtime dependencies ([project].dependencies) and build
    /// requirements ([build-system].requires) are resolved by `pip download` for each
    /// platform's target (e.g. CPython 3.11, manylinux_2_36 x86_64), using your pip
    /// configuration (PIP_INDEX_URL, PIP_FIND_LINKS, pip.conf), into hb.lock next to
    /// the app's BUILD.toml; pip runs in a bubblewrap sandbox that shares only the
    /// network. Wheels only, unless the app allows a dependency from source
    /// (`allow_sdist = ["psycopg2"]`, or `true`): that one is locked as its sdist
    /// (picked and read by hb, never run while locking), compiled at build time in a compile root (the base root + compiler +
    /// `build_depends`), which is locked in hb-root.lock too. Locks hold names,
    /// versions, file names and sha256 hashes, never URLs.
    Lock {
        /// python_app labels, e.g. //demosite:app (none, or `//...`: every python_app of
        /// the workspace).
        labels: Vec<String>,
        /// Resolve every platform's root again, moving to what the mirror has now
        /// (after a Debian point release has dropped the locked versions).
        #[arg(long)]
        update_root: bool,
        /// Also write each app's lock as a PEP 751 `pylock.toml` beside its hb.lock, for
        /// every platform of the workspace, with every runtime file placed in `wheels/`
        /// next to it (fetched and verified like a build does) and named by that path,
        /// never by URL: `uv pip install -r pylock.toml` then installs exactly what hb
        /// installs, without an index.
        #[arg(long, value_name = "FORMAT", value_parser = ["hb", "pylock"], default_value = "hb")]
        format: String,
    },
    /// Build a deb target and test its install, service, upgrade and purge in a fresh root.
    ///
    /// The root is of the platform's release (made once by mmdebstrap from this
    /// machine's apt sources and cached), booted under systemd when systemd-nspawn is
    /// there (else a chroot with the init script). The steps: dpkg -i, the service
    /// running, a request answered (with the text expected), restart, upgrade to the
    /// same version keeping an edited conffile, dpkg --remove leaving no process, dpkg
    /// --purge leaving no file. Each step is printed; the first that fails ends the test
    /// with what it saw (exit status 1). Needs root.
    ///
    /// Example: hb test //demosite:deb --path /health --expect ok
    Test(TestArgs),
    /// Write a first BUILD.toml for the Python project in the current directory (its
    /// pyproject.toml), then lock it.
    ///
    /// The sources are what the pyproject names; the entry point and server are guessed
    /// from the code (a Django wsgi.py, a FastAPI/Starlette or Flask object); the deb
    /// target runs it as a service on port 8000. Where no workspace encloses the
    /// directory, the BUILD.toml also starts one (`[workspace]`). Prints every guess and
    /// what to check. An existing BUILD.toml is never overwritten.
    Init {
        /// Write the BUILD.toml but do not run `hb lock`.
        #[arg(long)]
        no_lock: bool,
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
        /// The label to verify, e.g. //demosite:deb (`//...` verifies every target, one by one).
        label: String,
        /// What to vary: all, none, or a comma-separated list of path, umask, tz,
        /// locale, time, home, jobs, python (another python3 first on PATH), cpus (the
        /// sandboxed commands see one CPU).
        #[arg(long, default_value = "all", value_name = "LIST")]
        vary: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Keep the throwaway checkout and cache for inspection.
        #[arg(long)]
        keep: bool,
    },
    /// Compare two .deb files; exit status 0 only when byte-identical.
    ///
    /// Reports the container, control fields, scripts, file list, modes, owners,
    /// mtimes and contents (unified diffs for text, digests and offsets for binaries).
    Diff {
        /// The first package (the reference).
        a: PathBuf,
        /// The second package.
        b: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Say why each action of the last build ran.
    ///
    /// Lists, for each action that ran, which of its inputs changed since the build
    /// before, traced back to the source that changed.
    Explain {
        /// Print the explanation as JSON.
        #[arg(long)]
        json: bool,
        /// Also list the actions that came from the cache.
        #[arg(long)]
        all: bool,
        /// List the slowest actions of the last build instead, with their time, status
        /// and bytes in and out.
        #[arg(long)]
        timings: bool,
    },
    /// The local cache and the team's remote cache server.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Check the signed provenance hb writes next to a deb.
    #[command(subcommand)]
    Provenance(ProvenanceCommand),
    /// Run other machines' sandboxed commands: a Remote Execution worker.
    ///
    /// Takes leases from a scheduler's Bots service (the Remote Workers API, e.g.
    /// BuildGrid's), runs each command in hb's sandbox with the target root the action
    /// names (written out once per root under the cache directory) and uploads its
    /// outputs. Builds reach it with `hb build --remote-executor` pointed at the same
    /// scheduler. Logs each command to stderr. Runs until stopped: the first SIGTERM or
    /// ^C lets running commands finish and tells the scheduler, a second one ends it. TLS and token
    /// settings are those of the remote cache (HB_REMOTE_TLS_*, HB_REMOTE_TOKEN).
    ///
    /// Example: hb worker --scheduler grpc://127.0.0.1:50051 -j 2
    Worker {
        /// The scheduler: grpc://HOST:PORT[/INSTANCE] or grpcs://….
        #[arg(long, value_name = "URL")]
        scheduler: String,
        /// The REAPI instance name (instead of giving it in the URL).
        #[arg(long)]
        instance: Option<String>,
        /// Commands run at once (default: the number of cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// The worker's name at the scheduler (default: the host name and process id).
        #[arg(long)]
        name: Option<String>,
        /// An extra platform property to advertise, KEY=VALUE (repeatable); `ISA` (this
        /// machine's Debian architecture) and `OSFamily=linux` are always advertised.
        /// `--property ISA=arm64` on an amd64 machine with qemu-user-static takes arm64
        /// commands too.
        #[arg(long = "property", value_name = "KEY=VALUE")]
        properties: Vec<String>,
    },
    /// Remove hb-out/ (and with --cache, the whole cache).
    Clean {
        #[arg(long)]
        cache: bool,
    },
}

#[derive(Subcommand)]
enum ProvenanceCommand {
    /// Check a deb against its provenance (`NAME_VERSION_ARCH.intoto.jsonl` beside it).
    ///
    /// Checks that the envelope is signed by a trusted key (remote_trusted_keys,
    /// HB_REMOTE_TRUSTED_KEYS, or --key), that its subject is this deb (sha256), and,
    /// in the workspace, that every Python file and root package it lists is in the
    /// locks (hb.lock files, hb-root.lock) with the same sha256.
    Verify {
        /// The .deb to check.
        deb: PathBuf,
        /// The provenance; default: beside the deb, `.deb` replaced by `.intoto.jsonl`.
        #[arg(long)]
        provenance: Option<PathBuf>,
        /// A trusted public key (hex, as `hb cache keygen` prints it); repeatable.
        #[arg(long = "key")]
        keys: Vec<String>,
    },
}

/// mimalloc: a no-op build makes tens of thousands of small allocations (plans, records,
/// parsed BUILD.toml files), where glibc malloc showed as ~15% of the CPU time.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Once an action really runs (not a cache hit), freed memory goes back to the system
/// at once instead of mimalloc's default 10 ms later: with the delay, the buffers of
/// chunks compressed one after another overlapped, and a cold demosite build peaked at
/// 91-115 MiB instead of 64. A no-op keeps the delay (purging at once cost it ~2 ms).
pub fn actions_running() {
    static SET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    /// `mi_option_purge_delay` in libmimalloc-sys 0.1.49's `mi_option_t` (pinned).
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    if !SET.swap(true, std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: sets a plain integer option, which mimalloc allows at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader of stdout goes away
    // (`hb query | head`), rather than panic on the failed write.
    // SAFETY: called first, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Descriptors the caller left open (a CI script's token on fd 7) close at every exec:
    // no program hb starts, sandboxed or not, inherits them.
    // SAFETY: a system call on no memory of ours, made before any thread exists.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
    }
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
    // Only `hb verify --vary time` sets this, for its rebuild: the sandboxed code's clock
    // moves with hb's.
    if let Ok(offset) = std::env::var(hb_check::SANDBOX_CLOCK_VARIABLE) {
        hb_sandbox::fake_clock(&offset)?;
    }
    if let Ok(n) = std::env::var(hb_check::SANDBOX_CPUS_VARIABLE) {
        let n: usize =
            n.parse().with_context(|| format!("{}={n}: not a number of CPUs", hb_check::SANDBOX_CPUS_VARIABLE))?;
        hb_sandbox::limit_cpus(n);
    }
    let cwd = match &cli.directory {
        Some(d) => {
            let abs = std::path::absolute(d).with_context(|| format!("cannot use directory {}", d.display()))?;
            if !abs.is_dir() {
                bail!("-C {}: no such directory", d.display());
            }
            abs
        }
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let cache_dir = cache_dir(cli.cache_dir)?;
    match cli.command {
        Command::Build(args) => build(&cwd, &cache_dir, &args),
        Command::Test(args) => install_test(&cwd, &cache_dir, &args),
        Command::Init { no_lock } => init(&cwd, &cache_dir, no_lock),
        Command::Cache(c) => cache_command(c, &cache_dir),
        Command::Worker { scheduler, instance, jobs, name, properties } => {
            worker(&cache_dir, scheduler, instance, jobs, name, properties)
        }
        Command::Provenance(ProvenanceCommand::Verify { deb, provenance, keys }) => {
            provenance_verify(&cwd, &deb, provenance.as_deref(), &keys)
        }
        Command::Lock { labels, update_root, format } => {
            lock(&cwd, &cache_dir, &labels, update_root, format == "pylock")
        }
        Command::Verify { label, vary, json, keep } => verify(&cwd, &cache_dir, &label, &vary, json, keep),
        Command::Diff { a, b, json } => diff(&a, &b, json),
        Command::Explain { json, all, timings } => explain(&cwd, &cache_dir, json, all, timings),
        Command::Query { labels } => query(&cwd, &labels),
        Command::Graph { labels } => graph(&cwd, &labels),
        Command::Clean { cache } => {
            let ws = open_workspace(&cwd)?;
            hb_fs::remove_dir_all_if_exists(&ws.root.join(OUT_DIR))?;
            if cache {
                hb_store::remove_cache(&cache_dir)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cache_dir(flag: Option<PathBuf>) -> Result<PathBuf> {
    // An empty variable counts as unset, as for the others below.
    let from_env = std::env::var_os("HB_CACHE_DIR").filter(|x| !x.is_empty()).map(PathBuf::from);
    if let Some(d) = flag.or(from_env) {
        return std::path::absolute(&d).with_context(|| format!("cannot use cache directory {}", d.display()));
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
            let paths = ws.package_paths()?;
            ws.preload(&paths);
            for pkg in paths {
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

/// The workspace containing `dir`, read with hb's rules.
/// The most actions (and worker threads) a build runs at once.
const MAX_JOBS: usize = 256;

fn open_workspace(dir: &Path) -> Result<Workspace> {
    Ok(Workspace::discover(dir, &hb_rules::Rules::builtin().schemas())?)
}

/// HB_APT_DIR: where the private apt fetching root packages keeps its state.
fn apt_dir_setting() -> Option<PathBuf> {
    std::env::var_os("HB_APT_DIR").filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn lock(cwd: &Path, cache_dir: &Path, texts: &[String], update_root: bool, pylock: bool) -> Result<ExitCode> {
    use hb_rules::rules::python_app;
    let mut ws = open_workspace(cwd)?;
    // No label: every app of the workspace (and its roots), as `//...` does.
    let every = vec!["//...".to_string()];
    let texts = if texts.is_empty() { every.as_slice() } else { texts };
    let mut labels = resolve(&mut ws, cwd, texts)?;
    if texts.iter().any(|t| t == "//...") {
        // A pattern takes the apps it reaches; other kinds have nothing to lock.
        labels.retain(|l| ws.target(l).is_ok_and(|t| t.rule.kind() == "python_app"));
    }
    let store = Store::open(cache_dir).with_context(|| format!("cannot open the cache in {}", cache_dir.display()))?;
    let apt_dir = hb_rules::actions::root::apt_base(&store, apt_dir_setting().as_deref());
    for label in labels {
        let (path, lock) = python_app::lock(&mut ws, &label, &|m| progress::note(m))?;
        let runtime = lock.files(hb_fetch::Role::Runtime).count();
        let build = lock.files(hb_fetch::Role::Build).count();
        let sdists = lock.sdists().count();
        println!("{}", path.display());
        progress::note(&format!(
            "locked {runtime} runtime and {build} build file(s) for {} target(s){}",
            lock.targets.len(),
            if sdists > 0 { format!(", {sdists} of them sdists compiled in the target root") } else { String::new() }
        ));
        if pylock {
            let platforms: Vec<&'static hb_platform::Platform> = ws.platforms.clone();
            let written = write_pylock(&ws, &store, &path, &lock, &platforms)?;
            println!("{}", written.display());
        }
    }
    // The roots last: an app whose lock now holds sdists needs a compile root.
    let compile = python_app::compile_roots(&mut ws)?;
    let done = hb_rules::roots::lock_roots(&ws, &compile, &apt_dir, update_root, &|m| progress::note(m))?;
    if !done.is_empty() {
        println!("{}", hb_rules::roots::ROOT_LOCK);
        progress::note(&format!("locked the {}", done.join(", the ")));
    }
    Ok(ExitCode::SUCCESS)
}

/// `pylock.toml` beside `hb_lock` for `platforms`, their runtime files fetched
/// (verified against the lock) into `wheels/` beside it.
fn write_pylock(
    ws: &Workspace,
    store: &Store,
    hb_lock: &Path,
    lock: &hb_fetch::Lock,
    platforms: &[&'static hb_platform::Platform],
) -> Result<PathBuf> {
    let dir = hb_lock.parent().unwrap_or(Path::new("."));
    let mut targets: Vec<hb_python::Target> = Vec::new();
    for p in platforms {
        let t = hb_rules::rules::python_app::wheel_target(p);
        if !targets.iter().any(|o| o.id() == t.id()) {
            targets.push(t);
        }
    }
    let files =
        hb_fetch::pylock::runtime_files(lock, &targets).map_err(|e| anyhow::anyhow!("{}: {e}", hb_lock.display()))?;
    if files.is_empty() {
        bail!("{} holds no runtime files: nothing to write", hb_lock.display());
    }
    let wheels = dir.join("wheels");
    hb_fs::create_dir_all(&wheels)?;
    let extra: Vec<PathBuf> = ws.settings.wheelhouse.iter().map(|w| ws.root.join(w)).collect();
    let wheelhouses = hb_fetch::wheelhouses(&extra);
    let pip = hb_fetch::Pip::default();
    let tmp = tempfile::tempdir_in(store.tmp_dir()).context("creating a temporary directory in the cache")?;
    let mut placed = Vec::new();
    for (f, _) in &files {
        let dest = wheels.join(&f.file);
        let have = dest.is_file() && hb_fetch::sha256_file(&dest).is_ok_and(|h| h == f.sha256);
        if !have {
            let got = hb_fetch::fetch(&pip, &wheelhouses, f, tmp.path())?;
            let bytes = hb_fs::read(&got)?;
            hb_fs::write_atomic_shared(&dest, &bytes)?;
        }
        let size = std::fs::metadata(&dest).with_context(|| format!("reading {}", dest.display()))?.len();
        placed.push(hb_fetch::pylock::Placed { file: f, path: format!("wheels/{}", f.file), size });
    }
    let out = dir.join("pylock.toml");
    hb_fs::write_atomic_shared(&out, hb_fetch::pylock::render(&targets, &placed).as_bytes())?;
    let names: Vec<&str> = platforms.iter().map(|p| p.name).collect();
    progress::note(&format!(
        "wrote {} for {} with {} file(s) in {}",
        out.display(),
        names.join(", "),
        placed.len(),
        wheels.display()
    ));
    Ok(out)
}

/// Builds `labels` for each of `platforms` in turn (`base` with each platform's name),
/// stopping after a failing platform unless `-k`. Outputs of another platform than the
/// default, or of several, go to hb-out/<platform>/.
fn build_platforms(
    ws: &mut Workspace,
    store: &Store,
    labels: &[Label],
    platforms: &[&'static str],
    base: Options,
    sandbox: hb_sandbox::Mode,
    reporter: &progress::Progress,
) -> Result<hb_rules::build::Outcome> {
    // The default platform is the first of the workspace's.
    let default = ws.platforms.first().map_or(ws.platform.name, |p| p.name);
    let provenance_key = provenance_key(ws)?;
    let apt_signing_key = std::env::var_os("HB_APT_SIGNING_KEY_FILE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| ws.settings.apt_signing_key_file.as_deref().map(|f| ws.root.join(f)));
    let rules = hb_rules::Rules::builtin();
    let mut outcome = hb_rules::build::Outcome::default();
    for name in platforms {
        ws.set_platform(name)?;
        if platforms.len() > 1 {
            progress::note(&format!("building for {name}"));
        }
        let opts = Options { platform: name.to_string(), ..base.clone() };
        let plan_opts = hb_rules::PlanOptions {
            sandbox,
            apt_dir: apt_dir_setting(),
            platform_out_dir: platforms.len() > 1 || *name != default,
            provenance_key: provenance_key.clone(),
            apt_signing_key: apt_signing_key.clone(),
            parsed_cache: Some(store.location().join("parsed")),
        };
        let one = hb_rules::build::build(ws, &rules, store, labels, &opts, &plan_opts, reporter)?;
        let failed = !one.failures.is_empty();
        outcome.records.extend(one.records);
        outcome.outputs.extend(one.outputs);
        outcome.failures.extend(one.failures);
        outcome.skipped.extend(one.skipped);
        outcome.warnings.extend(one.warnings);
        if failed && !base.keep_going {
            break;
        }
    }
    Ok(outcome)
}

fn build(cwd: &Path, cache_dir: &Path, args: &BuildArgs) -> Result<ExitCode> {
    Ok(build_outputs(cwd, cache_dir, args)?.0)
}

/// Builds as `hb build` does; also returns the outputs written (absolute paths).
fn build_outputs(cwd: &Path, cache_dir: &Path, args: &BuildArgs) -> Result<(ExitCode, Vec<PathBuf>)> {
    let off = args.no_sandbox || std::env::var("HB_SANDBOX").is_ok_and(|v| v == "off" || v == "0");
    let sandbox = if off { hb_sandbox::Mode::Off } else { hb_sandbox::Mode::Bwrap };
    let (texts, json, keep_going) = (&args.labels, args.json, args.keep_going);
    let start = Instant::now();
    let mut ws = open_workspace(cwd)?;
    let labels = resolve(&mut ws, cwd, texts)?;
    let store = Store::open(cache_dir).with_context(|| format!("cannot open the cache in {}", cache_dir.display()))?;
    let jobs = match args.jobs {
        Some(0) => bail!("-j 0: at least one action must be able to run"),
        Some(j) if j > MAX_JOBS => {
            progress::warning(&format!("-j {j} is more than hb runs at once; using -j {MAX_JOBS}"));
            MAX_JOBS
        }
        Some(j) => j,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_JOBS),
    };
    let remote = remote_client(&ws, &args.remote)?;
    let executor = remote_executor(&ws, &args.remote)?;
    let default = ws.platform.name;
    let platforms: Vec<&'static str> = match args.platform.as_deref() {
        None => vec![default],
        Some("all") => ws.platforms.iter().map(|p| p.name).collect(),
        Some(name) => vec![ws.set_platform(name)?.name],
    };
    let reporter = progress::Progress::new();
    if sandbox == hb_sandbox::Mode::Off {
        progress::warning("building without the sandbox (--no-sandbox): PEP 517 builds can see this machine");
    }
    let base = Options {
        started: start,
        jobs,
        keep_going,
        platform: String::new(),
        remote: remote.clone(),
        executor: executor.clone(),
        lazy_blobs: true,
        known: Default::default(),
    };
    let mut outcome = build_platforms(&mut ws, &store, &labels, &platforms, base, sandbox, &reporter)?;
    reporter.finish();
    if let Some(file) = &args.profile {
        let trace = hb_check::profile::chrome_trace(&outcome.records);
        hb_fs::write_atomic_shared(file, format!("{trace}\n").as_bytes())
            .with_context(|| format!("writing the build profile {}", file.display()))?;
    }
    if let Some(r) = &remote {
        outcome.warnings.extend(r.warnings());
    }
    if let Some(x) = &executor {
        outcome.warnings.extend(x.warnings());
    }
    outcome.warnings.dedup();
    for w in &outcome.warnings {
        progress::warning(w);
    }
    let (executed, remote_hits) = (outcome.count(Status::Executed), outcome.count(Status::Remote));
    let cached = outcome.count(Status::Cached) + remote_hits;
    for f in &outcome.failures {
        progress::error(&format!("action `{}` failed:\n{}", f.name, indent(&f.error.to_string())));
    }
    if !outcome.skipped.is_empty() {
        progress::note(&format!("{} action(s) not run because of the failure", outcome.skipped.len()));
    }
    // Paths as seen from where hb was started (workspace-relative at the root).
    let below_root = cwd.strip_prefix(&ws.root).map_or(0, |rel| rel.components().count());
    let shown: Vec<String> =
        outcome.outputs.iter().map(|p| format!("{}{}", "../".repeat(below_root), p.display())).collect();
    if json {
        println!("{}", json_report(&outcome, &shown));
    } else {
        // One write, not one per line (stdout is line-buffered).
        let mut text = String::with_capacity(shown.iter().map(|s| s.len() + 1).sum());
        for s in &shown {
            text.push_str(s);
            text.push('\n');
        }
        print!("{text}");
    }
    let from_remote = if remote_hits > 0 { format!(" ({remote_hits} from the remote cache)") } else { String::new() };
    let counts = format!(
        "{} action(s): {executed} executed, {cached} cached{from_remote}, in {:.2}s",
        executed + cached,
        start.elapsed().as_secs_f64()
    );
    if outcome.failures.is_empty() {
        progress::note(&counts);
    } else {
        // Never a line that reads like success.
        progress::error(&format!(
            "the build failed: {} action(s) failed, {} not run ({counts})",
            outcome.failures.len(),
            outcome.skipped.len()
        ));
    }
    let written = outcome.outputs.iter().map(|p| ws.root.join(p)).collect();
    Ok((if outcome.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }, written))
}

/// `hb test`: builds a deb target, then installs and exercises it in a fresh root.
fn install_test(cwd: &Path, cache_dir: &Path, args: &TestArgs) -> Result<ExitCode> {
    use hb_rules::rules::deb::Deb;
    let mut ws = open_workspace(cwd)?;
    let labels = resolve(&mut ws, cwd, std::slice::from_ref(&args.label))?;
    let [label] = labels.as_slice() else {
        bail!("`{}` names {} targets; hb test takes one deb target, like //demosite:deb", args.label, labels.len());
    };
    let target = ws.target(label)?;
    let Some(d) = hb_rules::rule::attrs_of::<Deb>(target) else {
        bail!("{label} is a {} target; hb test installs packages: give a deb target", target.rule.kind());
    };
    let d = d.clone();
    let platform = match args.platform.as_deref() {
        Some(name) => ws.set_platform(name)?,
        None => ws.platform,
    };
    let build_args = BuildArgs {
        labels: vec![label.to_string()],
        json: false,
        platform: Some(platform.name.to_string()),
        jobs: None,
        keep_going: false,
        no_sandbox: false,
        profile: None,
        remote: args.remote.clone(),
    };
    let (code, outputs) = build_outputs(cwd, cache_dir, &build_args)?;
    if code != ExitCode::SUCCESS {
        return Ok(code);
    }
    let Some(deb) = outputs.iter().find(|p| p.extension().is_some_and(|e| e == "deb")) else {
        bail!("building {label} wrote no .deb");
    };
    let file = deb.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let package = file.split('_').next().unwrap_or_default().to_string();
    let settings = d.test.clone().unwrap_or_default();
    let service = d.service.as_ref().map(|svc| {
        let bind = svc.bind.get_ref().as_str();
        // A service on every address is requested on loopback.
        let host = match bind {
            "0.0.0.0" => "127.0.0.1",
            "::" => "::1",
            other => other,
        };
        hb_install::Service {
            name: package.clone(),
            user: svc.user.as_ref().map_or_else(|| package.clone(), |u| u.get_ref().clone()),
            host: host.to_string(),
            port: *svc.port.get_ref(),
            path: args.path.clone().unwrap_or_else(|| settings.path.get_ref().clone()),
            expect: args.expect.clone().or(settings.expect.clone()),
        }
    });
    let plan = hb_install::Plan {
        deb: deb.clone(),
        package,
        suite: platform.suite.to_string(),
        architecture: platform.architecture.to_string(),
        service,
        init: args.init.0,
        roots_dir: hb_install::roots_dir(
            cache_dir,
            std::env::var_os("HB_TEST_ROOTS").filter(|v| !v.is_empty()).map(PathBuf::from).as_deref(),
        ),
    };
    progress::note(&format!(
        "testing {file} in a fresh {} {} root (making one takes a minute, once)",
        platform.suite, platform.architecture
    ));
    let started = Instant::now();
    let mut n = 0;
    let result = hb_install::run(&plan, &mut |done| {
        n += 1;
        let detail = if done.detail.is_empty() { String::new() } else { format!(": {}", done.detail) };
        progress::note(&format!("test step {n} ok ({:.1}s) {}{detail}", done.took.as_secs_f64(), done.step));
    });
    match result {
        Ok(()) => {
            progress::note(&format!("{label} passed its install test in {:.1}s", started.elapsed().as_secs_f64()));
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ hb_install::InstallError::Step { .. }) => {
            progress::error(&format!("{label} failed its install test: {e}"));
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// `hb init`: a BUILD.toml for the project in `cwd`, then its lock.
fn init(cwd: &Path, cache_dir: &Path, no_lock: bool) -> Result<ExitCode> {
    let pyproject = cwd.join("pyproject.toml");
    let build_file = cwd.join("BUILD.toml");
    if build_file.exists() {
        bail!("{} exists already; hb init writes a new one only", build_file.display());
    }
    if !pyproject.exists() && cwd.join("setup.py").exists() {
        bail!(
            "{} has a setup.py and no pyproject.toml: hb reads a project's name and dependencies from \
             pyproject.toml's [project] table. Add a pyproject.toml with [build-system] \
             (requires = [\"setuptools>=61\"], build-backend = \"setuptools.build_meta\") and a [project] \
             table holding setup.py's name, version and install_requires as `dependencies`, remove those \
             from setup.py, then run `hb init` again",
            cwd.display()
        );
    }
    let text = hb_fs::read_to_string(&pyproject).with_context(|| {
        format!("hb init works in a directory with a pyproject.toml; {} cannot be read", pyproject.display())
    })?;
    let doc: toml::Value =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", pyproject.display()))?;
    // A workspace above the directory is kept; otherwise the directory starts one.
    let enclosing = Workspace::discover(cwd, &hb_rules::Rules::builtin().schemas()).ok();
    let made = hb_rules::init::init(&doc, cwd, enclosing.is_none()).map_err(|why| anyhow::anyhow!("{why}"))?;
    hb_fs::write_atomic_shared(&build_file, made.build_file.as_bytes())?;
    println!("{}", build_file.display());
    for note in &made.notes {
        progress::note(note);
    }
    let package = match &enclosing {
        Some(ws) => cwd.strip_prefix(&ws.root).map(|p| p.display().to_string()).unwrap_or_default(),
        None => String::new(),
    };
    let (app, deb) = (format!("//{package}:app"), format!("//{package}:deb"));
    if !made.ready {
        progress::note(&format!(
            "next: fix what the notes above name in {} (and pyproject.toml), then `hb lock {app}` and `hb build {deb}`",
            build_file.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    if no_lock {
        progress::note(&format!("next: `hb lock {app}`, then `hb build {deb}`"));
        return Ok(ExitCode::SUCCESS);
    }
    progress::note(&format!("locking {app} (hb lock {app})"));
    let code = lock(cwd, cache_dir, std::slice::from_ref(&app), false, false)?;
    if code == ExitCode::SUCCESS {
        progress::note(&format!("next: `hb build {deb}`, then `sudo hb test {deb}`"));
    }
    Ok(code)
}

/// `--init`'s values.
#[derive(Clone, Copy)]
struct InitChoice(hb_install::Init);

fn parse_init(s: &str) -> std::result::Result<InitChoice, String> {
    match s {
        "auto" => Ok(InitChoice(hb_install::Init::Auto)),
        "systemd" => Ok(InitChoice(hb_install::Init::Systemd)),
        "sysv" => Ok(InitChoice(hb_install::Init::Sysv)),
        other => Err(format!("`{other}`: use auto, systemd or sysv")),
    }
}

/// `hb build --json`: counts, outputs, every action with its key and result, failures
/// and warnings.
fn json_report(outcome: &hb_rules::build::Outcome, shown: &[String]) -> serde_json::Value {
    let remote_hits = outcome.count(Status::Remote);
    let actions: Vec<_> = outcome
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "kind": r.kind,
                "status": match r.status {
                    Status::Executed => "executed",
                    Status::Cached => "cached",
                    Status::Remote => "remote",
                },
                "key": r.key.hex(),
                "result": r.result.hex(),
            })
        })
        .collect();
    let failures: Vec<_> =
        outcome.failures.iter().map(|f| serde_json::json!({"name": f.name, "error": f.error.to_string()})).collect();
    serde_json::json!({
        "executed": outcome.count(Status::Executed),
        "cached": outcome.count(Status::Cached) + remote_hits,
        "remote": remote_hits,
        "outputs": shown,
        "actions": actions,
        "failures": failures,
        "warnings": outcome.warnings,
    })
}

fn verify(cwd: &Path, cache_dir: &Path, label: &str, vary: &str, json: bool, keep: bool) -> Result<ExitCode> {
    let mut ws = open_workspace(cwd)?;
    let labels = resolve(&mut ws, cwd, &[label.to_string()])?;
    let mut variations = Vec::new();
    for item in vary.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match hb_check::Variation::parse(item) {
            Some(v) => variations.extend(v),
            None => {
                bail!(
                    "unknown variation `{item}`: use all, none, path, umask, tz, locale, time, home, jobs, python or cpus"
                )
            }
        }
    }
    variations.sort();
    variations.dedup();
    if labels.is_empty() {
        bail!("`{label}` names no target: nothing to verify");
    }
    let mut identical = true;
    for label in &labels {
        progress::note(&format!("verifying {label}: building it, then rebuilding from scratch"));
        let req = hb_check::VerifyRequest {
            exe: std::env::current_exe().context("cannot find the hb executable")?,
            workspace_root: ws.root.clone(),
            cache_dir: cache_dir.to_path_buf(),
            label: label.to_string(),
            vary: variations.clone(),
            keep,
        };
        let report = hb_check::verify(&req)?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            print!("{}", report.render());
        }
        identical &= report.reproducible();
    }
    Ok(if identical { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `hb explain --timings`: the slowest actions of the last build.
fn print_timings(records: &[hb_engine::Record], json: bool, n: usize) -> Result<()> {
    let slow = hb_check::profile::slowest(records, n);
    if json {
        let rows: Vec<serde_json::Value> = slow
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name, "kind": r.kind, "status": hb_check::profile::status_name(r.status),
                    "ms": r.timing.duration_us as f64 / 1000.0,
                    "bytes_in": r.timing.bytes_in, "bytes_out": r.timing.bytes_out,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    let total: u64 = records.iter().map(|r| r.timing.duration_us).sum();
    println!("{:>10}  {:>8}  {:>12}  {:>12}  action", "ms", "status", "bytes in", "bytes out");
    for r in &slow {
        let status = hb_check::profile::status_name(r.status);
        let ms = r.timing.duration_us as f64 / 1000.0;
        println!(
            "{ms:>10.1}  {status:>8}  {:>12}  {:>12}  {} ({})",
            r.timing.bytes_in, r.timing.bytes_out, r.name, r.kind
        );
    }
    println!("({} action(s), {:.1} ms of action time in all)", records.len(), total as f64 / 1000.0);
    Ok(())
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

fn explain(cwd: &Path, cache_dir: &Path, json: bool, all: bool, timings: bool) -> Result<ExitCode> {
    let ws = open_workspace(cwd)?;
    let store = Store::open(cache_dir)?;
    let (last, previous) = hb_rules::build::RunLog::load(&store, &ws.root);
    let Some(last) = last else {
        bail!("no build of this workspace is recorded in {}: run `hb build` first", cache_dir.display());
    };
    if timings {
        print_timings(&last.records, json, if all { usize::MAX } else { 15 })?;
        return Ok(ExitCode::SUCCESS);
    }
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

/// The key signing provenance: HB_PROVENANCE_SIGNING_KEY_FILE, `provenance_signing_key_file`,
/// else the remote cache's signing key (HB_REMOTE_SIGNING_KEY_FILE,
/// `remote_signing_key_file`); none means no provenance is written.
fn provenance_key(ws: &Workspace) -> Result<Option<std::sync::Arc<ed25519_dalek::SigningKey>>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).map(PathBuf::from);
    let rel = |p: &str| ws.root.join(p);
    let file = env("HB_PROVENANCE_SIGNING_KEY_FILE")
        .or_else(|| ws.settings.provenance_signing_key_file.as_deref().map(rel))
        .or_else(|| env("HB_REMOTE_SIGNING_KEY_FILE"))
        .or_else(|| ws.settings.remote_signing_key_file.as_deref().map(rel));
    match file {
        Some(f) => Ok(Some(std::sync::Arc::new(
            hb_remote::read_signing_key(&f).with_context(|| "reading the provenance signing key")?,
        ))),
        None => Ok(None),
    }
}

/// `hb provenance verify DEB`.
fn provenance_verify(cwd: &Path, deb: &Path, provenance: Option<&Path>, keys: &[String]) -> Result<ExitCode> {
    let default_path = deb.with_extension("intoto.jsonl");
    let path = provenance.unwrap_or(&default_path);
    let text = hb_fs::read_to_string(path).with_context(|| {
        format!("no provenance for {} (hb writes it beside the deb when a signing key is configured)", deb.display())
    })?;
    let ws = Workspace::discover(cwd, &hb_rules::Rules::builtin().schemas()).ok();
    let mut trusted = Vec::new();
    for k in keys {
        trusted.push(hb_remote::parse_public_key(k).with_context(|| format!("--key {k}"))?);
    }
    if let Some(ws) = &ws {
        for k in &ws.settings.remote_trusted_keys {
            trusted.push(hb_remote::parse_public_key(k.get_ref()).context("in [workspace] remote_trusted_keys")?);
        }
    }
    let env_keys = std::env::var("HB_REMOTE_TRUSTED_KEYS").unwrap_or_default();
    for k in env_keys.split([',', ' ']).filter(|k| !k.is_empty()) {
        trusted.push(hb_remote::parse_public_key(k).context("in HB_REMOTE_TRUSTED_KEYS")?);
    }
    let sha256 = hb_fs::sha256_file(deb).with_context(|| format!("reading {}", deb.display()))?;
    let locks = match ws {
        Some(mut ws) => Some(hb_check::provenance::Locks {
            python: hb_rules::rules::python_app::workspace_locks(&mut ws)?,
            root: hb_root::RootLock::load(&ws.root)?,
        }),
        None => None,
    };
    let report = hb_check::provenance::check(&text, &trusted, &sha256, locks.as_ref())
        .with_context(|| format!("{} does not verify against {}", deb.display(), path.display()))?;
    for line in &report {
        progress::note(line);
    }
    println!("{}: verified", deb.display());
    Ok(ExitCode::SUCCESS)
}

/// The bearer token for remote services: HB_REMOTE_TOKEN, else the file
/// HB_REMOTE_TOKEN_FILE or `remote_token_file` names.
fn token(ws: Option<&Workspace>) -> Result<Option<String>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(t) = env("HB_REMOTE_TOKEN") {
        return Ok(Some(t));
    }
    let file = env("HB_REMOTE_TOKEN_FILE")
        .map(PathBuf::from)
        .or_else(|| ws.and_then(|ws| ws.settings.remote_token_file.as_deref().map(|p| ws.root.join(p))));
    match file {
        Some(f) => Ok(Some(hb_fs::read_to_string(&f).context("reading the remote token")?.trim().to_string())),
        None => Ok(None),
    }
}

/// How long to wait for a remote service (HB_REMOTE_TIMEOUT) and its TLS files
/// (HB_REMOTE_TLS_CA_FILE, HB_REMOTE_TLS_CERT_FILE, HB_REMOTE_TLS_KEY_FILE).
fn connection() -> Result<(std::time::Duration, hb_remote::TlsFiles)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let response_timeout = match env("HB_REMOTE_TIMEOUT") {
        Some(t) => std::time::Duration::from_secs_f64(
            t.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0 && *s < 86_400.0)
                .with_context(|| format!("HB_REMOTE_TIMEOUT={t}: give the seconds to wait, like 10"))?,
        ),
        None => hb_remote::DEFAULT_RESPONSE_TIMEOUT,
    };
    let read_pem = |var: &str| -> Result<Option<Vec<u8>>> {
        env(var).map(|f| hb_fs::read(Path::new(&f)).with_context(|| format!("reading {var}={f}"))).transpose()
    };
    let client = match (read_pem("HB_REMOTE_TLS_CERT_FILE")?, read_pem("HB_REMOTE_TLS_KEY_FILE")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => anyhow::bail!("HB_REMOTE_TLS_CERT_FILE and HB_REMOTE_TLS_KEY_FILE go together: set both or neither"),
    };
    Ok((response_timeout, hb_remote::TlsFiles { ca: read_pem("HB_REMOTE_TLS_CA_FILE")?, client }))
}

fn check_grpc_url(url: &str, what: &str) -> Result<()> {
    if url.starts_with("grpc://") || url.starts_with("grpcs://") {
        return Ok(());
    }
    anyhow::bail!("{what} `{url}`: use grpc://HOST:PORT[/INSTANCE] or grpcs://… (a Remote Execution API server)")
}

/// The remote executor, if one is configured.
fn remote_executor(ws: &Workspace, args: &RemoteArgs) -> Result<Option<std::sync::Arc<dyn hb_engine::Executor>>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(url) = args
        .remote_executor
        .clone()
        .or_else(|| env("HB_REMOTE_EXECUTOR"))
        .or_else(|| ws.settings.remote_executor.clone())
    else {
        if args.remote_only {
            anyhow::bail!(
                "--remote-only needs a remote executor: --remote-executor URL, HB_REMOTE_EXECUTOR or `remote_executor` in [workspace]"
            );
        }
        return Ok(None);
    };
    check_grpc_url(&url, "remote executor")?;
    let (response_timeout, tls) = connection()?;
    let cfg = hb_remote::RemoteConfig {
        url,
        token: token(Some(ws))?,
        read_only: true,
        signing_key: None,
        trusted: Vec::new(),
        response_timeout,
        tls,
    };
    let executor =
        hb_remote::exec::RemoteExecutor::new(cfg, args.remote_only).context("the remote executor setting")?;
    Ok(Some(std::sync::Arc::new(executor)))
}

/// `hb worker`.
fn worker(
    cache_dir: &Path,
    scheduler: String,
    instance: Option<String>,
    jobs: Option<usize>,
    name: Option<String>,
    properties: Vec<String>,
) -> Result<ExitCode> {
    check_grpc_url(&scheduler, "--scheduler")?;
    let url = match instance {
        Some(i) if !i.is_empty() => format!("{}/{}", scheduler.trim_end_matches('/'), i.trim_matches('/')),
        _ => scheduler,
    };
    hb_sandbox::probe(hb_sandbox::Mode::Bwrap).context("hb worker runs every command in the sandbox")?;
    let isa = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        "arm" => "armhf",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    let mut props = vec![("ISA".to_string(), isa.to_string()), ("OSFamily".to_string(), "linux".to_string())];
    for p in properties {
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("--property {p}: give KEY=VALUE, like ISA=arm64"))?;
        if k == "ISA" && v != isa {
            // Another architecture: only under an emulator the sandbox can reach.
            let platform = hb_platform::PLATFORMS
                .iter()
                .find(|p| p.architecture == v)
                .with_context(|| format!("--property ISA={v}: hb builds for no such Debian architecture"))?;
            hb_root::check_emulation(platform).with_context(|| format!("--property ISA={v}"))?;
        }
        let pair = (k.to_string(), v.to_string());
        if !props.contains(&pair) {
            props.push(pair);
        }
    }
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let host = hb_fs::read_to_string(Path::new("/proc/sys/kernel/hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "hb".to_string());
    let name = name.unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let (response_timeout, tls) = connection()?;
    let remote = hb_remote::RemoteConfig {
        url,
        token: token(None)?,
        read_only: false,
        signing_key: None,
        trusted: Vec::new(),
        response_timeout,
        tls,
    };
    let cfg = hb_remote::worker::WorkerConfig { remote, cache: cache_dir.to_path_buf(), jobs, name, properties: props };
    // The first SIGTERM or ^C lets running commands finish and tells the scheduler; a
    // second one ends the process at once.
    extern "C" fn stop(signal: libc::c_int) {
        hb_remote::worker::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        // SAFETY: signal() is async-signal-safe; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    // SAFETY: `stop` only stores to an atomic and resets the disposition, both
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, stop as *const () as libc::sighandler_t);
    }
    hb_remote::worker::serve(cfg, &|line| eprintln!("{line}")).context("hb worker")?;
    Ok(ExitCode::SUCCESS)
}

/// The remote cache client, if one is configured.
fn remote_client(ws: &Workspace, args: &RemoteArgs) -> Result<Option<std::sync::Arc<dyn hb_engine::RemoteCache>>> {
    if args.no_remote {
        return Ok(None);
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let Some(url) =
        args.remote_cache.clone().or_else(|| env("HB_REMOTE_CACHE")).or_else(|| ws.settings.remote_cache.clone())
    else {
        return Ok(None);
    };
    let rel = |p: &str| ws.root.join(p);
    let token = token(Some(ws))?;
    let signing_key = match env("HB_REMOTE_SIGNING_KEY_FILE")
        .map(PathBuf::from)
        .or_else(|| ws.settings.remote_signing_key_file.as_deref().map(rel))
    {
        Some(f) => Some(hb_remote::read_signing_key(&f)?),
        None => None,
    };
    let mut trusted = Vec::new();
    for k in &ws.settings.remote_trusted_keys {
        trusted.push(hb_remote::parse_public_key(k.get_ref()).with_context(|| "in [workspace] remote_trusted_keys")?);
    }
    for k in env("HB_REMOTE_TRUSTED_KEYS").unwrap_or_default().split([',', ' ']).filter(|k| !k.is_empty()) {
        trusted.push(hb_remote::parse_public_key(k).context("in HB_REMOTE_TRUSTED_KEYS")?);
    }
    let read_only = args.remote_read_only || env("HB_REMOTE_READ_ONLY").is_some_and(|v| v != "0");
    let (response_timeout, tls) = connection()?;
    let cfg = hb_remote::RemoteConfig { url, token, read_only, signing_key, trusted, response_timeout, tls };
    if cfg.url.starts_with("grpc://") || cfg.url.starts_with("grpcs://") {
        Ok(Some(std::sync::Arc::new(hb_remote::grpc::Grpc::new(cfg).context("the remote cache setting")?)))
    } else if cfg.url.starts_with("http://") || cfg.url.starts_with("https://") {
        Ok(Some(std::sync::Arc::new(hb_remote::Remote::new(cfg))))
    } else {
        anyhow::bail!(
            "remote cache `{}`: use http(s)://HOST[:PORT] (hb cache serve, nginx) or grpc(s)://HOST:PORT[/INSTANCE] (a REAPI server)",
            cfg.url
        )
    }
}

fn cache_command(c: CacheCommand, cache_dir: &Path) -> Result<ExitCode> {
    match c {
        CacheCommand::Serve { listen, dir, max_size, token_file } => {
            let token = match token_file {
                Some(f) => Some(hb_fs::read_to_string(&f)?.trim().to_string()),
                None => None,
            };
            let max_size = max_size.map(|s| hb_cache_server::parse_size(&s)).transpose()?;
            let read_only = token.is_none();
            let server = hb_cache_server::Server::start(hb_cache_server::ServerConfig {
                listen,
                dir,
                max_size,
                token,
                max_request: 2 << 30,
                max_connections: hb_cache_server::DEFAULT_MAX_CONNECTIONS,
            })?;
            progress::note(&format!(
                "serving the cache on http://{}{}",
                server.local_addr(),
                if read_only { " (read-only: no --token-file)" } else { "" }
            ));
            server.wait();
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Stats { dir } => {
            let (s, shown) = match dir {
                Some(dir) => (hb_store::layout::stats(&dir)?, dir),
                None => (Store::open(cache_dir)?.stats()?, cache_dir.to_path_buf()),
            };
            println!(
                "{}: {} blobs ({} bytes), {} action entries ({} bytes)",
                shown.display(),
                s.blobs,
                s.blob_bytes,
                s.entries,
                s.entry_bytes
            );
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Gc { max_size, dir } => {
            let max = hb_cache_server::parse_size(&max_size)?;
            let ((files, bytes), shown) = match dir {
                Some(dir) => (hb_store::layout::gc(&dir, max)?, dir),
                None => (Store::open(cache_dir)?.gc(max)?, cache_dir.to_path_buf()),
            };
            println!("{}: removed {files} file(s), {bytes} bytes", shown.display());
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Keygen { out } => {
            use std::os::unix::fs::PermissionsExt;
            if out.exists() {
                bail!("{} exists; refusing to overwrite a key", out.display());
            }
            let (secret, public) = hb_remote::generate_key()?;
            let mut f = hb_fs::AtomicFile::create(&out, None)?;
            std::io::Write::write_all(&mut f, format!("{secret}\n").as_bytes())?;
            f.file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.commit()?;
            println!("{public}");
            progress::note(&format!(
                "wrote the secret key to {}; trust the public key above in remote_trusted_keys",
                out.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

fn query(cwd: &Path, texts: &[String]) -> Result<ExitCode> {
    let mut ws = open_workspace(cwd)?;
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
    let mut ws = open_workspace(cwd)?;
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
