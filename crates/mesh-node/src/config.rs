//! Validated settings of the three services. The binary builds these from flags, environment and a TOML file;
//! here they are plain values with the seed's defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::consensus::ConsensusParams;
use mesh_core::graph::GraphParams;
use mesh_core::{AgentId, Role};
use mesh_proto::TopicNames;
use mesh_proto::auth::Credentials;

/// Settings every process shares: where the infrastructure is and how topics are laid out.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    /// Topic and Redis key prefix (default `agentmesh`).
    pub topics: TopicNames,
    /// Partitions of the messages topic when it is created (default 8).
    pub messages_partitions: u32,
    /// Partitions of the proposals and votes topics when they are created (default 4).
    pub consensus_partitions: u32,
    /// What records are tagged and checked with (docs/protocol.md, "Trust"); none by default.
    pub credentials: Credentials,
    /// Where the runtimes register their Prometheus metrics (the process serves it, if asked, with
    /// [`crate::Metrics::serve`]); a registry of its own by default.
    pub metrics: crate::Metrics,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            topics: TopicNames::default(),
            messages_partitions: 8,
            consensus_partitions: 4,
            credentials: Credentials::default(),
            metrics: crate::Metrics::default(),
        }
    }
}

/// Settings of the topology manager.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyConfig {
    /// SlimeMold weights.
    pub graph: GraphParams,
    /// Time between decay ticks (default 5 s); ticks are aligned to multiples of it since the Unix epoch.
    pub decay_interval: Duration,
    /// An agent silent this long is declared dead (default 10 s).
    pub failure_timeout: Duration,
    /// How often the graph and the offsets it reflects are saved to Redis (default 5 s).
    pub snapshot_interval: Duration,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            graph: GraphParams::default(),
            decay_interval: Duration::from_secs(5),
            failure_timeout: Duration::from_secs(10),
            snapshot_interval: Duration::from_secs(5),
        }
    }
}

/// Settings of the consensus manager.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusConfig {
    /// Quorum and proposal timeout.
    pub params: ConsensusParams,
    /// How often the state and the offsets it reflects are saved to Redis (default 10 s).
    pub snapshot_interval: Duration,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self { params: ConsensusParams::default(), snapshot_interval: Duration::from_secs(10) }
    }
}

/// Settings of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Stable identity, derived from the name.
    pub id: AgentId,
    /// Human name.
    pub name: String,
    /// Role; the e-commerce scenario knows `sales`, `support`, `inventory` and `fraud`.
    pub role: Role,
    /// Free-form capabilities published in the join.
    pub capabilities: Vec<String>,
    /// Free-form metadata published in the join.
    pub metadata: BTreeMap<String, String>,
    /// Time between heartbeats (default 1 s).
    pub heartbeat_interval: Duration,
    /// Scenario pace: tasks this agent starts per second (default 1; 0 = only answer).
    pub rate: f64,
    /// Every how many started tasks the agent also makes a proposal, if its role makes any (default 5; 0 = never).
    pub proposal_every: u32,
    /// Start the scenario's tasks only once at least this many agents (itself included) are live in the roster
    /// (default 0: as soon as it is a member itself). A coordinated start: `mesh bench` holds 500 agents' traffic
    /// until all have joined, so the last ones do not join into a mesh already at full load.
    pub start_after_members: usize,
    /// Seed of the scenario's random choices (default: derived from the id).
    pub seed: u64,
}
