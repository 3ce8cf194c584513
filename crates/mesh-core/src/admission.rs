//! Which proposals the consensus manager takes: one whose voter set is the live roster at the epoch it names.
//!
//! Why: the voter set is the denominator of the quorum and the proposer writes it. Taken on the proposer's word, an
//! agent holding only its own key could propose with itself as the only voter and accept anything it likes. The
//! roster is the topology manager's, published on the one-partition membership topic in epoch order, and an honest
//! agent proposes with `voters` = the members it reads as live and `epoch` = the newest epoch it read, which is
//! exactly the live set at that epoch. So the check is a function of the proposal and the membership log alone, never
//! of when the manager read either: a proposal naming an epoch the manager has not read yet is parked until it has,
//! and a replay (with any interleaving of the topics) refuses exactly what the live run refused.
//!
//! The history is bounded: the latest [`HISTORY_LIMIT`] roster changes are kept, and a proposal naming an epoch older
//! than that (or older than a hole in the log, left by compaction or a lost publication) is refused as stale. Parked
//! proposals are bounded too ([`PARKED_LIMIT`]); beyond it the earliest parked is refused.
//!
//! A proposal that breaks the rule is decided `refused` with the reason (as is one whose dance does not follow from its
//! inputs, which the consensus runtime checks). The consensus manager reads the one-partition membership topic beside
//! proposals and votes, so the verdict never depends on how the topics interleave; `mesh_node::consensus::replay_log`,
//! fed the membership records too, refuses what the live run refused. The history is in the manager's snapshot with the
//! state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::AgentId;
use crate::consensus::Proposal;
use crate::membership::{Member, MemberStatus};

/// Roster changes remembered to tell the live set at a past epoch: a proposal is read within its timeout, long
/// before 10,000 later joins, leaves and deaths.
pub const HISTORY_LIMIT: usize = 10_000;

/// Proposals waiting for the membership log to reach their epoch. An honest one waits a few reads at most (the two
/// topics interleave); a proposal naming an epoch the roster never reaches would otherwise wait forever.
pub const PARKED_LIMIT: usize = 10_000;

fn history_limit() -> usize {
    HISTORY_LIMIT
}

fn parked_limit() -> usize {
    PARKED_LIMIT
}

/// One roster change: `id` went from `before` (absent if `None`) to `after` at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Change {
    epoch: u64,
    id: AgentId,
    before: Option<MemberStatus>,
    after: MemberStatus,
}

/// What became of a proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its voter set is the live roster at its epoch: an input of the consensus state machine.
    Admit(Proposal),
    /// It breaks the rule; decided `refused` with the reason.
    Refuse {
        /// The proposal.
        proposal: Proposal,
        /// Why, for the decision and the log.
        reason: String,
    },
}

/// The roster as the membership log told it, with enough history to answer "who was live at epoch E", and the
/// proposals waiting for a later epoch. Serializable: it is part of the consensus manager's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Status of every member, as of `epoch`.
    status: BTreeMap<AgentId, (MemberStatus, u64)>,
    /// The newest epoch read.
    epoch: u64,
    /// The oldest epoch whose live set is known exactly: changes before it were forgotten or never read.
    known_from: u64,
    /// The changes after `known_from`, oldest first.
    changes: VecDeque<Change>,
    #[serde(default = "history_limit")]
    history_limit: usize,
    /// Proposals naming an epoch after `epoch`, by that epoch, in the order read.
    parked: BTreeMap<u64, Vec<Proposal>>,
    parked_count: usize,
    #[serde(default = "parked_limit")]
    parked_limit: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Self::new()
    }
}

impl Admission {
    /// Nothing read yet: epoch 0, when nobody is live.
    pub fn new() -> Self {
        Self {
            status: BTreeMap::new(),
            epoch: 0,
            known_from: 0,
            changes: VecDeque::new(),
            history_limit: HISTORY_LIMIT,
            parked: BTreeMap::new(),
            parked_count: 0,
            parked_limit: PARKED_LIMIT,
        }
    }

    /// With smaller bounds (tests).
    pub fn with_limits(history: usize, parked: usize) -> Self {
        Self { history_limit: history.max(1), parked_limit: parked.max(1), ..Self::new() }
    }

    /// The newest roster epoch read.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Proposals waiting for a later epoch.
    pub fn parked(&self) -> usize {
        self.parked_count
    }

    /// A membership record read; the parked proposals it lets through, judged.
    pub fn on_member(&mut self, member: &Member) -> Vec<Verdict> {
        let id = member.profile.id.clone();
        let known = self.status.get(&id).copied();
        if known.is_some_and(|(_, e)| e >= member.epoch) {
            // A republication (the topology manager repeats its roster when it starts) or older news.
            return Vec::new();
        }
        self.status.insert(id.clone(), (member.status, member.epoch));
        if member.epoch <= self.epoch {
            // Read after a newer change (a publication retried after later ones, or a republication filling a
            // hole): the roster now knows it, but the history around it is not exact. Epochs before the newest are
            // no longer judged.
            self.forget_before(self.epoch);
            return Vec::new();
        }
        if member.epoch != self.epoch + 1 {
            // A hole: the changes between were compacted away or are still to come.
            self.forget_before(member.epoch);
        }
        self.epoch = member.epoch;
        if self.known_from < self.epoch {
            self.changes.push_back(Change {
                epoch: member.epoch,
                id,
                before: known.map(|(s, _)| s),
                after: member.status,
            });
        }
        while self.changes.len() > self.history_limit {
            let Some(oldest) = self.changes.pop_front() else { break };
            self.known_from = self.known_from.max(oldest.epoch);
        }
        let due: Vec<u64> = self.parked.range(..=self.epoch).map(|(e, _)| *e).collect();
        let mut verdicts = Vec::new();
        for epoch in due {
            for proposal in self.parked.remove(&epoch).unwrap_or_default() {
                self.parked_count -= 1;
                verdicts.push(self.judge(proposal));
            }
        }
        verdicts
    }

    /// A proposal read; its verdict now, or nothing while it waits for its epoch (plus the earliest parked one,
    /// refused, when the parking is full).
    pub fn on_proposal(&mut self, proposal: Proposal) -> Vec<Verdict> {
        if proposal.epoch <= self.epoch {
            return vec![self.judge(proposal)];
        }
        self.parked.entry(proposal.epoch).or_default().push(proposal);
        self.parked_count += 1;
        let mut verdicts = Vec::new();
        while self.parked_count > self.parked_limit {
            let Some(mut first) = self.parked.first_entry() else { break };
            let proposal = first.get_mut().remove(0);
            if first.get().is_empty() {
                first.remove();
            }
            self.parked_count -= 1;
            let reason = format!(
                "it names roster epoch {}, which the roster has not reached (at {}), and {} proposals wait for later \
                 epochs",
                proposal.epoch, self.epoch, self.parked_limit
            );
            verdicts.push(Verdict::Refuse { proposal, reason });
        }
        verdicts
    }

    fn forget_before(&mut self, epoch: u64) {
        self.known_from = self.known_from.max(epoch);
        while self.changes.front().is_some_and(|c| c.epoch <= self.known_from) {
            self.changes.pop_front();
        }
    }

    /// The live members at `epoch` (at or after `known_from`, at or before `self.epoch`).
    fn live_at(&self, epoch: u64) -> BTreeSet<AgentId> {
        let mut status: BTreeMap<&AgentId, Option<MemberStatus>> =
            self.status.iter().map(|(id, (s, _))| (id, Some(*s))).collect();
        for change in self.changes.iter().rev().take_while(|c| c.epoch > epoch) {
            status.insert(&change.id, change.before);
        }
        status.into_iter().filter(|(_, s)| *s == Some(MemberStatus::Live)).map(|(id, _)| id.clone()).collect()
    }

    fn judge(&self, proposal: Proposal) -> Verdict {
        if proposal.epoch < self.known_from {
            let reason = format!(
                "it names roster epoch {}, older than the roster history the consensus manager holds (from epoch {})",
                proposal.epoch, self.known_from
            );
            return Verdict::Refuse { proposal, reason };
        }
        let live = self.live_at(proposal.epoch);
        if proposal.voters == live {
            return Verdict::Admit(proposal);
        }
        let missing: Vec<&str> = live.difference(&proposal.voters).map(AgentId::as_str).take(5).collect();
        let extra: Vec<&str> = proposal.voters.difference(&live).map(AgentId::as_str).take(5).collect();
        let reason = format!(
            "its voters are not the live roster at epoch {} ({} live): missing {missing:?}, not live {extra:?}",
            proposal.epoch,
            live.len()
        );
        Verdict::Refuse { proposal, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::AgentProfile;
    use crate::waggle::{DanceInputs, WaggleDance};
    use crate::{Milli, ProposalId, Role};

    fn id(s: &str) -> AgentId {
        s.parse().expect("valid id")
    }

    fn member(name: &str, status: MemberStatus, epoch: u64) -> Member {
        let profile = AgentProfile {
            id: id(name),
            name: name.to_owned(),
            role: Role::new("sales").expect("valid role"),
            capabilities: Vec::new(),
            metadata: BTreeMap::new(),
        };
        Member { profile, status, epoch }
    }

    fn proposal(n: u32, voters: &[&str], epoch: u64) -> Proposal {
        Proposal {
            id: ProposalId::new(format!("p-{n}")).expect("valid id"),
            proposer: id(voters.first().copied().unwrap_or("a")),
            subject: "s".into(),
            action: "a".into(),
            dance: WaggleDance::perform(
                DanceInputs { priority: Milli(500), urgency: Milli(500), confidence: Milli(500), amount_cents: 0 },
                "s",
            ),
            voters: voters.iter().map(|v| id(v)).collect(),
            epoch,
            created_at_ms: 0,
        }
    }

    /// a, b, c join (epochs 1-3), b dies (4), d joins (5).
    fn roster() -> Admission {
        let mut a = Admission::new();
        for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
            assert!(a.on_member(&member(name, MemberStatus::Live, i as u64 + 1)).is_empty());
        }
        a.on_member(&member("b", MemberStatus::Dead, 4));
        a.on_member(&member("d", MemberStatus::Live, 5));
        a
    }

    fn admitted(v: &[Verdict]) -> Vec<String> {
        v.iter()
            .filter_map(|v| match v {
                Verdict::Admit(p) => Some(p.id.to_string()),
                Verdict::Refuse { .. } => None,
            })
            .collect()
    }

    fn refused(v: &[Verdict]) -> Vec<String> {
        v.iter()
            .filter_map(|v| match v {
                Verdict::Refuse { reason, .. } => Some(reason.clone()),
                Verdict::Admit(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_live_roster_at_the_named_epoch_is_admitted_and_any_other_set_refused() {
        let mut a = roster();
        assert_eq!(admitted(&a.on_proposal(proposal(1, &["a", "b", "c"], 3))), ["p-1"], "epoch 3: a, b, c");
        assert_eq!(admitted(&a.on_proposal(proposal(2, &["a", "c"], 4))), ["p-2"], "epoch 4: b dead");
        assert_eq!(admitted(&a.on_proposal(proposal(3, &["a", "c", "d"], 5))), ["p-3"], "epoch 5: d joined");
        let alone = refused(&a.on_proposal(proposal(4, &["a"], 5)));
        assert!(alone[0].contains("missing [\"c\", \"d\"]"), "{alone:?}");
        let dead = refused(&a.on_proposal(proposal(5, &["a", "b", "c", "d"], 5)));
        assert!(dead[0].contains("not live [\"b\"]"), "{dead:?}");
        let invented = refused(&a.on_proposal(proposal(6, &["a", "c", "d", "zed"], 5)));
        assert!(invented[0].contains("not live [\"zed\"]"), "{invented:?}");
        // The set of another epoch does not pass under this one.
        assert_eq!(refused(&a.on_proposal(proposal(7, &["a", "b", "c"], 5))).len(), 1);
    }

    #[test]
    fn a_proposal_ahead_of_the_roster_waits_for_its_epoch_and_the_verdict_does_not_depend_on_the_wait() {
        let mut early = Admission::new();
        assert!(early.on_proposal(proposal(1, &["a", "b"], 2)).is_empty(), "parked");
        assert!(early.on_proposal(proposal(2, &["a"], 2)).is_empty(), "parked");
        assert_eq!(early.parked(), 2);
        assert!(early.on_member(&member("a", MemberStatus::Live, 1)).is_empty(), "epoch 1 is not 2 yet");
        let verdicts = early.on_member(&member("b", MemberStatus::Live, 2));
        assert_eq!(admitted(&verdicts), ["p-1"]);
        assert_eq!(refused(&verdicts).len(), 1);
        assert_eq!(early.parked(), 0);

        let mut late = Admission::new();
        late.on_member(&member("a", MemberStatus::Live, 1));
        late.on_member(&member("b", MemberStatus::Live, 2));
        late.on_member(&member("b", MemberStatus::Left, 3));
        assert_eq!(admitted(&late.on_proposal(proposal(1, &["a", "b"], 2))), ["p-1"], "judged at 2, not at 3");
        assert_eq!(refused(&late.on_proposal(proposal(2, &["a"], 2))).len(), 1);
    }

    #[test]
    fn epochs_older_than_the_history_and_before_a_hole_are_refused_as_stale() {
        let mut a = Admission::with_limits(2, 10);
        for e in 1..=4 {
            a.on_member(&member(&format!("m{e}"), MemberStatus::Live, e));
        }
        // Changes 3 and 4 are remembered: epochs 2 to 4 are known.
        assert_eq!(admitted(&a.on_proposal(proposal(1, &["m1", "m2"], 2))), ["p-1"]);
        let stale = refused(&a.on_proposal(proposal(2, &["m1"], 1)));
        assert!(stale[0].contains("older than the roster history"), "{stale:?}");

        let mut holed = Admission::new();
        holed.on_member(&member("a", MemberStatus::Live, 1));
        holed.on_member(&member("b", MemberStatus::Live, 5));
        assert_eq!(refused(&holed.on_proposal(proposal(3, &["a"], 1))).len(), 1, "epochs 2-4 were never read");
        assert_eq!(admitted(&holed.on_proposal(proposal(4, &["a", "b"], 5))), ["p-4"]);
        // A republication of older news changes nothing.
        holed.on_member(&member("a", MemberStatus::Live, 1));
        assert_eq!(admitted(&holed.on_proposal(proposal(5, &["a", "b"], 5))), ["p-5"]);
    }

    #[test]
    fn parking_is_bounded_and_the_earliest_parked_is_refused_first() {
        let mut a = Admission::with_limits(10, 2);
        assert!(a.on_proposal(proposal(1, &["a"], 7)).is_empty());
        assert!(a.on_proposal(proposal(2, &["a"], 9)).is_empty());
        let v = a.on_proposal(proposal(3, &["a"], 8));
        let Verdict::Refuse { proposal, reason } = &v[0] else { panic!("refused: {v:?}") };
        assert_eq!(proposal.id.as_str(), "p-1", "the lowest epoch waits longest for nothing");
        assert!(reason.contains("has not reached"), "{reason}");
        assert_eq!(a.parked(), 2);
    }

    #[test]
    fn the_history_survives_a_snapshot() {
        let a = roster();
        let copy: Admission = serde_json::from_str(&serde_json::to_string(&a).expect("json")).expect("back");
        assert_eq!(copy, a);
    }
}
