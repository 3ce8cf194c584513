//! The sd_notify protocol, client side: `READY=1` and `STATUS=...` datagrams to `$NOTIFY_SOCKET`, so the services
//! run under systemd (`Type=notify`) or any supervisor speaking the same protocol. Without the variable it does
//! nothing.
//!
//! Sends never block. A Unix datagram socket queues only `net.unix.max_dgram_qlen` (10 by default) messages for a
//! receiver that is not reading; a blocking send then waits, inside the service's event loop, for as long as the
//! supervisor is stalled (a slow fsync, SIGSTOP). `cargo xtask chaos`'s pause-supervisor scenario measured that: the
//! topology manager and the agents froze with their supervisor. Now a full queue drops `STATUS` and `WATCHDOG` (the
//! next one supersedes them) and keeps `READY` to send again on the next call.

use std::os::unix::net::UnixDatagram;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Sends readiness and status to the supervisor named by `NOTIFY_SOCKET`.
pub(crate) struct Notifier {
    target: Option<String>,
    /// Minimum time between `WATCHDOG=1` pings: a quarter of `WATCHDOG_USEC`, if the supervisor asked for them.
    watchdog_every: Option<std::time::Duration>,
    last_ping: Mutex<Option<std::time::Instant>>,
    /// One non-blocking socket, made on first use.
    socket: Mutex<Option<UnixDatagram>>,
    /// `READY=1` could not be queued yet: every later call tries it first.
    ready_pending: AtomicBool,
    /// Messages dropped because the supervisor's queue was full (reported at debug level).
    dropped: AtomicU64,
    /// Where this process serves its metrics: said with every status line (`MESH_METRICS=host:port`), so a datagram
    /// lost to a full queue costs nothing.
    metrics: std::sync::OnceLock<std::net::SocketAddr>,
}

/// What became of one datagram.
#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Queued,
    /// The receiver's queue is full (or it is gone for a moment): try later or drop.
    Full,
}

impl Notifier {
    pub(crate) fn from_env() -> Self {
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(|us| std::time::Duration::from_micros(us / 4));
        Self::new(std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty()), watchdog_every)
    }

    fn new(target: Option<String>, watchdog_every: Option<std::time::Duration>) -> Self {
        Self {
            target,
            watchdog_every,
            last_ping: Mutex::new(None),
            socket: Mutex::new(None),
            ready_pending: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// This process serves its metrics at `address`.
    pub(crate) fn metrics_at(&self, address: std::net::SocketAddr) {
        let _ = self.metrics.set(address);
    }

    fn send(&self, message: &str) -> Sent {
        let Some(target) = &self.target else { return Sent::Queued };
        let Ok(mut socket) = self.socket.lock() else { return Sent::Full };
        if socket.is_none() {
            match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                Ok(s) => *socket = Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "sd_notify: no socket");
                    return Sent::Full;
                }
            }
        }
        let Some(socket) = socket.as_ref() else { return Sent::Full };
        let result = if let Some(name) = target.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
        } else {
            socket.send_to(message.as_bytes(), target)
        };
        match result {
            Ok(_) => Sent::Queued,
            Err(e) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(error = %e, dropped, "sd_notify: the supervisor is not reading; message not queued");
                Sent::Full
            }
        }
    }

    /// Sends a `READY=1` that an earlier call could not queue.
    fn retry_ready(&self) {
        if self.ready_pending.load(Ordering::Relaxed) && self.send("READY=1") == Sent::Queued {
            self.ready_pending.store(false, Ordering::Relaxed);
        }
    }
}

impl mesh_node::Readiness for Notifier {
    fn ready(&self) {
        if self.send("READY=1") == Sent::Full {
            self.ready_pending.store(true, Ordering::Relaxed);
        }
    }

    fn status(&self, line: &str) {
        self.retry_ready();
        let status = format!("STATUS={}", line.replace('\n', " "));
        match self.metrics.get() {
            Some(address) => self.send(&format!("{status}\nMESH_METRICS={address}")),
            None => self.send(&status),
        };
    }

    fn watchdog(&self) {
        self.retry_ready();
        let Some(every) = self.watchdog_every else { return };
        let Ok(mut last) = self.last_ping.lock() else { return };
        if last.is_none_or(|t| t.elapsed() >= every) {
            // A ping that could not be queued is tried again on the next call, not a quarter period later.
            if self.send("WATCHDOG=1") == Sent::Queued {
                *last = Some(std::time::Instant::now());
            }
        }
    }
}

/// Readiness of several agents packed into one process (`mesh agent --extra-agent`): READY once every agent is,
/// status from the first, watchdog pings from any (so one hung agent among live ones goes unnoticed: the price of
/// packing, stated in `--help`).
#[derive(Clone)]
pub(crate) struct PackedReadiness {
    shared: std::sync::Arc<(Notifier, std::sync::atomic::AtomicUsize)>,
    first: bool,
}

impl PackedReadiness {
    /// One handle per agent, `count` of them.
    pub(crate) fn split(notifier: Notifier, count: usize) -> Vec<Self> {
        let shared = std::sync::Arc::new((notifier, std::sync::atomic::AtomicUsize::new(count)));
        (0..count).map(|i| Self { shared: std::sync::Arc::clone(&shared), first: i == 0 }).collect()
    }
}

impl mesh_node::Readiness for PackedReadiness {
    fn ready(&self) {
        if self.shared.1.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.shared.0.ready();
        }
    }

    fn status(&self, line: &str) {
        if self.first {
            self.shared.0.status(line);
        }
    }

    fn watchdog(&self) {
        self.shared.0.watchdog();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_node::Readiness;
    use std::time::Duration;

    /// Runs `f` on a thread and fails if it has not returned within 10 s (a blocking send would hang forever).
    fn returns_promptly(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10)).expect("a notify call blocked on a supervisor that does not read");
    }

    fn drain(rx: &UnixDatagram) -> Vec<String> {
        let mut buf = [0u8; 512];
        let mut out = Vec::new();
        rx.set_nonblocking(true).expect("notify test setup");
        while let Ok(n) = rx.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    #[test]
    fn a_supervisor_that_does_not_read_never_blocks_the_service_and_ready_is_not_lost() {
        let dir = tempfile::tempdir().expect("notify test setup");
        let path = dir.path().join("notify.sock");
        let supervisor = UnixDatagram::bind(&path).expect("notify test setup");
        let notifier = std::sync::Arc::new(Notifier::new(Some(path.display().to_string()), None));
        let n = notifier.clone();
        // Far more than any queue holds, then READY into the full queue.
        returns_promptly(move || {
            for i in 0..2_000 {
                n.status(&format!("{i} live agents"));
            }
            n.ready();
        });
        assert!(notifier.dropped.load(Ordering::Relaxed) > 0, "the queue never filled: the test proves nothing");
        assert!(notifier.ready_pending.load(Ordering::Relaxed), "READY met a full queue and must be kept");
        let first = drain(&supervisor);
        assert!(!first.iter().any(|m| m == "READY=1"));
        // The supervisor reads again: the next call delivers READY before its own status.
        notifier.status("caught up");
        assert_eq!(drain(&supervisor), ["READY=1", "STATUS=caught up"]);
        assert!(!notifier.ready_pending.load(Ordering::Relaxed));
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_waits() {
        let notifier = Notifier::new(None, Some(Duration::from_millis(1)));
        notifier.ready();
        notifier.status("x");
        notifier.watchdog();
        assert!(!notifier.ready_pending.load(Ordering::Relaxed));
        assert_eq!(notifier.dropped.load(Ordering::Relaxed), 0);
    }
}
