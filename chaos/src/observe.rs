//! What the mesh wrote, as the harness saw it: one reader connected to the broker directly (never through a fault
//! proxy) tails every topic of the scenario from the beginning into indexes the checkers and the convergence
//! predicate read. It also keeps the records the managers' state is rebuilt from, for the replay checks.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mesh_core::consensus::{Decision, Proposal};
use mesh_core::membership::MemberStatus;
use mesh_core::topology::Source;
use mesh_kafka::{FetchStates, KafkaBus};
use mesh_node::{MeshConfig, now_ms};
use mesh_proto::records::{DeadLetterBody, Record};
use mesh_proto::{TopicKind, decode};
use mesh_transport::{Assignment, Bus, Reader, StartAt};
use tokio::task::JoinHandle;

/// A task seen on the messages topic.
#[derive(Debug, Clone)]
pub struct TaskSeen {
    /// Sender's timestamp (ms).
    pub ts: u64,
    /// Sender agent id.
    pub from: String,
    /// Recipient agent id.
    pub to: String,
}

/// A response seen on the messages topic.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSeen {
    /// The response's own id.
    pub id: String,
    /// Sender's timestamp (ms).
    pub ts: u64,
    /// Who answered.
    pub from: String,
    /// Who asked.
    pub to: String,
    /// Status and payload, as JSON: copies of one answer must agree on it.
    pub content: String,
}

/// Everything read so far, indexed.
#[derive(Debug, Default)]
pub struct Observed {
    /// Tasks by id.
    pub tasks: HashMap<String, TaskSeen>,
    /// Task ids in the order read.
    pub task_order: Vec<String>,
    /// Records of a task id read more than once.
    pub task_copies: u64,
    /// Responses by the task they answer.
    pub responses: HashMap<String, Vec<ResponseSeen>>,
    /// (ts, from, to) of every response, in the order read.
    pub answers: Vec<(u64, String, String)>,
    /// Latest membership entry per agent id: status, roster epoch, ts.
    pub members: BTreeMap<String, (MemberStatus, u64, u64)>,
    /// `dead` verdicts: (agent id, ts).
    pub dead: Vec<(String, u64)>,
    /// Proposals by id, with their ts.
    pub proposals: BTreeMap<String, (u64, Proposal)>,
    /// Every decision record per proposal id.
    pub decisions: BTreeMap<String, Vec<Decision>>,
    /// Proposals, votes, markers and roster entries in the order read, for the consensus replay.
    pub consensus_inputs: Vec<Record>,
    /// Topology-manager inputs: (partition, offset, record) of the topology and messages topics.
    pub topology_inputs: Vec<(Source, i64, Record)>,
    /// The topology manager's changelog (`window` records), in log order.
    pub changelog: Vec<Record>,
    /// Next offset to read per (topic, partition).
    pub positions: BTreeMap<(String, i32), i64>,
    /// Records that did not decode.
    pub undecodable: u64,
    /// Records not written by the writer they must have (the mesh refuses them too): left out of every index.
    pub unauthenticated: u64,
    /// The dead letters, in the order read.
    pub letters: Vec<DeadLetterBody>,
}

impl Observed {
    /// Tasks older than `before_ms` with no response.
    pub fn unanswered_before(&self, before_ms: u64) -> Vec<(&String, &TaskSeen)> {
        self.task_order
            .iter()
            .filter_map(|id| self.tasks.get_key_value(id))
            .filter(|(id, t)| t.ts < before_ms && !self.responses.contains_key(*id))
            .collect()
    }
}

/// A topic just created can be missing from the broker's metadata for a while (KRaft publishes it to the broker's
/// cache asynchronously; seconds on a loaded machine): asks again for up to 30 s.
async fn partitions_when_visible(bus: &KafkaBus, topic: &str) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match bus.partition_count(topic).await {
            Ok(n) => return Ok(n),
            Err(e) if Instant::now() >= deadline => {
                return Err(anyhow::Error::new(e).context(format!("partitions of {topic} (30 s after creating it)")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether the tail read everything written before it was asked to catch up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUp {
    /// Every partition asked about was read to its end.
    Done,
    /// The first partition still behind (or whose end could not be read), in words.
    Behind(String),
}

/// The tailing reader; dropping it stops it.
pub struct Tail {
    observed: Arc<Mutex<Observed>>,
    topics: Vec<(TopicKind, String, u32)>,
    task: JoinHandle<()>,
    /// When the tail last read a record (ms since the Unix epoch), and where librdkafka's fetches stand: a tail
    /// found behind says whether it stalled, and where.
    last_read_ms: Arc<AtomicU64>,
    fetches: FetchStates,
}

impl Tail {
    /// Creates the scenario's topics (as the processes would) and starts reading all of them from the beginning.
    pub async fn start(bus: KafkaBus, mesh: &MeshConfig) -> Result<Self> {
        let specs = mesh_node::topic_specs(mesh);
        bus.ensure_topics(&specs).await.context("creating the scenario's topics")?;
        let kinds = [
            TopicKind::Topology,
            TopicKind::Windows,
            TopicKind::Messages,
            TopicKind::Membership,
            TopicKind::Proposals,
            TopicKind::Votes,
            TopicKind::Decisions,
            TopicKind::Deadletter,
        ];
        let mut topics = Vec::new();
        let mut assignments = Vec::new();
        for kind in kinds {
            let name = mesh.topics.name(kind);
            let partitions = partitions_when_visible(&bus, &name).await?;
            for p in 0..partitions {
                let partition = i32::try_from(p).context("partition number")?;
                assignments.push(Assignment { topic: name.clone(), partition, start: StartAt::Beginning });
            }
            topics.push((kind, name, partitions));
        }
        let group = format!("{}-chaos-tail", mesh.topics.prefix());
        let mut reader = bus.reader(&group, assignments).await.context("tail reader")?;
        let fetches = reader.fetch_states();
        let last_read_ms = Arc::new(AtomicU64::new(now_ms()));
        let read_at = Arc::clone(&last_read_ms);
        let observed = Arc::new(Mutex::new(Observed::default()));
        let by_name: HashMap<String, TopicKind> = topics.iter().map(|(k, n, _)| (n.clone(), *k)).collect();
        let sink = observed.clone();
        let verifier = mesh.credentials.verifier();
        let task = tokio::spawn(async move {
            loop {
                let r = match reader.next().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "chaos tail: read failed; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                read_at.store(now_ms(), Ordering::Relaxed);
                let Some(kind) = by_name.get(&r.topic).copied() else { continue };
                // A checker that panicked holding the lock changes nothing the tail appends.
                let mut o = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                o.positions.insert((r.topic.clone(), r.partition), r.offset + 1);
                let Ok(env) = decode(r.payload.as_deref(), Some(kind)) else {
                    o.undecodable += 1;
                    continue;
                };
                // What the mesh does not believe, the checkers do not count: the same check as `Publisher::open`.
                let key = r.key.as_deref().unwrap_or_default();
                let value = r.payload.as_deref().unwrap_or_default();
                if verifier.check(&env.record, &r.topic, key, value, r.auth.as_deref()).is_err() {
                    o.unauthenticated += 1;
                    continue;
                }
                let ts = env.header.ts;
                match kind {
                    TopicKind::Topology | TopicKind::Messages => {
                        let source = Source { topic: r.topic.clone(), partition: r.partition };
                        o.topology_inputs.push((source, r.offset, env.record.clone()));
                    }
                    TopicKind::Windows => o.changelog.push(env.record.clone()),
                    TopicKind::Proposals | TopicKind::Votes | TopicKind::Membership => {
                        o.consensus_inputs.push(env.record.clone());
                    }
                    _ => {}
                }
                match env.record {
                    Record::Task(t) => {
                        let seen = TaskSeen { ts, from: t.from.to_string(), to: t.to.to_string() };
                        if o.tasks.insert(env.header.id.clone(), seen).is_some() {
                            o.task_copies += 1;
                        } else {
                            o.task_order.push(env.header.id);
                        }
                    }
                    Record::Response(b) => {
                        let content = serde_json::json!({"status": b.status, "payload": b.payload}).to_string();
                        let seen = ResponseSeen {
                            id: env.header.id,
                            ts,
                            from: b.from.to_string(),
                            to: b.to.to_string(),
                            content,
                        };
                        o.answers.push((ts, seen.from.clone(), seen.to.clone()));
                        o.responses.entry(b.in_reply_to.to_string()).or_default().push(seen);
                    }
                    Record::Member(m) => {
                        let id = m.member.profile.id.to_string();
                        o.members.insert(id, (m.member.status, m.member.epoch, ts));
                    }
                    Record::Dead(d) => o.dead.push((d.agent.to_string(), ts)),
                    Record::Proposal(p) => {
                        o.proposals.insert(p.proposal.id.to_string(), (ts, p.proposal));
                    }
                    Record::Decision(d) => {
                        o.decisions.entry(d.decision.proposal.to_string()).or_default().push(d.decision);
                    }
                    Record::DeadLetter(letter) => o.letters.push(letter),
                    _ => {}
                }
            }
        });
        Ok(Tail { observed, topics, task, last_read_ms, fetches })
    }

    /// The indexes, locked.
    pub fn observed(&self) -> MutexGuard<'_, Observed> {
        match self.observed.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Waits until everything written before this call has been read; see [`Self::catch_up_kinds`].
    pub async fn catch_up(&self, bus: &KafkaBus, timeout: Duration) -> CatchUp {
        let kinds: Vec<TopicKind> = self.topics.iter().map(|t| t.0).collect();
        self.catch_up_kinds(bus, &kinds, timeout).await
    }

    /// [`Self::catch_up`] on the topics of `kinds` only. The tail reads partitions independently, so a record can
    /// be read before the records of other partitions it was caused by: a checker that needs both first copies what
    /// it read of the effects, then calls this for the causes (their end offsets now cover everything before them).
    /// An end offset the broker does not give at once is asked again until `timeout` (after a broker restart the
    /// first request can fail), and a tail still behind at `timeout` says where, so a check it leaves unknown says
    /// why.
    pub async fn catch_up_kinds(&self, bus: &KafkaBus, kinds: &[TopicKind], timeout: Duration) -> CatchUp {
        let deadline = Instant::now() + timeout;
        let mut ends = Vec::new();
        for (_, name, partitions) in self.topics.iter().filter(|t| kinds.contains(&t.0)) {
            for p in 0..*partitions {
                let Ok(partition) = i32::try_from(p) else { continue };
                let end = loop {
                    match bus.end_offset(name, partition).await {
                        Ok(end) => break end,
                        Err(e) if Instant::now() >= deadline => {
                            return CatchUp::Behind(format!("the end of {name}/{p} is unknown: {e}"));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                };
                ends.push((name.clone(), partition, end));
            }
        }
        loop {
            let behind = {
                let o = self.observed();
                ends.iter().find_map(|(t, p, end)| {
                    let at = o.positions.get(&(t.clone(), *p)).copied().unwrap_or(0);
                    (*end > 0 && at < *end).then(|| (t.clone(), *p, format!("{t}/{p} read to offset {at} of {end}")))
                })
            };
            let Some((topic, partition, behind)) = behind else { return CatchUp::Done };
            if Instant::now() >= deadline {
                return CatchUp::Behind(format!("{behind}; {}", self.why_behind(&topic, partition)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the tail knows of why it is behind on `topic`/`partition`: whether its task still runs, how long ago it
    /// read its last record, and librdkafka's fetch state there.
    fn why_behind(&self, topic: &str, partition: i32) -> String {
        let task = if self.task.is_finished() { "the tail's task has ended" } else { "the tail's task runs" };
        let idle_ms = now_ms().saturating_sub(self.last_read_ms.load(Ordering::Relaxed));
        let fetch = self.fetches.of(topic, partition).map_or_else(
            || "no fetch statistics yet".to_owned(),
            |(f, age)| format!("librdkafka {} ms ago: {f}", age.as_millis()),
        );
        format!("{task}, its last record was read {idle_ms} ms ago; {fetch}")
    }

    /// How many fetches stuck in offset validation the tail's reader restarted (`mesh_kafka::STUCK_VALIDATION`).
    pub fn fetch_restarts(&self) -> u64 {
        self.fetches.restarted()
    }

    /// Partitions of the topology topic (the first sources of the topology manager).
    pub fn partitions(&self, kind: TopicKind) -> u32 {
        self.topics.iter().find(|t| t.0 == kind).map_or(0, |t| t.2)
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first WARN or ERROR line written by any process in [`after_ms`, `until_ms`]: (ms, process, line). Log lines
/// start with the supervisor's RFC 3339 stamp.
pub fn first_complaint(
    logs: &[(String, std::path::PathBuf)],
    after_ms: u64,
    until_ms: u64,
) -> Option<(u64, String, String)> {
    complaints(logs, after_ms, until_ms, 1).into_iter().next()
}

/// The first `max` WARN or ERROR lines of each process in [`after_ms`, `until_ms`], oldest first, cut to 200
/// characters: the evidence a failed trial prints, so that a CI log alone says what the mesh complained about
/// (per process, so one process's burst of reconnect errors does not hide what the others said).
pub fn complaints(
    logs: &[(String, std::path::PathBuf)],
    after_ms: u64,
    until_ms: u64,
    max: usize,
) -> Vec<(u64, String, String)> {
    let mut found = Vec::new();
    for (name, path) in logs {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let mut from_this = 0;
        for line in text.lines() {
            let Some((stamp, rest)) = line.split_once(' ') else { continue };
            // After the supervisor's stamp: the process's own time (runs outside a supervisor) or straight its level.
            let rest = format!(" {}", strip_ansi(rest));
            if !(rest.contains(" WARN ") || rest.contains(" ERROR ")) {
                continue;
            }
            let Ok(t) = humantime::parse_rfc3339(stamp) else { continue };
            let ms = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            if ms >= after_ms && ms <= until_ms {
                found.push((ms, name.clone(), rest.trim_start().chars().take(200).collect::<String>()));
                from_this += 1;
                // Lines of one file are in time order: its first `max` are all it can contribute.
                if from_this == max {
                    break;
                }
            }
        }
    }
    found.sort_by_key(|(ms, name, _)| (*ms, name.clone()));
    found
}

/// Removes terminal colour sequences (`ESC [ ... m`), which a process may write even into a log file.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"), "time  WARN x");
    }

    #[test]
    fn the_first_warning_after_the_injection_is_found_across_logs() {
        let dir = std::env::temp_dir().join(format!("mesh-chaos-logs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = dir.join("a.log");
        let b = dir.join("b.log");
        std::fs::write(
            &a,
            "2026-11-25T10:00:00.000Z 2026-11-25T10:00:00.000000Z  WARN x: early\n\
             2026-11-25T10:00:05.000Z 2026-11-25T10:00:05.000000Z  WARN x: later\n",
        )
        .expect("write");
        // A supervised process leaves its own time out: the supervisor's stamp is the only one.
        std::fs::write(&b, "2026-11-25T10:00:03.000Z ERROR y: first\n2026-11-25T10:00:04.000Z  INFO y: fine\n")
            .expect("write");
        let at = |s: &str| {
            humantime::parse_rfc3339(s).expect("time").duration_since(std::time::UNIX_EPOCH).expect("epoch").as_millis()
                as u64
        };
        let logs = vec![("a".to_owned(), a), ("b".to_owned(), b)];
        let found = first_complaint(&logs, at("2026-11-25T10:00:01Z"), u64::MAX).expect("found");
        assert_eq!((found.0, found.1.as_str()), (at("2026-11-25T10:00:03Z"), "b"));
        assert!(first_complaint(&logs, at("2026-11-25T10:00:06Z"), u64::MAX).is_none());
        let all = complaints(&logs, 0, u64::MAX, 10);
        let order: Vec<&str> = all.iter().map(|(_, _, line)| line.rsplit(": ").next().unwrap_or("")).collect();
        assert_eq!(order, ["early", "first", "later"]);
        assert_eq!(complaints(&logs, 0, at("2026-11-25T10:00:04Z"), 10).len(), 2, "until is honoured");
        assert_eq!(complaints(&logs, 0, u64::MAX, 1).len(), 2, "at most one line per process");
        let _ = std::fs::remove_dir_all(dir);
    }
}
