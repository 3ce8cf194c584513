//! The graph as first written: every edge stored and swept on every tick. Too slow for thousands of agents but
//! obviously right, so the property tests hold the real [`SlimeGraph`](super::SlimeGraph) to it, change for change.

use std::collections::{BTreeMap, BTreeSet};

use super::GraphParams;
use super::{EdgeChange, GraphStats};
use crate::{AgentId, Milli};

/// The reference graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ReferenceGraph {
    params: GraphParams,
    agents: BTreeSet<AgentId>,
    edges: BTreeMap<AgentId, BTreeMap<AgentId, Milli>>,
}

impl ReferenceGraph {
    /// An empty graph.
    pub(super) fn new(params: GraphParams) -> Self {
        let initial_weight = params.initial_weight.min(Milli::ONE);
        Self { params: GraphParams { initial_weight, ..params }, agents: BTreeSet::new(), edges: BTreeMap::new() }
    }
    /// Adds an agent and edges both ways to every agent present at the initial weight; no-op if present.
    pub(super) fn add_agent(&mut self, id: &AgentId) -> Vec<EdgeChange> {
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
    pub(super) fn remove_agent(&mut self, id: &AgentId) -> Vec<EdgeChange> {
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
    pub(super) fn reinforce(&mut self, from: &AgentId, to: &AgentId) -> Option<EdgeChange> {
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
    pub(super) fn decay(&mut self, ticks: u64) -> Vec<EdgeChange> {
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
    pub(super) fn weight(&self, from: &AgentId, to: &AgentId) -> Option<Milli> {
        self.edges.get(from)?.get(to).copied()
    }

    /// Every edge, in a deterministic order.
    pub(super) fn edges(&self) -> Vec<(AgentId, AgentId, Milli)> {
        self.edges
            .iter()
            .flat_map(|(from, targets)| targets.iter().map(move |(to, w)| (from.clone(), to.clone(), *w)))
            .collect()
    }

    /// Figures about the graph.
    #[expect(clippy::cast_precision_loss, reason = "statistics are for display")]
    pub(super) fn stats(&self) -> GraphStats {
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
