//! What each kind of process cost, from `/proc`: CPU seconds over the measured window (read at both ends and
//! subtracted) and peak resident memory (VmHWM) over the whole run, for the deployment's processes and the
//! infrastructure this run started.

use std::collections::BTreeMap;

use mesh_supervisor::StateFile;

use super::infra::Infra;
use crate::report::Cost;

/// The kind a process is counted under in the cost table: every agent process is `agent`, every node of a Kafka
/// cluster `kafka`, and the others by name.
pub(crate) fn kind_of(name: &str) -> &str {
    if name.starts_with("agent-") {
        "agent"
    } else if name.starts_with("kafka-") {
        "kafka"
    } else {
        name
    }
}

/// CPU seconds per process name (and the infrastructure's, under `kafka` and `redis`).
pub(crate) fn process_cpu(state: &StateFile, infra: &Infra) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = state
        .processes
        .iter()
        .filter_map(|p| Some((p.name.clone(), mesh_supervisor::child::usage(p.pid?)?.0)))
        .collect();
    for (name, pid) in infra.infrastructure_pids() {
        if let Some(cpu) = mesh_supervisor::child::usage(pid) {
            out.insert(name, cpu.0);
        }
    }
    out
}

/// Peak resident set (VmHWM) of a process, bytes.
fn peak_rss(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU over the measured window and peak RSS over the whole run, per kind of process.
pub(crate) fn costs(
    state: &StateFile,
    infra: &Infra,
    start: &BTreeMap<String, f64>,
    end: &BTreeMap<String, f64>,
) -> Vec<Cost> {
    let mut pids: Vec<(String, Option<i32>)> = state.processes.iter().map(|p| (p.name.clone(), p.pid)).collect();
    pids.extend(infra.infrastructure_pids().into_iter().map(|(name, pid)| (name, Some(pid))));
    let mut kinds: BTreeMap<&str, (usize, f64, Vec<f64>)> = BTreeMap::new();
    for (name, pid) in &pids {
        let Some(pid) = pid else { continue };
        let cpu = end.get(name).copied().unwrap_or(0.0) - start.get(name).copied().unwrap_or(0.0);
        let entry = kinds.entry(kind_of(name)).or_default();
        entry.0 += 1;
        entry.1 += cpu.max(0.0);
        #[expect(clippy::cast_precision_loss, reason = "MiB for display")]
        if let Some(rss) = peak_rss(*pid) {
            entry.2.push(rss as f64 / 1_048_576.0);
        }
    }
    let order = ["agent", "topology", "consensus", "kafka", "redis"];
    let mut out: Vec<Cost> = kinds
        .into_iter()
        .map(|(kind, (processes, cpu_s, rss))| {
            #[expect(clippy::cast_precision_loss, reason = "MiB for display")]
            let mean = if rss.is_empty() { 0.0 } else { rss.iter().sum::<f64>() / rss.len() as f64 };
            Cost {
                kind: kind.to_owned(),
                processes,
                cpu_s,
                peak_rss_mib_max: rss.iter().copied().fold(0.0, f64::max),
                peak_rss_mib_mean: mean,
            }
        })
        .collect();
    out.sort_by_key(|c| order.iter().position(|k| *k == c.kind).unwrap_or(order.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clusters_nodes_are_one_kind_in_the_cost_table() {
        assert_eq!(kind_of("kafka-2"), "kafka");
        assert_eq!(kind_of("kafka"), "kafka");
        assert_eq!(kind_of("agent-b0001"), "agent");
        assert_eq!(kind_of("topology"), "topology");
    }

    #[test]
    fn this_process_has_a_peak_resident_set() {
        let me = i32::try_from(std::process::id()).expect("a pid");
        assert!(peak_rss(me).is_some_and(|bytes| bytes > 0));
        assert_eq!(peak_rss(-1), None);
    }
}
