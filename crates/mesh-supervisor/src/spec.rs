//! What to run: the deployment file (`mesh.toml`), or the built-in six-process default of the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::restart::{RestartMode, RestartPolicy};
use serde::{Deserialize, Serialize};

/// Why a deployment file was refused; each message names the process and field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("invalid deployment file {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A semantic problem.
    #[error("invalid deployment: {0}")]
    Invalid(String),
}

/// One supervised process.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// Unique name (`topology`, `agent-sales`...), used by `mesh kill NAME` and for the log file.
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Processes that must be READY before this one starts (and that stop after it).
    pub depends_on: Vec<String>,
    /// When and how fast to restart.
    pub restart: RestartPolicy,
    /// Whether the process speaks sd_notify (`READY=1`); if not, it is READY as soon as it runs.
    pub notify: bool,
    /// A process not READY this long after spawning is killed and counted as a failure.
    pub ready_timeout: Duration,
    /// Grace between SIGTERM and SIGKILL when stopping.
    pub stop_timeout: Duration,
    /// If set, the process must send `WATCHDOG=1` at least this often once READY, or it is treated as hung.
    pub watchdog: Option<Duration>,
    /// For processes that do not speak sd_notify (a Kafka broker, redis-server): READY once this address accepts
    /// a TCP connection.
    pub ready_tcp: Option<std::net::SocketAddr>,
    /// Scheduling niceness to start it at (-20..=19, as `nice(1)`; `None` inherits the supervisor's). Hundreds of
    /// client processes on the machine that also runs the broker starve the broker's threads of CPU unless they
    /// yield to it (`mesh bench` starts its agents at 19).
    pub nice: Option<i8>,
    /// A cgroup directory to start it in (it must exist and its `cgroup.procs` be writable; `None`: the
    /// supervisor's own). Niceness only orders threads within one scheduling group (with autogroup, within one
    /// session), so a CPU share that holds against every other process on the machine needs a cgroup: `mesh bench`
    /// starts its agents in one, beside another that holds the broker.
    pub cgroup: Option<PathBuf>,
}

/// The whole deployment, in a valid start order.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentSpec {
    /// Processes, ordered so that each comes after everything it depends on.
    pub processes: Vec<ProcessSpec>,
}

/// A deployment file as written: what `mesh bench` and `cargo xtask chaos` generate (through
/// [`DeploymentFile::to_toml`], never by hand) and what [`DeploymentSpec::parse`] reads and validates. Durations are
/// text (`"10s"`, `"200ms"`), as in the file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentFile {
    /// The `[[process]]` tables.
    #[serde(default, rename = "process")]
    pub processes: Vec<FileProcess>,
}

/// One `[[process]]` of a [`DeploymentFile`]; an absent field takes its default (docs/supervisor.md).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileProcess {
    /// Unique name.
    pub name: String,
    /// Program and arguments (`mesh` means the supervisor's own binary).
    pub command: Vec<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Processes that must be READY first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Restart mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartMode>,
    /// Whether it speaks sd_notify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<bool>,
    /// Time to READY before it counts as failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<String>,
    /// Grace between SIGTERM and SIGKILL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<String>,
    /// Longest silence between `WATCHDOG=1` pings once READY.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<String>,
    /// READY once this address accepts a connection (for processes without sd_notify).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_tcp: Option<String>,
    /// Scheduling niceness, -20..=19.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nice: Option<i32>,
    /// An existing cgroup directory to start it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// First restart delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_backoff: Option<String>,
    /// Longest restart delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<String>,
    /// Running this long resets the backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_after: Option<String>,
    /// Restarts allowed within `restart_window` before the process is FAILED.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// The window `max_restarts` counts in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_window: Option<String>,
}

impl DeploymentFile {
    /// The file's text, with `comment` as its first line (who wrote it).
    pub fn to_toml(&self, comment: &str) -> Result<String, SpecError> {
        let body = toml::to_string(self).map_err(|e| SpecError::Invalid(format!("cannot write the file: {e}")))?;
        Ok(format!("# {comment}\n{body}"))
    }
}

fn dur(process: &str, field: &str, text: Option<&String>, default: Duration) -> Result<Duration, SpecError> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t).map_err(|e| {
            SpecError::Invalid(format!(
                "process {process:?}: {field} = {t:?} is not a duration ({e}); write e.g. \"10s\""
            ))
        }),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DeploymentSpec {
    /// Reads and validates a deployment file. `mesh` as the program means this very binary.
    pub fn load(path: &Path, mesh_exe: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, mesh_exe).map_err(|e| match e {
            SpecError::Parse { detail, .. } => SpecError::Parse { path: path.to_owned(), detail },
            other => other,
        })
    }

    /// Parses and validates deployment TOML.
    pub fn parse(text: &str, mesh_exe: &Path) -> Result<Self, SpecError> {
        let file: DeploymentFile = toml::from_str(text)
            .map_err(|e| SpecError::Parse { path: PathBuf::from("mesh.toml"), detail: e.to_string() })?;
        let defaults = RestartPolicy::default();
        let mut processes = Vec::new();
        for p in file.processes {
            let name = p.name.clone();
            let mut command = p.command;
            if command.is_empty() {
                return Err(SpecError::Invalid(format!("process {name:?}: command is empty")));
            }
            if command[0] == "mesh" {
                command[0] = mesh_exe.display().to_string();
            }
            let restart = RestartPolicy {
                mode: p.restart.unwrap_or(defaults.mode),
                initial_backoff_ms: ms(dur(
                    &name,
                    "initial_backoff",
                    p.initial_backoff.as_ref(),
                    Duration::from_millis(defaults.initial_backoff_ms),
                )?),
                max_backoff_ms: ms(dur(
                    &name,
                    "max_backoff",
                    p.max_backoff.as_ref(),
                    Duration::from_millis(defaults.max_backoff_ms),
                )?),
                stable_after_ms: ms(dur(
                    &name,
                    "stable_after",
                    p.stable_after.as_ref(),
                    Duration::from_millis(defaults.stable_after_ms),
                )?),
                max_restarts: p.max_restarts.unwrap_or(defaults.max_restarts),
                within_ms: ms(dur(
                    &name,
                    "restart_window",
                    p.restart_window.as_ref(),
                    Duration::from_millis(defaults.within_ms),
                )?),
            };
            processes.push(ProcessSpec {
                command,
                env: p.env,
                depends_on: p.depends_on,
                restart,
                notify: p.notify.unwrap_or(true),
                ready_timeout: dur(&name, "ready_timeout", p.ready_timeout.as_ref(), Duration::from_secs(60))?,
                stop_timeout: dur(&name, "stop_timeout", p.stop_timeout.as_ref(), Duration::from_secs(10))?,
                watchdog: p.watchdog.as_ref().map(|w| dur(&name, "watchdog", Some(w), Duration::ZERO)).transpose()?,
                ready_tcp: p
                    .ready_tcp
                    .as_ref()
                    .map(|a| {
                        a.parse().map_err(|_| {
                            SpecError::Invalid(format!(
                                "process {name:?}: ready_tcp = {a:?} is not HOST:PORT (an IP address)"
                            ))
                        })
                    })
                    .transpose()?,
                nice: p
                    .nice
                    .map(|n| {
                        i8::try_from(n).ok().filter(|n| (-20..=19).contains(n)).ok_or_else(|| {
                            SpecError::Invalid(format!(
                                "process {name:?}: nice = {n} is out of range; use -20 (most favoured) to 19 (least)"
                            ))
                        })
                    })
                    .transpose()?,
                cgroup: p.cgroup.map(PathBuf::from),
                name,
            });
        }
        Self::new(processes)
    }

    /// Validates names and dependencies and orders the processes.
    pub fn new(processes: Vec<ProcessSpec>) -> Result<Self, SpecError> {
        if processes.is_empty() {
            return Err(SpecError::Invalid("no [[process]] given".into()));
        }
        let mut names = BTreeSet::new();
        for p in &processes {
            if p.name.is_empty() || !p.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(SpecError::Invalid(format!(
                    "process name {:?}: use letters, digits, '-', '_', '.'",
                    p.name
                )));
            }
            if !names.insert(p.name.clone()) {
                return Err(SpecError::Invalid(format!("process {:?} is defined twice", p.name)));
            }
        }
        for p in &processes {
            for d in &p.depends_on {
                if !names.contains(d) {
                    return Err(SpecError::Invalid(format!(
                        "process {:?}: depends_on names unknown process {d:?}",
                        p.name
                    )));
                }
            }
        }
        // Kahn's algorithm, keeping the file's order among equals.
        let mut ordered: Vec<ProcessSpec> = Vec::new();
        let mut placed = BTreeSet::new();
        let mut rest = processes;
        while !rest.is_empty() {
            let before = rest.len();
            let mut next = Vec::new();
            for p in rest {
                if p.depends_on.iter().all(|d| placed.contains(d)) {
                    ordered.push(p);
                } else {
                    next.push(p);
                }
            }
            for p in &ordered {
                placed.insert(p.name.clone());
            }
            if next.len() == before {
                let stuck: Vec<&str> = next.iter().map(|p| p.name.as_str()).collect();
                return Err(SpecError::Invalid(format!("dependency cycle among {stuck:?}")));
            }
            rest = next;
        }
        Ok(Self { processes: ordered })
    }

    /// The seed's deployment: the two managers, then the four e-commerce agents, all this binary.
    pub fn seed_default(mesh_exe: &Path) -> Self {
        let exe = mesh_exe.display().to_string();
        let mut processes = vec![
            Self::service("topology", vec![exe.clone(), "topology".into()], vec![]),
            Self::service("consensus", vec![exe.clone(), "consensus".into()], vec![]),
        ];
        for role in ["sales", "support", "inventory", "fraud"] {
            processes.push(Self::service(
                &format!("agent-{role}"),
                vec![exe.clone(), "agent".into(), "--name".into(), role.into(), "--role".into(), role.into()],
                vec!["topology".into(), "consensus".into()],
            ));
        }
        Self { processes }
    }

    /// A `mesh` service process with the default policy.
    fn service(name: &str, command: Vec<String>, depends_on: Vec<String>) -> ProcessSpec {
        ProcessSpec {
            name: name.to_owned(),
            command,
            env: BTreeMap::new(),
            depends_on,
            restart: RestartPolicy::default(),
            notify: true,
            ready_timeout: Duration::from_secs(60),
            stop_timeout: Duration::from_secs(10),
            watchdog: Some(Duration::from_secs(30)),
            ready_tcp: None,
            nice: None,
            cgroup: None,
        }
    }

    /// A piece of infrastructure (broker, Redis) supervised like the services: READY when its port answers,
    /// restarted always, stopped last.
    pub fn infrastructure(name: &str, command: Vec<String>, ready_tcp: std::net::SocketAddr) -> ProcessSpec {
        ProcessSpec {
            name: name.to_owned(),
            command,
            env: BTreeMap::new(),
            depends_on: Vec::new(),
            restart: RestartPolicy { mode: RestartMode::Always, ..RestartPolicy::default() },
            notify: false,
            ready_timeout: Duration::from_secs(120),
            stop_timeout: Duration::from_secs(20),
            watchdog: None,
            ready_tcp: Some(ready_tcp),
            nice: None,
            cgroup: None,
        }
    }

    /// Puts `infrastructure` first and makes every process without dependencies depend on it.
    pub fn with_infrastructure(self, infrastructure: Vec<ProcessSpec>) -> Result<Self, SpecError> {
        let names: Vec<String> = infrastructure.iter().map(|p| p.name.clone()).collect();
        let mut processes = infrastructure;
        for mut p in self.processes {
            if p.depends_on.is_empty() {
                p.depends_on = names.clone();
            }
            processes.push(p);
        }
        Self::new(processes)
    }

    /// A process by name.
    pub fn get(&self, name: &str) -> Option<&ProcessSpec> {
        self.processes.iter().find(|p| p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_deployment_file_reads_back_as_written_and_leaves_defaults_out() {
        let file = DeploymentFile {
            processes: vec![
                FileProcess {
                    name: "topology".into(),
                    command: vec!["mesh".into(), "topology".into()],
                    watchdog: Some("20s".into()),
                    ..FileProcess::default()
                },
                FileProcess {
                    name: "agent-sales".into(),
                    command: vec!["mesh".into(), "agent".into(), "--name".into(), "a \"b\"".into()],
                    env: [("MESH_KAFKA".to_owned(), "10.0.0.1:9092,10.0.0.2:9092".to_owned())].into(),
                    depends_on: vec!["topology".into()],
                    initial_backoff: Some("200ms".into()),
                    max_restarts: Some(30),
                    ..FileProcess::default()
                },
            ],
        };
        let text = file.to_toml("written by a test").expect("toml");
        assert!(text.starts_with("# written by a test\n"), "{text}");
        assert!(!text.contains("ready_tcp") && !text.contains("notify"), "absent fields stay absent: {text}");
        assert_eq!(toml::from_str::<DeploymentFile>(&text).expect("reads back"), file);
        let spec = DeploymentSpec::parse(&text, Path::new("/bin/mesh")).expect("valid");
        let agent = &spec.processes[1];
        assert_eq!(agent.name, "agent-sales");
        assert_eq!(agent.command, ["/bin/mesh", "agent", "--name", "a \"b\""], "quotes survive the writing");
        assert_eq!(agent.restart.initial_backoff_ms, 200);
        assert_eq!(spec.processes[0].watchdog, Some(Duration::from_secs(20)));
    }

    #[test]
    fn nice_is_read_within_its_range_and_a_value_outside_names_the_field() {
        let file = |nice: i32| format!("[[process]]\nname = \"a\"\ncommand = [\"mesh\", \"agent\"]\nnice = {nice}\n");
        let spec = DeploymentSpec::parse(&file(19), Path::new("/bin/mesh")).expect("valid");
        assert_eq!(spec.processes[0].nice, Some(19));
        assert_eq!(
            DeploymentSpec::parse(&file(-20), Path::new("/bin/mesh")).expect("valid").processes[0].nice,
            Some(-20)
        );
        for bad in [20, -21, 300] {
            let err = DeploymentSpec::parse(&file(bad), Path::new("/bin/mesh")).expect_err("out of range").to_string();
            assert!(err.contains("\"a\"") && err.contains(&format!("nice = {bad}")) && err.contains("-20"), "{err}");
        }
    }

    #[test]
    fn seed_default_is_six_processes_managers_first() {
        let spec = DeploymentSpec::seed_default(Path::new("/bin/mesh"));
        let names: Vec<&str> = spec.processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["topology", "consensus", "agent-sales", "agent-support", "agent-inventory", "agent-fraud"]);
    }

    #[test]
    fn file_is_ordered_by_dependencies_and_mesh_means_this_binary() {
        let spec = DeploymentSpec::parse(
            r#"
            [[process]]
            name = "b"
            command = ["mesh", "agent"]
            depends_on = ["a"]
            [[process]]
            name = "a"
            command = ["sleep", "1"]
            notify = false
            restart = "always"
            max_restarts = 2
            "#,
            Path::new("/x/mesh"),
        )
        .expect("valid");
        assert_eq!(spec.processes[0].name, "a");
        assert_eq!(spec.processes[1].command[0], "/x/mesh");
        assert_eq!(spec.processes[0].restart.mode, RestartMode::Always);
        assert_eq!(spec.processes[0].restart.max_restarts, 2);
    }

    #[test]
    fn errors_name_the_process_and_field() {
        let cases = [
            ("[[process]]\nname = \"a\"\ncommand = []\n", "process \"a\": command is empty"),
            ("[[process]]\nname = \"a\"\ncommand = [\"x\"]\ndepends_on = [\"zz\"]\n", "unknown process \"zz\""),
            ("[[process]]\nname = \"a\"\ncommand = [\"x\"]\nstop_timeout = \"soon\"\n", "stop_timeout"),
            ("[[process]]\nname = \"a\"\ncommand = [\"x\"]\nrestrat = \"always\"\n", "restrat"),
            (
                "[[process]]\nname = \"a\"\ncommand = [\"x\"]\ndepends_on = [\"b\"]\n[[process]]\nname = \"b\"\ncommand = [\"x\"]\ndepends_on = [\"a\"]\n",
                "dependency cycle",
            ),
        ];
        for (text, expected) in cases {
            let err = DeploymentSpec::parse(text, Path::new("mesh")).expect_err("invalid").to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }
}
