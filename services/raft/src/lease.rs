//! Leader leases: how a leader knows, without asking anyone, that no other leader exists.
//!
//! Every AppendEntries (heartbeats included) the leader sends is stamped with the time it
//! was sent. When a follower accepts it, that follower has reset its election timer at or
//! after that time, and openraft's followers refuse to vote for anyone else for
//! `election_timeout_max` after hearing from their leader. So once a majority accepted a
//! request sent at `t`, no other leader can be elected before `t + election_timeout_max`.
//! The lease runs to `t + lease`, with `lease` shorter than the election timeout by a safety
//! margin for clock drift between nodes (none here: one machine, one monotonic clock).
//!
//! A restarted node forgot whom it heard from, and openraft would let it vote at once, so a
//! node refuses to vote for `election_timeout_max` after it starts (see the Raft service).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{RaftId, Vote};

/// Per follower: the send time of the latest request it accepted, and under which vote.
#[derive(Default)]
pub struct LeaseClock {
    acked: Mutex<BTreeMap<RaftId, (Vote, Instant)>>,
}

impl LeaseClock {
    /// `target` accepted a request sent at `sent` by the leader of `vote`.
    pub fn accepted(&self, target: RaftId, vote: Vote, sent: Instant) {
        let mut acked = self.acked.lock().unwrap();
        let entry = acked.entry(target).or_insert((vote, sent));
        if entry.0 != vote || entry.1 < sent {
            *entry = (vote, sent);
        }
    }

    /// The latest time `t` such that a majority of every config in `configs` (joint consensus
    /// has two) accepted `vote`'s leadership at `t` or later. `me` counts as accepting now.
    pub fn quorum_time(
        &self,
        me: RaftId,
        vote: Vote,
        configs: &[BTreeSet<RaftId>],
    ) -> Option<Instant> {
        let now = Instant::now();
        let acked = self.acked.lock().unwrap();
        configs
            .iter()
            .map(|voters| {
                let mut times: Vec<Instant> = voters
                    .iter()
                    .filter_map(|id| {
                        if *id == me {
                            return Some(now);
                        }
                        acked.get(id).filter(|(v, _)| *v == vote).map(|(_, t)| *t)
                    })
                    .collect();
                let majority = voters.len() / 2 + 1;
                if times.len() < majority {
                    return None;
                }
                times.sort_unstable_by(|a, b| b.cmp(a));
                Some(times[majority - 1])
            })
            .min()
            .flatten()
    }

    /// How long the lease of `vote` still runs, if it does.
    pub fn remaining(
        &self,
        me: RaftId,
        vote: Vote,
        configs: &[BTreeSet<RaftId>],
        lease: Duration,
    ) -> Option<Duration> {
        let since = self.quorum_time(me, vote, configs)?;
        (since + lease).checked_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(term: u64) -> Vote {
        let mut v = Vote::new(term, 1);
        v.commit();
        v
    }

    #[test]
    fn a_lease_needs_a_majority_of_every_config_under_the_same_vote() {
        let clock = LeaseClock::default();
        let voters: BTreeSet<RaftId> = [1, 2, 3].into();
        let lease = Duration::from_secs(60);
        assert!(
            clock
                .remaining(1, vote(1), std::slice::from_ref(&voters), lease)
                .is_none()
        );
        let t = Instant::now();
        clock.accepted(2, vote(1), t);
        assert_eq!(
            clock.quorum_time(1, vote(1), std::slice::from_ref(&voters)),
            Some(t)
        );
        assert!(
            clock
                .remaining(1, vote(1), std::slice::from_ref(&voters), lease)
                .is_some()
        );
        // Acknowledgements of an older term do not count for a newer one.
        assert!(
            clock
                .remaining(1, vote(2), std::slice::from_ref(&voters), lease)
                .is_none()
        );
        // A joint config needs a majority of the new config too.
        let new: BTreeSet<RaftId> = [1, 4, 5].into();
        assert!(
            clock
                .quorum_time(1, vote(1), &[voters.clone(), new.clone()])
                .is_none()
        );
        clock.accepted(4, vote(1), t + Duration::from_millis(5));
        assert_eq!(clock.quorum_time(1, vote(1), &[voters, new]), Some(t));
        // An expired lease is gone.
        assert!(
            clock
                .remaining(1, vote(1), &[[1, 2, 3].into()], Duration::ZERO)
                .is_none()
        );
    }
}
