//! Command-line interface: every flag also reads an environment variable, and `--config FILE` (`MESH_CONFIG`)
//! supplies anything not given. Defaults are the seed's values and are shown in `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mesh_node::infrastructure::InfraKind;

/// Run AgentMesh Cortex for real: agents and the SlimeMold topology and Bee consensus managers as separate
/// processes that meet only on Apache Kafka and Redis.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, propagate_version = true)]
pub(crate) struct Cli {
    /// TOML file with settings; flags and environment variables win over it.
    #[arg(long, global = true, env = "MESH_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, env = "MESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The Kafka and Redis `mesh up` or `mesh bench` starts itself (`--infra`); the rule that picks them when the flag
/// is absent is `mesh_node::infrastructure::Infrastructure`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InfraMode {
    /// A Kafka-protocol broker inside `mesh` (librdkafka's mock cluster) and a snapshot store in files: runs
    /// anywhere, keeps nothing, its figures are not comparable with a real Kafka's.
    Embedded,
    /// A real Apache Kafka (KRaft, from Maven Central jars) and redis-server on loopback.
    Local,
}

impl InfraMode {
    /// The same choice, for the rule.
    pub(crate) fn kind(self) -> InfraKind {
        match self {
            Self::Embedded => InfraKind::Embedded,
            Self::Local => InfraKind::Local,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run one agent: join, heartbeat, answer tasks addressed to it, start the scenario's tasks, propose and vote.
    Agent(AgentArgs),
    /// Run the topology manager (SlimeMold graph, roster, failure detector).
    Topology(TopologyArgs),
    /// Run the consensus manager (Bee consensus: proposals, votes, decisions).
    Consensus(ConsensusArgs),
    /// Print what the managers stored in Redis: graph statistics, edges, consensus counters, agent counters.
    Inspect(InspectArgs),
    /// Start and supervise the deployment (the two managers, then the four agents) until Ctrl-C or `mesh down`.
    ///
    /// Without --kafka/--redis (or MESH_KAFKA/MESH_REDIS) it runs on the embedded default: a Kafka-protocol broker
    /// inside the supervisor (not durable) and a local file store (a Redis is used only when named with --redis).
    /// --infra local supervises a real Apache Kafka and redis-server too.
    Up(UpArgs),
    /// Stop a running deployment in reverse dependency order.
    Down(DownArgs),
    /// Show each process's state, and the mesh's health; exits 0 only when every process is READY.
    Status(StatusArgs),
    /// Crash injection: signal a process group through the supervisor (recorded; the restart policy applies).
    Kill(KillArgs),
    /// Start a FAILED or STOPPED process again, forgetting its restart history.
    Restart(RestartArgs),
    /// Show the processes' logs.
    Logs(LogsArgs),
    /// The whole mesh in this one process over an in-memory bus, for a quick look (no Kafka, no Redis).
    Demo(DemoArgs),
    /// Measure the mesh on a real broker: join convergence, delivered messages/s, end-to-end and round-trip
    /// latency, consensus latency, pruning and cost per process, next to plain Kafka at the same rate in the same
    /// run (docs/bench.md).
    Bench(BenchArgs),
    /// A live page of the mesh in the browser: the graph (edge width by weight, pruned edges fading), agents by
    /// role and status, proposals and decisions with their tallies, and the supervisor's events (and chaos faults).
    ///
    /// It reads the deployment like any observer (the store's topology snapshot, then the topics) and pushes each
    /// change to the page over server-sent events. It serves only this host unless --listen says otherwise.
    View(ViewArgs),
    /// Print a credential derived from the deployment secret: `mesh key agent ID` is the key a third-party agent
    /// tags its records with (give it as the agent's --agent-key-file).
    Key(KeyArgs),
    /// One plain-rdkafka worker of `mesh bench`'s N-process baseline (started by `mesh bench`; prints JSON).
    #[command(hide = true)]
    BenchWorker(BenchWorkerArgs),
}

/// One process of the N-process baseline: a producer and a consumer at a share of the rate.
#[derive(Debug, Args)]
pub(crate) struct BenchWorkerArgs {
    /// Kafka bootstrap servers.
    #[arg(long)]
    pub(crate) kafka: String,
    /// The baseline topic (it exists).
    #[arg(long)]
    pub(crate) topic: String,
    /// Its partitions.
    #[arg(long)]
    pub(crate) partitions: i32,
    /// Workers in the run.
    #[arg(long)]
    pub(crate) workers: u32,
    /// This worker's number, from 0.
    #[arg(long)]
    pub(crate) index: u32,
    /// Messages per second this worker sends.
    #[arg(long)]
    pub(crate) rate: f64,
    /// Message size in bytes.
    #[arg(long)]
    pub(crate) payload_bytes: usize,
    /// Sending before the measured window, in ms.
    #[arg(long)]
    pub(crate) warmup_ms: u64,
    /// The measured window, in ms.
    #[arg(long)]
    pub(crate) duration_ms: u64,
    /// When every worker starts sending, µs since the Unix epoch.
    #[arg(long)]
    pub(crate) start_at_us: u64,
    /// The readers' fetch wait, in ms (the mesh's).
    #[arg(long, default_value_t = 500)]
    pub(crate) fetch_wait_ms: u64,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Agents to start, each its own OS process.
    #[arg(long, default_value_t = 500)]
    pub(crate) agents: usize,
    /// Agents per OS process: 1 (the default) runs each agent as its own process, as the design intends; K > 1
    /// packs K agents into each process (`mesh agent --extra-agent`), sharing its producer, to go past what the
    /// machine can run as processes. The report says which.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub(crate) agents_per_process: usize,
    /// Length of the measured window.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub(crate) duration: String,
    /// Traffic before the window opens (also the baseline's warm-up).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub(crate) warmup: String,
    /// Plain Kafka traffic (at least 5,000 msg/s) sent before anything is measured, so that the broker's JVM has
    /// compiled its hot paths: a cold broker burns about twice the CPU for its first minute, and on two cores that
    /// alone made the mesh's p99 tens of times the baseline's [default: 30s for a broker this run starts, 0s for a
    /// given --kafka or the embedded broker].
    #[arg(long, value_name = "DURATION")]
    pub(crate) broker_warmup: Option<String>,
    /// Messages per second offered in total, tasks and their answers [default: 20 per agent]; `max` searches the
    /// highest rate the mesh sustains (delivering at least 95 % with p99 within 2x plain Kafka's at that rate) next
    /// to plain Kafka's own peak, stepping the rate up in one run.
    #[arg(long, value_name = "MSGS_PER_S|max")]
    pub(crate) rate: Option<String>,
    /// Worker processes of the second baseline (plain rdkafka, a producer and a consumer each, the same traffic)
    /// [default: as many as the mesh's agent processes; 0 skips it].
    #[arg(long, value_name = "N")]
    pub(crate) baseline_processes: Option<usize>,
    /// Niceness of the client processes (the agents and the N-process baseline's workers), -20..=19; 0 leaves them
    /// at the bench's own. The broker stands for a cluster on machines of its own: hundreds of clients on one
    /// machine at the same priority starve its threads of CPU until it fences itself.
    #[arg(long, default_value_t = 19, value_name = "N", allow_hyphen_values = true,
          value_parser = clap::value_parser!(i8).range(-20..=19))]
    pub(crate) client_nice: i8,
    /// Leave the clients and the servers in the bench's own CPU cgroup. By default (as root) the clients share one
    /// cgroup and the broker and Redis another of the same weight: nice alone does not order threads across sessions
    /// on a kernel with autogroup.
    #[arg(long)]
    pub(crate) no_client_cgroup: bool,
    /// Before the traffic run, a run of the same deployment with no traffic, to measure what idle agents cost.
    #[arg(long)]
    pub(crate) idle: bool,
    /// CPU profile of each kind of process over the measured window (`perf` from Debian, installed when missing and
    /// root), as flamegraph SVGs in the report directory (needs --report).
    #[arg(long, requires = "report")]
    pub(crate) profile: bool,
    /// Proposals per second, all agents together; each is voted on by every live agent.
    #[arg(long, default_value_t = 2.0, value_name = "PER_S")]
    pub(crate) proposals_per_sec: f64,
    /// Partitions of the messages topic [default: one per agent, at least 8].
    #[arg(long, value_name = "N")]
    pub(crate) messages_partitions: Option<u32>,
    /// The topology manager's decay interval: idle edges are pruned 21 of them after they were built (the default 5 s
    /// keeps the full mesh of a long ramp-up whole until the last agent joined).
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    pub(crate) decay_interval: String,
    /// How long start-up and the full mesh may take before the run is abandoned.
    #[arg(long, default_value = "300s", value_name = "DURATION")]
    pub(crate) ramp_timeout: String,
    /// `local`: a real Kafka and redis-server started for the run (the default without --kafka); `embedded`: a
    /// mock broker, for trying the harness only.
    #[arg(long, value_enum, conflicts_with_all = ["kafka", "redis"])]
    pub(crate) infra: Option<InfraMode>,
    /// With the local infrastructure: Kafka nodes. 1 (the default) is one broker; 3 is a replicated KRaft cluster
    /// (every topic three replicas, two in sync, writes acknowledged by two), to see what replication costs: the
    /// baseline runs on the same cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub(crate) brokers: u32,
    /// With the local infrastructure: spread the agent processes over H simulated hosts (Linux network namespaces
    /// on a bridge, each with its own address and its own `mesh up`; needs root). The managers, Kafka and Redis stay
    /// in this namespace and are reached over the bridge. 1 (the default) runs everything here.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub(crate) hosts: u32,
    /// Use this Kafka instead (with --redis).
    #[arg(long, env = "MESH_KAFKA", requires = "redis", value_name = "HOST:PORT")]
    pub(crate) kafka: Option<String>,
    /// Use this Redis instead (with --kafka).
    #[arg(long, env = "MESH_REDIS", requires = "kafka", value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Run only the plain-Kafka baseline.
    #[arg(long, conflicts_with = "no_baseline")]
    pub(crate) baseline: bool,
    /// Skip the baseline (no ratios).
    #[arg(long)]
    pub(crate) no_baseline: bool,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<std::path::PathBuf>,
    /// Write bench.json and bench.svg into this directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) report: Option<std::path::PathBuf>,
    /// Print the change of every figure against an earlier JSON report.
    #[arg(long, value_name = "OLD.json")]
    pub(crate) compare: Option<std::path::PathBuf>,
    /// Where the bench deployment keeps its state and logs.
    #[arg(long, default_value = ".mesh-bench", value_name = "DIR")]
    pub(crate) state_dir: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to run.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub(crate) duration: String,
    /// Accelerated timers (decay every 200 ms, 5 tasks/s per agent) to see decay and pruning in seconds.
    #[arg(long)]
    pub(crate) fast: bool,
    /// Print only a final JSON summary.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Where the supervisor keeps its socket, state file, event log and logs.
#[derive(Debug, Args, Clone)]
pub(crate) struct StateDirArgs {
    /// State directory of the deployment.
    #[arg(long, env = "MESH_STATE_DIR", default_value = ".mesh", value_name = "DIR")]
    pub(crate) state_dir: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) infra_args: InfraArgs,
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Deployment file [default: ./mesh.toml if present, else the built-in six processes].
    #[arg(long, short = 'f', env = "MESH_DEPLOYMENT", value_name = "FILE")]
    pub(crate) file: Option<std::path::PathBuf>,
    /// Detach: return once every process is READY (exit 0) or one FAILED (exit 1).
    #[arg(long, short = 'd')]
    pub(crate) detach: bool,
    /// Where Kafka and Redis come from: `embedded` (default without --kafka: a broker inside the supervisor) or
    /// `local` (a real Apache Kafka and redis-server on loopback, supervised too, data in STATE_DIR/infra).
    #[arg(long, value_enum, conflicts_with_all = ["kafka", "redis"])]
    pub(crate) infra: Option<InfraMode>,
    /// With --infra local: Kafka nodes. 1 (the default) is one broker; 3 is a replicated KRaft cluster (each node
    /// broker and controller; every topic three replicas, two in sync), supervised as kafka-1..kafka-3.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub(crate) brokers: u32,
    /// With --detach, how long to wait for readiness.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub(crate) wait_timeout: String,
    /// Seed of the restart jitter and of `kill --random` [default: from the clock].
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Internal: this process is the detached supervisor.
    #[arg(long, hide = true)]
    pub(crate) detached_child: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Per-process grace between SIGTERM and SIGKILL, in seconds (0 to 86400) [default: each process's
    /// stop_timeout, 10].
    #[arg(long, value_name = "SECONDS", value_parser = seconds)]
    pub(crate) timeout: Option<f64>,
    /// Without a supervisor, SIGKILL every process group recorded in the state file.
    #[arg(long)]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Wait until every process is READY (or the timeout passes).
    #[arg(long)]
    pub(crate) wait: bool,
    /// With --wait, seconds to wait (0 to 86400).
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS", value_parser = seconds)]
    pub(crate) timeout: f64,
}

#[derive(Debug, Args)]
pub(crate) struct KillArgs {
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Process name (for example agent-sales).
    #[arg(required_unless_present = "random", conflicts_with = "random")]
    pub(crate) name: Option<String>,
    /// Pick a random running process.
    #[arg(long)]
    pub(crate) random: bool,
    /// Signal: KILL, TERM, STOP, CONT, or a number.
    #[arg(long, short = 's', default_value = "KILL")]
    pub(crate) signal: String,
    /// Pause: SIGSTOP now and SIGCONT after this many seconds (0 to 86400).
    #[arg(long, value_name = "SECONDS", conflicts_with = "signal", value_parser = seconds)]
    pub(crate) pause: Option<f64>,
    /// Do not restart it afterwards.
    #[arg(long)]
    pub(crate) no_restart: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RestartArgs {
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Process name.
    pub(crate) name: String,
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Processes to show [default: all].
    pub(crate) names: Vec<String>,
    /// Keep printing new lines.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// Only lines newer than this (for example 5m).
    #[arg(long, value_name = "DURATION")]
    pub(crate) since: Option<String>,
}

/// Where Kafka and Redis are; shared by every process kind.
#[derive(Debug, Args, Clone)]
pub(crate) struct InfraArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...] [default: 127.0.0.1:9092].
    #[arg(long, env = "MESH_KAFKA", value_name = "HOST:PORT")]
    pub(crate) kafka: Option<String>,
    /// How long a reader's fetch waits at the broker when there is nothing to read (librdkafka's
    /// `fetch.wait.max.ms`): how often an idle reader asks again, and the longest a partition that becomes readable
    /// meanwhile goes unread [default: 500ms; `mesh up` sets 10ms on its embedded broker, which holds empty fetches].
    #[arg(long, env = "MESH_KAFKA_FETCH_WAIT", value_name = "DURATION")]
    pub(crate) kafka_fetch_wait: Option<String>,
    /// How long a producer holds records to fill a batch (librdkafka's `linger.ms`): one request per partition
    /// carries more records, at this much added latency [default: 2ms].
    #[arg(long, env = "MESH_KAFKA_LINGER", value_name = "DURATION")]
    pub(crate) kafka_linger: Option<String>,
    /// A librdkafka client property, KEY=VALUE, applied last to every client this process opens (repeat the flag,
    /// or separate them with commas in the variable): security settings such as `security.protocol`, or tuning
    /// [default: none].
    #[arg(long = "kafka-property", env = "MESH_KAFKA_PROPERTIES", value_delimiter = ',', value_name = "KEY=VALUE")]
    pub(crate) kafka_properties: Vec<String>,
    /// A file of librdkafka properties, one KEY=VALUE a line (`#` starts a comment): where secrets such as
    /// `sasl.password` belong, out of argv and the environment; the flags above win on a key [default: none].
    #[arg(long, env = "MESH_KAFKA_PROPERTIES_FILE", value_name = "FILE")]
    pub(crate) kafka_properties_file: Option<std::path::PathBuf>,
    /// How clients reach the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl (librdkafka's
    /// `security.protocol`) [default: plaintext].
    #[arg(long, env = "MESH_KAFKA_SECURITY_PROTOCOL", value_name = "PROTOCOL")]
    pub(crate) kafka_security_protocol: Option<String>,
    /// The CA certificate (PEM) the brokers' TLS certificates are checked against (`ssl.ca.location`) [default:
    /// the system's CAs].
    #[arg(long, env = "MESH_KAFKA_CA_FILE", value_name = "FILE")]
    pub(crate) kafka_ca_file: Option<std::path::PathBuf>,
    /// The SASL mechanism: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN (`sasl.mechanisms`) [default: SCRAM-SHA-256 when a
    /// username is given].
    #[arg(long, env = "MESH_KAFKA_SASL_MECHANISM", value_name = "MECHANISM")]
    pub(crate) kafka_sasl_mechanism: Option<String>,
    /// The SASL username (`sasl.username`) [default: none].
    #[arg(long, env = "MESH_KAFKA_SASL_USERNAME", value_name = "NAME")]
    pub(crate) kafka_sasl_username: Option<String>,
    /// A file holding the SASL password (`sasl.password`); the variable MESH_KAFKA_SASL_PASSWORD may hold it
    /// instead. Never a flag: argv is visible to every user of the machine [default: none].
    #[arg(long, env = "MESH_KAFKA_SASL_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) kafka_sasl_password_file: Option<std::path::PathBuf>,
    /// The deployment secret: a file of at least 32 random bytes (`mesh up` writes `.mesh/secret`). Every record
    /// is tagged with a key derived from it for its writer, and every record read is checked to be written by the
    /// writer it must have; forgeries are dead-lettered or ignored (docs/protocol.md, "Trust") [default: none:
    /// records are neither tagged nor checked, and anyone who can write the topics can change the mesh's verdicts].
    #[arg(long, env = "MESH_SECRET_FILE", value_name = "FILE")]
    pub(crate) secret_file: Option<std::path::PathBuf>,
    /// For an agent not trusted with the deployment secret: a file with its own key (64 hex digits, from
    /// `mesh key agent ID`). It tags what the agent writes and lets it check nothing [default: none].
    #[arg(long, env = "MESH_AGENT_KEY_FILE", value_name = "FILE")]
    pub(crate) agent_key_file: Option<std::path::PathBuf>,
    /// Redis URL: redis://HOST:PORT, or rediss://HOST:PORT for TLS [default: redis://127.0.0.1:6379].
    #[arg(long, env = "MESH_REDIS", value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// The Redis ACL user to log in as [default: none, or the URL's].
    #[arg(long, env = "MESH_REDIS_USERNAME", value_name = "NAME")]
    pub(crate) redis_username: Option<String>,
    /// A file holding the Redis password; the variable MESH_REDIS_PASSWORD may hold it instead. Never a flag
    /// [default: none, or the URL's].
    #[arg(long, env = "MESH_REDIS_PASSWORD_FILE", value_name = "FILE")]
    pub(crate) redis_password_file: Option<std::path::PathBuf>,
    /// The CA certificate (PEM) a rediss:// server's certificate is checked against [default: the system's CAs].
    #[arg(long, env = "MESH_REDIS_CA_FILE", value_name = "FILE")]
    pub(crate) redis_ca_file: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks a free one, logged and told to `mesh up`,
    /// which lists it in `mesh status` and `.mesh/prometheus-targets.json`) [default: none; `mesh up` gives its
    /// processes 127.0.0.1:0].
    #[arg(long, env = "MESH_METRICS_LISTEN", value_name = "ADDR")]
    pub(crate) metrics_listen: Option<String>,
    /// Prefix of topic names and Redis keys [default: agentmesh].
    #[arg(long, env = "MESH_TOPIC_PREFIX", value_name = "PREFIX")]
    pub(crate) topic_prefix: Option<String>,
    /// Partitions of the messages topic, used when it is created [default: 8].
    #[arg(long, env = "MESH_MESSAGES_PARTITIONS", value_name = "N")]
    pub(crate) messages_partitions: Option<u32>,
    /// Partitions of the proposals and votes topics, used when they are created [default: 4].
    #[arg(long, env = "MESH_CONSENSUS_PARTITIONS", value_name = "N")]
    pub(crate) consensus_partitions: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    pub(crate) infra: InfraArgs,
    /// Agent name; its identity is derived from it, so a restarted agent rejoins as itself.
    #[arg(long, env = "MESH_AGENT_NAME")]
    pub(crate) name: String,
    /// Role: sales, support, inventory or fraud in the e-commerce scenario (any other role only answers).
    #[arg(long, env = "MESH_AGENT_ROLE")]
    pub(crate) role: String,
    /// Capabilities published in the join, comma-separated.
    #[arg(long, env = "MESH_AGENT_CAPABILITIES", value_delimiter = ',', value_name = "A,B")]
    pub(crate) capabilities: Vec<String>,
    /// Metadata published in the join, comma-separated KEY=VALUE pairs.
    #[arg(long, env = "MESH_AGENT_METADATA", value_delimiter = ',', value_name = "K=V,...")]
    pub(crate) metadata: Vec<String>,
    /// Time between heartbeats [default: 1s].
    #[arg(long, env = "MESH_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    pub(crate) heartbeat_interval: Option<String>,
    /// Scenario pace: tasks started per second; 0 only answers [default: 1].
    #[arg(long, env = "MESH_AGENT_RATE", value_name = "PER_SECOND")]
    pub(crate) rate: Option<f64>,
    /// Make a proposal every N started tasks (roles that propose); 0 never [default: 5].
    #[arg(long, env = "MESH_PROPOSAL_EVERY", value_name = "N")]
    pub(crate) proposal_every: Option<u32>,
    /// Start tasks only once at least N agents (this one included) are live in the roster; 0: as soon as this
    /// agent is a member [default: 0].
    #[arg(long, env = "MESH_START_AFTER_MEMBERS", value_name = "N")]
    pub(crate) start_after_members: Option<usize>,
    /// Seed of the scenario's random choices [default: derived from the name].
    #[arg(long, env = "MESH_AGENT_SEED")]
    pub(crate) seed: Option<u64>,
    /// More agents in this same process, as NAME:ROLE (repeatable or comma-separated), each with its own reader
    /// and identity but sharing the Kafka producer and Redis connection: to go past process limits (`mesh bench
    /// --agents-per-process`). READY once all are; one hung agent among live ones is not seen by the watchdog.
    #[arg(long = "extra-agent", value_delimiter = ',', value_name = "NAME:ROLE")]
    pub(crate) extra_agents: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct TopologyArgs {
    #[command(flatten)]
    pub(crate) infra: InfraArgs,
    /// Weight of the edges created when an agent joins [default: 0.5].
    #[arg(long, env = "MESH_INITIAL_WEIGHT", value_name = "0..1")]
    pub(crate) initial_weight: Option<f64>,
    /// Weight added per message along an edge, capped at 1.0 [default: 0.1].
    #[arg(long, env = "MESH_REINFORCEMENT", value_name = "0..1")]
    pub(crate) reinforcement: Option<f64>,
    /// Weight subtracted from every edge at every decay tick [default: 0.02].
    #[arg(long, env = "MESH_DECAY_RATE", value_name = "0..1")]
    pub(crate) decay_rate: Option<f64>,
    /// Edges below this weight after a decay are pruned [default: 0.1].
    #[arg(long, env = "MESH_PRUNE_THRESHOLD", value_name = "0..1")]
    pub(crate) prune_threshold: Option<f64>,
    /// Time between decay ticks [default: 5s].
    #[arg(long, env = "MESH_DECAY_INTERVAL", value_name = "DURATION")]
    pub(crate) decay_interval: Option<String>,
    /// An agent silent this long is declared dead [default: 10s].
    #[arg(long, env = "MESH_FAILURE_TIMEOUT", value_name = "DURATION")]
    pub(crate) failure_timeout: Option<String>,
    /// How often the graph and its offsets are saved to Redis [default: 5s].
    #[arg(long, env = "MESH_TOPOLOGY_SNAPSHOT_INTERVAL", value_name = "DURATION")]
    pub(crate) snapshot_interval: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ConsensusArgs {
    #[command(flatten)]
    pub(crate) infra: InfraArgs,
    /// Fraction of a proposal's voters that must support it, in (0.5, 1] [default: 0.6].
    #[arg(long, env = "MESH_QUORUM", value_name = "FRACTION")]
    pub(crate) quorum: Option<f64>,
    /// A proposal not decided this long after creation expires [default: 30s].
    #[arg(long, env = "MESH_PROPOSAL_TIMEOUT", value_name = "DURATION")]
    pub(crate) proposal_timeout: Option<String>,
    /// How often the state and its offsets are saved to Redis [default: 10s].
    #[arg(long, env = "MESH_CONSENSUS_SNAPSHOT_INTERVAL", value_name = "DURATION")]
    pub(crate) snapshot_interval: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// Whose key: `agent`.
    #[arg(value_parser = ["agent"])]
    pub(crate) principal: String,
    /// The agent's id.
    pub(crate) id: String,
    /// The deployment secret [default: DIR/secret of the deployment's state directory].
    #[arg(long, env = "MESH_SECRET_FILE", value_name = "FILE")]
    pub(crate) secret_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) infra: InfraArgs,
    /// Without --kafka/--redis (flag, variable or config file), the deployment recorded in this state directory is
    /// read: its broker, store and topic prefix.
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ViewArgs {
    #[command(flatten)]
    pub(crate) infra: InfraArgs,
    /// Without --kafka/--redis (flag, variable or config file), the deployment recorded in this state directory is
    /// read: its broker, store, topic prefix, secret and event log.
    #[command(flatten)]
    pub(crate) dir: StateDirArgs,
    /// Where to serve the page: loopback by default; 0.0.0.0:PORT serves other hosts too (port 0: any free one).
    #[arg(long, env = "MESH_VIEW_LISTEN", default_value = "127.0.0.1:7878", value_name = "ADDR")]
    pub(crate) listen: std::net::SocketAddr,
    /// Longest a change waits before it is pushed to the page (changes within it go out together).
    #[arg(long, env = "MESH_VIEW_REFRESH", default_value = "250ms", value_name = "DURATION", value_parser = refresh)]
    pub(crate) refresh: std::time::Duration,
}

/// A page refresh: from 10 ms to 10 s.
fn refresh(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration (e.g. 250ms): {e}"))?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(10) {
        return Err(format!("{text} is out of range: give 10ms to 10s"));
    }
    Ok(d)
}

/// A wait in seconds as the control requests carry it: refused at the flag, by range, rather than by the supervisor.
fn seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    mesh_supervisor::control::seconds("the value", secs).map(|_| secs)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn waits_outside_what_the_supervisor_accepts_are_refused_at_the_flag() {
        for argv in [
            &["mesh", "kill", "agent-sales", "--pause", "1e20"][..],
            &["mesh", "kill", "agent-sales", "--pause=-1"],
            &["mesh", "kill", "agent-sales", "--pause", "NaN"],
            &["mesh", "down", "--timeout=-1"],
            &["mesh", "down", "--timeout", "inf"],
            &["mesh", "status", "--wait", "--timeout", "1e300"],
        ] {
            let error = Cli::try_parse_from(argv).map(|_| ()).expect_err(&argv.join(" ")).to_string();
            assert!(error.contains("from 0 to 86400"), "{}: {error}", argv.join(" "));
        }
        let ok = Cli::try_parse_from(["mesh", "kill", "agent-sales", "--pause", "2.5"]).expect("a sane pause");
        assert!(matches!(ok.command, Command::Kill(KillArgs { pause: Some(p), .. }) if p == 2.5));
    }
}
