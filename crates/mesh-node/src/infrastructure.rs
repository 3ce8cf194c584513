//! Where a deployment's Kafka and Redis come from: the one rule by which `mesh up` and `mesh bench` turn `--infra`,
//! `--kafka` and `--redis` (or the settings file) into services.
//!
//! Only the choice is shared; starting what it names stays with each command, because they differ by need: `mesh up`
//! supervises a local Kafka and redis-server as processes of the deployment (restarted, stopped by `mesh down`),
//! while `mesh bench` holds them for one run and measures their CPU. `cargo xtask chaos` always starts its own, with
//! a proxied listener per process, so it has nothing to choose.

/// Services a command starts for its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfraKind {
    /// librdkafka's mock cluster inside the command's process and a snapshot store in files: runs anywhere, keeps
    /// nothing, and its figures are not comparable with a real Kafka's.
    Embedded,
    /// A real Apache Kafka (KRaft, from Maven Central jars) and redis-server on loopback.
    Local,
}

/// Where the deployment's Kafka is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaSource {
    /// A broker the user named (`--kafka`): its bootstrap list.
    Given(String),
    /// The embedded mock cluster, started by the command.
    Embedded,
    /// A real Kafka on loopback, started by the command.
    Local,
}

/// Where the deployment's snapshot store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSource {
    /// A Redis the user named (`--redis`): its URL.
    Given(String),
    /// Files in the deployment's state directory (`file://`): never whatever Redis answers on 6379, which on a shared
    /// machine may be anyone's.
    Files,
    /// A redis-server on loopback, started by the command.
    Local,
}

/// The resolved infrastructure of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Infrastructure {
    /// Where Kafka is.
    pub kafka: KafkaSource,
    /// Where the snapshot store is.
    pub store: StoreSource,
}

impl Infrastructure {
    /// The rule. `--infra` wins over named services: `local` starts Kafka and Redis, `embedded` the mock broker with a
    /// file store. Without it a named service is used, and Kafka not named comes from `default` (embedded for `mesh
    /// up`, whose zero-setup default it is; local for `mesh bench`, whose figures only a real broker makes worth
    /// comparing). A store not named is a local redis-server beside a local Kafka, and files otherwise.
    pub fn resolve(asked: Option<InfraKind>, kafka: Option<&str>, redis: Option<&str>, default: InfraKind) -> Self {
        let started = |kind| match kind {
            InfraKind::Embedded => Self { kafka: KafkaSource::Embedded, store: StoreSource::Files },
            InfraKind::Local => Self { kafka: KafkaSource::Local, store: StoreSource::Local },
        };
        if let Some(kind) = asked {
            return started(kind);
        }
        let mut infra = match kafka {
            Some(bootstrap) => Self { kafka: KafkaSource::Given(bootstrap.to_owned()), store: StoreSource::Files },
            None => started(default),
        };
        if let Some(url) = redis {
            infra.store = StoreSource::Given(url.to_owned());
        }
        infra
    }

    /// How reports and `mesh status` name it: `embedded`, `local` or `external` (Kafka named by the user).
    pub fn label(&self) -> &'static str {
        match self.kafka {
            KafkaSource::Embedded => "embedded",
            KafkaSource::Local => "local",
            KafkaSource::Given(_) => "external",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAFKA: &str = "10.0.0.1:9092";
    const REDIS: &str = "redis://10.0.0.1:6379";

    fn resolve(asked: Option<InfraKind>, kafka: bool, redis: bool, default: InfraKind) -> Infrastructure {
        Infrastructure::resolve(asked, kafka.then_some(KAFKA), redis.then_some(REDIS), default)
    }

    #[test]
    fn infra_asked_wins_over_named_services() {
        for default in [InfraKind::Embedded, InfraKind::Local] {
            for (kafka, redis) in [(false, false), (true, false), (false, true), (true, true)] {
                let local = resolve(Some(InfraKind::Local), kafka, redis, default);
                assert_eq!(local, Infrastructure { kafka: KafkaSource::Local, store: StoreSource::Local });
                let embedded = resolve(Some(InfraKind::Embedded), kafka, redis, default);
                assert_eq!(embedded, Infrastructure { kafka: KafkaSource::Embedded, store: StoreSource::Files });
            }
        }
    }

    #[test]
    fn named_services_are_used_and_the_rest_comes_from_the_default() {
        let given = resolve(None, true, true, InfraKind::Local);
        assert_eq!(given.kafka, KafkaSource::Given(KAFKA.into()));
        assert_eq!(given.store, StoreSource::Given(REDIS.into()));
        assert_eq!(given.label(), "external");
        // A named Kafka without a Redis gets files, whatever the default: a local redis-server is started only
        // beside a local Kafka.
        for default in [InfraKind::Embedded, InfraKind::Local] {
            assert_eq!(resolve(None, true, false, default).store, StoreSource::Files);
        }
        let up = resolve(None, false, false, InfraKind::Embedded);
        assert_eq!(
            (up.kafka.clone(), up.store.clone(), up.label()),
            (KafkaSource::Embedded, StoreSource::Files, "embedded")
        );
        let bench = resolve(None, false, false, InfraKind::Local);
        assert_eq!(
            (bench.kafka.clone(), bench.store.clone(), bench.label()),
            (KafkaSource::Local, StoreSource::Local, "local")
        );
        // A named Redis is kept beside a started Kafka.
        assert_eq!(resolve(None, false, true, InfraKind::Embedded).store, StoreSource::Given(REDIS.into()));
        assert_eq!(resolve(None, false, true, InfraKind::Local).store, StoreSource::Given(REDIS.into()));
    }
}
