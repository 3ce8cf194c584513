//! One librdkafka producer and the thread that serves its delivery reports, without the idle cost of rdkafka's own.
//!
//! rdkafka's `FutureProducer` polls its producer every 100 ms from a thread of its own, and its poll loop turns the
//! last sub-millisecond of each period into `rd_kafka_queue_poll(.., 0)` calls: a busy wait of up to a millisecond
//! every 100 ms, about 5 ms of CPU a second per process. Negligible for one client; 500 idle agent processes spent
//! half a core on it (measured with `mesh bench --idle`). This producer is the same `BaseProducer` with the same
//! delivery-report-to-oneshot context, polled with 5 s periods (reports are handled the moment they arrive; the
//! period only bounds how late the thread notices that it should stop).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::oneshot;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};

/// How long one poll of the delivery reports may block.
const POLL_PERIOD: Duration = Duration::from_secs(5);

/// Delivery reports go to the oneshot carried as each record's opaque.
pub(crate) struct Acks;

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<oneshot::Sender<Result<i64, KafkaError>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let _ = tx.send(match result {
            Ok(message) => Ok(message.offset()),
            Err((error, _)) => Err(error.clone()),
        });
    }
}

/// A record to append, borrowed.
pub(crate) struct Outgoing<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
    /// The Kafka headers `(name, value)` to attach.
    pub(crate) headers: [Option<(&'a str, &'a [u8])>; 2],
}

/// A producer shared by clones; its polling thread ends a poll period after the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Producer {
    inner: Arc<Shared>,
}

struct Shared {
    base: Arc<BaseProducer<Acks>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Producer {
    /// Creates the producer and starts its polling thread.
    pub(crate) fn new(config: &ClientConfig) -> KafkaResult<Self> {
        let base: Arc<BaseProducer<Acks>> = Arc::new(config.create_with_context(Acks)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopping) = (Arc::clone(&base), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("mesh-kafka-acks".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    polled.poll(POLL_PERIOD);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(format!("failed to start the delivery report thread: {e}")))?;
        Ok(Self { inner: Arc::new(Shared { base, stop }) })
    }

    /// Hands a record to librdkafka now; the receiver gets its offset once the broker acknowledged it. `QueueFull`
    /// comes back as an error at once (the caller waits and tries again).
    pub(crate) fn send(&self, out: &Outgoing<'_>) -> Result<oneshot::Receiver<Result<i64, KafkaError>>, KafkaError> {
        let (tx, rx) = oneshot::channel();
        let mut record = BaseRecord::with_opaque_to(out.topic, Box::new(tx))
            .partition(out.partition)
            .key(out.key)
            .payload(out.payload);
        if out.headers.iter().any(Option::is_some) {
            let headers = out.headers.iter().flatten().fold(OwnedHeaders::new_with_capacity(2), |h, (key, value)| {
                h.insert(Header { key, value: Some(*value) })
            });
            record = record.headers(headers);
        }
        self.inner.base.send(record).map_err(|(e, _)| e)?;
        Ok(rx)
    }

    /// Waits until every record handed over is acknowledged, or `timeout` passes.
    pub(crate) fn flush(&self, timeout: Duration) -> KafkaResult<()> {
        self.inner.base.flush(timeout)
    }

    /// The librdkafka client, for metadata and watermarks.
    pub(crate) fn client(&self) -> &rdkafka::client::Client<Acks> {
        self.inner.base.client()
    }
}
