//! The body of every record kind. Field names are the JSON names; `docs/protocol.md` shows one example of each.

use std::collections::BTreeMap;

use mesh_core::consensus::{Decision, Proposal, Vote};
use mesh_core::membership::{AgentProfile, Member};
use mesh_core::topology::Window;
use mesh_core::waggle::DanceInputs;
use mesh_core::{AgentId, MessageId, Milli, ProposalId, UnixMillis};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::topics::TopicKind;

/// A decoded record: its kind and typed body.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// An agent joins (topology topic).
    Join(JoinBody),
    /// An agent leaves on its own (topology topic).
    Leave(LeaveBody),
    /// The topology manager declares a silent agent dead (topology topic).
    Dead(DeadBody),
    /// A tick marker of earlier versions (topology and messages topics): no longer written, read and ignored.
    Tick(TickBody),
    /// One part of a window the topology manager sealed (windows topic).
    Window(WindowBody),
    /// The topology manager's own round-trip marker (heartbeats topic).
    Probe(ProbeBody),
    /// The weights of one agent's out-edges that carried messages in a window (topology topic).
    Weights(WeightsBody),
    /// An edge changed (topology topic, informational).
    Edge(EdgeBody),
    /// The same change to the edges both ways between one agent and several peers (topology topic).
    Edges(EdgesBody),
    /// An agent is alive (heartbeats topic).
    Heartbeat(HeartbeatBody),
    /// Work for an agent (messages topic).
    Task(TaskBody),
    /// The answer to a task (messages topic).
    Response(ResponseBody),
    /// A roster entry (membership topic).
    Member(MemberBody),
    /// A proposal (proposals topic).
    Proposal(ProposalBody),
    /// A vote (votes topic).
    Vote(VoteBody),
    /// The consensus manager's expiry marker (votes topic).
    Expire(ExpireBody),
    /// The consensus manager's inhibition marker (votes topic).
    Inhibit(InhibitBody),
    /// A decision (decisions topic).
    Decision(DecisionBody),
    /// A record that could not be decoded (deadletter topic).
    DeadLetter(DeadLetterBody),
}

impl Record {
    /// The `kind` field on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Join(_) => "join",
            Record::Leave(_) => "leave",
            Record::Dead(_) => "dead",
            Record::Tick(_) => "tick",
            Record::Window(_) => "window",
            Record::Probe(_) => "probe",
            Record::Weights(_) => "weights",
            Record::Edge(_) => "edge",
            Record::Edges(_) => "edges",
            Record::Heartbeat(_) => "heartbeat",
            Record::Task(_) => "task",
            Record::Response(_) => "response",
            Record::Member(_) => "member",
            Record::Proposal(_) => "proposal",
            Record::Vote(_) => "vote",
            Record::Expire(_) => "expire",
            Record::Inhibit(_) => "inhibit",
            Record::Decision(_) => "decision",
            Record::DeadLetter(_) => "deadletter",
        }
    }

    /// Every kind on the wire.
    pub const KINDS: [&'static str; 19] = [
        "join",
        "leave",
        "dead",
        "tick",
        "window",
        "probe",
        "weights",
        "edge",
        "edges",
        "heartbeat",
        "task",
        "response",
        "member",
        "proposal",
        "vote",
        "expire",
        "inhibit",
        "decision",
        "deadletter",
    ];

    /// The largest record of a kind an agent writes, whole envelope: what a reader accepts. A record the mesh
    /// derives from one (a `member` from a `join`, a `response` echoing a task's fields, a `decision` naming a
    /// proposal's subject) must itself fit the broker's 1 MiB, or the manager that writes it could not: one valid
    /// but huge `join` would have stopped the topology manager for good. Kinds the managers write have no limit here:
    /// they bound them themselves (a window is split into parts).
    pub fn size_limit(kind: &str) -> Option<usize> {
        match kind {
            "task" | "response" | "proposal" => Some(Self::PAYLOAD_RECORD_LIMIT),
            "join" | "leave" | "heartbeat" | "vote" => Some(Self::AGENT_RECORD_LIMIT),
            _ => None,
        }
    }

    /// [`Record::size_limit`] of the kinds that carry a free-form payload: 256 KiB.
    pub const PAYLOAD_RECORD_LIMIT: usize = 256 * 1024;
    /// [`Record::size_limit`] of an agent's other records: 16 KiB.
    pub const AGENT_RECORD_LIMIT: usize = 16 * 1024;

    /// The topics a kind may appear on; a record of another kind on a topic is invalid and dead-lettered.
    pub fn allowed_on(kind: &str) -> &'static [TopicKind] {
        match kind {
            "join" | "leave" | "dead" | "edge" | "edges" | "weights" => &[TopicKind::Topology],
            "tick" => &[TopicKind::Topology, TopicKind::Messages],
            "window" => &[TopicKind::Windows],
            "heartbeat" | "probe" => &[TopicKind::Heartbeats],
            "task" | "response" => &[TopicKind::Messages],
            "member" => &[TopicKind::Membership],
            "proposal" => &[TopicKind::Proposals],
            "vote" | "expire" | "inhibit" => &[TopicKind::Votes],
            "decision" => &[TopicKind::Decisions],
            "deadletter" => &[TopicKind::Deadletter],
            _ => &[],
        }
    }
}

/// `join`: the agent's profile. Key: agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    /// Who joins.
    pub agent: AgentProfile,
}

/// `leave`: an agent stops on its own. Key: agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveBody {
    /// Who leaves.
    pub agent: AgentId,
    /// Why, for operators (for example `SIGTERM`).
    pub reason: String,
}

/// `dead`: the failure detector's verdict, appended to the log so every replay agrees. Key: agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadBody {
    /// Who was declared dead.
    pub agent: AgentId,
    /// When it was last heard from (ms since the Unix epoch).
    pub last_heard_ms: UnixMillis,
}

/// `tick`: a decay tick marker that versions before the changelog appended to every partition the topology manager
/// reads. Nothing writes it any more; readers accept and ignore it, so logs written by those versions stay readable.
/// Key: `tick`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickBody {
    /// Tick number: `floor(unix_ms / interval_ms)`.
    pub tick: u64,
    /// The decay interval the tick number is counted in.
    pub interval_ms: u64,
}

/// `window`: one part of a window the topology manager sealed, appended to its changelog (the windows topic)
/// before the window is applied. A window is usually one part; a large one is split so each record stays well
/// under the broker's size limit: part 0 carries the roster changes and the ranges, every part a share of the
/// reinforcements, and the window applies once its last part is read. Key: the writer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    /// Which run of the manager wrote it (`topology-{start ms}-{pid}`): the parts of one window share it.
    pub writer: String,
    /// The decay interval the window's tick is counted in.
    pub interval_ms: u64,
    /// This part's number, from 0.
    pub part: u32,
    /// How many parts the window has.
    pub parts: u32,
    /// The window, or this part's share of it.
    pub window: Window,
}

/// `probe`: the topology manager's own marker on the heartbeats topic. It reads it back like the agents'
/// heartbeats, and gives death verdicts only while its probes make the round trip: when they stop (broker down, its
/// own link cut, its own process paused) the silence may be its own, not the agents'. Key: `probe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeBody {
    /// The manager run that sent it (the same as in its `window` records).
    pub writer: String,
    /// Counter since that run started.
    pub seq: u64,
}

/// One out-edge in a `weights` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedEdge {
    /// Edge target.
    pub to: AgentId,
    /// Weight after the window.
    pub weight: Milli,
    /// Messages along the edge in the window.
    pub messages: u32,
}

/// `weights`: the out-edges of `agent` that carried messages in a window, with their weight after it: one record per
/// sending agent and window rather than one per message. An edge the observer does not have (pruned earlier) was
/// created again. Key: `agent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsBody {
    /// The window (tick).
    pub tick: u64,
    /// The sending agent.
    pub agent: AgentId,
    /// Its reinforced out-edges, in target order.
    pub edges: Vec<WeightedEdge>,
}

/// What happened to an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeChangeKind {
    /// Created by a join (full mesh), or (in versions before `weights`) a message along a missing edge.
    Created,
    /// Strengthened by a message (versions before `weights`; now reported in `weights` records).
    Reinforced,
    /// Decayed below the prune threshold.
    Pruned,
    /// An end left or died.
    Removed,
}

/// `edge`: an edge event from the topology manager, for observers. Key: the `from` agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeBody {
    /// The window (tick) in which it happened.
    pub tick: u64,
    /// What happened.
    pub change: EdgeChangeKind,
    /// Edge source.
    pub from: AgentId,
    /// Edge target.
    pub to: AgentId,
    /// Weight after the change (absent when the edge is gone).
    pub weight: Option<Milli>,
}

/// `edges`: the same change, in the same window, to the edges both ways between `agent` and each of `peers`: a
/// join's full mesh, an idle full mesh pruned, a departure. One record instead of 2 × peers `edge` records (a join
/// into a mesh of 500 is 998 edges, its pruning as many). Key: `agent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgesBody {
    /// The window (tick) in which it happened.
    pub tick: u64,
    /// What happened: `created`, `pruned` or `removed`.
    pub change: EdgeChangeKind,
    /// The agent at one end of every edge.
    pub agent: AgentId,
    /// The agents at the other ends.
    pub peers: Vec<AgentId>,
    /// Weight after the change, the same for all (absent when the edges are gone).
    pub weight: Option<Milli>,
}

/// `heartbeat`: an agent is alive. Key: agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatBody {
    /// Who beats.
    pub agent: AgentId,
    /// Counter since the agent process started.
    pub seq: u64,
}

/// `task`: work for one agent. Key: the recipient's agent id (the partition is `partition_for(to)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    /// Sender.
    pub from: AgentId,
    /// Recipient.
    pub to: AgentId,
    /// What to do (for example `check_stock`).
    pub task: String,
    /// Task arguments.
    pub payload: BTreeMap<String, serde_json::Value>,
}

/// Whether a task succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Done.
    Ok,
    /// The recipient could not do it (unknown task, bad arguments).
    Error,
}

/// `response`: the answer to a task. Key: the recipient's (the original sender's) agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseBody {
    /// Who answers.
    pub from: AgentId,
    /// Who asked.
    pub to: AgentId,
    /// The task's envelope id.
    pub in_reply_to: MessageId,
    /// Outcome.
    pub status: ResponseStatus,
    /// Result data.
    pub payload: BTreeMap<String, serde_json::Value>,
}

/// `member`: one roster entry; the membership topic is compacted, so the latest entry per agent is the roster. Key:
/// agent id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    /// The entry.
    pub member: Member,
}

/// `proposal`: a proposal with its waggle dance and fixed voter set. Key: proposal id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalBody {
    /// The proposal (id, proposer, subject, action, dance, voters, epoch, created_at_ms).
    pub proposal: Proposal,
    /// What the dance was computed from, so any reader can check it.
    pub inputs: DanceInputs,
    /// Free-form details (for example the account to block).
    pub payload: BTreeMap<String, serde_json::Value>,
}

/// `vote`. Key: proposal id (so a proposal's votes share one partition, in order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoteBody {
    /// The vote.
    pub vote: Vote,
}

/// `expire`: the consensus manager saw the deadline pass. Key: proposal id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireBody {
    /// The proposal.
    pub proposal: ProposalId,
    /// Its deadline.
    pub deadline_ms: UnixMillis,
}

/// `inhibit`: a stronger competing dance suppresses this proposal. Key: proposal id (the suppressed one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitBody {
    /// The suppressed proposal.
    pub proposal: ProposalId,
    /// The stronger one.
    pub by: ProposalId,
}

/// `decision`: how a proposal ended; one per proposal, ever. Key: proposal id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// The decision.
    pub decision: Decision,
}

/// Where a record was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePosition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// `deadletter`: a record that could not be used, with the reason, where it was read and a bounded copy of its
/// bytes. Key: the original key (cut to [`DeadLetterBody::KEY_LIMIT`] bytes).
///
/// Bounded so that a letter always fits the broker's record limit: a record of any size gets a letter, and the
/// letter's own publish can never be refused for its size (a refused letter would stall the reader that wrote it).
/// `payload_size` and `payload_sha256` identify the whole original when the copy is cut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterBody {
    /// Why it was refused (cut to [`DeadLetterBody::REASON_LIMIT`] bytes).
    pub reason: String,
    /// Where it was read.
    pub source: SourcePosition,
    /// Which process refused it (for example `topology`).
    pub consumer: String,
    /// The original key, if it was UTF-8 (cut to [`DeadLetterBody::KEY_LIMIT`] bytes).
    pub key: Option<String>,
    /// The original value (its first [`DeadLetterBody::PAYLOAD_LIMIT`] bytes), if it was UTF-8.
    pub payload_text: Option<String>,
    /// The original value (its first [`DeadLetterBody::PAYLOAD_LIMIT`] bytes) in hex, if it was not UTF-8.
    pub payload_hex: Option<String>,
    /// The original value's size in bytes (absent in letters written before sizes were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// SHA-256 of the whole original value, in hex: identifies it when the copy is cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    /// Whether `payload_text`/`payload_hex` hold only a prefix of the value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
}

impl DeadLetterBody {
    /// The most bytes of the original value a letter copies: 64 KiB, 128 KiB in hex, far under the broker's 1 MiB.
    pub const PAYLOAD_LIMIT: usize = 64 * 1024;
    /// The most bytes of the original key a letter keeps.
    pub const KEY_LIMIT: usize = 1024;
    /// The most bytes of the reason a letter keeps (a reason may quote the input).
    pub const REASON_LIMIT: usize = 4096;

    /// Wraps a refused record: text stays text, anything else becomes hex, and whatever is beyond the limits is
    /// cut (at a character boundary) and identified by its size and SHA-256.
    pub fn new(
        reason: impl Into<String>,
        source: SourcePosition,
        consumer: impl Into<String>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Self {
        let key = key.map(|k| cut(String::from_utf8_lossy(k).into_owned(), Self::KEY_LIMIT));
        let (mut payload_text, mut payload_hex, mut payload_size, mut payload_sha256) = (None, None, None, None);
        let mut payload_truncated = false;
        if let Some(bytes) = payload {
            payload_size = Some(bytes.len() as u64);
            payload_sha256 = Some(hex(&Sha256::digest(bytes)));
            payload_truncated = bytes.len() > Self::PAYLOAD_LIMIT;
            let prefix = &bytes[..bytes.len().min(Self::PAYLOAD_LIMIT)];
            match std::str::from_utf8(prefix) {
                Ok(text) => payload_text = Some(text.to_owned()),
                // A cut inside a multi-byte character is still text: keep what is whole.
                Err(e) if payload_truncated && e.error_len().is_none() => {
                    payload_text = Some(String::from_utf8_lossy(&prefix[..e.valid_up_to()]).into_owned());
                }
                Err(_) => payload_hex = Some(hex(prefix)),
            }
        }
        Self {
            reason: cut(reason.into(), Self::REASON_LIMIT),
            source,
            consumer: consumer.into(),
            key,
            payload_text,
            payload_hex,
            payload_size,
            payload_sha256,
            payload_truncated,
        }
    }
}

/// `text` cut to at most `limit` bytes at a character boundary, marked with an ellipsis when cut.
fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, Header, encode};

    fn letter_of(payload: &[u8], key: &[u8]) -> (DeadLetterBody, usize) {
        let source = SourcePosition { topic: "agentmesh.membership".into(), partition: 0, offset: 7 };
        let body = DeadLetterBody::new("x".repeat(10_000), source, "agent-sales", Some(key), Some(payload));
        let envelope = Envelope {
            header: Header { id: "agent-sales-1-1".into(), ts: 1 },
            record: Record::DeadLetter(body.clone()),
        };
        let size = encode(&envelope).len();
        (body, size)
    }

    #[test]
    fn a_letter_of_a_record_of_any_size_fits_far_under_the_brokers_limit() {
        // Kafka's default record limit is 1 MiB; a letter carries at most 64 KiB of value (128 KiB as hex).
        for len in [0, 1, DeadLetterBody::PAYLOAD_LIMIT, DeadLetterBody::PAYLOAD_LIMIT + 1, 1_048_588, 5_000_000] {
            for payload in [vec![b'a'; len], vec![0xff; len], "é".repeat(len / 2).into_bytes()] {
                let (body, size) = letter_of(&payload, &vec![b'k'; 100_000]);
                assert!(size < 200 * 1024, "a letter of {len} bytes is {size} bytes");
                assert_eq!(body.payload_size, Some(payload.len() as u64));
                assert_eq!(body.payload_truncated, payload.len() > DeadLetterBody::PAYLOAD_LIMIT);
                assert_eq!(body.payload_sha256.as_deref(), Some(hex(&Sha256::digest(&payload)).as_str()));
                assert!(body.reason.len() <= DeadLetterBody::REASON_LIMIT && body.reason.ends_with('…'));
                assert!(body.key.as_ref().is_some_and(|k| k.len() <= DeadLetterBody::KEY_LIMIT));
                match (&body.payload_text, &body.payload_hex) {
                    (Some(text), None) => assert!(payload.starts_with(text.as_bytes()), "text is a prefix"),
                    (None, Some(hex_text)) => assert!(hex_text.len() <= 2 * DeadLetterBody::PAYLOAD_LIMIT),
                    other => panic!("one of text or hex: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn text_cut_inside_a_character_stays_text_and_a_small_record_is_kept_whole() {
        // 'é' is two bytes: an odd limit would cut one in half.
        let text = format!("a{}", "é".repeat(DeadLetterBody::PAYLOAD_LIMIT));
        let (body, _) = letter_of(text.as_bytes(), b"k");
        let kept = body.payload_text.expect("still text");
        assert!(kept.len() <= DeadLetterBody::PAYLOAD_LIMIT && text.starts_with(&kept) && body.payload_hex.is_none());
        let (small, _) = letter_of(b"{\"v\":1}", b"inventory");
        assert_eq!((small.payload_text.as_deref(), small.payload_truncated), (Some("{\"v\":1}"), false));
        assert_eq!(small.key.as_deref(), Some("inventory"));
    }
}
