//! An agent: joins the mesh, beats, reads only its own partition of the messages topic, answers tasks, starts the
//! scenario's tasks, makes proposals and votes.
//!
//! Delivery is at least once: offsets are committed only after a message was handled and its answer acknowledged,
//! so a crash re-delivers; handling is idempotent because a message's id is remembered and an answer's id is
//! derived from the task's (`{task id}.r`), so a repeated answer is recognisable downstream.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use mesh_core::consensus::Proposal;
use mesh_core::membership::{AgentProfile, Member, MemberStatus};
use mesh_core::waggle::WaggleDance;
use mesh_core::{AgentId, MessageId, ProposalId};
use mesh_proto::records::{
    HeartbeatBody, JoinBody, LeaveBody, ProposalBody, Record, ResponseBody, ResponseStatus, TaskBody, VoteBody,
};
use mesh_proto::{Envelope, Header, TopicKind, decode, partition_for};
use mesh_transport::{Assignment, Bus, InRecord, Position, Reader, SnapshotStore, StartAt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::{AgentConfig, MeshConfig};
use crate::latency::Latency;
use crate::runtime::{
    NodeError, Publisher, ReadErrors, Readiness, Shutdown, ensure_topics, key_text, now_ms, now_us, redis_keys, retry,
};
use crate::scenario::Scenario;

/// Remembers the last `capacity` message ids, to drop re-deliveries.
struct SeenIds {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SeenIds {
    fn new(capacity: usize) -> Self {
        Self { ids: HashSet::new(), order: VecDeque::new(), capacity }
    }

    /// Whether the id was handled already.
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// Remembers a handled id.
    fn insert(&mut self, id: &str) {
        self.first_time(id);
    }

    /// True the first time an id is offered (and remembers it).
    fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

/// The agent's counters, published to Redis for `mesh status`, tests and chaos checkers.
#[derive(Debug, Default)]
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
}

struct Agent<B: Bus> {
    config: AgentConfig,
    publisher: Publisher<B>,
    roster: BTreeMap<AgentId, Member>,
    scenario: Scenario,
    rng: StdRng,
    seen: SeenIds,
    /// Subject → the proposal this agent supports on it: one support per subject, so exclusive proposals cannot
    /// both reach a quorum above one half.
    supporting: BTreeMap<String, ProposalId>,
    voted: SeenIds,
    counters: Counters,
    positions: BTreeMap<(String, i32), i64>,
    last_join_ms: u64,
    /// Send (by another agent) to handling here, of every task and response handled.
    delivery: Latency,
    /// Task sent to its response received.
    round_trip: Latency,
    /// Tasks awaiting a response: id → send time in µs. Bounded: beyond `IN_FLIGHT_LIMIT` the oldest are dropped
    /// (their round trip goes unmeasured and is counted in `round_trips_lost`).
    in_flight: BTreeMap<u64, String>,
    in_flight_ids: HashMap<String, u64>,
}

/// Tasks whose round trip is tracked at once.
const IN_FLIGHT_LIMIT: usize = 50_000;

/// Runs one agent until shutdown; on shutdown publishes `leave`, commits its offsets and flushes.
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
    ensure_topics(&bus, &mesh, &shutdown).await?;
    let publisher = Publisher::connect(bus.clone(), mesh.topics.clone(), &format!("agent-{id}"), &shutdown).await?;
    let my_partition = partition_for(id.as_str().as_bytes(), publisher.partitions(TopicKind::Messages));

    // One reader (one Kafka consumer) for everything the agent reads: its partition of the messages topic and the
    // proposals from where it left off, the membership from the beginning (never committed). With hundreds of
    // agent processes, consumers per process is what the broker pays for.
    let group = format!("{prefix}-agent-{id}");
    let mut inputs = vec![Assignment {
        topic: mesh.topics.name(TopicKind::Messages),
        partition: my_partition,
        start: StartAt::CommittedOrBeginning,
    }];
    inputs.extend(partitions_of(&publisher, TopicKind::Proposals, StartAt::CommittedOrEnd));
    inputs.extend(partitions_of(&publisher, TopicKind::Membership, StartAt::Beginning));
    let mut reader = retry("opening the reader", &shutdown, || bus.reader(&group, inputs.clone())).await?;
    let stats_key = redis_keys::agent_stats(&prefix, id.as_str());
    let started = [("started_at_ms".to_owned(), now_ms().to_string())];
    retry("reaching redis", &shutdown, || store.hset(&stats_key, &started)).await?;

    let mut agent = Agent {
        scenario: Scenario::new(config.role.as_str(), config.seed, config.proposal_every),
        rng: StdRng::seed_from_u64(config.seed ^ 0x5eed),
        config,
        publisher,
        roster: BTreeMap::new(),
        seen: SeenIds::new(100_000),
        supporting: BTreeMap::new(),
        voted: SeenIds::new(100_000),
        counters: Counters::default(),
        positions: BTreeMap::new(),
        last_join_ms: 0,
        delivery: Latency::new(),
        round_trip: Latency::new(),
        in_flight: BTreeMap::new(),
        in_flight_ids: HashMap::new(),
    };
    agent.join(&shutdown).await?;
    tracing::info!(agent = %id, partition = my_partition, "agent joined");
    readiness.ready();

    let mut heartbeat = tokio::time::interval(agent.config.heartbeat_interval);
    let pace = if agent.config.rate > 0.0 {
        Duration::from_secs_f64(1.0 / agent.config.rate)
    } else {
        Duration::from_secs(3600)
    };
    let mut scenario_timer = tokio::time::interval_at(tokio::time::Instant::now() + pace, pace);
    scenario_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let (stats, stats_rx) = tokio::sync::watch::channel(Vec::new());
    let stats_task = tokio::spawn(stats_writer(store.clone(), stats_key.clone(), stats_rx));
    let mut hb_seq = 0u64;
    let mut read_errors = ReadErrors::new("reading");
    let mut shutdown_wait = shutdown.clone();
    loop {
        tokio::select! {
            () = shutdown_wait.wait() => break,
            _ = heartbeat.tick() => {
                hb_seq += 1;
                let env = agent.publisher.envelope(Record::Heartbeat(HeartbeatBody { agent: id.clone(), seq: hb_seq }));
                agent.publisher.send(TopicKind::Heartbeats, id.as_str(), &env, &shutdown).await?;
            }
            _ = scenario_timer.tick(), if agent.config.rate > 0.0 => agent.start_work(&shutdown).await?,
            _ = housekeeping.tick() => {
                readiness.watchdog();
                agent.commit(&mut reader).await;
                stats.send_replace(agent.stats_fields());
                readiness.status(&format!("{} live peers, {} tasks handled", agent.live_peers(), agent.counters.tasks_handled));
            }
            r = reader.next() => match r {
                Ok(record) => match agent.publisher.topics.kind_of(&record.topic) {
                    Some(TopicKind::Messages) => agent.on_message(record, &shutdown).await?,
                    Some(TopicKind::Proposals) => agent.on_proposal(record, &shutdown).await?,
                    Some(TopicKind::Membership) => agent.on_member(record, &shutdown).await?,
                    _ => tracing::warn!(topic = %record.topic, "a record of a topic this agent did not ask for"),
                },
                Err(e) => read_errors.on_error(&e).await,
            },
        }
    }
    tracing::info!(agent = %id, "leaving: publishing leave, committing offsets, flushing");
    let (_tx, no_shutdown) = Shutdown::new();
    let leave = agent.publisher.envelope(Record::Leave(LeaveBody { agent: id.clone(), reason: "shutdown".into() }));
    let left = tokio::time::timeout(
        Duration::from_secs(5),
        agent.publisher.send(TopicKind::Topology, id.as_str(), &leave, &no_shutdown),
    )
    .await;
    if left.is_err() {
        tracing::warn!("could not publish leave within 5 s; the failure detector will declare this agent dead");
    }
    agent.commit(&mut reader).await;
    stats_task.abort();
    match tokio::time::timeout(Duration::from_secs(2), store.hset(&stats_key, &agent.stats_fields())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "writing the final stats to redis failed"),
        Err(_) => tracing::warn!("could not write the final stats to redis within 2 s"),
    }
    bus.flush(Duration::from_secs(5)).await?;
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

    async fn join(&mut self, shutdown: &Shutdown) -> Result<(), NodeError> {
        let env = self.publisher.envelope(Record::Join(JoinBody { agent: self.profile() }));
        self.publisher.send(TopicKind::Topology, self.config.id.as_str(), &env, shutdown).await?;
        self.last_join_ms = now_ms();
        Ok(())
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

    async fn start_work(&mut self, shutdown: &Shutdown) -> Result<(), NodeError> {
        if let Some(draft) = self.scenario.next_task() {
            match self.pick(draft.to_role) {
                Some(to) => {
                    let body = TaskBody {
                        from: self.config.id.clone(),
                        to: to.clone(),
                        task: draft.task.to_owned(),
                        payload: draft.payload,
                    };
                    let env = self.publisher.envelope(Record::Task(body));
                    let sent = now_us();
                    self.publisher.send(TopicKind::Messages, to.as_str(), &env, shutdown).await?;
                    self.counters.tasks_sent += 1;
                    self.track(env.header.id, sent);
                }
                None => self.counters.no_recipient += 1,
            }
        }
        if let Some(draft) = self.scenario.next_proposal() {
            self.propose(draft, shutdown).await?;
        }
        Ok(())
    }

    async fn propose(&mut self, draft: crate::scenario::ProposalDraft, shutdown: &Shutdown) -> Result<(), NodeError> {
        let voters: std::collections::BTreeSet<AgentId> =
            self.roster.values().filter(|m| m.status == MemberStatus::Live).map(|m| m.profile.id.clone()).collect();
        if voters.is_empty() {
            return Ok(());
        }
        let epoch = self.roster.values().map(|m| m.epoch).max().unwrap_or(0);
        let Ok(id) = ProposalId::new(self.publisher.next_id()) else { return Ok(()) };
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
        self.publisher.send(TopicKind::Proposals, id.as_str(), &env, shutdown).await?;
        self.counters.proposals += 1;
        Ok(())
    }

    /// Handles one record of this agent's partition; its offset is committed only once this returned `Ok`.
    async fn on_message(&mut self, record: InRecord, shutdown: &Shutdown) -> Result<(), NodeError> {
        self.handle_message(&record, shutdown).await?;
        self.positions.insert((record.topic.clone(), record.partition), record.offset + 1);
        Ok(())
    }

    async fn handle_message(&mut self, record: &InRecord, shutdown: &Shutdown) -> Result<(), NodeError> {
        // The partition is shared with agents whose ids hash alike: only records keyed to us are ours.
        if key_text(record) != Some(self.config.id.as_str()) {
            return Ok(());
        }
        // Undecodable records are dead-lettered by the topology manager, the one reader of every partition.
        let Ok(env) = decode(record.payload.as_deref(), Some(TopicKind::Messages)) else { return Ok(()) };
        if self.seen.contains(&env.header.id) {
            self.counters.duplicates += 1;
            return Ok(());
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
            self.delivery.record(handled_at.saturating_sub(sent));
        }
        match env.record {
            Record::Task(task) if task.to == self.config.id => {
                let (status, payload) = self.scenario.handle_task(&task.task, &task.payload);
                if status == ResponseStatus::Error {
                    tracing::info!(task = %task.task, from = %task.from, "answering an unknown task with an error");
                }
                let Ok(in_reply_to) = MessageId::new(env.header.id.clone()) else {
                    tracing::warn!(id = %env.header.id, "task id is not a valid message id; answering is impossible");
                    return Ok(());
                };
                let body =
                    ResponseBody { from: self.config.id.clone(), to: task.from.clone(), in_reply_to, status, payload };
                let reply = Envelope {
                    header: Header { id: format!("{}.r", env.header.id), ts: now_ms() },
                    record: Record::Response(body),
                };
                self.publisher.send(TopicKind::Messages, task.from.as_str(), &reply, shutdown).await?;
                self.counters.tasks_handled += 1;
                self.counters.responses_sent += 1;
            }
            Record::Response(response) if response.to == self.config.id => {
                self.counters.responses_received += 1;
                if let Some(sent) = self.in_flight_ids.remove(response.in_reply_to.as_str()) {
                    self.in_flight.remove(&sent);
                    self.round_trip.record(handled_at.saturating_sub(sent));
                }
                tracing::debug!(from = %response.from, in_reply_to = %response.in_reply_to, "response");
            }
            _ => {}
        }
        // Remembered only once handled: an interrupted answer is given again after a restart.
        self.seen.insert(&env.header.id);
        Ok(())
    }

    async fn on_proposal(&mut self, record: InRecord, shutdown: &Shutdown) -> Result<(), NodeError> {
        self.vote_on(&record, shutdown).await?;
        self.positions.insert((record.topic.clone(), record.partition), record.offset + 1);
        Ok(())
    }

    async fn vote_on(&mut self, record: &InRecord, shutdown: &Shutdown) -> Result<(), NodeError> {
        let Ok(env) = decode(record.payload.as_deref(), Some(TopicKind::Proposals)) else { return Ok(()) };
        let Record::Proposal(body) = env.record else { return Ok(()) };
        let proposal = body.proposal;
        if !proposal.voters.contains(&self.config.id) || !self.voted.first_time(proposal.id.as_str()) {
            return Ok(());
        }
        let (mut support, intensity) = if proposal.proposer == self.config.id {
            (true, proposal.dance.intensity)
        } else {
            self.scenario.vote(&proposal)
        };
        if support {
            match self.supporting.get(&proposal.subject) {
                Some(other) if *other != proposal.id => support = false,
                _ => {
                    self.supporting.insert(proposal.subject.clone(), proposal.id.clone());
                }
            }
        }
        let vote = mesh_core::consensus::Vote {
            proposal: proposal.id.clone(),
            voter: self.config.id.clone(),
            support,
            intensity,
        };
        let env = self.publisher.envelope(Record::Vote(VoteBody { vote }));
        self.publisher.send(TopicKind::Votes, proposal.id.as_str(), &env, shutdown).await?;
        self.counters.votes += 1;
        Ok(())
    }

    async fn on_member(&mut self, record: InRecord, shutdown: &Shutdown) -> Result<(), NodeError> {
        let env = match decode(record.payload.as_deref(), Some(TopicKind::Membership)) {
            Ok(env) => env,
            Err(e) => {
                // Only the topology manager writes here; each agent dead-letters what it cannot read.
                return self.publisher.dead_letter(&record, &e.to_string(), shutdown).await;
            }
        };
        let Record::Member(body) = env.record else { return Ok(()) };
        let member = body.member;
        let me = member.profile.id == self.config.id;
        let gone = member.status != MemberStatus::Live;
        self.roster.insert(member.profile.id.clone(), member);
        // Declared dead while alive (a pause, a partition) or an old `left` entry: join again, as ourselves.
        if me && gone && now_ms().saturating_sub(self.last_join_ms) > 1_000 {
            tracing::info!("the roster says this agent is gone: joining again");
            self.join(shutdown).await?;
        }
        Ok(())
    }

    /// Commits the messages and proposals handled (membership is always read from the beginning).
    async fn commit<R: Reader>(&mut self, reader: &mut R) {
        let positions: Vec<Position> = self
            .positions
            .iter()
            .map(|((topic, partition), next)| Position {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next,
            })
            .collect();
        if !positions.is_empty()
            && let Err(e) = reader.commit(&positions).await
        {
            tracing::warn!(error = %e, "committing offsets failed; messages will be re-delivered and deduplicated");
        }
    }

    /// Remembers when a task was sent, to measure its round trip when the answer comes.
    fn track(&mut self, id: String, mut sent_us: u64) {
        // Send stamps are keys: two tasks in the same µs are told apart by a nudge.
        while self.in_flight.contains_key(&sent_us) {
            sent_us += 1;
        }
        if self.in_flight.len() >= IN_FLIGHT_LIMIT
            && let Some((_, oldest)) = self.in_flight.pop_first()
        {
            self.in_flight_ids.remove(&oldest);
            self.counters.round_trips_lost += 1;
        }
        self.in_flight_ids.insert(id.clone(), sent_us);
        self.in_flight.insert(sent_us, id);
    }

    /// The stats hash fields, for `stats_writer`.
    fn stats_fields(&self) -> Vec<(String, String)> {
        let c = &self.counters;
        vec![
            ("role".to_owned(), self.config.role.to_string()),
            ("tasks_sent".to_owned(), c.tasks_sent.to_string()),
            ("tasks_handled".to_owned(), c.tasks_handled.to_string()),
            ("responses_sent".to_owned(), c.responses_sent.to_string()),
            ("responses_received".to_owned(), c.responses_received.to_string()),
            ("duplicates".to_owned(), c.duplicates.to_string()),
            ("proposals".to_owned(), c.proposals.to_string()),
            ("votes".to_owned(), c.votes.to_string()),
            ("no_recipient".to_owned(), c.no_recipient.to_string()),
            ("round_trips_lost".to_owned(), c.round_trips_lost.to_string()),
            ("delivery_us".to_owned(), self.delivery.encode()),
            ("round_trip_us".to_owned(), self.round_trip.encode()),
            ("live_peers".to_owned(), self.live_peers().to_string()),
            ("updated_at_ms".to_owned(), now_ms().to_string()),
        ]
    }
}

/// Writes the latest stats to Redis, off the agent's event loop: a stalled Redis delays the stats, never the
/// messages (`cargo xtask chaos`'s pause-redis scenario measured a 3 s gap in messaging when this was inline).
/// Only the newest value matters, so a slow write skips the intermediate ones.
async fn stats_writer<S: SnapshotStore>(
    store: S,
    key: String,
    mut latest: tokio::sync::watch::Receiver<Vec<(String, String)>>,
) {
    while latest.changed().await.is_ok() {
        let fields = latest.borrow_and_update().clone();
        if let Err(e) = store.hset(&key, &fields).await {
            tracing::warn!(error = %e, "writing agent stats to redis failed");
        }
    }
}
