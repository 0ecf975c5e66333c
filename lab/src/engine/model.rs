//! The cluster model: what the lab knows about every node right now, refreshed several times
//! a second, published as a stream of snapshots. The console renders only this; it never talks
//! to a node itself, so a paused node can never freeze the screen.
//!
//! The poller asks every running node for `/status` concurrently with a short timeout. A node
//! that does not answer in time is `unresponsive` (that is what SIGSTOP looks like from
//! outside); it keeps its last known role and detail, marked with their age. Role changes
//! (`follower -> leader`) go on the timeline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::events::EventKind;
use super::supervisor::{NodeInfo, ProcessState, Supervisor};

/// How often nodes are polled (5 Hz).
pub const POLL_EVERY: Duration = Duration::from_millis(200);

/// Whether a node answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Answered its last `/status` in time.
    Responsive,
    /// Its process exists but did not answer in time (paused, overloaded, wedged).
    Unresponsive,
    /// No process.
    Down,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub node: NodeInfo,
    pub health: Health,
    /// The role the node reported (`server`, `leader`...), last known.
    pub role: Option<String>,
    /// The service's `/status` detail, last known.
    pub detail: serde_json::Value,
    /// Seconds since role and detail were fresh.
    pub status_age_secs: Option<f64>,
    /// The node's uptime as of its last answer.
    pub uptime_secs: Option<f64>,
}

impl NodeView {
    /// What status predicates and paths are read from: `{"role": ..., "detail": ...}`, as the
    /// node last reported them.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({"role": self.role, "detail": self.detail})
    }

    /// The role it reports now: only a node that answered its last poll has one (a down or
    /// paused node's last role is history: a dead leader is not the leader).
    pub fn live_role(&self) -> Option<&str> {
        match self.health {
            Health::Responsive => self.role.as_deref(),
            Health::Unresponsive | Health::Down => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterModel {
    pub project: &'static str,
    /// Seconds since the run started.
    pub elapsed_secs: f64,
    pub nodes: Vec<NodeView>,
}

/// What a node last said about itself, and when.
struct Known {
    role: Option<String>,
    detail: serde_json::Value,
    uptime_secs: Option<f64>,
    at: Instant,
}

/// The `/status` of every node with a process (running or paused), asked all at once; a node
/// that does not answer within `http`'s timeout is left out.
pub async fn fetch_statuses(
    http: &reqwest::Client,
    nodes: &[NodeInfo],
) -> BTreeMap<String, serde_json::Value> {
    let mut polls = JoinSet::new();
    for node in nodes {
        if let (ProcessState::Running | ProcessState::Paused, Some(admin)) =
            (node.state, node.admin)
        {
            let (http, id) = (http.clone(), node.id.clone());
            polls.spawn(async move {
                let status = async {
                    http.get(format!("http://{admin}/status"))
                        .send()
                        .await?
                        .json::<serde_json::Value>()
                        .await
                };
                (id, status.await.ok())
            });
        }
    }
    let mut fresh = BTreeMap::new();
    while let Some(Ok((id, status))) = polls.join_next().await {
        if let Some(status) = status {
            fresh.insert(id, status);
        }
    }
    fresh
}

/// Starts polling; the receiver always holds the latest snapshot. Stops when every receiver
/// is dropped.
pub fn spawn_poller(supervisor: Arc<Supervisor>) -> watch::Receiver<ClusterModel> {
    let (tx, rx) = watch::channel(ClusterModel {
        project: supervisor.project().name,
        elapsed_secs: 0.0,
        nodes: Vec::new(),
    });
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(POLL_EVERY * 3 / 4)
            .build()
            .expect("a plain HTTP client builds");
        let mut known: BTreeMap<String, Known> = BTreeMap::new();
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let nodes = supervisor.nodes().await;
            let fresh = fetch_statuses(&http, &nodes).await;
            let mut views = Vec::with_capacity(nodes.len());
            for node in nodes {
                let health = match (node.state, fresh.get(&node.id)) {
                    (ProcessState::Down, _) => Health::Down,
                    (_, Some(_)) => Health::Responsive,
                    (_, None) => Health::Unresponsive,
                };
                if let Some(status) = fresh.get(&node.id) {
                    let role = status
                        .get("role")
                        .and_then(|r| r.as_str())
                        .map(str::to_string);
                    let before = known.get(&node.id).and_then(|k| k.role.clone());
                    if let (Some(old), Some(new)) = (&before, &role)
                        && old != new
                    {
                        supervisor.timeline().record(
                            EventKind::NodeEvent,
                            Some(&node.id),
                            format!("role: {old} -> {new}"),
                        );
                    }
                    let known_now = Known {
                        role,
                        detail: status.get("detail").cloned().unwrap_or_default(),
                        uptime_secs: status.get("uptime_secs").and_then(|u| u.as_f64()),
                        at: Instant::now(),
                    };
                    known.insert(node.id.clone(), known_now);
                }
                let last = known.get(&node.id);
                views.push(NodeView {
                    health,
                    role: last.and_then(|k| k.role.clone()),
                    detail: last.map(|k| k.detail.clone()).unwrap_or_default(),
                    status_age_secs: last.map(|k| k.at.elapsed().as_secs_f64()),
                    uptime_secs: last.and_then(|k| k.uptime_secs),
                    node,
                });
            }
            let model = ClusterModel {
                project: supervisor.project().name,
                elapsed_secs: supervisor.timeline().elapsed().as_secs_f64(),
                nodes: views,
            };
            if tx.send(model).is_err() {
                return;
            }
        }
    });
    rx
}
