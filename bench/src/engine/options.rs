//! What a `mesh bench` run is asked to do, as plain data: the binary fills it from its flags (clap stays there) and
//! the engine validates it into a `Plan`. Flag values stay as given (durations and the rate as
//! text) so that the engine's messages can quote them back.

use std::path::PathBuf;
use std::time::Duration;

use mesh_node::infrastructure::{InfraKind, Infrastructure};

/// One run's request, one field per `mesh bench` flag (see its `--help`), plus what only the binary knows
/// ([`MeshBinary`]).
#[derive(Debug, Clone)]
pub struct Options {
    /// Agents to start.
    pub agents: usize,
    /// Agents per OS process.
    pub agents_per_process: usize,
    /// The measured window, as given.
    pub duration: String,
    /// Traffic before the window, as given.
    pub warmup: String,
    /// Plain traffic before anything is measured, as given; `None` for the default of the infrastructure.
    pub broker_warmup: Option<String>,
    /// Messages per second offered, or `max`; `None` for 20 per agent.
    pub rate: Option<String>,
    /// Workers of the N-process baseline; `None` for one per agent process.
    pub baseline_processes: Option<usize>,
    /// Niceness of the agent processes and the N-process baseline's workers.
    pub client_nice: i8,
    /// Put the clients, and the broker and Redis, in CPU cgroups of their own when the bench can (as root).
    pub client_cgroup: bool,
    /// Measure an idle deployment after the traffic run.
    pub idle: bool,
    /// CPU profiles over the window (needs `report`).
    pub profile: bool,
    /// Proposals per second, all agents together.
    pub proposals_per_sec: f64,
    /// Partitions of the messages topic; `None` for one per agent, at least 8.
    pub messages_partitions: Option<u32>,
    /// The topology manager's decay interval, as given.
    pub decay_interval: String,
    /// How long start-up may take, as given.
    pub ramp_timeout: String,
    /// The infrastructure asked for, if any.
    pub infra: Option<InfraKind>,
    /// Kafka nodes of the local infrastructure.
    pub brokers: u32,
    /// Simulated hosts for the agents.
    pub hosts: u32,
    /// A Kafka to use instead of starting one.
    pub kafka: Option<String>,
    /// A Redis to use instead of starting one (needed with `kafka`).
    pub redis: Option<String>,
    /// Run only the plain-Kafka baseline (`--baseline`).
    pub baseline_only: bool,
    /// Skip the baselines.
    pub no_baseline: bool,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Where to write bench.json and bench.svg (and the profiles).
    pub report: Option<PathBuf>,
    /// An earlier JSON report to compare with.
    pub compare: Option<PathBuf>,
    /// The bench deployment's state directory, as given (relative to the current directory if not absolute).
    pub state_dir: PathBuf,
    /// What only the binary running the engine knows.
    pub binary: MeshBinary,
}

/// The `mesh` binary's own facts the engine needs: it launches that binary (the deployment's supervisors, the
/// N-process baseline's workers) and writes settings it reads, and it must not depend on the binary's crate.
#[derive(Debug, Clone)]
pub struct MeshBinary {
    /// The `mesh` program to run (`mesh up`, `mesh bench-worker`).
    pub program: PathBuf,
    /// Its version, written into the report.
    pub version: String,
    /// The Kafka readers' fetch wait of a deployment on a real broker (the settings' default), which the
    /// N-process baseline's readers use too.
    pub fetch_wait: Duration,
    /// The fetch wait `mesh up` gives its children on the embedded broker, as the settings file spells it.
    pub embedded_fetch_wait: String,
}

impl Options {
    /// Where Kafka and Redis come from: the rule `mesh up` shares, with a local Kafka and redis-server started for
    /// the run as the default, because only a real broker's figures are worth comparing.
    pub(crate) fn infrastructure(&self) -> Infrastructure {
        Infrastructure::resolve(self.infra, self.kafka.as_deref(), self.redis.as_deref(), InfraKind::Local)
    }
}
