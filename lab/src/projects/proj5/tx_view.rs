//! The transaction view: what two-phase commit is doing now. The money (the bank's total
//! against what the shards hold), the coordinator's transactions in flight with each
//! participant's vote or acknowledgement, each participant's prepared transactions (in doubt
//! when it has waited long for the outcome), its locks and lock waits, and the recent
//! protocol events.
//!
//! ```text
//! money  bank 100000 · shards hold 100000 · in flight 0
//! tc1 coordinator  3 in flight · 1203 committed · 54 aborted · 220 retried · 40 reads
//! participant prepared in doubt locked waits committed aborted conflicts queries  policy
//! s1                 2        0      2     1       512      20        40       0  wait-die
//!   tx transfer  from      → to          amount state      participants              age
//!  812 w812      acct-0001 → acct-0004       23 preparing  s1 ✓ ledger1 ✓ (waiting)  12 ms
//! ```

use ratatui_core::layout::{Constraint, Layout, Rect};
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;

use distlab_bank::status::{CoordinatorDetail, ParticipantDetail, TxStatus};

use crate::console::app::{App, NodeState};
use crate::console::views::{View, recent_events};

pub struct TxView;

/// The protocol's events the view lists.
const EVENTS: &[&str] = &[
    "in_doubt",
    "doubt_resolved",
    "recovered_prepared",
    "decision_log",
];

/// Transactions listed at most.
const ROWS: usize = 6;

/// Rows the view asks for at most.
const MOST_ROWS: u16 = 11;

fn coordinator(app: &App) -> Option<(String, CoordinatorDetail, bool)> {
    let node = app
        .model
        .nodes
        .iter()
        .find(|n| n.node.role == "coordinator")?;
    let detail = serde_json::from_value(node.detail.clone()).unwrap_or_default();
    Some((
        node.node.id.clone(),
        detail,
        NodeState::of(node) != NodeState::Running,
    ))
}

fn participants(app: &App) -> Vec<(String, Option<ParticipantDetail>, bool)> {
    app.model
        .nodes
        .iter()
        .filter(|n| n.node.role == "shard" || n.node.role == "ledger")
        .map(|n| {
            (
                n.node.id.clone(),
                serde_json::from_value(n.detail.clone()).ok(),
                NodeState::of(n) != NodeState::Running,
            )
        })
        .collect()
}

/// The participants of a transaction, each with its vote (preparing) or whether it still has
/// to acknowledge the outcome.
fn votes(t: &TxStatus) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    match t.state.as_str() {
        "preparing" => {
            for (p, yes) in &t.votes {
                let (mark, color) = if *yes {
                    ("✓", Color::Green)
                } else {
                    ("✗", Color::Red)
                };
                spans.push(Span::raw(format!("{p} ")));
                spans.push(Span::styled(format!("{mark} "), Style::default().fg(color)));
            }
            spans.push(Span::styled(
                "(waiting for the rest)",
                Style::default().fg(Color::DarkGray),
            ));
        }
        "deciding" => spans.push(Span::styled(
            "every vote yes: logging the commit",
            Style::default().fg(Color::Yellow),
        )),
        _ => {
            if t.unacked.is_empty() {
                spans.push(Span::raw("all acknowledged"));
            } else {
                spans.push(Span::raw("not yet told: "));
                spans.push(Span::styled(
                    t.unacked.iter().cloned().collect::<Vec<_>>().join(" "),
                    Style::default().fg(Color::Yellow),
                ));
            }
        }
    }
    spans
}

fn state_color(state: &str) -> Color {
    match state {
        "preparing" => Color::Cyan,
        "deciding" => Color::Yellow,
        "committing" => Color::Green,
        _ => Color::Red,
    }
}

impl TxView {
    fn lines(app: &App) -> Vec<Line<'static>> {
        let mut lines = Vec::new();
        let parts = participants(app);
        let coordinator = coordinator(app);
        // Money.
        let held: i128 = parts
            .iter()
            .filter_map(|(_, d, _)| d.as_ref())
            .filter(|d| d.kind == "shard")
            .filter_map(|d| d.total.parse::<i128>().ok())
            .sum();
        let bank = coordinator.as_ref().and_then(|(_, d, _)| d.bank);
        match bank {
            Some(bank) => {
                let gap = held - bank.total();
                let style = if gap == 0 {
                    Style::default().fg(Color::Green)
                } else {
                    Style::default().fg(Color::Yellow)
                };
                lines.push(Line::from(vec![
                    Span::styled("money  ", Style::default().add_modifier(Modifier::BOLD)),
                    Span::raw(format!("bank {} · shards hold {held} · ", bank.total())),
                    Span::styled(format!("in flight {}", -gap), style),
                    Span::styled(
                        "  (shards polled one by one: a commit can land between two polls)",
                        Style::default().fg(Color::DarkGray),
                    ),
                ]));
            }
            None => lines.push(Line::from("money  (the coordinator has not reported yet)")),
        }
        // The coordinator.
        let detail = coordinator.map(|(id, d, down)| {
            let head = format!(
                "{id} coordinator  {} in flight · {} committed · {} aborted · {} retried · {} reads",
                d.in_flight_count, d.committed, d.aborted, d.retries, d.reads
            );
            if down {
                lines.push(Line::from(vec![
                    Span::raw(head),
                    Span::styled(
                        "  DOWN: prepared participants wait in doubt",
                        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                    ),
                ]));
            } else {
                lines.push(Line::from(head));
            }
            d
        });
        if detail.is_none() {
            lines.push(Line::from("no coordinator"));
        }
        // The participants.
        lines.push(Line::styled(
            format!(
                "{:<11} {:>8} {:>8} {:>6} {:>5} {:>9} {:>7} {:>9} {:>7}  policy",
                "participant",
                "prepared",
                "in doubt",
                "locked",
                "waits",
                "committed",
                "aborted",
                "conflicts",
                "queries"
            ),
            Style::default().add_modifier(Modifier::BOLD),
        ));
        for (id, detail, down) in &parts {
            let Some(d) = detail.as_ref().filter(|_| !down) else {
                lines.push(Line::from(vec![
                    Span::raw(format!("{id:<11} ")),
                    Span::styled("down", Style::default().fg(Color::Red)),
                ]));
                continue;
            };
            let doubt = d.prepared.iter().filter(|p| p.in_doubt).count();
            let c = &d.counters;
            lines.push(Line::from(vec![
                Span::raw(format!("{id:<11} {:>8} ", d.prepared.len())),
                Span::styled(
                    format!("{doubt:>8}"),
                    if doubt > 0 {
                        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
                    } else {
                        Style::default()
                    },
                ),
                Span::raw(format!(
                    " {:>6} {:>5} {:>9} {:>7} {:>9} {:>7}  {}",
                    d.locked,
                    d.lock_waits.len(),
                    c.committed,
                    c.aborted,
                    c.lock_conflicts,
                    c.outcome_queries,
                    d.policy
                )),
            ]));
            for w in d.lock_waits.iter().take(2) {
                lines.push(Line::styled(
                    format!(
                        "            {} : tx {} waits for {}",
                        w.account,
                        w.waiter,
                        w.holders
                            .iter()
                            .map(|h| format!("tx {h}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Style::default().fg(Color::DarkGray),
                ));
            }
        }
        // Its transactions, as many as fit.
        if let Some(d) = detail {
            lines.push(Line::styled(
                format!(
                    "{:>6} {:<9} {:<9}   {:<9} {:>6} {:<11} {:<34} {:>7}",
                    "tx", "transfer", "from", "to", "amount", "state", "participants", "age"
                ),
                Style::default().add_modifier(Modifier::BOLD),
            ));
            for t in d.in_flight.iter().take(ROWS) {
                let mut spans = vec![
                    Span::raw(format!(
                        "{:>6} {:<9} {:<9} → {:<9} {:>6} ",
                        t.tx, t.transfer, t.from, t.to, t.amount
                    )),
                    Span::styled(
                        format!("{:<11} ", t.state),
                        Style::default().fg(state_color(&t.state)),
                    ),
                ];
                spans.extend(votes(t));
                spans.push(Span::raw(format!("  {} ms", t.age_ms)));
                if t.attempt > 1 {
                    spans.push(Span::styled(
                        format!("  attempt {}", t.attempt),
                        Style::default().fg(Color::DarkGray),
                    ));
                }
                lines.push(Line::from(spans));
            }
            if d.in_flight_count > ROWS {
                lines.push(Line::styled(
                    format!("       … {} more", d.in_flight_count - ROWS),
                    Style::default().fg(Color::DarkGray),
                ));
            }
        }
        lines
    }
}

impl View for TxView {
    fn title(&self) -> &'static str {
        "transactions"
    }

    /// The money, the coordinator and the participants first; transactions as many as fit
    /// (at most [`MOST_ROWS`] rows, so the timeline keeps its place under the view).
    fn wanted_rows(&self, app: &App, _width: u16) -> Option<u16> {
        Some((Self::lines(app).len() as u16 + 1).min(MOST_ROWS))
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let block = Block::default()
            .borders(Borders::ALL)
            .title(" transactions (two-phase commit) ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let lines = Self::lines(app);
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

    fn tx(state: &str) -> TxStatus {
        TxStatus {
            tx: 7,
            transfer: "w1".into(),
            from: "acct-0001".into(),
            to: "acct-0002".into(),
            amount: 5,
            state: state.into(),
            votes: [("s1".to_string(), true), ("s2".to_string(), false)]
                .into_iter()
                .collect(),
            unacked: ["ledger1".to_string()].into_iter().collect(),
            attempt: 1,
            age_ms: 3,
            reason: None,
        }
    }

    fn text(spans: Vec<Span<'static>>) -> String {
        spans.iter().map(|s| s.content.to_string()).collect()
    }

    #[test]
    fn each_state_says_what_the_transaction_waits_for() {
        assert_eq!(
            text(votes(&tx("preparing"))),
            "s1 ✓ s2 ✗ (waiting for the rest)"
        );
        assert_eq!(
            text(votes(&tx("deciding"))),
            "every vote yes: logging the commit"
        );
        assert_eq!(text(votes(&tx("committing"))), "not yet told: ledger1");
        let mut done = tx("aborting");
        done.unacked.clear();
        assert_eq!(text(votes(&done)), "all acknowledged");
    }
}
