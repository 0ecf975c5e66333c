//! Drawing the console from the [`App`] state: header, node table, the project's view pane,
//! the scenario pane and the event timeline, the selected node's log, and the footer with the
//! keys valid now. Colors are the terminal's own named colors (readable on dark and light
//! themes), and every state also has a word or a glyph, so nothing is told by color alone.

use ratatui_core::layout::{Constraint, Layout, Rect};
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::clear::Clear;
use ratatui_widgets::paragraph::{Paragraph, Wrap};
use ratatui_widgets::table::{Cell, Row, Table, TableState};

use super::app::{App, HELP, Mode, NodeState};
use super::views::{Figure, ProjectUi};
use crate::engine::events::{Event, EventKind};
use crate::engine::model::NodeView;
use crate::engine::runner::Progress;

/// Below this the console says the terminal is too small instead of drawing.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn draw(frame: &mut Frame, app: &App, ui: &ProjectUi) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    let table_height = (app.model.nodes.len() as u16 + 3).min(area.height / 2 - 4);
    let [header, table, middle, logs, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_height),
        Constraint::Min(8),
        Constraint::Length((area.height / 5).max(4)),
        Constraint::Length(3),
    ])
    .areas(area);
    draw_header(frame, app, header);
    draw_nodes(frame, app, ui, table);
    draw_middle(frame, app, ui, middle);
    draw_logs(frame, app, logs);
    draw_footer(frame, app, footer);
    if app.mode == Mode::Help {
        draw_help(frame, area);
    }
}

/// Rows a timeline (with its border) needs at the least to be worth drawing under a view.
const TIMELINE_MIN_ROWS: u16 = 5;

/// The project's view, the timeline, and the scenario pane if one plays. A view that needs a
/// fixed number of rows gets them at full width, with the timeline (and the scenario) under
/// it, so timeline entries read on one line; a view that fills its space (or one that would
/// leave the timeline too little) sits beside them, and their entries wrap.
fn draw_middle(frame: &mut Frame, app: &App, ui: &ProjectUi, middle: Rect) {
    let current = ui.views.get(app.view % ui.views.len().max(1));
    let wanted = current
        .and_then(|v| v.wanted_rows(app, middle.width.saturating_sub(2)))
        .map(|rows| rows + 2);
    let (view, rest, stacked) = match wanted {
        Some(rows) if rows + TIMELINE_MIN_ROWS <= middle.height => {
            let [view, rest] =
                Layout::vertical([Constraint::Length(rows), Constraint::Fill(1)]).areas(middle);
            (view, rest, true)
        }
        _ => {
            let [view, rest] =
                Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)])
                    .areas(middle);
            (view, rest, false)
        }
    };
    if let Some(current) = current {
        current.render(app, frame, view);
    }
    match (app.scenario.is_some(), stacked) {
        (false, _) => draw_timeline(frame, app, ui, rest),
        (true, true) => {
            let [timeline, scenario] =
                Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)])
                    .areas(rest);
            draw_timeline(frame, app, ui, timeline);
            draw_scenario(frame, app, scenario);
        }
        (true, false) => {
            let [scenario, timeline] =
                Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)])
                    .areas(rest);
            draw_scenario(frame, app, scenario);
            draw_timeline(frame, app, ui, timeline);
        }
    }
}

/// The style of a node state: a named color, and bold for the states that need attention.
pub fn state_style(state: NodeState) -> Style {
    match state {
        NodeState::Running => Style::default().fg(Color::Green),
        NodeState::Paused => Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
        NodeState::Unresponsive => Style::default()
            .fg(Color::Magenta)
            .add_modifier(Modifier::BOLD),
        NodeState::Down => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// A glyph per state for the node table.
fn state_mark(state: NodeState) -> &'static str {
    match state {
        NodeState::Running => "●",
        NodeState::Paused => "‖",
        NodeState::Unresponsive => "?",
        NodeState::Down => "✕",
    }
}

fn too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from("terminal too small"),
        Line::from(format!(
            "{}x{} here; the console needs at least {MIN_WIDTH}x{MIN_HEIGHT}",
            area.width, area.height
        )),
        Line::from("enlarge the window, or q to quit"),
    ];
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
}

fn clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let count = |s: NodeState| {
        app.model
            .nodes
            .iter()
            .filter(|n| NodeState::of(n) == s)
            .count()
    };
    let sep = || Span::raw(" │ ");
    // Below 100 columns the tallies are glyphs and numbers only, so the load still fits.
    let narrow = area.width < 100;
    let tally = |state: NodeState, word: &str| {
        let word = if narrow {
            String::new()
        } else {
            format!(" {word}")
        };
        Span::styled(
            format!(" {}{}{word}", state_mark(state), count(state)),
            state_style(state),
        )
    };
    let mut spans = vec![
        Span::styled(
            format!(" distlab {} ", app.project.name),
            Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ),
        tally(NodeState::Running, "up"),
        tally(NodeState::Paused, "paused"),
        tally(NodeState::Unresponsive, "unresp"),
        tally(NodeState::Down, "down"),
        sep(),
        Span::raw(clock(app.model.elapsed_secs)),
    ];
    if let Some(scenario) = &app.scenario {
        spans.push(sep());
        spans.push(Span::styled(
            format!(
                "scenario {}",
                progress_text(&scenario.progress, scenario.steps.len())
            ),
            Style::default().add_modifier(Modifier::BOLD),
        ));
    }
    if app.recording.is_some() {
        spans.push(sep());
        spans.push(Span::styled(
            "● REC",
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    spans.push(sep());
    if app.load.running {
        let rate = if app.load.rate > 0.0 {
            format!("{}/s", app.load.rate)
        } else {
            "max".to_string()
        };
        spans.push(Span::raw(format!(
            "load {rate}: ok {}/s err {}/s",
            app.load.ok_per_sec, app.load.err_per_sec
        )));
    } else {
        spans.push(Span::raw("load off"));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn progress_text(progress: &Progress, steps: usize) -> String {
    match progress {
        Progress::Step(i) => format!("step {}/{steps}", i + 1),
        Progress::Recovery => "recovery".into(),
        Progress::Checking => "checking".into(),
        Progress::Done { outcome } => outcome.word().into(),
        Progress::Failed(_) => "ERROR".into(),
    }
}

/// The node table. Below 100 columns it drops pid and uptime, and the project's figures that
/// do not fit are left out from the last, so no column is cut mid-word; when the table has
/// fewer rows than nodes, it scrolls to keep the selected node in sight.
fn draw_nodes(frame: &mut Frame, app: &App, ui: &ProjectUi, area: Rect) {
    let narrow = area.width < 100;
    // (header, width, cell) for the columns every project has.
    type Column = (&'static str, u16, fn(&NodeView, NodeState) -> Cell<'static>);
    let mut columns: Vec<Column> = vec![
        ("node", 6, |v, _| Cell::from(v.node.id.clone())),
        // A node that does not answer shows its last role in parentheses: what it was.
        ("role", 11, |v, _| {
            Cell::from(match (v.live_role(), &v.role) {
                (Some(role), _) => role.to_string(),
                (None, Some(last)) => format!("({last})"),
                (None, None) => v.node.role.to_string(),
            })
        }),
        ("pid", 7, |v, _| {
            Cell::from(v.node.pid.map_or("-".into(), |p| p.to_string()))
        }),
        ("state", 14, |_, state| {
            Cell::from(Span::styled(
                format!("{} {}", state_mark(state), state.name()),
                state_style(state),
            ))
        }),
        ("uptime", 7, |v, state| {
            Cell::from(match (state, v.uptime_secs) {
                (NodeState::Down, _) | (_, None) => "-".to_string(),
                (_, Some(up)) => clock(up),
            })
        }),
        ("restarts", 8, |v, _| {
            Cell::from(v.node.restarts.to_string())
        }),
    ];
    // The node column fits the longest id (`ledger1`, `consumer2`), the role column the
    // longest role (`orchestrator`, and its parentheses when the node does not answer).
    let longest = app.model.nodes.iter().map(|n| n.node.id.len()).max();
    columns[0].1 = longest.map_or(6, |l| (l as u16).max(6));
    let longest_role = app
        .model
        .nodes
        .iter()
        .map(|n| n.role.as_ref().map_or(n.node.role.len(), |r| r.len() + 2))
        .max();
    columns[1].1 = longest_role.map_or(11, |l| (l as u16).clamp(11, 16));
    if narrow {
        columns.retain(|(header, ..)| !["pid", "uptime"].contains(header));
        if let Some(restarts) = columns.iter_mut().find(|c| c.0 == "restarts") {
            *restarts = ("rst", 3, restarts.2);
        }
    }
    // Borders, the selection mark, and each column with the space after it.
    let mut used = 2 + 1 + columns.iter().map(|c| c.1 + 1).sum::<u16>();
    let figures: Vec<&Figure> = ui
        .figures
        .iter()
        .take_while(|f| {
            let width = f.header.len().max(6) as u16 + 1;
            used += width;
            used <= area.width
        })
        .collect();
    let rows = app.model.nodes.iter().map(|view| {
        let state = NodeState::of(view);
        let mut cells: Vec<Cell> = columns
            .iter()
            .map(|(_, _, cell)| cell(view, state))
            .collect();
        // A down node has no figures: its last ones would read as current.
        cells.extend(figures.iter().map(|f| match state {
            NodeState::Down => Cell::from("-"),
            _ => Cell::from((f.value)(view)),
        }));
        Row::new(cells)
    });
    let mut header: Vec<&str> = columns.iter().map(|c| c.0).collect();
    header.extend(figures.iter().map(|f| f.header));
    let mut widths: Vec<Constraint> = columns.iter().map(|c| Constraint::Length(c.1)).collect();
    widths.extend(
        figures
            .iter()
            .map(|f| Constraint::Length(f.header.len().max(6) as u16)),
    );
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("▶")
        .block(Block::default().borders(Borders::ALL).title(" nodes "));
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_scenario(frame: &mut Frame, app: &App, area: Rect) {
    let Some(scenario) = &app.scenario else {
        return;
    };
    let current = match scenario.progress {
        Progress::Step(i) => Some(i),
        _ => None,
    };
    let finished = !matches!(scenario.progress, Progress::Step(_));
    let mut lines: Vec<Line> = scenario
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let (mark, style) = match current {
                Some(c) if i == c => ("▶", Style::default().add_modifier(Modifier::REVERSED)),
                Some(c) if i < c => ("✓", Style::default()),
                None if finished => ("✓", Style::default()),
                _ => (" ", Style::default().add_modifier(Modifier::DIM)),
            };
            Line::styled(format!("{mark} {}. {step}", i + 1), style)
        })
        .collect();
    match &scenario.progress {
        Progress::Recovery => lines.push(Line::from("▶ recovery: heal, resume, restart")),
        Progress::Checking => lines.push(Line::from("▶ checking the history")),
        Progress::Failed(e) => lines.push(Line::styled(
            format!("ERROR: {e}"),
            Style::default().fg(Color::Red),
        )),
        _ => {}
    }
    for (text, ok) in &scenario.verdicts {
        lines.push(Line::styled(
            format!("{} {text}", if *ok { "PASS" } else { "FAIL" }),
            Style::default()
                .fg(if *ok { Color::Green } else { Color::Red })
                .add_modifier(Modifier::BOLD),
        ));
    }
    // Long steps and verdicts wrap; the first lines give way so the current step (or, once
    // the scenario is over, the last verdict) stays in sight.
    let height = area.height.saturating_sub(2) as usize;
    let width = usize::from(area.width.saturating_sub(2)).max(1);
    let rows = |line: &Line| line.width().div_ceil(width).max(1);
    let focus = current.unwrap_or(lines.len().saturating_sub(1));
    let mut skip = 0;
    while skip < focus && lines[skip..=focus].iter().map(rows).sum::<usize>() > height {
        skip += 1;
    }
    let lines: Vec<Line> = lines.into_iter().skip(skip).collect();
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" scenario {} ", scenario.name)),
        ),
        area,
    );
}

fn draw_timeline(frame: &mut Frame, app: &App, ui: &ProjectUi, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let quiet = |e: &&Event| {
        e.kind == EventKind::NodeEvent
            && ui
                .quiet_events
                .iter()
                .any(|q| e.what.split(':').next() == Some(q))
    };
    let lines: Vec<Line> = app
        .events
        .iter()
        .rev()
        .filter(|e| !quiet(e))
        .take(height)
        .map(|e| {
            let (tag, style) = match e.kind {
                EventKind::Fault => ("fault", Style::default().fg(Color::Yellow)),
                EventKind::NodeCrashed => (
                    "crash",
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                ),
                EventKind::NodeStopped => ("exit ", Style::default().fg(Color::Red)),
                EventKind::NodeUp => ("up   ", Style::default().fg(Color::Green)),
                EventKind::NodeEvent => ("node ", Style::default().fg(Color::Cyan)),
                EventKind::Note => ("note ", Style::default()),
            };
            let first_line = e.what.lines().next().unwrap_or_default();
            Line::from(vec![
                Span::raw(format!("{:>6.1}s ", e.t)),
                Span::styled(tag, style),
                Span::raw(format!(
                    " {}{first_line}",
                    e.node
                        .as_deref()
                        .map(|n| format!("{n} "))
                        .unwrap_or_default()
                )),
            ])
        })
        .collect();
    // An entry longer than the pane wraps (the node and what happened are never cut off);
    // the oldest entries shown run off the bottom.
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" timeline (newest first) "),
        ),
        area,
    );
}

/// A JSON log line made readable: `12:00:01.123 INFO  event message key=value...`.
pub fn readable_log(line: &str) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line)
    else {
        return line.to_string();
    };
    let text = |key: &str| fields.get(key).and_then(|v| v.as_str()).unwrap_or_default();
    let time = text("timestamp");
    let time = time
        .split_once('T')
        .map_or(time, |(_, t)| t.trim_end_matches('Z'));
    let time = time.get(..12).unwrap_or(time);
    let mut out = if time.is_empty() {
        format!("{:<18}", "")
    } else {
        format!("{time} {:<5}", text("level"))
    };
    if !text("event").is_empty() {
        out += &format!(" {}", text("event"));
    }
    if !text("message").is_empty() {
        out += &format!(" {}", text("message"));
    }
    for (key, value) in &fields {
        if ["timestamp", "level", "event", "message", "target"].contains(&key.as_str()) {
            continue;
        }
        match value {
            serde_json::Value::String(s) => out += &format!(" {key}={s}"),
            other => out += &format!(" {key}={other}"),
        }
    }
    out
}

fn draw_logs(frame: &mut Frame, app: &App, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let visible = app.visible_logs();
    let lines: Vec<Line> = visible
        .iter()
        .skip(visible.len().saturating_sub(height))
        .map(|l| Line::from(readable_log(l)))
        .collect();
    let filter = match &app.mode {
        Mode::Filter(typing) => format!(" /{typing}▏"),
        _ if !app.log_filter.is_empty() => format!(" /{}", app.log_filter),
        _ => String::new(),
    };
    let title = match app.selected_node() {
        Some(n) => format!(" log {}{filter} ", n.node.id),
        None => " log ".to_string(),
    };
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

/// The footer's three rows: the keys valid now (two rows; one when a message needs two), and
/// what the last command did. A key is never split from its label: keys that do not fit are
/// left out, the least used last in the list (`?` lists them all).
fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let message = app.message.as_ref().map(|m| {
        let text = if m.error {
            format!("error: {}", m.text)
        } else {
            m.text.clone()
        };
        (text, m.error)
    });
    let message_rows = match &message {
        Some((text, _)) if text.chars().count() > usize::from(area.width) => 2,
        _ => 1,
    };
    let [keys, message_area] = Layout::vertical([
        Constraint::Length(area.height.saturating_sub(message_rows)),
        Constraint::Length(message_rows),
    ])
    .areas(area);
    let key_style = Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED);
    let lead = match &app.mode {
        Mode::Palette(line) => Some(Span::raw(format!(":{line}▏  "))),
        Mode::ConfirmQuit => Some(Span::styled(
            "quit? the cluster will be stopped  ",
            Style::default().add_modifier(Modifier::BOLD),
        )),
        _ => None,
    };
    let lines = if app.stopping {
        vec![Line::styled(
            "stopping the cluster…",
            Style::default().add_modifier(Modifier::BOLD),
        )]
    } else {
        let entries: Vec<Vec<Span>> = app
            .footer_keys()
            .iter()
            .map(|(key, what)| {
                vec![
                    Span::styled(format!(" {key} "), key_style),
                    Span::raw(format!(" {what}  ")),
                ]
            })
            .collect();
        pack(lead, entries, keys.width, keys.height)
    };
    frame.render_widget(Paragraph::new(lines), keys);
    if let Some((text, error)) = message {
        let style = if error {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        };
        frame.render_widget(
            Paragraph::new(text).style(style).wrap(Wrap { trim: false }),
            message_area,
        );
    }
}

/// Lays `entries` (each a few spans that stay together) into at most `rows` lines of `width`,
/// after `lead`; entries that do not fit are left out.
fn pack<'a>(
    lead: Option<Span<'a>>,
    entries: Vec<Vec<Span<'a>>>,
    width: u16,
    rows: u16,
) -> Vec<Line<'a>> {
    let width = usize::from(width);
    let mut lines: Vec<Vec<Span>> = vec![lead.into_iter().collect()];
    let used = |line: &[Span]| {
        line.iter()
            .map(|s| s.content.chars().count())
            .sum::<usize>()
    };
    for entry in entries {
        let size: usize = used(&entry);
        let last = lines.last_mut().expect("one line at least");
        if used(last) + size.min(width) <= width {
            last.extend(entry);
        } else if lines.len() < usize::from(rows) {
            lines.push(entry);
        }
    }
    lines.into_iter().map(Line::from).collect()
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = 72.min(area.width);
    let height = (HELP.len() as u16 + 4).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(key, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{key:>14}  "),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" keys (any key closes) "),
        ),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::app::{Message, ScenarioPane};
    use crate::console::fixture;
    use ratatui_core::backend::TestBackend;
    use ratatui_core::terminal::Terminal;

    fn render(app: &App, width: u16, height: u16) -> String {
        let ui = super::super::views::for_project(app.project);
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app, &ui)).unwrap();
        terminal.backend().to_string()
    }

    #[test]
    fn the_console_with_running_paused_down_and_unresponsive_nodes() {
        insta::assert_snapshot!(render(&fixture::app(), 120, 36));
    }

    #[test]
    fn the_smallest_console() {
        insta::assert_snapshot!(render(&fixture::app(), 80, 24));
    }

    #[test]
    fn too_small_says_so() {
        let screen = render(&fixture::app(), 79, 30);
        assert!(screen.contains("terminal too small"), "{screen}");
        assert!(screen.contains("at least 80x24"), "{screen}");
        insta::assert_snapshot!(render(&fixture::app(), 60, 10));
    }

    #[test]
    fn help_lists_every_key() {
        let mut app = fixture::app();
        app.mode = Mode::Help;
        insta::assert_snapshot!(render(&app, 120, 36));
    }

    #[test]
    fn the_palette_shows_the_line_and_the_error() {
        let mut app = fixture::app();
        app.mode = Mode::Palette("partiton n1 | n2".into());
        app.message = Some(Message {
            text: "unknown command \"partiton\"; did you mean partition?".into(),
            error: true,
        });
        let screen = render(&app, 120, 36);
        assert!(screen.contains(":partiton n1 | n2"), "{screen}");
        assert!(screen.contains("error: unknown command"), "{screen}");
        assert!(screen.contains("Tab  complete"), "{screen}");
    }

    #[test]
    fn a_scenario_in_play_highlights_its_step() {
        let mut app = fixture::app();
        app.recording = Some("demo.cast".into());
        app.scenario = Some(ScenarioPane {
            name: "proj0-crash-restart".into(),
            steps: vec![
                "sleep 1s".into(),
                "kill n1".into(),
                "restart n1".into(),
                "wait all_up".into(),
            ],
            progress: Progress::Step(2),
            verdicts: Vec::new(),
        });
        insta::assert_snapshot!(render(&app, 120, 36));

        app.scenario.as_mut().unwrap().progress = Progress::Done {
            outcome: crate::engine::runner::Outcome::Fail,
        };
        app.scenario.as_mut().unwrap().verdicts = vec![
            ("linearizable: 512 ops, valid".into(), true),
            ("applied-once: k3 version 4 written twice".into(), false),
            (
                "availability: 100.0% of operations answered (required: 30.0%)".into(),
                true,
            ),
        ];
        let screen = render(&app, 120, 36);
        assert!(screen.contains("FAIL applied-once"), "{screen}");
        assert!(
            screen.contains("(required: 30.0%)"),
            "a long verdict wraps whole: {screen}"
        );
        assert!(screen.contains("scenario FAIL"), "{screen}");
    }

    /// At the smallest size, a long palette error wraps over two rows and is read whole, and
    /// the footer keeps each key beside its label, `L` among the first.
    #[test]
    fn the_footer_keeps_keys_with_labels_and_long_errors_whole() {
        let mut app = fixture::app();
        let screen = render(&app, 80, 24);
        let footer: Vec<&str> = screen.lines().rev().take(3).collect();
        assert!(footer.iter().any(|l| l.contains(" L  leader")), "{screen}");
        for line in &footer {
            let line = line.trim_matches('"').trim_end();
            assert!(
                !line.ends_with(" l") && !line.ends_with(" r") && !line.ends_with(" K"),
                "a key without its label: {line:?}"
            );
        }
        let error = "nemesis \"kill,pause 30s every\" is not FAULTS DURATION [every D]; usage: nemesis FAULTS DURATION [every D] (e.g. nemesis kill,pause 30s)";
        app.mode = Mode::Palette("nemesis kill,pause 30s every".into());
        app.message = Some(Message {
            text: error.into(),
            error: true,
        });
        let screen = render(&app, 80, 24);
        let bottom: String = screen
            .lines()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|l| l.trim_matches('"').trim_end())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(bottom.contains("(e.g. nemesis kill,pause 30s)"), "{screen}");
        assert!(bottom.starts_with("error: nemesis"), "{screen}");
        assert!(screen.contains(":nemesis kill,pause 30s every"), "{screen}");
    }

    /// Eight nodes at 80x24: the table has rows for fewer, scrolls to the selected node, and
    /// keeps every column whole (pid and uptime give way, then figures).
    #[test]
    fn the_node_table_keeps_the_selected_node_in_sight() {
        use crate::engine::model::Health;
        use crate::engine::supervisor::ProcessState;
        let nodes = (1..=8)
            .map(|i| fixture::node(&format!("n{i}"), ProcessState::Running, Health::Responsive))
            .collect();
        let mut app = fixture::with_nodes(nodes);
        app.selected = 7;
        let screen = render(&app, 80, 24);
        assert!(screen.contains("▶n8"), "{screen}");
        assert!(screen.contains("● running"), "{screen}");
        assert!(!screen.contains("uptime"), "{screen}");
        assert!(screen.contains("●8 ‖0 ?0 ✕0 │"), "short tallies: {screen}");
    }

    #[test]
    fn json_log_lines_read_like_log_lines() {
        assert_eq!(
            readable_log(
                r#"{"timestamp":"2026-11-24T03:02:19.223892Z","level":"INFO","message":"serving","event":"node_started","id":"n1","target":"x"}"#
            ),
            "03:02:19.223 INFO  node_started serving id=n1"
        );
        assert_eq!(readable_log("plain text"), "plain text");
    }
}
