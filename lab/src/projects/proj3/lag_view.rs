//! The lag view: the consumer group as its members and its coordinator report it, with each
//! member's and each partition's lag over the last minute and the group's rebalances from the
//! timeline.
//!
//! ```text
//! group lab · coordinator b2 · stable · generation 4 · 3 rebalances, last 535 ms (g2-b2e1-2's session expired)
//! node  state      gen  partitions            lag   last minute
//! g1    member     4    events/0 events/1     12    ▁▂▁▁█▅▂▁▁
//! g2    down       3    events/2              -
//! partition           committed hw        lag    member      last minute
//! events/0            1520      1532      12     g1          ▁▁▂█▅▁▁
//! 14.2s b2 rebalance_completed: group lab: generation 4 with 1 members after 535 ms (...)
//! ```
//!
//! Members come from the consumer nodes' `/status` (generation, assignment, lag); the
//! committed offsets, high watermarks and the group's state from the broker coordinating it
//! (its `detail.groups`).

use ratatui_core::layout::{Constraint, Layout, Rect};
use ratatui_core::style::{Color, Modifier, Style};
use ratatui_core::terminal::Frame;
use ratatui_core::text::{Line, Span};
use ratatui_widgets::block::Block;
use ratatui_widgets::borders::Borders;
use ratatui_widgets::paragraph::Paragraph;
use ratatui_widgets::sparkline::Sparkline;
use serde_json::Value;

use crate::console::app::{App, NodeState};
use crate::console::ui::state_style;
use crate::console::views::{View, recent_events};
use crate::engine::model::NodeView;

pub struct LagView;

/// The timeline events this view lists.
const GROUP_EVENTS: &[&str] = &[
    "rebalance_",
    "member_removed",
    "joined_generation",
    "left_group",
    "group_empty",
    "coordinator_",
];

/// The group as its coordinator reports it: (coordinator, the group's detail).
fn coordinated<'a>(nodes: &'a [NodeView], group: &str) -> Option<(&'a str, &'a Value)> {
    nodes
        .iter()
        .filter(|n| n.node.role == "broker" && NodeState::of(n) != NodeState::Down)
        .find_map(|n| {
            let groups = n.detail.get("groups")?.as_array()?;
            let g = groups.iter().find(|g| g["group"] == group)?;
            Some((n.node.id.as_str(), g))
        })
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The group's header line.
fn summary(group: &str, coordinator: Option<(&str, &Value)>) -> String {
    let Some((broker, g)) = coordinator else {
        return format!("group {group} · no coordinator reports it yet");
    };
    let last = &g["last_rebalance"];
    let rebalance = if last.is_null() {
        String::new()
    } else {
        format!(
            ", last {} ms ({})",
            text(&last["took_ms"]),
            text(&last["reason"])
        )
    };
    format!(
        "group {group} · coordinator {broker} · {} · generation {} · {} rebalances{rebalance}",
        text(&g["state"]),
        text(&g["generation"]),
        text(&g["rebalances"]),
    )
}

/// The group the consumers are in (the lab runs one).
fn group_of(nodes: &[NodeView]) -> String {
    nodes
        .iter()
        .filter(|n| n.node.role == "consumer")
        .find_map(|c| c.detail["config"]["group"].as_str())
        .unwrap_or("lab")
        .to_string()
}

impl View for LagView {
    fn title(&self) -> &'static str {
        "lag"
    }

    /// The summary, a row per member and per partition with their headers, and a few of the
    /// group's events.
    fn wanted_rows(&self, app: &App, _width: u16) -> Option<u16> {
        let nodes = &app.model.nodes;
        let consumers = nodes.iter().filter(|n| n.node.role == "consumer").count();
        let partitions = coordinated(nodes, &group_of(nodes))
            .and_then(|(_, g)| g["partitions"].as_object().map(|p| p.len()))
            .unwrap_or(0);
        Some((3 + consumers + partitions + 3) as u16)
    }

    fn render(&self, app: &App, frame: &mut Frame, area: Rect) {
        let nodes = &app.model.nodes;
        let consumers: Vec<&NodeView> =
            nodes.iter().filter(|n| n.node.role == "consumer").collect();
        let group = group_of(nodes);
        let coordinator = coordinated(nodes, &group);
        let total: u64 = consumers
            .iter()
            .filter_map(|c| c.detail["total_lag"].as_u64())
            .sum();
        let block = Block::default()
            .borders(Borders::ALL)
            .title(format!(" lag: group {group} · {total} behind "));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if inner.height < 3 || inner.width < 50 {
            return;
        }
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let mut top = vec![
            Line::from(summary(&group, coordinator)),
            Line::styled(
                format!(
                    "{:<6}{:<11}{:<5}{:<30}{:<7}last minute",
                    "node", "state", "gen", "partitions", "lag"
                ),
                bold,
            ),
        ];
        let members_at = top.len() as u16;
        for c in &consumers {
            let state = NodeState::of(c);
            // A member that is not running shows no stale figures.
            let live = state == NodeState::Running;
            let shown = if live {
                text(&c.detail["state"])
            } else {
                state.name().to_string()
            };
            let figure = |field: &str| {
                if live {
                    text(&c.detail[field])
                } else {
                    "-".into()
                }
            };
            let partitions: Vec<String> = c.detail["assignment"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|_| live)
                .map(text)
                .collect();
            top.push(Line::from(vec![
                Span::raw(format!("{:<6}", c.node.id)),
                Span::styled(format!("{shown:<11}"), state_style(state)),
                Span::raw(format!(
                    "{:<5}{:<30}{:<7}",
                    figure("generation"),
                    partitions.join(" "),
                    figure("total_lag"),
                )),
            ]));
        }
        top.push(Line::styled(
            format!(
                "{:<20}{:<10}{:<10}{:<7}{:<12}last minute",
                "partition", "committed", "hw", "lag", "member"
            ),
            bold,
        ));
        let partitions_at = top.len() as u16;
        let mut partition_names = Vec::new();
        if let Some((_, g)) = coordinator
            && let Some(partitions) = g["partitions"].as_object()
        {
            for (name, p) in partitions {
                let member = text(&p["member"]);
                // Member ids are `client-coordinator-n`: the client (the node) is enough here.
                let member = member.split('-').next().unwrap_or("-").to_string();
                top.push(Line::from(format!(
                    "{name:<20}{:<10}{:<10}{:<7}{member:<12}",
                    text(&p["committed"]),
                    text(&p["high_watermark"]),
                    text(&p["lag"]),
                )));
                partition_names.push(name.clone());
            }
        }
        let [table, events] =
            Layout::vertical([Constraint::Length(top.len() as u16), Constraint::Fill(1)])
                .areas(inner);
        frame.render_widget(Paragraph::new(top), table);
        // Lag over the last minute, after each member's and each partition's row.
        let spark_x = table.x + 59;
        if table.width > 62 {
            let width = table.width - 59;
            let members = consumers.iter().enumerate().map(|(i, c)| {
                (
                    members_at + i as u16,
                    app.series.get(&c.node.id).map(|s| &s.lag),
                )
            });
            let partitions = partition_names
                .iter()
                .enumerate()
                .map(|(i, name)| (partitions_at + i as u16, app.partition_lag.get(name)));
            for (row, series) in members.chain(partitions) {
                let y = table.y + row;
                if y >= table.y + table.height {
                    break;
                }
                let data: Vec<u64> = series.map_or(Vec::new(), |s| {
                    let skip = s.len().saturating_sub(width as usize);
                    s.iter().skip(skip).copied().collect()
                });
                frame.render_widget(
                    Sparkline::default()
                        .data(&data)
                        .style(Style::default().fg(Color::Yellow)),
                    Rect {
                        x: spark_x,
                        y,
                        width,
                        height: 1,
                    },
                );
            }
        }
        let lines = recent_events(app, GROUP_EVENTS, events.height as usize, events.width);
        frame.render_widget(Paragraph::new(lines), events);
    }
}

#[cfg(test)]
mod tests {
    /// The whole console on a Project 3 cluster, on its lag view: g2 was killed, g1 took its
    /// partition and is working off the backlog.
    #[test]
    fn the_lag_view_after_a_consumer_died() {
        use ratatui_core::backend::TestBackend;
        use ratatui_core::terminal::Terminal;
        let app = crate::console::fixture::log_app(1);
        let ui = crate::console::views::for_project(app.project);
        let mut terminal = Terminal::new(TestBackend::new(140, 40)).unwrap();
        terminal
            .draw(|frame| crate::console::ui::draw(frame, &app, &ui))
            .unwrap();
        insta::assert_snapshot!(terminal.backend().to_string());
    }
}
