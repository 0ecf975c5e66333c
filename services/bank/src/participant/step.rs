//! Saga steps at a participant, without sockets or disks: each step is a local transaction
//! named by an idempotency key (`TRANSFER/debit`, `/credit`, `/ledger`), and what a key has
//! done is recorded with its effect, in the same store write.
//!
//! - `apply(key)`: the first time, the change is checked (no balance below zero, no overflow)
//!   and recorded as `applied` or `refused`; every later apply of the key answers the same.
//! - `cancel(key)`: the compensation. A key never applied is *fenced* (recorded as such, so an
//!   apply still on its way does nothing when it lands); an applied key is *reversed* when the
//!   caller asks for it (a debit's refund), or reported as applied (a credit that did land
//!   after all: the saga goes forward instead).
//!
//! Because the fence and the apply meet at the one participant that owns the account, the
//! orchestrator never has to guess whether a timed-out step happened: it asks with a cancel.

use serde::{Deserialize, Serialize};

use super::{Participant, Refusal};

/// What a key has done at this participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Applied,
    /// Checked and refused (insufficient funds): refused for good, even if funds arrive.
    Refused,
    /// Cancelled before it was applied: it never will be.
    Fenced,
    /// Applied, then undone by its compensation.
    Reversed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Applied => "applied",
            StepState::Refused => "refused",
            StepState::Fenced => "fenced",
            StepState::Reversed => "reversed",
        }
    }
}

/// A key's record, kept with its effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    pub key: String,
    /// The account changed (empty at the ledger).
    pub account: String,
    pub delta: i64,
    pub state: StepState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an apply does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyPlan {
    /// The key was seen before: answer as then, write nothing.
    Repeat(StepRecord),
    /// Write this record, and this new balance with it (none for a refusal or the ledger).
    Write {
        record: StepRecord,
        balance: Option<(String, i64)>,
    },
    /// A two-phase-commit transaction holds the account: try again shortly (nothing
    /// recorded).
    Busy(String),
}

/// What a cancel does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelPlan {
    pub was_applied: bool,
    /// The record to write and the balance with it (none when nothing changes).
    pub write: Option<(StepRecord, Option<(String, i64)>)>,
}

impl Participant {
    /// Plans applying `delta` to `account` under `key` (`account` empty: the ledger's journal
    /// entry, which is always applied). `existing` is the key's record, if any.
    pub fn plan_apply(
        &self,
        existing: Option<&StepRecord>,
        key: &str,
        account: &str,
        delta: i64,
    ) -> ApplyPlan {
        if let Some(record) = existing {
            return ApplyPlan::Repeat(record.clone());
        }
        let record = |state, reason: Option<String>| StepRecord {
            key: key.to_string(),
            account: account.to_string(),
            delta,
            state,
            reason,
        };
        if account.is_empty() {
            return ApplyPlan::Write {
                record: record(StepState::Applied, None),
                balance: None,
            };
        }
        if self.locks.is_locked(account) {
            return ApplyPlan::Busy(format!(
                "{account} is locked by a two-phase-commit transaction"
            ));
        }
        let refused = |why: Refusal| ApplyPlan::Write {
            record: record(StepState::Refused, Some(why.to_string())),
            balance: None,
        };
        let Some(balance) = self.balance(account) else {
            return refused(Refusal::UnknownAccount(account.to_string()));
        };
        match balance.checked_add(delta) {
            None => refused(Refusal::Overflow(account.to_string())),
            Some(next) if next < 0 => refused(Refusal::Insufficient {
                account: account.to_string(),
                balance,
                delta,
            }),
            Some(next) => ApplyPlan::Write {
                record: record(StepState::Applied, None),
                balance: Some((account.to_string(), next)),
            },
        }
    }

    /// Plans cancelling `key` on `account`: fence it, or (with `reverse`) undo it.
    pub fn plan_cancel(
        &self,
        existing: Option<&StepRecord>,
        key: &str,
        account: &str,
        reverse: bool,
    ) -> CancelPlan {
        match existing {
            None => CancelPlan {
                was_applied: false,
                write: Some((
                    StepRecord {
                        key: key.to_string(),
                        account: account.to_string(),
                        delta: 0,
                        state: StepState::Fenced,
                        reason: None,
                    },
                    None,
                )),
            },
            Some(r) if r.state == StepState::Applied && reverse && !r.account.is_empty() => {
                let balance = self
                    .balance(&r.account)
                    .expect("an applied step's account is here");
                CancelPlan {
                    was_applied: true,
                    write: Some((
                        StepRecord {
                            state: StepState::Reversed,
                            ..r.clone()
                        },
                        // A debit's refund adds back what it took: no floor to cross.
                        Some((r.account.clone(), balance.saturating_sub(r.delta))),
                    )),
                }
            }
            Some(r) => CancelPlan {
                was_applied: matches!(r.state, StepState::Applied | StepState::Reversed),
                write: None,
            },
        }
    }

    /// Records a balance the store wrote for a step.
    pub fn step_written(&mut self, balance: Option<&(String, i64)>) {
        if let Some((account, balance)) = balance {
            self.balances.insert(account.clone(), *balance);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::lock::{Age, Mode, Policy};

    fn participant() -> Participant {
        let balances = BTreeMap::from([("a".to_string(), 100), ("b".to_string(), 0)]);
        Participant::new(balances, Vec::new(), Policy::WaitDie)
    }

    /// Plans and applies a step as the service does (store write, then the balance).
    fn run(p: &mut Participant, key: &str, account: &str, delta: i64) -> Option<StepRecord> {
        let plan = p.plan_apply(None, key, account, delta);
        match &plan {
            ApplyPlan::Write { record, balance } => {
                p.step_written(balance.as_ref());
                Some(record.clone())
            }
            ApplyPlan::Repeat(r) => Some(r.clone()),
            ApplyPlan::Busy(_) => None,
        }
    }

    #[test]
    fn a_key_applies_once_and_a_refusal_stays_a_refusal() {
        let mut p = participant();
        let record = run(&mut p, "t1/debit", "a", -60).unwrap();
        assert_eq!(record.state, StepState::Applied);
        assert_eq!(p.balance("a"), Some(40));
        let again = p.plan_apply(Some(&record), "t1/debit", "a", -60);
        assert_eq!(again, ApplyPlan::Repeat(record));
        assert_eq!(p.balance("a"), Some(40), "a repeat moves nothing");

        let refused = run(&mut p, "t2/debit", "a", -50).unwrap();
        assert_eq!(refused.state, StepState::Refused);
        assert!(refused.reason.unwrap().contains("insufficient funds"));
        assert_eq!(p.balance("a"), Some(40));
        // Funds arrive; the refused key still does not apply (its saga already ended).
        run(&mut p, "t3/credit", "a", 100).unwrap();
        let refused = p.plan_apply(None, "t2/debit", "a", -50);
        assert!(matches!(refused, ApplyPlan::Write { .. }), "unseen key");
        let seen = StepRecord {
            key: "t2/debit".into(),
            account: "a".into(),
            delta: -50,
            state: StepState::Refused,
            reason: None,
        };
        assert!(matches!(
            p.plan_apply(Some(&seen), "t2/debit", "a", -50),
            ApplyPlan::Repeat(r) if r.state == StepState::Refused
        ));
    }

    #[test]
    fn a_cancel_before_the_apply_fences_the_key() {
        let p = participant();
        let plan = p.plan_cancel(None, "t1/credit", "b", false);
        assert!(!plan.was_applied);
        let (fence, balance) = plan.write.unwrap();
        assert_eq!(fence.state, StepState::Fenced);
        assert!(balance.is_none());
        // The credit arrives late: it does nothing.
        let late = p.plan_apply(Some(&fence), "t1/credit", "b", 30);
        assert!(matches!(late, ApplyPlan::Repeat(r) if r.state == StepState::Fenced));
        assert_eq!(p.balance("b"), Some(0));
    }

    #[test]
    fn a_cancel_after_the_apply_reverses_it_or_reports_it() {
        let mut p = participant();
        let debit = run(&mut p, "t1/debit", "a", -30).unwrap();
        assert_eq!(p.balance("a"), Some(70));
        let refund = p.plan_cancel(Some(&debit), "t1/debit", "a", true);
        assert!(refund.was_applied);
        let (reversed, balance) = refund.write.unwrap();
        assert_eq!(reversed.state, StepState::Reversed);
        p.step_written(balance.as_ref());
        assert_eq!(p.balance("a"), Some(100));
        // A second refund changes nothing.
        let again = p.plan_cancel(Some(&reversed), "t1/debit", "a", true);
        assert!(again.was_applied && again.write.is_none());

        let credit = run(&mut p, "t1/credit", "b", 30).unwrap();
        let query = p.plan_cancel(Some(&credit), "t1/credit", "b", false);
        assert!(query.was_applied && query.write.is_none(), "{query:?}");
        assert_eq!(p.balance("b"), Some(30));
    }

    #[test]
    fn a_two_phase_commit_lock_makes_a_step_wait() {
        let mut p = participant();
        let age = Age { started: 1, tx: 9 };
        assert_eq!(
            p.locks.acquire(age, "a", Mode::Exclusive),
            crate::lock::Acquire::Granted
        );
        assert!(matches!(
            p.plan_apply(None, "t1/debit", "a", -1),
            ApplyPlan::Busy(_)
        ));
        p.locks.release(9);
        assert!(matches!(
            p.plan_apply(None, "t1/debit", "a", -1),
            ApplyPlan::Write { .. }
        ));
    }

    #[test]
    fn unknown_accounts_and_overflows_are_refused() {
        let p = participant();
        let plan = p.plan_apply(None, "k", "zz", 1);
        assert!(
            matches!(plan, ApplyPlan::Write { record, .. } if record.state == StepState::Refused)
        );
        let mut p = participant();
        run(&mut p, "k1", "a", i64::MAX - 100).unwrap();
        let plan = p.plan_apply(None, "k2", "a", 1);
        assert!(
            matches!(plan, ApplyPlan::Write { record, .. } if record.reason.as_deref().is_some_and(|r| r.contains("overflow")))
        );
    }
}
