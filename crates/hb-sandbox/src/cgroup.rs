//! Bounds on one sandboxed command's processes and memory through the kernel's control
//! groups: a group of its own, made next to hb's own group in each hierarchy that has
//! the controller (cgroup v1's `pids` and `memory`, or the unified hierarchy when
//! those controllers are delegated to it), joined by the command between fork and exec,
//! read afterwards for which bound was hit, and emptied (every process killed) and
//! removed when the command ends. Where no group can be made (no permission, no
//! controller), the command runs without these two bounds; the timeout, the file-size
//! rlimit and the sized tmpfs still hold, and [`Group::bounds`] says what is in force.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where control-group hierarchies are mounted.
const CGROUP_FS: &str = "/sys/fs/cgroup";

/// One control group per hierarchy, created for a single command.
pub struct Group {
    dirs: Vec<Dir>,
    /// `cgroup.procs` of each directory, opened before the fork (the child only writes).
    procs: Vec<OwnedFd>,
}

struct Dir {
    path: PathBuf,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    V1Pids,
    V1Memory,
    /// The unified hierarchy (both controllers, where delegated).
    V2,
}

/// A name no other hb process on the machine uses at the same time.
fn unique_name() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!("hb-sandbox-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// hb's own group in each hierarchy, from `/proc/self/cgroup` (`id:controllers:path`).
fn own_groups() -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            Some((controllers.to_string(), path.trim_start_matches('/').to_string()))
        })
        .collect()
}

fn write(path: &Path, text: &str) -> bool {
    std::fs::write(path, text).is_ok()
}

impl Group {
    /// A group bounding the command to `processes` tasks and `memory` bytes (either
    /// may be `None`), or `None` when this machine lets hb make none.
    pub fn create(processes: Option<u64>, memory: Option<u64>) -> Option<Group> {
        if processes.is_none() && memory.is_none() {
            return None;
        }
        let name = unique_name();
        let mut dirs = Vec::new();
        let own = own_groups();
        let unified = Path::new(CGROUP_FS).join("cgroup.controllers").is_file();
        for (controllers, path) in &own {
            let kinds: Vec<(Kind, &str)> = if unified && controllers.is_empty() {
                vec![(Kind::V2, "")]
            } else {
                controllers
                    .split(',')
                    .filter_map(|c| match c {
                        "pids" if processes.is_some() => Some((Kind::V1Pids, "pids")),
                        "memory" if memory.is_some() => Some((Kind::V1Memory, "memory")),
                        _ => None,
                    })
                    .collect()
            };
            for (kind, mount) in kinds {
                let parent = Path::new(CGROUP_FS).join(mount).join(path);
                let dir = parent.join(&name);
                if std::fs::create_dir(&dir).is_err() {
                    continue;
                }
                let ok = match kind {
                    Kind::V1Pids => processes.is_some_and(|n| write(&dir.join("pids.max"), &n.to_string())),
                    Kind::V1Memory => memory.is_some_and(|m| {
                        // Swap too, where the kernel accounts it; not all do.
                        let set = write(&dir.join("memory.limit_in_bytes"), &m.to_string());
                        let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &m.to_string());
                        set
                    }),
                    Kind::V2 => {
                        let pids = processes.is_some_and(|n| write(&dir.join("pids.max"), &n.to_string()));
                        let mem = memory.is_some_and(|m| {
                            let set = write(&dir.join("memory.max"), &m.to_string());
                            let _ = write(&dir.join("memory.swap.max"), "0");
                            set
                        });
                        pids || mem
                    }
                };
                if ok {
                    dirs.push(Dir { path: dir, kind });
                } else {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        let mut procs = Vec::new();
        let mut kept = Vec::new();
        for d in dirs {
            match std::fs::OpenOptions::new().write(true).open(d.path.join("cgroup.procs")) {
                Ok(f) => {
                    procs.push(OwnedFd::from(f));
                    kept.push(d);
                }
                Err(_) => {
                    let _ = std::fs::remove_dir(&d.path);
                }
            }
        }
        if kept.is_empty() {
            return None;
        }
        Some(Group { dirs: kept, procs })
    }

    /// The descriptors the child writes its pid into (`"0"`: itself) before exec.
    pub(crate) fn join_fds(&self) -> Vec<i32> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Which of processes and memory are bounded.
    pub fn bounds(&self) -> (bool, bool) {
        let pids = self.dirs.iter().any(|d| matches!(d.kind, Kind::V1Pids | Kind::V2));
        let mem = self.dirs.iter().any(|d| matches!(d.kind, Kind::V1Memory | Kind::V2));
        (pids, mem)
    }

    /// Whether the command was refused a process for the bound, and whether one of its
    /// processes was killed for running out of memory.
    pub fn hit(&self) -> (bool, bool) {
        let mut pids = false;
        let mut mem = false;
        let count = |path: PathBuf, key: &str| -> u64 {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.lines().find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok())))
                .unwrap_or(0)
        };
        for d in &self.dirs {
            match d.kind {
                Kind::V1Pids => pids |= count(d.path.join("pids.events"), "max ") > 0,
                Kind::V1Memory => mem |= count(d.path.join("memory.oom_control"), "oom_kill ") > 0,
                Kind::V2 => {
                    pids |= count(d.path.join("pids.events"), "max ") > 0;
                    mem |= count(d.path.join("memory.events"), "oom_kill ") > 0;
                }
            }
        }
        (pids, mem)
    }

    /// Kills every process still in the group; true when it is empty.
    pub fn kill_all(&self) -> bool {
        let mut empty = true;
        for d in &self.dirs {
            for _ in 0..100 {
                let pids: Vec<i32> = std::fs::read_to_string(d.path.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                for pid in &pids {
                    // SAFETY: kill has no memory effects; the pid is in the command's group.
                    unsafe {
                        libc::kill(*pid, libc::SIGKILL);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            empty &= std::fs::read_to_string(d.path.join("cgroup.procs")).is_ok_and(|t| t.trim().is_empty());
        }
        empty
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            // A group is removed once its last process is reaped: retry briefly.
            for _ in 0..50 {
                if std::fs::remove_dir(&d.path).is_ok() || !d.path.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}
