//! The topology graph equals the state a fault-free replay of the same log gives: the manager's latest snapshot
//! (after any number of crashes, restores and partitions) against `mesh_node::topology::replay_log` run over every
//! record the tail read, up to the snapshot's last closed tick. A manager that skipped replay after a restart, or
//! double-counted a message, fails here.

use mesh_core::graph::SlimeGraph;
use mesh_core::membership::Roster;
use mesh_node::TopologyConfig;

use super::{CheckResult, Verdict};
use crate::observe::Observed;

/// Name of this invariant.
pub const NAME: &str = "graph-equals-replay";

/// `snapshot` is the manager's (graph, roster, last closed tick); `sources` the number of partitions it reads.
pub fn check(
    snapshot: Option<(SlimeGraph, Roster, Option<u64>)>,
    o: &Observed,
    sources: usize,
    config: &TopologyConfig,
) -> CheckResult {
    let Some((graph, roster, Some(last_closed))) = snapshot else {
        return CheckResult::new(NAME, Verdict::Unknown, "no topology snapshot with a closed tick in Redis");
    };
    let interval_ms = u64::try_from(config.decay_interval.as_millis()).unwrap_or(u64::MAX).max(1);
    let (replayed, replayed_roster, replayed_last) = mesh_node::topology::replay_log(
        sources,
        interval_ms,
        config,
        Some(last_closed),
        o.topology_inputs.iter().cloned(),
    );
    if replayed_last != Some(last_closed) {
        return CheckResult::new(
            NAME,
            Verdict::Unknown,
            format!("the log read so far replays to tick {replayed_last:?}, the snapshot is at {last_closed}"),
        );
    }
    let (mine, theirs) = (graph.edges(), replayed.edges());
    if mine != theirs {
        let differ = mine.iter().filter(|e| !theirs.contains(e)).chain(theirs.iter().filter(|e| !mine.contains(e)));
        let examples: Vec<String> = differ.take(4).map(|(a, b, w)| format!("{a}->{b} {w:?}")).collect();
        return CheckResult::holds(
            NAME,
            false,
            format!(
                "at tick {last_closed}: manager has {} edges, replay {}; differing: {}",
                mine.len(),
                theirs.len(),
                examples.join(", ")
            ),
        );
    }
    if roster != replayed_roster {
        return CheckResult::holds(NAME, false, format!("at tick {last_closed}: the roster differs from the replay's"));
    }
    CheckResult::holds(NAME, true, format!("tick {last_closed}: {} edges and the roster equal the replay", mine.len()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use mesh_core::membership::AgentProfile;
    use mesh_core::{AgentId, Role};
    use mesh_proto::records::{JoinBody, Record, TaskBody, TickBody};

    use super::*;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("id")
    }

    fn join(name: &str) -> Record {
        Record::Join(JoinBody {
            agent: AgentProfile {
                id: id(name),
                name: name.into(),
                role: Role::new("sales").expect("role"),
                capabilities: vec![],
                metadata: BTreeMap::new(),
            },
        })
    }

    fn task(from: &str, to: &str) -> Record {
        Record::Task(TaskBody { from: id(from), to: id(to), task: "t".into(), payload: BTreeMap::new() })
    }

    fn tick(t: u64) -> Record {
        Record::Tick(TickBody { tick: t, interval_ms: 500 })
    }

    /// Two sources (topology topic, one messages partition): joins, then traffic, with markers for ticks 1..=3.
    fn log() -> Vec<(usize, i64, Record)> {
        let mut v = vec![(0, 0, join("a")), (0, 1, join("b")), (0, 2, tick(1)), (1, 0, tick(1))];
        v.extend([(1, 1, task("a", "b")), (1, 2, task("a", "b")), (1, 3, tick(2)), (0, 3, tick(2))]);
        v.extend([(1, 4, task("b", "a")), (1, 5, tick(3)), (0, 4, tick(3))]);
        v
    }

    fn config() -> TopologyConfig {
        TopologyConfig { decay_interval: Duration::from_millis(500), ..TopologyConfig::default() }
    }

    #[test]
    fn a_snapshot_equal_to_the_replay_passes_and_one_that_missed_a_message_fails() {
        let observed = Observed { topology_inputs: log(), ..Observed::default() };
        let faithful = mesh_node::topology::replay_log(2, 500, &config(), Some(3), log());
        assert_eq!(faithful.2, Some(3));
        assert_eq!(check(Some(faithful), &observed, 2, &config()).verdict, Verdict::Pass);

        // What a manager that skipped part of the log on restart would hold.
        let skipped: Vec<_> = log().into_iter().filter(|(s, o, _)| !(*s == 1 && *o == 2)).collect();
        let wrong = mesh_node::topology::replay_log(2, 500, &config(), Some(3), skipped);
        let c = check(Some(wrong), &observed, 2, &config());
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains("a->b"), "{c:?}");
    }

    #[test]
    fn a_log_that_does_not_reach_the_snapshot_is_unknown_not_a_pass() {
        let snapshot = mesh_node::topology::replay_log(2, 500, &config(), Some(3), log());
        let partial = Observed { topology_inputs: log()[..6].to_vec(), ..Observed::default() };
        assert_eq!(check(Some(snapshot), &partial, 2, &config()).verdict, Verdict::Unknown);
        assert_eq!(check(None, &partial, 2, &config()).verdict, Verdict::Unknown);
    }
}
