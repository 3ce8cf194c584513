//! The topology manager: owns the SlimeMold graph and the roster.
//!
//! Inputs are the topology topic (joins, leaves, deaths) and every partition of the messages topic (each task or
//! response A→B reinforces A→B). When the wall clock crosses a tick boundary the manager appends a `tick` marker to
//! every one of those partitions; [`TickAligner`] closes a window when every partition has delivered its marker, and
//! the window is applied as: decay for the ticks elapsed, then the window's events in canonical order. The graph is
//! therefore a pure function of the log, which is what makes crash recovery exact: the snapshot in Redis holds the
//! graph, the roster and, per partition, where to resume; replaying from there rebuilds the same windows.
//!
//! Liveness is the one clock-driven judgement: heartbeats (read live, never replayed) feed a [`FailureDetector`],
//! whose verdicts are appended to the topology topic as `dead` records and take effect when read back, in log order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::join_all;
use mesh_core::aligner::{TickAligner, Window};
use mesh_core::graph::{EdgeChange, SlimeGraph};
use mesh_core::membership::{AgentProfile, FailureDetector, Member, Roster};
use mesh_core::{AgentId, Milli};
use mesh_proto::records::{DeadBody, EdgeBody, EdgeChangeKind, EdgesBody, MemberBody, Record, TickBody};
use mesh_proto::{TopicKind, decode};
use mesh_transport::{Assignment, Bus, InRecord, Reader, SnapshotStore, StartAt};
use serde::{Deserialize, Serialize};

use crate::config::{MeshConfig, TopologyConfig};
use crate::latest_writer::LatestWriter;
use crate::runtime::{
    NodeError, Publisher, ReadErrors, Readiness, Shutdown, ensure_topics, key_text, now_ms, redis_keys, retry,
};

/// What the aligner carries between markers.
#[derive(Debug, Clone, PartialEq)]
enum TopoEvent {
    Join(AgentProfile),
    Leave(AgentId),
    Dead(AgentId),
    Message { from: AgentId, to: AgentId },
}

/// One input partition and where to resume reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SourceResume {
    topic: String,
    partition: i32,
    resume: Option<i64>,
}

/// Everything needed to resume exactly where the last snapshot was taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopologySnapshot {
    format: u32,
    decay_interval_ms: u64,
    graph: SlimeGraph,
    roster: Roster,
    last_closed: Option<u64>,
    sources: Vec<SourceResume>,
    taken_at_ms: u64,
}

const SNAPSHOT_FORMAT: u32 = 1;

/// How many missed ticks a late timer emits one by one.
const MAX_CATCH_UP_TICKS: u64 = 100;

/// The topology manager's whole state (apart from I/O handles).
struct TopologyState {
    graph: SlimeGraph,
    roster: Roster,
    aligner: TickAligner<TopoEvent>,
    sources: Vec<(String, i32)>,
    last_seen: Vec<Option<i64>>,
    last_pushed: Vec<Option<i64>>,
}

impl TopologyState {
    fn source_index(&self, topic: &str, partition: i32) -> Option<usize> {
        self.sources.iter().position(|(t, p)| t == topic && *p == partition)
    }

    fn snapshot(&self, interval_ms: u64) -> TopologySnapshot {
        let resume = self.aligner.resume_positions();
        let sources = self
            .sources
            .iter()
            .enumerate()
            .map(|(i, (topic, partition))| {
                let from_aligner = resume.get(i).copied().flatten();
                // Records the aligner never saw (edge events, dead letters) need not be read again.
                let nothing_pending = from_aligner.is_none() || from_aligner == self.last_pushed[i].map(|p| p + 1);
                let resume = if nothing_pending {
                    match (from_aligner, self.last_seen[i].map(|p| p + 1)) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    }
                } else {
                    from_aligner
                };
                SourceResume { topic: topic.clone(), partition: *partition, resume }
            })
            .collect();
        TopologySnapshot {
            format: SNAPSHOT_FORMAT,
            decay_interval_ms: interval_ms,
            graph: self.graph.clone(),
            roster: self.roster.clone(),
            last_closed: self.aligner.last_closed(),
            sources,
            taken_at_ms: now_ms(),
        }
    }
}

/// What applying a window changed, to be published.
#[derive(Default)]
struct WindowEffects {
    members: Vec<Member>,
    edges: Vec<(u64, EdgeChange)>,
    joined: Vec<AgentId>,
    gone: Vec<AgentId>,
}

/// Applies one closed window: decay for the elapsed ticks, then the events in order. Pure.
fn apply_window(graph: &mut SlimeGraph, roster: &mut Roster, window: Window<TopoEvent>, fx: &mut WindowEffects) {
    let ticks = window.previous_tick.map_or(0, |prev| window.tick.saturating_sub(prev));
    for change in graph.decay(ticks) {
        fx.edges.push((window.tick, change));
    }
    for event in window.events {
        match event {
            TopoEvent::Join(profile) => {
                let id = profile.id.clone();
                if let Some(m) = roster.join(profile) {
                    fx.members.push(m);
                    fx.joined.push(id.clone());
                }
                fx.edges.extend(graph.add_agent(&id).into_iter().map(|c| (window.tick, c)));
            }
            TopoEvent::Leave(id) | TopoEvent::Dead(id) if !roster.is_live(&id) => {
                let _ = id;
            }
            TopoEvent::Leave(id) => {
                if let Some(m) = roster.leave(&id) {
                    fx.members.push(m);
                }
                fx.edges.extend(graph.remove_agent(&id).into_iter().map(|c| (window.tick, c)));
                fx.gone.push(id);
            }
            TopoEvent::Dead(id) => {
                if let Some(m) = roster.declare_dead(&id) {
                    fx.members.push(m);
                }
                fx.edges.extend(graph.remove_agent(&id).into_iter().map(|c| (window.tick, c)));
                fx.gone.push(id);
            }
            TopoEvent::Message { from, to } => {
                if let Some(c) = graph.reinforce(&from, &to) {
                    fx.edges.push((window.tick, c));
                }
            }
        }
    }
}

fn edge_body(tick: u64, change: EdgeChange) -> EdgeBody {
    let (change, from, to, weight) = match change {
        EdgeChange::Created { from, to, weight } => (EdgeChangeKind::Created, from, to, Some(weight)),
        EdgeChange::Reinforced { from, to, weight } => (EdgeChangeKind::Reinforced, from, to, Some(weight)),
        EdgeChange::Pruned { from, to } => (EdgeChangeKind::Pruned, from, to, None),
        EdgeChange::Removed { from, to } => (EdgeChangeKind::Removed, from, to, None),
    };
    EdgeBody { tick, change, from, to, weight }
}

/// The window's edge changes as records: where an agent had the same change (created, pruned, removed) both ways
/// with two or more peers, one `edges` record stands for them all, the agents with the most such pairs taken first;
/// everything else is one `edge` record each, in the order it happened. Pure.
fn edge_records(edges: Vec<(u64, EdgeChange)>) -> Vec<Record> {
    type Group = (u64, EdgeChangeKind, Option<Milli>);
    let mut directed: BTreeMap<Group, BTreeSet<(AgentId, AgentId)>> = BTreeMap::new();
    let bodies: Vec<EdgeBody> = edges.into_iter().map(|(tick, change)| edge_body(tick, change)).collect();
    for b in &bodies {
        if b.change != EdgeChangeKind::Reinforced {
            directed.entry((b.tick, b.change, b.weight)).or_default().insert((b.from.clone(), b.to.clone()));
        }
    }
    let mut covered: BTreeSet<(Group, AgentId, AgentId)> = BTreeSet::new();
    let mut out = Vec::new();
    for (group, set) in directed {
        // Pairs present both ways, as an adjacency.
        let mut both: BTreeMap<AgentId, BTreeSet<AgentId>> = BTreeMap::new();
        for (a, b) in &set {
            if a < b && set.contains(&(b.clone(), a.clone())) {
                both.entry(a.clone()).or_default().insert(b.clone());
                both.entry(b.clone()).or_default().insert(a.clone());
            }
        }
        // The agent with the most pairs left first (ties: the smallest id); stop when none has two.
        let busiest = |both: &BTreeMap<AgentId, BTreeSet<AgentId>>| {
            both.iter()
                .max_by(|x, y| x.1.len().cmp(&y.1.len()).then_with(|| y.0.cmp(x.0)))
                .filter(|(_, p)| p.len() >= 2)
                .map(|(a, p)| (a.clone(), p.clone()))
        };
        while let Some((agent, peers)) = busiest(&both) {
            for p in &peers {
                if let Some(theirs) = both.get_mut(p) {
                    theirs.remove(&agent);
                }
                covered.insert((group, agent.clone(), p.clone()));
                covered.insert((group, p.clone(), agent.clone()));
            }
            both.remove(&agent);
            out.push(Record::Edges(EdgesBody {
                tick: group.0,
                change: group.1,
                agent,
                peers: peers.into_iter().collect(),
                weight: group.2,
            }));
        }
    }
    for b in bodies {
        if !covered.contains(&((b.tick, b.change, b.weight), b.from.clone(), b.to.clone())) {
            out.push(Record::Edge(b));
        }
    }
    out
}

/// Turns a decoded input record into an aligner item: `Ok(None)` for records the manager reads but does not use.
enum Item {
    Event(TopoEvent),
    Marker(u64),
    Skip,
}

fn classify(record: Record, interval_ms: u64) -> Item {
    match record {
        Record::Join(b) => Item::Event(TopoEvent::Join(b.agent)),
        Record::Leave(b) => Item::Event(TopoEvent::Leave(b.agent)),
        Record::Dead(b) => Item::Event(TopoEvent::Dead(b.agent)),
        Record::Task(b) => Item::Event(TopoEvent::Message { from: b.from, to: b.to }),
        Record::Response(b) => Item::Event(TopoEvent::Message { from: b.from, to: b.to }),
        Record::Tick(b) if b.interval_ms == interval_ms => Item::Marker(b.tick),
        Record::Tick(b) => {
            tracing::warn!(tick = b.tick, interval_ms = b.interval_ms, "ignoring a tick marker of another interval");
            Item::Skip
        }
        _ => Item::Skip,
    }
}

/// Runs the topology manager until shutdown. Waits (with backoff, reporting) for Kafka and Redis as long as needed.
pub async fn run<B: Bus, S: SnapshotStore>(
    bus: B,
    store: S,
    mesh: MeshConfig,
    config: TopologyConfig,
    shutdown: Shutdown,
    readiness: impl Readiness,
) -> Result<(), NodeError> {
    let interval_ms = u64::try_from(config.decay_interval.as_millis()).unwrap_or(u64::MAX).max(1);
    let prefix = mesh.topics.prefix().to_owned();
    ensure_topics(&bus, &mesh, &shutdown).await?;
    let publisher = Publisher::connect(bus.clone(), mesh.topics.clone(), "topology", &shutdown).await?;

    let mut sources = Vec::new();
    for kind in [TopicKind::Topology, TopicKind::Messages] {
        for p in 0..publisher.partitions(kind) {
            #[expect(clippy::cast_possible_wrap, reason = "partition counts are small")]
            sources.push((mesh.topics.name(kind), p as i32));
        }
    }

    let snapshot_key = redis_keys::topology_snapshot(&prefix);
    let snapshot = retry("loading the topology snapshot", &shutdown, || store.get(&snapshot_key)).await?;
    let fresh = |sources: Vec<(String, i32)>| TopologyState {
        graph: SlimeGraph::new(config.graph),
        roster: Roster::new(),
        aligner: TickAligner::new(sources.len(), None),
        last_seen: vec![None; sources.len()],
        last_pushed: vec![None; sources.len()],
        sources,
    };
    let mut state = match snapshot {
        None => fresh(sources),
        Some(bytes) => match restore(&bytes, &sources, interval_ms, &config) {
            Ok(state) => state,
            Err(reason) => {
                tracing::warn!(key = %snapshot_key, "snapshot unusable ({reason}): rebuilding from the log");
                fresh(sources)
            }
        },
    };
    // After a restore, `last_seen + 1` is where the snapshot said to resume.
    let assignments = state
        .sources
        .iter()
        .zip(&state.last_seen)
        .map(|((topic, partition), last)| Assignment {
            topic: topic.clone(),
            partition: *partition,
            start: last.map_or(StartAt::Beginning, |l| StartAt::Offset(l + 1)),
        })
        .collect::<Vec<_>>();
    tracing::info!(sources = assignments.len(), last_closed = ?state.aligner.last_closed(),
        agents = state.roster.live().len(), edges = state.graph.edge_count(), "topology manager starting");
    let group = format!("{prefix}-topology");
    let mut reader = retry("opening the input reader", &shutdown, || bus.reader(&group, assignments.clone())).await?;
    let heartbeats = (0..publisher.partitions(TopicKind::Heartbeats))
        .map(|p| Assignment {
            topic: mesh.topics.name(TopicKind::Heartbeats),
            #[expect(clippy::cast_possible_wrap, reason = "partition counts are small")]
            partition: p as i32,
            start: StartAt::End,
        })
        .collect::<Vec<_>>();
    let hb_group = format!("{prefix}-topology-heartbeats");
    let mut hb_reader =
        retry("opening the heartbeat reader", &shutdown, || bus.reader(&hb_group, heartbeats.clone())).await?;

    let failure_timeout_ms = u64::try_from(config.failure_timeout.as_millis()).unwrap_or(u64::MAX);
    let mut detector = FailureDetector::new(failure_timeout_ms);
    let start = now_ms();
    for m in state.roster.live() {
        detector.watch(&m.profile.id, start);
    }
    // Membership is compacted: republish the roster so a lost publication before a crash is repaired.
    publish_members(&publisher, state.roster.all().into_iter().cloned().collect(), &shutdown).await?;
    readiness.ready();

    // Stats and snapshots go to Redis from a task of their own: a hung Redis must not stop windows closing.
    let redis = LatestWriter::spawn(store.clone(), redis_keys::topology_stats(&prefix), snapshot_key.clone());
    let mut last_emitted = start / interval_ms;
    // Zero: the first window closed after a start is snapshotted at once.
    let mut last_snapshot = 0;
    let mut detector_timer = tokio::time::interval(Duration::from_millis(100));
    let mut last_progress = start;
    let mut stalled_since: Option<u64> = None;
    let stall_after_ms = interval_ms * 3 / 2 + 500;
    detector_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown_wait = shutdown.clone();
    let mut input_errors = ReadErrors::new("reading inputs");
    let mut heartbeat_errors = ReadErrors::new("reading heartbeats");
    loop {
        let next_tick_ms = (now_ms() / interval_ms + 1) * interval_ms;
        let sleep_for = Duration::from_millis(next_tick_ms.saturating_sub(now_ms()).max(1));
        tokio::select! {
            () = shutdown_wait.wait() => break,
            r = reader.next() => match r {
                Ok(record) => {
                    let fx = handle_input(&mut state, &publisher, record, interval_ms, &shutdown).await?;
                    if let Some(fx) = fx {
                        last_progress = now_ms();
                        if let Some(since) = stalled_since.take() {
                            // Our own markers make the round trip again. After a long stall the agents' heartbeats
                            // could not reach us either: give every agent a fresh grace period.
                            if last_progress.saturating_sub(since) > failure_timeout_ms / 2 {
                                tracing::info!("the log moves again: restarting the failure detector's clocks");
                                for m in state.roster.live() {
                                    detector.watch(&m.profile.id, last_progress);
                                }
                            }
                        }
                        publish_effects(&publisher, &redis, &state, fx, &mut detector, &shutdown, &readiness).await?;
                        readiness.status(&status_line(&state));
                        if now_ms().saturating_sub(last_snapshot) >= config.snapshot_interval.as_millis() as u64 {
                            redis.blob(encode_snapshot(&state, interval_ms, &snapshot_key)?);
                            last_snapshot = now_ms();
                        }
                    }
                }
                Err(e) => input_errors.on_error(&e).await,
            },
            r = hb_reader.next() => match r {
                Ok(record) => {
                    if let Err(reason) = handle_heartbeat(&mut detector, &record) {
                        publisher.dead_letter(&record, &reason, &shutdown).await?;
                    }
                }
                Err(e) => heartbeat_errors.on_error(&e).await,
            },
            () = tokio::time::sleep(sleep_for) => {
                let now = now_ms();
                let tick = now / interval_ms;
                // Every tick gets its own window, even when this loop was late: each missed tick is emitted (up to
                // a bound, past which one marker stands for the whole gap and decays by its length).
                if tick > last_emitted {
                    for t in (last_emitted + 1).max(tick.saturating_sub(MAX_CATCH_UP_TICKS))..=tick {
                        emit_markers(&publisher, &state.sources, t, interval_ms, &shutdown).await?;
                    }
                    last_emitted = tick;
                }
            }
            _ = detector_timer.tick() => {
                readiness.watchdog();
                let now = now_ms();
                // Declare deaths only while our own tick markers make the round trip through the broker: when they
                // stall, the silence may be ours (broker down, partition), not the agents'.
                if now.saturating_sub(last_progress) > stall_after_ms {
                    if stalled_since.is_none() {
                        tracing::warn!("no window closed for {} ms: the log is stalled, suspending death verdicts", now - last_progress);
                        stalled_since = Some(last_progress);
                    }
                    continue;
                }
                for dead in detector.check(now) {
                    tracing::info!(agent = %dead, "no heartbeat for {failure_timeout_ms} ms: declaring dead");
                    let env = publisher.envelope(Record::Dead(DeadBody { agent: dead.clone(), last_heard_ms: now.saturating_sub(failure_timeout_ms) }));
                    publisher.send(TopicKind::Topology, dead.as_str(), &env, &shutdown).await?;
                }
            }
        }
    }
    tracing::info!("topology manager stopping: saving a final snapshot");
    redis.blob(encode_snapshot(&state, interval_ms, &snapshot_key)?);
    redis.finish().await;
    tracing::debug!("final topology snapshot saved");
    Ok(())
}

/// Rebuilds the state from a snapshot; `Err` says why it cannot be used (the caller then rebuilds from the log,
/// which is always exact, only slower).
fn restore(
    bytes: &[u8],
    sources: &[(String, i32)],
    interval_ms: u64,
    config: &TopologyConfig,
) -> Result<TopologyState, String> {
    let snap: TopologySnapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if snap.format != SNAPSHOT_FORMAT {
        return Err(format!("format {} is not {SNAPSHOT_FORMAT}", snap.format));
    }
    if snap.decay_interval_ms != interval_ms {
        return Err(format!(
            "it was taken with decay_interval {} ms but this run uses {interval_ms} ms, so tick numbers differ",
            snap.decay_interval_ms
        ));
    }
    if snap.graph.params() != config.graph {
        return Err("the graph parameters changed since it was taken".to_owned());
    }
    let known: Vec<(String, i32)> = snap.sources.iter().map(|s| (s.topic.clone(), s.partition)).collect();
    if known != sources {
        return Err(format!("it covers partitions {known:?} but the topics now have {sources:?}"));
    }
    let resume: Vec<Option<i64>> = snap.sources.iter().map(|s| s.resume).collect();
    Ok(TopologyState {
        graph: snap.graph,
        roster: snap.roster,
        aligner: TickAligner::new(sources.len(), snap.last_closed),
        last_seen: resume.iter().map(|r| r.map(|p| p - 1)).collect(),
        last_pushed: vec![None; sources.len()],
        sources: sources.to_vec(),
    })
}

async fn handle_input<B: Bus>(
    state: &mut TopologyState,
    publisher: &Publisher<B>,
    record: InRecord,
    interval_ms: u64,
    shutdown: &Shutdown,
) -> Result<Option<WindowEffects>, NodeError> {
    let Some(source) = state.source_index(&record.topic, record.partition) else {
        return Ok(None);
    };
    state.last_seen[source] = Some(record.offset);
    let kind = publisher.topics.kind_of(&record.topic);
    let envelope = match decode(record.payload.as_deref(), kind) {
        Ok(e) => e,
        Err(e) => {
            // The manager is the one reader of every partition of these topics, so it dead-letters for all.
            publisher.dead_letter(&record, &e.to_string(), shutdown).await?;
            return Ok(None);
        }
    };
    let windows = match classify(envelope.record, interval_ms) {
        Item::Event(event) => {
            if let (TopoEvent::Message { to, .. }, Some(key)) = (&event, key_text(&record))
                && key != to.as_str()
            {
                tracing::debug!(key, to = %to, "message keyed differently from its recipient");
            }
            state.last_pushed[source] = Some(record.offset);
            state.aligner.push_event(source, record.offset, event)
        }
        Item::Marker(tick) => {
            state.last_pushed[source] = Some(record.offset);
            state.aligner.push_marker(source, record.offset, tick)
        }
        Item::Skip => Vec::new(),
    };
    if windows.is_empty() {
        return Ok(None);
    }
    let mut fx = WindowEffects::default();
    for w in windows {
        apply_window(&mut state.graph, &mut state.roster, w, &mut fx);
    }
    Ok(Some(fx))
}

fn handle_heartbeat(detector: &mut FailureDetector, record: &InRecord) -> Result<(), String> {
    let env = decode(record.payload.as_deref(), Some(TopicKind::Heartbeats)).map_err(|e| e.to_string())?;
    if let Record::Heartbeat(hb) = env.record {
        detector.heartbeat(&hb.agent, now_ms());
    }
    Ok(())
}

async fn emit_markers<B: Bus>(
    publisher: &Publisher<B>,
    sources: &[(String, i32)],
    tick: u64,
    interval_ms: u64,
    shutdown: &Shutdown,
) -> Result<(), NodeError> {
    let sends = sources.iter().map(|(topic, partition)| {
        let kind = publisher.topics.kind_of(topic).unwrap_or(TopicKind::Topology);
        let env = publisher.envelope(Record::Tick(TickBody { tick, interval_ms }));
        async move { publisher.send_to(kind, *partition, "tick", &env, shutdown).await }
    });
    for r in join_all(sends).await {
        r?;
    }
    Ok(())
}

async fn publish_members<B: Bus>(
    publisher: &Publisher<B>,
    members: Vec<Member>,
    shutdown: &Shutdown,
) -> Result<(), NodeError> {
    let sends = members.into_iter().map(|member| {
        let key = member.profile.id.to_string();
        let env = publisher.envelope(Record::Member(MemberBody { member }));
        async move { publisher.send(TopicKind::Membership, &key, &env, shutdown).await }
    });
    for r in join_all(sends).await {
        r?;
    }
    Ok(())
}

/// Edge events in flight at once: a join of the 500th agent makes 998 of them and the idle mesh of 500 agents is
/// pruned as 249,500; sending them in bounded batches keeps memory flat and lets the watchdog hear from us.
const EDGE_BATCH: usize = 5_000;

async fn publish_effects<B: Bus>(
    publisher: &Publisher<B>,
    redis: &LatestWriter,
    state: &TopologyState,
    fx: WindowEffects,
    detector: &mut FailureDetector,
    shutdown: &Shutdown,
    readiness: &impl Readiness,
) -> Result<(), NodeError> {
    let now = now_ms();
    for id in &fx.joined {
        detector.watch(id, now);
    }
    for id in &fx.gone {
        detector.forget(id);
    }
    publish_members(publisher, fx.members, shutdown).await?;
    let mut edges = edge_records(fx.edges).into_iter().peekable();
    while edges.peek().is_some() {
        let sends = edges.by_ref().take(EDGE_BATCH).map(|record| {
            let key = match &record {
                Record::Edges(b) => b.agent.to_string(),
                Record::Edge(b) => b.from.to_string(),
                _ => String::new(),
            };
            let env = publisher.envelope(record);
            async move { publisher.send(TopicKind::Topology, &key, &env, shutdown).await }
        });
        for r in join_all(sends.collect::<Vec<_>>()).await {
            r?;
        }
        // Progress: the records are acknowledged, the loop is not hung.
        readiness.watchdog();
    }
    let stats = state.graph.stats();
    let mut fields: Vec<(String, String)> = vec![
        ("agents".into(), stats.agents.to_string()),
        ("live_agents".into(), state.roster.live().len().to_string()),
        ("edges".into(), stats.edges.to_string()),
        ("active_edges".into(), stats.active_edges.to_string()),
        ("density".into(), format!("{:.4}", stats.density)),
        ("reduction_vs_full_mesh".into(), format!("{:.4}", stats.reduction_vs_full_mesh)),
        ("mean_weight".into(), format!("{:.4}", stats.mean_weight)),
        ("min_weight".into(), format!("{:.4}", stats.min_weight)),
        ("max_weight".into(), format!("{:.4}", stats.max_weight)),
        ("epoch".into(), state.roster.epoch().to_string()),
        ("updated_at_ms".into(), now.to_string()),
    ];
    if let Some(t) = state.aligner.last_closed() {
        fields.push(("tick".into(), t.to_string()));
    }
    redis.hash(fields);
    Ok(())
}

fn encode_snapshot(state: &TopologyState, interval_ms: u64, key: &str) -> Result<Vec<u8>, NodeError> {
    serde_json::to_vec(&state.snapshot(interval_ms))
        .map_err(|e| NodeError::Snapshot { key: key.to_owned(), detail: e.to_string() })
}

fn status_line(state: &TopologyState) -> String {
    let s = state.graph.stats();
    format!(
        "{} live agents, {} edges, reduction {:.0}%",
        state.roster.live().len(),
        s.edges,
        s.reduction_vs_full_mesh * 100.0
    )
}

/// Reads the edges of the latest topology snapshot in Redis: for tools and tests (`from`, `to`, weight).
pub async fn snapshot_edges<S: SnapshotStore>(
    store: &S,
    prefix: &str,
) -> Result<Option<Vec<(AgentId, AgentId, Milli)>>, NodeError> {
    let key = redis_keys::topology_snapshot(prefix);
    let Some(bytes) = store.get(&key).await? else { return Ok(None) };
    let snap: TopologySnapshot =
        serde_json::from_slice(&bytes).map_err(|e| NodeError::Snapshot { key: key.clone(), detail: e.to_string() })?;
    Ok(Some(snap.graph.edges()))
}

/// The graph, roster and last closed tick of the latest topology snapshot in Redis, if any.
pub async fn read_snapshot<S: SnapshotStore>(
    store: &S,
    prefix: &str,
) -> Result<Option<(SlimeGraph, Roster, Option<u64>)>, NodeError> {
    let key = redis_keys::topology_snapshot(prefix);
    let Some(bytes) = store.get(&key).await? else { return Ok(None) };
    let snap: TopologySnapshot =
        serde_json::from_slice(&bytes).map_err(|e| NodeError::Snapshot { key: key.clone(), detail: e.to_string() })?;
    Ok(Some((snap.graph, snap.roster, snap.last_closed)))
}

/// Replays a log into a fresh graph, closing windows up to and including tick `until` (all, if `None`): the
/// reference a crash-recovered manager is checked against. `inputs` are (source index, offset, decoded record), in
/// any interleaving that keeps each source's order; sources are numbered as the manager numbers them (the topology
/// topic's partitions, then the messages topic's).
pub fn replay_log(
    sources: usize,
    interval_ms: u64,
    config: &TopologyConfig,
    until: Option<u64>,
    inputs: impl IntoIterator<Item = (usize, i64, Record)>,
) -> (SlimeGraph, Roster, Option<u64>) {
    let mut graph = SlimeGraph::new(config.graph);
    let mut roster = Roster::new();
    let mut aligner = TickAligner::new(sources, None);
    let mut fx = WindowEffects::default();
    let mut last = None;
    for (source, offset, record) in inputs {
        let windows = match classify(record, interval_ms) {
            Item::Event(e) => aligner.push_event(source, offset, e),
            Item::Marker(t) => aligner.push_marker(source, offset, t),
            Item::Skip => Vec::new(),
        };
        for w in windows {
            if until.is_some_and(|u| w.tick > u) {
                continue;
            }
            last = Some(w.tick);
            apply_window(&mut graph, &mut roster, w, &mut fx);
        }
    }
    (graph, roster, last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::graph::GraphParams;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid id")
    }

    /// Every (tick, change, from, to, weight) a list of records stands for.
    fn expand(records: &[Record]) -> BTreeSet<(u64, EdgeChangeKind, AgentId, AgentId, Option<Milli>)> {
        let mut out = BTreeSet::new();
        for r in records {
            match r {
                Record::Edge(b) => {
                    assert!(out.insert((b.tick, b.change, b.from.clone(), b.to.clone(), b.weight)), "duplicate {b:?}");
                }
                Record::Edges(b) => {
                    assert!(b.peers.len() >= 2, "an edges record stands for at least two peers: {b:?}");
                    for p in &b.peers {
                        assert!(out.insert((b.tick, b.change, b.agent.clone(), p.clone(), b.weight)));
                        assert!(out.insert((b.tick, b.change, p.clone(), b.agent.clone(), b.weight)));
                    }
                }
                other => panic!("not an edge record: {other:?}"),
            }
        }
        out
    }

    fn changes_of(tick: u64, changes: Vec<EdgeChange>) -> Vec<(u64, EdgeChange)> {
        changes.into_iter().map(|c| (tick, c)).collect()
    }

    #[test]
    fn a_join_is_one_edges_record_and_stands_for_exactly_its_edges() {
        let mut g = SlimeGraph::new(GraphParams::default());
        let mut fx = Vec::new();
        for a in ["a", "b", "c"] {
            fx.extend(changes_of(1, g.add_agent(&id(a))));
        }
        let join = changes_of(2, g.add_agent(&id("d")));
        let records = edge_records(join.clone());
        assert_eq!(records.len(), 1, "{records:?}");
        let Record::Edges(b) = &records[0] else { panic!("{records:?}") };
        assert_eq!(
            (b.agent.as_str(), b.peers.len(), b.change, b.weight),
            ("d", 3, EdgeChangeKind::Created, Some(Milli(500)))
        );
        let expected: BTreeSet<_> = join
            .into_iter()
            .map(|(t, c)| edge_body(t, c))
            .map(|b| (b.tick, b.change, b.from, b.to, b.weight))
            .collect();
        assert_eq!(expand(&records), expected);
    }

    #[test]
    fn pruning_an_idle_mesh_needs_a_record_per_agent_not_per_edge_and_traffic_stays_per_edge() {
        let mut g = SlimeGraph::new(GraphParams::default());
        let names: Vec<String> = (0..30).map(|i| format!("a{i:02}")).collect();
        for n in &names {
            g.add_agent(&id(n));
        }
        g.reinforce(&id("a00"), &id("a01"));
        let mut window = changes_of(5, g.decay(21));
        window.push((5, g.reinforce(&id("a02"), &id("a03")).expect("reinforced")));
        let expected: BTreeSet<_> = window
            .iter()
            .cloned()
            .map(|(t, c)| edge_body(t, c))
            .map(|b| (b.tick, b.change, b.from, b.to, b.weight))
            .collect();
        let records = edge_records(window);
        assert_eq!(expand(&records), expected, "the records stand for exactly the changes");
        assert!(records.len() < 60, "{} records for {} changes", records.len(), expected.len());
        let single = records.iter().filter(|r| matches!(r, Record::Edge(_))).count();
        assert!(single >= 2, "a01→a00 pruned alone (a00→a01 carried a message), plus the reinforcement: {records:?}");
    }
}
