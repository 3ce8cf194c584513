//! `mesh up | status | kill | restart | logs | down` on real processes: misbehaving children (ignore SIGTERM, fork,
//! escape with setsid, flood output, crash-loop, never become ready) and the real six-process deployment on the
//! embedded default.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::EndsWithTest;
use mesh_proto::read_model::TopologyStats;
use mesh_supervisor::{EventLog, ProcState, StateDir, StateFile};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub(crate) fn mesh(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .env("MESH_STATE_DIR", dir)
        .env_remove("MESH_KAFKA")
        .env_remove("MESH_REDIS")
        .stdin(Stdio::null())
        .output()
        .expect("mesh runs")
}

pub(crate) fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The topology statistics in what `mesh inspect --json` printed (it prints the hash as stored, values as strings).
pub(crate) fn inspected_topology(inspect: &serde_json::Value) -> TopologyStats {
    let stored = inspect["topology"].as_object().into_iter().flatten();
    TopologyStats::from_fields(stored.filter_map(|(name, value)| Some((name.as_str(), value.as_str()?))))
}

fn state(dir: &Path) -> StateFile {
    StateFile::read(&StateDir::new(dir).state()).expect("readable").expect("a state file")
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive for our purposes: look at the state in /proc.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every pid the supervisor ever spawned for this state dir, from the event log.
fn spawned_pids(dir: &Path) -> Vec<i32> {
    EventLog::read_all(&StateDir::new(dir).events())
        .expect("events")
        .into_iter()
        .filter(|e| e.event == "spawned")
        .filter_map(|e| e.detail.get("pid").and_then(serde_json::Value::as_i64))
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

fn events_of(dir: &Path, process: &str) -> Vec<String> {
    EventLog::read_all(&StateDir::new(dir).events())
        .expect("events")
        .into_iter()
        .filter(|e| e.process == process)
        .map(|e| e.event)
        .collect()
}

fn deployment(dir: &Path) -> PathBuf {
    let escaped = dir.join("escaper.pid");
    let file = dir.join("misbehaving.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[[process]]
name = "stubborn"
command = ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
notify = false
stop_timeout = "1s"

[[process]]
name = "forker"
command = ["sh", "-c", "sleep 1000 & sleep 1000 & wait"]
notify = false

[[process]]
name = "escaper"
command = ["sh", "-c", "setsid sleep 1000 & echo $! > {escaped}; wait"]
notify = false

[[process]]
name = "flood"
command = ["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' a; echo; echo after-the-flood; sleep 1000"]
notify = false

[[process]]
name = "crashloop"
command = ["sh", "-c", "echo crashing; exit 3"]
notify = false
initial_backoff = "50ms"
max_restarts = 3
restart_window = "60s"

[[process]]
name = "neverready"
command = ["sleep", "1000"]
ready_timeout = "1s"
max_restarts = 0
"#,
            escaped = escaped.display()
        ),
    )
    .expect("write deployment");
    file
}

#[test]
fn misbehaving_children_are_contained_restarted_and_stopped() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let _down = DownOnDrop(dir);
    let file = deployment(dir);
    let file = file.to_str().expect("utf-8 path");

    // `up -d` returns when everything is READY or something FAILED: here crashloop or neverready fails.
    let up = mesh(dir, &["up", "-d", "-f", file, "--kafka", "127.0.0.1:1", "--redis", "redis://127.0.0.1:1"]);
    assert!(!up.status.success(), "a FAILED process makes `up -d` fail:\n{}", text(&up));
    assert!(text(&up).contains("FAILED"), "{}", text(&up));

    wait_until("both failures", Duration::from_secs(20), || {
        let s = state(dir);
        ["crashloop", "neverready"]
            .iter()
            .all(|n| s.processes.iter().any(|p| &p.name == n && p.state == ProcState::Failed))
    });
    let s = state(dir);
    for name in ["stubborn", "forker", "escaper", "flood"] {
        let p = s.processes.iter().find(|p| p.name == name).expect("process");
        assert_eq!(p.state, ProcState::Ready, "{name} keeps running while others fail");
    }
    // The crash loop: three restarts with backoff, then FAILED; the intensity limit, not a lifetime count.
    let crash = events_of(dir, "crashloop");
    assert_eq!(crash.iter().filter(|e| *e == "spawned").count(), 4, "{crash:?}");
    assert_eq!(crash.iter().filter(|e| *e == "backoff").count(), 3, "{crash:?}");
    assert_eq!(crash.last().map(String::as_str), Some("failed"), "{crash:?}");
    // Never ready: killed at its ready timeout, recorded as such.
    let never = EventLog::read_all(&StateDir::new(dir).events()).expect("events");
    assert!(never.iter().any(|e| e.process == "neverready"
        && e.event == "killed"
        && e.detail.get("cause").and_then(|c| c.as_str()) == Some("ready-timeout")));
    // A 1 MB line is cut in the log, and the output after it still arrives.
    wait_until("the flood's next line", Duration::from_secs(10), || {
        std::fs::read_to_string(StateDir::new(dir).log("flood")).is_ok_and(|l| l.contains("after-the-flood"))
    });
    let flood = std::fs::read_to_string(StateDir::new(dir).log("flood")).expect("log");
    assert!(flood.contains("more bytes cut") && flood.len() < 200_000, "flood log is {} bytes", flood.len());
    // `status` exits non-zero while something is not READY; `logs` shows a process's output.
    assert!(!mesh(dir, &["status"]).status.success());
    assert!(text(&mesh(dir, &["logs", "crashloop"])).contains("crashing"));
    // `restart` revives a FAILED process with a fresh history.
    assert!(mesh(dir, &["restart", "crashloop"]).status.success());
    assert!(events_of(dir, "crashloop").contains(&"restarted".to_owned()));

    let escaped: i32 = std::fs::read_to_string(dir.join("escaper.pid")).expect("pid file").trim().parse().expect("pid");
    assert!(alive(escaped));
    let pids = spawned_pids(dir);
    let down = mesh(dir, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    for pid in pids.iter().chain([&escaped]) {
        assert!(!alive(*pid), "pid {pid} survived `mesh down`");
    }
    // The stubborn one ignored SIGTERM and got SIGKILL after its 1 s stop timeout.
    let stubborn = EventLog::read_all(&StateDir::new(dir).events()).expect("events");
    assert!(stubborn.iter().any(|e| e.process == "stubborn"
        && e.event == "killed"
        && e.detail.get("cause").and_then(|c| c.as_str()) == Some("stop-timeout")));
    // No orphan of any group: nothing lists the supervisor's pid dir any more either.
    assert!(!StateDir::new(dir).socket().exists(), "socket removed");
}

/// Takes a detached deployment down when the test ends, passed or failed: a failing assertion must not leave a
/// supervisor and its children running in their own session.
pub(crate) struct DownOnDrop<'a>(pub(crate) &'a Path);

impl Drop for DownOnDrop<'_> {
    fn drop(&mut self) {
        if StateDir::new(self.0).socket().exists() {
            let _ = mesh(self.0, &["down", "--force"]);
        }
    }
}

#[test]
fn the_real_deployment_on_the_embedded_default() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let _down = DownOnDrop(dir);
    let started = Instant::now();
    let up = mesh(dir, &["up", "-d"]);
    assert!(
        up.status.success(),
        "mesh up -d:\n{}\n{}",
        text(&up),
        std::fs::read_to_string(StateDir::new(dir).supervisor_log()).unwrap_or_default()
    );
    eprintln!("6 processes READY {:?} after `mesh up -d`", started.elapsed());
    let status = mesh(dir, &["status", "--json"]);
    assert!(status.status.success(), "{}", text(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(json["all_ready"], true);
    assert_eq!(json["processes"].as_array().map(Vec::len), Some(6));
    assert_eq!(json["supervisor"]["infra"], "embedded");
    assert!(mesh(dir, &["up", "-d"]).status.code() != Some(0), "a second `up` is refused");
    // `mesh inspect` with no flags reads this deployment (its embedded broker and file store), not the defaults.
    wait_until("mesh inspect to see the four agents", Duration::from_secs(30), || {
        let inspect = mesh(dir, &["inspect", "--json"]);
        assert!(inspect.status.success(), "mesh inspect: {}", text(&inspect));
        let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("json");
        inspected_topology(&json).agents == Some(4)
    });
    // Each of the six processes says where it serves its metrics; `mesh status --json` and the Prometheus targets
    // file list them with the supervisor's own, and each answers with its own kind's metrics.
    let targets_file = StateDir::new(dir).prometheus_targets();
    let read_targets = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&targets_file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    };
    wait_until("seven metrics endpoints", Duration::from_secs(10), || read_targets().len() == 7);
    let targets = read_targets();
    let status = mesh(dir, &["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    for group in &targets {
        let (name, address) = (group["labels"]["process"].as_str().expect("name"), &group["targets"][0]);
        if name != "supervisor" {
            let listed = json["processes"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name));
            assert_eq!(listed.map(|p| &p["metrics"]), Some(address), "{name} in mesh status");
        }
        let kind = if name.starts_with("agent-") { "mesh_agent_" } else { &format!("mesh_{name}_") };
        let (_, _, body) =
            crate::metrics::get(address.as_str().expect("host:port"), "/metrics", "*/*").expect("the endpoint answers");
        assert!(body.contains(kind), "{name} at {address}: {body}");
        if let Err(said) = crate::metrics::promtool_check(&body) {
            panic!("promtool check metrics refused {name}'s metrics: {said}\n{body}");
        }
    }
    // Private to the user: the settings, state, events and logs, the infrastructure's data and the sockets.
    let open_to_others = files_open_to_others(dir);
    assert!(open_to_others.is_empty(), "readable by others: {open_to_others:?}");
    // A request no duration can hold is answered with an error; it once panicked the supervisor and every child.
    let socket = StateDir::new(dir).socket();
    for request in [
        r#"{"cmd":"kill","name":"agent-sales","signal":"STOP","pause_secs":1e20}"#,
        r#"{"cmd":"down","timeout_secs":-1}"#,
    ] {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("control socket");
        writeln!(stream, "{request}").expect("send");
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).expect("answer");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("json answer");
        assert_eq!(answer["ok"], false, "{request}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| e.contains("from 0 to 86400")), "{answer}");
    }
    assert!(alive(state(dir).supervisor_pid), "the supervisor survives hostile requests");
    assert!(mesh(dir, &["status"]).status.success(), "and still answers");

    // Crash injection through the supervisor, then a plain kill -9 of an agent: each is restarted and READY again.
    let ready_again = |name: &str, after: usize| {
        let deadline = Instant::now() + Duration::from_secs(5);
        wait_until(&format!("{name} ready again"), Duration::from_secs(10), || {
            let ev = events_of(dir, name);
            ev.len() > after && ev[after..].contains(&"ready".to_owned())
        });
        assert!(Instant::now() <= deadline + Duration::from_secs(1), "{name} READY again within 5 s");
        let ev = events_of(dir, name);
        for e in ["exited", "backoff", "spawned", "ready"] {
            assert!(ev[after..].contains(&e.to_owned()), "{name}: {e} missing in {:?}", &ev[after..]);
        }
    };
    let before = events_of(dir, "agent-sales").len();
    assert!(mesh(dir, &["kill", "agent-sales"]).status.success());
    ready_again("agent-sales", before);
    let fraud = state(dir).processes.iter().find(|p| p.name == "agent-fraud").and_then(|p| p.pid).expect("fraud pid");
    let before = events_of(dir, "agent-fraud").len();
    kill(Pid::from_raw(fraud), Signal::SIGKILL).expect("kill -9");
    ready_again("agent-fraud", before);
    // The supervisor's metrics count both restarts and show both READY again.
    let supervisor_metrics = read_targets()
        .iter()
        .find(|g| g["labels"]["process"] == "supervisor")
        .and_then(|g| g["targets"][0].as_str().map(str::to_owned))
        .expect("the supervisor's endpoint");
    wait_until("restarts in the supervisor's metrics", Duration::from_secs(5), || {
        let (_, _, body) = crate::metrics::get(&supervisor_metrics, "/metrics", "*/*").expect("it answers");
        ["agent-sales", "agent-fraud"].iter().all(|p| {
            body.contains(&format!("mesh_supervisor_restarts_total{{process=\"{p}\"}} 1\n"))
                && body.contains(&format!("mesh_supervisor_process_state{{process=\"{p}\",state=\"ready\"}} 1\n"))
        })
    });

    // kill -9 of the supervisor takes every child with it; the next `up` starts cleanly.
    let sup = state(dir).supervisor_pid;
    let children: Vec<i32> = state(dir).processes.iter().filter_map(|p| p.pid).collect();
    assert_eq!(children.len(), 6);
    kill(Pid::from_raw(sup), Signal::SIGKILL).expect("kill -9 supervisor");
    wait_until("children gone with the supervisor", Duration::from_secs(10), || children.iter().all(|p| !alive(*p)));
    let again = mesh(dir, &["up", "-d"]);
    assert!(again.status.success(), "second start after a crash:\n{}", text(&again));
    let pids = spawned_pids(dir);
    let down = mesh(dir, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived `mesh down`");
    }
}

/// Every path under `dir` (not following links, `dir` itself excepted: an existing state directory keeps the mode
/// its user gave it) that grants anything to group or others.
pub(crate) fn files_open_to_others(dir: &Path) -> Vec<(PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut todo: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    while let Some(path) = todo.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.file_type().is_symlink() && mode & 0o077 != 0 {
            open.push((path.clone(), mode));
        }
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    open
}

#[test]
fn a_link_planted_in_the_state_directory_is_not_written_through() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).expect("state dir");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    std::os::unix::fs::symlink(&victim, StateDir::new(&dir).supervisor_log()).expect("plant");
    let up = mesh(&dir, &["up", "-d"]);
    let _down = DownOnDrop(&dir);
    assert!(!up.status.success(), "`mesh up` must refuse to log through a planted link:\n{}", text(&up));
    assert!(text(&up).contains("supervisor.log"), "the error names the file: {}", text(&up));
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious\n", "nothing written through the link");
}

#[test]
fn ctrl_c_stops_a_foreground_deployment_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let file = dir.join("two.toml");
    std::fs::write(
        &file,
        "[[process]]\nname = \"a\"\ncommand = [\"sleep\", \"1000\"]\nnotify = false\n\n[[process]]\nname = \"b\"\ncommand = [\"sh\", \"-c\", \"sleep 1000 & wait\"]\nnotify = false\ndepends_on = [\"a\"]\n",
    )
    .expect("write");
    let up = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["up", "-f", file.to_str().expect("utf-8"), "--kafka", "127.0.0.1:1", "--redis", "redis://127.0.0.1:1"])
        .env("MESH_STATE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .ends_with_test()
        .spawn()
        .expect("mesh up");
    wait_until("both READY", Duration::from_secs(20), || {
        StateFile::read(&StateDir::new(dir).state())
            .ok()
            .flatten()
            .is_some_and(|s| s.processes.iter().all(|p| p.state == ProcState::Ready))
    });
    let pids = spawned_pids(dir);
    kill(Pid::from_raw(i32::try_from(up.id()).expect("pid")), Signal::SIGINT).expect("Ctrl-C");
    let out = up.wait_with_output().expect("exits");
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("b STOPPED") && printed.contains("a STOPPED"), "{printed}");
    assert!(printed.find("b STOPPED") < printed.find("a STOPPED"), "reverse dependency order:\n{printed}");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived Ctrl-C");
    }
}

#[test]
fn local_infrastructure_survives_a_broker_kill_without_restarting_the_agents() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let _down = DownOnDrop(dir);
    let up = mesh(dir, &["up", "-d", "--infra", "local", "--wait-timeout", "120s"]);
    assert!(up.status.success(), "mesh up -d --infra local:\n{}", text(&up));
    let s = state(dir);
    assert_eq!(s.infra, "local");
    assert_eq!(s.processes.len(), 8, "kafka, redis and the six");
    let agents: Vec<(String, i32)> = s
        .processes
        .iter()
        .filter(|p| p.name.starts_with("agent-"))
        .map(|p| (p.name.clone(), p.pid.expect("pid")))
        .collect();
    let handled = |dir: &Path| -> u64 {
        let status = mesh(dir, &["status", "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap_or_default();
        json["processes"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("agent-")))
                    // "3 live peers, 8 tasks handled"
                    .filter_map(|p| {
                        p["status_line"].as_str()?.split(", ").nth(1)?.split(' ').next()?.parse::<u64>().ok()
                    })
                    .sum()
            })
            .unwrap_or(0)
    };
    wait_until("tasks flowing", Duration::from_secs(60), || handled(dir) > 0);

    let before = events_of(dir, "kafka").len();
    assert!(mesh(dir, &["kill", "kafka"]).status.success());
    wait_until("the broker READY again", Duration::from_secs(90), || {
        events_of(dir, "kafka")[before..].contains(&"ready".to_owned())
    });
    let after_restart = handled(dir);
    wait_until("tasks flowing again after the broker restart", Duration::from_secs(90), || {
        handled(dir) > after_restart
    });
    let s = state(dir);
    for (name, pid) in &agents {
        let p = s.processes.iter().find(|p| &p.name == name).expect("agent");
        assert_eq!((p.pid, p.restarts), (Some(*pid), 0), "{name} was not restarted: it reconnected by itself");
    }
    let pids = spawned_pids(dir);
    assert!(mesh(dir, &["down"]).status.success());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived `mesh down`");
    }
}

/// `mesh up -d` of one process `name` running a Python `script`, with `settings` (TOML lines) added to its entry; the
/// infrastructure flags point nowhere, as the process does not use it.
fn up_python(dir: &Path, name: &str, script: &str, settings: &str) {
    let file = dir.join(format!("{name}.toml"));
    let spec = format!("[[process]]\nname = {name:?}\ncommand = [\"python3\", \"-c\", {script:?}]\n{settings}\n");
    std::fs::write(&file, spec).expect("write");
    let up = mesh(
        dir,
        &["up", "-d", "-f", file.to_str().expect("utf-8"), "--kafka", "127.0.0.1:1", "--redis", "redis://127.0.0.1:1"],
    );
    assert!(up.status.success(), "{}", text(&up));
}

#[test]
fn a_ready_process_that_stops_pinging_the_watchdog_is_restarted_as_hung() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let _down = DownOnDrop(dir);
    // Says READY=1 over sd_notify, then hangs without WATCHDOG=1 pings.
    let script = "import os, socket, time\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
                  time.sleep(1000)\n";
    up_python(dir, "hung", script, "watchdog = \"1s\"\ninitial_backoff = \"50ms\"");
    wait_until("a watchdog kill and a restart", Duration::from_secs(20), || {
        let events = EventLog::read_all(&StateDir::new(dir).events()).expect("events");
        let killed = events.iter().position(|e| {
            e.process == "hung"
                && e.event == "killed"
                && e.detail.get("cause").and_then(|c| c.as_str()) == Some("watchdog")
        });
        killed.is_some_and(|k| events[k..].iter().any(|e| e.process == "hung" && e.event == "ready"))
    });
    let pids = spawned_pids(dir);
    assert!(mesh(dir, &["down"]).status.success());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived `mesh down`");
    }
}

#[test]
fn a_notify_message_from_outside_the_process_group_is_not_believed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let _down = DownOnDrop(dir);
    let go = dir.join("go");
    // Says READY=1 itself only once the test lets it.
    let script = format!(
        "import os, socket, time\n\
         while not os.path.exists({go:?}): time.sleep(0.05)\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
         time.sleep(1000)\n"
    );
    let file = dir.join("waiter.toml");
    std::fs::write(&file, format!("[[process]]\nname = \"waiter\"\ncommand = [\"python3\", \"-c\", {script:?}]\n"))
        .expect("write");
    // In the foreground: `up -d` would wait for a READY that only the forgery could give.
    let mut up = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(["up", "-f", file.to_str().expect("utf-8"), "--kafka", "127.0.0.1:1", "--redis", "redis://127.0.0.1:1"])
        .env("MESH_STATE_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .ends_with_test()
        .spawn()
        .expect("mesh up");
    let starting = || {
        StateFile::read(&StateDir::new(dir).state())
            .ok()
            .flatten()
            .and_then(|s| s.processes.into_iter().find(|p| p.name == "waiter"))
            .is_some_and(|p| p.state == ProcState::Starting && p.pid.is_some())
    };
    wait_until("waiter spawned", Duration::from_secs(20), starting);
    // Another process of the same user forges its readiness.
    let forger = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    forger.send_to(b"READY=1", StateDir::new(dir).notify_dir().join("waiter.sock")).expect("sent");
    std::thread::sleep(Duration::from_secs(1));
    assert!(starting(), "a READY=1 from outside the waiter's group made it READY");
    // Its own READY=1 is believed.
    std::fs::write(&go, "").expect("go");
    wait_until("waiter READY", Duration::from_secs(20), || {
        state(dir).processes.iter().any(|p| p.name == "waiter" && p.state == ProcState::Ready)
    });
    assert!(mesh(dir, &["down"]).status.success());
    let _ = up.wait();
}

#[test]
fn bad_flags_and_settings_exit_with_the_usage_code_everywhere() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let _down = DownOnDrop(dir);
    for argv in [
        &["up", "--redis", "http://127.0.0.1:1"][..],
        &["up", "-d", "--redis-ca-file", "/etc/hostname"],
        &["up", "-d", "--wait-timeout", "soon"],
        &["bench", "--agents", "4", "--duration", "soon"],
        &["kill", "agent-sales", "--pause", "1e20"],
        &["kill", "agent-sales", "--signal", "NOPE"],
        &["down", "--timeout=-1"],
        &["topology", "--metrics-listen", "localhost"],
        &["up", "-d", "--metrics-listen", "127.0.0.1"],
    ] {
        let out = mesh(dir, argv);
        assert_eq!(out.status.code(), Some(2), "mesh {}: {}", argv.join(" "), text(&out));
    }
    assert!(!StateDir::new(dir).socket().exists(), "nothing was started");
}

#[test]
fn a_stalled_supervisor_does_not_blame_its_children_for_the_silence_it_caused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let _down = DownOnDrop(dir);
    // Pings the watchdog every 200 ms, never waiting on the supervisor (as `mesh`'s own notifier does).
    let script = "import os, socket, time\n\
                  s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
                  s.setblocking(False)\n\
                  s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n\
                  while True:\n\
                  \x20   try: s.sendto(b'WATCHDOG=1', os.environ['NOTIFY_SOCKET'])\n\
                  \x20   except OSError: pass\n\
                  \x20   time.sleep(0.2)\n";
    up_python(dir, "pinger", script, "watchdog = \"1s\"");
    wait_until("pinger READY", Duration::from_secs(20), || {
        state(dir).processes.iter().any(|p| p.name == "pinger" && p.state == ProcState::Ready)
    });
    let supervisor = Pid::from_raw(state(dir).supervisor_pid);
    // Twice: on waking, the supervisor may read the queued pings before or after its timers run; without the
    // stall rule the second order kills the pinger as hung.
    for _ in 0..2 {
        kill(supervisor, Signal::SIGSTOP).expect("SIGSTOP the supervisor");
        std::thread::sleep(Duration::from_secs(3));
        kill(supervisor, Signal::SIGCONT).expect("SIGCONT the supervisor");
        std::thread::sleep(Duration::from_millis(1500));
    }
    let events = events_of(dir, "pinger");
    assert!(!events.iter().any(|e| e == "killed"), "the pinger was killed for the supervisor's stall: {events:?}");
    assert!(events_of(dir, "supervisor").iter().filter(|e| *e == "stalled").count() >= 2, "stalls not recorded");
    assert_eq!(state(dir).processes[0].restarts, 0);
    let pids = spawned_pids(dir);
    assert!(mesh(dir, &["down"]).status.success());
    for pid in pids {
        assert!(!alive(pid), "pid {pid} survived `mesh down`");
    }
}
