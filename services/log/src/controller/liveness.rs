//! Which brokers are alive, as the controller leader sees from their heartbeats.
//!
//! Heartbeats are not replicated (KRaft does not log them either): only the leader tracks
//! them, in memory. A broker it has not heard from for the session timeout is fenced through
//! the log; one that heartbeats while fenced is unfenced the same way. A controller that just
//! became leader has heard from nobody yet, so it counts every broker as heard at that moment:
//! a leader change alone never fences anyone.

use std::collections::BTreeMap;

use super::metadata::{BrokerName, Metadata};

#[derive(Debug)]
pub struct Liveness {
    session_timeout_ms: i64,
    /// When this controller started leading.
    since_ms: i64,
    /// Per broker, its last heartbeat: the epoch it named and when.
    last_seen: BTreeMap<BrokerName, (u64, i64)>,
}

/// What to do about a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Live and known live: nothing to change.
    Alive,
    /// Fenced in the metadata: propose unfencing it.
    Unfence,
    /// Not this broker's current registration: it must register again.
    Stale { current: Option<u64> },
}

impl Liveness {
    pub fn new(session_timeout_ms: i64, now_ms: i64) -> Self {
        Self {
            session_timeout_ms,
            since_ms: now_ms,
            last_seen: BTreeMap::new(),
        }
    }

    /// `broker` says it is alive in registration `epoch`.
    pub fn heartbeat(
        &mut self,
        metadata: &Metadata,
        broker: &str,
        epoch: u64,
        now_ms: i64,
    ) -> Heard {
        let Some(registered) = metadata.brokers.get(broker).filter(|b| b.epoch == epoch) else {
            return Heard::Stale {
                current: metadata.brokers.get(broker).map(|b| b.epoch),
            };
        };
        self.last_seen.insert(broker.to_string(), (epoch, now_ms));
        if registered.fenced {
            Heard::Unfence
        } else {
            Heard::Alive
        }
    }

    /// Live brokers (with their epoch) not heard from within the session timeout.
    pub fn expired(&self, metadata: &Metadata, now_ms: i64) -> Vec<(BrokerName, u64)> {
        metadata
            .brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .filter(|(name, b)| {
                let heard = match self.last_seen.get(*name) {
                    Some((epoch, at)) if *epoch == b.epoch => *at,
                    // Not heard in this registration since this controller leads.
                    _ => self.since_ms,
                };
                now_ms - heard > self.session_timeout_ms
            })
            .map(|(name, b)| (name.clone(), b.epoch))
            .collect()
    }

    /// A broker registered through this leader just now.
    pub fn registered(&mut self, broker: &str, epoch: u64, now_ms: i64) {
        self.last_seen.insert(broker.to_string(), (epoch, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use distlab_raft::memory_machine::Machine;
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::controller::metadata::{Command, Outcome};

    fn register(metadata: &mut Metadata, broker: &str, index: u64) -> u64 {
        let log_id = distlab_raft::LogId::new(CommittedLeaderId::new(1, 1), index);
        let command = Command::RegisterBroker {
            broker: broker.into(),
            address: "127.0.0.1:1".into(),
            now_ms: 0,
        };
        match metadata.apply(&command, &log_id) {
            Outcome::Registered { epoch, .. } => epoch,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn silent_brokers_expire_after_the_session_timeout_counted_from_leadership() {
        let mut metadata = Metadata::default();
        let b1 = register(&mut metadata, "b1", 1);
        let b2 = register(&mut metadata, "b2", 2);
        // Became leader at 10 s: nobody expires before 13 s.
        let mut live = Liveness::new(3_000, 10_000);
        assert!(live.expired(&metadata, 12_999).is_empty());
        assert_eq!(live.heartbeat(&metadata, "b1", b1, 12_000), Heard::Alive);
        assert_eq!(
            live.expired(&metadata, 13_001),
            vec![("b2".to_string(), b2)]
        );
        assert_eq!(live.expired(&metadata, 15_001).len(), 2);
        // A heartbeat under an old registration does not count and says so.
        let b1_again = register(&mut metadata, "b1", 3);
        assert_eq!(
            live.heartbeat(&metadata, "b1", b1, 15_500),
            Heard::Stale {
                current: Some(b1_again)
            }
        );
        assert_eq!(
            live.heartbeat(&metadata, "b7", 1, 15_500),
            Heard::Stale { current: None }
        );
        live.registered("b1", b1_again, 15_600);
        assert_eq!(
            live.expired(&metadata, 16_000),
            vec![("b2".to_string(), b2)]
        );
    }

    #[test]
    fn a_fenced_broker_that_heartbeats_is_to_be_unfenced_and_is_never_expired_again() {
        let mut metadata = Metadata::default();
        let b1 = register(&mut metadata, "b1", 1);
        let fence = Command::FenceBroker {
            broker: "b1".into(),
            epoch: b1,
            reason: "test".into(),
        };
        metadata.apply(
            &fence,
            &distlab_raft::LogId::new(CommittedLeaderId::new(1, 1), 2),
        );
        let mut live = Liveness::new(1_000, 0);
        assert!(live.expired(&metadata, 60_000).is_empty());
        assert_eq!(live.heartbeat(&metadata, "b1", b1, 60_000), Heard::Unfence);
    }
}
