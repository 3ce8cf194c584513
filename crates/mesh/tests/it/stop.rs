//! A stop while the broker is unreachable: every process still ends by itself within the supervisor's default
//! `stop_timeout`, instead of waiting on a broker that does not answer. (An agent used to block in its final commit
//! and ignore SIGTERM for minutes; orphans of an interrupted test run outlived their broker that way for hours.)

use std::time::{Duration, Instant};

use mesh_fixtures::{KafkaBroker, KafkaOptions, SharedInfra};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{FAST, Mesh};

/// The supervisor's default `stop_timeout`: past it a process is killed, so a stop must end before it.
const SUPERVISOR_STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_stops_in_time_while_the_broker_does_not_answer() {
    // A broker of this test's own: it is paused, which would stall every other test on the shared one.
    let broker = KafkaBroker::start(KafkaOptions::default()).expect("a broker of this test's own");
    let shared = mesh_fixtures::shared().expect("redis for the tests");
    let infra = SharedInfra { kafka: broker.bootstrap(), redis: shared.redis.clone() };
    let mut mesh = Mesh::on(&infra, "stopcut", FAST).await;
    mesh.start_managers();
    let agents = ["sales", "fraud"];
    for role in agents {
        mesh.start_agent(role, "50", "5");
    }
    mesh.eventually("2 live agents", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 2).then_some(())
    })
    .await;
    mesh.eventually("tasks answered", Duration::from_secs(30), async || {
        (mesh.agent_stats("sales").await.responses_received? > 0).then_some(())
    })
    .await;

    // Paused, not killed: connections stay open and nothing answers, as behind a partition, so every send, commit
    // and close waits for its own timeout.
    let broker_pid = Pid::from_raw(i32::try_from(broker.pid().expect("running")).expect("pid fits"));
    kill(broker_pid, Signal::SIGSTOP).expect("broker paused");
    // Let the agents' sends pile up unanswered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let names: Vec<&str> = ["topology", "consensus"].into_iter().chain(agents).collect();
    let asked = Instant::now();
    for name in &names {
        mesh.signal(name, Signal::SIGTERM);
    }
    let mut took = Vec::new();
    for name in &names {
        let status = mesh.wait_exit(name, SUPERVISOR_STOP_TIMEOUT.saturating_sub(asked.elapsed()));
        took.push((*name, asked.elapsed(), status));
    }
    kill(broker_pid, Signal::SIGCONT).expect("broker resumed");
    eprintln!("stopped with the broker paused: {took:?}");
    for (name, _, status) in &took {
        // Ended by itself (an exit code), not by a signal.
        assert!(status.code().is_some(), "{name} ended by {status:?}\n{}", mesh.logs(name));
    }
    for agent in agents {
        assert!(
            mesh.logs(agent).contains("sends not acknowledged"),
            "{agent} did not report the sends it gave up on\n{}",
            mesh.logs(agent)
        );
    }
}
