//! Why the supervisor could not run: its own module, so the dispatcher and the pieces it uses (the lock, the
//! listeners) all depend on it and not on each other.

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Another supervisor holds the lock of this state directory.
    #[error("a supervisor is already running on {dir} (pid {pid}); `mesh down` stops it")]
    AlreadyRunning {
        /// The state directory.
        dir: String,
        /// Its pid, as written in the lock file.
        pid: String,
    },
    /// Files or sockets could not be set up.
    #[error("failed to {what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let what = what.into();
    move |source| SupervisorError::Io { what, source }
}
