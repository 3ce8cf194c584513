//! `mesh demo`: the whole mesh in one process over the in-memory bus reaches the same milestones as the real one.

use std::process::Command;

#[test]
fn the_one_process_demo_joins_talks_decides_and_prunes() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["demo", "--fast", "--duration", "8s", "--json"])
        .output()
        .expect("mesh demo runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON summary");
    assert_eq!(s["live_agents"], 4, "{s}");
    assert!(s["responses_received"].as_u64() > Some(0), "tasks answered: {s}");
    assert!(s["decided"].as_u64() > Some(0), "proposals decided: {s}");
    let edges = s["edges"].as_u64().unwrap_or(0);
    assert!((1..=12).contains(&edges), "edges between distinct agents of 4: {s}");
}
