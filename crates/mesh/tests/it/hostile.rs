//! Hostile input on the real broker: records at the broker's size limit on every topic a process reads, a task no
//! response can name, and an answer the broker refuses. Each is dead-lettered in a bounded letter (or skipped), and
//! every process keeps working: no record can stall a reader.

use std::time::Duration;

use mesh_kafka::{KafkaBus, KafkaConfig};
use mesh_proto::TopicKind;
use mesh_proto::records::{DeadLetterBody, Record};
use mesh_transport::{Bus, OutRecord};
use sha2::{Digest, Sha256};

use crate::support::{FAST, Mesh};
use crate::wire::{produce, response_to, task_json};

/// A value of `len` bytes that is not UTF-8 and holds no 0x01 (kcat's record delimiter in these tests).
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| if i % 2 == 0 { 0xff } else { 2 + (i % 200) as u8 }).collect()
}

/// Both managers and one agent, `inventory`, live, with `settings` as their environment.
async fn inventory_alone(test: &str, settings: &[(&str, &str)]) -> Mesh {
    let mut mesh = Mesh::new(test, settings).await;
    mesh.start_managers();
    mesh.start_agent("inventory", "0", "0");
    mesh.eventually("inventory live", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 1).then_some(())
    })
    .await;
    mesh
}

/// A plain task sent now is answered.
async fn still_answers(mesh: &Mesh, task_id: &str) {
    produce(mesh, &mesh.topics.name(TopicKind::Messages), "inventory", task_json(task_id).as_bytes());
    mesh.eventually(&format!("a response to {task_id}"), Duration::from_secs(20), async || {
        response_to(mesh, task_id).await
    })
    .await;
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_at_the_brokers_limit_on_every_read_topic_are_dead_lettered_and_nobody_stalls() {
    let mut mesh = inventory_alone("oversized", FAST).await;

    // One million bytes, not UTF-8: as hex (a letter of old) it would be twice the broker's limit.
    let huge = binary(1_000_000);
    let targets = [
        (TopicKind::Membership, "inventory"),
        (TopicKind::Messages, "inventory"),
        (TopicKind::Topology, "inventory"),
        (TopicKind::Heartbeats, "inventory"),
        (TopicKind::Proposals, "p1"),
        (TopicKind::Votes, "p1"),
    ];
    for (kind, key) in targets {
        produce(&mesh, &mesh.topics.name(kind), key, &huge);
    }
    // A task whose envelope id no response can name (ids are lower-case).
    let messages = mesh.topics.name(TopicKind::Messages);
    produce(&mesh, &messages, "inventory", task_json("KCAT-UPPER").as_bytes());
    // A valid join the broker takes (1,040,000 bytes) whose member record the manager could not write (over the
    // producer's 1,000,000): applied, it stopped the topology manager; its kind's limit refuses it first.
    let giant = format!(
        r#"{{"v":1,"kind":"join","id":"giant-1","ts":1,"body":{{"agent":{{"id":"giant","name":"giant","role":"sales","capabilities":[],"metadata":{{"blob":"{}"}}}}}}}}"#,
        "g".repeat(1_040_000)
    );
    produce(&mesh, &mesh.topics.name(TopicKind::Topology), "giant", giant.as_bytes());

    let expected: Vec<String> = targets.iter().map(|(k, _)| mesh.topics.name(*k)).collect();
    let found = mesh
        .eventually(
            "a letter for every oversized record, the unanswerable task and the giant join",
            Duration::from_secs(30),
            async || {
                let found = mesh.letters().await;
                let all_huge = expected
                    .iter()
                    .all(|t| found.iter().any(|d| &d.source.topic == t && d.payload_size == Some(1_000_000)));
                let task = found.iter().any(|d| d.reason.contains("KCAT-UPPER"));
                let giant = found.iter().any(|d| d.reason.contains("over the 16384-byte limit of its kind"));
                (all_huge && task && giant).then_some(found)
            },
        )
        .await;
    for letter in found.iter().filter(|d| d.payload_size == Some(1_000_000)) {
        assert!(letter.payload_truncated, "{}: cut to the letter's limit", letter.source.topic);
        let hex = letter.payload_hex.as_deref().expect("binary stays hex");
        assert_eq!(hex.len(), 2 * DeadLetterBody::PAYLOAD_LIMIT, "{}", letter.source.topic);
        assert_eq!(
            letter.payload_sha256.as_deref(),
            Some(hex_sha256(&huge).as_str()),
            "the hash names the whole value"
        );
    }
    let task_letter = found.iter().find(|d| d.reason.contains("KCAT-UPPER")).expect("found above");
    assert_eq!(task_letter.consumer, "agent-inventory", "the agent that could not answer wrote it");
    mesh.eventually("tasks_unanswerable counted", Duration::from_secs(20), async || {
        (mesh.agent_stats("inventory").await.tasks_unanswerable.unwrap_or(0) == 1).then_some(())
    })
    .await;

    // Everyone still works: a plain task is answered.
    still_answers(&mesh, "kcat-after-1").await;
    for name in ["topology", "consensus", "inventory"] {
        assert!(mesh.running(name), "{name} died\n{}", mesh.logs(name));
    }
    assert_eq!(mesh.topology_stats().await.agents, Some(1), "the giant never joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_broker_refuses_is_dead_lettered_and_its_task_committed() {
    // The processes' producers refuse records over 200,000 bytes (librdkafka's own check, as a broker's limit would).
    let mut settings = FAST.to_vec();
    settings.push(("MESH_KAFKA_PROPERTIES", "message.max.bytes=200000"));
    let mut mesh = inventory_alone("refused", &settings).await;

    // An unknown task is answered with an error quoting its name: 60,000 quotes become 240 KB of answer (each is
    // escaped twice), over that limit, from a 120 KB task (within a task's own 256 KiB).
    let name = "\"".repeat(60_000);
    let task = serde_json::json!({
        "v": 1, "kind": "task", "id": "kcat-too-big", "ts": 1_700_000_000_000_u64,
        "body": {"from": "kcat-client", "to": "inventory", "task": name, "payload": {}}
    });
    let messages = mesh.topics.name(TopicKind::Messages);
    produce(&mesh, &messages, "inventory", task.to_string().as_bytes());
    let letter = mesh
        .eventually("the refused answer dead-lettered", Duration::from_secs(30), async || {
            mesh.letters().await.into_iter().find(|d| d.reason.contains("refused by the broker"))
        })
        .await;
    assert_eq!(letter.consumer, "agent-inventory");
    assert_eq!(letter.source.offset, -1, "an answer that was never written has no offset");
    assert!(letter.payload_truncated && letter.payload_size.is_some_and(|n| n > 200_000), "{letter:?}");
    mesh.eventually("sends_refused counted", Duration::from_secs(20), async || {
        (mesh.agent_stats("inventory").await.sends_refused.unwrap_or(0) == 1).then_some(())
    })
    .await;

    // Not retried forever: the next task is answered.
    still_answers(&mesh, "kcat-after-2").await;
    assert!(mesh.running("inventory"), "inventory died\n{}", mesh.logs("inventory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_bus_tells_a_refusal_for_good_from_a_transient_failure() {
    let mesh = Mesh::new("refusal", FAST).await;
    let bus = KafkaBus::new(KafkaConfig::new(mesh.kafka.clone(), "refusal-test")).expect("kafka client");
    let record = |topic: &str, partition: i32, bytes: usize| OutRecord {
        topic: topic.to_owned(),
        partition,
        key: b"k".to_vec(),
        payload: vec![b'x'; bytes],
        sent_at_us: None,
        auth: None,
    };
    let topic = mesh.topics.name(TopicKind::Deadletter);
    bus.ensure_topics(&[mesh_transport::TopicSpec {
        name: topic.clone(),
        partitions: 1,
        compacted: false,
        retention: None,
    }])
    .await
    .expect("topic");
    let too_big = tokio::time::timeout(Duration::from_secs(30), bus.enqueue(record(&topic, 0, 2_000_000)))
        .await
        .expect("a refusal is not retried until a timeout");
    assert!(too_big.as_ref().is_err_and(|e| e.is_permanent()), "{too_big:?}");
    let no_partition = tokio::time::timeout(Duration::from_secs(30), bus.enqueue(record(&topic, 7, 10)))
        .await
        .expect("a refusal is not retried until a timeout");
    assert!(no_partition.as_ref().is_err_and(|e| e.is_permanent()), "{no_partition:?}");
    assert!(bus.enqueue(record(&topic, 0, 10)).await.is_ok(), "the same bus still publishes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_votes_for_proposals_that_do_not_exist_stays_bounded_and_decisions_go_on() {
    use mesh_core::consensus::{EARLY_LIMIT, Vote};
    use mesh_core::{AgentId, Milli, ProposalId};
    use mesh_proto::records::VoteBody;
    use mesh_proto::{Envelope, Header, encode, partition_for};

    let mut mesh = Mesh::new("vote-flood", FAST).await;
    mesh.start_managers();
    for role in ["sales", "fraud", "inventory"] {
        mesh.start_agent(role, "5", "2");
    }
    mesh.eventually("three agents live", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 3).then_some(())
    })
    .await;
    let rss_before = mesh.rss_kib("consensus");

    // Four times as many inputs as the buffer holds, each for a proposal of its own that never comes.
    let flood = 4 * EARLY_LIMIT;
    let topic = mesh.topics.name(TopicKind::Votes);
    let partitions = mesh.bus.partition_count(&topic).await.expect("votes topic");
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..flood {
        let proposal = ProposalId::new(format!("ghost-{i}")).expect("valid id");
        let vote =
            Vote { proposal, voter: AgentId::new("mallory").expect("id"), support: true, intensity: Milli(1000) };
        let key = vote.proposal.as_str().to_owned();
        let envelope =
            Envelope { header: Header { id: format!("flood-{i}"), ts: 1 }, record: Record::Vote(VoteBody { vote }) };
        // Tagged as mallory: an agent of the mesh gone bad, which authentication alone does not stop.
        let payload = encode(&envelope);
        acks.push(mesh.bus.enqueue(OutRecord {
            topic: topic.clone(),
            partition: partition_for(key.as_bytes(), partitions),
            auth: mesh.tag(&topic, key.as_bytes(), &payload),
            key: key.into_bytes(),
            payload,
            sent_at_us: None,
        }));
    }
    use futures::StreamExt;
    while let Some(ack) = acks.next().await {
        ack.expect("flood record acknowledged");
    }

    // Every flood vote read: each is either waiting in the buffer or was dropped from it.
    let (buffered, dropped) = mesh
        .eventually("the whole flood read", Duration::from_secs(120), async || {
            let (b, d) = (mesh.consensus_stats().await.early_buffered?, mesh.consensus_stats().await.early_dropped?);
            (b + d >= flood as u64).then_some((b, d))
        })
        .await;
    assert!(buffered <= EARLY_LIMIT as u64, "{buffered} inputs buffered, limit {EARLY_LIMIT}");
    assert!(dropped >= flood.saturating_sub(EARLY_LIMIT) as u64, "{dropped} dropped of {flood}");
    let rss_after = mesh.rss_kib("consensus");
    // Measured on the 2-core CI machine (debug build): the full buffer, with its snapshot (~12 MB of JSON written
    // every 500 ms here), grows the manager by ~195 MB; the same 400,000 votes unbounded grew it by ~460 MB.
    assert!(rss_after < rss_before + 300 * 1024, "consensus RSS grew from {rss_before} KiB to {rss_after} KiB");

    // And it still decides: the agents' proposals made after the flood are decided.
    let decided = mesh.consensus_stats().await.decided.unwrap_or(0);
    mesh.eventually("decisions after the flood", Duration::from_secs(60), async || {
        (mesh.consensus_stats().await.decided? > decided).then_some(())
    })
    .await;
    assert!(mesh.running("consensus"), "consensus died\n{}", mesh.logs("consensus"));
}
