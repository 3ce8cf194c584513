//! Command-line interface: every flag also reads an environment variable, and `--config FILE` (`MESH_CONFIG`)
//! supplies anything not given. Defaults are the seed's values and are shown in `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
}

/// Where Kafka and Redis are; shared by every process kind.
#[derive(Debug, Args, Clone)]
pub(crate) struct InfraArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...] [default: 127.0.0.1:9092].
    #[arg(long, env = "MESH_KAFKA", value_name = "HOST:PORT")]
    pub(crate) kafka: Option<String>,
    /// Redis URL [default: redis://127.0.0.1:6379].
    #[arg(long, env = "MESH_REDIS", value_name = "URL")]
    pub(crate) redis: Option<String>,
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

#[derive(Debug, Args)]
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
    /// Seed of the scenario's random choices [default: derived from the name].
    #[arg(long, env = "MESH_AGENT_SEED")]
    pub(crate) seed: Option<u64>,
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
pub(crate) struct InspectArgs {
    #[command(flatten)]
    pub(crate) infra: InfraArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}
