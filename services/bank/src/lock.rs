//! Per-account locks for strict two-phase locking, with a deadlock policy.
//!
//! A two-phase-commit participant takes a lock on every account a transaction touches before it
//! votes, and holds them until the outcome arrives (strict 2PL: that is what makes a prepared
//! transaction's writes safe to apply later, and what makes a read of every balance see a
//! consistent total). Two transfers that lock the same two accounts in opposite orders on two
//! shards would wait for each other forever; a policy decides who gives up instead:
//!
//! - **wait-die** (the default): transactions are ordered by age (start time, then id). An older
//!   transaction may wait for a younger one; a younger one that meets an older one dies (votes
//!   no, and its coordinator retries it later with its original age, so it eventually becomes
//!   the oldest and cannot starve). Waits only ever point from old to young, so there is no
//!   cycle: no deadlock, and no detector needed.
//! - **no-wait**: any conflict dies at once. Simplest, and under a hot account most transfers
//!   abort and retry.
//!
//! Pure state: no clocks, no tasks. The participant service turns `Wait` into an awaited grant
//! with a deadline ([`LockTable::release`] of the transaction when it passes: its wait goes
//! with its locks).

use std::collections::{BTreeMap, VecDeque};

/// A transaction's identity as the coordinator assigned it.
pub type TxId = u64;

/// A transaction's age: smaller is older. Wait-die compares these.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Age {
    /// When the transaction first started (its coordinator's clock, microseconds); kept
    /// across retries.
    pub started: u64,
    pub tx: TxId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    Shared,
    Exclusive,
}

impl Mode {
    fn compatible(self, other: Mode) -> bool {
        self == Mode::Shared && other == Mode::Shared
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Policy {
    #[default]
    WaitDie,
    NoWait,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wait-die" => Ok(Policy::WaitDie),
            "no-wait" => Ok(Policy::NoWait),
            other => Err(format!(
                "unknown deadlock policy {other:?} (wait-die or no-wait)"
            )),
        }
    }
}

/// What a lock request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Granted,
    /// Queued; a later [`LockTable::release`] grants it.
    Wait,
    /// Refused by the policy: the transaction must abort. `blocker` is the transaction it met.
    Die {
        blocker: TxId,
    },
}

#[derive(Debug, Default)]
struct Lock {
    holders: Vec<(Age, Mode)>,
    waiting: VecDeque<(Age, Mode)>,
}

impl Lock {
    fn held_by(&self, tx: TxId) -> Option<Mode> {
        self.holders
            .iter()
            .find(|(a, _)| a.tx == tx)
            .map(|(_, m)| *m)
    }

    /// Whether `mode` for `tx` is compatible with every other holder.
    fn admits(&self, tx: TxId, mode: Mode) -> bool {
        self.holders
            .iter()
            .all(|(a, m)| a.tx == tx || mode.compatible(*m))
    }
}

/// A lock wait, for the transaction view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockWait {
    pub account: String,
    pub waiter: TxId,
    pub holders: Vec<TxId>,
}

/// Every account lock of one participant.
#[derive(Debug, Default)]
pub struct LockTable {
    policy: Policy,
    locks: BTreeMap<String, Lock>,
}

impl LockTable {
    pub fn new(policy: Policy) -> Self {
        LockTable {
            policy,
            locks: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Asks for `account` in `mode` for the transaction `age`. A transaction that holds the
    /// lock already gets it (a shared lock becomes exclusive when it is the only holder).
    pub fn acquire(&mut self, age: Age, account: &str, mode: Mode) -> Acquire {
        let policy = self.policy;
        let lock = self.locks.entry(account.to_string()).or_default();
        if let Some(held) = lock.held_by(age.tx)
            && (held == Mode::Exclusive || mode == Mode::Shared)
        {
            return Acquire::Granted;
        }
        let conflicts: Vec<Age> = lock
            .holders
            .iter()
            .filter(|(a, m)| a.tx != age.tx && !mode.compatible(*m))
            .chain(lock.waiting.iter())
            .filter(|(a, _)| a.tx != age.tx)
            .map(|(a, _)| *a)
            .collect();
        if conflicts.is_empty() && lock.admits(age.tx, mode) {
            match lock.holders.iter_mut().find(|(a, _)| a.tx == age.tx) {
                Some(holder) => holder.1 = mode,
                None => lock.holders.push((age, mode)),
            }
            return Acquire::Granted;
        }
        let youngest_older = conflicts.iter().filter(|a| **a < age).max();
        match (policy, youngest_older) {
            (Policy::WaitDie, None) => {
                lock.waiting.push_back((age, mode));
                Acquire::Wait
            }
            (Policy::WaitDie, Some(older)) => Acquire::Die { blocker: older.tx },
            (Policy::NoWait, _) => Acquire::Die {
                blocker: conflicts[0].tx,
            },
        }
    }

    /// Gives `account` to a transaction recovered prepared from disk, exclusively, whatever
    /// holds it (recovery only: see [`crate::participant::Participant::new`]).
    pub fn grant_recovered(&mut self, age: Age, account: &str) {
        let lock = self.locks.entry(account.to_string()).or_default();
        if lock.held_by(age.tx).is_none() {
            lock.holders.push((age, Mode::Exclusive));
        }
    }

    /// Releases every lock `tx` holds and every wait it queued; returns the waits this
    /// granted, as (transaction, account).
    pub fn release(&mut self, tx: TxId) -> Vec<(TxId, String)> {
        let mut granted = Vec::new();
        self.locks.retain(|account, lock| {
            let before = (lock.holders.len(), lock.waiting.len());
            lock.holders.retain(|(a, _)| a.tx != tx);
            lock.waiting.retain(|(a, _)| a.tx != tx);
            if (lock.holders.len(), lock.waiting.len()) != before {
                Self::grant_waiting(account, lock, &mut granted);
            }
            !(lock.holders.is_empty() && lock.waiting.is_empty())
        });
        granted
    }

    /// Grants queued requests in order while each is compatible with the holders.
    fn grant_waiting(account: &str, lock: &mut Lock, granted: &mut Vec<(TxId, String)>) {
        while let Some(&(age, mode)) = lock.waiting.front() {
            if !lock.admits(age.tx, mode) {
                break;
            }
            lock.waiting.pop_front();
            match lock.holders.iter_mut().find(|(a, _)| a.tx == age.tx) {
                Some(holder) => holder.1 = mode,
                None => lock.holders.push((age, mode)),
            }
            granted.push((age.tx, account.to_string()));
        }
    }

    /// Whether `tx` holds `account` (in any mode).
    pub fn holds(&self, tx: TxId, account: &str) -> bool {
        self.locks
            .get(account)
            .is_some_and(|l| l.held_by(tx).is_some())
    }

    /// Whether any transaction holds `account`.
    pub fn is_locked(&self, account: &str) -> bool {
        self.locks
            .get(account)
            .is_some_and(|l| !l.holders.is_empty())
    }

    /// Every queued wait, with who holds what it waits for.
    pub fn waits(&self) -> Vec<LockWait> {
        self.locks
            .iter()
            .flat_map(|(account, lock)| {
                lock.waiting.iter().map(|(a, _)| LockWait {
                    account: account.clone(),
                    waiter: a.tx,
                    holders: lock.holders.iter().map(|(h, _)| h.tx).collect(),
                })
            })
            .collect()
    }

    /// How many accounts are locked.
    pub fn locked(&self) -> usize {
        self.locks
            .values()
            .filter(|l| !l.holders.is_empty())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(started: u64) -> Age {
        Age {
            started,
            tx: started,
        }
    }

    #[test]
    fn shared_locks_share_and_exclusive_ones_do_not() {
        let mut t = LockTable::new(Policy::WaitDie);
        assert_eq!(t.acquire(age(2), "a", Mode::Shared), Acquire::Granted);
        assert_eq!(t.acquire(age(3), "a", Mode::Shared), Acquire::Granted);
        // Older than both holders: waits.
        assert_eq!(t.acquire(age(1), "a", Mode::Exclusive), Acquire::Wait);
        // Releasing one holder is not enough; releasing both grants the wait.
        assert!(t.release(2).is_empty());
        assert_eq!(t.release(3), vec![(1, "a".to_string())]);
        assert!(t.holds(1, "a"));
        assert_eq!(t.locked(), 1);
    }

    #[test]
    fn wait_die_lets_the_old_wait_and_kills_the_young() {
        let mut t = LockTable::new(Policy::WaitDie);
        assert_eq!(t.acquire(age(5), "a", Mode::Exclusive), Acquire::Granted);
        assert_eq!(
            t.acquire(age(9), "a", Mode::Exclusive),
            Acquire::Die { blocker: 5 }
        );
        assert_eq!(t.acquire(age(1), "a", Mode::Exclusive), Acquire::Wait);
        // A transaction younger than a queued waiter dies too (it would wait for it).
        assert_eq!(
            t.acquire(age(3), "a", Mode::Exclusive),
            Acquire::Die { blocker: 1 }
        );
        assert_eq!(
            t.waits(),
            vec![LockWait {
                account: "a".into(),
                waiter: 1,
                holders: vec![5]
            }]
        );
    }

    /// The classic deadlock (T1 holds a and wants b, T2 holds b and wants a) cannot form:
    /// one of the two dies.
    #[test]
    fn opposite_lock_orders_do_not_deadlock() {
        let mut t = LockTable::new(Policy::WaitDie);
        assert_eq!(t.acquire(age(1), "a", Mode::Exclusive), Acquire::Granted);
        assert_eq!(t.acquire(age(2), "b", Mode::Exclusive), Acquire::Granted);
        assert_eq!(t.acquire(age(1), "b", Mode::Exclusive), Acquire::Wait);
        assert_eq!(
            t.acquire(age(2), "a", Mode::Exclusive),
            Acquire::Die { blocker: 1 }
        );
        // T2 aborts: T1 gets b.
        assert_eq!(t.release(2), vec![(1, "b".to_string())]);
    }

    #[test]
    fn no_wait_refuses_every_conflict() {
        let mut t = LockTable::new(Policy::NoWait);
        assert_eq!(t.acquire(age(5), "a", Mode::Exclusive), Acquire::Granted);
        assert_eq!(
            t.acquire(age(1), "a", Mode::Shared),
            Acquire::Die { blocker: 5 }
        );
        assert_eq!(t.acquire(age(9), "b", Mode::Shared), Acquire::Granted);
    }

    #[test]
    fn a_holder_upgrades_when_alone_and_reacquires_freely() {
        let mut t = LockTable::new(Policy::WaitDie);
        assert_eq!(t.acquire(age(1), "a", Mode::Shared), Acquire::Granted);
        assert_eq!(t.acquire(age(1), "a", Mode::Exclusive), Acquire::Granted);
        assert_eq!(t.acquire(age(1), "a", Mode::Shared), Acquire::Granted);
        assert_eq!(t.acquire(age(0), "a", Mode::Shared), Acquire::Wait);
    }

    #[test]
    fn an_abandoned_wait_lets_the_next_one_through() {
        let mut t = LockTable::new(Policy::WaitDie);
        assert_eq!(t.acquire(age(5), "a", Mode::Shared), Acquire::Granted);
        assert_eq!(t.acquire(age(2), "a", Mode::Exclusive), Acquire::Wait);
        // A shared request queued behind the exclusive wait does not jump it...
        assert_eq!(t.acquire(age(1), "a", Mode::Shared), Acquire::Wait);
        // ...until that wait is given up.
        assert_eq!(t.release(2), vec![(1, "a".to_string())]);
        assert!(t.release(5).is_empty());
        assert!(t.release(1).is_empty());
        assert_eq!(t.locked(), 0);
        assert!(t.waits().is_empty());
    }
}
