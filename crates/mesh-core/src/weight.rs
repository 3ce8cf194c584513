//! Exact fixed-point numbers in thousandths, so that replaying a log is bit-identical.
//!
//! In floating point `0.5 - 20 * 0.02` is just below `0.1`, so an idle edge would be pruned one tick early, and
//! `0.5 + 5 * 0.1` never reaches the `1.0` cap exactly. Thousandths make both exact.
//!
//! With the default graph parameters (initial weight 0.5, decay 0.02 a tick, prune threshold 0.1), an idle edge weighs
//! exactly 0.1 after 20 ticks and is kept, and the 21st tick prunes it: 105 s at the topology manager's default 5 s
//! decay interval. Five messages take a fresh edge from 0.5 to exactly 1.0.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A quantity in thousandths of one (edge weights, intensities, quorum fractions): `Milli(500)` is 0.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Milli(pub u32);

/// Why a decimal could not become a [`Milli`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightError {
    /// Not a finite number in the accepted range.
    OutOfRange {
        /// The value given.
        value: String,
        /// The largest value accepted.
        max: String,
    },
    /// More than three decimal places: it would be rounded, and replays must not depend on rounding.
    TooPrecise(String),
}

impl fmt::Display for WeightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightError::OutOfRange { value, max } => write!(f, "{value} is outside 0..={max}"),
            WeightError::TooPrecise(v) => write!(f, "{v} has more than three decimal places"),
        }
    }
}

// `mesh-core` depends on serde only, so the `Error` impl is written by hand rather than derived with thiserror.
impl std::error::Error for WeightError {}

impl Milli {
    /// One whole unit: the cap of an edge weight.
    pub const ONE: Milli = Milli(1000);
    /// Zero.
    pub const ZERO: Milli = Milli(0);

    /// Converts a decimal such as `0.02` exactly, refusing values outside `0..=max` or with more than three decimals.
    pub fn from_decimal(value: f64, max: Milli) -> Result<Milli, WeightError> {
        let scaled = value * 1000.0;
        let rounded = scaled.round();
        if !value.is_finite() || rounded < 0.0 || rounded > f64::from(max.0) {
            return Err(WeightError::OutOfRange { value: value.to_string(), max: max.to_string() });
        }
        if (scaled - rounded).abs() > 1e-6 {
            return Err(WeightError::TooPrecise(value.to_string()));
        }
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "range checked above")]
        Ok(Milli(rounded as u32))
    }

    /// The value as a float, for display and statistics only (never fed back into state).
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }

    /// Adds, stopping at `cap`.
    pub fn saturating_add_capped(self, other: Milli, cap: Milli) -> Milli {
        Milli(self.0.saturating_add(other.0).min(cap.0))
    }

    /// Subtracts `other` `times` times, stopping at zero.
    pub fn saturating_sub_times(self, other: Milli, times: u64) -> Milli {
        let total = u64::from(other.0).saturating_mul(times);
        Milli(u64::from(self.0).saturating_sub(total) as u32)
    }
}

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            write!(f, "{whole}.0")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_convert_exactly() {
        assert_eq!(Milli::from_decimal(0.02, Milli::ONE), Ok(Milli(20)));
        assert_eq!(Milli::from_decimal(0.1, Milli::ONE), Ok(Milli(100)));
        assert_eq!(Milli::from_decimal(1.0, Milli::ONE), Ok(Milli(1000)));
        assert!(matches!(Milli::from_decimal(1.5, Milli::ONE), Err(WeightError::OutOfRange { .. })));
        assert!(matches!(Milli::from_decimal(-0.1, Milli::ONE), Err(WeightError::OutOfRange { .. })));
        assert!(matches!(Milli::from_decimal(0.0005, Milli::ONE), Err(WeightError::TooPrecise(_))));
        assert!(matches!(Milli::from_decimal(f64::NAN, Milli::ONE), Err(WeightError::OutOfRange { .. })));
    }

    #[test]
    fn twenty_decays_of_point_zero_two_leave_exactly_point_one() {
        assert_eq!(Milli(500).saturating_sub_times(Milli(20), 20), Milli(100));
        assert_eq!(Milli(500).saturating_sub_times(Milli(20), 1000), Milli(0));
    }

    #[test]
    fn five_reinforcements_reach_the_cap_exactly() {
        let mut w = Milli(500);
        for _ in 0..5 {
            w = w.saturating_add_capped(Milli(100), Milli::ONE);
        }
        assert_eq!(w, Milli::ONE);
        assert_eq!(w.saturating_add_capped(Milli(100), Milli::ONE), Milli::ONE);
    }

    #[test]
    fn displays_as_a_short_decimal() {
        assert_eq!(Milli(500).to_string(), "0.5");
        assert_eq!(Milli(20).to_string(), "0.02");
        assert_eq!(Milli(1000).to_string(), "1.0");
    }
}
