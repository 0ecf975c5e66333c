//! What a raftkv node shows the lab (`/status` detail): its Raft state as the Raft view draws
//! it, and its store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use distlab_raft::observer::Committed;
use distlab_raft::{Members, role_name};
use distlab_runtime::admin::NodeStatus;
use serde_json::json;

use crate::store::StateMachine;
use crate::types::{Names, Raft};

pub struct RaftKvStatus {
    pub raft: Raft,
    pub names: Names,
    pub me: String,
    pub machine: StateMachine,
    pub committed: Arc<Committed>,
    /// Fixed at start: read mode, fsync, timeouts, snapshot policy.
    pub config: serde_json::Value,
}

impl NodeStatus for RaftKvStatus {
    fn role(&self) -> String {
        let metrics = self.raft.metrics().borrow().clone();
        role_name(metrics.state, &Members::of(&metrics, &self.names), &self.me)
    }

    fn detail(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let name = |id: u64| self.names.name(id);
        let members = Members::of(&m, &self.names);
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
            "role": role_name(m.state, &members, &self.me),
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
            // The entries between the purge point and the end of the log.
            "log_entries": m.last_log_index.map_or(0, |last| last + 1 - m.purged.map_or(0, |p| p.index + 1)),
            "membership": {
                "joint": members.configs.len() > 1,
                "voters": members.voters.len(),
                "configs": members.configs,
                "learners": members.learners,
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
