//! What `mesh view` shows, kept from the records it reads: the graph and roster (the topology manager's snapshot, then
//! its changelog window by window), proposals with the votes read for them, decisions, and the supervisor's event
//! log (which `cargo xtask chaos` also writes its faults to). Pure: records and times in, a [`Frame`] out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mesh_core::consensus::{Decision, Proposal};
use mesh_core::graph::EdgeChange;
use mesh_core::topology::{Refusal, Topology};
use mesh_core::{AgentId, ProposalId};
use mesh_node::topology::ChangelogFollower;
use mesh_proto::records::Record;
use mesh_supervisor::Event;
use serde::Serialize;

/// Edges sent to the page at most, the strongest first: a full mesh of 500 agents has 249,500, which no browser
/// draws usefully and no update should carry.
pub(crate) const EDGES_SHOWN: usize = 2_000;
/// Decisions listed, newest first.
pub(crate) const DECISIONS_SHOWN: usize = 30;
/// Pending proposals listed, newest first.
pub(crate) const PENDING_SHOWN: usize = 30;
/// Supervisor and chaos events listed, newest first.
pub(crate) const EVENTS_SHOWN: usize = 40;
/// Proposals tracked at most (the oldest forgotten first): a flood of proposals never decided must not grow the view.
const PROPOSALS_KEPT: usize = 10_000;
/// Decided proposal ids remembered, so a proposal read after its decision is not shown pending.
const DECIDED_KEPT: usize = 100_000;
/// How long an edge that went away stays in the frames (the page fades it out over this time).
pub(crate) const GONE_SHOWN_MS: u64 = 3_000;
/// Edges gone recently kept at most (a dead agent of a 500-agent mesh takes 998 edges with it).
const GONE_KEPT: usize = 2_000;

/// A proposal read and not yet decided, with the votes read for it (one per voter, the first counts, as in the
/// consensus manager; votes from outside the voter set are not counted).
#[derive(Debug, Clone)]
struct Open {
    proposal: Proposal,
    votes: BTreeMap<AgentId, bool>,
}

/// The view's state.
#[derive(Debug)]
pub(crate) struct Model {
    topology: Option<Topology>,
    follower: Option<ChangelogFollower>,
    open: BTreeMap<ProposalId, Open>,
    open_order: VecDeque<ProposalId>,
    /// Votes read before their proposal (the votes and proposals topics are read side by side).
    early_votes: BTreeMap<ProposalId, BTreeMap<AgentId, bool>>,
    decided: BTreeSet<ProposalId>,
    decided_order: VecDeque<ProposalId>,
    decisions: VecDeque<(u64, Decision)>,
    outcomes: BTreeMap<&'static str, u64>,
    events: VecDeque<Event>,
    /// Edges that went away (pruned by decay, or with an agent that left or died), newest last.
    gone: VecDeque<GoneEdge>,
    windows_refused: u64,
    /// A window did not continue the chain the view holds (a gap): the graph can no longer follow the changelog
    /// exactly, and must be started again from a newer snapshot.
    broken: bool,
    /// Bumped on every change: the server sends a frame only when it moved.
    version: u64,
}

impl Model {
    /// Nothing read yet.
    pub(crate) fn new() -> Self {
        Self {
            topology: None,
            follower: None,
            open: BTreeMap::new(),
            open_order: VecDeque::new(),
            early_votes: BTreeMap::new(),
            decided: BTreeSet::new(),
            decided_order: VecDeque::new(),
            decisions: VecDeque::new(),
            outcomes: BTreeMap::new(),
            events: VecDeque::new(),
            gone: VecDeque::new(),
            windows_refused: 0,
            broken: false,
            version: 0,
        }
    }

    /// Starts the graph from the topology manager's snapshot (then feed the changelog from its position on); also
    /// after [`Model::broken`], from a newer one.
    pub(crate) fn start_graph(&mut self, topology: Topology, decay_interval_ms: u64) {
        self.topology = Some(topology);
        self.follower = Some(ChangelogFollower::new(decay_interval_ms));
        self.broken = false;
        self.version += 1;
    }

    /// Whether the graph stopped following the changelog (see [`Model::start_graph`]).
    pub(crate) fn broken(&self) -> bool {
        self.broken
    }

    /// Takes one record of the changelog, proposals, votes or decisions topics, read at `at_ms`.
    pub(crate) fn on_record(&mut self, record: Record, at_ms: u64) {
        match record {
            Record::Window(part) => {
                // The graph's parameters come with the snapshot: before it, windows cannot be applied exactly.
                let (Some(topology), Some(follower)) = (&mut self.topology, &mut self.follower) else { return };
                match follower.push(topology, part) {
                    Some((_, Ok(effects))) => {
                        for (_, change) in effects.edges {
                            let (from, to, pruned) = match change {
                                EdgeChange::Pruned { from, to } => (from, to, true),
                                EdgeChange::Removed { from, to } => (from, to, false),
                                _ => continue,
                            };
                            let (from, to) = (from.as_str().to_owned(), to.as_str().to_owned());
                            self.gone.push_back(GoneEdge { from, to, pruned, at_ms });
                        }
                        while self.gone.len() > GONE_KEPT {
                            self.gone.pop_front();
                        }
                        self.version += 1;
                    }
                    Some((_, Err(refusal))) => {
                        // A duplicate or a stale writer's window changes nothing (recovery refuses it too); a gap or
                        // a tick going back means the view's chain and the log's parted.
                        self.windows_refused += 1;
                        self.broken |= !matches!(refusal, Refusal::OutOfSequence { .. });
                        self.version += 1;
                    }
                    None => {}
                }
            }
            Record::Proposal(body) => self.on_proposal(body.proposal),
            Record::Vote(body) => {
                let vote = body.vote;
                if self.decided.contains(&vote.proposal) {
                    return;
                }
                if let Some(open) = self.open.get_mut(&vote.proposal) {
                    if open.proposal.voters.contains(&vote.voter) && !open.votes.contains_key(&vote.voter) {
                        open.votes.insert(vote.voter, vote.support);
                        self.version += 1;
                    }
                } else if self.early_votes.len() < PROPOSALS_KEPT || self.early_votes.contains_key(&vote.proposal) {
                    self.early_votes.entry(vote.proposal).or_default().entry(vote.voter).or_insert(vote.support);
                }
            }
            Record::Decision(body) => self.on_decision(body.decision, at_ms),
            _ => {}
        }
    }

    fn on_proposal(&mut self, proposal: Proposal) {
        if self.decided.contains(&proposal.id) || self.open.contains_key(&proposal.id) {
            return;
        }
        let id = proposal.id.clone();
        let mut votes = self.early_votes.remove(&id).unwrap_or_default();
        votes.retain(|voter, _| proposal.voters.contains(voter));
        self.open.insert(id.clone(), Open { proposal, votes });
        self.open_order.push_back(id);
        while self.open_order.len() > PROPOSALS_KEPT {
            if let Some(oldest) = self.open_order.pop_front() {
                self.open.remove(&oldest);
            }
        }
        self.version += 1;
    }

    fn on_decision(&mut self, decision: Decision, at_ms: u64) {
        if !self.decided.insert(decision.proposal.clone()) {
            return;
        }
        self.decided_order.push_back(decision.proposal.clone());
        while self.decided_order.len() > DECIDED_KEPT {
            if let Some(oldest) = self.decided_order.pop_front() {
                self.decided.remove(&oldest);
            }
        }
        self.open.remove(&decision.proposal);
        self.open_order.retain(|id| id != &decision.proposal);
        self.early_votes.remove(&decision.proposal);
        *self.outcomes.entry(decision.outcome.name()).or_default() += 1;
        self.decisions.push_front((at_ms, decision));
        self.decisions.truncate(DECISIONS_SHOWN);
        self.version += 1;
    }

    /// Takes one line of the supervisor's event log.
    pub(crate) fn on_event(&mut self, event: Event) {
        self.events.push_front(event);
        self.events.truncate(EVENTS_SHOWN);
        self.version += 1;
    }

    /// Changes so far: equal versions, equal frames (but for their time).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// What the page draws, as of `now_ms`.
    pub(crate) fn frame(&self, now_ms: u64) -> Frame {
        let mut frame = Frame { at_ms: now_ms, windows_refused: self.windows_refused, ..Frame::default() };
        if let Some(topology) = &self.topology {
            for member in topology.roster().all() {
                let status = member.status.name();
                *frame.roster.entry(status).or_default() += 1;
                frame.members.push(MemberView {
                    id: member.profile.id.as_str().to_owned(),
                    name: member.profile.name.clone(),
                    role: member.profile.role.as_str().to_owned(),
                    status,
                });
            }
            let mut edges = topology.graph().edges();
            let stats = topology.graph().stats();
            frame.edge_count = edges.len();
            frame.mean_weight = stats.mean_weight;
            edges.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
            frame.edges = edges
                .into_iter()
                .take(EDGES_SHOWN)
                .map(|(from, to, weight)| EdgeView {
                    from: from.as_str().to_owned(),
                    to: to.as_str().to_owned(),
                    weight: weight.as_f64(),
                })
                .collect();
            frame.window = topology.last().map(|c| c.seq);
        }
        frame.gone =
            self.gone.iter().filter(|edge| now_ms.saturating_sub(edge.at_ms) < GONE_SHOWN_MS).cloned().collect();
        frame.pending_count = self.open.len();
        frame.pending = self
            .open_order
            .iter()
            .rev()
            .filter_map(|id| self.open.get(id))
            .take(PENDING_SHOWN)
            .map(|open| {
                let supports = open.votes.values().filter(|s| **s).count();
                PendingView {
                    id: open.proposal.id.as_str().to_owned(),
                    proposer: open.proposal.proposer.as_str().to_owned(),
                    subject: open.proposal.subject.clone(),
                    action: open.proposal.action.clone(),
                    supports,
                    against: open.votes.len() - supports,
                    voters: open.proposal.voters.len(),
                    age_ms: now_ms.saturating_sub(open.proposal.created_at_ms),
                }
            })
            .collect();
        frame.decided = self.outcomes.clone();
        frame.decisions = self
            .decisions
            .iter()
            .map(|(at_ms, d)| DecisionView {
                id: d.proposal.as_str().to_owned(),
                subject: d.subject.clone(),
                action: d.action.clone(),
                outcome: d.outcome.name(),
                supports: d.supports,
                against: d.against,
                voters: d.voters,
                needed: d.needed,
                read_at_ms: *at_ms,
            })
            .collect();
        frame.events = self
            .events
            .iter()
            .map(|e| EventView {
                at_ms: e.at_ms,
                process: e.process.clone(),
                event: e.event.clone(),
                detail: e.detail.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "),
            })
            .collect();
        frame
    }
}

/// One update of the page (sent whole: a few hundred kilobytes at most, and the page redraws from it alone).
#[derive(Debug, Default, Serialize)]
pub(crate) struct Frame {
    /// When it was made (ms since the Unix epoch).
    pub(crate) at_ms: u64,
    /// Every roster entry.
    pub(crate) members: Vec<MemberView>,
    /// Roster entries by status.
    pub(crate) roster: BTreeMap<&'static str, usize>,
    /// Edges in the graph (all of them, also those not in `edges`).
    pub(crate) edge_count: usize,
    /// The strongest edges, at most [`EDGES_SHOWN`].
    pub(crate) edges: Vec<EdgeView>,
    /// Mean edge weight.
    pub(crate) mean_weight: f64,
    /// Edges that went away in the last [`GONE_SHOWN_MS`]: the page fades them out (an edge that only dropped out of
    /// `edges`' strongest few is not among them).
    pub(crate) gone: Vec<GoneEdge>,
    /// The last window applied.
    pub(crate) window: Option<u64>,
    /// Changelog windows that did not apply (a stale manager's): should stay 0.
    pub(crate) windows_refused: u64,
    /// Proposals read and not decided.
    pub(crate) pending_count: usize,
    /// The newest of them.
    pub(crate) pending: Vec<PendingView>,
    /// Decisions read, by outcome.
    pub(crate) decided: BTreeMap<&'static str, u64>,
    /// The newest decisions.
    pub(crate) decisions: Vec<DecisionView>,
    /// The newest supervisor and chaos events.
    pub(crate) events: Vec<EventView>,
}

/// A roster entry.
#[derive(Debug, Serialize)]
pub(crate) struct MemberView {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) status: &'static str,
}

/// A directed edge.
#[derive(Debug, Serialize)]
pub(crate) struct EdgeView {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) weight: f64,
}

/// An edge that went away.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GoneEdge {
    pub(crate) from: String,
    pub(crate) to: String,
    /// Pruned by decay (else removed with an agent that left or died).
    pub(crate) pruned: bool,
    /// When the view read the window that took it away.
    pub(crate) at_ms: u64,
}

/// A proposal being voted on, with the votes read so far.
#[derive(Debug, Serialize)]
pub(crate) struct PendingView {
    pub(crate) id: String,
    pub(crate) proposer: String,
    pub(crate) subject: String,
    pub(crate) action: String,
    pub(crate) supports: usize,
    pub(crate) against: usize,
    pub(crate) voters: usize,
    pub(crate) age_ms: u64,
}

/// A decision, with its tally.
#[derive(Debug, Serialize)]
pub(crate) struct DecisionView {
    pub(crate) id: String,
    pub(crate) subject: String,
    pub(crate) action: String,
    pub(crate) outcome: &'static str,
    pub(crate) supports: usize,
    pub(crate) against: usize,
    pub(crate) voters: usize,
    pub(crate) needed: usize,
    /// When the view read it.
    pub(crate) read_at_ms: u64,
}

/// A line of the event log.
#[derive(Debug, Serialize)]
pub(crate) struct EventView {
    pub(crate) at_ms: u64,
    pub(crate) process: String,
    pub(crate) event: String,
    pub(crate) detail: String,
}

#[cfg(test)]
mod tests {
    use mesh_core::Milli;
    use mesh_core::consensus::Vote;
    use mesh_core::graph::GraphParams;
    use mesh_core::membership::AgentProfile;
    use mesh_core::topology::{Source, TopologyInput};
    use mesh_core::waggle::{DanceInputs, WaggleDance};
    use mesh_core::{Role, consensus::Outcome};
    use mesh_proto::records::{DecisionBody, ProposalBody, VoteBody};

    use super::*;

    fn id(name: &str) -> AgentId {
        AgentId::new(name).expect("id")
    }

    fn proposal(name: &str, voters: &[&str]) -> Record {
        Record::Proposal(ProposalBody {
            proposal: Proposal {
                id: ProposalId::new(name).expect("proposal id"),
                proposer: id(voters[0]),
                subject: "account:acct-1".into(),
                action: "block_account".into(),
                dance: WaggleDance { intensity: Milli(500), duration_ms: 1, angle_deg: 0, repetitions: 1 },
                voters: voters.iter().map(|v| id(v)).collect(),
                epoch: 1,
                created_at_ms: 1_000,
            },
            inputs: DanceInputs { priority: Milli(500), urgency: Milli(500), confidence: Milli(500), amount_cents: 0 },
            payload: Default::default(),
        })
    }

    fn vote(proposal: &str, voter: &str, support: bool) -> Record {
        Record::Vote(VoteBody {
            vote: Vote {
                proposal: ProposalId::new(proposal).expect("proposal id"),
                voter: id(voter),
                support,
                intensity: Milli(800),
            },
        })
    }

    fn decision(proposal: &str, outcome: Outcome) -> Record {
        Record::Decision(DecisionBody {
            decision: Decision {
                proposal: ProposalId::new(proposal).expect("proposal id"),
                subject: "account:acct-1".into(),
                action: "block_account".into(),
                outcome,
                supports: 2,
                against: 0,
                voters: 3,
                needed: 2,
                support_intensity: 1_600,
            },
        })
    }

    #[test]
    fn votes_are_tallied_once_per_voter_of_the_set_even_when_read_before_their_proposal() {
        let mut model = Model::new();
        model.on_record(vote("p-1", "b", true), 10);
        model.on_record(proposal("p-1", &["a", "b", "c"]), 11);
        model.on_record(vote("p-1", "b", false), 12); // a second vote of b: the first counts
        model.on_record(vote("p-1", "c", false), 13);
        model.on_record(vote("p-1", "z", true), 14); // not a voter
        let frame = model.frame(2_500);
        assert_eq!(frame.pending_count, 1);
        let p = &frame.pending[0];
        assert_eq!((p.supports, p.against, p.voters, p.age_ms), (1, 1, 3, 1_500));
    }

    #[test]
    fn a_decision_ends_the_proposal_and_a_late_copy_of_it_stays_decided() {
        let mut model = Model::new();
        model.on_record(proposal("p-1", &["a", "b", "c"]), 1);
        model.on_record(proposal("p-2", &["a", "b", "c"]), 2);
        let before = model.version();
        model.on_record(decision("p-1", Outcome::Accepted), 3);
        assert!(model.version() > before, "a change is a new version");
        model.on_record(decision("p-1", Outcome::Accepted), 4); // a copy
        model.on_record(proposal("p-1", &["a", "b", "c"]), 5); // read again after its decision
        model.on_record(decision("p-3", Outcome::Inhibited { by: ProposalId::new("p-2").expect("id") }), 6);
        let frame = model.frame(10);
        assert_eq!(frame.pending.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["p-2"]);
        assert_eq!(frame.decisions.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["p-3", "p-1"], "newest first");
        assert_eq!(frame.decided.get("accepted"), Some(&1));
        assert_eq!(frame.decided.get("inhibited"), Some(&1));
        assert_eq!(frame.decisions[1].read_at_ms, 3);
    }

    #[test]
    fn the_decisions_listed_are_the_newest_few() {
        let mut model = Model::new();
        for n in 0..(DECISIONS_SHOWN as u64 + 5) {
            model.on_record(decision(&format!("p-{n}"), Outcome::Expired), n);
        }
        let frame = model.frame(0);
        assert_eq!(frame.decisions.len(), DECISIONS_SHOWN);
        assert_eq!(frame.decisions[0].id, format!("p-{}", DECISIONS_SHOWN + 4));
        assert_eq!(frame.decided.get("expired"), Some(&(DECISIONS_SHOWN as u64 + 5)));
    }

    /// A manager's topology after `joins`, and the changelog parts of one more window in which `dead` is declared dead.
    fn graph_then_death(joins: &[&str], dead: &str) -> (Topology, Vec<Record>) {
        let params = GraphParams::default();
        let mut manager = Topology::new(params);
        let topic = Source { topic: "t.topology".into(), partition: 0 };
        let mut offset = 0;
        for name in joins {
            let profile = AgentProfile {
                id: id(name),
                name: (*name).into(),
                role: Role::new("sales").expect("role"),
                capabilities: vec![],
                metadata: Default::default(),
            };
            manager.observe(&topic, offset, Some(TopologyInput::Join(profile)));
            offset += 1;
        }
        let first = manager.close(1);
        manager.apply(&first).expect("first window");
        let snapshot = manager.clone();
        manager.observe(&topic, offset, Some(TopologyInput::Dead(id(dead))));
        let second = manager.close(2);
        let parts = mesh_proto::changelog::split(second, "topology-1-1", 200, 8_000);
        (snapshot, parts.into_iter().map(Record::Window).collect())
    }

    #[test]
    fn the_graph_follows_the_changelog_from_the_snapshot_on() {
        let (snapshot, changelog) = graph_then_death(&["a", "b", "c"], "c");
        let mut model = Model::new();
        // Windows read before the snapshot is known cannot be applied exactly: nothing is shown for them.
        model.on_record(changelog[0].clone(), 1);
        assert!(model.frame(1).members.is_empty());
        model.start_graph(snapshot, 200);
        let frame = model.frame(2);
        assert_eq!((frame.members.len(), frame.edge_count, frame.roster.get("live")), (3, 6, Some(&3)));
        for record in changelog {
            model.on_record(record, 3);
        }
        let frame = model.frame(4);
        let c = frame.members.iter().find(|m| m.id == "c").expect("c is still on the roster");
        assert_eq!(c.status, "dead");
        assert_eq!((frame.roster.get("live"), frame.roster.get("dead")), (Some(&2), Some(&1)));
        assert_eq!(frame.edge_count, 2, "only a <-> b is left");
        assert_eq!(frame.window, Some(2));
        assert_eq!(frame.windows_refused, 0);
        let mut gone: Vec<(String, String, bool)> =
            frame.gone.iter().map(|e| (e.from.clone(), e.to.clone(), e.pruned)).collect();
        gone.sort();
        let with_c = |a: &str, b: &str| (a.to_owned(), b.to_owned(), false);
        assert_eq!(gone, [with_c("a", "c"), with_c("b", "c"), with_c("c", "a"), with_c("c", "b")]);
        assert!(model.frame(3 + GONE_SHOWN_MS).gone.is_empty(), "gone edges leave the frames after a while");
        assert!(!model.broken());
    }

    #[test]
    fn a_window_that_leaves_a_gap_breaks_the_chain_and_a_replayed_one_does_not() {
        let (snapshot, changelog) = graph_then_death(&["a", "b"], "b");
        let mut model = Model::new();
        model.start_graph(snapshot.clone(), 200);
        for record in changelog.clone() {
            model.on_record(record, 1);
        }
        let version = model.version();
        // The same window again (a writer's retry, or a stale writer): refused, harmless.
        for record in changelog {
            model.on_record(record, 2);
        }
        assert_eq!(model.frame(3).windows_refused, 1);
        assert!(!model.broken());
        assert!(model.version() > version, "a refusal is shown");
        // A window whose range does not continue the view's: the view must start again from a snapshot.
        let (_, later) = graph_then_death(&["a", "b", "c"], "c");
        let mut fresh = Model::new();
        fresh.start_graph(snapshot, 200);
        for record in later {
            fresh.on_record(record, 4);
        }
        assert!(fresh.broken(), "{:?}", fresh.frame(5).windows_refused);
        let (restart, _) = graph_then_death(&["a", "b"], "b");
        fresh.start_graph(restart, 200);
        assert!(!fresh.broken());
    }

    #[test]
    fn the_event_list_keeps_the_newest_events() {
        let mut model = Model::new();
        for n in 0..(EVENTS_SHOWN as u64 + 3) {
            model.on_event(Event {
                at_ms: n,
                process: "chaos".into(),
                event: "fault".into(),
                detail: serde_json::Map::from_iter([("what".to_owned(), serde_json::json!("kill sales"))]),
            });
        }
        let frame = model.frame(0);
        assert_eq!(frame.events.len(), EVENTS_SHOWN);
        assert_eq!(frame.events[0].at_ms, EVENTS_SHOWN as u64 + 2);
        assert_eq!(frame.events[0].detail, "what=\"kill sales\"");
    }
}
