//! The sd_notify protocol, client side: `READY=1` and `STATUS=...` datagrams to `$NOTIFY_SOCKET`, so the services
//! run under systemd (`Type=notify`) or any supervisor speaking the same protocol. Without the variable it does
//! nothing.

use std::os::unix::net::UnixDatagram;

/// Sends readiness and status to the supervisor named by `NOTIFY_SOCKET`.
pub(crate) struct Notifier {
    target: Option<String>,
    /// Minimum time between `WATCHDOG=1` pings: a quarter of `WATCHDOG_USEC`, if the supervisor asked for them.
    watchdog_every: Option<std::time::Duration>,
    last_ping: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Notifier {
    pub(crate) fn from_env() -> Self {
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|us| *us > 0)
            .map(|us| std::time::Duration::from_micros(us / 4));
        Self {
            target: std::env::var("NOTIFY_SOCKET").ok().filter(|s| !s.is_empty()),
            watchdog_every,
            last_ping: std::sync::Mutex::new(None),
        }
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else { return };
        let result = UnixDatagram::unbound().and_then(|socket| {
            if let Some(name) = target.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                socket.send_to_addr(message.as_bytes(), &addr)
            } else {
                socket.send_to(message.as_bytes(), target)
            }
        });
        if let Err(e) = result {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

impl mesh_node::Readiness for Notifier {
    fn ready(&self) {
        self.send("READY=1");
    }

    fn status(&self, line: &str) {
        self.send(&format!("STATUS={}", line.replace('\n', " ")));
    }

    fn watchdog(&self) {
        let Some(every) = self.watchdog_every else { return };
        let Ok(mut last) = self.last_ping.lock() else { return };
        if last.is_none_or(|t| t.elapsed() >= every) {
            *last = Some(std::time::Instant::now());
            self.send("WATCHDOG=1");
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
