//! Plain Kafka next to the mesh, on the same broker in the same run: the unmeasured broker warm-up, the
//! one-process baseline (a plain producer and consumer at the mesh's rate, with messages of a task's size) and the
//! N-process baseline (`fleet`). Every client here produces as the agents do, so a ratio compares
//! the mesh with Kafka under the same guarantees.

use std::time::Duration;

use indicatif::ProgressBar;
use mesh_kafka::baseline::{self, BaselineSpec};
use mesh_kafka::{KafkaBus, KafkaConfig, ProducerMode};
use mesh_node::latency::Latency;
use mesh_proto::records::Record;
use mesh_transport::{Bus, TopicSpec};

use super::error::Error;
use super::fleet::{self, FleetSpec};
use super::infra::Infra;
use super::interrupt::{check_interrupted, interrupted};
use super::options::MeshBinary;
use super::plan::Plan;
use super::progress::{bar, done};
use crate::report::{Baseline, Percentiles, Sample};

/// The lowest rate of the broker warm-up: compilation needs invocations, and a higher rate gets them sooner.
const WARMUP_MIN_RATE: f64 = 5_000.0;

/// A baseline client's settings: the agents' producer (one request in flight, `acks=all`, the default linger), so
/// the ratio compares the mesh with Kafka under the same guarantees. Public for the baseline workers, which the
/// `mesh` binary runs.
pub fn baseline_config(kafka: &str, client: impl Into<String>) -> KafkaConfig {
    KafkaConfig { producer: ProducerMode::OneRequestInFlight, ..KafkaConfig::new(kafka, client) }
}

/// Size of a task record as agents write it: the baseline sends messages of this size.
pub(crate) fn typical_message_bytes() -> usize {
    let mut scenario = mesh_node::scenario::Scenario::new("sales", 7, 0);
    let Some(draft) = scenario.next_task() else { return 256 };
    let (Ok(from), Ok(to)) = (mesh_core::AgentId::new("b0001"), mesh_core::AgentId::new("b0003")) else { return 256 };
    let body = mesh_proto::records::TaskBody { from, to, task: draft.task.to_owned(), payload: draft.payload };
    let env = mesh_proto::Envelope {
        header: mesh_proto::Header { id: "b0001-1764000000000-000042".into(), ts: mesh_node::now_ms() },
        record: Record::Task(body),
    };
    mesh_proto::encode(&env).len()
}

/// Creates a plain topic, giving a broker that does not answer 60 s.
async fn ensure_topic(infra: &Infra, bus: &KafkaBus, topic: TopicSpec) -> Result<(), Error> {
    infra.create_on_embedded(std::slice::from_ref(&topic))?;
    let kafka = &infra.kafka;
    let name = topic.name.clone();
    tokio::time::timeout(Duration::from_secs(60), bus.ensure_topics(&[topic]))
        .await
        .map_err(|_| Error::TopicTimeout { kafka: kafka.to_owned(), topic: name.clone() })?
        .map_err(|source| Error::CreateTopic { kafka: kafka.to_owned(), topic: name, source })
}

/// The one-process baseline at the plan's rate, and its deliveries per second.
pub(crate) async fn run_baseline(
    infra: &Infra,
    plan: &Plan,
    payload_bytes: usize,
) -> Result<(Baseline, Vec<Sample>), Error> {
    let pb = bar((plan.warmup + plan.duration).as_secs(), "baseline");
    pb.set_message(format!("plain rdkafka, {:.0} msg/s of {payload_bytes} B", plan.offered_msgs_per_s));
    let cpu_before = infra.broker_cpu();
    let spec = BaselineSpec {
        topic: format!("{}-baseline", plan.prefix),
        partitions: i32::try_from(plan.partitions).unwrap_or(i32::MAX),
        workers: 1,
        index: 0,
        rate: plan.offered_msgs_per_s,
        payload_bytes,
        warmup: plan.warmup,
        duration: plan.duration,
        start_at_us: None,
    };
    let run = plain_traffic(infra, "mesh-bench-baseline", &spec, &pb).await?;
    let broker_cpu = infra.broker_cpu();
    done(
        &pb,
        format!(
            "{} of {} received{}",
            run.received,
            run.sent,
            match (cpu_before, broker_cpu) {
                (Some(a), Some(b)) => format!(", broker CPU {:.1} s", b - a),
                _ => String::new(),
            }
        ),
    );
    let mut h = Latency::new();
    for us in &run.latencies_us {
        h.record(*us);
    }
    #[expect(clippy::cast_precision_loss, reason = "rates for display")]
    let baseline = Baseline {
        processes: 1,
        offered_msgs_per_s: plan.offered_msgs_per_s,
        payload_bytes,
        sent: run.sent,
        received: run.received,
        delivered_per_s: run.received as f64 / plan.duration.as_secs_f64(),
        latency: Percentiles::of(h.histogram()),
    };
    #[expect(clippy::cast_precision_loss, reason = "rates for display")]
    let timeline =
        run.per_second.iter().zip(0u32..).map(|(n, t)| Sample { t_s: f64::from(t), mesh_per_s: *n as f64 }).collect();
    Ok((baseline, timeline))
}

/// Runs one plain producer and consumer (`spec`) on its own topic, ticking `pb` each second; an interrupt ends it.
async fn plain_traffic(
    infra: &Infra,
    client: &str,
    spec: &BaselineSpec,
    pb: &ProgressBar,
) -> Result<baseline::BaselineRun, Error> {
    let config = baseline_config(&infra.kafka, client);
    let bus =
        KafkaBus::new(config.clone()).map_err(|source| Error::KafkaClient { kafka: infra.kafka.clone(), source })?;
    let topic = TopicSpec {
        name: spec.topic.clone(),
        partitions: u32::try_from(spec.partitions).unwrap_or(1),
        compacted: false,
        retention: Some(Duration::from_secs(3600)),
    };
    ensure_topic(infra, &bus, topic).await?;
    let ticker = {
        let pb = pb.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(1));
            loop {
                t.tick().await;
                pb.inc(1);
            }
        })
    };
    let stop = async {
        while check_interrupted().is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let run = tokio::select! {
        run = baseline::run(&config, spec) => {
            run.map_err(|source| Error::PlainTraffic { topic: spec.topic.clone(), source })
        }
        () = stop => Err(Error::Interrupted),
    };
    ticker.abort();
    run
}

/// Sends plain traffic through the broker, unmeasured, before the mesh or a baseline is: a broker the run has just
/// started runs interpreted until its JVM has compiled the request paths, and on two cores it then takes about twice
/// the CPU per request (measured: 1.28 cores for the first minute of a 4-agent run at 1,000 msg/s, 0.72 after), which
/// alone made the mesh's p99 30 to 60 times the baseline's, while the baselines, run last, met a warm broker.
pub(crate) async fn warm_broker(infra: &Infra, plan: &Plan, payload_bytes: usize) -> Result<(), Error> {
    let rate = plan.offered_msgs_per_s.max(WARMUP_MIN_RATE);
    let pb = bar(plan.broker_warmup.as_secs(), "broker warm");
    pb.set_message(format!("plain rdkafka, {rate:.0} msg/s, not measured"));
    let spec = BaselineSpec {
        topic: format!("{}-warmup", plan.prefix),
        partitions: i32::try_from(plan.partitions).unwrap_or(i32::MAX),
        workers: 1,
        index: 0,
        rate,
        payload_bytes,
        warmup: Duration::ZERO,
        duration: plan.broker_warmup,
        start_at_us: None,
    };
    let run = plain_traffic(infra, "mesh-bench-warmup", &spec, &pb).await?;
    done(
        &pb,
        format!("{:.0} s, {} of {} plain records received", plan.broker_warmup.as_secs_f64(), run.received, run.sent),
    );
    Ok(())
}

/// The N-process baseline: as many plain-rdkafka worker processes as the mesh has agent processes.
pub(crate) fn run_fleet_baseline(
    infra: &Infra,
    plan: &Plan,
    payload_bytes: usize,
    binary: &MeshBinary,
) -> Result<Baseline, Error> {
    let topic = format!("{}-baseline-n", plan.prefix);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    runtime.block_on(async {
        let bus = KafkaBus::new(KafkaConfig::new(&infra.kafka, "mesh-bench-baseline-n"))
            .map_err(|source| Error::KafkaClient { kafka: infra.kafka.clone(), source })?;
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: plan.partitions,
            compacted: false,
            retention: Some(Duration::from_secs(3600)),
        };
        ensure_topic(infra, &bus, spec).await
    })?;
    let n = plan.baseline_processes;
    let pb = bar((plan.warmup + plan.duration).as_secs(), "baseline-n");
    pb.set_message(format!("{n} plain rdkafka processes, {:.0} msg/s of {payload_bytes} B", plan.offered_msgs_per_s));
    let ticking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticker = {
        let (pb, ticking) = (pb.clone(), ticking.clone());
        std::thread::spawn(move || {
            while ticking.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(1));
                pb.inc(1);
            }
        })
    };
    let spec = FleetSpec {
        program: &binary.program,
        kafka: &infra.kafka,
        topic: &topic,
        partitions: plan.partitions,
        workers: n,
        rate: plan.offered_msgs_per_s,
        payload_bytes,
        warmup: plan.warmup,
        duration: plan.duration,
        fetch_wait: binary.fetch_wait,
        nice: plan.client_nice,
        cgroup: plan.client_cgroup.as_deref(),
    };
    let run = fleet::run(&spec, interrupted);
    ticking.store(false, std::sync::atomic::Ordering::SeqCst);
    let _ = ticker.join();
    let run = run?;
    done(&pb, format!("{} of {} received by {n} processes", run.received, run.sent));
    #[expect(clippy::cast_precision_loss, reason = "rates for display")]
    Ok(Baseline {
        processes: n,
        offered_msgs_per_s: plan.offered_msgs_per_s,
        payload_bytes,
        sent: run.sent,
        received: run.received,
        delivered_per_s: run.received as f64 / plan.duration.as_secs_f64(),
        latency: Percentiles::of(run.latency.histogram()),
    })
}
