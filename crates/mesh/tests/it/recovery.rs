//! Both managers SIGKILLed at random moments under traffic and restarted: the recovered graph equals a crash-free
//! replay of the same log (identical weights), and no decision is published twice with different outcomes.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::consensus::{ConsensusParams, Decision};
use mesh_core::topology::Source;
use mesh_node::TopologyConfig;
use mesh_proto::TopicKind;
use mesh_proto::read_model::redis_keys;
use mesh_proto::records::Record;
use mesh_transport::SnapshotStore;
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::{FAST, Mesh, ROLES};

fn seed() -> u64 {
    std::env::var("MESH_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_killed_under_traffic_recover_exactly() {
    let seed = seed();
    eprintln!("seed {seed} (replay with MESH_TEST_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mesh = Mesh::new("crash", FAST).await;
    mesh.start_managers();
    for role in ROLES {
        mesh.start_agent(role, "10", "2");
    }
    mesh.eventually("4 live agents", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 4).then_some(())
    })
    .await;

    let mut kills = 0;
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..2_000))).await;
        let victims: &[&str] = match rng.random_range(0..3) {
            0 => &["topology"],
            1 => &["consensus"],
            _ => &["topology", "consensus"],
        };
        for v in victims {
            mesh.signal(v, Signal::SIGKILL);
            let status = mesh.wait_exit(v, Duration::from_secs(5));
            assert!(!status.success(), "round {round}: {v} was killed");
            kills += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        for v in victims {
            mesh.spawn(v, &[*v]);
        }
    }
    assert!(kills >= 4, "seed {seed}: the test killed managers");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Stop traffic, let the managers catch up, then stop them cleanly so their final snapshots are written.
    for role in ROLES {
        mesh.signal(role, Signal::SIGTERM);
    }
    for role in ROLES {
        mesh.wait_exit(role, Duration::from_secs(15));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for m in ["topology", "consensus"] {
        mesh.signal(m, Signal::SIGTERM);
        let status = mesh.wait_exit(m, Duration::from_secs(15));
        assert!(status.success(), "{m} stopped cleanly\n{}", mesh.logs(m));
    }

    // Topology: the recovered snapshot equals what its changelog replays to at the same window, from scratch, and
    // the changelog accounts for the log: every task and response counted once, in the window whose range holds it.
    let recovered =
        mesh_node::topology::read_snapshot(&mesh.store, &mesh.prefix).await.expect("redis").expect("a snapshot");
    let last = recovered.last().expect("windows applied");
    let changelog: Vec<Record> = mesh
        .read_topic(TopicKind::Windows)
        .await
        .into_iter()
        .filter_map(|r| r.envelope.ok())
        .map(|e| e.record)
        .collect();
    let config = TopologyConfig::default();
    let replay = mesh_node::topology::replay_changelog(200, &config, Some(last.seq), changelog.clone());
    assert_eq!(replay.topology.last(), Some(last), "seed {seed}: the changelog reaches the snapshot's window");
    assert!(!recovered.graph().edges().is_empty() || recovered.roster().live().is_empty(), "seed {seed}");
    assert_eq!(
        recovered.graph().edges(),
        replay.topology.graph().edges(),
        "seed {seed}: recovered edges and weights equal the changelog's replay"
    );
    assert_eq!(recovered.roster(), replay.topology.roster(), "seed {seed}: recovered roster equals the replay's");
    let mut inputs = Vec::new();
    for kind in [TopicKind::Topology, TopicKind::Messages] {
        for r in mesh.read_topic(kind).await {
            if let Ok(e) = r.envelope {
                let source = Source { topic: mesh.topics.name(kind), partition: r.partition };
                inputs.push((source, r.offset, e.record));
            }
        }
    }
    let all = mesh_node::topology::replay_changelog(200, &config, None, changelog);
    let audit = mesh_node::topology::audit(&all.applied, inputs);
    assert!(audit.problems.is_empty(), "seed {seed}: {:?}", audit.problems);
    assert_eq!(audit.counted, audit.in_log, "seed {seed}: the windows count every message in their ranges once");
    assert!(audit.counted > 0, "seed {seed}: messages flowed");
    eprintln!(
        "seed {seed}: {} windows ({} refused), {} messages counted once each",
        all.applied.len(),
        all.refused.len(),
        audit.counted
    );

    // Consensus: one outcome per proposal on the decisions topic, equal to Redis and to a crash-free replay.
    let mut published: BTreeMap<String, Decision> = BTreeMap::new();
    let mut copies = 0;
    for r in mesh.read_topic(TopicKind::Decisions).await {
        let Ok(e) = r.envelope else { continue };
        let Record::Decision(d) = e.record else { continue };
        copies += 1;
        let id = d.decision.proposal.to_string();
        if let Some(earlier) = published.get(&id) {
            assert_eq!(earlier, &d.decision, "seed {seed}: proposal {id} published twice with different decisions");
        }
        published.insert(id, d.decision);
    }
    assert!(!published.is_empty(), "seed {seed}: proposals were decided ({copies} decision records)");
    let stored = mesh.hash(&redis_keys::decisions(&mesh.prefix)).await;
    for (id, d) in &published {
        let s: Decision = serde_json::from_str(stored.get(id).expect("stored in redis")).expect("decision json");
        assert_eq!(&s, d, "seed {seed}: redis and kafka agree on {id}");
    }
    let mut records: Vec<Record> = Vec::new();
    // Votes and markers first, then proposals, then the roster they are judged by: yet another interleaving.
    for kind in [TopicKind::Votes, TopicKind::Proposals, TopicKind::Membership] {
        records.extend(mesh.read_topic(kind).await.into_iter().filter_map(|r| r.envelope.ok()).map(|e| e.record));
    }
    let params = ConsensusParams { proposal_timeout_ms: 5_000, ..ConsensusParams::default() };
    let replayed_decisions = mesh_node::consensus::replay_log(params, records);
    for (id, d) in &published {
        assert_eq!(replayed_decisions.get(id), Some(d), "seed {seed}: crash-free replay decides {id} the same");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_records_the_log_no_longer_holds_is_refused_loudly() {
    let mut mesh = Mesh::new("truncated", FAST).await;
    mesh.start_managers();
    mesh.start_agent("inventory", "0", "0");
    let snapshot_key = redis_keys::topology_snapshot(&mesh.prefix);
    mesh.eventually("inventory live and a snapshot taken", Duration::from_secs(60), async || {
        let live = mesh.topology_stats().await.live_agents? == 1;
        let snapshot = mesh.store.get(&snapshot_key).await.ok().flatten().is_some();
        (live && snapshot).then_some(())
    })
    .await;
    mesh.signal("topology", Signal::SIGTERM);
    assert!(mesh.wait_exit("topology", Duration::from_secs(30)).success(), "{}", mesh.logs("topology"));

    // While the manager is down, a record arrives after its snapshot's position and retention (here on demand)
    // deletes everything up to the end: the records between the snapshot and now are gone.
    let topic = mesh.topics.name(TopicKind::Topology);
    crate::wire::produce(&mesh, &topic, "nobody", b"appended while the manager was down");
    let end = mesh.bus.end_offset(&topic, 0).await.expect("end offset");
    mesh.bus.delete_before(&topic, 0, end).await.expect("records deleted");

    mesh.spawn("topology", &["topology"]);
    let status = mesh.wait_exit("topology", Duration::from_secs(60));
    assert!(!status.success(), "a replay that cannot be exact must stop the manager\n{}", mesh.logs("topology"));
    let log = mesh.logs("topology");
    assert!(
        log.contains(&format!("replaying {topic}/0 from offset")) && log.contains("delete the snapshot"),
        "the refusal names the partition and the fix:\n{log}"
    );
}
