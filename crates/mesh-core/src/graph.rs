//! The SlimeMold graph: a directed, weighted graph between live agents that strengthens with use and decays idle.
//!
//! Like the slime mold *Physarum*, the mesh starts fully connected (every agent to every other at the initial
//! weight), thickens the paths that carry traffic and lets unused ones wither and disappear. Weights are exact
//! thousandths ([`Milli`]) so a replay of the same events is bit-identical and pruning happens at a deterministic
//! tick.

use std::collections::{BTreeMap, BTreeSet};

#[cfg(test)]
mod reference;

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

/// Where an agent sits in the graph's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    /// Index into the slot tables; never reused, so a stale deadline can always be recognised.
    slot: u32,
    /// The tick at which it joined: the birth of the full-mesh edges it shares with earlier agents.
    joined: u64,
}

/// An edge that carried traffic: its weight right after the last update, and the tick of that update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Touch {
    weight: Milli,
    at: u64,
}

/// The graph itself. Serializable: the topology manager snapshots it to Redis.
///
/// Only what traffic changed is stored: an agent's join tick, and the edges that carried a message with their weight
/// and the tick of that update. A full-mesh edge that never carried a message weighs
/// `initial − rate × (now − later join)`, a function of the tick its younger end joined, so it is computed rather than
/// kept: N agents cost O(N), not O(N²). A touched edge always weighs at least its untouched twin, so it outlives it.
/// Weights decay lazily from the tick of their last update, and pruning is driven by a queue of deadlines (per join
/// cohort, per touched edge), so a tick costs O(log n + what it prunes) instead of a sweep over all N·(N−1) edges. The
/// snapshot holds the same O(N + touched edges). Property tests hold every change, weight and statistic to the plain
/// every-edge model in `graph/reference.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "GraphWire", try_from = "GraphWire")]
pub struct SlimeGraph {
    params: GraphParams,
    /// Decay ticks applied since the graph was created.
    now: u64,
    members: BTreeMap<AgentId, Member>,
    /// Agent of each slot; `None` once it left.
    names: Vec<Option<AgentId>>,
    /// Join tick of each slot.
    joined: Vec<u64>,
    /// Present agents in join order (ties by slot): the full-mesh edges of an agent with those before it are born
    /// when it joins.
    by_join: BTreeSet<(u64, u32)>,
    /// Edges that carried a message, by (from slot, to slot). A touched edge always weighs at least what its
    /// untouched full-mesh twin would, so it outlives it.
    touched: BTreeMap<(u32, u32), Touch>,
    /// Tick at which the full-mesh edges an agent created on joining fall below the threshold, by slot.
    cohort_deadlines: BTreeMap<u64, Vec<u32>>,
    /// Tick at which a touched edge was due to fall below the threshold when queued; a later reinforcement moves it
    /// on, which is noticed (and the entry re-queued) when it comes due, so each edge has one entry.
    edge_deadlines: BTreeMap<u64, Vec<(u32, u32)>>,
}

impl SlimeGraph {
    /// An empty graph. An initial weight above 1.0 is taken as 1.0, the cap of every weight.
    pub fn new(params: GraphParams) -> Self {
        let initial_weight = params.initial_weight.min(Milli::ONE);
        Self {
            params: GraphParams { initial_weight, ..params },
            now: 0,
            members: BTreeMap::new(),
            names: Vec::new(),
            joined: Vec::new(),
            by_join: BTreeSet::new(),
            touched: BTreeMap::new(),
            cohort_deadlines: BTreeMap::new(),
            edge_deadlines: BTreeMap::new(),
        }
    }

    /// The parameters the graph was built with.
    pub fn params(&self) -> GraphParams {
        self.params
    }

    /// Decay ticks applied so far.
    pub fn ticks(&self) -> u64 {
        self.now
    }

    /// Ticks after which an edge of weight `weight` is pruned; `None` if it never is (no decay).
    fn ticks_to_prune(&self, weight: Milli) -> Option<u64> {
        let (rate, threshold) = (self.params.decay_rate.0, self.params.prune_threshold.0);
        if threshold == 0 {
            // Weights stop at zero, which is not below a zero threshold: nothing is ever pruned.
            return None;
        }
        if weight.0 < threshold {
            return Some(1);
        }
        (weight.0 - threshold).checked_div(rate).map(|steps| u64::from(steps) + 1)
    }

    fn decayed(&self, weight: Milli, since: u64) -> Milli {
        weight.saturating_sub_times(self.params.decay_rate, self.now.saturating_sub(since))
    }

    /// Weight of the untouched full-mesh edges born at tick `born`, if they are still alive.
    fn cohort_weight(&self, born: u64) -> Option<Milli> {
        let age = self.now.saturating_sub(born);
        match self.ticks_to_prune(self.params.initial_weight) {
            Some(k) if age >= k => None,
            _ => Some(self.decayed(self.params.initial_weight, born)),
        }
    }

    /// Weight of the untouched full-mesh edge between two present slots, if it is still alive.
    fn implicit_weight(&self, a: u32, b: u32) -> Option<Milli> {
        self.cohort_weight(self.joined[a as usize].max(self.joined[b as usize]))
    }

    fn weight_of_slots(&self, from: u32, to: u32) -> Option<Milli> {
        match self.touched.get(&(from, to)) {
            Some(t) => Some(self.decayed(t.weight, t.at)),
            None => self.implicit_weight(from, to),
        }
    }

    fn name(&self, slot: u32) -> &AgentId {
        match self.names.get(slot as usize) {
            Some(Some(id)) => id,
            _ => unreachable!("slot {slot} of a present agent"),
        }
    }

    /// Adds an agent and edges both ways to every agent present at the initial weight; no-op if present.
    pub fn add_agent(&mut self, id: &AgentId) -> Vec<EdgeChange> {
        if self.members.contains_key(id) {
            return Vec::new();
        }
        let weight = self.params.initial_weight;
        let mut changes = Vec::with_capacity(self.members.len() * 2);
        for other in self.members.keys() {
            changes.push(EdgeChange::Created { from: id.clone(), to: other.clone(), weight });
            changes.push(EdgeChange::Created { from: other.clone(), to: id.clone(), weight });
        }
        let slot = u32::try_from(self.names.len()).unwrap_or_else(|_| unreachable!("fewer than 2^32 joins"));
        self.names.push(Some(id.clone()));
        self.joined.push(self.now);
        self.members.insert(id.clone(), Member { slot, joined: self.now });
        self.by_join.insert((self.now, slot));
        if let Some(k) = self.ticks_to_prune(weight) {
            self.cohort_deadlines.entry(self.now + k).or_default().push(slot);
        }
        changes
    }

    /// Removes an agent and every edge touching it.
    pub fn remove_agent(&mut self, id: &AgentId) -> Vec<EdgeChange> {
        let Some(member) = self.members.get(id).copied() else {
            return Vec::new();
        };
        let s = member.slot;
        let mut changes = Vec::new();
        for (other, m) in &self.members {
            if m.slot != s && self.weight_of_slots(s, m.slot).is_some() {
                changes.push(EdgeChange::Removed { from: id.clone(), to: other.clone() });
            }
        }
        for (other, m) in &self.members {
            if m.slot != s && self.weight_of_slots(m.slot, s).is_some() {
                changes.push(EdgeChange::Removed { from: other.clone(), to: id.clone() });
            }
        }
        let slots: Vec<u32> = self.members.values().map(|m| m.slot).collect();
        for o in slots {
            self.touched.remove(&(s, o));
            self.touched.remove(&(o, s));
        }
        self.members.remove(id);
        self.by_join.remove(&(member.joined, s));
        self.names[s as usize] = None;
        changes
    }

    /// A message flowed `from` → `to`: reinforce, creating the edge if missing; `None` if either end is absent or they are equal.
    pub fn reinforce(&mut self, from: &AgentId, to: &AgentId) -> Option<EdgeChange> {
        self.reinforce_by(from, to, 1)
    }

    /// `messages` messages flowed `from` → `to` within one tick: the same as that many calls of [`Self::reinforce`]
    /// (no decay falls between them), reported as one change with the final weight. `None` if either end is
    /// absent, they are equal, or `messages` is zero.
    pub fn reinforce_by(&mut self, from: &AgentId, to: &AgentId, messages: u32) -> Option<EdgeChange> {
        if from == to || messages == 0 {
            return None;
        }
        let (f, t) = (self.members.get(from)?.slot, self.members.get(to)?.slot);
        let amount = Milli(self.params.reinforcement.0.saturating_mul(messages));
        let current = self.weight_of_slots(f, t);
        let weight = current.unwrap_or(Milli::ZERO).saturating_add_capped(amount, Milli::ONE);
        // A touched edge already has a deadline queued; it is moved on when it comes due.
        if self.touched.insert((f, t), Touch { weight, at: self.now }).is_none()
            && let Some(k) = self.ticks_to_prune(weight)
        {
            self.edge_deadlines.entry(self.now + k).or_default().push((f, t));
        }
        Some(match current {
            Some(_) => EdgeChange::Reinforced { from: from.clone(), to: to.clone(), weight },
            None => EdgeChange::Created { from: from.clone(), to: to.clone(), weight },
        })
    }

    /// Applies `ticks` decay ticks at once and prunes edges that fall below the threshold, reported in (from, to)
    /// order. Costs O(log n) plus the edges pruned, however many edges there are.
    pub fn decay(&mut self, ticks: u64) -> Vec<EdgeChange> {
        let end = self.now.saturating_add(ticks);
        let mut pruned: Vec<(u32, u32)> = Vec::new();
        loop {
            let cohort = self.cohort_deadlines.first_key_value().map(|(t, _)| *t).filter(|t| *t <= end);
            let edge = self.edge_deadlines.first_key_value().map(|(t, _)| *t).filter(|t| *t <= end);
            // Full-mesh edges first: a touched edge due the same tick must still shadow its untouched twin.
            match (cohort, edge) {
                (Some(c), e) if e.is_none_or(|e| c <= e) => {
                    let slots = self.cohort_deadlines.remove(&c).unwrap_or_default();
                    for s in slots {
                        self.prune_cohort(s, &mut pruned);
                    }
                }
                (_, Some(e)) => {
                    let pairs = self.edge_deadlines.remove(&e).unwrap_or_default();
                    for pair in pairs {
                        let Some(touch) = self.touched.get(&pair).copied() else { continue };
                        match self.ticks_to_prune(touch.weight).map(|k| touch.at + k) {
                            Some(due) if due <= e => {
                                self.touched.remove(&pair);
                                pruned.push(pair);
                            }
                            Some(due) => self.edge_deadlines.entry(due).or_default().push(pair),
                            None => {}
                        }
                    }
                }
                _ => break,
            }
        }
        self.now = end;
        let mut named: Vec<(&AgentId, &AgentId)> = pruned.iter().map(|(f, t)| (self.name(*f), self.name(*t))).collect();
        named.sort_unstable();
        named.into_iter().map(|(from, to)| EdgeChange::Pruned { from: from.clone(), to: to.clone() }).collect()
    }

    /// The untouched full-mesh edges between `slot` and every agent that joined before it die together.
    fn prune_cohort(&self, slot: u32, pruned: &mut Vec<(u32, u32)>) {
        let Some(Some(_)) = self.names.get(slot as usize) else { return };
        let key = (self.joined[slot as usize], slot);
        for &(_, older) in self.by_join.range(..key) {
            for pair in [(slot, older), (older, slot)] {
                if !self.touched.contains_key(&pair) {
                    pruned.push(pair);
                }
            }
        }
    }

    /// Weight of the edge `from` → `to`, if present.
    pub fn weight(&self, from: &AgentId, to: &AgentId) -> Option<Milli> {
        if from == to {
            return None;
        }
        self.weight_of_slots(self.members.get(from)?.slot, self.members.get(to)?.slot)
    }

    /// Whether the agent is in the graph.
    pub fn contains(&self, id: &AgentId) -> bool {
        self.members.contains_key(id)
    }

    /// Agents in the graph, in id order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentId> {
        self.members.keys()
    }

    /// Number of edges, without listing them: O(agents + touched edges).
    pub fn edge_count(&self) -> usize {
        self.stats().edges
    }

    /// Every edge, in (from, to) order. O(agents²): for tools and tests, not for the hot path.
    pub fn edges(&self) -> Vec<(AgentId, AgentId, Milli)> {
        let mut out = Vec::new();
        for (from, f) in &self.members {
            for (to, t) in &self.members {
                if f.slot != t.slot
                    && let Some(w) = self.weight_of_slots(f.slot, t.slot)
                {
                    out.push((from.clone(), to.clone(), w));
                }
            }
        }
        out
    }

    /// Figures about the graph, in O(agents + touched edges).
    #[expect(clippy::cast_precision_loss, reason = "statistics are for display")]
    pub fn stats(&self) -> GraphStats {
        let agents = self.members.len();
        let initial = self.params.initial_weight;
        // Untouched full-mesh edges: the agent at join rank r shares 2r of them with those before it, all of the
        // same age. Touched edges shadow their untouched twin, which is counted against the younger end's cohort.
        let mut shadowed: BTreeMap<u32, u64> = BTreeMap::new();
        let (mut edges, mut active, mut sum) = (0u64, 0u64, 0u64);
        let (mut min, mut max) = (u32::MAX, 0u32);
        let mut count = |w: Milli, n: u64| {
            if n > 0 {
                edges += n;
                sum += u64::from(w.0) * n;
                min = min.min(w.0);
                max = max.max(w.0);
                if w >= initial {
                    active += n;
                }
            }
        };
        for (&(f, t), touch) in &self.touched {
            let younger = (self.joined[f as usize], f).max((self.joined[t as usize], t)).1;
            if self.implicit_weight(f, t).is_some() {
                *shadowed.entry(younger).or_default() += 1;
            }
            count(self.decayed(touch.weight, touch.at), 1);
        }
        for (rank, &(joined, slot)) in (0u64..).zip(&self.by_join) {
            if let Some(w) = self.cohort_weight(joined) {
                count(w, 2 * rank - shadowed.get(&slot).copied().unwrap_or(0));
            }
        }
        let edges = usize::try_from(edges).unwrap_or(usize::MAX);
        let possible = agents.saturating_mul(agents.saturating_sub(1));
        let density = if possible == 0 { 0.0 } else { edges as f64 / possible as f64 };
        GraphStats {
            agents,
            edges,
            active_edges: usize::try_from(active).unwrap_or(usize::MAX),
            density,
            reduction_vs_full_mesh: if possible == 0 { 0.0 } else { 1.0 - density },
            mean_weight: if edges == 0 { 0.0 } else { sum as f64 / edges as f64 / 1000.0 },
            min_weight: if edges == 0 { 0.0 } else { f64::from(min) / 1000.0 },
            max_weight: if edges == 0 { 0.0 } else { f64::from(max) / 1000.0 },
        }
    }

    fn to_wire(&self) -> GraphWire {
        let position: BTreeMap<u32, u32> = self.members.values().zip(0u32..).map(|(m, i)| (m.slot, i)).collect();
        let mut touched: Vec<(u32, u32, Milli, u64)> =
            self.touched.iter().map(|(&(f, t), w)| (position[&f], position[&t], w.weight, w.at)).collect();
        touched.sort_unstable();
        GraphWire {
            params: self.params,
            ticks: self.now,
            agents: self.members.iter().map(|(id, m)| (id.clone(), m.joined)).collect(),
            touched,
        }
    }
}

/// The snapshot form: agents with their join tick, and only the edges traffic touched. Canonical (id order), so
/// two graphs are equal exactly when their snapshots are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphWire {
    params: GraphParams,
    /// Decay ticks applied so far.
    ticks: u64,
    /// Agents in id order, each with the tick it joined.
    agents: Vec<(AgentId, u64)>,
    /// Edges that carried traffic: from and to (indices into `agents`), weight after the last update, its tick.
    touched: Vec<(u32, u32, Milli, u64)>,
}

impl From<SlimeGraph> for GraphWire {
    fn from(graph: SlimeGraph) -> Self {
        graph.to_wire()
    }
}

impl TryFrom<GraphWire> for SlimeGraph {
    type Error = String;

    fn try_from(wire: GraphWire) -> Result<Self, String> {
        let mut graph = SlimeGraph::new(wire.params);
        graph.now = wire.ticks;
        let initial = graph.params.initial_weight;
        for (i, (id, joined)) in wire.agents.iter().enumerate() {
            if *joined > wire.ticks {
                return Err(format!("agent {id} joined at tick {joined}, after the graph's tick {}", wire.ticks));
            }
            if i > 0 && wire.agents[i - 1].0 >= *id {
                return Err(format!("agents not in strict id order at {id}"));
            }
            let slot = u32::try_from(i).map_err(|_| "too many agents".to_owned())?;
            graph.names.push(Some(id.clone()));
            graph.joined.push(*joined);
            graph.members.insert(id.clone(), Member { slot, joined: *joined });
            graph.by_join.insert((*joined, slot));
            if let Some(due) = graph.ticks_to_prune(initial).map(|k| joined + k)
                && due > wire.ticks
            {
                graph.cohort_deadlines.entry(due).or_default().push(slot);
            }
        }
        let n = wire.agents.len();
        for &(f, t, weight, at) in &wire.touched {
            if f == t || f as usize >= n || t as usize >= n {
                return Err(format!("edge ({f}, {t}) does not join two distinct agents of {n}"));
            }
            if weight > Milli::ONE || at > wire.ticks {
                return Err(format!("edge ({f}, {t}) has weight {weight} at tick {at}"));
            }
            let due = graph.ticks_to_prune(weight).map(|k| at + k);
            if due.is_some_and(|d| d <= wire.ticks) {
                return Err(format!("edge ({f}, {t}) is past its prune tick"));
            }
            if graph.touched.insert((f, t), Touch { weight, at }).is_some() {
                return Err(format!("edge ({f}, {t}) appears twice"));
            }
            if let Some(d) = due {
                graph.edge_deadlines.entry(d).or_default().push((f, t));
            }
        }
        Ok(graph)
    }
}

impl PartialEq for SlimeGraph {
    fn eq(&self, other: &Self) -> bool {
        self.to_wire() == other.to_wire()
    }
}

impl Eq for SlimeGraph {}

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
        /// Snapshot and restore in place, as a restarted topology manager does.
        Restore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..6).prop_map(Op::Add),
            1 => (0u8..6).prop_map(Op::Remove),
            6 => ((0u8..6), (0u8..6)).prop_map(|(a, b)| Op::Reinforce(a, b)),
            3 => (0u8..8).prop_map(Op::Decay),
            1 => Just(Op::Restore),
        ]
    }

    fn params() -> impl Strategy<Value = GraphParams> {
        let milli = |max: u32| (0..=max).prop_map(Milli);
        prop_oneof![
            3 => Just(GraphParams::default()),
            1 => (milli(1200), milli(400), milli(150), milli(700)).prop_map(
                |(initial_weight, reinforcement, decay_rate, prune_threshold)| GraphParams {
                    initial_weight,
                    reinforcement,
                    decay_rate,
                    prune_threshold,
                }
            ),
        ]
    }

    fn apply(g: &mut SlimeGraph, op: &Op) -> Vec<EdgeChange> {
        let n = |i: &u8| id(&format!("a{i}"));
        match op {
            Op::Add(a) => g.add_agent(&n(a)),
            Op::Remove(a) => g.remove_agent(&n(a)),
            Op::Reinforce(a, b) => g.reinforce(&n(a), &n(b)).into_iter().collect(),
            Op::Decay(t) => g.decay(u64::from(*t)),
            Op::Restore => {
                let json = serde_json::to_string(&*g).expect("serialize");
                *g = serde_json::from_str(&json).expect("deserialize");
                Vec::new()
            }
        }
    }

    fn apply_reference(g: &mut reference::ReferenceGraph, op: &Op) -> Vec<EdgeChange> {
        let n = |i: &u8| id(&format!("a{i}"));
        match op {
            Op::Add(a) => g.add_agent(&n(a)),
            Op::Remove(a) => g.remove_agent(&n(a)),
            Op::Reinforce(a, b) => g.reinforce(&n(a), &n(b)).into_iter().collect(),
            Op::Decay(t) => g.decay(u64::from(*t)),
            Op::Restore => Vec::new(),
        }
    }

    #[test]
    fn a_restored_graph_prunes_the_full_mesh_at_the_same_tick() {
        let mut g = four();
        g.decay(10);
        g.reinforce(&id("sales"), &id("fraud"));
        let mut restored: SlimeGraph = serde_json::from_slice(&serde_json::to_vec(&g).expect("ser")).expect("de");
        assert_eq!(restored, g);
        assert!(restored.decay(10).is_empty());
        assert_eq!(restored.decay(1).len(), 11, "every untouched edge goes at tick 21");
        assert_eq!(restored.weight(&id("sales"), &id("fraud")), Some(Milli(180)), "0.6 at tick 10, 21 ticks of 0.02");
        assert_eq!(restored.decay(5), vec![EdgeChange::Pruned { from: id("sales"), to: id("fraud") }]);
    }

    #[test]
    fn a_snapshot_of_a_full_mesh_holds_agents_not_edges() {
        let mut g = SlimeGraph::new(GraphParams::default());
        for i in 0..500 {
            g.add_agent(&id(&format!("agent-{i:03}")));
        }
        assert_eq!(g.edge_count(), 500 * 499);
        let bytes = serde_json::to_vec(&g).expect("serialize").len();
        assert!(bytes < 500 * 40, "{bytes} bytes for 500 agents");
    }

    #[test]
    fn snapshots_that_break_the_invariants_are_refused_with_the_reason() {
        let params = serde_json::to_string(&GraphParams::default()).expect("ser");
        for (wire, reason) in [
            (r#""agents":[["b",0],["a",0]],"touched":[]"#, "strict id order"),
            (r#""agents":[["a",0],["b",9]],"touched":[]"#, "after the graph's tick"),
            (r#""agents":[["a",0],["b",0]],"touched":[[0,0,500,1]]"#, "two distinct agents"),
            (r#""agents":[["a",0],["b",0]],"touched":[[0,1,100,1]]"#, "past its prune tick"),
            (r#""agents":[["a",0],["b",0]],"touched":[[0,1,900,3],[0,1,900,3]]"#, "twice"),
        ] {
            let json = format!(r#"{{"params":{params},"ticks":5,{wire}}}"#);
            let err = serde_json::from_str::<SlimeGraph>(&json).expect_err(reason).to_string();
            assert!(err.contains(reason), "{err}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_change_weight_and_figure_equals_the_every_edge_model(
            p in params(),
            ops in proptest::collection::vec(op(), 0..300),
        ) {
            let (mut g, mut r) = (SlimeGraph::new(p), reference::ReferenceGraph::new(p));
            for o in &ops {
                prop_assert_eq!(apply(&mut g, o), apply_reference(&mut r, o), "after {:?}", o);
                prop_assert_eq!(g.edges(), r.edges());
                prop_assert_eq!(g.stats(), r.stats());
                prop_assert_eq!(g.edge_count(), r.edges().len());
                for (a, b) in (0..6).flat_map(|a| (0..6).map(move |b| (a, b))) {
                    let (a, b) = (id(&format!("a{a}")), id(&format!("a{b}")));
                    prop_assert_eq!(g.weight(&a, &b), r.weight(&a, &b));
                }
            }
        }

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
