//! What a raftkv node shows the lab (`/status` detail): its Raft state as the Raft view draws
//! it, and its store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use distlab_runtime::admin::NodeStatus;
use openraft::ServerState;
use serde_json::json;

use crate::store::{LogStore, StateMachine};
use crate::types::{Names, Raft};

/// The committed index, which openraft's metrics do not carry: the observer keeps it here.
#[derive(Default)]
pub struct Committed(AtomicU64);

impl Committed {
    pub fn set(&self, index: u64) {
        self.0.store(index, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct RaftKvStatus {
    pub raft: Raft,
    pub names: Names,
    pub me: String,
    pub log: LogStore,
    pub machine: StateMachine,
    pub committed: Arc<Committed>,
    /// Fixed at start: read mode, fsync, timeouts, snapshot policy.
    pub config: serde_json::Value,
}

/// `leader`, `follower`, `candidate`, `learner` (a node not, or not yet, a voter).
pub fn role_name(state: ServerState, learners: &[String], me: &str) -> String {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower if learners.iter().any(|l| l == me) => "learner",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
    .to_string()
}

impl NodeStatus for RaftKvStatus {
    fn role(&self) -> String {
        let metrics = self.raft.metrics().borrow().clone();
        let learners: Vec<String> = metrics
            .membership_config
            .membership()
            .learner_ids()
            .map(|id| self.names.name(id))
            .collect();
        role_name(metrics.state, &learners, &self.me)
    }

    fn detail(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let name = |id: u64| self.names.name(id);
        let membership = m.membership_config.membership();
        let configs: Vec<Vec<String>> = membership
            .get_joint_config()
            .iter()
            .map(|config| config.iter().map(|id| name(*id)).collect())
            .collect();
        let learners: Vec<String> = membership.learner_ids().map(name).collect();
        let last = m.last_log_index.unwrap_or(0);
        let replication = m.replication.as_ref().map(|followers| {
            followers
                .iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| {
                    let matched = matched.map(|l| l.index);
                    (
                        name(*id),
                        json!({
                            "matched": matched,
                            "lag": last.saturating_sub(matched.unwrap_or(0)),
                        }),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
        });
        let stats = &self.machine.stats;
        json!({
            "role": role_name(m.state, &learners, &self.me),
            "term": m.current_term,
            "leader": m.current_leader.map(name),
            "vote": {
                "term": m.vote.leader_id().term,
                "for": m.vote.leader_id().voted_for().map(name),
                "committed": m.vote.is_committed(),
            },
            "last_log_index": m.last_log_index,
            "committed": self.committed.get(),
            "applied": m.last_applied.map(|l| l.index),
            "snapshot": m.snapshot.map(|l| l.index),
            "purged": m.purged.map(|l| l.index),
            "log_entries": self.log.len(),
            "membership": {
                "joint": configs.len() > 1,
                "configs": configs,
                "learners": learners,
            },
            "replication": replication,
            "millis_since_quorum_ack": m.millis_since_quorum_ack,
            "keys": self.machine.keys(),
            "sessions": self.machine.sessions(),
            "duplicates": stats.duplicates.load(Ordering::Relaxed),
            "snapshots_built": stats.snapshots_built.load(Ordering::Relaxed),
            "snapshots_installed": stats.snapshots_installed.load(Ordering::Relaxed),
            "config": self.config,
        })
    }
}
