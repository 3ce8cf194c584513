//! CPU cgroups that share the machine between the run's servers and its clients.
//!
//! On one machine, hundreds of client processes (the agents, the N-process baseline's workers) starve the broker's
//! threads of CPU until its heartbeat to its own controller times out and it fences itself: every partition then
//! has no leader for seconds, and the run measures those outages. The broker stands for a cluster on machines of its
//! own, so the run splits the CPU between two cgroups of the same weight: the broker and Redis in one, the clients
//! in the other. The managers stay outside both, as the bench itself does. Niceness alone cannot do this: with
//! autogroup (the default of most kernels) a nice value only orders threads within one session, and the
//! supervisor's session is not the broker's. Neither weight gives both sides enough on two cores: the measurements
//! are in docs/bench.md ("The clients and the broker share two cores").

use std::path::{Path, PathBuf};

/// The run's two cgroups, removed when dropped (once their processes are gone).
#[derive(Debug)]
pub(crate) struct RunCgroups {
    servers: PathBuf,
    clients: PathBuf,
}

/// Where a cgroup CPU controller is mounted, and which version it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CpuController {
    /// cgroup v1 with the `cpu` controller (possibly co-mounted as `cpu,cpuacct`).
    V1(PathBuf),
    /// The cgroup v2 hierarchy.
    V2(PathBuf),
}

/// The CPU controller `mounts` (the text of `/proc/mounts`) shows, v1 first: a v2 hierarchy mounted beside a v1
/// `cpu` controller has no `cpu` of its own.
fn cpu_controller(mounts: &str) -> Option<CpuController> {
    let entries: Vec<(&str, &str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, kind, options) = (f.next()?, f.next()?, f.next()?, f.next()?);
            Some((at, kind, options))
        })
        .collect();
    let v1 = entries.iter().find(|(_, kind, options)| *kind == "cgroup" && options.split(',').any(|o| o == "cpu"));
    if let Some((at, _, _)) = v1 {
        return Some(CpuController::V1(PathBuf::from(at)));
    }
    entries.iter().find(|(_, kind, _)| *kind == "cgroup2").map(|(at, _, _)| CpuController::V2(PathBuf::from(at)))
}

impl RunCgroups {
    /// Creates `mesh-bench-<pid>-servers` and `-clients` at the top of the CPU controller's hierarchy, both at the
    /// default weight. The error says why it could not (not root, no controller, v2 without `cpu` at its root).
    pub(crate) fn create() -> Result<Self, String> {
        let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| format!("cannot read /proc/mounts: {e}"))?;
        let root = match cpu_controller(&mounts).ok_or("no cgroup CPU controller is mounted")? {
            CpuController::V1(root) => root,
            CpuController::V2(root) => {
                let enabled = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == "cpu") {
                    return Err(format!("the cgroup v2 root {} does not enable the cpu controller", root.display()));
                }
                root
            }
        };
        let name = |part: &str| root.join(format!("mesh-bench-{}-{part}", std::process::id()));
        let groups = Self { servers: name("servers"), clients: name("clients") };
        for dir in [&groups.servers, &groups.clients] {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        Ok(groups)
    }

    /// Moves running server processes (the broker's nodes, Redis), every thread of each, into the servers' cgroup.
    pub(crate) fn adopt_servers(&self, pids: impl IntoIterator<Item = i32>) -> Result<(), String> {
        let procs = self.servers.join("cgroup.procs");
        for pid in pids {
            std::fs::write(&procs, pid.to_string())
                .map_err(|e| format!("cannot move pid {pid} into {}: {e}", procs.display()))?;
        }
        Ok(())
    }

    /// The clients' cgroup, for the supervisor's `cgroup` field and the baseline's workers.
    pub(crate) fn clients(&self) -> &Path {
        &self.clients
    }
}

impl Drop for RunCgroups {
    fn drop(&mut self) {
        // Only an empty cgroup can be removed; everything the run started has been stopped by now.
        for dir in [&self.clients, &self.servers] {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "a cgroup of the run was left behind");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v1_cpu_controller_is_found_even_co_mounted_and_beside_a_v2_hierarchy() {
        let mounts = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
                      cgroup /sys/fs/cgroup/cpuacct cgroup rw,relatime,cpuacct 0 0\n\
                      cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n";
        assert_eq!(cpu_controller(mounts), Some(CpuController::V1("/sys/fs/cgroup/cpu,cpuacct".into())));
    }

    #[test]
    fn a_v2_hierarchy_alone_is_used_and_no_cgroup_at_all_is_none() {
        let v2 = "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(cpu_controller(v2), Some(CpuController::V2("/sys/fs/cgroup".into())));
        assert_eq!(cpu_controller("proc /proc proc rw 0 0\n"), None);
    }
}
