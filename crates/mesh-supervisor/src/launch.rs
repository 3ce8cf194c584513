//! A supervisor (`mesh up`) started as a child in a session of its own and driven from outside through its control
//! socket: `mesh up --detach`, `mesh bench` and `cargo xtask chaos` all launch deployments this way, so how a
//! supervisor is spawned, asked for its state, waited for and stopped is written once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::control::{self, ControlError, Request};
use crate::state::{ProcState, StateDir, StateFile};

/// Lines of a log quoted in an error: enough for the cause, short enough for a terminal.
const LOG_LINES: usize = 20;

/// How often a waiting caller asks the supervisor for its state.
const POLL: Duration = Duration::from_millis(200);

/// How to start one supervisor; kept by the caller so the same supervisor can be started again as itself (a
/// simulated host coming back after its supervisor was killed).
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The `mesh` binary.
    pub program: PathBuf,
    /// Words run before the program (`ip netns exec NS` on a simulated host); empty to run it directly.
    pub launcher: Vec<String>,
    /// Everything after the program, `up` and its `--detached-child` included.
    pub args: Vec<OsString>,
    /// Environment added to the launcher's own.
    pub env: Vec<(String, String)>,
    /// The state directory the supervisor serves (its control socket and process logs).
    pub state_dir: StateDir,
    /// Where the supervisor's own output is appended.
    pub log: PathBuf,
    /// How long one question on the control socket may take: a supervisor starting hundreds of processes on two
    /// busy cores answers slowly.
    pub answer_timeout: Duration,
}

/// Why a launched supervisor could not be started, asked, waited for or stopped. Each names what to read next.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program or its log could not be started or opened.
    #[error("failed to start the supervisor {program}: {source}")]
    Spawn {
        /// The program run.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The supervisor's log could not be opened.
    #[error("failed to open the supervisor's log {path}: {source}")]
    Log {
        /// The log.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The supervisor exited while it was expected to run.
    #[error("the supervisor in {dir} exited ({status}); its log {log} ends with:\n{tail}")]
    Exited {
        /// Its state directory.
        dir: String,
        /// How it exited.
        status: ExitStatus,
        /// Its log.
        log: String,
        /// The log's last lines.
        tail: String,
    },
    /// A process gave up (`FAILED`) while the deployment started; the others keep running.
    #[error("{name} FAILED (the others keep running; `mesh down` stops them). Its log ends with:\n{tail}")]
    ProcessFailed {
        /// The process.
        name: String,
        /// Its log's last lines.
        tail: String,
    },
    /// Not every process was READY in time.
    #[error(
        "not every process was READY within {timeout:?} ({ready} of {total} ready); `mesh status --state-dir {dir}` \
         shows which, `mesh logs NAME` why"
    )]
    NotReady {
        /// The wait.
        timeout: Duration,
        /// Processes READY at the end.
        ready: usize,
        /// Processes known at the end.
        total: usize,
        /// The state directory.
        dir: String,
    },
    /// The caller gave up waiting (an interrupt).
    #[error("interrupted while waiting for the deployment")]
    Interrupted,
    /// The supervisor did not answer on its control socket.
    #[error("the supervisor in {dir} does not answer: {source}")]
    Control {
        /// Its state directory.
        dir: String,
        /// Why.
        source: ControlError,
    },
    /// The supervisor did not exit within its grace after SIGTERM, and its whole process group was killed.
    #[error("the supervisor did not stop within {grace:?} of its SIGTERM and was killed with its processes")]
    Killed {
        /// The grace it had.
        grace: Duration,
    },
    /// Waiting on the child failed.
    #[error("failed to wait for the supervisor: {0}")]
    Wait(#[source] std::io::Error),
}

/// A running supervisor this process started. Dropping it stops the deployment (the harnesses must leave nothing
/// running); [`Launched::leave_running`] hands it over instead (`mesh up --detach`).
#[derive(Debug)]
pub struct Launched {
    dir: StateDir,
    log: PathBuf,
    answer_timeout: Duration,
    child: Option<Child>,
}

impl Launched {
    /// Starts the supervisor in a new session (so a Ctrl-C meant for the caller does not reach the deployment) with
    /// its output appended to the spec's log.
    pub fn spawn(spec: &LaunchSpec) -> Result<Self, LaunchError> {
        let program = spec.program.display().to_string();
        let spawn_error = |source| LaunchError::Spawn { program: program.clone(), source };
        let log = crate::private::open_append(&spec.log)
            .map_err(|source| LaunchError::Log { path: spec.log.display().to_string(), source })?;
        let mut cmd = match spec.launcher.split_first() {
            Some((launcher, rest)) => {
                let mut c = Command::new(launcher);
                c.args(rest).arg(&spec.program);
                c
            }
            None => Command::new(&spec.program),
        };
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(spawn_error)?)
            .stderr(log);
        crate::child::in_new_session(&mut cmd);
        let child = cmd.spawn().map_err(spawn_error)?;
        Ok(Self {
            dir: spec.state_dir.clone(),
            log: spec.log.clone(),
            answer_timeout: spec.answer_timeout,
            child: Some(child),
        })
    }

    /// The supervisor's pid (also its process group's).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// The state directory it serves.
    pub fn dir(&self) -> &StateDir {
        &self.dir
    }

    /// Its own log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// How it exited, if it has; `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, LaunchError> {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map_err(LaunchError::Wait),
            None => Ok(None),
        }
    }

    fn exited_error(&self, status: ExitStatus) -> LaunchError {
        LaunchError::Exited {
            dir: self.dir.root().display().to_string(),
            status,
            log: self.log.display().to_string(),
            tail: tail(&self.log, LOG_LINES),
        }
    }

    /// Its state; `None` while it starts (no control socket yet). An exited supervisor is an error that quotes
    /// its log.
    pub fn status(&mut self) -> Result<Option<StateFile>, LaunchError> {
        if let Some(status) = self.exited()? {
            return Err(self.exited_error(status));
        }
        match control::call(&self.dir.socket(), &Request::Status, self.answer_timeout) {
            Ok(r) => Ok(r.state),
            Err(ControlError::NotRunning(_)) => Ok(None),
            Err(source) => Err(LaunchError::Control { dir: self.dir.root().display().to_string(), source }),
        }
    }

    /// Waits until every process is READY and returns that state. Fails at once if the supervisor exits or a
    /// process is `FAILED`; `keep_waiting` is asked on every poll and ends the wait when false (an interrupt).
    /// A supervisor slow to answer while it starts its processes is asked again.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<StateFile, LaunchError> {
        let deadline = Instant::now() + timeout;
        let (mut ready, mut total) = (0, 0);
        loop {
            match self.status() {
                Ok(Some(state)) => {
                    if let Some(failed) = state.processes.iter().find(|p| p.state == ProcState::Failed) {
                        return Err(LaunchError::ProcessFailed {
                            name: failed.name.clone(),
                            tail: tail(&self.dir.log(&failed.name), LOG_LINES),
                        });
                    }
                    ready = state.processes.iter().filter(|p| p.state == ProcState::Ready).count();
                    total = state.processes.len();
                    if total > 0 && ready == total {
                        return Ok(state);
                    }
                }
                Ok(None) | Err(LaunchError::Control { .. }) => {}
                Err(e) => return Err(e),
            }
            if !keep_waiting() {
                return Err(LaunchError::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady {
                    timeout,
                    ready,
                    total,
                    dir: self.dir.root().display().to_string(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops the deployment the way `mesh down` does, by a SIGTERM to the supervisor (its ordered stop; a signal
    /// needs no answer, and a supervisor starved by hundreds of collapsing agents answered no stop request for
    /// minutes), after a SIGCONT in case a fault left it paused. Waits for it to exit; after `grace` kills its
    /// whole process group. A supervisor already gone is no error.
    pub fn stop(&mut self, grace: Duration) -> Result<(), LaunchError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        if child.try_wait().map_err(LaunchError::Wait)?.is_none() {
            let _ = kill(pid, Signal::SIGCONT);
            let _ = kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait().map_err(LaunchError::Wait)? {
                return if status.success() || was_ours(status) { Ok(()) } else { Err(self.exited_error(status)) };
            }
            if Instant::now() >= deadline {
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = child.wait();
                return Err(LaunchError::Killed { grace });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` of the supervisor alone, as a machine losing its service manager; its processes die with it (their
    /// parent-death signal). Returns once it is gone.
    pub fn kill(&mut self) -> Result<(), LaunchError> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = child.kill();
        child.wait().map_err(LaunchError::Wait)?;
        Ok(())
    }

    /// Leaves the supervisor running after this handle is gone: `mesh up --detach` hands the deployment to the user.
    pub fn leave_running(mut self) {
        self.child = None;
    }
}

/// A supervisor that exited on the SIGTERM this handle sent (it re-raises the signal after its ordered stop) is
/// stopped as asked.
fn was_ours(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(Signal::SIGTERM as i32)
}

impl Drop for Launched {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Duration::from_secs(60));
        }
    }
}

/// The last `n` lines of a file, for an error message; empty if it cannot be read.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, program: &str, args: &[&str]) -> LaunchSpec {
        LaunchSpec {
            program: PathBuf::from(program),
            launcher: Vec::new(),
            args: args.iter().map(OsString::from).collect(),
            env: vec![("MESH_LAUNCH_TEST".into(), "from the spec".into())],
            state_dir: StateDir::new(dir.to_path_buf()),
            log: dir.join("supervisor.log"),
            answer_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_supervisor_that_exits_while_awaited_is_an_error_quoting_its_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = spec(dir.path(), "sh", &["-c", "echo \"cannot bind: $MESH_LAUNCH_TEST\"; exit 3"]);
        let mut launched = Launched::spawn(&s).expect("spawned");
        let err = launched.wait_ready(Duration::from_secs(30), || true).expect_err("it exited");
        let text = err.to_string();
        assert!(matches!(err, LaunchError::Exited { .. }), "{text}");
        assert!(text.contains("exit status: 3") && text.contains("cannot bind: from the spec"), "{text}");
    }

    #[test]
    fn a_supervisor_that_never_serves_is_not_ready_in_time_and_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut launched = Launched::spawn(&spec(dir.path(), "sleep", &["30"])).expect("spawned");
        let pid = launched.pid().expect("pid");
        let err = launched.wait_ready(Duration::from_millis(300), || true).expect_err("no socket");
        assert!(matches!(err, LaunchError::NotReady { ready: 0, total: 0, .. }), "{err}");
        launched.stop(Duration::from_secs(10)).expect("a SIGTERM stops sleep");
        assert!(kill(Pid::from_raw(pid), None).is_err(), "pid {pid} is gone");
    }

    #[test]
    fn an_interrupt_ends_the_wait_and_a_process_group_that_ignores_sigterm_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut launched =
            Launched::spawn(&spec(dir.path(), "sh", &["-c", "trap '' TERM; echo armed; sleep 30 & wait"]))
                .expect("spawned");
        let err = launched.wait_ready(Duration::from_secs(30), || false).expect_err("interrupted");
        assert!(matches!(err, LaunchError::Interrupted), "{err}");
        // A SIGTERM before the shell has set its trap would end it as asked: wait until the trap is set.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !tail(launched.log(), 1).contains("armed") {
            assert!(Instant::now() < deadline, "the shell never set its trap");
            std::thread::sleep(Duration::from_millis(10));
        }
        let pid = launched.pid().expect("pid");
        let err = launched.stop(Duration::from_millis(300)).expect_err("it ignores SIGTERM");
        assert!(matches!(err, LaunchError::Killed { .. }), "{err}");
        assert!(kill(Pid::from_raw(pid), None).is_err(), "pid {pid} was killed and reaped");
    }

    #[test]
    fn a_handle_left_running_does_not_stop_its_supervisor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let launched = Launched::spawn(&spec(dir.path(), "sleep", &["30"])).expect("spawned");
        let pid = Pid::from_raw(launched.pid().expect("pid"));
        launched.leave_running();
        assert!(kill(pid, None).is_ok(), "still running after the handle is gone");
        kill(pid, Signal::SIGKILL).expect("test cleanup");
        let _ = nix::sys::wait::waitpid(pid, None);
    }
}
