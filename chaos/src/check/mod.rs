//! The invariants, one file each. A checker reads what the mesh wrote (through the tail, Redis and the
//! supervisor) and says pass, fail (with the evidence) or unknown (the evidence could not be gathered).

pub mod decisions;
pub mod duplicates;
pub mod graph;
pub mod healed;
pub mod hostile;
pub mod lost;
pub mod membership;
pub mod orphans;

use serde::{Deserialize, Serialize};

/// A checker's or a scenario's verdict. Ordered by severity: the worst of a scenario's results is its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The invariant holds.
    Pass,
    /// The evidence could not be gathered (exit code 2).
    Unknown,
    /// The invariant is violated (exit code 1).
    Fail,
}

/// One checker's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The invariant (`no-lost-message`...).
    pub name: String,
    /// Its verdict.
    pub verdict: Verdict,
    /// What was counted, or the evidence of a violation.
    pub detail: String,
}

impl CheckResult {
    /// A result named `name`.
    pub fn new(name: &str, verdict: Verdict, detail: impl Into<String>) -> Self {
        Self { name: name.to_owned(), verdict, detail: detail.into() }
    }

    /// Pass if `ok`, else fail.
    pub fn holds(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Self::new(name, if ok { Verdict::Pass } else { Verdict::Fail }, detail)
    }
}
