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
use ratatui_widgets::table::{Cell, Row, Table};

use super::app::{App, HELP, Mode, NodeState};
use super::views::ProjectUi;
use crate::engine::events::EventKind;
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
    let [view, side] =
        Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(middle);
    if let Some(current) = ui.views.get(app.view % ui.views.len().max(1)) {
        current.render(app, frame, view);
    }
    if app.scenario.is_some() {
        let [scenario, timeline] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(side);
        draw_scenario(frame, app, scenario);
        draw_timeline(frame, app, timeline);
    } else {
        draw_timeline(frame, app, side);
    }
    draw_logs(frame, app, logs);
    draw_footer(frame, app, footer);
    if app.mode == Mode::Help {
        draw_help(frame, area);
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
    let tally = |state: NodeState, word: &str| {
        Span::styled(
            format!(" {}{} {word}", state_mark(state), count(state)),
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
        Progress::Done { passed: true } => "PASS".into(),
        Progress::Done { passed: false } => "FAIL".into(),
        Progress::Failed(_) => "ERROR".into(),
    }
}

fn draw_nodes(frame: &mut Frame, app: &App, ui: &ProjectUi, area: Rect) {
    let mut header = vec!["", "node", "role", "pid", "state", "uptime", "restarts"];
    // Narrow terminals get the short header.
    if area.width < 100 {
        header[6] = "rst";
    }
    header.extend(ui.figures.iter().map(|f| f.header));
    let rows = app.model.nodes.iter().enumerate().map(|(i, view)| {
        let state = NodeState::of(view);
        let selected = i == app.selected;
        let uptime = match (state, view.uptime_secs) {
            (NodeState::Down, _) | (_, None) => "-".to_string(),
            (_, Some(up)) => clock(up),
        };
        let mut cells = vec![
            Cell::from(if selected { "▶" } else { " " }),
            Cell::from(view.node.id.clone()),
            // A node that does not answer shows its last role in parentheses: what it was.
            Cell::from(match (view.live_role(), &view.role) {
                (Some(role), _) => role.to_string(),
                (None, Some(last)) => format!("({last})"),
                (None, None) => view.node.role.to_string(),
            }),
            Cell::from(view.node.pid.map_or("-".into(), |p| p.to_string())),
            Cell::from(Span::styled(
                format!("{} {}", state_mark(state), state.name()),
                state_style(state),
            )),
            Cell::from(uptime),
            Cell::from(view.node.restarts.to_string()),
        ];
        // A down node has no figures: its last ones would read as current.
        cells.extend(ui.figures.iter().map(|f| match state {
            NodeState::Down => Cell::from("-"),
            _ => Cell::from((f.value)(view)),
        }));
        let row = Row::new(cells);
        if selected {
            row.style(Style::default().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    });
    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(6),
        Constraint::Length(11), // "(candidate)"
        Constraint::Length(7),
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Length(header[6].len() as u16),
    ];
    widths.extend(
        ui.figures
            .iter()
            .map(|f| Constraint::Length(f.header.len().max(6) as u16)),
    );
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::default().borders(Borders::ALL).title(" nodes "));
    frame.render_widget(table, area);
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
    // Keep the current step in sight.
    let height = area.height.saturating_sub(2) as usize;
    let focus = current.unwrap_or(lines.len().saturating_sub(1));
    let skip = (focus + 1).saturating_sub(height);
    let lines: Vec<Line> = lines.into_iter().skip(skip).collect();
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" scenario {} ", scenario.name)),
        ),
        area,
    );
}

fn draw_timeline(frame: &mut Frame, app: &App, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = app
        .events
        .iter()
        .rev()
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
    frame.render_widget(
        Paragraph::new(lines).block(
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

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let [keys, message] =
        Layout::vertical([Constraint::Length(2), Constraint::Length(1)]).areas(area);
    let key_style = Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED);
    let mut spans = Vec::new();
    match &app.mode {
        Mode::Palette(line) => spans.push(Span::raw(format!(":{line}▏  "))),
        Mode::ConfirmQuit => spans.push(Span::styled(
            "quit? the cluster will be stopped  ",
            Style::default().add_modifier(Modifier::BOLD),
        )),
        _ => {}
    }
    if app.stopping {
        spans = vec![Span::styled(
            "stopping the cluster…",
            Style::default().add_modifier(Modifier::BOLD),
        )];
    } else {
        for (key, what) in app.footer_keys() {
            spans.push(Span::styled(format!(" {key} "), key_style));
            spans.push(Span::raw(format!(" {what}  ")));
        }
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).wrap(Wrap { trim: false }),
        keys,
    );
    if let Some(m) = &app.message {
        let style = if m.error {
            Style::default().fg(Color::Red)
        } else {
            Style::default()
        };
        let prefix = if m.error { "error: " } else { "" };
        frame.render_widget(
            Paragraph::new(format!("{prefix}{}", m.text)).style(style),
            message,
        );
    }
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
                "wait AllUp".into(),
            ],
            progress: Progress::Step(2),
            verdicts: Vec::new(),
        });
        insta::assert_snapshot!(render(&app, 120, 36));

        app.scenario.as_mut().unwrap().progress = Progress::Done { passed: false };
        app.scenario.as_mut().unwrap().verdicts = vec![
            ("linearizable: 512 ops, valid".into(), true),
            ("applied-once: k3 version 4 written twice".into(), false),
        ];
        let screen = render(&app, 120, 36);
        assert!(screen.contains("FAIL applied-once"), "{screen}");
        assert!(screen.contains("scenario FAIL"), "{screen}");
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
