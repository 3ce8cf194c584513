//! A killed agent: the others keep talking, it is declared dead within failure_timeout plus one heartbeat
//! interval, and it rejoins as itself when restarted.

use std::time::{Duration, Instant};

use mesh_core::membership::MemberStatus;
use mesh_proto::TopicKind;
use mesh_proto::records::Record;
use nix::sys::signal::Signal;

use crate::support::{FAST, Mesh, ROLES};

/// Latest status of `agent` on the membership topic, with the entry's epoch.
async fn status_of(mesh: &Mesh, agent: &str) -> Option<(MemberStatus, u64)> {
    let mut latest = None;
    for read in mesh.read_topic(TopicKind::Membership).await {
        if let Ok(env) = read.envelope
            && let Record::Member(m) = env.record
            && m.member.profile.id.as_str() == agent
        {
            latest = Some((m.member.status, m.member.epoch));
        }
    }
    latest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_declared_dead_in_time_and_rejoins_as_itself() {
    let mut mesh = Mesh::new("agentkill", FAST).await;
    mesh.start_managers();
    for role in ROLES {
        mesh.start_agent(role, "10", "0");
    }
    mesh.eventually("4 live agents", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 4).then_some(())
    })
    .await;
    // The bound holds once the manager reads the heartbeat path: until its first probe comes back it has read no
    // heartbeat it can vouch for, and when that took more than failure_timeout / 4 (a broker just started), every
    // agent's silence counts from that moment (an agent killed before it was declared 2,257 ms after the kill).
    mesh.eventually("the manager's first probe back", Duration::from_secs(30), async || {
        (mesh.topology_stats().await.probes_returned? > 0).then_some(())
    })
    .await;
    let (_, joined_epoch) = status_of(&mesh, "fraud").await.expect("fraud in membership");

    let killed_at_ms =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
            .expect("ms");
    let killed_at = Instant::now();
    mesh.signal("fraud", Signal::SIGKILL);
    mesh.wait_exit("fraud", Duration::from_secs(5));

    // The verdict is the `dead` record the topology manager appends; its timestamp is when it was declared.
    let declared_ms = mesh
        .eventually("fraud declared dead", Duration::from_secs(20), async || {
            mesh.read_topic(TopicKind::Topology).await.into_iter().find_map(|r| match r.envelope {
                Ok(e) => match e.record {
                    Record::Dead(d) if d.agent.as_str() == "fraud" => Some(e.header.ts),
                    _ => None,
                },
                Err(_) => None,
            })
        })
        .await;
    let detection = declared_ms.saturating_sub(killed_at_ms);
    let bound = 2_000 + 250; // failure_timeout + heartbeat_interval (FAST)
    eprintln!("fraud declared dead {detection} ms after SIGKILL (bound {bound} ms)");
    let clocks_since = mesh.topology_stats().await.detector_clocks_since_ms.unwrap_or(0);
    assert!(
        detection <= bound,
        "declared dead after {detection} ms, bound {bound} ms (the detector's clocks last started {} ms after the \
         kill)\n{}",
        i128::from(clocks_since) - i128::from(killed_at_ms),
        mesh.all_logs_tail()
    );
    mesh.eventually("membership says fraud is dead", Duration::from_secs(10), async || {
        (status_of(&mesh, "fraud").await?.0 == MemberStatus::Dead).then_some(())
    })
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(30));

    // The other three keep handling each other's tasks.
    let mut before = Vec::new();
    for role in ["sales", "support", "inventory"] {
        before.push(mesh.agent_stats(role).await.tasks_handled.unwrap_or(0));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (role, b) in ["sales", "support", "inventory"].into_iter().zip(before) {
        let after = mesh.agent_stats(role).await.tasks_handled.unwrap_or(0);
        if after <= b {
            let mut counters = String::new();
            for agent in ROLES {
                let stats = mesh.agent_stats(agent).await;
                counters.push_str(&format!("{agent}: {stats:?}\n"));
            }
            panic!("{role} handled no task after the kill ({b} -> {after})\n{counters}{}", mesh.all_logs_tail());
        }
    }

    // Restarted, it rejoins as itself (same id, a later roster epoch) and serves again.
    let old_start = mesh.agent_stats("fraud").await.started_at_ms.unwrap_or(0);
    mesh.start_agent("fraud", "10", "0");
    mesh.eventually("fraud live again", Duration::from_secs(20), async || {
        let (status, epoch) = status_of(&mesh, "fraud").await?;
        (status == MemberStatus::Live && epoch > joined_epoch).then_some(())
    })
    .await;
    mesh.eventually("the restarted fraud handling tasks", Duration::from_secs(20), async || {
        let restarted = mesh.agent_stats("fraud").await.started_at_ms.unwrap_or(0) != old_start;
        (restarted && mesh.agent_stats("fraud").await.tasks_handled.unwrap_or(0) > 0).then_some(())
    })
    .await;
}
