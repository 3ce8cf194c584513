//! The seams the service runtimes are written against: a log-structured [`Bus`] (Kafka in production, memory in
//! the one-process demo) and a [`SnapshotStore`] (Redis in production).
//!
//! The traits are deliberately small: what the runtimes need of Kafka is to create topics, learn partition counts,
//! append a record to a chosen partition and wait for the acknowledgement, and read chosen partitions from chosen
//! positions, committing how far they got. Anything richer stays inside the adapters.
#![warn(missing_docs)]

pub mod clock;
pub mod file_store;

use std::future::Future;
use std::time::Duration;

/// Why a bus or store operation failed. Every variant but [`TransportError::Refused`] is transient from the
/// runtime's point of view: it retries with backoff and reports, it never unwinds.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The broker or store could not be reached or did not answer in time.
    #[error("{what} is unreachable: {detail}")]
    Unreachable {
        /// What could not be reached (for example `kafka 127.0.0.1:9092`).
        what: String,
        /// The client's own message.
        detail: String,
    },
    /// The broker or store answered with an error.
    #[error("{operation} failed: {detail}")]
    Failed {
        /// What was attempted.
        operation: String,
        /// The client's own message.
        detail: String,
    },
    /// The broker refused this one record for good (too large, invalid topic, not authorized, no such partition):
    /// sending it again cannot succeed, so retrying it would stall whoever waits for it (a consumer whose offset
    /// waits for the acknowledgement) forever. The caller dead-letters or skips the record instead.
    #[error("{operation} was refused: {detail}")]
    Refused {
        /// What was attempted.
        operation: String,
        /// The broker's or client's own message.
        detail: String,
    },
}

/// `url` with its password replaced by `***` (`redis://user:***@host:6379`), for anything a person or a file may
/// show: logs, errors, `state.json`, `mesh status`. A URL without a password comes back unchanged.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

impl TransportError {
    /// Whether retrying the same operation cannot help (see [`TransportError::Refused`]).
    pub fn is_permanent(&self) -> bool {
        matches!(self, TransportError::Refused { .. })
    }

    /// Shorthand for [`TransportError::Failed`].
    pub fn failed(operation: impl Into<String>, detail: impl ToString) -> Self {
        TransportError::Failed { operation: operation.into(), detail: detail.to_string() }
    }
}

/// How a topic is created if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Full topic name (prefix included).
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Keep only the latest record per key (membership, decisions).
    pub compacted: bool,
    /// How long records are kept, if limited (heartbeats).
    pub retention: Option<Duration>,
}

/// Where reading a partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record still in the partition.
    Beginning,
    /// Only records appended from now on.
    End,
    /// This exact offset (the next record to read), for example from a snapshot.
    Offset(i64),
    /// The offset committed by the consumer's group, or the oldest record if none was committed.
    CommittedOrBeginning,
    /// The offset committed by the consumer's group, or only new records if none was committed.
    CommittedOrEnd,
}

/// One partition to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Where to start.
    pub start: StartAt,
}

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Topic name.
    pub topic: String,
    /// Partition, chosen by the caller (the wire contract fixes the partitioner).
    pub partition: i32,
    /// Record key.
    pub key: Vec<u8>,
    /// Record value.
    pub payload: Vec<u8>,
    /// When the sender handed it over, in µs since the Unix epoch; travels as the Kafka header `mesh-sent-us` so
    /// latency can be measured finer than the envelope's millisecond `ts` (`mesh bench`).
    pub sent_at_us: Option<u64>,
    /// Proof of who wrote it (the `mesh-auth` header: `PRINCIPAL:TAG`, see mesh-proto's `auth`), when the writer
    /// holds credentials.
    pub auth: Option<String>,
}

/// How far a reader is behind the end of one partition it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Records between the reader's position and the partition's end.
    pub records: i64,
}

/// A record read from the bus, with where it came from (for dead-lettering and snapshots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Record key, if any.
    pub key: Option<Vec<u8>>,
    /// Record value, if any (a tombstone has none).
    pub payload: Option<Vec<u8>>,
    /// Record timestamp in ms since the Unix epoch, as the broker reports it.
    pub timestamp_ms: Option<i64>,
    /// The sender's `sent_at_us`, if it gave one.
    pub sent_at_us: Option<u64>,
    /// The `mesh-auth` header, if the writer gave one: checked against the writer the record must have.
    pub auth: Option<Vec<u8>>,
}

/// A committed position: the next offset to read in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Next offset to read.
    pub next_offset: i64,
}

/// The acknowledgement of one appended record: resolves to its offset, or to why it could not be appended. Owns
/// everything it needs, so a runtime can keep many in flight while it goes on with its loop.
pub type Delivery = std::pin::Pin<Box<dyn Future<Output = Result<i64, TransportError>> + Send + 'static>>;

/// An append-only, partitioned log: what the runtimes need of Kafka.
pub trait Bus: Clone + Send + Sync + 'static {
    /// A reader of assigned partitions.
    type Reader: Reader;

    /// Hands a record to the log at once and returns its acknowledgement. Records enqueued one after another to a
    /// partition are appended in that order, however their acknowledgements are awaited: this is how a runtime
    /// pipelines its sends instead of waiting for each before the next.
    fn enqueue(&self, record: OutRecord) -> Delivery;

    /// The offset the next record appended to a partition will get (its high watermark): where "everything so far"
    /// ends, for a reader that must catch up before going on (the topology manager's changelog).
    fn end_offset(&self, topic: &str, partition: i32) -> impl Future<Output = Result<i64, TransportError>> + Send;

    /// Creates the topics that are missing; existing topics are left as they are.
    fn ensure_topics(&self, specs: &[TopicSpec]) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// The number of partitions of `topic`.
    fn partition_count(&self, topic: &str) -> impl Future<Output = Result<u32, TransportError>> + Send;

    /// The number of partitions of each of `topics`, in order; fails if any is missing. One request where the
    /// bus can (a starting agent asks for all nine topics, and 500 agents start at once).
    fn partition_counts(&self, topics: &[String]) -> impl Future<Output = Result<Vec<u32>, TransportError>> + Send {
        async move {
            let mut out = Vec::with_capacity(topics.len());
            for t in topics {
                out.push(self.partition_count(t).await?);
            }
            Ok(out)
        }
    }

    /// Appends a record and waits until the broker acknowledged it; returns its offset.
    fn publish(&self, record: OutRecord) -> impl Future<Output = Result<i64, TransportError>> + Send {
        self.enqueue(record)
    }

    /// Waits until every record published so far is acknowledged (or `timeout` passes).
    fn flush(&self, timeout: Duration) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// A reader of exactly these partitions; `group` names whose committed offsets it reads and writes.
    fn reader(
        &self,
        group: &str,
        assignments: Vec<Assignment>,
    ) -> impl Future<Output = Result<Self::Reader, TransportError>> + Send;
}

/// Reads assigned partitions in order (per partition).
pub trait Reader: Send + 'static {
    /// The next record, waiting for one.
    fn next(&mut self) -> impl Future<Output = Result<InRecord, TransportError>> + Send;

    /// Records how far the group got, synchronously with the broker.
    fn commit(&mut self, positions: &[Position]) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Records how far the group got without waiting for the broker: for the periodic commits of a loop that must
    /// not stall on them (a lost one only means re-delivery, which readers deduplicate).
    fn commit_async(&mut self, positions: &[Position]) -> Result<(), TransportError>;

    /// How far behind each partition's end the reader was when last measured (for metrics); empty where a bus does
    /// not measure it.
    fn lag(&self) -> Vec<PartitionLag> {
        Vec::new()
    }
}

/// A small key-value store for snapshots and read models: what the runtimes need of Redis.
pub trait SnapshotStore: Clone + Send + Sync + 'static {
    /// The value at `key`, if any.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, TransportError>> + Send;
    /// Sets `key` to `value`, atomically.
    fn set(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Sets several hash fields of `key` in one round trip.
    fn hset(&self, key: &str, fields: &[(String, String)]) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Sets a hash field only if absent; returns whether it was set (false: it already held a value).
    fn hset_nx(&self, key: &str, field: &str, value: &str)
    -> impl Future<Output = Result<bool, TransportError>> + Send;
    /// One hash field.
    fn hget(&self, key: &str, field: &str) -> impl Future<Output = Result<Option<String>, TransportError>> + Send;
    /// Every field of a hash.
    fn hgetall(&self, key: &str) -> impl Future<Output = Result<Vec<(String, String)>, TransportError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        assert_eq!(redact_url("redis://mesh:s3cr3t@10.0.0.1:6379/0"), "redis://mesh:***@10.0.0.1:6379/0");
        assert_eq!(redact_url("redis://:s3cr3t@host"), "redis://:***@host");
        assert_eq!(redact_url("redis://:p@ss@host:1"), "redis://:***@host:1", "the last @ ends the user info");
        assert_eq!(redact_url("redis://user@host"), "redis://user@host");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("file:///home/a@b/.mesh/store"), "file:///home/a@b/.mesh/store");
    }
}
