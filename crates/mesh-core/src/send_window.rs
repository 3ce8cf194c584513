//! How much work an agent starts on its own while earlier work is still unacknowledged: an AIMD window, as TCP's.
//!
//! Why: an agent's tasks follow a schedule (open loop), and the broker does not say "slow down"; it answers later,
//! then not at all. With 500 agent processes on two cores, each kept starting its 10 tasks a second while the starved
//! broker acknowledged fewer and fewer; sends timed out, were retried, and every agent ended up with 2,000 retrying
//! sends whose timers, allocations and queue scans took the cores the broker needed (`mesh bench --agents 500`, the
//! load average reached 780 and nothing was delivered). The window turns each agent into a closed loop on what the
//! broker actually acknowledges: a tick that finds the window full is shed (counted, not sent) instead of queued.
//!
//! Rule: the window grows by `1 / window` per acknowledgement faster than [`WindowConfig::slow_ack`] (about one
//! more send per window's worth of acknowledgements) and halves on a slower or failed one, at most once per
//! `slow_ack` (the cut reacts to one episode of congestion, not to each of the sends that met it). It never falls
//! below one send, so an agent always probes, and a healthy broker (acknowledgements in milliseconds) never limits
//! it. Only work the agent starts itself is windowed: answers and votes finish inputs that are already read, and
//! holding them back would only keep those inputs uncommitted.
//!
//! Time is passed in (ms on any monotonic clock); nothing here reads a clock.

/// The window's bounds and the acknowledgement time that counts as congestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Sends in flight allowed at start: enough that a healthy agent's first seconds are never limited.
    pub initial: u32,
    /// The most the window grows to.
    pub max: u32,
    /// An acknowledgement slower than this (ms), or a send that failed, cuts the window.
    pub slow_ack_ms: u64,
}

impl Default for WindowConfig {
    /// 64 to start (an agent at 1,250 tasks a second with 20 ms acknowledgements keeps 25 in flight), 2,000 at most,
    /// and 500 ms for a slow acknowledgement: 30 times the slowest seen on a healthy 2-core machine at 10,000 msg/s
    /// (docs/bench.md), and a twentieth of the 10 s send timeout, so the window closes long before sends fail.
    fn default() -> Self {
        Self { initial: 64, max: 2_000, slow_ack_ms: 500 }
    }
}

/// What became of a windowed send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Acknowledged after this many ms (retries included).
    Acknowledged {
        /// Time from starting the send to its acknowledgement.
        took_ms: u64,
    },
    /// Ended without an acknowledgement (given up, or refused).
    Failed,
}

/// The window and the sends it holds.
#[derive(Debug, Clone)]
pub struct SendWindow {
    config: WindowConfig,
    /// The window, in sends; a fraction so that growth by `1 / window` adds up.
    size: f64,
    in_flight: u32,
    /// No cut before this time (ms): one cut per `slow_ack` episode.
    next_cut_ms: u64,
    cuts: u64,
}

impl SendWindow {
    /// A window at `config.initial`, nothing in flight.
    #[must_use]
    pub fn new(config: WindowConfig) -> Self {
        let max = config.max.max(1);
        let initial = config.initial.clamp(1, max);
        Self {
            config: WindowConfig { initial, max, ..config },
            size: f64::from(initial),
            in_flight: 0,
            next_cut_ms: 0,
            cuts: 0,
        }
    }

    /// Takes a place for a new send if the window has one. `false` means shed this piece of work.
    pub fn try_start(&mut self) -> bool {
        if f64::from(self.in_flight) < self.size.floor() {
            self.in_flight += 1;
            true
        } else {
            false
        }
    }

    /// Gives back a place taken by [`Self::try_start`] for a send that never started (nobody to send it to),
    /// without judging the window by it.
    pub fn cancel(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Gives back the place of a send started with [`Self::try_start`], and adjusts the window by how it went.
    pub fn settle(&mut self, now_ms: u64, settled: Settled) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let congested = match settled {
            Settled::Acknowledged { took_ms } => took_ms > self.config.slow_ack_ms,
            Settled::Failed => true,
        };
        if !congested {
            self.size = (self.size + 1.0 / self.size).min(f64::from(self.config.max));
        } else if now_ms >= self.next_cut_ms {
            self.size = (self.size / 2.0).max(1.0);
            self.next_cut_ms = now_ms.saturating_add(self.config.slow_ack_ms);
            self.cuts += 1;
        }
    }

    /// Sends the window allows now.
    #[must_use]
    pub fn size(&self) -> u32 {
        // Bounded by `config.max`, a u32.
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "1 <= size <= max: u32")]
        let size = self.size.floor() as u32;
        size
    }

    /// Windowed sends not settled yet.
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// How many times the window was cut: congestion episodes this agent met.
    #[must_use]
    pub fn cuts(&self) -> u64 {
        self.cuts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn window(initial: u32, max: u32) -> SendWindow {
        SendWindow::new(WindowConfig { initial, max, slow_ack_ms: 500 })
    }

    fn fast() -> Settled {
        Settled::Acknowledged { took_ms: 5 }
    }

    #[test]
    fn a_full_window_sheds_until_a_send_settles() {
        let mut w = window(2, 10);
        assert!(w.try_start());
        assert!(w.try_start());
        assert!(!w.try_start(), "a third send in a window of two");
        w.settle(0, fast());
        assert!(w.try_start(), "a settled send frees its place");
    }

    #[test]
    fn a_cancelled_place_is_given_back_without_changing_the_window() {
        let mut w = window(1, 10);
        assert!(w.try_start());
        w.cancel();
        assert_eq!((w.in_flight(), w.size(), w.cuts()), (0, 1, 0));
        assert!(w.try_start());
    }

    #[test]
    fn a_slow_or_failed_send_halves_the_window_once_per_episode() {
        let mut w = window(64, 2_000);
        w.settle(1_000, Settled::Acknowledged { took_ms: 501 });
        assert_eq!(w.size(), 32);
        // The rest of the same episode: no further cut within slow_ack.
        w.settle(1_200, Settled::Failed);
        w.settle(1_499, Settled::Acknowledged { took_ms: 9_000 });
        assert_eq!(w.size(), 32);
        w.settle(1_500, Settled::Failed);
        assert_eq!(w.size(), 16);
        assert_eq!(w.cuts(), 2);
    }

    #[test]
    fn an_acknowledgement_at_the_threshold_is_not_congestion() {
        let mut w = window(4, 100);
        w.settle(0, Settled::Acknowledged { took_ms: 500 });
        assert_eq!(w.cuts(), 0);
        assert!(w.size() >= 4);
    }

    #[test]
    fn the_window_never_closes_and_reopens_by_one_per_window_of_acknowledgements() {
        let mut w = window(8, 100);
        for t in 0..20 {
            w.settle(t * 1_000, Settled::Failed);
        }
        assert_eq!(w.size(), 1, "cut to the floor, never below");
        assert!(w.try_start(), "one send is always allowed: the agent keeps probing");
        w.settle(30_000, fast());
        assert_eq!(w.size(), 2);
        // From 2: + 1/2, + 1/2.5, + 1/2.9: the third acknowledgement makes 3.
        w.settle(30_001, fast());
        w.settle(30_002, fast());
        assert_eq!(w.size(), 2);
        w.settle(30_003, fast());
        assert_eq!(w.size(), 3);
    }

    #[test]
    fn growth_stops_at_the_maximum() {
        let mut w = window(3, 4);
        for t in 0..100 {
            w.settle(t, fast());
        }
        assert_eq!(w.size(), 4);
    }

    #[test]
    fn initial_is_clamped_into_one_to_max() {
        assert_eq!(window(0, 10).size(), 1);
        assert_eq!(window(50, 10).size(), 10);
        assert_eq!(window(5, 0).size(), 1);
    }

    proptest! {
        /// Whatever the acknowledgements, the window stays within [1, max], and the sends in flight never exceed the
        /// window they were admitted under nor go below zero.
        #[test]
        fn in_flight_never_exceeds_what_the_window_admitted(
            ops in proptest::collection::vec((any::<bool>(), 0u64..2_000, any::<bool>()), 1..400),
            initial in 0u32..100,
            max in 0u32..200,
        ) {
            let mut w = window(initial, max);
            let mut started = 0u32;
            let mut now = 0u64;
            for (start, took, failed) in ops {
                now += took / 4;
                if start {
                    let size_before = w.size();
                    if w.try_start() {
                        started += 1;
                        prop_assert!(w.in_flight() <= size_before);
                    } else {
                        prop_assert!(w.in_flight() >= size_before);
                    }
                } else if started > 0 {
                    started -= 1;
                    w.settle(now, if failed { Settled::Failed } else { Settled::Acknowledged { took_ms: took } });
                }
                prop_assert_eq!(w.in_flight(), started);
                prop_assert!(w.size() >= 1 && w.size() <= max.max(1));
            }
        }
    }
}
