//! The roster of agents and the heartbeat failure detector.
//!
//! The roster changes only through log events (join, leave, dead), so every replay agrees on it; its epoch counts
//! the changes and is recorded in each proposal with its voter set. The failure detector is the one clock-driven
//! judgement: its verdicts are appended to the log by the runtime and only then change the roster.

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

impl MemberStatus {
    /// Every status, in the order reports list them.
    pub const ALL: [Self; 3] = [Self::Live, Self::Left, Self::Dead];

    /// Its name on the wire, which also labels it in metrics and on the live page.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Left => "left",
            Self::Dead => "dead",
        }
    }
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
    pub fn new() -> Self {
        Self::default()
    }
    /// Records a join; returns the changed entry, or `None` if it was already live with the same profile.
    pub fn join(&mut self, profile: AgentProfile) -> Option<Member> {
        if let Some(m) = self.members.get(&profile.id)
            && m.status == MemberStatus::Live
            && m.profile == profile
        {
            return None;
        }
        self.epoch += 1;
        let member = Member { profile, status: MemberStatus::Live, epoch: self.epoch };
        self.members.insert(member.profile.id.clone(), member.clone());
        Some(member)
    }

    fn set_status(&mut self, id: &AgentId, status: MemberStatus) -> Option<Member> {
        let epoch = self.epoch + 1;
        let m = self.members.get_mut(id).filter(|m| m.status == MemberStatus::Live)?;
        m.status = status;
        m.epoch = epoch;
        self.epoch = epoch;
        Some(m.clone())
    }

    /// Records a leave; `None` if not live.
    pub fn leave(&mut self, id: &AgentId) -> Option<Member> {
        self.set_status(id, MemberStatus::Left)
    }

    /// Records a death; `None` if not live.
    pub fn declare_dead(&mut self, id: &AgentId) -> Option<Member> {
        self.set_status(id, MemberStatus::Dead)
    }

    /// Live members in id order.
    pub fn live(&self) -> Vec<&Member> {
        self.members.values().filter(|m| m.status == MemberStatus::Live).collect()
    }

    /// Whether `id` is live.
    pub fn is_live(&self, id: &AgentId) -> bool {
        self.members.get(id).is_some_and(|m| m.status == MemberStatus::Live)
    }

    /// Any entry.
    pub fn get(&self, id: &AgentId) -> Option<&Member> {
        self.members.get(id)
    }

    /// Every entry.
    pub fn all(&self) -> Vec<&Member> {
        self.members.values().collect()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
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
    pub fn new(timeout_ms: u64) -> Self {
        Self { timeout_ms, last_seen: BTreeMap::new(), reported: Default::default() }
    }
    /// Starts watching `id` as if it had just been heard from (on join, or for every live member after a restart).
    pub fn watch(&mut self, id: &AgentId, now_ms: u64) {
        self.last_seen.insert(id.clone(), now_ms);
        self.reported.remove(id);
    }

    /// Restarts every watched agent's clock at `now_ms`, as if each had just been heard from: after a silence of
    /// the watcher's own, which says nothing about the agents.
    pub fn rearm(&mut self, now_ms: u64) {
        for seen in self.last_seen.values_mut() {
            *seen = (*seen).max(now_ms);
        }
    }

    /// Stops watching `id` (left or dead).
    pub fn forget(&mut self, id: &AgentId) {
        self.last_seen.remove(id);
        self.reported.remove(id);
    }

    /// Follows one applied window's roster changes: stops watching the agents in `gone`, then watches those in
    /// `joined` that `roster` (after the window) holds live. A window lists its joins and departures apart, so an
    /// agent that left and joined again within it (a restart faster than a decay interval) is in both lists; by
    /// list order it would be forgotten and never judged again. Judged by where the roster ended, it is watched,
    /// and one that joined and then left is not.
    pub fn follow(&mut self, joined: &[AgentId], gone: &[AgentId], roster: &Roster, now_ms: u64) {
        for id in gone {
            self.forget(id);
        }
        for id in joined.iter().filter(|id| roster.is_live(id)) {
            self.watch(id, now_ms);
        }
    }

    /// A heartbeat from `id`; ignored for agents not watched. Clears an earlier report so a recovered agent can be
    /// reported again later.
    pub fn heartbeat(&mut self, id: &AgentId, now_ms: u64) {
        if let Some(seen) = self.last_seen.get_mut(id) {
            *seen = (*seen).max(now_ms);
            self.reported.remove(id);
        }
    }

    /// The silence after which an agent is reported.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// When `id` was last heard from (or started being watched), if watched.
    pub fn last_seen(&self, id: &AgentId) -> Option<u64> {
        self.last_seen.get(id).copied()
    }

    /// Agents silent for more than the timeout at `now_ms` and not yet reported; each is reported once until it is
    /// heard again. `now_ms` need not be the wall clock: the topology manager passes the time up to which it knows
    /// it has read every heartbeat (the send time of its last returned probe), so its own stalls delay verdicts
    /// instead of faking them.
    pub fn check(&mut self, now_ms: u64) -> Vec<AgentId> {
        let silent: Vec<AgentId> = self
            .last_seen
            .iter()
            .filter(|(id, seen)| now_ms.saturating_sub(**seen) > self.timeout_ms && !self.reported.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        self.reported.extend(silent.iter().cloned());
        silent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_status_is_named_as_on_the_wire() {
        for status in MemberStatus::ALL {
            assert_eq!(serde_json::to_value(status).expect("encodes"), status.name());
        }
    }

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid")
    }

    fn profile(s: &str) -> AgentProfile {
        AgentProfile {
            id: id(s),
            name: s.to_owned(),
            role: Role::new("sales").expect("valid"),
            capabilities: vec![],
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn join_leave_die_and_rejoin_bump_the_epoch() {
        let mut r = Roster::new();
        assert_eq!(r.join(profile("a")).map(|m| m.epoch), Some(1));
        assert_eq!(r.join(profile("a")), None, "same profile again: no change");
        assert_eq!(r.join(profile("b")).map(|m| m.epoch), Some(2));
        assert_eq!(r.leave(&id("a")).map(|m| (m.status, m.epoch)), Some((MemberStatus::Left, 3)));
        assert_eq!(r.leave(&id("a")), None);
        assert_eq!(r.declare_dead(&id("b")).map(|m| m.status), Some(MemberStatus::Dead));
        assert!(r.live().is_empty());
        assert_eq!(r.join(profile("b")).map(|m| (m.status, m.epoch)), Some((MemberStatus::Live, 5)));
        assert_eq!(r.all().len(), 2);
        assert!(r.is_live(&id("b")) && !r.is_live(&id("a")));
    }

    #[test]
    fn silent_for_exactly_the_timeout_is_alive_one_ms_more_is_dead() {
        let mut d = FailureDetector::new(1000);
        d.watch(&id("a"), 0);
        assert!(d.check(1000).is_empty());
        assert_eq!(d.check(1001), vec![id("a")]);
        assert!(d.check(5000).is_empty(), "reported once");
        d.heartbeat(&id("a"), 5000);
        assert!(d.check(5500).is_empty());
        assert_eq!(d.check(6001), vec![id("a")], "reported again after recovering");
    }

    #[test]
    fn heartbeats_out_of_order_and_from_strangers() {
        let mut d = FailureDetector::new(1000);
        d.watch(&id("a"), 0);
        d.heartbeat(&id("a"), 900);
        d.heartbeat(&id("a"), 100);
        assert!(d.check(1800).is_empty(), "the later heartbeat counts");
        d.heartbeat(&id("stranger"), 0);
        assert_eq!(d.check(10_000), vec![id("a")]);
        d.forget(&id("a"));
        d.heartbeat(&id("a"), 20_000);
        assert!(d.check(99_000).is_empty());
    }

    proptest! {
        #[test]
        fn epochs_strictly_increase(ops in proptest::collection::vec((0u8..3, 0u8..4), 0..100)) {
            let mut r = Roster::new();
            let mut last = 0;
            for (op, who) in ops {
                let name = format!("a{who}");
                let changed = match op {
                    0 => r.join(profile(&name)),
                    1 => r.leave(&id(&name)),
                    _ => r.declare_dead(&id(&name)),
                };
                if let Some(m) = changed {
                    prop_assert!(m.epoch > last);
                    prop_assert_eq!(m.epoch, r.epoch());
                    last = m.epoch;
                }
            }
        }
    }
}
