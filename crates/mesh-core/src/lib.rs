//! The pure core of `mesh`: every algorithm of the AgentMesh Cortex as a deterministic state machine.
//!
//! Nothing here performs I/O or reads a clock: time comes in as an argument (milliseconds since the Unix epoch, or a
//! tick number) and results come out as values. The runtimes in `mesh-node` feed records from Kafka into these types
//! and carry out what they return, so a replay of the same log always reaches the same state.
#![warn(missing_docs)]

pub mod admission;
pub mod consensus;
pub mod graph;
pub mod ids;
pub mod membership;
pub mod restart;
pub mod send_window;
pub mod topology;
pub mod voter;
pub mod waggle;
pub mod weight;

pub use ids::{AgentId, IdError, MessageId, ProposalId, Role};
pub use weight::{Milli, WeightError};

/// Unix time in milliseconds: the only notion of time the core knows, always passed in.
pub type UnixMillis = u64;
