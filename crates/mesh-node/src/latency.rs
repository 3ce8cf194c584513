//! Latency histograms an agent keeps and publishes with its stats, so `mesh bench` can merge them across hundreds
//! of processes without shipping every sample: HdrHistogram keeps 3 significant digits from 1 µs to 10 minutes in
//! a few kilobytes, and two histograms subtract, which turns cumulative snapshots into a measurement window.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Largest latency kept, in µs (10 minutes); larger values are clamped to it.
const MAX_US: u64 = 600_000_000;

/// One latency distribution in microseconds.
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram of 1 µs to 10 minutes at 3 significant digits.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, MAX_US, 3).unwrap_or_else(|_| unreachable!("valid fixed bounds"));
        Self { hist }
    }

    /// Records one latency; zero (clock granularity) counts as 1 µs.
    pub fn record(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, MAX_US));
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The histogram itself, for percentiles.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Adds another distribution (another agent's, for example).
    pub fn add(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// Removes an earlier snapshot of the same cumulative histogram, leaving what was recorded in between.
    pub fn subtract(&mut self, earlier: &Latency) -> Result<(), String> {
        self.hist.subtract(&earlier.hist).map_err(|e| format!("not an earlier snapshot: {e:?}"))
    }

    /// Base64 of the HdrHistogram V2 encoding: a Redis hash field.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::new();
        match V2Serializer::new().serialize(&self.hist, &mut bytes) {
            Ok(_) => STANDARD.encode(bytes),
            Err(e) => unreachable!("serializing to memory cannot fail: {e:?}"),
        }
    }

    /// Reads what [`Latency::encode`] wrote.
    pub fn decode(text: &str) -> Result<Self, String> {
        let bytes = STANDARD.decode(text.trim()).map_err(|e| format!("not base64: {e}"))?;
        let read: Histogram<u64> =
            Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| format!("not a histogram: {e:?}"))?;
        let mut latency = Self::new();
        latency.hist.add(&read).map_err(|e| format!("histogram out of bounds: {e:?}"))?;
        Ok(latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_survives_encoding_and_windows_subtract() {
        let mut a = Latency::new();
        for us in [0, 5, 900, 1_500, 40_000] {
            a.record(us);
        }
        let early = Latency::decode(&a.encode()).expect("decode");
        assert_eq!(early.len(), 5);
        assert_eq!(early.histogram().max(), a.histogram().max());
        a.record(2_000_000);
        let mut window = Latency::decode(&a.encode()).expect("decode");
        window.subtract(&early).expect("subtract");
        assert_eq!(window.len(), 1);
        assert!(window.histogram().value_at_quantile(0.5) >= 1_999_000);
        assert!(Latency::decode("not base64!").is_err());
    }
}
