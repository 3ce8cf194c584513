//! Bee consensus: proposals advertised by waggle dances, one vote per voter, quorum, expiry and cross-inhibition.
//!
//! Each proposal carries its voter set, fixed by the proposer at creation: the failure detector decides liveness,
//! never the denominator, so two sides of a partition cannot each reach a quorum of what they see. A proposal's
//! votes and the manager's `expire`/`inhibit` markers share one partition (keyed by proposal id) and one order, and
//! the outcome is a pure function of the proposal and that sequence: inputs arriving before their proposal are
//! buffered and applied in order when it arrives. Replays after a crash therefore decide exactly as the first run.
//!
//! Expiry and cross-inhibition are clock- or arrival-driven choices, so the manager appends them as `expire` and
//! `inhibit` markers and they take effect only when read back. Each voter counts once per proposal, and agents support
//! at most one proposal per subject (`crate::voter`), so with a quorum above one half ([`Quorum`] refuses less) two
//! exclusive proposals cannot both pass. An acceptance's commands are ordered so that the inhibit markers of its
//! pending rivals come before the decision is stored and published.
//!
//! Buffers that input can grow are bounded: at most [`EARLY_LIMIT`] inputs read before their proposal are kept (the
//! oldest-buffered proposal's dropped first, which the manager counts in `early_dropped`), and the latest
//! [`DECIDED_LIMIT`] decisions are remembered (the inhibit requests of a decided proposal go with its decision).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::waggle::WaggleDance;
use crate::{AgentId, Milli, ProposalId};

/// Why a consensus parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumError(pub Milli);

impl std::fmt::Display for QuorumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quorum {} is outside (0.5, 1]: at or below one half, two exclusive proposals could both pass",
            self.0
        )
    }
}

// `mesh-core` depends on serde only, so the `Error` impl is written by hand rather than derived with thiserror.
impl std::error::Error for QuorumError {}

/// The quorum fraction in thousandths, checked to lie in (500, 1000].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Milli", into = "Milli")]
pub struct Quorum(Milli);

impl Quorum {
    /// Checks the fraction.
    pub fn new(fraction: Milli) -> Result<Quorum, QuorumError> {
        if fraction.0 > 500 && fraction.0 <= 1000 { Ok(Quorum(fraction)) } else { Err(QuorumError(fraction)) }
    }
    /// The fraction.
    pub fn fraction(self) -> Milli {
        self.0
    }
    /// Supports needed among `voters`: ceil(fraction x voters), exactly.
    pub fn needed(self, voters: usize) -> usize {
        let f = self.0.0 as usize;
        (f * voters).div_ceil(1000)
    }
}

impl TryFrom<Milli> for Quorum {
    type Error = QuorumError;
    fn try_from(m: Milli) -> Result<Self, QuorumError> {
        Quorum::new(m)
    }
}
impl From<Quorum> for Milli {
    fn from(q: Quorum) -> Milli {
        q.0
    }
}

/// Consensus parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusParams {
    /// Fraction of the proposal's voters that must support it. Default 0.6.
    pub quorum: Quorum,
    /// A proposal not decided this long after its creation time expires. Default 30 000 ms.
    pub proposal_timeout_ms: u64,
}

impl Default for ConsensusParams {
    fn default() -> Self {
        Self { quorum: Quorum(Milli(600)), proposal_timeout_ms: 30_000 }
    }
}

/// A proposal as published by its proposer. The voter set is fixed here, at creation, and never shrinks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Identity.
    pub id: ProposalId,
    /// Who proposed it.
    pub proposer: AgentId,
    /// What it is about; proposals on the same subject compete and inhibit each other.
    pub subject: String,
    /// What should happen if accepted (for example `block_account`).
    pub action: String,
    /// The waggle dance advertising it.
    pub dance: WaggleDance,
    /// The live members when the proposal was created: the only voters that count, and the denominator.
    pub voters: BTreeSet<AgentId>,
    /// Roster epoch of that voter set.
    pub epoch: u64,
    /// Creation time (ms since the Unix epoch); expiry is `created_at_ms + proposal_timeout_ms`.
    pub created_at_ms: u64,
}

/// A vote on a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// The proposal voted on.
    pub proposal: ProposalId,
    /// Who votes.
    pub voter: AgentId,
    /// For or against.
    pub support: bool,
    /// How strongly (0..=1000); summed into the decision's support intensity.
    pub intensity: Milli,
}

/// One input of the consensus state machine, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusInput {
    /// A proposal record.
    Propose(Proposal),
    /// A proposal record that breaks a rule a replay also sees (its voter set is not the live roster at its epoch,
    /// its dance does not follow from its inputs): decided `refused` at once, so the supports its voters hold are
    /// freed and its proposer learns why.
    Refuse {
        /// The proposal.
        proposal: Proposal,
        /// Why.
        reason: String,
    },
    /// A vote record.
    Vote(Vote),
    /// An expiry marker the manager appended after the proposal's deadline.
    Expire {
        /// The proposal.
        proposal: ProposalId,
        /// When the manager found it due (the marker's `deadline_ms`): a marker dated before the proposal's deadline
        /// is ignored, so no marker, whoever wrote it, expires a proposal early.
        at_ms: u64,
    },
    /// An inhibition marker the manager appended: a stronger competing dance on the same subject suppresses this one.
    Inhibit {
        /// The suppressed proposal.
        proposal: ProposalId,
        /// The stronger one.
        by: ProposalId,
    },
}

/// How a proposal ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// Supports reached the quorum.
    Accepted,
    /// Enough voters opposed that the quorum became unreachable.
    Rejected,
    /// The deadline passed first.
    Expired,
    /// A stronger competing proposal on the same subject suppressed it.
    Inhibited {
        /// The proposal that won.
        by: ProposalId,
    },
    /// The consensus manager did not take it: it breaks a rule of the protocol (`docs/protocol.md`, "Trust").
    Refused {
        /// Which rule, in words.
        reason: String,
    },
}

impl Outcome {
    /// Its name on the wire (the `outcome` tag), which also labels it in metrics and on the live page.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Inhibited { .. } => "inhibited",
            Self::Refused { .. } => "refused",
        }
    }
}

/// A decision, published once per proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The proposal decided.
    pub proposal: ProposalId,
    /// Its subject.
    pub subject: String,
    /// Its action.
    pub action: String,
    /// The outcome.
    pub outcome: Outcome,
    /// Counted supporting votes.
    pub supports: usize,
    /// Counted opposing votes.
    pub against: usize,
    /// Size of the voter set (the denominator).
    pub voters: usize,
    /// Supports needed.
    pub needed: usize,
    /// Sum of the intensities of counted supporting votes.
    pub support_intensity: u64,
}

/// What the runtime must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusCommand {
    /// Publish this decision (to the compacted decisions topic and Redis).
    Publish {
        /// The decision.
        decision: Decision,
        /// When its proposal was created (by its proposer's clock): for the decision latency the runtime reports.
        created_at_ms: u64,
    },
    /// Append an inhibition marker for `proposal` to the log (the stronger `by` suppresses it).
    AppendInhibit {
        /// The proposal to suppress.
        proposal: ProposalId,
        /// The stronger one.
        by: ProposalId,
    },
}

/// Why an input was not applied (the runtime logs it; duplicates are normal under at-least-once delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// The proposal was already decided.
    AlreadyDecided(ProposalId),
    /// The proposal id was seen before with other content.
    DuplicateProposal(ProposalId),
    /// The voter already voted on this proposal; only the first vote counts.
    DuplicateVote {
        /// The proposal.
        proposal: ProposalId,
        /// The voter.
        voter: AgentId,
    },
    /// The voter is not in the proposal's voter set.
    NotAVoter {
        /// The proposal.
        proposal: ProposalId,
        /// The voter.
        voter: AgentId,
    },
    /// The proposal has an empty voter set.
    NoVoters(ProposalId),
    /// An expiry marker dated before the proposal's deadline.
    ExpiryTooEarly {
        /// The proposal.
        proposal: ProposalId,
        /// The marker's date.
        at_ms: u64,
        /// The proposal's deadline (`created_at_ms + proposal_timeout_ms`).
        deadline_ms: u64,
    },
    /// Inputs buffered for a proposal never seen were dropped to keep the buffer within its limit (a flood of
    /// votes for proposals that do not exist); the oldest-buffered proposal goes first.
    EarlyDropped {
        /// The proposal the inputs were for.
        proposal: ProposalId,
        /// How many inputs were dropped.
        inputs: usize,
    },
}

/// The most inputs buffered for proposals not seen yet, across all of them. A real vote waits for its proposal a
/// few reads at most (the two topics interleave); anyone who can write the votes topic could otherwise grow the
/// buffer without bound. At ~200 bytes an input, 100,000 is ~20 MB.
pub const EARLY_LIMIT: usize = 100_000;

fn early_limit() -> usize {
    EARLY_LIMIT
}

/// How many decided proposals are remembered (to ignore late votes and redelivered records for them): the latest
/// 100,000 decisions. A proposal's records arrive within its timeout, long before 100,000 later decisions; one that
/// came after its proposal was forgotten would at worst make it pending again, and its decision, which Redis already
/// holds, would not be published again unless equal. Without a horizon the set grew by every proposal ever made.
pub const DECIDED_LIMIT: usize = 100_000;

fn decided_limit() -> usize {
    DECIDED_LIMIT
}

/// A buffered input for a proposal not seen yet, in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Early {
    Vote(Vote),
    /// An expiry of a snapshot taken before markers were dated: taken as due.
    Expire,
    /// An expiry marker and its date.
    ExpireAt(u64),
    Inhibit(ProposalId),
}

/// A proposal being voted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    proposal: Proposal,
    votes: BTreeMap<AgentId, Vote>,
    supports: usize,
    against: usize,
    support_intensity: u64,
}

/// The state machine. Serializable: the consensus manager snapshots it to Redis with the offsets it reflects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeeConsensus {
    params: ConsensusParams,
    pending: BTreeMap<ProposalId, Pending>,
    decided: BTreeMap<ProposalId, Outcome>,
    /// `decided` in the order of decision: who is forgotten first beyond [`DECIDED_LIMIT`].
    #[serde(default)]
    decided_order: VecDeque<ProposalId>,
    #[serde(default = "decided_limit")]
    decided_limit: usize,
    early: BTreeMap<ProposalId, Vec<Early>>,
    /// Proposal ids of `early` in the order they were first buffered: who is dropped first when it is full.
    #[serde(default)]
    early_order: VecDeque<ProposalId>,
    /// Inputs in `early` (as counted since they were recorded; a snapshot from before counts from zero).
    #[serde(default)]
    early_inputs: usize,
    #[serde(default = "early_limit")]
    early_limit: usize,
    expiry_requested: BTreeSet<ProposalId>,
    inhibit_requested: BTreeSet<(ProposalId, ProposalId)>,
}

/// The result of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutput {
    /// Commands to carry out, in order.
    pub commands: Vec<ConsensusCommand>,
    /// Inputs or parts of inputs that were not applied, and why.
    pub ignored: Vec<Ignored>,
}

impl BeeConsensus {
    /// An empty state machine.
    pub fn new(params: ConsensusParams) -> Self {
        Self {
            params,
            pending: BTreeMap::new(),
            decided: BTreeMap::new(),
            decided_order: VecDeque::new(),
            decided_limit: DECIDED_LIMIT,
            early: BTreeMap::new(),
            early_order: VecDeque::new(),
            early_inputs: 0,
            early_limit: EARLY_LIMIT,
            expiry_requested: BTreeSet::new(),
            inhibit_requested: BTreeSet::new(),
        }
    }

    /// An empty state machine whose buffer of inputs for unseen proposals holds at most `limit` (tests).
    pub fn with_early_limit(params: ConsensusParams, limit: usize) -> Self {
        Self { early_limit: limit.max(1), ..Self::new(params) }
    }

    /// An empty state machine that remembers at most `limit` decided proposals (tests).
    pub fn with_decided_limit(params: ConsensusParams, limit: usize) -> Self {
        Self { decided_limit: limit.max(1), ..Self::new(params) }
    }

    /// Inputs buffered for proposals not seen yet.
    pub fn early_inputs(&self) -> usize {
        self.early_inputs
    }

    /// Takes the buffered inputs of a proposal out of the buffer.
    fn take_early(&mut self, id: &ProposalId) -> Vec<Early> {
        let taken = self.early.remove(id).unwrap_or_default();
        self.early_inputs = self.early_inputs.saturating_sub(taken.len());
        // The order keeps ids whose inputs were taken; compacting it when it is mostly such ids keeps it bounded
        // by the buffer at a constant cost per input.
        if !taken.is_empty() && self.early_order.len() > 2 * self.early.len() + 16 {
            let early = &self.early;
            self.early_order.retain(|id| early.contains_key(id));
        }
        taken
    }

    /// Buffers an input for a proposal not seen yet, dropping the oldest-buffered proposal's inputs when full.
    fn buffer_early(&mut self, id: &ProposalId, input: Early, out: &mut StepOutput) {
        let inputs = self.early.entry(id.clone()).or_default();
        if inputs.is_empty() {
            self.early_order.push_back(id.clone());
        }
        inputs.push(input);
        self.early_inputs += 1;
        while self.early_inputs > self.early_limit {
            let Some(oldest) = self.early_order.pop_front() else { break };
            let dropped = self.take_early(&oldest);
            if !dropped.is_empty() {
                out.ignored.push(Ignored::EarlyDropped { proposal: oldest, inputs: dropped.len() });
            }
        }
    }

    /// Applies one input from the log.
    pub fn step(&mut self, input: ConsensusInput) -> StepOutput {
        let mut out = StepOutput::default();
        match input {
            ConsensusInput::Propose(p) => self.propose(p, &mut out),
            ConsensusInput::Refuse { proposal, reason } => self.refuse(proposal, reason, &mut out),
            ConsensusInput::Vote(v) => {
                let id = v.proposal.clone();
                self.apply(&id, Early::Vote(v), &mut out);
            }
            ConsensusInput::Expire { proposal, at_ms } => self.apply(&proposal, Early::ExpireAt(at_ms), &mut out),
            ConsensusInput::Inhibit { proposal, by } => self.apply(&proposal, Early::Inhibit(by), &mut out),
        }
        out
    }

    fn propose(&mut self, proposal: Proposal, out: &mut StepOutput) {
        let id = proposal.id.clone();
        if self.decided.contains_key(&id) {
            out.ignored.push(Ignored::AlreadyDecided(id));
            return;
        }
        if let Some(p) = self.pending.get(&id) {
            if p.proposal != proposal {
                out.ignored.push(Ignored::DuplicateProposal(id));
            }
            return;
        }
        if proposal.voters.is_empty() {
            out.ignored.push(Ignored::NoVoters(id.clone()));
            self.take_early(&id);
            self.pending.insert(id.clone(), Pending::new(proposal));
            self.decide(&id, Outcome::Rejected, out);
            return;
        }
        self.pending.insert(id.clone(), Pending::new(proposal));
        for early in self.take_early(&id) {
            self.apply(&id, early, out);
        }
        // Cross-inhibition: of two pending proposals on one subject, the weaker dance is suppressed.
        let Some(me) = self.pending.get(&id) else { return };
        let (subject, dance) = (me.proposal.subject.clone(), me.proposal.dance);
        let rivals: Vec<(ProposalId, bool)> = self
            .pending
            .values()
            .filter(|o| o.proposal.id != id && o.proposal.subject == subject)
            .map(|o| {
                let i_win = dance.outranks(&o.proposal.dance).unwrap_or(id < o.proposal.id);
                (o.proposal.id.clone(), i_win)
            })
            .collect();
        for (rival, i_win) in rivals {
            let (weaker, stronger) = if i_win { (rival, id.clone()) } else { (id.clone(), rival) };
            self.request_inhibit(weaker, stronger, out);
        }
    }

    fn refuse(&mut self, proposal: Proposal, reason: String, out: &mut StepOutput) {
        let id = proposal.id.clone();
        if self.decided.contains_key(&id) {
            out.ignored.push(Ignored::AlreadyDecided(id));
            return;
        }
        if self.pending.contains_key(&id) {
            // Another proposal took this id first; the one refused is a duplicate.
            out.ignored.push(Ignored::DuplicateProposal(id));
            return;
        }
        // Inputs that came before it count for nothing.
        self.take_early(&id);
        self.pending.insert(id.clone(), Pending::new(proposal));
        self.decide(&id, Outcome::Refused { reason }, out);
    }

    fn request_inhibit(&mut self, proposal: ProposalId, by: ProposalId, out: &mut StepOutput) {
        if self.inhibit_requested.insert((proposal.clone(), by.clone())) {
            out.commands.push(ConsensusCommand::AppendInhibit { proposal, by });
        }
    }

    fn apply(&mut self, id: &ProposalId, input: Early, out: &mut StepOutput) {
        if self.decided.contains_key(id) {
            out.ignored.push(Ignored::AlreadyDecided(id.clone()));
            return;
        }
        let Some(p) = self.pending.get_mut(id) else {
            self.buffer_early(id, input, out);
            return;
        };
        match input {
            Early::Expire => self.decide(id, Outcome::Expired, out),
            Early::ExpireAt(at_ms) => {
                let deadline_ms = p.proposal.created_at_ms.saturating_add(self.params.proposal_timeout_ms);
                if at_ms < deadline_ms {
                    out.ignored.push(Ignored::ExpiryTooEarly { proposal: id.clone(), at_ms, deadline_ms });
                } else {
                    self.decide(id, Outcome::Expired, out);
                }
            }
            Early::Inhibit(by) => self.decide(id, Outcome::Inhibited { by }, out),
            Early::Vote(vote) => {
                if !p.proposal.voters.contains(&vote.voter) {
                    out.ignored.push(Ignored::NotAVoter { proposal: id.clone(), voter: vote.voter });
                    return;
                }
                if p.votes.contains_key(&vote.voter) {
                    out.ignored.push(Ignored::DuplicateVote { proposal: id.clone(), voter: vote.voter });
                    return;
                }
                if vote.support {
                    p.supports += 1;
                    p.support_intensity += u64::from(vote.intensity.0);
                } else {
                    p.against += 1;
                }
                p.votes.insert(vote.voter.clone(), vote);
                let voters = p.proposal.voters.len();
                let needed = self.params.quorum.needed(voters);
                if p.supports >= needed {
                    self.decide(id, Outcome::Accepted, out);
                } else if p.against > voters - needed {
                    self.decide(id, Outcome::Rejected, out);
                }
            }
        }
    }

    fn decide(&mut self, id: &ProposalId, outcome: Outcome, out: &mut StepOutput) {
        let Some(p) = self.pending.remove(id) else { return };
        self.expiry_requested.remove(id);
        // An acceptance suppresses every pending rival on its subject, and the suppression comes first: once a voter
        // reads the acceptance it may support a rival (`crate::voter`), and that vote must land behind the rival's
        // inhibit marker in the log.
        if outcome == Outcome::Accepted {
            let rivals: Vec<ProposalId> = self
                .pending
                .values()
                .filter(|o| o.proposal.subject == p.proposal.subject)
                .map(|o| o.proposal.id.clone())
                .collect();
            for rival in rivals {
                self.request_inhibit(rival, id.clone(), out);
            }
        }
        let voters = p.proposal.voters.len();
        let created_at_ms = p.proposal.created_at_ms;
        let decision = Decision {
            proposal: id.clone(),
            subject: p.proposal.subject.clone(),
            action: p.proposal.action.clone(),
            outcome: outcome.clone(),
            supports: p.supports,
            against: p.against,
            voters,
            needed: self.params.quorum.needed(voters),
            support_intensity: p.support_intensity,
        };
        out.commands.push(ConsensusCommand::Publish { decision, created_at_ms });
        self.decided.insert(id.clone(), outcome);
        self.decided_order.push_back(id.clone());
        self.forget_inhibits_of(id);
        while self.decided_order.len() > self.decided_limit {
            let Some(oldest) = self.decided_order.pop_front() else { break };
            self.decided.remove(&oldest);
        }
    }

    /// Drops the inhibit requests made for a proposal now decided: they are never made again (rivals are chosen
    /// among pending proposals), and kept they grew by one per inhibition ever.
    fn forget_inhibits_of(&mut self, id: &ProposalId) {
        // The least valid id: every pair of `id` sorts at or after (`id`, "-").
        let Ok(least) = ProposalId::new("-") else { return };
        let done: Vec<(ProposalId, ProposalId)> =
            self.inhibit_requested.range((id.clone(), least)..).take_while(|(p, _)| p == id).cloned().collect();
        for pair in done {
            self.inhibit_requested.remove(&pair);
        }
    }

    /// Pending proposals whose deadline is at or before `now_ms` and for which no expiry was requested yet; the runtime
    /// appends an `expire` marker for each and the marker, once read back, decides them. Marks them as requested.
    pub fn due_expiries(&mut self, now_ms: u64) -> Vec<ProposalId> {
        let timeout = self.params.proposal_timeout_ms;
        let due: Vec<ProposalId> = self
            .pending
            .values()
            .filter(|p| p.proposal.created_at_ms.saturating_add(timeout) <= now_ms)
            .map(|p| p.proposal.id.clone())
            .filter(|id| !self.expiry_requested.contains(id))
            .collect();
        self.expiry_requested.extend(due.iter().cloned());
        due
    }

    /// Forgets which expiries and inhibitions were requested (after a restart, so markers lost in a crash are
    /// requested again; duplicates are ignored when read back).
    pub fn reset_expiry_requests(&mut self) {
        self.expiry_requested.clear();
        self.inhibit_requested.clear();
    }

    /// The outcome, if decided.
    pub fn outcome(&self, id: &ProposalId) -> Option<&Outcome> {
        self.decided.get(id)
    }

    /// Number of pending proposals.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Number of decided proposals.
    pub fn decided(&self) -> usize {
        self.decided.len()
    }

    /// The parameters.
    pub fn params(&self) -> ConsensusParams {
        self.params
    }
}

impl Pending {
    fn new(proposal: Proposal) -> Self {
        Self { proposal, votes: BTreeMap::new(), supports: 0, against: 0, support_intensity: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waggle::{DanceInputs, WaggleDance};
    use proptest::prelude::*;

    #[test]
    fn an_outcome_is_named_as_on_the_wire() {
        for outcome in [
            Outcome::Accepted,
            Outcome::Rejected,
            Outcome::Expired,
            Outcome::Inhibited { by: ProposalId::new("p").expect("id") },
            Outcome::Refused { reason: "r".into() },
        ] {
            let wire = serde_json::to_value(&outcome).expect("encodes");
            assert_eq!(wire["outcome"], outcome.name());
        }
    }

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid")
    }

    /// An expiry marker dated long after any deadline.
    fn expire(name: &str) -> ConsensusInput {
        ConsensusInput::Expire { proposal: pid(name), at_ms: u64::MAX }
    }

    fn pid(s: &str) -> ProposalId {
        ProposalId::new(s).expect("valid")
    }

    fn proposal(name: &str, subject: &str, strength: u32, voters: &[&str]) -> Proposal {
        let inputs = DanceInputs {
            priority: Milli(strength),
            urgency: Milli(strength),
            confidence: Milli(strength),
            amount_cents: 0,
        };
        Proposal {
            id: pid(name),
            proposer: id(voters.first().copied().unwrap_or("x")),
            subject: subject.to_owned(),
            action: "act".to_owned(),
            dance: WaggleDance::perform(inputs, subject),
            voters: voters.iter().map(|v| id(v)).collect(),
            epoch: 1,
            created_at_ms: 1_000,
        }
    }

    fn vote(p: &str, voter: &str, support: bool) -> ConsensusInput {
        ConsensusInput::Vote(Vote { proposal: pid(p), voter: id(voter), support, intensity: Milli(500) })
    }

    fn decisions(out: &StepOutput) -> Vec<(String, Outcome)> {
        out.commands
            .iter()
            .filter_map(|c| match c {
                ConsensusCommand::Publish { decision: d, .. } => Some((d.proposal.to_string(), d.outcome.clone())),
                ConsensusCommand::AppendInhibit { .. } => None,
            })
            .collect()
    }

    const FOUR: [&str; 4] = ["a", "b", "c", "d"];

    #[test]
    fn a_flood_of_votes_for_unseen_proposals_stays_within_the_limit_and_real_ones_still_decide() {
        let mut m = BeeConsensus::with_early_limit(ConsensusParams::default(), 1_000);
        let mut dropped = 0;
        for i in 0..20_000 {
            let out = m.step(vote(&format!("ghost-{i}"), "a", true));
            dropped += out
                .ignored
                .iter()
                .map(|x| match x {
                    Ignored::EarlyDropped { inputs, .. } => *inputs,
                    _ => 0,
                })
                .sum::<usize>();
            assert!(m.early_inputs() <= 1_000);
        }
        assert_eq!(dropped, 19_000, "every input beyond the limit is counted once");
        assert!(m.early.len() <= 1_000 && m.early_order.len() <= 1_000 + 16 + 2 * m.early.len());
        // A real proposal whose votes came early (and recently) still decides on them.
        for v in ["a", "b", "c"] {
            m.step(vote("real", v, true));
        }
        let out = m.step(ConsensusInput::Propose(proposal("real", "s", 500, &FOUR)));
        assert_eq!(decisions(&out), vec![("real".to_owned(), Outcome::Accepted)]);
        assert!(!m.early.contains_key(&pid("real")));
    }

    #[test]
    fn only_the_latest_decisions_are_remembered_and_inhibit_requests_go_with_their_decision() {
        let mut m = BeeConsensus::with_decided_limit(ConsensusParams::default(), 100);
        for i in 0..1_000 {
            let name = format!("p-{i}");
            m.step(ConsensusInput::Propose(proposal(&name, &format!("s-{i}"), 500, &FOUR)));
            m.step(expire(&name));
        }
        assert_eq!((m.decided(), m.decided_order.len()), (100, 100));
        assert!(m.decided.contains_key(&pid("p-999")) && !m.decided.contains_key(&pid("p-0")));
        // A late vote for a remembered decision is ignored as such.
        assert_eq!(m.step(vote("p-999", "a", true)).ignored, vec![Ignored::AlreadyDecided(pid("p-999"))]);

        // Two rivals: the weaker is inhibited; once both are decided no request of theirs is kept.
        let mut m = BeeConsensus::new(ConsensusParams::default());
        m.step(ConsensusInput::Propose(proposal("strong", "s", 900, &FOUR)));
        let out = m.step(ConsensusInput::Propose(proposal("weak", "s", 100, &FOUR)));
        assert!(out.commands.iter().any(|c| matches!(c, ConsensusCommand::AppendInhibit { .. })));
        assert_eq!(m.inhibit_requested.len(), 1);
        m.step(ConsensusInput::Inhibit { proposal: pid("weak"), by: pid("strong") });
        assert!(m.inhibit_requested.is_empty(), "the decided proposal's request is dropped");
    }

    #[test]
    fn buffered_ids_taken_by_their_proposals_do_not_pile_up_in_the_order() {
        let mut m = BeeConsensus::with_early_limit(ConsensusParams::default(), 1_000);
        for i in 0..5_000 {
            let name = format!("p-{i}");
            m.step(vote(&name, "a", true));
            m.step(ConsensusInput::Propose(proposal(&name, &format!("s-{i}"), 500, &FOUR)));
        }
        assert_eq!(m.early_inputs(), 0);
        assert!(m.early_order.len() <= 16, "{} stale ids kept", m.early_order.len());
    }

    #[test]
    fn quorum_is_the_exact_ceiling() {
        let q = ConsensusParams::default().quorum;
        assert_eq!([1, 4, 5, 10, 500].map(|n| q.needed(n)), [1, 3, 3, 6, 300]);
        assert!(Quorum::new(Milli(500)).is_err());
        assert!(Quorum::new(Milli(1001)).is_err());
        assert_eq!(Quorum::new(Milli(1000)).map(|q| q.needed(3)), Ok(3));
    }

    #[test]
    fn accepted_at_the_third_support_of_four_not_before() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        m.step(ConsensusInput::Propose(proposal("p", "s", 500, &FOUR)));
        assert!(decisions(&m.step(vote("p", "a", true))).is_empty());
        assert!(decisions(&m.step(vote("p", "b", true))).is_empty());
        let out = m.step(vote("p", "c", true));
        assert_eq!(decisions(&out), vec![("p".to_owned(), Outcome::Accepted)]);
        let ConsensusCommand::Publish { decision: d, .. } = &out.commands[0] else { panic!("a decision") };
        assert_eq!((d.supports, d.against, d.voters, d.needed, d.support_intensity), (3, 0, 4, 3, 1500));
        assert_eq!(m.step(vote("p", "d", true)).ignored, vec![Ignored::AlreadyDecided(pid("p"))]);
        assert_eq!((m.pending(), m.decided()), (0, 1));
    }

    #[test]
    fn rejected_as_soon_as_acceptance_is_impossible() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        m.step(ConsensusInput::Propose(proposal("p", "s", 500, &FOUR)));
        assert!(decisions(&m.step(vote("p", "a", false))).is_empty());
        assert_eq!(decisions(&m.step(vote("p", "b", false))), vec![("p".to_owned(), Outcome::Rejected)]);
    }

    #[test]
    fn strangers_and_second_votes_do_not_count() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        m.step(ConsensusInput::Propose(proposal("p", "s", 500, &FOUR)));
        assert_eq!(
            m.step(vote("p", "zed", true)).ignored,
            vec![Ignored::NotAVoter { proposal: pid("p"), voter: id("zed") }]
        );
        m.step(vote("p", "a", true));
        assert_eq!(
            m.step(vote("p", "a", false)).ignored,
            vec![Ignored::DuplicateVote { proposal: pid("p"), voter: id("a") }]
        );
        m.step(vote("p", "a", true));
        m.step(vote("p", "b", true));
        assert_eq!(m.pending(), 1, "a counted once: 2 supports of 3 needed");
    }

    #[test]
    fn votes_before_their_proposal_are_kept_in_order() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        for v in ["a", "b", "c"] {
            assert!(m.step(vote("p", v, true)).commands.is_empty());
        }
        let out = m.step(ConsensusInput::Propose(proposal("p", "s", 500, &FOUR)));
        assert_eq!(decisions(&out), vec![("p".to_owned(), Outcome::Accepted)]);
    }

    #[test]
    fn expiry_is_due_exactly_at_the_deadline_and_requested_once() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        m.step(ConsensusInput::Propose(proposal("p", "s", 500, &FOUR)));
        assert!(m.due_expiries(30_999).is_empty());
        assert_eq!(m.due_expiries(31_000), vec![pid("p")]);
        assert!(m.due_expiries(40_000).is_empty());
        assert_eq!(decisions(&m.step(expire("p"))), vec![("p".to_owned(), Outcome::Expired)]);
        assert_eq!(m.step(vote("p", "a", true)).ignored, vec![Ignored::AlreadyDecided(pid("p"))]);
        assert_eq!(m.step(expire("p")).ignored, vec![Ignored::AlreadyDecided(pid("p"))]);
    }

    #[test]
    fn an_expiry_marker_dated_before_the_deadline_expires_nothing() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        let early = ConsensusInput::Expire { proposal: pid("p"), at_ms: 30_999 };
        assert!(m.step(early.clone()).ignored.is_empty(), "buffered until its proposal comes");
        let out = m.step(ConsensusInput::Propose(proposal("p", "s", 500, &FOUR)));
        assert!(decisions(&out).is_empty(), "{out:?}");
        assert_eq!(
            out.ignored,
            vec![Ignored::ExpiryTooEarly { proposal: pid("p"), at_ms: 30_999, deadline_ms: 31_000 }]
        );
        assert_eq!(m.step(early).ignored.len(), 1, "and again when read after it");
        let due = m.step(ConsensusInput::Expire { proposal: pid("p"), at_ms: 31_000 });
        assert_eq!(decisions(&due), vec![("p".to_owned(), Outcome::Expired)]);
    }

    #[test]
    fn the_weaker_of_two_competing_dances_is_inhibited_once() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        m.step(ConsensusInput::Propose(proposal("weak", "s", 200, &FOUR)));
        let out = m.step(ConsensusInput::Propose(proposal("strong", "s", 900, &FOUR)));
        assert_eq!(out.commands, vec![ConsensusCommand::AppendInhibit { proposal: pid("weak"), by: pid("strong") }]);
        assert!(m.step(ConsensusInput::Propose(proposal("strong", "s", 900, &FOUR))).commands.is_empty(), "redelivery");
        let out = m.step(ConsensusInput::Inhibit { proposal: pid("weak"), by: pid("strong") });
        assert_eq!(decisions(&out), vec![("weak".to_owned(), Outcome::Inhibited { by: pid("strong") })]);
        // Another subject is no competition.
        assert!(m.step(ConsensusInput::Propose(proposal("other", "t", 100, &FOUR))).commands.is_empty());
    }

    #[test]
    fn acceptance_inhibits_pending_rivals() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        m.step(ConsensusInput::Propose(proposal("x", "s", 900, &FOUR)));
        m.step(ConsensusInput::Propose(proposal("y", "s", 900, &FOUR)));
        m.reset_expiry_requests();
        for v in ["a", "b"] {
            m.step(vote("y", v, true));
        }
        let out = m.step(vote("y", "c", true));
        assert!(out.commands.contains(&ConsensusCommand::AppendInhibit { proposal: pid("x"), by: pid("y") }));
    }

    #[test]
    fn no_voters_is_rejected() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        let out = m.step(ConsensusInput::Propose(proposal("p", "s", 500, &[])));
        assert_eq!(decisions(&out), vec![("p".to_owned(), Outcome::Rejected)]);
        assert_eq!(out.ignored, vec![Ignored::NoVoters(pid("p"))]);
    }

    #[test]
    fn a_refused_proposal_is_decided_refused_once_and_its_votes_count_for_nothing() {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        let vote = |voter: &str| {
            ConsensusInput::Vote(Vote { proposal: pid("p"), voter: id(voter), support: true, intensity: Milli(900) })
        };
        assert!(m.step(vote("a")).commands.is_empty(), "buffered for its proposal");
        let refused = Outcome::Refused { reason: "voters".into() };
        let out = m.step(ConsensusInput::Refuse { proposal: proposal("p", "s", 500, &["a"]), reason: "voters".into() });
        assert_eq!(decisions(&out), vec![("p".to_owned(), refused.clone())]);
        assert_eq!(m.early_inputs(), 0, "the buffered vote went with it");
        let again = m.step(ConsensusInput::Propose(proposal("p", "s", 500, &["a"])));
        assert!(again.commands.is_empty(), "a refused id is decided: {again:?}");
        assert!(m.step(vote("a")).commands.is_empty());
        assert_eq!(m.outcome(&pid("p")), Some(&refused));
    }

    /// Inputs for up to 3 proposals on one subject: each proposal's own sequence (votes and markers) in order.
    /// (kind, voter index, support) of one input of a proposal's own sequence.
    type Step = (u8, u8, bool);

    fn scenario() -> impl Strategy<Value = (Vec<u32>, Vec<Vec<Step>>)> {
        (
            proptest::collection::vec(0u32..1000, 1..4),
            proptest::collection::vec(proptest::collection::vec((0u8..6, 0u8..8, any::<bool>()), 0..12), 3),
        )
    }

    fn inputs_of(strengths: &[u32], seqs: &[Vec<Step>]) -> Vec<Vec<ConsensusInput>> {
        let voters = ["a", "b", "c", "d", "e"];
        strengths
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = format!("p{i}");
                let mut seq = vec![ConsensusInput::Propose(proposal(&name, "s", *s, &voters))];
                for (kind, who, support) in &seqs[i] {
                    seq.push(match kind {
                        0 => expire(&name),
                        1 => ConsensusInput::Inhibit { proposal: pid(&name), by: pid("p9") },
                        _ => vote(&name, ["a", "b", "c", "d", "e", "f", "g", "h"][*who as usize], *support),
                    });
                }
                seq
            })
            .collect()
    }

    /// Interleaves the per-proposal sequences; the proposal record itself may come at any point of its sequence
    /// (it is on another topic), everything else keeps its order.
    fn interleave(seqs: &[Vec<ConsensusInput>], picks: &[usize], propose_at: &[usize]) -> Vec<ConsensusInput> {
        let mut streams: Vec<Vec<ConsensusInput>> = seqs
            .iter()
            .zip(propose_at.iter().cycle())
            .map(|(s, at)| {
                let mut rest = s[1..].to_vec();
                let at = at % (rest.len() + 1);
                rest.insert(at, s[0].clone());
                rest
            })
            .collect();
        let mut out = Vec::new();
        let mut p = picks.iter().cycle();
        while streams.iter().any(|s| !s.is_empty()) {
            let start = p.next().copied().unwrap_or(0);
            let n = streams.len();
            if let Some(i) = (0..n).map(|k| (start + k) % n).find(|i| !streams[*i].is_empty()) {
                out.push(streams[i].remove(0));
            }
        }
        out
    }

    fn outcomes(inputs: Vec<ConsensusInput>) -> BTreeMap<ProposalId, Decision> {
        let mut m = BeeConsensus::new(ConsensusParams::default());
        let mut out = BTreeMap::new();
        for i in inputs {
            for c in m.step(i).commands {
                if let ConsensusCommand::Publish { decision: d, .. } = c {
                    assert!(out.insert(d.proposal.clone(), d).is_none(), "decided twice");
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn outcomes_do_not_depend_on_how_proposals_interleave(
            (strengths, seqs) in scenario(),
            a in proptest::collection::vec(0usize..3, 1..20),
            b in proptest::collection::vec(0usize..3, 1..20),
            at_a in proptest::collection::vec(0usize..12, 3),
            at_b in proptest::collection::vec(0usize..12, 3),
        ) {
            let seqs = inputs_of(&strengths, &seqs);
            prop_assert_eq!(outcomes(interleave(&seqs, &a, &at_a)), outcomes(interleave(&seqs, &b, &at_b)));
        }

        #[test]
        fn replay_and_snapshot_round_trip_give_the_same_result(
            (strengths, seqs) in scenario(),
            order in proptest::collection::vec(0usize..3, 1..20),
            cut in 0usize..40,
        ) {
            let inputs = interleave(&inputs_of(&strengths, &seqs), &order, &[0]);
            let mut straight = BeeConsensus::new(ConsensusParams::default());
            let mut commands = Vec::new();
            for i in &inputs {
                commands.push(straight.step(i.clone()).commands);
            }
            let mut resumed = BeeConsensus::new(ConsensusParams::default());
            let mut again = Vec::new();
            for (n, i) in inputs.iter().enumerate() {
                if n == cut {
                    let json = serde_json::to_string(&resumed).expect("serialize");
                    resumed = serde_json::from_str(&json).expect("deserialize");
                }
                again.push(resumed.step(i.clone()).commands);
            }
            prop_assert_eq!(commands, again);
            prop_assert_eq!(straight, resumed);
        }
    }
}
