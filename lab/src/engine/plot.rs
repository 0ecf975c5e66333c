//! `latency.svg`: the run at a glance, like Jepsen's perf graphs. Top: every operation's
//! latency at the moment it completed (ok, info and fail told apart by colour *and* marker, so
//! colour is never the only cue). Bottom: successful operations per second. Both share the time
//! axis, and the time after each fault is shaded and labelled until the next one.

use std::path::Path;

use plotters::prelude::*;

use super::events::{Event, EventKind};
use super::history::{Op, OpType, completions};

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 620;
/// Throughput is counted per bucket of this many seconds.
const BUCKET_SECS: f64 = 0.25;

struct Point {
    t: f64,
    ms: f64,
    kind: OpType,
}

fn points(history: &[Op]) -> Vec<Point> {
    completions(history)
        .into_iter()
        .map(|(start, op)| Point {
            t: op.time,
            ms: (op.time - start) * 1000.0,
            kind: op.kind,
        })
        .collect()
}

/// Draws the graph into `path`.
pub fn latency_svg(history: &[Op], timeline: &[Event], path: &Path) -> anyhow::Result<()> {
    let points = points(history);
    let end = points.iter().map(|p| p.t).fold(1.0f64, f64::max);
    let top_ms = points.iter().map(|p| p.ms).fold(1.0f64, f64::max) * 1.1;
    let faults: Vec<&Event> = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Fault)
        .collect();

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(HEIGHT * 62 / 100);

    let mut latency = ChartBuilder::on(&upper)
        .caption(
            "latency of each operation (ms) — ● ok  ▲ info (unknown)  ✕ fail",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..end, 0f64..top_ms)?;
    latency
        .configure_mesh()
        .y_desc("ms")
        .x_desc("seconds")
        .draw()?;
    shade_faults(&mut latency, &faults, end, top_ms)?;
    let ok = RGBColor(31, 90, 170);
    let info = RGBColor(220, 130, 0);
    let fail = RGBColor(200, 30, 30);
    latency.draw_series(
        points
            .iter()
            .filter(|p| p.kind == OpType::Ok)
            .map(|p| Circle::new((p.t, p.ms), 2, ok.filled())),
    )?;
    latency.draw_series(
        points
            .iter()
            .filter(|p| p.kind == OpType::Info)
            .map(|p| TriangleMarker::new((p.t, p.ms), 4, info.filled())),
    )?;
    latency.draw_series(
        points
            .iter()
            .filter(|p| p.kind == OpType::Fail)
            .map(|p| Cross::new((p.t, p.ms), 3, fail.stroke_width(1))),
    )?;

    let buckets = (end / BUCKET_SECS).ceil() as usize + 1;
    let mut per_bucket = vec![0u32; buckets];
    for p in points.iter().filter(|p| p.kind == OpType::Ok) {
        per_bucket[(p.t / BUCKET_SECS) as usize] += 1;
    }
    let rates: Vec<(f64, f64)> = per_bucket
        .iter()
        .enumerate()
        .map(|(i, n)| (i as f64 * BUCKET_SECS, f64::from(*n) / BUCKET_SECS))
        .collect();
    let top_rate = rates.iter().map(|r| r.1).fold(1.0f64, f64::max) * 1.1;
    let mut throughput = ChartBuilder::on(&lower)
        .caption("successful operations per second", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..end, 0f64..top_rate)?;
    throughput
        .configure_mesh()
        .y_desc("ok/s")
        .x_desc("seconds")
        .draw()?;
    shade_faults(&mut throughput, &faults, end, top_rate)?;
    throughput.draw_series(LineSeries::new(rates, ok.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Shades each fault's window (until the next fault, or the end) and labels it.
fn shade_faults(
    chart: &mut Chart<'_, '_>,
    faults: &[&Event],
    end: f64,
    top: f64,
) -> anyhow::Result<()> {
    for (i, fault) in faults.iter().enumerate() {
        let until = faults.get(i + 1).map_or(end, |next| next.t).min(end);
        if fault.what == "heal" || fault.what.starts_with("resume") || fault.what == "start" {
            continue; // a return to health: nothing to shade
        }
        if until - fault.t < 0.01 {
            continue; // applied together with the next one: that one carries the label
        }
        let shade = if i % 2 == 0 {
            RGBColor(200, 60, 60).mix(0.12)
        } else {
            RGBColor(200, 120, 0).mix(0.12)
        };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(fault.t, 0.0), (until, top)],
            shade.filled(),
        )))?;
        let label = format!(
            "{}{}",
            fault
                .node
                .as_deref()
                .map(|n| format!("{n} "))
                .unwrap_or_default(),
            fault.what
        );
        let label: String = label.chars().take(40).collect();
        chart.draw_series(std::iter::once(Text::new(
            label,
            (fault.t, top * 0.97),
            ("sans-serif", 11).into_font(),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn draws_points_throughput_and_fault_windows() {
        let op = |index: u64, time: f64, kind: OpType| Op {
            index,
            time,
            process: 1,
            kind,
            f: "write".into(),
            key: Some("k".into()),
            value: json!(1),
            error: None,
            meta: None,
        };
        let history = vec![
            op(0, 0.1, OpType::Invoke),
            op(1, 0.2, OpType::Ok),
            op(2, 1.0, OpType::Invoke),
            op(3, 1.5, OpType::Info),
        ];
        let timeline = vec![Event {
            t: 0.8,
            kind: EventKind::Fault,
            node: Some("n1".into()),
            what: "pause (SIGSTOP)".into(),
            fields: Default::default(),
        }];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        latency_svg(&history, &timeline, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("n1 pause (SIGSTOP)"),
            "{}",
            &svg[..200]
        );
    }
}
