//! What the mesh's own processes publish to Redis, read back: the agents' counters and HdrHistograms (cumulative,
//! so a window is the difference of two readings, agent by agent) and the topology manager's figures. The figures
//! come from where they happen; the bench only subtracts and merges them.

use std::collections::BTreeMap;

use mesh_node::latency::Latency;
use mesh_proto::read_model::{AgentStats, TopologyStats, redis_keys};
use mesh_redis::AnyStore;
use mesh_transport::SnapshotStore;

use super::plan::Plan;
use crate::report::Windows;

/// What one agent had published at one moment.
#[derive(Default, Clone)]
pub(crate) struct AgentSnapshot {
    /// When this incarnation of the agent started: a restarted agent's counters and histograms begin again at zero.
    pub(crate) started_at_ms: u64,
    /// When the agent wrote these counters (`updated_at_ms`): they are up to a second old when read.
    pub(crate) updated_at_ms: u64,
    pub(crate) delivered: u64,
    /// In a window (`AgentTotals::since`): `delivered` over the time between the two writes it is the difference
    /// of, so the rate does not depend on how old the counters were when the bench read them.
    pub(crate) delivered_per_s: f64,
    /// Scenario tasks shed by the agent's send window (`tasks_shed`).
    pub(crate) shed: u64,
    pub(crate) delivery: Latency,
    pub(crate) round_trip: Latency,
}

/// What the agents had published at one moment, per agent.
#[derive(Default)]
pub(crate) struct AgentTotals {
    agents: BTreeMap<String, AgentSnapshot>,
}

impl AgentTotals {
    /// Everything the agents counted after `start`: per agent, the difference if it is the same incarnation, else
    /// all of the newer one (it started inside the window). Also the number of agents that restarted. An agent
    /// restarted in the window used to fail the whole run ("histograms went backwards").
    pub(crate) fn since(&self, start: &AgentTotals) -> (AgentSnapshot, usize) {
        let mut window = AgentSnapshot::default();
        let mut restarted = 0;
        for (name, end) in &self.agents {
            let mut part = end.clone();
            match start.agents.get(name) {
                Some(begin) if begin.started_at_ms == end.started_at_ms => {
                    part.delivered = end.delivered.saturating_sub(begin.delivered);
                    part.shed = end.shed.saturating_sub(begin.shed);
                    part.delivered_per_s =
                        per_second(part.delivered, end.updated_at_ms.saturating_sub(begin.updated_at_ms));
                    // Same incarnation: its histograms only grow, so the subtraction cannot fail; if it did, the
                    // newer histogram alone is the honest upper bound.
                    if part.delivery.subtract(&begin.delivery).is_err() {
                        part.delivery = end.delivery.clone();
                    }
                    if part.round_trip.subtract(&begin.round_trip).is_err() {
                        part.round_trip = end.round_trip.clone();
                    }
                }
                Some(_) => {
                    restarted += 1;
                    part.delivered_per_s =
                        per_second(part.delivered, end.updated_at_ms.saturating_sub(end.started_at_ms));
                }
                None => {}
            }
            window.delivered += part.delivered;
            window.shed += part.shed;
            window.delivered_per_s += part.delivered_per_s;
            window.delivery.add(&part.delivery);
            window.round_trip.add(&part.round_trip);
        }
        (window, restarted)
    }
}

/// `count` over `ms` milliseconds, per second (0 over no time).
#[expect(clippy::cast_precision_loss, reason = "rates for display")]
fn per_second(count: u64, ms: u64) -> f64 {
    if ms == 0 { 0.0 } else { count as f64 * 1000.0 / ms as f64 }
}

/// Every agent's counters now (and histograms if `with_histograms`); an agent not yet published is left out.
pub(crate) async fn agent_totals(store: &AnyStore, plan: &Plan, with_histograms: bool) -> AgentTotals {
    let mut totals = AgentTotals::default();
    let names: Vec<String> = (0..plan.agents).map(Plan::agent_name).collect();
    // All at once, which the store's one connection pipelines: 500 round trips in turn took longer than the window
    // they measure when the machine was loaded, and each read of the window's end came that much late.
    let replies = futures::future::join_all(names.iter().map(|name| {
        let key = redis_keys::agent_stats(&plan.prefix, name);
        async move { store.hgetall(&key).await }
    }))
    .await;
    for (name, reply) in names.into_iter().zip(replies) {
        let Ok(fields) = reply else { continue };
        let stats = AgentStats::from_fields(fields);
        let mut agent = AgentSnapshot {
            started_at_ms: stats.started_at_ms.unwrap_or(0),
            updated_at_ms: stats.updated_at_ms.unwrap_or(0),
            delivered: stats.tasks_handled.unwrap_or(0) + stats.responses_received.unwrap_or(0),
            shed: stats.tasks_shed.unwrap_or(0),
            ..AgentSnapshot::default()
        };
        if with_histograms {
            if let Some(h) = stats.delivery_us.as_deref().and_then(|t| Latency::decode(t).ok()) {
                agent.delivery = h;
            }
            if let Some(h) = stats.round_trip_us.as_deref().and_then(|t| Latency::decode(t).ok()) {
                agent.round_trip = h;
            }
        }
        totals.agents.insert(name, agent);
    }
    totals
}

/// The topology manager's live agents, edges and reduction against the full mesh (zeros before it published).
pub(crate) async fn topology_figures(store: &AnyStore, prefix: &str) -> (usize, usize, f64) {
    let fields = store.hgetall(&redis_keys::topology_stats(prefix)).await.unwrap_or_default();
    let stats = TopologyStats::from_fields(fields);
    let count = |n: Option<u64>| usize::try_from(n.unwrap_or(0)).unwrap_or(usize::MAX);
    (count(stats.live_agents), count(stats.edges), stats.reduction_vs_full_mesh.unwrap_or(0.0))
}

/// The topology manager's window figures at the end of the run (how late windows were applied).
pub(crate) async fn window_stats(store: &AnyStore, prefix: &str) -> Option<Windows> {
    let stats = TopologyStats::from_fields(store.hgetall(&redis_keys::topology_stats(prefix)).await.ok()?);
    Some(Windows {
        applied: stats.windows_applied?,
        late: stats.windows_late.unwrap_or(0),
        worst_late_ms: stats.window_late_max_ms.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(started_at_ms: u64, delivered: u64, latencies: &[u64]) -> AgentSnapshot {
        let mut delivery = Latency::new();
        for &us in latencies {
            delivery.record(us);
        }
        AgentSnapshot { started_at_ms, delivered, delivery, ..AgentSnapshot::default() }
    }

    #[test]
    fn an_agents_rate_is_its_count_over_the_time_between_its_own_writes() {
        let at = |started, updated, delivered| AgentSnapshot {
            started_at_ms: started,
            updated_at_ms: updated,
            delivered,
            ..AgentSnapshot::default()
        };
        let mut start = AgentTotals::default();
        // Read 900 ms after its write, then (at the end) 100 ms after: the bench's own window would be 20.8 s.
        start.agents.insert("a".into(), at(1, 10_000, 0));
        start.agents.insert("b".into(), at(1, 10_000, 500));
        let mut end = AgentTotals::default();
        end.agents.insert("a".into(), at(1, 30_000, 20_000));
        // b restarted at 25 s and handled 2,500 since.
        end.agents.insert("b".into(), at(25_000, 30_000, 2_500));
        let (window, restarted) = end.since(&start);
        assert_eq!(restarted, 1);
        assert!((window.delivered_per_s - (1_000.0 + 500.0)).abs() < 1e-9, "{}", window.delivered_per_s);
    }

    #[test]
    fn the_window_counts_a_restarted_agent_from_its_restart_and_the_others_by_difference() {
        let mut start = AgentTotals::default();
        start.agents.insert("a".into(), snapshot(1, 10, &[100, 100]));
        start.agents.insert("b".into(), snapshot(1, 50, &[100; 5]));
        let mut end = AgentTotals::default();
        end.agents.insert("a".into(), snapshot(1, 15, &[100, 100, 300]));
        // b restarted during the window: its counters began again at zero.
        end.agents.insert("b".into(), snapshot(2, 4, &[200]));
        // c joined during the window.
        end.agents.insert("c".into(), snapshot(3, 1, &[]));
        let (window, restarted) = end.since(&start);
        assert_eq!(restarted, 1);
        assert_eq!(window.delivered, 5 + 4 + 1);
        assert_eq!(window.delivery.len(), 2);
        assert_eq!(window.delivery.histogram().min(), 200);
        assert_eq!(window.delivery.histogram().max(), 300);
    }

    #[test]
    fn a_rate_over_no_time_is_zero() {
        assert!(per_second(10, 0).abs() < 1e-12);
        assert!((per_second(3, 1_500) - 2.0).abs() < 1e-12);
    }
}
