//! Project 2's own metrics (request counts and latencies by method come from the runtime's
//! RPC layer). Raft's figures are mirrored from openraft's metrics by `distlab_raft::observer`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::atomic::Ordering;

use distlab_raft::observer::RaftFigures;

use crate::store::machine::MachineStats;

#[derive(Clone)]
pub struct RaftKvMetrics {
    pub proposals: Counter,
    /// From proposal to applied outcome, on the leader.
    pub commit_seconds: Histogram,
    pub lease_reads: Counter,
    pub read_index_reads: Counter,
    /// Raft's own (elections, terms, leaders, apply lag).
    pub raft: RaftFigures,
    pub snapshots_built: Gauge,
    pub snapshots_installed: Gauge,
}

impl RaftKvMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            proposals: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            lease_reads: Counter::default(),
            read_index_reads: Counter::default(),
            raft: RaftFigures::register(registry),
            snapshots_built: Gauge::default(),
            snapshots_installed: Gauge::default(),
        };
        let m = &metrics;
        registry.register(
            "raft_proposals",
            "client writes proposed on this node",
            m.proposals.clone(),
        );
        registry.register(
            "raft_commit_seconds",
            "from proposal to applied outcome, on the leader",
            m.commit_seconds.clone(),
        );
        registry.register(
            "raft_lease_reads",
            "reads served under the leader lease",
            m.lease_reads.clone(),
        );
        registry.register(
            "raft_read_index_reads",
            "reads that confirmed leadership with a heartbeat round",
            m.read_index_reads.clone(),
        );
        registry.register(
            "raft_snapshots_built",
            "snapshots built",
            m.snapshots_built.clone(),
        );
        registry.register(
            "raft_snapshots_installed",
            "snapshots received from a leader and installed",
            m.snapshots_installed.clone(),
        );
        metrics
    }
}

impl RaftKvMetrics {
    /// Copies the state machine's counters into the gauges (after each Raft change).
    pub fn mirror(&self, stats: &MachineStats) {
        self.snapshots_built
            .set(stats.snapshots_built.load(Ordering::Relaxed) as i64);
        self.snapshots_installed
            .set(stats.snapshots_installed.load(Ordering::Relaxed) as i64);
    }
}
