//! The task board: the coordinator's jobs, each task a cell coloured by its state, the workers
//! with their heartbeat age and current task, the newest job's task runtimes as a histogram,
//! and the coordinator's recent decisions from the timeline.
//!
//! ```text
//! queue 5 · 12 jobs done, 0 failed · 1 late completion refused
//! job name          state    map                 reduce time   shuffle backups lost local
//!   6 wordcount-6   done     ████████████        ███    4.2s   1.1 MB  1 (1)   0    62%
//!   7 indexer-7     running  ███12·3·····        ···    1.3s   -       0       0    50%
//! worker  heartbeat  running
//! w1      120 ms     job 7 map task 5
//! job 6 map ms   40 ▁▂█▅▂▁  ▁  900   reduce ms 300 ▂█▂ 700
//! ```
//! Cells: `·` idle, the worker's number while one attempt runs, `B` with a backup running,
//! `█` done, `✗` failed; a task whose output was lost and re-run is cyan.

use ratatui_core::layout::{Constraint, Layout, Rect};
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;

use distlab_batch::board::{Board, Cell, CellState, JobBoard};

use crate::console::app::{App, NodeState};
use crate::console::views::{View, recent_events};

pub struct BoardView;

/// The coordinator's decisions the view lists.
const EVENTS: &[&str] = &[
    "job_",
    "worker_",
    "backup_launched",
    "map_output",
    "completion_refused",
    "task_failed",
    "coordinator_recovered",
];

/// Jobs shown at most.
const JOBS: usize = 4;

/// The board the coordinator last reported, and whether it is down now.
fn board(app: &App) -> Option<Board> {
    board_and_state(app).map(|(b, _)| b)
}

fn board_and_state(app: &App) -> Option<(Board, bool)> {
    let coordinator = app
        .model
        .nodes
        .iter()
        .find(|n| n.node.role == "coordinator")?;
    let board = serde_json::from_value(coordinator.detail.clone()).ok()?;
    Some((board, NodeState::of(coordinator) != NodeState::Running))
}

fn cell_span(cell: &Cell) -> Span<'static> {
    let rerun = cell.reruns > 0;
    let (text, color) = match cell.state {
        CellState::Idle => ("·".to_string(), Color::DarkGray),
        CellState::Running => (
            cell.workers
                .first()
                .and_then(|w| {
                    w.trim_start_matches(|c: char| !c.is_ascii_digit())
                        .chars()
                        .last()
                })
                .map_or("?".to_string(), |c| c.to_string()),
            Color::Yellow,
        ),
        CellState::Backup => ("B".to_string(), Color::Magenta),
        CellState::Done => ("█".to_string(), Color::Green),
        CellState::Failed => ("✗".to_string(), Color::Red),
    };
    let color = if rerun && cell.state != CellState::Failed {
        Color::Cyan
    } else {
        color
    };
    Span::styled(text, Style::default().fg(color))
}

fn bytes(n: u64) -> String {
    if n == 0 {
        "-".into()
    } else if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{} KB", n.div_ceil(1024))
    }
}

/// The task cells of one phase, cut to `width` (a `…` says there are more).
fn cells(tasks: &[Cell], width: usize) -> Vec<Span<'static>> {
    let mut spans: Vec<Span> = tasks.iter().take(width).map(cell_span).collect();
    if tasks.len() > width && width > 0 {
        spans.pop();
        spans.push(Span::raw("…"));
    }
    let shown = tasks.len().min(width);
    spans.push(Span::raw(" ".repeat(width.saturating_sub(shown) + 1)));
    spans
}

fn job_line(job: &JobBoard, map_width: usize, reduce_width: usize) -> Line<'static> {
    let state_color = match job.state.as_str() {
        "done" => Color::Green,
        "failed" => Color::Red,
        _ => Color::Yellow,
    };
    let mut spans = vec![
        Span::raw(format!("{:>4} {:<14.14} ", job.id, job.name)),
        Span::styled(
            format!("{:<8}", job.state),
            Style::default().fg(state_color),
        ),
    ];
    spans.extend(cells(&job.maps, map_width));
    spans.extend(cells(&job.reduces, reduce_width));
    let maps = job.local_maps + job.remote_maps;
    let local = (job.local_maps * 100)
        .checked_div(maps)
        .map_or("-".into(), |share| format!("{share}%"));
    spans.push(Span::raw(format!(
        "{:>6.1}s {:>8} {:>7} {:>4} {:>5}",
        job.elapsed_ms as f64 / 1000.0,
        bytes(job.shuffle_bytes),
        format!("{} ({})", job.backups_launched, job.backups_won),
        job.lost_map_outputs,
        local,
    )));
    Line::from(spans)
}

/// The board in a narrow pane: a line per job (tasks done of each phase) and per worker.
fn compact(board: &Board) -> Vec<Line<'static>> {
    let done = |cells: &[Cell]| cells.iter().filter(|c| c.state == CellState::Done).count();
    let mut lines: Vec<Line> = board
        .jobs
        .iter()
        .rev()
        .take(JOBS)
        .map(|j| {
            Line::from(format!(
                "{:>3} {:<12.12} {:<7} map {}/{} red {}/{}",
                j.id,
                j.name,
                j.state,
                done(&j.maps),
                j.maps.len(),
                done(&j.reduces),
                j.reduces.len()
            ))
        })
        .collect();
    lines.extend(board.workers.iter().map(|w| {
        let task = if !w.alive {
            "lost".to_string()
        } else {
            w.running.first().cloned().unwrap_or_else(|| "idle".into())
        };
        Line::from(format!("{:<4} {task}", w.id))
    }));
    lines
}

/// Task runtimes as a one-line histogram: `label min ▁▃█▂ max`.
fn histogram(label: &str, runtimes: &[u64], buckets: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (Some(min), Some(max)) = (runtimes.iter().min(), runtimes.iter().max()) else {
        return format!("{label} -");
    };
    let span = (max - min).max(1);
    let mut counts = vec![0usize; buckets.max(1)];
    for r in runtimes {
        let i = ((r - min) as usize * (counts.len() - 1)) / span as usize;
        counts[i] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1);
    let bars: String = counts
        .iter()
        .map(|&c| {
            if c == 0 {
                ' '
            } else {
                BARS[(c * (BARS.len() - 1)).div_ceil(top).min(BARS.len() - 1)]
            }
        })
        .collect();
    format!("{label} {min} {bars} {max}")
}

impl View for BoardView {
    fn title(&self) -> &'static str {
        "task board"
    }

    /// A header and a row per job, a header and a row per worker, the histogram and the
    /// legend (the coordinator's recent decisions below them when there is room).
    fn wanted_rows(&self, app: &App, _width: u16) -> Option<u16> {
        let board = board(app).unwrap_or_default();
        let jobs = board.jobs.len().clamp(1, JOBS);
        Some((1 + jobs + 1 + board.workers.len().max(1) + 1 + 1) as u16)
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let reported = board_and_state(app);
        let title = match &reported {
            Some((_, true)) => {
                " task board · the coordinator is not running: as it last reported ".to_string()
            }
            Some((b, false)) => format!(
                " task board · {} jobs submitted, {} done, {} failed · queue {} · {} late completions refused ",
                b.submitted, b.done, b.failed, b.queued, b.refused_late
            ),
            None => " task board · the coordinator is not answering ".to_string(),
        };
        let board = reported.map(|(b, _)| b);
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let Some(board) = board else {
            return;
        };
        if inner.height < 1 {
            return;
        }
        if inner.width < 60 {
            frame.render_widget(Paragraph::new(compact(&board)), inner);
            return;
        }
        let bold = Style::default().add_modifier(Modifier::BOLD);
        // Columns: 28 for id/name/state, 40 after the cells; the cells share the rest.
        let room = (inner.width as usize).saturating_sub(28 + 40);
        let widest_reduce = board
            .jobs
            .iter()
            .map(|j| j.reduces.len())
            .max()
            .unwrap_or(1);
        let reduce_width = widest_reduce.min(room / 4).max(3);
        let map_width = room.saturating_sub(reduce_width + 2).max(4);
        let mut lines = vec![Line::styled(
            format!(
                "{:>4} {:<14} {:<8}{:<w1$}{:<w2$}{:>7} {:>8} {:>7} {:>4} {:>5}",
                "job",
                "name",
                "state",
                "map",
                "reduce",
                "time",
                "shuffle",
                "backups",
                "lost",
                "local",
                w1 = map_width + 1,
                w2 = reduce_width + 1,
            ),
            bold,
        )];
        let skip = board.jobs.len().saturating_sub(JOBS);
        for job in board.jobs.iter().skip(skip) {
            lines.push(job_line(job, map_width, reduce_width));
        }
        if board.jobs.is_empty() {
            lines.push(Line::from(
                "  no job yet: the workload submits them (w starts it)",
            ));
        }
        lines.push(Line::styled(
            format!("{:<8}{:<11}running", "worker", "heartbeat"),
            bold,
        ));
        for w in &board.workers {
            let (state, style) = if w.excluded {
                ("excluded".to_string(), Style::default().fg(Color::Red))
            } else if !w.alive {
                ("lost".to_string(), Style::default().fg(Color::Red))
            } else {
                (format!("{} ms", w.heartbeat_age_ms), Style::default())
            };
            lines.push(Line::from(vec![
                Span::raw(format!("{:<8}", w.id)),
                Span::styled(format!("{state:<11}"), style),
                Span::raw(if w.running.is_empty() {
                    "idle".to_string()
                } else {
                    w.running.join(", ")
                }),
            ]));
        }
        if let Some(job) = board
            .jobs
            .iter()
            .rev()
            .find(|j| !j.map_runtimes_ms.is_empty())
        {
            lines.push(Line::from(format!(
                "job {} task runtimes: {}   {}",
                job.id,
                histogram("map ms", &job.map_runtimes_ms, 12),
                histogram("reduce ms", &job.reduce_runtimes_ms, 6),
            )));
        }
        lines.push(Line::styled(
            "· idle  N running on wN  B with a backup  █ done  ✗ failed  (cyan: re-run after its output was lost)",
            Style::default().fg(Color::DarkGray),
        ));
        let [table, events] =
            Layout::vertical([Constraint::Length(lines.len() as u16), Constraint::Fill(1)])
                .areas(inner);
        frame.render_widget(Paragraph::new(lines), table);
        let recent = recent_events(app, EVENTS, events.height as usize, events.width);
        frame.render_widget(Paragraph::new(recent), events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_spreads_runtimes_between_min_and_max() {
        assert_eq!(histogram("map ms", &[], 4), "map ms -");
        assert_eq!(histogram("ms", &[10, 10, 10, 40], 4), "ms 10 █  ▄ 40");
        assert_eq!(histogram("ms", &[5], 3), "ms 5 █   5");
    }

    #[test]
    fn cells_show_state_worker_and_reruns() {
        let cell = |state, workers: &[&str], reruns| Cell {
            state,
            workers: workers.iter().map(|w| w.to_string()).collect(),
            reruns,
            failures: 0,
        };
        let shown: Vec<String> = [
            cell(CellState::Idle, &[], 0),
            cell(CellState::Running, &["w3"], 0),
            cell(CellState::Backup, &["w3", "w1"], 0),
            cell(CellState::Done, &["w1"], 1),
            cell(CellState::Failed, &[], 0),
        ]
        .iter()
        .map(|c| cell_span(c).content.to_string())
        .collect();
        assert_eq!(shown, ["·", "3", "B", "█", "✗"]);
        assert_eq!(
            cell_span(&cell(CellState::Done, &["w1"], 1)).style.fg,
            Some(Color::Cyan)
        );
        let many: Vec<Cell> = (0..10).map(|_| cell(CellState::Done, &[], 0)).collect();
        let spans = cells(&many, 4);
        let text: String = spans.iter().map(|s| s.content.to_string()).collect();
        assert_eq!(text, "███… ");
    }
}
