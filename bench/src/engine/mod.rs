//! The `mesh bench` engine: everything a run does once the binary has read its flags into [`Options`]. One job per
//! module: `plan` validates the options and derives rates and pacing (pure); `infra` provides Kafka and
//! Redis; `deploy` writes the settings and deployment files and drives the supervisors; `measure` watches the
//! ramp-up, the window, the pruning and the idle cost, with `stats` (what the agents and the topology manager
//! publish), `cost` (`/proc`) and `consensus` (the records read back); `baseline` and `fleet` run plain Kafka next
//! to it; `peak` steps the rate up for `--rate max`; `judge` turns the figures into ratios and verdicts (pure);
//! `output` writes what the run leaves behind; `run` puts the phases in order.
//!
//! It depends on the runtimes' libraries, never on the `mesh` binary: what only the binary knows (its own path,
//! version and fetch-wait defaults) comes in as [`MeshBinary`].

mod baseline;
mod cgroup;
mod consensus;
mod cost;
mod deploy;
mod error;
mod fleet;
mod infra;
mod interrupt;
mod judge;
mod measure;
mod options;
mod output;
mod peak;
mod plan;
mod progress;
mod run;
mod stats;

pub use baseline::baseline_config;
pub use error::{Error, OptionsError};
pub use fleet::WorkerReport;
pub use options::{MeshBinary, Options};
pub use run::run;
