//! An agent: joins the mesh, beats, reads only its own partition of the messages topic, answers tasks, starts the
//! scenario's tasks once it is a member, makes proposals and votes.
//!
//! Sends are pipelined: each is handed to the producer at once (so records keep their order per partition) and its
//! acknowledgement is awaited alongside everything else, up to [`IN_FLIGHT_LIMIT`] at a time; the loop never waits
//! for one send before the next. The agent's own tasks are also held to a congestion window
//! ([`mesh_core::send_window`]): when the broker acknowledges slower than the schedule asks, ticks are shed (counted
//! in `tasks_shed`) instead of queued behind retries, which is what turned 500 agents on two cores from slow into
//! stopped. Delivery is still at least once: an input's offset is committed only once its
//! answer (or vote) is acknowledged, and all offsets before it too, so a crash re-delivers; handling is idempotent
//! because a message's id is remembered and an answer's id is derived from the task's (`{task id}.r`).
//!
//! One producer and one consumer per process, and no admin client: the managers (or `mesh up`) create the topics,
//! an agent waits for them.
//!
//! Ids are stable: a restarted agent joins again as itself, and an agent that reads its own `dead` or `left` entry on
//! the membership topic while alive joins again. A heartbeat is the one record an agent keeps at most one of in flight,
//! and it is not retried beyond librdkafka's own timeout (`Publisher::start_send_once`): the pending one already says
//! the agent lives, heartbeats piling up in retries turned a few seconds of broker starvation into minutes, and a
//! retried heartbeat sat out a backoff of up to 5 s after a broker restart, long enough for its agent to be declared
//! dead.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use mesh_core::consensus::Proposal;
use mesh_core::membership::{AgentProfile, Member, MemberStatus};
use mesh_core::send_window::{SendWindow, Settled, WindowConfig};
use mesh_core::voter::{Preference, Voter};
use mesh_core::waggle::WaggleDance;
use mesh_core::{AgentId, MessageId, ProposalId};
use mesh_proto::auth::Principal;
use mesh_proto::read_model::{AgentStats, redis_keys};
use mesh_proto::records::{
    HeartbeatBody, JoinBody, LeaveBody, ProposalBody, Record, ResponseBody, ResponseStatus, TaskBody, VoteBody,
};
use mesh_proto::{Envelope, Header, TopicKind, partition_for};
use mesh_transport::{Assignment, Bus, InRecord, Position, Reader, SnapshotStore, StartAt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{AgentConfig, MeshConfig};
use crate::latency::Latency;
use crate::latest_writer::LatestWriter;
use crate::metrics::AgentMetrics;
use mesh_transport::clock::{now_ms, now_us};

use crate::runtime::{
    NodeError, Publisher, ReadErrors, Readiness, Sending, Shutdown, StopDeadline, Unusable, key_text, retry,
};
use crate::scenario::Scenario;

/// Sends awaiting their acknowledgement at once; past it the agent reads and starts nothing new until some are
/// acknowledged (a slow broker slows the agent down instead of growing its memory).
pub const IN_FLIGHT_LIMIT: usize = 2_000;

/// Remembers the last `capacity` message ids, to drop re-deliveries. Kept as 64-bit fingerprints (SipHash with
/// fixed keys), not strings: 100,000 ids are 1.6 MB instead of about 10, which is most of an agent's memory at
/// thousands of messages a second. Two different ids colliding (about 1 in 10^14 among 100,000) would drop one
/// message as a duplicate.
struct SeenIds {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl SeenIds {
    fn new(capacity: usize) -> Self {
        Self { ids: HashSet::new(), order: VecDeque::new(), capacity }
    }

    fn fingerprint(id: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        #[expect(deprecated, reason = "SipHasher with fixed keys: a stable fingerprint, not a HashMap's hasher")]
        let mut h = std::hash::SipHasher::new_with_keys(0x6d65_7368, 0x6964_7321);
        id.hash(&mut h);
        h.finish()
    }

    /// Whether the id was handled already.
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(&Self::fingerprint(id))
    }

    /// True the first time an id is offered (and remembers it).
    fn first_time(&mut self, id: &str) -> bool {
        let f = Self::fingerprint(id);
        if self.ids.contains(&f) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(f);
        self.order.push_back(f);
        true
    }
}

/// One input whose offset may be committed once it is finished.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ticket {
    topic: String,
    partition: i32,
    offset: i64,
}

/// Inputs read and not yet finished, per partition in offset order: the position to commit is the first
/// unfinished offset, so nothing is committed past an answer still in flight.
#[derive(Debug, Default)]
struct Progress {
    open: BTreeMap<(String, i32), VecDeque<(i64, bool)>>,
    committable: BTreeMap<(String, i32), i64>,
    changed: bool,
}

impl Progress {
    fn start(&mut self, record: &InRecord) -> Ticket {
        self.open.entry((record.topic.clone(), record.partition)).or_default().push_back((record.offset, false));
        Ticket { topic: record.topic.clone(), partition: record.partition, offset: record.offset }
    }

    fn finish(&mut self, ticket: &Ticket) {
        let key = (ticket.topic.clone(), ticket.partition);
        let Some(queue) = self.open.get_mut(&key) else { return };
        if let Ok(i) = queue.binary_search_by_key(&ticket.offset, |(o, _)| *o) {
            queue[i].1 = true;
        }
        while let Some(&(offset, true)) = queue.front() {
            queue.pop_front();
            self.committable.insert(key.clone(), offset + 1);
            self.changed = true;
        }
    }

    /// The positions to commit, if they moved since the last call.
    fn take_positions(&mut self) -> Option<Vec<Position>> {
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        Some(self.all_positions())
    }

    fn all_positions(&self) -> Vec<Position> {
        self.committable
            .iter()
            .map(|((topic, partition), next)| Position {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next,
            })
            .collect()
    }
}

/// What an acknowledgement finishes.
enum Sent {
    /// The answer to a task, or a vote on a proposal: the input it finishes.
    Input(Ticket),
    /// A heartbeat: at most one is in flight (see the heartbeat tick).
    Heartbeat,
    /// A task of the agent's own schedule: it holds a place in the send window until it settles.
    Task,
    /// Anything else (a join, a proposal, a dead letter).
    Other,
}

/// Sends in flight: what each answers, and its result with how long it took to be acknowledged.
type InFlight = FuturesUnordered<Pin<Box<dyn Future<Output = (Sent, Result<i64, NodeError>, Duration)> + Send>>>;

fn track(in_flight: &mut InFlight, sent: Sent, sending: Sending) {
    let started = tokio::time::Instant::now();
    in_flight.push(Box::pin(async move {
        let result = sending.await;
        (sent, result, started.elapsed())
    }));
}

/// The agent's counters, published to Redis for `mesh status`, tests and chaos checkers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Counters {
    tasks_sent: u64,
    tasks_handled: u64,
    responses_sent: u64,
    responses_received: u64,
    duplicates: u64,
    proposals: u64,
    votes: u64,
    no_recipient: u64,
    round_trips_lost: u64,
    not_member: u64,
    errors_answered: u64,
    /// Tasks dead-lettered because they could not be answered (an envelope id that no response can name).
    tasks_unanswerable: u64,
    /// Sends the broker refused for good (dead-lettered by the publisher, their input finished).
    sends_refused: u64,
    /// Heartbeat ticks skipped because the previous heartbeat was still unacknowledged.
    heartbeats_skipped: u64,
    /// Scenario tasks not sent because the send window was full: the broker acknowledges slower than the schedule.
    tasks_shed: u64,
    /// Records read that were not written by the writer they must have (with the deployment secret): ignored.
    unauthenticated: u64,
}

struct Agent<B: Bus> {
    config: AgentConfig,
    publisher: Publisher<B>,
    roster: BTreeMap<AgentId, Member>,
    scenario: Scenario,
    rng: StdRng,
    seen: SeenIds,
    voter: Voter,
    voted: SeenIds,
    counters: Counters,
    progress: Progress,
    in_flight: InFlight,
    last_join_ms: u64,
    /// Send (by another agent) to handling here, of every task and response handled.
    delivery: Latency,
    /// Task's intended send time to its response received.
    round_trip: Latency,
    /// Tasks awaiting a response: id → intended send time in µs. Bounded: beyond `ROUND_TRIPS_TRACKED` the oldest
    /// are dropped (their round trip goes unmeasured and is counted in `round_trips_lost`).
    awaiting: BTreeMap<u64, String>,
    awaiting_ids: HashMap<String, u64>,
    /// A heartbeat is in flight (unacknowledged).
    heartbeat_pending: bool,
    /// How many of its own tasks the agent may have unacknowledged: the schedule's brake when the broker falls behind.
    window: SendWindow,
    /// The monotonic origin of the window's clock.
    started: tokio::time::Instant,
    /// The same counters and latencies, for Prometheus.
    metrics: AgentMetrics,
}

/// Microseconds as seconds, for Prometheus.
#[expect(clippy::cast_precision_loss, reason = "a latency in µs, far below 2^52")]
fn seconds(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Tasks whose round trip is tracked at once.
const ROUND_TRIPS_TRACKED: usize = 50_000;

/// Scenario ticks more than this late are not caught up: the agent was stopped (SIGSTOP) or starved, and a burst
/// of that many tasks would measure the stall, not the mesh.
const MAX_CATCH_UP: Duration = Duration::from_secs(5);

/// Runs one agent until shutdown; on shutdown publishes `leave`, waits for its sends, commits its offsets and
/// flushes.
pub async fn run<B: Bus, S: SnapshotStore>(
    bus: B,
    store: S,
    mesh: MeshConfig,
    config: AgentConfig,
    shutdown: Shutdown,
    readiness: impl Readiness,
) -> Result<(), NodeError> {
    let prefix = mesh.topics.prefix().to_owned();
    let id = config.id.clone();
    // Waits (with backoff, reporting) until the managers or `mesh up` created the topics.
    let publisher = Publisher::connect(
        bus.clone(),
        mesh.topics.clone(),
        &format!("agent-{id}"),
        Principal::Agent(id.clone()),
        &mesh.credentials,
        &shutdown,
    )
    .await?;
    let my_partition = partition_for(id.as_str().as_bytes(), publisher.partitions(TopicKind::Messages));

    // One reader (one Kafka consumer) for everything the agent reads: its partition of the messages topic and the
    // proposals from where it left off, the membership from the beginning (never committed), and decisions from
    // now on (a support is held until its proposal's decision is read).
    let group = format!("{prefix}-agent-{id}");
    let mut inputs = vec![Assignment {
        topic: mesh.topics.name(TopicKind::Messages),
        partition: my_partition,
        start: StartAt::CommittedOrBeginning,
    }];
    inputs.extend(partitions_of(&publisher, TopicKind::Proposals, StartAt::CommittedOrEnd));
    inputs.extend(partitions_of(&publisher, TopicKind::Membership, StartAt::Beginning));
    inputs.extend(partitions_of(&publisher, TopicKind::Decisions, StartAt::End));
    let mut reader = retry("opening the reader", &shutdown, || bus.reader(&group, inputs.clone())).await?;
    let stats_key = redis_keys::agent_stats(&prefix, id.as_str());
    let started = AgentStats { started_at_ms: Some(now_ms()), ..AgentStats::default() }.to_fields();
    retry("reaching redis", &shutdown, || store.hset(&stats_key, &started)).await?;

    let mut agent = Agent {
        scenario: Scenario::new(config.role.as_str(), config.seed, config.proposal_every),
        rng: StdRng::seed_from_u64(config.seed ^ 0x5eed),
        voter: Voter::new(config.id.clone()),
        config,
        publisher,
        roster: BTreeMap::new(),
        seen: SeenIds::new(100_000),
        voted: SeenIds::new(100_000),
        counters: Counters::default(),
        progress: Progress::default(),
        in_flight: FuturesUnordered::new(),
        last_join_ms: 0,
        delivery: Latency::new(),
        round_trip: Latency::new(),
        awaiting: BTreeMap::new(),
        awaiting_ids: HashMap::new(),
        heartbeat_pending: false,
        window: SendWindow::new(WindowConfig::default()),
        started: tokio::time::Instant::now(),
        metrics: AgentMetrics::register(&mesh.metrics, id.as_str()),
    };
    let join = agent.join_envelope();
    agent.publisher.send(TopicKind::Topology, id.as_str(), &join, &shutdown).await?;
    agent.last_join_ms = now_ms();
    tracing::info!(agent = %id, partition = my_partition, "agent joined");
    readiness.ready();

    let mut heartbeat = tokio::time::interval(agent.config.heartbeat_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let pace = if agent.config.rate > 0.0 {
        Duration::from_secs_f64(1.0 / agent.config.rate)
    } else {
        Duration::from_secs(3600)
    };
    // Burst: a tick the loop could not take on time is taken as soon as it can, stamped with the time it was due, so
    // the latency of a late send counts from when it should have left (no coordinated omission).
    let mut scenario_timer = tokio::time::interval_at(tokio::time::Instant::now() + pace, pace);
    scenario_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Stats go to Redis off the event loop: a stalled Redis delays the stats, never the messages (`cargo xtask
    // chaos`'s pause-redis scenario measured a 3 s gap in messaging when this was inline). Only the newest value
    // matters, so a slow write skips the intermediate ones.
    let stats = LatestWriter::spawn_hash(store.clone(), stats_key.clone());
    let mut published = Counters::default();
    let mut published_at = 0;
    let mut hb_seq = 0u64;
    let mut read_errors = ReadErrors::new("reading");
    let mut shutdown_wait = shutdown.clone();
    loop {
        let room = agent.in_flight.len() < IN_FLIGHT_LIMIT;
        tokio::select! {
            () = shutdown_wait.wait() => break,
            _ = heartbeat.tick() => {
                // One heartbeat in flight at most: while the broker is slow, the pending one already says this agent
                // lives, and a heartbeat per tick piling up in retries (hundreds per agent after a minute) kept a
                // starved broker starved: 500 agents made a ramp-up stall of a few seconds last for minutes. It is
                // not retried: when librdkafka gives up on it, the next tick sends a fresh one.
                if agent.heartbeat_pending {
                    agent.counters.heartbeats_skipped += 1;
                } else {
                    hb_seq += 1;
                    let env = agent.publisher.envelope(Record::Heartbeat(HeartbeatBody { agent: id.clone(), seq: hb_seq }));
                    let sending = agent.publisher.start_send_once(TopicKind::Heartbeats, id.as_str(), &env);
                    track(&mut agent.in_flight, Sent::Heartbeat, sending);
                    agent.heartbeat_pending = true;
                }
            }
            due = scenario_timer.tick(), if agent.config.rate > 0.0 && room => {
                let late = tokio::time::Instant::now().saturating_duration_since(due);
                if late <= MAX_CATCH_UP {
                    let intended_us = now_us().saturating_sub(u64::try_from(late.as_micros()).unwrap_or(u64::MAX));
                    agent.start_work(intended_us, &shutdown);
                }
            }
            _ = housekeeping.tick() => {
                readiness.watchdog();
                if let Some(positions) = agent.progress.take_positions()
                    && let Err(e) = reader.commit_async(&positions)
                {
                    tracing::warn!(error = %e, "committing offsets failed; messages will be re-delivered and deduplicated");
                }
                // Stats only when something changed (or every 10 s): 500 idle agents must cost next to nothing.
                let now = now_ms();
                if agent.counters != published || now.saturating_sub(published_at) >= 10_000 {
                    stats.hash(agent.stats().to_fields());
                    published = agent.counters.clone();
                    published_at = now;
                }
                agent.export_metrics();
                agent.metrics.consumer_lag.set(reader.lag());
                readiness.status(&format!("{} live peers, {} tasks handled", agent.live_peers(), agent.counters.tasks_handled));
            }
            Some((sent, result, took)) = agent.in_flight.next(), if !agent.in_flight.is_empty() => agent.acknowledged(sent, result, took),
            r = reader.next(), if room => match r {
                Ok(record) => match agent.publisher.topics.kind_of(&record.topic) {
                    Some(TopicKind::Messages) => agent.on_message(&record, &shutdown),
                    Some(TopicKind::Proposals) => agent.on_proposal(&record, &shutdown),
                    Some(TopicKind::Membership) => agent.on_member(&record, &shutdown),
                    Some(TopicKind::Decisions) => agent.on_decision(&record),
                    _ => tracing::warn!(topic = %record.topic, "a record of a topic this agent did not ask for"),
                },
                Err(e) => read_errors.on_error(&e).await,
            },
        }
    }
    tracing::info!(agent = %id, "leaving: publishing leave, finishing sends, committing offsets, flushing");
    let stop = StopDeadline::start();
    let (_tx, no_shutdown) = Shutdown::new();
    let leave = agent.publisher.envelope(Record::Leave(LeaveBody { agent: id.clone(), reason: "shutdown".into() }));
    let left = agent.publisher.start_send(TopicKind::Topology, id.as_str(), &leave, &no_shutdown);
    let finish = async {
        while let Some((sent, result, took)) = agent.in_flight.next().await {
            agent.acknowledged(sent, result, took);
        }
        left.await
    };
    if stop.within(Duration::from_secs(3), finish).await.is_none() {
        tracing::warn!(
            "sends not acknowledged within 3 s; the failure detector will declare this agent dead if leave was lost"
        );
    }
    let positions = agent.progress.all_positions();
    if !positions.is_empty() {
        match stop.within(Duration::from_secs(2), reader.commit(&positions)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => tracing::warn!(
                error = %e,
                "committing the final offsets failed; messages will be re-delivered and deduplicated"
            ),
            None => {
                tracing::warn!("the final commit took longer than 2 s; messages will be re-delivered and deduplicated")
            }
        }
    }
    stats.hash(agent.stats().to_fields());
    if stop.within(Duration::from_secs(1), stats.finish()).await.is_none() {
        tracing::warn!("could not write the final stats to redis within 1 s");
    }
    if let Err(e) = bus.flush(stop.remaining()).await {
        // Only what was never acknowledged is left, and no offset past it was committed: it is read again.
        tracing::warn!(error = %e, "the producer did not flush within the stop budget");
    }
    Ok(())
}

fn partitions_of<B: Bus>(publisher: &Publisher<B>, kind: TopicKind, start: StartAt) -> Vec<Assignment> {
    (0..publisher.partitions(kind))
        .map(|p| Assignment {
            topic: publisher.topics.name(kind),
            #[expect(clippy::cast_possible_wrap, reason = "partition counts are small")]
            partition: p as i32,
            start,
        })
        .collect()
}

impl<B: Bus> Agent<B> {
    fn profile(&self) -> AgentProfile {
        AgentProfile {
            id: self.config.id.clone(),
            name: self.config.name.clone(),
            role: self.config.role.clone(),
            capabilities: self.config.capabilities.clone(),
            metadata: self.config.metadata.clone(),
        }
    }

    fn join_envelope(&self) -> Envelope {
        self.publisher.envelope(Record::Join(JoinBody { agent: self.profile() }))
    }

    /// Whether the roster (as the topology manager published it) has this agent live: until then it starts no
    /// task, so a ramp-up does not build a backlog the mesh then spends seconds draining.
    fn is_member(&self) -> bool {
        self.roster.get(&self.config.id).is_some_and(|m| m.status == MemberStatus::Live)
            && self.live_peers() + 1 >= self.config.start_after_members
    }

    fn live_peers(&self) -> usize {
        self.roster.values().filter(|m| m.status == MemberStatus::Live && m.profile.id != self.config.id).count()
    }

    fn pick(&mut self, role: &str) -> Option<AgentId> {
        let candidates: Vec<&AgentId> = self
            .roster
            .values()
            .filter(|m| {
                m.status == MemberStatus::Live && m.profile.role.as_str() == role && m.profile.id != self.config.id
            })
            .map(|m| &m.profile.id)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..candidates.len());
        Some(candidates[i].clone())
    }

    /// One scenario tick that was due at `intended_us`: a task to another role, and every Nth time a proposal.
    fn start_work(&mut self, intended_us: u64, shutdown: &Shutdown) {
        if !self.is_member() {
            self.counters.not_member += 1;
            return;
        }
        if let Some(draft) = self.scenario.next_task() {
            self.send_task(draft, intended_us, shutdown);
        }
        if let Some(draft) = self.scenario.next_proposal() {
            self.propose(draft, shutdown);
        }
    }

    /// A task to a live agent of the draft's role, if the send window has room for it: a shed tick costs no look
    /// through the roster (500 members, every tick).
    fn send_task(&mut self, draft: crate::scenario::TaskDraft, intended_us: u64, shutdown: &Shutdown) {
        if !self.window.try_start() {
            self.counters.tasks_shed += 1;
            return;
        }
        let Some(to) = self.pick(draft.to_role) else {
            self.window.cancel();
            self.counters.no_recipient += 1;
            return;
        };
        let body = TaskBody {
            from: self.config.id.clone(),
            to: to.clone(),
            task: draft.task.to_owned(),
            payload: draft.payload,
        };
        let env = self.publisher.envelope(Record::Task(body));
        let partition = partition_for(to.as_str().as_bytes(), self.publisher.partitions(TopicKind::Messages));
        let sending = self.publisher.start_send_to(
            TopicKind::Messages,
            partition,
            to.as_str(),
            &env,
            Some(intended_us),
            shutdown,
        );
        track(&mut self.in_flight, Sent::Task, sending);
        self.counters.tasks_sent += 1;
        self.await_answer(env.header.id, intended_us);
    }

    fn propose(&mut self, draft: crate::scenario::ProposalDraft, shutdown: &Shutdown) {
        let voters: std::collections::BTreeSet<AgentId> =
            self.roster.values().filter(|m| m.status == MemberStatus::Live).map(|m| m.profile.id.clone()).collect();
        if voters.is_empty() {
            return;
        }
        let epoch = self.roster.values().map(|m| m.epoch).max().unwrap_or(0);
        let Ok(id) = ProposalId::new(self.publisher.next_id()) else { return };
        let proposal = Proposal {
            id: id.clone(),
            proposer: self.config.id.clone(),
            dance: WaggleDance::perform(draft.inputs, &draft.subject),
            subject: draft.subject,
            action: draft.action.to_owned(),
            voters,
            epoch,
            created_at_ms: now_ms(),
        };
        tracing::info!(proposal = %id, subject = %proposal.subject, action = %proposal.action,
            intensity = proposal.dance.intensity.0, voters = proposal.voters.len(), "proposing");
        let env = Envelope {
            header: Header { id: id.to_string(), ts: proposal.created_at_ms },
            record: Record::Proposal(ProposalBody { proposal, inputs: draft.inputs, payload: draft.payload }),
        };
        let sending = self.publisher.start_send(TopicKind::Proposals, id.as_str(), &env, shutdown);
        track(&mut self.in_flight, Sent::Other, sending);
        self.counters.proposals += 1;
    }

    /// A send was acknowledged: the input it answers is finished (and may be committed).
    fn acknowledged(&mut self, sent: Sent, result: Result<i64, NodeError>, took: Duration) {
        if result.is_ok() {
            self.metrics.publish.observe(took.as_secs_f64());
        }
        if matches!(sent, Sent::Task) {
            let settled = match result {
                Ok(_) => Settled::Acknowledged { took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX) },
                Err(_) => Settled::Failed,
            };
            let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.window.settle(now_ms, settled);
        }
        match (sent, result) {
            (Sent::Input(ticket), Ok(_)) => self.progress.finish(&ticket),
            (Sent::Heartbeat, result) => {
                self.heartbeat_pending = false;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "a heartbeat ended without an acknowledgement");
                }
            }
            // Refused for good (the publisher dead-lettered it): waiting would stall this reader forever, so the input
            // it answers is finished and committed.
            (sent, Err(NodeError::Transport(e))) if e.is_permanent() => {
                self.counters.sends_refused += 1;
                if let Sent::Input(ticket) = sent {
                    self.progress.finish(&ticket);
                }
            }
            // Otherwise only a shutdown ends a send's retries: the input stays uncommitted and is handled again after
            // a restart.
            (_, Err(e)) => tracing::debug!(error = %e, "a send ended without an acknowledgement"),
            (Sent::Task | Sent::Other, Ok(_)) => {}
        }
    }

    /// One record of this agent's partition; its offset is committed once the answer (if any) is acknowledged.
    fn on_message(&mut self, record: &InRecord, shutdown: &Shutdown) {
        let ticket = self.progress.start(record);
        match self.handle_message(record, shutdown) {
            Some(answer) => track(&mut self.in_flight, Sent::Input(ticket), answer),
            None => self.progress.finish(&ticket),
        }
    }

    /// Handles a message; the answer in flight, if one was sent.
    fn handle_message(&mut self, record: &InRecord, shutdown: &Shutdown) -> Option<Sending> {
        // The partition is shared with agents whose ids hash alike: only records keyed to us are ours.
        if key_text(record) != Some(self.config.id.as_str()) {
            return None;
        }
        // Undecodable records are dead-lettered by the topology manager, the one reader of every partition.
        // A forged sender gets no answer (the topology manager dead-letters it for all).
        let env = self.open_or_ignore(record, TopicKind::Messages)?;
        if self.seen.contains(&env.header.id) {
            self.counters.duplicates += 1;
            return None;
        }
        let handled_at = now_us();
        let for_me = match &env.record {
            Record::Task(t) => t.to == self.config.id,
            Record::Response(r) => r.to == self.config.id,
            _ => false,
        };
        if let Some(sent) = record.sent_at_us
            && for_me
        {
            let delivery_us = handled_at.saturating_sub(sent);
            self.delivery.record(delivery_us);
            self.metrics.delivery.observe(seconds(delivery_us));
        }
        let answer = match env.record {
            Record::Task(task) if task.to == self.config.id => {
                let (status, payload) = self.scenario.handle_task(&task.task, &task.payload);
                if status == ResponseStatus::Error {
                    self.counters.errors_answered += 1;
                    tracing::info!(task = %task.task, from = %task.from, "answering an unknown task with an error");
                }
                let in_reply_to = match MessageId::new(env.header.id.clone()) {
                    Ok(id) => id,
                    // A response must name the task by a valid id: this one cannot be answered, so it is
                    // dead-lettered with the reason (its asker can read why there), never dropped in silence.
                    Err(e) => {
                        self.counters.tasks_unanswerable += 1;
                        let reason = format!("task id {:?} cannot be answered: {e}", env.header.id);
                        return Some(self.publisher.start_dead_letter(record, &reason, shutdown));
                    }
                };
                let body =
                    ResponseBody { from: self.config.id.clone(), to: task.from.clone(), in_reply_to, status, payload };
                let reply = Envelope {
                    header: Header { id: format!("{}.r", env.header.id), ts: now_ms() },
                    record: Record::Response(body),
                };
                self.counters.tasks_handled += 1;
                self.counters.responses_sent += 1;
                Some(self.publisher.start_send(TopicKind::Messages, task.from.as_str(), &reply, shutdown))
            }
            Record::Response(response) if response.to == self.config.id => {
                self.counters.responses_received += 1;
                if let Some(sent) = self.awaiting_ids.remove(response.in_reply_to.as_str()) {
                    self.awaiting.remove(&sent);
                    let round_trip_us = handled_at.saturating_sub(sent);
                    self.round_trip.record(round_trip_us);
                    self.metrics.round_trip.observe(seconds(round_trip_us));
                }
                tracing::debug!(from = %response.from, in_reply_to = %response.in_reply_to, "response");
                None
            }
            _ => None,
        };
        // Remembered once handled: a task whose answer was lost in a crash is not committed, so it comes again
        // after a restart (a new process, with an empty memory) and is answered again.
        self.seen.first_time(&env.header.id);
        answer
    }

    fn on_proposal(&mut self, record: &InRecord, shutdown: &Shutdown) {
        let ticket = self.progress.start(record);
        match self.vote_on(record, shutdown) {
            Some(vote) => track(&mut self.in_flight, Sent::Input(ticket), vote),
            None => self.progress.finish(&ticket),
        }
    }

    /// A record of a topic a manager also reads (and dead-letters for all), opened; `None` when it is unusable,
    /// counting those not written by the writer they must have.
    fn open_or_ignore(&mut self, record: &InRecord, kind: TopicKind) -> Option<Envelope> {
        match self.publisher.open(record, Some(kind)) {
            Ok(env) => Some(env),
            Err(Unusable::Auth(e)) => {
                self.counters.unauthenticated += 1;
                tracing::debug!(topic = %record.topic, offset = record.offset, reason = %e, "a forged record: ignored");
                None
            }
            Err(Unusable::Decode(_)) => None,
        }
    }

    fn vote_on(&mut self, record: &InRecord, shutdown: &Shutdown) -> Option<Sending> {
        // The consensus manager dead-letters what cannot be read or was forged.
        let env = self.open_or_ignore(record, TopicKind::Proposals)?;
        let Record::Proposal(body) = env.record else { return None };
        let proposal = body.proposal;
        if !proposal.voters.contains(&self.config.id) || !self.voted.first_time(proposal.id.as_str()) {
            return None;
        }
        let preference = if proposal.proposer == self.config.id {
            Preference { support: true, intensity: proposal.dance.intensity }
        } else {
            let (support, intensity) = self.scenario.vote(&proposal);
            Preference { support, intensity }
        };
        let vote = self.voter.on_proposal(&proposal, preference)?;
        let env = self.publisher.envelope(Record::Vote(VoteBody { vote }));
        self.counters.votes += 1;
        Some(self.publisher.start_send(TopicKind::Votes, proposal.id.as_str(), &env, shutdown))
    }

    fn on_decision(&mut self, record: &InRecord) {
        match self.publisher.open(record, Some(TopicKind::Decisions)) {
            Ok(env) => {
                if let Record::Decision(body) = env.record {
                    self.voter.on_decision(&body.decision);
                }
            }
            Err(Unusable::Auth(e)) => {
                self.counters.unauthenticated += 1;
                tracing::warn!(offset = record.offset, reason = %e, "a decision not written by the consensus manager: ignored");
            }
            Err(Unusable::Decode(_)) => {}
        }
    }

    fn on_member(&mut self, record: &InRecord, shutdown: &Shutdown) {
        let env = match self.publisher.open(record, Some(TopicKind::Membership)) {
            Ok(env) => env,
            Err(e) => {
                if matches!(e, Unusable::Auth(_)) {
                    self.counters.unauthenticated += 1;
                }
                // Only the topology manager writes here; each agent dead-letters what it cannot read.
                let sending = self.publisher.start_dead_letter(record, &e.to_string(), shutdown);
                track(&mut self.in_flight, Sent::Other, sending);
                return;
            }
        };
        let Record::Member(body) = env.record else { return };
        let member = body.member;
        let me = member.profile.id == self.config.id;
        let gone = member.status != MemberStatus::Live;
        self.roster.insert(member.profile.id.clone(), member);
        // Declared dead while alive (a pause, a partition) or an old `left` entry: join again, as ourselves.
        if me && gone && now_ms().saturating_sub(self.last_join_ms) > 1_000 {
            tracing::info!("the roster says this agent is gone: joining again");
            let join = self.join_envelope();
            let sending = self.publisher.start_send(TopicKind::Topology, self.config.id.as_str(), &join, shutdown);
            track(&mut self.in_flight, Sent::Other, sending);
            self.last_join_ms = now_ms();
        }
    }

    /// Remembers when a task was due, to measure its round trip when the answer comes.
    fn await_answer(&mut self, id: String, mut sent_us: u64) {
        // Send stamps are keys: two tasks in the same µs are told apart by a nudge.
        while self.awaiting.contains_key(&sent_us) {
            sent_us += 1;
        }
        if self.awaiting.len() >= ROUND_TRIPS_TRACKED
            && let Some((_, oldest)) = self.awaiting.pop_first()
        {
            self.awaiting_ids.remove(&oldest);
            self.counters.round_trips_lost += 1;
        }
        self.awaiting_ids.insert(id.clone(), sent_us);
        self.awaiting.insert(sent_us, id);
    }

    /// Copies the counters and gauges into the Prometheus registry (every second, with the stats).
    fn export_metrics(&mut self) {
        self.metrics.mirror.sync(&self.stats_without_histograms().metric_values());
        self.metrics.set_in_flight(self.in_flight.len());
    }

    /// The statistics hash, for the stats writer: without `started_at_ms`, written once at start and kept.
    fn stats(&self) -> AgentStats {
        AgentStats {
            role: Some(self.config.role.to_string()),
            delivery_us: Some(self.delivery.encode()),
            round_trip_us: Some(self.round_trip.encode()),
            started_at_ms: None,
            updated_at_ms: Some(now_ms()),
            ..self.stats_without_histograms()
        }
    }

    /// The statistics' counters and levels: what the metrics copy every second, without encoding the histograms.
    fn stats_without_histograms(&self) -> AgentStats {
        let c = &self.counters;
        AgentStats {
            live_peers: Some(self.live_peers() as u64),
            in_flight: Some(self.in_flight.len() as u64),
            supports_held: Some(self.voter.held() as u64),
            tasks_sent: Some(c.tasks_sent),
            tasks_handled: Some(c.tasks_handled),
            responses_sent: Some(c.responses_sent),
            responses_received: Some(c.responses_received),
            duplicates: Some(c.duplicates),
            proposals: Some(c.proposals),
            votes: Some(c.votes),
            no_recipient: Some(c.no_recipient),
            not_member: Some(c.not_member),
            errors_answered: Some(c.errors_answered),
            tasks_unanswerable: Some(c.tasks_unanswerable),
            sends_refused: Some(c.sends_refused),
            heartbeats_skipped: Some(c.heartbeats_skipped),
            tasks_shed: Some(c.tasks_shed),
            send_window: Some(u64::from(self.window.size())),
            unauthenticated: Some(c.unauthenticated),
            round_trips_lost: Some(c.round_trips_lost),
            ..AgentStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64) -> InRecord {
        InRecord {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            payload: None,
            timestamp_ms: None,
            sent_at_us: None,
            auth: None,
        }
    }

    #[test]
    fn nothing_is_committed_past_an_answer_in_flight() {
        let mut p = Progress::default();
        let a = p.start(&record(0, 10));
        let b = p.start(&record(0, 11));
        let c = p.start(&record(0, 12));
        p.finish(&b);
        p.finish(&c);
        assert_eq!(p.take_positions(), None, "10's answer is still in flight");
        p.finish(&a);
        let positions = p.take_positions().expect("moved");
        assert_eq!(positions[0].next_offset, 13);
        assert_eq!(p.take_positions(), None, "unchanged since");
        let d = p.start(&record(1, 0));
        p.finish(&d);
        assert_eq!(p.take_positions().map(|v| v.len()), Some(2), "each partition on its own");
    }
}
