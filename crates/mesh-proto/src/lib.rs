//! The wire contract of the mesh: what every record on every topic looks like, and how records are partitioned.
//!
//! Any process in any language that writes these JSON envelopes to these topics, partitioned the same way, takes
//! part in the mesh; `docs/protocol.md` documents each kind with the golden examples under `fixtures/golden/`.
#![warn(missing_docs)]

pub mod auth;
pub mod changelog;
pub mod edges;
pub mod envelope;
pub mod partition;
pub mod read_model;
pub mod records;
pub mod topics;

pub use envelope::{DecodeError, Envelope, Header, WIRE_VERSION, decode, encode};
pub use partition::{murmur2, partition_for};
pub use records::*;
pub use topics::{TopicKind, TopicNames};
