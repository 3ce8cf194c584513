//! The SlimeMold graph: a directed, weighted graph between live agents that strengthens with use and decays idle.
//!
//! Like the slime mold *Physarum*, the mesh starts fully connected (every agent to every other at the initial
//! weight), thickens the paths that carry traffic and lets unused ones wither and disappear. Weights are exact
//! thousandths ([`Milli`]) so a replay of the same events is bit-identical and pruning happens at a deterministic
//! tick.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{AgentId, Milli};

/// The four numbers of the SlimeMold model, exact in thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphParams {
    /// Weight of every edge created when an agent joins (full mesh). Default 0.5.
    pub initial_weight: Milli,
    /// Added to an edge per message that flows along it, capped at 1.0. Default 0.1.
    pub reinforcement: Milli,
    /// Subtracted from every edge at every decay tick. Default 0.02.
    pub decay_rate: Milli,
    /// An edge whose weight falls below this after a decay is pruned. Default 0.1.
    pub prune_threshold: Milli,
}

impl Default for GraphParams {
    fn default() -> Self {
        Self {
            initial_weight: Milli(500),
            reinforcement: Milli(100),
            decay_rate: Milli(20),
            prune_threshold: Milli(100),
        }
    }
}

/// What happened to one edge; the runtime publishes these as edge events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EdgeChange {
    /// A new edge, from a join (full mesh) or from a message along a missing edge.
    Created {
        /// Source.
        from: AgentId,
        /// Target.
        to: AgentId,
        /// Weight after creation.
        weight: Milli,
    },
    /// An existing edge gained weight from a message.
    Reinforced {
        /// Source.
        from: AgentId,
        /// Target.
        to: AgentId,
        /// Weight after reinforcement.
        weight: Milli,
    },
    /// Decay took the edge below the prune threshold.
    Pruned {
        /// Source.
        from: AgentId,
        /// Target.
        to: AgentId,
    },
    /// One end left or died.
    Removed {
        /// Source.
        from: AgentId,
        /// Target.
        to: AgentId,
    },
}

/// Figures about the graph for `mesh status` and the Redis stats key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphStats {
    /// Agents in the graph.
    pub agents: usize,
    /// Directed edges present.
    pub edges: usize,
    /// Edges at or above the initial weight: the paths in use.
    pub active_edges: usize,
    /// edges / (agents * (agents - 1)); 0 with fewer than two agents.
    pub density: f64,
    /// 1 - density: how much smaller than the full mesh the graph is.
    pub reduction_vs_full_mesh: f64,
    /// Mean edge weight (0 with no edges).
    pub mean_weight: f64,
    /// Smallest edge weight (0 with no edges).
    pub min_weight: f64,
    /// Largest edge weight (0 with no edges).
    pub max_weight: f64,
}

/// The graph itself. Serializable: the topology manager snapshots it to Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlimeGraph {
    params: GraphParams,
    agents: BTreeSet<AgentId>,
    edges: BTreeMap<AgentId, BTreeMap<AgentId, Milli>>,
}

impl SlimeGraph {
    /// An empty graph.
    pub fn new(params: GraphParams) -> Self {
        Self { params, agents: BTreeSet::new(), edges: BTreeMap::new() }
    }
    /// The parameters the graph was built with.
    pub fn params(&self) -> GraphParams {
        self.params
    }
    /// Adds an agent and edges both ways to every agent present at the initial weight; no-op if present.
    pub fn add_agent(&mut self, id: &AgentId) -> Vec<EdgeChange> {
        if self.agents.contains(id) {
            return Vec::new();
        }
        let weight = self.params.initial_weight;
        let mut changes = Vec::new();
        let others: Vec<AgentId> = self.agents.iter().cloned().collect();
        for other in others {
            self.edges.entry(id.clone()).or_default().insert(other.clone(), weight);
            changes.push(EdgeChange::Created { from: id.clone(), to: other.clone(), weight });
            self.edges.entry(other.clone()).or_default().insert(id.clone(), weight);
            changes.push(EdgeChange::Created { from: other, to: id.clone(), weight });
        }
        self.agents.insert(id.clone());
        changes
    }

    /// Removes an agent and every edge touching it.
    pub fn remove_agent(&mut self, id: &AgentId) -> Vec<EdgeChange> {
        if !self.agents.remove(id) {
            return Vec::new();
        }
        let mut changes = Vec::new();
        if let Some(out) = self.edges.remove(id) {
            changes.extend(out.into_keys().map(|to| EdgeChange::Removed { from: id.clone(), to }));
        }
        for (from, targets) in &mut self.edges {
            if targets.remove(id).is_some() {
                changes.push(EdgeChange::Removed { from: from.clone(), to: id.clone() });
            }
        }
        self.edges.retain(|_, targets| !targets.is_empty());
        changes
    }

    /// A message flowed `from` → `to`: reinforce, creating the edge if missing; `None` if either end is absent or they are equal.
    pub fn reinforce(&mut self, from: &AgentId, to: &AgentId) -> Option<EdgeChange> {
        if from == to || !self.agents.contains(from) || !self.agents.contains(to) {
            return None;
        }
        let amount = self.params.reinforcement;
        let targets = self.edges.entry(from.clone()).or_default();
        match targets.get_mut(to) {
            Some(w) => {
                *w = w.saturating_add_capped(amount, Milli::ONE);
                Some(EdgeChange::Reinforced { from: from.clone(), to: to.clone(), weight: *w })
            }
            None => {
                let weight = Milli::ZERO.saturating_add_capped(amount, Milli::ONE);
                targets.insert(to.clone(), weight);
                Some(EdgeChange::Created { from: from.clone(), to: to.clone(), weight })
            }
        }
    }

    /// Applies `ticks` decay ticks at once and prunes edges that fall below the threshold.
    pub fn decay(&mut self, ticks: u64) -> Vec<EdgeChange> {
        if ticks == 0 {
            return Vec::new();
        }
        let (rate, threshold) = (self.params.decay_rate, self.params.prune_threshold);
        let mut changes = Vec::new();
        for (from, targets) in &mut self.edges {
            targets.retain(|to, w| {
                *w = w.saturating_sub_times(rate, ticks);
                let keep = *w >= threshold;
                if !keep {
                    changes.push(EdgeChange::Pruned { from: from.clone(), to: to.clone() });
                }
                keep
            });
        }
        self.edges.retain(|_, targets| !targets.is_empty());
        changes
    }

    /// Weight of the edge `from` → `to`, if present.
    pub fn weight(&self, from: &AgentId, to: &AgentId) -> Option<Milli> {
        self.edges.get(from)?.get(to).copied()
    }

    /// Whether the agent is in the graph.
    pub fn contains(&self, id: &AgentId) -> bool {
        self.agents.contains(id)
    }

    /// Agents in the graph, in id order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentId> {
        self.agents.iter()
    }

    /// Number of edges, without listing them.
    pub fn edge_count(&self) -> usize {
        self.edges.values().map(BTreeMap::len).sum()
    }

    /// Every edge, in a deterministic order.
    pub fn edges(&self) -> Vec<(AgentId, AgentId, Milli)> {
        self.edges
            .iter()
            .flat_map(|(from, targets)| targets.iter().map(move |(to, w)| (from.clone(), to.clone(), *w)))
            .collect()
    }

    /// Figures about the graph.
    #[expect(clippy::cast_precision_loss, reason = "statistics are for display")]
    pub fn stats(&self) -> GraphStats {
        let agents = self.agents.len();
        let weights: Vec<u32> = self.edges.values().flat_map(|t| t.values().map(|w| w.0)).collect();
        let edges = weights.len();
        let possible = agents.saturating_mul(agents.saturating_sub(1));
        let density = if possible == 0 { 0.0 } else { edges as f64 / possible as f64 };
        let active_edges = weights.iter().filter(|w| **w >= self.params.initial_weight.0).count();
        let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mean_weight = if edges == 0 { 0.0 } else { sum as f64 / edges as f64 / 1000.0 };
        GraphStats {
            agents,
            edges,
            active_edges,
            density,
            reduction_vs_full_mesh: if possible == 0 { 0.0 } else { 1.0 - density },
            mean_weight,
            min_weight: weights.iter().min().map_or(0.0, |w| f64::from(*w) / 1000.0),
            max_weight: weights.iter().max().map_or(0.0, |w| f64::from(*w) / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> AgentId {
        AgentId::new(s).expect("valid id")
    }

    fn four() -> SlimeGraph {
        let mut g = SlimeGraph::new(GraphParams::default());
        for a in ["sales", "support", "inventory", "fraud"] {
            g.add_agent(&id(a));
        }
        g
    }

    #[test]
    fn four_agents_make_a_full_mesh_of_twelve_edges_at_the_initial_weight() {
        let g = four();
        assert_eq!(g.edges().len(), 12);
        assert!(g.edges().iter().all(|(f, t, w)| f != t && *w == Milli(500)));
        let s = g.stats();
        assert_eq!((s.agents, s.edges, s.active_edges), (4, 12, 12));
        assert!((s.density - 1.0).abs() < 1e-12 && s.reduction_vs_full_mesh.abs() < 1e-12);
        assert!((s.mean_weight - 0.5).abs() < 1e-12);
    }

    #[test]
    fn joining_twice_changes_nothing() {
        let mut g = four();
        assert!(g.add_agent(&id("sales")).is_empty());
        assert_eq!(g.edges().len(), 12);
    }

    #[test]
    fn an_idle_edge_survives_20_ticks_at_exactly_0_1_and_is_pruned_at_the_21st() {
        let mut g = four();
        for tick in 1..=20 {
            assert!(g.decay(1).is_empty(), "nothing pruned at tick {tick}");
        }
        assert_eq!(g.weight(&id("sales"), &id("fraud")), Some(Milli(100)));
        let pruned = g.decay(1);
        assert_eq!(pruned.len(), 12);
        assert!(g.edges().is_empty());
        let mut at_once = four();
        assert_eq!(at_once.decay(21).len(), 12);
        assert_eq!(at_once, g);
    }

    #[test]
    fn reinforcement_caps_at_one_and_creates_missing_edges() {
        let mut g = four();
        let (a, b) = (id("sales"), id("inventory"));
        for _ in 0..5 {
            g.reinforce(&a, &b);
        }
        assert_eq!(g.weight(&a, &b), Some(Milli::ONE));
        assert_eq!(
            g.reinforce(&a, &b),
            Some(EdgeChange::Reinforced { from: a.clone(), to: b.clone(), weight: Milli::ONE })
        );
        g.decay(21);
        assert_eq!(g.weight(&b, &a), None, "pruned");
        assert_eq!(
            g.reinforce(&b, &a),
            Some(EdgeChange::Created { from: b.clone(), to: a.clone(), weight: Milli(100) })
        );
        assert_eq!(g.reinforce(&a, &a), None, "no self edges");
        assert_eq!(g.reinforce(&a, &id("ghost")), None, "no edges to absent agents");
    }

    #[test]
    fn removing_an_agent_removes_its_edges_both_ways() {
        let mut g = four();
        let removed = g.remove_agent(&id("fraud"));
        assert_eq!(removed.len(), 6);
        assert_eq!(g.edges().len(), 6);
        assert!(g.edges().iter().all(|(f, t, _)| f.as_str() != "fraud" && t.as_str() != "fraud"));
        assert!(g.remove_agent(&id("fraud")).is_empty());
    }

    #[test]
    fn stats_of_an_empty_graph_are_zero() {
        let s = SlimeGraph::new(GraphParams::default()).stats();
        assert_eq!((s.agents, s.edges), (0, 0));
        assert!(s.density == 0.0 && s.mean_weight == 0.0 && s.max_weight == 0.0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8),
        Remove(u8),
        Reinforce(u8, u8),
        Decay(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6).prop_map(Op::Add),
            (0u8..6).prop_map(Op::Remove),
            ((0u8..6), (0u8..6)).prop_map(|(a, b)| Op::Reinforce(a, b)),
            (0u8..4).prop_map(Op::Decay),
        ]
    }

    fn apply(g: &mut SlimeGraph, op: &Op) -> Vec<EdgeChange> {
        let n = |i: &u8| id(&format!("a{i}"));
        match op {
            Op::Add(a) => g.add_agent(&n(a)),
            Op::Remove(a) => g.remove_agent(&n(a)),
            Op::Reinforce(a, b) => g.reinforce(&n(a), &n(b)).into_iter().collect(),
            Op::Decay(t) => g.decay(u64::from(*t)),
        }
    }

    proptest! {
        #[test]
        fn weights_stay_in_range_and_edges_join_present_distinct_agents(ops in proptest::collection::vec(op(), 0..200)) {
            let mut g = SlimeGraph::new(GraphParams::default());
            for o in &ops {
                apply(&mut g, o);
                for (f, t, w) in g.edges() {
                    prop_assert!(w >= Milli(100) && w <= Milli::ONE, "weight {w} out of range");
                    prop_assert!(f != t && g.contains(&f) && g.contains(&t));
                }
            }
        }

        #[test]
        fn the_same_events_give_the_same_graph(ops in proptest::collection::vec(op(), 0..200)) {
            let (mut a, mut b) = (SlimeGraph::new(GraphParams::default()), SlimeGraph::new(GraphParams::default()));
            for o in &ops {
                prop_assert_eq!(apply(&mut a, o), apply(&mut b, o));
            }
            prop_assert_eq!(a, b);
        }

        #[test]
        fn a_missing_edge_appears_only_through_a_message_or_a_join(ops in proptest::collection::vec(op(), 0..200)) {
            let mut g = SlimeGraph::new(GraphParams::default());
            for o in &ops {
                let before: BTreeSet<(AgentId, AgentId)> = g.edges().into_iter().map(|(f, t, _)| (f, t)).collect();
                apply(&mut g, o);
                let after: BTreeSet<(AgentId, AgentId)> = g.edges().into_iter().map(|(f, t, _)| (f, t)).collect();
                if after.difference(&before).next().is_some() {
                    prop_assert!(matches!(o, Op::Add(_) | Op::Reinforce(..)), "{o:?} created edges");
                }
            }
        }

        #[test]
        fn snapshots_round_trip(ops in proptest::collection::vec(op(), 0..100)) {
            let mut g = SlimeGraph::new(GraphParams::default());
            for o in &ops {
                apply(&mut g, o);
            }
            let json = serde_json::to_string(&g).expect("serialize");
            let back: SlimeGraph = serde_json::from_str(&json).expect("deserialize");
            prop_assert_eq!(back, g);
        }
    }
}
