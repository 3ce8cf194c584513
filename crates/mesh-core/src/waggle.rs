//! The waggle dance: how strongly a proposer advertises a proposal, from its priority, urgency, confidence and amount.
//!
//! A honeybee scout advertises a site with a dance whose vigour reflects the site's quality; competing dances on
//! the same site inhibit each other and the stronger wins. Here the dance is a pure function of the proposal's
//! inputs, so any reader can recompute and check it, and its intensity ranks competing proposals.

use serde::{Deserialize, Serialize};

use crate::Milli;

/// What the proposer knows about the proposal; each fraction in thousandths (0..=1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DanceInputs {
    /// How important the proposal is.
    pub priority: Milli,
    /// How soon it matters.
    pub urgency: Milli,
    /// How sure the proposer is.
    pub confidence: Milli,
    /// Money at stake, in cents (0 when not about money).
    pub amount_cents: u64,
}

/// The dance itself, published inside the proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaggleDance {
    /// Strength of the advertisement, 0..=1000.
    pub intensity: Milli,
    /// How long the waggle run lasts, in milliseconds.
    pub duration_ms: u32,
    /// Direction of the run, in degrees 0..360: derived from the subject, so dances for the same subject align.
    pub angle_deg: u16,
    /// How many times the run is repeated.
    pub repetitions: u16,
}

impl WaggleDance {
    /// Performs the dance for `inputs` about `subject`. Pure: the same inputs always give the same dance.
    ///
    /// `intensity = min(1000, (4·priority + 3·urgency + 3·confidence) / 10 + boost)`, where `boost` is
    /// `min(200, 40 × digits(amount in whole units))` for amounts of at least one unit (money at stake makes the
    /// dance livelier, by order of magnitude); `duration_ms = 500 + 3·intensity`; `repetitions = 1 + intensity/100`;
    /// `angle_deg` = FNV-1a of the subject mod 360, so dances about the same subject point the same way.
    pub fn perform(inputs: DanceInputs, subject: &str) -> WaggleDance {
        let clamp = |m: Milli| u64::from(m.0.min(1000));
        let base = (4 * clamp(inputs.priority) + 3 * clamp(inputs.urgency) + 3 * clamp(inputs.confidence)) / 10;
        let units = inputs.amount_cents / 100;
        let boost = if units == 0 { 0 } else { (40 * u64::from(units.ilog10() + 1)).min(200) };
        let intensity = u32::try_from((base + boost).min(1000)).unwrap_or(1000);
        WaggleDance {
            intensity: Milli(intensity),
            duration_ms: 500 + 3 * intensity,
            angle_deg: u16::try_from(fnv1a(subject.as_bytes()) % 360).unwrap_or(0),
            repetitions: u16::try_from(1 + intensity / 100).unwrap_or(u16::MAX),
        }
    }

    /// Whether this dance beats `other` in cross-inhibition: higher intensity, then more repetitions.
    /// Ties are broken by the caller (by proposal id).
    pub fn outranks(&self, other: &WaggleDance) -> Option<bool> {
        match (self.intensity, self.repetitions).cmp(&(other.intensity, other.repetitions)) {
            std::cmp::Ordering::Greater => Some(true),
            std::cmp::Ordering::Less => Some(false),
            std::cmp::Ordering::Equal => None,
        }
    }
}

/// 32-bit FNV-1a: stable across runs and platforms, unlike std's randomized hasher.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inputs(p: u32, u: u32, c: u32, cents: u64) -> DanceInputs {
        DanceInputs { priority: Milli(p), urgency: Milli(u), confidence: Milli(c), amount_cents: cents }
    }

    #[test]
    fn exact_dances() {
        let d = WaggleDance::perform(inputs(900, 700, 500, 0), "account:acct-3");
        assert_eq!((d.intensity, d.duration_ms, d.repetitions), (Milli(720), 2660, 8));
        assert_eq!(d.angle_deg, u16::try_from(fnv1a(b"account:acct-3") % 360).expect("small"));
        // 1 234.56 units of money: 4 digits, boost 160.
        let d = WaggleDance::perform(inputs(500, 500, 500, 123_456), "x");
        assert_eq!(d.intensity, Milli(660));
        assert_eq!(WaggleDance::perform(inputs(1000, 1000, 1000, u64::MAX), "x").intensity, Milli(1000));
        assert_eq!(WaggleDance::perform(inputs(0, 0, 0, 99), "x").intensity, Milli(0));
    }

    #[test]
    fn same_subject_same_angle() {
        let a = WaggleDance::perform(inputs(1, 2, 3, 4), "discount:sku-1");
        let b = WaggleDance::perform(inputs(900, 800, 700, 0), "discount:sku-1");
        assert_eq!(a.angle_deg, b.angle_deg);
    }

    #[test]
    fn ranking() {
        let strong = WaggleDance::perform(inputs(900, 900, 900, 0), "s");
        let weak = WaggleDance::perform(inputs(100, 100, 100, 0), "s");
        assert_eq!(strong.outranks(&weak), Some(true));
        assert_eq!(weak.outranks(&strong), Some(false));
        assert_eq!(strong.outranks(&strong), None);
    }

    proptest! {
        #[test]
        fn raising_an_input_never_weakens_the_dance(
            p in 0u32..=1000, u in 0u32..=1000, c in 0u32..=1000, cents in 0u64..10_000_000,
            dp in 0u32..=1000, dc in 0u64..10_000_000,
        ) {
            let base = WaggleDance::perform(inputs(p, u, c, cents), "s");
            prop_assert!(base.intensity <= Milli::ONE);
            let more = WaggleDance::perform(inputs((p + dp).min(1000), u, c, cents + dc), "s");
            prop_assert!(more.intensity >= base.intensity);
            prop_assert!(more.repetitions >= base.repetitions);
        }
    }
}
