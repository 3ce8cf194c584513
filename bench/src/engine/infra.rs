//! Kafka and Redis for the run: a real Apache Kafka (one node or a cluster) and redis-server started on loopback
//! (the default), librdkafka's mock cluster with a file store, or the ones `--kafka`/`--redis` name; and, with
//! `--hosts`, the simulated hosts the agents run on. What this run started it also stops, by dropping [`Infra`].

use mesh_fixtures::LocalKafka;
use mesh_kafka::EmbeddedKafka;
use mesh_node::infrastructure::{KafkaSource, StoreSource};

use super::error::Error;
use super::options::Options;
use super::plan::Plan;

/// Where Kafka and Redis are, and the ones this run started (stopped when dropped).
pub(crate) struct Infra {
    pub(crate) kafka: String,
    pub(crate) redis: String,
    pub(crate) label: &'static str,
    /// Every Kafka node this run started (one, or a cluster's).
    pub(crate) broker_pids: Vec<i32>,
    pub(crate) redis_pid: Option<i32>,
    _local: Option<(LocalKafka, Option<mesh_fixtures::RedisServer>)>,
    embedded: Option<EmbeddedKafka>,
    /// The simulated hosts agents run on, if `--hosts` asked for them (removed after the servers stop).
    pub(crate) hosts: Option<Hosts>,
}

/// Simulated hosts, and where they reach the run's Kafka and Redis (listeners on the bridge's address).
pub(crate) struct Hosts {
    pub(crate) network: mesh_fixtures::netns::Network,
    pub(crate) kafka: String,
    pub(crate) redis: String,
}

/// The bootstrap list a simulated host is given: every node's listener on the bridge.
fn host_bootstrap(kafka: &LocalKafka) -> String {
    let listeners = kafka.client_listeners();
    listeners.iter().map(|l| format!("{}:{}", l.advertised_host, l.advertised_port)).collect::<Vec<_>>().join(",")
}

impl Infra {
    /// CPU seconds of every Kafka node this run started, together (none for a broker it did not start).
    pub(crate) fn broker_cpu(&self) -> Option<f64> {
        let used: Vec<f64> =
            self.broker_pids.iter().filter_map(|p| mesh_supervisor::child::usage(*p)).map(|u| u.0).collect();
        (!used.is_empty()).then(|| used.iter().sum())
    }

    /// The infrastructure processes this run started, named as in the cost table: `kafka` (or `kafka-N` per node
    /// of a cluster) and `redis`.
    pub(crate) fn infrastructure_pids(&self) -> Vec<(String, i32)> {
        let mut out: Vec<(String, i32)> = match self.broker_pids.as_slice() {
            [one] => vec![("kafka".to_owned(), *one)],
            nodes => nodes.iter().enumerate().map(|(i, pid)| (format!("kafka-{}", i + 1), *pid)).collect(),
        };
        out.extend(self.redis_pid.map(|pid| ("redis".to_owned(), pid)));
        out
    }

    /// Creates `topics` on the embedded broker, which does not answer the admin API; on any other broker they are
    /// created by whoever reads or writes them (`Bus::ensure_topics`), so this does nothing.
    pub(crate) fn create_on_embedded(&self, topics: &[mesh_transport::TopicSpec]) -> Result<(), Error> {
        match &self.embedded {
            Some(embedded) => embedded.create_topics(topics).map_err(Error::EmbeddedTopics),
            None => Ok(()),
        }
    }

    /// Provides the infrastructure `opts` asks for, chosen by the rule `mesh up` shares
    /// (`mesh_node::infrastructure::Infrastructure`).
    pub(crate) fn start(opts: &Options, plan: &Plan, mesh: &mesh_node::MeshConfig) -> Result<Self, Error> {
        let chosen = opts.infrastructure();
        let label = chosen.label();
        match &chosen.kafka {
            KafkaSource::Local => Self::start_local(opts, &chosen.store),
            KafkaSource::Given(kafka) => {
                // Figures against a given Kafka are taken with the Redis the mesh would use, not a file store.
                let StoreSource::Given(redis) = &chosen.store else { return Err(Error::RedisNeeded) };
                Ok(Self {
                    kafka: kafka.clone(),
                    redis: redis.clone(),
                    label,
                    broker_pids: Vec::new(),
                    redis_pid: None,
                    _local: None,
                    embedded: None,
                    hosts: None,
                })
            }
            KafkaSource::Embedded => {
                eprintln!("embedded mock broker: figures are not comparable with a real Kafka");
                let embedded = EmbeddedKafka::start(&mesh_node::topic_specs(mesh)).map_err(Error::StartEmbedded)?;
                let redis = match &chosen.store {
                    StoreSource::Given(url) => url.clone(),
                    StoreSource::Files | StoreSource::Local => {
                        format!("file://{}", plan.state_dir.join("store").display())
                    }
                };
                Ok(Self {
                    kafka: embedded.bootstrap(),
                    redis,
                    label,
                    broker_pids: Vec::new(),
                    redis_pid: None,
                    _local: None,
                    embedded: Some(embedded),
                    hosts: None,
                })
            }
        }
    }

    /// A real Kafka on loopback, a redis-server beside it unless `store` names a Redis, and the simulated hosts if
    /// asked for (the plan allows them only with both started here).
    fn start_local(opts: &Options, store: &StoreSource) -> Result<Self, Error> {
        mesh_fixtures::ensure_kafka_jars().map_err(Error::KafkaJars)?;
        let pid = |p: Option<u32>| p.and_then(|p| i32::try_from(p).ok());
        let network = if opts.hosts > 1 {
            eprintln!("creating {} simulated hosts (network namespaces on a bridge) for the agents", opts.hosts);
            Some(mesh_fixtures::netns::Network::create(opts.hosts).map_err(Error::SimulatedHosts)?)
        } else {
            None
        };
        // With hosts, every node gets a listener on the bridge's address, which it advertises to them.
        let bridge = network.as_ref().map(mesh_fixtures::netns::Network::bridge_addr);
        let host_listener = || -> Result<Vec<mesh_fixtures::ClientListener>, Error> {
            let Some(addr) = bridge else { return Ok(Vec::new()) };
            let port = mesh_fixtures::free_port().map_err(Error::FreePort)?;
            Ok(vec![mesh_fixtures::ClientListener {
                name: "HOSTS".into(),
                port,
                listen_host: addr,
                advertised_port: port,
                advertised_host: addr,
            }])
        };
        let and_redis = if matches!(store, StoreSource::Given(_)) { "" } else { " and redis-server" };
        if opts.brokers == 1 {
            eprintln!("starting Apache Kafka (KRaft, single node){and_redis} on loopback for this run");
        } else {
            eprintln!(
                "starting a {}-node Apache Kafka cluster (KRaft; every topic {} replicas){and_redis} on loopback for \
                 this run",
                opts.brokers,
                opts.brokers.min(3)
            );
        }
        let listeners = (0..opts.brokers.max(1)).map(|_| host_listener()).collect::<Result<_, _>>()?;
        let mut kafka = LocalKafka::start(listeners).map_err(Error::StartKafka)?;
        let broker_pids = kafka.pids().into_iter().filter_map(|p| pid(Some(p))).collect();
        let bootstrap = kafka.bootstrap();
        let (redis_url, redis) = match store {
            StoreSource::Given(url) => (url.clone(), None),
            StoreSource::Files | StoreSource::Local => {
                let redis = mesh_fixtures::RedisServer::start(mesh_fixtures::RedisOptions {
                    also_bind: bridge,
                    ..mesh_fixtures::RedisOptions::default()
                })
                .map_err(Error::StartRedis)?;
                (redis.url(), Some(redis))
            }
        };
        let hosts = match network {
            Some(network) => {
                let redis = redis.as_ref().and_then(mesh_fixtures::RedisServer::url_also).unwrap_or_default();
                Some(Hosts { kafka: host_bootstrap(&kafka), redis, network })
            }
            None => None,
        };
        Ok(Self {
            hosts,
            kafka: bootstrap,
            redis: redis_url,
            label: "local",
            broker_pids,
            redis_pid: pid(redis.as_ref().and_then(mesh_fixtures::RedisServer::pid)),
            _local: Some((kafka, redis)),
            embedded: None,
        })
    }
}
