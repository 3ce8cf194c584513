//! The Kafka reader on a real broker: how long a partition waits before it is first fetched.

use std::time::{Duration, Instant};

use mesh_kafka::{KafkaBus, KafkaConfig};
use mesh_transport::{Assignment, Bus, OutRecord, Reader, StartAt, TopicSpec};

/// librdkafka keeps one fetch in flight per broker. A reader with one partition at a known offset (an agent's
/// committed messages partition) and one that starts at the beginning (its membership) used to send its first
/// fetches while the second's start was still being looked up; with nothing to read in the first, the broker held
/// each for the whole fetch wait, and the record waiting in the second was read after two of them, every time. The
/// reader now looks starts up before it assigns; what remains is a race inside librdkafka (each partition's fetching
/// starts with an operation of its own, and a fetch can leave between two), which costs one fetch wait at most,
/// about one time in eight. So: never two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_starting_at_the_beginning_waits_one_fetch_at_most() {
    let infra = mesh_fixtures::shared().expect("shared Kafka and Redis");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let topic = format!("it-reader-{}-{nanos}", std::process::id());
    let fetch_wait = Duration::from_secs(4);
    let bus = KafkaBus::new(KafkaConfig { fetch_wait, ..KafkaConfig::new(&infra.kafka, "it-reader") }).expect("bus");
    let spec = TopicSpec { name: topic.clone(), partitions: 2, compacted: false, retention: None };
    bus.ensure_topics(&[spec]).await.expect("topic created");
    let record = |partition| OutRecord {
        topic: topic.clone(),
        partition,
        key: b"k".to_vec(),
        payload: format!("on {partition}").into_bytes(),
        sent_at_us: None,
        auth: None,
    };
    bus.publish(record(1)).await.expect("a record on partition 1");
    let quiet_end = bus.end_offset(&topic, 0).await.expect("end of partition 0");

    for attempt in 0..3 {
        let assignments = vec![
            Assignment { topic: topic.clone(), partition: 0, start: StartAt::Offset(quiet_end) },
            Assignment { topic: topic.clone(), partition: 1, start: StartAt::Beginning },
        ];
        let started = Instant::now();
        let mut reader = bus.reader(&format!("{topic}-{attempt}"), assignments).await.expect("reader");
        let got = tokio::time::timeout(Duration::from_secs(20), reader.next())
            .await
            .expect("a record within 20 s")
            .expect("a record");
        let took = started.elapsed();
        assert_eq!((got.partition, got.payload.as_deref()), (1, Some(&b"on 1"[..])));
        assert!(
            took < fetch_wait * 3 / 2,
            "attempt {attempt}: the record at the beginning of partition 1 was read after {took:?}: more than one \
             {fetch_wait:?} fetch wait went out without it"
        );
    }
}
