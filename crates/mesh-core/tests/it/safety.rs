//! Safety of Bee consensus: with the voter set fixed at creation, one vote per voter, voters supporting at most one
//! proposal per subject and a quorum above one half, two exclusive proposals are never both accepted. And the check
//! has teeth: a variant that lets the failure detector shrink the denominator fails it.

use std::collections::BTreeSet;

use mesh_core::consensus::{BeeConsensus, ConsensusCommand, ConsensusInput, ConsensusParams, Outcome, Proposal, Vote};
use mesh_core::waggle::{DanceInputs, WaggleDance};
use mesh_core::{AgentId, Milli, ProposalId};
use proptest::prelude::*;

fn id(s: &str) -> AgentId {
    AgentId::new(s).expect("valid")
}

fn proposal(name: &str, voters: &BTreeSet<AgentId>) -> Proposal {
    let inputs = DanceInputs { priority: Milli(500), urgency: Milli(500), confidence: Milli(500), amount_cents: 0 };
    Proposal {
        id: ProposalId::new(name).expect("valid"),
        proposer: id("a"),
        subject: "account:acct-1".into(),
        action: name.into(),
        dance: WaggleDance::perform(inputs, "account:acct-1"),
        voters: voters.clone(),
        epoch: 1,
        created_at_ms: 0,
    }
}

fn vote(p: &str, voter: &AgentId, support: bool) -> ConsensusInput {
    ConsensusInput::Vote(Vote {
        proposal: ProposalId::new(p).expect("valid"),
        voter: voter.clone(),
        support,
        intensity: Milli(500),
    })
}

/// Accepted proposals when `inputs` are stepped in order.
fn accepted(quorum: u32, inputs: Vec<ConsensusInput>) -> BTreeSet<String> {
    let params = ConsensusParams {
        quorum: mesh_core::consensus::Quorum::new(Milli(quorum)).expect("quorum"),
        proposal_timeout_ms: 30_000,
    };
    let mut m = BeeConsensus::new(params);
    let mut out = BTreeSet::new();
    for i in inputs {
        for c in m.step(i).commands {
            if let ConsensusCommand::Publish { decision: d, .. } = c
                && d.outcome == Outcome::Accepted
            {
                out.insert(d.proposal.to_string());
            }
        }
    }
    out
}

/// The broken variant: counts supports against the voters the failure detector currently believes live.
fn accepted_with_shrinking_denominator(quorum: u32, supports: &[&str], live: &[&str]) -> bool {
    let needed = (quorum as usize * live.len()).div_ceil(1000);
    supports.iter().filter(|s| live.contains(s)).count() >= needed.max(1)
}

proptest! {
    #[test]
    fn two_exclusive_proposals_are_never_both_accepted(
        n in 1usize..8,
        quorum in 501u32..=1000,
        // Per voter: which proposal it supports (0 = P, 1 = Q, 2 = neither), and whether it votes on each at all.
        choices in proptest::collection::vec((0u8..3, any::<bool>(), any::<bool>()), 8),
        order in proptest::collection::vec(any::<u16>(), 16),
    ) {
        let voters: BTreeSet<AgentId> = (0..n).map(|i| id(&format!("v{i}"))).collect();
        let mut inputs = vec![ConsensusInput::Propose(proposal("p", &voters)), ConsensusInput::Propose(proposal("q", &voters))];
        for (v, (choice, votes_p, votes_q)) in voters.iter().zip(&choices) {
            if *votes_p { inputs.push(vote("p", v, *choice == 0)); }
            if *votes_q { inputs.push(vote("q", v, *choice == 1)); }
        }
        // Shuffle deterministically from `order` (votes may even precede their proposal).
        let mut keyed: Vec<(u16, ConsensusInput)> = inputs.into_iter().zip(order.iter().cycle()).map(|(i, k)| (*k, i)).collect();
        keyed.sort_by_key(|(k, _)| *k);
        let accepted = accepted(quorum, keyed.into_iter().map(|(_, i)| i).collect());
        prop_assert!(accepted.len() <= 1, "both accepted: {accepted:?}");
    }
}

/// Five voters, a partition: side 1 sees {a, b} live and both support P; side 2 sees {c, d, e} and c, d support Q.
/// Letting the detector shrink the denominator accepts both; the fixed voter set accepts neither.
#[test]
fn a_shrinking_denominator_fails_the_check_the_fixed_voter_set_passes() {
    let quorum = 600;
    let p_supports = ["a", "b"];
    let q_supports = ["c", "d"];
    let broken_p = accepted_with_shrinking_denominator(quorum, &p_supports, &["a", "b"]);
    let broken_q = accepted_with_shrinking_denominator(quorum, &q_supports, &["c", "d", "e"]);
    assert!(broken_p && broken_q, "the broken variant accepts both exclusive proposals: the check catches it");

    let voters: BTreeSet<AgentId> = ["a", "b", "c", "d", "e"].into_iter().map(id).collect();
    let mut inputs =
        vec![ConsensusInput::Propose(proposal("p", &voters)), ConsensusInput::Propose(proposal("q", &voters))];
    inputs.extend(p_supports.iter().map(|v| vote("p", &id(v), true)));
    inputs.extend(q_supports.iter().map(|v| vote("q", &id(v), true)));
    let accepted = accepted(quorum, inputs);
    assert!(accepted.len() <= 1, "fixed voter set: at most one accepted, got {accepted:?}");
    assert!(accepted.is_empty(), "2 of 5 is below ceil(0.6 x 5) = 3 for both");
}

// ---------------------------------------------------------------------------------------------------------------
// The voters' rule and the manager's order of commands, as the code that runs implements them.
//
// Property proved (over random interleavings of the real `Voter` and `BeeConsensus`): with one voter set for all
// proposals on a subject and a quorum above one half, **a proposal that was pending (read by the manager and not yet
// decided) when a rival on its subject was accepted is never accepted**. Equivalently, two accepted proposals on one
// subject were never pending at the same time. Later proposals on a decided subject may pass: that is re-evaluation,
// not a contradiction. Both halves are needed: voters that support rivals while undecided, or a manager that
// publishes an acceptance before appending its rivals' inhibitions, break it (the two scenarios after the property).
// ---------------------------------------------------------------------------------------------------------------

use std::collections::VecDeque;

use mesh_core::consensus::Decision;
use mesh_core::voter::{Preference, Voter};

/// What can happen next in the little world of one manager and its voters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Voter `v` reads proposal `p` and votes (supporting if `likes`).
    VoterReadsProposal { v: usize, p: usize, likes: bool },
    /// Voter `v` reads the `d`th published decision.
    VoterReadsDecision { v: usize, d: usize },
    /// The manager reads proposal `p`'s record.
    ManagerReadsProposal(usize),
    /// The manager reads the next record of proposal `p`'s votes partition (votes and markers).
    ManagerReadsVotes(usize),
    /// The broken manager's late inhibit markers are appended.
    AppendDeferred,
}

struct World {
    machine: BeeConsensus,
    voters: Vec<Voter>,
    names: Vec<AgentId>,
    proposals: Vec<Proposal>,
    /// Per proposal: its votes partition (votes and markers, in log order).
    queues: Vec<VecDeque<ConsensusInput>>,
    proposal_read: Vec<bool>,
    voted: BTreeSet<(usize, usize)>,
    decisions: Vec<Decision>,
    decisions_read: BTreeSet<(usize, usize)>,
    /// Broken variant: inhibits appended only after the decision is out.
    deferred: Vec<ConsensusInput>,
    /// Per proposal: manager step at which it was read, and at which it was decided with its outcome.
    pending_from: Vec<Option<usize>>,
    decided_at: Vec<Option<(usize, Outcome)>>,
    steps: usize,
    /// Voters apply the one-support rule (the real `Voter`), or support whatever they like (broken).
    rule: bool,
    /// The manager carries out its commands in the order `BeeConsensus` gives them (inhibits first), or publishes
    /// first (broken).
    inhibit_first: bool,
}

impl World {
    fn new(voters: usize, strengths: &[u32], rule: bool, inhibit_first: bool) -> Self {
        let names: Vec<AgentId> = (0..voters).map(|i| id(&format!("v{i}"))).collect();
        let set: BTreeSet<AgentId> = names.iter().cloned().collect();
        let proposals: Vec<Proposal> = strengths
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let inputs =
                    DanceInputs { priority: Milli(*s), urgency: Milli(*s), confidence: Milli(*s), amount_cents: 0 };
                Proposal {
                    id: ProposalId::new(format!("p{i}")).expect("valid"),
                    proposer: id("proposer"),
                    subject: "account:acct-1".into(),
                    action: format!("action-{i}"),
                    dance: WaggleDance::perform(inputs, "account:acct-1"),
                    voters: set.clone(),
                    epoch: 1,
                    created_at_ms: 0,
                }
            })
            .collect();
        let params = ConsensusParams {
            quorum: mesh_core::consensus::Quorum::new(Milli(600)).expect("quorum"),
            proposal_timeout_ms: 30_000,
        };
        let n = proposals.len();
        World {
            machine: BeeConsensus::new(params),
            voters: names.iter().map(|v| Voter::new(v.clone())).collect(),
            names,
            proposals,
            queues: vec![VecDeque::new(); n],
            proposal_read: vec![false; n],
            voted: BTreeSet::new(),
            decisions: Vec::new(),
            decisions_read: BTreeSet::new(),
            deferred: Vec::new(),
            pending_from: vec![None; n],
            decided_at: vec![None; n],
            steps: 0,
            rule,
            inhibit_first,
        }
    }

    fn index(&self, p: &ProposalId) -> usize {
        self.proposals.iter().position(|x| x.id == *p).expect("known proposal")
    }

    /// Actions possible now (`likes` is filled in by the caller).
    fn enabled(&self) -> Vec<Action> {
        let mut out = Vec::new();
        for v in 0..self.voters.len() {
            for p in 0..self.proposals.len() {
                if !self.voted.contains(&(v, p)) {
                    out.push(Action::VoterReadsProposal { v, p, likes: true });
                }
            }
            for d in 0..self.decisions.len() {
                if !self.decisions_read.contains(&(v, d)) {
                    out.push(Action::VoterReadsDecision { v, d });
                }
            }
        }
        for p in 0..self.proposals.len() {
            if !self.proposal_read[p] {
                out.push(Action::ManagerReadsProposal(p));
            }
            if !self.queues[p].is_empty() {
                out.push(Action::ManagerReadsVotes(p));
            }
        }
        if !self.deferred.is_empty() {
            out.push(Action::AppendDeferred);
        }
        out
    }

    fn manager_step(&mut self, input: ConsensusInput) {
        self.steps += 1;
        let out = self.machine.step(input);
        for command in out.commands {
            match command {
                ConsensusCommand::AppendInhibit { proposal, by } => {
                    let marker = ConsensusInput::Inhibit { proposal: proposal.clone(), by };
                    if self.inhibit_first {
                        let i = self.index(&proposal);
                        self.queues[i].push_back(marker);
                    } else {
                        self.deferred.push(marker);
                    }
                }
                ConsensusCommand::Publish { decision: d, .. } => {
                    let i = self.index(&d.proposal);
                    self.decided_at[i] = Some((self.steps, d.outcome.clone()));
                    self.decisions.push(d);
                }
            }
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::VoterReadsProposal { v, p, likes } => {
                self.voted.insert((v, p));
                let preference = Preference { support: likes, intensity: Milli(500) };
                let vote = if self.rule {
                    self.voters[v].on_proposal(&self.proposals[p], preference)
                } else {
                    Some(Vote {
                        proposal: self.proposals[p].id.clone(),
                        voter: self.names[v].clone(),
                        support: likes,
                        intensity: Milli(500),
                    })
                };
                if let Some(vote) = vote {
                    self.queues[p].push_back(ConsensusInput::Vote(vote));
                }
            }
            Action::VoterReadsDecision { v, d } => {
                self.decisions_read.insert((v, d));
                self.voters[v].on_decision(&self.decisions[d]);
            }
            Action::ManagerReadsProposal(p) => {
                self.proposal_read[p] = true;
                if self.decided_at[p].is_none() {
                    self.pending_from[p] = Some(self.steps + 1);
                }
                self.manager_step(ConsensusInput::Propose(self.proposals[p].clone()));
            }
            Action::ManagerReadsVotes(p) => {
                if let Some(input) = self.queues[p].pop_front() {
                    self.manager_step(input);
                }
            }
            Action::AppendDeferred => {
                for marker in std::mem::take(&mut self.deferred) {
                    if let ConsensusInput::Inhibit { proposal, .. } = &marker {
                        let i = self.index(proposal);
                        self.queues[i].push_back(marker);
                    }
                }
            }
        }
    }

    /// Pairs of accepted proposals whose pending intervals overlapped.
    fn violations(&self) -> Vec<(usize, usize)> {
        let accepted: Vec<(usize, usize, usize)> = (0..self.proposals.len())
            .filter_map(|p| match (&self.pending_from[p], &self.decided_at[p]) {
                (Some(from), Some((at, Outcome::Accepted))) => Some((p, *from, *at)),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for (i, &(a, a_from, a_at)) in accepted.iter().enumerate() {
            for &(b, b_from, b_at) in &accepted[i + 1..] {
                if a_from <= b_at && b_from <= a_at {
                    out.push((a, b));
                }
            }
        }
        out
    }

    /// Runs random actions (each `choices` entry picks one; its high bit is the voter's liking) until nothing is
    /// left to do.
    fn run(&mut self, choices: &[u32]) {
        for c in choices.iter().cycle().take(10_000) {
            let enabled = self.enabled();
            if enabled.is_empty() {
                return;
            }
            let mut action = enabled[(*c as usize & 0xffff) % enabled.len()];
            if let Action::VoterReadsProposal { likes, .. } = &mut action {
                *likes = c & 0x1_0000 != 0 || c & 0x2_0000 != 0;
            }
            self.act(action);
        }
    }
}

proptest! {
    #[test]
    fn an_accepted_proposal_never_overlaps_an_accepted_rival(
        voters in 1usize..7,
        strengths in proptest::collection::vec(100u32..900, 2..4),
        choices in proptest::collection::vec(any::<u32>(), 1..400),
    ) {
        let mut world = World::new(voters, &strengths, true, true);
        world.run(&choices);
        let accepted = world.decided_at.iter().filter(|d| matches!(d, Some((_, Outcome::Accepted)))).count();
        prop_assert!(world.violations().is_empty(), "{} accepted, overlapping: {:?}", accepted, world.violations());
    }
}

/// The script both broken variants fail: p0 and p1 pending together; three of five voters support p0 and, when they
/// have read its acceptance, p1.
fn overlap_script(world: &mut World) {
    use Action::*;
    world.act(ManagerReadsProposal(0));
    world.act(ManagerReadsProposal(1));
    for v in 0..3 {
        world.act(VoterReadsProposal { v, p: 0, likes: true });
    }
    // The weaker of two pending rivals is inhibited on arrival, but the marker is read back only after p0's votes.
    for _ in 0..3 {
        world.act(ManagerReadsVotes(0));
    }
    for v in 0..3 {
        let d = world.decisions.iter().position(|d| d.proposal.as_str() == "p0").expect("p0 decided");
        world.act(VoterReadsDecision { v, d });
        world.act(VoterReadsProposal { v, p: 1, likes: true });
    }
    while !world.queues[1].is_empty() {
        world.act(ManagerReadsVotes(1));
        if world.queues[1].is_empty() && !world.deferred.is_empty() {
            world.act(AppendDeferred);
        }
    }
}

#[test]
fn publishing_an_acceptance_before_the_rivals_inhibitions_accepts_both() {
    // p0 outranks p1, so no inhibit on arrival touches p0; p1's own arrival inhibit is deferred in the broken order.
    let mut broken = World::new(5, &[800, 700], true, false);
    overlap_script(&mut broken);
    assert_eq!(broken.violations(), vec![(0, 1)], "the broken order lets p1 pass with votes cast after p0's decision");

    let mut right = World::new(5, &[800, 700], true, true);
    overlap_script(&mut right);
    assert!(right.violations().is_empty(), "inhibits first: p1 is inhibited before those votes are read");
    assert!(matches!(right.decided_at[1], Some((_, Outcome::Inhibited { .. }))));
}

#[test]
fn voters_supporting_two_undecided_rivals_accept_both() {
    use Action::*;
    let script = |world: &mut World| {
        for v in 0..3 {
            world.act(VoterReadsProposal { v, p: 1, likes: true });
            world.act(VoterReadsProposal { v, p: 0, likes: true });
        }
        world.act(ManagerReadsProposal(0));
        world.act(ManagerReadsProposal(1));
        // The votes are ahead of the inhibit marker p1's weaker dance earned on arrival, and of the one p1's
        // acceptance earns p0.
        for _ in 0..3 {
            world.act(ManagerReadsVotes(1));
            world.act(ManagerReadsVotes(0));
        }
    };
    let mut broken = World::new(5, &[800, 700], false, true);
    script(&mut broken);
    assert_eq!(broken.violations(), vec![(0, 1)], "without the rule both pass");
    let mut right = World::new(5, &[800, 700], true, true);
    script(&mut right);
    assert!(right.violations().is_empty(), "with the rule the three supported p1 only");
}
