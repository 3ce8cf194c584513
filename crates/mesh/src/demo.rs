//! `mesh demo`: the three services as tasks of one process over an in-memory bus and store, like the seed's
//! single-process mode. For a quick look without any infrastructure; not a deployment (nothing is durable and
//! nothing is distributed), which `mesh up` is.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use mesh_core::{AgentId, Role};
use mesh_node::{AgentConfig, ConsensusConfig, MeshConfig, Shutdown, TopologyConfig};
use mesh_proto::read_model::{AgentStats, ConsensusStats, TopologyStats, redis_keys};
use mesh_sim::{MemoryBus, MemoryStore};
use mesh_transport::SnapshotStore;

use crate::cli::DemoArgs;

/// A hash the services wrote: empty when none is there yet, which the summary shows as zeros.
async fn hash(store: &MemoryStore, key: &str) -> Vec<(String, String)> {
    store.hgetall(key).await.unwrap_or_default()
}

/// What the demo shows each tick and prints at the end with `--json` (fields in the order the JSON has always listed
/// them: alphabetical).
#[derive(Debug, serde::Serialize)]
struct Summary {
    accepted: u64,
    decided: u64,
    edges: u64,
    live_agents: u64,
    mean_weight: f64,
    reduction_vs_full_mesh: f64,
    responses_received: u64,
}

async fn summary(store: &MemoryStore, prefix: &str) -> Summary {
    let topo = TopologyStats::from_fields(hash(store, &redis_keys::topology_stats(prefix)).await);
    let cons = ConsensusStats::from_fields(hash(store, &redis_keys::consensus_stats(prefix)).await);
    let mut answered = 0;
    for role in ["sales", "support", "inventory", "fraud"] {
        let agent = AgentStats::from_fields(hash(store, &redis_keys::agent_stats(prefix, role)).await);
        answered += agent.responses_received.unwrap_or(0);
    }
    Summary {
        accepted: cons.accepted.unwrap_or(0),
        decided: cons.decided.unwrap_or(0),
        edges: topo.edges.unwrap_or(0),
        live_agents: topo.live_agents.unwrap_or(0),
        mean_weight: topo.mean_weight.unwrap_or(0.0),
        reduction_vs_full_mesh: topo.reduction_vs_full_mesh.unwrap_or(0.0),
        responses_received: answered,
    }
}

pub(crate) async fn run(args: &DemoArgs) -> Result<()> {
    let duration = humantime::parse_duration(&args.duration)
        .map_err(|e| anyhow!("invalid --duration {:?}: {e}; write for example \"30s\"", args.duration))?;
    let bus = MemoryBus::new();
    let store = MemoryStore::new();
    let mesh = MeshConfig::default();
    let prefix = mesh.topics.prefix().to_owned();
    let (stop, shutdown) = Shutdown::new();
    let mut topology = TopologyConfig::default();
    let mut consensus = ConsensusConfig::default();
    let (heartbeat, rate) = if args.fast {
        topology.decay_interval = Duration::from_millis(200);
        topology.failure_timeout = Duration::from_secs(2);
        topology.snapshot_interval = Duration::from_millis(500);
        consensus.params.proposal_timeout_ms = 5_000;
        (Duration::from_millis(250), 5.0)
    } else {
        (Duration::from_secs(1), 1.0)
    };
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(mesh_node::topology::run(
        bus.clone(),
        store.clone(),
        mesh.clone(),
        topology,
        shutdown.clone(),
        (),
    )));
    tasks.push(tokio::spawn(mesh_node::consensus::run(
        bus.clone(),
        store.clone(),
        mesh.clone(),
        consensus,
        shutdown.clone(),
        (),
    )));
    for (i, role) in ["sales", "support", "inventory", "fraud"].into_iter().enumerate() {
        let config = AgentConfig {
            id: AgentId::new(role).context("agent id")?,
            name: role.to_owned(),
            role: Role::new(role).context("role")?,
            capabilities: Vec::new(),
            metadata: BTreeMap::new(),
            heartbeat_interval: heartbeat,
            rate,
            proposal_every: 5,
            start_after_members: 0,
            seed: 7 + i as u64,
        };
        tasks.push(tokio::spawn(mesh_node::agent::run(
            bus.clone(),
            store.clone(),
            mesh.clone(),
            config,
            shutdown.clone(),
            (),
        )));
    }
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut out = std::io::stdout();
    if !args.json {
        writeln!(
            out,
            "demo: topology and consensus managers and 4 agents in this process, over an in-memory bus (not a deployment: see `mesh up`)"
        )?;
    }
    while start.elapsed() < duration {
        tick.tick().await;
        if !args.json {
            let s = summary(&store, &prefix).await;
            writeln!(
                out,
                "{:>4.0}s  {} live agents · {} edges (reduction vs full mesh {:.0}%, mean weight {:.2}) · {} tasks answered · {} decisions ({} accepted)",
                start.elapsed().as_secs_f64(),
                s.live_agents,
                s.edges,
                s.reduction_vs_full_mesh * 100.0,
                s.mean_weight,
                s.responses_received,
                s.decided,
                s.accepted,
            )?;
        }
    }
    let final_summary = summary(&store, &prefix).await;
    let _ = stop.send(true);
    for t in tasks {
        t.await.context("a demo task panicked")?.context("a demo service failed")?;
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&final_summary)?)?;
    }
    Ok(())
}
