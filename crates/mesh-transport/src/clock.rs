//! The wall clock every process of the mesh stamps its records, events and latency samples with, read in this one
//! place: a sample is only comparable with a stamp from another process if both read the same clock the same way.
//! The core's state machines never read it; the runtimes pass the time in.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Microseconds since the Unix epoch: send stamps for latency measurement, never state.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_units_read_the_same_clock() {
        let (ms, us) = (now_ms(), now_us());
        assert!(us / 1000 >= ms && us / 1000 - ms < 1_000, "{ms} ms vs {us} µs");
    }
}
