//! The convergence view: is every replica of the document the same, and if not, how far
//! apart are they?
//!
//! ```text
//! replica role    link         chars   ops pend digest   unacked excerpt
//! s1      server  e1 e3 · s2     812   903    0 4f1c02aa         the quick brown
//! e2      editor  offline        790   880    0 9b77e0c1      14 the quick bro
//! behind  s1  s2  e1  e2  e3
//! s1       ·   0   0  14   0
//! cursors  e1 sees e3@120 e2@40 · e2 sees nobody · e3 sees e1@7 e2@40
//! 2 texts: s1 s2 e1 e3 | e2 (they merge when the replicas meet)
//! ```
//!
//! `behind`: in row R, column C, how many operations C holds that R lacks (from their
//! version vectors): a partition shows as a block of non-zero cells, a heal as it draining.

use std::collections::BTreeMap;

use ratatui_core::layout::Rect;
use ratatui_core::style::{Color, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;

use super::doc_figures;
use crate::console::app::{App, NodeState};
use crate::console::views::View;

pub struct ConvergenceView;

/// One replica as the view shows it.
struct Replica {
    node: String,
    role: String,
    down: bool,
    link: String,
    doc: Option<serde_json::Value>,
    version: BTreeMap<String, u64>,
}

fn replicas(app: &App) -> Vec<Replica> {
    app.model
        .nodes
        .iter()
        .map(|n| {
            let doc = doc_figures(n);
            let version = doc
                .as_ref()
                .and_then(|d| d["version"].as_object().cloned())
                .map(|m| {
                    m.into_iter()
                        .map(|(k, v)| (k, v.as_u64().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            let link = if n.node.role == "server" {
                let servers: Vec<String> = n.detail["servers_connected"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let editors = doc
                    .as_ref()
                    .map_or(0, |d| d["editors"].as_u64().unwrap_or(0));
                format!(
                    "{editors} ed · {}",
                    if servers.is_empty() {
                        "alone".into()
                    } else {
                        servers.join(" ")
                    }
                )
            } else {
                n.detail["connected"]
                    .as_str()
                    .map_or("offline".into(), String::from)
            };
            Replica {
                node: n.node.id.clone(),
                role: n.node.role.to_string(),
                down: NodeState::of(n) != NodeState::Running,
                link,
                doc,
                version,
            }
        })
        .collect()
}

/// How many operations `other` holds that `this` lacks.
fn behind(this: &BTreeMap<String, u64>, other: &BTreeMap<String, u64>) -> u64 {
    other
        .iter()
        .map(|(replica, &held)| held.saturating_sub(this.get(replica).copied().unwrap_or(0)))
        .sum()
}

fn field(doc: &Option<serde_json::Value>, key: &str) -> String {
    doc.as_ref().map_or(String::new(), |d| match &d[key] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

impl ConvergenceView {
    fn lines(app: &App, width: usize) -> Vec<Line<'static>> {
        let replicas = replicas(app);
        let mut lines = vec![Line::styled(
            format!(
                "{:<8}{:<8}{:<14}{:>7}{:>7}{:>5} {:<9}{:>7} excerpt",
                "replica", "role", "link", "chars", "ops", "pend", "digest", "unacked"
            ),
            Style::default().fg(Color::DarkGray),
        )];
        // Digest groups: each distinct text gets a colour.
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &replicas {
            let digest = field(&r.doc, "digest");
            if r.down || digest.is_empty() {
                continue;
            }
            match groups.iter_mut().find(|(d, _)| *d == digest) {
                Some((_, members)) => members.push(r.node.clone()),
                None => groups.push((digest, vec![r.node.clone()])),
            }
        }
        const COLOURS: [Color; 4] = [Color::Green, Color::Yellow, Color::Magenta, Color::Cyan];
        for r in &replicas {
            let digest = field(&r.doc, "digest");
            let group = groups.iter().position(|(d, _)| *d == digest);
            let colour = if r.down {
                Color::DarkGray
            } else {
                group.map_or(Color::Gray, |g| COLOURS[g % COLOURS.len()])
            };
            let head = format!(
                "{:<8}{:<8}{:<14}{:>7}{:>7}{:>5} ",
                r.node,
                r.role,
                if r.down {
                    "down".to_string()
                } else {
                    r.link.chars().take(13).collect()
                },
                field(&r.doc, "chars"),
                field(&r.doc, "ops"),
                field(&r.doc, "pending"),
            );
            let excerpt_room = width.saturating_sub(head.len() + 18);
            let excerpt: String = field(&r.doc, "excerpt")
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(excerpt_room)
                .collect();
            lines.push(Line::from(vec![
                Span::raw(head),
                Span::styled(
                    format!("{:<9}", digest.chars().take(8).collect::<String>()),
                    Style::default().fg(colour),
                ),
                Span::raw(format!("{:>7} ", field(&r.doc, "unacked_ops"))),
                Span::styled(excerpt, Style::default().fg(Color::Gray)),
            ]));
        }
        // The behind matrix.
        let mut header = format!("{:<8}", "behind");
        for r in &replicas {
            header.push_str(&format!("{:>6}", r.node));
        }
        lines.push(Line::styled(header, Style::default().fg(Color::DarkGray)));
        for row in &replicas {
            let mut spans = vec![Span::raw(format!("{:<8}", row.node))];
            for col in &replicas {
                let (text, colour) = if row.node == col.node {
                    ("·".to_string(), Color::DarkGray)
                } else {
                    let n = behind(&row.version, &col.version);
                    (
                        n.to_string(),
                        if n == 0 { Color::Green } else { Color::Yellow },
                    )
                };
                spans.push(Span::styled(
                    format!("{text:>6}"),
                    Style::default().fg(colour),
                ));
            }
            lines.push(Line::from(spans));
        }
        // Presence: the cursors each editor has been told about (ephemeral, never stored).
        let seen: Vec<String> = app
            .model
            .nodes
            .iter()
            .filter(|n| n.node.role == "editor")
            .filter_map(|n| {
                let others: Vec<String> = n.detail["others"]
                    .as_array()?
                    .iter()
                    .map(|o| {
                        let cursor = o["cursor"].as_u64().map_or("?".into(), |c| c.to_string());
                        format!("{}@{cursor}", o["user"].as_str().unwrap_or("?"))
                    })
                    .collect();
                Some(format!(
                    "{} sees {}",
                    n.node.id,
                    if others.is_empty() {
                        "nobody".into()
                    } else {
                        others.join(" ")
                    }
                ))
            })
            .collect();
        if !seen.is_empty() {
            lines.push(Line::styled(
                format!("cursors  {}", seen.join(" · ")),
                Style::default().fg(Color::Gray),
            ));
        }
        let summary = match groups.len() {
            0 => Line::raw("no replica holds the document yet"),
            1 => Line::styled(
                format!(
                    "converged: every running replica holds one text ({} replicas)",
                    groups[0].1.len()
                ),
                Style::default().fg(Color::Green),
            ),
            n => Line::styled(
                format!(
                    "{n} texts: {} (they merge when the replicas meet)",
                    groups
                        .iter()
                        .map(|(_, m)| m.join(" "))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ),
                Style::default().fg(Color::Yellow),
            ),
        };
        lines.push(summary);
        lines
    }
}

impl View for ConvergenceView {
    fn title(&self) -> &'static str {
        "convergence"
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let block = Block::default()
            .borders(Borders::ALL)
            .title(" convergence ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        frame.render_widget(
            Paragraph::new(Self::lines(app, inner.width as usize)),
            inner,
        );
    }

    fn wanted_rows(&self, app: &App, _width: u16) -> Option<u16> {
        // A row per replica, the matrix's, two headers, the cursors and the summary.
        Some((app.model.nodes.len() * 2 + 4) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_counts_what_the_other_holds_and_this_lacks() {
        let a: BTreeMap<String, u64> = [("x".into(), 5), ("y".into(), 2)].into_iter().collect();
        let b: BTreeMap<String, u64> = [("x".into(), 3), ("z".into(), 4)].into_iter().collect();
        assert_eq!(behind(&a, &b), 4);
        assert_eq!(behind(&b, &a), 4);
        assert_eq!(behind(&a, &a), 0);
    }
}
