//! A voter's side of Bee consensus: at most one support per subject among the proposals it has not seen decided.
//!
//! Why the rule exists: a quorum above one half of a fixed voter set makes any two accepting sets share a voter, so
//! two exclusive proposals (same subject) can both be accepted only through a voter that supported both. Why it is
//! not "one support per subject forever" (what agents once did, rejecting 13 of 27 proposals in a run): Seeley's
//! scouts re-evaluate once a site is chosen, and a later proposal on a decided subject is a new question. So a
//! support is held from the vote until the voter reads that proposal's decision, and then the subject is free.
//!
//! What that buys, together with the consensus manager appending the inhibition of every pending rival *before* it
//! publishes an acceptance (`BeeConsensus` orders its commands so): a proposal that was pending when a rival on its
//! subject was accepted is never accepted itself. A support given after reading the acceptance lands behind the
//! rival's inhibition in the log, and a support given before it came from a voter that did not support the accepted
//! one. `mesh-core/tests/it/safety.rs` checks this over random interleavings, and that each half of it is needed.
//!
//! The held supports live in memory: a voter restarted while a proposal it supported is pending starts with none, and
//! its new vote on a rival may count (the manager's arrival-time cross-inhibition still suppresses the weaker of two
//! pending rivals, but only once its marker is read back). `docs/protocol.md` states this.

use std::collections::BTreeMap;

use crate::consensus::{Decision, Proposal, Vote};
use crate::{AgentId, Milli, ProposalId};

/// What the voter's role thinks of a proposal, before the one-support rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    /// Whether the role would support it.
    pub support: bool,
    /// How strongly (0..=1000).
    pub intensity: Milli,
}

/// One agent's votes: the one-support-per-subject rule and its lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Voter {
    me: Option<AgentId>,
    /// Subject → the proposal this voter supports on it and has not seen decided.
    supporting: BTreeMap<String, ProposalId>,
}

impl Voter {
    /// The voter `me`, holding no support.
    pub fn new(me: AgentId) -> Self {
        Self { me: Some(me), supporting: BTreeMap::new() }
    }

    /// A proposal read: the vote to publish, or `None` when this voter is not in its voter set. A support is turned
    /// into opposition while the voter supports another undecided proposal on the subject. Asking again about the
    /// same proposal gives the same vote.
    pub fn on_proposal(&mut self, proposal: &Proposal, preference: Preference) -> Option<Vote> {
        let me = self.me.clone()?;
        if !proposal.voters.contains(&me) {
            return None;
        }
        let support = preference.support
            && match self.supporting.get(&proposal.subject) {
                Some(held) => *held == proposal.id,
                None => {
                    self.supporting.insert(proposal.subject.clone(), proposal.id.clone());
                    true
                }
            };
        Some(Vote { proposal: proposal.id.clone(), voter: me, support, intensity: preference.intensity })
    }

    /// A decision read: if it decides the proposal this voter supports on its subject, the subject is free again.
    pub fn on_decision(&mut self, decision: &Decision) {
        if self.supporting.get(&decision.subject) == Some(&decision.proposal) {
            self.supporting.remove(&decision.subject);
        }
    }

    /// The undecided proposal this voter supports on `subject`, if any.
    pub fn supporting(&self, subject: &str) -> Option<&ProposalId> {
        self.supporting.get(subject)
    }

    /// Supports held (subjects with an undecided supported proposal).
    pub fn held(&self) -> usize {
        self.supporting.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::consensus::Outcome;
    use crate::waggle::{DanceInputs, WaggleDance};

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid")
    }

    fn proposal(name: &str, subject: &str) -> Proposal {
        let inputs = DanceInputs { priority: Milli(500), urgency: Milli(500), confidence: Milli(500), amount_cents: 0 };
        Proposal {
            id: ProposalId::new(name).expect("valid"),
            proposer: id("p"),
            subject: subject.into(),
            action: "act".into(),
            dance: WaggleDance::perform(inputs, subject),
            voters: ["v", "w"].into_iter().map(id).collect::<BTreeSet<_>>(),
            epoch: 1,
            created_at_ms: 0,
        }
    }

    fn decided(p: &Proposal) -> Decision {
        Decision {
            proposal: p.id.clone(),
            subject: p.subject.clone(),
            action: p.action.clone(),
            outcome: Outcome::Accepted,
            supports: 2,
            against: 0,
            voters: 2,
            needed: 2,
            support_intensity: 1000,
        }
    }

    const YES: Preference = Preference { support: true, intensity: Milli(700) };

    #[test]
    fn one_support_per_subject_until_its_decision_is_read() {
        let mut v = Voter::new(id("v"));
        let (a, b, c) = (proposal("a", "s"), proposal("b", "s"), proposal("c", "other"));
        assert!(v.on_proposal(&a, YES).expect("a voter").support);
        assert!(!v.on_proposal(&b, YES).expect("a voter").support, "a is still undecided");
        assert!(v.on_proposal(&c, YES).expect("a voter").support, "another subject");
        assert!(v.on_proposal(&a, YES).expect("a voter").support, "asked again: the same vote");
        v.on_decision(&decided(&b));
        assert_eq!(v.supporting("s"), Some(&a.id), "b's decision frees nothing");
        v.on_decision(&decided(&a));
        assert_eq!(v.supporting("s"), None);
        let d = proposal("d", "s");
        assert!(v.on_proposal(&d, YES).expect("a voter").support, "re-evaluated after the decision");
    }

    #[test]
    fn opposition_holds_nothing_and_strangers_do_not_vote() {
        let mut v = Voter::new(id("v"));
        let no = Preference { support: false, intensity: Milli(0) };
        assert!(!v.on_proposal(&proposal("a", "s"), no).expect("a voter").support);
        assert_eq!(v.held(), 0);
        let mut x = Voter::new(id("x"));
        assert_eq!(x.on_proposal(&proposal("a", "s"), YES), None);
    }
}
