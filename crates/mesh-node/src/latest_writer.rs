//! Redis writes that must never hold up a runtime's event loop.
//!
//! A manager's stats hash and its snapshot, and an agent's stats hash, are "newest wins" values: only the latest matters, and writing it late is
//! harmless. Written inline, a Redis that hangs (SIGSTOP, a partition that holds packets) froze the topology
//! manager's whole loop: no windows closed, no deaths could be declared, and `cargo xtask chaos`'s
//! partition-topology-redis scenario measured the manager stuck for as long as Redis was. [`LatestWriter`] hands the
//! value to a task that writes the newest one, retrying with backoff, while the loop goes on.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use mesh_transport::{SnapshotStore, TransportError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The values waiting to be written; `Arc` so that "already written" is a pointer comparison, not a deep one.
#[derive(Clone, Default)]
struct Pending {
    hash: Option<Arc<Vec<(String, String)>>>,
    blob: Option<Arc<Vec<u8>>>,
}

/// Where the values go (an agent has a stats hash and no snapshot).
#[derive(Clone)]
struct Keys {
    hash: String,
    blob: Option<String>,
}

/// Writes the newest stats hash (and snapshot blob, for a manager) of one runtime to Redis from a task of its own.
pub(crate) struct LatestWriter {
    tx: watch::Sender<Pending>,
    task: JoinHandle<()>,
}

impl LatestWriter {
    /// Starts the writing task: `hash_key` receives [`Self::hash`] values (HSET), `blob_key` [`Self::blob`] ones (SET).
    pub(crate) fn spawn<S: SnapshotStore + 'static>(store: S, hash_key: String, blob_key: String) -> Self {
        let (tx, rx) = watch::channel(Pending::default());
        let task = tokio::spawn(write_latest(store, Keys { hash: hash_key, blob: Some(blob_key) }, rx));
        Self { tx, task }
    }

    /// Starts a writing task for a stats hash only (an agent's): [`Self::blob`] values are dropped.
    pub(crate) fn spawn_hash<S: SnapshotStore + 'static>(store: S, hash_key: String) -> Self {
        let (tx, rx) = watch::channel(Pending::default());
        let task = tokio::spawn(write_latest(store, Keys { hash: hash_key, blob: None }, rx));
        Self { tx, task }
    }

    /// Replaces the stats hash to write; an older value not yet written is skipped.
    pub(crate) fn hash(&self, fields: Vec<(String, String)>) {
        self.tx.send_modify(|p| p.hash = Some(Arc::new(fields)));
    }

    /// Replaces the snapshot to write; an older one not yet written is skipped.
    pub(crate) fn blob(&self, bytes: Vec<u8>) {
        self.tx.send_modify(|p| p.blob = Some(Arc::new(bytes)));
    }

    /// Waits until the newest values are written (however long Redis takes: the supervisor's stop timeout bounds a
    /// shutdown), then ends the task.
    pub(crate) async fn finish(self) {
        let Self { tx, task } = self;
        drop(tx);
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the redis writer task failed");
        }
    }
}

/// Backoff between failed attempts: short, because the value is retried as soon as Redis answers again and the
/// stats are how operators (and `cargo xtask chaos`) see that the manager is making progress.
fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
        .build()
}

async fn write_latest<S: SnapshotStore>(store: S, keys: Keys, mut rx: watch::Receiver<Pending>) {
    let mut written = Pending::default();
    let mut delays = backoff();
    let mut failures = 0u32;
    loop {
        let want = rx.borrow_and_update().clone();
        match write_pending(&store, &keys, &want, &mut written).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "redis writes caught up");
                    failures = 0;
                    delays = backoff();
                }
                // Err: the sender is gone and everything it sent is written.
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                let delay = delays.next().unwrap_or(Duration::from_secs(1));
                // The first failure, then one in ten: at most one line every few seconds while Redis is away.
                if failures % 10 == 1 {
                    tracing::warn!(error = %e, failures, retry_in_ms = delay.as_millis() as u64,
                        "writing stats/snapshot to redis failed; the newest value will be retried");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Writes what `want` holds and `written` does not; the snapshot first, as it is what a restart needs.
async fn write_pending<S: SnapshotStore>(
    store: &S,
    keys: &Keys,
    want: &Pending,
    written: &mut Pending,
) -> Result<(), TransportError> {
    if let Some(blob) = &want.blob
        && let Some(key) = &keys.blob
        && !written.blob.as_ref().is_some_and(|w| Arc::ptr_eq(w, blob))
    {
        store.set(key, blob).await?;
        tracing::debug!(bytes = blob.len(), %key, "snapshot saved");
        written.blob = Some(blob.clone());
    }
    if let Some(hash) = &want.hash
        && !written.hash.as_ref().is_some_and(|w| Arc::ptr_eq(w, hash))
    {
        store.hset(&keys.hash, hash).await?;
        written.hash = Some(hash.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    type Hashes = Arc<Mutex<HashMap<String, Vec<(String, String)>>>>;

    /// A store that can be made to hang (like a Redis behind a partition) or to fail (like a refused connection).
    #[derive(Clone)]
    struct Gated {
        open: watch::Receiver<bool>,
        failing: Arc<AtomicU32>,
        values: Arc<Mutex<HashMap<String, Vec<u8>>>>,
        hashes: Hashes,
        sets: Arc<AtomicU32>,
    }

    impl Gated {
        fn new() -> (Self, watch::Sender<bool>) {
            let (tx, open) = watch::channel(true);
            let store = Self {
                open,
                failing: Arc::default(),
                values: Arc::default(),
                hashes: Arc::default(),
                sets: Arc::default(),
            };
            (store, tx)
        }

        async fn pass(&self) -> Result<(), TransportError> {
            let mut open = self.open.clone();
            open.wait_for(|o| *o).await.map_err(|e| TransportError::failed("gate", e))?;
            if self.failing.load(Ordering::SeqCst) > 0 {
                self.failing.fetch_sub(1, Ordering::SeqCst);
                return Err(TransportError::Unreachable { what: "redis".into(), detail: "refused".into() });
            }
            Ok(())
        }

        fn value(&self, key: &str) -> Option<Vec<u8>> {
            self.values.lock().expect("test lock").get(key).cloned()
        }

        fn hash(&self, key: &str) -> Option<Vec<(String, String)>> {
            self.hashes.lock().expect("test lock").get(key).cloned()
        }
    }

    impl SnapshotStore for Gated {
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, TransportError> {
            self.pass().await?;
            Ok(self.value(key))
        }
        async fn set(&self, key: &str, value: &[u8]) -> Result<(), TransportError> {
            self.pass().await?;
            self.sets.fetch_add(1, Ordering::SeqCst);
            self.values.lock().expect("test lock").insert(key.into(), value.to_vec());
            Ok(())
        }
        async fn hset(&self, key: &str, fields: &[(String, String)]) -> Result<(), TransportError> {
            self.pass().await?;
            self.hashes.lock().expect("test lock").insert(key.into(), fields.to_vec());
            Ok(())
        }
        async fn hset_nx(&self, _: &str, _: &str, _: &str) -> Result<bool, TransportError> {
            unreachable!("the writer never uses hset_nx")
        }
        async fn hget(&self, _: &str, _: &str) -> Result<Option<String>, TransportError> {
            unreachable!("the writer never reads")
        }
        async fn hgetall(&self, _: &str) -> Result<Vec<(String, String)>, TransportError> {
            unreachable!("the writer never reads")
        }
    }

    fn tick(n: u64) -> Vec<(String, String)> {
        mesh_proto::read_model::TopologyStats { tick: Some(n), ..Default::default() }.to_fields()
    }

    #[tokio::test]
    async fn a_hung_store_never_blocks_the_caller_and_the_newest_values_land_after_it_answers() {
        let (store, gate) = Gated::new();
        gate.send_replace(false);
        let writer = LatestWriter::spawn(store.clone(), "stats".into(), "snap".into());
        for n in 1..=100 {
            writer.hash(tick(n));
            writer.blob(n.to_string().into_bytes());
            tokio::task::yield_now().await;
        }
        assert_eq!(store.value("snap"), None, "nothing can be written while the store hangs");
        gate.send_replace(true);
        writer.finish().await;
        assert_eq!(store.value("snap"), Some(b"100".to_vec()));
        assert_eq!(store.hash("stats"), Some(tick(100)));
        // The write held up by the hang, then the newest: the 98 in between were skipped.
        assert!(store.sets.load(Ordering::SeqCst) <= 2, "{} snapshot writes", store.sets.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn failed_writes_are_retried_until_the_store_takes_them() {
        let (store, _gate) = Gated::new();
        store.failing.store(5, Ordering::SeqCst);
        let writer = LatestWriter::spawn(store.clone(), "stats".into(), "snap".into());
        writer.blob(b"only".to_vec());
        writer.hash(tick(7));
        writer.finish().await;
        assert_eq!(store.failing.load(Ordering::SeqCst), 0, "every failure was retried");
        assert_eq!(store.value("snap"), Some(b"only".to_vec()));
        assert_eq!(store.hash("stats"), Some(tick(7)));
    }

    #[tokio::test]
    async fn a_hash_only_writer_writes_the_newest_hash_through_failures_and_no_blob() {
        let (store, _gate) = Gated::new();
        store.failing.store(3, Ordering::SeqCst);
        let writer = LatestWriter::spawn_hash(store.clone(), "agent".into());
        writer.hash(tick(1));
        writer.blob(b"ignored".to_vec());
        writer.hash(tick(2));
        writer.finish().await;
        assert_eq!(store.hash("agent"), Some(tick(2)));
        assert_eq!(store.sets.load(Ordering::SeqCst), 0, "no snapshot key, no SET");
    }

    #[tokio::test]
    async fn finishing_with_nothing_sent_writes_nothing() {
        let (store, _gate) = Gated::new();
        LatestWriter::spawn(store.clone(), "stats".into(), "snap".into()).finish().await;
        assert_eq!(store.value("snap"), None);
        assert_eq!(store.hash("stats"), None);
    }
}
