//! `mesh bench`'s N-process baseline: as many plain-rdkafka worker processes as the mesh has agent processes, each
//! a producer and a consumer reading its own partition, together offering the mesh's rate with messages of its
//! size. Set next to the one-process baseline (what Kafka itself sustains here), it separates what the mesh's own
//! logic costs from what N client processes on one machine cost anyway.
//!
//! The workers are the `mesh` binary (`mesh bench-worker`, hidden): each prints one [`WorkerReport`] as a JSON line
//! with its counts, its per-second deliveries and its latency histogram; the fleet merges them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_node::latency::Latency;
use serde::{Deserialize, Serialize};

use super::error::Error;

/// One worker's result, as it prints it: the contract between `mesh bench-worker` and the fleet that reads it.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Messages sent in the measured window.
    pub sent: u64,
    /// Messages of the window received.
    pub received: u64,
    /// Sends that failed.
    pub failed: u64,
    /// Messages received in each second of the window.
    pub per_second: Vec<u64>,
    /// HdrHistogram V2, base64 (`Latency::encode`).
    pub latency_us: String,
}

/// What the fleet measured, merged over its workers.
#[derive(Debug, Default)]
pub(crate) struct FleetRun {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) failed: u64,
    pub(crate) per_second: Vec<u64>,
    pub(crate) latency: Latency,
}

/// The fleet to run.
pub(crate) struct FleetSpec<'a> {
    /// The `mesh` binary, whose `bench-worker` each worker runs.
    pub(crate) program: &'a Path,
    pub(crate) kafka: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) partitions: u32,
    pub(crate) workers: usize,
    pub(crate) rate: f64,
    pub(crate) payload_bytes: usize,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) fetch_wait: Duration,
    /// Niceness of every worker (the mesh's agents run at the same).
    pub(crate) nice: i8,
    /// The cgroup every worker starts in (the agents' too).
    pub(crate) cgroup: Option<&'a Path>,
}

/// Starts the workers, lets them run, merges what they report. Workers are killed (by PID) if the caller gives up.
pub(crate) fn run(spec: &FleetSpec<'_>, interrupted: impl Fn() -> bool) -> Result<FleetRun, Error> {
    // Every worker starts sending at the same moment, once all have had time to start and connect: 3 s plus 20 ms
    // per process on two cores.
    let allowance = Duration::from_secs(3) + Duration::from_millis(20) * u32::try_from(spec.workers).unwrap_or(0);
    let start_at_us = mesh_node::now_us() + u64::try_from(allowance.as_micros()).unwrap_or(u64::MAX);
    #[expect(clippy::cast_precision_loss, reason = "a worker count")]
    let share = spec.rate / spec.workers.max(1) as f64;
    let mut children: Vec<Child> = Vec::with_capacity(spec.workers);
    let stop_all = |children: &mut Vec<Child>| {
        for c in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for index in 0..spec.workers {
        let mut cmd = Command::new(spec.program);
        if spec.nice != 0 {
            mesh_supervisor::child::at_nice(&mut cmd, spec.nice);
        }
        if let Some(dir) = spec.cgroup
            && let Err(source) = mesh_supervisor::child::in_cgroup(&mut cmd, dir)
        {
            stop_all(&mut children);
            return Err(Error::StartWorker { index, source });
        }
        let child = cmd
            .arg("bench-worker")
            .args(["--kafka", spec.kafka, "--topic", spec.topic])
            .args(["--partitions", &spec.partitions.to_string()])
            .args(["--workers", &spec.workers.to_string(), "--index", &index.to_string()])
            .args(["--rate", &share.to_string(), "--payload-bytes", &spec.payload_bytes.to_string()])
            .args(["--warmup-ms", &spec.warmup.as_millis().to_string()])
            .args(["--duration-ms", &spec.duration.as_millis().to_string()])
            .args(["--start-at-us", &start_at_us.to_string()])
            .args(["--fetch-wait-ms", &spec.fetch_wait.as_millis().to_string()])
            .env("RUST_LOG", "warn,rdkafka=error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(source) => {
                stop_all(&mut children);
                return Err(Error::StartWorker { index, source });
            }
        }
    }
    let mut merged = FleetRun::default();
    let mut failures = Vec::new();
    for (index, child) in children.iter_mut().enumerate() {
        if interrupted() {
            break;
        }
        let read = |source| Error::ReadWorker { index, source };
        let out = child.stdout.take().ok_or(Error::WorkerNoStdout { index })?;
        let line = BufReader::new(out).lines().next().transpose().map_err(read)?.unwrap_or_default();
        let status = child.wait().map_err(read)?;
        match serde_json::from_str::<WorkerReport>(&line) {
            Ok(r) if status.success() => {
                merged.sent += r.sent;
                merged.received += r.received;
                merged.failed += r.failed;
                if merged.per_second.len() < r.per_second.len() {
                    merged.per_second.resize(r.per_second.len(), 0);
                }
                for (slot, n) in merged.per_second.iter_mut().zip(&r.per_second) {
                    *slot += n;
                }
                let latency =
                    Latency::decode(&r.latency_us).map_err(|reason| Error::WorkerLatency { index, reason })?;
                merged.latency.add(&latency);
            }
            _ => failures.push(format!("worker {index} exited with {status}")),
        }
    }
    stop_all(&mut children);
    if interrupted() {
        return Err(Error::WorkersInterrupted);
    }
    if failures.len() > spec.workers / 10 {
        return Err(Error::WorkersFailed { failed: failures.len(), workers: spec.workers, which: failures });
    }
    Ok(merged)
}
