//! The supervisor's own Prometheus metrics: each process's state and restarts, as `mesh status` shows them.
//!
//! Read from the state file at each scrape rather than kept in step with the supervisor's loop: the file is the
//! supervisor's published view (rewritten within about 150 ms of a change), so the endpoint needs no hook into the
//! dispatcher and shows exactly what `mesh status` would.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use mesh_supervisor::{ProcState, StateFile};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Every state a process can be in, as the label values of `mesh_supervisor_process_state`.
const STATES: [(ProcState, &str); 6] = [
    (ProcState::Starting, "starting"),
    (ProcState::Ready, "ready"),
    (ProcState::Backoff, "backoff"),
    (ProcState::Failed, "failed"),
    (ProcState::Stopping, "stopping"),
    (ProcState::Stopped, "stopped"),
];

/// Serves the supervisor's metrics on `ip` (a free port) until the switch returned is dropped; the address bound.
pub(crate) async fn serve(
    ip: IpAddr,
    state_file: PathBuf,
) -> anyhow::Result<(SocketAddr, tokio::sync::watch::Sender<bool>)> {
    let metrics = mesh_node::Metrics::default();
    metrics.register_collector(Box::new(SupervisorCollector { state_file }));
    let (stop, stopped) = mesh_node::Shutdown::new();
    let bound =
        metrics.serve(SocketAddr::new(ip, 0), &stopped).await.context("failed to serve the supervisor's metrics")?;
    Ok((bound, stop))
}

#[derive(Debug)]
struct SupervisorCollector {
    state_file: PathBuf,
}

impl Collector for SupervisorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Not written yet (the first moments of `mesh up`): nothing to say.
        let Ok(Some(state)) = StateFile::read(&self.state_file) else { return Ok(()) };
        let restarts = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "mesh_supervisor_restarts",
            "Restarts of a process.",
            None,
            restarts.metric_type(),
        )?;
        for p in &state.processes {
            ConstCounter::new(u64::from(p.restarts)).encode(family.encode_family(&[("process", p.name.as_str())])?)?;
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "mesh_supervisor_process_state",
            "1 for the state a process is in, 0 for the others.",
            None,
            gauge.metric_type(),
        )?;
        for p in &state.processes {
            for (s, label) in STATES {
                let labels = [("process", p.name.as_str()), ("state", label)];
                ConstGauge::new(i64::from(p.state == s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
