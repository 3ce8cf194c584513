//! CPU profiles of `mesh bench` per kind of process (all agents together, the topology manager, the broker...):
//! one system-wide `perf record` per kind, its samples filtered to the kind's pids, folded with inferno's perf collapser into `<kind>.folded` and drawn as
//! `<kind>.svg`, plus the leaf frames that take the most samples, so a report can say where each kind spends its
//! CPU. Folding and the leaf summary are a pure function ([`fold_perf_script`]), tested without perf.
//!
//! Limits: call graphs come from frame pointers (`-g`; DWARF unwinding is far too heavy for hundreds of processes),
//! and release Rust omits them, so the frames above a leaf may be missing or wrong; the leaf, the sampled function
//! itself, is always right, which is why [`KindProfile::top`] ranks by self time. JVM code without a perf map
//! (`-XX:+PreserveFramePointer` plus perf-map-agent) shows as `[perf-<pid>.map]` or `[unknown]`.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use inferno::collapse::Collapse;
use inferno::collapse::perf::{Folder, Options as FoldOptions};
use inferno::flamegraph::{self, Options as FlameOptions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, geteuid};

/// How many leaf frames [`KindProfile::top`] keeps.
const TOP_FRAMES: usize = 10;
/// How long `perf record` gets to fail visibly (bad pid list, no permission) before [`Profiler::start`] returns.
const START_GRACE: Duration = Duration::from_millis(500);
/// How long [`Profiler::finish`] waits for all recordings to write their data after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The fields `perf script` prints: the default ones without the period, so every sample counts once.
const SCRIPT_FIELDS: &str = "comm,pid,tid,time,event,ip,sym,dso";
/// What to run when perf is missing on Debian.
const INSTALL_HINT: &str = "install it with `apt-get install linux-perf` (Debian; `linux-tools` elsewhere)";

/// One kind of process to profile as a whole: its samples are merged into one flame graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRequest {
    /// The kind, used in file names (`<kind>.svg`): letters, digits, `-` and `_`; each kind once.
    pub kind: String,
    /// The processes of that kind; those already gone at start are left out.
    pub pids: Vec<i32>,
}

/// The profile of one kind, as [`Profiler::finish`] wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct KindProfile {
    /// The kind, as requested.
    pub kind: String,
    /// How many processes were recorded (the requested ones still alive at start).
    pub processes: usize,
    /// Samples in the profile (with `cpu-clock`, one per 1/frequency of CPU time).
    pub samples: u64,
    /// The flame graph, `<out_dir>/<kind>.svg`.
    pub svg: PathBuf,
    /// The leaf functions taking the most samples, with their share of all samples (0..1), at most 10, largest
    /// first: where the CPU time is spent itself, not in callees. Kernel frames end in `_[k]`, JIT frames in `_[j]`,
    /// and a frame perf could not resolve is named by its module (`[libjvm.so]`, `[perf-123.map]`) or `[unknown]`.
    pub top: Vec<(String, f64)>,
}

/// A `perf script` output folded into stacks, with its leaf summary: the pure half of the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// Folded stacks, one `comm;outer;...;leaf count` line each, the input of a flame graph.
    pub stacks: String,
    /// Total samples over all stacks.
    pub samples: u64,
    /// The leaf functions by self samples, as in [`KindProfile::top`].
    pub top: Vec<(String, f64)>,
}

/// Why a profile could not be taken. Messages name the fix when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No working perf on PATH.
    #[error("perf not found on PATH: {INSTALL_HINT}")]
    PerfNotFound,
    /// `apt-get` could not install perf.
    #[error("`{command}` failed ({status}): {output_tail}")]
    Install {
        /// The command run.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// The end of its output.
        output_tail: String,
    },
    /// The kernel refused perf access to the processes.
    #[error(
        "perf may not record kind `{kind}`: run as root, or lower the kernel's restriction with \
         `sysctl -w kernel.perf_event_paranoid=-1`; the end of {log}: {log_tail}"
    )]
    NotPermitted {
        /// The kind.
        kind: String,
        /// Where perf's output went.
        log: PathBuf,
        /// The end of that output.
        log_tail: String,
    },
    /// `perf record` ended on its own, with an error.
    #[error("perf record of kind `{kind}` failed ({status}); the end of {log}: {log_tail}")]
    RecordFailed {
        /// The kind.
        kind: String,
        /// How perf ended.
        status: ExitStatus,
        /// Where perf's output went.
        log: PathBuf,
        /// The end of that output.
        log_tail: String,
    },
    /// `perf record` was still writing its data long after SIGINT, and was killed.
    #[error("perf record of kind `{kind}` did not stop within {seconds} s of SIGINT and was killed; see {log}")]
    StopTimeout {
        /// The kind.
        kind: String,
        /// How long it was given.
        seconds: u64,
        /// Where perf's output went.
        log: PathBuf,
    },
    /// `perf script` could not read a recording.
    #[error("perf script of kind `{kind}` failed ({status}); the end of {log}: {log_tail}")]
    ScriptFailed {
        /// The kind.
        kind: String,
        /// How perf ended.
        status: ExitStatus,
        /// Where perf's output went.
        log: PathBuf,
        /// The end of that output.
        log_tail: String,
    },
    /// A kind name that cannot be a file name, or a kind requested twice.
    #[error("invalid kind `{0}`: use letters, digits, `-` and `_`, each kind once")]
    InvalidKind(String),
    /// None of the pids of a kind was alive.
    #[error("no live process to profile for kind `{0}`")]
    NoProcesses(String),
    /// perf could not be signalled.
    #[error("failed to send SIGINT to perf (pid {pid}): {source}")]
    Signal {
        /// perf's pid.
        pid: u32,
        /// Why it failed.
        source: nix::Error,
    },
    /// A file or a process could not be handled.
    #[error("failed to {what}: {source}")]
    Io {
        /// What was attempted.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
}

/// The `perf record` processes of a profile in progress, one per kind. Dropping it without [`Profiler::finish`]
/// kills them, so an aborted benchmark leaves no perf behind.
#[derive(Debug)]
pub struct Profiler {
    perf: PathBuf,
    recordings: Vec<Recording>,
}

#[derive(Debug)]
struct Recording {
    kind: String,
    processes: usize,
    /// The kind's processes: `perf script` keeps only their samples.
    pids: String,
    child: Child,
    data: PathBuf,
    log: PathBuf,
    out_dir: PathBuf,
}

impl Profiler {
    /// Starts one `perf record` per kind (sampling at `frequency_hz`, call graphs from frame pointers) over the
    /// given pids, writing `<out_dir>/<kind>.perf.data` and perf's own output to `<out_dir>/<kind>.perf.log`, so
    /// each kind gets its own profile however many processes it has. Uses the hardware `cycles` event when the
    /// machine has one, else the `cpu-clock` software event (VMs). Returns an error naming the fix if perf is
    /// missing or not permitted.
    pub fn start(requests: &[ProfileRequest], out_dir: &Path, frequency_hz: u32) -> Result<Profiler, ProfileError> {
        let perf = perf_path()?;
        let mut kinds = HashSet::new();
        for request in requests {
            if !valid_kind(&request.kind) || !kinds.insert(request.kind.as_str()) {
                return Err(ProfileError::InvalidKind(request.kind.clone()));
            }
        }
        fs::create_dir_all(out_dir).map_err(|source| io_error(format!("create {}", out_dir.display()), source))?;
        let event = sampling_event(&perf);
        let mut profiler = Profiler { perf: perf.clone(), recordings: Vec::new() };
        for request in requests {
            let pids: Vec<String> = request
                .pids
                .iter()
                .filter(|pid| **pid > 0 && Path::new("/proc").join(pid.to_string()).exists())
                .map(i32::to_string)
                .collect();
            if pids.is_empty() {
                return Err(ProfileError::NoProcesses(request.kind.clone()));
            }
            let data = out_dir.join(format!("{}.perf.data", request.kind));
            let log = out_dir.join(format!("{}.perf.log", request.kind));
            let mut log_file =
                File::create(&log).map_err(|source| io_error(format!("create {}", log.display()), source))?;
            writeln!(log_file, "# perf record -a -e {event} -F {frequency_hz} -g, kept for {} pids", pids.len())
                .map_err(|source| io_error(format!("write {}", log.display()), source))?;
            // At a raised priority (`nice -n -10`; without root, GNU nice warns and runs it unchanged), so it keeps
            // up on two cores under a load of 100 runnable threads.
            let child = Command::new("nice")
                .args(["-n", "-10"])
                .arg(&perf)
                .arg("record")
                .args(["-e", event, "-F", &frequency_hz.to_string(), "-g"])
                // No build-id pass over the data at the end (a slow stop) and no copies of binaries in ~/.debug:
                // the binaries are still in place when `finish` runs `perf script`.
                .args(["--no-buildid", "--no-buildid-cache"])
                .arg("-o")
                .arg(&data)
                // System-wide (`-a`, one event per core) and filtered by pid when folded: `-p` over 25 busy
                // processes opens an event per thread and core, and on two cores under a load of 100 perf was
                // still setting that up when a 30 s window ended, so it wrote no samples.
                .arg("-a")
                .stdin(Stdio::null())
                .stdout(clone_file(&log_file, &log)?)
                .stderr(log_file)
                .spawn()
                .map_err(|source| io_error(format!("start {} record", perf.display()), source))?;
            profiler.recordings.push(Recording {
                kind: request.kind.clone(),
                processes: pids.len(),
                pids: pids.join(","),
                child,
                data,
                log,
                out_dir: out_dir.to_path_buf(),
            });
        }
        thread::sleep(START_GRACE);
        for recording in &mut profiler.recordings {
            let status = recording
                .child
                .try_wait()
                .map_err(|source| io_error(format!("watch perf record of {}", recording.kind), source))?;
            if let Some(status) = status {
                return Err(recording.failure(status));
            }
        }
        Ok(profiler)
    }

    /// Stops the recordings (SIGINT to each perf, then a bounded wait while they write their data), then folds
    /// each with `perf script` and inferno, writing `<out_dir>/<kind>.folded` and `<out_dir>/<kind>.svg`. A kind
    /// that got no sample (an idle process) still gets an SVG, inferno's "no valid input" one, and an empty `top`.
    pub fn finish(mut self) -> Result<Vec<KindProfile>, ProfileError> {
        let mut recordings = std::mem::take(&mut self.recordings);
        let stopped = stop_all(&mut recordings);
        // The children are all reaped or killed by now; whatever went wrong, nothing is left running.
        stopped?;
        recordings.iter().map(|recording| fold_recording(&self.perf, recording)).collect()
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        for recording in &mut self.recordings {
            // Best effort: a profile abandoned halfway is not worth an error, a perf left running would be.
            let _ = recording.child.kill();
            let _ = recording.child.wait();
        }
    }
}

impl Recording {
    /// The error for a `perf record` that ended by itself with `status`.
    fn failure(&self, status: ExitStatus) -> ProfileError {
        let log = fs::read(&self.log).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
        let log_tail = tail(&log);
        let lower = log.to_lowercase();
        if ["perf_event_paranoid", "permission denied", "no permission", "not permitted"]
            .iter()
            .any(|needle| lower.contains(needle))
        {
            ProfileError::NotPermitted { kind: self.kind.clone(), log: self.log.clone(), log_tail }
        } else {
            ProfileError::RecordFailed { kind: self.kind.clone(), status, log: self.log.clone(), log_tail }
        }
    }
}

/// Folds `perf script` output (the default text format; a sample counts its period if the period field is
/// printed, else once) into flame-graph stacks and ranks the leaf frames by self samples. Pure: the I/O around it
/// is [`Profiler::finish`]'s.
pub fn fold_perf_script(script: impl BufRead) -> Result<Folded, ProfileError> {
    let mut options = FoldOptions::default();
    options.annotate_kernel = true;
    options.annotate_jit = true;
    options.nthreads = 1;
    let mut folded = Vec::new();
    Folder::from(options)
        .collapse(script, &mut folded)
        .map_err(|source| io_error("fold perf script output".to_string(), source))?;
    let stacks = String::from_utf8_lossy(&folded).into_owned();
    let (samples, top) = leaf_summary(&stacks);
    Ok(Folded { stacks, samples, top })
}

/// Finds a working perf: `perf` on PATH if it runs, else the newest versioned `perf_<version>` next to it (Debian's
/// `perf` wrapper only runs the binary matching the running kernel, which may not be the one installed).
pub fn perf_path() -> Result<PathBuf, ProfileError> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for fallback in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        if !dirs.iter().any(|d| d == Path::new(fallback)) {
            dirs.push(PathBuf::from(fallback));
        }
    }
    if let Some(perf) = dirs.iter().map(|dir| dir.join("perf")).find(|p| is_executable(p) && runs(p)) {
        return Ok(perf);
    }
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = dirs
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flat_map(|entries| entries.filter_map(Result::ok))
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name.strip_prefix("perf_")?;
            let parts: Option<Vec<u32>> = version.split('.').map(|part| part.parse().ok()).collect();
            Some((parts?, entry.path()))
        })
        .filter(|(_, path)| is_executable(path))
        .collect();
    versioned.sort_by(|a, b| b.0.cmp(&a.0));
    versioned.into_iter().map(|(_, path)| path).find(|path| runs(path)).ok_or(ProfileError::PerfNotFound)
}

/// Like [`perf_path`], but when perf is missing and we are root, installs Debian's `linux-perf` with `apt-get`
/// (after `apt-get update`), so a fresh benchmark machine needs no manual step. Idempotent: does nothing once perf
/// is there.
pub fn ensure_perf() -> Result<PathBuf, ProfileError> {
    if let Ok(perf) = perf_path() {
        return Ok(perf);
    }
    if !geteuid().is_root() {
        return Err(ProfileError::PerfNotFound);
    }
    apt_get(&["update"])?;
    apt_get(&["install", "-y", "--no-install-recommends", "linux-perf"])?;
    perf_path()
}

/// Runs `apt-get <args>` without prompts, its output kept for the error.
fn apt_get(args: &[&str]) -> Result<(), ProfileError> {
    let command = format!("apt-get {}", args.join(" "));
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| io_error(format!("run {command} ({INSTALL_HINT})"), source))?;
    if output.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Err(ProfileError::Install { command, status: output.status, output_tail: tail(&text) })
}

/// `cycles` if the hardware counts it, else `cpu-clock`: VMs often expose no PMU, and perf then records no sample.
fn sampling_event(perf: &Path) -> &'static str {
    let output =
        Command::new(perf).args(["stat", "-x", ",", "-e", "cycles", "--", "true"]).stdin(Stdio::null()).output();
    let counted = output.is_ok_and(|output| {
        String::from_utf8_lossy(&output.stderr).lines().any(|line| {
            let mut fields = line.split(',');
            let value = fields.next().unwrap_or_default();
            fields.nth(1).is_some_and(|event| event.contains("cycles")) && value.parse::<u64>().is_ok()
        })
    });
    if counted { "cycles" } else { "cpu-clock" }
}

/// Sends SIGINT to every running `perf record`, then waits for all within [`STOP_TIMEOUT`], killing any that
/// overruns. Every child is reaped when this returns, even on error.
fn stop_all(recordings: &mut [Recording]) -> Result<(), ProfileError> {
    let mut first_error = None;
    for recording in recordings.iter_mut() {
        if matches!(recording.child.try_wait(), Ok(None)) {
            let pid = recording.child.id();
            let raw = i32::try_from(pid).expect("invariant: a pid fits in pid_t");
            if let Err(source) = kill(Pid::from_raw(raw), Signal::SIGINT) {
                first_error.get_or_insert(ProfileError::Signal { pid, source });
            }
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for recording in recordings.iter_mut() {
        let result = match wait_until(&mut recording.child, deadline) {
            Ok(Some(status)) if stopped_cleanly(status) => Ok(()),
            Ok(Some(status)) => Err(recording.failure(status)),
            Ok(None) => {
                let _ = recording.child.kill();
                let _ = recording.child.wait();
                Err(ProfileError::StopTimeout {
                    kind: recording.kind.clone(),
                    seconds: STOP_TIMEOUT.as_secs(),
                    log: recording.log.clone(),
                })
            }
            Err(source) => {
                let _ = recording.child.kill();
                let _ = recording.child.wait();
                Err(io_error(format!("wait for perf record of {}", recording.kind), source))
            }
        };
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// perf record exits 0 when its targets are gone, and re-raises SIGINT when interrupted.
fn stopped_cleanly(status: ExitStatus) -> bool {
    status.success() || status.signal() == Some(Signal::SIGINT as i32)
}

/// Polls `child` until it exits or `deadline` passes (`None`).
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `perf script` on one recording, folds it as it streams, and writes `<kind>.folded` and `<kind>.svg`.
fn fold_recording(perf: &Path, recording: &Recording) -> Result<KindProfile, ProfileError> {
    let Recording { kind, processes, pids, data, log, out_dir, .. } = recording;
    let log_file = OpenOptions::new()
        .append(true)
        .open(log)
        .map_err(|source| io_error(format!("open {}", log.display()), source))?;
    let mut child = Command::new(perf)
        .arg("script")
        .arg("-i")
        .arg(data)
        .args(["-F", SCRIPT_FIELDS, "--no-inline"])
        .arg(format!("--pid={pids}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(|source| io_error(format!("start {} script", perf.display()), source))?;
    let folded = match child.stdout.take() {
        Some(stdout) => fold_perf_script(BufReader::with_capacity(1 << 20, stdout)),
        None => Err(io_error("read perf script output".to_string(), io::ErrorKind::BrokenPipe.into())),
    };
    if folded.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|source| io_error(format!("wait for perf script of {kind}"), source))?;
    let folded = folded?;
    if !status.success() {
        return Err(ProfileError::ScriptFailed {
            kind: kind.clone(),
            status,
            log: log.clone(),
            log_tail: log_tail(log),
        });
    }
    let folded_path = out_dir.join(format!("{kind}.folded"));
    fs::write(&folded_path, &folded.stacks)
        .map_err(|source| io_error(format!("write {}", folded_path.display()), source))?;
    let svg = out_dir.join(format!("{kind}.svg"));
    write_svg(&svg, kind, *processes, &folded)?;
    Ok(KindProfile { kind: kind.clone(), processes: *processes, samples: folded.samples, svg, top: folded.top })
}

/// Draws the flame graph; hashed colours keep a function's colour from one run to the next.
fn write_svg(path: &Path, kind: &str, processes: usize, folded: &Folded) -> Result<(), ProfileError> {
    let mut options = FlameOptions::default();
    options.title = format!("{kind}: {processes} processes, {} samples", folded.samples);
    options.count_name = "samples".to_string();
    options.hash = true;
    let file = File::create(path).map_err(|source| io_error(format!("create {}", path.display()), source))?;
    let mut writer = BufWriter::new(file);
    let drawn = flamegraph::from_lines(&mut options, folded.stacks.lines(), &mut writer);
    // With no sample inferno still writes its "no valid input" SVG, then reports the emptiness as an error.
    if folded.samples > 0 {
        drawn.map_err(|source| io_error(format!("draw {}", path.display()), source))?;
    }
    writer.flush().map_err(|source| io_error(format!("write {}", path.display()), source))
}

/// Total samples and the [`TOP_FRAMES`] leaves with the most self samples, from folded stacks.
fn leaf_summary(stacks: &str) -> (u64, Vec<(String, f64)>) {
    let mut total = 0u64;
    let mut by_leaf: BTreeMap<&str, u64> = BTreeMap::new();
    for line in stacks.lines() {
        let Some((stack, count)) = line.trim_end().rsplit_once(' ') else { continue };
        let Ok(count) = count.parse::<u64>() else { continue };
        let leaf = stack.rsplit(';').next().unwrap_or(stack);
        total += count;
        *by_leaf.entry(leaf).or_default() += count;
    }
    let mut leaves: Vec<(&str, u64)> = by_leaf.into_iter().collect();
    // Most samples first; the BTreeMap's name order breaks ties, so the list is deterministic.
    leaves.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    let top = leaves
        .into_iter()
        .take(TOP_FRAMES)
        .map(|(leaf, count)| (leaf.to_string(), count as f64 / total as f64))
        .collect();
    (total, top)
}

/// Whether `kind` can be used as a file name as it is.
fn valid_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether `perf --version` succeeds: Debian's wrapper fails when no perf matches the running kernel.
fn runs(perf: &Path) -> bool {
    Command::new(perf)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn clone_file(file: &File, path: &Path) -> Result<File, ProfileError> {
    file.try_clone().map_err(|source| io_error(format!("share {}", path.display()), source))
}

fn io_error(what: String, source: io::Error) -> ProfileError {
    ProfileError::Io { what, source }
}

/// The last lines of a log file, for an error message.
fn log_tail(path: &Path) -> String {
    fs::read(path).map(|bytes| tail(&String::from_utf8_lossy(&bytes))).unwrap_or_default()
}

/// The last five non-empty lines of `text`, on one line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `perf script` text as perf 6.1 prints it with `-F comm,pid,tid,time,event,ip,sym,dso`: five samples of a
    /// Rust process (three in `hash`, reached two ways), one in the kernel, one unresolved in the JVM.
    const SCRIPT: &str = "\
mesh  4242/4243  100.000001: cpu-clock:
\t    55d0c0a0 core::hash::sip::Hasher::write+0x10 (/usr/bin/mesh)
\t    55d0c0b0 mesh_core::graph::SlimeGraph::reinforce_by+0x20 (/usr/bin/mesh)
\t    55d0c0c0 main+0x30 (/usr/bin/mesh)

mesh  4242/4243  100.000002: cpu-clock:
\t    55d0c0a0 core::hash::sip::Hasher::write+0x10 (/usr/bin/mesh)
\t    55d0c0b0 mesh_core::graph::SlimeGraph::reinforce_by+0x20 (/usr/bin/mesh)
\t    55d0c0c0 main+0x30 (/usr/bin/mesh)

mesh  4242/4244  100.000003: cpu-clock:
\t    55d0c0a0 core::hash::sip::Hasher::write+0x10 (/usr/bin/mesh)
\t    55d0c0d0 mesh_node::agent::Agent::on_message+0x40 (/usr/bin/mesh)

mesh  4242/4244  100.000004: cpu-clock:
\tffffffff81000000 _raw_spin_unlock_irqrestore+0x5 ([kernel.kallsyms])
\t    7f0000001000 __send+0x12 (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t    55d0c0d0 mesh_node::agent::Agent::on_message+0x40 (/usr/bin/mesh)

java  777/780  100.000005: cpu-clock:
\t    7f1234567890 [unknown] (/usr/lib/jvm/java-17/lib/server/libjvm.so)
";

    #[test]
    fn folds_stacks_and_ranks_leaves_by_self_samples() {
        let folded = fold_perf_script(SCRIPT.as_bytes()).expect("canned script folds");
        assert_eq!(folded.samples, 5);
        let mut lines: Vec<&str> = folded.stacks.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "java;[libjvm.so] 1",
                "mesh;main;mesh_core::graph::SlimeGraph::reinforce_by;core::hash::sip::Hasher::write 2",
                "mesh;mesh_node::agent::Agent::on_message;__send;_raw_spin_unlock_irqrestore_[k] 1",
                "mesh;mesh_node::agent::Agent::on_message;core::hash::sip::Hasher::write 1",
            ]
        );
        assert_eq!(
            folded.top,
            [
                ("core::hash::sip::Hasher::write".to_string(), 0.6),
                ("[libjvm.so]".to_string(), 0.2),
                ("_raw_spin_unlock_irqrestore_[k]".to_string(), 0.2),
            ]
        );
    }

    #[test]
    fn empty_script_has_no_samples() {
        let folded = fold_perf_script(&b""[..]).expect("empty script folds");
        assert_eq!((folded.samples, folded.top.len()), (0, 0));
    }

    #[test]
    fn top_keeps_ten_leaves() {
        let stacks: String = (0..12u64).map(|i| format!("p;f{i} {}\n", i + 1)).collect();
        let (total, top) = leaf_summary(&stacks);
        assert_eq!(total, 78);
        assert_eq!(top.len(), TOP_FRAMES);
        assert_eq!(top[0], ("f11".to_string(), 12.0 / 78.0));
    }

    #[test]
    fn kinds_must_be_file_names() {
        assert!(valid_kind("agent") && valid_kind("kafka-broker_1"));
        assert!(!valid_kind("") && !valid_kind("../x") && !valid_kind("a b"));
        let requests = [
            ProfileRequest { kind: "agent".into(), pids: vec![1] },
            ProfileRequest { kind: "agent".into(), pids: vec![1] },
        ];
        // Needs no perf when perf is absent either: both errors come before any recording.
        let error = Profiler::start(&requests, &std::env::temp_dir(), 99).expect_err("duplicate kind");
        assert!(matches!(error, ProfileError::InvalidKind(_) | ProfileError::PerfNotFound), "{error}");
    }

    /// Profiles two kinds of throwaway CPU burners with the real perf; runs only with `MESH_PERF_TEST=1` (needs
    /// root or a permissive `perf_event_paranoid`, and perf, which it installs with apt-get when root).
    #[test]
    fn profiles_real_processes() {
        if std::env::var_os("MESH_PERF_TEST").is_none_or(|v| v != "1") {
            return;
        }
        ensure_perf().expect("perf available");
        // Each burner runs under `timeout`, so none outlives a crashed test; the burning process is its child.
        let burn = |program: &[&str]| {
            let mut timeout =
                Command::new("timeout").arg("20").args(program).stdout(Stdio::null()).spawn().expect("burner starts");
            let children = format!("/proc/{0}/task/{0}/children", timeout.id());
            let first_child = (0..100).find_map(|_| {
                let listed = fs::read_to_string(&children).unwrap_or_default();
                let pid = listed.split_whitespace().next().and_then(|pid| pid.parse::<i32>().ok());
                if pid.is_none() {
                    thread::sleep(Duration::from_millis(10));
                }
                pid
            });
            match first_child {
                Some(pid) => (timeout, pid),
                None => {
                    let _ = timeout.kill();
                    let _ = timeout.wait();
                    panic!("the burner under timeout {} did not start", timeout.id());
                }
            }
        };
        let shell = ["sh", "-c", "while :; do :; done"];
        let mut burners = [burn(&shell), burn(&shell), burn(&["yes"])];
        let out = std::env::temp_dir().join(format!("mesh-profile-test-{}", std::process::id()));
        let requests = [
            ProfileRequest { kind: "shell".into(), pids: vec![burners[0].1, burners[1].1] },
            ProfileRequest { kind: "yes".into(), pids: vec![burners[2].1, 999_999_999] },
        ];
        let profiles = Profiler::start(&requests, &out, 199).and_then(|profiler| {
            thread::sleep(Duration::from_secs(3));
            profiler.finish()
        });
        for (timeout, pid) in &mut burners {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = timeout.wait();
        }
        let profiles = profiles.expect("profiles taken");
        for profile in &profiles {
            eprintln!(
                "{} ({} processes, {} samples): {:?}",
                profile.kind, profile.processes, profile.samples, profile.top
            );
            let svg = fs::read_to_string(&profile.svg).expect("svg written");
            assert!(svg.contains("<svg") && svg.contains(&profile.kind), "{}", profile.svg.display());
            assert!(out.join(format!("{}.folded", profile.kind)).exists());
            assert!(profile.samples > 100, "{} has {} samples", profile.kind, profile.samples);
            assert!(!profile.top.is_empty() && profile.top.len() <= TOP_FRAMES);
            let shares: f64 = profile.top.iter().map(|(_, share)| share).sum();
            assert!(shares > 0.0 && shares <= 1.0 + 1e-9);
        }
        assert_eq!(profiles.iter().map(|p| p.processes).collect::<Vec<_>>(), [2, 1]);
        let _ = fs::remove_dir_all(&out);
    }
}
