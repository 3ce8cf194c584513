//! `mesh demo`: the three services as tasks of one process over an in-memory bus and store, like the seed's
//! single-process mode. For a quick look without any infrastructure; not a deployment (nothing is durable and
//! nothing is distributed), which `mesh up` is.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use mesh_core::{AgentId, Role};
use mesh_node::{AgentConfig, ConsensusConfig, MeshConfig, Shutdown, TopologyConfig, redis_keys};
use mesh_sim::{MemoryBus, MemoryStore};
use mesh_transport::SnapshotStore;
use serde_json::{Value, json};

use crate::cli::DemoArgs;

async fn hash(store: &MemoryStore, key: &str) -> BTreeMap<String, String> {
    store.hgetall(key).await.map(|v| v.into_iter().collect()).unwrap_or_default()
}

fn num(m: &BTreeMap<String, String>, k: &str) -> f64 {
    m.get(k).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

async fn summary(store: &MemoryStore, prefix: &str) -> Value {
    let topo = hash(store, &redis_keys::topology_stats(prefix)).await;
    let cons = hash(store, &redis_keys::consensus_stats(prefix)).await;
    let mut answered = 0.0;
    for role in ["sales", "support", "inventory", "fraud"] {
        answered += num(&hash(store, &redis_keys::agent_stats(prefix, role)).await, "responses_received");
    }
    let count = |v: f64| v.max(0.0).round() as u64;
    json!({
        "live_agents": count(num(&topo, "live_agents")),
        "edges": count(num(&topo, "edges")),
        "reduction_vs_full_mesh": num(&topo, "reduction_vs_full_mesh"),
        "mean_weight": num(&topo, "mean_weight"),
        "responses_received": count(answered),
        "decided": count(num(&cons, "decided")),
        "accepted": count(num(&cons, "accepted")),
    })
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
                s["live_agents"],
                s["edges"],
                s["reduction_vs_full_mesh"].as_f64().unwrap_or(0.0) * 100.0,
                s["mean_weight"].as_f64().unwrap_or(0.0),
                s["responses_received"],
                s["decided"],
                s["accepted"],
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
