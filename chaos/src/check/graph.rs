//! The topology graph is exact: (1) the manager's latest snapshot, after any number of crashes, restores and
//! partitions, equals the state its changelog replays to at the same window (`mesh_node::topology::replay_changelog`,
//! applied from scratch as any reader would); (2) the changelog's windows account for the log: their ranges tile
//! every input partition and each window's per-edge counts and roster changes are exactly the records in its ranges
//! (`mesh_node::topology::audit`), so the reinforcements applied equal the tasks and responses in the log, none lost,
//! none twice. A manager that skipped replay after a restart, or counted a message twice, fails here.

use mesh_core::topology::Topology;
use mesh_node::TopologyConfig;

use super::{CheckResult, Verdict};
use crate::observe::Observed;

/// Name of this invariant.
pub const NAME: &str = "graph-equals-replay";

/// `snapshot` is the manager's latest state from Redis.
pub fn check(snapshot: Option<Topology>, o: &Observed, config: &TopologyConfig) -> CheckResult {
    let Some(snapshot) = snapshot else {
        return CheckResult::new(NAME, Verdict::Unknown, "no topology snapshot in Redis");
    };
    let Some(last) = snapshot.last() else {
        return CheckResult::new(NAME, Verdict::Unknown, "the topology snapshot holds no window yet");
    };
    let interval_ms = u64::try_from(config.decay_interval.as_millis()).unwrap_or(u64::MAX).max(1);
    let replay =
        mesh_node::topology::replay_changelog(interval_ms, config, Some(last.seq), o.changelog.iter().cloned());
    if replay.topology.last() != Some(last) {
        return CheckResult::new(
            NAME,
            Verdict::Unknown,
            format!("the changelog read so far replays to {:?}, the snapshot is at {last:?}", replay.topology.last()),
        );
    }
    let (mine, theirs) = (snapshot.graph().edges(), replay.topology.graph().edges());
    if mine != theirs {
        let differ = mine.iter().filter(|e| !theirs.contains(e)).chain(theirs.iter().filter(|e| !mine.contains(e)));
        let examples: Vec<String> = differ.take(4).map(|(a, b, w)| format!("{a}->{b} {w:?}")).collect();
        return CheckResult::holds(
            NAME,
            false,
            format!(
                "at window {}: manager has {} edges, replay {}; differing: {}",
                last.seq,
                mine.len(),
                theirs.len(),
                examples.join(", ")
            ),
        );
    }
    if snapshot.roster() != replay.topology.roster() {
        return CheckResult::holds(
            NAME,
            false,
            format!("at window {}: the roster differs from the replay's", last.seq),
        );
    }
    let all = mesh_node::topology::replay_changelog(interval_ms, config, None, o.changelog.iter().cloned());
    let audit = mesh_node::topology::audit(&all.applied, o.topology_inputs.iter().cloned());
    if !audit.problems.is_empty() || audit.counted != audit.in_log {
        return CheckResult::holds(
            NAME,
            false,
            format!(
                "{} windows count {} messages, their ranges hold {}: {}",
                all.applied.len(),
                audit.counted,
                audit.in_log,
                audit.problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            ),
        );
    }
    CheckResult::holds(
        NAME,
        true,
        format!(
            "window {}: {} edges and the roster equal the changelog's replay; {} windows count each of {} messages once{}",
            last.seq,
            mine.len(),
            all.applied.len(),
            audit.counted,
            if all.refused.is_empty() {
                String::new()
            } else {
                format!(" ({} stale windows refused)", all.refused.len())
            }
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use mesh_core::graph::GraphParams;
    use mesh_core::membership::AgentProfile;
    use mesh_core::topology::Source;
    use mesh_core::{AgentId, Role};
    use mesh_proto::changelog;
    use mesh_proto::records::{JoinBody, Record, TaskBody};

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

    fn config() -> TopologyConfig {
        TopologyConfig { decay_interval: Duration::from_millis(500), ..TopologyConfig::default() }
    }

    /// A manager's run over a small log: the log, its changelog records, and its state.
    fn run(skip: Option<i64>) -> (Vec<(Source, i64, Record)>, Vec<Record>, Topology) {
        let topo = Source { topic: "t.topology".into(), partition: 0 };
        let msgs = Source { topic: "t.messages".into(), partition: 0 };
        let log = vec![
            (topo.clone(), 0, join("a")),
            (topo.clone(), 1, join("b")),
            (msgs.clone(), 0, task("a", "b")),
            (msgs.clone(), 1, task("a", "b")),
            (msgs, 2, task("b", "a")),
        ];
        let mut t = Topology::new(GraphParams::default());
        let mut records = Vec::new();
        for (i, (s, o, r)) in log.iter().enumerate() {
            if skip != Some(*o) || s.topic != "t.messages" {
                t.observe(s, *o, mesh_node::topology::classify(r.clone()));
            }
            if i == 1 || i == 4 {
                let w = t.close(1 + i as u64);
                t.apply(&w).expect("own window");
                records.extend(changelog::split(w, "topology-1-1", 500, 100).into_iter().map(Record::Window));
            }
        }
        (log, records, t)
    }

    #[test]
    fn a_faithful_manager_passes_and_one_that_missed_a_message_fails() {
        let (log, records, state) = run(None);
        let observed = Observed { topology_inputs: log.clone(), changelog: records, ..Observed::default() };
        let c = check(Some(state), &observed, &config());
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");

        // A manager that skipped the message at offset 1: its windows do not account for the log.
        let (_, records, state) = run(Some(1));
        let observed = Observed { topology_inputs: log, changelog: records, ..Observed::default() };
        let c = check(Some(state), &observed, &config());
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains("count 2 messages, their ranges hold 3"), "{c:?}");
    }

    #[test]
    fn a_snapshot_that_differs_from_its_changelog_fails() {
        let (log, records, _) = run(None);
        let (_, _, other) = run(Some(1));
        let observed = Observed { topology_inputs: log, changelog: records, ..Observed::default() };
        let c = check(Some(other), &observed, &config());
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains("a->b"), "{c:?}");
    }

    #[test]
    fn a_changelog_that_does_not_reach_the_snapshot_is_unknown_not_a_pass() {
        let (log, records, state) = run(None);
        let partial = Observed { topology_inputs: log, changelog: records[..1].to_vec(), ..Observed::default() };
        assert_eq!(check(Some(state), &partial, &config()).verdict, Verdict::Unknown);
        assert_eq!(check(None, &partial, &config()).verdict, Verdict::Unknown);
    }
}
