//! The operating-system side of supervision: spawning a child in its own process group with a parent-death signal,
//! signalling whole groups, telling whether a group is gone, reaping, and reading `/proc`.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::spec::ProcessSpec;

/// Makes `cmd` start a session of its own (`setsid` between fork and exec): a detached supervisor (`mesh up -d`,
/// `mesh bench`, `cargo xtask chaos`) must not share the terminal's process group, or the Ctrl-C meant for the
/// command that started it would also stop the deployment behind that command's back.
pub fn in_new_session(cmd: &mut Command) -> &mut Command {
    #[expect(unsafe_code, reason = "setsid must run in the child between fork and exec")]
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from))
    }
}

/// Makes `cmd` start at scheduling niceness `nice` (`setpriority` between fork and exec; every thread it starts
/// inherits it). Raising niceness needs no privilege; lowering it below the caller's needs `CAP_SYS_NICE`, and the
/// spawn then fails with that error.
pub fn at_nice(cmd: &mut Command, nice: i8) -> &mut Command {
    #[expect(unsafe_code, reason = "setpriority must run in the child between fork and exec")]
    // SAFETY: setpriority is a plain system call (async-signal-safe) on the calling process, which touches no memory
    // of the parent; errno is read right after it in the same thread.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpriority(libc::PRIO_PROCESS, 0, i32::from(nice)) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// Makes `cmd` start inside the cgroup `dir` (it writes `0`, meaning itself, to `dir/cgroup.procs` between fork and
/// exec, so everything it runs is accounted there from its first instruction). Works alike with cgroup v1 and v2;
/// the spawn fails with the write's error when the directory is missing or not writable.
pub fn in_cgroup<'a>(cmd: &'a mut Command, dir: &Path) -> std::io::Result<&'a mut Command> {
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a cgroup path holds a NUL byte"))?;
    #[expect(unsafe_code, reason = "joining a cgroup must happen in the child between fork and exec")]
    // SAFETY: open, write and close are async-signal-safe system calls; the path was allocated before the fork and
    // the closure allocates nothing.
    unsafe {
        Ok(cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            let error = std::io::Error::last_os_error();
            libc::close(fd);
            if written == 1 { Ok(()) } else { Err(error) }
        }))
    }
}

/// A freshly spawned child: its pid (= process group id) and its output pipes.
pub struct Spawned {
    /// PID of the leader; also its process group id.
    pub pid: i32,
    /// Standard output.
    pub stdout: tokio::process::ChildStdout,
    /// Standard error.
    pub stderr: tokio::process::ChildStderr,
}

/// Spawns `spec` in a new process group, with `PR_SET_PDEATHSIG = SIGKILL` so it cannot outlive the supervisor
/// (the signal fires when the spawning thread dies: the supervisor spawns from its single runtime thread), and
/// `NOTIFY_SOCKET` pointing at its sd_notify socket.
pub fn spawn(spec: &ProcessSpec, notify_socket: &Path, env: &BTreeMap<String, String>) -> std::io::Result<Spawned> {
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .envs(env)
        .envs(&spec.env)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("MESH_PROCESS_NAME", &spec.name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(w) = spec.watchdog {
        cmd.env("WATCHDOG_USEC", w.as_micros().to_string());
    }
    if let Some(nice) = spec.nice {
        at_nice(&mut cmd, nice);
    }
    if let Some(dir) = &spec.cgroup {
        in_cgroup(&mut cmd, dir)?;
    }
    let parent = std::process::id();
    #[expect(unsafe_code, reason = "pre_exec is the only way to set the parent-death signal of a child")]
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe syscalls (prctl,
    // getppid, kill).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from)?;
            // The supervisor may have died between fork and prctl: then nobody would send the signal.
            if nix::unistd::getppid().as_raw() != i32::try_from(parent).unwrap_or(-1) {
                let _ = nix::sys::signal::raise(Signal::SIGKILL);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
    let stderr = child.stderr.take().ok_or_else(|| std::io::Error::other("no stderr pipe"))?;
    // The supervisor reaps with waitpid(-1) (it is a subreaper and must also reap what it adopts), so the std
    // handle is dropped without waiting.
    drop(child);
    Ok(Spawned {
        pid,
        stdout: tokio::process::ChildStdout::from_std(stdout)?,
        stderr: tokio::process::ChildStderr::from_std(stderr)?,
    })
}

/// Sends `signal` to every process of group `pgid`. A group already gone is not an error.
pub fn signal_group(pgid: i32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether any process of group `pgid` still exists (zombies included: reap first).
pub fn group_alive(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exited with a code.
    Code(i32),
    /// Killed by a signal.
    Signal(Signal),
}

/// Reaps every child that has ended (ours and adopted orphans), without blocking.
pub fn reap_all() -> Vec<(i32, Ended)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid.as_raw(), Ended::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid.as_raw(), Ended::Signal(sig))),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// Makes this process a child subreaper: orphaned descendants (a child's forked grandchildren whose parent died)
/// are re-parented to it instead of to init, so they can be found, stopped and reaped.
pub fn become_subreaper() -> Result<(), Errno> {
    nix::sys::prctl::set_child_subreaper(true)
}

fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Start time of `pid` in clock ticks since boot (`/proc/PID/stat` field 22), to detect PID reuse.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// CPU seconds (user + system) and resident bytes of `pid`.
pub fn usage(pid: i32) -> Option<(f64, u64)> {
    let f = stat_fields(pid)?;
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096);
    #[expect(clippy::cast_precision_loss, reason = "CPU seconds for display")]
    let cpu = ticks as f64 / hz as f64;
    Some((cpu, rss_pages * u64::try_from(page).unwrap_or(4096)))
}

/// PIDs whose parent is `parent` (adopted orphans, for a subreaper), read from `/proc`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat_fields(*pid).and_then(|f| f.get(1)?.parse::<i32>().ok()) == Some(parent))
        .collect()
}

/// Parses a signal name as operators write it (`KILL`, `SIGKILL`, `term`, `9`).
pub fn parse_signal(text: &str) -> Option<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    if let Ok(n) = upper.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_as_operators_write_them() {
        assert_eq!(parse_signal("KILL"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("sigterm"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("STOP"), Some(Signal::SIGSTOP));
        assert_eq!(parse_signal("NOPE"), None);
    }

    #[test]
    fn proc_readings_of_this_process() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(start_ticks(me).is_some());
        let (_cpu, rss) = usage(me).expect("usage");
        assert!(rss > 0);
    }

    #[test]
    fn a_child_started_at_a_niceness_runs_at_it_and_a_missing_cgroup_fails_the_spawn() {
        let mut cmd = Command::new("sleep");
        cmd.arg("5");
        let mut child = at_nice(&mut cmd, 7).spawn().expect("sleep starts");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).expect("stat");
        // Field 19 is the nice value; the command name (field 2) has no spaces here.
        let nice: Vec<&str> = stat.split_whitespace().collect();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(nice[18], "7", "{stat}");
        let mut cmd = Command::new("true");
        let err = in_cgroup(&mut cmd, Path::new("/nonexistent/mesh-cgroup"))
            .expect("a path")
            .spawn()
            .expect_err("no such cgroup");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
    }
}
