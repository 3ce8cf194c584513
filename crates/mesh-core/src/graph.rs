//! The SlimeMold graph: a directed, weighted graph between live agents that strengthens with use and decays idle.
//!
//! STUB: API fixed, bodies to be written (see the helper's task).

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
        Self { initial_weight: Milli(500), reinforcement: Milli(100), decay_rate: Milli(20), prune_threshold: Milli(100) }
    }
}

/// What happened to one edge; the runtime publishes these as edge events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EdgeChange {
    /// A new edge, from a join (full mesh) or from a message along a missing edge.
    Created { from: AgentId, to: AgentId, weight: Milli },
    /// An existing edge gained weight from a message.
    Reinforced { from: AgentId, to: AgentId, weight: Milli },
    /// Decay took the edge below the prune threshold.
    Pruned { from: AgentId, to: AgentId },
    /// One end left or died.
    Removed { from: AgentId, to: AgentId },
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
    pub fn params(&self) -> GraphParams { self.params }
    /// Adds an agent and edges both ways to every agent present at the initial weight; no-op if present.
    pub fn add_agent(&mut self, _id: &AgentId) -> Vec<EdgeChange> { todo!() }
    /// Removes an agent and every edge touching it.
    pub fn remove_agent(&mut self, _id: &AgentId) -> Vec<EdgeChange> { todo!() }
    /// A message flowed `from` → `to`: reinforce, creating the edge if missing; `None` if either end is absent or they are equal.
    pub fn reinforce(&mut self, _from: &AgentId, _to: &AgentId) -> Option<EdgeChange> { todo!() }
    /// Applies `ticks` decay ticks at once and prunes edges that fall below the threshold.
    pub fn decay(&mut self, _ticks: u64) -> Vec<EdgeChange> { todo!() }
    /// Weight of the edge `from` → `to`, if present.
    pub fn weight(&self, _from: &AgentId, _to: &AgentId) -> Option<Milli> { todo!() }
    /// Whether the agent is in the graph.
    pub fn contains(&self, _id: &AgentId) -> bool { todo!() }
    /// Every edge, in a deterministic order.
    pub fn edges(&self) -> Vec<(AgentId, AgentId, Milli)> { todo!() }
    /// Figures about the graph.
    pub fn stats(&self) -> GraphStats { todo!() }
}
