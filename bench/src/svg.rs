//! The SVG report of a `mesh bench` run: latency percentile curves (mesh end-to-end, task round trip, consensus
//! and the plain-Kafka baseline on one log scale) above delivered messages per second over the measured window.

use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;

use crate::report::{Percentiles, Report, Sample};

/// Why the SVG could not be drawn.
#[derive(Debug)]
pub struct SvgError(pub String);

impl std::fmt::Display for SvgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "drawing the SVG report failed: {}", self.0)
    }
}

impl std::error::Error for SvgError {}

fn err(e: impl std::fmt::Debug) -> SvgError {
    SvgError(format!("{e:?}"))
}

/// One line of a chart: its legend, colour and points.
type Line<X, Y> = (&'static str, RGBColor, Vec<(X, Y)>);

const LABELS: [&str; 12] = ["0", "25", "50", "75", "90", "95", "99", "99.5", "99.9", "99.95", "99.99", "max"];

/// Renders the report as an SVG document.
pub fn render(report: &Report) -> Result<String, SvgError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (1100, 900)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(480);
        latency_panel(&top, report)?;
        throughput_panel(&bottom, report)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

#[expect(clippy::cast_precision_loss, reason = "plot coordinates")]
fn curve_ms(p: &Percentiles) -> Vec<(usize, f64)> {
    p.curve.iter().enumerate().map(|(i, (_, us))| (i, (*us as f64 / 1000.0).max(0.001))).collect()
}

fn latency_panel(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, r: &Report) -> Result<(), SvgError> {
    let mut series: Vec<Line<usize, f64>> = vec![
        ("mesh end-to-end", BLUE, curve_ms(&r.messages.end_to_end)),
        ("mesh task round trip", CYAN, curve_ms(&r.messages.round_trip)),
        ("consensus proposal→decision", MAGENTA, curve_ms(&r.consensus.latency)),
    ];
    if let Some(b) = &r.baseline {
        series.push(("plain Kafka baseline", RED, curve_ms(&b.latency)));
    }
    series.retain(|(_, _, pts)| !pts.is_empty());
    let max = series.iter().flat_map(|(_, _, p)| p.iter().map(|(_, v)| *v)).fold(1.0f64, f64::max) * 2.0;
    let min = series.iter().flat_map(|(_, _, p)| p.iter().map(|(_, v)| *v)).fold(max, f64::min).max(0.001) / 2.0;
    let title = format!(
        "latency by percentile — {} agents, {:.0} msg/s offered ({})",
        r.config.agents, r.config.offered_msgs_per_s, r.config.infra
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0usize..LABELS.len() - 1, (min..max).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(LABELS.len())
        .x_label_formatter(&|i| LABELS.get(*i).copied().unwrap_or("").to_owned())
        .x_desc("percentile")
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(err)?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperLeft)
}

/// Draws each named line with its legend entry, then the legend.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    lines: Vec<Line<X::ValueType, Y::ValueType>>,
    legend_at: SeriesLabelPosition,
) -> Result<(), SvgError>
where
    X: Ranged<ValueType: Clone + 'static>,
    Y: Ranged<ValueType: Clone + 'static>,
{
    for (name, color, pts) in lines.into_iter().filter(|(_, _, pts)| !pts.is_empty()) {
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    Ok(())
}

fn throughput_panel(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, r: &Report) -> Result<(), SvgError> {
    let points = |s: &[Sample]| s.iter().map(|p| (p.t_s, p.mesh_per_s)).collect::<Vec<_>>();
    let mesh = points(&r.timeline);
    let base = points(&r.baseline_timeline);
    let x_max = mesh.iter().chain(&base).map(|p| p.0).fold(1.0f64, f64::max);
    let y_max = mesh.iter().chain(&base).map(|p| p.1).fold(1.0f64, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption("delivered messages per second over the measured window", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart.configure_mesh().x_desc("seconds").y_desc("messages/s").draw().map_err(err)?;
    let lines = vec![("mesh", BLUE, mesh), ("plain Kafka baseline", RED, base)];
    draw_lines(&mut chart, lines, SeriesLabelPosition::MiddleRight)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Messages, Sample};

    #[test]
    fn the_svg_draws_curves_and_timelines_with_their_labels() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for v in 1..=500 {
            h.record(v * 37).expect("record");
        }
        let report = Report {
            messages: Messages { end_to_end: Percentiles::of(&h), ..Default::default() },
            timeline: (0..10).map(|t| Sample { t_s: f64::from(t), mesh_per_s: 100.0 + f64::from(t) }).collect(),
            ..Default::default()
        };
        let svg = render(&report).expect("render");
        assert!(svg.starts_with("<svg") && svg.contains("mesh end-to-end") && svg.contains("messages/s"), "{svg}");
        assert!(svg.contains("<polyline") || svg.contains("<path"), "curves drawn");
    }
}
