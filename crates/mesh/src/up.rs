//! `mesh up`: resolve the infrastructure (embedded default, or given services), then supervise the deployment in
//! the foreground, or detached (`-d`: re-executed in a new session, returning once everything is READY).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use mesh_kafka::EmbeddedKafka;
use mesh_node::infrastructure::{InfraKind, Infrastructure, KafkaSource, StoreSource};
use mesh_supervisor::{DeploymentSpec, InstanceLock, LaunchError, Options, Output, StateDir};

use crate::cli::{InfraMode, UpArgs};
use mesh_node::SettingsFile;

use crate::settings;

/// Runs `mesh up` (foreground or the detached supervisor itself).
pub(crate) fn supervise(args: &UpArgs, file: &SettingsFile, config_path: Option<&Path>) -> Result<()> {
    let dir = StateDir::new(absolute(&args.dir.state_dir)?);
    let lock = InstanceLock::acquire(&dir)?;
    let infra = settings::infra(&args.infra_args, file).map_err(crate::usage)?;
    let chosen = Infrastructure::resolve(
        args.infra.map(InfraMode::kind),
        (args.infra_args.kafka.is_some() || file.kafka.is_some()).then_some(infra.kafka.as_str()),
        (args.infra_args.redis.is_some() || file.redis.is_some()).then_some(infra.redis.as_str()),
        InfraKind::Embedded,
    );
    let local = chosen.kafka == KafkaSource::Local;
    let mesh_exe = std::env::current_exe().context("failed to locate the mesh binary")?;
    let mut spec = deployment(args.file.as_deref(), &mesh_exe)?;
    check_brokers(args)?;
    let mut local_infra = None;
    if local {
        let (s, kafka, redis) = with_local_infrastructure(spec, &dir, args.brokers)?;
        spec = s;
        local_infra = Some((kafka, redis));
    }

    // The dispatcher loop runs on this thread; the tasks that drain the children's output pipes and notify sockets
    // run on two workers, so a slow state-file fsync in the loop never leaves a child waiting on a full pipe.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let embedded = match chosen.kafka {
        KafkaSource::Embedded => Some(
            EmbeddedKafka::start(&mesh_node::topic_specs(&infra.mesh))
                .context("failed to start the embedded broker")?,
        ),
        KafkaSource::Given(_) | KafkaSource::Local => None,
    };
    let kafka = match &chosen.kafka {
        KafkaSource::Given(bootstrap) => bootstrap.clone(),
        KafkaSource::Local => local_infra.as_ref().map(|(k, _)| k.clone()).unwrap_or_default(),
        KafkaSource::Embedded => embedded.as_ref().map(EmbeddedKafka::bootstrap).unwrap_or_default(),
    };
    let (redis, redis_note) = if let Some((_, r)) = &local_infra {
        (r.clone(), None)
    } else if let StoreSource::Given(url) = &chosen.store {
        (url.clone(), None)
    } else {
        // Never whatever answers on 6379: on a shared machine that may be anyone's Redis (or a trap).
        let store = dir.root().join("store");
        // The embedded broker starts empty every time, so snapshots of an earlier run point into a log that is gone:
        // restored, they were replayed against nothing (now refused, see `check_replayable`). They go with it.
        if embedded.is_some() && store.exists() {
            std::fs::remove_dir_all(&store)
                .with_context(|| format!("failed to clear the previous run's store {}", store.display()))?;
        }
        (
            format!("file://{}", store.display()),
            Some(format!("snapshots go to {} (name a Redis with --redis to use one)", store.display())),
        )
    };
    let infra_label = chosen.label();
    let mut banner = Vec::new();
    if embedded.is_some() {
        banner.push(format!(
            "embedded default: a Kafka-protocol broker runs inside this supervisor at {kafka} (librdkafka's mock \
             cluster: not durable, gone with `mesh down`)"
        ));
        if let Some(note) = &redis_note {
            banner.push(note.clone());
        }
        banner.push("for real services: mesh up --kafka HOST:PORT --redis redis://HOST:PORT".to_owned());
    } else if local {
        let kafka_names = if args.brokers == 1 {
            "`kafka`".to_owned()
        } else {
            let mesh_fixtures::Replication { replicas, in_sync } = mesh_fixtures::replication(args.brokers);
            format!("`kafka-1`..`kafka-{}` ({replicas} replicas per partition, {in_sync} in sync)", args.brokers)
        };
        banner.push(format!(
            "local infrastructure: Apache Kafka at {kafka} and redis-server at {redis}, supervised as {kafka_names} \
             and `redis` (data in {}/infra)",
            dir.root().display()
        ));
    } else {
        banner.push(format!("using Kafka at {kafka} and {}", mesh_transport::redact_url(&redis)));
    }

    let mut env = BTreeMap::new();
    env.insert("MESH_KAFKA".to_owned(), kafka.clone());
    env.insert("MESH_REDIS".to_owned(), redis.clone());
    // The state file (and so `mesh status`) shows the store without its password; the read commands find the
    // whole URL in a private file of its own.
    settings::write_store_url(dir.root(), &redis)?;
    let redis_ca =
        infra.redis_ca_file.as_deref().filter(|_| redis.starts_with("rediss://")).map(absolute).transpose()?;
    settings::write_store_ca(dir.root(), redis_ca.as_deref())?;
    if let Some(ca) = &redis_ca {
        env.insert("MESH_REDIS_CA_FILE".to_owned(), ca.display().to_string());
    }
    let secret = deployment_secret(args, file, dir.root())?;
    banner.push(format!(
        "records are tagged and checked with the deployment secret {} (`mesh key agent ID` gives a third-party \
         agent its key)",
        secret.display()
    ));
    env.insert("MESH_SECRET_FILE".to_owned(), secret.display().to_string());
    env.insert("MESH_TOPIC_PREFIX".to_owned(), infra.mesh.topics.prefix().to_owned());
    // Each process serves its metrics on a port of its own choosing, on loopback unless --metrics-listen names
    // another address (its port is ignored: six processes cannot share one); the supervisor lists where.
    let metrics_ip = infra.metrics_listen.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    env.insert("MESH_METRICS_LISTEN".to_owned(), std::net::SocketAddr::new(metrics_ip, 0).to_string());
    banner.push(format!(
        "Prometheus metrics: each process serves /metrics on {metrics_ip}, listed by `mesh status` and in {} \
         (file_sd_configs)",
        dir.root().join("prometheus-targets.json").display()
    ));
    // Properties given to `mesh up` (flags, variables, the config file's table or its properties file) reach every
    // process through one private file: a value may hold commas or secrets that neither a variable nor argv should.
    if !infra.kafka_properties.is_empty() {
        let path = dir.root().join("kafka.properties");
        settings::write_properties(&path, &infra.kafka_properties)?;
        env.insert("MESH_KAFKA_PROPERTIES_FILE".to_owned(), path.display().to_string());
    }
    env.insert("MESH_KAFKA_LINGER".to_owned(), format!("{}us", infra.kafka_linger.as_micros()));
    if embedded.is_some() {
        env.insert("MESH_KAFKA_FETCH_WAIT".to_owned(), crate::settings::EMBEDDED_FETCH_WAIT.to_owned());
    } else {
        env.insert("MESH_KAFKA_FETCH_WAIT".to_owned(), format!("{}ms", infra.kafka_fetch_wait.as_millis()));
    }
    if let Some(path) = config_path {
        env.insert("MESH_CONFIG".to_owned(), absolute(path)?.display().to_string());
    }
    let output = if args.detached_child {
        Output::LogsOnly
    } else {
        Output::Terminal { color: std::io::IsTerminal::is_terminal(&std::io::stdout()) && !crate::no_color() }
    };
    {
        let mut out = std::io::stdout().lock();
        for line in &banner {
            writeln!(out, "{:>16} | {line}", "mesh")?;
        }
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    // The supervisor's own metrics (its processes' states and restarts, read from the state file at each scrape).
    let (metrics, _serving_metrics) = runtime.block_on(crate::supervisor_metrics::serve(metrics_ip, dir.state()))?;
    let opts = Options {
        state_dir: dir,
        spec,
        env,
        infra: infra_label.to_owned(),
        kafka,
        redis: mesh_transport::redact_url(&redis),
        topic_prefix: infra.mesh.topics.prefix().to_owned(),
        output,
        seed,
        metrics: Some(metrics.to_string()),
    };
    runtime.block_on(mesh_supervisor::run(opts, lock))?;
    drop(embedded);
    Ok(())
}

/// The deployment secret's file: the one named (flag, variable or config file), else `DIR/secret`, made once with
/// 32 random bytes (private) and kept, so records written by an earlier run still check.
fn deployment_secret(args: &UpArgs, file: &SettingsFile, state_dir: &Path) -> Result<PathBuf> {
    if args.infra_args.agent_key_file.is_some() || file.agent_key_file.is_some() {
        return Err(crate::usage(anyhow!(
            "invalid agent_key_file (--agent-key-file, MESH_AGENT_KEY_FILE): `mesh up` runs the managers, which need \
             the deployment secret (--secret-file) or none (then `mesh up` makes one)"
        )));
    }
    if let Some(path) = args.infra_args.secret_file.as_deref().or(file.secret_file.as_deref()) {
        return absolute(path);
    }
    let path = StateDir::new(state_dir).secret();
    if !path.exists() {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("failed to read 32 random bytes from /dev/urandom for the deployment secret")?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut f = mesh_supervisor::private::create(&path)
            .with_context(|| format!("failed to write the deployment secret {}", path.display()))?;
        writeln!(f, "{hex}")?;
    }
    Ok(path)
}

/// Re-executes `mesh up` in a new session with its output in `.mesh/supervisor.log`, then waits for readiness.
pub(crate) fn detach(args: &UpArgs) -> Result<()> {
    check_brokers(args)?;
    let dir = StateDir::new(absolute(&args.dir.state_dir)?);
    if InstanceLock::held(&dir) {
        bail!(
            "a supervisor is already running on {}; `mesh status` shows it, `mesh down` stops it",
            dir.root().display()
        );
    }
    mesh_supervisor::private::restrict_umask();
    mesh_supervisor::private::create_dir(dir.root())
        .with_context(|| format!("failed to create {}", dir.root().display()))?;
    let wait = humantime::parse_duration(&args.wait_timeout).map_err(|e| {
        crate::usage(anyhow!("invalid --wait-timeout {:?}: {e}; write for example \"60s\"", args.wait_timeout))
    })?;
    let forwarded: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "-d" && a != "--detach")
        .chain(["--detached-child".to_owned()])
        .collect();
    let spec = mesh_supervisor::LaunchSpec {
        program: std::env::current_exe()?,
        launcher: Vec::new(),
        args: forwarded.into_iter().map(Into::into).collect(),
        env: Vec::new(),
        state_dir: dir.clone(),
        log: dir.supervisor_log(),
        answer_timeout: Duration::from_secs(2),
    };
    let mut launched = mesh_supervisor::Launched::spawn(&spec)?;
    let ready = launched.wait_ready(wait, || true);
    let state = match ready {
        Ok(state) => state,
        // A process that FAILED leaves the others running for `mesh status` and `mesh logs` to explain.
        Err(e @ (LaunchError::ProcessFailed { .. } | LaunchError::NotReady { .. })) => {
            launched.leave_running();
            return Err(e.into());
        }
        Err(e) => return Err(anyhow!(e).context("the deployment did not start")),
    };
    launched.leave_running();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} processes READY (supervisor pid {}, {} infrastructure)",
        state.processes.len(),
        state.supervisor_pid,
        state.infra
    )?;
    writeln!(out, "mesh status | mesh logs -f | mesh down")?;
    Ok(())
}

/// `--brokers` sizes only the cluster `mesh up --infra local` runs: a usage error anywhere else, found before a
/// detached supervisor is started.
fn check_brokers(args: &UpArgs) -> Result<()> {
    if args.brokers > 1 && args.infra != Some(InfraMode::Local) {
        return Err(crate::usage(anyhow!(
            "--brokers {} needs --infra local: it sizes the Kafka cluster `mesh up` runs (given brokers, --kafka, \
             are sized by whoever runs them; the embedded broker is one node)",
            args.brokers
        )));
    }
    Ok(())
}

/// Ports of the local infrastructure, chosen once per state directory and kept: a node's data records its
/// controllers' addresses, so it must come back on the same ports. The file holds each Kafka node's client and
/// controller port, then Redis's. A state directory whose Kafka has another number of nodes is refused: a
/// different cluster needs fresh data.
fn local_ports(path: &Path, brokers: u32) -> Result<(Vec<(u16, u16)>, u16)> {
    let wanted = 2 * usize::try_from(brokers).unwrap_or(1) + 1;
    if let Ok(text) = std::fs::read_to_string(path) {
        let ports: Vec<u16> = text.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if ports.len() == wanted
            && let Some((redis, kafka)) = ports.split_last()
        {
            return Ok((kafka.chunks(2).map(|c| (c[0], c[1])).collect(), *redis));
        }
        if ports.len() % 2 == 1 && ports.len() > 1 {
            bail!(
                "{} holds a Kafka of {} node(s), not --brokers {brokers}: `mesh down`, then remove {} (its data goes \
                 with it) to start another",
                path.display(),
                ports.len() / 2,
                path.parent().map_or_else(|| path.display().to_string(), |p| p.display().to_string())
            );
        }
    }
    let mut kafka = Vec::new();
    for _ in 0..brokers {
        kafka.push((mesh_fixtures::free_port()?, mesh_fixtures::free_port()?));
    }
    let redis = mesh_fixtures::free_port()?;
    let text: Vec<String> =
        kafka.iter().flat_map(|(k, c)| [k.to_string(), c.to_string()]).chain([redis.to_string()]).collect();
    std::fs::write(path, text.join(" ") + "\n").with_context(|| format!("failed to write {}", path.display()))?;
    Ok((kafka, redis))
}

/// The cluster id of the local cluster's nodes, made once per state directory and kept with their data.
fn local_cluster_id(path: &Path) -> Result<String> {
    if let Ok(id) = std::fs::read_to_string(path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_owned());
    }
    let id = mesh_fixtures::new_cluster_id();
    std::fs::write(path, format!("{id}\n")).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(id)
}

/// Adds a real Kafka (one broker, or a cluster of `brokers` nodes) and redis-server to the deployment, before
/// everything else. Returns the spec, the bootstrap list and the Redis URL.
fn with_local_infrastructure(
    spec: DeploymentSpec,
    dir: &StateDir,
    brokers: u32,
) -> Result<(DeploymentSpec, String, String)> {
    let root = dir.root().join("infra");
    mesh_supervisor::private::create_dir(&root).with_context(|| format!("failed to create {}", root.display()))?;
    let (nodes, redis_port) = local_ports(&root.join("ports"), brokers)?;
    let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut infrastructure = Vec::new();
    if let [(kafka_port, controller_port)] = nodes[..] {
        let kafka = mesh_fixtures::prepare_kafka(&root.join("kafka"), kafka_port, controller_port, &[])
            .context("failed to prepare the local Kafka broker")?;
        infrastructure.push(DeploymentSpec::infrastructure("kafka", kafka, loopback(kafka_port)));
    } else {
        let cluster_id = local_cluster_id(&root.join("cluster-id"))?;
        let commands = mesh_fixtures::prepare_kafka_cluster(&root.join("kafka"), &nodes, &cluster_id)
            .context("failed to prepare the local Kafka cluster")?;
        for (i, (command, (port, _))) in commands.into_iter().zip(&nodes).enumerate() {
            infrastructure.push(DeploymentSpec::infrastructure(&format!("kafka-{}", i + 1), command, loopback(*port)));
        }
    }
    let redis =
        mesh_fixtures::redis_command(&root.join("redis"), redis_port).context("failed to prepare redis-server")?;
    infrastructure.push(DeploymentSpec::infrastructure("redis", redis, loopback(redis_port)));
    let spec = spec.with_infrastructure(infrastructure)?;
    let bootstrap: Vec<String> = nodes.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
    Ok((spec, bootstrap.join(","), format!("redis://127.0.0.1:{redis_port}")))
}

fn deployment(file: Option<&Path>, mesh_exe: &Path) -> Result<DeploymentSpec> {
    let default_file = PathBuf::from("mesh.toml");
    match file {
        Some(f) => DeploymentSpec::load(f, mesh_exe).map_err(|e| crate::usage(e.into())),
        None if default_file.exists() => {
            DeploymentSpec::load(&default_file, mesh_exe).map_err(|e| crate::usage(e.into()))
        }
        None => Ok(DeploymentSpec::seed_default(mesh_exe)),
    }
}

/// `path` against the current directory: the supervisor and its children run elsewhere and must find it.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).context("failed to read the current directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ports_are_kept_per_node_and_another_node_count_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ports");
        let (nodes, redis) = local_ports(&path, 3).expect("chosen");
        assert_eq!(nodes.len(), 3);
        let mut all: Vec<u16> = nodes.iter().flat_map(|(k, c)| [*k, *c]).chain([redis]).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 7, "every port distinct");
        assert_eq!(local_ports(&path, 3).expect("read back"), (nodes, redis), "the same ports on the next start");
        let refused = local_ports(&path, 1).expect_err("a 3-node cluster's data is not a single broker's");
        assert!(refused.to_string().contains("3 node(s), not --brokers 1"), "{refused}");
        // A state directory from before clusters (one broker: Kafka, controller, Redis) still reads as one node.
        std::fs::write(&path, "10001 10002 10003\n").expect("write");
        assert_eq!(local_ports(&path, 1).expect("one node"), (vec![(10001, 10002)], 10003));
    }
}
