//! The console's extension point: what each project adds to the screen. A project gives the
//! node table its key figures (term, ring share, ISR count, lag...) and one or more views for
//! the view pane, switched with Tab. Every project has the cluster view; a project may put its
//! own view first (Project 2 opens on its Raft view).
//!
//! Adding a project's view: write a [`View`] (a widget drawing from the [`App`] state, never
//! from a node) and list it in the project's `console()` (in `crate::projects`).

use ratatui_core::layout::{Constraint, Layout, Rect};
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;
use ratatui_widgets::sparkline::Sparkline;

use super::app::{App, HISTORY_SECS, NodeState};
use super::ui::state_style;
use crate::engine::events::EventKind;
use crate::engine::model::NodeView;
use crate::engine::project::Project;

/// A pane of the console that shows one aspect of the cluster.
pub trait View {
    fn title(&self) -> &'static str;
    fn render(&self, app: &App, frame: &mut Frame, area: Rect);
    /// The rows (inside its border) the view needs to show everything that matters at this
    /// inner `width`, if it needs a fixed number: then the console draws it at full width with
    /// those rows and the timeline under it, where entries fit on a line. `None`: the view
    /// fills what it is given (a circle, sparklines), beside the timeline.
    fn wanted_rows(&self, _app: &App, _width: u16) -> Option<u16> {
        None
    }
    /// What the view asks a node while it is shown, for what `/status` does not carry (a
    /// document's past versions): the console GETs it a few times a second and puts the
    /// answer in [`App::probed`]. A view with steps to go through (`[` `]`) answers with `of`,
    /// how many there are, and reads [`App::step`] to ask for one.
    fn probe(&self, _app: &App) -> Option<Probe> {
        None
    }
}

/// An HTTP GET of `path` on `node`'s own listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub node: String,
    pub path: String,
}

/// What a project adds to the console.
pub struct ProjectUi {
    /// The node table's extra columns: a header and a value per node.
    pub figures: &'static [Figure],
    pub views: Vec<Box<dyn View>>,
    /// Node events too frequent for the timeline pane (one per task, say): they stay in the
    /// run's `events.jsonl` for the checks, and the project's own views show what they mean.
    pub quiet_events: &'static [&'static str],
}

/// One column of the node table: its header and how to read it from a node's `/status`.
pub struct Figure {
    pub header: &'static str,
    pub value: fn(&NodeView) -> String,
}

/// The console parts of `project` (each project's module says what they are).
pub fn for_project(project: &Project) -> ProjectUi {
    crate::projects::REGISTRY
        .iter()
        .find(|plugin| plugin.project.name == project.name)
        .map_or_else(
            || ProjectUi {
                figures: &[],
                views: vec![Box::new(ClusterView)],
                quiet_events: &[],
            },
            |plugin| (plugin.console)(),
        )
}

/// A string from the node's `/status` detail, or `-`.
pub fn detail_text(node: &NodeView, field: &str) -> String {
    node.detail
        .get(field)
        .and_then(|v| v.as_str())
        .map_or("-".into(), str::to_string)
}

/// A number from the node's `/status` detail, or `-`.
pub fn detail_number(node: &NodeView, field: &str) -> String {
    node.detail
        .get(field)
        .and_then(|v| v.as_u64())
        .map_or("-".into(), |n| n.to_string())
}

/// The newest node events whose kind starts with one of `prefixes` that fit in `room` rows of
/// `width`, oldest first (`  12.3s b1 isr_changed: ...`): a view's own slice of the timeline. A
/// long event wraps onto indented rows rather than losing its end (the ISR it names, say).
pub fn recent_events(app: &App, prefixes: &[&str], room: usize, width: u16) -> Vec<Line<'static>> {
    let mut rows: Vec<Line<'static>> = Vec::new();
    for e in app.events.iter().rev().filter(|e| {
        e.kind == EventKind::NodeEvent && prefixes.iter().any(|p| e.what.starts_with(p))
    }) {
        let text = format!(
            "{:>6.1}s {} {}",
            e.t,
            e.node.as_deref().unwrap_or("-"),
            e.what
        );
        let wrapped = wrap_words(&text, usize::from(width), 8);
        if rows.len() + wrapped.len() > room {
            break;
        }
        // Newest first while collecting; each event's own rows stay in order.
        rows.splice(0..0, wrapped.into_iter().map(Line::from));
    }
    rows
}

/// `text` broken at spaces into rows of at most `width` characters, rows after the first
/// indented by `indent`; a word longer than a row is cut into pieces.
pub fn wrap_words(text: &str, width: usize, indent: usize) -> Vec<String> {
    let width = width.max(indent + 8);
    let body = text.trim_start_matches(' ');
    let mut rows = vec![" ".repeat(text.len() - body.len())];
    for word in body.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let row = rows.last_mut().expect("one row at least");
            let used = row.chars().count();
            let space = usize::from(used > 0 && !row.ends_with(' '));
            if used + space + word.len() <= width {
                if space == 1 {
                    row.push(' ');
                }
                row.extend(word.iter());
                break;
            }
            let fresh = " ".repeat(indent);
            if used <= indent && word.len() > width - indent {
                // Longer than any row: cut it.
                let room = width - used;
                row.extend(word.drain(..room));
                rows.push(fresh);
            } else {
                rows.push(fresh);
            }
        }
    }
    rows
}

/// Every project's first view: per node, the workload's request and error rates as
/// sparklines, latency p50/p99, and a strip of the node's state over the last minute (a mark
/// per second, or per few seconds on a narrow screen), so a fault is visible in time.
pub struct ClusterView;

impl View for ClusterView {
    fn title(&self) -> &'static str {
        "cluster"
    }

    /// Two rows per node.
    fn wanted_rows(&self, app: &App, _width: u16) -> Option<u16> {
        Some(app.model.nodes.len() as u16 * 2)
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let block = Block::default()
            .borders(Borders::ALL)
            .title(" cluster: ok/s, err/s, latency, state ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if app.model.nodes.is_empty() || inner.height == 0 {
            return;
        }
        let rows = Layout::vertical(
            app.model
                .nodes
                .iter()
                .map(|_| Constraint::Length(2))
                .chain([Constraint::Min(0)]),
        )
        .split(inner);
        let strip_width = (HISTORY_SECS as u16).min(inner.width * 2 / 5);
        for (view, row) in app.model.nodes.iter().zip(rows.iter()) {
            if row.height == 0 {
                break;
            }
            let series = app.series.get(&view.node.id).cloned().unwrap_or_default();
            let [name, rates, latency, strip_area] = Layout::horizontal([
                Constraint::Length(4),
                Constraint::Fill(1),
                Constraint::Length(13),
                Constraint::Length(strip_width + 1),
            ])
            .areas(*row);
            let line = |r: Rect, i: u16| Rect {
                y: r.y + i,
                height: u16::from(r.height > i),
                ..r
            };
            frame.render_widget(
                Paragraph::new(view.node.id.as_str()).style(bold()),
                line(name, 0),
            );
            let now_ok = series.ok_rate.back().copied().unwrap_or(0);
            let now_err = series.err_rate.back().copied().unwrap_or(0);
            for (i, label, data, color) in [
                (0, format!("ok {now_ok}/s"), &series.ok_rate, Color::Green),
                (1, format!("err {now_err}/s"), &series.err_rate, Color::Red),
            ] {
                let [text, spark] =
                    Layout::horizontal([Constraint::Length(10), Constraint::Fill(1)])
                        .areas(line(rates, i));
                frame.render_widget(Paragraph::new(label), text);
                frame.render_widget(
                    Sparkline::default()
                        .data(last(data, spark.width))
                        .style(Style::default().fg(color)),
                    spark,
                );
            }
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
            frame.render_widget(
                Paragraph::new(vec![
                    Line::from(format!(" p50 {}", ms(series.p50_ms))),
                    Line::from(format!(" p99 {}", ms(series.p99_ms))),
                ]),
                latency,
            );
            let states: Vec<NodeState> = series.states.iter().copied().collect();
            let mut spans = vec![Span::raw(" ")];
            spans.extend(
                strip(&states, strip_width as usize)
                    .into_iter()
                    .map(|s| Span::styled(strip_glyph(s), state_style(s))),
            );
            frame.render_widget(Paragraph::new(Line::from(spans)), line(strip_area, 0));
            let state = NodeState::of(view);
            frame.render_widget(
                Paragraph::new(format!(" {}", state.name())).style(state_style(state)),
                line(strip_area, 1),
            );
        }
    }
}

/// The last minute of a node's states (a state per second, oldest first) in at most `width`
/// marks: when the width is short of a minute, each mark covers several seconds and shows the
/// worst state among them, so a short outage is never squeezed out.
pub fn strip(states: &[NodeState], width: usize) -> Vec<NodeState> {
    if width == 0 {
        return Vec::new();
    }
    let per_mark = HISTORY_SECS.div_ceil(width);
    // Whole buckets counted back from the newest second, so marks do not shift each second.
    states
        .rchunks(per_mark)
        .map(|bucket| {
            *bucket
                .iter()
                .max_by_key(|s| severity(**s))
                .expect("chunks are not empty")
        })
        .take(width)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

/// How bad a state is, for summing up several seconds in one mark.
fn severity(state: NodeState) -> u8 {
    match state {
        NodeState::Running => 0,
        NodeState::Paused => 1,
        NodeState::Unresponsive => 2,
        NodeState::Down => 3,
    }
}

/// A state in the strip: a glyph per state, so it reads without color too.
pub fn strip_glyph(state: NodeState) -> &'static str {
    match state {
        NodeState::Running => "█",
        NodeState::Paused => "▒",
        NodeState::Unresponsive => "░",
        NodeState::Down => "×",
    }
}

/// A color per node, by its place in the cluster: the same node has the same color in every
/// view (who led in the Raft strip, whose vnodes on the ring).
pub fn node_color(nodes: &[NodeView], id: &str) -> Color {
    // From the 256-colour palette: none is the green, yellow, red or magenta that mean a
    // state (running/alive, paused/suspect, down/dead, unresponsive), so a member's colour is
    // never read as its health.
    const COLORS: [Color; 6] = [
        Color::Indexed(39),  // sky blue
        Color::Indexed(208), // orange
        Color::Indexed(141), // lavender
        Color::Indexed(37),  // teal
        Color::Indexed(218), // pink
        Color::Indexed(180), // tan
    ];
    let index = nodes.iter().position(|n| n.node.id == id).unwrap_or(0);
    COLORS[index % COLORS.len()]
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// The last `width` points of a series.
fn last(series: &std::collections::VecDeque<u64>, width: u16) -> Vec<u64> {
    let skip = series.len().saturating_sub(width as usize);
    series.iter().skip(skip).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_events_wrap_at_spaces_onto_indented_rows() {
        let rows = wrap_words(
            "   7.4s c1 isr_changed: __consumer_offsets/2: ISR expanded to [b1, b2, b3]",
            40,
            8,
        );
        assert_eq!(
            rows,
            [
                "   7.4s c1 isr_changed:",
                "        __consumer_offsets/2: ISR",
                "        expanded to [b1, b2, b3]"
            ]
        );
        assert!(rows.iter().all(|r| r.chars().count() <= 40));
        let long = wrap_words(&"x".repeat(50), 20, 4);
        assert!(long.iter().all(|r| r.chars().count() <= 20), "{long:?}");
        assert_eq!(long.concat().matches('x').count(), 50);
    }
    use NodeState::*;

    #[test]
    fn a_narrow_strip_still_covers_the_minute_and_keeps_short_outages() {
        let mut minute = vec![Running; 60];
        minute[30] = Down;
        minute[50] = Paused;
        assert_eq!(
            strip(&minute, 60),
            minute,
            "a mark per second when there is room"
        );
        let narrow = strip(&minute, 20);
        assert_eq!(narrow.len(), 20, "three seconds a mark");
        assert_eq!(narrow.iter().filter(|s| **s == Down).count(), 1);
        assert_eq!(narrow.iter().filter(|s| **s == Paused).count(), 1);
        assert_eq!(
            strip(&[Running, Down], 20),
            [Down],
            "a young strip: fewer marks, the worst state kept"
        );
        assert!(strip(&minute, 0).is_empty());
    }
}
