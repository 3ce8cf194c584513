//! Prometheus metrics of one mesh process, served at `/metrics` in the OpenMetrics text format.
//!
//! Why here and not from the Redis stats hashes: Prometheus scrapes processes, and a process that serves its own
//! numbers needs no store to be reachable to be observed. The runtimes keep their counters as before (they also feed
//! `mesh status` and the tests through Redis) and copy them into the registry on their existing periodic ticks, so
//! a scrape costs the loops nothing; latency histograms are observed where the latency is measured. One registry
//! per process: agents packed several to a process (`mesh bench`) each register under an `agent` label.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use mesh_core::membership::MemberStatus;
use mesh_proto::read_model::{AgentStats, ConsensusStats, MetricFields, MetricValues, TopologyStats};

use crate::runtime::{NodeError, Shutdown};

/// The registry of one process, shared by its runtimes and its `/metrics` endpoint.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Registry>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

/// Any two registries compare equal: a registry is where a process's numbers go, not a setting, so two settings
/// that differ only in it are the same settings.
impl PartialEq for Metrics {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Metrics {
    /// Serves `/metrics` on `listen` until `shutdown`; the address bound (`listen` may ask for port 0).
    pub async fn serve(&self, listen: SocketAddr, shutdown: &Shutdown) -> Result<SocketAddr, NodeError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| NodeError::Metrics { detail: format!("binding {listen}: {e}") })?;
        let bound = listener.local_addr().map_err(|e| NodeError::Metrics { detail: e.to_string() })?;
        let app = axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(self.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let serving = axum::serve(listener, app).with_graceful_shutdown(async move { stop.wait().await });
            if let Err(e) = serving.await {
                tracing::warn!(error = %e, "the metrics endpoint stopped");
            }
        });
        Ok(bound)
    }

    /// The registry as OpenMetrics text.
    pub fn encode(&self) -> String {
        let registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// Adds metrics computed at each scrape (the supervisor's, read from its state file).
    pub fn register_collector(&self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).register_collector(collector);
    }

    /// Registers metrics under `prefix` (and `labels`, for several runtimes of one kind in a process).
    fn register<T>(&self, prefix: &str, labels: Vec<(String, String)>, build: impl FnOnce(&mut Registry) -> T) -> T {
        let mut registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let labels = labels.into_iter().map(|(k, v)| (k.into(), v.into()));
        let sub = registry.sub_registry_with_prefix(prefix).sub_registry_with_labels(labels);
        build(sub)
    }
}

/// OpenMetrics to a scraper that asks for it (Prometheus does), the Prometheus text format 0.0.4 to anyone else
/// (`curl`, `promtool check metrics`).
async fn scrape(
    axum::extract::State(metrics): axum::extract::State<Metrics>,
    headers: axum::http::HeaderMap,
) -> impl axum::response::IntoResponse {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let text = metrics.encode();
    let (content_type, body) = if accept.contains("application/openmetrics-text") {
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else {
        ("text/plain; version=0.0.4; charset=utf-8", prometheus_text(&text))
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], body)
}

/// The OpenMetrics text `prometheus-client` writes, in the older Prometheus text format (0.0.4), which the encoder
/// does not write: a counter's `# HELP` and `# TYPE` name its samples (`x_total`, where OpenMetrics names the family
/// `x`), and there is no `# UNIT` or `# EOF`. Samples and label escaping are the same in both, and the metrics here
/// are only counters, gauges and histograms, whose samples keep their names.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].into_iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{tag}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The metrics mirrored from a runtime's statistics hash (the fields it marks `counter`, `gauge` or `fraction`, under
/// the same names): each sync sets the levels and adds to each counter what grew since the last.
pub(crate) struct Mirror {
    counters: Vec<(&'static str, Counter, u64)>,
    gauges: Vec<(&'static str, Gauge)>,
    fractions: Vec<(&'static str, Gauge<f64, std::sync::atomic::AtomicU64>)>,
}

impl Mirror {
    fn register(registry: &mut Registry, fields: MetricFields) -> Self {
        Self {
            counters: fields.counters.iter().map(|(name, help)| (*name, counter(registry, name, help), 0)).collect(),
            gauges: fields.gauges.iter().map(|(name, help)| (*name, gauge(registry, name, help))).collect(),
            fractions: fields.fractions.iter().map(|(name, help)| (*name, fraction(registry, name, help))).collect(),
        }
    }

    /// The runtime's statistics now: their `metric_values()`, of the hash registered.
    pub(crate) fn sync(&mut self, values: &MetricValues) {
        for (name, value) in &values.counters {
            let found = self.counters.iter_mut().find(|(n, _, _)| n == name);
            debug_assert!(found.is_some(), "{name} is not a registered counter");
            if let Some((_, counter, last)) = found {
                counter.inc_by(value.saturating_sub(*last));
                *last = *value;
            }
        }
        for (name, value) in &values.gauges {
            if let Some((_, gauge)) = self.gauges.iter().find(|(n, _)| n == name) {
                gauge.set(*value);
            }
        }
        for (name, value) in &values.fractions {
            if let Some((_, gauge)) = self.fractions.iter().find(|(n, _)| n == name) {
                gauge.set(*value);
            }
        }
    }
}

/// Latency buckets from 0.5 ms to ~65 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 18))
}

/// A partition read, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabel {
    topic: String,
    partition: i32,
}

/// Records behind each partition's end, per partition a runtime reads (measured by the bus every few seconds).
#[derive(Clone, Default)]
pub(crate) struct ConsumerLag(Family<PartitionLabel, Gauge>);

impl ConsumerLag {
    fn register(registry: &mut Registry) -> Self {
        let lag = Self::default();
        registry.register(
            "consumer_lag",
            "Records between this reader's position and the partition's end",
            lag.0.clone(),
        );
        lag
    }

    /// The readers' latest measurements (partitions no longer measured are dropped).
    pub(crate) fn set(&self, lags: impl IntoIterator<Item = mesh_transport::PartitionLag>) {
        self.0.clear();
        for l in lags {
            self.0.get_or_create(&PartitionLabel { topic: l.topic, partition: l.partition }).set(l.records);
        }
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let gauge = Gauge::default();
    registry.register(name, help, gauge.clone());
    gauge
}

fn fraction(registry: &mut Registry, name: &str, help: &str) -> Gauge<f64, std::sync::atomic::AtomicU64> {
    let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    registry.register(name, help, gauge.clone());
    gauge
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let counter = Counter::default();
    registry.register(name, help, counter.clone());
    counter
}

fn histogram(registry: &mut Registry, name: &str, help: &str) -> Histogram {
    let histogram = latency_histogram();
    registry.register_with_unit(name, help, Unit::Seconds, histogram.clone());
    histogram
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An agent's metrics (prefix `mesh_agent`, label `agent`).
pub(crate) struct AgentMetrics {
    /// The counters and levels of its statistics hash.
    pub(crate) mirror: Mirror,
    in_flight: Gauge,
    /// Send (by another agent) to handling here, of every task and response handled.
    pub(crate) delivery: Histogram,
    /// A task's intended send time to its response.
    pub(crate) round_trip: Histogram,
    /// A send handed to the producer to its acknowledgement by the broker (retries included).
    pub(crate) publish: Histogram,
    pub(crate) consumer_lag: ConsumerLag,
}

impl AgentMetrics {
    pub(crate) fn register(metrics: &Metrics, agent: &str) -> Self {
        metrics.register("mesh_agent", vec![("agent".into(), agent.into())], |r| Self {
            mirror: Mirror::register(r, AgentStats::METRICS),
            in_flight: gauge(r, "sends_in_flight", "Sends awaiting the broker's acknowledgement"),
            delivery: histogram(r, "delivery", "Send (by another agent) to handling here, tasks and responses"),
            round_trip: histogram(r, "round_trip", "A task's intended send time to its response"),
            publish: histogram(r, "publish", "A send handed to the producer to its acknowledgement, retries included"),
            consumer_lag: ConsumerLag::register(r),
        })
    }

    /// Sends awaiting acknowledgement, exported live (the hash's `in_flight` is written only when it changes).
    pub(crate) fn set_in_flight(&self, in_flight: usize) {
        self.in_flight.set(to_i64(in_flight));
    }
}

/// A decision's outcome, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabel {
    outcome: &'static str,
}

/// The consensus manager's metrics (prefix `mesh_consensus`).
pub(crate) struct ConsensusMetrics {
    decisions: Family<OutcomeLabel, Counter>,
    /// The counters and levels of its statistics hash.
    pub(crate) mirror: Mirror,
    pending: Gauge,
    /// A proposal's creation (by its proposer's clock) to its decision being published.
    pub(crate) decision_latency: Histogram,
    pub(crate) consumer_lag: ConsumerLag,
}

impl ConsensusMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        metrics.register("mesh_consensus", Vec::new(), |r| {
            let decisions = Family::<OutcomeLabel, Counter>::default();
            r.register("decisions", "Decisions published, by outcome", decisions.clone());
            Self {
                decisions,
                mirror: Mirror::register(r, ConsensusStats::METRICS),
                pending: gauge(r, "proposals_pending", "Proposals being voted on"),
                decision_latency: histogram(r, "decision_latency", "A proposal's creation to its decision"),
                consumer_lag: ConsumerLag::register(r),
            }
        })
    }

    /// A decision published with `outcome` (`accepted`, `rejected`, ...).
    pub(crate) fn decided(&self, outcome: &'static str) {
        self.decisions.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Proposals being voted on (the hash calls them `pending`; the metric's name says what is pending).
    pub(crate) fn set_pending(&self, pending: usize) {
        self.pending.set(to_i64(pending));
    }
}

/// The topology manager's metrics (prefix `mesh_topology`).
pub(crate) struct TopologyMetrics {
    /// The counters and levels of its statistics hash.
    pub(crate) mirror: Mirror,
    agents: Family<StatusLabel, Gauge>,
    /// Edges decay took below the prune threshold.
    pub(crate) edges_pruned: Counter,
    pub(crate) consumer_lag: ConsumerLag,
    /// How long after its tick each window was applied.
    pub(crate) window_lateness: Histogram,
}

/// A roster status, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    status: &'static str,
}

impl TopologyMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        metrics.register("mesh_topology", Vec::new(), |r| {
            let agents = Family::<StatusLabel, Gauge>::default();
            r.register("agents", "Roster entries by status", agents.clone());
            Self {
                mirror: Mirror::register(r, TopologyStats::METRICS),
                agents,
                edges_pruned: counter(r, "edges_pruned", "Edges decay took below the prune threshold"),
                window_lateness: histogram(r, "window_lateness", "A window's tick to its being applied"),
                consumer_lag: ConsumerLag::register(r),
            }
        })
    }

    /// How many roster entries have each status.
    pub(crate) fn set_roster(&self, count: impl Fn(MemberStatus) -> usize) {
        for status in MemberStatus::ALL {
            self.agents.get_or_create(&StatusLabel { status: status.name() }).set(to_i64(count(status)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_the_runtime_and_the_text_is_openmetrics() {
        let metrics = Metrics::default();
        let agent = AgentMetrics::register(&metrics, "sales");
        let mut mirror = agent.mirror;
        let stats = |sent, peers| AgentStats {
            tasks_sent: Some(sent),
            tasks_handled: Some(1),
            live_peers: Some(peers),
            ..AgentStats::default()
        };
        mirror.sync(&stats(3, 2).metric_values());
        mirror.sync(&stats(5, 1).metric_values());
        let topology = TopologyMetrics::register(&metrics);
        let mut topology_mirror = topology.mirror;
        topology_mirror.sync(&TopologyStats { mean_weight: Some(0.5), ..TopologyStats::default() }.metric_values());
        agent.delivery.observe(0.002);
        let consensus = ConsensusMetrics::register(&metrics);
        consensus.decided("accepted");
        let text = metrics.encode();
        assert!(text.contains("mesh_agent_tasks_sent_total{agent=\"sales\"} 5"), "{text}");
        assert!(text.contains("mesh_agent_tasks_handled_total{agent=\"sales\"} 1"), "{text}");
        assert!(text.contains("mesh_agent_live_peers{agent=\"sales\"} 1\n"), "a level is set, not added: {text}");
        assert!(text.contains("mesh_topology_mean_weight 0.5\n"), "{text}");
        assert!(text.contains("mesh_agent_delivery_seconds_count{agent=\"sales\"} 1"), "{text}");
        assert!(text.contains("mesh_consensus_decisions_total{outcome=\"accepted\"} 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let old = prometheus_text(&text);
        assert!(old.contains("# TYPE mesh_agent_tasks_sent_total counter\n"), "{old}");
        assert!(old.contains("# HELP mesh_agent_tasks_sent_total Tasks sent to other agents.\n"), "{old}");
        assert!(old.contains("# TYPE mesh_agent_delivery_seconds histogram\n"), "{old}");
        assert!(!old.contains("# EOF") && !old.contains("# UNIT"), "{old}");
    }
}
