//! The three service runtimes of the mesh (agent, topology manager, consensus manager) on tokio.
//!
//! Each runtime is one dispatcher loop (`tokio::select!` over its readers, timers and shutdown) that decodes records
//! with `mesh-proto`, feeds them to a pure state machine from `mesh-core`, and carries out what the machine returns
//! through the [`mesh_transport::Bus`] and [`mesh_transport::SnapshotStore`] seams. No state is shared between
//! runtimes: in production each runs in its own OS process and they meet only on Kafka and Redis.
#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod consensus;
pub mod infrastructure;
pub mod latency;
mod latest_writer;
pub mod metrics;
mod runtime;
pub mod scenario;
pub mod settings_file;
mod snapshot_pacer;
pub mod topology;

pub use config::{AgentConfig, ConsensusConfig, MeshConfig, TopologyConfig};
/// The runtimes' only clock readings, passed into the core (and what the tools above them stamp their own records
/// and events with).
pub use mesh_transport::clock::{now_ms, now_us};
pub use metrics::Metrics;
pub use runtime::{NodeError, Readiness, STOP_BUDGET, Shutdown, retry, topic_specs};
pub use settings_file::SettingsFile;
