//! The single-instance lock of a state directory: one supervisor per `.mesh`, and a crashed one leaves nothing to
//! clean by hand.

use std::io::Write;

use crate::error::{SupervisorError, io};
use crate::state::StateDir;

/// The single-instance lock on `.mesh/mesh.lock` (flock; released by the kernel when the supervisor dies, so a
/// crash leaves nothing to clean by hand).
pub struct InstanceLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl InstanceLock {
    /// Takes the lock, or says who holds it.
    pub fn acquire(dir: &StateDir) -> Result<InstanceLock, SupervisorError> {
        crate::private::create_dir(dir.root()).map_err(io(format!("create {}", dir.root().display())))?;
        let path = dir.lock();
        let file = crate::private::open_rw(&path).map_err(io(format!("open {}", path.display())))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = write!(lock, "{}", std::process::id());
                Ok(InstanceLock { _lock: lock })
            }
            Err((_, _)) => Err(SupervisorError::AlreadyRunning {
                dir: dir.root().display().to_string(),
                pid: std::fs::read_to_string(&path).unwrap_or_default().trim().to_owned(),
            }),
        }
    }

    /// Whether some process holds the lock now.
    pub fn held(dir: &StateDir) -> bool {
        let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(dir.lock()) else { return false };
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
    }
}
