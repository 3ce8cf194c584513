//! Every scenario ends with everything healed: no link left faulty, no process left stopped (SIGSTOP).

use super::CheckResult;

/// Name of this invariant.
pub const NAME: &str = "nothing-left-broken";

/// `faulty_links` are links whose proxy is not passing traffic; `stopped` are processes in state T.
pub fn check(faulty_links: &[String], stopped: &[String]) -> CheckResult {
    CheckResult::holds(
        NAME,
        faulty_links.is_empty() && stopped.is_empty(),
        if faulty_links.is_empty() && stopped.is_empty() {
            "all links pass, no process stopped".to_owned()
        } else {
            format!("links still faulty: {faulty_links:?}; processes still stopped: {stopped:?}")
        },
    )
}
