//! An in-memory [`Bus`] and [`SnapshotStore`], for `mesh demo` (the three services as tasks of one process, like
//! the seed's single-process mode) and for tests that want the whole mesh without a broker.
//!
//! The bus keeps Kafka's semantics that the runtimes rely on: partitions are append-only and ordered, offsets are
//! dense from 0, readers read chosen partitions from chosen positions, and groups commit positions. It keeps nothing
//! else (no retention, no compaction, no persistence): it is not a broker, and the real tests use Apache Kafka.
#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_transport::{
    Assignment, Bus, InRecord, OutRecord, Position, Reader, SnapshotStore, StartAt, TopicSpec, TransportError,
};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Stored {
    key: Vec<u8>,
    payload: Vec<u8>,
    timestamp_ms: i64,
    sent_at_us: Option<u64>,
    auth: Option<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Log {
    topics: BTreeMap<String, Vec<Vec<Stored>>>,
    committed: HashMap<(String, String, i32), i64>,
}

/// The in-memory log; clones share it.
#[derive(Clone, Default)]
pub struct MemoryBus {
    log: Arc<Mutex<Log>>,
    appended: Arc<Notify>,
}

fn poisoned() -> TransportError {
    TransportError::failed("using the in-memory bus", "a thread panicked while holding it")
}

impl MemoryBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Log>, TransportError> {
        self.log.lock().map_err(|_| poisoned())
    }

    /// Appends a record to its partition; its offset.
    fn append(&self, record: OutRecord) -> Result<i64, TransportError> {
        let offset = {
            let mut log = self.lock()?;
            let partitions = log
                .topics
                .get_mut(&record.topic)
                .ok_or_else(|| TransportError::failed("publishing", format!("topic {} is missing", record.topic)))?;
            let p = usize::try_from(record.partition)
                .ok()
                .and_then(|p| partitions.get_mut(p))
                .ok_or_else(|| TransportError::failed("publishing", format!("no partition {}", record.partition)))?;
            let timestamp_ms =
                SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
            p.push(Stored {
                key: record.key,
                payload: record.payload,
                timestamp_ms,
                sent_at_us: record.sent_at_us,
                auth: record.auth.map(String::into_bytes),
            });
            i64::try_from(p.len() - 1).unwrap_or(i64::MAX)
        };
        self.appended.notify_waiters();
        Ok(offset)
    }

    /// Records in a partition so far.
    pub fn len(&self, topic: &str, partition: i32) -> usize {
        self.log
            .lock()
            .ok()
            .and_then(|l| l.topics.get(topic)?.get(usize::try_from(partition).ok()?).map(Vec::len))
            .unwrap_or(0)
    }
}

impl Bus for MemoryBus {
    type Reader = MemoryReader;

    async fn ensure_topics(&self, specs: &[TopicSpec]) -> Result<(), TransportError> {
        let mut log = self.lock()?;
        for s in specs {
            log.topics.entry(s.name.clone()).or_insert_with(|| vec![Vec::new(); s.partitions.max(1) as usize]);
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, TransportError> {
        let log = self.lock()?;
        let parts = log
            .topics
            .get(topic)
            .ok_or_else(|| TransportError::failed("reading metadata", format!("topic {topic} is missing")))?;
        u32::try_from(parts.len()).map_err(|e| TransportError::failed("reading metadata", e))
    }

    fn enqueue(&self, record: OutRecord) -> mesh_transport::Delivery {
        let appended = self.append(record);
        Box::pin(std::future::ready(appended))
    }

    async fn end_offset(&self, topic: &str, partition: i32) -> Result<i64, TransportError> {
        Ok(i64::try_from(self.len(topic, partition)).unwrap_or(i64::MAX))
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), TransportError> {
        Ok(())
    }

    async fn reader(&self, group: &str, assignments: Vec<Assignment>) -> Result<MemoryReader, TransportError> {
        let log = self.lock()?;
        let mut positions = Vec::new();
        for a in assignments {
            let len =
                log.topics.get(&a.topic).and_then(|t| t.get(usize::try_from(a.partition).ok()?)).map_or(0, Vec::len);
            let len = i64::try_from(len).unwrap_or(0);
            let committed = log.committed.get(&(group.to_owned(), a.topic.clone(), a.partition)).copied();
            let next = match a.start {
                StartAt::Beginning => 0,
                StartAt::End => len,
                StartAt::Offset(o) => o,
                StartAt::CommittedOrBeginning => committed.unwrap_or(0),
                StartAt::CommittedOrEnd => committed.unwrap_or(len),
            };
            positions.push((a.topic, a.partition, next));
        }
        Ok(MemoryReader { bus: self.clone(), group: group.to_owned(), positions, turn: 0 })
    }
}

/// Reads assigned partitions of a [`MemoryBus`], taking turns between them.
pub struct MemoryReader {
    bus: MemoryBus,
    group: String,
    positions: Vec<(String, i32, i64)>,
    turn: usize,
}

impl MemoryReader {
    fn try_next(&mut self) -> Result<Option<InRecord>, TransportError> {
        let log = self.bus.lock()?;
        let n = self.positions.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            let (topic, partition, next) = &mut self.positions[i];
            let Some(records) = log.topics.get(topic.as_str()).and_then(|t| t.get(usize::try_from(*partition).ok()?))
            else {
                continue;
            };
            if let Some(r) = usize::try_from(*next).ok().and_then(|o| records.get(o)) {
                let record = InRecord {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *next,
                    key: Some(r.key.clone()),
                    payload: Some(r.payload.clone()),
                    timestamp_ms: Some(r.timestamp_ms),
                    sent_at_us: r.sent_at_us,
                    auth: r.auth.clone(),
                };
                *next += 1;
                self.turn = i + 1;
                return Ok(Some(record));
            }
        }
        Ok(None)
    }
}

impl Reader for MemoryReader {
    async fn next(&mut self) -> Result<InRecord, TransportError> {
        loop {
            let appended = Arc::clone(&self.bus.appended);
            let notified = appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.try_next()? {
                return Ok(r);
            }
            notified.await;
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), TransportError> {
        self.commit_async(positions)
    }

    fn commit_async(&mut self, positions: &[Position]) -> Result<(), TransportError> {
        let mut log = self.bus.lock()?;
        for p in positions {
            log.committed.insert((self.group.clone(), p.topic.clone(), p.partition), p.next_offset);
        }
        Ok(())
    }
}

/// An in-memory key-value store with the Redis subset the runtimes use.
#[derive(Clone, Default)]
pub struct MemoryStore {
    values: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    hashes: Arc<Mutex<HashMap<String, BTreeMap<String, String>>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl SnapshotStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TransportError> {
        Ok(self.values.lock().map_err(|_| poisoned())?.get(key).cloned())
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), TransportError> {
        self.values.lock().map_err(|_| poisoned())?.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn hset(&self, key: &str, fields: &[(String, String)]) -> Result<(), TransportError> {
        let mut h = self.hashes.lock().map_err(|_| poisoned())?;
        let map = h.entry(key.to_owned()).or_default();
        for (k, v) in fields {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    async fn hset_nx(&self, key: &str, field: &str, value: &str) -> Result<bool, TransportError> {
        let mut h = self.hashes.lock().map_err(|_| poisoned())?;
        let map = h.entry(key.to_owned()).or_default();
        if map.contains_key(field) {
            return Ok(false);
        }
        map.insert(field.to_owned(), value.to_owned());
        Ok(true)
    }

    async fn hget(&self, key: &str, field: &str) -> Result<Option<String>, TransportError> {
        Ok(self.hashes.lock().map_err(|_| poisoned())?.get(key).and_then(|m| m.get(field).cloned()))
    }

    async fn hgetall(&self, key: &str) -> Result<Vec<(String, String)>, TransportError> {
        Ok(self
            .hashes
            .lock()
            .map_err(|_| poisoned())?
            .get(key)
            .map(|m| m.clone().into_iter().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn partitions_are_ordered_logs_with_committed_positions() {
        let bus = MemoryBus::new();
        bus.ensure_topics(&[TopicSpec { name: "t".into(), partitions: 2, compacted: false, retention: None }])
            .await
            .expect("topics");
        assert_eq!(bus.partition_count("t").await.expect("count"), 2);
        for i in 0..3u8 {
            let o = bus
                .publish(OutRecord {
                    topic: "t".into(),
                    partition: 1,
                    key: vec![i],
                    payload: vec![i],
                    sent_at_us: None,
                    auth: None,
                })
                .await
                .expect("publish");
            assert_eq!(o, i64::from(i));
        }
        let mut r = bus
            .reader("g", vec![Assignment { topic: "t".into(), partition: 1, start: StartAt::CommittedOrBeginning }])
            .await
            .expect("reader");
        assert_eq!(r.next().await.expect("record").offset, 0);
        r.commit(&[Position { topic: "t".into(), partition: 1, next_offset: 1 }]).await.expect("commit");
        let mut again = bus
            .reader("g", vec![Assignment { topic: "t".into(), partition: 1, start: StartAt::CommittedOrBeginning }])
            .await
            .expect("reader");
        assert_eq!(again.next().await.expect("record").offset, 1);
        let mut late = bus
            .reader("h", vec![Assignment { topic: "t".into(), partition: 1, start: StartAt::End }])
            .await
            .expect("reader");
        let waiter = tokio::spawn(async move { late.next().await.map(|r| r.offset) });
        tokio::task::yield_now().await;
        bus.publish(OutRecord {
            topic: "t".into(),
            partition: 1,
            key: vec![],
            payload: vec![],
            sent_at_us: None,
            auth: None,
        })
        .await
        .expect("publish");
        assert_eq!(waiter.await.expect("join").expect("record"), 3, "a waiting reader wakes on append");
    }

    #[tokio::test]
    async fn store_keeps_the_first_value_with_hset_nx() {
        let s = MemoryStore::new();
        assert!(s.hset_nx("d", "p", "a").await.expect("nx"));
        assert!(!s.hset_nx("d", "p", "b").await.expect("nx"));
        assert_eq!(s.hget("d", "p").await.expect("get"), Some("a".into()));
    }
}
