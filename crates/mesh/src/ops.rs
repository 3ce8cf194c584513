//! `mesh down | status | kill | restart | logs`: talk to the supervisor over its control socket, and fall back to
//! the state file (checking each pid's start time against reuse) when the supervisor is gone.

use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use mesh_node::now_ms;
use mesh_proto::read_model::{ConsensusStats, TopologyStats, redis_keys};
use mesh_redis::AnyStore;
use mesh_supervisor::{ControlError, ProcState, ProcessStatus, Request, StateDir, StateFile, child, control};
use mesh_transport::SnapshotStore;
use serde_json::json;

use crate::cli::{DownArgs, KeyArgs, KillArgs, LogsArgs, RestartArgs, StatusArgs};

fn dir(path: &Path) -> StateDir {
    StateDir::new(path)
}

fn call(dir: &StateDir, request: &Request, timeout: Duration) -> Result<control::Response, ControlError> {
    control::call(&dir.socket(), request, timeout)
}

/// Whether the recorded process still is the one recorded (same pid, same start time).
fn same_process(p: &ProcessStatus) -> Option<i32> {
    let pid = p.pid?;
    (child::start_ticks(pid).is_some() && child::start_ticks(pid) == p.start_ticks).then_some(pid)
}

pub(crate) fn down(args: &DownArgs) -> Result<()> {
    let d = dir(&args.dir.state_dir);
    let request = Request::Down { timeout_secs: args.timeout };
    match call(&d, &request, Duration::from_secs(600)) {
        Ok(r) if r.ok => {
            let state = r.state.ok_or_else(|| anyhow!("the supervisor answered without a state"))?;
            let left: Vec<&str> = state
                .processes
                .iter()
                .filter(|p| p.pid.is_some_and(child::group_alive))
                .map(|p| p.name.as_str())
                .collect();
            if !left.is_empty() {
                bail!("still running after down: {}", left.join(", "));
            }
            println!("stopped {} processes", state.processes.len());
            Ok(())
        }
        Ok(r) => bail!("the supervisor refused: {}", r.error.unwrap_or_default()),
        Err(ControlError::NotRunning(_)) => {
            let Some(state) = StateFile::read(&d.state())? else {
                println!("nothing is running here ({} has no state)", d.root().display());
                return Ok(());
            };
            let alive: Vec<(&str, i32)> =
                state.processes.iter().filter_map(|p| Some((p.name.as_str(), same_process(p)?))).collect();
            if alive.is_empty() {
                println!("no supervisor, and no recorded process is still running");
                return Ok(());
            }
            if !args.force {
                let names: Vec<&str> = alive.iter().map(|(n, _)| *n).collect();
                bail!(
                    "no supervisor answers, but recorded processes still run: {}; `mesh down --force` kills them",
                    names.join(", ")
                );
            }
            for (name, pid) in alive {
                child::signal_group(pid, nix::sys::signal::Signal::SIGKILL)
                    .map_err(|e| anyhow!("failed to kill {name} (pid {pid}): {e}"))?;
                println!("killed {name} (process group {pid})");
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The mesh's health in `mesh status`, from the managers' statistics; `--json` prints it as it is. A count is a number
/// in floating point, as the report has always given them, or null when the manager has not written it (not yet, or
/// a version without it), which the text report shows as `?`.
#[derive(Debug, serde::Serialize)]
struct Health {
    live_agents: Option<f64>,
    edges: Option<f64>,
    reduction_vs_full_mesh: Option<f64>,
    window: Option<f64>,
    window_late_ms: Option<f64>,
    window_late_max_ms: Option<f64>,
    oldest_open_window_ms: Option<f64>,
    waiting_for: Option<String>,
    pending_proposals: Option<f64>,
    decided_proposals: Option<f64>,
}

#[expect(clippy::cast_precision_loss, reason = "counts and milliseconds, far below 2^52")]
fn count(value: Option<u64>) -> Option<f64> {
    value.map(|n| n as f64)
}

/// The health, if the store answers within 3 s.
async fn mesh_health(state: &StateFile, state_dir: &std::path::Path) -> Option<Health> {
    let probe = async {
        let url = crate::settings::store_url(state_dir, &state.redis);
        let store = AnyStore::connect(&url, crate::settings::store_ca(state_dir).as_deref()).await.ok()?;
        let topo =
            TopologyStats::from_fields(store.hgetall(&redis_keys::topology_stats(&state.topic_prefix)).await.ok()?);
        let cons =
            ConsensusStats::from_fields(store.hgetall(&redis_keys::consensus_stats(&state.topic_prefix)).await.ok()?);
        Some(Health {
            live_agents: count(topo.live_agents),
            edges: count(topo.edges),
            reduction_vs_full_mesh: topo.reduction_vs_full_mesh,
            window: count(topo.window),
            window_late_ms: count(topo.window_late_ms),
            window_late_max_ms: count(topo.window_late_max_ms),
            oldest_open_window_ms: count(topo.oldest_open_window_ms),
            waiting_for: topo.waiting_for,
            pending_proposals: count(cons.pending),
            decided_proposals: count(cons.decided),
        })
    };
    tokio::time::timeout(Duration::from_secs(3), probe).await.ok().flatten()
}

pub(crate) async fn status(args: &StatusArgs) -> Result<bool> {
    let d = dir(&args.dir.state_dir);
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.0));
    let (state, supervised) = loop {
        let (state, supervised) = match call(&d, &Request::Status, Duration::from_secs(5)) {
            Ok(r) => (r.state, true),
            Err(ControlError::NotRunning(_)) => (StateFile::read(&d.state())?, false),
            Err(e) => return Err(e.into()),
        };
        let ready = state.as_ref().is_some_and(|s| s.processes.iter().all(|p| p.state == ProcState::Ready));
        if !args.wait || (ready && supervised) || Instant::now() >= deadline {
            break (state, supervised);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let Some(state) = state else {
        if args.json {
            println!("{}", json!({"supervisor": {"running": false}, "processes": [], "all_ready": false}));
        } else {
            println!("no deployment in {} (start one with `mesh up`)", d.root().display());
        }
        return Ok(false);
    };
    let all_ready = supervised && state.processes.iter().all(|p| p.state == ProcState::Ready);
    let health = mesh_health(&state, d.root()).await;
    if args.json {
        let report = json!({
            "supervisor": {"running": supervised, "pid": state.supervisor_pid, "infra": state.infra, "kafka": state.kafka, "redis": state.redis},
            "processes": state.processes,
            "mesh": health,
            "all_ready": all_ready,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(all_ready);
    }
    let mut out = std::io::stdout().lock();
    if supervised {
        writeln!(
            out,
            "supervisor pid {} · {} infrastructure · kafka {} · {}",
            state.supervisor_pid, state.infra, state.kafka, state.redis
        )?;
    } else {
        writeln!(
            out,
            "supervisor NOT RUNNING (last state written {} ago)",
            fmt_duration(now_ms().saturating_sub(state.updated_at_ms))
        )?;
    }
    writeln!(
        out,
        "{:<18} {:<9} {:>8} {:>8} {:>8} {:<16} {:>8} {:>9}  {:<21}  STATUS",
        "NAME", "STATE", "PID", "RESTARTS", "UPTIME", "LAST EXIT", "CPU", "RSS", "METRICS"
    )?;
    for p in &state.processes {
        let state_text = format!("{:?}", p.state).to_uppercase();
        let uptime = p
            .started_at_ms
            .filter(|_| p.pid.is_some())
            .map_or("-".to_owned(), |t| fmt_duration(now_ms().saturating_sub(t)));
        let exit = p.last_exit.as_ref().map_or("-".to_owned(), |e| match (&e.code, &e.signal) {
            (Some(c), _) => format!("code {c}"),
            (None, Some(s)) => s.clone(),
            _ => "?".into(),
        });
        let cpu = p.cpu_seconds.map_or("-".to_owned(), |c| format!("{c:.1}s"));
        let rss = p.rss_bytes.map_or("-".to_owned(), |r| format!("{:.1} MB", r as f64 / 1e6));
        let pid = p.pid.map_or("-".to_owned(), |p| p.to_string());
        writeln!(
            out,
            "{:<18} {:<9} {:>8} {:>8} {:>8} {:<16} {:>8} {:>9}  {:<21}  {}",
            p.name,
            state_text,
            pid,
            p.restarts,
            uptime,
            exit,
            cpu,
            rss,
            p.metrics.as_deref().unwrap_or("-"),
            p.status_line.as_deref().unwrap_or("")
        )?;
    }
    let Some(health) = health else {
        writeln!(out, "mesh: health unavailable (store {} not reachable or empty)", state.redis)?;
        return Ok(all_ready);
    };
    let f = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v}"));
    let reduction = health.reduction_vs_full_mesh.map_or("?".to_owned(), |v| format!("{:.0}%", v * 100.0));
    writeln!(
        out,
        "mesh: {} live agents · {} edges · reduction vs full mesh {} · proposals {} pending, {} decided",
        f(health.live_agents),
        f(health.edges),
        reduction,
        f(health.pending_proposals),
        f(health.decided_proposals)
    )?;
    // A stall is impossible to miss: how late the topology manager's windows are, and what it waits for.
    writeln!(
        out,
        "topology: window {} applied {} ms after its tick (worst {} ms) · waiting for {}{}",
        f(health.window),
        f(health.window_late_ms),
        f(health.window_late_max_ms),
        health.waiting_for.as_deref().unwrap_or("?"),
        match health.oldest_open_window_ms {
            Some(ms) if ms > 0.0 => format!(" · oldest open window waiting {ms} ms"),
            _ => String::new(),
        }
    )?;
    Ok(all_ready)
}

pub(crate) fn kill(args: &KillArgs) -> Result<()> {
    let d = dir(&args.dir.state_dir);
    let (signal, pause) = match args.pause {
        Some(secs) => ("STOP".to_owned(), Some(secs)),
        None => (args.signal.clone(), None),
    };
    let sig = child::parse_signal(&signal).ok_or_else(|| {
        crate::usage(anyhow!("invalid --signal {signal:?}: give a signal name or number, for example TERM, KILL or 9"))
    })?;
    let request = Request::Kill {
        name: args.name.clone(),
        random: args.random,
        signal: signal.clone(),
        pause_secs: pause,
        no_restart: args.no_restart,
    };
    match call(&d, &request, Duration::from_secs(5)) {
        Ok(r) if r.ok => {
            println!("sent SIG{} to {}", signal.trim_start_matches("SIG").to_uppercase(), r.target.unwrap_or_default());
            Ok(())
        }
        Ok(r) => bail!("{}", r.error.unwrap_or_default()),
        Err(ControlError::NotRunning(_)) => {
            // No supervisor: act on the state file, but only on the very process it recorded.
            let state = StateFile::read(&d.state())?
                .ok_or_else(|| anyhow!("no supervisor and no state in {}", d.root().display()))?;
            let name = args.name.as_deref().ok_or_else(|| anyhow!("--random needs a running supervisor"))?;
            let p =
                state.processes.iter().find(|p| p.name == name).ok_or_else(|| anyhow!("no process named {name:?}"))?;
            let pid = same_process(p)
                .ok_or_else(|| anyhow!("{name} is not running (or its pid now belongs to another process)"))?;
            child::signal_group(pid, sig).map_err(|e| anyhow!("failed to signal {name}: {e}"))?;
            println!(
                "no supervisor: sent {} to {name} (process group {pid}) directly; nothing will restart it",
                sig.as_str()
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn restart(args: &RestartArgs) -> Result<()> {
    let d = dir(&args.dir.state_dir);
    let r = call(&d, &Request::Restart { name: args.name.clone() }, Duration::from_secs(5))?;
    if !r.ok {
        bail!("{}", r.error.unwrap_or_default());
    }
    println!("{} started again", args.name);
    Ok(())
}

struct LogFile {
    name: String,
    path: PathBuf,
    offset: u64,
}

fn read_new(file: &mut LogFile, since: Option<SystemTime>) -> Vec<(String, String, String)> {
    let Ok(mut f) = std::fs::File::open(&file.path) else { return Vec::new() };
    if f.seek(std::io::SeekFrom::Start(file.offset)).is_err() {
        return Vec::new();
    }
    let mut reader = std::io::BufReader::new(f);
    let mut out = Vec::new();
    let mut line = String::new();
    while let Ok(n) = reader.read_line(&mut line) {
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        file.offset += n as u64;
        let text = line.trim_end().to_owned();
        line.clear();
        let (stamp, rest) = text.split_once(' ').unwrap_or(("", text.as_str()));
        if let (Some(since), Ok(at)) = (since, humantime::parse_rfc3339(stamp))
            && at < since
        {
            continue;
        }
        out.push((stamp.to_owned(), file.name.clone(), rest.to_owned()));
    }
    out
}

pub(crate) fn logs(args: &LogsArgs) -> Result<()> {
    let d = dir(&args.dir.state_dir);
    let since = match &args.since {
        Some(s) => Some(
            SystemTime::now()
                - humantime::parse_duration(s)
                    .map_err(|e| anyhow!("invalid --since {s:?}: {e}; write for example \"5m\""))?,
        ),
        None => None,
    };
    let mut files: Vec<LogFile> = Vec::new();
    let entries = std::fs::read_dir(d.logs()).with_context(|| format!("no logs in {}", d.logs().display()))?;
    for e in entries.flatten() {
        let path = e.path();
        // NAME.log only: NAME.log.1 is the generation before the last rotation.
        if path.extension().and_then(|x| x.to_str()) != Some("log") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else { continue };
        if args.names.is_empty() || args.names.contains(&name) {
            files.push(LogFile { name, path, offset: 0 });
        }
    }
    for wanted in &args.names {
        if !files.iter().any(|f| &f.name == wanted) {
            bail!("no log for {wanted:?} in {}", d.logs().display());
        }
    }
    let width = files.iter().map(|f| f.name.len()).max().unwrap_or(4);
    let mut out = std::io::stdout().lock();
    loop {
        let mut lines: Vec<(String, String, String)> = files.iter_mut().flat_map(|f| read_new(f, since)).collect();
        lines.sort();
        for (_, name, text) in lines {
            if writeln!(out, "{name:>width$} | {text}").is_err() {
                return Ok(()); // a closed pipe (| head) is not an error
            }
        }
        if !args.follow {
            return Ok(());
        }
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `mesh key agent ID`: the agent's key, derived from the deployment secret, on stdout (the one thing printed, so
/// `mesh key agent billing > billing.key` makes the file a third-party agent is given).
pub(crate) fn key(args: &KeyArgs) -> Result<()> {
    let path = args.secret_file.clone().unwrap_or_else(|| StateDir::new(&args.dir.state_dir).secret());
    let secret = crate::settings::secret(&path).map_err(crate::usage)?;
    let id = mesh_core::AgentId::new(args.id.clone())
        .map_err(|e| crate::usage(anyhow!("invalid agent id {:?}: {e}", args.id)))?;
    let key = secret.key_of(&mesh_proto::auth::Principal::Agent(id));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", key.to_hex())?;
    Ok(())
}
