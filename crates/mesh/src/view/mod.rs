//! `mesh view`: a live page of the mesh in the browser. It reads what any observer can (the topology manager's
//! snapshot in the store, then the changelog, proposals, votes and decisions topics, verified with the deployment's
//! secret as the managers verify them, and the supervisor's event log in the state directory) into a
//! [`model::Model`], and pushes a [`model::Frame`] to every open page over server-sent events whenever it changed.
//! It writes nothing anywhere.

pub(crate) mod model;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, Seek};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use mesh_kafka::KafkaBus;
use mesh_node::Shutdown;
use mesh_proto::{TopicKind, decode};
use mesh_supervisor::{Event, StateDir};
use mesh_transport::{Assignment, Bus, InRecord, Reader, StartAt};
use tokio::sync::watch;

use self::model::Model;
use crate::settings::Infra;
use crate::store::AnyStore;

/// The page: one file, no external scripts or fonts (the view works offline and on a locked-down host).
const PAGE: &str = include_str!("page.html");

/// What `mesh view` needs besides the deployment's infrastructure.
#[derive(Debug, Clone)]
pub(crate) struct ViewOptions {
    /// Longest a change waits before it is pushed (changes within it go out as one frame).
    pub(crate) refresh: Duration,
    /// The deployment's state directory, for its event log.
    pub(crate) state_dir: PathBuf,
}

/// The page's listening socket, bound before anything connects: an address that cannot be bound is a usage error.
pub(crate) async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("invalid --listen (MESH_VIEW_LISTEN) {listen}: cannot bind it; give a free address"))
}

/// Follows the deployment and serves the page on `listener` until `shutdown`.
pub(crate) async fn run(
    infra: &Infra,
    bus: KafkaBus,
    store: AnyStore,
    listener: tokio::net::TcpListener,
    options: &ViewOptions,
    shutdown: Shutdown,
) -> Result<()> {
    let address = listener.local_addr().context("the view's address")?;
    let (frames, frame) = watch::channel(Arc::<str>::from(waiting_frame("connecting").as_str()));
    let app = axum::Router::new()
        .route("/", get(page))
        .route("/frame", get(current_frame))
        .route("/events", get(events))
        .with_state(frame);
    let mut stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async move { stop.wait().await }).await
    });
    println!("mesh view: http://{address}/ (Ctrl-C to stop)");
    tracing::info!(%address, "serving the live view");
    let followed = follow(infra, &bus, &store, options, &frames, shutdown).await;
    server.abort();
    followed
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

async fn current_frame(State(frame): State<watch::Receiver<Arc<str>>>) -> impl IntoResponse {
    let body = frame.borrow().to_string();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body)
}

/// Server-sent events: the current frame at once, then each new one (a slow page skips to the latest).
async fn events(State(mut frame): State<watch::Receiver<Arc<str>>>) -> impl IntoResponse {
    frame.mark_changed();
    let stream = futures::stream::unfold(frame, |mut frame| async move {
        frame.changed().await.ok()?;
        let data = frame.borrow_and_update().clone();
        Some((Ok::<_, Infallible>(SseEvent::default().event("frame").data(&*data)), frame))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn waiting_frame(why: &str) -> String {
    serde_json::json!({ "at_ms": mesh_node::now_ms(), "waiting": why }).to_string()
}

/// Reads the deployment into the model and publishes frames, until shutdown.
async fn follow(
    infra: &Infra,
    bus: &KafkaBus,
    store: &AnyStore,
    options: &ViewOptions,
    frames: &watch::Sender<Arc<str>>,
    shutdown: Shutdown,
) -> Result<()> {
    let prefix = infra.mesh.topics.prefix().to_owned();
    let mut tick = tokio::time::interval(options.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = shutdown.clone();
    // The graph's parameters and its starting point come with the topology manager's first snapshot (taken as soon
    // as it applied its first window).
    let snapshot = loop {
        match mesh_node::topology::read_snapshot_to_follow(store, &prefix).await {
            Ok(Some(snapshot)) => break snapshot,
            Ok(None) => frames.send_replace(waiting_frame("the topology manager's first snapshot").into()),
            Err(e) => frames.send_replace(waiting_frame(&format!("the store: {e}")).into()),
        };
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.wait() => return Ok(()),
        }
    };
    let mut model = Model::new();
    let changelog_next = snapshot.changelog_next;
    model.start_graph(snapshot.topology, snapshot.decay_interval_ms);
    let topics = &infra.mesh.topics;
    let mut kinds = HashMap::new();
    let mut assignments = Vec::new();
    let changelog = topics.name(TopicKind::Windows);
    kinds.insert(changelog.clone(), TopicKind::Windows);
    assignments.push(Assignment { topic: changelog, partition: 0, start: StartAt::Offset(changelog_next) });
    for (kind, start) in [
        (TopicKind::Proposals, StartAt::End),
        (TopicKind::Votes, StartAt::End),
        (TopicKind::Decisions, StartAt::Beginning),
    ] {
        let topic = topics.name(kind);
        let partitions = bus.partition_count(&topic).await.with_context(|| format!("the partitions of {topic}"))?;
        for partition in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
            assignments.push(Assignment { topic: topic.clone(), partition, start });
        }
        kinds.insert(topic, kind);
    }
    let group = format!("{prefix}-view-{}", std::process::id());
    let mut reader = bus.reader(&group, assignments).await.context("opening the view's reader")?;
    let verifier = infra.mesh.credentials.verifier();
    let mut event_log = EventTail::new(StateDir::new(&options.state_dir).events());
    let mut published = None;
    loop {
        tokio::select! {
            read = reader.next() => match read {
                Ok(record) => {
                    let Some(kind) = kinds.get(&record.topic).copied() else { continue };
                    if let Some(accepted) = open(&verifier, &record, kind) {
                        model.on_record(accepted, mesh_node::now_ms());
                    }
                }
                Err(e) => {
                    // The reader reconnects by itself; a dead broker is reported and waited out.
                    tracing::warn!(error = %e, "reading the mesh failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = tick.tick() => {
                for event in event_log.read_new() {
                    model.on_event(event);
                }
                if published != Some(model.version()) {
                    published = Some(model.version());
                    match serde_json::to_string(&model.frame(mesh_node::now_ms())) {
                        Ok(json) => { frames.send_replace(json.into()); }
                        Err(e) => tracing::warn!(error = %e, "a frame could not be encoded"),
                    }
                }
            }
            () = stop.wait() => return Ok(()),
        }
    }
}

/// The record, if it decodes and its writer's tag checks out (what the mesh does not believe, the view does not
/// show).
fn open(
    verifier: &mesh_proto::auth::Verifier,
    record: &InRecord,
    kind: TopicKind,
) -> Option<mesh_proto::records::Record> {
    let envelope = decode(record.payload.as_deref(), Some(kind)).ok()?;
    let key = record.key.as_deref().unwrap_or_default();
    let value = record.payload.as_deref().unwrap_or_default();
    match verifier.check(&envelope.record, &record.topic, key, value, record.auth.as_deref()) {
        Ok(_) => Some(envelope.record),
        Err(e) => {
            tracing::debug!(topic = %record.topic, offset = record.offset, error = %e, "a record not shown: unverified");
            None
        }
    }
}

/// The supervisor's event log, read on from where the last read ended: the last [`model::EVENTS_SHOWN`] lines at
/// first, then each new line once.
struct EventTail {
    path: PathBuf,
    position: Option<u64>,
}

impl EventTail {
    fn new(path: PathBuf) -> Self {
        Self { path, position: None }
    }

    fn read_new(&mut self) -> Vec<Event> {
        let Ok(file) = std::fs::File::open(&self.path) else { return Vec::new() };
        let mut file = std::io::BufReader::new(file);
        let start = self.position.unwrap_or(0);
        if file.seek(std::io::SeekFrom::Start(start)).is_err() {
            return Vec::new();
        }
        let mut events = Vec::new();
        let mut line = String::new();
        let mut position = start;
        loop {
            line.clear();
            match file.read_line(&mut line) {
                // A line still being written (no newline yet) is read next time.
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    position += n as u64;
                    if let Ok(event) = serde_json::from_str::<Event>(&line) {
                        events.push(event);
                    }
                }
                _ => break,
            }
        }
        let first_read = self.position.is_none();
        self.position = Some(position);
        if first_read {
            let skip = events.len().saturating_sub(model::EVENTS_SHOWN);
            events.drain(..skip);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_tail_reads_each_complete_line_once_and_starts_from_the_last_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let line = |n: u64| format!("{{\"at_ms\":{n},\"process\":\"agent-sales\",\"event\":\"ready\"}}\n");
        let mut text: String = (0..100).map(line).collect();
        std::fs::write(&path, &text).expect("write");
        let mut tail = EventTail::new(path.clone());
        let first = tail.read_new();
        assert_eq!(first.len(), model::EVENTS_SHOWN);
        assert_eq!(first.last().map(|e| e.at_ms), Some(99));
        assert!(tail.read_new().is_empty(), "nothing new");
        // A line half written is left for the next read.
        text.push_str(&line(100));
        text.push_str("{\"at_ms\":101,");
        std::fs::write(&path, &text).expect("write");
        assert_eq!(tail.read_new().iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![100]);
        text.push_str("\"process\":\"supervisor\",\"event\":\"stopped\"}\n");
        std::fs::write(&path, &text).expect("write");
        assert_eq!(tail.read_new().iter().map(|e| e.at_ms).collect::<Vec<_>>(), vec![101]);
    }
}
