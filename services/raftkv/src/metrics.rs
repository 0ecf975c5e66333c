//! Project 2's own metrics (request counts and latencies by method come from the runtime's
//! RPC layer). Raft's figures are mirrored from openraft's metrics by [`crate::observer`].

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct RaftKvMetrics {
    pub proposals: Counter,
    /// From proposal to applied outcome, on the leader.
    pub commit_seconds: Histogram,
    pub lease_reads: Counter,
    pub read_index_reads: Counter,
    pub elections_won: Counter,
    pub term_changes: Counter,
    pub leader_changes: Counter,
    pub term: Gauge,
    pub apply_lag: Gauge,
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
            elections_won: Counter::default(),
            term_changes: Counter::default(),
            leader_changes: Counter::default(),
            term: Gauge::default(),
            apply_lag: Gauge::default(),
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
            "raft_elections_won",
            "times this node became leader",
            m.elections_won.clone(),
        );
        registry.register(
            "raft_term_changes",
            "terms this node moved through",
            m.term_changes.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "changes of the leader this node knows",
            m.leader_changes.clone(),
        );
        registry.register("raft_term", "the current term", m.term.clone());
        registry.register(
            "raft_apply_lag",
            "log entries this node holds but has not applied",
            m.apply_lag.clone(),
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
