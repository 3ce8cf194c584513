//! The roster of agents and the heartbeat failure detector.
//!
//! STUB: API fixed, bodies to be written (see the helper's task).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AgentId, Role};

/// Whether a member takes part in the mesh now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Joined and not since left or declared dead.
    Live,
    /// Left on its own (SIGTERM).
    Left,
    /// Declared dead by the failure detector.
    Dead,
}

/// What an agent says about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProfile {
    /// Stable identity.
    pub id: AgentId,
    /// Human name.
    pub name: String,
    /// Role, used to address work.
    pub role: Role,
    /// Free-form capabilities.
    pub capabilities: Vec<String>,
    /// Free-form key/value metadata.
    pub metadata: BTreeMap<String, String>,
}

/// One roster entry, as published on the compacted membership topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The agent's profile from its latest join.
    pub profile: AgentProfile,
    /// Current status.
    pub status: MemberStatus,
    /// Roster epoch at which this entry last changed.
    pub epoch: u64,
}

/// The roster: every agent ever seen, with its status. Epoch grows by one at every change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roster {
    members: BTreeMap<AgentId, Member>,
    epoch: u64,
}

impl Roster {
    /// An empty roster at epoch 0.
    pub fn new() -> Self { Self::default() }
    /// Records a join; returns the changed entry, or `None` if it was already live with the same profile.
    pub fn join(&mut self, _profile: AgentProfile) -> Option<Member> { todo!() }
    /// Records a leave; `None` if not live.
    pub fn leave(&mut self, _id: &AgentId) -> Option<Member> { todo!() }
    /// Records a death; `None` if not live.
    pub fn declare_dead(&mut self, _id: &AgentId) -> Option<Member> { todo!() }
    /// Live members in id order.
    pub fn live(&self) -> Vec<&Member> { todo!() }
    /// Whether `id` is live.
    pub fn is_live(&self, _id: &AgentId) -> bool { todo!() }
    /// Any entry.
    pub fn get(&self, _id: &AgentId) -> Option<&Member> { todo!() }
    /// Every entry.
    pub fn all(&self) -> Vec<&Member> { todo!() }
    /// The current epoch.
    pub fn epoch(&self) -> u64 { self.epoch }
}

/// Declares an agent dead when no heartbeat came for `timeout_ms`. Driven by the wall clock, so its verdicts are
/// not replayed: the runtime appends each verdict to the log as a `dead` record, and the log is what counts.
#[derive(Debug, Clone)]
pub struct FailureDetector {
    timeout_ms: u64,
    last_seen: BTreeMap<AgentId, u64>,
    reported: std::collections::BTreeSet<AgentId>,
}

impl FailureDetector {
    /// A detector with the given timeout.
    pub fn new(timeout_ms: u64) -> Self { Self { timeout_ms, last_seen: BTreeMap::new(), reported: Default::default() } }
    /// Starts watching `id` as if it had just been heard from (on join, or for every live member after a restart).
    pub fn watch(&mut self, _id: &AgentId, _now_ms: u64) { todo!() }
    /// Stops watching `id` (left or dead).
    pub fn forget(&mut self, _id: &AgentId) { todo!() }
    /// A heartbeat from `id`; ignored for agents not watched. Clears an earlier report so a recovered agent can be
    /// reported again later.
    pub fn heartbeat(&mut self, _id: &AgentId, _now_ms: u64) { todo!() }
    /// Agents silent for more than the timeout and not yet reported; each is reported once until it is heard again.
    pub fn check(&mut self, _now_ms: u64) -> Vec<AgentId> { todo!() }
}
