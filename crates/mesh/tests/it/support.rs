//! A deployment of real `mesh` processes under a prefix of its own, and ways to read what they wrote.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mesh_kafka::{KafkaBus, KafkaConfig};
use mesh_proto::auth::{DeploymentSecret, Principal, PrincipalKey, Signer};
use mesh_proto::read_model::{AgentStats, ConsensusStats, TopologyStats, redis_keys};
use mesh_proto::{DecodeError, Envelope, TopicKind, TopicNames, decode};
use mesh_redis::RedisStore;
use mesh_transport::{Assignment, Bus, Reader, SnapshotStore, StartAt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Timers scaled down so that a test sees many ticks in a few seconds.
pub(crate) const FAST: &[(&str, &str)] = &[
    ("MESH_DECAY_INTERVAL", "200ms"),
    ("MESH_FAILURE_TIMEOUT", "2s"),
    ("MESH_HEARTBEAT_INTERVAL", "250ms"),
    ("MESH_TOPOLOGY_SNAPSHOT_INTERVAL", "500ms"),
    ("MESH_CONSENSUS_SNAPSHOT_INTERVAL", "500ms"),
    ("MESH_PROPOSAL_TIMEOUT", "5s"),
];

/// The four roles of the e-commerce scenario.
pub(crate) const ROLES: [&str; 4] = ["sales", "support", "inventory", "fraud"];

/// A process a test starts in the foreground dies with the test, even with a test run interrupted (Ctrl-C on
/// `cargo test` kills the test binary, not the process groups of its children): no orphan is left running for hours
/// against a broker that is gone, as five `mesh` processes were. Spawn from the test's own thread: the parent-death
/// signal fires when the spawning *thread* exits, and a blocking-pool thread exits when idle.
pub(crate) trait EndsWithTest {
    /// Asks the kernel to SIGKILL the child when the spawning thread exits.
    fn ends_with_test(&mut self) -> &mut Self;
}

impl EndsWithTest for Command {
    fn ends_with_test(&mut self) -> &mut Self {
        #[expect(unsafe_code, reason = "pre_exec is the only way to set a child's parent-death signal")]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            self.pre_exec(|| nix::sys::prctl::set_pdeathsig(Some(Signal::SIGKILL)).map_err(std::io::Error::from))
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A record read back from a topic.
pub(crate) struct Read {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) envelope: Result<Envelope, DecodeError>,
}

/// Processes of one test, all under one topic prefix; killed (whole process groups) when dropped.
pub(crate) struct Mesh {
    pub(crate) prefix: String,
    pub(crate) kafka: String,
    pub(crate) topics: TopicNames,
    pub(crate) bus: KafkaBus,
    pub(crate) store: RedisStore,
    pub(crate) dir: tempfile::TempDir,
    secret: DeploymentSecret,
    env: Vec<(String, String)>,
    children: BTreeMap<String, Child>,
}

impl Mesh {
    /// A mesh on the shared Kafka and Redis, with `settings` as environment for every process.
    pub(crate) async fn new(test: &str, settings: &[(&str, &str)]) -> Mesh {
        let infra = mesh_fixtures::shared()
            .expect("Kafka and Redis for the tests could not be started; `cargo xtask test` installs what is missing");
        Self::on(infra, test, settings).await
    }

    /// A mesh on `infra` (a broker of the test's own, for a test that pauses or stops it).
    pub(crate) async fn on(infra: &mesh_fixtures::SharedInfra, test: &str, settings: &[(&str, &str)]) -> Mesh {
        let prefix = format!("t{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), test);
        let bus = KafkaBus::new(KafkaConfig::new(infra.kafka.clone(), format!("test-{prefix}"))).expect("kafka client");
        let store = RedisStore::connect(&infra.redis).await.expect("redis reachable");
        let mut env: Vec<(String, String)> = vec![
            ("MESH_KAFKA".into(), infra.kafka.clone()),
            ("MESH_REDIS".into(), infra.redis.clone()),
            ("MESH_TOPIC_PREFIX".into(), prefix.clone()),
            // MESH_TEST_LOG replaces the processes' log filter, for a post-mortem of a failing test.
            ("RUST_LOG".into(), std::env::var("MESH_TEST_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into())),
        ];
        // Every test's mesh is authenticated, as `mesh up` makes every deployment: its processes hold a secret of
        // its own, and a record a test writes as one of the mesh's writers is tagged with it (`Mesh::tag`).
        let dir = tempfile::tempdir().expect("temp dir");
        let secret_text = format!("{prefix}-secret-{:032x}", rand::random::<u128>());
        let secret_path = dir.path().join("secret");
        std::fs::write(&secret_path, &secret_text).expect("secret file");
        env.push(("MESH_SECRET_FILE".into(), secret_path.display().to_string()));
        env.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Mesh {
            topics: TopicNames::new(prefix.clone()),
            prefix,
            kafka: infra.kafka.clone(),
            bus,
            store,
            dir,
            secret: DeploymentSecret::parse(&secret_text).expect("long enough"),
            env,
            children: BTreeMap::new(),
        }
    }

    /// The `mesh-auth` header a well-behaved writer holding this mesh's credentials puts on `value`: tagged as the
    /// writer the record must have. `None` for what does not decode or anyone may write (nothing to tag it as).
    pub(crate) fn tag(&self, topic: &str, key: &[u8], value: &[u8]) -> Option<String> {
        let envelope = decode(Some(value), None).ok()?;
        let writer = Principal::writer_of(&envelope.record)?;
        Some(Signer::new(writer.clone(), self.secret.key_of(&writer)).header(topic, key, value))
    }

    /// The key of `principal` in this mesh (what `mesh key agent ID` would print for it).
    pub(crate) fn key_of(&self, principal: &Principal) -> PrincipalKey {
        self.secret.key_of(principal)
    }

    /// The deployment secret's file, as the mesh's processes are given it.
    pub(crate) fn secret_file(&self) -> std::path::PathBuf {
        self.dir.path().join("secret")
    }

    /// Starts `mesh ARGS...` as process `name` in its own process group, logging to `<dir>/<name>.log`; see
    /// [`EndsWithTest`] for the thread to call it from.
    pub(crate) fn spawn(&mut self, name: &str, args: &[&str]) {
        self.spawn_with(name, args, &[]);
    }

    /// [`Self::spawn`] with some of the mesh's environment changed: a variable set, or removed (`None`).
    pub(crate) fn spawn_with(&mut self, name: &str, args: &[&str], changes: &[(&str, Option<&str>)]) {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_mesh"));
        command.args(args).envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (key, value) in changes {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .process_group(0)
            .ends_with_test()
            .spawn()
            .expect("spawn mesh");
        self.children.insert(name.to_owned(), child);
    }

    /// Both managers.
    pub(crate) fn start_managers(&mut self) {
        self.spawn("topology", &["topology"]);
        self.spawn("consensus", &["consensus"]);
    }

    /// An agent named after its role, starting `rate` tasks per second.
    pub(crate) fn start_agent(&mut self, role: &str, rate: &str, proposal_every: &str) {
        self.spawn(
            role,
            &["agent", "--name", role, "--role", role, "--rate", rate, "--proposal-every", proposal_every],
        );
    }

    /// Sends `signal` to the process group of `name`.
    pub(crate) fn signal(&self, name: &str, signal: Signal) {
        let child = self.children.get(name).expect("known process");
        let pid = i32::try_from(child.id()).expect("pid fits");
        killpg(Pid::from_raw(pid), signal).expect("signal delivered");
    }

    /// Waits for `name` to exit (after a signal), up to `timeout`.
    pub(crate) fn wait_exit(&mut self, name: &str, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.children.get_mut(name).expect("known process");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "{name} did not exit within {timeout:?}\n{}", self.logs(name));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `name` is still running.
    pub(crate) fn running(&mut self, name: &str) -> bool {
        self.children.get_mut(name).is_some_and(|c| c.try_wait().expect("wait").is_none())
    }

    /// The log of `name`.
    pub(crate) fn logs(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The last lines of every log, for failure messages.
    pub(crate) fn all_logs_tail(&self) -> String {
        let mut out = String::new();
        for name in self.children.keys() {
            let log = self.logs(name);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            out.push_str(&format!("--- {name} ---\n{tail}\n"));
        }
        out
    }

    /// Every record of a topic so far (up to the high watermarks read at the call), in partition order.
    pub(crate) async fn read_topic(&self, kind: TopicKind) -> Vec<Read> {
        let topic = self.topics.name(kind);
        // Not created yet (the processes create topics as they start): nothing to read.
        let Ok(partitions) = self.bus.partition_count(&topic).await else { return Vec::new() };
        let mut ends = BTreeMap::new();
        let mut assignments = Vec::new();
        for p in 0..partitions {
            let p = i32::try_from(p).expect("small");
            // A partition whose leader is not elected yet (just created) has nothing to read yet.
            let Ok(end) = self.bus.end_offset(&topic, p).await else { continue };
            if end > 0 {
                ends.insert(p, end);
                assignments.push(Assignment { topic: topic.clone(), partition: p, start: StartAt::Beginning });
            }
        }
        let mut out = Vec::new();
        if assignments.is_empty() {
            return out;
        }
        let group = format!("{}-reader-{}", self.prefix, NEXT.fetch_add(1, Ordering::Relaxed));
        let mut reader = self.bus.reader(&group, assignments).await.expect("reader");
        let mut done: BTreeMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        while done.values().any(|d| !d) {
            assert!(Instant::now() < deadline, "reading {topic} to its end took too long");
            let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(5), reader.next()).await else { continue };
            let end = ends[&r.partition];
            if r.offset >= end {
                done.insert(r.partition, true);
                continue;
            }
            if r.offset == end - 1 {
                done.insert(r.partition, true);
            }
            out.push(Read {
                partition: r.partition,
                offset: r.offset,
                envelope: decode(r.payload.as_deref(), Some(kind)),
            });
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }

    /// Every dead letter so far.
    pub(crate) async fn letters(&self) -> Vec<mesh_proto::records::DeadLetterBody> {
        self.read_topic(TopicKind::Deadletter)
            .await
            .into_iter()
            .filter_map(|r| match r.envelope.ok()?.record {
                mesh_proto::records::Record::DeadLetter(d) => Some(d),
                _ => None,
            })
            .collect()
    }

    /// A hash the processes wrote to Redis.
    pub(crate) async fn hash(&self, key: &str) -> BTreeMap<String, String> {
        self.store.hgetall(key).await.expect("redis").into_iter().collect()
    }

    /// The topology manager's statistics as stored now: every field absent until it writes them.
    pub(crate) async fn topology_stats(&self) -> TopologyStats {
        TopologyStats::from_fields(self.hash(&redis_keys::topology_stats(&self.prefix)).await)
    }

    /// The consensus manager's statistics as stored now: every field absent until it writes them.
    pub(crate) async fn consensus_stats(&self) -> ConsensusStats {
        ConsensusStats::from_fields(self.hash(&redis_keys::consensus_stats(&self.prefix)).await)
    }

    /// Resident memory of process `name` in KiB (its `VmRSS`).
    pub(crate) fn rss_kib(&self, name: &str) -> u64 {
        let pid = self.children.get(name).expect("known process").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("a live process");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// An agent's counters as stored now: every field absent until it writes them.
    pub(crate) async fn agent_stats(&self, agent: &str) -> AgentStats {
        AgentStats::from_fields(self.hash(&redis_keys::agent_stats(&self.prefix, agent)).await)
    }

    /// Polls `probe` every 100 ms until it yields a value, failing with every log's tail after `timeout`.
    pub(crate) async fn eventually<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut probe: impl AsyncFnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.all_logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A failed test keeps its processes' logs for the post-mortem (the assertion shows only their tails).
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("the logs of {} are kept in {}", self.prefix, self.dir.path().display());
        }
        for child in self.children.values_mut() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}
