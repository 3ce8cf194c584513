//! Why a `mesh bench` run failed. Two kinds, kept apart because the binary answers them differently: an
//! [`OptionsError`] is a flag that cannot be run as given (the binary's usage exit code, before anything starts),
//! every other [`Error`] happened while carrying the run out. Messages are lowercase fragments; the cause, when
//! there is one, is the variant's `source`, printed after it by whoever shows the chain.

use std::path::PathBuf;
use std::time::Duration;

use mesh_fixtures::FixtureError;
use mesh_supervisor::{ControlError, LaunchError, SpecError};
use mesh_transport::TransportError;

use crate::profile::ProfileError;
use crate::report::SCHEMA;
use crate::svg::SvgError;

/// A flag the run cannot be planned from. Each message names the flag and what to give instead, since the one who
/// reads it is at the command line.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// Fewer than two agents: there is no mesh to measure.
    #[error("invalid --agents {agents}: the mesh needs at least 2 agents")]
    Agents {
        /// As given.
        agents: usize,
    },
    /// Zero agents per process, or more than there are agents.
    #[error("invalid --agents-per-process {given}: give 1 (each agent its own process) up to --agents")]
    AgentsPerProcess {
        /// As given.
        given: usize,
    },
    /// A cluster size for a Kafka the run does not start.
    #[error(
        "invalid --brokers {brokers}: it sizes the Kafka cluster the run starts (the local infrastructure, the \
         default without --kafka); a given Kafka is sized by whoever runs it, the embedded broker is one node"
    )]
    Brokers {
        /// As given.
        brokers: u32,
    },
    /// Simulated hosts without the infrastructure they reach over their bridge.
    #[error(
        "invalid --hosts {hosts}: simulated hosts reach the Kafka and Redis the run starts (the local \
         infrastructure, the default without --kafka) over their bridge"
    )]
    Hosts {
        /// As given.
        hosts: u32,
    },
    /// Not a duration. The parser's reason sits inside the sentence, before the hint, as the flag's other
    /// messages read; it is kept typed, not as text.
    #[error("invalid {flag} {text:?}: {reason}; write for example \"30s\"")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// As given.
        text: String,
        /// Why it is not a duration.
        reason: humantime::DurationError,
    },
    /// A measured window too short to say anything.
    #[error("invalid --duration {text:?}: measure for at least 1s")]
    TooShort {
        /// As given.
        text: String,
    },
    /// Neither a positive rate nor `max`.
    #[error("invalid --rate {text:?}: give the messages per second to offer, above 0, or `max`")]
    Rate {
        /// As given.
        text: String,
    },
    /// A negative or non-finite proposal rate.
    #[error("invalid --proposals-per-sec {value}: 0 or more")]
    ProposalsPerSec {
        /// As given.
        value: f64,
    },
    /// A messages topic without partitions.
    #[error("invalid --messages-partitions 0: a topic needs at least one partition")]
    Partitions,
    /// A relative `--state-dir` and no current directory to resolve it against.
    #[error("failed to read the current directory")]
    CurrentDir {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why a run stopped after its flags were accepted. The binary reports these as runtime failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The flags cannot be run as given (see [`OptionsError`]): the only variant that is the user's to fix.
    #[error("invalid flags")]
    Options(#[from] OptionsError),
    /// SIGINT or SIGTERM: the deployment and infrastructure are taken down on the way out.
    #[error("interrupted: the bench deployment and infrastructure are being stopped")]
    Interrupted,
    /// `--compare` names a file that cannot be read.
    #[error("failed to read {}", path.display())]
    ReadReport {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--compare` names a file that is not a report.
    #[error("{} is not a mesh bench JSON report ({SCHEMA})", path.display())]
    NotAReport {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// `--compare` names a report of another schema, whose figures may not mean the same.
    #[error("{} has schema {schema:?}; this mesh reads {SCHEMA}", path.display())]
    Schema {
        /// The file.
        path: PathBuf,
        /// Its schema.
        schema: String,
    },
    /// A directory the run writes into could not be made.
    #[error("failed to create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The previous run's deployment directory could not be cleared.
    #[error("failed to clear {}", path.display())]
    ClearDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file the run writes (settings, deployment, report) could not be written.
    #[error("failed to write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tokio runtime could not start.
    #[error("failed to start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The Kafka jars could not be fetched.
    #[error("failed to provision the Kafka jars (Maven Central)")]
    KafkaJars(#[source] FixtureError),
    /// `--hosts`: the network namespaces could not be made (it needs root).
    #[error("--hosts")]
    SimulatedHosts(#[source] FixtureError),
    /// No port was free for a broker's listener on the hosts' bridge.
    #[error("failed to find a free port for a broker's listener on the hosts' bridge")]
    FreePort(#[source] FixtureError),
    /// The local Kafka did not start.
    #[error("failed to start the local Kafka")]
    StartKafka(#[source] FixtureError),
    /// redis-server did not start.
    #[error("failed to start redis-server")]
    StartRedis(#[source] FixtureError),
    /// `--kafka` without a Redis to go with it.
    #[error("--redis redis://HOST:PORT is needed with --kafka")]
    RedisNeeded,
    /// librdkafka's mock cluster did not start.
    #[error("failed to start the embedded broker")]
    StartEmbedded(#[source] TransportError),
    /// The embedded broker refused to create a topic.
    #[error("failed to create topics on the embedded broker")]
    EmbeddedTopics(#[source] TransportError),
    /// A Kafka client could not be made.
    #[error("failed to create a Kafka client for {kafka}")]
    KafkaClient {
        /// The bootstrap servers.
        kafka: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// A topic of the baselines could not be created.
    #[error("failed to create topic {topic} on Kafka at {kafka}")]
    CreateTopic {
        /// The bootstrap servers.
        kafka: String,
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// The broker did not answer a topic's creation: an overloaded or unreachable broker.
    #[error("Kafka at {kafka} did not create topic {topic} within 60 s")]
    TopicTimeout {
        /// The bootstrap servers.
        kafka: String,
        /// The topic.
        topic: String,
    },
    /// Plain producer and consumer traffic (the warm-up or a baseline) failed.
    #[error("failed to run plain Kafka traffic on {topic}")]
    PlainTraffic {
        /// Its topic.
        topic: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// A topic could not be read back.
    #[error("failed to read {topic}")]
    ReadTopic {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// A topic was not read to its end in time.
    #[error("reading {topic} did not reach its end within 60 s")]
    ReadTimeout {
        /// The topic.
        topic: String,
    },
    /// The histogram of consensus latencies could not be made (its bounds are constants: a bug).
    #[error("failed to create the consensus latency histogram")]
    Histogram(#[source] hdrhistogram::CreationError),
    /// The run's Redis (or file store) could not be reached.
    #[error("failed to connect to the store at {url}")]
    Store {
        /// The store, its password redacted.
        url: String,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// The settings file could not be written as TOML.
    #[error("failed to write the bench settings as TOML")]
    SettingsToml(#[source] toml::ser::Error),
    /// A deployment file could not be written as TOML.
    #[error("failed to write the bench deployment as TOML")]
    DeploymentToml(#[source] SpecError),
    /// A supervisor could not be started, asked or stopped.
    #[error("failed to {action} the bench supervisor")]
    Supervisor {
        /// What was asked of it.
        action: &'static str,
        /// Why.
        #[source]
        source: LaunchError,
    },
    /// A supervisor is alive but has not answered for minutes.
    #[error("the bench supervisor has not answered for 5 minutes")]
    SupervisorSilent(#[source] ControlError),
    /// A supervisor that answered before no longer does.
    #[error("the bench supervisor stopped answering")]
    SupervisorStopped,
    /// The supervisor never answered during ramp-up.
    #[error("the bench supervisor did not answer within {0:?}")]
    SupervisorNoAnswer(Duration),
    /// The previous run's deployment is still up in the same directory.
    #[error(
        "a bench deployment is still running in {}; `mesh down --state-dir {}` stops it",
        root.display(),
        root.display()
    )]
    StillRunning {
        /// Its state directory.
        root: PathBuf,
    },
    /// With simulated hosts, the managers must serve before the hosts start.
    #[error("the managers did not start")]
    ManagersNotStarted(#[source] LaunchError),
    /// A process of the deployment failed while it started.
    #[error("{name} FAILED during ramp-up; see {}", log.display())]
    ProcessFailed {
        /// The process.
        name: String,
        /// Its log.
        log: PathBuf,
    },
    /// Start-up took longer than `--ramp-timeout`.
    #[error("only {ready} of {processes} processes READY after {timeout:?}")]
    NotReady {
        /// Processes READY.
        ready: usize,
        /// Processes in the deployment.
        processes: usize,
        /// `--ramp-timeout`.
        timeout: Duration,
    },
    /// The idle run's agents never all became live.
    #[error("the idle run did not converge: {live}/{agents} agents live")]
    IdleNotConverged {
        /// Agents live.
        live: usize,
        /// Agents started.
        agents: usize,
    },
    /// `--profile` needs perf.
    #[error("perf is needed for --profile")]
    Perf(#[source] ProfileError),
    /// perf did not start.
    #[error("failed to start perf")]
    StartPerf(#[source] ProfileError),
    /// perf's samples could not be folded into flame graphs.
    #[error("failed to fold the profiles")]
    FoldProfiles(#[source] ProfileError),
    /// A worker of the N-process baseline did not start.
    #[error("failed to start baseline worker {index}")]
    StartWorker {
        /// The worker.
        index: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A worker of the N-process baseline could not be read or waited for.
    #[error("failed to read baseline worker {index}")]
    ReadWorker {
        /// The worker.
        index: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A worker started without the pipe its report comes through.
    #[error("worker {index} has no stdout")]
    WorkerNoStdout {
        /// The worker.
        index: usize,
    },
    /// A worker's latency histogram did not decode (the decoder's reason is text).
    #[error("worker {index}: {reason}")]
    WorkerLatency {
        /// The worker.
        index: usize,
        /// Why.
        reason: String,
    },
    /// More than a tenth of the baseline workers failed: the N-process figure would not mean much.
    #[error("{failed} of {workers} baseline workers failed: {}", which.join("; "))]
    WorkersFailed {
        /// How many.
        failed: usize,
        /// Out of.
        workers: usize,
        /// Each failure.
        which: Vec<String>,
    },
    /// SIGINT or SIGTERM while the baseline workers ran.
    #[error("interrupted: the baseline workers were stopped")]
    WorkersInterrupted,
    /// The report could not be encoded.
    #[error("failed to encode the report as JSON")]
    EncodeReport(#[source] serde_json::Error),
    /// The report's SVG could not be drawn.
    #[error("failed to draw the SVG report")]
    DrawSvg(#[source] SvgError),
}

/// An error and its causes as one line (`what: why: why`), for the warnings a run prints and carries on after.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_reads_like_the_binarys_error_line() {
        let e = Error::CreateDir {
            path: PathBuf::from("/x"),
            source: std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied"),
        };
        assert_eq!(Chain(&e).to_string(), "failed to create /x: denied");
    }
}
