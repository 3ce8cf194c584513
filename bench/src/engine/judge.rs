//! The verdicts: the ratios against the baselines, the targets of issue 11 judged where they apply, and whether a
//! step of the peak search was sustained. Pure functions of the report's figures, apart from the I/O that
//! measured them, so every threshold is tested on hand-made figures.

use crate::report::{Baseline, Peak, PeakStep, Ratios, Report, TargetCheck};

/// Fills in the ratios against the baselines and the targets (issue 11), each judged only where it applies (a
/// target for 500 agents is shown but not judged on 20).
pub(crate) fn finish(report: &mut Report) {
    let ratios = |b: &Baseline| {
        #[expect(clippy::cast_precision_loss, reason = "ratios")]
        let p99 = report.messages.end_to_end.p99_us as f64 / b.latency.p99_us.max(1) as f64;
        Ratios { throughput: report.messages.delivered_per_s / b.delivered_per_s.max(1e-9), p99_latency: p99 }
    };
    if report.messages.delivered > 0 {
        report.ratios = report.baseline.as_ref().filter(|b| b.received > 0).map(ratios);
        report.ratios_processes = report.baseline_processes.as_ref().filter(|b| b.received > 0).map(ratios);
    }
    let c = &report.config;
    let at_500 = c.agents >= 500 && c.agents_per_process == 1;
    let few = c.agents <= 10;
    let real_broker = c.infra != "embedded";
    let mut t = Vec::new();
    let mut check = |target: &str, measured: String, met: Option<bool>| {
        t.push(TargetCheck { target: target.to_owned(), measured, met });
    };
    if report.messages.delivered == 0 && report.join.converged_s.is_none() && report.peak.is_none() {
        report.targets = t;
        return;
    }
    check(
        "join convergence under 30 s (500 agents)",
        report.join.converged_s.or(report.join.members_s).map_or("not converged".into(), |s| format!("{s:.1} s")),
        at_500.then(|| report.join.converged_s.or(report.join.members_s).is_some_and(|s| s < 30.0)),
    );
    if let Some(topo) = report.cost.iter().find(|c| c.kind == "topology") {
        check(
            "topology manager under 100 MB with the full mesh",
            format!("{:.1} MiB peak", topo.peak_rss_mib_max),
            at_500.then_some(topo.peak_rss_mib_max < 100.0),
        );
    }
    if let Some(agent) = report.cost.iter().find(|c| c.kind == "agent") {
        check(
            "agent process under 25 MB RSS",
            format!("{:.1} MiB peak (max), {:.1} mean", agent.peak_rss_mib_max, agent.peak_rss_mib_mean),
            Some(agent.peak_rss_mib_max < 25.0),
        );
    }
    if let Some(idle) = &report.idle {
        check(
            "500 idle agents together under 0.3 of a core",
            format!("{:.3} cores ({:.2} ms/s each)", idle.agent_cores, idle.agent_ms_per_s),
            at_500.then_some(idle.agent_cores < 0.3),
        );
    }
    let offered = report.config.offered_msgs_per_s;
    if report.peak.is_none() {
        check(
            "all of the offered rate delivered (at least 99 %)",
            format!("{:.0} of {offered:.0} msg/s", report.messages.delivered_per_s),
            Some(report.messages.delivered_per_s >= 0.99 * offered),
        );
    }
    if let Some(r) = report.ratios.clone() {
        check(
            "throughput at least 70 % of the one-process baseline",
            format!("{:.0} %", r.throughput * 100.0),
            Some(r.throughput >= 0.7),
        );
        check(
            "p99 end-to-end at most 2x the one-process baseline's",
            format!("{:.2}x", r.p99_latency),
            Some(r.p99_latency <= 2.0),
        );
    }
    if let (Some(r), Some(b)) = (report.ratios_processes.clone(), report.baseline_processes.as_ref()) {
        let aim = b.delivered_per_s.min(10_000.0 / 0.7) * 0.7;
        check(
            "10,000 msg/s delivered, or 70 % of the N-process baseline if lower",
            format!("{:.0} msg/s (N-process baseline {:.0})", report.messages.delivered_per_s, b.delivered_per_s),
            Some(report.messages.delivered_per_s >= aim.min(10_000.0)),
        );
        check(
            "p99 end-to-end at most 2x the N-process baseline's",
            format!("{:.2}x", r.p99_latency),
            Some(r.p99_latency <= 2.0),
        );
    }
    let decisions = report.consensus.decisions;
    let p99_ms = report.consensus.latency.p99_us as f64 / 1000.0;
    check(
        "consensus p99 under 1 s with 500 voters, no proposal expired",
        format!("{p99_ms:.1} ms p99 over {decisions} decisions, {} expired", report.consensus.expired),
        (at_500 && decisions > 0).then_some(p99_ms < 1000.0 && report.consensus.expired == 0),
    );
    check(
        if real_broker {
            "proposal to decision p99 under 20 ms (4 agents, real broker)"
        } else {
            "proposal to decision p99 under 50 ms (4 agents, embedded broker)"
        },
        format!("{p99_ms:.1} ms p99 over {decisions} decisions"),
        (few && decisions > 0).then_some(p99_ms < if real_broker { 20.0 } else { 50.0 }),
    );
    if let Some(w) = &report.window_stats {
        check(
            "every window applied within one decay interval + 100 ms of its tick",
            format!("{} of {} late, worst {} ms", w.late, w.applied, w.worst_late_ms),
            Some(w.late == 0),
        );
    }
    if let Some(p) = &report.peak {
        check(
            "peak sustained rate at least 25 % of plain Kafka's peak",
            format!(
                "{:.0} of {:.0} msg/s ({:.0} %)",
                p.mesh_peak_msgs_per_s,
                p.baseline_peak_msgs_per_s,
                p.ratio * 100.0
            ),
            Some(p.ratio >= 0.25),
        );
    }
    report.targets = t;
}

/// Whether a peak-search step was sustained, from its measured figures: at least 95 % of the offer delivered, and
/// for the mesh (if it ran) a p99 within twice the baseline's at the same rate.
pub(crate) fn judge_step(step: &mut PeakStep) {
    let rate = step.offered_msgs_per_s;
    step.baseline_sustained = step.baseline_delivered_per_s >= 0.95 * rate;
    step.mesh_sustained = step.mesh_ran
        && step.mesh_delivered_per_s >= 0.95 * rate
        && step.mesh_p99_us <= 2 * step.baseline_p99_us.max(1);
}

/// The mesh's peak over plain Kafka's (0 when Kafka sustained no rate).
pub(crate) fn peak_ratio(peak: &Peak) -> f64 {
    if peak.baseline_peak_msgs_per_s > 0.0 { peak.mesh_peak_msgs_per_s / peak.baseline_peak_msgs_per_s } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Consensus, Cost, Idle, Join, Messages, Percentiles, RunConfig, Windows};

    fn target<'a>(report: &'a Report, prefix: &str) -> &'a TargetCheck {
        report.targets.iter().find(|t| t.target.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} target"))
    }

    fn latency(p99_us: u64) -> Percentiles {
        Percentiles { p99_us, ..Percentiles::default() }
    }

    #[test]
    fn targets_are_judged_only_where_they_apply() {
        let mut report = Report {
            config: RunConfig { agents: 20, ..RunConfig::default() },
            join: Join { converged_s: Some(3.0), ..Join::default() },
            messages: Messages { delivered: 100, delivered_per_s: 50.0, ..Messages::default() },
            baseline: Some(Baseline { received: 100, delivered_per_s: 100.0, ..Baseline::default() }),
            ..Report::default()
        };
        finish(&mut report);
        let r = report.ratios.clone().expect("ratios");
        assert!((r.throughput - 0.5).abs() < 1e-9);
        assert_eq!(target(&report, "join").met, None, "the 30 s target is for 500 agents");
        assert_eq!(target(&report, "throughput").met, Some(false));
    }

    #[test]
    fn a_run_that_measured_nothing_judges_nothing() {
        let mut report = Report {
            baseline: Some(Baseline { received: 100, delivered_per_s: 100.0, ..Baseline::default() }),
            ..Report::default()
        };
        finish(&mut report);
        assert!(report.targets.is_empty(), "{:?}", report.targets);
        assert!(report.ratios.is_none(), "no ratio of nothing delivered");
    }

    #[test]
    fn five_hundred_agents_are_held_to_the_scale_targets() {
        let mut report = Report {
            config: RunConfig {
                agents: 500,
                agents_per_process: 1,
                offered_msgs_per_s: 10_000.0,
                ..RunConfig::default()
            },
            join: Join { converged_s: None, members_s: Some(29.0), ..Join::default() },
            messages: Messages {
                delivered: 300_000,
                delivered_per_s: 9_950.0,
                end_to_end: latency(30_000),
                ..Messages::default()
            },
            consensus: Consensus { decisions: 60, expired: 1, latency: latency(400_000), ..Consensus::default() },
            cost: vec![
                Cost { kind: "agent".into(), peak_rss_mib_max: 24.0, ..Cost::default() },
                Cost { kind: "topology".into(), peak_rss_mib_max: 120.0, ..Cost::default() },
            ],
            idle: Some(Idle { agent_cores: 0.25, ..Idle::default() }),
            baseline: Some(Baseline {
                received: 1,
                delivered_per_s: 10_000.0,
                latency: latency(10_000),
                ..Baseline::default()
            }),
            window_stats: Some(Windows { applied: 10, late: 1, worst_late_ms: 250 }),
            ..Report::default()
        };
        finish(&mut report);
        assert_eq!(target(&report, "join").met, Some(true), "membership counts when the full mesh never existed");
        assert_eq!(target(&report, "topology manager").met, Some(false));
        assert_eq!(target(&report, "agent process").met, Some(true));
        assert_eq!(target(&report, "500 idle agents").met, Some(true));
        assert_eq!(target(&report, "all of the offered rate").met, Some(true), "9,950 of 10,000 is 99.5 %");
        assert_eq!(target(&report, "throughput").met, Some(true));
        assert_eq!(target(&report, "p99 end-to-end at most 2x the one-process").met, Some(false), "3x");
        assert_eq!(target(&report, "consensus p99").met, Some(false), "a proposal expired");
        assert_eq!(target(&report, "proposal to decision").met, None, "a target for 4 agents");
        assert_eq!(target(&report, "every window").met, Some(false));
        assert!(report.targets.iter().all(|t| !t.target.starts_with("10,000")), "no N-process baseline ran");
    }

    #[test]
    fn packed_agents_are_not_held_to_the_500_process_targets() {
        let mut report = Report {
            config: RunConfig { agents: 500, agents_per_process: 10, ..RunConfig::default() },
            join: Join { converged_s: Some(45.0), ..Join::default() },
            messages: Messages { delivered: 1, ..Messages::default() },
            ..Report::default()
        };
        finish(&mut report);
        assert_eq!(target(&report, "join").met, None);
        assert_eq!(target(&report, "join").measured, "45.0 s");
    }

    #[test]
    fn a_few_agents_on_a_real_broker_must_decide_within_20_ms() {
        let judged = |infra: &str, p99_us: u64| {
            let mut report = Report {
                config: RunConfig { agents: 4, infra: infra.into(), ..RunConfig::default() },
                messages: Messages { delivered: 10, ..Messages::default() },
                consensus: Consensus { decisions: 5, latency: latency(p99_us), ..Consensus::default() },
                ..Report::default()
            };
            finish(&mut report);
            let t = target(&report, "proposal to decision").clone();
            (t.target, t.met)
        };
        assert_eq!(judged("local", 19_000).1, Some(true));
        assert_eq!(judged("local", 25_000).1, Some(false));
        let (name, met) = judged("embedded", 25_000);
        assert!(name.contains("50 ms"), "{name}");
        assert_eq!(met, Some(true));
    }

    #[test]
    fn the_n_process_target_aims_at_10000_or_70_percent_of_a_lower_baseline() {
        let judged = |mesh_per_s: f64, baseline_per_s: f64| {
            let mut report = Report {
                config: RunConfig { agents: 20, ..RunConfig::default() },
                messages: Messages { delivered: 1, delivered_per_s: mesh_per_s, ..Messages::default() },
                baseline_processes: Some(Baseline {
                    received: 1,
                    delivered_per_s: baseline_per_s,
                    ..Baseline::default()
                }),
                ..Report::default()
            };
            finish(&mut report);
            assert!(report.ratios_processes.is_some());
            target(&report, "10,000 msg/s").met
        };
        assert_eq!(judged(7_000.0, 10_000.0), Some(true), "70 % of a 10,000 baseline");
        assert_eq!(judged(6_900.0, 10_000.0), Some(false));
        assert_eq!(judged(10_000.0, 50_000.0), Some(true), "10,000 is enough whatever the baseline");
        assert_eq!(judged(9_999.0, 50_000.0), Some(false));
    }

    #[test]
    fn a_peak_search_is_judged_on_its_ratio_not_on_the_offered_rate() {
        let mut report = Report {
            config: RunConfig { agents: 20, offered_msgs_per_s: 1_000_000.0, ..RunConfig::default() },
            messages: Messages { delivered: 1, delivered_per_s: 5_000.0, ..Messages::default() },
            peak: Some(Peak { ratio: 0.3, ..Peak::default() }),
            ..Report::default()
        };
        finish(&mut report);
        assert!(report.targets.iter().all(|t| !t.target.starts_with("all of the offered")));
        assert_eq!(target(&report, "peak sustained").met, Some(true));
    }

    #[test]
    fn a_step_is_sustained_at_95_percent_and_the_mesh_also_within_twice_the_baselines_p99() {
        let step = |mesh_per_s: f64, mesh_p99_us: u64, mesh_ran: bool| {
            let mut s = PeakStep {
                offered_msgs_per_s: 10_000.0,
                mesh_ran,
                mesh_delivered_per_s: mesh_per_s,
                mesh_p99_us,
                baseline_delivered_per_s: 9_400.0,
                baseline_p99_us: 5_000,
                ..PeakStep::default()
            };
            judge_step(&mut s);
            s
        };
        let s = step(9_500.0, 10_000, true);
        assert!(s.mesh_sustained && !s.baseline_sustained, "the baseline delivered 94 %");
        assert!(!step(9_499.0, 10_000, true).mesh_sustained);
        assert!(!step(9_500.0, 10_001, true).mesh_sustained, "p99 more than twice the baseline's");
        assert!(!step(10_000.0, 1, false).mesh_sustained, "a mesh that did not run sustained nothing");
        let mut zero = PeakStep {
            offered_msgs_per_s: 100.0,
            mesh_ran: true,
            mesh_delivered_per_s: 100.0,
            mesh_p99_us: 2,
            ..PeakStep::default()
        };
        judge_step(&mut zero);
        assert!(zero.mesh_sustained, "a baseline p99 of 0 counts as 1 µs");
    }

    #[test]
    fn the_peak_ratio_is_zero_without_a_baseline_peak() {
        assert!((peak_ratio(&Peak::default())).abs() < 1e-12);
        let peak = Peak { mesh_peak_msgs_per_s: 5_000.0, baseline_peak_msgs_per_s: 20_000.0, ..Peak::default() };
        assert!((peak_ratio(&peak) - 0.25).abs() < 1e-12);
    }
}
