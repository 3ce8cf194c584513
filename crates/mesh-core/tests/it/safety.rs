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
            if let ConsensusCommand::Publish(d) = c
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
