//! One worker of `mesh bench`'s N-process baseline (`mesh bench-worker`, hidden): a plain producer and consumer at
//! its share of the rate, which prints one JSON line ([`WorkerReport`]) with its counts, its per-second deliveries
//! and its latency histogram. The fleet that starts the workers and merges their lines is the bench engine's
//! (`mesh_bench::engine`); the worker is this binary because the engine runs the binary it was started from.

use std::time::Duration;

use anyhow::{Context, Result};
use mesh_bench::engine::{WorkerReport, baseline_config};
use mesh_kafka::KafkaConfig;
use mesh_kafka::baseline::{self, BaselineSpec};
use mesh_node::latency::Latency;

use crate::cli::BenchWorkerArgs;

/// Runs `mesh bench-worker`: one baseline worker, its report on stdout.
pub(crate) async fn worker(args: &BenchWorkerArgs) -> Result<()> {
    let config = KafkaConfig {
        fetch_wait: Duration::from_millis(args.fetch_wait_ms),
        ..baseline_config(&args.kafka, format!("mesh-bench-worker-{}", args.index))
    };
    let spec = BaselineSpec {
        topic: args.topic.clone(),
        partitions: args.partitions,
        workers: args.workers,
        index: args.index,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        warmup: Duration::from_millis(args.warmup_ms),
        duration: Duration::from_millis(args.duration_ms),
        start_at_us: Some(args.start_at_us),
    };
    let run = baseline::run(&config, &spec).await.context("baseline worker failed")?;
    let mut latency = Latency::new();
    for us in &run.latencies_us {
        latency.record(*us);
    }
    let report = WorkerReport {
        sent: run.sent,
        received: run.received,
        failed: run.failed,
        per_second: run.per_second,
        latency_us: latency.encode(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
