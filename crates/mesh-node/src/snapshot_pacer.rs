//! When a manager takes its next snapshot: every snapshot interval, but never so often that snapshots take more than
//! a tenth of the manager's time.
//!
//! Why: a snapshot is encoded on the manager's event loop and costs in proportion to the state. Under a flood of
//! votes for proposals that never come, the consensus manager's state held 100,000 buffered inputs (12 MB of JSON);
//! encoding it every 500 ms took 77 % of the manager's time (profiled), its reading fell behind, and in a CI run
//! with another test beside it no decision was made for 100 s. Pacing the snapshots by their own cost keeps the
//! loop's share at nine tenths at least, whatever the state grows to; the only price is a longer replay after a crash
//! (the log holds everything since the last snapshot).

use std::time::Duration;

/// The least time between two snapshots, as a multiple of what the last one took: 9 x its cost leaves 90 % for the
/// loop's own work.
const COST_MULTIPLE: u32 = 9;

/// Paces a manager's snapshots (pure: times come in as arguments).
#[derive(Debug, Clone)]
pub(crate) struct SnapshotPacer {
    interval: Duration,
    /// When the last snapshot was taken (ms since the Unix epoch); 0 before the first, so the first is due at once.
    last_ms: u64,
    /// The least time to the next one.
    gap: Duration,
}

impl SnapshotPacer {
    /// A snapshot every `interval`, the first at once.
    pub(crate) fn new(interval: Duration) -> Self {
        Self { interval, last_ms: 0, gap: interval }
    }

    /// Whether a snapshot is due at `now_ms`.
    pub(crate) fn due(&self, now_ms: u64) -> bool {
        u128::from(now_ms.saturating_sub(self.last_ms)) >= self.gap.as_millis()
    }

    /// A snapshot was taken at `now_ms` and encoding it took `took`.
    pub(crate) fn taken(&mut self, now_ms: u64, took: Duration) {
        self.last_ms = now_ms;
        self.gap = self.interval.max(took.saturating_mul(COST_MULTIPLE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheap_snapshots_follow_the_interval_and_costly_ones_keep_to_a_tenth_of_the_time() {
        let mut p = SnapshotPacer::new(Duration::from_millis(500));
        assert!(p.due(1_000), "the first at once");
        p.taken(1_000, Duration::from_millis(2));
        assert!(!p.due(1_499));
        assert!(p.due(1_500), "cheap: every interval");
        // One that took 300 ms: the next waits 2.7 s, so snapshots take 300 of every 3,000 ms.
        p.taken(1_500, Duration::from_millis(300));
        assert!(!p.due(1_500 + 2_699));
        assert!(p.due(1_500 + 2_700));
        // Cheap again: back to the interval.
        p.taken(5_000, Duration::from_millis(1));
        assert!(p.due(5_500));
    }
}
