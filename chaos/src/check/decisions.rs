//! Every proposal is decided at most once and never contradicted: all decision records of a proposal agree, Redis
//! stores the same decision, and a crash-free replay of the proposals and votes decides it the same way.
//!
//! The decisions checked are a copy taken before Redis and the inputs are read (see [`check`]): a decision is
//! stored before it is published and published after its inputs were read, so each of those reads, made later,
//! holds everything that decision depends on.

use std::collections::BTreeMap;

use mesh_core::consensus::{ConsensusParams, Decision};

use super::{CheckResult, Verdict};
use crate::observe::Observed;

/// Name of this invariant.
pub const NAME: &str = "decisions-never-contradicted";

/// Decisions replayed from the proposals and votes the tail read.
pub fn replay(o: &Observed, params: ConsensusParams) -> BTreeMap<String, Decision> {
    mesh_node::consensus::replay_log(params, o.consensus_inputs.iter().cloned())
}

/// Decision records per proposal id, as the tail read them.
pub type Published = BTreeMap<String, Vec<Decision>>;

/// Contradicting copies of a decision (the count that must be zero).
pub fn contradicted(published: &Published) -> Vec<String> {
    published.iter().filter(|(_, v)| v.iter().any(|d| d != &v[0])).map(|(id, _)| id.clone()).collect()
}

/// `published` is a copy of the decisions the tail had read, taken before `stored` (the decisions hash in Redis,
/// proposal id → decision JSON) was read and before the tail caught up with the proposals and votes in `o`.
pub fn check(
    published: &Published,
    o: &Observed,
    stored: &BTreeMap<String, String>,
    params: ConsensusParams,
) -> CheckResult {
    if published.is_empty() {
        return CheckResult::new(NAME, Verdict::Unknown, "no decision was published: nothing to check");
    }
    let contradicted = contradicted(published);
    if let Some(id) = contradicted.first() {
        return CheckResult::holds(
            NAME,
            false,
            format!("{} proposals decided differently twice, e.g. {id}", contradicted.len()),
        );
    }
    for (id, copies) in published {
        match stored.get(id).map(|s| serde_json::from_str::<Decision>(s)) {
            Some(Ok(d)) if d == copies[0] => {}
            Some(Ok(d)) => {
                return CheckResult::holds(
                    NAME,
                    false,
                    format!("{id}: Kafka says {:?}, Redis {:?}", copies[0].outcome, d.outcome),
                );
            }
            Some(Err(e)) => {
                return CheckResult::holds(NAME, false, format!("{id}: Redis holds an unreadable decision: {e}"));
            }
            None => {
                return CheckResult::holds(NAME, false, format!("{id}: published on Kafka but not stored in Redis"));
            }
        }
    }
    let replayed = replay(o, params);
    for (id, copies) in published {
        if replayed.get(id) != Some(&copies[0]) {
            return CheckResult::holds(
                NAME,
                false,
                format!(
                    "{id}: published {:?}, a crash-free replay decides {:?}",
                    copies[0].outcome,
                    replayed.get(id).map(|d| &d.outcome)
                ),
            );
        }
    }
    let republished: usize = published.values().map(|v| v.len() - 1).sum();
    CheckResult::holds(
        NAME,
        true,
        format!(
            "{} proposals decided once each ({republished} identical re-publications), equal in Redis and in a replay",
            published.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use mesh_core::ProposalId;
    use mesh_core::consensus::Outcome;

    use super::*;

    fn decision(outcome: Outcome) -> Decision {
        Decision {
            proposal: ProposalId::new("p1").expect("id"),
            subject: "s".into(),
            action: "a".into(),
            outcome,
            supports: 3,
            against: 0,
            voters: 4,
            needed: 3,
            support_intensity: 3,
        }
    }

    #[test]
    fn contradicting_copies_fail_and_redis_must_agree() {
        let params = ConsensusParams::default();
        let o = Observed::default();
        assert_eq!(check(&Published::new(), &o, &BTreeMap::new(), params).verdict, Verdict::Unknown);

        let mut published = Published::new();
        published.insert("p1".into(), vec![decision(Outcome::Accepted), decision(Outcome::Expired)]);
        assert_eq!(contradicted(&published), vec!["p1".to_owned()]);
        let c = check(&published, &o, &BTreeMap::new(), params);
        assert!(c.verdict == Verdict::Fail && c.detail.contains("decided differently"), "{c:?}");

        published.insert("p1".into(), vec![decision(Outcome::Accepted), decision(Outcome::Accepted)]);
        assert!(contradicted(&published).is_empty(), "an identical re-publication is not a contradiction");
        let missing = check(&published, &o, &BTreeMap::new(), params);
        assert!(missing.verdict == Verdict::Fail && missing.detail.contains("not stored"), "{missing:?}");
        let other = serde_json::to_string(&decision(Outcome::Rejected)).expect("json");
        let differs = check(&published, &o, &BTreeMap::from([("p1".to_owned(), other)]), params);
        assert!(differs.verdict == Verdict::Fail && differs.detail.contains("Redis"), "{differs:?}");
        // Stored and published agree, but nothing in the log explains the decision: the replay disagrees.
        let same = serde_json::to_string(&decision(Outcome::Accepted)).expect("json");
        let unexplained = check(&published, &o, &BTreeMap::from([("p1".to_owned(), same)]), params);
        assert!(unexplained.verdict == Verdict::Fail && unexplained.detail.contains("replay"), "{unexplained:?}");
    }
}
