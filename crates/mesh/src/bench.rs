//! `mesh bench`: the flags, read into the engine's options, and the call. The engine (`mesh_bench::engine`) does the
//! run: infrastructure, the mesh through the supervisor, measurement, the plain-Kafka baselines, the report;
//! docs/bench.md explains each figure and the JSON schema. Here only what the binary alone knows is added (its own
//! path, its version, the settings' fetch waits), and the engine's errors meet the binary's exit codes: a flag the
//! engine refuses is a usage error (exit 2), anything else a failure of the run (exit 1).

use anyhow::{Context, Result};
use mesh_bench::engine::{self, MeshBinary, Options};

use crate::cli::{BenchArgs, InfraMode};

/// The engine's options for `args`, with what only this binary knows.
fn options(args: &BenchArgs, binary: MeshBinary) -> Options {
    Options {
        agents: args.agents,
        agents_per_process: args.agents_per_process,
        duration: args.duration.clone(),
        warmup: args.warmup.clone(),
        broker_warmup: args.broker_warmup.clone(),
        rate: args.rate.clone(),
        baseline_processes: args.baseline_processes,
        client_nice: args.client_nice,
        client_cgroup: !args.no_client_cgroup,
        idle: args.idle,
        profile: args.profile,
        proposals_per_sec: args.proposals_per_sec,
        messages_partitions: args.messages_partitions,
        decay_interval: args.decay_interval.clone(),
        ramp_timeout: args.ramp_timeout.clone(),
        infra: args.infra.map(InfraMode::kind),
        brokers: args.brokers,
        hosts: args.hosts,
        kafka: args.kafka.clone(),
        redis: args.redis.clone(),
        baseline_only: args.baseline,
        no_baseline: args.no_baseline,
        json: args.json.clone(),
        report: args.report.clone(),
        compare: args.compare.clone(),
        state_dir: args.state_dir.clone(),
        binary,
    }
}

/// Runs `mesh bench`.
pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    let binary = MeshBinary {
        program: std::env::current_exe().context("failed to locate the mesh binary")?,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        fetch_wait: crate::settings::DEFAULT_FETCH_WAIT,
        embedded_fetch_wait: crate::settings::EMBEDDED_FETCH_WAIT.to_owned(),
    };
    engine::run(&options(args, binary)).map_err(|e| match e {
        engine::Error::Options(refused) => crate::usage(anyhow::Error::new(refused)),
        other => anyhow::Error::new(other),
    })
}

#[cfg(test)]
mod tests {
    use mesh_node::infrastructure::InfraKind;

    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser;
        let mut argv = vec!["mesh", "bench"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::try_parse_from(argv).expect("parse").command {
            crate::cli::Command::Bench(a) => a,
            _ => unreachable!("bench"),
        }
    }

    #[test]
    fn a_flag_the_engine_refuses_is_a_usage_error_before_anything_starts() {
        let dir = std::env::temp_dir().join(format!("mesh-bench-usage-{}", std::process::id()));
        for argv in [
            &["--agents", "1"][..],
            &["--duration", "soon"],
            &["--rate", "0"],
            &["--brokers", "3", "--infra", "embedded"],
        ] {
            let mut argv = argv.to_vec();
            let state = dir.display().to_string();
            argv.extend(["--state-dir", &state]);
            let err = run(&args(&argv)).expect_err("refused");
            assert!(err.downcast_ref::<crate::Usage>().is_some(), "{argv:?}: {err:#}");
            assert!(err.to_string().contains(argv[0]), "{argv:?}: {err:#}");
        }
        assert!(!dir.exists(), "nothing was written");
    }

    #[test]
    fn the_flags_defaults_reach_the_engine_as_given() {
        let binary = MeshBinary {
            program: "mesh".into(),
            version: "0".into(),
            fetch_wait: crate::settings::DEFAULT_FETCH_WAIT,
            embedded_fetch_wait: crate::settings::EMBEDDED_FETCH_WAIT.to_owned(),
        };
        let o = options(&args(&["--infra", "embedded", "--baseline"]), binary);
        assert_eq!((o.agents, o.agents_per_process, o.brokers, o.hosts), (500, 1, 1, 1));
        assert_eq!((o.duration.as_str(), o.warmup.as_str(), o.decay_interval.as_str()), ("30s", "10s", "5s"));
        assert_eq!(o.ramp_timeout, "300s");
        assert_eq!(o.infra, Some(InfraKind::Embedded));
        assert!(o.baseline_only && !o.no_baseline);
        assert!((o.proposals_per_sec - 2.0).abs() < 1e-12);
        assert_eq!(o.state_dir, std::path::Path::new(".mesh-bench"));
        assert_eq!((o.client_nice, o.client_cgroup), (19, true));
    }

    #[test]
    fn nice_and_the_cgroups_are_turned_off_apart() {
        let binary = || MeshBinary {
            program: "mesh".into(),
            version: "0".into(),
            fetch_wait: crate::settings::DEFAULT_FETCH_WAIT,
            embedded_fetch_wait: crate::settings::EMBEDDED_FETCH_WAIT.to_owned(),
        };
        let o = options(&args(&["--client-nice", "0"]), binary());
        assert_eq!((o.client_nice, o.client_cgroup), (0, true));
        let o = options(&args(&["--no-client-cgroup"]), binary());
        assert_eq!((o.client_nice, o.client_cgroup), (19, false));
    }
}
