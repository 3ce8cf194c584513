//! `cargo xtask chaos`: faults injected into a live mesh (crashes and pauses through the supervisor, network
//! partitions through a fault proxy on every process's link to Kafka and to Redis), convergence measured, and
//! the mesh's invariants checked against what it wrote to Kafka and Redis. `docs/chaos.md` is the guide.

pub mod check;
pub mod deploy;
pub mod hostile;
pub mod hosts;
pub mod observe;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scenario;
