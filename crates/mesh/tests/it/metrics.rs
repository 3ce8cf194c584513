//! Prometheus metrics on the real broker: every process serves `/metrics`, `promtool check metrics` accepts what
//! each serves, and a real Prometheus (Debian's `prometheus`, which `cargo xtask test` installs) scrapes them all and
//! sees the mesh's traffic and decisions.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{FAST, Mesh};

/// An HTTP/1.0 GET: the status, the content type and the body.
pub(crate) fn get(address: &str, path: &str, accept: &str) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\nAccept: {accept}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-type")))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Some((status, content_type, body.to_owned()))
}

/// Whether `promtool check metrics` accepts `body`; what it said otherwise.
pub(crate) fn promtool_check(body: &str) -> Result<(), String> {
    let mut promtool = Command::new(mesh_fixtures::find_program("promtool").expect("promtool installed"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool.stdin.take().expect("stdin").write_all(body.as_bytes()).expect("promtool reads");
    let out = promtool.wait_with_output().expect("promtool ends");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Where process `name` says it serves its metrics.
fn metrics_address(mesh: &Mesh, name: &str) -> Option<String> {
    let log = mesh.logs(name);
    let at = log.find("serving Prometheus metrics at http://")? + "serving Prometheus metrics at http://".len();
    log[at..].split('/').next().map(str::to_owned)
}

/// The value of the first sample of `metric` (with any labels) in a Prometheus text body.
fn sample(body: &str, metric: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A Prometheus server of the test's own, stopped (its process group) when dropped.
struct Prometheus {
    child: Child,
    address: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Starts Prometheus scraping `targets` every second, on a free loopback port (another one if that was taken
/// before Prometheus bound it).
fn start_prometheus(dir: &std::path::Path, targets: &[String]) -> Prometheus {
    let config = dir.join("prometheus.yml");
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mesh\n    \
             static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .expect("prometheus config");
    for attempt in 0..5 {
        let port = mesh_fixtures::free_port().expect("a free port");
        let address = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join(format!("prometheus-{attempt}.log"))).expect("prometheus log");
        let child = Command::new(mesh_fixtures::find_program("prometheus").expect("prometheus installed"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join(format!("tsdb-{attempt}")).display()))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("prometheus log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("prometheus starts");
        // Dropped (and so stopped) unless it answers: another process may have taken the port first.
        let mut prometheus = Prometheus { child, address };
        for _ in 0..100 {
            if get(&prometheus.address, "/-/ready", "*/*").is_some_and(|(status, _, _)| status == 200) {
                return prometheus;
            }
            if prometheus.child.try_wait().expect("wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("prometheus did not start; its logs are in {}", dir.display());
}

/// The result vector of an instant query.
fn query(prometheus: &Prometheus, promql: &str) -> Vec<Value> {
    let encoded: String = promql
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let Some((200, _, body)) = get(&prometheus.address, &format!("/api/v1/query?query={encoded}"), "*/*") else {
        return Vec::new();
    };
    let answer: Value = serde_json::from_str(&body).unwrap_or_default();
    answer["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_serves_metrics_that_promtool_accepts_and_prometheus_scrapes() {
    let settings: Vec<(&str, &str)> = FAST.iter().copied().chain([("MESH_METRICS_LISTEN", "127.0.0.1:0")]).collect();
    let mut mesh = Mesh::new("metrics", &settings).await;
    mesh.start_managers();
    for role in ["sales", "inventory"] {
        mesh.start_agent(role, "5", "2");
    }
    let names = ["topology", "consensus", "sales", "inventory"];
    let addresses: Vec<String> = mesh
        .eventually("every process serving metrics", Duration::from_secs(30), async || {
            names.iter().map(|n| metrics_address(&mesh, n)).collect::<Option<Vec<_>>>()
        })
        .await;

    // Traffic and decisions show in the numbers each process serves.
    let at = |name: &str| addresses[names.iter().position(|n| *n == name).expect("a process")].clone();
    mesh.eventually("tasks handled and proposals decided, in the metrics", Duration::from_secs(60), async || {
        let (_, _, agent) = get(&at("sales"), "/metrics", "*/*")?;
        let (_, _, consensus) = get(&at("consensus"), "/metrics", "*/*")?;
        let (_, _, topology) = get(&at("topology"), "/metrics", "*/*")?;
        (sample(&agent, "mesh_agent_tasks_handled_total")? > 0.0
            && sample(&agent, "mesh_agent_delivery_seconds_count")? > 0.0
            && sample(&consensus, "mesh_consensus_decisions_total")? > 0.0
            && sample(&topology, "mesh_topology_messages_counted_total")? > 0.0
            // Levels mirrored from the statistics hashes: the graph, its mean weight and each agent's peers.
            && sample(&topology, "mesh_topology_edges")? > 0.0
            && sample(&topology, "mesh_topology_mean_weight")? > 0.0
            && sample(&agent, "mesh_agent_live_peers")? > 0.0
            && sample(&consensus, "mesh_consensus_roster_epoch")? > 0.0)
            .then_some(())
    })
    .await;

    // Each reader's lag per partition (measured every 5 s) and every send's acknowledgement time.
    mesh.eventually("consumer lag and publish latency, in the metrics", Duration::from_secs(30), async || {
        let (_, _, agent) = get(&at("sales"), "/metrics", "*/*")?;
        let (_, _, topology) = get(&at("topology"), "/metrics", "*/*")?;
        let messages = format!("topic=\"{}\"", mesh.topics.name(mesh_proto::TopicKind::Messages));
        (agent.contains("mesh_agent_consumer_lag{")
            && agent.contains(&messages)
            && topology.lines().any(|l| l.starts_with("mesh_topology_consumer_lag{") && l.contains(&messages))
            && sample(&agent, "mesh_agent_publish_seconds_count")? > 0.0)
            .then_some(())
    })
    .await;

    // What each serves passes `promtool check metrics` (the Prometheus text format a plain client is given), and a
    // scraper asking for OpenMetrics gets it.
    for (name, address) in names.iter().zip(&addresses) {
        let (status, content_type, body) = get(address, "/metrics", "*/*").expect("metrics answer");
        assert_eq!(status, 200, "{name}");
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{name}: {content_type}");
        if let Err(said) = promtool_check(&body) {
            panic!("promtool check metrics refused {name}'s metrics: {said}\n{body}");
        }
        let (_, content_type, body) =
            get(address, "/metrics", "application/openmetrics-text;version=1.0.0").expect("metrics answer");
        assert!(content_type.starts_with("application/openmetrics-text"), "{name}: {content_type}");
        assert!(body.ends_with("# EOF\n"), "{name}");
    }

    // A real Prometheus scrapes all four and stores the mesh's numbers.
    let prometheus = start_prometheus(mesh.dir.path(), &addresses);
    let up = mesh
        .eventually("prometheus scraping every process", Duration::from_secs(30), async || {
            let up = query(&prometheus, "up");
            (up.len() == names.len() && up.iter().all(|s| s["value"][1] == "1")).then_some(up)
        })
        .await;
    assert_eq!(up.len(), 4);
    mesh.eventually("the mesh's numbers in prometheus", Duration::from_secs(30), async || {
        let handled = query(&prometheus, "sum(mesh_agent_tasks_handled_total)");
        let decided = query(&prometheus, "sum(mesh_consensus_decisions_total)");
        let live = query(&prometheus, "mesh_topology_agents{status=\"live\"}");
        let positive =
            |r: &[Value]| r.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok()).is_some_and(|v| v > 0.0);
        (positive(&handled) && positive(&decided) && live.first()?["value"][1] == "2").then_some(())
    })
    .await;
}
