//! The topology manager's runtime: the I/O around [`mesh_core::topology::Topology`].
//!
//! It reads joins, leaves and deaths (the topology topic) and every messages partition, feeding each record to the
//! state machine's open window as it arrives; it waits for no marker. When its clock crosses a decay tick it seals the
//! open window, appends it to its changelog (the windows topic) and, once the broker acknowledged it, applies it and
//! publishes what changed (roster entries, edge events). Recovery loads the Redis snapshot and replays the changelog
//! after it, then reads the inputs on from where the last applied window ended: the graph is a pure function of the
//! changelog, and the windows' ranges tile every input partition, so each message reinforces its edge exactly once.
//!
//! Liveness is the one clock-driven judgement. The manager appends its own `probe` records to the heartbeats topic
//! and reads them back with the agents' heartbeats; since the topic has one partition, a returned probe proves every
//! heartbeat appended before it was read. Death verdicts are judged at the send time of the last returned probe, so
//! a stall of the manager's own (broker down, its link cut, its process paused) delays verdicts instead of faking
//! them. Verdicts are appended as `dead` records and take effect when read back, in a window like any join.
//!
//! Recovery in detail. The snapshot in Redis holds the state after the last applied window and the changelog offset
//! after it; recovery replays the changelog from there (windows sealed but never acknowledged are simply cut again from
//! the same positions) and reads the inputs on from where the last window's ranges end. Changing `decay_interval`
//! between runs rescales recorded ticks by time ([`ChangelogFollower`]). Observers follow the changelog with the same
//! [`ChangelogFollower`], and [`replay_changelog`] and [`audit`] are what `cargo xtask chaos` and the recovery test
//! hold a recovered manager to.
//!
//! Failure detection without false verdicts, in detail. The manager appends a `probe` every `failure_timeout / 40`
//! (kept between 20 and 250 ms) to the one-partition heartbeats topic. Since a returned probe proves that every
//! heartbeat appended before it has been read, silences are judged at the probe's send time, never at the manager's
//! clock: a broker outage, a cut link or a pause of the manager's own delays verdicts instead of faking them, and an
//! agent is declared within `failure_timeout` plus a probe interval of its last heartbeat. While probes cannot make the
//! round trip through the broker, the manager gives no death verdicts at all. The manager's own start counts as such a
//! gap: until its first probe returns it has read no heartbeat it can vouch for, and if that took longer than
//! `failure_timeout / 4` (and at least four probe intervals; a broker just started answered it after a second), every
//! agent's silence counts from then (`detector_clocks_since_ms` and `probes_returned` in its stats).

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mesh_core::graph::EdgeChange;
use mesh_core::membership::{FailureDetector, Member, MemberStatus};
use mesh_core::topology::{Refusal, Source, Topology, TopologyInput, Window, WindowEffects};
use mesh_core::{AgentId, Milli};
use mesh_proto::TopicKind;
use mesh_proto::auth::Principal;
use mesh_proto::changelog::{self, Assembler, REINFORCEMENTS_PER_PART};
use mesh_proto::edges::{edge_record_key, edge_records, weights_records};
use mesh_proto::read_model::{TopologyStats, redis_keys};
use mesh_proto::records::{DeadBody, MemberBody, ProbeBody, Record, WindowBody};
use mesh_transport::{Assignment, Bus, InRecord, Reader, SnapshotStore, StartAt};
use serde::{Deserialize, Serialize};

use crate::config::{MeshConfig, TopologyConfig};
use crate::latest_writer::LatestWriter;
use crate::metrics::TopologyMetrics;
use mesh_transport::clock::now_ms;

use crate::runtime::{
    NodeError, Publisher, ReadErrors, Readiness, STOP_BUDGET, Sending, Shutdown, StopDeadline, ensure_topics, key_text,
    retry,
};
use crate::snapshot_pacer::SnapshotPacer;

/// What the manager snapshots to Redis: the state machine and where in the changelog it stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopologySnapshot {
    format: u32,
    decay_interval_ms: u64,
    topology: Topology,
    /// The changelog offset after the last applied window: recovery replays from here.
    changelog_next: i64,
    taken_at_ms: u64,
}

/// 2: the changelog (1 was the tick-marker aligner; such a snapshot is refused and the state rebuilt from the log).
const SNAPSHOT_FORMAT: u32 = 2;

/// Effects in flight (edge events, roster entries, verdicts) past which the manager stops reading until the broker
/// catches up: memory stays bounded when the broker is slow.
const OUTBOX_LIMIT: usize = 20_000;

/// What a record read by the manager means for the graph; `None` for the records it reads but does not use. Pure.
pub fn classify(record: Record) -> Option<TopologyInput> {
    match record {
        Record::Join(b) => Some(TopologyInput::Join(b.agent)),
        Record::Leave(b) => Some(TopologyInput::Leave(b.agent)),
        Record::Dead(b) => Some(TopologyInput::Dead(b.agent)),
        Record::Task(b) => Some(TopologyInput::Message { from: b.from, to: b.to }),
        Record::Response(b) => Some(TopologyInput::Message { from: b.from, to: b.to }),
        _ => None,
    }
}

/// The sealed window whose changelog records are being appended: one at a time, part after part, so the changelog
/// holds windows in `seq` order whatever is retried.
struct Sealing {
    window: Window,
    parts: VecDeque<WindowBody>,
    ack: Sending,
    sealed_at_ms: u64,
}

/// How late windows are, for the stats and the log.
#[derive(Debug, Default, Clone)]
struct Lateness {
    /// How long after its tick boundary the last window was applied.
    last_ms: u64,
    /// The worst since start.
    max_ms: u64,
    /// Windows applied since start.
    windows: u64,
    /// Windows applied more than one decay interval + 100 ms after their tick.
    late: u64,
}

/// The manager's probes on the heartbeats topic.
#[derive(Default)]
struct Probes {
    seq: u64,
    in_flight: Option<Sending>,
    /// Send time of the last probe read back: every heartbeat appended before it has been read.
    complete_until_ms: Option<u64>,
    /// When that probe was read back.
    back_at_ms: u64,
    rtt_ms: u64,
    /// Probes read back so far: until the first, no heartbeat is known to have been read.
    returned: u64,
    /// When the failure detector's clocks last started: the manager's start, or the return of the heartbeat path
    /// after a stall. An agent silent since before then is judged from then.
    clocks_since_ms: u64,
    stalled_since: Option<u64>,
    /// A gap between returned probes longer than this restarts every agent's clock.
    rearm_after_ms: u64,
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
    let failure_timeout_ms = u64::try_from(config.failure_timeout.as_millis()).unwrap_or(u64::MAX);
    let probe_every = Duration::from_millis((failure_timeout_ms / 40).clamp(20, 250));
    let prefix = mesh.topics.prefix().to_owned();
    ensure_topics(&bus, &mesh, &shutdown).await?;
    let publisher = Publisher::connect(
        bus.clone(),
        mesh.topics.clone(),
        "topology",
        Principal::Topology,
        &mesh.credentials,
        &shutdown,
    )
    .await?;
    let writer = format!("topology-{}-{}", now_ms(), std::process::id());

    let snapshot_key = redis_keys::topology_snapshot(&prefix);
    let loaded = retry("loading the topology snapshot", &shutdown, || store.get(&snapshot_key)).await?;
    let (mut topology, mut changelog_next) = match loaded.map(|b| restore(&b, interval_ms, &config)) {
        None => (Topology::new(config.graph), 0),
        Some(Ok(s)) => s,
        Some(Err(reason)) => {
            tracing::warn!(key = %snapshot_key, "snapshot unusable ({reason}): rebuilding from the changelog");
            (Topology::new(config.graph), 0)
        }
    };
    let restored_from = topology.last();
    let (replayed, replayed_effects) =
        catch_up(&bus, &publisher, &mut topology, &mut changelog_next, interval_ms, &prefix, &shutdown).await?;
    tracing::info!(restored = ?restored_from, replayed, last = ?topology.last(), changelog_next,
        agents = topology.roster().live().len(), "topology manager starting");

    let mut assignments = Vec::new();
    for kind in [TopicKind::Topology, TopicKind::Messages] {
        for p in 0..publisher.partitions(kind) {
            #[expect(clippy::cast_possible_wrap, reason = "partition counts are small")]
            let source = Source { topic: mesh.topics.name(kind), partition: p as i32 };
            let start = topology.resume_positions().get(&source).map_or(StartAt::Beginning, |o| StartAt::Offset(*o));
            assignments.push(Assignment { topic: source.topic, partition: source.partition, start });
        }
    }
    let group = format!("{prefix}-topology");
    let mut reader = retry("opening the input reader", &shutdown, || bus.reader(&group, assignments.clone())).await?;
    let heartbeats =
        vec![Assignment { topic: mesh.topics.name(TopicKind::Heartbeats), partition: 0, start: StartAt::End }];
    let hb_group = format!("{prefix}-topology-heartbeats");
    let mut hb_reader =
        retry("opening the heartbeat reader", &shutdown, || bus.reader(&hb_group, heartbeats.clone())).await?;

    let mut detector = FailureDetector::new(failure_timeout_ms);
    let start = now_ms();
    for m in topology.roster().live() {
        detector.watch(&m.profile.id, start);
    }
    let mut outbox: FuturesUnordered<Sending> = FuturesUnordered::new();
    // Membership is compacted: republish the roster so a publication lost before a crash is repaired.
    publish_members(&publisher, topology.roster().all().into_iter().cloned().collect(), &shutdown, &mut outbox);
    for (tick, fx) in replayed_effects {
        publish_effects(&publisher, tick, fx, &shutdown, &mut outbox);
    }
    readiness.ready();

    // Stats and snapshots go to Redis from a task of their own: a hung Redis must not stop windows closing.
    let redis = LatestWriter::spawn(store.clone(), redis_keys::topology_stats(&prefix), snapshot_key.clone());
    let mut metrics = TopologyMetrics::register(&mesh.metrics);
    // The first window applied after a start is snapshotted at once.
    let mut snapshots = SnapshotPacer::new(config.snapshot_interval);
    let mut sealing: Option<Sealing> = None;
    let mut lateness = Lateness::default();
    let rearm_after_ms = (failure_timeout_ms / 4).max(4 * probe_every.as_millis() as u64);
    let mut probes = Probes { back_at_ms: start, clocks_since_ms: start, rearm_after_ms, ..Probes::default() };
    let mut probe_timer = tokio::time::interval(probe_every);
    probe_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stats_timer = tokio::time::interval(Duration::from_secs(1));
    stats_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown_wait = shutdown.clone();
    let mut input_errors = ReadErrors::new("reading inputs");
    let mut heartbeat_errors = ReadErrors::new("reading heartbeats");
    let mut sealed_tick = topology.last().map_or(start / interval_ms, |c| c.tick.max(start / interval_ms));
    // A snapshot is taken once every effect of the windows it covers is acknowledged (the outbox is empty), so a
    // crash after it never loses a roster entry or edge event that the changelog replay would not publish again.
    let mut snapshot_due = false;
    loop {
        if snapshot_due && outbox.is_empty() {
            let (now, started) = (now_ms(), std::time::Instant::now());
            redis.blob(encode_snapshot(&topology, changelog_next, interval_ms, &snapshot_key)?);
            snapshots.taken(now, started.elapsed());
            snapshot_due = false;
        }
        let next_tick_ms = (sealed_tick + 1) * interval_ms;
        let sleep_for = Duration::from_millis(next_tick_ms.saturating_sub(now_ms()));
        tokio::select! {
            () = shutdown_wait.wait() => break,
            r = reader.next(), if outbox.len() < OUTBOX_LIMIT => match r {
                Ok(record) => on_input(&mut topology, &publisher, record, &shutdown, &mut outbox),
                Err(e) => input_errors.on_error(&e).await,
            },
            r = hb_reader.next() => match r {
                Ok(record) => on_heartbeat(&mut detector, &mut probes, &writer, &publisher, record, &shutdown, &mut outbox),
                Err(e) => heartbeat_errors.on_error(&e).await,
            },
            () = tokio::time::sleep(sleep_for), if sealing.is_none() => {
                let tick = now_ms() / interval_ms;
                if tick > sealed_tick {
                    sealing = Some(seal(&mut topology, &publisher, &writer, tick, interval_ms, &shutdown));
                    sealed_tick = tick;
                }
            }
            acked = part_acked(&mut sealing) => {
                let offset = acked?;
                let Some(mut s) = sealing.take() else { continue };
                if let Some(part) = s.parts.pop_front() {
                    let env = publisher.envelope(Record::Window(part));
                    s.ack = publisher.start_send(TopicKind::Windows, &writer, &env, &shutdown);
                    sealing = Some(s);
                    continue;
                }
                changelog_next = offset + 1;
                let fx = topology.apply(&s.window).map_err(|refusal| NodeError::Invariant {
                    detail: format!("the manager's own window {} was refused: {refusal}", s.window.seq),
                })?;
                let now = now_ms();
                note_lateness(&mut lateness, s.window.tick, interval_ms, s.sealed_at_ms, now);
                #[expect(clippy::cast_precision_loss, reason = "milliseconds of lateness, far below 2^52")]
                metrics.window_lateness.observe(lateness.last_ms as f64 / 1000.0);
                detector.follow(&fx.joined, &fx.gone, topology.roster(), now);
                let pruned = fx.edges.iter().filter(|(_, e)| matches!(e, EdgeChange::Pruned { .. })).count();
                metrics.edges_pruned.inc_by(pruned as u64);
                publish_effects(&publisher, s.window.tick, fx, &shutdown, &mut outbox);
                let hash = stats(&topology, &lateness, &probes, None, now);
                export_metrics(&mut metrics, &topology, &hash);
                redis.hash(hash.to_fields());
                readiness.status(&status_line(&topology));
                snapshot_due |= snapshots.due(now);
                // A window overdue while this one was in flight (a slow or absent broker) is sealed at once.
                let tick = now / interval_ms;
                if tick > sealed_tick {
                    sealing = Some(seal(&mut topology, &publisher, &writer, tick, interval_ms, &shutdown));
                    sealed_tick = tick;
                }
            }
            Some(sent) = outbox.next(), if !outbox.is_empty() => {
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "an effect could not be published");
                }
            }
            acked = probe_acked(&mut probes.in_flight) => {
                probes.in_flight = None;
                if let Err(e) = acked {
                    tracing::debug!(error = %e, "a probe could not be published");
                }
            }
            _ = probe_timer.tick() => {
                readiness.watchdog();
                if probes.in_flight.is_none() {
                    probes.seq += 1;
                    let env = publisher.envelope(Record::Probe(ProbeBody { writer: writer.clone(), seq: probes.seq }));
                    probes.in_flight = Some(publisher.start_send(TopicKind::Heartbeats, "probe", &env, &shutdown));
                }
                let now = now_ms();
                let silent = now.saturating_sub(probes.back_at_ms);
                if silent > failure_timeout_ms.min(3 * probe_every.as_millis() as u64 + 1_000) && probes.stalled_since.is_none() {
                    tracing::warn!(silent_ms = silent, "no probe came back for {silent} ms: the heartbeat path is stalled, no death verdicts until it moves");
                    probes.stalled_since = Some(probes.back_at_ms);
                }
            }
            _ = stats_timer.tick() => {
                let now = now_ms();
                let waiting = sealing.as_ref().map(|s| (s.window.seq, now.saturating_sub(s.sealed_at_ms)));
                if let Some((seq, ms)) = waiting
                    && ms > interval_ms
                {
                    tracing::warn!(window = seq, waited_ms = ms, "window {seq} waits for the changelog acknowledgement");
                }
                let hash = stats(&topology, &lateness, &probes, waiting, now);
                export_metrics(&mut metrics, &topology, &hash);
                metrics.consumer_lag.set(reader.lag().into_iter().chain(hb_reader.lag()));
                redis.hash(hash.to_fields());
            }
        }
    }
    tracing::info!("topology manager stopping: publishing what is in flight, saving a final snapshot");
    let stop = StopDeadline::start();
    let drain = async { while outbox.next().await.is_some() {} };
    if stop.within(Duration::from_secs(2), drain).await.is_none() {
        tracing::warn!("some edge events were not acknowledged within 2 s; the changelog still holds every window");
    }
    redis.blob(encode_snapshot(&topology, changelog_next, interval_ms, &snapshot_key)?);
    if stop.within(STOP_BUDGET, redis.finish()).await.is_some() {
        tracing::debug!("final topology snapshot saved");
    } else {
        tracing::warn!(
            "the final snapshot was not saved within the stop budget; the last one and the changelog rebuild it"
        );
    }
    Ok(())
}

/// Resolves when the part in flight of the window being sealed is acknowledged; never while none is.
async fn part_acked(sealing: &mut Option<Sealing>) -> Result<i64, NodeError> {
    match sealing {
        Some(s) => (&mut s.ack).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the probe in flight is acknowledged; never while none is.
async fn probe_acked(probe: &mut Option<Sending>) -> Result<i64, NodeError> {
    match probe {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

/// Seals the open window at `tick` and starts appending it to the changelog, first part first.
fn seal<B: Bus>(
    topology: &mut Topology,
    publisher: &Publisher<B>,
    writer: &str,
    tick: u64,
    interval_ms: u64,
    shutdown: &Shutdown,
) -> Sealing {
    let window = topology.close(tick);
    let mut parts: VecDeque<WindowBody> =
        changelog::split(window.clone(), writer, interval_ms, REINFORCEMENTS_PER_PART).into();
    let first = parts.pop_front().expect("invariant: a window has at least one part");
    let env = publisher.envelope(Record::Window(first));
    let ack = publisher.start_send(TopicKind::Windows, writer, &env, shutdown);
    Sealing { window, parts, ack, sealed_at_ms: now_ms() }
}

fn note_lateness(lateness: &mut Lateness, tick: u64, interval_ms: u64, sealed_at_ms: u64, now: u64) {
    let due = tick.saturating_mul(interval_ms);
    let late = now.saturating_sub(due);
    lateness.last_ms = late;
    lateness.max_ms = lateness.max_ms.max(late);
    lateness.windows += 1;
    if late > interval_ms + 100 {
        lateness.late += 1;
        tracing::warn!(
            tick,
            late_ms = late,
            sealed_after_ms = sealed_at_ms.saturating_sub(due),
            acknowledged_after_ms = now.saturating_sub(sealed_at_ms),
            "window of tick {tick} applied {late} ms after its tick"
        );
    }
}

/// One input record into the open window (or the dead-letter topic, if it cannot be decoded).
fn on_input<B: Bus>(
    topology: &mut Topology,
    publisher: &Publisher<B>,
    record: InRecord,
    shutdown: &Shutdown,
    outbox: &mut FuturesUnordered<Sending>,
) {
    let source = Source { topic: record.topic.clone(), partition: record.partition };
    let kind = publisher.topics.kind_of(&record.topic);
    let input = match publisher.open(&record, kind) {
        Ok(envelope) => classify(envelope.record),
        Err(e) => {
            // The manager is the one reader of every partition of these topics, so it dead-letters for all.
            outbox.push(publisher.start_dead_letter(&record, &e.to_string(), shutdown));
            None
        }
    };
    if let (Some(TopologyInput::Message { to, .. }), Some(key)) = (&input, key_text(&record))
        && key != to.as_str()
    {
        tracing::debug!(key, to = %to, "message keyed differently from its recipient");
    }
    topology.observe(&source, record.offset, input);
}

/// A heartbeat (the failure detector hears from an agent) or one of our probes (every heartbeat appended before it
/// was read: judge silences up to its send time).
fn on_heartbeat<B: Bus>(
    detector: &mut FailureDetector,
    probes: &mut Probes,
    writer: &str,
    publisher: &Publisher<B>,
    record: InRecord,
    shutdown: &Shutdown,
    outbox: &mut FuturesUnordered<Sending>,
) {
    let env = match publisher.open(&record, Some(TopicKind::Heartbeats)) {
        Ok(env) => env,
        Err(e) => {
            outbox.push(publisher.start_dead_letter(&record, &e.to_string(), shutdown));
            return;
        }
    };
    let now = now_ms();
    match env.record {
        Record::Heartbeat(hb) => detector.heartbeat(&hb.agent, now),
        Record::Probe(p) if p.writer == writer => {
            if let Some(since) = probes.stalled_since.take() {
                tracing::info!(stalled_ms = now.saturating_sub(since), "probes come back again: death verdicts resume");
            }
            // After a gap of our own (the broker restarted, our link was cut, this process was paused), the agents
            // may not have reconnected yet either: their heartbeats queued in their producers are not in the log
            // before our probe. Everyone gets a fresh grace period from now, as after a restart of the manager.
            if now.saturating_sub(probes.back_at_ms) > probes.rearm_after_ms {
                tracing::info!(
                    gap_ms = now.saturating_sub(probes.back_at_ms),
                    "the heartbeat path was stalled: restarting the failure detector's clocks"
                );
                detector.rearm(now);
                probes.clocks_since_ms = now;
            }
            probes.returned += 1;
            probes.complete_until_ms = Some(env.header.ts);
            probes.back_at_ms = now;
            probes.rtt_ms = now.saturating_sub(env.header.ts);
            for dead in detector.check(env.header.ts) {
                tracing::info!(agent = %dead, "no heartbeat appended for {} ms: declaring dead", detector.timeout_ms());
                let body = DeadBody { agent: dead.clone(), last_heard_ms: detector.last_seen(&dead).unwrap_or(0) };
                let env = publisher.envelope(Record::Dead(body));
                outbox.push(publisher.start_send(TopicKind::Topology, dead.as_str(), &env, shutdown));
            }
        }
        _ => {}
    }
}

/// Replays the changelog from `changelog_next` to its end (as of now) into `topology`: the windows the last run
/// recorded after its snapshot. Returns how many applied, and their effects to publish again (at least once).
async fn catch_up<B: Bus>(
    bus: &B,
    publisher: &Publisher<B>,
    topology: &mut Topology,
    changelog_next: &mut i64,
    interval_ms: u64,
    prefix: &str,
    shutdown: &Shutdown,
) -> Result<(usize, Vec<(u64, WindowEffects)>), NodeError> {
    let topic = publisher.topics.name(TopicKind::Windows);
    let end = retry("reading the end of the changelog", shutdown, || bus.end_offset(&topic, 0)).await?;
    if end <= *changelog_next {
        return Ok((0, Vec::new()));
    }
    let assignment = vec![Assignment { topic: topic.clone(), partition: 0, start: StartAt::Offset(*changelog_next) }];
    let group = format!("{prefix}-topology-changelog");
    let mut reader = retry("opening the changelog", shutdown, || bus.reader(&group, assignment.clone())).await?;
    let mut follower = ChangelogFollower::new(interval_ms);
    let mut effects = Vec::new();
    let mut errors = ReadErrors::new("reading the changelog");
    loop {
        let record = match reader.next().await {
            Ok(r) => r,
            Err(e) => {
                if shutdown.requested() {
                    return Err(NodeError::Interrupted);
                }
                errors.on_error(&e).await;
                continue;
            }
        };
        let at_end = record.offset + 1 >= end;
        let opened = publisher.open(&record, Some(TopicKind::Windows));
        if let Err(e) = &opened {
            tracing::warn!(offset = record.offset, reason = %e, "a changelog record not ours: skipped");
        }
        if let Ok(env) = opened
            && let Record::Window(part) = env.record
            && let Some((window, applied)) = follower.push(topology, part)
        {
            match applied {
                Ok(fx) => {
                    *changelog_next = record.offset + 1;
                    effects.push((window.tick, fx));
                }
                Err(refusal) => tracing::info!(window = window.seq, %refusal, "changelog window not applied"),
            }
        }
        if at_end {
            return Ok((effects.len(), effects));
        }
    }
}

/// A window's tick counted in another decay interval, in this one's (the interval was changed between runs).
fn rescale_tick(tick: u64, written_at_ms: u64, interval_ms: u64) -> u64 {
    if written_at_ms == interval_ms { tick } else { tick.saturating_mul(written_at_ms) / interval_ms.max(1) }
}

fn publish_members<B: Bus>(
    publisher: &Publisher<B>,
    members: Vec<Member>,
    shutdown: &Shutdown,
    outbox: &mut FuturesUnordered<Sending>,
) {
    for member in members {
        let key = member.profile.id.to_string();
        let env = publisher.envelope(Record::Member(MemberBody { member }));
        outbox.push(publisher.start_send(TopicKind::Membership, &key, &env, shutdown));
    }
}

/// Roster entries and edge events of an applied window, in flight through the outbox.
fn publish_effects<B: Bus>(
    publisher: &Publisher<B>,
    tick: u64,
    fx: WindowEffects,
    shutdown: &Shutdown,
    outbox: &mut FuturesUnordered<Sending>,
) {
    publish_members(publisher, fx.members, shutdown, outbox);
    let mut records = edge_records(fx.edges);
    records.extend(weights_records(tick, &fx.reinforced));
    for record in records {
        let key = edge_record_key(&record);
        let env = publisher.envelope(record);
        outbox.push(publisher.start_send(TopicKind::Topology, &key, &env, shutdown));
    }
}

/// Copies the counters and gauges into the Prometheus registry (with the stats, `hash`).
fn export_metrics(metrics: &mut TopologyMetrics, topology: &Topology, hash: &TopologyStats) {
    metrics.mirror.sync(&hash.metric_values());
    let entries = topology.roster().all();
    let count = |status: MemberStatus| entries.iter().filter(|m| m.status == status).count();
    metrics.set_roster(count);
}

/// The statistics hash: how `mesh status`, `mesh bench` and `cargo xtask chaos` see the graph and whether the
/// manager keeps up. `waiting` is the window being recorded and how long it has waited, if one is.
fn stats(
    topology: &Topology,
    lateness: &Lateness,
    probes: &Probes,
    waiting: Option<(u64, u64)>,
    now: u64,
) -> TopologyStats {
    let graph = topology.graph().stats();
    let roster = topology.roster();
    let last = topology.last();
    TopologyStats {
        agents: Some(graph.agents as u64),
        live_agents: Some(roster.live().len() as u64),
        edges: Some(graph.edges as u64),
        active_edges: Some(graph.active_edges as u64),
        density: Some(graph.density),
        reduction_vs_full_mesh: Some(graph.reduction_vs_full_mesh),
        mean_weight: Some(graph.mean_weight),
        min_weight: Some(graph.min_weight),
        max_weight: Some(graph.max_weight),
        epoch: Some(roster.epoch()),
        messages_counted: Some(topology.messages()),
        open_window_records: Some(topology.open_records()),
        oldest_open_window_ms: Some(waiting.map_or(0, |(_, ms)| ms)),
        waiting_for: Some(waiting_for(waiting, probes)),
        window_late_ms: Some(lateness.last_ms),
        window_late_max_ms: Some(lateness.max_ms),
        windows_applied: Some(lateness.windows),
        windows_late: Some(lateness.late),
        probe_rtt_ms: Some(probes.rtt_ms),
        probes_returned: Some(probes.returned),
        detector_clocks_since_ms: Some(probes.clocks_since_ms),
        updated_at_ms: Some(now),
        tick: last.map(|l| l.tick),
        window: last.map(|l| l.seq),
    }
}

/// What the manager waits for, for people reading `mesh status`: a stall must say where it is.
fn waiting_for(waiting: Option<(u64, u64)>, probes: &Probes) -> String {
    match waiting {
        Some((seq, ms)) => format!("changelog acknowledgement of window {seq} ({ms} ms)"),
        None if probes.stalled_since.is_some() => "probes: the heartbeat path is stalled".to_owned(),
        None => "the next tick".to_owned(),
    }
}

/// Rebuilds the state from a snapshot; `Err` says why it cannot be used (the caller then rebuilds from the
/// changelog, which is always exact, only slower).
fn restore(bytes: &[u8], interval_ms: u64, config: &TopologyConfig) -> Result<(Topology, i64), String> {
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
    if snap.topology.graph().params() != config.graph {
        return Err("the graph parameters changed since it was taken".to_owned());
    }
    Ok((snap.topology, snap.changelog_next))
}

fn encode_snapshot(
    topology: &Topology,
    changelog_next: i64,
    interval_ms: u64,
    key: &str,
) -> Result<Vec<u8>, NodeError> {
    let snap = TopologySnapshot {
        format: SNAPSHOT_FORMAT,
        decay_interval_ms: interval_ms,
        topology: topology.clone(),
        changelog_next,
        taken_at_ms: now_ms(),
    };
    serde_json::to_vec(&snap).map_err(|e| NodeError::Snapshot { key: key.to_owned(), detail: e.to_string() })
}

fn status_line(topology: &Topology) -> String {
    let s = topology.graph().stats();
    format!(
        "{} live agents, {} edges, reduction {:.0}%",
        topology.roster().live().len(),
        s.edges,
        s.reduction_vs_full_mesh * 100.0
    )
}

/// Reads the edges of the latest topology snapshot in Redis: for tools and tests (`from`, `to`, weight).
pub async fn snapshot_edges<S: SnapshotStore>(
    store: &S,
    prefix: &str,
) -> Result<Option<Vec<(AgentId, AgentId, Milli)>>, NodeError> {
    Ok(read_snapshot(store, prefix).await?.map(|t| t.graph().edges()))
}

/// The state of the latest topology snapshot in Redis, if any.
pub async fn read_snapshot<S: SnapshotStore>(store: &S, prefix: &str) -> Result<Option<Topology>, NodeError> {
    Ok(read_snapshot_to_follow(store, prefix).await?.map(|s| s.topology))
}

/// Where an observer starts following the graph: the latest snapshot's state, the changelog offset after it, and
/// the decay interval its ticks count in (feed the changelog from `changelog_next` to a [`ChangelogFollower`]).
#[derive(Debug)]
pub struct SnapshotToFollow {
    /// The graph and roster the snapshot holds.
    pub topology: Topology,
    /// The first changelog offset the snapshot does not reflect.
    pub changelog_next: i64,
    /// The decay interval of the run that took it.
    pub decay_interval_ms: u64,
}

/// The latest topology snapshot in Redis, with where to follow the changelog from, if any.
pub async fn read_snapshot_to_follow<S: SnapshotStore>(
    store: &S,
    prefix: &str,
) -> Result<Option<SnapshotToFollow>, NodeError> {
    let key = redis_keys::topology_snapshot(prefix);
    let Some(bytes) = store.get(&key).await? else { return Ok(None) };
    let snap: TopologySnapshot =
        serde_json::from_slice(&bytes).map_err(|e| NodeError::Snapshot { key: key.clone(), detail: e.to_string() })?;
    Ok(Some(SnapshotToFollow {
        topology: snap.topology,
        changelog_next: snap.changelog_next,
        decay_interval_ms: snap.decay_interval_ms,
    }))
}

/// A changelog read back and applied from scratch, as every reader of it applies it.
#[derive(Debug)]
pub struct Replay {
    /// The state it leads to.
    pub topology: Topology,
    /// The windows applied, in order.
    pub applied: Vec<Window>,
    /// Complete windows refused (a stale writer's, a duplicate), with why.
    pub refused: Vec<(u64, Refusal)>,
}

/// Window parts of the changelog, in log order, assembled into whole windows and applied to a graph: what recovery,
/// the replay checks and any observer (`mesh view`) do with the changelog, so they cannot disagree. Pure.
#[derive(Debug)]
pub struct ChangelogFollower {
    assembler: Assembler,
    interval_ms: u64,
}

impl ChangelogFollower {
    /// A follower whose graph counts ticks in `interval_ms` (the decay interval of the run that will read it).
    pub fn new(interval_ms: u64) -> Self {
        Self { assembler: Assembler::new(), interval_ms }
    }

    /// Takes one window part; when it completes a window, the window (its tick counted in this follower's interval)
    /// and what applying it to `topology` did.
    pub fn push(
        &mut self,
        topology: &mut Topology,
        part: WindowBody,
    ) -> Option<(Window, Result<WindowEffects, Refusal>)> {
        let (mut window, written_at) = self.assembler.push(part)?;
        window.tick = rescale_tick(window.tick, written_at, self.interval_ms);
        let applied = topology.apply(&window);
        Some((window, applied))
    }
}

/// Applies the `window` records of a changelog, in log order, from an empty graph, up to and including window
/// `until` (all, if `None`): the reference a recovered manager is held to (the recovery test, `cargo xtask chaos`).
/// Records of other kinds are skipped.
pub fn replay_changelog(
    interval_ms: u64,
    config: &TopologyConfig,
    until: Option<u64>,
    records: impl IntoIterator<Item = Record>,
) -> Replay {
    let mut topology = Topology::new(config.graph);
    let mut follower = ChangelogFollower::new(interval_ms);
    let (mut applied, mut refused) = (Vec::new(), Vec::new());
    for record in records {
        let Record::Window(part) = record else { continue };
        if until.is_some_and(|u| topology.last().is_some_and(|l| l.seq >= u)) {
            break;
        }
        let Some((window, result)) = follower.push(&mut topology, part) else { continue };
        match result {
            Ok(_) => applied.push(window),
            Err(r) => refused.push((window.seq, r)),
        }
    }
    Replay { topology, applied, refused }
}

/// What [`audit`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Messages the applied windows counted.
    pub counted: u64,
    /// Tasks and responses in the log within the ranges the windows cover.
    pub in_log: u64,
    /// Problems: a range that skips or repeats offsets, a window whose counts differ from its range's records.
    pub problems: Vec<String>,
}

/// Holds the applied windows to the input log: their ranges must tile each partition from its first record on, and
/// each window's per-edge counts and roster changes must be exactly what the log holds in its ranges. `inputs` are
/// (partition, offset, record) in any order. Pure; this is how chaos proves that every message reinforced its edge
/// exactly once.
pub fn audit(applied: &[Window], inputs: impl IntoIterator<Item = (Source, i64, Record)>) -> Audit {
    use std::collections::BTreeMap;
    let mut log: BTreeMap<Source, BTreeMap<i64, Record>> = BTreeMap::new();
    for (source, offset, record) in inputs {
        log.entry(source).or_default().insert(offset, record);
    }
    let mut out = Audit::default();
    let mut ends: BTreeMap<Source, i64> = BTreeMap::new();
    for w in applied {
        let mut counts: BTreeMap<(AgentId, AgentId), u32> = BTreeMap::new();
        let mut roster = Vec::new();
        for span in &w.spans {
            let source = Source { topic: span.topic.clone(), partition: span.partition };
            let records = log.get(&source);
            let first = records.and_then(|r| r.keys().next().copied()).unwrap_or(0);
            let expected = ends.get(&source).copied().unwrap_or(first.min(span.from));
            if span.from != expected {
                out.problems.push(format!(
                    "window {}: {}/{} starts at {}, not at {expected}",
                    w.seq, span.topic, span.partition, span.from
                ));
            }
            ends.insert(source.clone(), span.to);
            for (_, record) in records.into_iter().flat_map(|r| r.range(span.from..span.to)) {
                match classify(record.clone()) {
                    Some(TopologyInput::Message { from, to }) => {
                        out.in_log += 1;
                        *counts.entry((from, to)).or_default() += 1;
                    }
                    Some(TopologyInput::Join(p)) => roster.push(mesh_core::topology::RosterChange::Join(p)),
                    Some(TopologyInput::Leave(a)) => roster.push(mesh_core::topology::RosterChange::Leave(a)),
                    Some(TopologyInput::Dead(a)) => roster.push(mesh_core::topology::RosterChange::Dead(a)),
                    None => {}
                }
            }
        }
        out.counted += w.messages();
        let recorded: BTreeMap<(AgentId, AgentId), u32> =
            w.reinforcements.iter().map(|r| ((r.0.clone(), r.1.clone()), r.2)).collect();
        if recorded != counts {
            out.problems.push(format!("window {}: its counts differ from the messages in its ranges", w.seq));
        }
        if roster != w.roster {
            let show = |r: &[mesh_core::topology::RosterChange]| {
                r.iter()
                    .map(|c| match c {
                        mesh_core::topology::RosterChange::Join(p) => format!("join {}", p.id),
                        mesh_core::topology::RosterChange::Leave(a) => format!("leave {a}"),
                        mesh_core::topology::RosterChange::Dead(a) => format!("dead {a}"),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out.problems.push(format!(
                "window {}: its roster changes [{}] differ from the log's [{}] in {:?}",
                w.seq,
                show(&w.roster),
                show(&roster),
                w.spans.iter().map(|s| format!("{}/{} {}..{}", s.topic, s.partition, s.from, s.to)).collect::<Vec<_>>()
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::Role;
    use mesh_core::graph::GraphParams;
    use mesh_core::membership::AgentProfile;
    use mesh_core::topology::Span;
    use mesh_proto::records::{JoinBody, TaskBody};

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid id")
    }

    fn join(name: &str) -> Record {
        Record::Join(JoinBody {
            agent: AgentProfile {
                id: id(name),
                name: name.into(),
                role: Role::new("sales").expect("role"),
                capabilities: vec![],
                metadata: Default::default(),
            },
        })
    }

    fn task(from: &str, to: &str) -> Record {
        Record::Task(TaskBody { from: id(from), to: id(to), task: "t".into(), payload: Default::default() })
    }

    fn source(topic: &str) -> Source {
        Source { topic: topic.into(), partition: 0 }
    }

    /// A manager's windows over a small log, and the log.
    fn run_manager() -> (Vec<Window>, Vec<(Source, i64, Record)>) {
        let log = vec![
            (source("t.topology"), 0, join("a")),
            (source("t.topology"), 1, join("b")),
            (source("t.messages"), 0, task("a", "b")),
            (source("t.messages"), 1, task("a", "b")),
            (source("t.messages"), 2, task("b", "a")),
        ];
        let mut t = Topology::new(GraphParams::default());
        let mut windows = Vec::new();
        for (i, (s, o, r)) in log.iter().enumerate() {
            t.observe(s, *o, classify(r.clone()));
            if i == 1 || i == 4 {
                let w = t.close(10 + i as u64);
                t.apply(&w).expect("own window");
                windows.push(w);
            }
        }
        (windows, log)
    }

    #[test]
    fn the_audit_passes_a_faithful_changelog_and_catches_a_lost_or_doubled_message() {
        let (windows, log) = run_manager();
        let faithful = audit(&windows, log.clone());
        assert_eq!(faithful, Audit { counted: 3, in_log: 3, problems: vec![] });

        let mut doubled = windows.clone();
        doubled[1].reinforcements[0].2 += 1;
        assert_eq!(audit(&doubled, log.clone()).problems.len(), 1, "a message counted twice");

        let mut skipped = windows.clone();
        skipped[1].spans[0] = Span { topic: "t.messages".into(), partition: 0, from: 1, to: 3 };
        let a = audit(&skipped, log);
        assert!(a.problems.iter().any(|p| p.contains("starts at 1, not at 0")), "{a:?}");
    }

    #[test]
    fn replaying_the_changelog_records_rebuilds_the_state_and_ignores_a_stale_writer() {
        let (windows, _) = run_manager();
        let mut records: Vec<Record> = Vec::new();
        for w in &windows {
            records.extend(changelog::split(w.clone(), "topology-1-1", 200, 8_000).into_iter().map(Record::Window));
        }
        // A zombie writes its own window 2 after the real one.
        let mut zombie = windows[1].clone();
        zombie.reinforcements.clear();
        records.extend(changelog::split(zombie, "topology-0-9", 200, 8_000).into_iter().map(Record::Window));
        let replay = replay_changelog(200, &TopologyConfig::default(), None, records);
        assert_eq!(replay.applied, windows);
        assert_eq!(replay.refused.len(), 1);
        assert_eq!(replay.topology.messages(), 3);
    }

    #[test]
    fn ticks_written_at_another_interval_are_counted_in_this_one() {
        assert_eq!(rescale_tick(10, 1000, 1000), 10);
        assert_eq!(rescale_tick(10, 1000, 200), 50);
        assert_eq!(rescale_tick(51, 200, 1000), 10);
    }
}
