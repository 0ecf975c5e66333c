//! `latency.svg`: the run at a glance, like Jepsen's perf graphs. Top: every operation's
//! latency at the moment it completed, on a log axis (ok, refused, info and fail told apart by
//! colour *and* marker, so colour is never the only cue; a refusal, such as a cas that did not
//! match, is the service working, not an error). Bottom: successful operations per second.
//! Both share the time axis; the time after each fault is shaded until the next one, and
//! labelled in full, on as many rows as the labels need.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::events::{Event, EventKind};
use super::history::{Op, OpType, completions};

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 620;
/// Throughput is counted per bucket of this many seconds.
const BUCKET_SECS: f64 = 0.25;

struct Point {
    t: f64,
    ms: f64,
    kind: Kind,
}

fn points(history: &[Op]) -> Vec<Point> {
    completions(history)
        .into_iter()
        .map(|(start, op)| Point {
            t: op.time,
            ms: (op.time - start) * 1000.0,
            kind: match op.kind {
                OpType::Ok => Kind::Ok,
                OpType::Fail if op.answered() => Kind::Refused,
                OpType::Fail => Kind::Fail,
                _ => Kind::Info,
            },
        })
        .collect()
}

/// Draws the graph into `path`.
pub fn latency_svg(history: &[Op], timeline: &[Event], path: &Path) -> anyhow::Result<()> {
    let points = points(history);
    let end = points.iter().map(|p| p.t).fold(1.0f64, f64::max);
    // A log axis: one 2 s outlier must not flatten every normal operation onto zero.
    let top_ms = points.iter().map(|p| p.ms).fold(1.0f64, f64::max) * 1.5;
    let bottom_ms = points
        .iter()
        .map(|p| p.ms)
        .filter(|ms| *ms > 0.0)
        .fold(top_ms, f64::min)
        .clamp(0.001, 1.0)
        / 1.5;
    let faults: Vec<&Event> = timeline
        .iter()
        .filter(|e| e.kind == EventKind::Fault)
        .collect();

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (upper, lower) = root.split_vertically(HEIGHT * 62 / 100);

    let mut latency = ChartBuilder::on(&upper)
        .caption(
            "latency of each operation (ms, log scale) — ● ok  ○ refused (the service said no)  ▲ info (unknown)  ✕ fail",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..end, (bottom_ms..top_ms).log_scale())?;
    latency
        .configure_mesh()
        .y_desc("ms")
        .x_desc("seconds")
        .draw()?;
    shade_faults(&mut latency, &faults, end, (bottom_ms, top_ms))?;
    let ok = RGBColor(31, 90, 170);
    let refused = RGBColor(120, 120, 120);
    let info = RGBColor(220, 130, 0);
    let fail = RGBColor(200, 30, 30);
    let at = |p: &Point| (p.t, p.ms.max(bottom_ms));
    latency.draw_series(
        points
            .iter()
            .filter(|p| p.kind == Kind::Ok)
            .map(|p| Circle::new(at(p), 2, ok.filled())),
    )?;
    latency.draw_series(
        points
            .iter()
            .filter(|p| p.kind == Kind::Refused)
            .map(|p| Circle::new(at(p), 2, refused.stroke_width(1))),
    )?;
    latency.draw_series(
        points
            .iter()
            .filter(|p| p.kind == Kind::Info)
            .map(|p| TriangleMarker::new(at(p), 4, info.filled())),
    )?;
    latency.draw_series(
        points
            .iter()
            .filter(|p| p.kind == Kind::Fail)
            .map(|p| Cross::new(at(p), 3, fail.stroke_width(1))),
    )?;
    let (left, right) = (
        latency.backend_coord(&(0.0, top_ms)),
        latency.backend_coord(&(end, top_ms)),
    );
    let labels = fault_labels(&faults, end, (left.0, right.0));
    for label in &labels {
        let style = TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(
            if label.right_aligned {
                HPos::Right
            } else {
                HPos::Left
            },
            VPos::Top,
        ));
        upper.draw(&Text::new(
            label.text.clone(),
            (label.x, left.1 + 2 + label.row as i32 * 13),
            style,
        ))?;
    }

    let buckets = (end / BUCKET_SECS).ceil() as usize + 1;
    let mut per_bucket = vec![0u32; buckets];
    for p in points.iter().filter(|p| p.kind == Kind::Ok) {
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
    shade_faults(&mut throughput, &faults, end, (0.0, top_rate))?;
    throughput.draw_series(LineSeries::new(rates, ok.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

/// What a point is drawn as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    /// The service answered no (a cas that did not match): it worked.
    Refused,
    Info,
    Fail,
}

/// The windows worth shading: from each fault that is not a return to health to the next
/// fault (or the end), leaving out faults applied together with the next one.
fn windows<'a>(faults: &[&'a Event], end: f64) -> Vec<(&'a Event, f64)> {
    faults
        .iter()
        .enumerate()
        .filter_map(|(i, fault)| {
            let until = faults.get(i + 1).map_or(end, |next| next.t).min(end);
            let healing =
                fault.what == "heal" || fault.what.starts_with("resume") || fault.what == "start";
            (!healing && until - fault.t >= 0.01).then_some((*fault, until))
        })
        .collect()
}

/// Shades each fault's window on a chart whose y axis runs over `(low, high)`.
fn shade_faults<Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    faults: &[&Event],
    end: f64,
    (low, high): (f64, f64),
) -> anyhow::Result<()> {
    for (i, (fault, until)) in windows(faults, end).into_iter().enumerate() {
        let shade = if i % 2 == 0 {
            RGBColor(200, 60, 60).mix(0.12)
        } else {
            RGBColor(200, 120, 0).mix(0.12)
        };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(fault.t, low), (until, high)],
            shade.filled(),
        )))?;
    }
    Ok(())
}

/// A fault's label, placed in pixels.
#[derive(Debug, Clone, PartialEq)]
struct Label {
    text: String,
    x: i32,
    /// Text rows down from the top of the plot, so labels never overlap.
    row: usize,
    /// Drawn ending at `x` (a fault near the right edge), so it is not cut.
    right_aligned: bool,
}

/// Every shaded window's label, whole: left-aligned at its fault, or ending there when it
/// would run past the right edge (`x_px` is the plot's left and right edge in pixels); each on
/// the first row where it overlaps no earlier label.
fn fault_labels(faults: &[&Event], end: f64, (left, right): (i32, i32)) -> Vec<Label> {
    // About 6 pixels per character at 11 px sans-serif.
    const CHAR_PX: i32 = 6;
    let mut rows: Vec<Vec<(i32, i32)>> = Vec::new();
    let mut labels = Vec::new();
    for (fault, _) in windows(faults, end) {
        let text = format!(
            "{}{}",
            fault
                .node
                .as_deref()
                .map(|n| format!("{n} "))
                .unwrap_or_default(),
            fault.what
        );
        let x = left + ((fault.t / end.max(1e-9)) * f64::from(right - left)) as i32;
        let width = text.chars().count() as i32 * CHAR_PX;
        let right_aligned = x + width > right;
        let span = if right_aligned {
            (x - width, x)
        } else {
            (x, x + width)
        };
        let row = rows
            .iter()
            .position(|taken| {
                taken
                    .iter()
                    .all(|(a, b)| span.1 + 4 <= *a || *b + 4 <= span.0)
            })
            .unwrap_or(rows.len());
        if row == rows.len() {
            rows.push(Vec::new());
        }
        rows[row].push(span);
        labels.push(Label {
            text,
            x,
            row,
            right_aligned,
        });
    }
    labels
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
        let history = [
            history,
            vec![
                Op {
                    process: 2,
                    ..op(4, 2.0, OpType::Invoke)
                },
                Op {
                    process: 2,
                    error: Some("cas did not match".into()),
                    meta: Some(json!({"swapped": false})),
                    ..op(5, 2.1, OpType::Fail)
                },
            ],
        ]
        .concat();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        latency_svg(&history, &timeline, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("n1 pause (SIGSTOP)"),
            "{}",
            &svg[..200]
        );
        assert!(svg.contains("log scale") && svg.contains("refused"));
    }

    /// Labels are whole: one near the right edge ends at its fault instead of running off the
    /// plot, and labels that would overlap go on separate rows.
    #[test]
    fn fault_labels_are_never_cut_nor_overlap() {
        let fault = |t: f64, what: &str| Event {
            t,
            kind: EventKind::Fault,
            node: Some("n2".into()),
            what: what.into(),
            fields: Default::default(),
        };
        let long = "partition majority-minority leader: cut n1,n2 | n3,n4,n5";
        let events = [
            fault(1.0, long),
            fault(1.5, "pause (SIGSTOP)"),
            fault(2.0, "heal"),
            fault(9.5, "kill (SIGKILL)"),
        ];
        let faults: Vec<&Event> = events.iter().collect();
        let labels = fault_labels(&faults, 10.0, (100, 1100));
        let texts: Vec<&str> = labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                &format!("n2 {long}")[..],
                "n2 pause (SIGSTOP)",
                "n2 kill (SIGKILL)"
            ],
            "whole, and heal is not labelled"
        );
        assert_eq!((labels[0].row, labels[1].row), (0, 1), "they would overlap");
        assert_eq!(labels[2].x, 1050);
        assert!(labels[2].right_aligned, "it would run past the right edge");
        assert!(!labels[0].right_aligned);
    }
}
