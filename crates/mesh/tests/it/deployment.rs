//! The seed's test plan, on real processes: join, full mesh, message flow, reinforcement, decay, pruning, consensus.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_core::membership::MemberStatus;
use mesh_proto::TopicKind;
use mesh_proto::records::{EdgeBody, EdgeChangeKind, Record};

use crate::support::{FAST, Mesh, ROLES};

/// With no traffic, every edge of the full mesh decays from 0.5 by 0.02 a tick and is pruned at exactly the 21st
/// tick after its creation (0.5 - 20 x 0.02 = 0.1 is kept, 0.08 is not), as the topology topic's edge events show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_full_mesh_is_pruned_at_the_21st_tick() {
    let mut mesh = Mesh::new("idle", FAST).await;
    mesh.start_managers();
    for role in ROLES {
        mesh.start_agent(role, "0", "0");
    }
    mesh.eventually("4 live agents and 12 edges", Duration::from_secs(60), async || {
        let live = mesh.topology_stats().await.live_agents?;
        let edges = mesh.topology_stats().await.edges?;
        (live == 4 && edges == 12).then_some(())
    })
    .await;
    mesh.eventually("every edge pruned", Duration::from_secs(30), async || {
        (mesh.topology_stats().await.edges? == 0).then_some(())
    })
    .await;

    let mut created: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut pruned: BTreeMap<(String, String), u64> = BTreeMap::new();
    for read in mesh.read_topic(TopicKind::Topology).await {
        let Ok(env) = read.envelope else { continue };
        // An `edges` record stands for the same change both ways between its agent and each peer.
        let each: Vec<EdgeBody> = match env.record {
            Record::Edge(e) => vec![e],
            Record::Edges(b) => b
                .peers
                .iter()
                .flat_map(|p| [(b.agent.clone(), p.clone()), (p.clone(), b.agent.clone())])
                .map(|(from, to)| EdgeBody { tick: b.tick, change: b.change, from, to, weight: b.weight })
                .collect(),
            _ => Vec::new(),
        };
        for e in each {
            let edge = (e.from.to_string(), e.to.to_string());
            match e.change {
                EdgeChangeKind::Created => {
                    assert_eq!(e.weight.map(|w| w.0), Some(500), "created at the initial weight");
                    created.entry(edge).or_insert(e.tick);
                }
                EdgeChangeKind::Pruned => {
                    pruned.entry(edge).or_insert(e.tick);
                }
                other => panic!("no traffic, yet an edge was {other:?}: {edge:?}"),
            }
        }
    }
    assert_eq!(created.len(), 12, "full mesh of 4 agents: 12 directed edges");
    for (edge, c) in &created {
        assert_ne!(edge.0, edge.1, "no self edges");
        let p = pruned.get(edge).unwrap_or_else(|| panic!("edge {edge:?} never pruned"));
        assert_eq!(p - c, 21, "edge {edge:?} created at tick {c} must be pruned at tick {} (21 ticks later)", c + 21);
    }
}

/// The six processes of the seed deployment at the default timers, as a person would start them by hand: within
/// 15 s, 4 live agents in membership, 12 directed edges in the Redis snapshot, tasks answered, and a decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_processes_converge_within_15_seconds() {
    let mut mesh = Mesh::new("six", &[]).await;
    mesh.start_managers();
    for role in ROLES {
        mesh.start_agent(role, "2", "3");
    }
    let start = std::time::Instant::now();
    let within = Duration::from_secs(15);

    mesh.eventually("4 live members on the membership topic", within, async || {
        let mut latest = BTreeMap::new();
        for read in mesh.read_topic(TopicKind::Membership).await {
            if let Ok(env) = read.envelope
                && let Record::Member(m) = env.record
            {
                latest.insert(m.member.profile.id.clone(), m.member.status);
            }
        }
        (latest.values().filter(|s| **s == MemberStatus::Live).count() == 4).then_some(())
    })
    .await;
    mesh.eventually("12 directed edges in the Redis snapshot", within.saturating_sub(start.elapsed()), async || {
        let edges = mesh_node::topology::snapshot_edges(&mesh.store, &mesh.prefix).await.ok()??;
        (edges.len() == 12).then_some(())
    })
    .await;
    mesh.eventually("tasks answered", within.saturating_sub(start.elapsed()), async || {
        let mut answered = 0;
        for role in ROLES {
            answered += mesh.agent_stats(role).await.responses_received.unwrap_or(0);
        }
        (answered > 0).then_some(())
    })
    .await;
    mesh.eventually("a decision on the decisions topic", within.saturating_sub(start.elapsed()), async || {
        let decisions = mesh.read_topic(TopicKind::Decisions).await;
        decisions.iter().any(|r| matches!(&r.envelope, Ok(e) if matches!(e.record, Record::Decision(_)))).then_some(())
    })
    .await;
    assert!(start.elapsed() <= within + Duration::from_secs(1), "took {:?}", start.elapsed());

    // Traffic reinforces: some edge went above the initial weight.
    mesh.eventually("a reinforced edge", Duration::from_secs(10), async || {
        let edges = mesh_node::topology::snapshot_edges(&mesh.store, &mesh.prefix).await.ok()??;
        edges.iter().any(|(_, _, w)| w.0 > 500).then_some(())
    })
    .await;

    // SIGTERM: agents leave and exit 0.
    for role in ROLES {
        mesh.signal(role, nix::sys::signal::Signal::SIGTERM);
    }
    for role in ROLES {
        let status = mesh.wait_exit(role, Duration::from_secs(15));
        assert!(status.success(), "{role} exited with {status}\n{}", mesh.logs(role));
    }
    let leaves = mesh
        .read_topic(TopicKind::Topology)
        .await
        .into_iter()
        .filter(|r| matches!(&r.envelope, Ok(e) if matches!(e.record, Record::Leave(_))))
        .count();
    assert_eq!(leaves, 4, "every agent published leave");
}
