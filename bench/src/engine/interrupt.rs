//! Ctrl-C and SIGTERM during a run: a flag every phase checks, so the run unwinds through its own cleanup (the
//! deployment stopped, the infrastructure dropped) instead of dying with hundreds of processes left behind.

use std::sync::atomic::{AtomicBool, Ordering};

use super::error::Error;

/// Set on SIGINT/SIGTERM: every phase checks it, and the deployment is taken down on the way out.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT or SIGTERM has arrived.
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// [`Error::Interrupted`] once SIGINT or SIGTERM has arrived: a phase's way out.
pub(crate) fn check_interrupted() -> Result<(), Error> {
    if interrupted() {
        return Err(Error::Interrupted);
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM and raises the flag (spawned on the run's runtime).
pub(crate) async fn watch_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    eprintln!("interrupted: stopping the bench deployment and its infrastructure");
    INTERRUPTED.store(true, Ordering::SeqCst);
}
