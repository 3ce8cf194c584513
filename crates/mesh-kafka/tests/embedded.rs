//! The embedded broker (librdkafka's mock cluster) serves topics created on it after clients have connected: how
//! `mesh bench --infra embedded` gets the topics of its idle run and of its plain-Kafka baseline, which the mock
//! cluster's missing CreateTopics cannot make.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code")]

use std::time::Duration;

use mesh_kafka::{EmbeddedKafka, KafkaBus, KafkaConfig};
use mesh_transport::{Bus, TopicSpec};

fn spec(name: &str) -> TopicSpec {
    TopicSpec { name: name.into(), partitions: 4, compacted: false, retention: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_on_the_running_embedded_broker_is_served() {
    let embedded = EmbeddedKafka::start(&[spec("first")]).expect("embedded broker");
    let bus = KafkaBus::new(KafkaConfig::new(embedded.bootstrap(), "embedded-test")).expect("client");
    tokio::time::timeout(Duration::from_secs(30), bus.ensure_topics(&[spec("first")]))
        .await
        .expect("the topic made at start is served within 30 s")
        .expect("the topic made at start");
    embedded.create_topics(&[spec("second")]).expect("created on the mock cluster");
    tokio::time::timeout(Duration::from_secs(30), bus.ensure_topics(&[spec("second")]))
        .await
        .expect("the topic made later is served within 30 s")
        .expect("the topic made later");
}
