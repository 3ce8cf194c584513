//! Supervision of the mesh's processes, the way the best supervisors do it: each child in its own process group with
//! a parent-death signal, readiness over the sd_notify protocol, restarts with exponential backoff and jitter under
//! an intensity limit, ordered stops that wait for whole groups, a control socket, a state file and an event log.
#![warn(missing_docs)]

pub mod child;
mod console;
pub mod control;
mod error;
pub mod launch;
mod listen;
mod lock;
pub mod private;
pub mod rotating;
pub mod spec;
pub mod state;
pub mod supervisor;

pub use control::{ControlError, Request, Response};
pub use launch::{LaunchError, LaunchSpec, Launched};
pub use lock::InstanceLock;
pub use spec::{DeploymentFile, DeploymentSpec, FileProcess, ProcessSpec, SpecError};
pub use state::{Event, EventLog, ProcState, ProcessStatus, StateDir, StateFile};
pub use supervisor::{Options, Output, SupervisorError, run};
