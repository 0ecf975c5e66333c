//! The ring view: Project 1's placement and membership, as one node sees them (the selected
//! one: SWIM members disagree for a while, and that is worth seeing).
//!
//! ```text
//! ┌ ring: as n1 sees it · ring(256 vnodes) · N=3 W=2 R=2 ───────────────────────────┐
//! │        ⣀⣤⠤⠤⠤⣤⣀          member  state    inc  own%                 hints held  │
//! │     ⡴⠋        ⠙⢦        n1      alive      0  20.3 ██████████           0   │
//! │    ⡇    5 members ⢸     n2      dead       0  19.6 █████████░          37   │
//! │     ⠳⣄        ⣠⠞        ...                                                   │
//! │        ⠉⠛⠒⠒⠒⠛⠉          last join/leave: n6 joined: 330 of 1706 keys changed    │
//! │                          primary (ideal K/N 284: 1.16x), 1020 copies sent        │
//! │                          hints waiting: n4 → n2 37 · n5 → n2 12                  │
//! ```
//!
//! The circle is the hash space: each arc is colored by the member owning it (for the ring,
//! the member of the next vnode clockwise, the same code the nodes route with), and inside it
//! a mark per vnode token in its member's color. Rendezvous has no positions, and a ring's
//! hundreds of vnodes interleave more finely than terminal cells can show (every cell would
//! take the colour of the last member drawn): then each member gets one arc as long as its
//! share, and the circle says "by share". Member colours are none of the state colours. Everything comes from the nodes'
//! `/status` details: `ring`, `members`, `ownership`, `hints`, `last_ring_change`.

use std::collections::BTreeMap;
use std::f64::consts::TAU;

use distlab_cache::page::{MemberSeen, members_seen};
use distlab_cache::placement::{PlacementKind, Ring};
use ratatui_core::layout::{Constraint, Layout, Rect};
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::canvas::{Canvas, Points};
use ratatui_widgets::paragraph::{Paragraph, Wrap};
use serde_json::Value;

use crate::console::app::{App, NodeState};
use crate::console::views::{View, node_color};
use crate::engine::model::NodeView;

pub struct RingView;

/// Points drawn around the circle: enough for a braille circle of any terminal size.
const ARC_SAMPLES: usize = 1440;

impl View for RingView {
    fn title(&self) -> &'static str {
        "ring"
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let nodes = &app.model.nodes;
        // A node that is down, paused or silent shows what it saw last: ask a running one.
        let sees = |n: &&NodeView| {
            n.detail.get("ring").is_some() && NodeState::of(n) == NodeState::Running
        };
        let selected = app.selected_node();
        let seer = selected
            .filter(sees)
            .or_else(|| nodes.iter().find(sees))
            .or_else(|| selected.filter(|n| n.detail.get("ring").is_some()));
        let Some(seer) = seer else {
            let block = Block::default().borders(Borders::ALL).title(" ring ");
            frame.render_widget(
                Paragraph::new("no node has reported its ring yet").block(block),
                area,
            );
            return;
        };
        let detail = &seer.detail;
        let config = &detail["config"];
        let instead = selected
            .filter(|n| n.node.id != seer.node.id)
            .map(|n| format!(" ({} is {})", n.node.id, NodeState::of(n).name()))
            .unwrap_or_default();
        let title = format!(
            " ring: as {} sees it{instead} · {} · N={} W={} R={} ",
            seer.node.id,
            detail["placement"].as_str().unwrap_or("?"),
            config["replicas"],
            config["write_quorum"],
            config["read_quorum"],
        );
        let block = Block::default().borders(Borders::ALL).title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.height < 4 || inner.width < 40 {
            return;
        }
        // A circle looks round when it is about twice as wide as high, in cells.
        let circle_width = (inner.height * 2 + 2).min(inner.width * 2 / 5);
        let [circle, text] =
            Layout::horizontal([Constraint::Length(circle_width), Constraint::Fill(1)])
                .areas(inner);
        let ring = members(detail, "ring");
        // The circle's circumference in cells (the canvas spans -1.1..1.1 on both axes).
        let cells_around = std::f64::consts::PI * f64::from(circle.width + circle.height) / 2.2;
        let (arcs, drawn) = arcs(detail, &ring, cells_around);
        frame.render_widget(
            Canvas::default()
                .x_bounds([-1.1, 1.1])
                .y_bounds([-1.1, 1.1])
                .paint(|ctx| {
                    for (member, points) in &arcs {
                        ctx.draw(&Points::new(points, node_color(nodes, member)));
                    }
                    ctx.print(
                        -0.45,
                        0.1,
                        Span::styled(format!("{} members", ring.len()), dim()),
                    );
                    ctx.print(-0.45, -0.15, Span::styled(drawn.caption(), dim()));
                }),
            circle,
        );
        // Fixed columns take 36 cells; the share bar gets what is left, within reason.
        let bar = (text.width as usize).saturating_sub(37).clamp(4, 16);
        let mut lines = vec![Line::styled(
            format!(
                "{:<6} {:<8} {:>4} {:>5} {:<bar$} {:>6}",
                "member", "state", "inc", "own%", "share", "hints"
            ),
            dim(),
        )];
        lines.extend(member_lines(nodes, seer, bar));
        lines.push(Line::raw(""));
        lines.push(last_change(nodes, seer));
        lines.push(hint_queues(nodes));
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), text);
    }
}

fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}

/// A list of member ids in a node's detail (`ring`, `before`...).
fn members(detail: &Value, field: &str) -> Vec<String> {
    detail[field]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Where a position on the circle (a turn, 0..1 clockwise from the top) is drawn.
fn at(turn: f64, radius: f64) -> (f64, f64) {
    let angle = TAU * turn;
    (radius * angle.sin(), radius * angle.cos())
}

/// What the circle's arcs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drawn {
    /// Where each member's tokens sit on the hash space (few tokens: their arcs can be seen).
    Positions,
    /// One arc per member as long as its share: rendezvous hashing has no positions, and a
    /// ring's many vnodes interleave more finely than a terminal's cells, where every cell
    /// would be drawn in whichever member came last and ownership could not be seen.
    Shares,
}

impl Drawn {
    fn caption(self) -> &'static str {
        match self {
            Drawn::Positions => "by position",
            Drawn::Shares => "by share",
        }
    }
}

/// The circle's points, per member: the arcs of the hash space it owns (radius 1) and, when
/// positions can be drawn, a mark per vnode token inside them (radius 0.8). A ring whose
/// tokens outnumber half the cells around the circle (`cells_around`) is drawn by share.
fn arcs(
    detail: &Value,
    ring: &[String],
    cells_around: f64,
) -> (BTreeMap<String, Vec<(f64, f64)>>, Drawn) {
    let mut arcs: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    if ring.is_empty() {
        return (arcs, Drawn::Shares);
    }
    let vnodes = detail["config"]["vnodes"]
        .as_u64()
        .unwrap_or(PlacementKind::DEFAULT_VNODES as u64) as usize;
    let positions = detail["config"]["placement"].as_str() == Some("ring")
        && ((ring.len() * vnodes) as f64) <= cells_around / 2.0;
    let drawn = if positions {
        Drawn::Positions
    } else {
        Drawn::Shares
    };
    let owner_at: Box<dyn Fn(f64) -> String> = match drawn {
        Drawn::Positions => {
            let ring = Ring::new(ring.to_vec(), vnodes);
            let tokens: Vec<(u64, String)> = ring.tokens().map(|(t, m)| (t, m.clone())).collect();
            for (token, member) in &tokens {
                let turn = *token as f64 / u64::MAX as f64;
                arcs.entry(member.clone()).or_default().push(at(turn, 0.8));
            }
            Box::new(move |turn| {
                // The member of the first token at or after this position, wrapping.
                let position = (turn * u64::MAX as f64) as u64;
                let i = tokens.partition_point(|(t, _)| *t < position);
                tokens[i % tokens.len()].1.clone()
            })
        }
        Drawn::Shares => {
            // One arc per member, in ring order, as long as its share.
            let mut bounds = Vec::new();
            let mut acc = 0.0;
            for member in ring {
                acc += detail["ownership"][member].as_f64().unwrap_or(0.0);
                bounds.push((acc, member.clone()));
            }
            let total = acc.max(f64::MIN_POSITIVE);
            Box::new(move |turn| {
                bounds
                    .iter()
                    .find(|(b, _)| turn * total <= *b)
                    .or(bounds.last())
                    .map(|(_, m)| m.clone())
                    .unwrap_or_default()
            })
        }
    };
    for i in 0..ARC_SAMPLES {
        let turn = i as f64 / ARC_SAMPLES as f64;
        arcs.entry(owner_at(turn)).or_default().push(at(turn, 1.0));
    }
    (arcs, drawn)
}

/// One line per member: its state as the seer has it, incarnation, share (a bar `bar` wide),
/// and the hints it holds for others.
fn member_lines(nodes: &[NodeView], seer: &NodeView, bar: usize) -> Vec<Line<'static>> {
    let detail = &seer.detail;
    members_seen(&seer.node.id, detail)
        .into_iter()
        .map(
            |MemberSeen {
                 id,
                 state,
                 incarnation,
             }| {
                let share = detail["ownership"][&id].as_f64();
                let held = nodes
                    .iter()
                    .find(|n| n.node.id == id)
                    .and_then(|n| n.detail["hints_waiting"].as_u64());
                let color = node_color(nodes, &id);
                let state_style = match state.as_str() {
                    "alive" | "self" => Style::default().fg(Color::Green),
                    "suspect" => Style::default().fg(Color::Yellow),
                    "dead" => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                    _ => dim(),
                };
                Line::from(vec![
                    Span::styled(format!("{id:<6} "), Style::default().fg(color)),
                    Span::styled(format!("{state:<8} "), state_style),
                    Span::raw(format!(
                        "{:>4} {:>5} ",
                        incarnation.map_or("-".into(), |i| i.to_string()),
                        share.map_or("-".into(), |s| format!("{:.1}", s * 100.0)),
                    )),
                    Span::styled(
                        share_bar(share.unwrap_or(0.0), bar),
                        Style::default().fg(color),
                    ),
                    Span::raw(format!(
                        " {:>6}",
                        held.map_or("-".into(), |h| h.to_string())
                    )),
                ])
            },
        )
        .collect()
}

/// A share of the hash space as a bar `width` long, full at twice the even share of a
/// 5-member ring (40%), so the differences between members show.
fn share_bar(share: f64, width: usize) -> String {
    let eighths = ((share / 0.4).clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let mut bar = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        bar.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8 - 1]);
    }
    format!("{bar:<width$}")
}

/// The last join or leave the seer saw, summed over every node that saw the same change:
/// keys whose primary moved vs the ideal K/N.
fn last_change(nodes: &[NodeView], seer: &NodeView) -> Line<'static> {
    let change = &seer.detail["last_ring_change"];
    if change.is_null() {
        return Line::styled("last join/leave: none yet", dim());
    }
    let (before, after) = (members(change, "before"), members(change, "members"));
    let what = match (
        after.iter().find(|m| !before.contains(m)),
        before.iter().find(|m| !after.contains(m)),
    ) {
        (Some(joined), None) => format!("{joined} joined"),
        (None, Some(left)) => format!("{left} left"),
        _ => format!("{} -> {} members", before.len(), after.len()),
    };
    let (mut keys, mut moved, mut copies) = (0, 0, 0);
    for node in nodes {
        let theirs = &node.detail["last_ring_change"];
        if members(theirs, "before") == before && members(theirs, "members") == after {
            keys += theirs["primary_keys"].as_u64().unwrap_or(0);
            moved += theirs["primaries_moved"].as_u64().unwrap_or(0);
            copies += theirs["copies_sent"].as_u64().unwrap_or(0);
        }
    }
    let n = before.len().max(after.len()).max(1);
    let ideal = keys as f64 / n as f64;
    let cost = if keys == 0 {
        format!("{what}: no keys to move")
    } else {
        format!(
            "{what}: {moved} of {keys} keys changed primary (ideal K/N {ideal:.0}: {:.2}x), {copies} copies sent",
            moved as f64 / ideal
        )
    };
    Line::from(vec![
        Span::styled("last join/leave: ", dim()),
        Span::raw(cost),
    ])
}

/// Every node's hint queues: who holds how many for whom.
fn hint_queues(nodes: &[NodeView]) -> Line<'static> {
    let queues: Vec<String> = nodes
        .iter()
        .flat_map(|n| {
            n.detail["hints"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, count)| count.as_u64().unwrap_or(0) > 0)
                .map(move |(owner, count)| format!("{} → {owner} {count}", n.node.id))
        })
        .collect();
    let mut spans = vec![Span::styled("hints waiting: ", dim())];
    if queues.is_empty() {
        spans.push(Span::styled("none", dim()));
    } else {
        spans.push(Span::styled(
            queues.join(" · "),
            Style::default().fg(Color::Yellow),
        ));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::fixture;
    use crate::engine::model::Health;
    use crate::engine::supervisor::ProcessState;
    use ratatui_core::backend::TestBackend;
    use ratatui_core::terminal::Terminal;
    use serde_json::json;

    fn cache_node(id: &str, state: ProcessState, detail: Value) -> NodeView {
        let health = match state {
            ProcessState::Running => Health::Responsive,
            ProcessState::Paused => Health::Unresponsive,
            ProcessState::Down => Health::Down,
        };
        NodeView {
            detail,
            ..fixture::node(id, state, health)
        }
    }

    fn detail(ring: &[&str], members: Value, hints: Value, change: Value) -> Value {
        let placement = PlacementKind::Ring { vnodes: 64 }.build(ring.iter().copied());
        let ownership: serde_json::Map<String, Value> = placement
            .ownership()
            .into_iter()
            .map(|(m, s)| (m, json!(s)))
            .collect();
        let waiting: u64 = hints
            .as_object()
            .map_or(0, |h| h.values().filter_map(Value::as_u64).sum());
        json!({
            "config": {"replicas": 3, "write_quorum": 2, "read_quorum": 2, "placement": "ring", "vnodes": 64},
            "placement": placement.describe(),
            "ring": ring,
            "members": members,
            "incarnation": 0,
            "ownership": ownership,
            "hints": hints,
            "hints_waiting": waiting,
            "last_ring_change": change,
        })
    }

    #[test]
    fn arcs_cover_the_circle_and_follow_ownership() {
        let ring = ["n1", "n2", "n3", "n4"];
        let d = detail(&ring, json!({}), json!({}), Value::Null);
        // 4 x 64 tokens fit a circle 600 cells around: drawn where they are.
        let (arcs, drawn) = arcs(&d, &ring.map(String::from), 600.0);
        assert_eq!(drawn, Drawn::Positions);
        let on_circle = |m: &str| {
            arcs[m]
                .iter()
                .filter(|(x, y)| (x * x + y * y - 1.0).abs() < 1e-9)
                .count()
        };
        assert_eq!(ring.map(on_circle).iter().sum::<usize>(), ARC_SAMPLES);
        // Inside, one mark per vnode.
        assert_eq!(arcs["n1"].len() - on_circle("n1"), 64);
        for member in ring {
            let share = on_circle(member) as f64 / ARC_SAMPLES as f64;
            let owned = d["ownership"][member].as_f64().unwrap();
            assert!((share - owned).abs() < 0.02, "{member}: {share} vs {owned}");
        }
    }

    /// 256 tokens on a circle 80 cells around would paint every cell in the colour of the
    /// last member drawn: the arcs show shares instead, one contiguous arc per member, with
    /// no token marks.
    #[test]
    fn many_vnodes_are_drawn_as_one_arc_per_member() {
        let ring = ["n1", "n2", "n3", "n4"];
        let d = detail(&ring, json!({}), json!({}), Value::Null);
        let (arcs, drawn) = arcs(&d, &ring.map(String::from), 80.0);
        assert_eq!(drawn, Drawn::Shares);
        let mut owners: Vec<&str> = Vec::new();
        for i in 0..ARC_SAMPLES {
            let turn = i as f64 / ARC_SAMPLES as f64;
            let point = at(turn, 1.0);
            let owner: &str = ring.iter().find(|m| arcs[**m].contains(&point)).unwrap();
            if owners.last() != Some(&owner) {
                owners.push(owner);
            }
        }
        assert_eq!(
            owners,
            ["n1", "n2", "n3", "n4"],
            "one arc each, in ring order"
        );
        for member in ring {
            let share = arcs[member].len() as f64 / ARC_SAMPLES as f64;
            let owned = d["ownership"][member].as_f64().unwrap();
            assert!((share - owned).abs() < 0.01, "{member}: {share} vs {owned}");
        }
    }

    /// Members are told apart by colours that mean no state: never the green, yellow, red or
    /// magenta of alive, suspect, dead and unresponsive.
    #[test]
    fn member_colours_are_not_state_colours() {
        let nodes: Vec<NodeView> = (1..=8)
            .map(|i| fixture::node(&format!("n{i}"), ProcessState::Running, Health::Responsive))
            .collect();
        let colours: Vec<Color> = nodes
            .iter()
            .map(|n| node_color(&nodes, &n.node.id))
            .collect();
        for colour in &colours {
            assert!(
                ![
                    Color::Green,
                    Color::Yellow,
                    Color::Red,
                    Color::LightRed,
                    Color::Magenta
                ]
                .contains(colour),
                "{colour:?}"
            );
        }
        let distinct: std::collections::BTreeSet<String> =
            colours[..6].iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(distinct.len(), 6, "six members, six colours");
    }

    #[test]
    fn the_ring_view_of_a_dead_member_with_hints_waiting() {
        let ring = ["n1", "n2", "n3", "n4", "n5"];
        let seen_by_n1 = json!({
            "n2": {"state": "dead", "incarnation": 0},
            "n3": {"state": "alive", "incarnation": 1},
            "n4": {"state": "suspect", "incarnation": 0},
            "n5": {"state": "alive", "incarnation": 0},
        });
        let change = |moved: u64| json!({"before": ["n1", "n2", "n3", "n4"], "members": ring, "primary_keys": 400, "primaries_moved": moved, "copies_sent": 2 * moved});
        let mut app = fixture::with_nodes(vec![
            cache_node(
                "n1",
                ProcessState::Running,
                detail(&ring, seen_by_n1, json!({}), change(80)),
            ),
            cache_node("n2", ProcessState::Down, Value::Null),
            cache_node(
                "n3",
                ProcessState::Running,
                detail(&ring, json!({}), json!({"n2": 37}), change(90)),
            ),
            cache_node(
                "n4",
                ProcessState::Running,
                detail(&ring, json!({}), json!({"n2": 12}), change(85)),
            ),
            cache_node(
                "n5",
                ProcessState::Running,
                detail(&ring, json!({}), json!({}), change(60)),
            ),
        ]);
        app.selected = 0;
        let mut terminal = Terminal::new(TestBackend::new(110, 16)).unwrap();
        terminal
            .draw(|frame| RingView.render(&app, frame, frame.area()))
            .unwrap();
        let screen = terminal.backend().to_string();
        assert!(screen.contains("as n1 sees it"), "{screen}");
        app.selected = 1;
        terminal
            .draw(|frame| RingView.render(&app, frame, frame.area()))
            .unwrap();
        let down = terminal.backend().to_string();
        assert!(down.contains("as n1 sees it (n2 is down)"), "{down}");
        app.selected = 0;
        terminal
            .draw(|frame| RingView.render(&app, frame, frame.area()))
            .unwrap();
        // 315 of 1600 keys: ideal 320.
        assert!(
            screen.contains("n5 joined: 315 of 1600 keys changed primary"),
            "{screen}"
        );
        assert!(
            screen.contains("320:") && screen.contains("0.98x"),
            "{screen}"
        );
        assert!(screen.contains("n3 → n2 37 · n4 → n2 12"), "{screen}");
        insta::assert_snapshot!(screen);
    }
}
