//! What a raftkv node shows the lab (`/status` detail): its Raft state as the Raft view draws
//! it, and its store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use distlab_raft::observer::Committed;
use distlab_raft::status::raft_detail;
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
        let mut detail = raft_detail(&m, &self.names, &self.me, self.committed.get());
        let stats = &self.machine.stats;
        let own = json!({
            "keys": self.machine.keys(),
            "sessions": self.machine.sessions(),
            "duplicates": stats.duplicates.load(Ordering::Relaxed),
            "snapshots_built": stats.snapshots_built.load(Ordering::Relaxed),
            "snapshots_installed": stats.snapshots_installed.load(Ordering::Relaxed),
            "config": self.config,
        });
        if let serde_json::Value::Object(own) = own {
            detail.extend(own);
        }
        serde_json::Value::Object(detail)
    }
}
