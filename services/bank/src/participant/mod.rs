//! A two-phase-commit participant's protocol state (an account shard's, or the ledger's),
//! without sockets or disks: what a prepare must check, what commit and abort change, what a
//! participant that lost its coordinator still holds.
//!
//! The protocol, presumed abort:
//! 1. `prepare(tx, writes)`: the service has taken every write's account lock (exclusive, held
//!    to the end: strict two-phase locking, [`crate::lock`]); the writes are checked (accounts
//!    here, no balance below zero, no overflow), made durable as a prepared record, and the vote
//!    is yes. From here on the participant may not decide alone: it is *in doubt* until the
//!    coordinator says commit or abort, and keeps its locks however long that takes.
//! 2. `commit(tx)`: the prepared writes are applied, the locks released.
//!    `abort(tx)`: the prepared writes are dropped, the locks released. A participant that
//!    never prepared (its lock wait timed out, it voted no, it never heard of the transaction)
//!    answers abort with nothing to do; that is the "presumed" in presumed abort.
//! 3. Both are idempotent: the outcome of recent transactions is remembered, so a commit or
//!    abort delivered twice changes nothing, and a prepare that arrives after its abort is
//!    refused.

use std::collections::{BTreeMap, VecDeque};

pub mod service;
pub mod step;
pub mod storage;
pub mod xa;

use crate::coordinator::Branch;
use crate::domain::Transfer;
use crate::lock::{Age, LockTable, Policy, TxId};

/// One change a transaction makes at a participant: `delta` added to `account`'s balance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Write {
    pub account: String,
    pub delta: i64,
}

/// A yes vote's durable promise: these writes, for this transaction, on the coordinator's say.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prepared {
    pub tx: TxId,
    pub age: Age,
    /// The coordinator to ask for the outcome.
    pub coordinator: String,
    pub writes: Vec<Write>,
    /// The ledger's journal entry, appended at commit.
    pub journal: Option<Transfer>,
    /// When it was prepared (this participant's clock, ms since the epoch): in doubt since.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    Committed,
    Aborted,
}

/// Why a participant votes no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownAccount(String),
    /// The balance would go below zero.
    Insufficient {
        account: String,
        balance: i64,
        delta: i64,
    },
    Overflow(String),
    /// The transaction was already aborted here (a late prepare after a timeout).
    AlreadyAborted,
    /// A lock was refused by the deadlock policy or its wait timed out.
    Lock(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownAccount(a) => write!(f, "unknown account {a}"),
            Refusal::Insufficient {
                account,
                balance,
                delta,
            } => write!(
                f,
                "insufficient funds: {account} has {balance}, the transfer takes {}",
                -delta
            ),
            Refusal::Overflow(a) => write!(f, "the balance of {a} would overflow"),
            Refusal::AlreadyAborted => write!(f, "the transaction was already aborted here"),
            Refusal::Lock(why) => write!(f, "{why}"),
        }
    }
}

/// A protocol violation: commit for a transaction this participant never prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotPrepared(pub TxId);

impl std::fmt::Display for NotPrepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "transaction {} is not prepared here", self.0)
    }
}

/// What a commit changed: the new balances, for the store to write in one step.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    pub balances: Vec<(String, i64)>,
    /// The journal entry to append (the ledger).
    pub journal: Option<Transfer>,
    /// False when the commit was a repeat and nothing changed.
    pub changed: bool,
}

/// How many finished transactions' outcomes are remembered for repeats.
const REMEMBERED: usize = 100_000;

/// One participant's state.
#[derive(Debug)]
pub struct Participant {
    /// Committed balances of the accounts this participant owns.
    balances: BTreeMap<String, i64>,
    prepared: BTreeMap<TxId, Prepared>,
    outcomes: BTreeMap<TxId, Outcome>,
    outcome_order: VecDeque<TxId>,
    pub locks: LockTable,
}

impl Participant {
    /// A participant with these committed balances and the prepared transactions it recovered
    /// from its store; a recovered prepared transaction's locks are taken again at once (it is
    /// in doubt: nobody else may touch its accounts until its outcome is known).
    pub fn new(
        balances: BTreeMap<String, i64>,
        prepared: Vec<Prepared>,
        policy: Policy,
    ) -> Participant {
        let mut locks = LockTable::new(policy);
        for p in &prepared {
            for w in &p.writes {
                // Granted whatever else holds it: two recovered records on one account mean
                // one of them is stale (its abort did not reach the disk), and only the
                // coordinator can say which; the stale one will hear abort.
                locks.grant_recovered(p.age, &w.account);
            }
        }
        Participant {
            balances,
            prepared: prepared.into_iter().map(|p| (p.tx, p)).collect(),
            outcomes: BTreeMap::new(),
            outcome_order: VecDeque::new(),
            locks,
        }
    }

    pub fn balances(&self) -> &BTreeMap<String, i64> {
        &self.balances
    }

    pub fn balance(&self, account: &str) -> Option<i64> {
        self.balances.get(account).copied()
    }

    pub fn prepared(&self) -> impl Iterator<Item = &Prepared> {
        self.prepared.values()
    }

    pub fn outcome(&self, tx: TxId) -> Option<Outcome> {
        self.outcomes.get(&tx).copied()
    }

    /// Checks `writes` for a prepare (the caller holds their locks) and returns the record to
    /// make durable before voting yes; [`Participant::prepared_durably`] then records it. A
    /// repeated prepare of a prepared transaction returns the record it has.
    pub fn check_prepare(
        &self,
        tx: TxId,
        age: Age,
        coordinator: &str,
        branch: &Branch,
        now_ms: u64,
    ) -> Result<Prepared, Refusal> {
        let writes = &branch.writes;
        if let Some(p) = self.prepared.get(&tx) {
            return Ok(p.clone());
        }
        match self.outcomes.get(&tx) {
            Some(Outcome::Aborted) => return Err(Refusal::AlreadyAborted),
            Some(Outcome::Committed) => {
                unreachable!("a coordinator asked to prepare committed transaction {tx}")
            }
            None => {}
        }
        let mut after: BTreeMap<&str, i64> = BTreeMap::new();
        for w in writes {
            debug_assert!(self.locks.holds(tx, &w.account), "prepare without the lock");
            let balance = match after.get(w.account.as_str()) {
                Some(b) => *b,
                None => self
                    .balance(&w.account)
                    .ok_or_else(|| Refusal::UnknownAccount(w.account.clone()))?,
            };
            let next = balance
                .checked_add(w.delta)
                .ok_or_else(|| Refusal::Overflow(w.account.clone()))?;
            if next < 0 {
                return Err(Refusal::Insufficient {
                    account: w.account.clone(),
                    balance,
                    delta: w.delta,
                });
            }
            after.insert(&w.account, next);
        }
        Ok(Prepared {
            tx,
            age,
            coordinator: coordinator.to_string(),
            writes: writes.clone(),
            journal: branch.journal.clone(),
            at_ms: now_ms,
        })
    }

    /// Records a prepare the store made durable: the participant is in doubt about `tx`.
    pub fn prepared_durably(&mut self, prepared: Prepared) {
        self.prepared.insert(prepared.tx, prepared);
    }

    /// What committing `tx` will write (the store writes it, then [`Participant::committed`]).
    pub fn check_commit(&self, tx: TxId) -> Result<Applied, NotPrepared> {
        if self.outcomes.get(&tx) == Some(&Outcome::Committed) {
            return Ok(Applied::default());
        }
        let p = self.prepared.get(&tx).ok_or(NotPrepared(tx))?;
        let mut after: BTreeMap<String, i64> = BTreeMap::new();
        for w in &p.writes {
            let balance = after
                .get(&w.account)
                .copied()
                .or_else(|| self.balance(&w.account))
                .expect("checked at prepare");
            after.insert(w.account.clone(), balance + w.delta);
        }
        Ok(Applied {
            balances: after.into_iter().collect(),
            journal: p.journal.clone(),
            changed: true,
        })
    }

    /// Applies a commit the store made durable; returns the waits its released locks granted.
    pub fn committed(&mut self, tx: TxId, applied: &Applied) -> Vec<(TxId, String)> {
        if !applied.changed {
            return Vec::new();
        }
        for (account, balance) in &applied.balances {
            self.balances.insert(account.clone(), *balance);
        }
        self.prepared.remove(&tx);
        self.remember(tx, Outcome::Committed);
        self.locks.release(tx)
    }

    /// Whether aborting `tx` has anything to undo in the store (a prepared record).
    pub fn is_prepared(&self, tx: TxId) -> bool {
        self.prepared.contains_key(&tx)
    }

    /// Aborts `tx` (after the store dropped its prepared record, if it had one): releases its
    /// locks and waits. Aborting a committed transaction is a protocol violation and refused.
    pub fn aborted(&mut self, tx: TxId) -> Result<Vec<(TxId, String)>, NotPrepared> {
        if self.outcomes.get(&tx) == Some(&Outcome::Committed) {
            return Err(NotPrepared(tx));
        }
        self.prepared.remove(&tx);
        if !self.outcomes.contains_key(&tx) {
            self.remember(tx, Outcome::Aborted);
        }
        Ok(self.locks.release(tx))
    }

    /// Prepared transactions in doubt for at least `after_ms`: ask their coordinators.
    pub fn in_doubt(&self, now_ms: u64, after_ms: u64) -> Vec<&Prepared> {
        self.prepared
            .values()
            .filter(|p| now_ms.saturating_sub(p.at_ms) >= after_ms)
            .collect()
    }

    fn remember(&mut self, tx: TxId, outcome: Outcome) {
        self.outcomes.insert(tx, outcome);
        self.outcome_order.push_back(tx);
        while self.outcome_order.len() > REMEMBERED {
            if let Some(old) = self.outcome_order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{Acquire, Mode};

    fn shard() -> Participant {
        let balances = [("a", 100), ("b", 50)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        Participant::new(balances, Vec::new(), Policy::WaitDie)
    }

    fn age(tx: TxId) -> Age {
        Age { started: tx, tx }
    }

    fn w(account: &str, delta: i64) -> Write {
        Write {
            account: account.into(),
            delta,
        }
    }

    fn branch(writes: &[Write]) -> Branch {
        Branch {
            writes: writes.to_vec(),
            journal: None,
        }
    }

    fn lock_all(p: &mut Participant, tx: TxId, writes: &[Write]) {
        for x in writes {
            assert_eq!(
                p.locks.acquire(age(tx), &x.account, Mode::Exclusive),
                Acquire::Granted
            );
        }
    }

    fn prepare(p: &mut Participant, tx: TxId, writes: &[Write]) -> Result<(), Refusal> {
        lock_all(p, tx, writes);
        let record = p.check_prepare(tx, age(tx), "c1", &branch(writes), 1000)?;
        p.prepared_durably(record);
        Ok(())
    }

    #[test]
    fn prepare_then_commit_moves_money_once() {
        let mut p = shard();
        let writes = [w("a", -30), w("b", 30)];
        prepare(&mut p, 1, &writes).unwrap();
        assert_eq!(p.balance("a"), Some(100), "prepared is not applied");
        let applied = p.check_commit(1).unwrap();
        assert_eq!(applied.balances, vec![("a".into(), 70), ("b".into(), 80)]);
        p.committed(1, &applied);
        assert_eq!((p.balance("a"), p.balance("b")), (Some(70), Some(80)));
        // A repeated commit changes nothing.
        let again = p.check_commit(1).unwrap();
        assert!(!again.changed);
        p.committed(1, &again);
        assert_eq!(p.balance("a"), Some(70));
        assert_eq!(p.locks.locked(), 0);
    }

    #[test]
    fn abort_drops_the_writes_and_a_late_prepare_is_refused() {
        let mut p = shard();
        prepare(&mut p, 1, &[w("a", -30)]).unwrap();
        p.aborted(1).unwrap();
        assert_eq!(p.balance("a"), Some(100));
        assert_eq!(p.locks.locked(), 0);
        assert_eq!(
            p.check_prepare(1, age(1), "c1", &branch(&[]), 0),
            Err(Refusal::AlreadyAborted)
        );
        assert_eq!(p.check_commit(1), Err(NotPrepared(1)));
        // Presumed abort: aborting what was never seen is fine.
        assert!(p.aborted(7).unwrap().is_empty());
    }

    #[test]
    fn prepares_that_would_break_the_rules_vote_no() {
        let mut p = shard();
        lock_all(&mut p, 1, &[w("a", 0), w("zz", 0)]);
        assert_eq!(
            p.check_prepare(1, age(1), "c1", &branch(&[w("zz", 5)]), 0),
            Err(Refusal::UnknownAccount("zz".into()))
        );
        // Two writes to one account add up before the check.
        assert!(matches!(
            p.check_prepare(1, age(1), "c1", &branch(&[w("a", -60), w("a", -60)]), 0),
            Err(Refusal::Insufficient { balance: 40, .. })
        ));
        assert_eq!(
            p.check_prepare(1, age(1), "c1", &branch(&[w("a", i64::MAX)]), 0),
            Err(Refusal::Overflow("a".into()))
        );
    }

    /// A participant restarted with a prepared record is in doubt: its locks are held again
    /// and only the outcome frees them.
    #[test]
    fn a_recovered_prepare_holds_its_locks_until_the_outcome() {
        let balances = [("a".to_string(), 100)].into_iter().collect();
        let record = Prepared {
            tx: 4,
            age: age(4),
            coordinator: "c1".into(),
            writes: vec![w("a", -10)],
            journal: None,
            at_ms: 0,
        };
        let mut p = Participant::new(balances, vec![record], Policy::WaitDie);
        assert_eq!(p.in_doubt(5000, 1000).len(), 1);
        assert_eq!(
            p.locks.acquire(age(9), "a", Mode::Shared),
            Acquire::Die { blocker: 4 }
        );
        let applied = p.check_commit(4).unwrap();
        p.committed(4, &applied);
        assert_eq!(p.balance("a"), Some(90));
        assert!(p.in_doubt(5000, 1000).is_empty());
        assert_eq!(p.locks.acquire(age(9), "a", Mode::Shared), Acquire::Granted);
    }

    /// Two recovered records on one account: one is stale (its abort never reached the disk).
    /// Both hold the account until the coordinator sorts them out; nothing else gets in.
    #[test]
    fn overlapping_recovered_prepares_both_wait_for_their_outcome() {
        let balances = [("a".to_string(), 100)].into_iter().collect();
        let record = |tx| Prepared {
            tx,
            age: age(tx),
            coordinator: "c1".into(),
            writes: vec![w("a", -10)],
            journal: None,
            at_ms: 0,
        };
        let mut p = Participant::new(balances, vec![record(3), record(4)], Policy::WaitDie);
        assert!(p.locks.holds(3, "a") && p.locks.holds(4, "a"));
        p.aborted(3).unwrap();
        assert!(matches!(
            p.locks.acquire(age(1), "a", Mode::Exclusive),
            Acquire::Wait
        ));
        let applied = p.check_commit(4).unwrap();
        assert_eq!(p.committed(4, &applied), vec![(1, "a".to_string())]);
        assert_eq!(p.balance("a"), Some(90));
    }

    #[test]
    fn a_committed_transaction_cannot_be_aborted() {
        let mut p = shard();
        prepare(&mut p, 1, &[w("a", -1)]).unwrap();
        let applied = p.check_commit(1).unwrap();
        p.committed(1, &applied);
        assert_eq!(p.aborted(1), Err(NotPrepared(1)));
    }
}
