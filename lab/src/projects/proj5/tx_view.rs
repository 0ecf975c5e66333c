//! The transaction view: what the bank's transactions are doing now, in either mode.
//!
//! Two-phase commit: the money (the bank's total against what the shards hold), the
//! coordinator's transactions in flight with each participant's vote or acknowledgement, each
//! participant's prepared transactions (in doubt when it has waited long for the outcome), its
//! locks and lock waits, and the recent protocol events.
//!
//! ```text
//! money  bank 100000 · shards hold 100000 · in flight 0
//! tc1 coordinator  3 in flight · 1203 committed · 54 aborted · 220 retried · 40 reads
//! participant prepared in doubt locked waits committed aborted conflicts queries  policy store
//! s1                 2        0      2     1       512      20        40       0  wait-die  postgres
//!   tx transfer  from      → to          amount state      participants              age
//!  812 w812      acct-0001 → acct-0004       23 preparing  s1 ✓ ledger1 ✓ (waiting)  12 ms
//! ```
//!
//! Sagas: the money with what the orchestrator has in flight, the orchestrator's sagas (step k
//! of 4, compensating, dead-lettered), the outbox (depth, relay lag) and the notifier, each
//! participant's step counts (applied, refused, repeated keys, fenced, reversed).

use ratatui_core::layout::{Constraint, Layout, Rect};
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;

use distlab_bank::status::{
    CoordinatorDetail, NotifierDetail, OrchestratorDetail, ParticipantDetail, SagaStatus, TxStatus,
};

use crate::console::app::{App, NodeState};
use crate::console::views::{View, recent_events};

pub struct TxView;

/// The protocol's events the view lists.
const EVENTS: &[&str] = &[
    "in_doubt",
    "doubt_resolved",
    "recovered_prepared",
    "decision_log",
    "saga_compensating",
    "saga_compensated",
    "saga_dead_lettered",
    "saga_retried",
    "saga_discarded",
    "relay_failed",
    "drift_found",
    "drift_repaired",
    "credit_skipped",
];

/// Transactions listed at most.
const ROWS: usize = 6;

/// Rows the view asks for at most.
const MOST_ROWS: u16 = 11;

/// What the front node (`tc1`) runs: a 2PC coordinator or a saga orchestrator.
enum Front {
    TwoPhaseCommit(CoordinatorDetail),
    Saga(OrchestratorDetail),
}

impl Front {
    fn bank(&self) -> Option<distlab_bank::domain::Bank> {
        match self {
            Front::TwoPhaseCommit(d) => d.bank,
            Front::Saga(d) => d.bank,
        }
    }
}

fn coordinator(app: &App) -> Option<(String, Front, bool)> {
    let node = app
        .model
        .nodes
        .iter()
        .find(|n| n.node.role == "coordinator")?;
    let detail = if node.detail["mode"] == "saga" {
        Front::Saga(serde_json::from_value(node.detail.clone()).unwrap_or_default())
    } else {
        Front::TwoPhaseCommit(serde_json::from_value(node.detail.clone()).unwrap_or_default())
    };
    Some((
        node.node.id.clone(),
        detail,
        NodeState::of(node) != NodeState::Running,
    ))
}

/// Whether the bank runs sagas (as its front node last said).
fn saga_mode(app: &App) -> bool {
    matches!(coordinator(app), Some((_, Front::Saga(_), _)))
}

fn notifier(app: &App) -> Option<(String, Option<NotifierDetail>, bool)> {
    let node = app.model.nodes.iter().find(|n| n.node.role == "notifier")?;
    Some((
        node.node.id.clone(),
        serde_json::from_value(node.detail.clone()).ok(),
        NodeState::of(node) != NodeState::Running,
    ))
}

/// The anti-entropy job's line: its passes, what they found and repaired, the last drifts.
fn anti_entropy(r: &distlab_bank::reconcile::ReconcileStatus) -> Line<'static> {
    let mut spans = vec![Span::raw(format!(
        "anti-entropy  {} passes · {} drifts found · {} repaired ({:+})",
        r.passes, r.drifts_found, r.repaired, r.repaired_money
    ))];
    if r.last_found > 0 {
        let last: Vec<String> = r
            .last_drifts
            .iter()
            .map(|d| format!("{} {:+}", d.account, d.delta()))
            .collect();
        spans.push(Span::styled(
            format!("  last pass: {}", last.join(", ")),
            Style::default().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}

/// A saga's place, as the view says it.
fn saga_state(s: &SagaStatus) -> (String, Color) {
    let text = format!("{}/4 {}", s.step, s.phase.replace('_', " "));
    if s.dead_lettered {
        (format!("{text} DLQ"), Color::Red)
    } else if s.compensating {
        (text, Color::Yellow)
    } else {
        (text, Color::Cyan)
    }
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
        let bank = coordinator.as_ref().and_then(|(_, d, _)| d.bank());
        let in_flight = match &coordinator {
            Some((_, Front::Saga(d), _)) => Some(d.money_in_flight),
            _ => None,
        };
        match bank {
            Some(bank) => {
                let gap = held - bank.total();
                let style = if gap == 0 {
                    Style::default().fg(Color::Green)
                } else {
                    Style::default().fg(Color::Yellow)
                };
                let mut spans = vec![
                    Span::styled("money  ", Style::default().add_modifier(Modifier::BOLD)),
                    Span::raw(format!("bank {} · shards hold {held} · ", bank.total())),
                    Span::styled(format!("in flight {}", -gap), style),
                ];
                match in_flight {
                    Some(known) => spans.push(Span::styled(
                        format!(
                            "  (the orchestrator has {known} debited, not yet credited or refunded)"
                        ),
                        Style::default().fg(Color::DarkGray),
                    )),
                    None => spans.push(Span::styled(
                        "  (shards polled one by one: a commit can land between two polls)",
                        Style::default().fg(Color::DarkGray),
                    )),
                }
                lines.push(Line::from(spans));
            }
            None => lines.push(Line::from("money  (the coordinator has not reported yet)")),
        }
        let Some((id, front, down)) = coordinator else {
            lines.push(Line::from("no coordinator"));
            return lines;
        };
        let reconcile = match &front {
            Front::TwoPhaseCommit(d) => &d.reconcile,
            Front::Saga(d) => &d.reconcile,
        };
        if reconcile.passes > 0 {
            lines.push(anti_entropy(reconcile));
        }
        match front {
            Front::TwoPhaseCommit(d) => {
                Self::two_phase_commit(&mut lines, &id, &d, down, &parts);
            }
            Front::Saga(d) => {
                Self::saga(&mut lines, &id, &d, down, &parts, notifier(app));
            }
        }
        lines
    }

    fn two_phase_commit(
        lines: &mut Vec<Line<'static>>,
        id: &str,
        d: &CoordinatorDetail,
        down: bool,
        parts: &[(String, Option<ParticipantDetail>, bool)],
    ) {
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
        // The participants.
        lines.push(Line::styled(
            format!(
                "{:<11} {:>8} {:>8} {:>6} {:>5} {:>9} {:>7} {:>9} {:>7}  policy    store",
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
        for (id, detail, down) in parts {
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
                    " {:>6} {:>5} {:>9} {:>7} {:>9} {:>7}  {:<9} {}",
                    d.locked,
                    d.lock_waits.len(),
                    c.committed,
                    c.aborted,
                    c.lock_conflicts,
                    c.outcome_queries,
                    d.policy,
                    d.store
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
        {
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
    }

    fn saga(
        lines: &mut Vec<Line<'static>>,
        id: &str,
        d: &OrchestratorDetail,
        down: bool,
        parts: &[(String, Option<ParticipantDetail>, bool)],
        notifier: Option<(String, Option<NotifierDetail>, bool)>,
    ) {
        let mut head = vec![Span::raw(format!(
            "{id} orchestrator  {} in flight · {} completed · {} refused · ",
            d.in_flight_count, d.completed, d.refused
        ))];
        let warn = |n: usize| {
            if n > 0 {
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            }
        };
        head.push(Span::styled(
            format!("{} compensating", d.compensating),
            warn(d.compensating),
        ));
        head.push(Span::raw(format!(" · {} compensated · ", d.compensated)));
        head.push(Span::styled(
            format!("{} dead-lettered", d.dead_lettered),
            if d.dead_lettered > 0 {
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            },
        ));
        head.push(Span::raw(format!(" · {} step retries", d.step_retries)));
        if down {
            head.push(Span::styled(
                "  DOWN: its sagas resume from the log when it returns",
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
        }
        lines.push(Line::from(head));
        // The outbox and who reads it.
        let o = &d.outbox;
        let mut outbox = vec![Span::raw(format!(
            "outbox  {} waiting · oldest {} ms · {} published to {} · ",
            o.depth,
            o.lag_ms,
            o.published,
            if o.topic.is_empty() {
                "(no brokers)"
            } else {
                &o.topic
            }
        ))];
        outbox.push(Span::styled(
            format!("{} relay errors", o.errors),
            warn(usize::from(o.errors > 0)),
        ));
        if let Some(e) = &o.last_error {
            outbox.push(Span::styled(
                format!("  {e}"),
                Style::default().fg(Color::Red),
            ));
        }
        lines.push(Line::from(outbox));
        match notifier {
            Some((nid, Some(n), false)) => lines.push(Line::from(format!(
                "{nid} notifier  {} notifications · {} redeliveries absorbed · lag {} · generation {}",
                n.notifications, n.duplicates, n.lag, n.generation
            ))),
            Some((nid, _, _)) => lines.push(Line::from(vec![
                Span::raw(format!("{nid} notifier  ")),
                Span::styled("down", Style::default().fg(Color::Red)),
            ])),
            None => {}
        }
        lines.push(Line::styled(
            format!(
                "{:<11} {:>8} {:>8} {:>8} {:>7} {:>8}",
                "participant", "applied", "refused", "repeated", "fenced", "reversed"
            ),
            Style::default().add_modifier(Modifier::BOLD),
        ));
        for (pid, detail, down) in parts {
            let Some(p) = detail.as_ref().filter(|_| !down) else {
                lines.push(Line::from(vec![
                    Span::raw(format!("{pid:<11} ")),
                    Span::styled("down", Style::default().fg(Color::Red)),
                ]));
                continue;
            };
            let c = &p.counters;
            lines.push(Line::from(format!(
                "{pid:<11} {:>8} {:>8} {:>8} {:>7} {:>8}",
                c.steps_applied,
                c.steps_refused,
                c.steps_repeated,
                c.steps_fenced,
                c.steps_reversed
            )));
        }
        lines.push(Line::styled(
            format!(
                "{:<9} {:<9}   {:<9} {:>6} {:<22} {:>8} {:>7}",
                "transfer", "from", "to", "amount", "step", "attempts", "age"
            ),
            Style::default().add_modifier(Modifier::BOLD),
        ));
        for saga in d.in_flight.iter().take(ROWS) {
            let (state, color) = saga_state(saga);
            let mut spans = vec![
                Span::raw(format!(
                    "{:<9} {:<9} → {:<9} {:>6} ",
                    saga.transfer, saga.from, saga.to, saga.amount
                )),
                Span::styled(format!("{state:<22} "), Style::default().fg(color)),
                Span::raw(format!("{:>8} {:>4} ms", saga.attempts, saga.age_ms)),
            ];
            if let Some(e) = saga.last_error.as_ref().or(saga.reason.as_ref()) {
                spans.push(Span::styled(
                    format!("  {e}"),
                    Style::default().fg(Color::DarkGray),
                ));
            }
            lines.push(Line::from(spans));
        }
        if d.in_flight_count > ROWS {
            lines.push(Line::styled(
                format!("… {} more", d.in_flight_count - ROWS),
                Style::default().fg(Color::DarkGray),
            ));
        }
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
        let title = if saga_mode(app) {
            " transactions (sagas) "
        } else {
            " transactions (two-phase commit) "
        };
        let block = Block::default().borders(Borders::ALL).title(title);
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
