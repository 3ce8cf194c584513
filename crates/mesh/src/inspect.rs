//! `mesh inspect`: what the managers and agents stored in Redis, for people (text) and scripts (`--json`).

use anyhow::{Context, Result};
use mesh_proto::read_model::redis_keys;
use mesh_redis::AnyStore;
use mesh_transport::SnapshotStore;
use serde_json::{Map, Value, json};

use crate::settings::Infra;

pub(crate) async fn run(infra: &Infra, as_json: bool) -> Result<()> {
    let store = AnyStore::connect(&infra.redis, infra.redis_ca_file.as_deref())
        .await
        .context("failed to reach the snapshot store")?;
    let prefix = infra.mesh.topics.prefix();
    let hash = |pairs: Vec<(String, String)>| -> Value {
        Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect::<Map<_, _>>())
    };
    let topology = hash(store.hgetall(&redis_keys::topology_stats(prefix)).await?);
    let consensus = hash(store.hgetall(&redis_keys::consensus_stats(prefix)).await?);
    let edges = mesh_node::topology::snapshot_edges(&store, prefix).await?.unwrap_or_default();
    let edges_json: Vec<Value> =
        edges.iter().map(|(f, t, w)| json!({"from": f.as_str(), "to": t.as_str(), "weight": w.as_f64()})).collect();
    let decisions = store.hgetall(&redis_keys::decisions(prefix)).await?;
    let report = json!({
        "topology": topology,
        "snapshot_edges": edges_json,
        "consensus": consensus,
        "decisions_stored": decisions.len(),
    });
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(out, "topology   {}", flat(&report["topology"]))?;
        writeln!(out, "consensus  {}", flat(&report["consensus"]))?;
        writeln!(out, "decisions  {} stored", decisions.len())?;
        writeln!(out, "edges in the latest snapshot: {}", edges.len())?;
        for (f, t, w) in &edges {
            writeln!(out, "  {f} -> {t}  {w}")?;
        }
    }
    Ok(())
}

fn flat(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(" ")
        }
        _ => "(nothing stored yet)".to_owned(),
    }
}
