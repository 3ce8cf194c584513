//! The consensus manager: owns proposals and decides each exactly once.
//!
//! Inputs are the proposals topic and the votes topic. A proposal's votes, and the manager's own `expire` and
//! `inhibit` markers, are keyed by proposal id, so they sit in one partition in one order; [`BeeConsensus`] makes
//! each outcome a pure function of the proposal and that sequence. Clock-driven judgements (the deadline passed, a
//! stronger dance appeared) are appended to the log as markers and only take effect when read back. Replaying from
//! the snapshot's offsets after a crash therefore reaches the same decisions, and Redis keeps the first decision
//! stored per proposal as a guard: a decision is published only if it equals the stored one.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use mesh_core::ProposalId;
use mesh_core::consensus::{
    BeeConsensus, ConsensusCommand, ConsensusInput, ConsensusParams, Decision, Ignored, Outcome,
};
use mesh_core::waggle::WaggleDance;
use mesh_proto::TopicKind;
use mesh_proto::auth::Principal;
use mesh_proto::records::{DecisionBody, ExpireBody, InhibitBody, Record};
use mesh_transport::{Assignment, Bus, InRecord, Reader, SnapshotStore, StartAt};
use serde::{Deserialize, Serialize};

use crate::config::{ConsensusConfig, MeshConfig};
use crate::latest_writer::LatestWriter;
use crate::runtime::{
    NodeError, Publisher, ReadErrors, Readiness, Sending, Shutdown, ensure_topics, now_ms, redis_keys, retry,
};

const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConsensusSnapshot {
    format: u32,
    machine: BeeConsensus,
    /// (topic, partition) → next offset to read.
    positions: Vec<(String, i32, i64)>,
    taken_at_ms: u64,
}

/// Counters for `mesh status` and the stats hash.
#[derive(Debug, Default, Clone)]
struct Counters {
    accepted: u64,
    rejected: u64,
    expired: u64,
    inhibited: u64,
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
    let (mut machine, mut positions) = match loaded.map(|b| restore(&b, &config)) {
        None => (BeeConsensus::new(config.params), BTreeMap::new()),
        Some(Ok(s)) => s,
        Some(Err(reason)) => {
            tracing::warn!(key = %snapshot_key, "snapshot unusable ({reason}): rebuilding from the log");
            (BeeConsensus::new(config.params), BTreeMap::new())
        }
    };
    // Markers requested before a crash may never have been written: ask again (duplicates are ignored).
    machine.reset_expiry_requests();

    let mut assignments = Vec::new();
    for kind in [TopicKind::Proposals, TopicKind::Votes] {
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
    // Snapshots and stats go to Redis from a task of their own (decisions do not: each is stored before it is
    // published, on purpose).
    let redis = LatestWriter::spawn(store.clone(), redis_keys::consensus_stats(&prefix), snapshot_key.clone());
    let mut last_snapshot = now_ms();
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
                    handle_record(&mut machine, &publisher, &store, &decisions_key, &record, &mut counters, &shutdown, &mut in_flight);
                }
                Err(e) => read_errors.on_error(&e).await,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => match done {
                Ok(Some(outcome)) => counters.count(&outcome),
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
                if in_flight.is_empty() && now.saturating_sub(last_snapshot) >= config.snapshot_interval.as_millis() as u64 {
                    redis.blob(encode_snapshot(&snapshot_key, &machine, &positions)?);
                    last_snapshot = now;
                }
                if now.saturating_sub(last_stats) >= 1000 {
                    redis.hash(stats_fields(&machine, &counters));
                    readiness.status(&format!("{} pending, {} decided", machine.pending(), machine.decided()));
                    last_stats = now;
                }
            }
        }
    }
    tracing::info!("consensus manager stopping: finishing decisions in flight, saving a final snapshot");
    let finish = async {
        while let Some(done) = in_flight.next().await {
            if let Ok(Some(outcome)) = done {
                counters.count(&outcome);
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), finish).await.is_ok() {
        redis.blob(encode_snapshot(&snapshot_key, &machine, &positions)?);
    } else {
        tracing::warn!("decisions still in flight after 5 s: keeping the last snapshot (the log rebuilds the rest)");
    }
    redis.hash(stats_fields(&machine, &counters));
    redis.finish().await;
    Ok(())
}

/// Records in flight past which the manager stops reading until the broker and Redis catch up.
const IN_FLIGHT_LIMIT: usize = 10_000;

/// A decision (with the markers that must precede it), a marker or a dead letter in flight: the outcome published,
/// if it was a decision.
type Effect = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Outcome>, NodeError>> + Send>>;

impl Counters {
    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Expired => self.expired += 1,
            Outcome::Inhibited { .. } => self.inhibited += 1,
        }
    }
}

type Restored = (BeeConsensus, BTreeMap<(String, i32), i64>);

fn restore(bytes: &[u8], config: &ConsensusConfig) -> Result<Restored, String> {
    let snap: ConsensusSnapshot = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if snap.format != SNAPSHOT_FORMAT {
        return Err(format!("format {} is not {SNAPSHOT_FORMAT}", snap.format));
    }
    if snap.machine.params() != config.params {
        return Err("the consensus parameters changed since it was taken".to_owned());
    }
    let positions = snap.positions.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
    Ok((snap.machine, positions))
}

/// A record as an input of the state machine (`None` for kinds it does not take), or why it is refused.
///
/// A proposal's dance must be the one its inputs make (`WaggleDance::perform`): the dance decides which of two rival
/// proposals suppresses the other, so one claimed rather than computed would let any writer suppress its rivals. The
/// check is a function of the record alone, so a replay refuses exactly what the live run refused.
fn to_input(record: Record) -> Result<Option<ConsensusInput>, String> {
    Ok(match record {
        Record::Proposal(b) => {
            let danced = WaggleDance::perform(b.inputs, &b.proposal.subject);
            if danced != b.proposal.dance {
                return Err(format!(
                    "proposal {}: its dance {:?} does not follow from its inputs, which make {danced:?}",
                    b.proposal.id, b.proposal.dance
                ));
            }
            Some(ConsensusInput::Propose(b.proposal))
        }
        Record::Vote(b) => Some(ConsensusInput::Vote(b.vote)),
        Record::Expire(b) => Some(ConsensusInput::Expire(b.proposal)),
        Record::Inhibit(b) => Some(ConsensusInput::Inhibit { proposal: b.proposal, by: b.by }),
        _ => None,
    })
}

#[expect(clippy::too_many_arguments, reason = "the runtime's handles, passed down rather than bundled")]
fn handle_record<B: Bus, S: SnapshotStore>(
    machine: &mut BeeConsensus,
    publisher: &Publisher<B>,
    store: &S,
    decisions_key: &str,
    record: &InRecord,
    counters: &mut Counters,
    shutdown: &Shutdown,
    in_flight: &mut FuturesUnordered<Effect>,
) {
    let kind = publisher.topics.kind_of(&record.topic);
    let input = match publisher.open(record, kind).map_err(|e| e.to_string()).and_then(|e| to_input(e.record)) {
        Ok(input) => input,
        Err(e) => {
            counters.dead_lettered += 1;
            let sending = publisher.start_dead_letter(record, &e, shutdown);
            in_flight.push(Box::pin(async move { sending.await.map(|_| None) }));
            return;
        }
    };
    let Some(input) = input else { return };
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
            ConsensusCommand::Publish(decision) => {
                let before = std::mem::take(&mut markers);
                let (publisher, store, key, shutdown) =
                    (publisher.clone(), store.clone(), decisions_key.to_owned(), shutdown.clone());
                in_flight.push(Box::pin(async move {
                    for marker in before {
                        marker.await?;
                    }
                    publish_decision(&publisher, &store, &key, decision, &shutdown).await
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
    positions: &BTreeMap<(String, i32), i64>,
) -> Result<Vec<u8>, NodeError> {
    let snap = ConsensusSnapshot {
        format: SNAPSHOT_FORMAT,
        machine: machine.clone(),
        positions: positions.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect(),
        taken_at_ms: now_ms(),
    };
    serde_json::to_vec(&snap).map_err(|e| NodeError::Snapshot { key: key.to_owned(), detail: e.to_string() })
}

fn stats_fields(machine: &BeeConsensus, c: &Counters) -> Vec<(String, String)> {
    vec![
        ("pending".into(), machine.pending().to_string()),
        ("decided".into(), machine.decided().to_string()),
        ("accepted".into(), c.accepted.to_string()),
        ("rejected".into(), c.rejected.to_string()),
        ("expired".into(), c.expired.to_string()),
        ("inhibited".into(), c.inhibited.to_string()),
        ("ignored_inputs".into(), c.ignored.to_string()),
        ("dead_lettered".into(), c.dead_lettered.to_string()),
        ("early_dropped".into(), c.early_dropped.to_string()),
        ("early_buffered".into(), machine.early_inputs().to_string()),
        ("updated_at_ms".into(), now_ms().to_string()),
    ]
}

/// Decides every proposal a log of proposals, votes and the manager's own markers decides, from scratch: the
/// crash-free reference that recovery tests and `cargo xtask chaos` hold the published decisions to. Records of
/// other kinds are skipped; any interleaving that keeps each proposal's votes and markers in log order gives the
/// same decisions. Keyed by proposal id.
pub fn replay_log(params: ConsensusParams, records: impl IntoIterator<Item = Record>) -> BTreeMap<String, Decision> {
    let mut machine = BeeConsensus::new(params);
    let mut out = BTreeMap::new();
    for record in records {
        // What the live manager refused (dead-lettered) is no input here either.
        let Ok(Some(input)) = to_input(record) else { continue };
        for c in machine.step(input).commands {
            if let ConsensusCommand::Publish(d) = c {
                out.insert(d.proposal.to_string(), d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use mesh_core::Milli;
    use mesh_proto::{TopicKind, decode};

    use super::*;

    fn golden_proposal() -> Record {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/golden/proposal.json");
        let text = std::fs::read_to_string(path).expect("the golden proposal");
        decode(Some(text.as_bytes()), Some(TopicKind::Proposals)).expect("decodes").record
    }

    #[test]
    fn a_proposal_whose_dance_its_inputs_do_not_make_is_refused_live_and_in_replay() {
        assert!(
            matches!(to_input(golden_proposal()), Ok(Some(ConsensusInput::Propose(_)))),
            "the golden one dances right"
        );
        let Record::Proposal(mut forged) = golden_proposal() else { panic!("a proposal") };
        forged.proposal.dance.intensity = Milli(1000);
        let reason = to_input(Record::Proposal(forged.clone())).expect_err("refused");
        assert!(reason.contains("does not follow from its inputs"), "{reason}");
        // Every voter supports it: taken as input, it would be decided.
        let votes = |p: &mesh_core::consensus::Proposal| -> Vec<Record> {
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
        };
        let Record::Proposal(honest) = golden_proposal() else { panic!("a proposal") };
        let honest_log: Vec<Record> =
            std::iter::once(Record::Proposal(honest.clone())).chain(votes(&honest.proposal)).collect();
        assert_eq!(replay_log(ConsensusParams::default(), honest_log).len(), 1, "the honest one is decided");
        let forged_log: Vec<Record> =
            std::iter::once(Record::Proposal(forged.clone())).chain(votes(&forged.proposal)).collect();
        let decided = replay_log(ConsensusParams::default(), forged_log);
        assert!(decided.is_empty(), "a replay does not take what the live run refused: {decided:?}");
    }
}
