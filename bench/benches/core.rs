//! Criterion micro-benchmarks of the pure core at 4, 500 and 5,000 agents (full mesh: 12, 249,500 and 24,995,000
//! edges): reinforce, a decay tick that prunes nothing, the tick that prunes the whole idle mesh, snapshot
//! encode/decode and quorum evaluation. `cargo bench -p mesh-bench`; docs/bench.md has the figures.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_bench::{agents, full_mesh};
use mesh_core::consensus::{BeeConsensus, ConsensusInput, ConsensusParams, Proposal, Vote};
use mesh_core::graph::SlimeGraph;
use mesh_core::waggle::{DanceInputs, WaggleDance};
use mesh_core::{Milli, ProposalId};

const SIZES: [usize; 3] = [4, 500, 5_000];

fn graph(c: &mut Criterion) {
    let mut group = c.benchmark_group("graph");
    group.sample_size(10);
    for n in SIZES {
        let ids = agents(n);
        let mesh = full_mesh(n);
        group.bench_with_input(BenchmarkId::new("reinforce", n), &n, |b, _| {
            let mut g = mesh.clone();
            let mut i = 0usize;
            b.iter(|| {
                let (from, to) = (&ids[i % n], &ids[(i + 1) % n]);
                i += 1;
                black_box(g.reinforce(from, to))
            });
        });
        // A tick in the life of the mesh: decay everything by one step, nothing due for pruning.
        group.bench_with_input(BenchmarkId::new("decay_prune_sweep", n), &n, |b, _| {
            b.iter_batched_ref(|| mesh.clone(), |g| black_box(g.decay(1)), BatchSize::LargeInput);
        });
        // The tick at which every idle full-mesh edge falls below the threshold: the cost is the N*(N-1) events.
        if n <= 500 {
            let mut due = mesh.clone();
            due.decay(20);
            group.bench_with_input(BenchmarkId::new("prune_whole_mesh", n), &n, |b, _| {
                b.iter_batched_ref(|| due.clone(), |g| black_box(g.decay(1).len()), BatchSize::LargeInput);
            });
        }
        group.bench_with_input(BenchmarkId::new("snapshot_encode", n), &n, |b, _| {
            b.iter(|| black_box(serde_json::to_vec(&mesh).map(|v| v.len())));
        });
        let bytes = serde_json::to_vec(&mesh).unwrap_or_default();
        group.bench_with_input(BenchmarkId::new("snapshot_decode", n), &n, |b, _| {
            b.iter(|| black_box(serde_json::from_slice::<SlimeGraph>(&bytes).is_ok()));
        });
    }
    group.finish();
}

fn quorum(c: &mut Criterion) {
    let mut group = c.benchmark_group("consensus");
    for n in SIZES {
        let voters: BTreeSet<_> = agents(n).into_iter().collect();
        let inputs = DanceInputs { priority: Milli(800), urgency: Milli(800), confidence: Milli(800), amount_cents: 0 };
        let proposal = Proposal {
            id: ProposalId::new("p").unwrap_or_else(|_| unreachable!("valid id")),
            proposer: agents(1).remove(0),
            subject: "s".into(),
            action: "a".into(),
            dance: WaggleDance::perform(inputs, "s"),
            voters: voters.clone(),
            epoch: 1,
            created_at_ms: 0,
        };
        let votes: Vec<ConsensusInput> = voters
            .iter()
            .map(|v| {
                ConsensusInput::Vote(Vote {
                    proposal: proposal.id.clone(),
                    voter: v.clone(),
                    support: true,
                    intensity: Milli(500),
                })
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("proposal_to_decision", n), &n, |b, _| {
            b.iter_batched(
                || BeeConsensus::new(ConsensusParams::default()),
                |mut m| {
                    m.step(ConsensusInput::Propose(proposal.clone()));
                    for v in &votes {
                        if m.decided() > 0 {
                            break;
                        }
                        m.step(v.clone());
                    }
                    black_box(m.decided())
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, graph, quorum);
criterion_main!(benches);
