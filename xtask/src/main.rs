//! Project automation, in plain Rust: `cargo xtask test` provisions what the tests need and runs every check;
//! `cargo xtask chaos` injects faults into a live deployment and checks the mesh's invariants (docs/chaos.md);
//! `cargo xtask infra` runs a real Kafka and Redis for a hand-started deployment; `cargo xtask tidy` checks the
//! repository's rules.

mod chaos;
mod tidy;

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mesh_fixtures::{KafkaBroker, KafkaOptions, LocalKafka, RedisOptions, RedisServer};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the tests need, start a real Kafka and Redis, and run fmt, clippy, every test and the quick
    /// chaos profile.
    Test {
        /// Extra arguments for `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Inject crashes, pauses and partitions into a live mesh, measure recovery and check the invariants.
    ///
    /// Exit code 0 when every scenario passes, 1 when one fails (a lost message, a contradicted decision, an
    /// orphan, a bound exceeded), 2 when one could not be decided. docs/chaos.md explains the report.
    Chaos(chaos::ChaosArgs),
    /// Run a real Kafka and Redis on loopback in the foreground until Ctrl-C.
    Infra {
        /// Kafka client port [default: a free one].
        #[arg(long)]
        kafka_port: Option<u16>,
        /// Redis port [default: a free one].
        #[arg(long)]
        redis_port: Option<u16>,
        /// Kafka nodes: 1 (the default) or a replicated KRaft cluster, e.g. 3 (three replicas per partition, two
        /// in sync; `--kafka-port` is then the first node's port).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
        brokers: u32,
    },
    /// Check the repository's rules (also run by `cargo test`).
    Tidy,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Test { args } => test(&args),
        Cmd::Chaos(args) => {
            let code = chaos::run(&args)?;
            std::process::exit(code)
        }
        Cmd::Infra { kafka_port, redis_port, brokers } => infra(kafka_port, redis_port, brokers),
        Cmd::Tidy => {
            let problems = tidy::check(&tidy::repo_root())?;
            if problems.is_empty() {
                println!("tidy: ok");
                Ok(())
            } else {
                bail!("tidy found {} problem(s):\n{}", problems.len(), problems.join("\n"))
            }
        }
    }
}

/// What a clean `cargo xtask test` writes under the target directory (build, clippy and test artifacts), measured
/// from a fresh clone with line-table debug info, with a margin.
const CLEAN_BUILD_BYTES: u64 = BUILD_NEED_GB * 1_000_000_000;
const BUILD_NEED_GB: u64 = 7;

/// A full disk shows up late and in disguise (the linker dies of SIGBUS writing a test binary, minutes into the
/// build), so the free space of the build's filesystem is printed first, with a warning when it is short.
fn report_free_space() {
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| tidy::repo_root().join("target"), std::path::PathBuf::from);
    let Some(existing) = target.ancestors().find(|p| p.exists()) else { return };
    match nix::sys::statvfs::statvfs(existing) {
        Ok(fs) => {
            let free = fs.blocks_available() * fs.fragment_size();
            eprintln!("    {:.1} GB free for {}", free as f64 / 1e9, target.display());
            if free < CLEAN_BUILD_BYTES {
                eprintln!(
                    "    warning: a clean build writes about {BUILD_NEED_GB} GB there; a full disk shows up as a linker \
                     'Bus error' (free space, or set CARGO_TARGET_DIR to a larger filesystem)"
                );
            }
        }
        Err(e) => eprintln!("    the free space of {} is unknown: {e}", existing.display()),
    }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(tidy::repo_root());
    c
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let start = Instant::now();
    eprintln!("==> {name}");
    let r = f().with_context(|| format!("step failed: {name}"));
    eprintln!("<== {name}: {} in {:.1}s", if r.is_ok() { "ok" } else { "FAILED" }, start.elapsed().as_secs_f64());
    r
}

fn status(what: &str, cmd: &mut Command) -> Result<()> {
    let s = cmd.status().with_context(|| format!("failed to run {what}"))?;
    if !s.success() {
        bail!("{what} exited with {s}");
    }
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    let total = Instant::now();
    report_free_space();
    step("install system packages (redis-server, kcat, JDK, Maven, Prometheus, headless Chromium) if missing", || {
        Ok(mesh_fixtures::ensure_system_packages()?)
    })?;
    step("fetch Apache Kafka jars (cached)", || mesh_fixtures::ensure_kafka_jars().map(|_| ()).map_err(Into::into))?;
    step("cargo fmt --check", || status("cargo fmt", cargo().args(["fmt", "--all", "--check"])))?;
    step("cargo clippy -D warnings", || {
        status("cargo clippy", cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
    })?;
    step("cargo build (tests)", || status("cargo build", cargo().args(["test", "--workspace", "--no-run"])))?;
    let infra = {
        let mut infra = None;
        step("start Kafka and Redis on loopback (MESH_FIXTURES=containers: in containers, given an engine)", || {
            let started = mesh_fixtures::TestInfra::start()?;
            eprintln!("    kafka {} · redis {}", started.kafka(), started.redis());
            infra = Some(started);
            Ok(())
        })?;
        infra.context("infrastructure missing")?
    };
    let mut counts = (0u64, 0u64);
    let result = step("cargo test --workspace", || {
        let mut cmd = cargo();
        cmd.args(["test", "--workspace"])
            .args(extra)
            .env("MESH_TEST_KAFKA", infra.kafka())
            .env("MESH_TEST_REDIS", infra.redis());
        counts = run_counting(&mut cmd)?;
        Ok(())
    });
    drop(infra);
    let result = result.and_then(|()| {
        step("cargo xtask chaos --quick (faults injected into a live deployment, docs/chaos.md)", || match chaos::run(
            &chaos::ChaosArgs::ci(),
        )? {
            0 => Ok(()),
            1 => bail!("chaos: a scenario failed (see the table above; target/chaos/ci/chaos.json replays it)"),
            code => bail!("chaos: a scenario could not be decided (exit {code}); see the table above"),
        })
    });
    let result = result.and_then(|()| {
        step("cargo xtask chaos --quick --brokers 3 --scenario kill-leader-broker (a broker failover)", || {
            match chaos::run(&chaos::ChaosArgs::ci_cluster())? {
                0 => Ok(()),
                1 => bail!("chaos: the failover failed (see the table above; target/chaos/ci-cluster/chaos.json)"),
                code => bail!("chaos: the failover could not be decided (exit {code}); see the table above"),
            }
        })
    });
    let result = result.and_then(|()| {
        step(
            "cargo xtask chaos --quick --hosts 4 --scenario cut-host,kill-host (simulated hosts)",
            || match chaos::run(&chaos::ChaosArgs::ci_hosts())? {
                0 => Ok(()),
                1 => bail!("chaos: a host scenario failed (see the table above; target/chaos/ci-hosts/chaos.json)"),
                code => bail!("chaos: a host scenario could not be decided (exit {code}); see the table above"),
            },
        )
    });
    eprintln!(
        "cargo xtask test: {} in {:.0}s",
        if result.is_ok() { "passed" } else { "FAILED" },
        total.elapsed().as_secs_f64()
    );
    // One closing line for every test binary together (cargo's own last line is a doc-test summary).
    println!("{} passed, {} failed", counts.0, counts.1);
    result
}

/// Runs `cargo test`, echoing its output, and adds up the `N passed; M failed` of every test binary.
fn run_counting(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().context("failed to run cargo test")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (mut passed, mut failed) = (0, 0);
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        let _ = writeln!(out, "{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let number = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim().strip_suffix(word).and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                    })
                    .unwrap_or(0)
            };
            passed += number("passed");
            failed += number("failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        println!("{passed} passed, {failed} failed");
        bail!("cargo test exited with {status}");
    }
    Ok((passed, failed))
}

fn infra(kafka_port: Option<u16>, redis_port: Option<u16>, brokers: u32) -> Result<()> {
    mesh_fixtures::ensure_system_packages()?;
    // One broker, or a cluster; either is held until the signal.
    let kafka = if brokers == 1 {
        LocalKafka::One(Box::new(KafkaBroker::start(KafkaOptions { port: kafka_port, ..KafkaOptions::default() })?))
    } else {
        if kafka_port.is_some() {
            bail!("--kafka-port picks the port of a single broker; with --brokers {brokers} the ports are free ones");
        }
        eprintln!("starting {brokers} Kafka nodes (KRaft, each broker and controller)");
        LocalKafka::start(vec![Vec::new(); usize::try_from(brokers)?])?
    };
    let bootstrap = kafka.bootstrap();
    let redis = RedisServer::start(RedisOptions { port: redis_port, ..RedisOptions::default() })?;
    println!("Kafka {bootstrap} and Redis {} are running on loopback.", redis.url());
    println!("export MESH_KAFKA={bootstrap} MESH_REDIS={}", redis.url());
    println!("Ctrl-C stops both.");
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.thread_block().context("failed to block signals")?;
    let sig = signals.wait().context("failed to wait for a signal")?;
    eprintln!("{sig:?}: stopping Kafka and Redis");
    drop((kafka, redis));
    Ok(())
}
