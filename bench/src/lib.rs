//! Inputs shared by the benchmarks: a graph of `n` agents in full mesh, as a deployment has right after every
//! agent joined (the largest the graph gets before traffic shapes it).

use mesh_core::AgentId;
use mesh_core::graph::{GraphParams, SlimeGraph};

/// Agent ids `a0..a{n-1}`.
pub fn agents(n: usize) -> Vec<AgentId> {
    (0..n).filter_map(|i| AgentId::new(format!("a{i}")).ok()).collect()
}

/// A full mesh of `n` agents at the initial weight.
pub fn full_mesh(n: usize) -> SlimeGraph {
    let mut g = SlimeGraph::new(GraphParams::default());
    for a in agents(n) {
        g.add_agent(&a);
    }
    g
}
