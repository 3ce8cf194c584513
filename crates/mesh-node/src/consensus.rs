//! The consensus manager: owns proposals and decides each exactly once.
//!
//! Inputs are the proposals topic, the votes topic and the membership topic. A proposal's votes, and the manager's
//! own `expire` and `inhibit` markers, are keyed by proposal id, so they sit in one partition in one order;
//! [`BeeConsensus`] makes each outcome a pure function of the proposal and that sequence. The roster only says
//! which proposals are taken ([`Admission`]: a voter set must be the live roster at the proposal's epoch), by a
//! rule that depends on the membership log and not on when it was read. Clock-driven judgements (the deadline passed, a
//! stronger dance appeared) are appended to the log as markers and only take effect when read back. Replaying from
//! the snapshot's offsets after a crash therefore reaches the same decisions, and Redis keeps the first decision
//! stored per proposal as a guard: a decision is published only if it equals the stored one.
//!
//! The guard is an `HSETNX` on the decisions hash (`agentmesh:decisions` under the default prefix). A decision is the
//! only thing a runtime stores in Redis synchronously, because it must be in Redis before it is published; that happens
//! off the loop too (decisions are in flight while the manager reads on), and stats and snapshots go through a
//! `LatestWriter`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use mesh_core::ProposalId;
use mesh_core::admission::{Admission, Verdict};
use mesh_core::consensus::{
    BeeConsensus, ConsensusCommand, ConsensusInput, ConsensusParams, Decision, Ignored, Outcome,
};
use mesh_core::waggle::WaggleDance;
use mesh_proto::TopicKind;
use mesh_proto::auth::Principal;
use mesh_proto::read_model::{ConsensusStats, redis_keys};
use mesh_proto::records::{DecisionBody, ExpireBody, InhibitBody, Record};
use mesh_transport::{Assignment, Bus, InRecord, Reader, SnapshotStore, StartAt};
use serde::{Deserialize, Serialize};

use crate::config::{ConsensusConfig, MeshConfig};
use crate::latest_writer::LatestWriter;
use crate::metrics::ConsensusMetrics;
use crate::runtime::{
    NodeError, Publisher, ReadErrors, Readiness, STOP_BUDGET, Sending, Shutdown, StopDeadline, ensure_topics, retry,
};
use crate::snapshot_pacer::SnapshotPacer;
use mesh_transport::clock::now_ms;

const SNAPSHOT_FORMAT: u32 = 1;

/// A snapshot as read back; it is written borrowed, by `encode_snapshot`, with the same fields.
#[derive(Debug, Deserialize)]
struct ConsensusSnapshot {
    format: u32,
    machine: BeeConsensus,
    /// The roster history proposals are judged by (absent in snapshots taken before it existed: then the
    /// membership topic is read from its beginning).
    #[serde(default)]
    admission: Admission,
    /// (topic, partition) → next offset to read.
    positions: Vec<(String, i32, i64)>,
    // `taken_at_ms` is written for people reading the store; nothing reads it back.
}

/// Counters for `mesh status` and the stats hash.
#[derive(Debug, Default, Clone)]
struct Counters {
    accepted: u64,
    rejected: u64,
    expired: u64,
    inhibited: u64,
    refused: u64,
    ignored: u64,
    dead_lettered: u64,
    /// Inputs for proposals never seen, dropped to keep their buffer within `mesh_core::consensus::EARLY_LIMIT`.
    early_dropped: u64,
}

/// Runs the consensus manager until shutdown. Waits (with backoff, reporting) for Kafka and Redis as long as needed.
pub async fn run<B: Bus, S: SnapshotStore>(
    bus: B,
    store: S,
    mesh: MeshConfig,
    config: ConsensusConfig,
    shutdown: Shutdown,
    readiness: impl Readiness,
) -> Result<(), NodeError> {
    let prefix = mesh.topics.prefix().to_owned();
    ensure_topics(&bus, &mesh, &shutdown).await?;
    let publisher = Publisher::connect(
        bus.clone(),
        mesh.topics.clone(),
        "consensus",
        Principal::Consensus,
        &mesh.credentials,
        &shutdown,
    )
    .await?;
    let snapshot_key = redis_keys::consensus_snapshot(&prefix);
    let decisions_key = redis_keys::decisions(&prefix);

    let loaded = retry("loading the consensus snapshot", &shutdown, || store.get(&snapshot_key)).await?;
    let (mut machine, mut admission, mut positions) = match loaded.map(|b| restore(&b, &config)) {
        None => (BeeConsensus::new(config.params), Admission::new(), BTreeMap::new()),
        Some(Ok(s)) => s,
        Some(Err(reason)) => {
            tracing::warn!(key = %snapshot_key, "snapshot unusable ({reason}): rebuilding from the log");
            (BeeConsensus::new(config.params), Admission::new(), BTreeMap::new())
        }
    };
    // Markers requested before a crash may never have been written: ask again (duplicates are ignored).
    machine.reset_expiry_requests();

    let mut assignments = Vec::new();
    for kind in [TopicKind::Proposals, TopicKind::Votes, TopicKind::Membership] {
        for p in 0..publisher.partitions(kind) {
            #[expect(clippy::cast_possible_wrap, reason = "partition counts are small")]
            let partition = p as i32;
            let topic = mesh.topics.name(kind);
            let start = positions.get(&(topic.clone(), partition)).map_or(StartAt::Beginning, |o| StartAt::Offset(*o));
            assignments.push(Assignment { topic, partition, start });
        }
    }
    tracing::info!(pending = machine.pending(), decided = machine.decided(), "consensus manager starting");
    let group = format!("{prefix}-consensus");
    let mut reader = retry("opening the input reader", &shutdown, || bus.reader(&group, assignments.clone())).await?;
    readiness.ready();

    let mut counters = Counters::default();
    let mut metrics = ConsensusMetrics::register(&mesh.metrics);
    // Snapshots and stats go to Redis from a task of their own (decisions do not: each is stored before it is
    // published, on purpose).
    let redis = LatestWriter::spawn(store.clone(), redis_keys::consensus_stats(&prefix), snapshot_key.clone());
    let mut snapshots = SnapshotPacer::new(config.snapshot_interval);
    // The state just restored or built: the first snapshot is due an interval from now.
    snapshots.taken(now_ms(), Duration::ZERO);
    let mut last_stats = 0;
    let mut shutdown_wait = shutdown.clone();
    let mut expiry_timer = tokio::time::interval(Duration::from_millis(100));
    expiry_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut read_errors = ReadErrors::new("reading inputs");
    // Decisions, markers and dead letters in flight: the loop reads on while they are stored and acknowledged.
    let mut in_flight: FuturesUnordered<Effect> = FuturesUnordered::new();
    loop {
        tokio::select! {
            () = shutdown_wait.wait() => break,
            r = reader.next(), if in_flight.len() < IN_FLIGHT_LIMIT => match r {
                Ok(record) => {
                    positions.insert((record.topic.clone(), record.partition), record.offset + 1);
                    let state = State { machine: &mut machine, admission: &mut admission, counters: &mut counters };
                    handle_record(state, &publisher, &store, &decisions_key, &record, &shutdown, &mut in_flight);
                }
                Err(e) => read_errors.on_error(&e).await,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => match done {
                Ok(Some(published)) => counters.count(&published, &metrics),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "a decision or marker could not be published"),
            },
            _ = expiry_timer.tick() => {
                readiness.watchdog();
                let now = now_ms();
                for id in machine.due_expiries(now) {
                    let deadline = now;
                    let env = publisher.envelope(Record::Expire(ExpireBody { proposal: id.clone(), deadline_ms: deadline }));
                    let sending = publisher.start_send(TopicKind::Votes, id.as_str(), &env, &shutdown);
                    in_flight.push(Box::pin(async move { sending.await.map(|_| None) }));
                }
                // The snapshot covers only inputs whose decisions and markers are out: nothing in flight.
                if in_flight.is_empty() && snapshots.due(now) {
                    let started = std::time::Instant::now();
                    redis.blob(encode_snapshot(&snapshot_key, &machine, &admission, &positions)?);
                    snapshots.taken(now, started.elapsed());
                }
                if now.saturating_sub(last_stats) >= 1000 {
                    let stats = stats(&machine, &admission, &counters);
                    metrics.mirror.sync(&stats.metric_values());
                    metrics.consumer_lag.set(reader.lag());
                    metrics.set_pending(machine.pending());
                    redis.hash(stats.to_fields());
                    readiness.status(&format!("{} pending, {} decided", machine.pending(), machine.decided()));
                    last_stats = now;
                }
            }
        }
    }
    tracing::info!("consensus manager stopping: finishing decisions in flight, saving a final snapshot");
    let stop = StopDeadline::start();
    let finish = async {
        while let Some(done) = in_flight.next().await {
            if let Ok(Some(published)) = done {
                counters.count(&published, &metrics);
            }
        }
    };
    if stop.within(Duration::from_secs(3), finish).await.is_some() {
        redis.blob(encode_snapshot(&snapshot_key, &machine, &admission, &positions)?);
    } else {
        tracing::warn!("decisions still in flight after 3 s: keeping the last snapshot (the log rebuilds the rest)");
    }
    redis.hash(stats(&machine, &admission, &counters).to_fields());
    if stop.within(STOP_BUDGET, redis.finish()).await.is_none() {
        tracing::warn!("the final snapshot and stats were not saved within the stop budget; the log rebuilds them");
    }
    Ok(())
}

/// Records in flight past which the manager stops reading until the broker and Redis catch up.
const IN_FLIGHT_LIMIT: usize = 10_000;

/// A decision (with the markers that must precede it), a marker or a dead letter in flight: the decision published,
/// if it was one.
type Effect = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Published>, NodeError>> + Send>>;

/// A decision published.
struct Published {
    outcome: Outcome,
    /// When its proposal was created (by the proposer's clock).
    created_at_ms: u64,
}

impl Counters {
    fn count(&mut self, published: &Published, metrics: &ConsensusMetrics) {
        let counter = match published.outcome {
            Outcome::Accepted => &mut self.accepted,
            Outcome::Rejected => &mut self.rejected,
            Outcome::Expired => &mut self.expired,
            Outcome::Inhibited { .. } => &mut self.inhibited,
            Outcome::Refused { .. } => &mut self.refused,
        };
        *counter += 1;
        metrics.decided(published.outcome.name());
        let latency_ms = now_ms().saturating_sub(published.created_at_ms);
        #[expect(clippy::cast_precision_loss, reason = "milliseconds of a latency, far below 2^52")]
        metrics.decision_latency.observe(latency_ms as f64 / 1000.0);
    }
}

type Restored = (BeeConsensus, Admission, BTreeMap<(String, i32), i64>);

fn restore(bytes: &[u8], config: &ConsensusConfig) -> Result<Restored, String> {
    let snap: ConsensusSnapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if snap.format != SNAPSHOT_FORMAT {
        return Err(format!("format {} is not {SNAPSHOT_FORMAT}", snap.format));
    }
    if snap.machine.params() != config.params {
        return Err("the consensus parameters changed since it was taken".to_owned());
    }
    let positions = snap.positions.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
    Ok((snap.machine, snap.admission, positions))
}

/// A record as inputs of the state machine: none for kinds it does not take, several when a roster change lets
/// proposals through that were waiting for it.
///
/// A proposal is taken only if its dance is the one its inputs make (`WaggleDance::perform`: the dance decides which
/// of two rival proposals suppresses the other, so one claimed rather than computed would let any writer suppress
/// its rivals) and its voter set is the live roster at its epoch ([`Admission`]); otherwise it is decided `refused`.
/// Both checks are functions of the logs alone, so a replay refuses exactly what the live run refused.
fn to_inputs(record: Record, admission: &mut Admission) -> Vec<ConsensusInput> {
    let verdicts = match record {
        Record::Proposal(b) => {
            let danced = WaggleDance::perform(b.inputs, &b.proposal.subject);
            if danced == b.proposal.dance {
                admission.on_proposal(b.proposal)
            } else {
                let reason =
                    format!("its dance {:?} does not follow from its inputs, which make {danced:?}", b.proposal.dance);
                vec![Verdict::Refuse { proposal: b.proposal, reason }]
            }
        }
        Record::Member(b) => admission.on_member(&b.member),
        Record::Vote(b) => return vec![ConsensusInput::Vote(b.vote)],
        Record::Expire(b) => return vec![ConsensusInput::Expire { proposal: b.proposal, at_ms: b.deadline_ms }],
        Record::Inhibit(b) => return vec![ConsensusInput::Inhibit { proposal: b.proposal, by: b.by }],
        _ => return Vec::new(),
    };
    verdicts
        .into_iter()
        .map(|v| match v {
            Verdict::Admit(proposal) => ConsensusInput::Propose(proposal),
            Verdict::Refuse { proposal, reason } => {
                tracing::warn!(proposal = %proposal.id, proposer = %proposal.proposer, %reason, "proposal refused");
                ConsensusInput::Refuse { proposal, reason }
            }
        })
        .collect()
}

/// The manager's state a record changes.
struct State<'a> {
    machine: &'a mut BeeConsensus,
    admission: &'a mut Admission,
    counters: &'a mut Counters,
}

fn handle_record<B: Bus, S: SnapshotStore>(
    state: State<'_>,
    publisher: &Publisher<B>,
    store: &S,
    decisions_key: &str,
    record: &InRecord,
    shutdown: &Shutdown,
    in_flight: &mut FuturesUnordered<Effect>,
) {
    let State { machine, admission, counters } = state;
    let kind = publisher.topics.kind_of(&record.topic);
    let envelope = match publisher.open(record, kind) {
        Ok(envelope) => envelope,
        // Every agent reads the membership topic and dead-letters what it cannot use there.
        Err(e) if kind == Some(TopicKind::Membership) => {
            tracing::debug!(offset = record.offset, reason = %e, "a membership record not usable: skipped");
            return;
        }
        Err(e) => {
            counters.dead_lettered += 1;
            let sending = publisher.start_dead_letter(record, &e.to_string(), shutdown);
            in_flight.push(Box::pin(async move { sending.await.map(|_| None) }));
            return;
        }
    };
    for input in to_inputs(envelope.record, admission) {
        step(machine, input, publisher, store, decisions_key, counters, shutdown, in_flight);
    }
}

/// One input through the state machine, and its commands carried out.
#[expect(clippy::too_many_arguments, reason = "the runtime's handles, passed down rather than bundled")]
fn step<B: Bus, S: SnapshotStore>(
    machine: &mut BeeConsensus,
    input: ConsensusInput,
    publisher: &Publisher<B>,
    store: &S,
    decisions_key: &str,
    counters: &mut Counters,
    shutdown: &Shutdown,
    in_flight: &mut FuturesUnordered<Effect>,
) {
    let out = machine.step(input);
    for ignored in &out.ignored {
        counters.ignored += 1;
        match ignored {
            Ignored::DuplicateVote { .. } | Ignored::AlreadyDecided(_) => tracing::debug!(?ignored, "input ignored"),
            // A flood would be a flood of log lines too: counted, and logged at debug.
            Ignored::EarlyDropped { inputs, .. } => {
                counters.early_dropped += *inputs as u64;
                tracing::debug!(?ignored, "buffered inputs dropped");
            }
            _ => tracing::info!(?ignored, "input ignored"),
        }
    }
    // Commands in order: the inhibit markers a step appends are acknowledged before a decision of the same step is
    // stored and published (an acceptance's rivals are suppressed before any voter can read it; `mesh_core::voter`).
    let mut markers: Vec<Sending> = Vec::new();
    for command in out.commands {
        match command {
            ConsensusCommand::AppendInhibit { proposal, by } => {
                let env = publisher.envelope(Record::Inhibit(InhibitBody { proposal: proposal.clone(), by }));
                markers.push(publisher.start_send(TopicKind::Votes, proposal.as_str(), &env, shutdown));
            }
            ConsensusCommand::Publish { decision, created_at_ms } => {
                let before = std::mem::take(&mut markers);
                let (publisher, store, key, shutdown) =
                    (publisher.clone(), store.clone(), decisions_key.to_owned(), shutdown.clone());
                in_flight.push(Box::pin(async move {
                    for marker in before {
                        marker.await?;
                    }
                    let outcome = publish_decision(&publisher, &store, &key, decision, &shutdown).await?;
                    Ok(outcome.map(|outcome| Published { outcome, created_at_ms }))
                }));
            }
        }
    }
    for marker in markers {
        in_flight.push(Box::pin(async move { marker.await.map(|_| None) }));
    }
}

/// Stores the decision in Redis unless one is stored already, and publishes it only if it equals the stored one:
/// a published decision is never contradicted, even by a manager that replayed a different log. The outcome
/// published, if any.
async fn publish_decision<B: Bus, S: SnapshotStore>(
    publisher: &Publisher<B>,
    store: &S,
    decisions_key: &str,
    decision: Decision,
    shutdown: &Shutdown,
) -> Result<Option<Outcome>, NodeError> {
    let id: ProposalId = decision.proposal.clone();
    let json = serde_json::to_string(&decision)
        .map_err(|e| NodeError::Snapshot { key: decisions_key.to_owned(), detail: e.to_string() })?;
    let fresh = retry("storing a decision", shutdown, || store.hset_nx(decisions_key, id.as_str(), &json)).await?;
    if !fresh {
        let stored = retry("reading a stored decision", shutdown, || store.hget(decisions_key, id.as_str())).await?;
        let stored: Option<Decision> = stored.and_then(|s| serde_json::from_str(&s).ok());
        if stored.as_ref() != Some(&decision) {
            tracing::error!(proposal = %id, ?stored, computed = ?decision,
                "computed decision differs from the stored one: keeping the stored one, not publishing");
            return Ok(None);
        }
    }
    tracing::info!(proposal = %id, outcome = ?decision.outcome, supports = decision.supports,
        against = decision.against, voters = decision.voters, "decided");
    let outcome = decision.outcome.clone();
    let env = publisher.envelope(Record::Decision(DecisionBody { decision }));
    publisher.send(TopicKind::Decisions, id.as_str(), &env, shutdown).await?;
    Ok(Some(outcome))
}

fn encode_snapshot(
    key: &str,
    machine: &BeeConsensus,
    admission: &Admission,
    positions: &BTreeMap<(String, i32), i64>,
) -> Result<Vec<u8>, NodeError> {
    // The same fields as `ConsensusSnapshot`, borrowed: a state of 100,000 buffered inputs is not copied to be
    // written.
    #[derive(Serialize)]
    struct Borrowed<'a> {
        format: u32,
        machine: &'a BeeConsensus,
        admission: &'a Admission,
        positions: Vec<(&'a str, i32, i64)>,
        taken_at_ms: u64,
    }
    let snap = Borrowed {
        format: SNAPSHOT_FORMAT,
        machine,
        admission,
        positions: positions.iter().map(|((t, p), o)| (t.as_str(), *p, *o)).collect(),
        taken_at_ms: now_ms(),
    };
    serde_json::to_vec(&snap).map_err(|e| NodeError::Snapshot { key: key.to_owned(), detail: e.to_string() })
}

/// The statistics hash: what `mesh status` and the tests see of the manager's progress.
fn stats(machine: &BeeConsensus, admission: &Admission, c: &Counters) -> ConsensusStats {
    ConsensusStats {
        pending: Some(machine.pending() as u64),
        decided: Some(machine.decided() as u64),
        accepted: Some(c.accepted),
        rejected: Some(c.rejected),
        expired: Some(c.expired),
        inhibited: Some(c.inhibited),
        refused: Some(c.refused),
        proposals_parked: Some(admission.parked() as u64),
        roster_epoch: Some(admission.epoch()),
        ignored_inputs: Some(c.ignored),
        dead_lettered: Some(c.dead_lettered),
        early_dropped: Some(c.early_dropped),
        early_buffered: Some(machine.early_inputs() as u64),
        updated_at_ms: Some(now_ms()),
    }
}

/// Decides every proposal a log of proposals, votes, roster entries and the manager's own markers decides, from
/// scratch: the crash-free reference that recovery tests and `cargo xtask chaos` hold the published decisions to.
/// Records of other kinds are skipped; any interleaving that keeps each proposal's votes and markers in log order,
/// and the roster entries in theirs, gives the same decisions. Keyed by proposal id.
pub fn replay_log(params: ConsensusParams, records: impl IntoIterator<Item = Record>) -> BTreeMap<String, Decision> {
    let mut machine = BeeConsensus::new(params);
    let mut admission = Admission::new();
    let mut out = BTreeMap::new();
    for record in records {
        for input in to_inputs(record, &mut admission) {
            for c in machine.step(input).commands {
                if let ConsensusCommand::Publish { decision: d, .. } = c {
                    out.insert(d.proposal.to_string(), d);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mesh_core::Milli;
    use mesh_core::Role;
    use mesh_core::membership::{AgentProfile, Member, MemberStatus};
    use mesh_proto::records::{MemberBody, ProposalBody};
    use mesh_proto::{TopicKind, decode};

    use super::*;

    fn golden_proposal() -> Record {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/golden/proposal.json");
        let text = std::fs::read_to_string(path).expect("the golden proposal");
        decode(Some(text.as_bytes()), Some(TopicKind::Proposals)).expect("decodes").record
    }

    /// The roster the golden proposal names: fraud, inventory, sales and support joined, epochs 1 to 4.
    fn roster() -> Vec<Record> {
        ["fraud", "inventory", "sales", "support"]
            .into_iter()
            .zip(1..)
            .map(|(name, epoch)| {
                let profile = AgentProfile {
                    id: name.parse().expect("valid id"),
                    name: name.to_owned(),
                    role: Role::new(name).expect("valid role"),
                    capabilities: Vec::new(),
                    metadata: BTreeMap::new(),
                };
                Record::Member(MemberBody { member: Member { profile, status: MemberStatus::Live, epoch } })
            })
            .collect()
    }

    #[test]
    fn a_snapshot_restores_the_machine_the_roster_history_and_the_positions() {
        let config = ConsensusConfig::default();
        let mut machine = BeeConsensus::new(config.params);
        let mut admission = Admission::new();
        for record in roster().into_iter().chain([golden_proposal()]) {
            for input in to_inputs(record, &mut admission) {
                machine.step(input);
            }
        }
        assert_eq!(machine.pending(), 1);
        let positions: BTreeMap<(String, i32), i64> = [(("t".to_owned(), 3), 42)].into_iter().collect();
        let bytes = encode_snapshot("k", &machine, &admission, &positions).expect("encodes");
        let (m, a, p) = restore(&bytes, &config).expect("restores");
        assert_eq!((m, a, p), (machine, admission, positions));
    }

    /// Every voter's support.
    fn votes(p: &mesh_core::consensus::Proposal) -> Vec<Record> {
        p.voters
            .iter()
            .map(|v| {
                let vote = mesh_core::consensus::Vote {
                    proposal: p.id.clone(),
                    voter: v.clone(),
                    support: true,
                    intensity: Milli(900),
                };
                Record::Vote(mesh_proto::records::VoteBody { vote })
            })
            .collect()
    }

    fn outcome_of(log: Vec<Record>) -> Option<Outcome> {
        let decided = replay_log(ConsensusParams::default(), log);
        assert!(decided.len() <= 1, "{decided:?}");
        decided.into_values().next().map(|d| d.outcome)
    }

    #[test]
    fn a_proposal_whose_dance_its_inputs_do_not_make_is_refused_whatever_its_votes() {
        let Record::Proposal(honest) = golden_proposal() else { panic!("a proposal") };
        let log = |p: &ProposalBody| -> Vec<Record> {
            roster().into_iter().chain([Record::Proposal(p.clone())]).chain(votes(&p.proposal)).collect()
        };
        assert_eq!(outcome_of(log(&honest)), Some(Outcome::Accepted), "the golden one dances right");
        let mut forged = honest.clone();
        forged.proposal.dance.intensity = Milli(1000);
        let Some(Outcome::Refused { reason }) = outcome_of(log(&forged)) else { panic!("refused") };
        assert!(reason.contains("does not follow from its inputs"), "{reason}");
    }

    #[test]
    fn a_proposal_whose_voters_are_not_the_live_roster_at_its_epoch_is_refused_whatever_the_interleaving() {
        let Record::Proposal(honest) = golden_proposal() else { panic!("a proposal") };
        // fraud alone, or fraud and a friend: every voter supports, and without the check it would be accepted.
        let mut alone = honest.clone();
        alone.proposal.voters = ["fraud".parse().expect("valid id")].into_iter().collect();
        let mut invented = honest.clone();
        invented.proposal.voters.insert("mallory".parse().expect("valid id"));
        invented.proposal.voters.remove(&"sales".parse().expect("valid id"));
        for forged in [alone, invented] {
            let proposal_and_votes: Vec<Record> =
                std::iter::once(Record::Proposal(forged.clone())).chain(votes(&forged.proposal)).collect();
            // The roster read before the proposal, after it, or half and half: the same verdict.
            for split in [0, 2, 4] {
                let mut log = roster();
                let after = log.split_off(split);
                log.extend(proposal_and_votes.clone());
                log.extend(after);
                let Some(Outcome::Refused { reason }) = outcome_of(log) else {
                    panic!("refused (roster split {split})")
                };
                assert!(reason.contains("not the live roster at epoch 4"), "{reason}");
            }
        }
        // The honest set passes however the topics interleave.
        let mut log: Vec<Record> =
            std::iter::once(Record::Proposal(honest.clone())).chain(votes(&honest.proposal)).collect();
        log.extend(roster());
        assert_eq!(outcome_of(log), Some(Outcome::Accepted));
    }
}
