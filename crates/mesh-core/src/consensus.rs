//! Bee consensus: proposals advertised by waggle dances, one vote per voter, quorum, expiry and cross-inhibition.
//!
//! STUB: API fixed, bodies to be written (see the helper's task).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::waggle::WaggleDance;
use crate::{AgentId, Milli, ProposalId};

/// Why a consensus parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumError(pub Milli);

impl std::fmt::Display for QuorumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "quorum {} is outside (0.5, 1]: at or below one half, two exclusive proposals could both pass", self.0)
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
    pub fn fraction(self) -> Milli { self.0 }
    /// Supports needed among `voters`: ceil(fraction x voters), exactly.
    pub fn needed(self, _voters: usize) -> usize { todo!() }
}

impl TryFrom<Milli> for Quorum {
    type Error = QuorumError;
    fn try_from(m: Milli) -> Result<Self, QuorumError> { Quorum::new(m) }
}
impl From<Quorum> for Milli {
    fn from(q: Quorum) -> Milli { q.0 }
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
    /// A vote record.
    Vote(Vote),
    /// An expiry marker the manager appended after the proposal's deadline.
    Expire(ProposalId),
    /// An inhibition marker the manager appended: a stronger competing dance on the same subject suppresses this one.
    Inhibit { proposal: ProposalId, by: ProposalId },
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
    Publish(Decision),
    /// Append an inhibition marker for `proposal` to the log (the stronger `by` suppresses it).
    AppendInhibit { proposal: ProposalId, by: ProposalId },
}

/// Why an input was not applied (the runtime logs it; duplicates are normal under at-least-once delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// The proposal was already decided.
    AlreadyDecided(ProposalId),
    /// The proposal id was seen before with other content.
    DuplicateProposal(ProposalId),
    /// The voter already voted on this proposal; only the first vote counts.
    DuplicateVote { proposal: ProposalId, voter: AgentId },
    /// The voter is not in the proposal's voter set.
    NotAVoter { proposal: ProposalId, voter: AgentId },
    /// The proposal has an empty voter set.
    NoVoters(ProposalId),
}

/// The state machine. Serializable: the consensus manager snapshots it to Redis with the offsets it reflects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeeConsensus {
    params: ConsensusParams,
    // the helper decides the private fields
    _todo: BTreeMap<ProposalId, ()>,
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
    pub fn new(_params: ConsensusParams) -> Self { todo!() }
    /// Applies one input from the log.
    pub fn step(&mut self, _input: ConsensusInput) -> StepOutput { todo!() }
    /// Pending proposals whose deadline is at or before `now_ms` and for which no expiry was requested yet; the runtime
    /// appends an `expire` marker for each and the marker, once read back, decides them. Marks them as requested.
    pub fn due_expiries(&mut self, _now_ms: u64) -> Vec<ProposalId> { todo!() }
    /// Forgets which expiries were requested (after a restart, so markers lost in a crash are requested again).
    pub fn reset_expiry_requests(&mut self) { todo!() }
    /// The outcome, if decided.
    pub fn outcome(&self, _id: &ProposalId) -> Option<&Outcome> { todo!() }
    /// Number of pending proposals.
    pub fn pending(&self) -> usize { todo!() }
    /// Number of decided proposals.
    pub fn decided(&self) -> usize { todo!() }
    /// The parameters.
    pub fn params(&self) -> ConsensusParams { self.params }
}
