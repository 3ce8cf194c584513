//! The orchestrator: real Kafka (one listener per client process) and Redis, a fault proxy on every (process,
//! backend) link, then for each scenario a fresh deployment under its own topic prefix, its trials (inject, heal,
//! wait for convergence, measure), the checkers, `mesh down` and the orphan check.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use mesh_core::consensus::ConsensusParams;
use mesh_fixtures::{
    CLUSTER_CONTROLLER_FAILOVER_MS, CLUSTER_SESSION_TIMEOUT_MS, ClientListener, LocalKafka, RedisOptions, RedisServer,
};
use mesh_kafka::{KafkaBus, KafkaConfig};
use mesh_node::{MeshConfig, TopologyConfig, now_ms};
use mesh_proto::auth::{Credentials, DeploymentSecret};
use mesh_proto::read_model::{AgentStats, TopologyStats, redis_keys};
use mesh_proto::{TopicKind, TopicNames};
use mesh_redis::RedisStore;
use mesh_supervisor::EventLog;
use mesh_transport::{Bus, OutRecord, SnapshotStore};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::check::{self, CheckResult, Verdict};
use crate::deploy::{Deployment, Endpoints, MeshTimings, Reach, process_names};
use crate::observe::{CatchUp, Tail, complaints, first_complaint};
use crate::proxy::{Direction, Fault, FaultProxy};
use crate::report::{Event, RunReport, SCHEMA, ScenarioResult, TrialResult};
use crate::scenario::{AGENTS, Backend, Ending, FaultSpec, MANAGERS, ScenarioPlan, Schedule};
use mesh_fixtures::netns::Network;

/// How long every invariant must hold, uninterrupted, to call the mesh converged.
pub const STABILITY_WINDOW: Duration = Duration::from_secs(2);
/// Tasks younger than this may still be in flight: the "no backlog" part of convergence ignores them.
const IN_FLIGHT_ALLOWANCE_MS: u64 = 2_000;
/// Start-up of a restarted process (spawn, connect, READY, join), on this machine kind under load.
const START_ALLOWANCE_MS: u64 = 3_000;
/// Convergence is waited for this long beyond its bound before the trial is given up.
const CONVERGE_GRACE: Duration = Duration::from_secs(30);

/// What to run and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `mesh` binary.
    pub mesh: PathBuf,
    /// Where reports go (`<out>/chaos.json`, `<out>/svg/*.svg`, deployment state under `<out>/run/`).
    pub out: PathBuf,
    /// The schedule (from scenario files and a seed, or read back for `--replay`).
    pub schedule: Schedule,
    /// The mesh's timings.
    pub timings: MeshTimings,
}

/// One process's proxies: one per Kafka node (its own listener there), one to Redis.
struct Links {
    kafka: Vec<FaultProxy>,
    redis: FaultProxy,
}

impl Links {
    /// What the process's Kafka links do now (all of them are set together).
    fn kafka_fault(&self) -> Fault {
        self.kafka.iter().map(FaultProxy::fault).find(|f| *f != Fault::Pass).unwrap_or(Fault::Pass)
    }
}

/// What the infrastructure thread can be asked to do.
enum InfraOp {
    /// Something of Kafka's.
    Kafka(KafkaOp),
    /// redis-server's pid (for SIGSTOP and SIGCONT).
    RedisPid,
}

impl From<KafkaOp> for InfraOp {
    fn from(op: KafkaOp) -> Self {
        InfraOp::Kafka(op)
    }
}

/// What can be done to the broker or cluster.
enum KafkaOp {
    /// SIGKILL to the broker, or to every node of a cluster.
    KillKafka,
    /// Starts the broker (every stopped node) again on its data.
    RestartKafka,
    /// SIGKILL to one node of a cluster (by broker id).
    KillNode(u32),
    /// SIGTERM to one node of a cluster, then starts it again and waits until it serves.
    RestartNode(u32),
    /// Whether the broker is still running; an error says how it exited.
    KafkaAlive,
    /// Copies the broker's log (its directory is deleted with the run) to the given path.
    SaveKafkaLog(PathBuf),
}

type InfraReply = tokio::sync::oneshot::Sender<Result<Option<u32>, String>>;

/// Carries out a fault or a query on the run's Kafka, on the infrastructure thread.
fn apply(kafka: &mut LocalKafka, op: KafkaOp) -> Result<Option<u32>, String> {
    let nodes = kafka.len();
    let node_missing = |id: u32| format!("no Kafka node {id} (the run has {nodes} nodes)");
    match (kafka, op) {
        (kafka, KafkaOp::KillKafka) => kafka.kill_all(),
        (kafka, KafkaOp::RestartKafka) => kafka.start_stopped().map_err(|e| e.to_string())?,
        (LocalKafka::Cluster(c), KafkaOp::KillNode(id)) => c.node(id).ok_or_else(|| node_missing(id))?.kill(),
        (LocalKafka::Cluster(c), KafkaOp::RestartNode(id)) => {
            c.node(id).ok_or_else(|| node_missing(id))?.restart().map_err(|e| e.to_string())?;
        }
        (LocalKafka::One(_), KafkaOp::KillNode(_) | KafkaOp::RestartNode(_)) => {
            return Err("a single broker has no nodes to fail over between: run with --brokers 3".into());
        }
        (kafka, KafkaOp::KafkaAlive) => return kafka.exited().map_or(Ok(None), Err),
        (LocalKafka::One(b), KafkaOp::SaveKafkaLog(to)) => {
            std::fs::copy(b.log_path(), &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        (LocalKafka::Cluster(c), KafkaOp::SaveKafkaLog(to)) => {
            for (i, node) in c.nodes().enumerate() {
                let to = to.with_extension(format!("node{}.log", i + 1));
                std::fs::copy(node.log_path(), &to).map_err(|e| format!("{}: {e}", to.display()))?;
            }
        }
    }
    Ok(None)
}

/// The broker and redis-server live on a thread of their own for the whole run. The fixtures give their children
/// a parent-death signal, which Linux ties to the spawning *thread*: started from a tokio worker or blocking
/// thread, the broker would be killed when the runtime retires that thread (blocking threads idle for 10 s).
struct InfraThread {
    ops: std::sync::mpsc::Sender<(InfraOp, InfraReply)>,
    thread: Option<std::thread::JoinHandle<()>>,
    kafka: String,
    redis: String,
}

impl InfraThread {
    /// `listeners`: per Kafka node, one listener per process.
    fn start(listeners: Vec<Vec<ClientListener>>) -> Result<Self> {
        let (ops, rx) = std::sync::mpsc::channel::<(InfraOp, InfraReply)>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("chaos-infra".into()).spawn(move || {
            let started =
                LocalKafka::start(listeners).and_then(|k| RedisServer::start(RedisOptions::default()).map(|r| (k, r)));
            let (mut kafka, redis) = match started {
                Ok(pair) => pair,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok((kafka.bootstrap(), redis.url())));
            while let Ok((op, reply)) = rx.recv() {
                let result = match op {
                    InfraOp::RedisPid => Ok(redis.pid()),
                    InfraOp::Kafka(op) => apply(&mut kafka, op),
                };
                let _ = reply.send(result);
            }
            drop((kafka, redis));
        })?;
        let (kafka, redis) = ready_rx
            .recv()
            .context("the infrastructure thread died")?
            .map_err(|e| anyhow!("starting Kafka and Redis: {e}"))?;
        Ok(InfraThread { ops, thread: Some(thread), kafka, redis })
    }

    async fn call(&self, op: impl Into<InfraOp>) -> Result<Option<u32>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.ops.send((op.into(), tx)).map_err(|_| anyhow!("the infrastructure thread is gone"))?;
        rx.await.context("the infrastructure thread is gone")?.map_err(|e| anyhow!(e))
    }
}

impl Drop for InfraThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread, which stops the broker and redis-server.
        let (closed, _) = std::sync::mpsc::channel();
        self.ops = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The infrastructure of a run.
struct Infra {
    servers: InfraThread,
    links: BTreeMap<String, Links>,
    /// Kafka nodes.
    brokers: u32,
    /// The simulated hosts, if the run has them (dropped after the servers and proxies: fields drop in order).
    network: Option<Network>,
}

impl Infra {
    /// `brokers` Kafka nodes (1, or a cluster) and a Redis, with every process's links through proxies; with
    /// `hosts` above 1, the simulated hosts too, and the proxies of their processes on the bridge's address.
    async fn start(brokers: u32, hosts: u32) -> Result<Self> {
        let names = process_names();
        let network = if hosts > 1 { Some(blocking(|| Network::create(hosts))?) } else { None };
        let proxy_host = network.as_ref().map_or(Ipv4Addr::LOCALHOST, Network::bridge_addr);
        // Each process gets a listener of its own on every node, advertised as its proxy's address there: all of a
        // process's connections, to whichever node metadata sends it, go through its proxies.
        let mut kafka_proxies: BTreeMap<String, Vec<FaultProxy>> = BTreeMap::new();
        let mut listeners: Vec<Vec<ClientListener>> = (0..brokers.max(1)).map(|_| Vec::new()).collect();
        for name in &names {
            for node in &mut listeners {
                let broker_port = mesh_fixtures::free_port()?;
                let upstream: SocketAddr = ([127, 0, 0, 1], broker_port).into();
                let proxy = FaultProxy::start((proxy_host, 0).into(), upstream).await?;
                node.push(ClientListener {
                    name: format!("C_{}", name.to_uppercase().replace('-', "_")),
                    port: broker_port,
                    listen_host: Ipv4Addr::LOCALHOST,
                    advertised_port: proxy.addr().port(),
                    advertised_host: proxy_host,
                });
                kafka_proxies.entry(name.clone()).or_default().push(proxy);
            }
        }
        let servers = blocking(|| InfraThread::start(listeners))?;
        let redis_addr: SocketAddr = servers
            .redis
            .trim_start_matches("redis://")
            .parse()
            .with_context(|| format!("redis address of {}", servers.redis))?;
        let mut links = BTreeMap::new();
        for (name, kafka_proxy) in kafka_proxies {
            let redis_proxy = FaultProxy::start((proxy_host, 0).into(), redis_addr).await?;
            links.insert(name, Links { kafka: kafka_proxy, redis: redis_proxy });
        }
        Ok(Infra { servers, links, brokers: brokers.max(1), network })
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints {
            kafka: self
                .links
                .iter()
                .map(|(n, l)| (n.clone(), l.kafka.iter().map(|p| p.addr().to_string()).collect::<Vec<_>>().join(",")))
                .collect(),
            redis: self.links.iter().map(|(n, l)| (n.clone(), format!("redis://{}", l.redis.addr()))).collect(),
        }
    }

    /// Sets what `target`'s links to `backend` do (to Kafka: its links to every node).
    fn set_link(&self, target: &str, backend: Backend, fault: Fault) -> Result<()> {
        let l = self.links.get(target).ok_or_else(|| anyhow!("no links for {target}"))?;
        match backend {
            Backend::Kafka => l.kafka.iter().for_each(|p| p.set(fault)),
            Backend::Redis => l.redis.set(fault),
        }
        Ok(())
    }

    fn heal_all(&self) {
        if let Some(net) = &self.network {
            net.heal_all();
        }
        for l in self.links.values() {
            l.kafka.iter().for_each(|p| p.set(Fault::Pass));
            l.redis.set(Fault::Pass);
        }
    }
}

/// Runs the schedule and writes the reports; the returned report's verdict is the run's.
pub async fn run(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<RunReport> {
    let started = Instant::now();
    std::fs::create_dir_all(opts.out.join("svg"))?;
    let brokers = opts.schedule.brokers.max(1);
    progress(&if brokers == 1 {
        "starting Apache Kafka (one listener per process) and redis-server on loopback".to_owned()
    } else {
        format!("starting {brokers} Apache Kafka nodes (one listener per process on each) and redis-server on loopback")
    });
    let hosts = opts.schedule.hosts.max(1);
    if hosts > 1 {
        progress(&format!(
            "creating {hosts} simulated hosts (network namespaces on a bridge): the managers on host 1, the agents \
             dealt over the others"
        ));
    }
    let infra = Infra::start(brokers, hosts).await?;
    progress(&format!(
        "kafka {} · redis {} · {} fault proxies",
        infra.servers.kafka,
        infra.servers.redis,
        infra.links.values().map(|l| l.kafka.len() + 1).sum::<usize>()
    ));
    let mut bus_config = KafkaConfig::new(infra.servers.kafka.clone(), "mesh-chaos");
    bus_config.extra.push(("reconnect.backoff.max.ms".into(), "500".into()));
    // The hostile fault writes records at the broker's limit (1 MiB), over librdkafka's default of 1,000,000 bytes.
    bus_config.extra.push(("message.max.bytes".into(), "1048576".into()));
    // The tail's fetch states come with librdkafka's statistics: a tail found behind says where its fetch stands.
    bus_config.lag_interval = Some(Duration::from_secs(1));
    // librdkafka's debug contexts for the harness's own clients, written to harness.log (xtask's `log_to_file`).
    if let Ok(contexts) = std::env::var("MESH_CHAOS_KAFKA_DEBUG") {
        bus_config.extra.push(("debug".into(), contexts));
    }
    let bus = KafkaBus::new(bus_config)?;
    let store = RedisStore::connect(&infra.servers.redis).await?;
    let run_id = format!("{:x}", now_ms() % 0xff_ffff);
    let mut infra = infra;
    let mut scenarios = Vec::new();
    for plan in &opts.schedule.scenarios {
        progress(&format!("scenario {} ({} trials): {}", plan.name, plan.trials.len(), plan.description));
        // A broker that died under an earlier scenario fails every later one the same way: say so, with its log.
        if let Err(e) = infra.servers.call(KafkaOp::KafkaAlive).await {
            progress(&format!("  {e:#}"));
        }
        // Ctrl-C or SIGTERM: dropping the scenario takes its deployment down (`Deployment`'s Drop runs `mesh
        // down`), then the broker and redis-server stop with the infrastructure thread. The supervisor runs in a
        // session of its own, so without this it would outlive an interrupted run.
        let outcome = tokio::select! {
            r = scenario(opts, &mut infra, &bus, &store, &run_id, plan, progress) => r,
            signal = interrupted() => {
                infra.heal_all();
                bail!("interrupted by {signal} during scenario {}; its deployment was taken down", plan.name);
            }
        };
        let result = match outcome {
            Ok(r) => r,
            Err(e) => {
                infra.heal_all();
                let broker = infra.servers.call(KafkaOp::KafkaAlive).await.err().map(|b| format!("; {b:#}"));
                let e = anyhow!("{e:#}{}", broker.unwrap_or_default());
                progress(&format!("  {}: could not be run: {e:#}", plan.name));
                ScenarioResult {
                    name: plan.name.clone(),
                    description: plan.description.clone(),
                    prefix: String::new(),
                    started: now_ms(),
                    ended: now_ms(),
                    trials: Vec::new(),
                    checks: vec![CheckResult::new("harness", Verdict::Unknown, format!("{e:#}"))],
                    lost: 0,
                    duplicated: 0,
                    answers_per_bucket: Vec::new(),
                    events: Vec::new(),
                    verdict: Verdict::Unknown,
                }
            }
        };
        progress(&format!("  {} {:?}", result.name, result.verdict));
        match crate::report::svg(&result) {
            Ok(svg) => std::fs::write(opts.out.join("svg").join(format!("{}.svg", result.name)), svg)?,
            Err(e) => progress(&format!("  no SVG: {e}")),
        }
        scenarios.push(result);
    }
    // The broker's directory goes with the run: its log stays with the report.
    if let Err(e) = infra.servers.call(KafkaOp::SaveKafkaLog(opts.out.join("kafka.log"))).await {
        progress(&format!("the broker's log was not kept: {e:#}"));
    }
    let verdict = scenarios.iter().map(|s| s.verdict).max().unwrap_or(Verdict::Unknown);
    let report = RunReport {
        schema: SCHEMA.into(),
        timings: opts.timings.clone(),
        schedule: opts.schedule.clone(),
        scenarios,
        verdict,
        duration_s: started.elapsed().as_secs_f64(),
    };
    std::fs::write(opts.out.join("chaos.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(report)
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Bounds, from the live configuration (docs/chaos.md derives each).
fn bounds(fault: &FaultSpec, t: &MeshTimings) -> (Option<u64>, u64) {
    let silent_agent_detect = t.failure_timeout_ms + 2 * t.heartbeat_ms;
    let recover_link = t.kafka_reconnect_max_ms + t.retry_max_ms + IN_FLIGHT_ALLOWANCE_MS;
    match fault {
        FaultSpec::Signal { .. } | FaultSpec::CrashLoop { .. } | FaultSpec::KillDuringStartup { .. } => {
            (Some(1_000), t.restart_backoff_max_ms + START_ALLOWANCE_MS + IN_FLIGHT_ALLOWANCE_MS)
        }
        FaultSpec::Pause { target, duration_ms } => {
            let detect =
                (target.starts_with("agent-") && *duration_ms > silent_agent_detect).then_some(silent_agent_detect);
            (detect, recover_link)
        }
        FaultSpec::Link { target, backend: Backend::Kafka, fault, duration_ms } => {
            let silences = matches!(
                fault,
                Fault::Reset | Fault::Refuse | Fault::Blackhole { direction: Direction::Both | Direction::ToServer }
            );
            let detect = (target.starts_with("agent-") && silences && *duration_ms > silent_agent_detect)
                .then_some(silent_agent_detect);
            (detect, recover_link)
        }
        FaultSpec::Link { .. } | FaultSpec::Flap { .. } => (None, recover_link),
        // Clients reconnect as for a cut link; in addition, agents that reconnect after the topology manager did are
        // declared dead meanwhile and must rejoin (one failure timeout).
        FaultSpec::RestartKafka { .. } => (None, recover_link + t.failure_timeout_ms),
        // The surviving nodes serve once the controller fences the lost one; clients then reconnect as for a cut
        // link. A heartbeat path stalled by the failover may cost agents a `dead` verdict and a rejoin, as above.
        FaultSpec::KillLeader { .. } | FaultSpec::RollingRestart { .. } => {
            (None, failover_ms() + recover_link + t.failure_timeout_ms)
        }
        FaultSpec::PauseRedis { .. } => (None, t.retry_max_ms + IN_FLIGHT_ALLOWANCE_MS),
        // A cut host's connections stall; TCP retransmits with exponential backoff, so its next attempt may come up
        // to the cut's length after healing (connections that failed meanwhile reconnect as for a cut link). Its
        // agents were declared dead, and rejoin once they hear of it (one failure timeout, as for a broker restart).
        FaultSpec::CutHost { duration_ms, .. } => {
            let detect = (*duration_ms > silent_agent_detect).then_some(silent_agent_detect);
            (detect, *duration_ms + recover_link + t.failure_timeout_ms)
        }
        // The host's processes die with their supervisor and are silent until it runs again; the bound starts when
        // its `mesh up` is run again: the supervisor's start and its processes' (spawn, connect, READY, join).
        FaultSpec::KillHost { down_ms, .. } => {
            let detect = (*down_ms > silent_agent_detect).then_some(silent_agent_detect);
            (detect, START_ALLOWANCE_MS + IN_FLIGHT_ALLOWANCE_MS)
        }
        // Nothing the mesh does waits on its supervisor: only work in flight when it resumes.
        FaultSpec::PauseSupervisor { .. } => (None, IN_FLIGHT_ALLOWANCE_MS),
        // Nothing hostile may change anything: only what was in flight while the records were read.
        FaultSpec::HostileInput { .. } => (None, IN_FLIGHT_ALLOWANCE_MS),
        FaultSpec::Random => (None, recover_link),
    }
}

/// Bound on the availability gap, for faults that by design leave agent-to-agent messaging alone: the managers,
/// Redis and the supervisor are off the path of a task and its answer, so any longer gap means a process waited
/// on something it should not have (each bound was met by a stall the harness found: docs/chaos.md).
///
/// A broker failover has one too: messaging stops only until a controller fences the lost node (after electing
/// itself, when the lost node was the active controller) and clients find the new leaders (a reconnect), never for
/// the lost node's whole absence.
fn gap_bound(fault: &FaultSpec, t: &MeshTimings) -> Option<u64> {
    if matches!(fault, FaultSpec::KillLeader { .. } | FaultSpec::RollingRestart { .. }) {
        return Some(failover_ms() + t.kafka_reconnect_max_ms + IN_FLIGHT_ALLOWANCE_MS);
    }
    let off_path = match fault {
        FaultSpec::PauseSupervisor { .. } | FaultSpec::PauseRedis { .. } | FaultSpec::HostileInput { .. } => true,
        _ => fault.target().is_some_and(|t| MANAGERS.contains(&t)),
    };
    off_path.then_some(IN_FLIGHT_ALLOWANCE_MS)
}

/// The longest a lost node keeps its partitions: a controller election, then its session's timeout.
fn failover_ms() -> u64 {
    CLUSTER_CONTROLLER_FAILOVER_MS + CLUSTER_SESSION_TIMEOUT_MS
}

fn agent_id(process: &str) -> Option<&str> {
    process.strip_prefix("agent-")
}

/// Blocking work (supervisor calls, sleeps of the fixtures) from the async orchestrator.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

struct Scene<'a> {
    opts: &'a Options,
    infra: &'a mut Infra,
    bus: &'a KafkaBus,
    store: &'a RedisStore,
    prefix: String,
    topics: TopicNames,
    secret: DeploymentSecret,
    /// The hostile records the scenario wrote, to be found dead-lettered.
    injected: Vec<check::hostile::Injected>,
    /// Forged records every agent read and must have ignored.
    agent_records: u64,
    /// Proposals with a voter set of the proposer's choosing, to be found decided `refused`.
    refused: Vec<String>,
    tail: Tail,
    deployment: Deployment,
    events: Vec<Event>,
    started: u64,
}

impl Scene<'_> {
    fn note(&mut self, kind: &str, what: impl Into<String>) {
        let (at, what) = (now_ms(), what.into());
        // Faults go to the deployment's event log too, where `mesh view` and `mesh logs` readers see them.
        let logged = match kind {
            "inject" => Some("fault"),
            "heal" => Some("healed"),
            _ => None,
        };
        if let Some(event) = logged {
            let mut detail = serde_json::Map::new();
            detail.insert("what".into(), what.clone().into());
            let line = mesh_supervisor::Event { at_ms: at, process: "chaos".into(), event: event.into(), detail };
            if let Some(dir) = self.deployment.dir() {
                EventLog::new(dir.events()).append(&line);
            }
        }
        self.events.push(Event { at, kind: kind.into(), what });
    }

    async fn sleep(&mut self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        // Remember every pid on the way (for the orphan check).
        let _ = blocking(|| self.deployment.processes());
    }

    /// Applies a fault; returns when it is healed (for crashes: after the last signal).
    async fn inject(&mut self, fault: &FaultSpec) -> Result<()> {
        match fault {
            FaultSpec::Signal { target, signal } => {
                let sig = match signal {
                    Ending::Kill => "KILL",
                    Ending::Term => "TERM",
                };
                blocking(|| self.deployment.signal(target, sig))?;
            }
            FaultSpec::Pause { target, duration_ms } => {
                blocking(|| self.deployment.signal(target, "STOP"))?;
                self.sleep(*duration_ms).await;
                blocking(|| self.deployment.signal(target, "CONT"))?;
            }
            FaultSpec::CrashLoop { target, kills } => {
                for k in 0..*kills {
                    if k > 0 {
                        self.wait_respawn(target).await?;
                    }
                    blocking(|| self.deployment.signal(target, "KILL"))?;
                }
            }
            FaultSpec::KillDuringStartup { target } => {
                blocking(|| self.deployment.signal(target, "KILL"))?;
                self.wait_respawn(target).await?;
                blocking(|| self.deployment.signal(target, "KILL"))?;
            }
            FaultSpec::Link { target, backend, fault, duration_ms } => {
                self.infra.set_link(target, *backend, *fault)?;
                self.sleep(*duration_ms).await;
                self.infra.set_link(target, *backend, Fault::Pass)?;
            }
            FaultSpec::Flap { target, backend, fault, down_ms, up_ms, cycles } => {
                for c in 0..*cycles {
                    if c > 0 {
                        self.sleep(*up_ms).await;
                    }
                    self.infra.set_link(target, *backend, *fault)?;
                    self.sleep(*down_ms).await;
                    self.infra.set_link(target, *backend, Fault::Pass)?;
                }
            }
            FaultSpec::RestartKafka { down_ms } => {
                self.infra.servers.call(KafkaOp::KillKafka).await?;
                self.sleep(*down_ms).await;
                self.infra.servers.call(KafkaOp::RestartKafka).await.context("restarting the broker")?;
                self.probe_kafka().await?;
            }
            FaultSpec::KillLeader { down_ms } => {
                let (node, partition, records) = self.busiest_leader().await?;
                let topic = self.topics.name(TopicKind::Messages);
                self.note("note", format!("node {node} leads {topic}/{partition} ({records} records): killing it"));
                self.infra.servers.call(KafkaOp::KillNode(node)).await?;
                self.sleep(*down_ms).await;
                self.infra
                    .servers
                    .call(KafkaOp::RestartKafka)
                    .await
                    .with_context(|| format!("restarting node {node}"))?;
                self.probe_kafka().await?;
            }
            FaultSpec::RollingRestart { pause_ms } => {
                let nodes = self.infra.brokers;
                for node in 1..=nodes {
                    if node > 1 {
                        self.sleep(*pause_ms).await;
                    }
                    self.note("note", format!("rolling restart: node {node} of {nodes}"));
                    self.infra
                        .servers
                        .call(KafkaOp::RestartNode(node))
                        .await
                        .with_context(|| format!("node {node}"))?;
                }
                self.probe_kafka().await?;
            }
            FaultSpec::PauseRedis { duration_ms } => {
                let pid = self.infra.servers.call(InfraOp::RedisPid).await?.context("redis-server is not running")?;
                let pid = Pid::from_raw(i32::try_from(pid)?);
                kill(pid, Signal::SIGSTOP)?;
                self.sleep(*duration_ms).await;
                kill(pid, Signal::SIGCONT)?;
            }
            FaultSpec::PauseSupervisor { duration_ms } => {
                let pid = self.deployment.supervisor_pid().context("the supervisor is not running")?;
                let pid = Pid::from_raw(pid);
                kill(pid, Signal::SIGSTOP)?;
                // Not `self.sleep`: its status read would wait on the stopped supervisor.
                tokio::time::sleep(Duration::from_millis(*duration_ms)).await;
                kill(pid, Signal::SIGCONT)?;
            }
            FaultSpec::HostileInput { target } => {
                let agent = agent_id(target).ok_or_else(|| anyhow!("{target} is not an agent"))?.to_owned();
                let (decided, proposal, epoch) = {
                    let o = self.tail.observed();
                    let decided = o.decisions.values().filter_map(|v| v.first()).next_back().cloned();
                    let epoch = o
                        .consensus_inputs
                        .iter()
                        .filter_map(|r| match r {
                            mesh_proto::records::Record::Member(b) => Some(b.member.epoch),
                            _ => None,
                        })
                        .max()
                        .unwrap_or(0);
                    (decided, o.proposals.keys().last().cloned(), epoch)
                };
                let n = self.injected.len();
                let injection =
                    crate::hostile::inject(self.bus, &self.topics, &self.secret, &agent, n, decided, proposal, epoch)
                        .await?;
                self.injected.extend(injection.injected);
                self.agent_records += injection.agent_records;
                self.refused.extend(injection.refused);
            }
            FaultSpec::CutHost { host, duration_ms } => {
                let net = self.infra.network.as_ref().context("a host cut needs simulated hosts (--hosts)")?;
                net.cut(*host)?;
                self.sleep(*duration_ms).await;
                let net = self.infra.network.as_ref().context("a host cut needs simulated hosts (--hosts)")?;
                net.heal(*host)?;
            }
            FaultSpec::KillHost { host, down_ms } => {
                blocking(|| self.deployment.kill_host(*host))?;
                self.sleep(*down_ms).await;
                blocking(|| self.deployment.restart_host(*host)).with_context(|| format!("restarting host {host}"))?;
            }
            FaultSpec::Random => bail!("a random fault must be resolved by the schedule"),
        }
        Ok(())
    }

    /// Waits until the restarted broker acknowledges a write (`acks=all`) from a fresh connection: the moment it
    /// serves again, later than the moment its process reports it started (it still loads its logs and elects
    /// leaders then). The probe topic is the harness's own; the mesh never reads it.
    /// The broker id leading the messages partition with the most records, that partition and its record count:
    /// the leader whose loss interrupts the most traffic.
    async fn busiest_leader(&self) -> Result<(u32, i32, i64)> {
        let topic = self.topics.name(TopicKind::Messages);
        let mut busiest: Option<(u32, i32, i64)> = None;
        for p in self.bus.replicas(&topic).await.with_context(|| format!("the replicas of {topic}"))? {
            // The mesh creates its topics with the cluster's default replication: three copies here, or the loss
            // of a leader could lose acknowledged records and the scenario would test nothing.
            if p.replicas.len() < 3 || p.in_sync.len() < 3 {
                bail!(
                    "{topic}/{} has replicas {:?} (in sync {:?}): a leader kill needs three copies in sync",
                    p.partition,
                    p.replicas,
                    p.in_sync
                );
            }
            let end = self.bus.end_offset(&topic, p.partition).await?;
            let Ok(leader) = u32::try_from(p.leader) else { continue };
            if busiest.is_none_or(|(_, _, most)| end > most) {
                busiest = Some((leader, p.partition, end));
            }
        }
        busiest.ok_or_else(|| anyhow!("no partition of {topic} has a leader"))
    }

    async fn probe_kafka(&mut self) -> Result<()> {
        let topic = format!("{}.chaos-probe", self.prefix);
        let spec = mesh_transport::TopicSpec { name: topic.clone(), partitions: 1, compacted: false, retention: None };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let record = OutRecord {
                topic: topic.clone(),
                partition: 0,
                key: b"probe".to_vec(),
                payload: b"{}".to_vec(),
                sent_at_us: None,
                auth: None,
            };
            let attempt = async {
                self.bus.ensure_topics(std::slice::from_ref(&spec)).await?;
                self.bus.publish(record).await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                _ if Instant::now() >= deadline => {
                    bail!("the restarted broker did not acknowledge a write within 60 s")
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until the supervisor has spawned `target` again (a new pid).
    async fn wait_respawn(&mut self, target: &str) -> Result<()> {
        let before = blocking(|| self.deployment.pid_of(target))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let now = blocking(|| self.deployment.pid_of(target))?;
            if now.is_some() && now != before {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{target} was not spawned again within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether every convergence condition holds now; the first that does not, otherwise.
    async fn converged_now(&mut self, since: u64) -> Result<(), String> {
        let ready = blocking(|| self.deployment.all_ready()).map_err(|e| e.to_string())?;
        if !ready {
            return Err("not every process is READY".into());
        }
        let now = now_ms();
        let timings = &self.opts.timings;
        {
            let o = self.tail.observed();
            let live = check::membership::live_in_roster(&o);
            for a in AGENTS {
                let id = agent_id(a).unwrap_or(a);
                if !live.contains(id) {
                    return Err(format!("{id} is not live in the roster"));
                }
                // Read order is only roughly time order (partitions interleave): look at all of them.
                let answered = o.answers.iter().filter(|(ts, _, _)| *ts >= since);
                let (mut gave, mut got) = (false, false);
                for (_, from, to) in answered {
                    gave |= from == id;
                    got |= to == id;
                }
                if !(gave && got) {
                    return Err(format!(
                        "{id} has not {} an answer since healing",
                        if gave { "received" } else { "given" }
                    ));
                }
            }
            if let Some((id, _)) = o.unanswered_before(now.saturating_sub(IN_FLIGHT_ALLOWANCE_MS)).first() {
                return Err(format!("task {id} is still unanswered"));
            }
            let overdue = now.saturating_sub(timings.proposal_timeout_ms + IN_FLIGHT_ALLOWANCE_MS);
            if let Some((id, _)) = o
                .proposals
                .iter()
                .find(|(id, (ts, _))| *ts < overdue && *ts >= self.started && !o.decisions.contains_key(*id))
            {
                return Err(format!("proposal {id} is overdue and undecided"));
            }
        }
        let stats = redis_keys::topology_stats(&self.prefix);
        let fields = tokio::time::timeout(Duration::from_secs(1), self.store.hgetall(&stats))
            .await
            .map_err(|_| "redis does not answer".to_owned())?
            .map_err(|e| e.to_string())?;
        match TopologyStats::from_fields(fields).tick {
            Some(t) if (t + 1) * timings.decay_interval_ms >= since => Ok(()),
            _ => Err("the topology manager has not applied a window since healing".into()),
        }
    }

    /// Polls until the invariants held for a whole stability window: the start of that window, or `None`.
    async fn wait_converged(&mut self, since: u64, timeout: Duration) -> (Option<u64>, String) {
        let deadline = Instant::now() + timeout;
        let mut holding_since: Option<u64> = None;
        let mut last_reason = String::new();
        while Instant::now() < deadline {
            match self.converged_now(since).await {
                Ok(()) => {
                    let start = *holding_since.get_or_insert_with(now_ms);
                    if now_ms().saturating_sub(start) >= STABILITY_WINDOW.as_millis() as u64 {
                        return (Some(start), last_reason);
                    }
                }
                Err(reason) => {
                    holding_since = None;
                    last_reason = reason;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (None, last_reason)
    }

    /// The agents a fault silences: its target, or every agent of its host.
    fn silenced_agents(&self, fault: &FaultSpec) -> Vec<String> {
        match fault.host() {
            Some(host) => {
                self.deployment.processes_of(host).iter().filter_map(|p| agent_id(p)).map(str::to_owned).collect()
            }
            None => fault.target().and_then(agent_id).map(str::to_owned).into_iter().collect(),
        }
    }

    /// For a host fault: the moment the last of the host's agents was declared dead (every one must be), or `None`.
    fn host_detection(&self, fault: &FaultSpec, from: u64, until: u64) -> Option<(u64, String)> {
        let agents = self.silenced_agents(fault);
        let o = self.tail.observed();
        let mut last: Option<u64> = None;
        for agent in &agents {
            let at =
                o.dead.iter().filter(|(a, ts)| a == agent && *ts >= from && *ts <= until).map(|(_, ts)| *ts).min()?;
            last = Some(last.map_or(at, |l| l.max(at)));
        }
        last.map(|at| (at, format!("topology: {} declared dead", agents.join(", "))))
    }

    fn detection(&self, fault: &FaultSpec, from: u64, until: u64) -> Option<(u64, String)> {
        if fault.host().is_some() {
            return self.host_detection(fault, from, until);
        }
        let mut found: Vec<(u64, String)> = Vec::new();
        let target = fault.target();
        let events = self.deployment.events();
        if let Some(e) = events.iter().find(|e| {
            e.at_ms >= from
                && e.at_ms <= until
                && target.is_none_or(|t| e.process == t)
                && matches!(e.event.as_str(), "exited" | "watchdog" | "failed")
        }) {
            found.push((e.at_ms, format!("supervisor: {} {}", e.process, e.event)));
        }
        {
            let o = self.tail.observed();
            if let Some((agent, ts)) = o
                .dead
                .iter()
                .find(|(a, ts)| *ts >= from && *ts <= until && target.and_then(agent_id).is_none_or(|t| a == t))
            {
                found.push((*ts, format!("topology: {agent} declared dead")));
            }
        }
        let logs: Vec<(String, PathBuf)> =
            process_names().into_iter().map(|n| (n.clone(), self.deployment.log(&n))).collect();
        if let Some((ms, name, line)) = first_complaint(&logs, from, until) {
            found.push((ms, format!("{name}: {line}")));
        }
        found.into_iter().min_by_key(|(ms, _)| *ms)
    }

    /// What went wrong in [from, until], for a trial that broke a bound: the supervisor's record of kills, exits
    /// and its own stalls, then the first WARN/ERROR lines of each process; each line `+ms since from`.
    fn evidence(&self, from: u64, until: u64) -> Vec<String> {
        const LINES: usize = 8;
        const LINES_PER_PROCESS: usize = 3;
        let events = self.deployment.events();
        let mut out: Vec<(u64, String)> = events
            .iter()
            .filter(|e| e.at_ms >= from && e.at_ms <= until)
            .filter(|e| matches!(e.event.as_str(), "killed" | "exited" | "watchdog" | "failed" | "stalled" | "ready"))
            .take(LINES)
            .map(|e| (e.at_ms, format!("supervisor: {} {}", e.process, e.event)))
            .collect();
        let logs: Vec<(String, PathBuf)> =
            process_names().into_iter().map(|n| (n.clone(), self.deployment.log(&n))).collect();
        out.extend(
            complaints(&logs, from, until, LINES_PER_PROCESS)
                .into_iter()
                .map(|(ms, name, line)| (ms, format!("{name}: {line}"))),
        );
        out.sort_by_key(|(ms, _)| *ms);
        out.into_iter().map(|(ms, what)| format!("+{} ms {what}", ms.saturating_sub(from))).collect()
    }

    /// Longest stretch in [from, to] without an answer between agents the fault did not target.
    fn availability_gap(&self, fault: &FaultSpec, from: u64, to: u64) -> u64 {
        let excluded = self.silenced_agents(fault);
        let o = self.tail.observed();
        let mut stamps: Vec<u64> = o
            .answers
            .iter()
            .filter(|(ts, a, b)| *ts >= from && *ts <= to && !excluded.iter().any(|x| a == x || b == x))
            .map(|(ts, _, _)| *ts)
            .collect();
        stamps.sort_unstable();
        let mut last = from;
        let mut gap = 0;
        for s in stamps {
            gap = gap.max(s.saturating_sub(last));
            last = s;
        }
        gap.max(to.saturating_sub(last))
    }
}

async fn scenario(
    opts: &Options,
    infra: &mut Infra,
    bus: &KafkaBus,
    store: &RedisStore,
    run_id: &str,
    plan: &ScenarioPlan,
    progress: &mut dyn FnMut(&str),
) -> Result<ScenarioResult> {
    let prefix = format!("chaos-{run_id}-{}", plan.name);
    // The deployment's secret, made here so that the tail checks records as the mesh does (a forged record is left
    // out of every checker's view, as the mesh leaves it out of its state) and the hostile fault can forge with it.
    let secret_file = opts.out.join("run").join(format!("{}.secret", plan.name));
    let secret_text = format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    std::fs::create_dir_all(opts.out.join("run"))?;
    mesh_supervisor::private::create(&secret_file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, secret_text.as_bytes()))
        .with_context(|| format!("writing {}", secret_file.display()))?;
    let secret = DeploymentSecret::parse(&secret_text)?;
    let credentials = Credentials { secret: Some(secret.clone()), agent_key: None };
    let mesh = MeshConfig { topics: TopicNames::new(prefix.clone()), credentials, ..MeshConfig::default() };
    let tail = Tail::start(bus.clone(), &mesh).await?;
    let root = opts.out.join("run").join(&plan.name);
    let endpoints = infra.endpoints();
    let (kafka, redis) = (infra.servers.kafka.clone(), infra.servers.redis.clone());
    let deployment = blocking(|| {
        let reach = Reach {
            kafka: &kafka,
            redis: &redis,
            endpoints: &endpoints,
            secret_file: &secret_file,
            network: infra.network.as_ref(),
        };
        Deployment::start(&opts.mesh, &root, &prefix, &reach, &opts.timings)
    })?;
    let managers_dir = deployment.dir().map_or_else(|| root.clone(), |d| d.root().to_path_buf());
    progress(&format!(
        "  watch it live: mesh view --state-dir {} --secret-file {} (faults appear among the events)",
        managers_dir.display(),
        secret_file.display()
    ));
    let started = now_ms();
    let mut scene = Scene {
        opts,
        infra,
        bus,
        store,
        prefix: prefix.clone(),
        topics: mesh.topics.clone(),
        secret,
        injected: Vec::new(),
        agent_records: 0,
        refused: Vec::new(),
        tail,
        deployment,
        events: Vec::new(),
        started,
    };
    scene.note("note", "deployment READY");
    let (steady, why) = scene.wait_converged(started, Duration::from_secs(60)).await;
    if steady.is_none() {
        bail!("the fresh deployment never reached a steady state: {why}");
    }
    scene.note("note", "steady state");

    let mut trials = Vec::new();
    for (i, t) in plan.trials.iter().enumerate() {
        scene.sleep(t.settle_ms).await;
        let (detect_bound, converge_bound) = bounds(&t.fault, &opts.timings);
        let t_inject = now_ms();
        scene.note("inject", t.fault.label());
        let injected = scene.inject(&t.fault).await;
        let t_heal = now_ms();
        scene.note("heal", t.fault.label());
        let mut violations = Vec::new();
        if let Err(e) = injected {
            scene.infra.heal_all();
            violations.push(format!("injection failed: {e:#}"));
        }
        let wait = Duration::from_millis(converge_bound) + CONVERGE_GRACE;
        let (t_converged, why) = scene.wait_converged(t_heal, wait).await;
        let waited_on = (!why.is_empty()).then(|| why.clone());
        let until = t_converged.unwrap_or_else(now_ms);
        let detected = scene.detection(&t.fault, t_inject, until);
        if let Some(c) = t_converged {
            scene.events.push(Event { at: c, kind: "converged".into(), what: t.fault.label() });
            if c.saturating_sub(t_heal) > converge_bound {
                violations.push(format!("converged {} ms after healing, bound {converge_bound} ms", c - t_heal));
            }
        } else {
            violations.push(format!("did not converge within {} s of healing: {why}", wait.as_secs()));
        }
        if let Some((at, by)) = &detected {
            scene.events.push(Event { at: *at, kind: "detect".into(), what: by.clone() });
        }
        match (detect_bound, &detected) {
            (Some(b), Some((at, _))) if at.saturating_sub(t_inject) > b => {
                violations.push(format!("detected {} ms after injection, bound {b} ms", at - t_inject));
            }
            (Some(b), None) => violations.push(format!("not detected (bound {b} ms)")),
            _ => {}
        }
        let gap = scene.availability_gap(&t.fault, t_inject, until);
        let gap_bound_ms = gap_bound(&t.fault, &opts.timings);
        if let Some(b) = gap_bound_ms
            && gap > b
        {
            violations.push(format!("agents went {gap} ms without an answer, bound {b} ms"));
        }
        let trial = TrialResult {
            trial: u32::try_from(i + 1).unwrap_or(u32::MAX),
            fault: t.fault.label(),
            t_inject,
            t_detect: detected.as_ref().map(|d| d.0),
            detected_by: detected.map(|d| d.1),
            t_heal,
            t_converged,
            detect_bound_ms: detect_bound,
            converge_bound_ms: converge_bound,
            availability_gap_ms: gap,
            gap_bound_ms,
            waited_on,
            evidence: if violations.is_empty() { Vec::new() } else { scene.evidence(t_inject, until) },
            violations,
        };
        progress(&format!(
            "  trial {}/{}: {} · detect {} · converge {} (bound {} ms{}) · gap {} ms{}",
            i + 1,
            plan.trials.len(),
            trial.fault,
            trial.detect_ms().map_or("-".into(), |d| format!("{d} ms")),
            trial.converge_ms().map_or("NONE".into(), |d| format!("{d} ms")),
            converge_bound,
            trial.waited_on.as_ref().map_or(String::new(), |w| format!("; last waited on: {w}")),
            gap,
            if trial.violations.is_empty() { String::new() } else { format!(" · {}", trial.violations.join("; ")) }
        ));
        for e in &trial.evidence {
            progress(&format!("      {e}"));
        }
        trials.push(trial);
        if t_converged.is_none() {
            break;
        }
    }

    // Drain, then check what the mesh wrote.
    scene.infra.heal_all();
    let cutoff = now_ms().saturating_sub(IN_FLIGHT_ALLOWANCE_MS);
    let drain_deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < drain_deadline && !scene.tail.observed().unanswered_before(cutoff).is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut checks = Vec::new();
    let snapshot = mesh_node::topology::read_snapshot(store, &prefix).await.ok().flatten();
    let caught_up = scene.tail.catch_up(bus, Duration::from_secs(30)).await;
    let restarted = scene.tail.fetch_restarts();
    if restarted > 0 {
        let line = format!(
            "the tail restarted {restarted} fetch(es) stuck in librdkafka's offset validation (harness.log says where)"
        );
        progress(&format!("  {line}"));
        scene.note("note", line);
    }
    // One look at the supervisor for both: processes left stopped, and the agents that run.
    let processes = blocking(|| scene.deployment.processes())?;
    let stopped: Vec<String> =
        processes.iter().filter(|p| p.pid.is_some_and(crate::deploy::stopped)).map(|p| p.name.clone()).collect();
    let running: BTreeSet<String> = processes
        .iter()
        .filter(|p| p.state == mesh_supervisor::ProcState::Ready)
        .filter_map(|p| agent_id(&p.name).map(str::to_owned))
        .collect();
    let mut faulty: Vec<String> = scene
        .infra
        .links
        .iter()
        .flat_map(|(n, l)| [(n, "kafka", l.kafka_fault()), (n, "redis", l.redis.fault())])
        .filter(|(_, _, f)| *f != Fault::Pass)
        .map(|(n, b, f)| format!("{n}<->{b} {}", f.label()))
        .collect();
    if let Some(net) = &scene.infra.network {
        faulty.extend(net.cut_hosts().into_iter().map(|h| format!("host {h} cut off")));
    }
    // The decisions first, then what explains them (Redis, the proposals and votes): see `check::decisions`.
    let published = scene.tail.observed().decisions.clone();
    let stored_decisions: BTreeMap<String, String> =
        store.hgetall(&redis_keys::decisions(&prefix)).await.unwrap_or_default().into_iter().collect();
    let inputs_caught_up =
        scene.tail.catch_up_kinds(bus, &[TopicKind::Proposals, TopicKind::Votes], Duration::from_secs(30)).await;
    let (lost, duplicated) = {
        let o = scene.tail.observed();
        checks.push(check::lost::check(&o, cutoff));
        checks.push(check::duplicates::check(&o));
        checks.push(check::membership::check(&o, &running));
        let topology = TopologyConfig {
            decay_interval: Duration::from_millis(opts.timings.decay_interval_ms),
            ..TopologyConfig::default()
        };
        let mut graph = check::graph::check(snapshot, &o, &topology);
        if let CatchUp::Behind(behind) = &caught_up
            && graph.verdict != Verdict::Pass
        {
            graph.verdict = Verdict::Unknown;
            graph.detail.push_str(&format!(" (the tail did not catch up with the log: {behind})"));
        }
        checks.push(graph);
        let params =
            ConsensusParams { proposal_timeout_ms: opts.timings.proposal_timeout_ms, ..ConsensusParams::default() };
        let mut decisions = check::decisions::check(&published, &o, &stored_decisions, params);
        if let CatchUp::Behind(behind) = &inputs_caught_up
            && decisions.verdict != Verdict::Pass
        {
            decisions.verdict = Verdict::Unknown;
            decisions.detail.push_str(&format!(" (the tail did not catch up with the proposals and votes: {behind})"));
        }
        checks.push(decisions);
        (check::lost::count(&o, cutoff) as u64, check::duplicates::count(&o))
    };
    if !scene.injected.is_empty() {
        let mut ignored = BTreeMap::new();
        for process in AGENTS {
            let id = agent_id(process).unwrap_or(process);
            let stats = store.hgetall(&redis_keys::agent_stats(&prefix, id)).await.unwrap_or_default();
            ignored.insert(id.to_owned(), AgentStats::from_fields(stats).unauthenticated.unwrap_or(0));
        }
        let (letters, decisions) = {
            let o = scene.tail.observed();
            (o.letters.clone(), o.decisions.clone())
        };
        let injection = check::hostile::Injections {
            injected: &scene.injected,
            agent_records: scene.agent_records,
            refused: &scene.refused,
        };
        checks.push(check::hostile::check(&letters, &decisions, &injection, &ignored));
    }
    checks.push(check::healed::check(&faulty, &stopped));
    let down = blocking(|| scene.deployment.down());
    scene.note("note", "mesh down");
    let orphans = check::orphans::check(&scene.deployment.seen_pids, Duration::from_secs(10));
    checks.push(match down {
        Ok(()) => orphans,
        Err(e) => CheckResult::new(
            check::orphans::NAME,
            Verdict::Fail,
            format!("mesh down failed: {e:#}; {}", orphans.detail),
        ),
    });
    for c in &checks {
        scene.events.push(Event {
            at: now_ms(),
            kind: "check".into(),
            what: format!("{} {:?}: {}", c.name, c.verdict, c.detail),
        });
    }
    let ended = now_ms();
    let answers_per_bucket = {
        let o = scene.tail.observed();
        let buckets = usize::try_from(ended.saturating_sub(started) / 500 + 1).unwrap_or(0);
        let mut v = vec![0u32; buckets];
        for (ts, _, _) in &o.answers {
            if *ts >= started && *ts < ended {
                v[usize::try_from((ts - started) / 500).unwrap_or(0).min(buckets - 1)] += 1;
            }
        }
        v
    };
    let mut verdict = checks.iter().map(|c| c.verdict).max().unwrap_or(Verdict::Unknown);
    if trials.iter().any(|t| !t.violations.is_empty()) || trials.len() < plan.trials.len() {
        verdict = Verdict::Fail;
    }
    Ok(ScenarioResult {
        name: plan.name.clone(),
        description: plan.description.clone(),
        prefix,
        started,
        ended,
        trials,
        checks,
        lost,
        duplicated,
        answers_per_bucket,
        events: scene.events,
        verdict,
    })
}

/// Reads a schedule back from a run's JSON (`chaos.json`, which also gives the mesh timings the run used) or from a
/// bare schedule file.
pub fn read_schedule(path: &Path) -> Result<(Schedule, Option<MeshTimings>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(report) = serde_json::from_str::<RunReport>(&text) {
        return Ok((report.schedule, Some(report.timings)));
    }
    let schedule = serde_json::from_str::<Schedule>(&text)
        .with_context(|| format!("{}: neither a chaos report (mesh-chaos/1) nor a schedule", path.display()))?;
    Ok((schedule, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Direction;

    #[test]
    fn bounds_follow_the_configuration_and_only_silences_have_a_detection_bound() {
        let t = MeshTimings::default();
        let kill = FaultSpec::Signal { target: "agent-fraud".into(), signal: Ending::Kill };
        assert_eq!(bounds(&kill, &t), (Some(1_000), 2_000 + START_ALLOWANCE_MS + IN_FLIGHT_ALLOWANCE_MS));
        let long_pause = FaultSpec::Pause { target: "agent-fraud".into(), duration_ms: 5_000 };
        assert_eq!(bounds(&long_pause, &t).0, Some(2_000 + 500));
        let short_pause = FaultSpec::Pause { target: "agent-fraud".into(), duration_ms: 1_000 };
        assert_eq!(bounds(&short_pause, &t).0, None, "a pause shorter than the failure timeout goes unnoticed");
        let one_way = FaultSpec::Link {
            target: "agent-fraud".into(),
            backend: Backend::Kafka,
            fault: Fault::Blackhole { direction: Direction::ToClient },
            duration_ms: 5_000,
        };
        assert_eq!(bounds(&one_way, &t).0, None);
        let slower = MeshTimings { failure_timeout_ms: 10_000, ..MeshTimings::default() };
        assert_eq!(bounds(&long_pause, &slower).0, None, "5 s is shorter than a 10 s failure timeout");
        let cut = FaultSpec::CutHost { host: 2, duration_ms: 4_000 };
        assert_eq!(bounds(&cut, &t).0, Some(2_500), "a host cut longer than the failure timeout is noticed");
        assert!(bounds(&cut, &t).1 >= 4_000 + t.failure_timeout_ms, "TCP's backoff after the cut, then a rejoin");
        let brief_cut = FaultSpec::CutHost { host: 2, duration_ms: 1_000 };
        assert_eq!(bounds(&brief_cut, &t).0, None);
        let crash = FaultSpec::KillHost { host: 3, down_ms: 4_000 };
        assert_eq!(bounds(&crash, &t), (Some(2_500), START_ALLOWANCE_MS + IN_FLIGHT_ALLOWANCE_MS));
        assert_eq!(gap_bound(&crash, &t), None, "traffic to the lost host's agents waits for them");
        let failover = FaultSpec::KillLeader { down_ms: 6_000 };
        assert_eq!(bounds(&failover, &t).0, None, "a broker's loss silences no agent for long");
        assert_eq!(
            gap_bound(&failover, &t),
            Some(
                CLUSTER_CONTROLLER_FAILOVER_MS
                    + CLUSTER_SESSION_TIMEOUT_MS
                    + t.kafka_reconnect_max_ms
                    + IN_FLIGHT_ALLOWANCE_MS
            ),
            "messaging waits for the fencing and a reconnect, not for the node's return"
        );
    }

    #[test]
    fn only_faults_off_the_message_path_bound_the_gap() {
        let link = |target: &str| FaultSpec::Link {
            target: target.into(),
            backend: Backend::Redis,
            fault: Fault::Blackhole { direction: Direction::Both },
            duration_ms: 4_000,
        };
        assert_eq!(gap_bound(&link("topology"), &MeshTimings::default()), Some(IN_FLIGHT_ALLOWANCE_MS));
        assert_eq!(gap_bound(&link("consensus"), &MeshTimings::default()), Some(IN_FLIGHT_ALLOWANCE_MS));
        assert_eq!(
            gap_bound(&link("agent-sales"), &MeshTimings::default()),
            None,
            "its peers wait on the cut agent's answers"
        );
        assert_eq!(
            gap_bound(&FaultSpec::PauseSupervisor { duration_ms: 8_000 }, &MeshTimings::default()),
            Some(IN_FLIGHT_ALLOWANCE_MS)
        );
        assert_eq!(
            gap_bound(&FaultSpec::RestartKafka { down_ms: 2_000 }, &MeshTimings::default()),
            None,
            "no broker, no messaging"
        );
        let kill = FaultSpec::Signal { target: "topology".into(), signal: Ending::Kill };
        assert_eq!(gap_bound(&kill, &MeshTimings::default()), Some(IN_FLIGHT_ALLOWANCE_MS));
    }
}
