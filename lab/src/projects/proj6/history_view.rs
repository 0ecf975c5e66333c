//! The history view: time travel through the selected replica's document, one operation at a
//! time (`[` `]`, `{` `}` by ten, `.` back to the latest, followed live).
//!
//! ```text
//! ┌ history · s1 ───────────────────────────────────────────────┐
//! │ version 120 of 340 · [ ] step · { } ten · . latest          │
//! │ ██████████████░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░ │
//! │ #120 insert "qu" by e2@117 after e2@116 · parents e2@116     │
//! │ the quick brown fox jumps over the lazy dog and then the … │
//! └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! The replica asked is the selected node (servers and editors both answer
//! `/docs/notes/step?at=N`: the version after N operations of their history, the operation that
//! made it and the text then). Each prefix of a replica's history is a version it passed
//! through; two replicas' histories are different orders of the same operations, so each node
//! has its own steps. Replica ids are shown as the node that owns them where one does.

use std::collections::BTreeMap;

use distlab_collab::history::Step;
use ratatui_core::layout::Rect;
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;

use super::DOC;
use crate::console::app::App;
use crate::console::views::{Probe, View, wrap_words};

pub struct HistoryView;

/// Replica ids (hex, as in `replica@seq`) to the node that owns each.
fn owners(app: &App) -> BTreeMap<String, String> {
    app.model
        .nodes
        .iter()
        .filter_map(|n| {
            let replica = n.detail["replica"].as_u64()?;
            Some((format!("{replica:016x}"), n.node.id.clone()))
        })
        .collect()
}

/// `replica@seq` with the replica named by its node where known.
fn named(dot: &str, owners: &BTreeMap<String, String>) -> String {
    match dot.split_once('@') {
        Some((replica, seq)) => match owners.get(replica) {
            Some(node) => format!("{node}@{seq}"),
            None => format!("{}…@{seq}", &replica[..replica.len().min(6)]),
        },
        None => dot.to_string(),
    }
}

fn describe(step: &Step, owners: &BTreeMap<String, String>) -> String {
    let Some(entry) = &step.entry else {
        return "the empty document, before any operation".into();
    };
    let name = |d: &str| named(d, owners);
    let what = match &entry.text {
        Some(text) => {
            let shown: String = text.chars().take(24).collect();
            let more = if text.chars().count() > 24 { "…" } else { "" };
            format!(
                "insert {:?}{more} after {} before {}",
                shown,
                entry
                    .origin_left
                    .as_deref()
                    .map_or("the start".into(), name),
                entry.origin_right.as_deref().map_or("the end".into(), name),
            )
        }
        None => format!(
            "delete {} ({})",
            entry.len,
            entry
                .targets
                .iter()
                .map(|t| name(t))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    };
    let parents = if entry.parents.is_empty() {
        "none".into()
    } else {
        entry
            .parents
            .iter()
            .map(|p| name(p))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "#{} {what} by {} · parents {parents}",
        step.at,
        name(&entry.id)
    )
}

/// The text in rows of `width` (breaking at newlines too), each character marked when it is
/// one the step inserted; the row holding `pos`.
fn rows(step: &Step, width: usize) -> (Vec<Vec<(char, bool)>>, usize) {
    let inserted = match &step.entry {
        Some(entry) if entry.text.is_some() => entry.len as usize,
        _ => 0,
    };
    let pos = step.pos.unwrap_or(0);
    let mut rows = vec![Vec::new()];
    let mut pos_row = 0;
    for (i, c) in step.text.chars().enumerate() {
        if i == pos {
            pos_row = rows.len() - 1;
        }
        if c == '\n' {
            rows.push(Vec::new());
            continue;
        }
        if rows.last().is_some_and(|row| row.len() >= width) {
            rows.push(Vec::new());
        }
        let row = rows.last_mut().expect("one row at least");
        row.push((c, i >= pos && i < pos + inserted));
    }
    if pos >= step.text.chars().count() {
        pos_row = rows.len() - 1;
    }
    (rows, pos_row)
}

impl HistoryView {
    fn lines(app: &App, width: usize, height: usize) -> Vec<Line<'static>> {
        let Some(node) = app.selected_node() else {
            return vec![Line::raw("no node selected")];
        };
        let probed = app.probed.as_ref().filter(|p| p.probe.node == node.node.id);
        let step = match probed.map(|p| &p.answer) {
            None => return vec![Line::raw(format!("asking {}…", node.node.id))],
            Some(Err(e)) => return vec![Line::styled(e.clone(), Style::default().fg(Color::Red))],
            Some(Ok(answer)) => match serde_json::from_value::<Step>(answer.clone()) {
                Ok(step) => step,
                Err(e) => return vec![Line::raw(format!("an answer this view cannot read: {e}"))],
            },
        };
        let keys = Style::default().fg(Color::DarkGray);
        let mut lines = vec![Line::from(vec![
            Span::styled(
                if app.step.is_none() {
                    format!("latest: {} operations (following live)", step.of)
                } else {
                    format!("version {} of {}", step.at, step.of)
                },
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::styled(" · [ ] step · { } ten · . latest", keys),
        ])];
        let filled = (width * step.at).checked_div(step.of).unwrap_or(width);
        lines.push(Line::from(vec![
            Span::styled("█".repeat(filled), Style::default().fg(Color::Cyan)),
            Span::styled(
                "░".repeat(width - filled),
                Style::default().fg(Color::DarkGray),
            ),
        ]));
        for row in wrap_words(&describe(&step, &owners(app)), width, 2) {
            lines.push(Line::styled(row, Style::default().fg(Color::Yellow)));
        }
        let room = height.saturating_sub(lines.len());
        let (rows, pos_row) = rows(&step, width.max(10));
        // The rows around the change, the text's start when that fits.
        let first = pos_row
            .saturating_sub(room / 2)
            .min(rows.len().saturating_sub(room));
        let inserted = Style::default()
            .fg(Color::Black)
            .bg(Color::Green)
            .add_modifier(Modifier::BOLD);
        for row in rows.iter().skip(first).take(room) {
            let mut spans: Vec<Span<'static>> = Vec::new();
            for (mark, run) in row.chunk_by(|a, b| a.1 == b.1).map(|run| (run[0].1, run)) {
                let text: String = run.iter().map(|(c, _)| *c).collect();
                spans.push(if mark {
                    Span::styled(text, inserted)
                } else {
                    Span::raw(text)
                });
            }
            lines.push(Line::from(spans));
        }
        lines
    }
}

impl View for HistoryView {
    fn title(&self) -> &'static str {
        "history"
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let title = match app.selected_node() {
            Some(n) => format!(" history · {} ", n.node.id),
            None => " history ".into(),
        };
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        frame.render_widget(
            Paragraph::new(Self::lines(
                app,
                usize::from(inner.width),
                usize::from(inner.height),
            )),
            inner,
        );
    }

    fn wanted_rows(&self, _app: &App, _width: u16) -> Option<u16> {
        // The header, the bar, the operation, and a stretch of the text around the change:
        // full width, so a row of text is as long as it can be.
        Some(10)
    }

    fn probe(&self, app: &App) -> Option<Probe> {
        let node = app.selected_node()?;
        let at = app.step.map_or(String::new(), |at| format!("?at={at}"));
        Some(Probe {
            node: node.node.id.clone(),
            path: format!("/docs/{DOC}/step{at}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::app::Probed;
    use crate::console::fixture::{node, with_nodes};
    use crate::engine::model::Health;
    use crate::engine::supervisor::ProcessState;
    use ratatui_core::backend::TestBackend;
    use ratatui_core::terminal::Terminal;

    #[test]
    fn a_step_shows_the_operation_and_the_text_with_its_insertion_marked() {
        let mut s1 = node("s1", ProcessState::Running, Health::Responsive);
        s1.detail = serde_json::json!({"replica": 7});
        let mut app = with_nodes(vec![s1]);
        app.step = Some(2);
        assert_eq!(
            HistoryView.probe(&app),
            Some(Probe {
                node: "s1".into(),
                path: "/docs/notes/step?at=2".into()
            })
        );
        app.probed = Some(Probed {
            probe: HistoryView.probe(&app).unwrap(),
            answer: Ok(serde_json::json!({
                "at": 2, "of": 4, "pos": 6,
                "text": "hello brave\nnew world",
                "entry": {"index": 1, "id": "0000000000000007@5", "kind": "insert", "len": 6,
                    "parents": ["0000000000000007@4"], "origin_left": "0000000000000007@4",
                    "text": "brave\n"},
            })),
        });
        let mut terminal = Terminal::new(TestBackend::new(60, 8)).unwrap();
        terminal
            .draw(|f| HistoryView.render(&app, f, f.area()))
            .unwrap();
        let screen = terminal.backend().to_string();
        assert!(screen.contains("version 2 of 4"), "{screen}");
        assert!(
            screen.contains(r#"#2 insert "brave\n" after s1@4 before the end by s1@5"#),
            "{screen}"
        );
        assert!(screen.contains("hello brave"), "{screen}");
        assert!(screen.contains("new world"), "{screen}");
        let highlighted = terminal
            .backend()
            .buffer()
            .content
            .iter()
            .filter(|cell| cell.bg == Color::Green)
            .map(|cell| cell.symbol())
            .collect::<String>();
        assert_eq!(highlighted, "brave", "the inserted text is marked");
    }

    #[test]
    fn an_unreachable_replica_says_why() {
        let mut app = with_nodes(vec![node("e1", ProcessState::Down, Health::Down)]);
        app.probed = Some(Probed {
            probe: HistoryView.probe(&app).unwrap(),
            answer: Err("e1 is not running".into()),
        });
        let lines = HistoryView::lines(&app, 40, 5);
        assert_eq!(lines[0].to_string(), "e1 is not running");
    }
}
