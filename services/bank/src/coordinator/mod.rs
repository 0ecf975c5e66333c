//! The two-phase-commit coordinator's protocol state, without sockets or disks: which
//! participants a transfer needs, what a vote or an acknowledgement changes, what the decision
//! log must hold, and how a restarted coordinator finishes what its log says was in flight.
//!
//! Presumed abort (Mohan, Lindsay and Obermarck, 1986): the coordinator logs a transaction's
//! participants when it begins (so a restart can tell them the outcome), forces a `Commit`
//! record before it sends the first commit, and an `End` record once every participant
//! acknowledged. There is no abort record: a transaction with no `Commit` in the log was
//! aborted, whoever asks and whenever. A participant in doubt that asks about a transaction the
//! coordinator is still collecting votes for gets an abort too, decided there and then (no
//! participant can have been told commit yet), so nobody waits on a vote that may never come.
//!
//! A transaction that dies under the deadlock policy is retried by the coordinator with its
//! original age (wait-die needs that to be starvation-free), up to a bound; the client sees
//! one outcome per transfer id.

use std::collections::{BTreeMap, BTreeSet};

pub mod service;

use crate::domain::Transfer;
use crate::lock::{Age, TxId};
use crate::participant::{Outcome, Write};

/// What one participant is asked to prepare.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Branch {
    /// Balance changes (account shards).
    pub writes: Vec<Write>,
    /// The journal entry (the ledger).
    pub journal: Option<Transfer>,
}

/// The decision log's records, in the order they are appended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LogRecord {
    Begin {
        tx: TxId,
        age: Age,
        transfer: Transfer,
        branches: BTreeMap<String, Branch>,
    },
    /// Forced before any participant is told.
    Commit { tx: TxId },
    /// Every participant acknowledged the outcome: nothing left to resend.
    End { tx: TxId, outcome: Outcome },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    /// Prepares sent; a participant's vote once it came.
    Preparing { votes: BTreeMap<String, bool> },
    /// Every vote was yes; the `Commit` record is being made durable. Nobody may be told
    /// anything yet (not commit: the record could still be lost; not abort: it could land),
    /// so a participant asking now is told to ask again.
    Deciding,
    /// The outcome is decided; these participants have not acknowledged it yet.
    Finishing {
        outcome: Outcome,
        unacked: BTreeSet<String>,
    },
}

/// One transaction in flight.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tx {
    pub id: TxId,
    pub age: Age,
    pub transfer: Transfer,
    pub branches: BTreeMap<String, Branch>,
    pub phase: Phase,
    pub began_ms: u64,
    /// A vote's reason when one was no.
    pub refusal: Option<String>,
    /// 1 for the first transaction of a transfer, +1 for each retry.
    pub attempt: u32,
    /// When the outcome was decided.
    #[serde(default)]
    pub decided_ms: Option<u64>,
}

/// What the service must do next for a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Keep collecting votes.
    Wait,
    /// Force `Commit` to the log, then send commit to every participant.
    Commit,
    /// Send abort to every participant that may have prepared (no log record needed). When
    /// the deadlock policy killed it and attempts remain, the transfer goes on as a new
    /// transaction: append this `Begin` record and run it.
    Abort {
        reason: String,
        retry: Option<LogRecord>,
    },
}

/// A transfer's outcome as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Settled {
    Committed,
    Aborted(String),
}

/// How many settled transfer ids are remembered for client retries.
const REMEMBERED: usize = 100_000;

#[derive(Debug, Default)]
pub struct Coordinator {
    /// Transactions a transfer may take when the deadlock policy kills them.
    max_attempts: u32,
    next_tx: TxId,
    txs: BTreeMap<TxId, Tx>,
    /// Transfer id -> the transaction running it, while in flight.
    running: BTreeMap<String, TxId>,
    /// Transfer id -> the transfer and how it ended.
    settled: BTreeMap<String, (Transfer, Settled)>,
    settled_order: std::collections::VecDeque<String>,
}

/// A transfer id reused for a different transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reused {
    pub id: String,
    pub first: Transfer,
}

impl std::fmt::Display for Reused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "transfer id {} was used for a different transfer ({} -> {}, {})",
            self.id, self.first.from, self.first.to, self.first.amount
        )
    }
}

/// What `begin` found for a transfer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begun {
    /// A new transaction: append this `Begin` record, then send the prepares.
    New(LogRecord),
    /// The id is running as this transaction: wait for it.
    Running(TxId),
    /// The id already settled.
    Settled(Settled),
}

impl Coordinator {
    /// A coordinator that has replayed its log: committed transactions without an `End` are
    /// finishing their commit, begun ones without a `Commit` are aborting (presumed abort).
    pub fn recover(
        records: impl IntoIterator<Item = LogRecord>,
        now_ms: u64,
        max_attempts: u32,
    ) -> Coordinator {
        let mut c = Coordinator {
            max_attempts,
            ..Coordinator::default()
        };
        for record in records {
            match record {
                LogRecord::Begin {
                    tx,
                    age,
                    transfer,
                    branches,
                } => {
                    c.next_tx = c.next_tx.max(tx + 1);
                    c.running.insert(transfer.id.clone(), tx);
                    c.txs.insert(
                        tx,
                        Tx {
                            id: tx,
                            age,
                            transfer,
                            phase: Phase::Finishing {
                                outcome: Outcome::Aborted,
                                unacked: branches.keys().cloned().collect(),
                            },
                            branches,
                            began_ms: now_ms,
                            refusal: Some("the coordinator restarted before deciding".into()),
                            attempt: 1,
                            decided_ms: Some(now_ms),
                        },
                    );
                }
                LogRecord::Commit { tx } => {
                    if let Some(t) = c.txs.get_mut(&tx) {
                        t.refusal = None;
                        t.phase = Phase::Finishing {
                            outcome: Outcome::Committed,
                            unacked: t.branches.keys().cloned().collect(),
                        };
                    }
                }
                LogRecord::End { tx, .. } => c.end(tx),
            }
        }
        c
    }

    /// Starts `transfer` as a transaction with `branches` (the service decides which
    /// participants own what), unless its id is running or settled.
    pub fn begin(
        &mut self,
        transfer: Transfer,
        branches: BTreeMap<String, Branch>,
        started_us: u64,
        now_ms: u64,
    ) -> Result<Begun, Reused> {
        if let Some(tx) = self.running.get(&transfer.id) {
            let first = &self.txs[tx].transfer;
            if *first != transfer {
                return Err(Reused {
                    id: transfer.id,
                    first: first.clone(),
                });
            }
            return Ok(Begun::Running(*tx));
        }
        if let Some((first, settled)) = self.settled.get(&transfer.id) {
            if *first != transfer {
                return Err(Reused {
                    id: transfer.id,
                    first: first.clone(),
                });
            }
            return Ok(Begun::Settled(settled.clone()));
        }
        // Transaction ids start at 1: 0 means none on the wire.
        let tx = self.next_tx.max(1);
        self.next_tx = tx + 1;
        let age = Age {
            started: started_us,
            tx,
        };
        self.running.insert(transfer.id.clone(), tx);
        self.txs.insert(
            tx,
            Tx {
                id: tx,
                age,
                transfer: transfer.clone(),
                branches: branches.clone(),
                phase: Phase::Preparing {
                    votes: BTreeMap::new(),
                },
                began_ms: now_ms,
                refusal: None,
                attempt: 1,
                decided_ms: None,
            },
        );
        Ok(Begun::New(LogRecord::Begin {
            tx,
            age,
            transfer,
            branches,
        }))
    }

    /// Runs the transfer of aborted transaction `old` again as a new transaction with the
    /// same age (wait-die: a retried transaction keeps its seniority, so it cannot starve).
    /// Returns the new `Begin` record; `None` if `old` is not aborted or its transfer has
    /// moved on.
    fn retry(&mut self, old: TxId, now_ms: u64) -> Option<LogRecord> {
        let t = self.txs.get(&old)?;
        if !matches!(
            t.phase,
            Phase::Finishing {
                outcome: Outcome::Aborted,
                ..
            }
        ) || self.running.get(&t.transfer.id) != Some(&old)
        {
            return None;
        }
        // Transaction ids start at 1: 0 means none on the wire.
        let tx = self.next_tx.max(1);
        self.next_tx = tx + 1;
        let age = Age {
            started: t.age.started,
            tx,
        };
        let next = Tx {
            id: tx,
            age,
            transfer: t.transfer.clone(),
            branches: t.branches.clone(),
            phase: Phase::Preparing {
                votes: BTreeMap::new(),
            },
            began_ms: now_ms,
            refusal: None,
            attempt: t.attempt + 1,
            decided_ms: None,
        };
        let record = LogRecord::Begin {
            tx,
            age,
            transfer: next.transfer.clone(),
            branches: next.branches.clone(),
        };
        self.running.insert(next.transfer.id.clone(), tx);
        self.txs.insert(tx, next);
        Some(record)
    }

    /// How the transfer `id` ended, as soon as it is decided (participants may still be
    /// hearing of it); `None` while undecided or unknown.
    pub fn outcome_of(&self, id: &str) -> Option<Settled> {
        if let Some(tx) = self.running.get(id) {
            let t = &self.txs[tx];
            return match &t.phase {
                Phase::Preparing { .. } | Phase::Deciding => None,
                Phase::Finishing {
                    outcome: Outcome::Committed,
                    ..
                } => Some(Settled::Committed),
                Phase::Finishing { .. } => Some(Settled::Aborted(
                    t.refusal.clone().unwrap_or_else(|| "aborted".into()),
                )),
            };
        }
        self.settled(id).cloned()
    }

    pub fn tx(&self, tx: TxId) -> Option<&Tx> {
        self.txs.get(&tx)
    }

    pub fn in_flight(&self) -> impl Iterator<Item = &Tx> {
        self.txs.values()
    }

    pub fn settled(&self, id: &str) -> Option<&Settled> {
        self.settled.get(id).map(|(_, s)| s)
    }

    /// A participant's vote. All yes: commit; any no: abort, and when the no came from a lock
    /// conflict (`retryable`), a retry while attempts remain.
    pub fn vote(
        &mut self,
        tx: TxId,
        participant: &str,
        yes: bool,
        retryable: bool,
        reason: &str,
        now_ms: u64,
    ) -> Next {
        let Some(t) = self.txs.get_mut(&tx) else {
            return Next::Wait;
        };
        let Phase::Preparing { votes } = &mut t.phase else {
            return Next::Wait;
        };
        if !t.branches.contains_key(participant) {
            return Next::Wait;
        }
        votes.insert(participant.to_string(), yes);
        if !yes {
            let attempt = t.attempt;
            let reason = format!("{participant} voted no: {reason}");
            self.decide(tx, Outcome::Aborted, Some(reason.clone()), now_ms);
            let retry = (retryable && attempt < self.max_attempts)
                .then(|| self.retry(tx, now_ms))
                .flatten();
            return Next::Abort { reason, retry };
        }
        if votes.len() == t.branches.len() {
            t.phase = Phase::Deciding;
            Next::Commit
        } else {
            Next::Wait
        }
    }

    /// Records the decision: abort while preparing, commit once the `Commit` record is
    /// durable (an abort cannot overtake a commit being logged: it is ignored then).
    pub fn decide(&mut self, tx: TxId, outcome: Outcome, refusal: Option<String>, now_ms: u64) {
        if let Some(t) = self.txs.get_mut(&tx) {
            let allowed = matches!(
                (&t.phase, outcome),
                (Phase::Preparing { .. }, Outcome::Aborted) | (Phase::Deciding, Outcome::Committed)
            );
            if allowed {
                t.refusal = refusal;
                t.decided_ms = Some(now_ms);
                t.phase = Phase::Finishing {
                    outcome,
                    unacked: t.branches.keys().cloned().collect(),
                };
            }
        }
    }

    /// Transactions still collecting votes after `timeout_ms`: abort them.
    pub fn expired(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<TxId> {
        let late: Vec<TxId> = self
            .txs
            .values()
            .filter(|t| {
                matches!(t.phase, Phase::Preparing { .. })
                    && now_ms.saturating_sub(t.began_ms) >= timeout_ms
            })
            .map(|t| t.id)
            .collect();
        for tx in &late {
            self.decide(
                *tx,
                Outcome::Aborted,
                Some(format!(
                    "no decision within {timeout_ms} ms: a participant did not vote"
                )),
                now_ms,
            );
        }
        late
    }

    /// A participant's question about `tx` (it is in doubt). Presumed abort: what has no
    /// commit decision is aborted, and an undecided transaction is aborted now. `None`: the
    /// commit is being logged; ask again.
    pub fn query(&mut self, tx: TxId, now_ms: u64) -> Option<Outcome> {
        match self.txs.get(&tx).map(|t| &t.phase) {
            Some(Phase::Finishing { outcome, .. }) => Some(*outcome),
            Some(Phase::Deciding) => None,
            Some(Phase::Preparing { .. }) => {
                self.decide(
                    tx,
                    Outcome::Aborted,
                    Some("a participant asked before every vote was in".into()),
                    now_ms,
                );
                Some(Outcome::Aborted)
            }
            // Ended, or never begun: only committed transactions need a record, and an ended
            // committed one was acknowledged by every participant, so nobody asks about it.
            None => Some(Outcome::Aborted),
        }
    }

    /// A participant acknowledged the outcome. When it was the last: the `End` record to
    /// append (lazily; losing it only means resending the outcome after a restart).
    pub fn ack(&mut self, tx: TxId, participant: &str) -> Option<LogRecord> {
        let t = self.txs.get_mut(&tx)?;
        let Phase::Finishing { outcome, unacked } = &mut t.phase else {
            return None;
        };
        unacked.remove(participant);
        if !unacked.is_empty() {
            return None;
        }
        let outcome = *outcome;
        self.end(tx);
        Some(LogRecord::End { tx, outcome })
    }

    /// Participants to (re)send the outcome to, for each transaction deciding.
    pub fn unfinished(&self) -> Vec<(TxId, Outcome, Vec<String>)> {
        self.txs
            .values()
            .filter_map(|t| match &t.phase {
                Phase::Finishing { outcome, unacked } => {
                    Some((t.id, *outcome, unacked.iter().cloned().collect()))
                }
                Phase::Preparing { .. } | Phase::Deciding => None,
            })
            .collect()
    }

    fn end(&mut self, tx: TxId) {
        let Some(t) = self.txs.remove(&tx) else {
            return;
        };
        if self.running.get(&t.transfer.id) != Some(&tx) {
            // A retried attempt: the transfer lives on in a later transaction.
            return;
        }
        self.running.remove(&t.transfer.id);
        let settled = match (&t.phase, t.refusal) {
            (
                Phase::Finishing {
                    outcome: Outcome::Committed,
                    ..
                },
                _,
            ) => Settled::Committed,
            (_, reason) => Settled::Aborted(reason.unwrap_or_else(|| "aborted".into())),
        };
        let id = t.transfer.id.clone();
        self.settled.insert(id.clone(), (t.transfer, settled));
        self.settled_order.push_back(id);
        while self.settled_order.len() > REMEMBERED {
            if let Some(old) = self.settled_order.pop_front() {
                self.settled.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(id: &str) -> Transfer {
        Transfer {
            id: id.into(),
            from: "a".into(),
            to: "b".into(),
            amount: 5,
        }
    }

    fn branches() -> BTreeMap<String, Branch> {
        ["s1", "s2", "ledger"]
            .into_iter()
            .map(|p| (p.to_string(), Branch::default()))
            .collect()
    }

    fn begin(c: &mut Coordinator, id: &str) -> (TxId, LogRecord) {
        match c.begin(transfer(id), branches(), 1, 0).unwrap() {
            Begun::New(record @ LogRecord::Begin { tx, .. }) => (tx, record),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_yes_commits_and_every_ack_ends() {
        let mut c = Coordinator::default();
        let (tx, _) = begin(&mut c, "t1");
        assert_eq!(c.vote(tx, "s1", true, false, "", 0), Next::Wait);
        assert_eq!(c.vote(tx, "s2", true, false, "", 0), Next::Wait);
        assert_eq!(c.vote(tx, "ledger", true, false, "", 0), Next::Commit);
        // While the commit is logged, nobody hears anything, and nothing aborts it.
        assert_eq!(c.query(tx, 0), None);
        c.decide(tx, Outcome::Aborted, None, 0);
        assert!(c.expired(10_000, 1).is_empty());
        assert_eq!(c.outcome_of("t1"), None);
        c.decide(tx, Outcome::Committed, None, 0);
        assert_eq!(c.query(tx, 0), Some(Outcome::Committed));
        assert_eq!(c.ack(tx, "s1"), None);
        assert_eq!(c.ack(tx, "s2"), None);
        assert_eq!(
            c.ack(tx, "ledger"),
            Some(LogRecord::End {
                tx,
                outcome: Outcome::Committed
            })
        );
        assert_eq!(c.settled("t1"), Some(&Settled::Committed));
        // A client retry gets the outcome; a different transfer under the same id is refused.
        assert_eq!(
            c.begin(transfer("t1"), branches(), 1, 0),
            Ok(Begun::Settled(Settled::Committed))
        );
        let mut other = transfer("t1");
        other.amount = 6;
        assert!(c.begin(other, branches(), 1, 0).is_err());
    }

    #[test]
    fn one_no_aborts_with_its_reason() {
        let mut c = Coordinator::default();
        let (tx, _) = begin(&mut c, "t1");
        assert_eq!(c.vote(tx, "s1", true, false, "", 0), Next::Wait);
        let next = c.vote(tx, "s2", false, false, "insufficient funds", 0);
        assert_eq!(
            next,
            Next::Abort {
                reason: "s2 voted no: insufficient funds".into(),
                retry: None
            }
        );
        // A late yes changes nothing.
        assert_eq!(c.vote(tx, "ledger", true, false, "", 0), Next::Wait);
        for p in ["s1", "s2", "ledger"] {
            c.ack(tx, p);
        }
        assert!(matches!(c.settled("t1"), Some(Settled::Aborted(r)) if r.contains("insufficient")));
    }

    #[test]
    fn a_question_before_the_decision_aborts_and_a_silent_participant_times_out() {
        let mut c = Coordinator::default();
        let (t1, _) = begin(&mut c, "t1");
        c.vote(t1, "s1", true, false, "", 0);
        assert_eq!(c.query(t1, 0), Some(Outcome::Aborted));
        assert_eq!(
            c.vote(t1, "s2", true, false, "", 0),
            Next::Wait,
            "decided already"
        );
        let (t2, _) = begin(&mut c, "t2");
        assert!(c.expired(500, 1000).is_empty());
        assert_eq!(c.expired(1000, 1000), vec![t2]);
        assert_eq!(c.query(t2, 0), Some(Outcome::Aborted));
        // Never heard of: presumed aborted.
        assert_eq!(c.query(99, 0), Some(Outcome::Aborted));
    }

    #[test]
    fn a_retry_keeps_the_age_and_the_first_attempt_ends_quietly() {
        let mut c = Coordinator::recover([], 0, 2);
        let (t1, _) = begin(&mut c, "t1");
        let Next::Abort {
            retry: Some(LogRecord::Begin { tx: t2, age, .. }),
            ..
        } = c.vote(t1, "s1", false, true, "died", 5)
        else {
            panic!("no retry")
        };
        assert_eq!(age.started, 1);
        assert!(t2 > t1);
        assert_eq!(c.outcome_of("t1"), None, "undecided again");
        assert!(c.retry(t1, 5).is_none(), "only the latest attempt retries");
        for p in ["s1", "s2", "ledger"] {
            c.ack(t1, p);
        }
        assert_eq!(c.settled("t1"), None);
        for p in ["s1", "s2", "ledger"] {
            c.vote(t2, p, true, false, "", 0);
        }
        c.decide(t2, Outcome::Committed, None, 0);
        assert_eq!(c.outcome_of("t1"), Some(Settled::Committed));
        assert_eq!(c.tx(t2).unwrap().attempt, 2);
        // The last attempt allowed is not retried.
        let (t3, _) = begin(&mut c, "t3");
        let Next::Abort {
            retry: Some(LogRecord::Begin { tx: t4, .. }),
            ..
        } = c.vote(t3, "s1", false, true, "died", 5)
        else {
            panic!("no retry")
        };
        assert!(matches!(
            c.vote(t4, "s1", false, true, "died", 5),
            Next::Abort { retry: None, .. }
        ));
    }

    /// A restart replays the log: a commit without its end is resent to everyone, a begin
    /// without a commit is aborted, an ended transaction is done.
    #[test]
    fn recovery_finishes_what_the_log_says_was_in_flight() {
        let mut c = Coordinator::default();
        let mut log = Vec::new();
        let (t1, r1) = begin(&mut c, "t1");
        let (t2, r2) = begin(&mut c, "t2");
        let (t3, r3) = begin(&mut c, "t3");
        log.extend([
            r1,
            r2,
            r3,
            LogRecord::Commit { tx: t1 },
            LogRecord::Commit { tx: t3 },
        ]);
        log.push(LogRecord::End {
            tx: t3,
            outcome: Outcome::Committed,
        });
        let mut c = Coordinator::recover(log, 0, 3);
        let unfinished = c.unfinished();
        assert_eq!(unfinished.len(), 2);
        assert_eq!(unfinished[0].0, t1);
        assert_eq!(unfinished[0].1, Outcome::Committed);
        assert_eq!(unfinished[0].2.len(), 3);
        assert_eq!(unfinished[1].0, t2);
        assert_eq!(unfinished[1].1, Outcome::Aborted);
        assert_eq!(c.query(t1, 0), Some(Outcome::Committed));
        assert_eq!(c.query(t2, 0), Some(Outcome::Aborted));
        assert_eq!(c.settled("t3"), Some(&Settled::Committed));
        // New transactions do not reuse ids.
        let (t4, _) = begin(&mut c, "t4");
        assert!(t4 > t3);
        // A client retrying t1 waits for it.
        assert_eq!(
            c.begin(transfer("t1"), branches(), 1, 0),
            Ok(Begun::Running(t1))
        );
    }
}
