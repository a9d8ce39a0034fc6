//! Where a sandboxed command of an action runs: on a remote executor when the build has
//! one (`--remote-executor`; the command, its work directory and its target root go as
//! data, see [`hb_engine::ExecCommand`]), else here under bubblewrap. Either way the
//! action prepares the same work directory before and reads the same outputs from it
//! after, so where it ran never changes what it produces. Commands with tool layers and
//! commands run without the sandbox stay on this machine.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hb_engine::{Ctx, ExecCommand, JobError};
use hb_sandbox::{Layer, Mode, Outcome};
use hb_store::Tree;

/// How long a sandboxed command may run and what it may use (never in a key: they
/// decide only whether an action fails, never what it writes).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    pub timeout: Duration,
    pub limits: hb_sandbox::Limits,
}

impl Bounds {
    /// The workspace's `action_*` settings, else hb's defaults.
    pub fn of(settings: &hb_config::WorkspaceSettings) -> Bounds {
        let d = hb_sandbox::Limits::default();
        let output = settings.action_max_output_mib.map_or(d.file_size, |m| m.saturating_mul(1 << 20));
        Bounds {
            timeout: Duration::from_secs(settings.action_timeout.unwrap_or(3600)),
            limits: hb_sandbox::Limits {
                processes: settings.action_max_processes.or(d.processes),
                memory: settings.action_max_memory_mib.map(|m| m.saturating_mul(1 << 20)).or(d.memory),
                file_size: output,
                tmp_size: output,
            },
        }
    }

    /// What went wrong, when a command ended at one of its bounds: a sentence to put
    /// before its output (empty when none was reached).
    pub fn explain(&self, out: &Outcome, setting: &str) -> String {
        let mut why = out.limit_hit.clone();
        if out.timed_out {
            why.push(format!("it ran past its timeout of {} s ({setting}) and was stopped", self.timeout.as_secs()));
        }
        if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
    }
}

/// A command ready to run: its work directory is prepared.
pub(crate) struct Command<'a> {
    /// Who runs it, for messages (the action's label).
    pub label: &'a str,
    pub work: &'a Path,
    pub cwd: &'a str,
    pub argv: Vec<String>,
    /// Variables added to the sandbox's base environment.
    pub env: BTreeMap<String, String>,
    /// The target root, mounted as `/` (`None`: the host's `/usr`, local only).
    pub root: Option<&'a Tree>,
    /// Tool trees (with their labels) placed over the root; these commands run locally.
    pub layers: Vec<(&'a str, &'a Tree)>,
    pub timeout: Option<Duration>,
    pub limits: hb_sandbox::Limits,
    /// Paths under the work directory the action reads afterwards.
    pub outputs: Vec<String>,
    /// The mtime the action gave the files it wrote into the work directory.
    pub mtime: u64,
    pub platform: &'static hb_platform::Platform,
}

/// Runs `cmd` on the executor if the build has one, else (or when it is unavailable)
/// in the local sandbox.
pub(crate) fn run(ctx: &Ctx, mode: Mode, cmd: Command<'_>) -> Result<Outcome, JobError> {
    let fail = |why: String| JobError::Failed(format!("{}: {why}", cmd.label));
    if let Some(executor) = ctx.executor()
        && mode == Mode::Bwrap
        && cmd.layers.is_empty()
        && cmd.root.is_some()
    {
        let mut env: BTreeMap<String, String> =
            hb_sandbox::BASE_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.extend(cmd.env.clone());
        let exec = ExecCommand {
            name: cmd.label,
            work: cmd.work,
            work_at: hb_sandbox::WORK,
            cwd: cmd.cwd,
            argv: &cmd.argv,
            env: &env,
            root: cmd.root,
            outputs: &cmd.outputs,
            mtime: cmd.mtime,
            timeout: cmd.timeout,
            arch: cmd.platform.architecture,
        };
        if let Some(ran) = executor.execute(&exec, ctx.store).map_err(fail)? {
            return Ok(Outcome {
                success: ran.code == Some(0) && !ran.timed_out,
                code: ran.code,
                timed_out: ran.timed_out,
                limit_hit: Vec::new(),
                stdout: ran.stdout,
                stderr: ran.stderr,
            });
        }
    }
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if mode == Mode::Bwrap
        && let Err(why) = PROBE.get_or_init(|| hb_sandbox::probe(Mode::Bwrap).map_err(|e| e.to_string()))
    {
        return Err(fail(why.clone()));
    }
    let root = match cmd.root {
        Some(tree) => {
            hb_root::check_emulation(cmd.platform).map_err(|e| fail(e.to_string()))?;
            Some(crate::actions::root::materialized(ctx.store, tree, ctx.jobs(), &|m| ctx.warn(m))?)
        }
        None => None,
    };
    let mut layers: Vec<Layer> = Vec::new();
    for (label, tree) in &cmd.layers {
        let (Some(root), dir) =
            (&root, crate::actions::root::materialized(ctx.store, tree, ctx.jobs(), &|m| ctx.warn(m))?)
        else {
            return Err(fail("tools need a target root (a bug in hb)".to_string()));
        };
        let placed = hb_sandbox::layers::layers_of_tree(root, &dir)
            .map_err(|e| fail(format!("the tool {label} cannot be placed over the target root: {e}")))?;
        layers.extend(placed);
    }
    let spec = hb_sandbox::Spec {
        work: cmd.work,
        cwd: cmd.cwd,
        argv: cmd.argv,
        env: cmd.env,
        root: root.as_deref(),
        layers,
        timeout: cmd.timeout,
        limits: cmd.limits,
    };
    hb_sandbox::run(mode, &spec).map_err(|e| fail(e.to_string()))
}
