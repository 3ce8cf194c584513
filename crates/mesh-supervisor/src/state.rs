//! What the supervisor knows and records: each process's state, `.mesh/state.json` (rewritten atomically) and the
//! append-only `.mesh/events.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The life cycle of a supervised process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcState {
    /// Spawned, not READY yet (or waiting for its dependencies).
    Starting,
    /// Sent `READY=1` (or runs, for processes that do not notify).
    Ready,
    /// Exited; will be started again after a delay.
    Backoff,
    /// Gave up: too many restarts in the window, or it never became ready. `mesh restart NAME` revives it.
    Failed,
    /// Being stopped.
    Stopping,
    /// Not running, on purpose (stopped by an operator, clean exit, or `restart = "never"`).
    Stopped,
}

/// How a process last ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal name, if a signal ended it.
    pub signal: Option<String>,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// One process as shown by `mesh status` and kept in `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Name.
    pub name: String,
    /// State.
    pub state: ProcState,
    /// PID of the leader (also the process group id), while running.
    pub pid: Option<i32>,
    /// Start time of the leader in clock ticks since boot (`/proc/PID/stat` field 22): with the PID, it identifies
    /// the process even after PID reuse.
    pub start_ticks: Option<u64>,
    /// Restarts since the supervisor started.
    pub restarts: u32,
    /// When the current run was spawned (ms since the Unix epoch).
    pub started_at_ms: Option<u64>,
    /// When the current run became READY.
    pub ready_at_ms: Option<u64>,
    /// How the previous run ended.
    pub last_exit: Option<ExitInfo>,
    /// Last `STATUS=` line the process sent.
    pub status_line: Option<String>,
    /// Where the current run serves its Prometheus metrics (`host:port`), as it said (`MESH_METRICS=`).
    #[serde(default)]
    pub metrics: Option<String>,
    /// CPU seconds used by the current run (filled in by `status`).
    pub cpu_seconds: Option<f64>,
    /// Resident memory of the leader in bytes (filled in by `status`).
    pub rss_bytes: Option<u64>,
}

impl ProcessStatus {
    /// A process not started yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            state: ProcState::Starting,
            pid: None,
            start_ticks: None,
            restarts: 0,
            started_at_ms: None,
            ready_at_ms: None,
            last_exit: None,
            status_line: None,
            metrics: None,
            cpu_seconds: None,
            rss_bytes: None,
        }
    }
}

/// The content of `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// PID of the supervisor.
    pub supervisor_pid: i32,
    /// Its start time in clock ticks since boot.
    pub supervisor_start_ticks: Option<u64>,
    /// How the infrastructure is provided (`embedded`, `external`).
    pub infra: String,
    /// Kafka bootstrap servers the processes use.
    pub kafka: String,
    /// Redis URL (or `file://` store) the processes use.
    pub redis: String,
    /// Topic prefix.
    pub topic_prefix: String,
    /// Every process, in start order.
    pub processes: Vec<ProcessStatus>,
    /// When written.
    pub updated_at_ms: u64,
}

impl StateFile {
    /// Writes the file atomically (temporary file, rename), so a reader never sees half of it.
    ///
    /// No fsync: the file describes running processes, and a crash that loses the page cache (power, kernel) takes
    /// every one of them with it; the supervisor crashing alone loses nothing written. An fsync per write (up to four
    /// a second) cost the supervisor's loop up to a disk flush each time, on disks Kafka keeps busy.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        // Buffered: unbuffered, serde_json made a write system call per token (thousands per file at 500 processes).
        let mut f = std::io::BufWriter::new(crate::private::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, self)?;
        f.write_all(b"\n")?;
        f.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads the file, if present.
    pub fn read(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One line of `events.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// Which process (`supervisor` for the supervisor itself).
    pub process: String,
    /// `spawned`, `ready`, `exited`, `backoff`, `killed`, `failed`, `stopped`, `restarted`, `reaped`, `watchdog`...
    pub event: String,
    /// Details: pid, code, signal, delay_ms, cause.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// The append-only event log.
pub struct EventLog {
    path: PathBuf,
}

impl EventLog {
    /// Appends to `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Appends one event as a JSON line; a failure to log is reported, never fatal. The line and its newline go in
    /// one `write` on a file opened for appending, so another process appending to the same log (the chaos harness
    /// adds its faults) can never land between them and tear two events into one unreadable line.
    pub fn append(&self, event: &Event) {
        let mut line = match serde_json::to_string(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "event not serializable");
                return;
            }
        };
        line.push('\n');
        let written = crate::private::open_append(&self.path).and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.path.display(), "could not append to the event log");
        }
    }

    /// Every event so far (for tests and tools).
    pub fn read_all(path: &Path) -> std::io::Result<Vec<Event>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }
}

/// The files of one state directory (default `.mesh`).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The directory (created when the supervisor starts).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// The control socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("mesh.sock")
    }
    /// The single-instance lock.
    pub fn lock(&self) -> PathBuf {
        self.root.join("mesh.lock")
    }
    /// The state file.
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The event log.
    pub fn events(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    /// Per-process logs.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// One process's log.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    /// The running processes' metrics endpoints, for Prometheus's file-based discovery (`file_sd_configs`).
    pub fn prometheus_targets(&self) -> PathBuf {
        self.root.join("prometheus-targets.json")
    }
    /// sd_notify sockets.
    pub fn notify_dir(&self) -> PathBuf {
        self.root.join("notify")
    }
    /// The supervisor's own log when detached.
    pub fn supervisor_log(&self) -> PathBuf {
        self.root.join("supervisor.log")
    }
    /// The deployment secret `mesh up` makes when none is given, which readers of the deployment (`mesh inspect`,
    /// `mesh key`) and the other supervisors of a deployment spread over machines use.
    pub fn secret(&self) -> PathBuf {
        self.root.join("secret")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_atomically() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.json");
        let s = StateFile {
            supervisor_pid: 1,
            supervisor_start_ticks: Some(5),
            infra: "embedded".into(),
            kafka: "127.0.0.1:1".into(),
            redis: "file:///x".into(),
            topic_prefix: "agentmesh".into(),
            processes: vec![ProcessStatus::new("topology")],
            updated_at_ms: 9,
        };
        s.write(&path).expect("write");
        assert_eq!(StateFile::read(&path).expect("read"), Some(s));
        assert!(!path.with_extension("json.tmp").exists());
        assert_eq!(StateFile::read(&dir.path().join("none.json")).expect("read"), None);
    }

    #[test]
    fn events_append_as_json_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = EventLog::new(dir.path().join("events.jsonl"));
        for e in ["spawned", "ready"] {
            log.append(&Event { at_ms: 1, process: "a".into(), event: e.into(), detail: Default::default() });
        }
        let read = EventLog::read_all(&dir.path().join("events.jsonl")).expect("read");
        assert_eq!(read.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["spawned", "ready"]);
    }

    #[test]
    fn two_writers_appending_at_once_never_tear_a_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        const EACH: usize = 3_000;
        let writers: Vec<_> = ["supervisor", "chaos"]
            .into_iter()
            .map(|process| {
                let log = EventLog::new(path.clone());
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        let event = Event {
                            at_ms: n as u64,
                            process: process.into(),
                            event: "x".into(),
                            detail: Default::default(),
                        };
                        log.append(&event);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 2 * EACH);
        assert_eq!(EventLog::read_all(&path).expect("read").len(), 2 * EACH, "every line is one whole event");
    }
}
