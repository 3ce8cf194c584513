//! The supervisor's restart policy as a pure state machine: exponential backoff with full jitter, a reset after a
//! stable run, and an OTP-style intensity limit (at most N restarts within T, then FAILED).
//!
//! It fixes what users of other supervisors complain about: fixed delays (here the delay doubles and is jittered so
//! a crash-looping fleet does not restart in lockstep), lifetime restart counts (here only restarts inside the
//! sliding window count), and operator stops counted as crashes (here they are not events of this machine at all).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// When a process is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// After any exit, clean or not.
    Always,
    /// Only after a non-zero exit or a signal.
    OnFailure,
    /// Never.
    Never,
}

/// The numbers of the policy, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// First backoff ceiling (default 500 ms).
    pub initial_backoff_ms: u64,
    /// Largest backoff ceiling (default 30 s).
    pub max_backoff_ms: u64,
    /// A run this long after readiness resets the backoff (default 10 s).
    pub stable_after_ms: u64,
    /// At most this many restarts... (default 5)
    pub max_restarts: u32,
    /// ...within this window, else FAILED (default 60 s).
    pub within_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            mode: RestartMode::OnFailure,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            stable_after_ms: 10_000,
            max_restarts: 5,
            within_ms: 60_000,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitKind {
    /// Exit status 0.
    Clean,
    /// Non-zero status, a signal, or a missed watchdog.
    Failure,
}

/// What the supervisor should do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartDecision {
    /// Start it again after this many milliseconds.
    RestartAfter(u64),
    /// Leave it stopped (clean exit under `on-failure`, or `never`).
    Stay,
    /// Too many restarts within the window: give up until an operator restarts it.
    Failed,
}

/// The restart history of one process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartTracker {
    policy: RestartPolicy,
    /// Consecutive failed runs since the last stable run: the backoff exponent.
    attempt: u32,
    /// When recent restarts happened, for the intensity window.
    restarts: VecDeque<u64>,
    /// When the current run became ready, if it did.
    ready_at: Option<u64>,
}

impl RestartTracker {
    /// A fresh history.
    pub fn new(policy: RestartPolicy) -> Self {
        Self { policy, attempt: 0, restarts: VecDeque::new(), ready_at: None }
    }

    /// The policy.
    pub fn policy(&self) -> RestartPolicy {
        self.policy
    }

    /// The process reported readiness at `now_ms`.
    pub fn ready(&mut self, now_ms: u64) {
        self.ready_at = Some(now_ms);
    }

    /// Restarts inside the current window.
    pub fn recent_restarts(&self) -> usize {
        self.restarts.len()
    }

    /// The process exited at `now_ms`. `jitter` is a uniform random sample in `[0, 1)` scaled to `u32::MAX`
    /// (the caller owns the RNG, so tests are deterministic): the delay is a uniform draw in `[0, ceiling]`
    /// ("full jitter"), the ceiling doubling per consecutive failure up to `max_backoff_ms`.
    pub fn exited(&mut self, kind: ExitKind, now_ms: u64, jitter: u32) -> RestartDecision {
        if self.ready_at.is_some_and(|r| now_ms.saturating_sub(r) >= self.policy.stable_after_ms) {
            self.attempt = 0;
        }
        self.ready_at = None;
        let restart = match self.policy.mode {
            RestartMode::Never => false,
            RestartMode::OnFailure => kind == ExitKind::Failure,
            RestartMode::Always => true,
        };
        if !restart {
            return RestartDecision::Stay;
        }
        while self.restarts.front().is_some_and(|t| now_ms.saturating_sub(*t) >= self.policy.within_ms) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.policy.max_restarts as usize {
            return RestartDecision::Failed;
        }
        self.restarts.push_back(now_ms);
        let ceiling =
            self.policy.initial_backoff_ms.saturating_mul(1u64 << self.attempt.min(32)).min(self.policy.max_backoff_ms);
        self.attempt = self.attempt.saturating_add(1);
        RestartDecision::RestartAfter(ceiling * u64::from(jitter) / u64::from(u32::MAX))
    }

    /// An operator restarted it by hand (`mesh restart`): forget the history.
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.restarts.clear();
        self.ready_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX_JITTER: u32 = u32::MAX;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RestartPolicy { max_restarts: 100, within_ms: 1, ..RestartPolicy::default() };
        let mut t = RestartTracker::new(policy);
        let mut ceilings = Vec::new();
        for i in 0..10 {
            match t.exited(ExitKind::Failure, i * 1000, MAX_JITTER) {
                RestartDecision::RestartAfter(d) => ceilings.push(d),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        assert_eq!(t.exited(ExitKind::Failure, 0, MAX_JITTER), RestartDecision::RestartAfter(500));
        t.ready(1_000);
        assert_eq!(t.exited(ExitKind::Failure, 2_000, MAX_JITTER), RestartDecision::RestartAfter(1000));
        t.ready(3_000);
        // Ready for 10 s: stable, back to the first ceiling.
        assert_eq!(t.exited(ExitKind::Failure, 13_000, MAX_JITTER), RestartDecision::RestartAfter(500));
    }

    #[test]
    fn intensity_limit_fails_a_crash_loop_but_old_restarts_age_out() {
        let mut t = RestartTracker::new(RestartPolicy::default());
        for i in 0..5 {
            assert!(matches!(t.exited(ExitKind::Failure, i * 100, 0), RestartDecision::RestartAfter(_)));
        }
        assert_eq!(t.exited(ExitKind::Failure, 600, 0), RestartDecision::Failed);
        // A minute later the window is empty again: not a lifetime count.
        let mut t = RestartTracker::new(RestartPolicy::default());
        for i in 0..5 {
            t.exited(ExitKind::Failure, i * 100, 0);
        }
        assert!(matches!(t.exited(ExitKind::Failure, 60_500, 0), RestartDecision::RestartAfter(_)));
    }

    #[test]
    fn modes_decide_which_exits_restart() {
        let mut on_failure = RestartTracker::new(RestartPolicy::default());
        assert_eq!(on_failure.exited(ExitKind::Clean, 0, 0), RestartDecision::Stay);
        let mut never = RestartTracker::new(RestartPolicy { mode: RestartMode::Never, ..RestartPolicy::default() });
        assert_eq!(never.exited(ExitKind::Failure, 0, 0), RestartDecision::Stay);
        let mut always = RestartTracker::new(RestartPolicy { mode: RestartMode::Always, ..RestartPolicy::default() });
        assert_eq!(always.exited(ExitKind::Clean, 0, 0), RestartDecision::RestartAfter(0));
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_the_cap(exits in proptest::collection::vec((0u64..5_000, any::<u32>()), 1..50)) {
            let mut t = RestartTracker::new(RestartPolicy::default());
            let mut now = 0;
            for (gap, jitter) in exits {
                now += gap;
                if let RestartDecision::RestartAfter(d) = t.exited(ExitKind::Failure, now, jitter) {
                    prop_assert!(d <= 30_000);
                }
                prop_assert!(t.recent_restarts() <= 5);
            }
        }
    }
}
