//! The wire contract from outside: a plain Kafka client (kcat) sends a task in the documented format and reads the
//! answer; garbage on every consumed topic ends up in the dead-letter topic while the processes keep working.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use mesh_proto::records::{Record, ResponseBody, ResponseStatus};
use mesh_proto::{TopicKind, partition_for};

use crate::support::{FAST, Mesh};

fn kcat() -> &'static str {
    for path in ["/usr/bin/kcat", "/usr/local/bin/kcat", "/usr/bin/kafkacat"] {
        if std::path::Path::new(path).exists() {
            return path;
        }
    }
    panic!("kcat is missing: `cargo xtask test` installs it (apt-get install kcat)");
}

/// Produces one record with kcat, keyed, partitioned by murmur2 like the Java client (the documented rule), and
/// tagged as its writer with the mesh's credentials (the documented `mesh-auth` header) when it is a record.
pub(crate) fn produce(mesh: &Mesh, topic: &str, key: &str, value: &[u8]) {
    let tag = mesh.tag(topic, key.as_bytes(), value);
    produce_with(mesh, topic, key, value, tag.as_deref());
}

/// [`produce`] with the `mesh-auth` header given (or none).
pub(crate) fn produce_with(mesh: &Mesh, topic: &str, key: &str, value: &[u8], auth: Option<&str>) {
    let header = auth.map(|tag| format!("mesh-auth={tag}"));
    // Up to the broker's own limit: kcat's default (librdkafka's 1,000,000 bytes) is below it.
    let mut child = Command::new(kcat())
        .args(["-P", "-b", &mesh.kafka, "-t", topic, "-k", key, "-X", "topic.partitioner=murmur2_random"])
        .args(header.iter().flat_map(|h| ["-H", h.as_str()]))
        .args(["-X", "message.max.bytes=1048576"])
        .args(["-D", "\u{1}"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    child.stdin.take().expect("stdin").write_all(value).expect("write");
    let out = child.wait_with_output().expect("kcat finishes");
    assert!(out.status.success(), "kcat failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The response to `task_id` on the messages topic, with the partition it was found in.
pub(crate) async fn response_to(mesh: &Mesh, task_id: &str) -> Option<(i32, ResponseBody)> {
    mesh.read_topic(TopicKind::Messages).await.into_iter().find_map(|r| match r.envelope {
        Ok(e) => match e.record {
            Record::Response(b) if b.in_reply_to.as_str() == task_id => Some((r.partition, b)),
            _ => None,
        },
        Err(_) => None,
    })
}

pub(crate) fn task_json(id: &str) -> String {
    format!(
        r#"{{"v":1,"kind":"task","id":"{id}","ts":1700000000000,"body":{{"from":"kcat-client","to":"inventory","task":"check_stock","payload":{{"sku":"sku-7","quantity":2}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_kafka_client_gets_an_answer_and_garbage_is_dead_lettered() {
    let mut mesh = Mesh::new("wire", FAST).await;
    mesh.start_managers();
    mesh.start_agent("inventory", "0", "0");
    mesh.eventually("inventory live", Duration::from_secs(60), async || {
        (mesh.topology_stats().await.live_agents? == 1).then_some(())
    })
    .await;

    let messages = mesh.topics.name(TopicKind::Messages);
    produce(&mesh, &messages, "inventory", task_json("kcat-task-1").as_bytes());
    let (partition, answer) = mesh
        .eventually("a response to kcat-task-1", Duration::from_secs(20), async || {
            response_to(&mesh, "kcat-task-1").await
        })
        .await;
    assert_eq!(partition, partition_for(b"kcat-client", 8), "answers go to the partition the asker's id hashes to");
    assert_eq!((answer.from.as_str(), answer.to.as_str()), ("inventory", "kcat-client"));
    assert_eq!(answer.status, ResponseStatus::Ok);
    assert_eq!(answer.payload.get("sku").and_then(|v| v.as_str()), Some("sku-7"));

    // Garbage on every topic some process consumes.
    let garbage: &[(TopicKind, &str, &[u8])] = &[
        (TopicKind::Messages, "inventory", b"\xff\xfe not json at all"),
        (TopicKind::Topology, "inventory", br#"{"v":1,"kind":"join","id":"x","ts":1,"body":{}}"#),
        (TopicKind::Heartbeats, "inventory", b"garbage"),
        (TopicKind::Proposals, "p1", br#"{"v":9,"kind":"proposal","id":"x","ts":1,"body":{}}"#),
        (TopicKind::Votes, "p1", br#"{"v":1,"kind":"gossip","id":"x","ts":1,"body":{}}"#),
        (TopicKind::Membership, "inventory", b"{}"),
    ];
    for (kind, key, value) in garbage {
        produce(&mesh, &mesh.topics.name(*kind), key, value);
    }
    let expected: Vec<String> = garbage.iter().map(|(k, _, _)| mesh.topics.name(*k)).collect();
    let letters = mesh
        .eventually("every garbage record dead-lettered", Duration::from_secs(20), async || {
            let letters: Vec<_> = mesh
                .read_topic(TopicKind::Deadletter)
                .await
                .into_iter()
                .filter_map(|r| match r.envelope {
                    Ok(e) => match e.record {
                        Record::DeadLetter(d) => Some(d),
                        _ => None,
                    },
                    Err(_) => None,
                })
                .collect();
            expected.iter().all(|t| letters.iter().any(|d| &d.source.topic == t)).then_some(letters)
        })
        .await;
    let binary = letters.iter().find(|d| d.source.topic == messages).expect("messages garbage");
    assert!(binary.reason.contains("not a JSON envelope"), "{}", binary.reason);
    assert_eq!(binary.payload_hex.as_deref().map(|h| h.starts_with("fffe")), Some(true), "bytes kept whole");
    let votes = letters.iter().find(|d| d.source.topic == mesh.topics.name(TopicKind::Votes)).expect("votes garbage");
    assert!(votes.reason.contains("unknown kind"), "{}", votes.reason);

    // And everyone keeps working.
    produce(&mesh, &messages, "inventory", task_json("kcat-task-2").as_bytes());
    mesh.eventually("a response to kcat-task-2", Duration::from_secs(20), async || {
        response_to(&mesh, "kcat-task-2").await
    })
    .await;
    for name in ["topology", "consensus", "inventory"] {
        assert!(mesh.running(name), "{name} died\n{}", mesh.logs(name));
    }
}
