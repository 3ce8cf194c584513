//! What a chaos run found: per-trial timings, per-scenario checks and verdicts, the terminal table, the JSON
//! timeline (schema `mesh-chaos/1`, also the input of `--replay`) and an SVG timeline per scenario.

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::check::{CheckResult, Verdict};
use crate::deploy::MeshTimings;
use crate::scenario::Schedule;

/// The JSON schema name.
pub const SCHEMA: &str = "mesh-chaos/1";

/// One injection and the mesh's recovery from it. Times are ms since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// Trial number, from 1.
    pub trial: u32,
    /// The fault, as a label.
    pub fault: String,
    /// When the fault began.
    pub t_inject: u64,
    /// When the first component noticed, if any did.
    pub t_detect: Option<u64>,
    /// Who noticed, and how (`supervisor: exited`, `topology: dead record`, `agent-sales: WARN ...`).
    pub detected_by: Option<String>,
    /// When the fault ended (for crashes: the last signal; the mesh heals itself).
    pub t_heal: u64,
    /// Start of the first stability window in which every invariant held, if reached.
    pub t_converged: Option<u64>,
    /// Bound on detection from the configuration, where the design promises one.
    pub detect_bound_ms: Option<u64>,
    /// Bound on convergence after healing, from the configuration.
    pub converge_bound_ms: u64,
    /// Longest time without an answered task among agents the fault did not target, from injection to convergence.
    pub availability_gap_ms: u64,
    /// Bound on that gap, for faults that leave the message path alone (`None`: no promise).
    #[serde(default)]
    pub gap_bound_ms: Option<u64>,
    /// The convergence condition that held out longest: the last one unmet before the stable window began.
    #[serde(default)]
    pub waited_on: Option<String>,
    /// Bounds broken in this trial.
    pub violations: Vec<String>,
    /// For a trial that broke a bound: what the processes logged (WARN/ERROR) and the supervisor recorded (kills,
    /// exits, stalls) from injection on, so a CI log alone shows what happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

impl TrialResult {
    /// Injection to detection.
    pub fn detect_ms(&self) -> Option<u64> {
        self.t_detect.map(|d| d.saturating_sub(self.t_inject))
    }

    /// Healing to convergence.
    pub fn converge_ms(&self) -> Option<u64> {
        self.t_converged.map(|c| c.saturating_sub(self.t_heal))
    }
}

/// A point of the timeline: something that happened at `at` (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at: u64,
    /// `inject`, `heal`, `detect`, `converged`, `check`, `note`.
    pub kind: String,
    /// What.
    pub what: String,
}

/// One scenario's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Topic prefix it ran under (its records stay in Kafka for inspection).
    pub prefix: String,
    /// Start and end (ms since the Unix epoch).
    pub started: u64,
    /// End.
    pub ended: u64,
    /// The trials.
    pub trials: Vec<TrialResult>,
    /// The invariant checks.
    pub checks: Vec<CheckResult>,
    /// Acknowledged tasks never answered.
    pub lost: u64,
    /// Duplicate records (extra copies of tasks and answers).
    pub duplicated: u64,
    /// Answers per 500 ms bucket since `started`, for the SVG.
    pub answers_per_bucket: Vec<u32>,
    /// Timeline of the scenario.
    pub events: Vec<Event>,
    /// The verdict: the worst of the checks and the bounds.
    pub verdict: Verdict,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// [`SCHEMA`].
    pub schema: String,
    /// The mesh's timings during the run (bounds are computed from them).
    pub timings: MeshTimings,
    /// Everything the run did, from its seed: `--replay` reads this back.
    pub schedule: Schedule,
    /// Per scenario.
    pub scenarios: Vec<ScenarioResult>,
    /// Worst verdict.
    pub verdict: Verdict,
    /// Wall time of the run.
    pub duration_s: f64,
}

impl RunReport {
    /// Exit code: 0 pass, 1 fail, 2 unknown.
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Unknown => 2,
        }
    }
}

/// (p50, p95, max) of `values`, nearest-rank.
pub fn summary(values: &[u64]) -> Option<(u64, u64, u64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some((rank(0.50), rank(0.95), v[v.len() - 1]))
}

fn secs(ms: u64) -> String {
    format!("{:.2}", ms as f64 / 1000.0)
}

fn triple(values: &[u64], of: usize) -> String {
    match summary(values) {
        None => "-".into(),
        Some((a, b, c)) if values.len() == of => format!("{}/{}/{}", secs(a), secs(b), secs(c)),
        Some((a, b, c)) => format!("{}/{}/{} ({} of {of})", secs(a), secs(b), secs(c), values.len()),
    }
}

/// The terminal table: one row per scenario.
pub fn table(report: &RunReport) -> String {
    let mut rows = vec![[
        "scenario".to_owned(),
        "trials".into(),
        "detect s p50/p95/max (bound)".into(),
        "converge s p50/p95/max (bound)".into(),
        "gap s max (bound)".into(),
        "lost".into(),
        "dup".into(),
        "verdict".into(),
    ]];
    for s in &report.scenarios {
        let detect: Vec<u64> = s.trials.iter().filter_map(TrialResult::detect_ms).collect();
        let converge: Vec<u64> = s.trials.iter().filter_map(TrialResult::converge_ms).collect();
        let detect_bound = s.trials.iter().filter_map(|t| t.detect_bound_ms).max();
        let converge_bound = s.trials.iter().map(|t| t.converge_bound_ms).max().unwrap_or(0);
        let gap = s.trials.iter().map(|t| t.availability_gap_ms).max().unwrap_or(0);
        let gap_bound = s.trials.iter().filter_map(|t| t.gap_bound_ms).max();
        rows.push([
            s.name.clone(),
            s.trials.len().to_string(),
            format!("{} ({})", triple(&detect, s.trials.len()), detect_bound.map_or("-".into(), secs)),
            format!("{} ({})", triple(&converge, s.trials.len()), secs(converge_bound)),
            format!("{} ({})", secs(gap), gap_bound.map_or("-".into(), secs)),
            s.lost.to_string(),
            s.duplicated.to_string(),
            format!("{:?}", s.verdict).to_uppercase(),
        ]);
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for (n, r) in rows.iter().enumerate() {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            out.push_str(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
            out.push('\n');
        }
    }
    for s in report.scenarios.iter().filter(|s| s.verdict != Verdict::Pass) {
        out.push_str(&format!("\n{} {:?}:\n", s.name, s.verdict));
        for c in s.checks.iter().filter(|c| c.verdict != Verdict::Pass) {
            out.push_str(&format!("  {} {:?}: {}\n", c.name, c.verdict, c.detail));
        }
        for t in &s.trials {
            for v in &t.violations {
                out.push_str(&format!("  trial {} ({}): {v}\n", t.trial, t.fault));
            }
            for e in &t.evidence {
                out.push_str(&format!("      {e}\n"));
            }
        }
    }
    out.push_str(&format!(
        "\nverdict {:?} in {:.0} s · seed {} · replay with `cargo xtask chaos --replay <the JSON file>`\n",
        report.verdict, report.duration_s, report.schedule.seed
    ));
    out
}

/// The SVG timeline of one scenario: answers per second, fault windows shaded, detection and convergence marked.
pub fn svg(s: &ScenarioResult) -> Result<String, String> {
    let err = |e: &dyn std::fmt::Debug| format!("drawing {}: {e:?}", s.name);
    let t = |ms: u64| ms.saturating_sub(s.started) as f64 / 1000.0;
    let end = t(s.ended).max(1.0);
    let rate: Vec<(f64, f64)> =
        s.answers_per_bucket.iter().enumerate().map(|(i, n)| (i as f64 * 0.5, f64::from(*n) * 2.0)).collect();
    let top = rate.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.2;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1100, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("{} — {:?}", s.name, s.verdict), ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds since the scenario started")
            .y_desc("answered tasks per second")
            .draw()
            .map_err(|e| err(&e))?;
        let shade = RGBColor(255, 200, 200).mix(0.6);
        chart
            .draw_series(s.trials.iter().map(|tr| {
                let heal = t(tr.t_heal).max(t(tr.t_inject) + 0.05);
                Rectangle::new([(t(tr.t_inject), 0.0), (heal, top)], shade.filled())
            }))
            .map_err(|e| err(&e))?
            .label("fault window")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], shade.filled()));
        chart
            .draw_series(LineSeries::new(rate, BLUE.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("answers/s")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLUE));
        let marks = |pick: fn(&TrialResult) -> Option<u64>, colour: RGBColor| {
            s.trials
                .iter()
                .filter_map(pick)
                .map(|m| PathElement::new(vec![(t(m), 0.0), (t(m), top)], colour.stroke_width(2)))
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(marks(|tr| tr.t_detect, RGBColor(230, 140, 0)))
            .map_err(|e| err(&e))?
            .label("detected")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], RGBColor(230, 140, 0)));
        chart
            .draw_series(marks(|tr| tr.t_converged, GREEN))
            .map_err(|e| err(&e))?
            .label("converged")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], GREEN));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_use_nearest_rank() {
        assert_eq!(summary(&[]), None);
        assert_eq!(summary(&[5]), Some((5, 5, 5)));
        assert_eq!(summary(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), Some((5, 10, 10)));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(summary(&hundred), Some((50, 95, 100)));
    }

    fn trial(converge: Option<u64>) -> TrialResult {
        TrialResult {
            trial: 1,
            fault: "kill agent-fraud".into(),
            t_inject: 10_000,
            t_detect: Some(10_050),
            detected_by: Some("supervisor".into()),
            t_heal: 10_000,
            t_converged: converge,
            detect_bound_ms: Some(1_000),
            converge_bound_ms: 7_000,
            availability_gap_ms: 300,
            gap_bound_ms: None,
            waited_on: None,
            violations: if converge.is_none() { vec!["did not converge".into()] } else { vec![] },
            evidence: Vec::new(),
        }
    }

    fn report(verdict: Verdict, converge: Option<u64>) -> RunReport {
        let scenario = ScenarioResult {
            name: "kill-agent".into(),
            description: String::new(),
            prefix: "p".into(),
            started: 9_000,
            ended: 20_000,
            trials: vec![trial(converge)],
            checks: vec![CheckResult::new("no-lost-message", verdict, "detail")],
            lost: 0,
            duplicated: 2,
            answers_per_bucket: vec![3, 4, 0, 5],
            events: vec![],
            verdict,
        };
        RunReport {
            schema: SCHEMA.into(),
            timings: MeshTimings::default(),
            schedule: Schedule { seed: 42, profile: "quick".into(), brokers: 1, hosts: 1, scenarios: vec![] },
            scenarios: vec![scenario],
            verdict,
            duration_s: 11.0,
        }
    }

    #[test]
    fn the_table_shows_figures_bounds_and_why_a_scenario_failed() {
        let ok = table(&report(Verdict::Pass, Some(12_500)));
        assert!(ok.contains("kill-agent") && ok.contains("2.50/2.50/2.50 (7.00)") && ok.contains("PASS"), "{ok}");
        assert!(ok.contains("seed 42"));
        let bad = report(Verdict::Fail, None);
        let text = table(&bad);
        assert!(text.contains("FAIL") && text.contains("did not converge") && text.contains("detail"), "{text}");
        assert_eq!(bad.exit_code(), 1);
        assert_eq!(report(Verdict::Unknown, Some(1)).exit_code(), 2);
        let json = serde_json::to_string(&bad).expect("json");
        assert_eq!(serde_json::from_str::<RunReport>(&json).expect("read back"), bad);
    }

    #[test]
    fn the_svg_draws_fault_windows_and_marks() {
        let svg = svg(&report(Verdict::Pass, Some(12_500)).scenarios[0]).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("fault window") && svg.contains("converged"), "{svg:.200}");
    }
}
