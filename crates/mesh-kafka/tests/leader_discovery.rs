//! librdkafka's leader discovery (KIP-951) when a broker answers a fetch with a leader it does not know, as a
//! restarting broker does. Unpatched, librdkafka 2.12.1 sized its leader update by every `CurrentLeader` tag but
//! filled in only those naming a leader, and read the rest as partition ids, leaders and epochs: uninitialized heap
//! memory. That crashed the chaos harness with SIGSEGV and stalled its reader in `restart-kafka`
//! (vendor/rdkafka-sys/MESH-PATCH.md).
//!
//! The scene is played on librdkafka's mock cluster, which answers with the `CurrentLeader` tags it is told to. It
//! runs in a child process with glibc's `MALLOC_PERTURB_` set, so fresh allocations are filled with 0xd5 bytes and
//! never zeroed. An entry read uninitialized is then a partition -707,406,379 led by node -707,406,379, which
//! librdkafka reports in a `METADATAUPDATE` warning. That warning is what this test looks for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]
#![expect(
    unsafe_code,
    reason = "rust-rdkafka's mock cluster cannot tell the leader a fetch answer names: the C calls can"
)]

use std::ffi::{CStr, CString};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// Set in the child process that plays the scene.
const CHILD: &str = "MESH_LEADER_DISCOVERY_CHILD";
const TOPIC: &str = "leader-discovery";

#[test]
fn a_fetch_answered_with_an_unknown_leader_is_read_as_no_update_for_that_partition() {
    if std::env::var_os(CHILD).is_some() {
        play_the_scene();
        return;
    }
    let test = "a_fetch_answered_with_an_unknown_leader_is_read_as_no_update_for_that_partition";
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("MALLOC_PERTURB_", "42")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the scene failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Keeps what librdkafka logs, to look for its leader-update warnings.
#[derive(Clone, Default)]
struct KeptLogs(Arc<Mutex<Vec<String>>>);

impl ClientContext for KeptLogs {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.lock().unwrap().push(format!("{fac}: {log_message}"));
    }
}

impl ConsumerContext for KeptLogs {}

fn play_the_scene() {
    // Two mock brokers; both partitions led by node 1.
    let producer: BaseProducer = ClientConfig::new().set("test.mock.num.brokers", "2").create().unwrap();
    let cluster = unsafe { rd::rd_kafka_handle_mock_cluster(producer.client().native_ptr()) };
    assert!(!cluster.is_null(), "no mock cluster");
    let bootstrap =
        unsafe { CStr::from_ptr(rd::rd_kafka_mock_cluster_bootstraps(cluster)) }.to_str().unwrap().to_owned();
    let topic = CString::new(TOPIC).unwrap();
    unsafe {
        assert_eq!(
            rd::rd_kafka_mock_topic_create(cluster, topic.as_ptr(), 2, 1),
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        for p in 0..2 {
            assert_eq!(
                rd::rd_kafka_mock_partition_set_leader(cluster, topic.as_ptr(), p, 1),
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            );
        }
    }
    let write = |round: &str| {
        for p in 0..2 {
            producer.send(BaseRecord::<(), str>::to(TOPIC).partition(p).payload(round)).unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    write("before");

    let logs = KeptLogs::default();
    // rust-rdkafka passes on only what the `log` crate's level lets through, and no logger is installed here.
    let consumer: BaseConsumer<KeptLogs> = ClientConfig::new()
        .set_log_level(RDKafkaLogLevel::Warning)
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "leader-discovery")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create_with_context(logs.clone())
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..2 {
        assignment.add_partition_offset(TOPIC, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let read_round = |round: &str| {
        let mut seen = [false; 2];
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen != [true; 2] {
            assert!(Instant::now() < deadline, "records of {round} not read on both partitions: {seen:?}");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100))
                && m.payload() == Some(round.as_bytes())
            {
                seen[usize::try_from(m.partition()).unwrap()] = true;
            }
        }
    };
    read_round("before");

    // Leadership moves to node 2, at leader epoch 2 (the mock counts one epoch per leader set: 0 at creation, then
    // 1 and 2). Node 1's next fetch answer carries a CurrentLeader tag for each partition: an unknown leader for
    // partition 0 (as a broker that has just restarted tells it), node 2 for partition 1.
    unsafe {
        for (p, leader) in [(0, -1), (1, 2)] {
            rd::rd_kafka_mock_partition_push_leader_response(cluster, topic.as_ptr(), p, leader, 2);
        }
        for p in 0..2 {
            rd::rd_kafka_mock_partition_set_leader(cluster, topic.as_ptr(), p, 2);
        }
    }
    // Let the consumer meet node 1's answer before the producer (whose own answers would take the tags) writes.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        drop(consumer.poll(Duration::from_millis(100)));
    }
    write("after");
    read_round("after");

    let updates: Vec<String> =
        logs.0.lock().unwrap().iter().filter(|l| l.starts_with("METADATAUPDATE")).cloned().collect();
    assert!(updates.is_empty(), "the leader update read entries it never filled in: {updates:?}");
}
