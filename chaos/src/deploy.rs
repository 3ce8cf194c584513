//! The deployment under test: `mesh up` (the real supervisor, detached in its own session) with the two managers
//! and four agents, each process pointed at its own fault proxies. Process faults go through the supervisor's
//! control socket, so they are recorded in its event log and its restart policy applies, as for an operator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mesh_supervisor::{ProcState, Request, StateDir, StateFile};

use crate::scenario::{AGENTS, MANAGERS};

/// The settings the chaos profile runs the mesh with, and what the bounds are computed from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeshTimings {
    /// Agent heartbeat interval.
    pub heartbeat_ms: u64,
    /// Silence after which the topology manager declares an agent dead.
    pub failure_timeout_ms: u64,
    /// Decay tick.
    pub decay_interval_ms: u64,
    /// A proposal undecided this long expires.
    pub proposal_timeout_ms: u64,
    /// Snapshot interval of both managers.
    pub snapshot_interval_ms: u64,
    /// The supervisor's first restart delay (doubling, with jitter, up to the max).
    pub restart_backoff_ms: u64,
    /// The supervisor's longest restart delay.
    pub restart_backoff_max_ms: u64,
    /// librdkafka's longest reconnect delay (`reconnect.backoff.max.ms`, set by mesh-kafka).
    pub kafka_reconnect_max_ms: u64,
    /// The runtimes' longest retry delay for a failed Kafka or Redis operation.
    pub retry_max_ms: u64,
    /// Agent tasks per second.
    pub rate: f64,
}

impl Default for MeshTimings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 250,
            failure_timeout_ms: 2_000,
            decay_interval_ms: 500,
            proposal_timeout_ms: 5_000,
            snapshot_interval_ms: 1_000,
            restart_backoff_ms: 200,
            restart_backoff_max_ms: 2_000,
            kafka_reconnect_max_ms: 2_000,
            retry_max_ms: 5_000,
            rate: 5.0,
        }
    }
}

/// Where each process reaches its backends (its proxies' addresses).
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Kafka bootstrap per process.
    pub kafka: BTreeMap<String, String>,
    /// Redis URL per process.
    pub redis: BTreeMap<String, String>,
}

/// Every process name of the deployment.
pub fn process_names() -> Vec<String> {
    MANAGERS.iter().chain(&AGENTS).map(|s| (*s).to_owned()).collect()
}

fn deployment_toml(endpoints: &Endpoints, t: &MeshTimings) -> Result<String> {
    let mut s = String::from("# written by `cargo xtask chaos` for one scenario\n");
    for name in process_names() {
        let kafka = endpoints.kafka.get(&name).with_context(|| format!("no Kafka endpoint for {name}"))?;
        let redis = endpoints.redis.get(&name).with_context(|| format!("no Redis endpoint for {name}"))?;
        let command = match name.strip_prefix("agent-") {
            Some(role) => format!("[\"mesh\", \"agent\", \"--name\", \"{role}\", \"--role\", \"{role}\"]"),
            None => format!("[\"mesh\", \"{name}\"]"),
        };
        let depends = if name.starts_with("agent-") { "depends_on = [\"topology\", \"consensus\"]\n" } else { "" };
        s.push_str(&format!(
            "\n[[process]]\nname = \"{name}\"\ncommand = {command}\n{depends}watchdog = \"20s\"\n\
             initial_backoff = \"{}ms\"\nmax_backoff = \"{}ms\"\nmax_restarts = 30\nrestart_window = \"60s\"\n\
             env = {{ MESH_KAFKA = \"{kafka}\", MESH_REDIS = \"{redis}\" }}\n",
            t.restart_backoff_ms, t.restart_backoff_max_ms
        ));
    }
    Ok(s)
}

fn settings_toml(prefix: &str, t: &MeshTimings) -> String {
    format!(
        "# written by `cargo xtask chaos`: the chaos profile's timings (docs/chaos.md explains the trade-off)\n\
         topic_prefix = {prefix:?}\n\n[topology]\ndecay_interval = \"{}ms\"\nfailure_timeout = \"{}ms\"\n\
         snapshot_interval = \"{}ms\"\n\n[consensus]\nproposal_timeout = \"{}ms\"\nsnapshot_interval = \"{}ms\"\n\n\
         [agent]\nheartbeat_interval = \"{}ms\"\nrate = {}\nproposal_every = 3\n",
        t.decay_interval_ms,
        t.failure_timeout_ms,
        t.snapshot_interval_ms,
        t.proposal_timeout_ms,
        t.snapshot_interval_ms,
        t.heartbeat_ms,
        t.rate
    )
}

/// A running supervisor and its six processes.
pub struct Deployment {
    dir: StateDir,
    child: Option<Child>,
    /// Every (pid, start time) a process of this deployment ever had, for the orphan check.
    pub seen_pids: BTreeSet<(i32, u64)>,
}

/// What a deployment reaches: the broker and the store (for `mesh up`'s checks), each process's proxies, and the
/// deployment secret its records are tagged with.
pub struct Reach<'a> {
    /// The broker's own address.
    pub kafka: &'a str,
    /// The store's own URL.
    pub redis: &'a str,
    /// Each process's proxies.
    pub endpoints: &'a Endpoints,
    /// The deployment secret's file.
    pub secret_file: &'a Path,
}

impl Deployment {
    /// Starts `mesh up` detached in `root` and waits until all six processes are READY.
    pub fn start(mesh: &Path, root: &Path, prefix: &str, reach: &Reach<'_>, timings: &MeshTimings) -> Result<Self> {
        let Reach { kafka, redis, endpoints, secret_file } = *reach;
        if root.exists() {
            std::fs::remove_dir_all(root).with_context(|| format!("clearing {}", root.display()))?;
        }
        std::fs::create_dir_all(root)?;
        let settings = root.join("chaos-settings.toml");
        std::fs::write(&settings, settings_toml(prefix, timings))?;
        let file = root.join("chaos-deployment.toml");
        std::fs::write(&file, deployment_toml(endpoints, timings)?)?;
        let log = std::fs::File::create(root.join("supervisor.out"))?;
        let mut cmd = Command::new(mesh);
        cmd.arg("--config")
            .arg(&settings)
            .args(["up", "--kafka", kafka, "--redis", redis, "--file"])
            .arg(&file)
            .arg("--state-dir")
            .arg(root)
            .arg("--secret-file")
            .arg(secret_file)
            .arg("--detached-child")
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        mesh_supervisor::child::in_new_session(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {}", mesh.display()))?;
        let mut d =
            Deployment { dir: StateDir::new(root.to_path_buf()), child: Some(child), seen_pids: BTreeSet::new() };
        d.wait_ready(Duration::from_secs(90))?;
        Ok(d)
    }

    /// The state directory (logs, events).
    pub fn dir(&self) -> &StateDir {
        &self.dir
    }

    /// The supervisor's pid.
    pub fn supervisor_pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// The supervisor's current state; also remembers every pid it shows.
    pub fn status(&mut self) -> Result<StateFile> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait()?
        {
            bail!("the chaos supervisor exited ({status}); see {}", self.dir.root().join("supervisor.out").display());
        }
        let r = mesh_supervisor::control::call(&self.dir.socket(), &Request::Status, Duration::from_secs(10))
            .map_err(|e| anyhow!("the supervisor does not answer: {e}"))?;
        let state = r.state.ok_or_else(|| anyhow!("the supervisor answered without a state"))?;
        self.seen_pids.insert((state.supervisor_pid, state.supervisor_start_ticks.unwrap_or(0)));
        for p in &state.processes {
            if let Some(pid) = p.pid {
                self.seen_pids.insert((pid, p.start_ticks.unwrap_or(0)));
            }
        }
        Ok(state)
    }

    /// Whether every process is READY.
    pub fn all_ready(&mut self) -> Result<bool> {
        Ok(self.status()?.processes.iter().all(|p| p.state == ProcState::Ready))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.status() {
                Ok(s) if s.processes.iter().all(|p| p.state == ProcState::Ready) && !s.processes.is_empty() => {
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))) => return Err(e),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                bail!("the deployment was not READY within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to a process through the supervisor.
    pub fn signal(&mut self, name: &str, signal: &str) -> Result<()> {
        let request = Request::Kill {
            name: Some(name.to_owned()),
            random: false,
            signal: signal.to_owned(),
            pause_secs: None,
            no_restart: false,
        };
        let r = mesh_supervisor::control::call(&self.dir.socket(), &request, Duration::from_secs(10))
            .map_err(|e| anyhow!("signalling {name}: {e}"))?;
        if !r.ok {
            bail!("the supervisor refused to signal {name}: {}", r.error.unwrap_or_default());
        }
        Ok(())
    }

    /// The pid of a process, if running.
    pub fn pid_of(&mut self, name: &str) -> Result<Option<i32>> {
        Ok(self.status()?.processes.iter().find(|p| p.name == name).and_then(|p| p.pid))
    }

    /// The log file of a process.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.log(name)
    }

    /// `mesh down`: stops everything and waits for the supervisor to exit.
    pub fn down(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // An interrupted pause-supervisor trial may have left it stopped: it could not answer.
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
        }
        let _ = self.status();
        let answered = mesh_supervisor::control::call(
            &self.dir.socket(),
            &Request::Down { timeout_secs: Some(5.0) },
            Duration::from_secs(60),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                bail!("the supervisor did not stop within 60 s and was killed");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        answered.map(|_| ()).map_err(|e| anyhow!("mesh down: {e}"))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.down();
        }
    }
}

/// Whether the process `pid` that started at `start_ticks` (clock ticks since boot, field 22 of /proc/PID/stat) is
/// still alive; a pid reused by another process does not count.
pub fn alive(pid: i32, start_ticks: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return false };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("X");
    let started = fields.get(19).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    state != "Z" && state != "X" && (start_ticks == 0 || started == start_ticks)
}

/// Whether `pid` is stopped (SIGSTOP): state `T` in /proc.
pub fn stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 1..].trim_start().starts_with('T')))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_file_points_each_process_at_its_own_proxies_and_parses() {
        let names = process_names();
        let endpoints = Endpoints {
            kafka: names.iter().enumerate().map(|(i, n)| (n.clone(), format!("127.0.0.1:{}", 20_000 + i))).collect(),
            redis: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), format!("redis://127.0.0.1:{}", 30_000 + i)))
                .collect(),
        };
        let text = deployment_toml(&endpoints, &MeshTimings::default()).expect("toml");
        let spec = mesh_supervisor::DeploymentSpec::parse(&text, Path::new("mesh")).expect("a valid deployment");
        assert_eq!(spec.processes.len(), 6);
        let fraud = spec.processes.iter().find(|p| p.name == "agent-fraud").expect("fraud");
        assert_eq!(fraud.env.get("MESH_KAFKA").map(String::as_str), Some("127.0.0.1:20005"));
        assert_eq!(fraud.env.get("MESH_REDIS").map(String::as_str), Some("redis://127.0.0.1:30005"));
        assert_eq!(fraud.restart.initial_backoff_ms, 200);
    }

    #[test]
    fn this_process_is_alive_and_not_stopped() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(alive(me, 0));
        assert!(!stopped(me));
        assert!(!alive(me, 1), "another start time means another process");
    }
}
