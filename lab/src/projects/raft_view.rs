//! The Raft view: what a Raft cluster is doing, drawn from the nodes' `/status` details (the
//! shape `services/raftkv` reports) and the timeline.
//!
//! ```text
//! members n1 n2 n3 n4 (uniform) · learners n5
//! ▶n1 LEADER    t7  ▒▒▒▒▒▒████████████████████▓░  leads
//!  n2 follower  t7  ▒▒▒▒▒▒█████████████████████   lag 1
//!  n3 (follower) t5 ▒▒▒▒████████                  down
//! n1: snapshot 5000 · applied 5190 · commit 5191 · last 5192 · log 392
//! ▒ snapshot █ applied ▓ committed ░ appended   indexes 4800..5192
//! leader 11111111···2222222222222222222   last 60 s
//!                ^ ^                      ^ election started
//! ```
//!
//! Every node's log is drawn on one scale, from the lowest index any node still needs
//! shown to the highest appended, so a follower that lags is visibly shorter; the lag a
//! leader reports per follower is its replication view (`detail.replication`), the only place
//! it is known. The leader strip is who led, per moment of the last minute, with the elections
//! that started under it.

use ratatui_core::layout::Rect;
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;
use serde_json::Value;

use crate::console::app::{App, HISTORY_SECS, LeaderMark};
use crate::console::views::{View, node_color};
use crate::engine::model::NodeView;

pub struct RaftView;

impl View for RaftView {
    fn title(&self) -> &'static str {
        "raft"
    }

    /// Members, a line per node, the selected node's indexes, the legend, the leader strip
    /// (three lines).
    fn wanted_rows(&self, app: &App, _width: u16) -> Option<u16> {
        Some(app.model.nodes.len() as u16 + 6)
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let nodes = &app.model.nodes;
        let (title, leader) = title(nodes);
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.height == 0 || inner.width < 30 {
            return;
        }
        let mut lines = vec![membership_line(nodes, leader.as_deref())];
        let scale = Scale::of(nodes);
        let bar_width = inner.width.saturating_sub(32).max(8) as usize;
        let leader_view = leader
            .as_deref()
            .and_then(|l| nodes.iter().find(|n| n.node.id == l));
        for (i, view) in nodes.iter().enumerate() {
            lines.push(node_line(
                view,
                i == app.selected,
                leader_view,
                &scale,
                bar_width,
            ));
        }
        if let Some(view) = nodes.get(app.selected) {
            lines.push(Line::styled(indexes(view), dim()));
        }
        lines.push(legend(&scale));
        let strip_width = inner.width.saturating_sub(8) as usize;
        let (leaders, elections) =
            leader_strip(&app.leadership, app.model.elapsed_secs, strip_width, nodes);
        lines.push(Line::from(
            [Span::raw("leader  ")]
                .into_iter()
                .chain(leaders)
                .collect::<Vec<_>>(),
        ));
        lines.push(Line::from(vec![
            Span::raw("        "),
            Span::styled(elections, Style::default().fg(Color::Red)),
        ]));
        let caption =
            format!("        last {HISTORY_SECS} s: who led (· none); ^ an election started");
        let caption = if caption.chars().count() <= usize::from(inner.width) {
            caption
        } else {
            format!("{HISTORY_SECS} s: who led (· none); ^ election")
        };
        lines.push(Line::styled(caption, dim()));
        // Keep the strip in sight on a short pane: node lines give way first.
        let height = inner.height as usize;
        if lines.len() > height {
            let tail = lines.split_off(lines.len() - 4.min(height));
            lines.truncate(height - tail.len());
            lines.extend(tail);
        }
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// The title names the leader of the newest term: an old leader cut off from the majority
/// still says "leader" of its older term, and is not the cluster's leader. When nobody leads
/// the newest term yet (an election in progress), the title says so, and who led before.
fn title(nodes: &[NodeView]) -> (String, Option<String>) {
    let term = nodes.iter().filter_map(|n| number(n, "term")).max();
    let newest_leader = nodes
        .iter()
        .filter(|n| n.live_role() == Some("leader"))
        .max_by_key(|n| number(n, "term"));
    let led = newest_leader.map(|n| (n.node.id.clone(), number(n, "term")));
    let term_text = term.map_or("-".into(), |t| t.to_string());
    match led {
        Some((id, led_term)) if led_term == term => {
            (format!(" raft: term {term_text} · leader {id} "), Some(id))
        }
        Some((id, led_term)) => (
            format!(
                " raft: term {term_text} · no leader yet ({id} leads term {}) ",
                led_term.map_or("-".into(), |t| t.to_string())
            ),
            Some(id),
        ),
        None => (format!(" raft: term {term_text} · leader none "), None),
    }
}

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

fn number(view: &NodeView, field: &str) -> Option<u64> {
    view.detail.get(field).and_then(Value::as_u64)
}

/// The members, from the leader's view if there is one (else any node that knows them).
fn membership_line(nodes: &[NodeView], leader: Option<&str>) -> Line<'static> {
    let source = leader
        .and_then(|l| nodes.iter().find(|n| n.node.id == l))
        .or_else(|| nodes.iter().find(|n| n.detail.get("membership").is_some()));
    let Some(membership) = source.and_then(|n| n.detail.get("membership")) else {
        return Line::styled("members: unknown (no node has answered yet)", dim());
    };
    let names = |v: &Value| -> String {
        let mut names: Vec<&str> = v
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        names.sort_by_key(|n| (n.len(), *n));
        names.join(" ")
    };
    let configs: Vec<String> = membership
        .get("configs")
        .and_then(Value::as_array)
        .map(|c| c.iter().map(names).collect())
        .unwrap_or_default();
    let learners = membership.get("learners").map(names).unwrap_or_default();
    let mut spans = match configs.as_slice() {
        [one] => vec![Span::raw(format!("members {one} (uniform)"))],
        [old, new] => vec![
            Span::styled(
                "JOINT ",
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "[{old}] + [{new}]: every decision needs both majorities"
            )),
        ],
        _ => vec![Span::raw("members: unknown")],
    };
    if !learners.is_empty() {
        spans.push(Span::styled(
            format!(" · learners {learners}"),
            Style::default().fg(Color::Cyan),
        ));
    }
    Line::from(spans)
}

/// The index range every bar is drawn against.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scale {
    lo: u64,
    hi: u64,
}

impl Scale {
    /// From the first entry any node still holds in its log (entries before it exist only
    /// in snapshots), or the lowest applied index if a node is further behind, to the highest
    /// appended.
    fn of(nodes: &[NodeView]) -> Self {
        let lo = nodes
            .iter()
            .filter_map(|n| {
                let applied = number(n, "applied")?;
                Some(number(n, "purged").map_or(0, |p| p + 1).min(applied))
            })
            .min()
            .unwrap_or(0);
        let hi = nodes
            .iter()
            .filter_map(|n| number(n, "last_log_index"))
            .max()
            .unwrap_or(0);
        Self { lo: lo.min(hi), hi }
    }

    /// The index at the right edge of column `column` of `width`.
    fn at(&self, column: usize, width: usize) -> u64 {
        let span = self.hi - self.lo;
        self.lo + (span * (column as u64 + 1)).div_ceil(width.max(1) as u64)
    }
}

/// One node's log as a bar: ▒ in its snapshot, █ applied, ▓ committed, ░ appended.
fn bar(view: &NodeView, scale: &Scale, width: usize) -> Vec<Span<'static>> {
    let snapshot = number(view, "snapshot");
    let applied = number(view, "applied");
    let committed = number(view, "committed");
    let last = number(view, "last_log_index");
    if last.is_none() && applied.is_none() {
        return vec![Span::raw(" ".repeat(width))];
    }
    let within = |bound: Option<u64>, index: u64| bound.is_some_and(|b| index <= b);
    let kinds: Vec<usize> = (0..width)
        .map(|c| {
            let index = scale.at(c, width);
            if within(snapshot, index) {
                0
            } else if within(applied, index) {
                1
            } else if within(committed, index) {
                2
            } else if within(last, index) {
                3
            } else {
                4
            }
        })
        .collect();
    const GLYPHS: [(&str, Color); 5] = [
        ("▒", Color::Blue),
        ("█", Color::Green),
        ("▓", Color::Yellow),
        ("░", Color::White),
        (" ", Color::Reset),
    ];
    let mut spans = Vec::new();
    let mut start = 0;
    for i in 1..=kinds.len() {
        if i == kinds.len() || kinds[i] != kinds[start] {
            let (glyph, color) = GLYPHS[kinds[start]];
            spans.push(Span::styled(
                glyph.repeat(i - start),
                Style::default().fg(color),
            ));
            start = i;
        }
    }
    spans
}

/// `▶n1 LEADER   t7  [bar]  leads` / `lag 3` / `down`.
fn node_line(
    view: &NodeView,
    selected: bool,
    leader: Option<&NodeView>,
    scale: &Scale,
    width: usize,
) -> Line<'static> {
    let live = view.live_role();
    let role = match (live, view.role.as_deref()) {
        (Some(role), _) => role.to_string(),
        (None, Some(role)) => format!("({role})"),
        (None, None) => "-".to_string(),
    };
    let role_style = match live {
        Some("leader") => Style::default()
            .fg(Color::Black)
            .bg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
        Some("candidate") => Style::default()
            .fg(Color::Magenta)
            .add_modifier(Modifier::BOLD),
        Some("learner") => Style::default().fg(Color::Cyan),
        Some(_) => Style::default(),
        None => dim(),
    };
    let shown_role = if live == Some("leader") {
        "LEADER".to_string()
    } else {
        role
    };
    let term = number(view, "term").map_or("t-".into(), |t| format!("t{t}"));
    let tail = if live.is_none() {
        Span::styled(
            format!(" {}", crate::console::app::NodeState::of(view).name()),
            Style::default().fg(Color::Red),
        )
    } else if live == Some("leader") {
        Span::raw(" leads")
    } else {
        match leader.and_then(|l| l.detail.get("replication")?.get(&view.node.id)?.get("lag")) {
            Some(lag) => Span::raw(format!(" lag {lag}")),
            None => Span::styled(" lag ?", dim()),
        }
    };
    let mut spans = vec![
        Span::raw(if selected { "▶" } else { " " }),
        Span::styled(
            format!("{:<4}", view.node.id),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(format!("{shown_role:<11}"), role_style),
        Span::raw(format!(" {term:<5} ")),
    ];
    spans.extend(bar(view, scale, width));
    spans.push(tail);
    Line::from(spans)
}

/// The selected node's indexes in numbers.
fn indexes(view: &NodeView) -> String {
    let show = |field| number(view, field).map_or("-".into(), |n: u64| n.to_string());
    format!(
        "{}: snapshot {} · applied {} · commit {} · last {} · log {}",
        view.node.id,
        show("snapshot"),
        show("applied"),
        show("committed"),
        show("last_log_index"),
        show("log_entries"),
    )
}

fn legend(scale: &Scale) -> Line<'static> {
    Line::from(vec![
        Span::styled("▒", Style::default().fg(Color::Blue)),
        Span::raw(" snapshot "),
        Span::styled("█", Style::default().fg(Color::Green)),
        Span::raw(" applied "),
        Span::styled("▓", Style::default().fg(Color::Yellow)),
        Span::raw(" committed "),
        Span::raw("░ appended"),
        Span::styled(format!("   indexes {}..{}", scale.lo, scale.hi), dim()),
    ])
}

/// The last minute in `width` columns: who led at the end of each (the digits of its id,
/// `·` for nobody), and under it `^` where an election started.
fn leader_strip(
    marks: &std::collections::VecDeque<LeaderMark>,
    now: f64,
    width: usize,
    nodes: &[NodeView],
) -> (Vec<Span<'static>>, String) {
    let span = HISTORY_SECS as f64 / width.max(1) as f64;
    let start = now - HISTORY_SECS as f64;
    let mut leaders = Vec::with_capacity(width);
    let mut elections = String::with_capacity(width);
    // Marks are in time order: one pass, carrying who leads from column to column.
    let mut marks = marks.iter().peekable();
    let mut leader: Option<&str> = None;
    for column in 0..width {
        let (from, to) = (
            start + column as f64 * span,
            start + (column + 1) as f64 * span,
        );
        let mut elected = false;
        while let Some(mark) = marks.next_if(|m| m.t < to) {
            if mark.election {
                elected |= mark.t >= from;
            } else {
                leader = mark.leader.as_deref();
            }
        }
        elections.push(if elected { '^' } else { ' ' });
        leaders.push(match leader {
            Some(id) => {
                // The id's last character: n1 -> 1.
                let short = id.chars().last().map_or(String::new(), String::from);
                Span::styled(short, Style::default().fg(node_color(nodes, id)))
            }
            None => Span::styled("·", dim()),
        });
    }
    (leaders, elections.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::Health;
    use crate::engine::supervisor::ProcessState;
    use serde_json::json;

    fn node(id: &str, snapshot: u64, applied: u64, committed: u64, last: u64) -> NodeView {
        let mut view = crate::console::fixture::node(id, ProcessState::Running, Health::Responsive);
        view.detail = json!({
            "snapshot": snapshot, "applied": applied, "committed": committed,
            "last_log_index": last,
        });
        view
    }

    #[test]
    fn bars_share_one_scale_so_a_lagging_node_is_shorter() {
        let nodes = [
            node("n1", 100, 190, 195, 200),
            node("n2", 100, 150, 150, 150),
        ];
        let scale = Scale::of(&nodes);
        assert_eq!(
            scale,
            Scale { lo: 0, hi: 200 },
            "nothing purged: from the start"
        );
        let mut purged = nodes.clone();
        for n in &mut purged {
            n.detail["purged"] = json!(99);
        }
        let scale = Scale::of(&purged);
        assert_eq!(scale, Scale { lo: 100, hi: 200 });
        let text = |spans: Vec<Span>| {
            spans
                .iter()
                .map(|s| s.content.to_string())
                .collect::<String>()
        };
        assert_eq!(text(bar(&nodes[0], &scale, 10)), "█████████░");
        assert_eq!(text(bar(&nodes[1], &scale, 10)), "█████     ");
        let compacted = node("n3", 160, 190, 190, 190);
        assert_eq!(text(bar(&compacted, &scale, 10)), "▒▒▒▒▒▒███ ");
    }

    /// The whole console on a Project 2 cluster opens on the Raft view.
    #[test]
    fn the_raft_view_of_a_failover() {
        use ratatui_core::backend::TestBackend;
        use ratatui_core::terminal::Terminal;
        let app = crate::console::fixture::raft_app();
        let ui = crate::console::views::for_project(app.project);
        let mut terminal = Terminal::new(TestBackend::new(120, 36)).unwrap();
        terminal
            .draw(|frame| crate::console::ui::draw(frame, &app, &ui))
            .unwrap();
        let screen = terminal.backend().to_string();
        insta::assert_snapshot!(screen);
    }

    /// An old leader cut off from the majority still says "leader" of its term: the title
    /// names the leader of the newest term, or says that term has none yet.
    #[test]
    fn the_title_names_the_leader_of_the_newest_term() {
        let mut nodes = [
            node("n1", 0, 5, 5, 5),
            node("n2", 0, 5, 5, 5),
            node("n3", 0, 5, 5, 5),
        ];
        let lead = |n: &mut NodeView, role: &str, term: u64| {
            n.role = Some(role.into());
            n.detail["term"] = json!(term);
        };
        lead(&mut nodes[0], "leader", 4);
        lead(&mut nodes[1], "leader", 5);
        lead(&mut nodes[2], "follower", 5);
        assert_eq!(title(&nodes).0, " raft: term 5 · leader n2 ");
        assert_eq!(title(&nodes).1.as_deref(), Some("n2"));
        lead(&mut nodes[2], "candidate", 6);
        assert_eq!(
            title(&nodes).0,
            " raft: term 6 · no leader yet (n2 leads term 5) "
        );
        lead(&mut nodes[1], "follower", 6);
        lead(&mut nodes[0], "follower", 6);
        assert_eq!(title(&nodes), (" raft: term 6 · leader none ".into(), None));
    }

    #[test]
    fn the_strip_shows_who_led_and_when_elections_started() {
        let mark = |t: f64, leader: Option<&str>, election: bool| LeaderMark {
            t,
            leader: leader.map(str::to_string),
            term: None,
            election,
        };
        let marks: std::collections::VecDeque<LeaderMark> = [
            mark(1.0, Some("n1"), false),
            mark(30.0, None, false),
            mark(31.0, None, true),
            mark(33.0, Some("n2"), false),
        ]
        .into();
        let nodes = [node("n1", 0, 0, 0, 0), node("n2", 0, 0, 0, 0)];
        let (leaders, elections) = leader_strip(&marks, 60.0, 20, &nodes);
        let text: String = leaders.iter().map(|s| s.content.to_string()).collect();
        assert_eq!(text, "1111111111·222222222");
        assert_eq!(elections, "          ^");
    }
}
