//! The run's plan: the options validated and turned into rates, pacing and names, before anything starts. Pure (no
//! clock, no files, no processes), so every flag's check and every derived figure is tested here; the other
//! modules take a [`Plan`] and never look at the options again.

use std::path::PathBuf;
use std::time::Duration;

use mesh_node::infrastructure::{KafkaSource, StoreSource};

use super::error::OptionsError;
use super::options::Options;

/// Offered rates of the peak search (`--rate max`), in messages per second: the mesh is tried until it no longer
/// sustains a rate, the baseline on until it does not either.
pub(crate) const PEAK_RATES: [f64; 9] =
    [1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 40_000.0, 80_000.0, 160_000.0, 320_000.0];

/// Roles of the e-commerce scenario, dealt round-robin; all but support make proposals.
pub(crate) const ROLES: [&str; 4] = ["sales", "support", "inventory", "fraud"];
const PROPOSING_SHARE: f64 = 0.75;

/// How long a broker this run started is warmed up by default.
const DEFAULT_BROKER_WARMUP: Duration = Duration::from_secs(30);

/// Task rate per agent and proposal spacing for `offered` messages per second (every task is answered: two
/// messages per task) and `proposals_per_s` proposals in total.
pub(crate) fn paced(agents: usize, offered: f64, proposals_per_s: f64) -> (f64, u32) {
    #[expect(clippy::cast_precision_loss, reason = "agent counts are small")]
    let n = agents.max(1) as f64;
    let task_rate = offered / 2.0 / n;
    let proposal_every = if proposals_per_s == 0.0 {
        0
    } else {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "rounded, at least 1")]
        let every = (n * PROPOSING_SHARE * task_rate / proposals_per_s).round().max(1.0) as u32;
        every
    };
    (task_rate, proposal_every)
}

/// Everything the run needs, validated.
#[derive(Clone)]
pub(crate) struct Plan {
    pub(crate) agents: usize,
    pub(crate) agents_per_process: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    /// Plain traffic before anything is measured, to warm the broker's JVM.
    pub(crate) broker_warmup: Duration,
    pub(crate) ramp_timeout: Duration,
    pub(crate) offered_msgs_per_s: f64,
    pub(crate) task_rate: f64,
    pub(crate) proposals_per_s: f64,
    pub(crate) proposal_every: u32,
    pub(crate) partitions: u32,
    pub(crate) decay_interval: Duration,
    pub(crate) prefix: String,
    /// As given until the run resolves it against the current directory.
    pub(crate) state_dir: PathBuf,
    pub(crate) cores: usize,
    /// `--rate max`: step the rate up instead of one run.
    pub(crate) peak_search: bool,
    /// Worker processes of the N-process baseline (0 or 1: none).
    pub(crate) baseline_processes: usize,
    /// Niceness of the client processes (agents, baseline workers).
    pub(crate) client_nice: i8,
    /// The CPU cgroup they start in, once the run has made it (docs/bench.md).
    pub(crate) client_cgroup: Option<PathBuf>,
    /// A run with no traffic after the traffic run, for the idle cost.
    pub(crate) idle_phase: bool,
    /// CPU profiles over the measured window.
    pub(crate) profile: bool,
    /// Wait for the idle full mesh to be pruned after the window.
    pub(crate) probe_pruning: bool,
}

fn parse_duration(flag: &'static str, text: &str) -> Result<Duration, OptionsError> {
    humantime::parse_duration(text).map_err(|reason| OptionsError::Duration { flag, text: text.to_owned(), reason })
}

impl Plan {
    /// The plan of a run started at `started_at_ms` on a machine of `cores` cores.
    pub(crate) fn new(opts: &Options, started_at_ms: u64, cores: usize) -> Result<Self, OptionsError> {
        if opts.agents < 2 {
            return Err(OptionsError::Agents { agents: opts.agents });
        }
        if opts.agents_per_process == 0 || opts.agents_per_process > opts.agents {
            return Err(OptionsError::AgentsPerProcess { given: opts.agents_per_process });
        }
        // Only a Kafka started here can be sized; simulated hosts reach a Kafka and a Redis started here.
        let infra = opts.infrastructure();
        if opts.brokers > 1 && infra.kafka != KafkaSource::Local {
            return Err(OptionsError::Brokers { brokers: opts.brokers });
        }
        if opts.hosts > 1 && (infra.kafka != KafkaSource::Local || infra.store != StoreSource::Local) {
            return Err(OptionsError::Hosts { hosts: opts.hosts });
        }
        let duration = parse_duration("--duration", &opts.duration)?;
        if duration < Duration::from_secs(1) {
            return Err(OptionsError::TooShort { text: opts.duration.clone() });
        }
        #[expect(clippy::cast_precision_loss, reason = "agent counts are small")]
        let n = opts.agents as f64;
        let (offered, peak_search) = match opts.rate.as_deref() {
            None => (20.0 * n, false),
            Some("max") => (PEAK_RATES[0], true),
            Some(text) => match text.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 => (r, false),
                _ => return Err(OptionsError::Rate { text: text.to_owned() }),
            },
        };
        if !(opts.proposals_per_sec.is_finite() && opts.proposals_per_sec >= 0.0) {
            return Err(OptionsError::ProposalsPerSec { value: opts.proposals_per_sec });
        }
        let (task_rate, proposal_every) = paced(opts.agents, offered, opts.proposals_per_sec);
        let partitions = opts.messages_partitions.unwrap_or_else(|| u32::try_from(opts.agents.max(8)).unwrap_or(8));
        if partitions == 0 {
            return Err(OptionsError::Partitions);
        }
        Ok(Self {
            agents: opts.agents,
            agents_per_process: opts.agents_per_process,
            duration,
            warmup: parse_duration("--warmup", &opts.warmup)?,
            broker_warmup: match &opts.broker_warmup {
                Some(text) => parse_duration("--broker-warmup", text)?,
                // Only a broker this run starts is known to be cold.
                None if infra.kafka == KafkaSource::Local => DEFAULT_BROKER_WARMUP,
                None => Duration::ZERO,
            },
            ramp_timeout: parse_duration("--ramp-timeout", &opts.ramp_timeout)?,
            offered_msgs_per_s: offered,
            task_rate,
            proposals_per_s: opts.proposals_per_sec,
            proposal_every,
            partitions,
            decay_interval: parse_duration("--decay-interval", &opts.decay_interval)?,
            prefix: format!("meshbench-{}", started_at_ms / 1000),
            state_dir: opts.state_dir.clone(),
            cores,
            peak_search,
            baseline_processes: opts
                .baseline_processes
                .unwrap_or_else(|| opts.agents.div_ceil(opts.agents_per_process.max(1))),
            client_nice: opts.client_nice,
            client_cgroup: None,
            idle_phase: opts.idle,
            profile: opts.profile,
            probe_pruning: !peak_search,
        })
    }

    /// The same run at another offered rate, under its own topic prefix (a step of the peak search, or the idle
    /// run at rate 0).
    pub(crate) fn at_rate(&self, offered: f64, tag: &str) -> Plan {
        let (task_rate, proposal_every) =
            if offered > 0.0 { paced(self.agents, offered, self.proposals_per_s) } else { (0.0, 0) };
        Plan {
            offered_msgs_per_s: offered,
            task_rate,
            proposal_every,
            prefix: format!("{}-{tag}", self.prefix),
            ..self.clone()
        }
    }

    /// One step of the peak search at `rate`: short windows, since a 10 s window let one stall of a few hundred ms
    /// (a fresh deployment's first seconds) decide a step's p99.
    pub(crate) fn peak_step(&self, rate: f64) -> Plan {
        Plan {
            warmup: self.warmup.min(Duration::from_secs(10)),
            duration: self.duration.min(Duration::from_secs(20)),
            ..self.at_rate(rate, &format!("r{rate:.0}"))
        }
    }

    pub(crate) fn agent_name(i: usize) -> String {
        format!("b{i:04}")
    }

    pub(crate) fn agent_processes(&self) -> usize {
        self.agents.div_ceil(self.agents_per_process)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mesh_node::infrastructure::InfraKind;

    use crate::engine::options::MeshBinary;

    /// The options of `mesh bench` with no flags (the defaults its `--help` shows).
    pub(crate) fn defaults() -> Options {
        Options {
            agents: 500,
            agents_per_process: 1,
            duration: "30s".into(),
            warmup: "10s".into(),
            broker_warmup: None,
            rate: None,
            baseline_processes: None,
            client_nice: 19,
            client_cgroup: true,
            idle: false,
            profile: false,
            proposals_per_sec: 2.0,
            messages_partitions: None,
            decay_interval: "5s".into(),
            ramp_timeout: "300s".into(),
            infra: None,
            brokers: 1,
            hosts: 1,
            kafka: None,
            redis: None,
            baseline_only: false,
            no_baseline: false,
            json: None,
            report: None,
            compare: None,
            state_dir: ".mesh-bench".into(),
            binary: MeshBinary {
                program: "mesh".into(),
                version: "0".into(),
                fetch_wait: Duration::from_millis(500),
                embedded_fetch_wait: "10ms".into(),
            },
        }
    }

    pub(crate) fn plan(opts: &Options) -> Result<Plan, OptionsError> {
        Plan::new(opts, 1_764_000_000_123, 2)
    }

    #[test]
    fn the_plan_offers_the_rate_as_answered_tasks_and_paces_proposals() {
        let plan = plan(&defaults()).expect("plan");
        assert!((plan.offered_msgs_per_s - 10_000.0).abs() < 1e-9, "20 msg/s per agent by default");
        assert!((plan.task_rate - 10.0).abs() < 1e-9, "half of the messages are tasks");
        // 500 agents * 0.75 proposing * 10 tasks/s / 2 proposals/s.
        assert_eq!(plan.proposal_every, 1875);
        assert_eq!(plan.partitions, 500);
        assert_eq!(plan.prefix, "meshbench-1764000000");
        assert_eq!(plan.baseline_processes, 500, "one baseline worker per agent process");
        assert!(plan.probe_pruning && !plan.peak_search);
    }

    #[test]
    fn pacing_halves_the_rate_into_tasks_and_spaces_proposals_over_the_proposing_roles() {
        let (task_rate, every) = paced(4, 1_000.0, 2.0);
        assert!((task_rate - 125.0).abs() < 1e-9);
        // 4 agents * 0.75 * 125 tasks/s / 2 proposals/s = 187.5, rounded.
        assert_eq!(every, 188);
        assert_eq!(paced(4, 1_000.0, 0.0).1, 0, "no proposals");
        assert_eq!(paced(2, 2.0, 1_000.0).1, 1, "at least every task");
        assert!((paced(0, 10.0, 1.0).0 - 5.0).abs() < 1e-9, "no agents counts as one");
    }

    #[test]
    fn bad_flags_name_the_flag_and_the_fix() {
        let with = |f: &dyn Fn(&mut Options)| {
            let mut o = defaults();
            f(&mut o);
            o
        };
        for (opts, needle) in [
            (with(&|o| o.agents = 1), "--agents 1"),
            (with(&|o| o.agents_per_process = 0), "--agents-per-process 0"),
            (with(&|o| o.agents_per_process = 501), "--agents-per-process 501"),
            (with(&|o| o.duration = "soon".into()), "invalid --duration \"soon\": "),
            (with(&|o| o.duration = "500ms".into()), "measure for at least 1s"),
            (with(&|o| o.warmup = "xx".into()), "--warmup"),
            (with(&|o| o.rate = Some("0".into())), "--rate"),
            (with(&|o| o.rate = Some("fast".into())), "--rate"),
            (with(&|o| o.proposals_per_sec = -1.0), "--proposals-per-sec -1"),
            (with(&|o| o.proposals_per_sec = f64::NAN), "--proposals-per-sec"),
            (with(&|o| o.messages_partitions = Some(0)), "--messages-partitions 0"),
            (
                with(&|o| {
                    o.brokers = 3;
                    o.infra = Some(InfraKind::Embedded);
                }),
                "--brokers 3",
            ),
            (
                with(&|o| {
                    o.brokers = 3;
                    o.kafka = Some("127.0.0.1:9092".into());
                    o.redis = Some("redis://127.0.0.1".into());
                }),
                "--brokers 3",
            ),
            (
                with(&|o| {
                    o.hosts = 3;
                    o.infra = Some(InfraKind::Embedded);
                }),
                "--hosts 3",
            ),
        ] {
            let err = plan(&opts).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        let mut local = defaults();
        local.brokers = 3;
        local.hosts = 3;
        assert!(plan(&local).is_ok(), "the default infrastructure is local");
        local.infra = Some(InfraKind::Local);
        local.kafka = Some("127.0.0.1:9092".into());
        assert!(plan(&local).is_ok(), "--infra local wins over a --kafka");
        let mut given_redis = defaults();
        given_redis.redis = Some("redis://127.0.0.1".into());
        given_redis.brokers = 3;
        assert!(plan(&given_redis).is_ok(), "a local Kafka beside a given Redis can be sized");
        given_redis.hosts = 3;
        let err = plan(&given_redis).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("--hosts 3"), "simulated hosts reach only a Redis the run starts: {err}");
    }

    #[test]
    fn only_a_broker_the_run_starts_is_warmed_up_by_default() {
        assert_eq!(plan(&defaults()).expect("plan").broker_warmup, DEFAULT_BROKER_WARMUP);
        let mut embedded = defaults();
        embedded.infra = Some(InfraKind::Embedded);
        assert_eq!(plan(&embedded).expect("plan").broker_warmup, Duration::ZERO);
        let mut given = defaults();
        given.kafka = Some("127.0.0.1:9092".into());
        given.redis = Some("redis://127.0.0.1".into());
        assert_eq!(plan(&given).expect("plan").broker_warmup, Duration::ZERO);
        given.broker_warmup = Some("2s".into());
        assert_eq!(plan(&given).expect("plan").broker_warmup, Duration::from_secs(2));
    }

    #[test]
    fn a_rate_of_max_searches_from_the_first_peak_rate_without_the_pruning_wait() {
        let mut opts = defaults();
        opts.rate = Some("max".into());
        let plan = plan(&opts).expect("plan");
        assert!(plan.peak_search && !plan.probe_pruning);
        assert!((plan.offered_msgs_per_s - PEAK_RATES[0]).abs() < 1e-9);
        let step = plan.peak_step(40_000.0);
        assert_eq!(step.prefix, "meshbench-1764000000-r40000");
        assert_eq!((step.warmup, step.duration), (Duration::from_secs(10), Duration::from_secs(20)));
        assert!((step.task_rate - 40.0).abs() < 1e-9, "40,000 msg/s over 500 agents, half of them tasks");
        let mut short = defaults();
        short.duration = "5s".into();
        short.warmup = "1s".into();
        let step = self::plan(&short).expect("plan").peak_step(1_000.0);
        assert_eq!((step.warmup, step.duration), (Duration::from_secs(1), Duration::from_secs(5)), "never longer");
    }

    #[test]
    fn the_idle_run_offers_nothing_under_its_own_prefix() {
        let plan = plan(&defaults()).expect("plan");
        let idle = plan.at_rate(0.0, "idle");
        assert_eq!((idle.task_rate, idle.proposal_every), (0.0, 0));
        assert_eq!(idle.prefix, "meshbench-1764000000-idle");
        assert_eq!(idle.agents, plan.agents);
    }

    #[test]
    fn packed_agents_need_fewer_processes_and_baseline_workers() {
        let mut opts = defaults();
        opts.agents = 25;
        opts.agents_per_process = 10;
        let plan = plan(&opts).expect("plan");
        assert_eq!(plan.agent_processes(), 3);
        assert_eq!(plan.baseline_processes, 3);
        assert_eq!(plan.partitions, 25);
        opts.agents = 4;
        opts.agents_per_process = 1;
        assert_eq!(self::plan(&opts).expect("plan").partitions, 8, "at least 8 partitions");
        assert_eq!(Plan::agent_name(7), "b0007");
    }
}
