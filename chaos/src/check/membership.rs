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
