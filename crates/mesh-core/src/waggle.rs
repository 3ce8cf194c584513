//! The waggle dance: how strongly a proposer advertises a proposal, from its priority, urgency, confidence and amount.
//!
//! STUB: API fixed, bodies to be written (see the helper's task).

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
    pub fn perform(_inputs: DanceInputs, _subject: &str) -> WaggleDance { todo!() }

    /// Whether this dance beats `other` in cross-inhibition: higher intensity, then more repetitions.
    /// Ties are broken by the caller (by proposal id).
    pub fn outranks(&self, _other: &WaggleDance) -> Option<bool> { todo!() }
}
