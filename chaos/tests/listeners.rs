//! Per-client Kafka listeners: a broker with one listener per client, each advertising that client's fault proxy,
//! returns to each client only its own proxy's address in metadata, so cutting one proxy cuts off exactly that
//! client. Runs a real Apache Kafka (the fixtures' jars) on loopback.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mesh_chaos::proxy::{Fault, FaultProxy};
use mesh_fixtures::{ClientListener, KafkaBroker, KafkaOptions};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap).set("message.timeout.ms", "4000").set("reconnect.backoff.max.ms", "200");
    c
}

async fn send(producer: &FutureProducer, topic: &str) -> bool {
    producer.send(FutureRecord::<str, str>::to(topic).payload("x").key("k"), Duration::from_secs(5)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_sends_each_client_to_its_own_proxy_and_cutting_one_leaves_the_other() {
    let (port_a, port_b) = (mesh_fixtures::free_port().expect("port"), mesh_fixtures::free_port().expect("port"));
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let proxy_a = FaultProxy::start(any, ([127, 0, 0, 1], port_a).into()).await.expect("proxy a");
    let proxy_b = FaultProxy::start(any, ([127, 0, 0, 1], port_b).into()).await.expect("proxy b");
    let listeners = vec![
        ClientListener {
            name: "C_A".into(),
            port: port_a,
            listen_host: Ipv4Addr::LOCALHOST,
            advertised_port: proxy_a.addr().port(),
            advertised_host: Ipv4Addr::LOCALHOST,
        },
        ClientListener {
            name: "C_B".into(),
            port: port_b,
            listen_host: Ipv4Addr::LOCALHOST,
            advertised_port: proxy_b.addr().port(),
            advertised_host: Ipv4Addr::LOCALHOST,
        },
    ];
    // Started on this test's own thread: the fixture's parent-death signal is tied to the spawning thread.
    let broker = KafkaBroker::start(KafkaOptions { client_listeners: listeners, ..KafkaOptions::default() })
        .expect("Kafka starts (cargo xtask test installs what it needs)");

    let topic = "listeners-test";
    let admin: AdminClient<DefaultClientContext> = client(&broker.bootstrap()).create().expect("admin");
    admin
        .create_topics(&[NewTopic::new(topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("topic created");

    for proxy in [&proxy_a, &proxy_b] {
        let bootstrap = proxy.addr().to_string();
        let consumer: BaseConsumer = client(&bootstrap).create().expect("consumer");
        let metadata = tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_secs(10)))
            .expect("metadata through the proxy");
        let advertised: Vec<(String, i32)> =
            metadata.brokers().iter().map(|b| (b.host().to_owned(), b.port())).collect();
        assert_eq!(
            advertised,
            vec![("127.0.0.1".to_owned(), i32::from(proxy.addr().port()))],
            "a client connected through {bootstrap} is told to use only its own proxy"
        );
    }

    let producer_a: FutureProducer = client(&proxy_a.addr().to_string()).create().expect("producer a");
    let producer_b: FutureProducer = client(&proxy_b.addr().to_string()).create().expect("producer b");
    assert!(send(&producer_a, topic).await && send(&producer_b, topic).await, "both reach the broker");
    let before = proxy_a.counters().to_server.load(std::sync::atomic::Ordering::Relaxed);
    assert!(before > 0, "client A's traffic went through its proxy");

    proxy_a.set(Fault::Refuse);
    assert!(!send(&producer_a, topic).await, "client A is cut off");
    assert!(send(&producer_b, topic).await, "client B keeps working while A is cut off");
    proxy_a.set(Fault::Pass);
    assert!(send(&producer_a, topic).await, "client A is back after healing");
    drop(broker);
}
