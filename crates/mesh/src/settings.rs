//! Settings from three layers: flag or environment variable (clap reads both), then the TOML file, then the seed's
//! defaults. Every refusal names the field, where it came from and what would be accepted.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use mesh_core::consensus::{ConsensusParams, Quorum};
use mesh_core::graph::GraphParams;
use mesh_core::{AgentId, Milli, Role};
use mesh_node::{AgentConfig, ConsensusConfig, MeshConfig, SettingsFile, TopologyConfig};
use mesh_proto::TopicNames;
use mesh_proto::auth::{Credentials, DeploymentSecret, PrincipalKey};

use crate::cli::{AgentArgs, ConsensusArgs, InfraArgs, TopologyArgs};

/// Reads the settings file if a path was given (none: every field unset).
pub(crate) fn load_file(path: Option<&Path>) -> Result<SettingsFile> {
    let Some(path) = path else { return Ok(SettingsFile::default()) };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("failed to read config file {}", path.display()))?;
    SettingsFile::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Where Kafka and Redis are, resolved.
pub(crate) struct Infra {
    pub(crate) kafka: String,
    /// How long a reader's fetch may wait at the broker for data (`fetch.wait.max.ms`).
    pub(crate) kafka_fetch_wait: Duration,
    /// How long a producer holds records to fill a batch (`linger.ms`).
    pub(crate) kafka_linger: Duration,
    /// librdkafka properties applied last to every client: the file's, then the flags' (which win on a key).
    pub(crate) kafka_properties: Vec<(String, String)>,
    /// The store's URL, with the ACL user and password given apart from it put in.
    pub(crate) redis: String,
    /// The CA certificate a `rediss://` store is checked against (else the system's).
    pub(crate) redis_ca_file: Option<std::path::PathBuf>,
    /// Where to serve Prometheus metrics, if anywhere.
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    pub(crate) mesh: MeshConfig,
}

pub(crate) const DEFAULT_KAFKA: &str = "127.0.0.1:9092";
pub(crate) const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";
/// A waiting fetch returns as soon as data arrives for a partition it asked about, but librdkafka keeps one fetch
/// in flight per broker, so a partition that becomes readable while one waits (a reader starting, or resuming after
/// a broker restart, one partition after another) is first asked about when that fetch returns: the wait bounds that
/// stall as well as how often an idle reader asks again. At 5 s agents missed their own membership for 5 s after
/// starting (a flaky test) and a broker restart took 10 s to recover from. At 500 ms (librdkafka's default) 500
/// idle agents ask the broker 1,000 times a second, too much for all 500 to start on two cores (411 of 502 READY
/// after 300 s; 2 s let all start in 35 s, but then the chaos harness's reader once failed to catch up after a
/// broker restart, not yet explained): the 500-agent ramp-up is the open cost of this value.
pub(crate) const DEFAULT_FETCH_WAIT: Duration = Duration::from_millis(500);
/// librdkafka's mock cluster (the embedded default) holds an empty fetch for the whole wait even when data arrives,
/// so every hop there costs up to the wait: `mesh up` sets this much shorter one for its children.
pub(crate) const EMBEDDED_FETCH_WAIT: &str = "10ms";
/// How long a producer holds records to fill a batch: librdkafka sends one request per partition, so fuller
/// batches are fewer requests for the broker (the expensive part of a small machine) at this much latency.
pub(crate) const DEFAULT_LINGER: Duration = Duration::from_millis(2);

fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

fn duration(
    field: &str,
    flag: &str,
    value: Option<String>,
    file: Option<String>,
    default: Duration,
) -> Result<Duration> {
    let Some(text) = value.or(file) else { return Ok(default) };
    let d = humantime::parse_duration(&text).map_err(|e| {
        anyhow::anyhow!(
            "invalid {field} ({flag}): {text:?} is not a duration ({e}); write for example \"5s\" or \"250ms\""
        )
    })?;
    if d.is_zero() {
        bail!("invalid {field} ({flag}): it must be longer than zero");
    }
    Ok(d)
}

fn fraction(field: &str, flag: &str, value: Option<f64>, file: Option<f64>, default: Milli) -> Result<Milli> {
    match value.or(file) {
        None => Ok(default),
        Some(v) => Milli::from_decimal(v, Milli::ONE).map_err(|e| {
            anyhow::anyhow!("invalid {field} ({flag}): {e}; give a number from 0 to 1 with at most three decimals")
        }),
    }
}

pub(crate) fn infra(args: &InfraArgs, file: &SettingsFile) -> Result<Infra> {
    let kafka = pick(args.kafka.clone(), file.kafka.clone(), DEFAULT_KAFKA.to_owned());
    if kafka.split(',').any(|b| b.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none()) {
        bail!("invalid kafka (--kafka, MESH_KAFKA): {kafka:?}; give HOST:PORT[,HOST:PORT...]");
    }
    let redis = pick(args.redis.clone(), file.redis.clone(), DEFAULT_REDIS.to_owned());
    if !["redis://", "rediss://", "unix://", "file://"].iter().any(|s| redis.starts_with(s)) {
        bail!(
            "invalid redis (--redis, MESH_REDIS): {:?}; give a URL such as redis://127.0.0.1:6379",
            mesh_transport::redact_url(&redis)
        );
    }
    let redis = redis_login(args, file, redis)?;
    let redis_ca_file = args.redis_ca_file.clone().or(file.redis_ca_file.clone());
    if let Some(ca) = &redis_ca_file {
        if !redis.starts_with("rediss://") {
            bail!(
                "invalid redis_ca_file (--redis-ca-file, MESH_REDIS_CA_FILE): a CA certificate is for Redis over TLS; \
                 name the store as rediss://HOST:PORT"
            );
        }
        if !ca.is_file() {
            bail!(
                "invalid redis_ca_file (--redis-ca-file, MESH_REDIS_CA_FILE): {} is not a readable file; give the CA \
                 certificate (PEM) that signed the server's",
                ca.display()
            );
        }
    }
    let prefix = pick(args.topic_prefix.clone(), file.topic_prefix.clone(), TopicNames::DEFAULT_PREFIX.to_owned());
    if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        bail!(
            "invalid topic_prefix (--topic-prefix, MESH_TOPIC_PREFIX): {prefix:?}; use letters, digits, '.', '_' and '-'"
        );
    }
    let kafka_fetch_wait = duration(
        "kafka_fetch_wait",
        "--kafka-fetch-wait, MESH_KAFKA_FETCH_WAIT",
        args.kafka_fetch_wait.clone(),
        file.kafka_fetch_wait.clone(),
        DEFAULT_FETCH_WAIT,
    )?;
    let kafka_linger = match args.kafka_linger.clone().or(file.kafka_linger.clone()) {
        None => DEFAULT_LINGER,
        Some(text) => humantime::parse_duration(&text).map_err(|e| {
            anyhow::anyhow!(
                "invalid kafka_linger (--kafka-linger, MESH_KAFKA_LINGER): {text:?} is not a duration ({e}); write for \
                 example \"2ms\" (0ms sends each record at once)"
            )
        })?,
    };
    let properties_file = args.kafka_properties_file.as_deref().or(file.kafka_properties_file.as_deref());
    let generic = kafka_properties(&args.kafka_properties, &file.kafka_properties, properties_file)?;
    let mut properties = kafka_security(args, file, &generic)?;
    // The generic properties come last: a `--kafka-property` names exactly what it sets.
    properties.extend(generic);
    let kafka_properties = properties;
    let messages_partitions = pick(args.messages_partitions, file.messages_partitions, 8);
    let consensus_partitions = pick(args.consensus_partitions, file.consensus_partitions, 4);
    if messages_partitions == 0 || consensus_partitions == 0 {
        bail!("invalid messages_partitions/consensus_partitions: a topic needs at least one partition");
    }
    let metrics_listen = match args.metrics_listen.as_deref().or(file.metrics_listen.as_deref()) {
        None => None,
        Some(text) => Some(text.parse::<std::net::SocketAddr>().map_err(|e| {
            anyhow::anyhow!(
                "invalid metrics_listen (--metrics-listen, MESH_METRICS_LISTEN) {text:?}: {e}; give IP:PORT, for \
                 example 127.0.0.1:9464 (port 0 picks a free one)"
            )
        })?),
    };
    let credentials = credentials(
        args.secret_file.as_deref().or(file.secret_file.as_deref()),
        args.agent_key_file.as_deref().or(file.agent_key_file.as_deref()),
    )?;
    Ok(Infra {
        kafka,
        kafka_fetch_wait,
        kafka_linger,
        kafka_properties,
        redis,
        redis_ca_file,
        metrics_listen,
        mesh: MeshConfig {
            topics: TopicNames::new(prefix),
            messages_partitions,
            consensus_partitions,
            credentials,
            metrics: mesh_node::Metrics::default(),
        },
    })
}

/// The deployment secret or an agent key, read from their files (never from argv or a variable's value).
fn credentials(secret_file: Option<&Path>, agent_key_file: Option<&Path>) -> Result<Credentials> {
    let read = |path: &Path, field: &str, flag: &str| {
        std::fs::read_to_string(path).with_context(|| {
            format!("invalid {field} ({flag}): cannot read {} (give the path of a readable file)", path.display())
        })
    };
    match (secret_file, agent_key_file) {
        (Some(_), Some(_)) => bail!(
            "invalid agent_key_file (--agent-key-file, MESH_AGENT_KEY_FILE): a process holding the deployment secret              (secret_file) needs no agent key; give one of the two"
        ),
        (Some(path), None) => {
            let secret = DeploymentSecret::parse(&read(path, "secret_file", "--secret-file, MESH_SECRET_FILE")?)
                .map_err(|e| anyhow::anyhow!("invalid secret_file {}: {e}", path.display()))?;
            Ok(Credentials { secret: Some(secret), agent_key: None })
        }
        (None, Some(path)) => {
            let key = PrincipalKey::parse_hex(&read(path, "agent_key_file", "--agent-key-file, MESH_AGENT_KEY_FILE")?)
                .map_err(|e| anyhow::anyhow!("invalid agent_key_file {}: {e}", path.display()))?;
            Ok(Credentials { secret: None, agent_key: Some(key) })
        }
        (None, None) => Ok(Credentials::default()),
    }
}

/// Reads a deployment secret file, for `mesh key`.
pub(crate) fn secret(path: &Path) -> Result<DeploymentSecret> {
    match credentials(Some(path), None)?.secret {
        Some(secret) => Ok(secret),
        None => bail!("no deployment secret in {}", path.display()),
    }
}

/// Where `mesh up` keeps its store's whole URL (the state file holds it without the password).
fn store_url_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("store.url")
}

/// Writes the store's whole URL for the read commands, private (0600).
pub(crate) fn write_store_url(state_dir: &Path, url: &str) -> Result<()> {
    use std::io::Write;
    let path = store_url_path(state_dir);
    let mut f =
        mesh_supervisor::private::create(&path).with_context(|| format!("failed to write {}", path.display()))?;
    writeln!(f, "{url}")?;
    Ok(())
}

/// The store URL a read command uses for the deployment in `state_dir`: the whole one `mesh up` kept, else what the
/// state file shows.
pub(crate) fn store_url(state_dir: &Path, shown: &str) -> String {
    std::fs::read_to_string(store_url_path(state_dir))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| shown.to_owned())
}

/// Where `mesh up` records the path of its store's CA certificate, for the read commands.
fn store_ca_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join("store.ca")
}

/// Records (or, with `None`, forgets) the CA certificate the deployment's store is checked against.
pub(crate) fn write_store_ca(state_dir: &Path, ca: Option<&Path>) -> Result<()> {
    use std::io::Write;
    let path = store_ca_path(state_dir);
    match ca {
        Some(ca) => {
            let mut f = mesh_supervisor::private::create(&path)
                .with_context(|| format!("failed to write {}", path.display()))?;
            writeln!(f, "{}", ca.display())?;
        }
        None if path.exists() => {
            std::fs::remove_file(&path).with_context(|| format!("failed to remove {}", path.display()))?;
        }
        None => {}
    }
    Ok(())
}

/// The CA certificate of the deployment's store in `state_dir`, if `mesh up` recorded one.
pub(crate) fn store_ca(state_dir: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(store_ca_path(state_dir)).ok()?;
    let path = text.trim();
    (!path.is_empty()).then(|| std::path::PathBuf::from(path))
}

/// The infrastructure of a read command (`mesh inspect`, `mesh view`): as configured, or, when neither the flags
/// nor the file name a broker or a store, the deployment recorded in `state_dir` with its own secret, so the
/// records are checked as its managers check them.
pub(crate) fn reader_infra(args: &InfraArgs, file: &SettingsFile, state_dir: &Path) -> Result<Infra> {
    let mut infra = infra(args, file)?;
    let named = args.kafka.is_some() || args.redis.is_some() || file.kafka.is_some() || file.redis.is_some();
    if !named {
        adopt_deployment(&mut infra, state_dir, args.topic_prefix.is_some());
        let secret_file = mesh_supervisor::StateDir::new(state_dir).secret();
        if !infra.mesh.credentials.authenticated() && secret_file.exists() {
            infra.mesh.credentials.secret = Some(secret(&secret_file)?);
        }
    }
    Ok(infra)
}

/// Points a read command at the deployment recorded in `state_dir` (its broker, store and, unless one was given,
/// topic prefix), when there is one: `mesh up` on the embedded default keeps its snapshots in `.mesh/store`, not in
/// the default Redis, so a reader that assumed the defaults found nothing.
fn adopt_deployment(infra: &mut Infra, state_dir: &Path, prefix_given: bool) {
    let dir = mesh_supervisor::StateDir::new(state_dir);
    let Ok(Some(state)) = mesh_supervisor::StateFile::read(&dir.state()) else { return };
    eprintln!("reading the deployment in {} (kafka {}, store {})", state_dir.display(), state.kafka, state.redis);
    infra.kafka = state.kafka;
    infra.redis = store_url(state_dir, &state.redis);
    if infra.redis_ca_file.is_none() {
        infra.redis_ca_file = store_ca(state_dir);
    }
    if !prefix_given {
        infra.mesh.topics = TopicNames::new(state.topic_prefix);
    }
}

/// `url` with the ACL user (`--redis-username`) and password (a file, or MESH_REDIS_PASSWORD) put in, when given
/// apart from it: so the password need be in neither argv nor a config file.
fn redis_login(args: &InfraArgs, file: &SettingsFile, url: String) -> Result<String> {
    let username = args.redis_username.clone().or(file.redis_username.clone());
    let password = match args.redis_password_file.as_deref().or(file.redis_password_file.as_deref()) {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "invalid redis_password_file (--redis-password-file, MESH_REDIS_PASSWORD_FILE): cannot read {}",
                        path.display()
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => std::env::var("MESH_REDIS_PASSWORD").ok(),
    };
    if username.is_none() && password.is_none() {
        return Ok(url);
    }
    let Some((scheme, rest)) = url.split_once("://").filter(|(s, _)| *s == "redis" || *s == "rediss") else {
        bail!(
            "invalid redis_username/redis_password_file: a user and password are for a redis:// or rediss:// store, not \
             {:?}",
            mesh_transport::redact_url(&url)
        );
    };
    let login = match &password {
        Some(p) => format!("{}:{}", username.as_deref().map(percent_encoded).unwrap_or_default(), percent_encoded(p)),
        None => username.as_deref().map(percent_encoded).unwrap_or_default(),
    };
    if let Some(authority) = rest.split(['/', '?', '#']).next()
        && let Some((userinfo, _)) = authority.rsplit_once('@')
    {
        // `mesh up` hands its processes the URL with the login in it, and they inherit its variables too: what is
        // given apart must then agree with it.
        let (user, pass) = userinfo.split_once(':').map_or((userinfo, None), |(u, p)| (u, Some(p)));
        let user_agrees = username.as_deref().is_none_or(|u| percent_encoded(u) == user);
        let password_agrees = password.as_deref().is_none_or(|p| Some(percent_encoded(p).as_str()) == pass);
        if user_agrees && password_agrees {
            return Ok(url);
        }
        bail!(
            "invalid redis (--redis, MESH_REDIS): the URL already names a user; give the user and password either in \
             it or with --redis-username and --redis-password-file, not both"
        );
    }
    Ok(format!("{scheme}://{login}@{rest}"))
}

/// `text` with every byte outside URL-unreserved characters written `%XX`, for a user or password in a URL.
fn percent_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The named security settings as librdkafka properties: TLS (`security.protocol`, `ssl.ca.location`) and SASL
/// (`sasl.mechanisms`, `sasl.username`, `sasl.password`, the password from a file or MESH_KAFKA_SASL_PASSWORD).
/// A username among the `generic` properties counts: `mesh up` hands its processes the resolved properties in a
/// file, and they inherit its variables (a password) too.
fn kafka_security(
    args: &InfraArgs,
    file: &SettingsFile,
    generic: &[(String, String)],
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let protocol = args.kafka_security_protocol.clone().or(file.kafka_security_protocol.clone());
    if let Some(p) = &protocol {
        let p = p.to_ascii_lowercase();
        if !["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&p.as_str()) {
            bail!(
                "invalid kafka_security_protocol (--kafka-security-protocol, MESH_KAFKA_SECURITY_PROTOCOL): {p:?}; \
                 use plaintext, ssl, sasl_plaintext or sasl_ssl"
            );
        }
        out.push(("security.protocol".to_owned(), p));
    }
    if let Some(ca) = args.kafka_ca_file.as_deref().or(file.kafka_ca_file.as_deref()) {
        if !ca.is_file() {
            bail!(
                "invalid kafka_ca_file (--kafka-ca-file, MESH_KAFKA_CA_FILE): {} is not a readable file; give the CA \
                 certificate (PEM) that signed the brokers' certificates",
                ca.display()
            );
        }
        out.push(("ssl.ca.location".to_owned(), ca.display().to_string()));
    }
    let username = args
        .kafka_sasl_username
        .clone()
        .or(file.kafka_sasl_username.clone())
        .or_else(|| generic.iter().find(|(k, _)| k == "sasl.username").map(|(_, v)| v.clone()));
    let password = match args.kafka_sasl_password_file.as_deref().or(file.kafka_sasl_password_file.as_deref()) {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| {
                    format!(
                        "invalid kafka_sasl_password_file (--kafka-sasl-password-file, MESH_KAFKA_SASL_PASSWORD_FILE): \
                         cannot read {}",
                        path.display()
                    )
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => std::env::var("MESH_KAFKA_SASL_PASSWORD").ok(),
    };
    let mechanism = args.kafka_sasl_mechanism.clone().or(file.kafka_sasl_mechanism.clone());
    if let Some(m) = &mechanism
        && !["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"].contains(&m.to_ascii_uppercase().as_str())
    {
        bail!(
            "invalid kafka_sasl_mechanism (--kafka-sasl-mechanism, MESH_KAFKA_SASL_MECHANISM): {m:?}; use \
             SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN"
        );
    }
    match (&username, &password) {
        (Some(user), Some(password)) => {
            let not_sasl = protocol.as_deref().is_some_and(|p| !p.to_ascii_lowercase().starts_with("sasl"));
            if not_sasl {
                bail!(
                    "invalid kafka_security_protocol (--kafka-security-protocol): a SASL username is given, so use \
                     sasl_ssl (or sasl_plaintext on a trusted network)"
                );
            }
            let mechanism = mechanism.map_or_else(|| "SCRAM-SHA-256".to_owned(), |m| m.to_ascii_uppercase());
            out.push(("sasl.mechanisms".to_owned(), mechanism));
            out.push(("sasl.username".to_owned(), user.clone()));
            out.push(("sasl.password".to_owned(), password.clone()));
        }
        (Some(_), None) => bail!(
            "invalid kafka_sasl_password_file (--kafka-sasl-password-file, MESH_KAFKA_SASL_PASSWORD_FILE): a SASL \
             username is given without a password; put it in a file (or MESH_KAFKA_SASL_PASSWORD)"
        ),
        (None, Some(_)) => bail!(
            "invalid kafka_sasl_username (--kafka-sasl-username, MESH_KAFKA_SASL_USERNAME): a SASL password is given \
             without a username"
        ),
        (None, None) => {}
    }
    Ok(out)
}

/// The config file's `[kafka_properties]` table, then the properties file's lines over it, then each `KEY=VALUE`
/// flag over both. librdkafka itself names an unknown property or a bad value when the client is created.
fn kafka_properties(
    flags: &[String],
    file: &BTreeMap<String, String>,
    properties_file: Option<&Path>,
) -> Result<Vec<(String, String)>> {
    let mut merged = file.clone();
    if let Some(path) = properties_file {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("invalid kafka_properties_file (--kafka-properties-file): cannot read {}", path.display())
        })?;
        merged.extend(properties(&text, path)?);
    }
    for item in flags {
        let Some((key, value)) = item.split_once('=') else {
            bail!(
                "invalid kafka_properties (--kafka-property, MESH_KAFKA_PROPERTIES): {item:?} is not KEY=VALUE; write \
                 for example \"security.protocol=ssl\""
            );
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("invalid kafka_properties (--kafka-property, MESH_KAFKA_PROPERTIES): {item:?} names no property");
        }
        merged.insert(key.to_owned(), value.trim().to_owned());
    }
    Ok(merged.into_iter().collect())
}

/// The lines of a properties file: `KEY=VALUE`, blank lines and `#` comments; a bad line is named by number.
pub(crate) fn properties(text: &str, path: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                out.insert(key.trim().to_owned(), value.trim().to_owned());
            }
            _ => bail!(
                "invalid kafka_properties_file {}:{}: not KEY=VALUE (write for example \"sasl.username=mesh\")",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

/// Writes resolved properties where `mesh up`'s children read them (private: they may hold secrets), in the
/// format [`properties`] reads.
pub(crate) fn write_properties(path: &Path, properties: &[(String, String)]) -> Result<()> {
    use std::io::Write;
    let mut f =
        mesh_supervisor::private::create(path).with_context(|| format!("failed to write {}", path.display()))?;
    writeln!(f, "# written by `mesh up` for its processes: the resolved librdkafka properties")?;
    for (key, value) in properties {
        writeln!(f, "{key}={value}")?;
    }
    Ok(())
}

pub(crate) fn topology(args: &TopologyArgs, file: &SettingsFile) -> Result<TopologyConfig> {
    let f = &file.topology;
    let d = TopologyConfig::default();
    let g = GraphParams::default();
    Ok(TopologyConfig {
        graph: GraphParams {
            initial_weight: fraction(
                "topology.initial_weight",
                "--initial-weight",
                args.initial_weight,
                f.initial_weight,
                g.initial_weight,
            )?,
            reinforcement: fraction(
                "topology.reinforcement",
                "--reinforcement",
                args.reinforcement,
                f.reinforcement,
                g.reinforcement,
            )?,
            decay_rate: fraction("topology.decay_rate", "--decay-rate", args.decay_rate, f.decay_rate, g.decay_rate)?,
            prune_threshold: fraction(
                "topology.prune_threshold",
                "--prune-threshold",
                args.prune_threshold,
                f.prune_threshold,
                g.prune_threshold,
            )?,
        },
        decay_interval: duration(
            "topology.decay_interval",
            "--decay-interval",
            args.decay_interval.clone(),
            f.decay_interval.clone(),
            d.decay_interval,
        )?,
        failure_timeout: duration(
            "topology.failure_timeout",
            "--failure-timeout",
            args.failure_timeout.clone(),
            f.failure_timeout.clone(),
            d.failure_timeout,
        )?,
        snapshot_interval: duration(
            "topology.snapshot_interval",
            "--snapshot-interval",
            args.snapshot_interval.clone(),
            f.snapshot_interval.clone(),
            d.snapshot_interval,
        )?,
    })
}

pub(crate) fn consensus(args: &ConsensusArgs, file: &SettingsFile) -> Result<ConsensusConfig> {
    let f = &file.consensus;
    let d = ConsensusConfig::default();
    let q = fraction("consensus.quorum", "--quorum", args.quorum, f.quorum, d.params.quorum.fraction())?;
    let quorum = Quorum::new(q).map_err(|e| anyhow::anyhow!("invalid consensus.quorum (--quorum): {e}"))?;
    let timeout = duration(
        "consensus.proposal_timeout",
        "--proposal-timeout",
        args.proposal_timeout.clone(),
        f.proposal_timeout.clone(),
        Duration::from_millis(d.params.proposal_timeout_ms),
    )?;
    Ok(ConsensusConfig {
        params: ConsensusParams { quorum, proposal_timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX) },
        snapshot_interval: duration(
            "consensus.snapshot_interval",
            "--snapshot-interval",
            args.snapshot_interval.clone(),
            f.snapshot_interval.clone(),
            d.snapshot_interval,
        )?,
    })
}

pub(crate) fn agent(args: &AgentArgs, file: &SettingsFile) -> Result<AgentConfig> {
    let f = &file.agent;
    let id =
        AgentId::from_name(&args.name).map_err(|e| anyhow::anyhow!("invalid name (--name, MESH_AGENT_NAME): {e}"))?;
    let role = Role::new(args.role.trim().to_ascii_lowercase())
        .map_err(|e| anyhow::anyhow!("invalid role (--role, MESH_AGENT_ROLE): {e}"))?;
    let mut metadata = BTreeMap::new();
    for pair in args.metadata.iter().filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("invalid metadata (--metadata): {pair:?} is not KEY=VALUE");
        };
        metadata.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    let rate = pick(args.rate, f.rate, 1.0);
    if !rate.is_finite() || !(0.0..=10_000.0).contains(&rate) {
        bail!("invalid agent.rate (--rate, MESH_AGENT_RATE): {rate}; give tasks per second from 0 to 10000");
    }
    let seed = args.seed.unwrap_or_else(|| {
        id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    });
    Ok(AgentConfig {
        name: args.name.clone(),
        id,
        role,
        capabilities: args.capabilities.iter().filter(|c| !c.is_empty()).cloned().collect(),
        metadata,
        heartbeat_interval: duration(
            "agent.heartbeat_interval",
            "--heartbeat-interval",
            args.heartbeat_interval.clone(),
            f.heartbeat_interval.clone(),
            Duration::from_secs(1),
        )?,
        rate,
        proposal_every: pick(args.proposal_every, f.proposal_every, 5),
        start_after_members: pick(args.start_after_members, f.start_after_members, 0),
        seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn repo_file(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
    }

    /// The settings file in `fixtures/config/` is the one README shows, and every value in it is the built-in
    /// default: the documented defaults cannot drift from the code.
    #[test]
    fn the_documented_settings_file_holds_exactly_the_defaults() {
        let path = repo_file("fixtures/config/settings.toml");
        let text = std::fs::read_to_string(&path).expect("settings example");
        let readme = std::fs::read_to_string(repo_file("README.md")).expect("README");
        let body: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        assert!(readme.contains(&body), "README's settings block differs from fixtures/config/settings.toml");
        let file = load_file(Some(&path)).expect("parses");
        let empty = SettingsFile::default();
        let parse = |args: &[&str]| Cli::try_parse_from(args).expect("valid command line").command;
        let (Command::Topology(t), Command::Consensus(c), Command::Agent(a)) = (
            parse(&["mesh", "topology"]),
            parse(&["mesh", "consensus"]),
            parse(&["mesh", "agent", "--name", "x", "--role", "sales"]),
        ) else {
            panic!("subcommands parse")
        };
        assert_eq!(topology(&t, &file).expect("valid"), topology(&t, &empty).expect("valid"));
        assert_eq!(consensus(&c, &file).expect("valid"), consensus(&c, &empty).expect("valid"));
        assert_eq!(agent(&a, &file).expect("valid"), agent(&a, &empty).expect("valid"));
        let (fi, ei) = (infra(&t.infra, &file).expect("valid"), infra(&t.infra, &empty).expect("valid"));
        assert_eq!(
            (fi.kafka, fi.kafka_fetch_wait, fi.kafka_linger, fi.kafka_properties, fi.redis, fi.mesh),
            (ei.kafka, ei.kafka_fetch_wait, ei.kafka_linger, ei.kafka_properties, ei.redis, ei.mesh)
        );
    }

    #[test]
    fn the_example_deployment_file_is_the_built_in_deployment() {
        let exe = std::path::Path::new("/usr/bin/mesh");
        let spec =
            mesh_supervisor::DeploymentSpec::load(&repo_file("fixtures/config/deployment.toml"), exe).expect("valid");
        assert_eq!(spec, mesh_supervisor::DeploymentSpec::seed_default(exe));
    }

    #[test]
    fn unknown_file_fields_are_named() {
        let err = SettingsFile::parse("[topology]\ndecay_rat = 0.1\n").expect_err("typo must be refused");
        assert!(err.to_string().contains("decay_rat"), "{err}");
    }

    #[test]
    fn redis_urls_logins_and_cas_are_checked_at_once() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).expect("valid command line").command {
            Command::Topology(t) => infra(&t.infra, &SettingsFile::default()),
            _ => panic!("topology"),
        };
        let e = parse(&["mesh", "topology", "--redis", "http://127.0.0.1:6380"]).err().expect("refused");
        assert!(e.to_string().contains("give a URL such as redis://"), "{e}");
        assert!(parse(&["mesh", "topology", "--redis", "rediss://127.0.0.1:6380"]).is_ok(), "TLS is supported");
        let e = parse(&["mesh", "topology", "--redis-ca-file", "/etc/hostname"]).err().expect("refused");
        assert!(e.to_string().contains("name the store as rediss://"), "{e}");
        let tmp = tempfile::tempdir().expect("tmp");
        let password = tmp.path().join("password");
        std::fs::write(&password, "p@ss:w/rd\n").expect("write");
        let args = ["mesh", "topology", "--redis", "rediss://127.0.0.1:6380/0", "--redis-username", "mesh"];
        let with_password = [&args[..], &["--redis-password-file", password.to_str().expect("utf-8")]].concat();
        assert_eq!(parse(&with_password).expect("valid").redis, "rediss://mesh:p%40ss%3Aw%2Frd@127.0.0.1:6380/0");
        let twice = ["mesh", "topology", "--redis", "redis://a:b@127.0.0.1:6380", "--redis-username", "mesh"];
        assert!(parse(&twice).err().expect("refused").to_string().contains("either in it or with"));
        let composed = parse(&with_password).expect("valid").redis;
        let again = [&["mesh", "topology", "--redis", composed.as_str()][..], &with_password[4..]].concat();
        assert_eq!(parse(&again).expect("the same login twice").redis, composed, "as `mesh up`'s children see it");
        assert!(parse(&["mesh", "topology", "--redis", "redis://127.0.0.1:6380"]).is_ok());
    }

    #[test]
    fn credentials_come_from_files_and_every_refusal_names_the_field() {
        let tmp = tempfile::tempdir().expect("tmp");
        let write = |name: &str, text: &str| {
            let path = tmp.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let (secret, short, key) = (write("secret", &"s".repeat(40)), write("short", "abc\n"), write("key", "zz"));
        let err = |s: Option<&Path>, k: Option<&Path>| credentials(s, k).expect_err("refused").to_string();
        assert!(credentials(Some(&secret), None).expect("valid").secret.is_some());
        assert!(err(Some(&short), None).contains("invalid secret_file"), "{}", err(Some(&short), None));
        assert!(err(Some(&tmp.path().join("missing")), None).contains("cannot read"));
        assert!(err(None, Some(&key)).contains("invalid agent_key_file"));
        assert!(err(Some(&secret), Some(&key)).contains("give one of the two"));
        assert!(!credentials(None, None).expect("none").authenticated());
    }

    #[test]
    fn kafka_security_settings_become_librdkafka_properties_and_refusals_name_the_field() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (ca, password) = (tmp.path().join("ca.pem"), tmp.path().join("password"));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").expect("write");
        std::fs::write(&password, "s3cr=t\n").expect("write");
        let parse = |extra: &[&str]| {
            let mut args = vec!["mesh", "topology"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).expect("valid command line").command {
                Command::Topology(t) => infra(&t.infra, &SettingsFile::default()),
                _ => panic!("topology"),
            }
        };
        let (ca_arg, password_arg) = (ca.display().to_string(), password.display().to_string());
        let ok = parse(&[
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-ca-file",
            &ca_arg,
            "--kafka-sasl-username",
            "mesh",
            "--kafka-sasl-password-file",
            &password_arg,
            "--kafka-property",
            "sasl.mechanisms=SCRAM-SHA-512",
        ])
        .expect("valid");
        let props: BTreeMap<_, _> = ok.kafka_properties.iter().cloned().collect();
        assert_eq!(props["security.protocol"], "sasl_ssl");
        assert_eq!(props["ssl.ca.location"], ca_arg);
        assert_eq!(props["sasl.username"], "mesh");
        assert_eq!(props["sasl.password"], "s3cr=t", "the file's content without its newline");
        assert_eq!(props["sasl.mechanisms"], "SCRAM-SHA-512", "a --kafka-property wins over the named setting");
        let err = |extra: &[&str]| parse(extra).err().expect("refused").to_string();
        assert!(err(&["--kafka-security-protocol", "tls"]).contains("invalid kafka_security_protocol"));
        assert!(err(&["--kafka-ca-file", "/nonexistent.pem"]).contains("invalid kafka_ca_file"));
        assert!(err(&["--kafka-sasl-username", "mesh"]).contains("without a password"));
        let plain = ["--kafka-security-protocol", "ssl", "--kafka-sasl-username", "m", "--kafka-sasl-password-file"];
        let mut plain = plain.to_vec();
        plain.push(&password_arg);
        assert!(err(&plain).contains("use sasl_ssl"));
        assert!(err(&["--kafka-sasl-mechanism", "GSSAPI"]).contains("invalid kafka_sasl_mechanism"));
    }

    #[test]
    fn flag_beats_file_beats_default() {
        assert_eq!(pick(Some(1), Some(2), 3), 1);
        assert_eq!(pick(None, Some(2), 3), 2);
        assert_eq!(pick(None, None, 3), 3);
    }

    #[test]
    fn kafka_property_flags_override_the_file_by_key_and_bad_ones_are_named() {
        let file = BTreeMap::from([
            ("security.protocol".to_owned(), "ssl".to_owned()),
            ("linger.ms".to_owned(), "5".to_owned()),
        ]);
        let tmp = tempfile::tempdir().expect("tmp");
        let props = tmp.path().join("kafka.properties");
        std::fs::write(&props, "# secrets\nsasl.password = s3cr=t\n\nlinger.ms=10\n").expect("write");
        let merged = kafka_properties(&["linger.ms = 20".to_owned(), "client.rack=r1".to_owned()], &file, Some(&props))
            .expect("valid properties");
        assert_eq!(
            merged,
            [("client.rack", "r1"), ("linger.ms", "20"), ("sasl.password", "s3cr=t"), ("security.protocol", "ssl")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        // What `mesh up` writes for its children reads back the same.
        let written = tmp.path().join("resolved.properties");
        write_properties(&written, &merged).expect("written");
        let again = kafka_properties(&[], &BTreeMap::new(), Some(&written)).expect("valid");
        assert_eq!(again, merged);
        std::fs::write(&props, "ok=1\nnot a property\n").expect("write");
        let e = kafka_properties(&[], &file, Some(&props)).expect_err("bad line");
        assert!(e.to_string().contains("kafka.properties:2"), "{e}");
        let e = kafka_properties(&["linger.ms".to_owned()], &file, None).expect_err("no value");
        assert!(e.to_string().contains("--kafka-property") && e.to_string().contains("KEY=VALUE"), "{e}");
        let e = kafka_properties(&["=5".to_owned()], &file, None).expect_err("no key");
        assert!(e.to_string().contains("names no property"), "{e}");
    }

    #[test]
    fn bad_values_name_the_field_and_the_fix() {
        let e =
            fraction("topology.decay_rate", "--decay-rate", Some(0.0005), None, Milli(20)).expect_err("too precise");
        assert!(e.to_string().contains("topology.decay_rate (--decay-rate)"), "{e}");
        let e = duration("topology.decay_interval", "--decay-interval", Some("soon".into()), None, Duration::ZERO)
            .expect_err("not a duration");
        assert!(e.to_string().contains("\"5s\""), "{e}");
    }
}
