//! The ISR view: every partition against every broker, drawn from the brokers' `/status`
//! details (each reports its own replicas: role, log end, high watermark; the leader's report
//! says who is in sync), with the ISR and leadership events of the timeline under it.
//!
//! ```text
//! partition            epoch  b1              b2              b3
//! events/0             e1     L ██████████▓   ○ ██████        ● ██████████
//! events/1             e0     ● ██████████    L ██████████    ● ██████████
//! L leader ● in sync ○ out of sync × offline · none  █ to the HW ▓ past it
//! 12.3s b1 isr_shrink_proposed: events/0: followers fell behind; proposing ISR [b1, b3]
//! ```
//!
//! Each partition's bars share one scale, from its lowest log start to its highest log end,
//! so a follower that lags is shorter and the leader's tail past the high watermark (written,
//! not yet on every ISR member) shows as ▓.

use std::collections::BTreeMap;

use ratatui_core::layout::Rect;
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;
use serde_json::Value;

use crate::console::app::{App, NodeState};
use crate::console::views::{View, recent_events};
use crate::engine::model::NodeView;

pub struct IsrView;

/// The timeline events this view lists.
const ISR_EVENTS: &[&str] = &[
    "isr_",
    "leader_elected",
    "partition_offline",
    "unclean_election",
    "broker_fenced",
    "broker_unfenced",
    "log_truncated",
];

/// One broker's copy of a partition, as it reports it.
#[derive(Debug, Clone, PartialEq)]
struct Copy {
    log_start: u64,
    log_end: u64,
    high_watermark: u64,
}

/// A partition as the brokers report it.
#[derive(Debug, Clone, PartialEq, Default)]
struct Partition {
    name: String,
    /// How fresh the report the leader, epoch, replicas and ISR came from is: (from a
    /// running broker, leader epoch, from the leader).
    rank: (bool, u64, bool),
    leader: Option<String>,
    leader_epoch: u64,
    replicas: Vec<String>,
    isr: Vec<String>,
    copies: BTreeMap<String, Copy>,
}

/// What a broker is to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Leader,
    InSync,
    OutOfSync,
    Offline,
    NoReplica,
}

impl Cell {
    fn glyph(self) -> (&'static str, Style) {
        match self {
            Self::Leader => (
                "L",
                Style::default()
                    .fg(Color::Green)
                    .add_modifier(Modifier::BOLD),
            ),
            Self::InSync => ("●", Style::default().fg(Color::Green)),
            Self::OutOfSync => ("○", Style::default().fg(Color::Yellow)),
            Self::Offline => ("×", Style::default().fg(Color::Red)),
            Self::NoReplica => ("·", Style::default().fg(Color::DarkGray)),
        }
    }
}

fn brokers(nodes: &[NodeView]) -> Vec<&NodeView> {
    nodes.iter().filter(|n| n.node.role == "broker").collect()
}

/// Every partition some broker reports, user topics first. The leader, epoch, replicas and
/// ISR come from the freshest report: a running broker's before a paused or unresponsive
/// one's (whose last report may predate a failover), the highest leader epoch, the leader's.
/// Each broker's own copy (log start and end, high watermark) is its own report.
fn partitions(nodes: &[NodeView]) -> Vec<Partition> {
    let mut found: BTreeMap<(bool, String), Partition> = BTreeMap::new();
    for broker in brokers(nodes) {
        let state = NodeState::of(broker);
        if state == NodeState::Down {
            continue;
        }
        let reported = broker.detail.get("partitions").and_then(Value::as_array);
        for p in reported.into_iter().flatten() {
            let Some(name) = p["name"].as_str() else {
                continue;
            };
            let entry = found
                .entry((name.starts_with("__"), name.to_string()))
                .or_default();
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            };
            let leader_epoch = p["leader_epoch"].as_u64().unwrap_or(0);
            let rank = (
                state == NodeState::Running,
                leader_epoch,
                p["role"] == "leader",
            );
            if entry.name.is_empty() || rank > entry.rank {
                entry.rank = rank;
                entry.name = name.to_string();
                entry.leader = p["leader"].as_str().map(str::to_string);
                entry.leader_epoch = leader_epoch;
                entry.replicas = strings(&p["replicas"]);
                entry.isr = strings(&p["isr"]);
            }
            entry.copies.insert(
                broker.node.id.clone(),
                Copy {
                    log_start: p["log_start"].as_u64().unwrap_or(0),
                    log_end: p["log_end"].as_u64().unwrap_or(0),
                    high_watermark: p["high_watermark"].as_u64().unwrap_or(0),
                },
            );
        }
    }
    found.into_values().collect()
}

fn cell(partition: &Partition, broker: &NodeView) -> Cell {
    let id = &broker.node.id;
    if !partition.replicas.contains(id) {
        Cell::NoReplica
    } else if NodeState::of(broker) == NodeState::Down || partition.leader.is_none() {
        Cell::Offline
    } else if partition.leader.as_deref() == Some(id) {
        Cell::Leader
    } else if partition.isr.contains(id) {
        Cell::InSync
    } else {
        Cell::OutOfSync
    }
}

/// A copy's bar, `width` wide on the partition's scale: █ up to the high watermark (the
/// leader's: what every ISR member holds), ▓ from there to this copy's log end.
fn bar(copy: &Copy, high_watermark: u64, (lo, hi): (u64, u64), width: usize) -> String {
    let span = hi.saturating_sub(lo).max(1) as f64;
    let at = |offset: u64| (offset.clamp(lo, hi) - lo) as f64 / span * width as f64;
    // The solid part rounds down and a tail past the HW up, so a short tail still shows.
    let solid = at(copy.log_end.min(high_watermark)).floor() as usize;
    let end = if copy.log_end > high_watermark {
        (at(copy.log_end).ceil() as usize).max(solid)
    } else {
        solid
    };
    let mut out = "█".repeat(solid);
    out.push_str(&"▓".repeat(end - solid));
    out.push_str(&" ".repeat(width - end));
    out
}

impl View for IsrView {
    fn title(&self) -> &'static str {
        "isr"
    }

    /// The header, a row per partition, the legend, and a few of the ISR events.
    fn wanted_rows(&self, app: &App, width: u16) -> Option<u16> {
        let partitions = partitions(&app.model.nodes).len();
        Some((1 + partitions + legend(width).len() + 3) as u16)
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let nodes = &app.model.nodes;
        let brokers = brokers(nodes);
        let partitions = partitions(nodes);
        let under = partitions
            .iter()
            .filter(|p| p.leader.is_some() && p.isr.len() < p.replicas.len())
            .count();
        let offline = partitions.iter().filter(|p| p.leader.is_none()).count();
        let mut title = format!(
            " isr: {} partitions · {under} under-replicated · {offline} offline ",
            partitions.len()
        );
        if title.chars().count() + 2 > usize::from(area.width) {
            title = format!(
                " isr: {under}/{} under-replicated · {offline} offline ",
                partitions.len()
            );
        }
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.height == 0 || inner.width < 40 || brokers.is_empty() {
            return;
        }
        let columns = Columns::fit(
            inner.width,
            partitions
                .iter()
                .map(|p| p.name.chars().count())
                .max()
                .unwrap_or(9),
            brokers.len(),
        );
        let Columns {
            name_width,
            epoch_width,
            bar_width,
        } = columns;
        let mut lines = Vec::new();
        let mut header = format!(
            "{:<name_width$}{:<epoch_width$}",
            "partition",
            if epoch_width > 0 { "epoch" } else { "" }
        );
        for b in &brokers {
            header.push_str(&format!("{:<w$}", b.node.id, w = bar_width + 3));
        }
        header.push_str("hw / log end");
        lines.push(Line::styled(
            header,
            Style::default().add_modifier(Modifier::BOLD),
        ));
        for p in &partitions {
            let hw = p
                .leader
                .as_ref()
                .and_then(|l| p.copies.get(l))
                .map(|c| c.high_watermark)
                .unwrap_or_else(|| {
                    p.copies
                        .values()
                        .map(|c| c.high_watermark)
                        .max()
                        .unwrap_or(0)
                });
            let lo = p.copies.values().map(|c| c.log_start).min().unwrap_or(0);
            let hi = p.copies.values().map(|c| c.log_end).max().unwrap_or(0);
            let name_style = if p.leader.is_none() {
                Style::default().fg(Color::Red)
            } else if p.name.starts_with("__") {
                Style::default().fg(Color::DarkGray)
            } else {
                Style::default()
            };
            let mut spans = vec![
                Span::styled(
                    format!("{:<name_width$}", elide_middle(&p.name, name_width - 1)),
                    name_style,
                ),
                Span::raw(if epoch_width > 0 {
                    format!("{:<epoch_width$}", format!("e{}", p.leader_epoch))
                } else {
                    String::new()
                }),
            ];
            for b in &brokers {
                let c = cell(p, b);
                let (glyph, style) = c.glyph();
                spans.push(Span::styled(glyph, style));
                spans.push(Span::raw(" "));
                let drawn = match (c, p.copies.get(&b.node.id)) {
                    (Cell::NoReplica | Cell::Offline, _) | (_, None) => " ".repeat(bar_width),
                    (_, Some(copy)) => bar(copy, hw, (lo, hi), bar_width),
                };
                spans.push(Span::styled(drawn, style));
                spans.push(Span::raw(" "));
            }
            spans.push(Span::raw(format!("{hw} / {hi}")));
            lines.push(Line::from(spans));
        }
        for line in legend(inner.width) {
            lines.push(Line::styled(line, Style::default().fg(Color::DarkGray)));
        }
        let room = (inner.height as usize).saturating_sub(lines.len());
        let events = recent_events(app, ISR_EVENTS, room, inner.width);
        lines.extend(events);
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// How wide the grid's columns are: the partition name (with a space after it), the leader
/// epoch, and each broker's bar (after its mark and a space; `hw / log end` takes the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    name_width: usize,
    epoch_width: usize,
    bar_width: usize,
}

impl Columns {
    /// What fits in `width`: bars of 3 to 24 cells with every column whole; on a narrow pane
    /// the epoch column goes first, then long partition names are shortened in the middle
    /// (`__consu…sets/0`: the topic's start and the partition number stay), then the bars
    /// shrink to nothing but the marks.
    fn fit(width: u16, longest_name: usize, brokers: usize) -> Self {
        const HW: usize = 14; // "1500 / 1520" and a little room
        let width = usize::from(width);
        let brokers = brokers.max(1);
        let name = longest_name.max(9) + 1;
        let bar = |name: usize, epoch: usize| {
            (width.saturating_sub(name + epoch + HW) / brokers).saturating_sub(3)
        };
        if bar(name, 6) >= 3 {
            return Self {
                name_width: name,
                epoch_width: 6,
                bar_width: bar(name, 6).min(24),
            };
        }
        if bar(name, 0) >= 3 {
            return Self {
                name_width: name,
                epoch_width: 0,
                bar_width: bar(name, 0).min(24),
            };
        }
        let short = name.min(13);
        Self {
            name_width: short,
            epoch_width: 0,
            bar_width: bar(short, 0).min(3),
        }
    }
}

/// `name` in at most `width` characters: its start and its end, an ellipsis between.
fn elide_middle(name: &str, width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width || width < 3 {
        return name.to_string();
    }
    let tail = (width - 1) / 2;
    let head = width - 1 - tail;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// The marks and bars explained, in as many lines of `width` as they need.
fn legend(width: u16) -> Vec<String> {
    const ITEMS: [&str; 7] = [
        "L leader",
        "● in sync",
        "○ out of sync",
        "× offline",
        "· none",
        "█ to the high watermark",
        "▓ past it (not yet committed)",
    ];
    let mut lines: Vec<String> = vec![String::new()];
    for item in ITEMS {
        let line = lines.last_mut().expect("one line at least");
        if line.is_empty() {
            line.push_str(item);
        } else if line.chars().count() + 2 + item.chars().count() <= usize::from(width) {
            line.push_str("  ");
            line.push_str(item);
        } else {
            lines.push(item.to_string());
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A narrow pane (80x24 puts the grid beside the timeline) gives up the epoch column,
    /// then the middle of long names, then the bars, so `hw / log end` is never cut off.
    #[test]
    fn narrow_panes_shed_columns_in_order() {
        let wide = Columns::fit(118, 20, 3);
        assert_eq!((wide.epoch_width, wide.bar_width), (6, 22));
        let middling = Columns::fit(56, 20, 3);
        assert_eq!((middling.name_width, middling.epoch_width), (21, 0));
        let narrow = Columns::fit(44, 20, 3);
        assert_eq!(narrow.epoch_width, 0);
        assert!(narrow.name_width <= 13);
        assert!(
            narrow.name_width + 3 * (narrow.bar_width + 3) + 12 <= 44,
            "{narrow:?}"
        );
        assert_eq!(elide_middle("__consumer_offsets/0", 12), "__cons…ets/0");
        assert_eq!(elide_middle("events/0", 12), "events/0");
    }

    #[test]
    fn the_legend_wraps_between_items_never_inside_one() {
        assert_eq!(legend(200).len(), 1);
        let narrow = legend(44);
        assert!(narrow.len() > 1);
        assert!(narrow.iter().all(|l| l.chars().count() <= 44), "{narrow:?}");
        assert_eq!(narrow.concat().matches("offline").count(), 1);
    }

    #[test]
    fn bars_show_the_high_watermark_and_the_tail_past_it() {
        let copy = |log_end, high_watermark| Copy {
            log_start: 0,
            log_end,
            high_watermark,
        };
        assert_eq!(bar(&copy(100, 80), 80, (0, 100), 10), "████████▓▓");
        assert_eq!(bar(&copy(50, 50), 80, (0, 100), 10), "█████     ");
        assert_eq!(
            bar(&copy(96, 95), 95, (0, 100), 10),
            "█████████▓",
            "a short tail shows"
        );
        assert_eq!(bar(&copy(0, 0), 0, (0, 0), 4), "    ");
    }

    /// A paused broker's last report (it led, in an older epoch) does not hide the failover
    /// the running brokers report.
    #[test]
    fn a_paused_brokers_stale_report_loses_to_the_running_ones() {
        use crate::console::fixture::node;
        use crate::engine::model::Health;
        use crate::engine::supervisor::ProcessState;
        let broker = |id: &str, state, role: &str, leader: &str, epoch: u64, isr: &[&str]| {
            let mut v = node(id, state, Health::Responsive);
            v.node.role = "broker";
            v.detail = serde_json::json!({"partitions": [{
                "name": "t/0", "role": role, "leader": leader, "leader_epoch": epoch,
                "replicas": ["b1", "b2", "b3"], "isr": isr,
                "log_start": 0, "log_end": 10, "high_watermark": 10,
            }]});
            v
        };
        let nodes = [
            broker(
                "b1",
                ProcessState::Running,
                "leader",
                "b1",
                1,
                &["b1", "b2"],
            ),
            broker(
                "b2",
                ProcessState::Running,
                "follower",
                "b1",
                1,
                &["b1", "b2"],
            ),
            broker(
                "b3",
                ProcessState::Paused,
                "leader",
                "b3",
                0,
                &["b1", "b2", "b3"],
            ),
        ];
        for order in [[0, 1, 2], [2, 1, 0]] {
            let nodes: Vec<NodeView> = order.iter().map(|&i| nodes[i].clone()).collect();
            let p = &partitions(&nodes)[0];
            assert_eq!(
                (p.leader.as_deref(), p.leader_epoch, p.isr.len()),
                (Some("b1"), 1, 2)
            );
            assert_eq!(
                cell(p, &nodes[order.iter().position(|&i| i == 2).unwrap()]),
                Cell::OutOfSync
            );
            assert_eq!(p.copies.len(), 3, "every broker's own copy is drawn");
        }
    }

    /// The whole console on a Project 3 cluster, on its ISR view: b2 fell out of events/0's
    /// ISR, b3 is down.
    #[test]
    fn the_isr_view_of_a_shrunk_isr() {
        use ratatui_core::backend::TestBackend;
        use ratatui_core::terminal::Terminal;
        let app = crate::console::fixture::log_app(0);
        let ui = crate::console::views::for_project(app.project);
        let mut terminal = Terminal::new(TestBackend::new(140, 40)).unwrap();
        terminal
            .draw(|frame| crate::console::ui::draw(frame, &app, &ui))
            .unwrap();
        insta::assert_snapshot!(terminal.backend().to_string());
    }
}
