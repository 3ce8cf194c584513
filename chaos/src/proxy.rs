//! A fault-injecting TCP proxy: one per (process, backend) link, so one client can be cut off from Kafka or Redis
//! while every other keeps working, without root and without touching the kernel's network stack.
//!
//! A fault applies at once to existing connections and to new ones: every connection task watches the proxy's
//! current [`Fault`] and reacts to a change even while idle.
//!
//! `blackhole` holds bytes instead of discarding them. A real partition does not corrupt a TCP stream: segments are
//! retransmitted until the network heals or the sender's own timeout gives up. Dropping bytes from the middle of a
//! stream would instead desynchronise Kafka's framing, a failure no network produces. While held, connections stay
//! open and new ones are accepted but not forwarded; clients see only their own timeouts, as behind a real
//! partition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which way bytes are affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Both ways.
    #[default]
    Both,
    /// Client to server only (requests are held, responses flow).
    ToServer,
    /// Server to client only (requests arrive, responses are held).
    ToClient,
}

impl Direction {
    fn covers(self, flow: Direction) -> bool {
        self == Direction::Both || self == flow
    }
}

/// What a link does to its traffic.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Fault {
    /// Forward everything.
    #[default]
    Pass,
    /// Accept connections and hold their bytes (one way or both) until healed; sockets stay open.
    Blackhole {
        /// Which way is held.
        #[serde(default)]
        direction: Direction,
    },
    /// Abort every connection with a TCP RST, and new ones as soon as they are accepted.
    Reset,
    /// Close the listening socket (new connections are refused) and reset existing connections.
    Refuse,
    /// Delay every chunk by `delay_ms` plus up to `jitter_ms`, in order.
    Latency {
        /// Fixed delay.
        delay_ms: u64,
        /// Extra random delay, uniform in 0..=jitter_ms.
        #[serde(default)]
        jitter_ms: u64,
    },
    /// Limit each direction of each connection to this many bytes per second.
    Bandwidth {
        /// Bytes per second.
        bytes_per_sec: u64,
    },
}

impl Fault {
    fn holds(self, flow: Direction) -> bool {
        matches!(self, Fault::Blackhole { direction } if direction.covers(flow))
    }

    fn aborts(self) -> bool {
        matches!(self, Fault::Reset | Fault::Refuse)
    }

    /// A short name for tables and timelines (`blackhole-to-server`, `latency 200±50ms`...).
    pub fn label(&self) -> String {
        match self {
            Fault::Pass => "pass".into(),
            Fault::Blackhole { direction: Direction::Both } => "blackhole".into(),
            Fault::Blackhole { direction: Direction::ToServer } => "blackhole-to-server".into(),
            Fault::Blackhole { direction: Direction::ToClient } => "blackhole-to-client".into(),
            Fault::Reset => "reset".into(),
            Fault::Refuse => "refuse".into(),
            Fault::Latency { delay_ms, jitter_ms } => format!("latency {delay_ms}±{jitter_ms}ms"),
            Fault::Bandwidth { bytes_per_sec } => format!("bandwidth {bytes_per_sec}B/s"),
        }
    }
}

/// Traffic counters of one proxy, for reports and tests.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Bytes forwarded client to server.
    pub to_server: AtomicU64,
    /// Bytes forwarded server to client.
    pub to_client: AtomicU64,
}

/// A running proxy; dropping it stops it and closes its connections.
pub struct FaultProxy {
    listen: SocketAddr,
    upstream: SocketAddr,
    fault: watch::Sender<Fault>,
    counters: Arc<ProxyCounters>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (port 0 for any free one) and forwards to `upstream`.
    pub async fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let (fault, rx) = watch::channel(Fault::Pass);
        let counters = Arc::new(ProxyCounters::default());
        let task = tokio::spawn(serve(listener, listen, upstream, rx, counters.clone()));
        Ok(FaultProxy { listen, upstream, fault, counters, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// Where the traffic goes.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Applies `fault` to existing and new connections at once.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self.fault.borrow()
    }

    /// Traffic so far.
    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    listen: SocketAddr,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Fault>,
    counters: Arc<ProxyCounters>,
) {
    let mut listener = Some(listener);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let fault = *rx.borrow_and_update();
        if fault == Fault::Refuse {
            listener = None;
        } else if listener.is_none() {
            // The port was ours a moment ago; std sets SO_REUSEADDR, so rebinding succeeds unless someone took it.
            match TcpListener::bind(listen).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(%listen, error = %e, "fault proxy could not listen again; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
        let Some(l) = listener.as_ref() else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => match accepted {
                Ok((client, _)) => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(connection(client, upstream, rx.clone(), counters.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// Closes a socket with RST instead of FIN.
fn reset(stream: TcpStream) {
    // Linger zero never blocks: the kernel discards the send buffer and sends RST.
    if let Err(e) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!(error = %e, "SO_LINGER failed; closing normally");
    }
    drop(stream);
}

/// Waits until the fault in force satisfies `ready`; `false` if the proxy is gone.
async fn wait_until(rx: &mut watch::Receiver<Fault>, ready: impl Fn(Fault) -> bool) -> bool {
    loop {
        if ready(*rx.borrow_and_update()) {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut rx: watch::Receiver<Fault>,
    counters: Arc<ProxyCounters>,
) {
    counters.open.fetch_add(1, Ordering::Relaxed);
    // A new connection behind a full blackhole is accepted and left hanging, as if the SYN-ACK had been the last
    // thing the network delivered; it is connected upstream once healed, unless reset first.
    let ready = wait_until(&mut rx, |f| f.aborts() || !f.holds(Direction::Both)).await;
    let fault = *rx.borrow();
    if !ready || fault.aborts() {
        reset(client);
        counters.open.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%upstream, error = %e, "fault proxy: upstream unreachable; resetting the client");
            reset(client);
            counters.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let aborted = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, Direction::ToServer, rx.clone(), &counters.to_server);
        let down = pump(server_read, client_write, Direction::ToClient, rx.clone(), &counters.to_client);
        let mut abort_rx = rx.clone();
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = wait_until(&mut abort_rx, Fault::aborts) => true,
        }
    };
    if aborted {
        reset(client);
        reset(server);
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
}

/// Copies one direction, applying the fault in force to each chunk.
///
/// Latency is a delay line, as on a long link: a chunk read at `t` is written at `t + delay` (plus jitter, never
/// overtaking the chunk before it), whatever else is in flight. Sleeping between a read and the next one instead
/// would make a chunk wait for the delays of every chunk ahead of it: a message sent right behind another arrived
/// up to twice the delay late, and an agent's heartbeats behind 280 ms of latency fell seconds apart.
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    flow: Direction,
    rx: watch::Receiver<Fault>,
    bytes: &AtomicU64,
) {
    // Bounded: a reader far ahead of the writer stops reading, and the sender's kernel buffers fill.
    let (line, mut arrivals) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(64);
    let mut read_rx = rx.clone();
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut last_due = tokio::time::Instant::now();
        loop {
            // Held: stop reading, so the sender's kernel buffers fill as behind a partition.
            if !wait_until(&mut read_rx, |f| !f.holds(flow)).await {
                return;
            }
            let fault = *read_rx.borrow();
            let limit = match fault {
                // Small chunks so a rate limit is smooth.
                Fault::Bandwidth { bytes_per_sec } => {
                    usize::try_from(bytes_per_sec / 20).unwrap_or(1).clamp(1, buf.len())
                }
                _ => buf.len(),
            };
            let n = match from.read(&mut buf[..limit]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let now = tokio::time::Instant::now();
            // Copied out: the watch's guard must not be held across the bandwidth sleep (it would block `set`).
            let fault = *read_rx.borrow();
            let due = match fault {
                Fault::Latency { delay_ms, jitter_ms } => {
                    let jitter = if jitter_ms == 0 { 0 } else { rand::rng().random_range(0..=jitter_ms) };
                    now + Duration::from_millis(delay_ms + jitter)
                }
                Fault::Bandwidth { bytes_per_sec } => {
                    // The link is busy for this chunk's transmission time: pace the reads.
                    let secs = n as f64 / bytes_per_sec.max(1) as f64;
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                    tokio::time::Instant::now()
                }
                _ => now,
            };
            // TCP delivers in order: jitter never lets a chunk overtake the one before it.
            last_due = due.max(last_due);
            if line.send((last_due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let mut write_rx = rx;
    let writer = async move {
        while let Some((due, chunk)) = arrivals.recv().await {
            tokio::time::sleep_until(due).await;
            // A fault that started while these bytes were in flight holds them too.
            if !wait_until(&mut write_rx, |f| !f.holds(flow)).await {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
            bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // The reader saw the end of the stream (or gave up): pass the close on once everything before it is out.
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback: what the proxy forwards to.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn proxy() -> FaultProxy {
        FaultProxy::start("127.0.0.1:0".parse().expect("addr"), echo().await).await.expect("proxy")
    }

    async fn round_trip(s: &mut TcpStream, wait: Duration) -> std::io::Result<Option<Vec<u8>>> {
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) => Ok(Some(buf.to_vec())),
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    const SHORT: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn passes_traffic_and_counts_it() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        assert_eq!(round_trip(&mut s, LONG).await.expect("io"), Some(b"ping".to_vec()));
        assert_eq!(p.counters().to_server.load(Ordering::Relaxed), 4);
        assert_eq!(p.counters().to_client.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn blackhole_holds_an_open_connection_and_delivers_after_healing() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        assert!(round_trip(&mut s, LONG).await.expect("io").is_some());
        p.set(Fault::Blackhole { direction: Direction::Both });
        assert_eq!(round_trip(&mut s, SHORT).await.expect("still open"), None, "nothing gets through");
        // A new connection is accepted but goes nowhere.
        let mut fresh = TcpStream::connect(p.addr()).await.expect("accepted");
        assert_eq!(round_trip(&mut fresh, SHORT).await.expect("open"), None);
        p.set(Fault::Pass);
        // The held ping of the first connection arrives, then the one we still wait for; the stream is intact.
        let mut buf = [0u8; 8];
        tokio::time::timeout(LONG, s.read_exact(&mut buf[..4])).await.expect("delivered").expect("io");
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(round_trip(&mut fresh, LONG).await.expect("io"), Some(b"ping".to_vec()));
    }

    #[tokio::test]
    async fn one_way_blackhole_lets_requests_through_and_holds_answers() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        p.set(Fault::Blackhole { direction: Direction::ToClient });
        assert_eq!(round_trip(&mut s, SHORT).await.expect("open"), None);
        assert_eq!(p.counters().to_server.load(Ordering::Relaxed), 4, "the request reached the server");
        p.set(Fault::Pass);
        let mut buf = [0u8; 4];
        tokio::time::timeout(LONG, s.read_exact(&mut buf)).await.expect("answer after heal").expect("io");
        let p2 = proxy().await;
        let mut s2 = TcpStream::connect(p2.addr()).await.expect("connect");
        assert!(round_trip(&mut s2, LONG).await.expect("io").is_some());
        p2.set(Fault::Blackhole { direction: Direction::ToServer });
        assert_eq!(round_trip(&mut s2, SHORT).await.expect("open"), None);
        assert_eq!(p2.counters().to_server.load(Ordering::Relaxed), 4, "the second request is held at the proxy");
    }

    #[tokio::test]
    async fn reset_aborts_existing_and_new_connections() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        assert!(round_trip(&mut s, LONG).await.expect("io").is_some());
        p.set(Fault::Reset);
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(LONG, s.read(&mut buf)).await.expect("the reset is seen at once");
        assert!(matches!(r, Err(_) | Ok(0)), "existing connection ended: {r:?}");
        let mut fresh = TcpStream::connect(p.addr()).await.expect("accepted, then reset");
        let r = round_trip(&mut fresh, LONG).await;
        assert!(matches!(r, Err(_) | Ok(None)), "{r:?}");
        p.set(Fault::Pass);
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        assert!(round_trip(&mut s, LONG).await.expect("io").is_some(), "healed");
    }

    #[tokio::test]
    async fn refuse_closes_the_listener_and_healing_opens_it_on_the_same_port() {
        let p = proxy().await;
        let addr = p.addr();
        p.set(Fault::Refuse);
        let deadline = Instant::now() + LONG;
        loop {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                // Until the listener is closed a connection may still land in its backlog (and then be reset).
                _ => {
                    assert!(Instant::now() < deadline, "the listener was never closed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        p.set(Fault::Pass);
        let deadline = Instant::now() + LONG;
        let mut s = loop {
            if let Ok(s) = TcpStream::connect(addr).await {
                break s;
            }
            assert!(Instant::now() < deadline, "the listener did not come back");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(round_trip(&mut s, LONG).await.expect("io").is_some());
    }

    #[tokio::test]
    async fn latency_delays_each_round_trip() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        p.set(Fault::Latency { delay_ms: 150, jitter_ms: 20 });
        let start = Instant::now();
        assert!(round_trip(&mut s, LONG).await.expect("io").is_some());
        // Both directions are delayed: at least two delays, whatever the machine's speed.
        assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    }

    /// A message sent right behind another is delayed once, not behind the other's delay too. (When each chunk's
    /// delay was slept between reads, the second echo came back three delays after its send, not two.)
    #[tokio::test]
    async fn latency_is_a_delay_line_not_a_queue() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        let delay = Duration::from_millis(400);
        p.set(Fault::Latency { delay_ms: 400, jitter_ms: 0 });
        s.write_all(b"first\n").await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second_sent = Instant::now();
        s.write_all(b"second\n").await.expect("write");
        let mut back = vec![0u8; 13];
        tokio::time::timeout(LONG, s.read_exact(&mut back)).await.expect("in time").expect("io");
        assert_eq!(back, b"first\nsecond\n");
        let second_rtt = second_sent.elapsed();
        assert!(second_rtt >= 2 * delay, "both ways delayed: {second_rtt:?}");
        // A queue would take 3 delays minus the 50 ms gap (1,150 ms); a delay line 2 (800 ms), plus scheduling.
        assert!(second_rtt < 2 * delay + Duration::from_millis(250), "queued behind the first: {second_rtt:?}");
    }

    #[tokio::test]
    async fn bandwidth_limits_throughput() {
        let p = proxy().await;
        let mut s = TcpStream::connect(p.addr()).await.expect("connect");
        p.set(Fault::Bandwidth { bytes_per_sec: 20_000 });
        let data = vec![7u8; 10_000];
        let start = Instant::now();
        s.write_all(&data).await.expect("write");
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(LONG, s.read_exact(&mut back)).await.expect("in time").expect("io");
        // 10 kB at 20 kB/s is at least half a second one way.
        assert!(start.elapsed() >= Duration::from_millis(450), "{:?}", start.elapsed());
        assert_eq!(back, data);
    }

    #[test]
    fn faults_read_from_scenario_files() {
        let f: Fault = toml::from_str("mode = \"blackhole\"\ndirection = \"to-server\"").expect("toml");
        assert_eq!(f, Fault::Blackhole { direction: Direction::ToServer });
        assert_eq!(f.label(), "blackhole-to-server");
        let f: Fault = toml::from_str("mode = \"latency\"\ndelay_ms = 200").expect("toml");
        assert_eq!(f, Fault::Latency { delay_ms: 200, jitter_ms: 0 });
        assert!(toml::from_str::<Fault>("mode = \"drop-everything\"").is_err());
    }
}
