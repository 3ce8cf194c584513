//! `mesh view` in a real headless Chromium, driven over the DevTools protocol: the page of a `mesh up` deployment on
//! the embedded default shows what `mesh inspect --json` reads, keeps a screenshot under `target/`, and turns a
//! killed agent dead within the failure timeout.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::supervisor::{inspected_topology, mesh, text, wait_until};
use crate::support::EndsWithTest;

/// The topology settings of the test deployment: liveness judged in 2 s, windows every 200 ms.
const SETTINGS: &str = "[topology]\ndecay_interval = \"200ms\"\nfailure_timeout = \"2s\"\nsnapshot_interval = \"500ms\"\n\
                        [agent]\nheartbeat_interval = \"250ms\"\n";
const FAILURE_TIMEOUT: Duration = Duration::from_secs(2);
const DECAY_INTERVAL: Duration = Duration::from_millis(200);
const REFRESH: Duration = Duration::from_millis(250);

/// A child in a process group of its own, killed with its whole group on drop: also when the test panics while
/// still waiting for it to start.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.0.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// A headless Chromium and one page of it, stopped (its whole process group) on drop.
struct Browser {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    _chromium: Group,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let program =
            mesh_fixtures::find_program("chromium-headless-shell").expect("chromium-headless-shell installed");
        let log = std::fs::File::create(profile.with_extension("log")).expect("chromium log");
        let chromium = Group(
            Command::new(program)
                .args(["--no-sandbox", "--hide-scrollbars", "--window-size=1400,800", "--no-first-run"])
                // Port 0: Chromium binds a free port itself and writes it to DevToolsActivePort in its profile.
                .arg("--remote-debugging-port=0")
                .arg("--remote-debugging-address=127.0.0.1")
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .process_group(0)
                .ends_with_test()
                .spawn()
                .expect("chromium starts"),
        );
        let mut address = String::new();
        wait_until("chromium's DevTools port", Duration::from_secs(30), || {
            let written = std::fs::read_to_string(profile.join("DevToolsActivePort")).unwrap_or_default();
            address = written.lines().next().map(|port| format!("127.0.0.1:{port}")).unwrap_or_default();
            !address.is_empty()
        });
        let mut target = None;
        wait_until("chromium's DevTools endpoint", Duration::from_secs(30), || {
            target = devtools_targets(&address)
                .and_then(|targets| targets.into_iter().find(|t| t["type"] == "page"))
                .and_then(|page| page["webSocketDebuggerUrl"].as_str().map(str::to_owned));
            target.is_some()
        });
        let url = target.expect("a page target");
        let stream = TcpStream::connect(&address).expect("DevTools connects");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let (socket, _) = tungstenite::client(url.as_str(), stream).expect("DevTools websocket");
        Browser { socket, next_id: 0, _chromium: chromium }
    }

    /// Sends one DevTools command and waits for its answer (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(request)).expect("send to DevTools");
        loop {
            let message = self.socket.read().expect("read from DevTools");
            let Ok(text) = message.to_text() else { continue };
            let Ok(answer) = serde_json::from_str::<Value>(text) else { continue };
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call("Runtime.evaluate", json!({ "expression": expression, "returnByValue": true }));
        result["result"]["value"].clone()
    }

    fn text_of(&mut self, id: &str) -> String {
        self.eval(&format!("document.getElementById('{id}')?.textContent ?? ''")).as_str().unwrap_or("").to_owned()
    }

    fn status_of(&mut self, name: &str) -> String {
        self.eval(&format!("document.querySelector('[data-name=\"{name}\"]')?.dataset.status ?? ''"))
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// DevTools' list of targets. Its HTTP server answers HTTP/1.1 only, and keeps the connection open: the body is
/// read by its length.
fn devtools_targets(address: &str) -> Option<Vec<Value>> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /json/list HTTP/1.1\r\nHost: {address}\r\n\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = None;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0; length?];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// An agent's status in the view's current frame (`/frame`), as a script would read it.
fn frame_status(address: &str, name: &str) -> String {
    crate::metrics::get(address, "/frame", "application/json")
        .and_then(|(_, _, body)| serde_json::from_str::<Value>(&body).ok())
        .and_then(|frame| {
            frame["members"].as_array()?.iter().find(|m| m["name"] == name)?["status"].as_str().map(str::to_owned)
        })
        .unwrap_or_default()
}

/// A running `mesh view`, stopped on drop.
struct View(Child);

impl Drop for View {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// `mesh down` on drop, so a failing test leaves no deployment behind.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = mesh(self.0, &["down"]);
    }
}

#[test]
fn the_page_shows_what_inspect_reads_and_a_killed_agent_turning_dead() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("state");
    let config = tmp.path().join("settings.toml");
    std::fs::write(&config, SETTINGS).expect("settings");
    let config = config.display().to_string();
    let _down = Down(&dir);
    let up = mesh(&dir, &["--config", &config, "up", "-d"]);
    assert!(up.status.success(), "mesh up -d: {}", text(&up));

    // Port 0: the view binds a free port itself and prints its address.
    let refresh = format!("{}ms", REFRESH.as_millis());
    let mut view = View(
        Command::new(env!("CARGO_BIN_EXE_mesh"))
            .args(["view", "--listen", "127.0.0.1:0", "--refresh", &refresh])
            .env("MESH_STATE_DIR", &dir)
            .env_remove("MESH_KAFKA")
            .env_remove("MESH_REDIS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(tmp.path().join("view.log")).expect("view log"))
            .ends_with_test()
            .spawn()
            .expect("mesh view starts"),
    );
    let mut banner = String::new();
    BufReader::new(view.0.stdout.take().expect("stdout")).read_line(&mut banner).expect("the view's banner");
    let address = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {banner:?}"))
        .to_owned();
    wait_until("the view to serve its page", Duration::from_secs(30), || {
        crate::metrics::get(&address, "/", "text/html")
            .is_some_and(|(status, _, body)| status == 200 && body.contains("EventSource"))
    });

    let mut browser = Browser::start(&tmp.path().join("chromium"));
    browser.call("Page.enable", json!({}));
    browser.call("Page.navigate", json!({ "url": format!("http://{address}/") }));

    // The counts on the page equal what `mesh inspect --json` reads from the store at the same moment (the view
    // follows the changelog past the store's snapshot, so they are compared until both sides settle).
    let mut last = String::new();
    wait_until("the page and mesh inspect to agree on agents and edges", Duration::from_secs(60), || {
        let inspect = mesh(&dir, &["inspect", "--json"]);
        assert!(inspect.status.success(), "mesh inspect: {}", text(&inspect));
        let json: Value = serde_json::from_slice(&inspect.stdout).expect("inspect json");
        let agents = inspected_topology(&json).agents.map_or(String::new(), |n| n.to_string());
        let edges = json["snapshot_edges"].as_array().map_or(0, Vec::len).to_string();
        let (page_agents, page_edges) = (browser.text_of("member-count"), browser.text_of("edge-count"));
        last = format!("inspect: {agents} agents {edges} edges; page: {page_agents} agents {page_edges} edges");
        agents == "4" && page_agents == agents && page_edges == edges && edges != "0"
    });
    eprintln!("{last}");
    assert_eq!(browser.eval("document.querySelectorAll('[data-agent]').length"), json!(4), "four agents drawn");
    assert_eq!(browser.status_of("fraud"), "live");
    let decided: u64 = {
        let mut decided = 0;
        wait_until("a decision on the page", Duration::from_secs(30), || {
            decided = browser.text_of("decided-count").parse().unwrap_or(0);
            decided > 0
        });
        decided
    };
    let rows = browser.eval("document.querySelectorAll('#decisions tr').length").as_u64().unwrap_or(0);
    assert!(rows >= 1, "{decided} decided, {rows} rows in the decisions table");
    let events = browser.eval("document.querySelector('#events').textContent").as_str().unwrap_or("").to_owned();
    assert!(events.contains("agent-fraud") && events.contains("ready"), "the supervisor's events: {events}");

    // A killed agent (not restarted) is declared dead after the failure timeout and applied in the next window
    // (the failure tests bound that part); the view pushes it within a refresh. The page shows it dead by then, with
    // two seconds for the machine's load; and the page itself lags the view's own frame by well under a second.
    let bound = FAILURE_TIMEOUT + DECAY_INTERVAL + REFRESH + Duration::from_secs(2);
    let killed = mesh(&dir, &["kill", "agent-fraud", "--no-restart"]);
    assert!(killed.status.success(), "mesh kill: {}", text(&killed));
    let at = Instant::now();
    let (mut in_frame, mut on_page) = (None, None);
    wait_until("fraud to turn dead in the frame and on the page", bound * 3, || {
        if in_frame.is_none() && frame_status(&address, "fraud") == "dead" {
            in_frame = Some(at.elapsed());
        }
        if on_page.is_none() && browser.status_of("fraud") == "dead" {
            on_page = Some(at.elapsed());
        }
        in_frame.is_some() && on_page.is_some()
    });
    let (in_frame, on_page) = (in_frame.unwrap_or_default(), on_page.unwrap_or_default());
    eprintln!(
        "fraud dead in the view's frame {in_frame:?} and on the page {on_page:?} after the kill (bound {bound:?})"
    );
    assert!(on_page <= bound, "fraud turned dead on the page after {on_page:?}, more than {bound:?}");
    assert!(
        on_page.saturating_sub(in_frame) <= REFRESH + Duration::from_secs(1),
        "the page showed fraud dead {:?} after the view's frame did",
        on_page.saturating_sub(in_frame)
    );
    assert_eq!(browser.text_of("dead-count"), "1");
    let events = browser.eval("document.querySelector('#events').textContent").as_str().unwrap_or("").to_owned();
    assert!(events.contains("killed"), "the kill is among the supervisor's events: {events}");

    // Kept for people: the graph with fraud dead and its edges fading, the decisions, the kill among the events.
    let shot = browser.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64 screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mesh-view.png");
    std::fs::write(&path, png).expect("screenshot written");
    eprintln!("screenshot of the live view: {}", path.display());

    // Started again, it rejoins as itself and the page shows it live.
    let restarted = mesh(&dir, &["restart", "agent-fraud"]);
    assert!(restarted.status.success(), "mesh restart: {}", text(&restarted));
    wait_until("fraud live again on the page", Duration::from_secs(30), || browser.status_of("fraud") == "live");
    assert_eq!(browser.eval("document.querySelectorAll('[data-agent]').length"), json!(4), "still four agents");
}
