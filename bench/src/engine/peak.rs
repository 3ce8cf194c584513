//! `--rate max`: the offered rate stepped up, a fresh deployment and the one-process baseline at each step, until
//! neither sustains the rate. The report's main figures are those of the highest rate the mesh sustained, with the
//! N-process baseline run once more at that rate, so both ratios come from the run.

use super::baseline::{run_baseline, run_fleet_baseline};
use super::deploy::Deployment;
use super::error::Error;
use super::infra::Infra;
use super::interrupt::check_interrupted;
use super::judge::{judge_step, peak_ratio};
use super::measure::measure_mesh;
use super::options::MeshBinary;
use super::plan::{PEAK_RATES, Plan};
use crate::report::{Peak, PeakStep, Report};

/// Steps the offered rate up: at each rate a fresh deployment (until the mesh failed one) and the one-process
/// baseline, short windows. `report` gets the figures of the best step the mesh sustained.
pub(crate) fn run_peak_search(
    plan: &Plan,
    infra: &Infra,
    binary: &MeshBinary,
    runtime: &tokio::runtime::Runtime,
    payload_bytes: usize,
    report: &mut Report,
) -> Result<Peak, Error> {
    let mut peak = Peak::default();
    let mut mesh_done = false;
    let mut best: Option<(Report, Plan)> = None;
    for rate in PEAK_RATES {
        check_interrupted()?;
        let step_plan = plan.peak_step(rate);
        eprintln!("peak search: {rate:.0} msg/s offered");
        let mut step = PeakStep { offered_msgs_per_s: rate, mesh_ran: !mesh_done, ..PeakStep::default() };
        // The step's own rate, pacing and window: the report's header quotes the best step's.
        let mut config = report.config.clone();
        config.offered_msgs_per_s = step_plan.offered_msgs_per_s;
        config.task_rate_per_agent = step_plan.task_rate;
        config.duration_s = step_plan.duration.as_secs_f64();
        config.warmup_s = step_plan.warmup.as_secs_f64();
        let mut sub = Report { config, ..Report::default() };
        if !mesh_done {
            let mut deployment = Deployment::start(&step_plan, infra, binary)?;
            let outcome = runtime.block_on(measure_mesh(&step_plan, infra, &mut deployment, &mut sub, None));
            let stopped = deployment.stop();
            outcome?;
            stopped?;
            step.mesh_delivered_per_s = sub.messages.delivered_per_s;
            step.mesh_p99_us = sub.messages.end_to_end.p99_us;
        }
        let (b, _) = runtime.block_on(run_baseline(infra, &step_plan, payload_bytes))?;
        step.baseline_delivered_per_s = b.delivered_per_s;
        step.baseline_p99_us = b.latency.p99_us;
        judge_step(&mut step);
        let mesh = if step.mesh_ran {
            format!(
                "mesh {:.0} msg/s p99 {:.1} ms ({})",
                step.mesh_delivered_per_s,
                step.mesh_p99_us as f64 / 1000.0,
                if step.mesh_sustained { "sustained" } else { "not sustained" }
            )
        } else {
            "mesh not run (it failed a lower rate)".to_owned()
        };
        eprintln!(
            "  {mesh} · baseline {:.0} msg/s p99 {:.1} ms ({})",
            step.baseline_delivered_per_s,
            step.baseline_p99_us as f64 / 1000.0,
            if step.baseline_sustained { "sustained" } else { "not sustained" },
        );
        if step.mesh_sustained {
            peak.mesh_peak_msgs_per_s = peak.mesh_peak_msgs_per_s.max(step.mesh_delivered_per_s);
            sub.baseline = Some(b);
            best = Some((sub, step_plan));
        } else {
            mesh_done = true;
        }
        if step.baseline_sustained {
            peak.baseline_peak_msgs_per_s = peak.baseline_peak_msgs_per_s.max(step.baseline_delivered_per_s);
        }
        let stop = mesh_done && !step.baseline_sustained;
        peak.steps.push(step);
        if stop {
            break;
        }
    }
    peak.ratio = peak_ratio(&peak);
    if let Some((best, best_plan)) = best {
        if best_plan.baseline_processes > 1 {
            check_interrupted()?;
            eprintln!("N-process baseline at the mesh's peak, {:.0} msg/s", best_plan.offered_msgs_per_s);
            report.baseline_processes = Some(run_fleet_baseline(infra, &best_plan, payload_bytes, binary)?);
        }
        report.config = best.config;
        report.join = best.join;
        report.messages = best.messages;
        report.consensus = best.consensus;
        report.topology = best.topology;
        report.cost = best.cost;
        report.timeline = best.timeline;
        report.baseline = best.baseline;
    }
    Ok(peak)
}
