//! `mesh bench`: how far the mesh scales on a real broker, next to plain Kafka on the same machine in the same run.
//!
//! Phases: infrastructure (a real Apache Kafka and redis-server on loopback by default), the mesh through the
//! supervisor (two managers and N agent processes), ramp-up until every agent is live and the full mesh exists,
//! warm-up, the measured window, the idle-edge pruning, and last, on the same broker now idle and warm, the
//! plain-rdkafka baseline. Figures come from
//! where they happen: agents publish HdrHistograms of what they handled to Redis (merged and windowed here), the
//! consensus latency from the proposal and decision records in Kafka, the graph from the topology manager's stats,
//! CPU and peak RSS from `/proc`. docs/bench.md explains each figure and the JSON schema.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use mesh_bench::report::{
    Baseline, Consensus, Cost, Idle, Join, Messages, Peak, PeakStep, Percentiles, ProfileSummary, Ratios, Report,
    RunConfig, SCHEMA, Sample, TargetCheck, Topology, Windows,
};
use mesh_fixtures::LocalKafka;
use mesh_kafka::baseline::{self, BaselineSpec};
use mesh_kafka::{EmbeddedKafka, KafkaBus, KafkaConfig, ProducerMode};
use mesh_node::SettingsFile;
use mesh_node::latency::Latency;
use mesh_node::settings_file::{AgentSettings, TopologySettings};
use mesh_proto::read_model::{AgentStats, TopologyStats, redis_keys};
use mesh_proto::records::Record;
use mesh_proto::{TopicKind, TopicNames, decode};
use mesh_redis::AnyStore;
use mesh_supervisor::{DeploymentFile, FileProcess, LaunchError, LaunchSpec, Launched, ProcState, StateDir, StateFile};
use mesh_transport::{Assignment, Bus, Reader, SnapshotStore, StartAt, TopicSpec};

use crate::cli::{BenchArgs, BenchInfra};

/// Offered rates of the peak search (`--rate max`), in messages per second: the mesh is tried until it no longer
/// sustains a rate, the baseline on until it does not either.
const PEAK_RATES: [f64; 9] = [1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0, 320_000.0];

/// Task rate per agent and proposal spacing for `offered` messages per second (every task is answered: two
/// messages per task) and `proposals_per_s` proposals in total.
fn paced(agents: usize, offered: f64, proposals_per_s: f64) -> (f64, u32) {
    #[expect(clippy::cast_precision_loss, reason = "agent counts are small")]
    let n = agents.max(1) as f64;
    let task_rate = offered / 2.0 / n;
    let proposal_every = if proposals_per_s == 0.0 {
        0
    } else {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "rounded, at least 1")]
        let every = (n * PROPOSING_SHARE * task_rate / proposals_per_s).round().max(1.0) as u32;
        every
    };
    (task_rate, proposal_every)
}

/// Roles of the e-commerce scenario, dealt round-robin; all but support make proposals.
const ROLES: [&str; 4] = ["sales", "support", "inventory", "fraud"];
const PROPOSING_SHARE: f64 = 0.75;

/// Everything the run needs, validated.
#[derive(Clone)]
struct Plan {
    agents: usize,
    agents_per_process: usize,
    duration: Duration,
    warmup: Duration,
    /// Plain traffic before anything is measured, to warm the broker's JVM.
    broker_warmup: Duration,
    ramp_timeout: Duration,
    offered_msgs_per_s: f64,
    task_rate: f64,
    proposals_per_s: f64,
    proposal_every: u32,
    partitions: u32,
    decay_interval: Duration,
    prefix: String,
    state_dir: PathBuf,
    cores: usize,
    /// `--rate max`: step the rate up instead of one run.
    peak_search: bool,
    /// Worker processes of the N-process baseline (0 or 1: none).
    baseline_processes: usize,
    /// A run with no traffic first, for the idle cost.
    idle_phase: bool,
    /// CPU profiles over the measured window.
    profile: bool,
    /// Wait for the idle full mesh to be pruned after the window.
    probe_pruning: bool,
}

fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    humantime::parse_duration(text).map_err(|e| anyhow!("invalid {flag} {text:?}: {e}; write for example \"30s\""))
}

impl Plan {
    fn new(args: &BenchArgs, started_at_ms: u64) -> Result<Self> {
        if args.agents < 2 {
            bail!("invalid --agents {}: the mesh needs at least 2 agents", args.agents);
        }
        if args.agents_per_process == 0 || args.agents_per_process > args.agents {
            bail!(
                "invalid --agents-per-process {}: give 1 (each agent its own process) up to --agents",
                args.agents_per_process
            );
        }
        let local = matches!((args.infra, &args.kafka), (Some(BenchInfra::Local), _) | (None, None));
        if args.brokers > 1 && !local {
            bail!(
                "invalid --brokers {}: it sizes the Kafka cluster the run starts (the local infrastructure, the \
                 default without --kafka); a given Kafka is sized by whoever runs it, the embedded broker is one node",
                args.brokers
            );
        }
        if args.hosts > 1 && !local {
            bail!(
                "invalid --hosts {}: simulated hosts reach the Kafka and Redis the run starts (the local \
                 infrastructure, the default without --kafka) over their bridge",
                args.hosts
            );
        }
        let duration = parse_duration("--duration", &args.duration)?;
        if duration < Duration::from_secs(1) {
            bail!("invalid --duration {:?}: measure for at least 1s", args.duration);
        }
        #[expect(clippy::cast_precision_loss, reason = "agent counts are small")]
        let n = args.agents as f64;
        let (offered, peak_search) = match args.rate.as_deref() {
            None => (20.0 * n, false),
            Some("max") => (PEAK_RATES[0], true),
            Some(text) => match text.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 => (r, false),
                _ => bail!("invalid --rate {text:?}: give the messages per second to offer, above 0, or `max`"),
            },
        };
        if !(args.proposals_per_sec.is_finite() && args.proposals_per_sec >= 0.0) {
            bail!("invalid --proposals-per-sec {}: 0 or more", args.proposals_per_sec);
        }
        let (task_rate, proposal_every) = paced(args.agents, offered, args.proposals_per_sec);
        let partitions = args.messages_partitions.unwrap_or_else(|| u32::try_from(args.agents.max(8)).unwrap_or(8));
        if partitions == 0 {
            bail!("invalid --messages-partitions 0: a topic needs at least one partition");
        }
        Ok(Self {
            agents: args.agents,
            agents_per_process: args.agents_per_process,
            duration,
            warmup: parse_duration("--warmup", &args.warmup)?,
            broker_warmup: match &args.broker_warmup {
                Some(text) => parse_duration("--broker-warmup", text)?,
                // Only a broker this run starts is known to be cold.
                None if matches!((args.infra, &args.kafka), (Some(BenchInfra::Local), _) | (None, None)) => {
                    DEFAULT_BROKER_WARMUP
                }
                None => Duration::ZERO,
            },
            ramp_timeout: parse_duration("--ramp-timeout", &args.ramp_timeout)?,
            offered_msgs_per_s: offered,
            task_rate,
            proposals_per_s: args.proposals_per_sec,
            proposal_every,
            partitions,
            decay_interval: parse_duration("--decay-interval", &args.decay_interval)?,
            prefix: format!("meshbench-{}", started_at_ms / 1000),
            state_dir: crate::up::absolute(&args.state_dir)?,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            peak_search,
            baseline_processes: args
                .baseline_processes
                .unwrap_or_else(|| args.agents.div_ceil(args.agents_per_process.max(1))),
            idle_phase: args.idle,
            profile: args.profile,
            probe_pruning: !peak_search,
        })
    }

    /// The same run at another offered rate, under its own topic prefix (a step of the peak search, or the idle
    /// run at rate 0).
    fn at_rate(&self, offered: f64, tag: &str) -> Plan {
        let (task_rate, proposal_every) =
            if offered > 0.0 { paced(self.agents, offered, self.proposals_per_s) } else { (0.0, 0) };
        Plan {
            offered_msgs_per_s: offered,
            task_rate,
            proposal_every,
            prefix: format!("{}-{tag}", self.prefix),
            ..self.clone()
        }
    }

    fn agent_name(i: usize) -> String {
        format!("b{i:04}")
    }

    fn agent_processes(&self) -> usize {
        self.agents.div_ceil(self.agents_per_process)
    }
}

/// Where Kafka and Redis are, and the ones this run started (stopped when dropped).
struct Infra {
    kafka: String,
    redis: String,
    label: &'static str,
    /// Every Kafka node this run started (one, or a cluster's).
    broker_pids: Vec<i32>,
    redis_pid: Option<i32>,
    _local: Option<(LocalKafka, mesh_fixtures::RedisServer)>,
    _embedded: Option<EmbeddedKafka>,
    /// The simulated hosts agents run on, if `--hosts` asked for them (removed after the servers stop).
    hosts: Option<Hosts>,
}

/// Simulated hosts, and where they reach the run's Kafka and Redis (listeners on the bridge's address).
struct Hosts {
    network: mesh_fixtures::netns::Network,
    kafka: String,
    redis: String,
}

/// The bootstrap list a simulated host is given: every node's listener on the bridge.
fn host_bootstrap(kafka: &LocalKafka) -> String {
    let listeners = kafka.client_listeners();
    listeners.iter().map(|l| format!("{}:{}", l.advertised_host, l.advertised_port)).collect::<Vec<_>>().join(",")
}

impl Infra {
    /// CPU seconds of every Kafka node this run started, together (none for a broker it did not start).
    fn broker_cpu(&self) -> Option<f64> {
        let used: Vec<f64> =
            self.broker_pids.iter().filter_map(|p| mesh_supervisor::child::usage(*p)).map(|u| u.0).collect();
        (!used.is_empty()).then(|| used.iter().sum())
    }

    /// The infrastructure processes this run started, named as in the cost table: `kafka` (or `kafka-N` per node
    /// of a cluster) and `redis`.
    fn infrastructure_pids(&self) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = match self.broker_pids.as_slice() {
            [one] => vec![("kafka".to_owned(), *one)],
            nodes => nodes.iter().enumerate().map(|(i, pid)| (format!("kafka-{}", i + 1), *pid)).collect(),
        };
        out.extend(self.redis_pid.map(|pid| ("redis".to_owned(), pid)));
        out
    }

    fn start(args: &BenchArgs, plan: &Plan, mesh: &mesh_node::MeshConfig) -> Result<Self> {
        match (args.infra, &args.kafka) {
            (Some(BenchInfra::Local), _) | (None, None) => {
                mesh_fixtures::ensure_kafka_jars().context("failed to provision the Kafka jars (Maven Central)")?;
                let pid = |p: Option<u32>| p.and_then(|p| i32::try_from(p).ok());
                let network = if args.hosts > 1 {
                    eprintln!(
                        "creating {} simulated hosts (network namespaces on a bridge) for the agents",
                        args.hosts
                    );
                    Some(mesh_fixtures::netns::Network::create(args.hosts).context("--hosts")?)
                } else {
                    None
                };
                // With hosts, every node gets a listener on the bridge's address, which it advertises to them.
                let bridge = network.as_ref().map(mesh_fixtures::netns::Network::bridge_addr);
                let host_listener = || -> Result<Vec<mesh_fixtures::ClientListener>> {
                    let Some(addr) = bridge else { return Ok(Vec::new()) };
                    let port = mesh_fixtures::free_port()?;
                    Ok(vec![mesh_fixtures::ClientListener {
                        name: "HOSTS".into(),
                        port,
                        listen_host: addr,
                        advertised_port: port,
                        advertised_host: addr,
                    }])
                };
                if args.brokers == 1 {
                    eprintln!("starting Apache Kafka (KRaft, single node) and redis-server on loopback for this run");
                } else {
                    eprintln!(
                        "starting a {}-node Apache Kafka cluster (KRaft; every topic {} replicas) and redis-server on \
                         loopback for this run",
                        args.brokers,
                        args.brokers.min(3)
                    );
                }
                let listeners = (0..args.brokers.max(1)).map(|_| host_listener()).collect::<Result<_>>()?;
                let mut kafka = LocalKafka::start(listeners).context("failed to start the local Kafka")?;
                let broker_pids = kafka.pids().into_iter().filter_map(|p| pid(Some(p))).collect();
                let bootstrap = kafka.bootstrap();
                let redis = mesh_fixtures::RedisServer::start(mesh_fixtures::RedisOptions {
                    also_bind: bridge,
                    ..mesh_fixtures::RedisOptions::default()
                })
                .context("failed to start redis-server")?;
                let hosts = match network {
                    Some(network) => {
                        let redis = redis.url_also().unwrap_or_default();
                        Some(Hosts { kafka: host_bootstrap(&kafka), redis, network })
                    }
                    None => None,
                };
                Ok(Self {
                    hosts,
                    kafka: bootstrap,
                    redis: redis.url(),
                    label: "local",
                    broker_pids,
                    redis_pid: pid(redis.pid()),
                    _local: Some((kafka, redis)),
                    _embedded: None,
                })
            }
            (None, Some(kafka)) => {
                let kafka = kafka.clone();
                let redis =
                    args.redis.clone().ok_or_else(|| anyhow!("--redis redis://HOST:PORT is needed with --kafka"))?;
                Ok(Self {
                    kafka,
                    redis,
                    label: "external",
                    broker_pids: Vec::new(),
                    redis_pid: None,
                    _local: None,
                    _embedded: None,
                    hosts: None,
                })
            }
            (Some(BenchInfra::Embedded), _) => {
                eprintln!("embedded mock broker: figures are not comparable with a real Kafka");
                let embedded = EmbeddedKafka::start(&mesh_node::topic_specs(mesh))
                    .context("failed to start the embedded broker")?;
                let store = plan.state_dir.join("store");
                Ok(Self {
                    kafka: embedded.bootstrap(),
                    redis: format!("file://{}", store.display()),
                    label: "embedded",
                    broker_pids: Vec::new(),
                    redis_pid: None,
                    _local: None,
                    _embedded: Some(embedded),
                    hosts: None,
                })
            }
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} {prefix:<12} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(what.to_owned());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Set on SIGINT/SIGTERM: every phase checks it, and the deployment is taken down on the way out.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        bail!("interrupted: the bench deployment and infrastructure are being stopped");
    }
    Ok(())
}

async fn watch_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return;
    };
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    eprintln!("interrupted: stopping the bench deployment and its infrastructure");
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Ends a phase: the bar's last line on a terminal, a plain line otherwise (logs, CI).
fn done(pb: &ProgressBar, message: String) {
    if pb.is_hidden() {
        eprintln!("{:<12} {message}", pb.prefix());
    }
    pb.finish_with_message(message);
}

/// Runs `mesh bench`.
pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    let started_at_ms = mesh_node::now_ms();
    let plan = Plan::new(args, started_at_ms).map_err(crate::usage)?;
    let compare = match &args.compare {
        Some(path) => Some(read_report(path)?),
        None => None,
    };
    let mesh = mesh_node::MeshConfig {
        topics: TopicNames::new(plan.prefix.clone()),
        messages_partitions: plan.partitions,
        consensus_partitions: 4,
        ..mesh_node::MeshConfig::default()
    };
    std::fs::create_dir_all(&plan.state_dir)
        .with_context(|| format!("failed to create {}", plan.state_dir.display()))?;
    let infra = Infra::start(args, &plan, &mesh)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;

    runtime.spawn(watch_signals());
    let payload_bytes = typical_message_bytes();
    if !plan.broker_warmup.is_zero() {
        runtime.block_on(warm_broker(&infra, &plan, payload_bytes))?;
    }
    let mut report = Report {
        schema: SCHEMA.to_owned(),
        started_at_ms,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config: RunConfig {
            agents: plan.agents,
            agents_per_process: plan.agents_per_process,
            agent_processes: plan.agent_processes(),
            infra: infra.label.to_owned(),
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            broker_warmup_s: plan.broker_warmup.as_secs_f64(),
            kafka_nodes: args.brokers,
            hosts: args.hosts,
            task_rate_per_agent: plan.task_rate,
            offered_msgs_per_s: plan.offered_msgs_per_s,
            proposals_per_s: plan.proposals_per_s,
            messages_partitions: plan.partitions,
            decay_interval_ms: u64::try_from(plan.decay_interval.as_millis()).unwrap_or(u64::MAX),
            cores: plan.cores,
        },
        ..Report::default()
    };
    if plan.peak_search {
        report.peak = Some(run_peak_search(&plan, &infra, &runtime, payload_bytes, &mut report)?);
    } else if !args.baseline {
        let mut deployment = Deployment::start(&plan, &infra)?;
        let outcome =
            runtime.block_on(measure_mesh(&plan, &infra, &mut deployment, &mut report, args.report.as_deref()));
        let stopped = deployment.stop();
        outcome?;
        stopped?;
        // After the traffic run, so that one always meets a fresh broker; a failure here loses only this figure.
        if plan.idle_phase {
            let idle_plan = plan.at_rate(0.0, "idle");
            let measured = Deployment::start(&idle_plan, &infra).and_then(|mut deployment| {
                let outcome = runtime.block_on(measure_idle(&idle_plan, &infra, &mut deployment));
                let stopped = deployment.stop();
                let idle = outcome?;
                stopped?;
                Ok(idle)
            });
            match measured {
                Ok(idle) => report.idle = Some(idle),
                Err(e) => eprintln!("idle run failed, its figures are missing from the report: {e:#}"),
            }
        }
    }
    // The baselines run after the mesh, on a broker that is warm (JIT, page cache) and idle again: run first, they
    // measured the broker's own start-up as much as Kafka.
    if !args.no_baseline && !plan.peak_search {
        let (b, timeline) = runtime.block_on(run_baseline(&infra, &plan, payload_bytes))?;
        report.baseline = Some(b);
        report.baseline_timeline = timeline;
    }
    if !args.no_baseline && plan.baseline_processes > 1 && !plan.peak_search {
        report.baseline_processes = Some(run_fleet_baseline(&infra, &plan, payload_bytes)?);
    }
    finish(&mut report);
    print!("{}", report.table());
    if let Some(old) = &compare {
        println!("\ncompared with {}:", args.compare.as_deref().unwrap_or(Path::new("")).display());
        print!("{}", report.compare(old));
    }
    write_outputs(args, &report)?;
    drop(infra);
    Ok(())
}

fn read_report(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("failed to read {}", path.display()))?;
    let report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a mesh bench JSON report ({SCHEMA})", path.display()))?;
    if report.schema != SCHEMA {
        bail!("{} has schema {:?}; this mesh reads {SCHEMA}", path.display(), report.schema);
    }
    Ok(report)
}

fn write_outputs(args: &BenchArgs, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, &json).with_context(|| format!("failed to write {}", path.display()))?;
        eprintln!("JSON report: {}", path.display());
    }
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
        std::fs::write(dir.join("bench.json"), &json)?;
        let svg = mesh_bench::svg::render(report)?;
        std::fs::write(dir.join("bench.svg"), svg)?;
        eprintln!("report: {}/bench.svg and bench.json", dir.display());
    }
    Ok(())
}

/// Size of a task record as agents write it: the baseline sends messages of this size.
fn typical_message_bytes() -> usize {
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

async fn run_baseline(infra: &Infra, plan: &Plan, payload_bytes: usize) -> Result<(Baseline, Vec<Sample>)> {
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

/// A baseline client's settings: the agents' producer (one request in flight, `acks=all`, the default linger), so
/// the ratio compares the mesh with Kafka under the same guarantees.
pub(crate) fn baseline_config(kafka: &str, client: impl Into<String>) -> KafkaConfig {
    KafkaConfig { producer: ProducerMode::OneRequestInFlight, ..KafkaConfig::new(kafka, client) }
}

/// Runs one plain producer and consumer (`spec`) on its own topic, ticking `pb` each second; an interrupt ends it.
async fn plain_traffic(
    infra: &Infra,
    client: &str,
    spec: &BaselineSpec,
    pb: &ProgressBar,
) -> Result<baseline::BaselineRun> {
    let config = baseline_config(&infra.kafka, client);
    let bus = KafkaBus::new(config.clone())?;
    let topic = TopicSpec {
        name: spec.topic.clone(),
        partitions: u32::try_from(spec.partitions).unwrap_or(1),
        compacted: false,
        retention: Some(Duration::from_secs(3600)),
    };
    tokio::time::timeout(Duration::from_secs(60), bus.ensure_topics(&[topic]))
        .await
        .map_err(|_| anyhow!("Kafka at {} did not create topic {} within 60 s", infra.kafka, spec.topic))??;
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
    let interrupted = async {
        while check_interrupted().is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let run = tokio::select! {
        run = baseline::run(&config, spec) => run.map_err(anyhow::Error::from),
        () = interrupted => Err(anyhow!("interrupted: the bench deployment and infrastructure are being stopped")),
    };
    ticker.abort();
    run
}

/// The lowest rate of the broker warm-up: compilation needs invocations, and a higher rate gets them sooner.
const WARMUP_MIN_RATE: f64 = 5_000.0;

/// How long a broker this run started is warmed up by default.
const DEFAULT_BROKER_WARMUP: Duration = Duration::from_secs(30);

/// Sends plain traffic through the broker, unmeasured, before the mesh or a baseline is: a broker the run has just
/// started runs interpreted until its JVM has compiled the request paths, and on two cores it then takes about twice
/// the CPU per request (measured: 1.28 cores for the first minute of a 4-agent run at 1,000 msg/s, 0.72 after), which
/// alone made the mesh's p99 30 to 60 times the baseline's, while the baselines, run last, met a warm broker.
async fn warm_broker(infra: &Infra, plan: &Plan, payload_bytes: usize) -> Result<()> {
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

/// One supervisor of the bench deployment, detached in its own session: the whole deployment, or (with simulated
/// hosts) the managers' share or one host's agents.
struct Supervisor(Launched);

/// How long a bench supervisor has to stop after its SIGTERM: 500 collapsing agents on two cores take about two
/// minutes.
const STOP_GRACE: Duration = Duration::from_secs(180);

impl Supervisor {
    /// Starts `mesh up` over `file` in `root`; `launcher` (`ip netns exec NS`) runs it on a simulated host, with
    /// `reach` (the Kafka bootstrap and Redis URL that host reaches) instead of the settings file's.
    fn spawn(
        root: &Path,
        config: &Path,
        file: &DeploymentFile,
        launcher: &[String],
        reach: Option<&Reach>,
    ) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let deployment = root.join("bench-deployment.toml");
        std::fs::write(&deployment, file.to_toml("written by `mesh bench` for one run")?)?;
        let mut args: Vec<std::ffi::OsString> = vec!["--config".into(), config.into(), "up".into()];
        if let Some(reach) = reach {
            args.extend(["--kafka".into(), reach.kafka.clone().into(), "--redis".into(), reach.redis.clone().into()]);
            args.extend(["--secret-file".into(), reach.secret_file.clone().into()]);
        }
        args.extend(["--file".into(), deployment.into(), "--state-dir".into(), root.into()]);
        args.push("--detached-child".into());
        let spec = LaunchSpec {
            program: std::env::current_exe().context("failed to locate the mesh binary")?,
            launcher: launcher.to_vec(),
            args,
            env: Vec::new(),
            state_dir: StateDir::new(root.to_path_buf()),
            log: root.join("supervisor.log"),
            // A supervisor starting or stopping hundreds of processes on two saturated cores can be slow to answer.
            answer_timeout: Duration::from_secs(30),
        };
        Ok(Self(Launched::spawn(&spec)?))
    }

    fn dir(&self) -> &StateDir {
        self.0.dir()
    }

    /// The supervisor's state; `None` while it is starting (no control socket yet). A supervisor slow to answer is
    /// asked again for up to 5 minutes, as long as it runs.
    fn status(&mut self) -> Result<Option<StateFile>> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            match self.0.status() {
                Err(LaunchError::Control { source, .. }) if Instant::now() >= deadline => {
                    bail!("the bench supervisor has not answered for 5 minutes: {source}")
                }
                Err(LaunchError::Control { source, .. }) => {
                    tracing::debug!(error = %source, "the bench supervisor did not answer; asking again");
                }
                answer => return Ok(answer?),
            }
            check_interrupted()?;
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Stops the deployment (SIGTERM: the ordered stop `mesh down` asks for) and waits for the supervisor to exit.
    fn stop(&mut self) -> Result<()> {
        Ok(self.0.stop(STOP_GRACE)?)
    }
}

/// What a simulated host's supervisor is given instead of the settings file's: the bridge addresses of Kafka and
/// Redis, and the managers' deployment secret (one secret for the whole deployment, or no record would be
/// believed across hosts).
struct Reach {
    kafka: String,
    redis: String,
    secret_file: PathBuf,
}

/// The bench deployment: one supervisor, or with simulated hosts the managers' and one per host.
struct Deployment {
    /// The managers' (or the only) supervisor first.
    supervisors: Vec<Supervisor>,
    spawned: Instant,
}

impl Deployment {
    fn start(plan: &Plan, infra: &Infra) -> Result<Self> {
        let root = plan.state_dir.join("run");
        if mesh_supervisor::InstanceLock::held(&StateDir::new(root.clone())) {
            bail!(
                "a bench deployment is still running in {}; `mesh down --state-dir {}` stops it",
                root.display(),
                root.display()
            );
        }
        if root.exists() {
            std::fs::remove_dir_all(&root).with_context(|| format!("failed to clear {}", root.display()))?;
        }
        std::fs::create_dir_all(&root)?;
        let config = root.join("bench-settings.toml");
        std::fs::write(&config, settings_file(plan, infra).to_toml("written by `mesh bench` for one run")?)?;
        let spawned = Instant::now();
        let Some(hosts) = &infra.hosts else {
            let only = Supervisor::spawn(&root, &config, &deployment_file(plan, None), &[], None)?;
            return Ok(Self { supervisors: vec![only], spawned });
        };
        let managers = Supervisor::spawn(&root, &config, &managers_file(), &[], None)?;
        let mut deployment = Self { supervisors: vec![managers], spawned };
        // A supervisor cannot wait on another's processes: the hosts start once the managers serve.
        deployment.wait_managers(plan.ramp_timeout)?;
        let count = hosts.network.hosts();
        let reach = Reach {
            kafka: hosts.kafka.clone(),
            redis: hosts.redis.clone(),
            secret_file: StateDir::new(root.clone()).secret(),
        };
        for host in 1..=count {
            let launcher = ["ip", "netns", "exec"].map(String::from).into_iter().chain([hosts.network.namespace(host)]);
            let launcher: Vec<String> = launcher.collect();
            let file = deployment_file(plan, Some((host, count)));
            let dir = root.join(format!("host-{host}"));
            deployment.supervisors.push(Supervisor::spawn(&dir, &config, &file, &launcher, Some(&reach))?);
        }
        Ok(deployment)
    }

    fn wait_managers(&mut self, timeout: Duration) -> Result<()> {
        self.supervisors[0]
            .0
            .wait_ready(timeout, || check_interrupted().is_ok())
            .context("the managers did not start")?;
        Ok(())
    }

    /// Every supervisor's processes in one state (the first supervisor's, with the others' processes added);
    /// `None` while one is starting.
    fn status(&mut self) -> Result<Option<StateFile>> {
        let mut merged: Option<StateFile> = None;
        for s in &mut self.supervisors {
            let Some(state) = s.status()? else { return Ok(None) };
            match merged.as_mut() {
                None => merged = Some(state),
                Some(m) => m.processes.extend(state.processes),
            }
        }
        Ok(merged)
    }

    fn state(&mut self) -> Result<StateFile> {
        self.status()?.ok_or_else(|| anyhow!("the bench supervisor stopped answering"))
    }

    /// The log of a process, in whichever supervisor's directory has it.
    fn log(&self, name: &str) -> PathBuf {
        let logs = self.supervisors.iter().map(|s| s.dir().log(name));
        let all: Vec<PathBuf> = logs.collect();
        all.iter().find(|p| p.exists()).or(all.first()).cloned().unwrap_or_else(|| PathBuf::from(name))
    }

    /// Stops the hosts, then the managers.
    fn stop(&mut self) -> Result<()> {
        let mut first_error = None;
        for s in self.supervisors.iter_mut().rev() {
            if let Err(e) = s.stop() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The settings every process of the run reads.
fn settings_file(plan: &Plan, infra: &Infra) -> SettingsFile {
    // The embedded broker holds empty fetches for the whole wait: the bench runs it as `mesh up` does.
    let fetch_wait = if infra.label == "embedded" {
        crate::settings::EMBEDDED_FETCH_WAIT.to_owned()
    } else {
        humantime::format_duration(crate::settings::DEFAULT_FETCH_WAIT).to_string()
    };
    SettingsFile {
        kafka: Some(infra.kafka.clone()),
        kafka_fetch_wait: Some(fetch_wait),
        redis: Some(infra.redis.clone()),
        topic_prefix: Some(plan.prefix.clone()),
        messages_partitions: Some(plan.partitions),
        consensus_partitions: Some(4),
        topology: TopologySettings {
            decay_interval: Some(humantime::format_duration(plan.decay_interval).to_string()),
            snapshot_interval: Some("5s".into()),
            ..TopologySettings::default()
        },
        agent: AgentSettings {
            rate: Some(plan.task_rate),
            proposal_every: Some(plan.proposal_every),
            start_after_members: Some(plan.agents),
            ..AgentSettings::default()
        },
        ..SettingsFile::default()
    }
}

/// Agents started at once: each later agent waits for the one `RAMP_WAVE` places before it to be READY, so start-up
/// comes in waves instead of hundreds of processes competing for the cores at the same moment (and missing their
/// readiness deadline).
const RAMP_WAVE: usize = 50;

/// The two managers, as processes of a deployment file.
fn managers_file() -> DeploymentFile {
    let manager = |name: &str| FileProcess {
        name: name.to_owned(),
        command: vec!["mesh".into(), name.to_owned()],
        watchdog: Some("60s".into()),
        ..FileProcess::default()
    };
    DeploymentFile { processes: vec![manager("topology"), manager("consensus")] }
}

/// The whole deployment (`host` `None`), or the agent processes of host `host` of `hosts`: agent process `p` runs
/// on host `p % hosts + 1`, and waits for the one a wave before it on the same host (a supervisor waits only on its
/// own processes; on a host the managers are elsewhere, already READY).
fn deployment_file(plan: &Plan, host: Option<(u32, u32)>) -> DeploymentFile {
    let on_host = |p: usize| host.is_none_or(|(h, n)| p % n as usize + 1 == h as usize);
    let mut processes = if host.is_none() { managers_file().processes } else { Vec::new() };
    let k = plan.agents_per_process;
    let hosts = host.map_or(1, |(_, n)| n as usize);
    let wave_size = (RAMP_WAVE / k).max(1).div_ceil(hosts) * hosts;
    let process_name = |p: usize| format!("agent-{}", Plan::agent_name(p * k));
    for p in (0..plan.agent_processes()).filter(|p| on_host(*p)) {
        let first = p * k;
        let name = Plan::agent_name(first);
        let role = ROLES[first % ROLES.len()];
        let mut command: Vec<String> = ["mesh", "agent", "--name", &name, "--role", role].map(String::from).into();
        let extra: Vec<String> = (first + 1..(first + k).min(plan.agents))
            .map(|i| format!("{}:{}", Plan::agent_name(i), ROLES[i % ROLES.len()]))
            .collect();
        if !extra.is_empty() {
            command.extend(["--extra-agent".to_owned(), extra.join(",")]);
        }
        let mut depends_on =
            if host.is_none() { vec!["topology".to_owned(), "consensus".to_owned()] } else { Vec::new() };
        if p >= wave_size {
            depends_on.push(process_name(p - wave_size));
        }
        processes.push(FileProcess {
            name: process_name(p),
            command,
            depends_on,
            watchdog: Some("120s".into()),
            ready_timeout: Some("300s".into()),
            ..FileProcess::default()
        });
    }
    DeploymentFile { processes }
}

/// What one agent had published at one moment.
#[derive(Default, Clone)]
struct AgentSnapshot {
    /// When this incarnation of the agent started: a restarted agent's counters and histograms begin again at zero.
    started_at_ms: u64,
    /// When the agent wrote these counters (`updated_at_ms`): they are up to a second old when read.
    updated_at_ms: u64,
    delivered: u64,
    /// In a window (`AgentTotals::since`): `delivered` over the time between the two writes it is the difference
    /// of, so the rate does not depend on how old the counters were when the bench read them.
    delivered_per_s: f64,
    delivery: Latency,
    round_trip: Latency,
}

/// What the agents had published at one moment, per agent.
#[derive(Default)]
struct AgentTotals {
    agents: BTreeMap<String, AgentSnapshot>,
}

impl AgentTotals {
    /// Everything the agents counted after `start`: per agent, the difference if it is the same incarnation, else
    /// all of the newer one (it started inside the window). Also the number of agents that restarted. An agent
    /// restarted in the window used to fail the whole run ("histograms went backwards").
    fn since(&self, start: &AgentTotals) -> (AgentSnapshot, usize) {
        let mut window = AgentSnapshot::default();
        let mut restarted = 0;
        for (name, end) in &self.agents {
            let mut part = end.clone();
            match start.agents.get(name) {
                Some(begin) if begin.started_at_ms == end.started_at_ms => {
                    part.delivered = end.delivered.saturating_sub(begin.delivered);
                    part.delivered_per_s =
                        per_second(part.delivered, end.updated_at_ms.saturating_sub(begin.updated_at_ms));
                    // Same incarnation: its histograms only grow, so the subtraction cannot fail; if it did, the
                    // newer histogram alone is the honest upper bound.
                    if part.delivery.subtract(&begin.delivery).is_err() {
                        part.delivery = end.delivery.clone();
                    }
                    if part.round_trip.subtract(&begin.round_trip).is_err() {
                        part.round_trip = end.round_trip.clone();
                    }
                }
                Some(_) => {
                    restarted += 1;
                    part.delivered_per_s =
                        per_second(part.delivered, end.updated_at_ms.saturating_sub(end.started_at_ms));
                }
                None => {}
            }
            window.delivered += part.delivered;
            window.delivered_per_s += part.delivered_per_s;
            window.delivery.add(&part.delivery);
            window.round_trip.add(&part.round_trip);
        }
        (window, restarted)
    }
}

/// `count` over `ms` milliseconds, per second (0 over no time).
#[expect(clippy::cast_precision_loss, reason = "rates for display")]
fn per_second(count: u64, ms: u64) -> f64 {
    if ms == 0 { 0.0 } else { count as f64 * 1000.0 / ms as f64 }
}

async fn agent_totals(store: &AnyStore, plan: &Plan, with_histograms: bool) -> AgentTotals {
    let mut totals = AgentTotals::default();
    for i in 0..plan.agents {
        let name = Plan::agent_name(i);
        let key = redis_keys::agent_stats(&plan.prefix, &name);
        let Ok(fields) = store.hgetall(&key).await else { continue };
        let stats = AgentStats::from_fields(fields);
        let mut agent = AgentSnapshot {
            started_at_ms: stats.started_at_ms.unwrap_or(0),
            updated_at_ms: stats.updated_at_ms.unwrap_or(0),
            delivered: stats.tasks_handled.unwrap_or(0) + stats.responses_received.unwrap_or(0),
            ..AgentSnapshot::default()
        };
        if with_histograms {
            if let Some(h) = stats.delivery_us.as_deref().and_then(|t| Latency::decode(t).ok()) {
                agent.delivery = h;
            }
            if let Some(h) = stats.round_trip_us.as_deref().and_then(|t| Latency::decode(t).ok()) {
                agent.round_trip = h;
            }
        }
        totals.agents.insert(name, agent);
    }
    totals
}

async fn topology_figures(store: &AnyStore, prefix: &str) -> (usize, usize, f64) {
    let fields = store.hgetall(&redis_keys::topology_stats(prefix)).await.unwrap_or_default();
    let stats = TopologyStats::from_fields(fields);
    let count = |n: Option<u64>| usize::try_from(n.unwrap_or(0)).unwrap_or(usize::MAX);
    (count(stats.live_agents), count(stats.edges), stats.reduction_vs_full_mesh.unwrap_or(0.0))
}

/// When the mesh was ready: every agent live, and the full mesh built if it ever was complete at once.
struct Ramp {
    join: Join,
    converged_at: Option<Instant>,
    members_at: Option<Instant>,
}

/// Ramp-up: processes READY, then every agent live in the roster and the full mesh built.
async fn ramp_up(plan: &Plan, deployment: &mut Deployment, store: &AnyStore) -> Result<Ramp> {
    let n = plan.agents;
    let full_mesh = n * (n - 1);
    let processes = plan.agent_processes() + 2;
    let pb = bar(u64::try_from(processes).unwrap_or(0), "starting");
    let ramp_deadline = deployment.spawned + plan.ramp_timeout;
    loop {
        let Some(state) = deployment.status()? else {
            if Instant::now() >= ramp_deadline {
                bail!("the bench supervisor did not answer within {:?}", plan.ramp_timeout);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            check_interrupted()?;
            continue;
        };
        let ready = state.processes.iter().filter(|p| p.state == ProcState::Ready).count();
        pb.set_position(u64::try_from(ready).unwrap_or(0));
        if let Some(failed) = state.processes.iter().find(|p| p.state == ProcState::Failed) {
            bail!("{} FAILED during ramp-up; see {}", failed.name, deployment.log(&failed.name).display());
        }
        if ready == processes {
            break;
        }
        check_interrupted()?;
        if Instant::now() >= ramp_deadline {
            bail!("only {ready} of {processes} processes READY after {:?}", plan.ramp_timeout);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    done(&pb, format!("READY after {:.1} s", deployment.spawned.elapsed().as_secs_f64()));
    let pb = bar(u64::try_from(full_mesh).unwrap_or(0), "joining");
    let mut converged_at = None;
    let mut members_at = None;
    let (mut live, mut edges, mut most_edges) = (0, 0, 0);
    while Instant::now() < ramp_deadline {
        (live, edges, _) = topology_figures(store, &plan.prefix).await;
        pb.set_position(u64::try_from(edges).unwrap_or(0));
        pb.set_message(format!("{live}/{n} agents live"));
        if live == n && members_at.is_none() {
            members_at = Some(Instant::now());
        }
        if live == n && edges == full_mesh {
            converged_at = Some(Instant::now());
            break;
        }
        // Every agent is in, but the first joiners' idle edges were pruned before the last joined: the full mesh
        // never exists at once (a ramp-up longer than 21 decay intervals). Membership is the convergence then.
        if live == n && edges < most_edges {
            break;
        }
        most_edges = most_edges.max(edges);
        check_interrupted()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let since_spawn = |t: Instant| t.duration_since(deployment.spawned).as_secs_f64();
    let join_s = converged_at.map(since_spawn);
    let members_s = members_at.map(since_spawn);
    done(
        &pb,
        match (join_s, members_s) {
            (Some(s), _) => format!("full mesh of {full_mesh} edges after {s:.1} s"),
            (None, Some(m)) => format!(
                "all {n} agents live after {m:.1} s; pruning began before the full mesh was complete ({most_edges} \
                 of {full_mesh} edges at most)"
            ),
            (None, None) => format!("NOT converged: {live}/{n} live, {edges}/{full_mesh} edges"),
        },
    );
    Ok(Ramp {
        join: Join {
            converged_s: join_s,
            members_s,
            live_agents: live,
            edges: edges.max(most_edges),
            full_mesh_edges: full_mesh,
        },
        converged_at,
        members_at,
    })
}

/// How long the idle deployment is watched at most, after it settled (the measured window's length if shorter).
const IDLE_WINDOW: Duration = Duration::from_secs(20);

/// The deployment with no traffic: what the agents, managers and broker cost while nothing happens.
async fn measure_idle(plan: &Plan, infra: &Infra, deployment: &mut Deployment) -> Result<Idle> {
    let store = AnyStore::connect(&infra.redis, None).await?;
    let ramp = ramp_up(plan, deployment, &store).await?;
    if ramp.members_at.is_none() {
        bail!("the idle run did not converge: {}/{} agents live", ramp.join.live_agents, plan.agents);
    }
    // Let the ramp-up's own work (joins, the full mesh's edge events) drain before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = IDLE_WINDOW.min(plan.duration);
    let pb = bar(window.as_secs(), "idle");
    let cpu_start = process_cpu(&deployment.state()?, infra);
    let started = Instant::now();
    while started.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        check_interrupted()?;
        pb.inc(1);
    }
    let seconds = started.elapsed().as_secs_f64();
    let state = deployment.state()?;
    let cpu_end = process_cpu(&state, infra);
    let cost = costs(&state, infra, &cpu_start, &cpu_end);
    let cores = |kind: &str| cost.iter().find(|c| c.kind == kind).map_or(0.0, |c| c.cpu_s / seconds);
    let agent_cores = cores("agent");
    #[expect(clippy::cast_precision_loss, reason = "figures for display")]
    let idle = Idle {
        agents: plan.agents,
        seconds,
        agent_cores,
        agent_ms_per_s: agent_cores * 1000.0 / plan.agent_processes().max(1) as f64,
        topology_cores: cores("topology"),
        consensus_cores: cores("consensus"),
        kafka_cores: cores("kafka"),
        agent_peak_rss_mib: cost.iter().find(|c| c.kind == "agent").map_or(0.0, |c| c.peak_rss_mib_max),
    };
    done(&pb, format!("{:.3} of a core for {} idle agents", idle.agent_cores, plan.agents));
    Ok(idle)
}

async fn measure_mesh(
    plan: &Plan,
    infra: &Infra,
    deployment: &mut Deployment,
    report: &mut Report,
    report_dir: Option<&Path>,
) -> Result<()> {
    let n = plan.agents;
    let full_mesh = n * (n - 1);
    let store = AnyStore::connect(&infra.redis, None).await?;
    let ramp = ramp_up(plan, deployment, &store).await?;
    let (converged_at, members_at) = (ramp.converged_at, ramp.members_at);
    report.join = ramp.join;
    let mesh_built = converged_at.or(members_at).unwrap_or_else(Instant::now);

    // Warm-up, then the window: cumulative agent figures at both ends, subtracted.
    let pb = bar(plan.warmup.as_secs(), "warm-up");
    let warm_end = Instant::now() + plan.warmup;
    let mut pruned_at = None;
    while Instant::now() < warm_end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        check_interrupted()?;
        pb.inc(1);
        let (_, e, _) = topology_figures(&store, &plan.prefix).await;
        if pruned_at.is_none() && (converged_at.is_some() || members_at.is_some()) && e < full_mesh {
            pruned_at = Some(Instant::now());
        }
    }
    done(&pb, format!("{:.0} s", plan.warmup.as_secs_f64()));
    let start = agent_totals(&store, plan, true).await;
    let window_start = Instant::now();
    let window_start_ms = mesh_node::now_ms();
    let state = deployment.state()?;
    let cpu_start = process_cpu(&state, infra);
    // A profile that cannot be taken costs the run its flame graphs, not its figures.
    let profiler = match (plan.profile, report_dir) {
        (true, Some(dir)) => {
            start_profiles(&state, infra, dir).map_err(|e| eprintln!("warning: no profiles in this run: {e:#}")).ok()
        }
        _ => None,
    };
    let pb = bar(plan.duration.as_secs(), "measuring");
    let mut timeline = Vec::new();
    // Delivered within the window so far, and when.
    let mut last = (0u64, Instant::now());
    while window_start.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        check_interrupted()?;
        let now = agent_totals(&store, plan, false).await;
        let dt = last.1.elapsed().as_secs_f64();
        let so_far = now.since(&start).0.delivered;
        #[expect(clippy::cast_precision_loss, reason = "rates for display")]
        let rate = so_far.saturating_sub(last.0) as f64 / dt.max(1e-3);
        timeline.push(Sample { t_s: window_start.elapsed().as_secs_f64(), mesh_per_s: rate });
        last = (so_far, Instant::now());
        pb.set_position(window_start.elapsed().as_secs());
        pb.set_message(format!("{rate:.0} msg/s delivered"));
        let (_, e, _) = topology_figures(&store, &plan.prefix).await;
        if pruned_at.is_none() && (converged_at.is_some() || members_at.is_some()) && e < full_mesh {
            pruned_at = Some(Instant::now());
        }
    }
    if let (Some(p), Some(dir)) = (profiler, report_dir) {
        match finish_profiles(p, dir) {
            Ok(profiles) => report.profiles = profiles,
            Err(e) => eprintln!("warning: no profiles in this run: {e:#}"),
        }
    }
    // Agents publish every second: wait one more so the last second of the window is in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let end = agent_totals(&store, plan, true).await;
    let window_s = window_start.elapsed().as_secs_f64();
    let window_end_ms = mesh_node::now_ms();
    let (window, restarted) = end.since(&start);
    done(&pb, format!("{} messages delivered", window.delivered));
    if restarted > 0 {
        eprintln!("warning: {restarted} agents restarted during the window; their figures count from their restart");
    }
    let state = deployment.state()?;
    let cpu_end = process_cpu(&state, infra);

    let AgentSnapshot { delivered, delivery, round_trip, delivered_per_s, .. } = window;
    // Each agent's count over the time between its two writes; over the bench's own window only if no agent wrote
    // twice (the counters were up to a second old at either end: a 10,000 msg/s run read as 9,831 that way).
    #[expect(clippy::cast_precision_loss, reason = "rates for display")]
    let delivered_per_s = if delivered_per_s > 0.0 { delivered_per_s } else { delivered as f64 / window_s };
    report.messages = Messages {
        delivered,
        delivered_per_s,
        end_to_end: Percentiles::of(delivery.histogram()),
        round_trip: Percentiles::of(round_trip.histogram()),
    };
    report.timeline = timeline;
    // Read back from a broker the run may have overloaded: a few tries, then the run keeps its other figures.
    let mut tries = 0;
    report.consensus = loop {
        match consensus_figures(infra, plan, window_start_ms, window_end_ms).await {
            Ok(figures) => break figures,
            Err(e) if tries < 3 => {
                tries += 1;
                eprintln!("warning: reading the proposals and decisions back failed (try {tries} of 4): {e:#}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                eprintln!("warning: no consensus figures in this run: {e:#}");
                break Consensus::default();
            }
        }
    };

    // Pruning: wait (bounded) for the idle full-mesh edges to go if they have not yet.
    let expected = plan.decay_interval.as_secs_f64() * 21.0;
    let prune_deadline = mesh_built + plan.decay_interval * 23 + Duration::from_secs(5);
    while plan.probe_pruning
        && pruned_at.is_none()
        && (converged_at.is_some() || members_at.is_some())
        && Instant::now() < prune_deadline
    {
        let (_, e, _) = topology_figures(&store, &plan.prefix).await;
        if e < full_mesh {
            pruned_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        check_interrupted()?;
    }
    let (_, edges_now, reduction) = topology_figures(&store, &plan.prefix).await;
    report.topology = Topology {
        pruned_after_s: pruned_at.map(|t| t.duration_since(mesh_built).as_secs_f64()),
        expected_prune_s: expected,
        edges: edges_now,
        reduction_vs_full_mesh: reduction,
    };
    report.cost = costs(&state, infra, &cpu_start, &cpu_end);
    report.window_stats = window_stats(&store, &plan.prefix).await;
    Ok(())
}

/// The topology manager's window figures at the end of the run (how late windows were applied).
async fn window_stats(store: &AnyStore, prefix: &str) -> Option<Windows> {
    let stats = TopologyStats::from_fields(store.hgetall(&redis_keys::topology_stats(prefix)).await.ok()?);
    Some(Windows {
        applied: stats.windows_applied?,
        late: stats.windows_late.unwrap_or(0),
        worst_late_ms: stats.window_late_max_ms.unwrap_or(0),
    })
}

/// Starts a CPU profile of each kind of process of the deployment (and the local broker and Redis).
fn start_profiles(state: &StateFile, infra: &Infra, dir: &Path) -> Result<mesh_bench::profile::Profiler> {
    let mut kinds: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for p in &state.processes {
        if let Some(pid) = p.pid {
            kinds.entry(kind_of(&p.name).to_owned()).or_default().push(pid);
        }
    }
    kinds.entry("kafka".to_owned()).or_default().extend(&infra.broker_pids);
    if let Some(pid) = infra.redis_pid {
        kinds.entry("redis".to_owned()).or_default().push(pid);
    }
    kinds.retain(|_, pids| !pids.is_empty());
    let requests: Vec<mesh_bench::profile::ProfileRequest> =
        kinds.into_iter().map(|(kind, pids)| mesh_bench::profile::ProfileRequest { kind, pids }).collect();
    mesh_bench::profile::ensure_perf().context("perf is needed for --profile")?;
    let out = dir.join("profiles");
    std::fs::create_dir_all(&out).with_context(|| format!("failed to create {}", out.display()))?;
    mesh_bench::profile::Profiler::start(&requests, &out, 99).context("failed to start perf")
}

fn finish_profiles(profiler: mesh_bench::profile::Profiler, dir: &Path) -> Result<Vec<ProfileSummary>> {
    let done = profiler.finish().context("failed to fold the profiles")?;
    Ok(done
        .into_iter()
        .map(|k| ProfileSummary {
            svg: k.svg.strip_prefix(dir).unwrap_or(&k.svg).display().to_string(),
            kind: k.kind,
            processes: k.processes,
            samples: k.samples,
            top: k.top,
        })
        .collect())
}

/// Steps the offered rate up (`--rate max`): at each rate a fresh deployment and the one-process baseline, short
/// windows, until neither sustains the rate. The report's main figures are those of the highest rate the mesh
/// sustained.
fn run_peak_search(
    plan: &Plan,
    infra: &Infra,
    runtime: &tokio::runtime::Runtime,
    payload_bytes: usize,
    report: &mut Report,
) -> Result<Peak> {
    let mut peak = Peak::default();
    let mut mesh_done = false;
    let mut best: Option<Report> = None;
    for rate in PEAK_RATES {
        check_interrupted()?;
        // A 10 s window let one stall of a few hundred ms (a fresh deployment's first seconds) decide a step's p99.
        let step_plan = Plan {
            warmup: plan.warmup.min(Duration::from_secs(10)),
            duration: plan.duration.min(Duration::from_secs(20)),
            ..plan.at_rate(rate, &format!("r{rate:.0}"))
        };
        eprintln!("peak search: {rate:.0} msg/s offered");
        let mut step = PeakStep { offered_msgs_per_s: rate, mesh_ran: !mesh_done, ..PeakStep::default() };
        let mut sub = Report { config: report.config.clone(), ..Report::default() };
        if !mesh_done {
            let mut deployment = Deployment::start(&step_plan, infra)?;
            let outcome = runtime.block_on(measure_mesh(&step_plan, infra, &mut deployment, &mut sub, None));
            let stopped = deployment.stop();
            outcome?;
            stopped?;
            step.mesh_delivered_per_s = sub.messages.delivered_per_s;
            step.mesh_p99_us = sub.messages.end_to_end.p99_us;
        }
        let (b, _) = runtime.block_on(run_baseline(infra, &step_plan, payload_bytes))?;
        step.baseline_delivered_per_s = b.delivered_per_s;
        step.baseline_p99_us = b.latency.p99_us;
        step.baseline_sustained = b.delivered_per_s >= 0.95 * rate;
        step.mesh_sustained = !mesh_done
            && step.mesh_delivered_per_s >= 0.95 * rate
            && step.mesh_p99_us <= 2 * step.baseline_p99_us.max(1);
        let mesh = if step.mesh_ran {
            format!(
                "mesh {:.0} msg/s p99 {:.1} ms ({})",
                step.mesh_delivered_per_s,
                step.mesh_p99_us as f64 / 1000.0,
                if step.mesh_sustained { "sustained" } else { "not sustained" }
            )
        } else {
            "mesh not run (it failed a lower rate)".to_owned()
        };
        eprintln!(
            "  {mesh} · baseline {:.0} msg/s p99 {:.1} ms ({})",
            step.baseline_delivered_per_s,
            step.baseline_p99_us as f64 / 1000.0,
            if step.baseline_sustained { "sustained" } else { "not sustained" },
        );
        if step.mesh_sustained {
            peak.mesh_peak_msgs_per_s = peak.mesh_peak_msgs_per_s.max(step.mesh_delivered_per_s);
            sub.baseline = Some(b);
            best = Some(sub);
        } else {
            mesh_done = true;
        }
        if step.baseline_sustained {
            peak.baseline_peak_msgs_per_s = peak.baseline_peak_msgs_per_s.max(step.baseline_delivered_per_s);
        }
        let stop = mesh_done && !step.baseline_sustained;
        peak.steps.push(step);
        if stop {
            break;
        }
    }
    peak.ratio = if peak.baseline_peak_msgs_per_s > 0.0 {
        peak.mesh_peak_msgs_per_s / peak.baseline_peak_msgs_per_s
    } else {
        0.0
    };
    if let Some(best) = best {
        report.config.offered_msgs_per_s = best.config.offered_msgs_per_s;
        report.join = best.join;
        report.messages = best.messages;
        report.consensus = best.consensus;
        report.topology = best.topology;
        report.cost = best.cost;
        report.timeline = best.timeline;
        report.baseline = best.baseline;
    }
    Ok(peak)
}

/// The N-process baseline: as many plain-rdkafka worker processes as the mesh has agent processes.
fn run_fleet_baseline(infra: &Infra, plan: &Plan, payload_bytes: usize) -> Result<Baseline> {
    let topic = format!("{}-baseline-n", plan.prefix);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let bus = KafkaBus::new(KafkaConfig::new(&infra.kafka, "mesh-bench-baseline-n"))?;
        let spec = TopicSpec {
            name: topic.clone(),
            partitions: plan.partitions,
            compacted: false,
            retention: Some(Duration::from_secs(3600)),
        };
        tokio::time::timeout(Duration::from_secs(60), bus.ensure_topics(&[spec]))
            .await
            .map_err(|_| anyhow!("Kafka at {} did not create the baseline topic within 60 s", infra.kafka))??;
        Ok::<_, anyhow::Error>(())
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
    let spec = crate::fleet::FleetSpec {
        kafka: &infra.kafka,
        topic: &topic,
        partitions: plan.partitions,
        workers: n,
        rate: plan.offered_msgs_per_s,
        payload_bytes,
        warmup: plan.warmup,
        duration: plan.duration,
        fetch_wait: crate::settings::DEFAULT_FETCH_WAIT,
    };
    let run = crate::fleet::run(&spec, || INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst));
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

fn kind_of(name: &str) -> &str {
    if name.starts_with("agent-") {
        "agent"
    } else if name.starts_with("kafka-") {
        "kafka"
    } else {
        name
    }
}

/// CPU seconds per process name (and the infrastructure's, under `kafka` and `redis`).
fn process_cpu(state: &StateFile, infra: &Infra) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = state
        .processes
        .iter()
        .filter_map(|p| Some((p.name.clone(), mesh_supervisor::child::usage(p.pid?)?.0)))
        .collect();
    for (name, pid) in infra.infrastructure_pids() {
        if let Some(cpu) = mesh_supervisor::child::usage(pid) {
            out.insert(name, cpu.0);
        }
    }
    out
}

/// Peak resident set (VmHWM) of a process, bytes.
fn peak_rss(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU over the measured window and peak RSS over the whole run, per kind of process.
fn costs(state: &StateFile, infra: &Infra, start: &BTreeMap<String, f64>, end: &BTreeMap<String, f64>) -> Vec<Cost> {
    let mut pids: Vec<(String, Option<i32>)> = state.processes.iter().map(|p| (p.name.clone(), p.pid)).collect();
    pids.extend(infra.infrastructure_pids().into_iter().map(|(name, pid)| (name, Some(pid))));
    let mut kinds: BTreeMap<&str, (usize, f64, Vec<f64>)> = BTreeMap::new();
    for (name, pid) in &pids {
        let Some(pid) = pid else { continue };
        let cpu = end.get(name).copied().unwrap_or(0.0) - start.get(name).copied().unwrap_or(0.0);
        let entry = kinds.entry(kind_of(name)).or_default();
        entry.0 += 1;
        entry.1 += cpu.max(0.0);
        #[expect(clippy::cast_precision_loss, reason = "MiB for display")]
        if let Some(rss) = peak_rss(*pid) {
            entry.2.push(rss as f64 / 1_048_576.0);
        }
    }
    let order = ["agent", "topology", "consensus", "kafka", "redis"];
    let mut out: Vec<Cost> = kinds
        .into_iter()
        .map(|(kind, (processes, cpu_s, rss))| {
            #[expect(clippy::cast_precision_loss, reason = "MiB for display")]
            let mean = if rss.is_empty() { 0.0 } else { rss.iter().sum::<f64>() / rss.len() as f64 };
            Cost {
                kind: kind.to_owned(),
                processes,
                cpu_s,
                peak_rss_mib_max: rss.iter().copied().fold(0.0, f64::max),
                peak_rss_mib_mean: mean,
            }
        })
        .collect();
    out.sort_by_key(|c| order.iter().position(|k| *k == c.kind).unwrap_or(order.len()));
    out
}

/// Reads every proposal and decision of the run from Kafka and pairs them: latency from the proposal's creation to
/// the decision record, for proposals made inside the window.
async fn consensus_figures(infra: &Infra, plan: &Plan, from_ms: u64, until_ms: u64) -> Result<Consensus> {
    // Decisions of proposals late in the window may take up to the proposal timeout; give them a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bus = KafkaBus::new(KafkaConfig::new(&infra.kafka, "mesh-bench-reader"))?;
    let topics = TopicNames::new(plan.prefix.clone());
    // Times in µs: the records' `mesh-sent-us` headers (the proposal's send, the decision's send), else their ms stamps.
    let mut proposed: BTreeMap<String, (u64, u64, usize)> = BTreeMap::new();
    let mut decided: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for kind in [TopicKind::Proposals, TopicKind::Decisions] {
        let topic = topics.name(kind);
        for record in read_all(&bus, &topic).await? {
            let Ok(env) = decode(record.payload.as_deref(), Some(kind)) else { continue };
            match env.record {
                Record::Proposal(b) => {
                    let sent_us = record.sent_at_us.unwrap_or(b.proposal.created_at_ms * 1000);
                    proposed.insert(
                        b.proposal.id.to_string(),
                        (b.proposal.created_at_ms, sent_us, b.proposal.voters.len()),
                    );
                }
                Record::Decision(b) => {
                    let expired = b.decision.outcome == mesh_core::consensus::Outcome::Expired;
                    let sent_us = record.sent_at_us.unwrap_or(env.header.ts * 1000);
                    decided.entry(b.decision.proposal.to_string()).or_insert((sent_us, expired));
                }
                _ => {}
            }
        }
    }
    let mut h: Histogram<u64> = Histogram::new_with_bounds(1, 600_000_000, 3)?;
    let (mut proposals, mut decisions, mut voters, mut expired) = (0u64, 0u64, 0usize, 0u64);
    for (id, (created, sent_us, n)) in &proposed {
        if !(from_ms..until_ms).contains(created) {
            continue;
        }
        proposals += 1;
        voters += n;
        if let Some((decided_us, was_expired)) = decided.get(id) {
            decisions += 1;
            expired += u64::from(*was_expired);
            h.saturating_record(decided_us.saturating_sub(*sent_us).max(1));
        }
    }
    #[expect(clippy::cast_precision_loss, reason = "rates for display")]
    Ok(Consensus {
        proposals,
        decisions,
        decisions_per_s: decisions as f64 / ((until_ms - from_ms) as f64 / 1000.0).max(1e-3),
        voters: if proposals == 0 { 0.0 } else { voters as f64 / proposals as f64 },
        latency: Percentiles::of(&h),
        expired,
    })
}

/// Every record of a topic up to its end offsets at the time of the call.
async fn read_all(bus: &KafkaBus, topic: &str) -> Result<Vec<mesh_transport::InRecord>> {
    let partitions = bus.partition_count(topic).await?;
    let mut ends = BTreeMap::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let end = bus.end_offset(topic, p).await?;
        if end > 0 {
            ends.insert(p, end);
        }
    }
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    let assignments =
        ends.keys().map(|p| Assignment { topic: topic.to_owned(), partition: *p, start: StartAt::Beginning }).collect();
    let mut reader = bus.reader(&format!("mesh-bench-{}", mesh_node::now_ms()), assignments).await?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        let record = tokio::time::timeout_at(deadline, reader.next())
            .await
            .map_err(|_| anyhow!("reading {topic} did not reach its end within 60 s"))??;
        if ends.get(&record.partition).is_some_and(|end| record.offset + 1 >= *end) {
            ends.remove(&record.partition);
        }
        out.push(record);
    }
    Ok(out)
}

/// Ratios against the baselines, and the targets (issue 11) judged where they apply.
fn finish(report: &mut Report) {
    let ratios = |b: &Baseline| {
        #[expect(clippy::cast_precision_loss, reason = "ratios")]
        let p99 = report.messages.end_to_end.p99_us as f64 / b.latency.p99_us.max(1) as f64;
        Ratios { throughput: report.messages.delivered_per_s / b.delivered_per_s.max(1e-9), p99_latency: p99 }
    };
    if report.messages.delivered > 0 {
        report.ratios = report.baseline.as_ref().filter(|b| b.received > 0).map(ratios);
        report.ratios_processes = report.baseline_processes.as_ref().filter(|b| b.received > 0).map(ratios);
    }
    let c = &report.config;
    let at_500 = c.agents >= 500 && c.agents_per_process == 1;
    let few = c.agents <= 10;
    let real_broker = c.infra != "embedded";
    let mut t = Vec::new();
    let mut check = |target: &str, measured: String, met: Option<bool>| {
        t.push(TargetCheck { target: target.to_owned(), measured, met });
    };
    if report.messages.delivered == 0 && report.join.converged_s.is_none() && report.peak.is_none() {
        report.targets = t;
        return;
    }
    check(
        "join convergence under 30 s (500 agents)",
        report.join.converged_s.or(report.join.members_s).map_or("not converged".into(), |s| format!("{s:.1} s")),
        at_500.then(|| report.join.converged_s.or(report.join.members_s).is_some_and(|s| s < 30.0)),
    );
    if let Some(topo) = report.cost.iter().find(|c| c.kind == "topology") {
        check(
            "topology manager under 100 MB with the full mesh",
            format!("{:.1} MiB peak", topo.peak_rss_mib_max),
            at_500.then_some(topo.peak_rss_mib_max < 100.0),
        );
    }
    if let Some(agent) = report.cost.iter().find(|c| c.kind == "agent") {
        check(
            "agent process under 25 MB RSS",
            format!("{:.1} MiB peak (max), {:.1} mean", agent.peak_rss_mib_max, agent.peak_rss_mib_mean),
            Some(agent.peak_rss_mib_max < 25.0),
        );
    }
    if let Some(idle) = &report.idle {
        check(
            "500 idle agents together under 0.3 of a core",
            format!("{:.3} cores ({:.2} ms/s each)", idle.agent_cores, idle.agent_ms_per_s),
            at_500.then_some(idle.agent_cores < 0.3),
        );
    }
    let offered = report.config.offered_msgs_per_s;
    if report.peak.is_none() {
        check(
            "all of the offered rate delivered (at least 99 %)",
            format!("{:.0} of {offered:.0} msg/s", report.messages.delivered_per_s),
            Some(report.messages.delivered_per_s >= 0.99 * offered),
        );
    }
    if let Some(r) = report.ratios.clone() {
        check(
            "throughput at least 70 % of the one-process baseline",
            format!("{:.0} %", r.throughput * 100.0),
            Some(r.throughput >= 0.7),
        );
        check(
            "p99 end-to-end at most 2x the one-process baseline's",
            format!("{:.2}x", r.p99_latency),
            Some(r.p99_latency <= 2.0),
        );
    }
    if let (Some(r), Some(b)) = (report.ratios_processes.clone(), report.baseline_processes.as_ref()) {
        let aim = b.delivered_per_s.min(10_000.0 / 0.7) * 0.7;
        check(
            "10,000 msg/s delivered, or 70 % of the N-process baseline if lower",
            format!("{:.0} msg/s (N-process baseline {:.0})", report.messages.delivered_per_s, b.delivered_per_s),
            Some(report.messages.delivered_per_s >= aim.min(10_000.0)),
        );
        check(
            "p99 end-to-end at most 2x the N-process baseline's",
            format!("{:.2}x", r.p99_latency),
            Some(r.p99_latency <= 2.0),
        );
    }
    let decisions = report.consensus.decisions;
    let p99_ms = report.consensus.latency.p99_us as f64 / 1000.0;
    check(
        "consensus p99 under 1 s with 500 voters, no proposal expired",
        format!("{p99_ms:.1} ms p99 over {decisions} decisions, {} expired", report.consensus.expired),
        (at_500 && decisions > 0).then_some(p99_ms < 1000.0 && report.consensus.expired == 0),
    );
    check(
        if real_broker {
            "proposal to decision p99 under 20 ms (4 agents, real broker)"
        } else {
            "proposal to decision p99 under 50 ms (4 agents, embedded broker)"
        },
        format!("{p99_ms:.1} ms p99 over {decisions} decisions"),
        (few && decisions > 0).then_some(p99_ms < if real_broker { 20.0 } else { 50.0 }),
    );
    if let Some(w) = &report.window_stats {
        check(
            "every window applied within one decay interval + 100 ms of its tick",
            format!("{} of {} late, worst {} ms", w.late, w.applied, w.worst_late_ms),
            Some(w.late == 0),
        );
    }
    if let Some(p) = &report.peak {
        check(
            "peak sustained rate at least 25 % of plain Kafka's peak",
            format!(
                "{:.0} of {:.0} msg/s ({:.0} %)",
                p.mesh_peak_msgs_per_s,
                p.baseline_peak_msgs_per_s,
                p.ratio * 100.0
            ),
            Some(p.ratio >= 0.25),
        );
    }
    report.targets = t;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(started_at_ms: u64, delivered: u64, latencies: &[u64]) -> AgentSnapshot {
        let mut delivery = Latency::new();
        for &us in latencies {
            delivery.record(us);
        }
        AgentSnapshot { started_at_ms, delivered, delivery, ..AgentSnapshot::default() }
    }

    #[test]
    fn an_agents_rate_is_its_count_over_the_time_between_its_own_writes() {
        let at = |started, updated, delivered| AgentSnapshot {
            started_at_ms: started,
            updated_at_ms: updated,
            delivered,
            ..AgentSnapshot::default()
        };
        let mut start = AgentTotals::default();
        // Read 900 ms after its write, then (at the end) 100 ms after: the bench's own window would be 20.8 s.
        start.agents.insert("a".into(), at(1, 10_000, 0));
        start.agents.insert("b".into(), at(1, 10_000, 500));
        let mut end = AgentTotals::default();
        end.agents.insert("a".into(), at(1, 30_000, 20_000));
        // b restarted at 25 s and handled 2,500 since.
        end.agents.insert("b".into(), at(25_000, 30_000, 2_500));
        let (window, restarted) = end.since(&start);
        assert_eq!(restarted, 1);
        assert!((window.delivered_per_s - (1_000.0 + 500.0)).abs() < 1e-9, "{}", window.delivered_per_s);
    }

    #[test]
    fn the_window_counts_a_restarted_agent_from_its_restart_and_the_others_by_difference() {
        let mut start = AgentTotals::default();
        start.agents.insert("a".into(), snapshot(1, 10, &[100, 100]));
        start.agents.insert("b".into(), snapshot(1, 50, &[100; 5]));
        let mut end = AgentTotals::default();
        end.agents.insert("a".into(), snapshot(1, 15, &[100, 100, 300]));
        // b restarted during the window: its counters began again at zero.
        end.agents.insert("b".into(), snapshot(2, 4, &[200]));
        // c joined during the window.
        end.agents.insert("c".into(), snapshot(3, 1, &[]));
        let (window, restarted) = end.since(&start);
        assert_eq!(restarted, 1);
        assert_eq!(window.delivered, 5 + 4 + 1);
        assert_eq!(window.delivery.len(), 2);
        assert_eq!(window.delivery.histogram().min(), 200);
        assert_eq!(window.delivery.histogram().max(), 300);
    }

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser;
        let mut argv = vec!["mesh", "bench"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).expect("parse").command {
            crate::cli::Command::Bench(a) => a,
            _ => unreachable!("bench"),
        }
    }

    #[test]
    fn the_plan_offers_the_rate_as_answered_tasks_and_paces_proposals() {
        let plan = Plan::new(&args(&["--agents", "500"]), 0).expect("plan");
        assert!((plan.offered_msgs_per_s - 10_000.0).abs() < 1e-9, "20 msg/s per agent by default");
        assert!((plan.task_rate - 10.0).abs() < 1e-9, "half of the messages are tasks");
        // 500 agents * 0.75 proposing * 10 tasks/s / 2 proposals/s.
        assert_eq!(plan.proposal_every, 1875);
        assert_eq!(plan.partitions, 500);
        let text = deployment_file(&plan, None).to_toml("test").expect("toml");
        let spec = mesh_supervisor::DeploymentSpec::parse(&text, Path::new("mesh")).expect("a valid deployment");
        assert_eq!(spec.processes.len(), 502);
        let process = |spec: &mesh_supervisor::DeploymentSpec, name: &str| {
            spec.processes.iter().find(|p| p.name == name).cloned().expect(name)
        };
        assert_eq!(process(&spec, "agent-b0499").command[1..], ["agent", "--name", "b0499", "--role", "fraud"]);
        assert_eq!(process(&spec, "agent-b0499").depends_on, ["topology", "consensus", "agent-b0449"], "waves");
        assert_eq!(process(&spec, "agent-b0000").depends_on, ["topology", "consensus"], "the first wave");
        assert_eq!(process(&spec, "agent-b0000").ready_timeout, Duration::from_secs(300));
        let packed = Plan::new(&args(&["--agents", "500", "--agents-per-process", "10"]), 0).expect("plan");
        let text = deployment_file(&packed, None).to_toml("test").expect("toml");
        let spec = mesh_supervisor::DeploymentSpec::parse(&text, Path::new("mesh")).expect("a valid deployment");
        assert_eq!(spec.processes.len(), 52);
        let b0490 = process(&spec, "agent-b0490");
        assert_eq!(b0490.command[1..7], ["agent", "--name", "b0490", "--role", "inventory", "--extra-agent"]);
        assert!(b0490.command[7].starts_with("b0491:fraud,b0492:sales"), "{:?}", b0490.command);
        assert_eq!(b0490.depends_on.last().map(String::as_str), Some("agent-b0440"), "waves of 5 processes");
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        for (argv, needle) in [
            (vec!["--agents", "1"], "--agents 1"),
            (vec!["--duration", "soon"], "--duration"),
            (vec!["--rate", "0"], "--rate"),
            (vec!["--proposals-per-sec=-1"], "--proposals-per-sec"),
            (vec!["--brokers", "3", "--infra", "embedded"], "--brokers 3"),
            (vec!["--brokers", "3", "--kafka", "127.0.0.1:9092", "--redis", "redis://127.0.0.1"], "--brokers 3"),
        ] {
            let err = Plan::new(&args(&argv), 0).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "{argv:?}: {err}");
        }
    }

    #[test]
    fn simulated_hosts_share_the_agents_and_wait_only_on_their_own() {
        let plan = Plan::new(&args(&["--agents", "500", "--hosts", "3"]), 0).expect("plan");
        let files: Vec<DeploymentFile> = (1..=3).map(|h| deployment_file(&plan, Some((h, 3)))).collect();
        let counts: Vec<usize> = files.iter().map(|f| f.processes.len()).collect();
        assert_eq!(counts, [167, 167, 166], "500 agent processes dealt over 3 hosts, no manager among them");
        for file in &files {
            let text = file.to_toml("test").expect("toml");
            let spec =
                mesh_supervisor::DeploymentSpec::parse(&text, Path::new("mesh")).expect("each host's file is valid");
            assert!(spec.processes.iter().all(|p| p.depends_on.len() <= 1), "no manager to wait for on a host");
        }
        assert_eq!(files[0].processes[0].name, "agent-b0000");
        assert_eq!(files[1].processes[0].name, "agent-b0001");
        assert!(Plan::new(&args(&["--hosts", "3", "--infra", "embedded"]), 0).is_err());
    }

    #[test]
    fn a_clusters_nodes_are_one_kind_in_the_cost_table() {
        assert_eq!(kind_of("kafka-2"), "kafka");
        assert_eq!(kind_of("kafka"), "kafka");
        assert_eq!(kind_of("agent-b0001"), "agent");
        assert_eq!(kind_of("topology"), "topology");
        assert!(Plan::new(&args(&["--brokers", "3"]), 0).is_ok(), "the default infrastructure is local");
    }

    #[test]
    fn targets_are_judged_only_where_they_apply() {
        let mut report = Report {
            config: RunConfig { agents: 20, ..RunConfig::default() },
            join: Join { converged_s: Some(3.0), ..Join::default() },
            messages: Messages { delivered: 100, delivered_per_s: 50.0, ..Messages::default() },
            baseline: Some(Baseline { received: 100, delivered_per_s: 100.0, ..Baseline::default() }),
            ..Report::default()
        };
        finish(&mut report);
        let r = report.ratios.clone().expect("ratios");
        assert!((r.throughput - 0.5).abs() < 1e-9);
        let join = report.targets.iter().find(|t| t.target.starts_with("join")).expect("join target");
        assert_eq!(join.met, None, "the 30 s target is for 500 agents");
        let tput = report.targets.iter().find(|t| t.target.starts_with("throughput")).expect("throughput target");
        assert_eq!(tput.met, Some(false));
    }
}
