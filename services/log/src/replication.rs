//! Partition replication as pure state machines, without I/O: what a partition's leader
//! knows about its followers (how far each has fetched, whether it is in sync), which
//! decides the high watermark, the in-sync replica set (ISR) and when an `acks=all` produce
//! is done; and where a follower must cut its log when it starts following a new leader.
//!
//! The rules are Kafka's:
//! - A follower's fetch at offset X says it holds everything before X: X is its log end.
//! - It is caught up when X reaches the leader's log end, or the log end the leader had at the
//!   follower's previous fetch (so a follower that keeps up with a steady stream of appends,
//!   always one fetch behind, still counts). One not caught up for `lag_time_max` falls out
//!   of the ISR; one whose log end reaches the high watermark (within this leader's epoch)
//!   comes back.
//! - ISR changes are proposals: the controller commits them (the leader is told). Until then
//!   the high watermark counts the larger of the two sets, so it never runs ahead of a replica
//!   that may still be counted in sync.
//! - The high watermark is the smallest log end in the ISR, and never goes back. Consumers
//!   read below it; an `acks=all` produce is answered when it passes the batch.
//! - `acks=all` needs at least `min_insync` replicas in the ISR, checked when the batch is
//!   appended and again when it is committed.

use std::collections::{BTreeMap, BTreeSet};

use crate::storage::epochs::EpochCache;

pub type BrokerId = String;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`.
    pub lag_time_max_ms: i64,
    /// `min.insync.replicas`.
    pub min_insync: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            lag_time_max_ms: 10_000,
            min_insync: 1,
        }
    }
}

/// How far a follower got, as its leader saw from its fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Its log end (the offset of its last fetch); `None` until it fetches from this leader.
    pub log_end: Option<u64>,
    pub last_caught_up_ms: i64,
    pub last_fetch_ms: Option<i64>,
    /// The leader's log end at that fetch.
    leader_end_at_last_fetch: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    #[error("{0} is not a replica of this partition")]
    NotAReplica(BrokerId),
    #[error("not enough in-sync replicas: {isr} in the ISR, {min} required")]
    NotEnoughReplicas { isr: usize, min: usize },
    #[error(
        "the batch was appended but the ISR shrank to {isr} before it committed ({min} required)"
    )]
    NotEnoughReplicasAfterAppend { isr: usize, min: usize },
}

/// What a follower's fetch changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchOutcome {
    /// The high watermark moved to this.
    pub high_watermark: Option<u64>,
    /// Propose this ISR to the controller (the follower caught up).
    pub propose_isr: Option<BTreeSet<BrokerId>>,
}

/// Who leads a partition, in which epoch, over which replicas: what the controller says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub leader: BrokerId,
    pub leader_epoch: u32,
    pub replicas: Vec<BrokerId>,
    pub isr: BTreeSet<BrokerId>,
}

/// One partition's leader: its followers' progress, the ISR and the high watermark.
#[derive(Debug, Clone)]
pub struct LeaderState {
    me: BrokerId,
    leader_epoch: u32,
    /// The first offset this leader's epoch wrote (a follower is back in sync only once it
    /// holds something of this epoch).
    epoch_start: u64,
    replicas: Vec<BrokerId>,
    isr: BTreeSet<BrokerId>,
    pending_isr: Option<BTreeSet<BrokerId>>,
    followers: BTreeMap<BrokerId, Progress>,
    high_watermark: u64,
    config: ReplicationConfig,
}

impl LeaderState {
    /// This broker (`leadership.leader`) became leader; its log ends at `log_end`, its last
    /// known high watermark is `high_watermark`.
    pub fn new(
        leadership: Leadership,
        log_end: u64,
        high_watermark: u64,
        now_ms: i64,
        config: ReplicationConfig,
    ) -> Self {
        let Leadership {
            leader: me,
            leader_epoch,
            replicas,
            isr,
        } = leadership;
        let followers = replicas
            .iter()
            .filter(|r| **r != me)
            .map(|r| {
                (
                    r.clone(),
                    Progress {
                        log_end: None,
                        // Given the full lag time to show up.
                        last_caught_up_ms: now_ms,
                        last_fetch_ms: None,
                        leader_end_at_last_fetch: 0,
                    },
                )
            })
            .collect();
        Self {
            me,
            leader_epoch,
            epoch_start: log_end,
            replicas,
            isr,
            pending_isr: None,
            followers,
            high_watermark: high_watermark.min(log_end),
            config,
        }
    }

    pub fn leader_epoch(&self) -> u32 {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn isr(&self) -> &BTreeSet<BrokerId> {
        &self.isr
    }

    pub fn pending_isr(&self) -> Option<&BTreeSet<BrokerId>> {
        self.pending_isr.as_ref()
    }

    pub fn replicas(&self) -> &[BrokerId] {
        &self.replicas
    }

    pub fn progress(&self) -> &BTreeMap<BrokerId, Progress> {
        &self.followers
    }

    /// A follower fetched at `offset` (it holds everything before); the leader's log ends at
    /// `log_end`.
    pub fn on_fetch(
        &mut self,
        follower: &str,
        offset: u64,
        log_end: u64,
        now_ms: i64,
    ) -> Result<FetchOutcome, ReplicationError> {
        let progress = self
            .followers
            .get_mut(follower)
            .ok_or_else(|| ReplicationError::NotAReplica(follower.to_string()))?;
        if offset >= log_end {
            progress.last_caught_up_ms = now_ms;
        } else if let Some(previous) = progress.last_fetch_ms
            && offset >= progress.leader_end_at_last_fetch
        {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(previous);
        }
        progress.log_end = Some(offset);
        progress.last_fetch_ms = Some(now_ms);
        progress.leader_end_at_last_fetch = log_end;
        let mut outcome = FetchOutcome::default();
        let in_sync = self.maximal_isr().contains(follower);
        if !in_sync && offset >= self.high_watermark && offset >= self.epoch_start {
            let mut proposed = self.maximal_isr();
            proposed.insert(follower.to_string());
            self.pending_isr = Some(proposed.clone());
            outcome.propose_isr = Some(proposed);
        }
        outcome.high_watermark = self.advance(log_end);
        Ok(outcome)
    }

    /// The leader appended: its log now ends at `log_end` (alone in the ISR, that commits).
    pub fn on_append(&mut self, log_end: u64) -> Option<u64> {
        self.advance(log_end)
    }

    /// Followers in the ISR that have not caught up for `lag_time_max`: the ISR without them,
    /// to propose (none if nobody lags or a proposal is pending).
    pub fn check_lag(&mut self, now_ms: i64) -> Option<BTreeSet<BrokerId>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let lagging: Vec<&BrokerId> = self
            .isr
            .iter()
            .filter(|r| **r != self.me)
            .filter(|r| {
                self.followers.get(*r).is_some_and(|p| {
                    now_ms.saturating_sub(p.last_caught_up_ms) > self.config.lag_time_max_ms
                })
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let proposed: BTreeSet<BrokerId> = self
            .isr
            .iter()
            .filter(|r| !lagging.contains(r))
            .cloned()
            .collect();
        self.pending_isr = Some(proposed.clone());
        Some(proposed)
    }

    /// The controller committed an ISR (this leader's proposal, or its own decision).
    pub fn isr_committed(&mut self, isr: BTreeSet<BrokerId>, log_end: u64) -> Option<u64> {
        self.isr = isr;
        self.pending_isr = None;
        self.advance(log_end)
    }

    /// The controller refused the proposal (a newer epoch, a broker fenced...).
    pub fn isr_rejected(&mut self) {
        self.pending_isr = None;
    }

    /// Whether an `acks=all` produce may be appended now.
    pub fn check_acks_all(&self) -> Result<(), ReplicationError> {
        let isr = self.isr.len();
        if isr < self.config.min_insync {
            return Err(ReplicationError::NotEnoughReplicas {
                isr,
                min: self.config.min_insync,
            });
        }
        Ok(())
    }

    /// Whether an `acks=all` produce whose batch ends at `last_offset` is done: `None` while
    /// it waits, then its answer.
    pub fn acks_all_outcome(&self, last_offset: u64) -> Option<Result<(), ReplicationError>> {
        if self.high_watermark <= last_offset {
            return None;
        }
        let isr = self.isr.len();
        Some(if isr < self.config.min_insync {
            Err(ReplicationError::NotEnoughReplicasAfterAppend {
                isr,
                min: self.config.min_insync,
            })
        } else {
            Ok(())
        })
    }

    /// The ISR the high watermark must respect: the committed one and any proposed additions.
    fn maximal_isr(&self) -> BTreeSet<BrokerId> {
        let mut isr = self.isr.clone();
        if let Some(pending) = &self.pending_isr {
            isr.extend(pending.iter().cloned());
        }
        isr
    }

    /// Moves the high watermark to the smallest log end in the ISR, if that is further.
    fn advance(&mut self, log_end: u64) -> Option<u64> {
        let mut lowest = log_end;
        for member in self.maximal_isr() {
            if member == self.me {
                continue;
            }
            match self.followers.get(&member).and_then(|p| p.log_end) {
                Some(end) => lowest = lowest.min(end),
                // Not heard from yet under this leader: it holds it back.
                None => return None,
            }
        }
        (lowest > self.high_watermark).then(|| {
            self.high_watermark = lowest;
            lowest
        })
    }
}

/// Where a follower cuts its log before following a leader, given the leader's answer to
/// "where does my latest epoch end in your log?" (`leader_answer`: the largest epoch the
/// leader has at most that one, and where it ends there; `None` if it has nothing that old).
///
/// If the leader has the follower's epoch, everything the follower holds past that epoch's
/// end on the leader diverged. If the leader's answer is an older epoch, the follower's later
/// epochs never reached the leader: cut at the end of that older epoch, on whichever side is
/// shorter.
pub fn truncation_point(
    epochs: &EpochCache,
    log_end: u64,
    leader_answer: Option<(u32, u64)>,
) -> u64 {
    let Some((epoch, leader_end)) = leader_answer else {
        return 0;
    };
    // The end of that epoch in the follower's log (of the latest older one it has, if it
    // has none of that one).
    match epochs.end_of(epoch, log_end) {
        Some((_, my_end)) => leader_end.min(my_end).min(log_end),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(members: &[&str]) -> BTreeSet<BrokerId> {
        members.iter().map(|m| m.to_string()).collect()
    }

    fn leadership(epoch: u32, replicas: &[&str], isr: &[&str]) -> Leadership {
        Leadership {
            leader: "b1".into(),
            leader_epoch: epoch,
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            isr: set(isr),
        }
    }

    fn leader(isr: &[&str], log_end: u64, min_insync: usize) -> LeaderState {
        LeaderState::new(
            leadership(3, &["b1", "b2", "b3"], isr),
            log_end,
            0,
            0,
            ReplicationConfig {
                lag_time_max_ms: 1_000,
                min_insync,
            },
        )
    }

    #[test]
    fn the_high_watermark_is_the_slowest_in_sync_log_end_and_never_goes_back() {
        let mut state = leader(&["b1", "b2", "b3"], 0, 2);
        assert_eq!(state.on_append(10), None, "followers not heard from");
        assert_eq!(
            state.on_fetch("b2", 10, 10, 5).unwrap().high_watermark,
            None
        );
        let outcome = state.on_fetch("b3", 4, 10, 6).unwrap();
        assert_eq!(outcome.high_watermark, Some(4));
        assert_eq!(
            state.on_fetch("b3", 10, 10, 7).unwrap().high_watermark,
            Some(10)
        );
        // An acks=all batch ending at offset 9 is done; one ending at 10 waits.
        assert_eq!(state.acks_all_outcome(9), Some(Ok(())));
        assert_eq!(state.acks_all_outcome(10), None);
        // A follower fetching from an older offset (it restarted) does not pull it back.
        assert_eq!(state.on_fetch("b3", 2, 10, 8).unwrap().high_watermark, None);
        assert_eq!(state.high_watermark(), 10);
        assert!(matches!(
            state.on_fetch("b9", 0, 10, 9),
            Err(ReplicationError::NotAReplica(_))
        ));
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_and_proposed_back_when_caught_up() {
        let mut state = leader(&["b1", "b2", "b3"], 0, 2);
        state.on_append(10);
        state.on_fetch("b2", 10, 10, 100).unwrap();
        state.on_fetch("b3", 10, 10, 100).unwrap();
        state.on_append(20);
        // b2 keeps fetching and catching up; b3 stops (slow link).
        for t in [400, 800, 1_200] {
            state.on_fetch("b2", 20, 20, t).unwrap();
        }
        assert_eq!(state.check_lag(1_000), None, "b3 lagged for 900 ms only");
        let proposal = state.check_lag(1_101).unwrap();
        assert_eq!(proposal, set(&["b1", "b2"]));
        // Until the controller commits, b3 still holds the high watermark back.
        assert_eq!(state.high_watermark(), 10);
        assert_eq!(state.isr_committed(proposal, 20), Some(20));
        assert_eq!(state.isr(), &set(&["b1", "b2"]));

        // b3 comes back: fetching below the high watermark is not enough ...
        let outcome = state.on_fetch("b3", 15, 20, 1_300).unwrap();
        assert_eq!(outcome.propose_isr, None);
        // ... reaching it is.
        let outcome = state.on_fetch("b3", 20, 20, 1_400).unwrap();
        assert_eq!(outcome.propose_isr, Some(set(&["b1", "b2", "b3"])));
        state.isr_committed(set(&["b1", "b2", "b3"]), 20);
        assert_eq!(state.isr().len(), 3);
    }

    #[test]
    fn a_follower_one_fetch_behind_a_steady_stream_stays_in_sync() {
        let mut state = leader(&["b1", "b2"], 0, 1);
        let mut end = 0;
        for t in (0..5_000).step_by(100) {
            // The leader appends between fetches; the follower asks for what it had seen.
            let fetched_to = end;
            end += 5;
            state.on_fetch("b2", fetched_to, end, t).unwrap();
        }
        assert_eq!(state.check_lag(5_000), None);
    }

    #[test]
    fn acks_all_needs_min_insync_replicas_before_and_after_the_append() {
        let mut state = leader(&["b1", "b2"], 0, 2);
        assert_eq!(state.check_acks_all(), Ok(()));
        state.on_append(5);
        state.on_fetch("b2", 5, 5, 10).unwrap();
        assert_eq!(state.acks_all_outcome(4), Some(Ok(())));
        // b2 falls out: appends are refused; a batch committed alone is not acknowledged.
        state.isr_committed(set(&["b1"]), 5);
        assert_eq!(
            state.check_acks_all(),
            Err(ReplicationError::NotEnoughReplicas { isr: 1, min: 2 })
        );
        state.on_append(8);
        assert_eq!(
            state.acks_all_outcome(7),
            Some(Err(ReplicationError::NotEnoughReplicasAfterAppend {
                isr: 1,
                min: 2
            }))
        );
    }

    #[test]
    fn a_returning_replica_rejoins_only_with_data_of_this_epoch() {
        // A new leader of epoch 4 at log end 50; b3 (in the ISR) has not fetched yet, so the
        // high watermark is still the old 40.
        let mut state = LeaderState::new(
            leadership(4, &["b1", "b2", "b3"], &["b1", "b3"]),
            50,
            40,
            0,
            ReplicationConfig::default(),
        );
        assert_eq!(state.on_append(50), None);
        // b2 is past the high watermark, but what it holds past 40 may be another epoch's.
        assert_eq!(state.on_fetch("b2", 45, 50, 1).unwrap().propose_isr, None);
        // Holding everything up to this epoch's start, it may come back.
        assert_eq!(
            state.on_fetch("b2", 50, 50, 2).unwrap().propose_isr,
            Some(set(&["b1", "b2", "b3"]))
        );
    }

    fn cache(entries: &[(u32, u64)]) -> (tempfile::TempDir, EpochCache) {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path()).unwrap();
        for (epoch, start) in entries {
            cache.assign(*epoch, *start).unwrap();
        }
        (dir, cache)
    }

    #[test]
    fn a_follower_cuts_where_its_history_leaves_the_leaders() {
        // KIP-101's case: both hold epoch 1 to offset 10; the follower also wrote 10..12 as
        // leader of epoch 2, which never reached the new leader (epoch 3, which has epoch 1
        // ending at 10 and then its own from 10).
        let (_dir, follower) = cache(&[(1, 0), (2, 10)]);
        assert_eq!(truncation_point(&follower, 12, Some((1, 10))), 10);
        // Same epoch on both: the shorter end wins.
        let (_dir, follower) = cache(&[(1, 0), (3, 10)]);
        assert_eq!(truncation_point(&follower, 15, Some((3, 13))), 13);
        assert_eq!(truncation_point(&follower, 12, Some((3, 13))), 12);
        // The leader has nothing that old: start over from its log.
        assert_eq!(truncation_point(&follower, 15, None), 0);
    }
}
