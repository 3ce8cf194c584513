//! Topic names: one prefix (default `agentmesh`) and a fixed suffix per kind of record flow.

use std::fmt;

/// The nine record flows of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TopicKind {
    /// Tasks and responses, keyed by recipient agent id.
    Messages,
    /// Liveness beats, keyed by agent id.
    Heartbeats,
    /// Join, leave and dead events, and the topology manager's edge events.
    Topology,
    /// The topology manager's changelog: the windows it sealed, each recorded before it is applied.
    Windows,
    /// The live roster, compacted by agent id.
    Membership,
    /// Proposals, keyed by proposal id.
    Proposals,
    /// Votes and the consensus manager's expire/inhibit markers, keyed by proposal id.
    Votes,
    /// One decision per proposal, compacted by proposal id.
    Decisions,
    /// Records that could not be decoded, with the reason.
    Deadletter,
}

impl TopicKind {
    /// Every kind, in a fixed order.
    pub const ALL: [TopicKind; 9] = [
        TopicKind::Messages,
        TopicKind::Heartbeats,
        TopicKind::Topology,
        TopicKind::Windows,
        TopicKind::Membership,
        TopicKind::Proposals,
        TopicKind::Votes,
        TopicKind::Decisions,
        TopicKind::Deadletter,
    ];

    /// The suffix after the prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            TopicKind::Messages => "messages",
            TopicKind::Heartbeats => "heartbeats",
            TopicKind::Topology => "topology",
            TopicKind::Windows => "windows",
            TopicKind::Membership => "membership",
            TopicKind::Proposals => "proposals",
            TopicKind::Votes => "votes",
            TopicKind::Decisions => "decisions",
            TopicKind::Deadletter => "deadletter",
        }
    }
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Full topic names under one prefix, so several meshes (or test runs) can share a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
}

impl TopicNames {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "agentmesh";

    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of a topic, `{prefix}.{suffix}`.
    pub fn name(&self, kind: TopicKind) -> String {
        format!("{}.{}", self.prefix, kind.suffix())
    }

    /// Which kind a full topic name is, if it is one of ours.
    pub fn kind_of(&self, topic: &str) -> Option<TopicKind> {
        let suffix = topic.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        TopicKind::ALL.into_iter().find(|k| k.suffix() == suffix)
    }
}

impl Default for TopicNames {
    fn default() -> Self {
        Self::new(Self::DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let t = TopicNames::default();
        for kind in TopicKind::ALL {
            assert_eq!(t.kind_of(&t.name(kind)), Some(kind));
        }
        assert_eq!(t.name(TopicKind::Messages), "agentmesh.messages");
        assert_eq!(t.kind_of("agentmeshx.messages"), None);
        assert_eq!(t.kind_of("other.messages"), None);
    }
}
