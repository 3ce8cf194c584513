//! [`Bus`] over Apache Kafka through rdkafka (librdkafka): the only crate that names rdkafka.
//!
//! Thin on purpose: it maps the trait's few operations onto librdkafka and turns its errors into
//! [`TransportError`]s. Choices that matter for correctness are made here and documented: `acks=all` with the
//! producer mode each process needs ([`ProducerMode`]), refusals that no retry can fix told apart from transient
//! errors ([`TransportError::Refused`]), manual partition choice (the wire contract's murmur2),
//! manual offset commits (at-least-once: commit after handling).
//!
//! The Kafka side of the runtimes' failure handling (the rest is in `mesh_node`'s runtime module), each detailed on the
//! item that does it:
//!
//! One librdkafka state does not end by itself: after broker restarts a partition has been seen waiting on its offset
//! validation for good, so a [`KafkaReader`] that sees one waiting 10 s in its statistics restarts that fetch with a
//! seek to its position ([`STUCK_VALIDATION`], docs/chaos.md).
//!
//! A reader's fetch waits at most 500 ms at the broker by default (`KafkaConfig::fetch_wait`, the `kafka_fetch_wait`
//! setting): librdkafka keeps one fetch in flight per broker, and a partition that becomes readable while it waits (at
//! start, or one after another after a broker restart) is first asked about when it returns. At 5 s agents went seconds
//! without reading their own membership and a broker restart took up to 10 s to recover from (2–3 s at 500 ms); the
//! price is 500 idle agents' fetches, which keep the broker too busy for all of them to start (docs/bench.md). A reader
//! looks up the offsets of partitions that start at the beginning or the end in one request before it assigns them, and
//! asks again for those it could not look up rather than leaving "the end" to be resolved later, after records it
//! should read (`resolve_logical_offsets`, `crates/mesh/tests/it/reader.rs`).
//!
//! The topology manager, which only counts messages into windows seconds long, asks for 64 KB or 20 ms per fetch
//! (`KafkaConfig::fetch_min_bytes`; agents and the consensus manager take each record at once): reading every messages
//! partition record by record it made 559 of the broker's 2,500 requests a second at 1,000 msg/s (now about 50), and
//! its CPU fell fourfold.
//!
//! Agents' producers keep one request in flight per connection and are not idempotent ([`ProducerMode`], with the
//! measurements). The price is that a send retried after a lost acknowledgement is in the log twice, which
//! at-least-once readers already absorb (a task, response, proposal or vote is recognised by its id, a join or leave of
//! the same state changes nothing); the managers, whose few records must appear once (windows, verdicts, decisions),
//! stay idempotent.
//!
//! `ensure_topics` (managers only; agents wait for the topics and hold no admin client) returns once every partition of
//! every topic has a leader in the metadata and answers an offsets request (a leader in the metadata is not yet a
//! partition served: for a moment the broker still answers `NotLeaderForPartition`); at most 10 s, then an error the
//! runtime retries.
#![warn(missing_docs)]

pub mod baseline;
mod producer;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_transport::{
    Assignment, Bus, InRecord, OutRecord, PartitionLag, Position, Reader, StartAt, TopicSpec, TransportError,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// How to reach the brokers.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    /// Client id, shown in broker logs (for example `mesh-agent-sales`).
    pub client_id: String,
    /// How long a send may be retried inside librdkafka before it is reported as failed.
    pub send_timeout: Duration,
    /// How long a reader's fetch may wait at the broker for data (`fetch.wait.max.ms`): also the longest a
    /// partition that becomes readable while a fetch waits goes unread (one fetch in flight per broker).
    pub fetch_wait: Duration,
    /// How long the producer holds records to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// Bytes a reader's fetch waits for (`fetch.min.bytes`, up to `fetch_wait`). 1 answers each record at once:
    /// what an agent, which answers tasks, needs. A reader that only counts (the topology manager reading every
    /// messages partition) sets more, so the broker answers it a few times a fetch wait instead of once per record:
    /// at 1,000 msg/s it made 559 of the broker's 2,500 requests a second.
    pub fetch_min_bytes: u32,
    /// How the producer keeps a retried record from reordering or doubling.
    pub producer: ProducerMode,
    /// Extra librdkafka properties, applied last (for tuning and tests).
    pub extra: Vec<(String, String)>,
    /// How often readers measure their lag behind each partition's end (librdkafka's statistics, which cost a JSON
    /// document per interval); `None` measures nothing. Set when the process serves metrics.
    pub lag_interval: Option<Duration>,
}

/// How a producer keeps order through retries, and what a retry may cost.
///
/// librdkafka's idempotent producer lets the broker drop a retried record it already has, but it lets no more than
/// five records per partition be in flight, and while they are, records whose `linger.ms` has passed make its
/// broker thread wake up at once, again and again, until the answer comes: a busy loop for the whole round trip.
/// Measured with `mesh bench --agents 4` on two cores: at 5,000 msg/s the agents spent 1.45 cores (86 % of their
/// samples in that loop), the broker starved, and p99 was 2.8 s against plain Kafka's 14.6 ms. With one request in
/// flight per connection and no idempotence, records wait for the request ahead of them in librdkafka's queue, where
/// they fill the next batch, and the thread sleeps: the agents spent 0.75 of a core, p99 was 15.6 ms, and at
/// 10,000 msg/s 16.6 ms against plain Kafka's 9.1 ms (docs/bench.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerMode {
    /// The broker drops a retried record it already has (`enable.idempotence`): for a writer whose records must
    /// appear once in the log (the topology manager's changelog windows, the consensus manager's decisions and
    /// markers) and are few, so the busy loop never starts.
    Idempotent,
    /// One produce request in flight per connection, not idempotent: order is kept (a retry goes before anything
    /// after it), and a retry after a lost acknowledgement can write a record twice. For agents, whose readers
    /// already drop a re-delivered record by its id (delivery is at least once anyway) and whose record rate is high.
    OneRequestInFlight,
}

impl KafkaConfig {
    /// Defaults for `brokers`.
    pub fn new(brokers: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_id: client_id.into(),
            send_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(500),
            linger: Duration::from_millis(2),
            fetch_min_bytes: 1,
            producer: ProducerMode::Idempotent,
            extra: Vec::new(),
            lag_interval: None,
        }
    }

    fn base(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            .set("socket.keepalive.enable", "true")
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "2000")
            // librdkafka's default periodic metadata refresh (5 min): every client asks for the metadata of every topic
            // it knows, the messages topic's hundreds of partitions included, so 1,000 clients refreshing every 10 s
            // cost the broker a quarter of a core while idle. Leaders are learnt on errors and at creation anyway
            // (`ensure_topics` waits for them).
            // Never let a metadata request create a topic (a broker with `auto.create.topics.enable` would make it
            // with its default partition count): the managers and `mesh up` create topics as the mesh needs them.
            .set("allow.auto.create.topics", "false");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// The producer's properties: acknowledged by every in-sync replica, batched for `linger`, ordered as
    /// `producer` says; the extra properties still last.
    fn producer_config(&self) -> ClientConfig {
        let mut pc = self.base();
        match self.producer {
            ProducerMode::Idempotent => pc.set("enable.idempotence", "true"),
            ProducerMode::OneRequestInFlight => {
                pc.set("enable.idempotence", "false").set("max.in.flight.requests.per.connection", "1")
            }
        };
        pc.set("acks", "all")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("message.timeout.ms", self.send_timeout.as_millis().to_string());
        for (k, v) in &self.extra {
            pc.set(k, v);
        }
        pc
    }
}

/// A connection to Kafka: one producer shared by clones, an admin client made only when a topic must be created
/// (agents never need one: each librdkafka client is threads and connections, and 500 agent processes pay for
/// them), and a consumer per reader.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    producer: producer::Producer,
    admin: std::sync::OnceLock<AdminClient<DefaultClientContext>>,
}

/// A failed publish as the runtime must treat it: [`TransportError::Refused`] when the broker or client refuses
/// this record for good (retrying the same bytes to the same partition cannot succeed), otherwise transient.
fn publish_error(operation: String, e: &KafkaError) -> TransportError {
    match e.rdkafka_error_code() {
        Some(code) if refused_for_good(code) => TransportError::Refused { operation, detail: e.to_string() },
        _ => TransportError::failed(operation, e),
    }
}

/// Error codes that a publish of the same record cannot outlive. Timeouts, leadership changes, a full queue and an
/// unknown topic (a topic being created) are absent on purpose: they pass.
fn refused_for_good(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::InvalidArgument
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::UnsupportedForMessageFormat
    )
}

fn unreachable(what: &KafkaConfig, e: &KafkaError) -> TransportError {
    TransportError::Unreachable { what: format!("kafka {}", what.brokers), detail: e.to_string() }
}

impl KafkaBus {
    /// Creates the clients; librdkafka connects lazily, so this succeeds even while the broker is down.
    pub fn new(config: KafkaConfig) -> Result<Self, TransportError> {
        let producer_config = config.producer_config();
        let producer = producer::Producer::new(&producer_config).map_err(|e| unreachable(&config, &e))?;
        Ok(Self { inner: Arc::new(Inner { config, producer, admin: std::sync::OnceLock::new() }) })
    }

    /// Waits (up to 10 s) until the metadata shows every partition of every topic in `specs` with a leader, and each
    /// partition answers a request for its offsets.
    ///
    /// A topic is created before the broker's metadata says who leads its partitions. A reader assigned to a
    /// partition nobody leads yet can wait for librdkafka's next periodic metadata refresh (10 s) and read nothing
    /// from it meanwhile (under the topology manager's earlier marker design, the likely cause, not reproduced, of
    /// one start-up stall of 8 s seen in CI). And a leader in the metadata is not yet a
    /// partition served: for a moment after that the broker still answers `NotLeaderForPartition` to an offsets
    /// request (a fresh-clone CI run failed on it in a test that read a partition's end right after creating its
    /// topic; readers started then left their start to librdkafka, see `resolve_logical_offsets`). Costs one
    /// metadata request and one watermark request per partition when all is served.
    async fn wait_until_served(&self, specs: &[TopicSpec]) -> Result<(), TransportError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let inner = Arc::clone(&self.inner);
            let wanted: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
            let missing = tokio::task::spawn_blocking(move || {
                let client = inner.producer.client();
                let md =
                    client.fetch_metadata(None, Duration::from_secs(5)).map_err(|e| unreachable(&inner.config, &e))?;
                // Any partition count will do: a topic made elsewhere may differ from the spec, and the runtimes ask
                // the broker how many partitions there are.
                let mut led = Vec::new();
                for name in wanted {
                    let topic = md.topics().iter().find(|t| t.name() == name).filter(|t| {
                        t.error().is_none()
                            && !t.partitions().is_empty()
                            && t.partitions().iter().all(|p| p.error().is_none() && p.leader() >= 0)
                    });
                    match topic {
                        Some(t) => led.extend(t.partitions().iter().map(|p| (name.clone(), p.id()))),
                        None => return Ok(Some(format!("topic {name} has partitions without a leader"))),
                    }
                }
                for (name, partition) in led {
                    if let Err(e) = client.fetch_watermarks(&name, partition, Duration::from_secs(2)) {
                        return Ok(Some(format!("partition {name}/{partition} is not served yet ({e})")));
                    }
                }
                Ok::<_, TransportError>(None)
            })
            .await
            .map_err(|e| TransportError::failed("reading metadata", e))??;
            let Some(what) = missing else { return Ok(()) };
            if Instant::now() >= deadline {
                return Err(TransportError::Unreachable {
                    what: format!("kafka {}", self.inner.config.brokers),
                    detail: format!("{what} after 10 s"),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The configured brokers.
    pub fn brokers(&self) -> &str {
        &self.inner.config.brokers
    }

    /// The admin client, created on first use: only processes that create topics (or delete records) need one.
    fn admin(&self) -> Result<&AdminClient<DefaultClientContext>, TransportError> {
        if let Some(admin) = self.inner.admin.get() {
            return Ok(admin);
        }
        let admin: AdminClient<DefaultClientContext> =
            self.inner.config.base().create().map_err(|e| unreachable(&self.inner.config, &e))?;
        Ok(self.inner.admin.get_or_init(|| admin))
    }

    /// Deletes a partition's records before `offset`, as retention would (Kafka's DeleteRecords): for an operator who
    /// must drop records for good, and for tests of what recovery does when the log no longer holds them.
    pub async fn delete_before(&self, topic: &str, partition: i32, offset: i64) -> Result<(), TransportError> {
        let admin = self.admin()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| TransportError::failed("deleting records", e))?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let done = tokio::time::timeout(Duration::from_secs(15), admin.delete_records(&tpl, &opts))
            .await
            .map_err(|_| TransportError::failed("deleting records", "the broker did not answer within 15 s"))?
            .map_err(|e| TransportError::failed("deleting records", e))?;
        for e in done.elements() {
            e.error().map_err(|e| TransportError::failed(format!("deleting records of {topic}/{partition}"), e))?;
        }
        Ok(())
    }

    /// The offset the next record appended to a partition will get (its high watermark): how far "everything so far"
    /// reaches, for tools and tests that read a topic to its end.
    pub async fn end_offset(&self, topic: &str, partition: i32) -> Result<i64, TransportError> {
        let inner = Arc::clone(&self.inner);
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_watermarks(&topic, partition, Duration::from_secs(5))
                .map(|(_, high)| high)
                .map_err(|e| unreachable(&inner.config, &e))
        })
        .await
        .map_err(|e| TransportError::failed("reading watermarks", e))?
    }
}

/// Where one partition's copies live, as the cluster's metadata says: which broker leads it, which hold a replica,
/// and which of those are in sync (an acknowledgement with `acks=all` waits for these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    /// Partition number.
    pub partition: i32,
    /// Broker id (`node.id`) of the leader; -1 while the partition has none.
    pub leader: i32,
    /// Broker ids holding a replica.
    pub replicas: Vec<i32>,
    /// Broker ids in sync with the leader.
    pub in_sync: Vec<i32>,
}

impl KafkaBus {
    /// The replicas of every partition of `topic`, fresh from the cluster (not a cached view): for tests and the
    /// chaos harness, which kill a partition's leader and check replication.
    pub async fn replicas(&self, topic: &str) -> Result<Vec<PartitionReplicas>, TransportError> {
        let name = topic.to_owned();
        self.with_metadata(Some(topic), move |md| {
            partitions_in(md, &name)?;
            let t = md.topics().iter().find(|t| t.name() == name).map(rdkafka::metadata::MetadataTopic::partitions);
            Ok(t.unwrap_or_default()
                .iter()
                .map(|p| PartitionReplicas {
                    partition: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    in_sync: p.isr().to_vec(),
                })
                .collect())
        })
        .await
    }

    /// Fetches the cluster's metadata (of `topic` only, or of every topic) on a blocking thread, fresh, and hands
    /// it to `read`.
    async fn with_metadata<T: Send + 'static>(
        &self,
        topic: Option<&str>,
        read: impl FnOnce(&rdkafka::metadata::Metadata) -> Result<T, TransportError> + Send + 'static,
    ) -> Result<T, TransportError> {
        let inner = Arc::clone(&self.inner);
        let topic = topic.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            let md = inner
                .producer
                .client()
                .fetch_metadata(topic.as_deref(), Duration::from_secs(5))
                .map_err(|e| unreachable(&inner.config, &e))?;
            read(&md)
        })
        .await
        .map_err(|e| TransportError::failed("reading metadata", e))?
    }
}

impl Bus for KafkaBus {
    type Reader = KafkaReader;

    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), TransportError> {
        // Create only what is missing: existing topics need no admin rights (and the embedded broker, whose topics
        // the supervisor creates, does not answer CreateTopics).
        let existing: Vec<String> = self
            .with_metadata(None, |md| {
                Ok(md.topics().iter().filter(|t| t.error().is_none()).map(|t| t.name().to_owned()).collect())
            })
            .await?;
        let all = specs;
        let specs: Vec<&TopicSpec> = specs.iter().filter(|s| !existing.contains(&s.name)).collect();
        if specs.is_empty() {
            return self.wait_until_served(all).await;
        }
        let retention: Vec<Option<String>> =
            specs.iter().map(|s| s.retention.map(|r| r.as_millis().to_string())).collect();
        let topics: Vec<NewTopic<'_>> = specs
            .iter()
            .zip(&retention)
            .map(|(s, retention)| {
                // Replicas and `min.insync.replicas` are the cluster's defaults (`default.replication.factor`,
                // `min.insync.replicas`): one on a single broker, what its operator chose on a cluster (three and
                // two on the fixtures' three nodes). With `acks=all` that is what an acknowledgement then means.
                #[expect(clippy::cast_possible_wrap, reason = "partition counts are small")]
                let mut t = NewTopic::new(&s.name, s.partitions as i32, TopicReplication::Fixed(-1));
                if s.compacted {
                    t = t.set("cleanup.policy", "compact");
                }
                if let Some(r) = retention {
                    t = t.set("retention.ms", r);
                }
                t
            })
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let admin = self.admin()?;
        let results = tokio::time::timeout(Duration::from_secs(15), admin.create_topics(&topics, &opts))
            .await
            .map_err(|_| TransportError::failed("creating topics", "the broker did not answer within 15 s"))?
            .map_err(|e| unreachable(&self.inner.config, &e))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(TransportError::failed(format!("creating topic {topic}"), code)),
            }
        }
        self.wait_until_served(all).await
    }

    async fn partition_counts(&self, topics: &[String]) -> Result<Vec<u32>, TransportError> {
        let topics = topics.to_vec();
        self.with_metadata(None, move |md| topics.iter().map(|topic| partitions_in(md, topic)).collect()).await
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, TransportError> {
        let name = topic.to_owned();
        self.with_metadata(Some(topic), move |md| partitions_in(md, &name)).await
    }

    fn enqueue(&self, record: OutRecord) -> mesh_transport::Delivery {
        // Handed to librdkafka now, so records enqueued in turn keep their order in the partition; only a full local
        // queue (100,000 records) makes the first attempt wait, inside the future.
        let stamp = record.sent_at_us.map(u64::to_be_bytes);
        let first = self.inner.producer.send(&outgoing(&record, stamp.as_ref()));
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let what = || format!("publishing to {}", record.topic);
            let mut sent = first;
            loop {
                match sent {
                    Ok(ack) => {
                        return match ack.await {
                            Ok(Ok(offset)) => Ok(offset),
                            Ok(Err(e)) => Err(publish_error(what(), &e)),
                            Err(_) => Err(TransportError::failed(
                                what(),
                                "the producer was dropped before the acknowledgement",
                            )),
                        };
                    }
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        sent = inner.producer.send(&outgoing(&record, stamp.as_ref()));
                    }
                    Err(e) => return Err(publish_error(what(), &e)),
                }
            }
        })
    }

    async fn end_offset(&self, topic: &str, partition: i32) -> Result<i64, TransportError> {
        KafkaBus::end_offset(self, topic, partition).await
    }

    async fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.producer.flush(timeout))
            .await
            .map_err(|e| TransportError::failed("flushing", e))?
            .map_err(|e| TransportError::failed("flushing", e))
    }

    async fn reader(&self, group: &str, assignments: Vec<Assignment>) -> Result<KafkaReader, TransportError> {
        let mut cc = self.inner.config.base();
        cc.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // A fetch returns as soon as data arrives; this only bounds how often an idle reader asks again, which
            // with hundreds of agent processes is most of the broker's load (`mesh bench`). The embedded broker
            // holds empty fetches for the whole wait, so `mesh up` shortens it there.
            .set("fetch.wait.max.ms", self.inner.config.fetch_wait.as_millis().max(1).to_string())
            .set("fetch.min.bytes", self.inner.config.fetch_min_bytes.max(1).to_string())
            // A reader that fell behind and filled its prefetch queue asks again after 10 ms, not librdkafka's 1 s.
            .set("fetch.queue.backoff.ms", "10")
            // Prefetch bounded to a few MB (librdkafka's default allows 64 MB and 100,000 records per partition):
            // the topology manager reads hundreds of partitions, and memory per process is a target.
            .set("queued.max.messages.kbytes", "4096")
            .set("queued.min.messages", "1000");
        // Statistics always run: besides the lag they carry each partition's fetch state, which the reader watches
        // for a fetch stuck in offset validation (`FetchStates::stuck`).
        let every = self.inner.config.lag_interval.unwrap_or(FETCH_STATE_INTERVAL);
        cc.set("statistics.interval.ms", every.as_millis().max(1).to_string());
        for (k, v) in &self.inner.config.extra {
            cc.set(k, v);
        }
        let lags = Arc::new(std::sync::Mutex::new(Vec::new()));
        let fetches = FetchStates::default();
        let consumer: LagConsumer = cc
            .create_with_context(LagContext {
                lags: Arc::clone(&lags),
                fetches: fetches.clone(),
                measures_lag: self.inner.config.lag_interval.is_some(),
            })
            .map_err(|e| unreachable(&self.inner.config, &e))?;
        // Committed offsets are looked up here, so one reader can mix "committed or beginning" and "committed or
        // end" partitions (a consumer has a single reset policy); then the logical starts become offsets. Both are
        // blocking round trips, made on one blocking thread.
        let config = self.inner.config.clone();
        let (consumer, tpl) = tokio::task::spawn_blocking(move || {
            let tpl = start_positions(&consumer, &assignments, &config)?;
            let tpl = resolve_logical_offsets(&consumer, tpl);
            Ok::<_, TransportError>((consumer, tpl))
        })
        .await
        .map_err(|e| TransportError::failed("looking up start offsets", e))??;
        consumer.assign(&tpl).map_err(|e| TransportError::failed("assigning partitions", e))?;
        Ok(KafkaReader { consumer: Arc::new(consumer), brokers: self.inner.config.brokers.clone(), lags, fetches })
    }
}

/// Where each assigned partition starts: its committed offset where it asks for one and has one, else the logical
/// start it names.
fn start_positions(
    consumer: &LagConsumer,
    assignments: &[Assignment],
    config: &KafkaConfig,
) -> Result<TopicPartitionList, TransportError> {
    let mut wanted = TopicPartitionList::new();
    for a in assignments.iter().filter(|a| matches!(a.start, StartAt::CommittedOrBeginning | StartAt::CommittedOrEnd)) {
        wanted.add_partition(&a.topic, a.partition);
    }
    let committed = if wanted.count() == 0 {
        TopicPartitionList::new()
    } else {
        consumer.committed_offsets(wanted, Duration::from_secs(10)).map_err(|e| unreachable(config, &e))?
    };
    let mut tpl = TopicPartitionList::new();
    for a in assignments {
        let stored = || committed.find_partition(&a.topic, a.partition).map(|p| p.offset());
        let offset = match (a.start, stored()) {
            (StartAt::Beginning, _) => Offset::Beginning,
            (StartAt::End, _) => Offset::End,
            (StartAt::Offset(n), _) => Offset::Offset(n),
            (StartAt::CommittedOrBeginning | StartAt::CommittedOrEnd, Some(Offset::Offset(n))) => Offset::Offset(n),
            (StartAt::CommittedOrBeginning, _) => Offset::Beginning,
            (StartAt::CommittedOrEnd, _) => Offset::End,
        };
        tpl.add_partition_offset(&a.topic, a.partition, offset)
            .map_err(|e| TransportError::failed("assigning partitions", e))?;
    }
    check_replayable(consumer, assignments, config)?;
    Ok(tpl)
}

/// Refuses to start a partition at an exact offset (a snapshot's replay position) that the log no longer holds
/// (deleted by retention) or never held (the topic was recreated): librdkafka would move it to the beginning
/// (`auto.offset.reset`) without a word, and the rebuilt state would silently differ from a crash-free run. The
/// refusal is permanent ([`TransportError::Refused`]): the runtime exits saying which snapshot cannot be replayed.
fn check_replayable(
    consumer: &LagConsumer,
    assignments: &[Assignment],
    config: &KafkaConfig,
) -> Result<(), TransportError> {
    let exact: Vec<(&str, i32, i64)> = assignments
        .iter()
        .filter_map(|a| match a.start {
            StartAt::Offset(n) => Some((a.topic.as_str(), a.partition, n)),
            _ => None,
        })
        .collect();
    if exact.is_empty() {
        return Ok(());
    }
    // Timestamps -2 and -1 ask for each partition's first and next offsets, one round trip per broker each.
    let bound = |at: Offset| -> Result<TopicPartitionList, TransportError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, _) in &exact {
            tpl.add_partition_offset(topic, *partition, at)
                .map_err(|e| TransportError::failed("looking up the log's bounds", e))?;
        }
        consumer.offsets_for_times(tpl, Duration::from_secs(10)).map_err(|e| unreachable(config, &e))
    };
    let (first, next) = (bound(Offset::Beginning)?, bound(Offset::End)?);
    for (topic, partition, wanted) in exact {
        let at = |l: &TopicPartitionList| match l.find_partition(topic, partition).map(|e| e.offset()) {
            Some(Offset::Offset(n)) => Some(n),
            _ => None,
        };
        let (Some(low), Some(high)) = (at(&first), at(&next)) else { continue };
        if wanted < low || wanted > high {
            return Err(TransportError::Refused {
                operation: format!("replaying {topic}/{partition} from offset {wanted}"),
                detail: format!(
                    "the log holds offsets {low} to {high}: records the snapshot needs were deleted (retention) or \
                     the topic was recreated, so replaying it would not rebuild the state exactly; delete the \
                     snapshot in Redis to rebuild from what the log holds, or restore the topic"
                ),
            });
        }
    }
    Ok(())
}

/// `tpl` with every partition that starts at the beginning or the end given its offset, looked up in one ListOffsets
/// round trip per broker (timestamps -2 and -1 mean earliest and latest), and looked up again, with a short backoff
/// for up to [`START_LOOKUP_PATIENCE`], for the partitions whose lookup failed.
///
/// Left to librdkafka, each such partition resolves its start on its own, and librdkafka keeps one fetch in flight
/// per broker: a partition resolved after the first fetch left is first asked about when that fetch returns. On a
/// real broker a reader with one partition at a known offset and one at the beginning read the second after two
/// fetch waits, every time (24 of 24: an agent read its own membership only after 1 s at the 500 ms default).
/// Resolved first, it is read at once 7 times in 8, and after one fetch wait at worst: librdkafka starts each
/// partition's fetching with an operation of its own, so the broker thread can still send a fetch between two of
/// them.
///
/// Why the retries: a lookup made just after the topics were created fails for partitions whose leader the broker
/// has not settled yet (`NotLeaderForPartition`). Left logical, such a partition started at "the end" was resolved
/// a second or more later, and the records written meanwhile were never read: an agent missed a decision written
/// 1 s after it joined (and read the roster 1.4 s late), in one test run of 19 under load. Only once the patience is
/// spent do the partitions keep their logical offsets, with a warning, and librdkafka resolves them as before.
fn resolve_logical_offsets(consumer: &LagConsumer, mut tpl: TopicPartitionList) -> TopicPartitionList {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let mut logical = TopicPartitionList::new();
        for e in tpl.elements() {
            if matches!(e.offset(), Offset::Beginning | Offset::End) {
                // A list built from valid elements accepts them again.
                let _ = logical.add_partition_offset(e.topic(), e.partition(), e.offset());
            }
        }
        if logical.count() == 0 {
            return tpl;
        }
        let failure = match consumer.offsets_for_times(logical, Duration::from_secs(5)) {
            Ok(resolved) => {
                let mut failure = None;
                for e in resolved.elements() {
                    match (e.offset(), e.error()) {
                        (Offset::Offset(n), Ok(())) => {
                            let _ = tpl.set_partition_offset(e.topic(), e.partition(), Offset::Offset(n));
                        }
                        (offset, result) => {
                            failure = Some(format!("{}/{}: {offset:?} {result:?}", e.topic(), e.partition()));
                        }
                    }
                }
                failure
            }
            Err(e) => Some(e.to_string()),
        };
        let Some(failure) = failure else { return tpl };
        if started.elapsed() >= START_LOOKUP_PATIENCE {
            tracing::warn!(error = %failure, "start offsets not looked up; librdkafka resolves them per partition, so a \
                partition starting at its end may skip records written until then");
            return tpl;
        }
        tracing::debug!(error = %failure, "start offsets not looked up yet; asking again");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// How long a reader asks again for the start offsets of partitions whose lookup failed (see
/// [`resolve_logical_offsets`]).
const START_LOOKUP_PATIENCE: Duration = Duration::from_secs(10);

/// Partitions of `topic` in a metadata answer: an error if the broker does not know it (yet) or has none for it.
fn partitions_in(md: &rdkafka::metadata::Metadata, topic: &str) -> Result<u32, TransportError> {
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| TransportError::failed("reading metadata", format!("topic {topic} is missing")))?;
    if let Some(err) = t.error() {
        return Err(TransportError::failed(format!("reading metadata of {topic}"), format!("{err:?}")));
    }
    u32::try_from(t.partitions().len())
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| TransportError::failed("reading metadata", format!("topic {topic} has no partitions")))
}

fn outgoing<'a>(record: &'a OutRecord, stamp: Option<&'a [u8; 8]>) -> producer::Outgoing<'a> {
    producer::Outgoing {
        topic: &record.topic,
        partition: record.partition,
        key: &record.key,
        payload: &record.payload,
        headers: [
            stamp.map(|s| (SENT_AT_HEADER, &s[..])),
            record.auth.as_deref().map(|tag| (AUTH_HEADER, tag.as_bytes())),
        ],
    }
}

/// The Kafka header carrying [`OutRecord::sent_at_us`], 8 bytes big-endian.
pub const SENT_AT_HEADER: &str = "mesh-sent-us";

/// The Kafka header carrying [`OutRecord::auth`] (`mesh-auth`, see mesh-proto's `auth`).
pub const AUTH_HEADER: &str = "mesh-auth";

fn auth(m: &impl Message) -> Option<Vec<u8>> {
    m.headers()?.iter().find(|h| h.key == AUTH_HEADER)?.value.map(<[u8]>::to_vec)
}

fn sent_at_us(m: &impl Message) -> Option<u64> {
    m.headers()?.iter().find(|h| h.key == SENT_AT_HEADER)?.value?.try_into().ok().map(u64::from_be_bytes)
}

fn positions_list(positions: &[Position]) -> Result<TopicPartitionList, TransportError> {
    let mut tpl = TopicPartitionList::new();
    for p in positions {
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.next_offset))
            .map_err(|e| TransportError::failed("committing offsets", e))?;
    }
    Ok(tpl)
}

/// A reader's consumer, with its lag measured.
type LagConsumer = StreamConsumer<LagContext>;

/// Keeps the consumer lag librdkafka's statistics report for each partition the reader fetches, and where its fetch
/// of each stands.
struct LagContext {
    lags: Arc<std::sync::Mutex<Vec<PartitionLag>>>,
    fetches: FetchStates,
    /// Whether the lag is measured ([`KafkaConfig::lag_interval`]); if not, the statistics only watch for a stuck
    /// validation.
    measures_lag: bool,
}

impl rdkafka::ClientContext for LagContext {
    /// Reads only what is watched from librdkafka's statistics: the fetch of each partition the reader fetches.
    /// rust-rdkafka's default decodes the whole document into owned maps, and a reader's document lists every
    /// partition of every topic it knows: 500 messages partitions in `mesh bench --agents 500`. A reader that does
    /// not measure its lag decodes nothing unless some partition is waiting on its validation, which a search of the
    /// bytes tells: decoding was a sixth of an idle agent's CPU even reading only the watched fields (docs/bench.md).
    fn stats_raw(&self, statistics: &[u8]) {
        if !self.measures_lag && memchr::memmem::find(statistics, VALIDATING.as_bytes()).is_none() {
            self.fetches.update(Vec::new(), Instant::now());
            return;
        }
        match serde_json::from_slice::<RawStatistics<'_>>(statistics) {
            Ok(raw) => self.observe(raw),
            Err(e) => tracing::warn!(error = %e, "librdkafka's statistics could not be read"),
        }
    }
}

impl LagContext {
    fn observe(&self, statistics: RawStatistics<'_>) {
        let mut lags: Vec<PartitionLag> = Vec::new();
        let mut fetches: Vec<FetchState> = Vec::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Partition -1 is librdkafka's aggregate, and a partition the reader does not fetch is in state
                // `none`: neither is watched.
                let Ok(partition) = partition.parse::<i32>() else { continue };
                if partition < 0 || p.fetch_state == "none" {
                    continue;
                }
                fetches.push(FetchState {
                    topic: topic.to_string(),
                    partition,
                    state: p.fetch_state.to_string(),
                    leader: p.leader,
                    next_offset: p.next_offset,
                    app_offset: p.app_offset,
                    high_offset: p.hi_offset,
                });
                // librdkafka's `consumer_lag` counts from the committed offset, which the managers never commit: the
                // lag here counts from the reader's position, the offset after the last record handed to it (or the
                // next to fetch, before the first), to the partition's end.
                let position = if p.app_offset >= 0 { p.app_offset } else { p.next_offset };
                if p.fetch_state == "active" && position >= 0 && p.hi_offset >= 0 {
                    let records = (p.hi_offset - position).max(0);
                    lags.push(PartitionLag { topic: topic.to_string(), partition, records });
                }
            }
        }
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        if let Ok(mut kept) = self.lags.lock() {
            *kept = lags;
        }
        fetches.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        self.fetches.update(fetches, Instant::now());
    }
}

/// The part of librdkafka's statistics a reader watches (STATISTICS.md in librdkafka); every other field is skipped
/// unread, and names are borrowed from the document.
#[derive(serde::Deserialize)]
struct RawStatistics<'a> {
    #[serde(borrow, default)]
    topics: HashMap<Cow<'a, str>, RawTopic<'a>>,
}

#[derive(serde::Deserialize)]
struct RawTopic<'a> {
    #[serde(borrow, default)]
    partitions: HashMap<Cow<'a, str>, RawPartition<'a>>,
}

#[derive(serde::Deserialize)]
struct RawPartition<'a> {
    #[serde(borrow)]
    fetch_state: Cow<'a, str>,
    leader: i32,
    next_offset: i64,
    app_offset: i64,
    hi_offset: i64,
}

/// Where librdkafka's fetch of one partition stood at its last statistics: what tells a reader whose fetch is stuck
/// (waiting on an offset or leader-epoch lookup, or on a leader) from one that is merely slow to consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchState {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// librdkafka's fetch state: `active` while it fetches; `offset-query`, `offset-wait`, `validate-epoch-wait`
    /// and the like while it cannot.
    pub state: String,
    /// The broker it fetches from (-1: none known).
    pub leader: i32,
    /// The next offset it will fetch.
    pub next_offset: i64,
    /// The offset after the last record handed to the reader (negative before the first).
    pub app_offset: i64,
    /// The partition's end as the broker last told it.
    pub high_offset: i64,
}

/// librdkafka's fetch state of a partition waiting on its offset validation (KIP-320): after a leader epoch changes,
/// the position is checked against the leader's log before fetching resumes.
const VALIDATING: &str = "validate-epoch-wait";

/// How long a partition may wait on its offset validation before the reader restarts its fetch. Validation is one
/// round trip once the leader answers, and librdkafka retries a failed one every 500 ms. After broker restarts, a
/// partition has been seen waiting for good while the reader read every other one (docs/chaos.md); only a new fetch
/// start, a seek, started its validation again.
pub const STUCK_VALIDATION: Duration = Duration::from_secs(10);

/// How often a reader that reports no lag reads its fetch states: a stuck validation is seen within this of
/// [`STUCK_VALIDATION`], and a reader that serves metrics measures its lag as often (`mesh`'s `LAG_INTERVAL`).
/// Each report costs librdkafka a JSON document listing every partition of every topic the client knows, fetched or
/// not: 50 idle agents on a 500-partition messages topic took 0.103 of a core with a report every 2 s and 0.039
/// with none (release build, docs/bench.md), most of it librdkafka writing the document.
const FETCH_STATE_INTERVAL: Duration = Duration::from_secs(5);

/// A partition whose fetch is restarted, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Restart {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Each partition's time since it began waiting on its offset validation, updated with the states of `now`: the
/// partitions that have waited longer than `bound` come back with the offset to restart at (the reader's position,
/// or librdkafka's next offset before the first record), and their wait starts over.
fn stuck_validations(
    waiting: &mut HashMap<(String, i32), Instant>,
    states: &[FetchState],
    now: Instant,
    bound: Duration,
) -> Vec<Restart> {
    waiting.retain(|(topic, partition), _| {
        states.iter().any(|s| &s.topic == topic && s.partition == *partition && s.state == VALIDATING)
    });
    let mut restarts = Vec::new();
    for s in states.iter().filter(|s| s.state == VALIDATING) {
        let since = waiting.entry((s.topic.clone(), s.partition)).or_insert(now);
        let offset = if s.app_offset >= 0 { s.app_offset } else { s.next_offset };
        if now.duration_since(*since) >= bound && offset >= 0 {
            *since = now;
            restarts.push(Restart { topic: s.topic.clone(), partition: s.partition, offset });
        }
    }
    restarts
}

impl std::fmt::Display for FetchState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}: fetch {}, leader {}, next offset {}, end {}",
            self.topic, self.partition, self.state, self.leader, self.next_offset, self.high_offset
        )
    }
}

/// A reader's fetch states, readable while the reader itself is busy reading. They are refreshed with librdkafka's
/// statistics, so only when [`KafkaConfig::lag_interval`] is set, and only while the reader is polled (statistics
/// are delivered on its queue): statistics that stop coming say the reader is no longer polled.
#[derive(Debug, Clone, Default)]
pub struct FetchStates(Arc<std::sync::Mutex<FetchStatesInner>>);

#[derive(Debug, Default)]
struct FetchStatesInner {
    at: Option<Instant>,
    states: Vec<FetchState>,
    waiting: HashMap<(String, i32), Instant>,
    restarts: Vec<Restart>,
    restarted: u64,
}

impl FetchStates {
    fn update(&self, states: Vec<FetchState>, now: Instant) {
        if let Ok(mut inner) = self.0.lock() {
            let FetchStatesInner { at, states: kept, waiting, restarts, .. } = &mut *inner;
            restarts.extend(stuck_validations(waiting, &states, now, STUCK_VALIDATION));
            *at = Some(now);
            *kept = states;
        }
    }

    /// The fetches to restart, taken (and counted).
    fn take_restarts(&self) -> Vec<Restart> {
        let Ok(mut inner) = self.0.lock() else { return Vec::new() };
        let taken = std::mem::take(&mut inner.restarts);
        inner.restarted += taken.len() as u64;
        taken
    }

    /// How many fetches stuck in offset validation the reader restarted ([`STUCK_VALIDATION`]).
    pub fn restarted(&self) -> u64 {
        self.0.lock().map_or(0, |inner| inner.restarted)
    }

    /// The state of `topic`/`partition` at the last statistics, if it had one, and how long ago those came.
    pub fn of(&self, topic: &str, partition: i32) -> Option<(FetchState, Duration)> {
        let inner = self.0.lock().ok()?;
        let at = inner.at?;
        let state = inner.states.iter().find(|s| s.topic == topic && s.partition == partition)?;
        Some((state.clone(), at.elapsed()))
    }
}

impl rdkafka::consumer::ConsumerContext for LagContext {}

/// Reads assigned partitions; see [`Bus::reader`].
pub struct KafkaReader {
    consumer: Arc<LagConsumer>,
    brokers: String,
    lags: Arc<std::sync::Mutex<Vec<PartitionLag>>>,
    fetches: FetchStates,
}

impl KafkaReader {
    /// Its fetch states, as a handle that outlives a borrow of the reader.
    pub fn fetch_states(&self) -> FetchStates {
        self.fetches.clone()
    }

    /// Restarts, by a seek to where the reader stands, the fetch of every partition that waited on its offset
    /// validation longer than [`STUCK_VALIDATION`]. A seek starts a new validation; records already read are not
    /// read again, none after them is skipped.
    fn restart_stuck_fetches(&self) {
        for r in self.fetches.take_restarts() {
            tracing::warn!(
                topic = %r.topic,
                partition = r.partition,
                offset = r.offset,
                "a partition waited on librdkafka's offset validation for {} s; restarting its fetch",
                STUCK_VALIDATION.as_secs()
            );
            if let Err(e) = self.consumer.seek(&r.topic, r.partition, Offset::Offset(r.offset), Duration::ZERO) {
                tracing::warn!(topic = %r.topic, partition = r.partition, error = %e, "restarting a fetch failed");
            }
        }
    }
}

impl Reader for KafkaReader {
    async fn next(&mut self) -> Result<InRecord, TransportError> {
        // A reader waiting for records still looks at its fetch states once per interval.
        let received = loop {
            self.restart_stuck_fetches();
            if let Ok(received) = tokio::time::timeout(FETCH_STATE_INTERVAL, self.consumer.recv()).await {
                break received;
            }
        };
        match received {
            Ok(m) => Ok(InRecord {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                timestamp_ms: m.timestamp().to_millis(),
                sent_at_us: sent_at_us(&m),
                auth: auth(&m),
            }),
            Err(e) => {
                Err(TransportError::Unreachable { what: format!("kafka {}", self.brokers), detail: e.to_string() })
            }
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), TransportError> {
        let tpl = positions_list(positions)?;
        let consumer = Arc::clone(&self.consumer);
        tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| TransportError::failed("committing offsets", e))?
            .map_err(|e| TransportError::failed("committing offsets", e))
    }

    fn commit_async(&mut self, positions: &[Position]) -> Result<(), TransportError> {
        let tpl = positions_list(positions)?;
        self.consumer.commit(&tpl, CommitMode::Async).map_err(|e| TransportError::failed("committing offsets", e))
    }

    fn lag(&self) -> Vec<PartitionLag> {
        self.lags.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A Kafka-protocol broker hosted in this process (librdkafka's mock cluster), serving other processes over TCP on
/// 127.0.0.1. It is the zero-setup default of `mesh up`: not durable (it lives and dies with the supervisor), no log
/// compaction, and not a substitute for Apache Kafka in tests.
pub struct EmbeddedKafka {
    cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster and creates `topics` on it (the mock cluster's own call, so this does not depend
    /// on its support for the admin API).
    pub fn start(topics: &[TopicSpec]) -> Result<Self, TransportError> {
        let cluster = rdkafka::mocking::MockCluster::new(1)
            .map_err(|e| TransportError::failed("starting the embedded kafka broker", e))?;
        let embedded = Self { cluster };
        embedded.create_topics(topics)?;
        Ok(embedded)
    }

    /// Creates `topics` on the running broker, which does not answer the admin API's CreateTopics: how a second
    /// deployment or a plain-Kafka baseline gets its topics on it (`mesh bench --infra embedded`).
    pub fn create_topics(&self, topics: &[TopicSpec]) -> Result<(), TransportError> {
        for t in topics {
            #[expect(clippy::cast_possible_wrap, reason = "partition counts are small")]
            self.cluster
                .create_topic(&t.name, t.partitions as i32, 1)
                .map_err(|e| TransportError::failed(format!("creating topic {} on the embedded broker", t.name), e))?;
        }
        Ok(())
    }

    /// `host:port` of the broker.
    pub fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer's statistics as librdkafka writes them (STATISTICS.md), cut to two topics: fields not read are
    /// skipped, whatever their shape.
    const STATISTICS: &str = r#"{"name":"rdkafka#consumer-2","type":"consumer","ts":5,"time":1,"msg_cnt":0,
        "brokers":{"127.0.0.1:9092/1":{"name":"127.0.0.1:9092/1","nodeid":1,"rtt":{"min":100,"max":900,"p99":800},
            "toppars":{"messages-0":{"topic":"messages","partition":0}}}},
        "topics":{
            "messages":{"topic":"messages","age":4000,"metadata_age":3000,"batchsize":{"min":0,"max":0},
                "partitions":{
                    "0":{"partition":0,"broker":1,"leader":1,"desired":true,"unknown":false,"fetch_state":"active",
                        "next_offset":12,"app_offset":10,"hi_offset":15,"consumer_lag":5,"ls_offset":15},
                    "1":{"partition":1,"broker":-1,"leader":1,"desired":false,"unknown":false,"fetch_state":"none",
                        "next_offset":0,"app_offset":-1001,"hi_offset":-1001,"consumer_lag":-1},
                    "-1":{"partition":-1,"broker":-1,"leader":-1,"desired":false,"fetch_state":"none",
                        "next_offset":0,"app_offset":-1001,"hi_offset":-1001}}},
            "membership":{"topic":"membership","partitions":{
                "0":{"partition":0,"leader":1,"fetch_state":"validate-epoch-wait","next_offset":7,"app_offset":-1001,
                    "hi_offset":9}}}},
        "cgrp":{"state":"up","rebalance_cnt":0}}"#;

    #[test]
    fn statistics_are_read_for_the_partitions_fetched_only() {
        use rdkafka::ClientContext as _;
        let context = LagContext { lags: Arc::default(), fetches: FetchStates::default(), measures_lag: true };
        context.stats_raw(STATISTICS.as_bytes());
        let lags = context.lags.lock().map(|l| l.clone()).unwrap_or_default();
        assert_eq!(lags, vec![PartitionLag { topic: "messages".into(), partition: 0, records: 5 }]);
        let (active, _) = context.fetches.of("messages", 0).expect("a partition fetched is watched");
        assert_eq!(
            (active.state.as_str(), active.next_offset, active.app_offset, active.high_offset),
            ("active", 12, 10, 15)
        );
        assert!(context.fetches.of("messages", 1).is_none(), "a partition not fetched is left out");
        assert!(context.fetches.of("messages", -1).is_none(), "the aggregate is left out");
        let (validating, _) = context.fetches.of("membership", 0).expect("a validating partition is watched");
        assert_eq!(validating.state, VALIDATING);
        // A document that cannot be read leaves the last states as they were.
        context.stats_raw(b"{\"topics\": 3}");
        assert!(context.fetches.of("messages", 0).is_some());
    }

    #[test]
    fn a_reader_that_does_not_measure_lag_decodes_only_while_a_partition_validates() {
        use rdkafka::ClientContext as _;
        let context = LagContext { lags: Arc::default(), fetches: FetchStates::default(), measures_lag: false };
        context.stats_raw(STATISTICS.as_bytes());
        let (validating, _) = context.fetches.of("membership", 0).expect("a validating partition is seen");
        assert_eq!(validating.state, VALIDATING);
        let calm = STATISTICS.replace(VALIDATING, "active");
        context.stats_raw(calm.as_bytes());
        assert!(context.fetches.of("messages", 0).is_none(), "nothing is decoded when no partition validates");
        assert!(context.fetches.of("membership", 0).is_none(), "and the wait is over");
    }

    fn state(partition: i32, state: &str, app_offset: i64, next_offset: i64) -> FetchState {
        FetchState {
            topic: "t".into(),
            partition,
            state: state.into(),
            leader: 1,
            next_offset,
            app_offset,
            high_offset: 100,
        }
    }

    #[test]
    fn a_validation_waiting_past_the_bound_restarts_at_the_readers_position_and_its_wait_starts_over() {
        let bound = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut waiting = HashMap::new();
        let states = [state(0, VALIDATING, 42, 40), state(1, "active", 7, 7)];
        assert!(stuck_validations(&mut waiting, &states, t0, bound).is_empty());
        assert!(stuck_validations(&mut waiting, &states, t0 + Duration::from_secs(9), bound).is_empty());
        let restarts = stuck_validations(&mut waiting, &states, t0 + bound, bound);
        assert_eq!(restarts, vec![Restart { topic: "t".into(), partition: 0, offset: 42 }]);
        assert!(stuck_validations(&mut waiting, &states, t0 + bound + Duration::from_secs(2), bound).is_empty());
        assert_eq!(stuck_validations(&mut waiting, &states, t0 + bound * 2, bound).len(), 1);
    }

    #[test]
    fn a_partition_that_stopped_waiting_starts_its_wait_from_scratch() {
        let bound = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut waiting = HashMap::new();
        assert!(stuck_validations(&mut waiting, &[state(0, VALIDATING, 5, 5)], t0, bound).is_empty());
        assert!(
            stuck_validations(&mut waiting, &[state(0, "active", 9, 9)], t0 + Duration::from_secs(6), bound).is_empty()
        );
        let later = t0 + Duration::from_secs(12);
        assert!(stuck_validations(&mut waiting, &[state(0, VALIDATING, 9, 9)], later, bound).is_empty());
    }

    #[test]
    fn before_the_first_record_the_fetch_restarts_at_librdkafkas_next_offset_and_never_at_no_offset() {
        let bound = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut waiting = HashMap::new();
        let states = [state(0, VALIDATING, -1001, 17), state(1, VALIDATING, -1001, -1001)];
        stuck_validations(&mut waiting, &states, t0, bound);
        let restarts = stuck_validations(&mut waiting, &states, t0 + bound, bound);
        assert_eq!(restarts, vec![Restart { topic: "t".into(), partition: 0, offset: 17 }]);
    }
}
