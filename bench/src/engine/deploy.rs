//! The mesh under test: the settings every process reads and the deployment files (both typed, written through
//! their schemas, never formatted by hand), and the supervisors that run them, detached in their own sessions:
//! one for the whole deployment, or with simulated hosts one for the managers and one per host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mesh_node::SettingsFile;
use mesh_node::settings_file::{AgentSettings, TopologySettings};
use mesh_supervisor::{DeploymentFile, FileProcess, LaunchError, LaunchSpec, Launched, StateDir, StateFile};

use super::error::Error;
use super::infra::Infra;
use super::interrupt::{check_interrupted, interrupted};
use super::options::MeshBinary;
use super::plan::{Plan, ROLES};

/// One supervisor of the bench deployment, detached in its own session: the whole deployment, or (with simulated
/// hosts) the managers' share or one host's agents.
struct Supervisor(Launched);

/// How long a bench supervisor has to stop after its SIGTERM: 500 collapsing agents on two cores take about two
/// minutes.
const STOP_GRACE: Duration = Duration::from_secs(180);

/// Comment at the top of every file the run writes.
const WRITTEN_BY: &str = "written by `mesh bench` for one run";

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::WriteFile { path: path.to_owned(), source })
}

fn create_dir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::CreateDir { path: path.to_owned(), source })
}

impl Supervisor {
    /// Starts `mesh up` over `file` in `root`; `launcher` (`ip netns exec NS`) runs it on a simulated host, with
    /// `reach` (the Kafka bootstrap and Redis URL that host reaches) instead of the settings file's.
    fn spawn(
        program: &Path,
        root: &Path,
        config: &Path,
        file: &DeploymentFile,
        launcher: &[String],
        reach: Option<&Reach>,
    ) -> Result<Self, Error> {
        create_dir(root)?;
        let deployment = root.join("bench-deployment.toml");
        write(&deployment, &file.to_toml(WRITTEN_BY).map_err(Error::DeploymentToml)?)?;
        let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into(), "up".into()];
        if let Some(reach) = reach {
            args.extend(["--kafka".into(), reach.kafka.clone().into(), "--redis".into(), reach.redis.clone().into()]);
            args.extend(["--secret-file".into(), reach.secret_file.clone().into()]);
        }
        args.extend(["--file".into(), deployment.into(), "--state-dir".into(), root.into()]);
        args.push("--detached-child".into());
        let spec = LaunchSpec {
            program: program.to_owned(),
            launcher: launcher.to_vec(),
            args,
            env: Vec::new(),
            state_dir: StateDir::new(root.to_path_buf()),
            log: root.join("supervisor.log"),
            // A supervisor starting or stopping hundreds of processes on two saturated cores can be slow to answer.
            answer_timeout: Duration::from_secs(30),
        };
        Launched::spawn(&spec).map(Self).map_err(|source| Error::Supervisor { action: "start", source })
    }

    fn dir(&self) -> &StateDir {
        self.0.dir()
    }

    /// The supervisor's state; `None` while it is starting (no control socket yet). A supervisor slow to answer is
    /// asked again for up to 5 minutes, as long as it runs.
    fn status(&mut self) -> Result<Option<StateFile>, Error> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match self.0.status() {
                Err(LaunchError::Control { source, .. }) if Instant::now() >= deadline => {
                    return Err(Error::SupervisorSilent(source));
                }
                Err(LaunchError::Control { source, .. }) => {
                    tracing::debug!(error = %source, "the bench supervisor did not answer; asking again");
                }
                answer => return answer.map_err(|source| Error::Supervisor { action: "ask", source }),
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Stops the deployment (SIGTERM: the ordered stop `mesh down` asks for) and waits for the supervisor to exit.
    fn stop(&mut self) -> Result<(), Error> {
        self.0.stop(STOP_GRACE).map_err(|source| Error::Supervisor { action: "stop", source })
    }
}

/// What a simulated host's supervisor is given instead of the settings file's: the bridge addresses of Kafka and
/// Redis, and the managers' deployment secret (one secret for the whole deployment, or no record would be
/// believed across hosts).
struct Reach {
    kafka: String,
    redis: String,
    secret_file: PathBuf,
}

/// The bench deployment: one supervisor, or with simulated hosts the managers' and one per host.
pub(crate) struct Deployment {
    /// The managers' (or the only) supervisor first.
    supervisors: Vec<Supervisor>,
    pub(crate) spawned: Instant,
}

impl Deployment {
    /// Writes the run's settings and deployment files under the state directory and starts their supervisors.
    pub(crate) fn start(plan: &Plan, infra: &Infra, binary: &MeshBinary) -> Result<Self, Error> {
        let root = plan.state_dir.join("run");
        if mesh_supervisor::InstanceLock::held(&StateDir::new(root.clone())) {
            return Err(Error::StillRunning { root });
        }
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(|source| Error::ClearDir { path: root.clone(), source })?;
        }
        create_dir(&root)?;
        let config = root.join("bench-settings.toml");
        let settings = settings_file(plan, infra, binary).to_toml(WRITTEN_BY).map_err(Error::SettingsToml)?;
        write(&config, &settings)?;
        let program = &binary.program;
        let spawned = Instant::now();
        let Some(hosts) = &infra.hosts else {
            let only = Supervisor::spawn(program, &root, &config, &deployment_file(plan, None), &[], None)?;
            return Ok(Self { supervisors: vec![only], spawned });
        };
        let managers = Supervisor::spawn(program, &root, &config, &managers_file(), &[], None)?;
        let mut deployment = Self { supervisors: vec![managers], spawned };
        // A supervisor cannot wait on another's processes: the hosts start once the managers serve.
        deployment.wait_managers(plan.ramp_timeout)?;
        let count = hosts.network.hosts();
        let reach = Reach {
            kafka: hosts.kafka.clone(),
            redis: hosts.redis.clone(),
            secret_file: StateDir::new(root.clone()).secret(),
        };
        for host in 1..=count {
            let launcher = ["ip", "netns", "exec"].map(String::from).into_iter().chain([hosts.network.namespace(host)]);
            let launcher: Vec<String> = launcher.collect();
            let file = deployment_file(plan, Some((host, count)));
            let dir = root.join(format!("host-{host}"));
            deployment.supervisors.push(Supervisor::spawn(program, &dir, &config, &file, &launcher, Some(&reach))?);
        }
        Ok(deployment)
    }

    fn wait_managers(&mut self, timeout: Duration) -> Result<(), Error> {
        self.supervisors[0].0.wait_ready(timeout, || !interrupted()).map_err(Error::ManagersNotStarted)?;
        Ok(())
    }

    /// Every supervisor's processes in one state (the first supervisor's, with the others' processes added);
    /// `None` while one is starting.
    pub(crate) fn status(&mut self) -> Result<Option<StateFile>, Error> {
        let mut merged: Option<StateFile> = None;
        for s in &mut self.supervisors {
            let Some(state) = s.status()? else { return Ok(None) };
            match merged.as_mut() {
                None => merged = Some(state),
                Some(m) => m.processes.extend(state.processes),
            }
        }
        Ok(merged)
    }

    /// The state of a deployment that has answered before: not answering now is an error.
    pub(crate) fn state(&mut self) -> Result<StateFile, Error> {
        self.status()?.ok_or(Error::SupervisorStopped)
    }

    /// The log of a process, in whichever supervisor's directory has it.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        let logs = self.supervisors.iter().map(|s| s.dir().log(name));
        let all: Vec<PathBuf> = logs.collect();
        all.iter().find(|p| p.exists()).or(all.first()).cloned().unwrap_or_else(|| PathBuf::from(name))
    }

    /// Stops the hosts, then the managers.
    pub(crate) fn stop(&mut self) -> Result<(), Error> {
        let mut first_error = None;
        for s in self.supervisors.iter_mut().rev() {
            if let Err(e) = s.stop() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The settings every process of the run reads.
fn settings_file(plan: &Plan, infra: &Infra, binary: &MeshBinary) -> SettingsFile {
    // The embedded broker holds empty fetches for the whole wait: the bench runs it as `mesh up` does.
    let fetch_wait = if infra.label == "embedded" {
        binary.embedded_fetch_wait.clone()
    } else {
        humantime::format_duration(binary.fetch_wait).to_string()
    };
    SettingsFile {
        kafka: Some(infra.kafka.clone()),
        kafka_fetch_wait: Some(fetch_wait),
        redis: Some(infra.redis.clone()),
        topic_prefix: Some(plan.prefix.clone()),
        messages_partitions: Some(plan.partitions),
        consensus_partitions: Some(4),
        topology: TopologySettings {
            decay_interval: Some(humantime::format_duration(plan.decay_interval).to_string()),
            snapshot_interval: Some("5s".into()),
            ..TopologySettings::default()
        },
        agent: AgentSettings {
            rate: Some(plan.task_rate),
            proposal_every: Some(plan.proposal_every),
            start_after_members: Some(plan.agents),
            ..AgentSettings::default()
        },
        ..SettingsFile::default()
    }
}

/// Agents started at once: each later agent waits for the one `RAMP_WAVE` places before it to be READY, so start-up
/// comes in waves instead of hundreds of processes competing for the cores at the same moment (and missing their
/// readiness deadline).
const RAMP_WAVE: usize = 50;

/// The two managers, as processes of a deployment file.
fn managers_file() -> DeploymentFile {
    let manager = |name: &str| FileProcess {
        name: name.to_owned(),
        command: vec!["mesh".into(), name.to_owned()],
        watchdog: Some("60s".into()),
        ..FileProcess::default()
    };
    DeploymentFile { processes: vec![manager("topology"), manager("consensus")] }
}

/// The whole deployment (`host` `None`), or the agent processes of host `host` of `hosts`: agent process `p` runs
/// on host `p % hosts + 1`, and waits for the one a wave before it on the same host (a supervisor waits only on its
/// own processes; on a host the managers are elsewhere, already READY).
fn deployment_file(plan: &Plan, host: Option<(u32, u32)>) -> DeploymentFile {
    let on_host = |p: usize| host.is_none_or(|(h, n)| p % n as usize + 1 == h as usize);
    let mut processes = if host.is_none() { managers_file().processes } else { Vec::new() };
    let k = plan.agents_per_process;
    let hosts = host.map_or(1, |(_, n)| n as usize);
    let wave_size = (RAMP_WAVE / k).max(1).div_ceil(hosts) * hosts;
    let process_name = |p: usize| format!("agent-{}", Plan::agent_name(p * k));
    for p in (0..plan.agent_processes()).filter(|p| on_host(*p)) {
        let first = p * k;
        let name = Plan::agent_name(first);
        let role = ROLES[first % ROLES.len()];
        let mut command: Vec<String> = ["mesh", "agent", "--name", &name, "--role", role].map(String::from).into();
        let extra: Vec<String> = (first + 1..(first + k).min(plan.agents))
            .map(|i| format!("{}:{}", Plan::agent_name(i), ROLES[i % ROLES.len()]))
            .collect();
        if !extra.is_empty() {
            command.extend(["--extra-agent".to_owned(), extra.join(",")]);
        }
        let mut depends_on =
            if host.is_none() { vec!["topology".to_owned(), "consensus".to_owned()] } else { Vec::new() };
        if p >= wave_size {
            depends_on.push(process_name(p - wave_size));
        }
        processes.push(FileProcess {
            name: process_name(p),
            command,
            depends_on,
            watchdog: Some("120s".into()),
            ready_timeout: Some("300s".into()),
            nice: (plan.client_nice != 0).then_some(i32::from(plan.client_nice)),
            // Not on a simulated host: `ip netns exec` mounts a sysfs of its own, without the cgroup hierarchy.
            cgroup: plan.client_cgroup.as_ref().filter(|_| host.is_none()).map(|d| d.display().to_string()),
            ..FileProcess::default()
        });
    }
    DeploymentFile { processes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::tests::{defaults, plan};

    fn spec(file: &DeploymentFile) -> mesh_supervisor::DeploymentSpec {
        let text = file.to_toml("test").expect("toml");
        mesh_supervisor::DeploymentSpec::parse(&text, Path::new("mesh")).expect("a valid deployment")
    }

    fn process(spec: &mesh_supervisor::DeploymentSpec, name: &str) -> mesh_supervisor::ProcessSpec {
        spec.processes.iter().find(|p| p.name == name).cloned().expect(name)
    }

    #[test]
    fn agents_start_in_waves_behind_the_managers() {
        let spec = spec(&deployment_file(&plan(&defaults()).expect("plan"), None));
        assert_eq!(spec.processes.len(), 502);
        assert_eq!(process(&spec, "agent-b0499").command[1..], ["agent", "--name", "b0499", "--role", "fraud"]);
        assert_eq!(process(&spec, "agent-b0499").depends_on, ["topology", "consensus", "agent-b0449"], "waves");
        assert_eq!(process(&spec, "agent-b0000").depends_on, ["topology", "consensus"], "the first wave");
        assert_eq!(process(&spec, "agent-b0000").ready_timeout, Duration::from_secs(300));
        assert_eq!(process(&spec, "agent-b0499").nice, Some(19), "agents yield the CPU to the broker");
        assert_eq!(process(&spec, "topology").nice, None, "the managers run at the bench's own priority");
    }

    #[test]
    fn agents_start_in_the_clients_cgroup_except_on_a_simulated_host() {
        let mut opts = defaults();
        opts.hosts = 2;
        let mut plan = plan(&opts).expect("plan");
        plan.client_cgroup = Some(PathBuf::from("/sys/fs/cgroup/cpu/mesh-bench-1-clients"));
        let whole = spec(&deployment_file(&plan, None));
        assert_eq!(process(&whole, "agent-b0007").cgroup, plan.client_cgroup);
        assert_eq!(process(&whole, "consensus").cgroup, None, "the managers stay outside");
        let host = spec(&deployment_file(&plan, Some((1, 2))));
        assert!(host.processes.iter().all(|p| p.cgroup.is_none()), "`ip netns exec` has no cgroup hierarchy");
    }

    #[test]
    fn client_nice_0_leaves_the_agents_at_the_benchs_own_priority() {
        let mut opts = defaults();
        opts.client_nice = 0;
        let spec = spec(&deployment_file(&plan(&opts).expect("plan"), None));
        assert!(spec.processes.iter().all(|p| p.nice.is_none()));
    }

    #[test]
    fn packed_agents_share_a_process_and_its_wave_is_fewer_processes() {
        let mut opts = defaults();
        opts.agents_per_process = 10;
        let spec = spec(&deployment_file(&plan(&opts).expect("plan"), None));
        assert_eq!(spec.processes.len(), 52);
        let b0490 = process(&spec, "agent-b0490");
        assert_eq!(b0490.command[1..7], ["agent", "--name", "b0490", "--role", "inventory", "--extra-agent"]);
        assert!(b0490.command[7].starts_with("b0491:fraud,b0492:sales"), "{:?}", b0490.command);
        assert_eq!(b0490.depends_on.last().map(String::as_str), Some("agent-b0440"), "waves of 5 processes");
    }

    #[test]
    fn simulated_hosts_share_the_agents_and_wait_only_on_their_own() {
        let mut opts = defaults();
        opts.hosts = 3;
        let plan = plan(&opts).expect("plan");
        let files: Vec<DeploymentFile> = (1..=3).map(|h| deployment_file(&plan, Some((h, 3)))).collect();
        let counts: Vec<usize> = files.iter().map(|f| f.processes.len()).collect();
        assert_eq!(counts, [167, 167, 166], "500 agent processes dealt over 3 hosts, no manager among them");
        for file in &files {
            assert!(spec(file).processes.iter().all(|p| p.depends_on.len() <= 1), "no manager to wait for on a host");
        }
        assert_eq!(files[0].processes[0].name, "agent-b0000");
        assert_eq!(files[1].processes[0].name, "agent-b0001");
    }
}
