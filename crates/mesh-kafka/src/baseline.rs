//! The physical limit `mesh bench` compares the mesh against: the same message size and rate through one plain
//! rdkafka producer and one consumer, with no mesh logic at all (no envelopes, no membership, no awaiting each
//! acknowledgement before the next send). Same broker, same producer guarantees (idempotent, `acks=all`,
//! `linger.ms=2`) and the same consumer fetch wait as the mesh's readers, so the ratio isolates the mesh's cost.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{KafkaConfig, unreachable};
use mesh_transport::TransportError;

/// What to send.
#[derive(Debug, Clone)]
pub struct BaselineSpec {
    /// Topic to use; it must exist with `partitions` partitions.
    pub topic: String,
    /// Partitions written round-robin and all read by the one consumer.
    pub partitions: i32,
    /// Messages per second offered.
    pub rate: f64,
    /// Value size in bytes (at least 8: the send stamp).
    pub payload_bytes: usize,
    /// Sending before measuring, to fill connections and caches.
    pub warmup: Duration,
    /// Measured sending.
    pub duration: Duration,
}

/// What came out.
#[derive(Debug, Clone, Default)]
pub struct BaselineRun {
    /// Messages sent during the measured window.
    pub sent: u64,
    /// Of those, received by the consumer.
    pub received: u64,
    /// Send-to-receive latency of every measured message, µs.
    pub latencies_us: Vec<u64>,
    /// Measured messages received in each second of the window.
    pub per_second: Vec<u64>,
    /// Sends that failed (broker refused or timed out).
    pub failed: u64,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Runs the baseline: paced sends for `warmup + duration`, then up to 5 s for the last messages to arrive.
pub async fn run(config: &KafkaConfig, spec: &BaselineSpec) -> Result<BaselineRun, TransportError> {
    let mut pc = config.base();
    pc.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "2");
    let producer: FutureProducer = pc.create().map_err(|e| unreachable(config, &e))?;
    let mut cc = config.base();
    cc.set("group.id", format!("{}-baseline", config.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50");
    let consumer: StreamConsumer = cc.create().map_err(|e| unreachable(config, &e))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..spec.partitions {
        tpl.add_partition_offset(&spec.topic, p, rdkafka::Offset::End)
            .map_err(|e| TransportError::failed("assigning partitions", e))?;
    }
    consumer.assign(&tpl).map_err(|e| TransportError::failed("assigning partitions", e))?;
    // Let the consumer resolve its end offsets before the first send, or early messages are skipped.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let start = Instant::now();
    let measure_from = now_us() + u64::try_from(spec.warmup.as_micros()).unwrap_or(u64::MAX);
    let measure_until = measure_from + u64::try_from(spec.duration.as_micros()).unwrap_or(u64::MAX);
    let total = spec.warmup + spec.duration;
    let payload_bytes = spec.payload_bytes.max(8);
    let receiver = async {
        let mut run = BaselineRun::default();
        let deadline = tokio::time::Instant::now() + total + Duration::from_secs(5);
        let seconds = usize::try_from(spec.duration.as_secs().max(1)).unwrap_or(1);
        run.per_second = vec![0; seconds];
        while let Ok(Ok(m)) = tokio::time::timeout_at(deadline, consumer.recv()).await {
            let Some(stamp) = m.payload().and_then(|p| p.get(..8)).and_then(|b| b.try_into().ok()) else { continue };
            let sent = u64::from_be_bytes(stamp);
            if sent < measure_from || sent >= measure_until {
                continue;
            }
            let got = now_us();
            run.received += 1;
            run.latencies_us.push(got.saturating_sub(sent));
            let second = usize::try_from((got.saturating_sub(measure_from)) / 1_000_000).unwrap_or(usize::MAX);
            if let Some(slot) = run.per_second.get_mut(second.min(seconds - 1)) {
                *slot += 1;
            }
        }
        run
    };
    let sender = async {
        let (mut sent, mut measured, mut failed) = (0u64, 0u64, 0u64);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut pace = tokio::time::interval(Duration::from_millis(1));
        let mut partition = 0;
        loop {
            tokio::select! {
                _ = pace.tick() => {
                    let elapsed = start.elapsed();
                    if elapsed >= total {
                        break;
                    }
                    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a message count")]
                    let due = (elapsed.as_secs_f64() * spec.rate) as u64;
                    while sent < due {
                        let stamp = now_us();
                        let mut value = vec![0u8; payload_bytes];
                        value[..8].copy_from_slice(&stamp.to_be_bytes());
                        let p = partition;
                        partition = (partition + 1) % spec.partitions.max(1);
                        let producer = &producer;
                        let topic = spec.topic.as_str();
                        in_flight.push(async move {
                            let record = FutureRecord::<[u8], [u8]>::to(topic).partition(p).payload(&value);
                            producer.send(record, Duration::from_secs(10)).await.is_ok()
                        });
                        sent += 1;
                        if (measure_from..measure_until).contains(&stamp) {
                            measured += 1;
                        }
                    }
                }
                Some(ok) = futures::StreamExt::next(&mut in_flight) => {
                    if !ok {
                        failed += 1;
                    }
                }
            }
        }
        while let Some(ok) = futures::StreamExt::next(&mut in_flight).await {
            if !ok {
                failed += 1;
            }
        }
        (measured, failed)
    };
    let ((sent, failed), mut run) = tokio::join!(sender, receiver);
    run.sent = sent;
    run.failed = failed;
    Ok(run)
}
