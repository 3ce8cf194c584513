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
