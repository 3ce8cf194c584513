//! Kafka and Redis for the run: a real Apache Kafka (one node or a cluster) and redis-server started on loopback
//! (the default), librdkafka's mock cluster with a file store, or the ones `--kafka`/`--redis` name; and, with
//! `--hosts`, the simulated hosts the agents run on. What this run started it also stops, by dropping [`Infra`].

use mesh_fixtures::LocalKafka;
use mesh_kafka::EmbeddedKafka;

use super::error::Error;
use super::options::{InfraChoice, Options};
use super::plan::Plan;

/// Where Kafka and Redis are, and the ones this run started (stopped when dropped).
pub(crate) struct Infra {
    pub(crate) kafka: String,
    pub(crate) redis: String,
    pub(crate) label: &'static str,
    /// Every Kafka node this run started (one, or a cluster's).
    pub(crate) broker_pids: Vec<i32>,
    pub(crate) redis_pid: Option<i32>,
    _local: Option<(LocalKafka, mesh_fixtures::RedisServer)>,
    _embedded: Option<EmbeddedKafka>,
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

    /// Provides the infrastructure `opts` asks for.
    pub(crate) fn start(opts: &Options, plan: &Plan, mesh: &mesh_node::MeshConfig) -> Result<Self, Error> {
        match (opts.infra, &opts.kafka) {
            (Some(InfraChoice::Local), _) | (None, None) => Self::start_local(opts),
            (None, Some(kafka)) => {
                let kafka = kafka.clone();
                let redis = opts.redis.clone().ok_or(Error::RedisNeeded)?;
                Ok(Self {
                    kafka,
                    redis,
                    label: "external",
                    broker_pids: Vec::new(),
                    redis_pid: None,
                    _local: None,
                    _embedded: None,
                    hosts: None,
                })
            }
            (Some(InfraChoice::Embedded), _) => {
                eprintln!("embedded mock broker: figures are not comparable with a real Kafka");
                let embedded = EmbeddedKafka::start(&mesh_node::topic_specs(mesh)).map_err(Error::StartEmbedded)?;
                let store = plan.state_dir.join("store");
                Ok(Self {
                    kafka: embedded.bootstrap(),
                    redis: format!("file://{}", store.display()),
                    label: "embedded",
                    broker_pids: Vec::new(),
                    redis_pid: None,
                    _local: None,
                    _embedded: Some(embedded),
                    hosts: None,
                })
            }
        }
    }

    /// A real Kafka and redis-server on loopback, and the simulated hosts if asked for.
    fn start_local(opts: &Options) -> Result<Self, Error> {
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
        if opts.brokers == 1 {
            eprintln!("starting Apache Kafka (KRaft, single node) and redis-server on loopback for this run");
        } else {
            eprintln!(
                "starting a {}-node Apache Kafka cluster (KRaft; every topic {} replicas) and redis-server on \
                 loopback for this run",
                opts.brokers,
                opts.brokers.min(3)
            );
        }
        let listeners = (0..opts.brokers.max(1)).map(|_| host_listener()).collect::<Result<_, _>>()?;
        let mut kafka = LocalKafka::start(listeners).map_err(Error::StartKafka)?;
        let broker_pids = kafka.pids().into_iter().filter_map(|p| pid(Some(p))).collect();
        let bootstrap = kafka.bootstrap();
        let redis = mesh_fixtures::RedisServer::start(mesh_fixtures::RedisOptions {
            also_bind: bridge,
            ..mesh_fixtures::RedisOptions::default()
        })
        .map_err(Error::StartRedis)?;
        let hosts = match network {
            Some(network) => {
                let redis = redis.url_also().unwrap_or_default();
                Some(Hosts { kafka: host_bootstrap(&kafka), redis, network })
            }
            None => None,
        };
        Ok(Self {
            hosts,
            kafka: bootstrap,
            redis: redis.url(),
            label: "local",
            broker_pids,
            redis_pid: pid(redis.pid()),
            _local: Some((kafka, redis)),
            _embedded: None,
        })
    }
}
