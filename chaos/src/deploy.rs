//! The deployment under test: `mesh up` (the real supervisor, detached in its own session) with the two managers
//! and four agents, each process pointed at its own fault proxies. Process faults go through the supervisor's
//! control socket, so they are recorded in its event log and its restart policy applies, as for an operator.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use mesh_supervisor::{
    DeploymentFile, EventLog, FileProcess, LaunchSpec, Launched, ProcState, ProcessStatus, Request, StateDir, StateFile,
};

use mesh_fixtures::netns::Network;
use mesh_node::SettingsFile;
use mesh_node::settings_file::{AgentSettings, ConsensusSettings, TopologySettings};

use crate::hosts::{MANAGERS_HOST, processes_on};
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

/// The deployment file of one supervisor: `processes`, each pointed at its own proxies. Agents wait for the
/// managers only where the managers are in the same file (a supervisor cannot wait on another host's processes).
fn deployment_file(endpoints: &Endpoints, t: &MeshTimings, processes: &[String]) -> Result<DeploymentFile> {
    let with_managers = MANAGERS.iter().all(|m| processes.iter().any(|p| p == m));
    let mut file = DeploymentFile::default();
    for name in processes {
        let kafka = endpoints.kafka.get(name).with_context(|| format!("no Kafka endpoint for {name}"))?;
        let redis = endpoints.redis.get(name).with_context(|| format!("no Redis endpoint for {name}"))?;
        let command: Vec<String> = match name.strip_prefix("agent-") {
            Some(role) => ["mesh", "agent", "--name", role, "--role", role].map(String::from).into(),
            None => vec!["mesh".into(), name.clone()],
        };
        let depends_on =
            if name.starts_with("agent-") && with_managers { MANAGERS.map(String::from).into() } else { Vec::new() };
        file.processes.push(FileProcess {
            name: name.clone(),
            command,
            env: [("MESH_KAFKA".to_owned(), kafka.clone()), ("MESH_REDIS".to_owned(), redis.clone())].into(),
            depends_on,
            watchdog: Some("20s".into()),
            initial_backoff: Some(format!("{}ms", t.restart_backoff_ms)),
            max_backoff: Some(format!("{}ms", t.restart_backoff_max_ms)),
            max_restarts: Some(30),
            restart_window: Some("60s".into()),
            stop_timeout: Some("5s".into()),
            ..FileProcess::default()
        });
    }
    Ok(file)
}

/// The settings every process of a scenario reads: the chaos profile's timings.
fn settings_file(prefix: &str, t: &MeshTimings) -> SettingsFile {
    let ms = |v: u64| Some(format!("{v}ms"));
    SettingsFile {
        topic_prefix: Some(prefix.to_owned()),
        topology: TopologySettings {
            decay_interval: ms(t.decay_interval_ms),
            failure_timeout: ms(t.failure_timeout_ms),
            snapshot_interval: ms(t.snapshot_interval_ms),
            ..TopologySettings::default()
        },
        consensus: ConsensusSettings {
            proposal_timeout: ms(t.proposal_timeout_ms),
            snapshot_interval: ms(t.snapshot_interval_ms),
            ..ConsensusSettings::default()
        },
        agent: AgentSettings {
            heartbeat_interval: ms(t.heartbeat_ms),
            rate: Some(t.rate),
            proposal_every: Some(3),
            ..AgentSettings::default()
        },
        ..SettingsFile::default()
    }
}

/// One supervisor (`mesh up`) and its share of the processes: the whole deployment, or one simulated host's.
struct Supervisor {
    host: u32,
    processes: Vec<String>,
    /// The same on every start, so a restarted host resumes as itself.
    spec: LaunchSpec,
    /// `None` while the host's supervisor is killed.
    running: Option<Launched>,
}

impl Supervisor {
    fn spawn(&mut self) -> Result<()> {
        self.running = Some(Launched::spawn(&self.spec)?);
        Ok(())
    }

    fn dir(&self) -> &StateDir {
        &self.spec.state_dir
    }

    fn status(&mut self) -> Result<StateFile> {
        let host = self.host;
        let running = self.running.as_mut().ok_or_else(|| anyhow!("host {host}'s supervisor is not running"))?;
        running.status()?.ok_or_else(|| anyhow!("host {host}'s supervisor does not answer yet"))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let host = self.host;
        let running = self.running.as_mut().ok_or_else(|| anyhow!("host {host}'s supervisor is not running"))?;
        running.wait_ready(timeout, || true).with_context(|| format!("host {host}'s deployment did not start"))?;
        Ok(())
    }

    /// Proof that a simulated host is one: its supervisor and every process it runs are in a network namespace
    /// other than the harness's.
    fn check_own_namespace(&mut self) -> Result<()> {
        let ours = std::fs::read_link("/proc/self/ns/net")?;
        let state = self.status()?;
        let pids = std::iter::once(state.supervisor_pid).chain(state.processes.iter().filter_map(|p| p.pid));
        for pid in pids {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net"))?;
            if theirs == ours {
                bail!("host {}: pid {pid} runs in the harness's network namespace", self.host);
            }
        }
        Ok(())
    }

    /// `mesh down`: stops its processes (each with the deployment file's 5 s grace) and waits for the supervisor
    /// to exit; one that has not after 60 s is killed with its process group.
    fn down(&mut self) -> Result<()> {
        let Some(mut running) = self.running.take() else { return Ok(()) };
        running.stop(Duration::from_secs(60)).context("mesh down")
    }
}

/// The running deployment: one supervisor with all six processes, or one per simulated host, each with its share.
pub struct Deployment {
    /// The managers' supervisor first.
    supervisors: Vec<Supervisor>,
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
    /// The simulated hosts, if the run has them: each host's supervisor runs in its network namespace.
    pub network: Option<&'a Network>,
}

impl Deployment {
    /// Starts `mesh up` detached in `root` (one per simulated host, in `root/host-N`, the managers' host first) and
    /// waits until every process is READY.
    pub fn start(mesh: &Path, root: &Path, prefix: &str, reach: &Reach<'_>, timings: &MeshTimings) -> Result<Self> {
        let Reach { kafka, redis, endpoints, secret_file, network } = *reach;
        if root.exists() {
            std::fs::remove_dir_all(root).with_context(|| format!("clearing {}", root.display()))?;
        }
        std::fs::create_dir_all(root)?;
        let settings = root.join("chaos-settings.toml");
        let comment =
            "written by `cargo xtask chaos`: the chaos profile's timings (docs/chaos.md explains the trade-off)";
        std::fs::write(&settings, settings_file(prefix, timings).to_toml(comment)?)?;
        let hosts = network.map_or(1, Network::hosts);
        let mut d = Deployment { supervisors: Vec::new(), seen_pids: BTreeSet::new() };
        for host in 1..=hosts {
            let processes = processes_on(host, hosts);
            let dir = if network.is_some() { root.join(format!("host-{host}")) } else { root.to_path_buf() };
            std::fs::create_dir_all(&dir)?;
            let file = dir.join("chaos-deployment.toml");
            let text = deployment_file(endpoints, timings, &processes)?
                .to_toml("written by `cargo xtask chaos` for one scenario")?;
            std::fs::write(&file, text)?;
            // On a simulated host only the proxies are reachable: `mesh up` checks the backends through the first
            // process's.
            let (kafka, redis, launcher) = match network {
                Some(net) => {
                    let first = processes.first().context("a host without processes")?;
                    (
                        endpoints.kafka.get(first).cloned().unwrap_or_default(),
                        endpoints.redis.get(first).cloned().unwrap_or_default(),
                        vec!["ip".to_owned(), "netns".into(), "exec".into(), net.namespace(host)],
                    )
                }
                None => (kafka.to_owned(), redis.to_owned(), Vec::new()),
            };
            let args: Vec<std::ffi::OsString> = vec![
                "--config".into(),
                settings.clone().into(),
                "up".into(),
                "--kafka".into(),
                kafka.into(),
                "--redis".into(),
                redis.into(),
                "--file".into(),
                file.into(),
                "--state-dir".into(),
                dir.clone().into_os_string(),
                "--secret-file".into(),
                secret_file.into(),
                "--detached-child".into(),
            ];
            let spec = LaunchSpec {
                program: mesh.to_path_buf(),
                launcher,
                args,
                env: vec![("RUST_LOG".to_owned(), "info,rdkafka=warn".to_owned())],
                state_dir: StateDir::new(dir.clone()),
                log: dir.join("supervisor.out"),
                answer_timeout: Duration::from_secs(10),
            };
            let mut s = Supervisor { host, processes, spec, running: None };
            s.spawn()?;
            d.supervisors.push(s);
            // The agents' hosts start once the managers serve, as `depends_on` orders them on one host.
            if host == MANAGERS_HOST {
                d.supervisors[0].wait_ready(Duration::from_secs(90))?;
            }
        }
        for s in &mut d.supervisors {
            s.wait_ready(Duration::from_secs(90))?;
            if !s.spec.launcher.is_empty() {
                s.check_own_namespace()?;
            }
        }
        Ok(d)
    }

    /// The managers' supervisor's state directory: where the harness's own events (faults, heals) are logged.
    pub fn dir(&self) -> Option<&StateDir> {
        self.supervisors.first().map(Supervisor::dir)
    }

    /// Every supervisor's events, in time order.
    pub fn events(&self) -> Vec<mesh_supervisor::Event> {
        let mut all: Vec<_> =
            self.supervisors.iter().flat_map(|s| EventLog::read_all(&s.dir().events()).unwrap_or_default()).collect();
        all.sort_by_key(|e| e.at_ms);
        all
    }

    /// The managers' supervisor's pid.
    pub fn supervisor_pid(&self) -> Option<i32> {
        self.supervisors.first()?.running.as_ref()?.pid()
    }

    /// Every process of the running supervisors (a host whose supervisor was killed has none); also remembers every
    /// pid it shows.
    pub fn processes(&mut self) -> Result<Vec<ProcessStatus>> {
        let mut all = Vec::new();
        for s in self.supervisors.iter_mut().filter(|s| s.running.is_some()) {
            let state = s.status()?;
            self.seen_pids.insert((state.supervisor_pid, state.supervisor_start_ticks.unwrap_or(0)));
            for p in &state.processes {
                if let Some(pid) = p.pid {
                    self.seen_pids.insert((pid, p.start_ticks.unwrap_or(0)));
                }
            }
            all.extend(state.processes);
        }
        Ok(all)
    }

    /// Whether every supervisor runs and every process is READY.
    pub fn all_ready(&mut self) -> Result<bool> {
        if self.supervisors.iter().any(|s| s.running.is_none()) {
            return Ok(false);
        }
        Ok(self.processes()?.iter().all(|p| p.state == ProcState::Ready))
    }

    fn supervisor_of(&mut self, name: &str) -> Result<&mut Supervisor> {
        self.supervisors
            .iter_mut()
            .find(|s| s.processes.iter().any(|p| p == name))
            .ok_or_else(|| anyhow!("no process {name} in the deployment"))
    }

    fn host(&mut self, host: u32) -> Result<&mut Supervisor> {
        self.supervisors.iter_mut().find(|s| s.host == host).ok_or_else(|| anyhow!("no host {host}"))
    }

    /// Sends `signal` (`KILL`, `TERM`, `STOP`, `CONT`) to a process through its supervisor.
    pub fn signal(&mut self, name: &str, signal: &str) -> Result<()> {
        let request = Request::Kill {
            name: Some(name.to_owned()),
            random: false,
            signal: signal.to_owned(),
            pause_secs: None,
            no_restart: false,
        };
        let socket = self.supervisor_of(name)?.dir().socket();
        let r = mesh_supervisor::control::call(&socket, &request, Duration::from_secs(10))
            .map_err(|e| anyhow!("signalling {name}: {e}"))?;
        if !r.ok {
            bail!("the supervisor refused to signal {name}: {}", r.error.unwrap_or_default());
        }
        Ok(())
    }

    /// The pid of a process, if running.
    pub fn pid_of(&mut self, name: &str) -> Result<Option<i32>> {
        Ok(self.processes()?.iter().find(|p| p.name == name).and_then(|p| p.pid))
    }

    /// The log file of a process.
    pub fn log(&self, name: &str) -> PathBuf {
        let s = self.supervisors.iter().find(|s| s.processes.iter().any(|p| p == name));
        s.or(self.supervisors.first()).map_or_else(|| PathBuf::from(name), |s| s.dir().log(name))
    }

    /// The processes of `host`.
    pub fn processes_of(&self, host: u32) -> Vec<String> {
        self.supervisors.iter().find(|s| s.host == host).map(|s| s.processes.clone()).unwrap_or_default()
    }

    /// `kill -9` of a host's supervisor, as a machine losing its service manager; its processes die with it
    /// (their parent-death signal). Waits until the supervisor is gone.
    pub fn kill_host(&mut self, host: u32) -> Result<()> {
        let s = self.host(host)?;
        let mut running = s.running.take().ok_or_else(|| anyhow!("host {host}'s supervisor is not running"))?;
        running.kill().context("SIGKILL to the supervisor")?;
        Ok(())
    }

    /// Runs a host's `mesh up` again, as after a reboot, without waiting: its start-up is part of the recovery
    /// the harness measures.
    pub fn restart_host(&mut self, host: u32) -> Result<()> {
        let s = self.host(host)?;
        if s.running.is_some() {
            bail!("host {host}'s supervisor is running");
        }
        s.spawn()
    }

    /// `mesh down` on every host.
    pub fn down(&mut self) -> Result<()> {
        let _ = self.processes();
        let mut first_error = None;
        for s in self.supervisors.iter_mut().rev() {
            if let Err(e) = s.down() {
                first_error.get_or_insert(anyhow!("host {}: {e:#}", s.host));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if self.supervisors.iter().any(|s| s.running.is_some()) {
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
        let text = deployment_file(&endpoints, &MeshTimings::default(), &names).expect("file");
        let text = text.to_toml("t").expect("toml");
        let spec = mesh_supervisor::DeploymentSpec::parse(&text, Path::new("mesh")).expect("a valid deployment");
        assert_eq!(spec.processes.len(), 6);
        let fraud = spec.processes.iter().find(|p| p.name == "agent-fraud").expect("fraud");
        assert_eq!(fraud.env.get("MESH_KAFKA").map(String::as_str), Some("127.0.0.1:20005"));
        assert_eq!(fraud.env.get("MESH_REDIS").map(String::as_str), Some("redis://127.0.0.1:30005"));
        assert_eq!(fraud.restart.initial_backoff_ms, 200);
        assert_eq!(fraud.depends_on, ["topology", "consensus"]);
        let agents_only: Vec<String> = names.iter().filter(|n| n.starts_with("agent-")).cloned().collect();
        let text = deployment_file(&endpoints, &MeshTimings::default(), &agents_only).expect("file");
        let text = text.to_toml("t").expect("toml");
        let spec = mesh_supervisor::DeploymentSpec::parse(&text, Path::new("mesh")).expect("a valid deployment");
        assert_eq!(spec.processes.len(), 4);
        assert!(
            spec.processes.iter().all(|p| p.depends_on.is_empty()),
            "a host without the managers cannot wait for them"
        );
    }

    #[test]
    fn this_process_is_alive_and_not_stopped() {
        let me = i32::try_from(std::process::id()).expect("pid");
        assert!(alive(me, 0));
        assert!(!stopped(me));
        assert!(!alive(me, 1), "another start time means another process");
    }
}
