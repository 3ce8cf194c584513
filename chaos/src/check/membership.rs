//! After convergence the membership equals the set of live agents: every agent whose process runs is `live` in
//! the roster the topology manager publishes, and no other agent is.

use std::collections::BTreeSet;

use mesh_core::membership::MemberStatus;

use super::CheckResult;
use crate::observe::Observed;

/// Name of this invariant.
pub const NAME: &str = "membership-equals-live-set";

/// Agent ids the roster says are live.
pub fn live_in_roster(o: &Observed) -> BTreeSet<String> {
    o.members.iter().filter(|(_, (s, _, _))| *s == MemberStatus::Live).map(|(id, _)| id.clone()).collect()
}

/// Compares the roster with `running`, the agent ids whose processes are READY.
pub fn check(o: &Observed, running: &BTreeSet<String>) -> CheckResult {
    let roster = live_in_roster(o);
    CheckResult::holds(
        NAME,
        &roster == running,
        format!(
            "roster live {{{}}}, running {{{}}}",
            roster.iter().cloned().collect::<Vec<_>>().join(","),
            running.iter().cloned().collect::<Vec<_>>().join(",")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;

    #[test]
    fn the_roster_must_name_exactly_the_running_agents() {
        let mut o = Observed::default();
        o.members.insert("a".into(), (MemberStatus::Live, 1, 0));
        o.members.insert("b".into(), (MemberStatus::Dead, 2, 0));
        let running = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert_eq!(check(&o, &running(&["a"])).verdict, Verdict::Pass);
        assert_eq!(check(&o, &running(&["a", "b"])).verdict, Verdict::Fail, "b runs but the roster says dead");
        assert_eq!(check(&o, &running(&[])).verdict, Verdict::Fail, "a is live in the roster but not running");
    }
}
