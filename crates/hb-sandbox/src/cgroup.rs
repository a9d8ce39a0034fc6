//! Bounds on one sandboxed command's processes and memory through the kernel's control
//! groups: a group of its own, made next to hb's own group in each hierarchy that has
//! the controller (cgroup v1's `pids` and `memory`, or the unified hierarchy when
//! those controllers are delegated to it), joined by the command between fork and exec,
//! read afterwards for which bound was hit, and emptied (every process killed) and
//! removed when the command ends. Where no group can be made (no permission, no
//! controller), the command runs without these two bounds; the timeout, the file-size
//! rlimit and the sized tmpfs still hold, and [`Group::bounds`] says what is in force.
//! [`Group::for_container`] makes the other kind hb needs: a group in the hierarchies
//! that only track processes (cgroup v1's `name=systemd` and the unified one), which
//! `systemd-nspawn` hands to a container whose root is not the machine's root, so that
//! the container's systemd can make its own groups below it.

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
    /// A hierarchy used only to track processes (no bound).
    Tracking,
}

/// A name no other hb process on the machine uses at the same time.
fn unique_name(what: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!("hb-{what}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
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
        let name = unique_name("sandbox");
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
                    Kind::Tracking => false,
                };
                if ok {
                    dirs.push(Dir { path: dir, kind });
                } else {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        Group::opened(dirs)
    }

    /// A group of its own in each process-tracking hierarchy hb is in (cgroup v1's
    /// `name=systemd`, the unified hierarchy), for a container started in it; an error
    /// names the hierarchy where none could be made.
    pub fn for_container() -> Result<Group, String> {
        let name = unique_name("test");
        let mut dirs = Vec::new();
        for (controllers, path) in own_groups() {
            let mount = match controllers.as_str() {
                "name=systemd" => "systemd",
                "" if Path::new(CGROUP_FS).join("cgroup.controllers").is_file() => "",
                "" => "unified",
                _ => continue,
            };
            let parent = Path::new(CGROUP_FS).join(mount).join(&path);
            if !parent.join("cgroup.procs").is_file() {
                continue;
            }
            let dir = parent.join(&name);
            std::fs::create_dir(&dir).map_err(|e| format!("cannot make the control group {}: {e}", dir.display()))?;
            dirs.push(Dir { path: dir, kind: Kind::Tracking });
        }
        if dirs.is_empty() {
            return Err(format!("found no process-tracking control group hierarchy under {CGROUP_FS}"));
        }
        let want = dirs.len();
        let group = Group::opened(dirs).ok_or("cannot join the control groups made for it")?;
        if group.dirs.len() != want {
            return Err("cannot join every control group made for it".into());
        }
        Ok(group)
    }

    /// Makes `cmd`'s process join this group between fork and exec.
    pub fn join_on_spawn(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        let join = self.join_fds();
        // SAFETY: only write(2) on descriptors opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &join {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    /// The groups' directories with their `cgroup.procs` open for writing; those that
    /// cannot be opened are removed.
    fn opened(dirs: Vec<Dir>) -> Option<Group> {
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
                Kind::Tracking => {}
            }
        }
        (pids, mem)
    }

    /// Kills every process still in the group (and in the groups a container made
    /// below it); true when it is empty.
    pub fn kill_all(&self) -> bool {
        let mut empty = true;
        for d in &self.dirs {
            for _ in 0..100 {
                let pids = processes_below(&d.path);
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
            empty &= processes_below(&d.path).is_empty();
        }
        empty
    }
}

/// The processes in the group at `dir` and every group below it.
fn processes_below(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for sub in subgroups(dir) {
        pids.extend(processes_below(&sub));
    }
    pids
}

/// The groups directly below `dir`.
fn subgroups(dir: &Path) -> Vec<PathBuf> {
    hb_fs::read_dir_sorted(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Removes the group at `dir` after those below it (a group is removed with rmdir,
/// once empty of processes and groups).
fn remove_group(dir: &Path) -> bool {
    for sub in subgroups(dir) {
        remove_group(&sub);
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill_all();
        for d in &self.dirs {
            // A group is removed once its last process is reaped: retry briefly.
            for _ in 0..50 {
                if remove_group(&d.path) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_container_group_holds_its_command_and_what_it_made_below_and_goes() {
        // Only root may make groups here; others get an error that names why.
        let group = match Group::for_container() {
            Ok(g) => g,
            Err(why) => {
                // SAFETY: geteuid has no memory effects.
                assert_ne!(unsafe { libc::geteuid() }, 0, "root could make no container group: {why}");
                return;
            }
        };
        let dirs: Vec<PathBuf> = group.dirs.iter().map(|d| d.path.clone()).collect();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30");
        group.join_on_spawn(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        for d in &dirs {
            // What a container's systemd does: a group of its own below.
            std::fs::create_dir(d.join("init.scope")).unwrap();
            assert!(processes_below(d).contains(&(child.id() as i32)), "{}", d.display());
        }
        drop(group);
        assert!(child.wait().unwrap().signal().is_some(), "the command was killed");
        for d in &dirs {
            assert!(!d.exists(), "{} was removed", d.display());
        }
    }
}
