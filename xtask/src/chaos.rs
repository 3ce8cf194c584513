//! `cargo xtask chaos`: builds the `mesh` binary, derives the schedule (scenario files + seed, or `--replay`),
//! runs it with `mesh_chaos::run` and prints the table. The exit code is the verdict.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use mesh_chaos::deploy::MeshTimings;
use mesh_chaos::scenario;

use crate::tidy::repo_root;

#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// The quick profile (what CI runs): the scenarios marked `quick`, 5 trials each.
    #[arg(long, conflicts_with = "replay")]
    quick: bool,
    /// Trials per scenario [default: 5 with --quick, 20 otherwise].
    #[arg(long, conflicts_with = "replay")]
    trials: Option<u32>,
    /// Only these scenarios (file names without .toml), comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "replay")]
    scenario: Vec<String>,
    /// Seed of the schedule's random choices [default: the clock].
    #[arg(long, conflicts_with = "replay")]
    seed: Option<u64>,
    /// Re-run the schedule recorded in a run's JSON (its `chaos.json`), with the mesh timings it recorded.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// Scenario files [default: fixtures/chaos].
    #[arg(long, value_name = "DIR")]
    scenarios: Option<PathBuf>,
    /// Where the JSON timeline, SVGs and deployment logs go [default: target/chaos/<seed>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Build and run the release binary (slower to build, closer to production).
    #[arg(long)]
    release: bool,
    /// Agent failure timeout in ms (the mesh's own timings are the chaos profile's, see docs/chaos.md).
    #[arg(long, default_value_t = MeshTimings::default().failure_timeout_ms)]
    failure_timeout_ms: u64,
    /// Agent heartbeat interval in ms.
    #[arg(long, default_value_t = MeshTimings::default().heartbeat_ms)]
    heartbeat_ms: u64,
    /// Also write the report as JSON to stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Kafka nodes: 1 (one broker) or 3 (a replicated KRaft cluster, every topic with three replicas and two in
    /// sync). The scenarios that need more nodes than this are left out; with 3 every scenario runs on the
    /// cluster, the leader kill and rolling restart included.
    #[arg(long, default_value_t = 1, conflicts_with = "replay", value_parser = clap::value_parser!(u32).range(1..=5))]
    brokers: u32,
    /// Simulated hosts (Linux network namespaces on a bridge, needs root): the managers on host 1, the agents dealt
    /// over the others, one `mesh up` per host. 1 runs everything in this namespace. The scenarios that need more
    /// hosts are left out; with 4 the host cut and host crash run too.
    #[arg(long, default_value_t = 1, conflicts_with = "replay",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(mesh_chaos::hosts::MAX_HOSTS)))]
    hosts: u32,
}

impl ChaosArgs {
    /// What `cargo xtask test` runs: `--quick` with a fresh seed, reports in target/chaos/ci.
    pub(crate) fn ci() -> Self {
        ChaosArgs {
            quick: true,
            trials: None,
            scenario: Vec::new(),
            seed: None,
            replay: None,
            scenarios: None,
            out: Some(repo_root().join("target").join("chaos").join("ci")),
            release: false,
            failure_timeout_ms: MeshTimings::default().failure_timeout_ms,
            heartbeat_ms: MeshTimings::default().heartbeat_ms,
            json: false,
            brokers: 1,
            hosts: 1,
        }
    }

    /// What `cargo xtask test` runs after [`Self::ci`]: the quick leader kill on a 3-node cluster (the one-broker
    /// run leaves it out), reports in target/chaos/ci-cluster.
    pub(crate) fn ci_cluster() -> Self {
        ChaosArgs {
            scenario: vec!["kill-leader-broker".into()],
            out: Some(repo_root().join("target").join("chaos").join("ci-cluster")),
            brokers: 3,
            ..Self::ci()
        }
    }

    /// What `cargo xtask test` runs last: the quick host scenarios on four simulated hosts (one for the managers,
    /// three for agents), reports in target/chaos/ci-hosts.
    pub(crate) fn ci_hosts() -> Self {
        ChaosArgs {
            scenario: vec!["cut-host".into(), "kill-host".into()],
            out: Some(repo_root().join("target").join("chaos").join("ci-hosts")),
            hosts: 4,
            ..Self::ci()
        }
    }
}

/// Lets a crash of the harness itself leave a core file (where the kernel's `core_pattern` says; `core` in the
/// working directory by default) instead of only an exit code. The harness links librdkafka, which is C: twice a
/// run died of SIGSEGV while the broker was restarted (docs/chaos.md, Limits), and the cause is still unknown.
fn allow_core_dumps() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CORE) {
        let _ = setrlimit(Resource::RLIMIT_CORE, hard, hard);
    }
}

pub(crate) fn run(args: &ChaosArgs) -> Result<i32> {
    allow_core_dumps();
    let root = repo_root();
    mesh_fixtures::ensure_system_packages()?;
    mesh_fixtures::ensure_kafka_jars()?;
    let mut build = crate::cargo();
    build.args(["build", "-p", "mesh"]);
    if args.release {
        build.arg("--release");
    }
    crate::status("cargo build -p mesh", &mut build)?;
    let mesh = root.join("target").join(if args.release { "release" } else { "debug" }).join("mesh");
    let mut recorded_timings = None;
    let schedule = match &args.replay {
        Some(file) => {
            let (schedule, timings) = mesh_chaos::run::read_schedule(file)?;
            recorded_timings = timings;
            schedule
        }
        None => {
            let dir = args.scenarios.clone().unwrap_or_else(|| root.join("fixtures").join("chaos"));
            let mut files = scenario::load_dir(&dir).map_err(anyhow::Error::msg)?;
            if args.quick {
                files.retain(|f| f.quick);
            }
            if !args.scenario.is_empty() {
                if let Some(unknown) = args.scenario.iter().find(|n| !files.iter().any(|f| &&f.name == n)) {
                    bail!(
                        "unknown scenario {unknown:?} (--scenario); known: {}",
                        files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                    );
                }
                files.retain(|f| args.scenario.contains(&f.name));
            }
            let (runnable, need_more): (Vec<_>, Vec<_>) =
                files.into_iter().partition(|f| f.brokers <= args.brokers && f.hosts <= args.hosts);
            files = runnable;
            for f in &need_more {
                eprintln!("chaos: leaving out {} (it needs --brokers {} --hosts {})", f.name, f.brokers, f.hosts);
            }
            if files.is_empty() {
                bail!("no scenario left to run with --brokers {} --hosts {}", args.brokers, args.hosts);
            }
            let trials = args.trials.unwrap_or(if args.quick { 5 } else { 20 });
            if trials == 0 {
                bail!("--trials must be at least 1");
            }
            let seed = args.seed.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
            });
            let profile = if args.quick { "quick" } else { "full" };
            scenario::schedule(&files, trials, seed, profile, args.brokers, args.hosts)
        }
    };
    let out = args.out.clone().unwrap_or_else(|| root.join("target").join("chaos").join(schedule.seed.to_string()));
    // A replay runs the mesh with the timings of the run it replays.
    let timings = recorded_timings.unwrap_or(MeshTimings {
        failure_timeout_ms: args.failure_timeout_ms,
        heartbeat_ms: args.heartbeat_ms,
        ..MeshTimings::default()
    });
    if timings.heartbeat_ms == 0 || timings.failure_timeout_ms <= timings.heartbeat_ms {
        bail!("--failure-timeout-ms must be longer than --heartbeat-ms (and the heartbeat above 0)");
    }
    eprintln!(
        "chaos: {} scenarios, seed {} ({}, {} Kafka node{}, {} host{}), reports in {}",
        schedule.scenarios.len(),
        schedule.seed,
        schedule.profile,
        schedule.brokers,
        if schedule.brokers == 1 { "" } else { "s" },
        schedule.hosts,
        if schedule.hosts == 1 { "" } else { "s" },
        out.display()
    );
    log_to_file(&out)?;
    let opts = mesh_chaos::run::Options { mesh, out: out.clone(), schedule, timings };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let report = runtime.block_on(mesh_chaos::run::run(&opts, &mut |line| eprintln!("{line}")))?;
    eprintln!("\n{}", mesh_chaos::report::table(&report));
    eprintln!("timeline: {} · SVGs: {}", out.join("chaos.json").display(), out.join("svg").display());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(report.exit_code())
}

/// The harness's own log (its Kafka clients' librdkafka warnings among it) goes to `harness.log` in the report
/// directory, filtered by `RUST_LOG` (warnings by default): a failure of the harness's clients, not the mesh's, leaves
/// its evidence next to the report. With `MESH_CHAOS_KAFKA_DEBUG` naming librdkafka debug contexts (for example
/// `fetch,topic,metadata`) and `RUST_LOG=librdkafka=debug`, it holds librdkafka's debug lines too. `cargo xtask test`
/// runs several chaos runs in one process: the subscriber is installed once, and each run points it at its own file.
fn log_to_file(out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("harness.log");
    let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    *HARNESS_LOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(file);
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut installed = Ok(());
    INSTALLED.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
        installed = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(|| HarnessLog)
            .try_init()
            .map_err(|e| anyhow::anyhow!("installing the harness's log: {e}"));
    });
    installed
}

/// The current run's `harness.log`.
static HARNESS_LOG: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Writes to the current run's `harness.log`.
struct HarnessLog;

impl std::io::Write for HarnessLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match HARNESS_LOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            Some(file) => file.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match HARNESS_LOG.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_in_one_process_gets_its_own_harness_log() {
        let root = std::env::temp_dir().join(format!("mesh-xtask-harness-log-{}", std::process::id()));
        let (first, second) = (root.join("first"), root.join("second"));
        log_to_file(&first).expect("first run");
        log_to_file(&second).expect("a second run in the same process");
        assert!(first.join("harness.log").exists() && second.join("harness.log").exists());
        std::fs::remove_dir_all(&root).ok();
    }
}
