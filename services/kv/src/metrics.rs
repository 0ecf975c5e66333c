//! Project 0's own metrics. Request counts and latencies by method and code come from the
//! runtime's RPC layer; client attempts and retries from the runtime's retry policy.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Default)]
pub struct KvMetrics {
    replays: Family<OpLabels, Counter>,
}

impl KvMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "kv_idempotent_replays",
            "retried mutations answered from their idempotency token instead of being applied again",
            metrics.replays.clone(),
        );
        metrics
    }

    pub fn replayed(&self, op: &'static str) {
        self.replays.get_or_create(&OpLabels { op }).inc();
    }

    pub fn replays(&self) -> u64 {
        ["put", "delete"]
            .into_iter()
            .map(|op| self.replays.get_or_create(&OpLabels { op }).get())
            .sum()
    }
}
