//! Watches openraft's metrics and turns changes into what the lab sees: log events with a
//! stable `event` field (`became_leader`, `stepped_down`, `election_started`, `term_changed`,
//! `leader_changed`) for its timeline, Prometheus figures ([`RaftFigures`]), and the committed
//! index for `/status` ([`Committed`]). Every Raft service runs one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::{Names, Types};

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

/// Raft's own figures on `/metrics`, mirrored from openraft's metrics.
#[derive(Clone, Default)]
pub struct RaftFigures {
    pub elections_won: Counter,
    pub term_changes: Counter,
    pub leader_changes: Counter,
    pub term: Gauge,
    pub apply_lag: Gauge,
}

impl RaftFigures {
    pub fn register(registry: &mut Registry) -> Self {
        let figures = Self::default();
        let f = &figures;
        registry.register(
            "raft_elections_won",
            "times this node became leader",
            f.elections_won.clone(),
        );
        registry.register(
            "raft_term_changes",
            "terms this node moved through",
            f.term_changes.clone(),
        );
        registry.register(
            "raft_leader_changes",
            "changes of the leader this node knows",
            f.leader_changes.clone(),
        );
        registry.register("raft_term", "the current term", f.term.clone());
        registry.register(
            "raft_apply_lag",
            "log entries this node holds but has not applied",
            f.apply_lag.clone(),
        );
        figures
    }
}

/// Runs until `shutdown`; `on_change` runs after every change of openraft's metrics (the
/// service's own figures).
pub async fn observe<C: Types>(
    raft: openraft::Raft<C>,
    names: Names,
    metrics: RaftFigures,
    committed: Arc<Committed>,
    shutdown: CancellationToken,
    mut on_change: impl FnMut() + Send + 'static,
) {
    let mut watch = raft.metrics();
    let mut last_term = 0;
    let mut last_leader = None;
    let mut last_state = ServerState::Learner;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            _ = tick.tick() => {
                // Not in openraft's metrics: a round trip to Raft's core, at most 10 a second
                // whatever the write rate.
                if let Ok(Some(index)) = raft
                    .with_raft_state(|st| st.committed.map(|l| l.index))
                    .await
                {
                    committed.set(index);
                }
                continue;
            }
            () = shutdown.cancelled() => return,
        }
        let m = watch.borrow_and_update().clone();
        if m.current_term != last_term {
            if last_term != 0 {
                metrics.term_changes.inc();
            }
            tracing::info!(
                event = "term_changed",
                term = m.current_term,
                "term {}",
                m.current_term
            );
            last_term = m.current_term;
        }
        if m.current_leader != last_leader {
            let leader = m.current_leader.map(|id| names.name(id));
            metrics.leader_changes.inc();
            tracing::info!(
                event = "leader_changed",
                leader = leader.as_deref().unwrap_or("none"),
                term = m.current_term,
                "leader is now {}",
                leader.as_deref().unwrap_or("unknown")
            );
            last_leader = m.current_leader;
        }
        if m.state != last_state {
            if m.state == ServerState::Leader {
                metrics.elections_won.inc();
                tracing::info!(
                    event = "became_leader",
                    term = m.current_term,
                    "became leader in term {}",
                    m.current_term
                );
            } else if last_state == ServerState::Leader {
                tracing::info!(
                    event = "stepped_down",
                    term = m.current_term,
                    "no longer the leader"
                );
            } else if m.state == ServerState::Candidate {
                tracing::info!(
                    event = "election_started",
                    term = m.current_term,
                    "election timeout: asking for votes"
                );
            }
            last_state = m.state;
        }
        metrics.term.set(m.current_term as i64);
        let last = m.last_log_index.unwrap_or(0);
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        metrics.apply_lag.set(last.saturating_sub(applied) as i64);
        on_change();
    }
}
