//! `lab run` with no project: instead of a usage error, a list to pick from. Each project with
//! its one-line title, and under it its shipped scenarios with what they show; Enter on a
//! project opens the console on it, Enter on a scenario plays that scenario in the console.
//! The state and keys are plain data (tested without a terminal); [`choose`] runs them on the
//! terminal.

use std::path::PathBuf;

use ratatui_core::layout::Rect;
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_crossterm::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;

use crate::engine::project::{self, Project};
use crate::engine::scenario;

/// What the user picked: a project by name, or a scenario file and its project.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Project(&'static str),
    Scenario(&'static str, PathBuf),
    Quit,
}

/// One row of the list.
#[derive(Debug, Clone)]
enum Row {
    Project(&'static Project),
    Scenario {
        project: &'static Project,
        file: PathBuf,
        name: String,
        description: String,
    },
}

/// The list and the selection.
#[derive(Debug, Clone)]
pub struct Chooser {
    rows: Vec<Row>,
    selected: usize,
}

impl Chooser {
    /// Every project, each followed by the shipped scenarios (in `dir`) written for it.
    pub fn new(dir: &std::path::Path) -> Self {
        let scenarios: Vec<(PathBuf, scenario::Validated)> = crate::headless::scenarios_in(dir)
            .into_iter()
            .filter_map(|(file, loaded)| Some((file, loaded.ok()?)))
            .collect();
        let mut rows = Vec::new();
        for project in project::all() {
            rows.push(Row::Project(project));
            for (file, v) in scenarios
                .iter()
                .filter(|(_, v)| v.project.name == project.name)
            {
                rows.push(Row::Scenario {
                    project,
                    file: file.clone(),
                    name: v.scenario.name.clone(),
                    description: v.scenario.description.clone(),
                });
            }
        }
        Self { rows, selected: 0 }
    }

    /// What a key does: moves the selection, or picks.
    pub fn on_key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> Option<Choice> {
        let last = self.rows.len().saturating_sub(1);
        match code {
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Some(Choice::Quit),
            KeyCode::Char('q') | KeyCode::Esc => Some(Choice::Quit),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(last);
                None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                None
            }
            // Tab jumps between projects.
            KeyCode::Tab => {
                let next = self.rows[self.selected + 1..]
                    .iter()
                    .position(|r| matches!(r, Row::Project(_)))
                    .map_or(0, |i| self.selected + 1 + i);
                self.selected = next;
                None
            }
            KeyCode::Enter => self.rows.get(self.selected).map(|row| match row {
                Row::Project(p) => Choice::Project(p.name),
                Row::Scenario { project, file, .. } => Choice::Scenario(project.name, file.clone()),
            }),
            _ => None,
        }
    }

    pub fn draw(&self, frame: &mut Frame, area: Rect) {
        let block = Block::default()
            .borders(Borders::ALL)
            .title(" distlab: pick a project, or one of its scenarios ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let mut lines: Vec<Line> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let mark = if i == self.selected { "▶ " } else { "  " };
                let mut line = match row {
                    Row::Project(p) => Line::from(vec![
                        Span::raw(mark),
                        Span::styled(
                            format!("{:<7}", p.name),
                            Style::default().add_modifier(Modifier::BOLD),
                        ),
                        Span::raw(p.title),
                    ]),
                    Row::Scenario {
                        name, description, ..
                    } => Line::from(vec![
                        Span::raw(mark),
                        Span::raw(format!("    {name:<34}")),
                        Span::styled(description.clone(), Style::default().fg(Color::DarkGray)),
                    ]),
                };
                if i == self.selected {
                    line = line.style(Style::default().add_modifier(Modifier::REVERSED));
                }
                line
            })
            .collect();
        let help = Line::styled(
            "↑/↓ or j/k move · Tab next project · Enter open the console on it · q quit",
            Style::default().fg(Color::DarkGray),
        );
        // Keep the selection in sight, the help line at the bottom.
        let height = usize::from(inner.height).saturating_sub(2).max(1);
        let skip = (self.selected + 1).saturating_sub(height);
        lines = lines.into_iter().skip(skip).take(height).collect();
        lines.push(Line::raw(""));
        lines.push(help);
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// Shows the chooser on the terminal until the user picks.
pub fn choose(dir: &std::path::Path) -> anyhow::Result<Choice> {
    let mut chooser = Chooser::new(dir);
    let guard = super::terminal::Guard::enter()?;
    let backend = ratatui_crossterm::CrosstermBackend::new(std::io::stdout());
    let mut terminal = ratatui_core::terminal::Terminal::new(backend)?;
    let choice = loop {
        terminal.draw(|frame| chooser.draw(frame, frame.area()))?;
        match event::read()? {
            Event::Key(key) if key.kind != KeyEventKind::Release => {
                if let Some(choice) = chooser.on_key(key.code, key.modifiers) {
                    break choice;
                }
            }
            Event::Resize(..) => terminal.autoresize()?,
            _ => {}
        }
    };
    drop(terminal);
    drop(guard);
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui_core::backend::TestBackend;
    use ratatui_core::terminal::Terminal;

    fn chooser() -> Chooser {
        Chooser::new(&crate::headless::scenarios_dir())
    }

    #[test]
    fn every_project_is_listed_with_its_scenarios_and_enter_picks() {
        let mut c = chooser();
        let projects: Vec<&str> = c
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Project(p) => Some(p.name),
                _ => None,
            })
            .collect();
        let all: Vec<&str> = project::all().map(|p| p.name).collect();
        assert_eq!(projects, all);
        assert_eq!(
            c.on_key(KeyCode::Enter, KeyModifiers::NONE),
            Some(Choice::Project("proj0"))
        );
        // The row under a project is one of its scenarios.
        c.on_key(KeyCode::Down, KeyModifiers::NONE);
        match c.on_key(KeyCode::Enter, KeyModifiers::NONE) {
            Some(Choice::Scenario(p, file)) => {
                assert_eq!(p, "proj0");
                assert!(file.to_string_lossy().contains("proj0-"), "{file:?}");
            }
            other => panic!("{other:?}"),
        }
        c.on_key(KeyCode::Tab, KeyModifiers::NONE);
        assert_eq!(
            c.on_key(KeyCode::Enter, KeyModifiers::NONE),
            Some(Choice::Project("proj1"))
        );
        assert_eq!(
            c.on_key(KeyCode::Char('q'), KeyModifiers::NONE),
            Some(Choice::Quit)
        );
    }

    #[test]
    fn the_list_keeps_the_selection_in_sight() {
        let mut c = chooser();
        for _ in 0..c.rows.len() {
            c.on_key(KeyCode::Down, KeyModifiers::NONE);
        }
        let mut terminal = Terminal::new(TestBackend::new(100, 12)).unwrap();
        terminal.draw(|f| c.draw(f, f.area())).unwrap();
        let screen = terminal.backend().to_string();
        assert!(screen.contains("▶ "), "{screen}");
        let last = c.rows.last().unwrap();
        let shown = match last {
            Row::Project(p) => p.name.to_string(),
            Row::Scenario { name, .. } => name.clone(),
        };
        assert!(screen.contains(&shown), "the last row, {shown}: {screen}");
        assert!(screen.contains("Enter open the console"), "{screen}");
    }
}
