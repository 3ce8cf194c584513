//! Benchmarks of the mesh. The library holds the `mesh bench` report model ([`report`]: JSON schema, terminal
//! table, `--compare`) and its SVG rendering ([`svg`]), kept apart from the orchestration (which needs Kafka and
//! the supervisor) so they are tested without either; `benches/core.rs` is the criterion suite of the pure core,
//! which uses the inputs below.

pub mod profile;
pub mod report;
pub mod svg;

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
