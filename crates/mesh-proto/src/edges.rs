//! The topology manager's edge events as records, grouped so that their number follows the agents, not the edges.
//!
//! A join into a mesh of 500 creates 998 edges and an idle mesh of 500 dies as 249,500 pruned edges; traffic
//! reinforces tens of thousands of edges per window at 500 agents. One record per edge would make the topology topic
//! busier than the messages topic. So: the same change both ways between an agent and several peers is one `edges`
//! record; reinforcements are one `weights` record per sending agent and window; what remains is one `edge` record
//! each.

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::graph::EdgeChange;
use mesh_core::topology::Reinforced;
use mesh_core::{AgentId, Milli};

use crate::records::{EdgeBody, EdgeChangeKind, EdgesBody, Record, WeightedEdge, WeightsBody};

/// One edge change as an `edge` body.
pub fn edge_body(tick: u64, change: EdgeChange) -> EdgeBody {
    let (change, from, to, weight) = match change {
        EdgeChange::Created { from, to, weight } => (EdgeChangeKind::Created, from, to, Some(weight)),
        EdgeChange::Reinforced { from, to, weight } => (EdgeChangeKind::Reinforced, from, to, Some(weight)),
        EdgeChange::Pruned { from, to } => (EdgeChangeKind::Pruned, from, to, None),
        EdgeChange::Removed { from, to } => (EdgeChangeKind::Removed, from, to, None),
    };
    EdgeBody { tick, change, from, to, weight }
}

/// Edge changes as records: where an agent had the same change (created, pruned, removed) both ways with two or more
/// peers, one `edges` record stands for them all, the agents with the most such pairs taken first; everything else
/// is one `edge` record each, in the order it happened.
pub fn edge_records(edges: Vec<(u64, EdgeChange)>) -> Vec<Record> {
    type Group = (u64, EdgeChangeKind, Option<Milli>);
    let mut directed: BTreeMap<Group, BTreeSet<(AgentId, AgentId)>> = BTreeMap::new();
    let bodies: Vec<EdgeBody> = edges.into_iter().map(|(tick, change)| edge_body(tick, change)).collect();
    for b in &bodies {
        if b.change != EdgeChangeKind::Reinforced {
            directed.entry((b.tick, b.change, b.weight)).or_default().insert((b.from.clone(), b.to.clone()));
        }
    }
    let mut covered: BTreeSet<(Group, AgentId, AgentId)> = BTreeSet::new();
    let mut out = Vec::new();
    for (group, set) in directed {
        // Pairs present both ways, as an adjacency.
        let mut both: BTreeMap<AgentId, BTreeSet<AgentId>> = BTreeMap::new();
        for (a, b) in &set {
            if a < b && set.contains(&(b.clone(), a.clone())) {
                both.entry(a.clone()).or_default().insert(b.clone());
                both.entry(b.clone()).or_default().insert(a.clone());
            }
        }
        // The agent with the most pairs left first (ties: the smallest id); stop when none has two.
        let busiest = |both: &BTreeMap<AgentId, BTreeSet<AgentId>>| {
            both.iter()
                .max_by(|x, y| x.1.len().cmp(&y.1.len()).then_with(|| y.0.cmp(x.0)))
                .filter(|(_, p)| p.len() >= 2)
                .map(|(a, p)| (a.clone(), p.clone()))
        };
        while let Some((agent, peers)) = busiest(&both) {
            for p in &peers {
                if let Some(theirs) = both.get_mut(p) {
                    theirs.remove(&agent);
                }
                covered.insert((group, agent.clone(), p.clone()));
                covered.insert((group, p.clone(), agent.clone()));
            }
            both.remove(&agent);
            out.push(Record::Edges(EdgesBody {
                tick: group.0,
                change: group.1,
                agent,
                peers: peers.into_iter().collect(),
                weight: group.2,
            }));
        }
    }
    for b in bodies {
        if !covered.contains(&((b.tick, b.change, b.weight), b.from.clone(), b.to.clone())) {
            out.push(Record::Edge(b));
        }
    }
    out
}

/// A window's reinforced edges as one `weights` record per sending agent.
pub fn weights_records(tick: u64, reinforced: &[Reinforced]) -> Vec<Record> {
    let mut by_agent: BTreeMap<&AgentId, Vec<WeightedEdge>> = BTreeMap::new();
    for r in reinforced {
        by_agent.entry(&r.from).or_default().push(WeightedEdge {
            to: r.to.clone(),
            weight: r.weight,
            messages: r.messages,
        });
    }
    by_agent
        .into_iter()
        .map(|(agent, mut edges)| {
            edges.sort_by(|a, b| a.to.cmp(&b.to));
            Record::Weights(WeightsBody { tick, agent: agent.clone(), edges })
        })
        .collect()
}

/// The key of an edge-event record: the agent it is about.
pub fn edge_record_key(record: &Record) -> String {
    match record {
        Record::Edges(b) => b.agent.to_string(),
        Record::Edge(b) => b.from.to_string(),
        Record::Weights(b) => b.agent.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::graph::{GraphParams, SlimeGraph};

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid id")
    }

    /// Every (tick, change, from, to, weight) a list of records stands for.
    fn expand(records: &[Record]) -> BTreeSet<(u64, EdgeChangeKind, AgentId, AgentId, Option<Milli>)> {
        let mut out = BTreeSet::new();
        for r in records {
            match r {
                Record::Edge(b) => {
                    assert!(out.insert((b.tick, b.change, b.from.clone(), b.to.clone(), b.weight)), "duplicate {b:?}");
                }
                Record::Edges(b) => {
                    assert!(b.peers.len() >= 2, "an edges record stands for at least two peers: {b:?}");
                    for p in &b.peers {
                        assert!(out.insert((b.tick, b.change, b.agent.clone(), p.clone(), b.weight)));
                        assert!(out.insert((b.tick, b.change, p.clone(), b.agent.clone(), b.weight)));
                    }
                }
                other => panic!("not an edge record: {other:?}"),
            }
        }
        out
    }

    fn changes_of(tick: u64, changes: Vec<EdgeChange>) -> Vec<(u64, EdgeChange)> {
        changes.into_iter().map(|c| (tick, c)).collect()
    }

    #[test]
    fn a_join_is_one_edges_record_and_stands_for_exactly_its_edges() {
        let mut g = SlimeGraph::new(GraphParams::default());
        for a in ["a", "b", "c"] {
            g.add_agent(&id(a));
        }
        let join = changes_of(2, g.add_agent(&id("d")));
        let records = edge_records(join.clone());
        assert_eq!(records.len(), 1, "{records:?}");
        let Record::Edges(b) = &records[0] else { panic!("{records:?}") };
        assert_eq!(
            (b.agent.as_str(), b.peers.len(), b.change, b.weight),
            ("d", 3, EdgeChangeKind::Created, Some(Milli(500)))
        );
        let expected: BTreeSet<_> = join
            .into_iter()
            .map(|(t, c)| edge_body(t, c))
            .map(|b| (b.tick, b.change, b.from, b.to, b.weight))
            .collect();
        assert_eq!(expand(&records), expected);
    }

    #[test]
    fn pruning_an_idle_mesh_needs_a_record_per_agent_not_per_edge() {
        let mut g = SlimeGraph::new(GraphParams::default());
        let names: Vec<String> = (0..30).map(|i| format!("a{i:02}")).collect();
        for n in &names {
            g.add_agent(&id(n));
        }
        g.reinforce(&id("a00"), &id("a01"));
        let window = changes_of(5, g.decay(21));
        let expected: BTreeSet<_> = window
            .iter()
            .cloned()
            .map(|(t, c)| edge_body(t, c))
            .map(|b| (b.tick, b.change, b.from, b.to, b.weight))
            .collect();
        let records = edge_records(window);
        assert_eq!(expand(&records), expected, "the records stand for exactly the changes");
        assert!(records.len() < 60, "{} records for {} changes", records.len(), expected.len());
        let single = records.iter().filter(|r| matches!(r, Record::Edge(_))).count();
        assert!(single >= 1, "a01→a00 pruned alone (a00→a01 carried a message): {records:?}");
    }

    #[test]
    fn reinforcements_are_one_weights_record_per_sender() {
        let r = |f: &str, t: &str, w: u32, n: u32| Reinforced { from: id(f), to: id(t), weight: Milli(w), messages: n };
        let records = weights_records(7, &[r("a", "c", 700, 2), r("b", "a", 600, 1), r("a", "b", 900, 4)]);
        assert_eq!(records.len(), 2);
        let Record::Weights(a) = &records[0] else { panic!("{records:?}") };
        assert_eq!((a.tick, a.agent.as_str()), (7, "a"));
        assert_eq!(
            a.edges.iter().map(|e| (e.to.as_str(), e.weight.0, e.messages)).collect::<Vec<_>>(),
            [("b", 900, 4), ("c", 700, 2)]
        );
    }
}
