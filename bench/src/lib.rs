//! Benchmarks of the mesh. The library holds the `mesh bench` engine ([`engine`]: plan, infrastructure, the
//! deployment through the supervisor, measurement, the plain-Kafka baselines, verdicts and outputs; the binary only
//! turns its flags into [`engine::Options`] and calls [`engine::run`]), the report model ([`report`]: JSON schema,
//! terminal table, `--compare`), its SVG rendering ([`svg`]) and the CPU profiler ([`profile`]). The report model
//! and the engine's pure parts (the plan, the verdicts) are tested without Kafka or the supervisor;
//! `benches/core.rs` is the criterion suite of the pure core, which uses the inputs below.

pub mod engine;
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
