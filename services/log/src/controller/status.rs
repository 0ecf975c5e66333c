//! What a controller shows the lab (`/status` detail): its Raft state (the fields the lab's
//! Raft view draws) and the cluster metadata as it has applied it.

use std::sync::Arc;

use distlab_raft::observer::Committed;
use distlab_raft::status::raft_detail;
use distlab_raft::{Members, Names, role_name};
use distlab_runtime::admin::NodeStatus;
use serde_json::json;

use super::{MetadataMachine, Raft};

pub struct ControllerStatus {
    pub raft: Raft,
    pub names: Names,
    pub me: String,
    pub machine: MetadataMachine,
    pub committed: Arc<Committed>,
    /// Fixed at start: timeouts, snapshot policy, the quorum.
    pub config: serde_json::Value,
}

impl NodeStatus for ControllerStatus {
    /// The Raft role (`leader`, `follower`, `candidate`): the lab knows which nodes are
    /// controllers from its plan.
    fn role(&self) -> String {
        let metrics = self.raft.metrics().borrow().clone();
        role_name(metrics.state, &Members::of(&metrics, &self.names), &self.me)
    }

    fn detail(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow().clone();
        let mut detail = raft_detail(&m, &self.names, &self.me, self.committed.get());
        let metadata = self
            .machine
            .read(|md| serde_json::to_value(md).unwrap_or_default());
        let own = json!({
            "service": "controller",
            "metadata": metadata,
            "snapshots_built": self.machine.snapshots_built(),
            "config": self.config,
        });
        if let serde_json::Value::Object(own) = own {
            detail.extend(own);
        }
        serde_json::Value::Object(detail)
    }
}
