//! No orphan process after `mesh down`: every pid the supervisor ever reported for this deployment (and the
//! supervisor itself) is gone, matched by pid and start time so a reused pid is not mistaken for a survivor.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::CheckResult;
use crate::deploy::alive;

/// Name of this invariant.
pub const NAME: &str = "no-orphan-after-down";

/// Waits up to `grace` for every process of `seen` to be gone.
pub fn check(seen: &BTreeSet<(i32, u64)>, grace: Duration) -> CheckResult {
    let deadline = Instant::now() + grace;
    loop {
        let survivors: Vec<i32> = seen.iter().filter(|(pid, start)| alive(*pid, *start)).map(|(p, _)| *p).collect();
        if survivors.is_empty() {
            return CheckResult::holds(NAME, true, format!("{} processes seen, none left", seen.len()));
        }
        if Instant::now() >= deadline {
            return CheckResult::holds(
                NAME,
                false,
                format!("still running {} s after mesh down: pids {survivors:?}", grace.as_secs()),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Verdict;

    #[test]
    fn a_living_process_is_an_orphan_and_a_dead_one_is_not() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let seen: BTreeSet<(i32, u64)> = [(pid, 0)].into();
        assert_eq!(check(&seen, Duration::from_millis(100)).verdict, Verdict::Fail);
        child.kill().expect("kill");
        child.wait().expect("reaped");
        assert_eq!(check(&seen, Duration::from_secs(1)).verdict, Verdict::Pass);
    }
}
