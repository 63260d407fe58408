//! SVG plots of a run (plotters, SVG backend: text is SVG text, no fonts needed):
//!
//! - latency distributions: per chart, the CDF of per-message latency (log x) beside its tail
//!   (share of messages slower than x, log-log), one line per path;
//! - throughput by message size: MiB/s and msg/s, bridge vs direct DDS;
//! - the 64 B offered-rate sweep: share delivered at each offered rate.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::results::{LatencyChart, SweepPoint, ThroughputPoint, Via};

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot")]
    Empty,
    #[error("drawing: {0}")]
    Draw(String),
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for PlotError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        PlotError::Draw(e.to_string())
    }
}

const SIZE: (u32, u32) = (1200, 520);
const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

fn color_of(via: Via) -> RGBColor {
    match via {
        Via::Bridge => COLORS[1],
        Via::Direct => COLORS[0],
    }
}

/// Colours of latency series: a direct-DDS baseline in the direct colour, the others in the
/// remaining colours in order (so "bridge" looks the same in every plot).
fn latency_colors(labels: &[&str]) -> Vec<RGBColor> {
    let mut next = 1;
    labels
        .iter()
        .map(|l| {
            if l.contains("direct") {
                COLORS[0]
            } else {
                let c = COLORS[next % COLORS.len()];
                next += 1;
                c
            }
        })
        .collect()
}

/// `1.2 ms`, `350 µs`, `2 s`.
pub fn fmt_micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.3} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.3} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
    .replace(".000", "")
}

/// `64 B`, `16 KiB`, `4 MiB`.
pub fn fmt_bytes(b: f64) -> String {
    if b >= (1 << 20) as f64 {
        format!("{:.0} MiB", b / (1 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.0} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// `20k`, `1.5M`, `300`.
fn fmt_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The lowest power of ten at or below `v`, and the highest at or above `w`.
fn decades(v: f64, w: f64) -> (f64, f64) {
    (
        10f64.powf(v.max(1e-9).log10().floor()),
        10f64.powf(w.max(1e-9).log10().ceil()),
    )
}

/// The sample at percentile `p` of a sorted slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Draws `chart` to `file`: CDF on the left, tail on the right.
pub fn latency(file: &Path, chart: &LatencyChart) -> Result<(), PlotError> {
    let series: Vec<(String, Vec<f64>)> = chart
        .series
        .iter()
        .map(|s| {
            let mut v: Vec<f64> = s
                .micros
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .map(|x| x.max(1.0))
                .collect();
            v.sort_unstable_by(f64::total_cmp);
            (s.label.clone(), v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if series.is_empty() {
        return Err(PlotError::Empty);
    }
    let lo = series.iter().map(|(_, v)| v[0]).fold(f64::MAX, f64::min);
    let hi = series
        .iter()
        .map(|(_, v)| v[v.len() - 1])
        .fold(0.0, f64::max);
    let (lo, hi) = decades(lo, hi * 1.01);
    let most = series.iter().map(|(_, v)| v.len()).max().unwrap_or(1) as f64;
    let colors = latency_colors(&series.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>());
    let tail_floor = 10f64.powf((100.0 / most).log10().floor());

    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&chart.title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);

    let mut c = ChartBuilder::on(&left)
        .caption("CDF: messages delivered within x (%)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..100f64)?;
    c.configure_mesh()
        .x_desc("latency per message (log scale)")
        .y_desc("% of messages")
        .x_label_formatter(&|v| fmt_micros(*v))
        .draw()?;
    for ((label, v), color) in series.iter().zip(colors.iter().copied()) {
        let n = v.len() as f64;
        let pts = v
            .iter()
            .enumerate()
            .map(|(k, x)| (*x, 100.0 * (k as f64 + 1.0) / n));
        c.draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(format!(
                "{label}: p50 {}, p99 {} (n {})",
                fmt_micros(pct(v, 50.0)),
                fmt_micros(pct(v, 99.0)),
                v.len()
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;

    let mut t = ChartBuilder::on(&right)
        .caption("tail: messages slower than x (%)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), (tail_floor..100f64).log_scale())?;
    t.configure_mesh()
        .x_desc("latency per message (log scale)")
        .y_desc("% of messages (log scale)")
        .x_label_formatter(&|v| fmt_micros(*v))
        .y_label_formatter(&|v| trim(*v))
        .draw()?;
    for ((_, v), color) in series.iter().zip(colors.iter().copied()) {
        let n = v.len() as f64;
        let pts = v
            .iter()
            .enumerate()
            .map(|(k, x)| (*x, 100.0 * (n - k as f64) / n));
        t.draw_series(LineSeries::new(pts, color.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}

/// One panel of the throughput plot.
fn throughput_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    y_desc: &str,
    points: &[ThroughputPoint],
    y: fn(&ThroughputPoint) -> f64,
) -> Result<(), PlotError> {
    let positive = || points.iter().map(y).filter(|v| *v > 0.0);
    let (ylo, yhi) = decades(
        positive().fold(f64::MAX, f64::min),
        positive().fold(0.0, f64::max) * 1.01,
    );
    let mut sizes: Vec<f64> = points.iter().map(|p| p.size as f64).collect();
    sizes.sort_unstable_by(f64::total_cmp);
    sizes.dedup();
    let (xlo, xhi) = (sizes[0] / 2.0, sizes[sizes.len() - 1] * 2.0);
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (xlo..xhi).log_scale().with_key_points(sizes.clone()),
            (ylo..yhi).log_scale(),
        )?;
    c.configure_mesh()
        .x_desc("message size (log scale)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| fmt_bytes(*v))
        .y_label_formatter(&|v| fmt_count(*v))
        .draw()?;
    for via in [Via::Direct, Via::Bridge] {
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.via == via && y(p) > 0.0)
            .map(|p| (p.size as f64, y(p)))
            .collect();
        pts.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        if pts.is_empty() {
            continue;
        }
        let color = color_of(via);
        c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(via.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Throughput by message size: MiB/s on the left, msg/s on the right.
pub fn throughput(file: &Path, points: &[ThroughputPoint]) -> Result<(), PlotError> {
    if !points.iter().any(|p| p.msgs_per_s > 0.0) {
        return Err(PlotError::Empty);
    }
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Reliable throughput by message size (closed loop, one publisher)",
        ("sans-serif", 22),
    )?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    throughput_panel(&left, "MiB/s delivered", "MiB/s (log scale)", points, |p| {
        p.mib_per_s
    })?;
    throughput_panel(
        &right,
        "messages/s delivered",
        "msg/s (log scale)",
        points,
        |p| p.msgs_per_s,
    )?;
    root.present()?;
    Ok(())
}

/// The 64 B offered-rate sweep: % delivered at each offered rate.
pub fn sweep(file: &Path, points: &[SweepPoint]) -> Result<(), PlotError> {
    if points.is_empty() {
        return Err(PlotError::Empty);
    }
    let mut rates: Vec<f64> = points.iter().map(|p| p.offered_hz).collect();
    rates.sort_unstable_by(f64::total_cmp);
    rates.dedup();
    let (xlo, xhi) = (rates[0] / 1.5, rates[rates.len() - 1] * 1.5);
    let ylo = points
        .iter()
        .map(|p| p.delivered_pct)
        .fold(100.0, f64::min)
        .clamp(0.0, 90.0);
    let root = SVGBackend::new(file, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "64 B reliable: delivered at each offered rate",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(
            (xlo..xhi).log_scale().with_key_points(rates.clone()),
            (ylo - 1.0)..101f64,
        )?;
    c.configure_mesh()
        .x_desc("offered rate, msg/s (log scale)")
        .y_desc("% delivered")
        .x_label_formatter(&|v| fmt_count(*v))
        .draw()?;
    c.draw_series(LineSeries::new(
        vec![(xlo, 99.0), (xhi, 99.0)],
        BLACK.mix(0.4).stroke_width(1),
    ))?
    .label("99 % (the rate counts as delivered)")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
    for via in [Via::Direct, Via::Bridge] {
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.via == via)
            .map(|p| (p.offered_hz, p.delivered_pct))
            .collect();
        pts.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        if pts.is_empty() {
            continue;
        }
        let color = color_of(via);
        c.draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(via.label())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        c.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_micros(350.0), "350 µs");
        assert_eq!(fmt_micros(1000.0), "1 ms");
        assert_eq!(fmt_micros(1234.0), "1.234 ms");
        assert_eq!(fmt_bytes(64.0), "64 B");
        assert_eq!(fmt_bytes(16384.0), "16 KiB");
        assert_eq!(fmt_bytes(4194304.0), "4 MiB");
        assert_eq!(fmt_count(20000.0), "20k");
        assert_eq!(fmt_count(1500000.0), "1.5M");
        assert_eq!(decades(3.0, 2000.0), (1.0, 10000.0));
    }
}
