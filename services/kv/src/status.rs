//! What a kv node shows the lab: its store, how full it is, and how it is configured.

use std::sync::Arc;

use distlab_runtime::admin::NodeStatus;
use serde_json::json;

use crate::metrics::KvMetrics;
use crate::store::Store;

pub struct KvStatus {
    pub store: Arc<dyn Store>,
    pub metrics: KvMetrics,
    /// The configuration, fixed at start: store kind, sync mode, limits, token policy, TLS.
    pub config: serde_json::Value,
}

impl NodeStatus for KvStatus {
    fn role(&self) -> String {
        "server".to_string()
    }

    fn detail(&self) -> serde_json::Value {
        let stats = self.store.stats();
        json!({
            "keys": stats.keys,
            "tokens": stats.tokens,
            "replays": self.metrics.replays(),
            "config": self.config,
        })
    }
}
