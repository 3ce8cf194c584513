//! What every runtime needs around its state machine: retries with backoff, publishing envelopes,
//! dead-lettering, topic layout, shutdown and readiness.
//!
//! Failure handling, shared by the three runtimes (the Kafka side is in `mesh_kafka`'s module docs, and each rule is
//! detailed on the item that implements it):
//!
//! Forged records are refused at the one place records are read: [`Publisher::open`] decodes a record and, when the
//! process holds the deployment secret, checks its `mesh-auth` tag against the writer its content says it must have
//! (`mesh_proto::auth::Principal::writer_of`: a vote's voter, a task's sender, the topology manager for a `member`). So
//! no state machine sees an unauthenticated record: the managers dead-letter it with the reason, the agents ignore and
//! count it. Every record written goes through [`Publisher`], which tags it (`Letters::signed`). Why HMAC and not
//! signatures: `mesh_proto::auth`.
//!
//! Kafka and Redis errors are events, not crashes: every publish, read and store call is retried with exponential
//! backoff and jitter ([`retry`], 100 ms to 5 s), and librdkafka reconnects by itself. Failures come in bursts (every
//! record in flight fails when the broker times out), so their warnings pass a per-process gate, one a second counting
//! the ones folded into it ([`WarnGate`]). Reader errors are different: librdkafka queues one per failed connection
//! attempt and hands them over after the broker is back, so a runtime logs them (at most once a second) and reads on at
//! once instead of backing off on each ([`ReadErrors`]).
//!
//! No runtime loop waits for a send: [`Publisher::start_send`] hands the record to the producer at once (so records
//! keep their order per partition) and the loop awaits the acknowledgements among its other events, with a bound on how
//! many are in flight. An agent commits an input only once its answer is acknowledged; the managers snapshot only when
//! nothing is in flight, and never so often that encoding snapshots takes more than a tenth of their time
//! (`crate::snapshot_pacer`). Every runtime writes to Redis from a task of its own (`crate::latest_writer`): an agent
//! its stats, so a stalled Redis never holds up messages; the topology and consensus managers their stats and
//! snapshots, so a hung Redis no longer stops windows closing or deaths being declared. Only a consensus decision is
//! stored synchronously (`crate::consensus`). Nothing a runtime does waits on its supervisor either: the binary sends
//! its sd_notify datagrams non-blocking.
//!
//! A shutdown never aborts an attempt under way, only the waiting between attempts; a runtime interrupted that way
//! exits at once (cleanly, exit 0) without a final snapshot, because its state may be ahead of what it managed to
//! publish: the last snapshot and the log rebuild it exactly ([`NodeError::Interrupted`]). Offsets (agents) and
//! snapshot positions (managers) only ever cover records whose effects were published.
//!
//! Undecodable or misplaced records, and tasks no response can name, go to `agentmesh.deadletter` with the reason,
//! their origin and a bounded copy of their bytes (64 KiB at most, with the size and SHA-256 of the whole: a letter
//! always fits the broker's limit), and processing continues. Retrying is for errors that can pass: a publish the
//! broker or client refuses for good (record too large, invalid topic, not authorized, no such partition:
//! `TransportError::Refused`, told apart in `mesh_kafka`) is not retried; the publisher dead-letters the refused record
//! itself (source offset -1) and the send ends with the refusal, so an agent finishes the input it answered and commits
//! past it (`sends_refused`). A manager's records are small and its own, so a refusal there is a misconfiguration: it
//! is logged as a warning, and a refused changelog window stops the topology manager with an error. A letter refused
//! too is logged and skipped. Before, one 600 KB binary record on the membership topic, dead-lettered as 1.2 MB of hex,
//! was retried forever by every agent that read it.
//!
//! Recovery relies on the log still holding what a snapshot's positions point at: a reader asked to start at an exact
//! offset the partition no longer holds (retention deleted it, or the topic was recreated) refuses to start, naming the
//! partition, its bounds and the fix (`check_replayable` in `mesh_kafka`), where librdkafka would have moved it to the
//! earliest offset without a word and the rebuilt graph or decisions would have differed from a crash-free run. Topics
//! keep the broker's default retention (7 days; heartbeats 1 hour, never replayed: [`topic_specs`]), far beyond the
//! snapshot intervals (seconds), so only a deployment restored from an old snapshot meets the refusal
//! (`crates/mesh/tests/it/recovery.rs`).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use mesh_proto::auth::{Credentials, Principal, Signer, Verifier};
use mesh_proto::records::{DeadLetterBody, Record, SourcePosition};
use mesh_proto::{Envelope, Header, TopicKind, TopicNames, encode, partition_for};
use mesh_transport::clock::{now_ms, now_us};
use mesh_transport::{Bus, InRecord, OutRecord, TopicSpec, TransportError};
use tokio::sync::watch;

use crate::config::MeshConfig;

/// Why a runtime stopped with an error. Transport trouble is retried inside the runtime and only surfaces here when
/// it happens during shutdown or at a point where going on would lose data.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Kafka or Redis failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A snapshot in Redis could not be used.
    #[error("snapshot at {key} is unusable: {detail}")]
    Snapshot {
        /// The Redis key.
        key: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// A state machine refused what this runtime itself produced: a bug. The process exits, and its successor
    /// recovers from the snapshot and the log.
    #[error("invariant broken: {detail}")]
    Invariant {
        /// What was refused and why.
        detail: String,
    },
    /// Shutdown was requested while an operation was waiting for Kafka or Redis to come back. The runtime stops
    /// at once, without a final snapshot: its state may be ahead of what it managed to publish, and the last
    /// snapshot plus the log rebuild it exactly. The binary treats this as a clean stop.
    #[error("stopped while waiting for kafka or redis")]
    Interrupted,
    /// This process's credentials cannot sign as what it runs as (a manager given only an agent key).
    #[error(transparent)]
    Credentials(#[from] mesh_proto::auth::AuthError),
    /// The metrics endpoint could not listen where it was asked to.
    #[error("serving metrics failed: {detail}")]
    Metrics {
        /// The address and why.
        detail: String,
    },
}

/// Asks a runtime to stop: the binary flips it on SIGTERM/SIGINT.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown signal and the switch that triggers it.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Whether shutdown was requested.
    pub fn requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown is requested (or the switch is dropped).
    pub async fn wait(&mut self) {
        while !*self.0.borrow_and_update() {
            if self.0.changed().await.is_err() {
                return;
            }
        }
    }
}

/// How long a runtime's graceful stop may take, all its steps together (finishing sends, committing, the last
/// snapshot, flushing). A stop is asked for when the broker or Redis may be the very thing that is gone, and every
/// one of those steps waits on them: without one budget for all, a stop under a partition waited for ever (an agent
/// blocked in its final commit ignored SIGTERM for minutes). Nothing is lost by giving up: offsets not committed are
/// re-delivered and deduplicated, and a snapshot not written is rebuilt from the last one and the log. It is below
/// the supervisor's default `stop_timeout` (10 s), so a process ends its own stop before it is killed.
pub const STOP_BUDGET: Duration = Duration::from_secs(6);

/// The deadline of one graceful stop, shared by its steps so that together they stay within [`STOP_BUDGET`].
pub(crate) struct StopDeadline(tokio::time::Instant);

impl StopDeadline {
    /// Starts the budget now (when the stop begins).
    pub(crate) fn start() -> Self {
        Self(tokio::time::Instant::now() + STOP_BUDGET)
    }

    /// Runs `step` for at most `cap`, and never past the deadline: `None` if it did not finish in time. The cap
    /// keeps one slow step from using the time of the steps after it.
    pub(crate) async fn within<F: std::future::Future>(&self, cap: Duration, step: F) -> Option<F::Output> {
        let by = self.0.min(tokio::time::Instant::now() + cap);
        tokio::time::timeout_at(by, step).await.ok()
    }

    /// What is left of the budget.
    pub(crate) fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(tokio::time::Instant::now())
    }
}

/// Told when the runtime is connected and serving, and what it is doing (sd_notify `READY=1` / `STATUS=` in the
/// binary; a no-op in tests).
pub trait Readiness: Send + Sync + 'static {
    /// Connected to Kafka and Redis and serving.
    fn ready(&self);
    /// A one-line status.
    fn status(&self, line: &str);
    /// The dispatcher loop is alive (sd_notify `WATCHDOG=1`); called from each runtime's periodic timer, so a hung
    /// loop stops the pings and the supervisor restarts the process.
    fn watchdog(&self) {}
}

impl Readiness for () {
    fn ready(&self) {}
    fn status(&self, _line: &str) {}
}

/// What a runtime does with an error from its reader. librdkafka queues one consumer error per failed connection
/// attempt, and hands them over later, in order, after the broker is back: they are reports about the past, and the
/// consumer reconnects by itself. Sleeping on each (as the runtimes once did, 500 ms apiece) turned a 14 s broker
/// outage into 12 s more of draining stale errors (found by `cargo xtask chaos`, scenario restart-kafka). So an
/// error costs a 10 ms pause (a bound on a pathological error loop, not a backoff), and the warnings are
/// rate-limited to one per second with a count of those suppressed.
pub(crate) struct ReadErrors {
    what: &'static str,
    last_logged: Option<std::time::Instant>,
    suppressed: u64,
}

impl ReadErrors {
    /// For reads described as `what` ("reading inputs").
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, last_logged: None, suppressed: 0 }
    }

    /// Records one error: logs it (or counts it) and pauses briefly.
    pub(crate) async fn on_error(&mut self, error: &TransportError) {
        let now = std::time::Instant::now();
        if self.last_logged.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
            tracing::warn!(error = %error, suppressed = self.suppressed, "{} failed; the client reconnects by itself", self.what);
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Failures come in bursts (every record in flight fails at once when the broker times out), so their warnings pass
/// this gate: one per second per process, saying how many were folded into it; the rest are debug lines. A warning
/// per failed send made 500 agents write 1.3 GB of logs through their supervisor in one overloaded run, which kept
/// the starved machine starved.
pub(crate) struct WarnGate {
    last_ms: AtomicU64,
    folded: AtomicU64,
}

impl WarnGate {
    const fn new() -> Self {
        Self { last_ms: AtomicU64::new(0), folded: AtomicU64::new(0) }
    }

    /// `Some(failures folded since the last warning)` when this failure should be a warning.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000
            && self.last_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            Some(self.folded.swap(0, Ordering::Relaxed))
        } else {
            self.folded.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// The gate of every retried operation's failure warnings in this process.
pub(crate) static FAILURE_WARNINGS: WarnGate = WarnGate::new();

/// Retries `op` with exponential backoff and jitter (100 ms up to 5 s) until it succeeds, logging every failure: a
/// dead broker is waited for and reported, never a reason to crash. A shutdown request ends the waiting between
/// attempts (`NodeError::Interrupted`), never an attempt under way, so work in flight at SIGTERM still completes.
pub async fn retry<T, F, Fut>(what: &str, shutdown: &Shutdown, mut op: F) -> Result<T, NodeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TransportError>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        let error = match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_permanent() => return Err(e.into()),
            Err(e) => e,
        };
        if shutdown.requested() {
            return Err(NodeError::Interrupted);
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        match FAILURE_WARNINGS.admit() {
            Some(folded) => tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, folded,
                "{what} failed, retrying (folded: other failures since the last warning)"),
            None => tracing::debug!(error = %error, retry_in_ms = delay.as_millis() as u64, "{what} failed, retrying"),
        }
        let mut wait = shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = wait.wait() => return Err(NodeError::Interrupted),
        }
    }
}

/// Topic specs of the whole mesh under `config` (also used to pre-create topics on the embedded broker).
pub fn topic_specs(config: &MeshConfig) -> Vec<TopicSpec> {
    TopicKind::ALL
        .into_iter()
        .map(|kind| {
            let (partitions, compacted, retention) = match kind {
                TopicKind::Messages => (config.messages_partitions, false, None),
                TopicKind::Proposals | TopicKind::Votes => (config.consensus_partitions, false, None),
                TopicKind::Membership | TopicKind::Decisions => (1, true, None),
                TopicKind::Heartbeats => (1, false, Some(Duration::from_secs(3600))),
                TopicKind::Topology | TopicKind::Windows | TopicKind::Deadletter => (1, false, None),
            };
            TopicSpec { name: config.topics.name(kind), partitions, compacted, retention }
        })
        .collect()
}

/// Makes sure every topic exists, waiting for the broker as long as it takes.
pub(crate) async fn ensure_topics<B: Bus>(bus: &B, config: &MeshConfig, shutdown: &Shutdown) -> Result<(), NodeError> {
    let specs = topic_specs(config);
    retry("creating topics", shutdown, || bus.ensure_topics(&specs)).await
}

/// A send in flight: resolves to the record's offset once acknowledged (see [`Publisher::start_send`]).
pub(crate) type Sending = std::pin::Pin<Box<dyn Future<Output = Result<i64, NodeError>> + Send + 'static>>;

/// Publishes envelopes, choosing partitions by the wire contract's murmur2 of the key.
#[derive(Clone)]
pub(crate) struct Publisher<B> {
    pub(crate) bus: B,
    pub(crate) topics: TopicNames,
    partitions: std::collections::BTreeMap<TopicKind, u32>,
    letters: Arc<Letters>,
}

/// Why a record read from the bus is not used: the reason its dead letter gives.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unusable {
    /// Not a record of this topic (see [`mesh_proto::decode`]).
    #[error(transparent)]
    Decode(#[from] mesh_proto::DecodeError),
    /// Not written by the writer it must have (see [`mesh_proto::auth`]).
    #[error(transparent)]
    Auth(#[from] mesh_proto::auth::AuthError),
}

/// What every send needs to dead-letter its own record if the broker refuses it for good: shared, so that a send
/// costs one reference count, not copies.
struct Letters {
    /// The writer's name (`topology`, `agent-sales`): a letter's `consumer`, and the start of record ids.
    consumer: String,
    /// The dead-letter topic's full name.
    topic: String,
    seq: std::sync::atomic::AtomicU64,
    /// What this writer tags its records with, when the mesh is authenticated.
    signer: Option<Signer>,
    /// What it checks the writers of records it reads with.
    verifier: Verifier,
}

impl Letters {
    /// A fresh record id, unique per process run: `{consumer}-{start ms}-{seq}`.
    fn next_id(&self) -> String {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{}-{n}", self.consumer, process_start_ms())
    }

    /// `record`, tagged with this writer's `mesh-auth` header when it holds credentials.
    fn signed(&self, mut record: OutRecord) -> OutRecord {
        record.auth = self.signer.as_ref().map(|s| s.header(&record.topic, &record.key, &record.payload));
        record
    }

    /// The letter for a record that could not be used (`offset` -1: a record of ours the broker refused).
    fn letter(&self, reason: &str, source: SourcePosition, key: Option<&[u8]>, payload: Option<&[u8]>) -> OutRecord {
        let body = DeadLetterBody::new(reason, source, self.consumer.clone(), key, payload);
        let key = body.key.clone().unwrap_or_default();
        let envelope =
            Envelope { header: Header { id: self.next_id(), ts: now_ms() }, record: Record::DeadLetter(body) };
        self.signed(OutRecord {
            topic: self.topic.clone(),
            partition: 0,
            key: key.into_bytes(),
            payload: encode(&envelope),
            sent_at_us: Some(now_us()),
            auth: None,
        })
    }

    /// After the broker refused `record` for good: dead-letters it (bounded, so the letter fits), or logs it when
    /// that is refused too or `record` was itself a letter. Returns the refusal, for the caller to skip the input.
    async fn refused<B: Bus>(
        &self,
        bus: &B,
        record: &OutRecord,
        error: TransportError,
        shutdown: &Shutdown,
    ) -> NodeError {
        if record.topic == self.topic {
            tracing::error!(error = %error, "a dead letter was refused by the broker: the record it carried is skipped");
            return error.into();
        }
        let letter = self.letter(
            &format!("refused by the broker when {} published it: {error}", self.consumer),
            SourcePosition { topic: record.topic.clone(), partition: record.partition, offset: NOT_WRITTEN },
            Some(&record.key),
            Some(&record.payload),
        );
        tracing::warn!(topic = %record.topic, bytes = record.payload.len(), error = %error,
            "a record was refused by the broker for good: dead-lettering it instead of retrying");
        match retry("publishing a dead letter", shutdown, || bus.enqueue(letter.clone())).await {
            Ok(_) => {}
            Err(NodeError::Interrupted) => return NodeError::Interrupted,
            Err(e) => tracing::error!(error = %e, "its dead letter was refused too: the record is skipped"),
        }
        error.into()
    }
}

impl<B: Bus> Publisher<B> {
    /// Learns the partition count of every topic (waiting for the broker as long as it takes). `writer` is who its
    /// records are tagged as; `credentials` what they are tagged with and what records read are checked with.
    pub(crate) async fn connect(
        bus: B,
        topics: TopicNames,
        consumer: &str,
        writer: Principal,
        credentials: &Credentials,
        shutdown: &Shutdown,
    ) -> Result<Self, NodeError> {
        let signer = credentials.signer(writer)?;
        let names: Vec<String> = TopicKind::ALL.into_iter().map(|kind| topics.name(kind)).collect();
        let what = format!(
            "reading the partitions of the {}.* topics (the managers or `mesh up` create them)",
            topics.prefix()
        );
        let counts = retry(&what, shutdown, || bus.partition_counts(&names)).await?;
        let partitions = TopicKind::ALL.into_iter().zip(counts).collect();
        let letters = Letters {
            consumer: consumer.to_owned(),
            topic: topics.name(TopicKind::Deadletter),
            seq: std::sync::atomic::AtomicU64::new(0),
            signer,
            verifier: credentials.verifier(),
        };
        Ok(Self { bus, topics, partitions, letters: Arc::new(letters) })
    }

    /// Partition count of a topic.
    pub(crate) fn partitions(&self, kind: TopicKind) -> u32 {
        self.partitions.get(&kind).copied().unwrap_or(1)
    }

    /// A fresh record id, unique per process run: `{consumer}-{start ms}-{seq}`.
    pub(crate) fn next_id(&self) -> String {
        self.letters.next_id()
    }

    /// Decodes a record read from the bus as a record of `kind`'s topic, and checks that its writer is the one its
    /// content says it must have (when this process holds the deployment secret): the one way records are read,
    /// so nothing unauthenticated reaches a state machine.
    pub(crate) fn open(&self, record: &InRecord, kind: Option<TopicKind>) -> Result<Envelope, Unusable> {
        let envelope = mesh_proto::decode(record.payload.as_deref(), kind)?;
        self.letters.verifier.check(
            &envelope.record,
            &record.topic,
            record.key.as_deref().unwrap_or_default(),
            record.payload.as_deref().unwrap_or_default(),
            record.auth.as_deref(),
        )?;
        Ok(envelope)
    }

    /// Wraps `record` in an envelope with a fresh id and the current time.
    pub(crate) fn envelope(&self, record: Record) -> Envelope {
        Envelope { header: Header { id: self.next_id(), ts: now_ms() }, record }
    }

    /// Publishes to the partition the key hashes to; retried until acknowledged.
    pub(crate) async fn send(
        &self,
        kind: TopicKind,
        key: &str,
        envelope: &Envelope,
        shutdown: &Shutdown,
    ) -> Result<i64, NodeError> {
        let partition = partition_for(key.as_bytes(), self.partitions(kind));
        self.send_to(kind, partition, key, envelope, shutdown).await
    }

    /// Publishes to an explicit partition; retried until acknowledged.
    pub(crate) async fn send_to(
        &self,
        kind: TopicKind,
        partition: i32,
        key: &str,
        envelope: &Envelope,
        shutdown: &Shutdown,
    ) -> Result<i64, NodeError> {
        self.start_send_to(kind, partition, key, envelope, None, shutdown).await
    }

    /// Hands a record to the bus now (so records started in turn keep their order in a partition) and returns its
    /// acknowledgement, retried with backoff like [`Self::send`]: what a runtime keeps in flight instead of waiting.
    pub(crate) fn start_send(&self, kind: TopicKind, key: &str, envelope: &Envelope, shutdown: &Shutdown) -> Sending {
        let partition = partition_for(key.as_bytes(), self.partitions(kind));
        self.start_send_to(kind, partition, key, envelope, None, shutdown)
    }

    /// [`Self::start_send`] to an explicit partition, stamped with `sent_at_us` (the intended send time, for
    /// latency measured without coordinated omission) or now.
    pub(crate) fn start_send_to(
        &self,
        kind: TopicKind,
        partition: i32,
        key: &str,
        envelope: &Envelope,
        sent_at_us: Option<u64>,
        shutdown: &Shutdown,
    ) -> Sending {
        let record = self.letters.signed(OutRecord {
            topic: self.topics.name(kind),
            partition,
            key: key.as_bytes().to_vec(),
            payload: encode(envelope),
            sent_at_us: Some(sent_at_us.unwrap_or_else(now_us)),
            auth: None,
        });
        let first = self.bus.enqueue(record.clone());
        let bus = self.bus.clone();
        let letters = Arc::clone(&self.letters);
        let shutdown = shutdown.clone();
        let kind = envelope.record.kind();
        Box::pin(async move {
            let outcome = match first.await {
                Ok(offset) => return Ok(offset),
                Err(e) if e.is_permanent() => Err(NodeError::Transport(e)),
                Err(error) => {
                    if shutdown.requested() {
                        return Err(NodeError::Interrupted);
                    }
                    let what = format!("publishing {kind} to {}", record.topic);
                    match FAILURE_WARNINGS.admit() {
                        Some(folded) => tracing::warn!(error = %error, folded,
                            "{what} failed, retrying (folded: other failures since the last warning)"),
                        None => tracing::debug!(error = %error, "{what} failed, retrying"),
                    }
                    retry(&what, &shutdown, || bus.enqueue(record.clone())).await
                }
            };
            match outcome {
                Err(NodeError::Transport(e)) if e.is_permanent() => {
                    Err(letters.refused(&bus, &record, e, &shutdown).await)
                }
                other => other,
            }
        })
    }

    /// [`Self::start_send`] without retries beyond librdkafka's own (`message.timeout.ms`): for a record that a
    /// newer one replaces, such as a heartbeat. A retried heartbeat waited out a backoff of up to 5 s after a broker
    /// restart, and its agent was declared dead meanwhile; a failed one ends here and the next tick sends afresh.
    pub(crate) fn start_send_once(&self, kind: TopicKind, key: &str, envelope: &Envelope) -> Sending {
        let record = self.letters.signed(OutRecord {
            topic: self.topics.name(kind),
            partition: partition_for(key.as_bytes(), self.partitions(kind)),
            key: key.as_bytes().to_vec(),
            payload: encode(envelope),
            sent_at_us: Some(now_us()),
            auth: None,
        });
        let delivery = self.bus.enqueue(record);
        Box::pin(async move { delivery.await.map_err(NodeError::from) })
    }

    /// Sends an unusable record to the dead-letter topic with the reason, its origin and a bounded copy of its
    /// bytes (a letter always fits the broker's limit, whatever the record's size); in flight. A letter the broker
    /// refuses anyway (for example, not authorized) is logged and resolves as [`NOT_WRITTEN`]: the record is
    /// skipped, so that no input can stall its reader.
    pub(crate) fn start_dead_letter(&self, record: &InRecord, reason: &str, shutdown: &Shutdown) -> Sending {
        let (topic, partition, offset) = (record.topic.clone(), record.partition, record.offset);
        tracing::warn!(%topic, partition, offset, reason, "dead-lettering an unusable record");
        let letter = self.letters.letter(
            reason,
            SourcePosition { topic, partition, offset },
            record.key.as_deref(),
            record.payload.as_deref(),
        );
        let first = self.bus.enqueue(letter.clone());
        let bus = self.bus.clone();
        let shutdown = shutdown.clone();
        Box::pin(async move {
            let outcome = match first.await {
                Ok(offset) => Ok(offset),
                Err(e) if e.is_permanent() => Err(NodeError::Transport(e)),
                Err(_) => retry("publishing a dead letter", &shutdown, || bus.enqueue(letter.clone())).await,
            };
            match outcome {
                Err(NodeError::Transport(e)) if e.is_permanent() => {
                    tracing::error!(error = %e, "a dead letter was refused by the broker: the record it carried is skipped");
                    Ok(NOT_WRITTEN)
                }
                other => other,
            }
        })
    }
}

/// The offset a [`Sending`] resolves to when its record was deliberately not written (a refused dead letter).
pub(crate) const NOT_WRITTEN: i64 = -1;

fn process_start_ms() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(now_ms)
}

/// The key of a record as text (keys of our records are ids).
pub(crate) fn key_text(record: &InRecord) -> Option<&str> {
    record.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_is_one_warning_that_counts_the_rest() {
        let gate = WarnGate::new();
        assert_eq!(gate.admit(), Some(0), "the first failure is a warning");
        for _ in 0..5 {
            assert_eq!(gate.admit(), None, "failures within a second are folded");
        }
        // A second later the next failure is a warning again and says how many were folded.
        gate.last_ms.store(now_ms().saturating_sub(1_000), Ordering::Relaxed);
        assert_eq!(gate.admit(), Some(5));
        assert_eq!(gate.admit(), None);
    }
}
