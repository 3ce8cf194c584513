//! The body of every record kind. Field names are the JSON names; `docs/protocol.md` shows one example of each.

use std::collections::BTreeMap;

use mesh_core::consensus::{Decision, Proposal, Vote};
use mesh_core::membership::{AgentProfile, Member};
use mesh_core::topology::Window;
use mesh_core::waggle::DanceInputs;
use mesh_core::{AgentId, MessageId, Milli, ProposalId, UnixMillis};
use serde::{Deserialize, Serialize};

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

/// `deadletter`: a record that could not be used, kept whole with the reason. Key: the original key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterBody {
    /// Why it was refused.
    pub reason: String,
    /// Where it was read.
    pub source: SourcePosition,
    /// Which process refused it (for example `topology`).
    pub consumer: String,
    /// The original key, if it was UTF-8.
    pub key: Option<String>,
    /// The original value, if it was UTF-8.
    pub payload_text: Option<String>,
    /// The original value in hex, if it was not UTF-8.
    pub payload_hex: Option<String>,
}

impl DeadLetterBody {
    /// Wraps a refused record, losing nothing: text stays text, anything else becomes hex.
    pub fn new(
        reason: impl Into<String>,
        source: SourcePosition,
        consumer: impl Into<String>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Self {
        let key = key.map(|k| String::from_utf8_lossy(k).into_owned());
        let (payload_text, payload_hex) = match payload {
            None => (None, None),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => (Some(text.to_owned()), None),
                Err(_) => (None, Some(bytes.iter().map(|b| format!("{b:02x}")).collect())),
            },
        };
        Self { reason: reason.into(), source, consumer: consumer.into(), key, payload_text, payload_hex }
    }
}
