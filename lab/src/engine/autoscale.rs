//! `--autoscale MIN..MAX` (or a scenario's `autoscale: MIN..MAX`): the lab's local analogue of
//! a cluster autoscaler scaling workers by queue depth. Once a second it reads the project's
//! scaling signal from the cluster model (Project 4: the coordinator's queue of tasks waiting
//! for a worker, and which workers are idle) and decides, by [`decide`]:
//! - **up**: the queue holds more than [`Policy::queue_per_node`] tasks per worker and there
//!   are fewer than MAX workers: one more (a worker retired earlier rejoins first, else the
//!   next planned node starts), through the same add-node path as `:add-node`;
//! - **down**: nothing is queued, there are more than MIN workers, and one has been idle for
//!   [`Policy::idle_ticks`] beats in a row: the newest idle one retires, through the
//!   remove-node path (its in-flight work, if any, is reassigned when its lease ends);
//! - otherwise nothing, and after any change it waits [`Policy::cooldown_ticks`] beats (the
//!   new worker needs a moment to take work before the queue means anything again).
//!
//! Every decision goes on the timeline with its reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::events::EventKind;
use super::model::NodeView;
use super::supervisor::Supervisor;

/// How many of the scaled role's nodes the autoscaler keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub min: usize,
    pub max: usize,
}

impl Range {
    /// `MIN..MAX`, at least 1 and MIN <= MAX.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (min, max) = text
            .split_once("..")
            .ok_or_else(|| format!("autoscale {text:?}: expected MIN..MAX, e.g. 1..4"))?;
        let number = |n: &str| {
            n.trim()
                .parse::<usize>()
                .map_err(|_| format!("autoscale {text:?}: {n:?} is not a number"))
        };
        let (min, max) = (number(min)?, number(max)?);
        if min == 0 || min > max {
            return Err(format!(
                "autoscale {text:?}: need 1 <= MIN <= MAX (MIN workers always run)"
            ));
        }
        Ok(Self { min, max })
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.min, self.max)
    }
}

/// What a project tells the autoscaler: the work waiting, and which nodes have none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signal {
    pub queue: u64,
    pub idle: Vec<String>,
}

/// How a project scales: which role, and where its signal comes from.
#[derive(Debug, Clone, Copy)]
pub struct Scaling {
    pub role: &'static str,
    /// The signal from the nodes' status (`None` while it cannot be read: nothing changes).
    pub signal: fn(&[NodeView]) -> Option<Signal>,
}

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub queue_per_node: u64,
    pub idle_ticks: u32,
    pub cooldown_ticks: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            queue_per_node: 2,
            idle_ticks: 3,
            cooldown_ticks: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Hold,
    Add { reason: String },
    Remove { node: String, reason: String },
}

/// What the autoscaler remembers between beats.
#[derive(Debug, Default)]
pub struct State {
    /// Beats in a row each node was idle.
    idle: BTreeMap<String, u32>,
    cooldown: u32,
}

/// One beat's decision, given the scaled role's running nodes (in start order) and the signal.
pub fn decide(
    range: Range,
    policy: Policy,
    members: &[String],
    signal: &Signal,
    state: &mut State,
) -> Decision {
    state.idle.retain(|n, _| members.contains(n));
    for node in members {
        let streak = state.idle.entry(node.clone()).or_insert(0);
        *streak = if signal.idle.contains(node) {
            *streak + 1
        } else {
            0
        };
    }
    if state.cooldown > 0 {
        state.cooldown -= 1;
        return Decision::Hold;
    }
    let n = members.len() as u64;
    if members.len() < range.max && signal.queue > policy.queue_per_node * n.max(1) {
        state.cooldown = policy.cooldown_ticks;
        return Decision::Add {
            reason: format!(
                "{} tasks queued for {n} workers (more than {} each)",
                signal.queue, policy.queue_per_node
            ),
        };
    }
    if members.len() > range.min && signal.queue == 0 {
        let retiring = members
            .iter()
            .rev()
            .find(|m| state.idle.get(*m).copied().unwrap_or(0) >= policy.idle_ticks);
        if let Some(node) = retiring {
            state.cooldown = policy.cooldown_ticks;
            state.idle.remove(node);
            return Decision::Remove {
                node: node.clone(),
                reason: format!("nothing queued and {node} idle for {} s", policy.idle_ticks),
            };
        }
    }
    Decision::Hold
}

/// Runs the autoscaler until `stop`: reads the model, decides, adds or retires a node.
pub async fn run(
    supervisor: Arc<Supervisor>,
    model: tokio::sync::watch::Receiver<super::model::ClusterModel>,
    range: Range,
    scaling: Scaling,
    stop: CancellationToken,
) {
    let policy = Policy::default();
    let mut state = State::default();
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            () = stop.cancelled() => return,
        }
        let (signal, members) = {
            let model = model.borrow();
            let members: Vec<String> = model
                .nodes
                .iter()
                .filter(|n| n.node.role == scaling.role)
                .map(|n| n.node.id.clone())
                .collect();
            ((scaling.signal)(&model.nodes), members)
        };
        let Some(signal) = signal else { continue };
        let timeline = supervisor.timeline();
        let outcome = match decide(range, policy, &members, &signal, &mut state) {
            Decision::Hold => continue,
            Decision::Add { reason } => {
                timeline.record(
                    EventKind::Note,
                    None,
                    format!("autoscale {range}: up: {reason}"),
                );
                match supervisor.removed_of_role(scaling.role).first() {
                    Some(id) => supervisor.rejoin(id).await,
                    None => supervisor.add_node().await.map(|_| ()),
                }
            }
            Decision::Remove { node, reason } => {
                timeline.record(
                    EventKind::Note,
                    Some(&node),
                    format!("autoscale {range}: down: {reason}"),
                );
                supervisor.remove_node(&node).await
            }
        };
        if let Err(e) = outcome {
            timeline.record(EventKind::Note, None, format!("autoscale: {e:#}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("w{i}")).collect()
    }

    fn signal(queue: u64, idle: &[&str]) -> Signal {
        Signal {
            queue,
            idle: idle.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn ranges_parse_and_bad_ones_say_why() {
        assert_eq!(Range::parse("1..4").unwrap(), Range { min: 1, max: 4 });
        assert!(Range::parse("4").unwrap_err().contains("MIN..MAX"));
        assert!(
            Range::parse("0..2")
                .unwrap_err()
                .contains("1 <= MIN <= MAX")
        );
        assert!(Range::parse("3..2").is_err());
        assert!(
            Range::parse("a..2")
                .unwrap_err()
                .contains("\"a\" is not a number")
        );
    }

    #[test]
    fn a_deep_queue_adds_workers_up_to_max_and_idle_ones_retire_down_to_min() {
        let range = Range { min: 1, max: 3 };
        let policy = Policy::default();
        let mut state = State::default();
        let mut decide =
            |members: &[String], s: &Signal| decide(range, policy, members, s, &mut state);
        assert!(matches!(
            decide(&ids(1), &signal(10, &[])),
            Decision::Add { .. }
        ));
        // Cooling down: the new worker needs a moment.
        assert_eq!(decide(&ids(2), &signal(10, &[])), Decision::Hold);
        assert_eq!(decide(&ids(2), &signal(10, &[])), Decision::Hold);
        assert!(matches!(
            decide(&ids(2), &signal(10, &[])),
            Decision::Add { .. }
        ));
        decide(&ids(3), &signal(10, &[]));
        decide(&ids(3), &signal(10, &[]));
        assert_eq!(decide(&ids(3), &signal(100, &[])), Decision::Hold, "at max");
        // The queue drains; w3 and w2 go idle; after 3 idle beats the newest retires.
        assert_eq!(decide(&ids(3), &signal(0, &["w2", "w3"])), Decision::Hold);
        assert_eq!(decide(&ids(3), &signal(0, &["w2", "w3"])), Decision::Hold);
        match decide(&ids(3), &signal(0, &["w2", "w3"])) {
            Decision::Remove { node, .. } => assert_eq!(node, "w3"),
            other => panic!("{other:?}"),
        }
        // Work queued again: nobody retires, even idle.
        for _ in 0..5 {
            assert_ne!(
                std::mem::discriminant(&decide(&ids(2), &signal(1, &["w2"]))),
                std::mem::discriminant(&Decision::Remove {
                    node: String::new(),
                    reason: String::new()
                })
            );
        }
        // Never below min.
        for _ in 0..10 {
            decide(&ids(1), &signal(0, &["w1"]));
        }
        assert_eq!(decide(&ids(1), &signal(0, &["w1"])), Decision::Hold);
    }
}
