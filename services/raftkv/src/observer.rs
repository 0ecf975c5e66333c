//! Watches openraft's metrics and turns changes into what the lab sees: log events with a
//! stable `event` field (`became_leader`, `stepped_down`, `term_changed`, `leader_changed`)
//! for its timeline, Prometheus figures, and the committed index for `/status`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::metrics::RaftKvMetrics;
use crate::status::Committed;
use crate::store::StateMachine;
use crate::types::{Names, Raft};

pub async fn observe(
    raft: Raft,
    names: Names,
    metrics: RaftKvMetrics,
    machine: StateMachine,
    committed: Arc<Committed>,
    shutdown: CancellationToken,
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
        let stats = &machine.stats;
        metrics
            .snapshots_built
            .set(stats.snapshots_built.load(Ordering::Relaxed) as i64);
        metrics
            .snapshots_installed
            .set(stats.snapshots_installed.load(Ordering::Relaxed) as i64);
    }
}
