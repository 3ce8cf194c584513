//! Scenario files (`fixtures/chaos/*.toml`) and the schedule a run derives from them with its seed. The schedule,
//! not the files, is what a run records and what `--replay` re-runs: every random choice is made once, here.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::proxy::{Direction, Fault};

/// Agents of the default deployment, as process names.
pub const AGENTS: [&str; 4] = ["agent-sales", "agent-support", "agent-inventory", "agent-fraud"];
/// The two managers.
pub const MANAGERS: [&str; 2] = ["topology", "consensus"];

/// Which backend a link fault cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The process's connections to the Kafka broker.
    Kafka,
    /// The process's connections to Redis.
    Redis,
}

impl Backend {
    /// `kafka` or `redis`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kafka => "kafka",
            Backend::Redis => "redis",
        }
    }
}

/// A signal that ends a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a polite stop (the supervisor restarts it, as after any exit it did not ask for).
    Term,
}

/// One fault, fully determined (a scenario's `random` fault is resolved into one of these per trial).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultSpec {
    /// A signal through the supervisor; the restart policy brings the process back.
    Signal {
        /// Process name (`agent-fraud`, `topology`...).
        target: String,
        /// Which signal.
        signal: Ending,
    },
    /// SIGSTOP through the supervisor, SIGCONT after `duration_ms`.
    Pause {
        /// Process name.
        target: String,
        /// How long it stays stopped.
        duration_ms: u64,
    },
    /// SIGKILL the process again each time it is spawned, `kills` times in a row.
    CrashLoop {
        /// Process name.
        target: String,
        /// How many kills.
        kills: u32,
    },
    /// SIGKILL the process, then SIGKILL it again right after it is spawned, before it is READY.
    KillDuringStartup {
        /// Process name.
        target: String,
    },
    /// A fault on the link between one process and one backend, for `duration_ms`.
    Link {
        /// Process name.
        target: String,
        /// Which backend.
        backend: Backend,
        /// What the link does meanwhile.
        fault: Fault,
        /// How long.
        duration_ms: u64,
    },
    /// A link that goes bad and good again `cycles` times.
    Flap {
        /// Process name.
        target: String,
        /// Which backend.
        backend: Backend,
        /// What the link does while bad.
        fault: Fault,
        /// Bad time per cycle.
        down_ms: u64,
        /// Good time per cycle.
        up_ms: u64,
        /// How many cycles.
        cycles: u32,
    },
    /// SIGKILL the Kafka broker, wait `down_ms`, start it again on the same data.
    RestartKafka {
        /// Time without a broker.
        down_ms: u64,
    },
    /// On a cluster: SIGKILL the node that leads the busiest partition of the messages topic (the most records),
    /// wait `down_ms`, start it again on its data. The other nodes take over its partitions once the controller
    /// fences it; nothing acknowledged may be lost (three replicas, two in sync).
    KillLeader {
        /// Time the node stays down.
        down_ms: u64,
    },
    /// On a cluster: stop every node in turn with SIGTERM (a controlled shutdown hands its leaderships over
    /// first), start it again and wait until it serves, `pause_ms` between nodes: how an operator upgrades.
    RollingRestart {
        /// Time between one node serving again and the next one's stop.
        pause_ms: u64,
    },
    /// SIGSTOP redis-server, SIGCONT after `duration_ms`.
    PauseRedis {
        /// How long.
        duration_ms: u64,
    },
    /// SIGSTOP the supervisor (`mesh up`) itself, SIGCONT after `duration_ms`: a supervisor stalled by a slow disk
    /// or a debugger must not stall the processes it supervises.
    PauseSupervisor {
        /// How long.
        duration_ms: u64,
    },
    /// Hostile input under traffic: a record at the broker's size limit on every topic the mesh reads, and forged
    /// verdicts about `target` (a `dead` and a `member` written without credentials, a vote in its name tagged with
    /// another agent's key, a decision contradicting one the consensus manager made). Nothing may change or stall:
    /// every one is dead-lettered or ignored, and messaging goes on.
    HostileInput {
        /// The agent the forgeries are about.
        target: String,
    },
    /// With simulated hosts: cut `host` off the network for `duration_ms` (its link taken down, as a pulled
    /// cable: connections stall, new ones fail), then reconnect it. Its agents are declared dead and rejoin.
    CutHost {
        /// The host (1 runs the managers, 2 and up the agents).
        host: u32,
        /// How long it stays cut off.
        duration_ms: u64,
    },
    /// With simulated hosts: `kill -9` of the host's supervisor. Its processes die with it (each has a parent-death
    /// signal), the rest of the mesh declares its agents dead; after `down_ms` the host's `mesh up` is run again and
    /// they rejoin as themselves.
    KillHost {
        /// The host.
        host: u32,
        /// Time the host stays without its processes.
        down_ms: u64,
    },
    /// Drawn per trial from the seed: a mix of the faults above on random targets.
    Random,
}

impl FaultSpec {
    /// The process the fault is aimed at, if one (`None` for infrastructure faults).
    pub fn target(&self) -> Option<&str> {
        match self {
            FaultSpec::Signal { target, .. }
            | FaultSpec::Pause { target, .. }
            | FaultSpec::CrashLoop { target, .. }
            | FaultSpec::KillDuringStartup { target }
            | FaultSpec::HostileInput { target }
            | FaultSpec::Link { target, .. }
            | FaultSpec::Flap { target, .. } => Some(target),
            FaultSpec::RestartKafka { .. }
            | FaultSpec::KillLeader { .. }
            | FaultSpec::RollingRestart { .. }
            | FaultSpec::PauseRedis { .. }
            | FaultSpec::PauseSupervisor { .. }
            | FaultSpec::CutHost { .. }
            | FaultSpec::KillHost { .. }
            | FaultSpec::Random => None,
        }
    }

    /// One line for tables and timelines.
    pub fn label(&self) -> String {
        match self {
            FaultSpec::Signal { target, signal } => format!("{signal:?} {target}").to_lowercase(),
            FaultSpec::Pause { target, duration_ms } => format!("pause {target} {duration_ms}ms"),
            FaultSpec::CrashLoop { target, kills } => format!("crash-loop {target} x{kills}"),
            FaultSpec::KillDuringStartup { target } => format!("kill {target} during start-up"),
            FaultSpec::Link { target, backend, fault, duration_ms } => {
                format!("{} {target}<->{} {duration_ms}ms", fault.label(), backend.name())
            }
            FaultSpec::Flap { target, backend, fault, cycles, .. } => {
                format!("flap {} {target}<->{} x{cycles}", fault.label(), backend.name())
            }
            FaultSpec::RestartKafka { down_ms } => format!("restart kafka ({down_ms}ms down)"),
            FaultSpec::KillLeader { down_ms } => format!("kill the busiest leader ({down_ms}ms down)"),
            FaultSpec::RollingRestart { pause_ms } => format!("rolling restart ({pause_ms}ms apart)"),
            FaultSpec::PauseRedis { duration_ms } => format!("pause redis {duration_ms}ms"),
            FaultSpec::PauseSupervisor { duration_ms } => format!("pause supervisor {duration_ms}ms"),
            FaultSpec::HostileInput { target } => format!("hostile input about {target}"),
            FaultSpec::CutHost { host, duration_ms } => format!("cut host {host} off {duration_ms}ms"),
            FaultSpec::KillHost { host, down_ms } => format!("kill -9 host {host}'s supervisor ({down_ms}ms down)"),
            FaultSpec::Random => "random".into(),
        }
    }

    /// The simulated host the fault is aimed at, if one.
    pub fn host(&self) -> Option<u32> {
        match self {
            FaultSpec::CutHost { host, .. } | FaultSpec::KillHost { host, .. } => Some(*host),
            _ => None,
        }
    }

    fn validate(&self, scenario: &str) -> Result<(), String> {
        let known = |t: &str| AGENTS.contains(&t) || MANAGERS.contains(&t);
        if let Some(t) = self.target()
            && !known(t)
        {
            return Err(format!(
                "{scenario}: unknown target {t:?}; use one of {}",
                AGENTS.iter().chain(&MANAGERS).copied().collect::<Vec<_>>().join(", ")
            ));
        }
        match self {
            FaultSpec::Link { fault: Fault::Pass, .. } | FaultSpec::Flap { fault: Fault::Pass, .. } => Err(format!(
                "{scenario}: fault mode \"pass\" injects nothing; pick blackhole, reset, refuse, latency or bandwidth"
            )),
            FaultSpec::CrashLoop { kills: 0, .. } | FaultSpec::Flap { cycles: 0, .. } => {
                Err(format!("{scenario}: kills/cycles must be at least 1"))
            }
            FaultSpec::HostileInput { target } if !AGENTS.contains(&target.as_str()) => {
                Err(format!("{scenario}: hostile input is about an agent; use one of {}", AGENTS.join(", ")))
            }
            _ => Ok(()),
        }
    }
}

/// A scenario as written in `fixtures/chaos/NAME.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short name (the file name without `.toml`).
    pub name: String,
    /// What it does and what the mesh should show.
    pub description: String,
    /// Part of the quick profile (`cargo xtask chaos --quick`, run by CI).
    #[serde(default)]
    pub quick: bool,
    /// Kafka nodes the scenario needs (`cargo xtask chaos --brokers N` runs the scenarios that need at most N).
    #[serde(default = "one")]
    pub brokers: u32,
    /// Simulated hosts the scenario needs (`cargo xtask chaos --hosts N` runs the scenarios that need at most N).
    #[serde(default = "one")]
    pub hosts: u32,
    /// The fault of every trial.
    pub fault: FaultSpec,
}

fn one() -> u32 {
    1
}

impl ScenarioFile {
    fn validate(&self) -> Result<(), String> {
        self.fault.validate(&self.name)?;
        let on_a_cluster = matches!(self.fault, FaultSpec::KillLeader { .. } | FaultSpec::RollingRestart { .. });
        if on_a_cluster && self.brokers < 3 {
            return Err(format!(
                "{}: a leader kill or rolling restart needs a cluster that survives losing a node; set brokers = 3",
                self.name
            ));
        }
        if let Some(host) = self.fault.host()
            && !(self.hosts >= 2 && (1..=self.hosts).contains(&host))
        {
            return Err(format!(
                "{}: a host fault needs simulated hosts and a host among them; set hosts = 4 (or more) and host = 2",
                self.name
            ));
        }
        Ok(())
    }
}

/// Reads every `*.toml` of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<ScenarioFile>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        let s: ScenarioFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        if s.name != stem {
            return Err(format!("{}: name {:?} differs from the file name {stem:?}", p.display(), s.name));
        }
        s.validate().map_err(|e| format!("{}: {e}", p.display()))?;
        out.push(s);
    }
    if out.is_empty() {
        return Err(format!("no scenario files (*.toml) in {}", dir.display()));
    }
    Ok(out)
}

/// One trial: a pause, then one fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialPlan {
    /// Quiet time before the injection.
    pub settle_ms: u64,
    /// The fault.
    pub fault: FaultSpec,
}

/// One scenario's trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioPlan {
    /// Scenario name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// The trials, in order.
    pub trials: Vec<TrialPlan>,
}

/// Everything a run will do, derived once from the seed: what `--replay` reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// The seed the choices came from.
    pub seed: u64,
    /// `quick` or `full`.
    pub profile: String,
    /// Kafka nodes the run starts (1: one broker; 3: a replicated cluster).
    #[serde(default = "one")]
    pub brokers: u32,
    /// Simulated hosts (network namespaces) the deployment is spread over; 1: none, all in the harness's.
    #[serde(default = "one")]
    pub hosts: u32,
    /// The scenarios, in order.
    pub scenarios: Vec<ScenarioPlan>,
}

/// Builds the schedule: `trials` trials of each scenario, random faults drawn and settle times jittered from `seed`.
pub fn schedule(files: &[ScenarioFile], trials: u32, seed: u64, profile: &str, brokers: u32, hosts: u32) -> Schedule {
    let mut rng = StdRng::seed_from_u64(seed);
    let scenarios = files
        .iter()
        .map(|f| ScenarioPlan {
            name: f.name.clone(),
            description: f.description.clone(),
            trials: (0..trials)
                .map(|_| TrialPlan {
                    settle_ms: rng.random_range(500..1_500),
                    fault: match &f.fault {
                        FaultSpec::Random => random_fault(&mut rng),
                        other => other.clone(),
                    },
                })
                .collect(),
        })
        .collect();
    Schedule { seed, profile: profile.to_owned(), brokers, hosts, scenarios }
}

fn random_fault(rng: &mut StdRng) -> FaultSpec {
    let agent = AGENTS[rng.random_range(0..AGENTS.len())].to_owned();
    let any = if rng.random_bool(0.25) { MANAGERS[rng.random_range(0..2)].to_owned() } else { agent.clone() };
    match rng.random_range(0..6) {
        0 => FaultSpec::Signal { target: any, signal: Ending::Kill },
        1 => FaultSpec::Signal { target: any, signal: Ending::Term },
        2 => FaultSpec::Pause { target: agent, duration_ms: rng.random_range(500..4_000) },
        3 => FaultSpec::Link {
            target: any,
            backend: Backend::Kafka,
            fault: [
                Fault::Blackhole { direction: Direction::Both },
                Fault::Blackhole { direction: Direction::ToServer },
                Fault::Blackhole { direction: Direction::ToClient },
                Fault::Reset,
                Fault::Refuse,
            ][rng.random_range(0..5)],
            duration_ms: rng.random_range(500..4_000),
        },
        4 => FaultSpec::Link {
            target: any,
            backend: Backend::Redis,
            fault: if rng.random_bool(0.5) { Fault::Blackhole { direction: Direction::Both } } else { Fault::Refuse },
            duration_ms: rng.random_range(500..4_000),
        },
        _ => FaultSpec::Link {
            target: agent,
            backend: Backend::Kafka,
            fault: Fault::Latency { delay_ms: rng.random_range(50..400), jitter_ms: 50 },
            duration_ms: rng.random_range(1_000..3_000),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(fault: FaultSpec) -> ScenarioFile {
        ScenarioFile { name: "s".into(), description: String::new(), quick: true, brokers: 1, hosts: 1, fault }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let files = [file(FaultSpec::Random)];
        let a = schedule(&files, 20, 7, "quick", 1, 1);
        assert_eq!(a, schedule(&files, 20, 7, "quick", 1, 1));
        assert_ne!(a, schedule(&files, 20, 8, "quick", 1, 1));
        assert!(a.scenarios[0].trials.iter().all(|t| t.fault != FaultSpec::Random), "random faults are resolved");
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(serde_json::from_str::<Schedule>(&json).expect("read back"), a, "a schedule survives its file");
    }

    #[test]
    fn scenario_files_read_and_bad_ones_name_the_problem() {
        let s: ScenarioFile = toml::from_str(
            "name = \"x\"\ndescription = \"d\"\n[fault]\nkind = \"link\"\ntarget = \"agent-fraud\"\nbackend = \"kafka\"\n\
             duration_ms = 3000\nfault = { mode = \"blackhole\", direction = \"to-client\" }\n",
        )
        .expect("toml");
        assert_eq!(s.fault.label(), "blackhole-to-client agent-fraud<->kafka 3000ms");
        let bad = FaultSpec::Signal { target: "agent-nobody".into(), signal: Ending::Kill };
        assert!(bad.validate("x").expect_err("unknown").contains("agent-fraud"));
        let pass =
            FaultSpec::Link { target: "topology".into(), backend: Backend::Redis, fault: Fault::Pass, duration_ms: 1 };
        assert!(pass.validate("x").is_err());
        assert!(
            toml::from_str::<ScenarioFile>(
                "name = \"x\"\ndescription = \"d\"\nsurprise = 1\n[fault]\nkind = \"random\""
            )
            .is_err()
        );
        let leader: ScenarioFile =
            toml::from_str("name = \"x\"\ndescription = \"d\"\n[fault]\nkind = \"kill-leader\"\ndown_ms = 6000\n")
                .expect("toml");
        assert_eq!(leader.brokers, 1, "one broker unless the file says otherwise");
        assert!(leader.validate().expect_err("needs a cluster").contains("brokers = 3"));
        assert!(ScenarioFile { brokers: 3, ..leader }.validate().is_ok());
        let cut: ScenarioFile = toml::from_str(
            "name = \"x\"\ndescription = \"d\"\n[fault]\nkind = \"cut-host\"\nhost = 2\nduration_ms = 4000\n",
        )
        .expect("toml");
        assert!(cut.validate().expect_err("needs hosts").contains("hosts = 4"));
        assert!(ScenarioFile { hosts: 4, ..cut.clone() }.validate().is_ok());
        let beyond = ScenarioFile { hosts: 4, fault: FaultSpec::KillHost { host: 5, down_ms: 1 }, ..cut };
        assert!(beyond.validate().is_err(), "host 5 of 4");
    }

    #[test]
    fn the_scenarios_in_the_repository_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/chaos");
        let files = load_dir(&dir).expect("valid scenario files");
        assert!(files.iter().any(|f| f.quick), "a quick profile exists");
        assert!(files.len() >= 10, "{}", files.len());
    }
}
