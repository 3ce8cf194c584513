//! The `mesh` binary: parses flags, environment and config file, installs logging and signal handling, and runs
//! one of the services (or a tool) from `mesh-node`. Thin on purpose: logic lives in the libraries.
//!
//! Exit codes: 0 success (including a clean stop on SIGTERM/SIGINT), 1 runtime failure (for `status`: not every
//! process READY), 2 bad usage or settings.

mod bench;
mod cli;
mod demo;
mod fleet;
mod inspect;
mod notify;
mod ops;
mod settings;
mod supervisor_metrics;
mod up;
mod view;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use mesh_kafka::{KafkaBus, KafkaConfig, ProducerMode};
use mesh_node::Shutdown;
use mesh_redis::AnyStore;
use tracing_subscriber::EnvFilter;

use crate::cli::{AgentArgs, Cli, Command, LogFormat};
use crate::notify::Notifier;
use mesh_node::SettingsFile;

/// Exit code for settings and usage errors (clap uses 2 for its own).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let file = match crate::settings::load_file(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // The supervisor and the synchronous tools run without the multi-threaded runtime.
    let synchronous = match &cli.command {
        Command::Bench(args) => Some(bench::run(args)),
        // Settings are checked here too: the detached supervisor would only find them bad in its own log.
        Command::Up(args) if args.detach && !args.detached_child => {
            Some(settings::infra(&args.infra_args, &file).map_err(usage).and_then(|_| up::detach(args)))
        }
        Command::Up(args) => Some(up::supervise(args, &file, cli.config.as_deref())),
        Command::Down(args) => Some(ops::down(args)),
        Command::Kill(args) => Some(ops::kill(args)),
        Command::Restart(args) => Some(ops::restart(args)),
        Command::Logs(args) => Some(ops::logs(args)),
        Command::Key(args) => Some(ops::key(args)),
        _ => None,
    };
    if let Some(result) = synchronous {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
            Err(e) if e.downcast_ref::<Usage>().is_some() => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // An agent is one event loop that mostly waits: a single-threaded runtime (hundreds of agent processes share two
    // cores, and every idle thread costs); the managers and tools get two workers.
    let builder = match &cli.command {
        Command::Agent(_) | Command::BenchWorker(_) => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        _ => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
    };
    let runtime = match builder {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, file)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(e)) if broken_pipe(&e) => ExitCode::SUCCESS,
        // SIGTERM while still waiting for Kafka or Redis: a clean stop, not a failure.
        Err(Failure::Runtime(e))
            if e.chain().any(|c| {
                matches!(c.downcast_ref::<mesh_node::NodeError>(), Some(mesh_node::NodeError::Interrupted))
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(Failure::Runtime(e)) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
        Err(Failure::NotReady) => ExitCode::FAILURE,
    }
}

/// An error in what the user asked for (a flag, a setting, a deployment file) rather than in carrying it out: the
/// synchronous commands exit with the usage code for it, as the others do.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) anyhow::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Usage {}

/// Marks `e` as bad usage (see [`Usage`]).
pub(crate) fn usage(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Usage(e))
}

/// Output cut short by a closed pipe (`mesh status | head`) is not a failure.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

enum Failure {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
    /// `mesh status`: not every process is READY (already reported on stdout).
    NotReady,
}

/// Whether the user asked for no colour (`NO_COLOR` set and not empty).
pub(crate) fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    // Colour only for a person at a terminal, and never with NO_COLOR (https://no-color.org); a process under the
    // supervisor leaves the time out, since the supervisor stamps every line it logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !no_color();
    let supervised = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text if supervised => builder.without_time().init(),
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Flips the shutdown switch on the first SIGTERM or SIGINT; a second one exits at once.
///
/// The first one also starts [`exit_if_not_stopped`]: the runtimes keep their stop within
/// [`mesh_node::STOP_BUDGET`], but what runs after them (dropping the Kafka clients, whose close talks to the
/// broker) is librdkafka's, and a stop must end even when the broker is the thing that is gone.
fn shutdown_on_signals() -> Result<Shutdown> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, shutdown) = Shutdown::new();
    let mut term = signal(SignalKind::terminate()).context("failed to install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("failed to install the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("stop requested; a second signal exits at once");
        exit_if_not_stopped();
        let _ = tx.send(true);
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        std::process::exit(130);
    });
    Ok(shutdown)
}

/// How long after a stop is requested the process exits whatever it is still waiting for: the runtimes' budget and a
/// margin for closing the clients, below the supervisor's default `stop_timeout` (10 s).
const STOP_DEADLINE: Duration = Duration::from_secs(mesh_node::STOP_BUDGET.as_secs() + 2);

/// Exits with a failure [`STOP_DEADLINE`] from now unless the process has ended by then. A thread of its own, not a
/// task: it must fire even while the runtime's threads are blocked inside librdkafka.
fn exit_if_not_stopped() {
    let spawned = std::thread::Builder::new().name("stop-deadline".into()).spawn(|| {
        std::thread::sleep(STOP_DEADLINE);
        tracing::error!(
            "the stop did not finish within {STOP_DEADLINE:?} (Kafka or Redis unreachable?); exiting without the \
             rest: uncommitted messages are read again and deduplicated"
        );
        std::process::exit(1);
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the stop deadline; the stop waits as long as its clients do");
    }
}

/// How a process reads: at once (agents and the consensus manager answer what they read), or in batches (the
/// topology manager only counts messages into windows of seconds).
#[derive(Clone, Copy)]
enum Reads {
    Prompt,
    Batched,
}

/// The topology manager's fetches wait for this much data, or [`BATCHED_FETCH_WAIT`].
const BATCHED_FETCH_BYTES: u32 = 64 * 1024;

/// At most this late, a batched reader sees a record: small against a decay interval, and against the failure
/// detector's probe interval (`failure_timeout / 40`) at the defaults.
const BATCHED_FETCH_WAIT: std::time::Duration = std::time::Duration::from_millis(20);
/// How often a process serving metrics measures its readers' lag: each measurement is a statistics document
/// librdkafka builds and the client parses, so not every second in each of hundreds of agents.
const LAG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

async fn connect(
    infra: &settings::Infra,
    client: &str,
    reads: Reads,
    producer: ProducerMode,
    shutdown: &Shutdown,
) -> Result<(KafkaBus, AnyStore)> {
    let (fetch_wait, fetch_min_bytes) = match reads {
        Reads::Prompt => (infra.kafka_fetch_wait, 1),
        Reads::Batched => (infra.kafka_fetch_wait.min(BATCHED_FETCH_WAIT), BATCHED_FETCH_BYTES),
    };
    let config = KafkaConfig {
        fetch_wait,
        fetch_min_bytes,
        linger: infra.kafka_linger,
        producer,
        extra: infra.kafka_properties.clone(),
        // Lag is a metric: measured only by a process that serves its metrics.
        lag_interval: infra.metrics_listen.map(|_| LAG_INTERVAL),
        ..KafkaConfig::new(&infra.kafka, client)
    };
    let bus = KafkaBus::new(config).context("failed to set up the kafka client")?;
    // A store that is down is waited for (and reported) like a broker; one that can never work is an error now.
    let store = mesh_node::retry("reaching the store", shutdown, || {
        AnyStore::connect(&infra.redis, infra.redis_ca_file.as_deref())
    })
    .await?;
    Ok((bus, store))
}

/// Says at start, once, that this process's records are neither tagged nor checked.
/// What a manager (topology or consensus) runs with: both start the same way.
struct Manager {
    infra: settings::Infra,
    bus: KafkaBus,
    store: AnyStore,
    shutdown: Shutdown,
    notifier: Notifier,
}

impl Manager {
    /// Resolves the infrastructure (a manager holds the deployment secret, never an agent key), then watches the
    /// signals, serves the metrics and connects, as `client`.
    async fn start(args: &cli::InfraArgs, file: &SettingsFile, client: &str, reads: Reads) -> Result<Self, Failure> {
        let infra = settings::infra(args, file).map_err(Failure::Usage)?;
        if infra.mesh.credentials.agent_key.is_some() {
            return Err(Failure::Usage(anyhow::anyhow!(
                "invalid agent_key_file (--agent-key-file, MESH_AGENT_KEY_FILE): a manager needs the deployment \
                 secret (--secret-file, MESH_SECRET_FILE), not an agent key"
            )));
        }
        warn_if_unauthenticated(&infra);
        let shutdown = shutdown_on_signals().map_err(Failure::Runtime)?;
        let notifier = serve_metrics(&infra, &shutdown).await.map_err(Failure::Usage)?;
        let (bus, store) =
            connect(&infra, client, reads, ProducerMode::Idempotent, &shutdown).await.map_err(Failure::Runtime)?;
        Ok(Self { infra, bus, store, shutdown, notifier })
    }
}

fn warn_if_unauthenticated(infra: &settings::Infra) {
    if !infra.mesh.credentials.authenticated() {
        tracing::warn!(
            "no deployment secret (--secret-file, MESH_SECRET_FILE): records are neither tagged nor checked, so \
             anyone who can write the topics can change the roster, the graph and decisions (`mesh up` makes one)"
        );
    }
}

/// Serves this process's Prometheus metrics where the settings say (if they do), and tells the supervisor where
/// through the notifier returned. An address that cannot be bound is a usage error: another process holds it.
async fn serve_metrics(infra: &settings::Infra, shutdown: &mesh_node::Shutdown) -> anyhow::Result<Notifier> {
    let notifier = Notifier::from_env();
    if let Some(listen) = infra.metrics_listen {
        let bound = infra.mesh.metrics.serve(listen, shutdown).await.with_context(|| {
            format!("invalid metrics_listen (--metrics-listen, MESH_METRICS_LISTEN) {listen}: give a free address")
        })?;
        tracing::info!(address = %bound, "serving Prometheus metrics at http://{bound}/metrics");
        notifier.metrics_at(bound);
    }
    Ok(notifier)
}

async fn run(command: Command, file: SettingsFile) -> Result<(), Failure> {
    let usage = Failure::Usage;
    let runtime = Failure::Runtime;
    match command {
        Command::Agent(args) => {
            let infra = settings::infra(&args.infra, &file).map_err(usage)?;
            let config = settings::agent(&args, &file).map_err(usage)?;
            warn_if_unauthenticated(&infra);
            let mut extra = Vec::new();
            for spec in args.extra_agents.iter().filter(|s| !s.is_empty()) {
                let Some((name, role)) = spec.split_once(':') else {
                    return Err(usage(anyhow::anyhow!(
                        "invalid --extra-agent {spec:?}: write NAME:ROLE, e.g. b0002:fraud"
                    )));
                };
                let more = AgentArgs { name: name.to_owned(), role: role.to_owned(), seed: None, ..args.clone() };
                extra.push(settings::agent(&more, &file).map_err(usage)?);
            }
            if !extra.is_empty() && infra.mesh.credentials.agent_key.is_some() {
                return Err(usage(anyhow::anyhow!(
                    "invalid agent_key_file (--agent-key-file): an agent key is one agent's, and --extra-agent runs                      more; give the deployment secret (--secret-file) or run one agent a process"
                )));
            }
            let shutdown = shutdown_on_signals().map_err(runtime)?;
            let notifier = serve_metrics(&infra, &shutdown).await.map_err(usage)?;
            let (bus, store) = connect(
                &infra,
                &format!("mesh-agent-{}", config.id),
                Reads::Prompt,
                ProducerMode::OneRequestInFlight,
                &shutdown,
            )
            .await
            .map_err(runtime)?;
            if extra.is_empty() {
                return mesh_node::agent::run(bus, store, infra.mesh, config, shutdown, notifier)
                    .await
                    .context("agent failed")
                    .map_err(runtime);
            }
            let configs: Vec<_> = std::iter::once(config).chain(extra).collect();
            let handles = notify::PackedReadiness::split(notifier, configs.len());
            let agents = configs.into_iter().zip(handles).map(|(config, readiness)| {
                let (bus, store, mesh, shutdown) = (bus.clone(), store.clone(), infra.mesh.clone(), shutdown.clone());
                mesh_node::agent::run(bus, store, mesh, config, shutdown, readiness)
            });
            futures::future::try_join_all(agents).await.map(|_| ()).context("agent failed").map_err(runtime)
        }
        Command::Topology(args) => {
            let config = settings::topology(&args, &file).map_err(usage)?;
            let m = Manager::start(&args.infra, &file, "mesh-topology", Reads::Batched).await?;
            mesh_node::topology::run(m.bus, m.store, m.infra.mesh, config, m.shutdown, m.notifier)
                .await
                .context("topology manager failed")
                .map_err(runtime)
        }
        Command::Consensus(args) => {
            let config = settings::consensus(&args, &file).map_err(usage)?;
            let m = Manager::start(&args.infra, &file, "mesh-consensus", Reads::Prompt).await?;
            mesh_node::consensus::run(m.bus, m.store, m.infra.mesh, config, m.shutdown, m.notifier)
                .await
                .context("consensus manager failed")
                .map_err(runtime)
        }
        Command::Inspect(args) => {
            let infra = settings::reader_infra(&args.infra, &file, &args.dir.state_dir).map_err(usage)?;
            inspect::run(&infra, args.json).await.map_err(runtime)
        }
        Command::View(args) => {
            let infra = settings::reader_infra(&args.infra, &file, &args.dir.state_dir).map_err(usage)?;
            // Bound first: a taken address is a usage error, said before anything connects.
            let listener = view::bind(args.listen).await.map_err(usage)?;
            let shutdown = shutdown_on_signals().map_err(runtime)?;
            let (bus, store) = connect(&infra, "mesh-view", Reads::Prompt, ProducerMode::OneRequestInFlight, &shutdown)
                .await
                .map_err(runtime)?;
            let options = view::ViewOptions { refresh: args.refresh, state_dir: args.dir.state_dir.clone() };
            view::run(&infra, bus, store, listener, &options, shutdown).await.map_err(runtime)
        }
        Command::Status(args) => match ops::status(&args).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::NotReady),
            Err(e) => Err(runtime(e)),
        },
        Command::Demo(args) => demo::run(&args).await.map_err(runtime),
        Command::BenchWorker(args) => fleet::worker(&args).await.map_err(runtime),
        Command::Up(_)
        | Command::Down(_)
        | Command::Kill(_)
        | Command::Restart(_)
        | Command::Logs(_)
        | Command::Key(_)
        | Command::Bench(_) => {
            unreachable!("handled synchronously in main")
        }
    }
}
