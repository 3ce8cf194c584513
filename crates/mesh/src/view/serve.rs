//! The view's server and its reader: the page, its JSON frame and its server-sent events over axum, and the loop
//! that follows the deployment into the [`Model`].

use std::collections::HashMap;
use std::convert::Infallible;
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
use mesh_redis::AnyStore;
use mesh_supervisor::StateDir;
use mesh_transport::{Assignment, Bus, InRecord, Reader, StartAt};
use tokio::sync::watch;

use super::model::{self, Model};
use super::tail::EventTail;
use crate::settings::Infra;

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
    let mut model = Model::new();
    let mut events = EventTail::new(StateDir::new(&options.state_dir).events(), model::EVENTS_SHOWN);
    let mut tick = tokio::time::interval(options.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Each pass starts from the topology manager's latest snapshot; a pass ends when the changelog parts from the
    // graph the view holds (a gap: the log was cut, or the view missed records), and the next one starts again.
    loop {
        let Some(changelog_next) = start_graph(infra, store, &mut model, frames, &mut tick, &shutdown).await else {
            return Ok(());
        };
        match follow_from(infra, bus, changelog_next, &mut model, &mut events, frames, &mut tick, &shutdown).await? {
            Pass::Stopped => return Ok(()),
            Pass::Broken => {
                tracing::warn!("the changelog no longer continues the graph shown: starting again from the snapshot");
            }
        }
    }
}

/// How a pass over the changelog ended.
enum Pass {
    Stopped,
    Broken,
}

/// Loads the latest topology snapshot into the model, waiting for the topology manager's first one; the changelog
/// offset to follow from, or `None` on shutdown.
async fn start_graph(
    infra: &Infra,
    store: &AnyStore,
    model: &mut Model,
    frames: &watch::Sender<Arc<str>>,
    tick: &mut tokio::time::Interval,
    shutdown: &Shutdown,
) -> Option<i64> {
    let mut stop = shutdown.clone();
    loop {
        match mesh_node::topology::read_snapshot_to_follow(store, infra.mesh.topics.prefix()).await {
            Ok(Some(snapshot)) => {
                model.start_graph(snapshot.topology, snapshot.decay_interval_ms);
                return Some(snapshot.changelog_next);
            }
            // The graph's parameters and its starting point come with it (taken as soon as the manager applied its
            // first window).
            Ok(None) => frames.send_replace(waiting_frame("the topology manager's first snapshot").into()),
            Err(e) => frames.send_replace(waiting_frame(&format!("the store: {e}")).into()),
        };
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.wait() => return None,
        }
    }
}

/// Reads the changelog from `changelog_next`, proposals and votes from now on and every decision, into the model,
/// and publishes a frame each refresh in which something changed.
#[expect(clippy::too_many_arguments, reason = "the pass's handles, passed down rather than bundled")]
async fn follow_from(
    infra: &Infra,
    bus: &KafkaBus,
    changelog_next: i64,
    model: &mut Model,
    events: &mut EventTail,
    frames: &watch::Sender<Arc<str>>,
    tick: &mut tokio::time::Interval,
    shutdown: &Shutdown,
) -> Result<Pass> {
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
    let group = format!("{}-view-{}", topics.prefix(), std::process::id());
    let mut reader = bus.reader(&group, assignments).await.context("opening the view's reader")?;
    let verifier = infra.mesh.credentials.verifier();
    let mut published = None;
    let mut stop = shutdown.clone();
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
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = stop.wait() => return Ok(Pass::Stopped),
                    }
                }
            },
            _ = tick.tick() => {
                for event in events.read_new() {
                    model.on_event(event);
                }
                if published != Some(model.version()) {
                    published = Some(model.version());
                    match serde_json::to_string(&model.frame(mesh_node::now_ms())) {
                        Ok(json) => { frames.send_replace(json.into()); }
                        Err(e) => tracing::warn!(error = %e, "a frame could not be encoded"),
                    }
                }
                if model.broken() {
                    return Ok(Pass::Broken);
                }
            }
            () = stop.wait() => return Ok(Pass::Stopped),
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
