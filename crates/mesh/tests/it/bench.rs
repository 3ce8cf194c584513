//! `mesh bench` smoke run: a 1 s broker warm-up, 20 agent processes on the shared real Kafka and Redis, an idle run
//! and 10 s measured, then both baselines (one process, and 20 worker processes). Asserts only that the harness completes and reports
//! sane, non-zero figures; speed targets belong to the benchmark itself.

use std::process::Command;

#[test]
fn a_short_bench_completes_and_reports_sane_figures() {
    let infra = mesh_fixtures::shared().expect("shared Kafka and Redis");
    let dir = std::env::temp_dir().join(format!("mesh-bench-smoke-{}", std::process::id()));
    let json = dir.join("out.json");
    let report = dir.join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["bench", "--agents", "20", "--duration", "10s", "--warmup", "3s", "--decay-interval", "200ms", "--idle"])
        .args(["--broker-warmup", "1s"])
        .args(["--kafka", &infra.kafka, "--redis", &infra.redis])
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&report)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "error")
        .output()
        .expect("mesh bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("JSON written")).expect("JSON");
    assert_eq!(r["schema"], "mesh-bench/1");
    assert_eq!(r["config"]["broker_warmup_s"], 1.0, "the broker warm-up ran first: {r:#}");
    assert_eq!(r["join"]["live_agents"], 20, "{r:#}");
    assert_eq!(r["join"]["edges"], 380, "the full mesh was seen: {r:#}");
    let positive = |v: &serde_json::Value| v.as_f64().is_some_and(|x| x > 0.0);
    for (what, v) in [
        ("delivered/s", &r["messages"]["delivered_per_s"]),
        ("end-to-end p50", &r["messages"]["end_to_end"]["p50_us"]),
        ("round trip p99", &r["messages"]["round_trip"]["p99_us"]),
        ("decisions", &r["consensus"]["decisions"]),
        ("consensus p50", &r["consensus"]["latency"]["p50_us"]),
        ("baseline received", &r["baseline"]["received"]),
        ("throughput ratio", &r["ratios"]["throughput"]),
        ("20-process baseline received", &r["baseline_processes"]["received"]),
        ("throughput ratio to it", &r["ratios_processes"]["throughput"]),
        ("idle agents' CPU", &r["idle"]["agent_cores"]),
        ("windows applied", &r["window_stats"]["applied"]),
        ("pruning began after", &r["topology"]["pruned_after_s"]),
    ] {
        assert!(positive(v), "{what} = {v}: {r:#}");
    }
    // Offered 400 msg/s: delivery cannot exceed what was offered by much, nor be a trickle.
    let delivered = r["messages"]["delivered_per_s"].as_f64().unwrap_or(0.0);
    assert!((100.0..=600.0).contains(&delivered), "{delivered} msg/s delivered of 400 offered");
    let p50 = r["messages"]["end_to_end"]["p50_us"].as_f64().unwrap_or(0.0);
    let max = r["messages"]["end_to_end"]["max_us"].as_f64().unwrap_or(0.0);
    assert!(p50 <= max && max < 60_000_000.0, "latency ordering: {r:#}");
    let agent_cost = r["cost"].as_array().and_then(|c| c.iter().find(|k| k["kind"] == "agent")).cloned();
    let agent_cost = agent_cost.expect("agent cost reported");
    assert_eq!(agent_cost["processes"], 20);
    assert!(positive(&agent_cost["peak_rss_mib_max"]) && positive(&agent_cost["cpu_s"]), "{agent_cost}");
    assert!(stdout.contains("throughput mesh/baseline"), "{stdout}");
    assert_eq!(r["baseline_processes"]["processes"], 20);
    assert!(stdout.contains("throughput mesh/N-process baseline"), "{stdout}");
    let svg = std::fs::read_to_string(report.join("bench.svg")).expect("SVG written");
    assert!(svg.starts_with("<svg") && svg.contains("plain Kafka baseline"));
    let compare = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["bench", "--agents", "2", "--baseline", "--duration", "1s", "--warmup", "1s"])
        .args(["--kafka", &infra.kafka, "--redis", &infra.redis])
        .arg("--compare")
        .arg(&json)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "error")
        .output()
        .expect("mesh bench --baseline runs");
    let text = String::from_utf8_lossy(&compare.stdout);
    assert!(compare.status.success() && text.contains("baseline p99"), "{text}");
    assert!(!std::path::Path::new(&dir.join("state/run/mesh.sock")).exists(), "the deployment was taken down");
    let _ = std::fs::remove_dir_all(&dir);
}
