//! The SVG plots: contend throughput vs workers per backend (with Go's line), and handoff
//! latency p50/p99 vs workers. Both axes are logarithmic: the backends differ by orders
//! of magnitude, and so do 2 and 1,000 workers.

use std::error::Error;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::records::Run;
use crate::stats::{Select, worker_counts};

/// A line of a plot: its label, colour, dashed or not, and its points.
struct Line {
    label: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// The sides plotted, in legend order: (suite, side, label, colour).
const SERIES: [(&str, &str, &str, RGBColor); 4] = [
    (
        "etcd",
        "go",
        "etcd, Go concurrency.Mutex",
        RGBColor(0x99, 0x99, 0x99),
    ),
    ("etcd", "coord", "etcd, coord", RGBColor(0x1f, 0x77, 0xb4)),
    ("redis", "coord", "Redis, coord", RGBColor(0xd6, 0x27, 0x28)),
    (
        "memory",
        "coord",
        "memory, coord",
        RGBColor(0x2c, 0xa0, 0x2c),
    ),
];

/// The median of `field` at each worker count of a side's contend runs.
fn series(run: &Run, suite: &str, side: &str, field: &str, scale: f64) -> Vec<(f64, f64)> {
    let sel = Select::new(suite, side, "contend");
    worker_counts(run, sel)
        .into_iter()
        .filter_map(|w| {
            let v = sel.workers(w).median(run, field)?;
            (v > 0.0).then_some((w as f64, v * scale))
        })
        .collect()
}

/// Writes `throughput.svg`: ops/s vs workers.
pub(crate) fn throughput(run: &Run, path: &Path) -> Result<(), Box<dyn Error>> {
    let lines = SERIES
        .iter()
        .map(|&(suite, side, label, color)| Line {
            label: label.into(),
            color,
            dashed: side == "go",
            points: series(run, suite, side, "ops_per_s", 1.0),
        })
        .collect();
    draw(
        path,
        "contend: lock, counter+1, unlock cycles per second",
        "ops/s (log)",
        lines,
    )
}

/// Writes `handoff.svg`: handoff latency p50 (solid) and p99 (dashed) in ms vs workers.
pub(crate) fn handoff(run: &Run, path: &Path) -> Result<(), Box<dyn Error>> {
    let mut lines = Vec::new();
    for &(suite, side, label, color) in &SERIES {
        for (field, pct) in [("handoff_p50_ns", "p50"), ("handoff_p99_ns", "p99")] {
            lines.push(Line {
                label: format!("{label} {pct}"),
                color,
                dashed: pct == "p99",
                points: series(run, suite, side, field, 1e-6),
            });
        }
    }
    draw(
        path,
        "contend: handoff latency (unlock call to the waiter's lock return)",
        "ms (log)",
        lines,
    )
}

/// A log-log chart of `lines` (those without points are left out); with no points at all
/// it says so on the canvas instead.
fn draw(path: &Path, caption: &str, y_desc: &str, lines: Vec<Line>) -> Result<(), Box<dyn Error>> {
    let lines: Vec<Line> = lines.into_iter().filter(|l| !l.points.is_empty()).collect();
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (Some(x_max), Some(y_min), Some(y_max)) = (
        all().map(|p| p.0).reduce(f64::max),
        all().map(|p| p.1).reduce(f64::min),
        all().map(|p| p.1).reduce(f64::max),
    ) else {
        root.draw(&Text::new(
            format!("{caption}: no results in this run"),
            (20, 20),
            ("sans-serif", 18),
        ))?;
        root.present()?;
        return Ok(());
    };
    // The right third of the x axis is left empty for the legend.
    let x = (1f64..(x_max * 1.3).max(2.0).powf(1.5)).log_scale();
    let y = ((y_min / 1.6)..(y_max * 1.6)).log_scale();
    chart(&root, caption, y_desc, x, y, &lines)?;
    root.present()?;
    Ok(())
}

fn chart<X, Y>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    x: X,
    y: Y,
    lines: &[Line],
) -> Result<(), Box<dyn Error>>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("workers (log)")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| {
            if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    for line in lines {
        let style = ShapeStyle::from(&line.color).stroke_width(2);
        let color = line.color;
        if line.dashed {
            chart
                .draw_series(DashedLineSeries::new(line.points.clone(), 6, 4, style))?
                .label(line.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        } else {
            chart
                .draw_series(LineSeries::new(line.points.clone(), style))?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart.draw_series(
            line.points
                .iter()
                .map(|&p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::parse;

    #[test]
    fn plots_are_svg_with_every_line_that_has_points() {
        let run = parse(
            r#"{"type":"result","suite":"etcd","side":"coord","round":1,"cmd":"contend","workers":1,"ops_per_s":400.0,"handoff_p50_ns":0}
{"type":"result","suite":"etcd","side":"coord","round":1,"cmd":"contend","workers":8,"ops_per_s":300.0,"handoff_p50_ns":2000000,"handoff_p99_ns":9000000}
{"type":"result","suite":"etcd","side":"go","round":1,"cmd":"contend","workers":8,"ops_per_s":80.0,"handoff_p50_ns":12000000,"handoff_p99_ns":100000000}"#,
        )
        .unwrap();
        let dir = std::env::temp_dir().join(format!("bench-report-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (t, h, empty) = (dir.join("t.svg"), dir.join("h.svg"), dir.join("e.svg"));
        throughput(&run, &t).unwrap();
        handoff(&run, &h).unwrap();
        throughput(&parse("").unwrap(), &empty).unwrap();
        let t = std::fs::read_to_string(t).unwrap();
        let h = std::fs::read_to_string(h).unwrap();
        let empty = std::fs::read_to_string(empty).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(t.starts_with("<svg"), "{t}");
        assert!(t.contains("etcd, coord") && t.contains("etcd, Go concurrency.Mutex"));
        assert!(
            !t.contains("Redis, coord"),
            "a line without points is left out"
        );
        assert!(h.contains("etcd, coord p99"));
        assert!(empty.contains("no results in this run"));
    }
}
