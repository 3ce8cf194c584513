//! The result of one `mesh bench` run: a stable JSON schema for comparing runs, the terminal table and the
//! figure-by-figure comparison with an earlier run. docs/bench.md documents every field.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Version of the JSON schema; bumped on any incompatible change.
pub const SCHEMA: &str = "mesh-bench/1";

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// The percentile curve for the SVG: (percentile, µs) at 1 - 10^-k steps.
    #[serde(default)]
    pub curve: Vec<(f64, u64)>,
}

impl Percentiles {
    /// Summarises a histogram (empty if it holds nothing).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let curve = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0]
            .iter()
            .map(|q| (q * 100.0, h.value_at_quantile(*q)))
            .collect();
        Self {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            curve,
        }
    }
}

/// How the run was set up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Agents started.
    pub agents: usize,
    /// Agents per OS process (1: each agent its own process).
    pub agents_per_process: usize,
    /// Agent processes.
    pub agent_processes: usize,
    /// `local` (Apache Kafka + redis-server started for the run), `external` or `embedded` (mock broker: figures
    /// not comparable).
    pub infra: String,
    /// Seconds of traffic measured.
    pub duration_s: f64,
    /// Seconds of traffic before measuring.
    pub warmup_s: f64,
    /// Seconds of plain Kafka traffic before anything ran, to warm a broker the run started (absent in reports
    /// written before it existed: 0).
    #[serde(default)]
    pub broker_warmup_s: f64,
    /// Kafka nodes of a local infrastructure: 1, or a replicated cluster (every topic three replicas, two in sync),
    /// which the baseline runs on too (absent in reports written before it existed: 1).
    #[serde(default = "one_node")]
    pub kafka_nodes: u32,
    /// Niceness the agent processes and the N-process baseline's workers ran at (absent in reports written before
    /// it existed: 0, the bench's own).
    #[serde(default)]
    pub client_nice: i8,
    /// Whether they ran in a CPU cgroup of their own, with the broker and Redis in another of the same weight (absent
    /// before: no).
    #[serde(default)]
    pub client_cgroup: bool,
    /// Simulated hosts (network namespaces) the agent processes were spread over; 1: none (absent before: 1).
    #[serde(default = "one_node")]
    pub hosts: u32,
    /// Tasks each agent starts per second.
    pub task_rate_per_agent: f64,
    /// Messages per second offered in total (each task is answered: two messages).
    pub offered_msgs_per_s: f64,
    /// Proposals per second aimed at, all agents together.
    pub proposals_per_s: f64,
    /// Partitions of the messages topic.
    pub messages_partitions: u32,
    /// The topology manager's decay interval, ms.
    pub decay_interval_ms: u64,
    /// CPU cores of the machine.
    pub cores: usize,
}

fn one_node() -> u32 {
    1
}

/// Membership and full mesh after start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Join {
    /// Seconds from starting the processes until every agent was live and the N*(N-1) edges existed; absent if
    /// that never happened within the ramp-up limit.
    pub converged_s: Option<f64>,
    /// Seconds until every agent was live in the roster (with or without the full mesh at that moment).
    #[serde(default)]
    pub members_s: Option<f64>,
    /// Live agents seen at the end of ramp-up.
    pub live_agents: usize,
    /// Edges seen at the end of ramp-up.
    pub edges: usize,
    /// N*(N-1).
    pub full_mesh_edges: usize,
}

/// Messages between agents during the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Messages {
    /// Tasks and responses handled by their recipients.
    pub delivered: u64,
    /// Delivered per second.
    pub delivered_per_s: f64,
    /// Send by one agent to handling by another.
    pub end_to_end: Percentiles,
    /// Task sent to its response received.
    pub round_trip: Percentiles,
    /// Tasks the agents' schedules wanted sent but shed, their send windows full: the part of the offered load the
    /// broker could not take, which latency (of what was sent) does not show.
    #[serde(default)]
    pub shed: u64,
}

/// Bee consensus during the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Consensus {
    /// Proposals published.
    pub proposals: u64,
    /// Decisions published.
    pub decisions: u64,
    /// Decisions per second.
    pub decisions_per_s: f64,
    /// Mean voters per proposal.
    pub voters: f64,
    /// Proposal published to decision published.
    pub latency: Percentiles,
    /// Of the decisions, how many were expiries (the proposal timeout passed first).
    #[serde(default)]
    pub expired: u64,
}

/// The same deployment with no traffic (`--idle`): what being there costs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Idle {
    /// Agents.
    pub agents: usize,
    /// Seconds watched.
    pub seconds: f64,
    /// CPU of all agent processes together, in cores.
    pub agent_cores: f64,
    /// CPU of one agent process, ms per second.
    pub agent_ms_per_s: f64,
    /// The topology manager, in cores.
    pub topology_cores: f64,
    /// The consensus manager, in cores.
    pub consensus_cores: f64,
    /// The broker (when the run started it), in cores.
    pub kafka_cores: f64,
    /// Largest peak RSS of an agent process, MiB.
    pub agent_peak_rss_mib: f64,
}

/// The topology manager's windows during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Windows {
    /// Windows applied since the manager started.
    pub applied: u64,
    /// Of those, applied more than one decay interval + 100 ms after their tick.
    pub late: u64,
    /// The latest any window was applied after its tick, ms.
    pub worst_late_ms: u64,
}

/// The SlimeMold graph after traffic shaped it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Seconds from the full mesh until the idle edges were pruned (edges fell below N*(N-1)); absent if not seen.
    pub pruned_after_s: Option<f64>,
    /// What the model predicts: 21 decay intervals at the defaults.
    pub expected_prune_s: f64,
    /// Edges at the end.
    pub edges: usize,
    /// 1 - edges / (N*(N-1)) at the end.
    pub reduction_vs_full_mesh: f64,
}

/// CPU and memory of one kind of process over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// `agent`, `topology`, `consensus`, `kafka` or `redis`.
    pub kind: String,
    /// Processes of that kind.
    pub processes: usize,
    /// CPU seconds (user + system), all processes of the kind.
    pub cpu_s: f64,
    /// Largest peak RSS of one process, MiB.
    pub peak_rss_mib_max: f64,
    /// Mean peak RSS, MiB.
    pub peak_rss_mib_mean: f64,
}

/// Plain rdkafka, same broker, size and rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Worker processes (each a producer and a consumer): 1 for what Kafka itself sustains here, N (as many as the
    /// mesh's agent processes) for what N client processes cost on this machine.
    #[serde(default = "one")]
    pub processes: usize,
    /// Messages offered per second.
    pub offered_msgs_per_s: f64,
    /// Bytes per message.
    pub payload_bytes: usize,
    /// Messages sent in the window.
    pub sent: u64,
    /// Of those, received.
    pub received: u64,
    /// Received per second.
    pub delivered_per_s: f64,
    /// Intended send time to receive (no coordinated omission).
    pub latency: Percentiles,
}

fn one() -> usize {
    1
}

/// One rate of a peak search (`--rate max`): the mesh and the one-process baseline at the same offered rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakStep {
    /// Messages per second offered.
    pub offered_msgs_per_s: f64,
    /// Whether the mesh ran at this rate (once it failed a rate, only the baseline goes on); reports written before
    /// this field read as run.
    #[serde(default = "ran_by_default")]
    pub mesh_ran: bool,
    /// The mesh's delivered rate and p99 at it.
    pub mesh_delivered_per_s: f64,
    /// p99 end-to-end, µs.
    pub mesh_p99_us: u64,
    /// The baseline's delivered rate and p99 at it.
    pub baseline_delivered_per_s: f64,
    /// p99, µs.
    pub baseline_p99_us: u64,
    /// The mesh delivered at least 95 % of the offer with p99 within 2x the baseline's.
    pub mesh_sustained: bool,
    /// The baseline delivered at least 95 % of the offer.
    pub baseline_sustained: bool,
}

fn ran_by_default() -> bool {
    true
}

/// The highest rates sustained, mesh and plain Kafka, found in one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Every rate tried, in order.
    pub steps: Vec<PeakStep>,
    /// The highest delivered rate of a step the mesh sustained (0 if none).
    pub mesh_peak_msgs_per_s: f64,
    /// The highest delivered rate of a step the baseline sustained.
    pub baseline_peak_msgs_per_s: f64,
    /// Mesh peak / baseline peak.
    pub ratio: f64,
}

/// A CPU profile of one kind of process over the measured window (`--profile`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileSummary {
    /// `agent`, `topology`, `consensus`, `kafka`, `redis`.
    pub kind: String,
    /// Processes profiled.
    pub processes: usize,
    /// Samples taken.
    pub samples: u64,
    /// The flamegraph, relative to the report directory.
    pub svg: String,
    /// The functions with the most samples at the top of the stack: (name, share of samples).
    pub top: Vec<(String, f64)>,
}

/// Mesh divided by baseline, from the same run: what is tracked across machines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// Delivered/s, mesh / baseline (higher is better; 1.0 is the broker's limit at this rate).
    pub throughput: f64,
    /// p99 latency, mesh / baseline (lower is better).
    pub p99_latency: f64,
}

/// One target of issue 4 and whether this run met it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetCheck {
    /// What is aimed at.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met, missed, or not applicable to this run (`null`).
    pub met: Option<bool>,
}

/// One second of the measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the window opened.
    pub t_s: f64,
    /// Messages delivered per second by the mesh.
    pub mesh_per_s: f64,
}

/// The whole report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// When the run started, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// The mesh version that ran.
    pub version: String,
    /// Setup.
    pub config: RunConfig,
    /// Join convergence.
    pub join: Join,
    /// Messages.
    pub messages: Messages,
    /// Consensus.
    pub consensus: Consensus,
    /// Topology convergence.
    pub topology: Topology,
    /// Cost per process kind.
    pub cost: Vec<Cost>,
    /// The plain-Kafka baseline in one process, unless skipped.
    pub baseline: Option<Baseline>,
    /// Mesh / baseline.
    pub ratios: Option<Ratios>,
    /// The plain-Kafka baseline in as many processes as the mesh has agent processes, when there is more than one.
    #[serde(default)]
    pub baseline_processes: Option<Baseline>,
    /// Mesh / that baseline.
    #[serde(default)]
    pub ratios_processes: Option<Ratios>,
    /// Peak search (`--rate max`).
    #[serde(default)]
    pub peak: Option<Peak>,
    /// CPU profiles per kind of process (`--profile`).
    #[serde(default)]
    pub profiles: Vec<ProfileSummary>,
    /// The run with no traffic (`--idle`).
    #[serde(default)]
    pub idle: Option<Idle>,
    /// The topology manager's windows.
    #[serde(default)]
    pub window_stats: Option<Windows>,
    /// Throughput over time.
    pub timeline: Vec<Sample>,
    /// Baseline throughput over time.
    #[serde(default)]
    pub baseline_timeline: Vec<Sample>,
    /// Issue 4's targets against this run.
    pub targets: Vec<TargetCheck>,
}

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// More is better (throughput).
    Higher,
    /// Less is better (latency, cost).
    Lower,
}

/// One number of the report, named as in the table and `--compare`.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Name.
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
}

#[expect(clippy::cast_precision_loss, reason = "figures are for display")]
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Report {
    /// The report's numbers, flat, in table order.
    #[expect(clippy::cast_precision_loss, reason = "figures are for display")]
    pub fn figures(&self) -> Vec<Figure> {
        let mut out = Vec::new();
        let mut push = |name: &str, value: f64, unit, better| {
            if value.is_finite() {
                out.push(Figure { name: name.to_owned(), value, unit, better });
            }
        };
        if let Some(j) = self.join.converged_s {
            push("join convergence", j, "s", Better::Lower);
        }
        if let Some(m) = self.join.members_s {
            push("all agents live", m, "s", Better::Lower);
        }
        push("delivered", self.messages.delivered_per_s, "msg/s", Better::Higher);
        #[expect(clippy::cast_precision_loss, reason = "a count for display")]
        push("tasks shed (send windows full)", self.messages.shed as f64, "", Better::Lower);
        let lat = |p: &Percentiles| [("p50", p.p50_us), ("p90", p.p90_us), ("p99", p.p99_us), ("p99.9", p.p999_us)];
        for (q, v) in lat(&self.messages.end_to_end) {
            push(&format!("end-to-end {q}"), ms(v), "ms", Better::Lower);
        }
        push("end-to-end max", ms(self.messages.end_to_end.max_us), "ms", Better::Lower);
        for (q, v) in lat(&self.messages.round_trip) {
            push(&format!("task round trip {q}"), ms(v), "ms", Better::Lower);
        }
        push("decisions", self.consensus.decisions_per_s, "/s", Better::Higher);
        for (q, v) in lat(&self.consensus.latency) {
            push(&format!("consensus {q}"), ms(v), "ms", Better::Lower);
        }
        push("consensus max", ms(self.consensus.latency.max_us), "ms", Better::Lower);
        if let Some(p) = self.topology.pruned_after_s {
            push("pruning began after full mesh", p, "s", Better::Lower);
        }
        push("reduction vs full mesh", self.topology.reduction_vs_full_mesh * 100.0, "%", Better::Higher);
        for c in &self.cost {
            push(&format!("{} CPU", c.kind), c.cpu_s, "s", Better::Lower);
            push(&format!("{} peak RSS (max)", c.kind), c.peak_rss_mib_max, "MiB", Better::Lower);
        }
        if let Some(b) = &self.baseline {
            push("baseline delivered", b.delivered_per_s, "msg/s", Better::Higher);
            for (q, v) in lat(&b.latency) {
                push(&format!("baseline {q}"), ms(v), "ms", Better::Lower);
            }
        }
        if let Some(r) = &self.ratios {
            push("throughput mesh/baseline", r.throughput, "x", Better::Higher);
            push("p99 latency mesh/baseline", r.p99_latency, "x", Better::Lower);
        }
        if let Some(b) = &self.baseline_processes {
            push(&format!("{}-process baseline delivered", b.processes), b.delivered_per_s, "msg/s", Better::Higher);
            for (q, v) in lat(&b.latency) {
                push(&format!("{}-process baseline {q}", b.processes), ms(v), "ms", Better::Lower);
            }
        }
        if let Some(r) = &self.ratios_processes {
            push("throughput mesh/N-process baseline", r.throughput, "x", Better::Higher);
            push("p99 latency mesh/N-process baseline", r.p99_latency, "x", Better::Lower);
        }
        if let Some(i) = &self.idle {
            push("idle agents CPU", i.agent_cores, "cores", Better::Lower);
            push("idle agent CPU, each", i.agent_ms_per_s, "ms/s", Better::Lower);
            push("idle topology CPU", i.topology_cores, "cores", Better::Lower);
            push("idle kafka CPU", i.kafka_cores, "cores", Better::Lower);
        }
        if let Some(w) = &self.window_stats {
            push("windows late (> interval + 100 ms)", w.late as f64, "", Better::Lower);
            push("latest window after its tick", w.worst_late_ms as f64, "ms", Better::Lower);
        }
        if let Some(p) = &self.peak {
            push("peak sustained, mesh", p.mesh_peak_msgs_per_s, "msg/s", Better::Higher);
            push("peak sustained, baseline", p.baseline_peak_msgs_per_s, "msg/s", Better::Higher);
            push("peak mesh/baseline", p.ratio, "x", Better::Higher);
        }
        let _ = self.messages.delivered as f64;
        out
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "mesh bench: {} agents in {} processes ({} per process), {} infrastructure{}, {:.0} s measured after {:.0} s \
             warm-up\n  offered {:.0} msg/s ({} tasks/s per agent, answered), {} proposals/s, {} message partitions, \
             decay every {} ms, {} cores{}\n\n",
            c.agents,
            c.agent_processes,
            c.agents_per_process,
            match (c.kafka_nodes > 1, c.hosts > 1) {
                (false, false) => c.infra.clone(),
                (true, false) => format!("{} ({} Kafka nodes)", c.infra, c.kafka_nodes),
                (false, true) => format!("{} (agents on {} simulated hosts)", c.infra, c.hosts),
                (true, true) => {
                    format!("{} ({} Kafka nodes, agents on {} simulated hosts)", c.infra, c.kafka_nodes, c.hosts)
                }
            },
            if c.broker_warmup_s > 0.0 { format!(" warmed {:.0} s", c.broker_warmup_s) } else { String::new() },
            c.duration_s,
            c.warmup_s,
            c.offered_msgs_per_s,
            c.task_rate_per_agent,
            c.proposals_per_s,
            c.messages_partitions,
            c.decay_interval_ms,
            c.cores,
            match (c.client_nice, c.client_cgroup) {
                (0, false) => String::new(),
                (0, true) => ", clients in a CPU cgroup beside the servers'".to_owned(),
                (n, false) => format!(", clients at nice {n}"),
                (n, true) => format!(", clients at nice {n} in a CPU cgroup beside the servers'"),
            },
        );
        s.push_str(&format!("  {:<34} {:>12}\n", "figure", "value"));
        for f in self.figures() {
            s.push_str(&format!("  {:<34} {:>12} {}\n", f.name, format_value(f.value), f.unit));
        }
        s.push_str(&format!(
            "  {:<34} {:>12}\n",
            "join: live agents / edges",
            format!("{}/{}", self.join.live_agents, self.join.edges)
        ));
        if let Some(p) = &self.peak {
            s.push_str(&format!(
                "\n  peak search {:>10} {:>12} {:>10} {:>12} {:>10}\n",
                "offered", "mesh msg/s", "mesh p99", "base msg/s", "base p99"
            ));
            for st in &p.steps {
                let (mesh_rate, mesh_p99, mesh_verdict) = if st.mesh_ran {
                    (
                        format!("{:.0}", st.mesh_delivered_per_s),
                        format!("{:.1}ms", ms(st.mesh_p99_us)),
                        if st.mesh_sustained { "mesh ok" } else { "mesh no" },
                    )
                } else {
                    ("not run".to_owned(), "-".to_owned(), "mesh not run")
                };
                s.push_str(&format!(
                    "  {:<11} {:>10.0} {:>12} {:>10} {:>12.0} {:>8.1}ms  {}{}\n",
                    "",
                    st.offered_msgs_per_s,
                    mesh_rate,
                    mesh_p99,
                    st.baseline_delivered_per_s,
                    ms(st.baseline_p99_us),
                    mesh_verdict,
                    if st.baseline_sustained { ", baseline ok" } else { ", baseline no" },
                ));
            }
        }
        if !self.profiles.is_empty() {
            s.push_str("\n  CPU profiles (top frames by samples)\n");
            for p in &self.profiles {
                let top: Vec<String> =
                    p.top.iter().take(4).map(|(f, share)| format!("{f} {:.0}%", share * 100.0)).collect();
                s.push_str(&format!("  {:<10} {:>7} samples  {}  ({})\n", p.kind, p.samples, top.join(", "), p.svg));
            }
        }
        if !self.targets.is_empty() {
            s.push_str("\n  targets\n");
            for t in &self.targets {
                let verdict = match t.met {
                    Some(true) => "met",
                    Some(false) => "MISSED",
                    None => "n/a",
                };
                s.push_str(&format!("  {:<7} {:<58} {}\n", verdict, t.target, t.measured));
            }
        }
        s
    }

    /// Each figure of `old` against this run: value, change and whether that change is better or worse.
    pub fn compare(&self, old: &Report) -> String {
        let before = old.figures();
        let mut s = format!("  {:<34} {:>12} {:>12} {:>9}\n", "figure", "old", "new", "change");
        for f in self.figures() {
            let Some(o) = before.iter().find(|o| o.name == f.name) else { continue };
            let change = if o.value == 0.0 { 0.0 } else { (f.value - o.value) / o.value * 100.0 };
            let verdict = match (f.better, change) {
                (_, c) if c.abs() < 5.0 => "",
                (Better::Higher, c) if c > 0.0 => "better",
                (Better::Lower, c) if c < 0.0 => "better",
                _ => "worse",
            };
            s.push_str(&format!(
                "  {:<34} {:>12} {:>12} {:>+8.1}% {}\n",
                f.name,
                format_value(o.value),
                format_value(f.value),
                change,
                verdict
            ));
        }
        s
    }
}

fn format_value(v: f64) -> String {
    if v.abs() >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for v in 1..=1000 {
            h.record(v * 10).expect("record");
        }
        Report {
            schema: SCHEMA.into(),
            messages: Messages {
                delivered: 1000,
                delivered_per_s: 100.0,
                end_to_end: Percentiles::of(&h),
                ..Default::default()
            },
            ratios: Some(Ratios { throughput: 0.9, p99_latency: 1.5 }),
            ..Default::default()
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let p = sample().messages.end_to_end;
        assert_eq!(p.count, 1000);
        assert!((4990..=5010).contains(&p.p50_us), "{}", p.p50_us);
        assert!((9890..=9910).contains(&p.p99_us), "{}", p.p99_us);
        assert_eq!(p.curve.last().map(|c| c.0), Some(100.0));
    }

    #[test]
    fn the_schema_round_trips_and_the_table_names_every_figure() {
        let r = sample();
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).expect("ser")).expect("de");
        assert_eq!(back, r);
        let table = r.table();
        assert!(table.contains("end-to-end p99") && table.contains("throughput mesh/baseline"), "{table}");
    }

    #[test]
    fn a_comparison_says_which_way_each_figure_moved() {
        let old = sample();
        let mut new = sample();
        new.messages.delivered_per_s = 200.0;
        new.ratios = Some(Ratios { throughput: 0.9, p99_latency: 3.0 });
        let text = new.compare(&old);
        let line = |name: &str| text.lines().find(|l| l.trim_start().starts_with(name)).unwrap_or_default().to_owned();
        assert!(line("delivered").ends_with("better"), "{text}");
        assert!(line("p99 latency mesh/baseline").ends_with("worse"), "{text}");
        assert!(line("throughput mesh/baseline").trim_end().ends_with('%'), "{text}");
    }
}
