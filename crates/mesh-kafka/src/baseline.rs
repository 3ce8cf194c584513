//! The physical limit `mesh bench` compares the mesh against: the same message size and rate through plain rdkafka
//! producers and consumers, with no mesh logic at all (no envelopes, no membership, no awaiting each
//! acknowledgement before the next send). Same broker, the producer settings the caller gives (`mesh bench` gives
//! the agents': `acks=all`, `linger.ms=2`, one request in flight) and the same consumer fetch wait as the mesh's
//! readers, so the ratio isolates the mesh's cost.
//!
//! One run is one *worker*: a producer and a consumer. `mesh bench` runs one worker in its own process (what Kafka
//! itself sustains here) and, separately, as many worker processes as the mesh has agent processes, each reading its
//! own partition and sending to the others like agents do (what N client processes cost on one machine).
//!
//! Latency is measured from each message's *intended* send time (`start + k / rate`), as the OpenMessaging
//! Benchmark does: a sender that falls behind its schedule sends as fast as it can and the wait counts, so a stall
//! shows in the figures instead of thinning the samples (no coordinated omission).

use std::time::Duration;

use rdkafka::Message;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::producer::{Outgoing, Producer};
use crate::{KafkaConfig, unreachable};
use mesh_transport::TransportError;

/// What one worker sends and reads.
#[derive(Debug, Clone)]
pub struct BaselineSpec {
    /// Topic to use; it must exist.
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: i32,
    /// Workers of the run (1: this one sends to every partition and reads them all).
    pub workers: u32,
    /// This worker's number, `0..workers`: it reads partition `index % partitions` and counts the messages keyed
    /// to it, as an agent reads its partition and keeps what is keyed to it.
    pub index: u32,
    /// Messages per second this worker offers.
    pub rate: f64,
    /// Value size in bytes (at least 8: the intended send time).
    pub payload_bytes: usize,
    /// Sending before measuring, to fill connections and caches.
    pub warmup: Duration,
    /// Measured sending.
    pub duration: Duration,
    /// When sending starts, µs since the Unix epoch: the same for every worker of a run (`None`: 2 s from now).
    pub start_at_us: Option<u64>,
}

/// What came out of one worker.
#[derive(Debug, Clone, Default)]
pub struct BaselineRun {
    /// Messages sent during the measured window (by intended send time).
    pub sent: u64,
    /// Messages of the measured window received by this worker (from any worker).
    pub received: u64,
    /// Intended-send-to-receive latency of every measured message received, µs.
    pub latencies_us: Vec<u64>,
    /// Measured messages received in each second of the window.
    pub per_second: Vec<u64>,
    /// Sends that failed (broker refused or timed out).
    pub failed: u64,
}

/// The key messages for worker `index` carry.
fn key_of(index: u32) -> String {
    format!("w{index}")
}

/// Runs one worker: paced sends for `warmup + duration` from the start time, then up to 5 s for the last messages.
pub async fn run(config: &KafkaConfig, spec: &BaselineSpec) -> Result<BaselineRun, TransportError> {
    // The mesh's own producer (see `producer.rs`) with the caller's settings: the same client costs on both sides
    // of the ratio.
    let producer = Producer::new(&config.producer_config()).map_err(|e| unreachable(config, &e))?;
    let mut cc = config.base();
    cc.set("group.id", format!("{}-baseline-{}", config.client_id, spec.index))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", config.fetch_wait.as_millis().max(1).to_string())
        .set("fetch.queue.backoff.ms", "10");
    let consumer: StreamConsumer = cc.create().map_err(|e| unreachable(config, &e))?;
    let partitions = spec.partitions.max(1);
    let workers = spec.workers.max(1);
    let mut tpl = TopicPartitionList::new();
    let mine: Vec<i32> = if workers == 1 {
        (0..partitions).collect()
    } else {
        vec![i32::try_from(spec.index).unwrap_or(0) % partitions]
    };
    for p in &mine {
        tpl.add_partition_offset(&spec.topic, *p, rdkafka::Offset::End)
            .map_err(|e| TransportError::failed("assigning partitions", e))?;
    }
    consumer.assign(&tpl).map_err(|e| TransportError::failed("assigning partitions", e))?;
    let my_key = key_of(spec.index);

    let start_us = spec.start_at_us.unwrap_or_else(|| mesh_transport::clock::now_us() + 2_000_000);
    let warmup_us = u64::try_from(spec.warmup.as_micros()).unwrap_or(u64::MAX);
    let duration_us = u64::try_from(spec.duration.as_micros()).unwrap_or(u64::MAX);
    let measure_from = start_us + warmup_us;
    let measure_until = measure_from + duration_us;
    let payload_bytes = spec.payload_bytes.max(8);
    let receiver = async {
        let mut run = BaselineRun::default();
        let until = Duration::from_micros(measure_until.saturating_sub(mesh_transport::clock::now_us()))
            + Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + until;
        let seconds = usize::try_from(spec.duration.as_secs().max(1)).unwrap_or(1);
        run.per_second = vec![0; seconds];
        while let Ok(Ok(m)) = tokio::time::timeout_at(deadline, consumer.recv()).await {
            if workers > 1 && m.key() != Some(my_key.as_bytes()) {
                continue;
            }
            let Some(stamp) = m.payload().and_then(|p| p.get(..8)).and_then(|b| b.try_into().ok()) else { continue };
            let intended = u64::from_be_bytes(stamp);
            if intended < measure_from || intended >= measure_until {
                continue;
            }
            let got = mesh_transport::clock::now_us();
            run.received += 1;
            run.latencies_us.push(got.saturating_sub(intended));
            let second = usize::try_from(got.saturating_sub(measure_from) / 1_000_000).unwrap_or(usize::MAX);
            if let Some(slot) = run.per_second.get_mut(second.min(seconds - 1)) {
                *slot += 1;
            }
        }
        run
    };
    let sender = async {
        let (mut sent, mut measured, mut failed) = (0u64, 0u64, 0u64);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        if let Some(wait) = start_us.checked_sub(mesh_transport::clock::now_us()) {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        let total = spec.warmup + spec.duration;
        let total_us = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
        let mut rng = u64::from(spec.index).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next_partition = 0;
        let interval_us = 1_000_000.0 / spec.rate.max(1e-9);
        loop {
            // Wake when the next message is due (at the timer's 1 ms resolution at most): a 1 ms tick in each of
            // 500 workers at 20 msg/s each was 500,000 wake-ups a second, which starved the broker, and the
            // 500-process baseline delivered nothing.
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "µs offsets")]
            let next_us = start_us + (sent as f64 * interval_us) as u64;
            let wait = Duration::from_micros(next_us.saturating_sub(mesh_transport::clock::now_us()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {
                    // Due by the wall clock against the common start, not against when this loop woke: a late
                    // wake-up is a late send, and it counts.
                    let elapsed_us = mesh_transport::clock::now_us().saturating_sub(start_us);
                    if elapsed_us >= total_us {
                        break;
                    }
                    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a message count")]
                    let due = (elapsed_us as f64 / 1e6 * spec.rate) as u64 + 1;
                    while sent < due {
                        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "µs offsets")]
                        let intended = start_us + (sent as f64 * interval_us) as u64;
                        let mut value = vec![0u8; payload_bytes];
                        value[..8].copy_from_slice(&intended.to_be_bytes());
                        // One worker spreads over every partition; several send to a random peer, as agents do.
                        let (partition, key) = if workers == 1 {
                            next_partition = (next_partition + 1) % partitions;
                            (next_partition, key_of(0))
                        } else {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let peer = u32::try_from(rng % u64::from(workers)).unwrap_or(0);
                            (i32::try_from(peer).unwrap_or(0) % partitions, key_of(peer))
                        };
                        let out = Outgoing {
                            topic: &spec.topic,
                            partition,
                            key: key.as_bytes(),
                            payload: &value,
                            headers: [None, None],
                        };
                        let ack = producer.send(&out);
                        in_flight.push(async move {
                            match ack {
                                Ok(ack) => matches!(ack.await, Ok(Ok(_))),
                                Err(_) => false,
                            }
                        });
                        sent += 1;
                        if (measure_from..measure_until).contains(&intended) {
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
