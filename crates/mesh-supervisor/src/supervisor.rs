//! The supervisor's dispatcher: one loop over child exits (SIGCHLD), sd_notify datagrams, control requests,
//! signals and a 100 ms housekeeping tick. It owns every process record; nothing else mutates them.
//!
//! `mesh up` resolves the infrastructure (given services, or the embedded broker plus Redis-or-file store), then hands
//! a `DeploymentSpec` to [`run`], one dispatcher that `block_on` keeps on the main thread (children's parent-death
//! signal is tied to the spawning thread, so every spawn happens there), while the tasks that drain the children's
//! output pipes and notify sockets run on two worker threads: a slow disk under the dispatcher never leaves a child
//! blocked on a full pipe. SIGCHLD is answered with `waitpid(-1)`, which also reaps adopted descendants; the tick
//! drives restart delays, ready timeouts, watchdogs and resumes. A process goes STARTING → READY → (exit) → BACKOFF →
//! STARTING, or FAILED when `RestartTracker` says the intensity limit is reached; STOPPING/STOPPED on the way down.
//! Details, files and the control protocol: `docs/supervisor.md`.
//!
//! The invariant: the supervisor never unwinds on a child's behaviour. A crash, a hang, a flood of output or a refusal
//! to die are events with a recorded outcome, never an `Err` out of the loop. Nor does a stall of its own count against
//! a child: a supervisor whose loop ran late moves its children's watchdog deadlines by the stall instead of blaming
//! them for it (`SUPERVISOR_STALL`; `cargo xtask chaos`'s pause-supervisor scenario holds it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_core::restart::{ExitKind, RestartDecision, RestartTracker};
use nix::sys::signal::Signal;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};
use tokio::net::{UnixDatagram, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::child::{self, Ended};
use crate::console::{Console, StatusLine, pump_output};
use crate::control::{self, Request, Response};
pub use crate::error::SupervisorError;
use crate::error::io;
use crate::listen::{Msg, read_notify, serve_control};
use crate::lock::InstanceLock;
use crate::rotating::RotatingLog;
use crate::spec::{DeploymentSpec, ProcessSpec};
use crate::state::{Event, EventLog, ExitInfo, ProcState, ProcessStatus, StateDir, StateFile};

/// Where children's output goes besides their log files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Multiplexed to the terminal as `name | line`, coloured if `color`.
    Terminal {
        /// ANSI colours.
        color: bool,
    },
    /// Only the log files (detached mode).
    LogsOnly,
}

/// Everything the supervisor needs to run a deployment.
pub struct Options {
    /// State directory (`.mesh`).
    pub state_dir: StateDir,
    /// What to run.
    pub spec: DeploymentSpec,
    /// Environment given to every child (infrastructure addresses, topic prefix).
    pub env: BTreeMap<String, String>,
    /// `embedded` or `external`, recorded in the state file.
    pub infra: String,
    /// Kafka bootstrap servers, recorded in the state file.
    pub kafka: String,
    /// Redis URL, recorded in the state file.
    pub redis: String,
    /// Topic prefix, recorded in the state file.
    pub topic_prefix: String,
    /// Children's output.
    pub output: Output,
    /// Seed of the backoff jitter and of `kill --random`.
    pub seed: u64,
    /// Where the supervisor serves its own metrics (`host:port`), listed first in `prometheus-targets.json`.
    pub metrics: Option<String>,
}

struct Proc {
    spec: ProcessSpec,
    status: ProcessStatus,
    tracker: RestartTracker,
    pgid: Option<i32>,
    /// Not spawned yet: waiting for its dependencies to be READY.
    waiting: bool,
    restart_at: Option<Instant>,
    ready_deadline: Option<Instant>,
    watchdog_deadline: Option<Instant>,
    resume_at: Option<Instant>,
    /// The next exit is not a crash to recover from (operator stop).
    no_restart: bool,
    /// Why the next exit happens, if the supervisor caused it.
    kill_cause: Option<String>,
    log: Arc<Mutex<RotatingLog>>,
    color: usize,
    line: StatusLine,
}

struct Supervisor {
    opts: Options,
    procs: Vec<Proc>,
    /// Where each process is in `procs`: notifications, control requests and dependency checks look names up, and
    /// a linear search per lookup made the supervisor of 500 agents spend most of a core comparing names.
    by_name: HashMap<String, usize>,
    events: EventLog,
    rng: StdRng,
    stopping: bool,
    force: Arc<AtomicBool>,
    console: Console,
    /// When the state file was last written: status lines reach it at most every `STATE_WRITE_INTERVAL`.
    state_written: Option<Instant>,
    /// A process changed state (an event was logged): the state file is rewritten soon.
    state_changed: std::cell::Cell<bool>,
    /// When the timers last ran: a long gap means the supervisor itself was stalled.
    timers_ran: Option<Instant>,
}

/// A gap between two timer runs longer than this (they run every 100 ms) means the supervisor was stalled (SIGSTOP,
/// a slow disk, starved of CPU): whatever its children sent meanwhile may have been dropped, so their watchdog and
/// readiness deadlines move by the length of the stall instead of expiring on silence the supervisor caused.
const SUPERVISOR_STALL: Duration = Duration::from_secs(1);

/// Status lines reach the state file (rewritten) at most this often while running: with hundreds of
/// children, notify messages arrive by the hundred per second and a write per message was most of the
/// supervisor's work. State changes (spawned, READY, exited...) are written within `STATE_CHANGE_GAP`.
const STATE_WRITE_INTERVAL: Duration = Duration::from_millis(250);

/// The shortest time between two writes of the state file for state changes.
const STATE_CHANGE_GAP: Duration = Duration::from_millis(50);

const COLORS: [u8; 6] = [36, 33, 32, 35, 34, 31];

/// Runs the deployment until SIGINT/SIGTERM or `mesh down`, then stops everything in reverse dependency order.
/// Must be driven by `block_on` on a thread that lives as long as the process (worker threads may serve its I/O
/// tasks): children are spawned from the dispatcher, and their parent-death signal is tied to the thread that
/// spawned them.
pub async fn run(opts: Options, _lock: InstanceLock) -> Result<(), SupervisorError> {
    let dir = opts.state_dir.clone();
    // Everything this process and its children create is private to the user (the settings may hold secrets).
    crate::private::restrict_umask();
    for d in [dir.root().to_path_buf(), dir.logs(), dir.notify_dir()] {
        crate::private::create_dir(&d).map_err(io(format!("create {}", d.display())))?;
    }
    if let Err(e) = child::become_subreaper() {
        tracing::warn!(error = %e, "could not become a child subreaper; orphaned grandchildren go to init");
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();

    // The lock is ours, so any socket left behind belongs to a dead supervisor.
    let socket = dir.socket();
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(io(format!("bind {}", socket.display())))?;
    set_mode(&socket, 0o600).map_err(io("restrict the control socket"))?;
    tokio::spawn(serve_control(listener, tx.clone()));

    let console = match opts.output {
        Output::Terminal { color } => Console::new(color),
        Output::LogsOnly => Console::plain(),
    };
    let mut procs = Vec::new();
    for (i, spec) in opts.spec.processes.iter().enumerate() {
        let notify = dir.notify_dir().join(format!("{}.sock", spec.name));
        let _ = std::fs::remove_file(&notify);
        let sock = UnixDatagram::bind(&notify).map_err(io(format!("bind {}", notify.display())))?;
        tokio::spawn(read_notify(spec.name.clone(), sock, tx.clone()));
        let log_path = dir.log(&spec.name);
        let log = RotatingLog::open(&log_path, crate::rotating::LOG_LIMIT)
            .map_err(io(format!("open {}", log_path.display())))?;
        procs.push(Proc {
            status: ProcessStatus::new(&spec.name),
            tracker: RestartTracker::new(spec.restart),
            spec: spec.clone(),
            pgid: None,
            waiting: true,
            restart_at: None,
            ready_deadline: None,
            watchdog_deadline: None,
            resume_at: None,
            no_restart: false,
            kill_cause: None,
            log: Arc::new(Mutex::new(log)),
            color: i % COLORS.len(),
            line: console.status_line(&spec.name),
        });
    }
    let by_name = procs.iter().enumerate().map(|(i, p)| (p.spec.name.clone(), i)).collect();
    let mut sup = Supervisor {
        by_name,
        events: EventLog::new(dir.events()),
        rng: StdRng::seed_from_u64(opts.seed),
        opts,
        procs,
        stopping: false,
        force: Arc::new(AtomicBool::new(false)),
        console,
        state_written: None,
        state_changed: std::cell::Cell::new(true),
        timers_ran: None,
    };
    sup.event(
        "supervisor",
        "started",
        json!({"pid": std::process::id(), "infra": sup.opts.infra, "kafka": sup.opts.kafka, "redis": sup.opts.redis}),
    );
    // The supervisor's own endpoint is listed before any process says where its are.
    sup.write_targets();

    let mut sigchld = signal(SignalKind::child()).map_err(io("watch SIGCHLD"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("watch SIGINT"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("watch SIGTERM"))?;
    // A closed terminal stops the deployment in order, rather than killing the supervisor (and, through the
    // parent-death signal, every child) abruptly.
    let mut sighup = signal(SignalKind::hangup()).map_err(io("watch SIGHUP"))?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut down_reply: Option<(oneshot::Sender<Response>, Option<f64>)> = None;
    loop {
        sup.start_waiting();
        sup.write_state_soon();
        tokio::select! {
            Some(msg) = rx.recv() => match msg {
                Msg::Notify { name, text, sender } => sup.on_notify(&name, &text, sender),
                Msg::Control { request: Request::Down { timeout_secs }, reply } => {
                    down_reply = Some((reply, timeout_secs));
                    break;
                }
                Msg::Control { request, reply } => {
                    let _ = reply.send(sup.on_request(request));
                }
            },
            _ = sigchld.recv() => sup.reap(),
            _ = tick.tick() => {
                sup.reap();
                sup.timers();
                for i in 0..sup.procs.len() {
                    sup.show(i);
                }
            }
            _ = sigint.recv() => { sup.say("stopping (Ctrl-C again to kill everything now)"); break; }
            _ = sigterm.recv() => { sup.say("stopping on SIGTERM"); break; }
            _ = sighup.recv() => { sup.say("stopping on SIGHUP (terminal closed)"); break; }
        }
    }
    let force = Arc::clone(&sup.force);
    tokio::spawn(async move {
        tokio::select! { _ = sigint.recv() => {}, _ = sigterm.recv() => {} }
        force.store(true, Ordering::SeqCst);
    });
    // Checked when decoded; a wait no duration can hold falls back to each process's own grace.
    let timeout = down_reply.as_ref().and_then(|(_, t)| *t).and_then(|t| control::seconds("timeout_secs", t).ok());
    sup.stop_all(timeout).await;
    sup.console.clear();
    sup.event("supervisor", "stopped", json!({}));
    sup.write_state();
    // Before the answer: `mesh down` returns when it arrives, and the control task may write it at once from
    // another thread; an open connection outlives the socket's name.
    let _ = std::fs::remove_file(&socket);
    if let Some((reply, _)) = down_reply {
        let _ = reply.send(Response::ok(sup.state_file(false)));
    }
    // Give the control connection a moment to flush the last answer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

fn set_mode(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

impl Supervisor {
    fn event(&self, process: &str, event: &str, detail: Value) {
        let detail = match detail {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.events.append(&Event {
            at_ms: mesh_transport::clock::now_ms(),
            process: process.to_owned(),
            event: event.to_owned(),
            detail,
        });
        self.state_changed.set(true);
    }

    fn say(&self, text: &str) {
        match self.opts.output {
            Output::Terminal { .. } => self.console.line("mesh", 1, text),
            Output::LogsOnly => tracing::info!("{text}"),
        }
    }

    /// Refreshes the live status line of process `i`.
    fn show(&self, i: usize) {
        let p = &self.procs[i];
        let state = format!("{:?}", p.status.state).to_uppercase();
        let pid = p.status.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        let up =
            p.status.started_at_ms.filter(|_| p.pgid.is_some()).map_or_else(String::new, |t| {
                format!(" up {}s", mesh_transport::clock::now_ms().saturating_sub(t) / 1000)
            });
        let status = p.status.status_line.as_deref().map_or_else(String::new, |s| format!(" · {s}"));
        p.line.set(format!("{state:<9} pid {pid:<8} restarts {}{up}{status}", p.status.restarts));
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn state_file(&self, with_usage: bool) -> StateFile {
        let processes = self
            .procs
            .iter()
            .map(|p| {
                let mut s = p.status.clone();
                if with_usage && let Some((cpu, rss)) = p.pgid.and_then(child::usage) {
                    s.cpu_seconds = Some(cpu);
                    s.rss_bytes = Some(rss);
                }
                s
            })
            .collect();
        let pid = i32::try_from(std::process::id()).unwrap_or(-1);
        StateFile {
            supervisor_pid: pid,
            supervisor_start_ticks: child::start_ticks(pid),
            infra: self.opts.infra.clone(),
            kafka: self.opts.kafka.clone(),
            redis: self.opts.redis.clone(),
            topic_prefix: self.opts.topic_prefix.clone(),
            processes,
            updated_at_ms: mesh_transport::clock::now_ms(),
        }
    }

    /// Writes the state file when a process changed state (at most every `STATE_CHANGE_GAP`: 500 agents starting
    /// are 1,500 changes, each a rewrite of every process's entry), else when it is older than
    /// `STATE_WRITE_INTERVAL`. The 100 ms tick comes back here, so a change is on disk within about 150 ms and a new
    /// status line within about a third of a second.
    fn write_state_soon(&mut self) {
        let age = self.state_written.map(|t| t.elapsed());
        let changed = self.state_changed.get();
        if age.is_none_or(|a| a >= STATE_WRITE_INTERVAL || (changed && a >= STATE_CHANGE_GAP)) {
            self.state_changed.set(false);
            self.write_state();
            self.state_written = Some(Instant::now());
        }
    }

    /// Writes `prometheus-targets.json` (Prometheus `file_sd_configs` format: one target group per process, labelled
    /// with its name) when a process says where its metrics are: Prometheus then follows restarts, whose ports
    /// change, without a reload.
    fn write_targets(&self) {
        let own = self.opts.metrics.iter().map(|a| json!({ "targets": [a], "labels": { "process": "supervisor" } }));
        let groups: Vec<serde_json::Value> = own
            .chain(self.procs.iter().filter_map(|p| {
                let address = p.status.metrics.as_ref()?;
                Some(json!({ "targets": [address], "labels": { "process": p.spec.name } }))
            }))
            .collect();
        let path = self.opts.state_dir.prometheus_targets();
        let tmp = path.with_extension("json.tmp");
        let written = crate::private::create(&tmp)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(format!("{:#}\n", serde_json::Value::Array(groups)).as_bytes())
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "could not write the Prometheus targets");
        }
    }

    fn write_state(&self) {
        if let Err(e) = self.state_file(false).write(&self.opts.state_dir.state()) {
            tracing::warn!(error = %e, "could not write the state file");
        }
    }

    fn set_state(&mut self, i: usize, state: ProcState) {
        let p = &mut self.procs[i];
        if p.status.state != state {
            p.status.state = state;
            let name = p.spec.name.clone();
            self.say(
                &format!("{name} {state:?}")
                    .replace("Ready", "READY")
                    .replace("Starting", "STARTING")
                    .replace("Backoff", "BACKOFF")
                    .replace("Failed", "FAILED")
                    .replace("Stopping", "STOPPING")
                    .replace("Stopped", "STOPPED"),
            );
        }
    }

    /// Spawns every waiting process whose dependencies are all READY.
    /// Starts every waiting process whose dependencies are all READY (again after each start, for a dependency that
    /// is ready as soon as it runs). Runs on every turn of the loop, so it costs O(processes), not O(processes²).
    fn start_waiting(&mut self) {
        while !self.stopping {
            let startable: Vec<usize> = (0..self.procs.len())
                .filter(|&i| {
                    let p = &self.procs[i];
                    p.waiting
                        && p.spec
                            .depends_on
                            .iter()
                            .all(|d| self.index(d).is_some_and(|j| self.procs[j].status.state == ProcState::Ready))
                })
                .collect();
            if startable.is_empty() {
                return;
            }
            for i in startable {
                self.procs[i].waiting = false;
                self.spawn(i);
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        let notify = self.opts.state_dir.notify_dir().join(format!("{}.sock", self.procs[i].spec.name));
        let name = self.procs[i].spec.name.clone();
        match child::spawn(&self.procs[i].spec, &notify, &self.opts.env) {
            Ok(spawned) => {
                let console = match self.opts.output {
                    Output::Terminal { .. } => Some((self.console.clone(), COLORS[self.procs[i].color])),
                    Output::LogsOnly => None,
                };
                let p = &mut self.procs[i];
                tokio::spawn(pump_output(name.clone(), console.clone(), spawned.stdout, Arc::clone(&p.log)));
                tokio::spawn(pump_output(name.clone(), console, spawned.stderr, Arc::clone(&p.log)));
                p.pgid = Some(spawned.pid);
                p.status.pid = Some(spawned.pid);
                p.status.start_ticks = child::start_ticks(spawned.pid);
                p.status.started_at_ms = Some(mesh_transport::clock::now_ms());
                p.status.ready_at_ms = None;
                p.status.status_line = None;
                p.status.metrics = None;
                p.restart_at = None;
                p.watchdog_deadline = None;
                p.ready_deadline = Some(Instant::now() + p.spec.ready_timeout);
                let ready_at_once = !p.spec.notify && p.spec.ready_tcp.is_none();
                self.event(&name, "spawned", json!({"pid": spawned.pid}));
                self.set_state(i, ProcState::Starting);
                if ready_at_once {
                    self.mark_ready(i);
                }
            }
            Err(e) => {
                self.event(&name, "spawn_failed", json!({"error": e.to_string()}));
                self.say(&format!("{name} could not be started: {e}"));
                self.after_exit(i, ExitKind::Failure);
            }
        }
    }

    fn mark_ready(&mut self, i: usize) {
        let now = mesh_transport::clock::now_ms();
        let p = &mut self.procs[i];
        p.status.ready_at_ms = Some(now);
        p.ready_deadline = None;
        p.watchdog_deadline = p.spec.watchdog.map(|w| Instant::now() + w);
        p.tracker.ready(now);
        let name = p.spec.name.clone();
        let pid = p.status.pid;
        self.event(&name, "ready", json!({"pid": pid}));
        self.set_state(i, ProcState::Ready);
    }

    fn on_notify(&mut self, name: &str, text: &str, sender: Option<i32>) {
        let Some(i) = self.index(name) else { return };
        let Some(pgid) = self.procs[i].pgid else { return };
        // Believed only from the process's own group: anyone else who can reach the socket could otherwise mark it
        // READY or keep its watchdog quiet.
        let sender_group = sender.and_then(|pid| nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).ok());
        if sender_group.map(nix::unistd::Pid::as_raw) != Some(pgid) {
            tracing::warn!(process = %name, ?sender, "ignored a notify message from outside the process's group");
            return;
        }
        for line in text.lines() {
            if line == "READY=1" && self.procs[i].status.state == ProcState::Starting {
                self.mark_ready(i);
            } else if let Some(status) = line.strip_prefix("STATUS=") {
                self.procs[i].status.status_line = Some(status.to_owned());
            } else if let Some(address) = line.strip_prefix("MESH_METRICS=")
                && address.parse::<std::net::SocketAddr>().is_ok()
                && self.procs[i].status.metrics.as_deref() != Some(address)
            {
                self.procs[i].status.metrics = Some(address.to_owned());
                self.write_targets();
            } else if line == "WATCHDOG=1" {
                let p = &mut self.procs[i];
                p.watchdog_deadline = p.spec.watchdog.map(|w| Instant::now() + w);
            }
        }
    }

    fn reap(&mut self) {
        for (pid, ended) in child::reap_all() {
            match self.procs.iter().position(|p| p.pgid == Some(pid)) {
                Some(i) => self.on_exit(i, ended),
                None => self.event("supervisor", "reaped", json!({"pid": pid, "note": "adopted descendant"})),
            }
        }
    }

    fn on_exit(&mut self, i: usize, ended: Ended) {
        // Its endpoint went with it; Prometheus stops scraping it (and sees the successor's once it says where).
        if self.procs[i].status.metrics.take().is_some() {
            self.write_targets();
        }
        let (code, sig) = match ended {
            Ended::Code(c) => (Some(c), None),
            Ended::Signal(s) => (None, Some(s.as_str().to_owned())),
        };
        let p = &mut self.procs[i];
        let pgid = p.pgid.take();
        p.status.pid = None;
        p.status.start_ticks = None;
        p.status.last_exit = Some(ExitInfo { code, signal: sig.clone(), at_ms: mesh_transport::clock::now_ms() });
        p.ready_deadline = None;
        p.watchdog_deadline = None;
        p.resume_at = None;
        let cause = p.kill_cause.take();
        let name = p.spec.name.clone();
        // What the leader left behind in its group goes with it.
        if let Some(g) = pgid {
            let _ = child::signal_group(g, Signal::SIGKILL);
        }
        self.event(&name, "exited", json!({"code": code, "signal": sig, "cause": cause}));
        if self.stopping {
            return;
        }
        if std::mem::take(&mut self.procs[i].no_restart) {
            self.event(&name, "stopped", json!({"cause": "operator"}));
            self.set_state(i, ProcState::Stopped);
            return;
        }
        let kind = if code == Some(0) && cause.is_none() { ExitKind::Clean } else { ExitKind::Failure };
        self.after_exit(i, kind);
    }

    fn after_exit(&mut self, i: usize, kind: ExitKind) {
        let jitter: u32 = self.rng.random();
        let name = self.procs[i].spec.name.clone();
        match self.procs[i].tracker.exited(kind, mesh_transport::clock::now_ms(), jitter) {
            RestartDecision::RestartAfter(delay) => {
                self.procs[i].restart_at = Some(Instant::now() + Duration::from_millis(delay));
                self.event(&name, "backoff", json!({"delay_ms": delay}));
                self.set_state(i, ProcState::Backoff);
            }
            RestartDecision::Stay => {
                self.event(&name, "stopped", json!({"cause": "exit"}));
                self.set_state(i, ProcState::Stopped);
            }
            RestartDecision::Failed => {
                let p = self.procs[i].tracker.policy();
                self.event(&name, "failed", json!({"restarts": p.max_restarts, "within_ms": p.within_ms}));
                self.set_state(i, ProcState::Failed);
                self.say(&format!(
                    "{name} FAILED: more than {} restarts within {} s; `mesh restart {name}` tries again",
                    p.max_restarts,
                    p.within_ms / 1000
                ));
            }
        }
    }

    fn timers(&mut self) {
        let now = Instant::now();
        if let Some(gap) = self.timers_ran.map(|t| now.saturating_duration_since(t))
            && gap > SUPERVISOR_STALL
        {
            self.forgive_stall(gap);
        }
        self.timers_ran = Some(now);
        for i in 0..self.procs.len() {
            let p = &self.procs[i];
            if p.restart_at.is_some_and(|t| t <= now) && !self.stopping {
                self.procs[i].status.restarts += 1;
                self.spawn(i);
                continue;
            }
            let p = &self.procs[i];
            if let (Some(_), Some(addr), ProcState::Starting) = (p.pgid, p.spec.ready_tcp, p.status.state)
                && std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(20)).is_ok()
            {
                self.mark_ready(i);
                continue;
            }
            let p = &self.procs[i];
            if let (Some(pgid), Some(t)) = (p.pgid, p.ready_deadline)
                && t <= now
                && p.status.state == ProcState::Starting
            {
                self.kill(i, pgid, Signal::SIGKILL, "ready-timeout");
                continue;
            }
            let p = &self.procs[i];
            if let (Some(pgid), Some(t)) = (p.pgid, p.watchdog_deadline)
                && t <= now
                && p.status.state == ProcState::Ready
                && p.resume_at.is_none()
            {
                self.procs[i].watchdog_deadline = None;
                self.kill(i, pgid, Signal::SIGKILL, "watchdog");
                continue;
            }
            let p = &self.procs[i];
            if let (Some(pgid), Some(t)) = (p.pgid, p.resume_at)
                && t <= now
            {
                self.procs[i].resume_at = None;
                let name = self.procs[i].spec.name.clone();
                let _ = child::signal_group(pgid, Signal::SIGCONT);
                let p = &mut self.procs[i];
                p.watchdog_deadline = p.spec.watchdog.map(|w| Instant::now() + w);
                self.event(&name, "resumed", json!({"pid": pgid}));
            }
        }
    }

    /// Moves every watchdog and readiness deadline by `gap`, the time the supervisor could not listen.
    fn forgive_stall(&mut self, gap: Duration) {
        for p in &mut self.procs {
            p.watchdog_deadline = p.watchdog_deadline.map(|t| t + gap);
            p.ready_deadline = p.ready_deadline.map(|t| t + gap);
        }
        let ms = u64::try_from(gap.as_millis()).unwrap_or(u64::MAX);
        tracing::warn!(
            stalled_ms = ms,
            "the supervisor itself was stalled; watchdog and ready deadlines moved by as much"
        );
        self.event("supervisor", "stalled", json!({"ms": ms}));
    }

    fn kill(&mut self, i: usize, pgid: i32, signal: Signal, cause: &str) {
        let name = self.procs[i].spec.name.clone();
        if matches!(signal, Signal::SIGKILL | Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT | Signal::SIGABRT) {
            self.procs[i].kill_cause = Some(cause.to_owned());
        }
        let result = child::signal_group(pgid, signal);
        self.event(&name, "killed", json!({"pid": pgid, "signal": signal.as_str(), "cause": cause}));
        if let Err(e) = result {
            tracing::warn!(process = %name, error = %e, "signal not delivered");
        }
    }

    fn on_request(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response::ok(self.state_file(true)),
            Request::Kill { name, random, signal, pause_secs, no_restart } => {
                let Some(sig) = child::parse_signal(&signal) else {
                    return Response::error(format!(
                        "unknown signal {signal:?}; use KILL, TERM, STOP, CONT or a number"
                    ));
                };
                let running: Vec<usize> = (0..self.procs.len()).filter(|i| self.procs[*i].pgid.is_some()).collect();
                let i = match (name, random) {
                    (Some(n), _) => match self.index(&n) {
                        Some(i) => i,
                        None => return Response::error(format!("no process named {n:?}")),
                    },
                    (None, true) if !running.is_empty() => running[self.rng.random_range(0..running.len())],
                    (None, true) => return Response::error("no process is running"),
                    (None, false) => return Response::error("name a process or pass --random"),
                };
                let Some(pgid) = self.procs[i].pgid else {
                    return Response::error(format!("{} is not running", self.procs[i].spec.name));
                };
                if no_restart {
                    self.procs[i].no_restart = true;
                }
                let pause = match pause_secs.map(|secs| control::seconds("pause_secs", secs)).transpose() {
                    Ok(pause) => pause,
                    Err(e) => return Response::error(e),
                };
                if sig == Signal::SIGSTOP
                    && let Some(pause) = pause
                {
                    self.procs[i].resume_at = Some(Instant::now() + pause);
                }
                self.kill(i, pgid, sig, "chaos");
                let mut r = Response::ok(self.state_file(false));
                r.target = Some(self.procs[i].spec.name.clone());
                r
            }
            Request::Restart { name } => {
                let Some(i) = self.index(&name) else { return Response::error(format!("no process named {name:?}")) };
                if self.procs[i].pgid.is_some() {
                    return Response::error(format!(
                        "{name} is running; `mesh kill {name}` restarts it under the policy"
                    ));
                }
                self.procs[i].tracker.reset();
                self.procs[i].waiting = false;
                self.event(&name, "restarted", json!({"cause": "operator"}));
                self.spawn(i);
                Response::ok(self.state_file(false))
            }
            Request::Down { .. } => Response::error("handled by the loop"),
        }
    }

    /// Dependency depth: 0 for processes without dependencies.
    fn depth(&self, i: usize) -> usize {
        self.procs[i].spec.depends_on.iter().filter_map(|d| self.index(d)).map(|j| self.depth(j) + 1).max().unwrap_or(0)
    }

    /// Stops in reverse dependency order: SIGTERM to each group, then SIGKILL after its timeout, and waits until
    /// the whole group is gone, not just its leader; finally stops and reaps adopted descendants.
    async fn stop_all(&mut self, timeout: Option<Duration>) {
        self.stopping = true;
        for i in 0..self.procs.len() {
            self.procs[i].restart_at = None;
            if self.procs[i].pgid.is_none() && self.procs[i].status.state != ProcState::Failed {
                self.set_state(i, ProcState::Stopped);
            }
        }
        let max_depth = (0..self.procs.len()).map(|i| self.depth(i)).max().unwrap_or(0);
        for level in (0..=max_depth).rev() {
            let members: Vec<usize> = (0..self.procs.len()).filter(|i| self.depth(*i) == level).collect();
            let mut pending: Vec<(usize, i32, Instant, bool)> = Vec::new();
            for &i in &members {
                // The leader may be gone while its group lives on: stop by group.
                let Some(pgid) = self.procs[i].pgid.or(self.procs[i].status.pid) else { continue };
                let grace = timeout.unwrap_or(self.procs[i].spec.stop_timeout);
                let _ = child::signal_group(pgid, Signal::SIGCONT);
                self.kill(i, pgid, Signal::SIGTERM, "stop");
                self.set_state(i, ProcState::Stopping);
                pending.push((i, pgid, Instant::now() + grace, false));
            }
            let level_deadline = Instant::now()
                + pending
                    .iter()
                    .map(|(i, ..)| timeout.unwrap_or(self.procs[*i].spec.stop_timeout))
                    .max()
                    .unwrap_or_default()
                + Duration::from_secs(5);
            while !pending.is_empty() {
                self.reap();
                let now = Instant::now();
                let force = self.force.load(Ordering::SeqCst);
                let mut still = Vec::new();
                for (i, pgid, deadline, killed) in pending {
                    if !child::group_alive(pgid) {
                        self.procs[i].pgid = None;
                        self.event(&self.procs[i].spec.name.clone(), "stopped", json!({"cause": "down"}));
                        self.set_state(i, ProcState::Stopped);
                        continue;
                    }
                    if !killed && (now >= deadline || force) {
                        self.kill(i, pgid, Signal::SIGKILL, if force { "forced" } else { "stop-timeout" });
                        still.push((i, pgid, deadline, true));
                    } else {
                        still.push((i, pgid, deadline, killed));
                    }
                }
                pending = still;
                if !pending.is_empty() && now >= level_deadline {
                    let names: Vec<String> = pending.iter().map(|(i, ..)| self.procs[*i].spec.name.clone()).collect();
                    self.say(&format!("still not gone after SIGKILL: {}", names.join(", ")));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.write_state();
        }
        // Descendants that escaped their group (setsid) were re-parented to us: stop and reap them too.
        let me = i32::try_from(std::process::id()).unwrap_or(-1);
        for _ in 0..40 {
            let orphans = child::children_of(me);
            if orphans.is_empty() {
                break;
            }
            for pid in orphans {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                self.event("supervisor", "killed", json!({"pid": pid, "signal": "SIGKILL", "cause": "orphan"}));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.reap();
        }
    }
}
