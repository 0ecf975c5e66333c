//! A transfer as a saga, without sockets or disks: the orchestrator's state machine for one
//! transfer, which the service drives with the answers of the participants.
//!
//! The steps (Garcia-Molina and Salem's sagas; Richardson's orchestration):
//! 1. **debit** the source account (its shard): compensable, by a refund;
//! 2. **credit** the destination (its shard): the pivot. Once it is known to have landed the
//!    saga can only go forward; if it cannot be confirmed, it is *fenced* (a cancel at the
//!    destination: either it had landed, and the saga goes forward after all, or it never
//!    will), and the debit refunded;
//! 3. **ledger**: journal the transfer; retried until it succeeds (it comes after the pivot);
//! 4. **notify**: the end state and its event go into the orchestrator's outbox in one store
//!    write; the relay takes the event to Kafka-lite, the notifications service consumes it.
//!
//! Every remote step carries an idempotency key (`ID/debit`, `ID/credit`, `ID/ledger`), so the
//! orchestrator may resend a step as often as it likes — after a timeout, or after its own
//! crash, when it resumes each unfinished saga from the phase its log holds. A step that fails
//! is retried with backoff; a forward step that exhausts its attempts turns the saga to
//! compensation; a compensation (or the ledger) that exhausts its attempts parks the saga in
//! the dead-letter queue, where an operator retries or discards it.

pub mod relay;
pub mod service;

use serde::{Deserialize, Serialize};

use crate::domain::Transfer;

/// Where a saga is: the step it is running, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Debit,
    Credit,
    Ledger,
    /// Compensating: asking the destination whether the credit landed, fencing it if not.
    FenceCredit,
    /// Compensating: refunding the debit (or fencing it, if it never landed).
    Refund,
    Completed,
    /// The debit was refused (insufficient funds): nothing moved.
    Refused,
    /// Compensated: the debit refunded, nothing moved in the end.
    Compensated,
    /// Given up by an operator from the dead-letter queue.
    Discarded,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Refused | Phase::Compensated | Phase::Discarded
        )
    }

    /// Past the pivot: the credit landed, so the transfer will complete (the ledger and the
    /// notification are retried until they do, or an operator takes it from the dead-letter
    /// queue): its client can be told it is committed.
    pub fn past_the_pivot(self) -> bool {
        matches!(self, Phase::Ledger | Phase::Completed)
    }

    pub fn is_compensating(self) -> bool {
        matches!(self, Phase::FenceCredit | Phase::Refund)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Debit => "debit",
            Phase::Credit => "credit",
            Phase::Ledger => "ledger",
            Phase::FenceCredit => "fence_credit",
            Phase::Refund => "refund",
            Phase::Completed => "completed",
            Phase::Refused => "refused",
            Phase::Compensated => "compensated",
            Phase::Discarded => "discarded",
        }
    }

    /// The step's number in debit, credit, ledger, notify (the view's "step k of 4").
    pub fn step_number(self) -> u32 {
        match self {
            Phase::Debit | Phase::Refund => 1,
            Phase::Credit | Phase::FenceCredit => 2,
            Phase::Ledger => 3,
            _ => 4,
        }
    }
}

/// What a participant answered for a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAnswer {
    /// Apply: done (now or before).
    Applied,
    /// Apply: refused for good (insufficient funds, ...).
    Refused(String),
    /// Apply: the key was fenced by an earlier cancel.
    Fenced,
    /// Cancel: whether the step had been applied.
    Cancelled { was_applied: bool },
    /// No answer, or an error worth retrying.
    Failed(String),
}

/// How many attempts a step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempts {
    /// Debit and credit: then the saga compensates.
    pub forward: u32,
    /// Compensations and the ledger: then the saga is dead-lettered.
    pub must_finish: u32,
}

/// One transfer's saga, as its log record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub transfer: Transfer,
    pub phase: Phase,
    /// Attempts of the current phase so far.
    pub attempts: u32,
    /// Parked in the dead-letter queue at `phase`.
    #[serde(default)]
    pub dead_lettered: bool,
    /// The debit is known to have landed and is not yet refunded: the money is in flight.
    #[serde(default)]
    pub debited: bool,
    /// Why it is compensating, was refused, or was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last failed attempt's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub started_ms: u64,
    pub changed_ms: u64,
}

/// What the service does next with a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Run the current phase's step (again).
    Run,
    /// Run it again after a backoff.
    Retry,
    /// It ended: write the end (with its outbox event, if it has one) durably.
    End,
    /// Park it: the dead-letter queue.
    DeadLetter,
}

impl Saga {
    pub fn new(transfer: Transfer, now_ms: u64) -> Saga {
        Saga {
            transfer,
            phase: Phase::Debit,
            attempts: 0,
            dead_lettered: false,
            debited: false,
            reason: None,
            last_error: None,
            started_ms: now_ms,
            changed_ms: now_ms,
        }
    }

    /// The money this saga has in flight (debited, not yet credited or refunded).
    pub fn in_flight(&self) -> i64 {
        if self.debited {
            self.transfer.amount
        } else {
            0
        }
    }

    fn enter(&mut self, phase: Phase, now_ms: u64) -> Next {
        self.phase = phase;
        self.attempts = 0;
        self.last_error = None;
        self.changed_ms = now_ms;
        if phase.is_terminal() {
            Next::End
        } else {
            Next::Run
        }
    }

    fn compensate(&mut self, phase: Phase, why: String, now_ms: u64) -> Next {
        tracing::debug!(saga = %self.transfer.id, %why, "compensating");
        self.reason = Some(why);
        self.enter(phase, now_ms)
    }

    /// Takes a step's answer; says what to do next.
    pub fn on_answer(&mut self, answer: StepAnswer, attempts: Attempts, now_ms: u64) -> Next {
        use StepAnswer as A;
        let phase = self.phase;
        match (phase, answer) {
            (Phase::Debit, A::Applied) => {
                self.debited = true;
                self.enter(Phase::Credit, now_ms)
            }
            (Phase::Debit, A::Refused(why)) => {
                self.reason = Some(why);
                self.enter(Phase::Refused, now_ms)
            }
            // Fenced: an earlier run of this saga compensated already (its log lagged).
            (Phase::Debit, A::Fenced) => self.compensate(
                Phase::Refund,
                "the debit was cancelled before".into(),
                now_ms,
            ),
            (Phase::Credit, A::Applied) => self.enter(Phase::Ledger, now_ms),
            (Phase::Credit, A::Refused(why)) => {
                self.compensate(Phase::Refund, format!("credit refused: {why}"), now_ms)
            }
            (Phase::Credit, A::Fenced) => {
                self.compensate(Phase::Refund, "the credit was fenced before".into(), now_ms)
            }
            (Phase::Ledger, A::Applied) => {
                self.debited = false;
                self.enter(Phase::Completed, now_ms)
            }
            (Phase::FenceCredit, A::Cancelled { was_applied: true }) => {
                // The credit landed after all: the saga goes forward.
                self.reason = None;
                self.enter(Phase::Ledger, now_ms)
            }
            (Phase::FenceCredit, A::Cancelled { was_applied: false }) => {
                self.enter(Phase::Refund, now_ms)
            }
            (Phase::Refund, A::Cancelled { .. }) => {
                self.debited = false;
                self.enter(Phase::Compensated, now_ms)
            }
            (_, A::Failed(error)) => {
                self.attempts += 1;
                self.last_error = Some(error.clone());
                self.changed_ms = now_ms;
                match phase {
                    Phase::Debit | Phase::Credit if self.attempts < attempts.forward => Next::Retry,
                    Phase::Debit => self.compensate(
                        Phase::Refund,
                        format!(
                            "debit: {} attempts failed, the last: {error}",
                            self.attempts
                        ),
                        now_ms,
                    ),
                    Phase::Credit => self.compensate(
                        Phase::FenceCredit,
                        format!(
                            "credit: {} attempts failed, the last: {error}",
                            self.attempts
                        ),
                        now_ms,
                    ),
                    _ if self.attempts < attempts.must_finish => Next::Retry,
                    _ => {
                        self.dead_lettered = true;
                        Next::DeadLetter
                    }
                }
            }
            (phase, answer) => {
                // An answer that does not fit the phase (a ledger refusing an entry): nobody
                // can fix it by retrying; an operator must look.
                self.dead_lettered = true;
                self.last_error = Some(format!("{} answered {answer:?}", phase.as_str()));
                self.changed_ms = now_ms;
                Next::DeadLetter
            }
        }
    }

    /// Takes a dead-lettered saga out of the queue: its step runs again with fresh attempts.
    pub fn retry_dead_letter(&mut self, now_ms: u64) -> bool {
        if !self.dead_lettered {
            return false;
        }
        self.dead_lettered = false;
        self.attempts = 0;
        self.changed_ms = now_ms;
        true
    }

    /// Gives a dead-lettered saga up.
    pub fn discard(&mut self, now_ms: u64) -> bool {
        if !self.dead_lettered {
            return false;
        }
        self.dead_lettered = false;
        self.reason = Some(format!(
            "discarded from the dead-letter queue at {}",
            self.phase.as_str()
        ));
        self.enter(Phase::Discarded, now_ms);
        true
    }
}

/// The event a saga's end publishes (through the outbox), if any: completed and compensated
/// transfers are notified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferEvent {
    /// `TRANSFER-ID/OUTCOME`: the consumer's idempotency key.
    pub event: String,
    pub transfer: String,
    /// `completed` or `compensated`.
    pub outcome: String,
    pub from: String,
    pub to: String,
    pub amount: i64,
    pub at_ms: u64,
}

impl TransferEvent {
    pub fn of(saga: &Saga) -> Option<TransferEvent> {
        let outcome = match saga.phase {
            Phase::Completed | Phase::Compensated => saga.phase.as_str(),
            _ => return None,
        };
        let t = &saga.transfer;
        Some(TransferEvent {
            event: format!("{}/{outcome}", t.id),
            transfer: t.id.clone(),
            outcome: outcome.to_string(),
            from: t.from.clone(),
            to: t.to.clone(),
            amount: t.amount,
            at_ms: saga.changed_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPTS: Attempts = Attempts {
        forward: 3,
        must_finish: 5,
    };

    fn saga() -> Saga {
        Saga::new(
            Transfer {
                id: "t1".into(),
                from: "acct-0000".into(),
                to: "acct-0001".into(),
                amount: 10,
            },
            0,
        )
    }

    fn fail(s: &mut Saga, times: u32) -> Next {
        let mut next = Next::Run;
        for _ in 0..times {
            next = s.on_answer(StepAnswer::Failed("timeout".into()), ATTEMPTS, 1);
        }
        next
    }

    #[test]
    fn the_happy_path_runs_every_step_once() {
        let mut s = saga();
        assert_eq!(s.on_answer(StepAnswer::Applied, ATTEMPTS, 1), Next::Run);
        assert_eq!((s.phase, s.in_flight()), (Phase::Credit, 10));
        assert_eq!(s.on_answer(StepAnswer::Applied, ATTEMPTS, 2), Next::Run);
        assert_eq!(s.phase, Phase::Ledger);
        assert_eq!(s.on_answer(StepAnswer::Applied, ATTEMPTS, 3), Next::End);
        assert_eq!((s.phase, s.in_flight()), (Phase::Completed, 0));
        let event = TransferEvent::of(&s).unwrap();
        assert_eq!(event.event, "t1/completed");
    }

    #[test]
    fn a_refused_debit_ends_the_saga_with_nothing_to_undo() {
        let mut s = saga();
        let next = s.on_answer(
            StepAnswer::Refused("insufficient funds".into()),
            ATTEMPTS,
            1,
        );
        assert_eq!((next, s.phase), (Next::End, Phase::Refused));
        assert_eq!(s.in_flight(), 0);
        assert!(TransferEvent::of(&s).is_none(), "refusals are not notified");
    }

    #[test]
    fn a_credit_that_cannot_be_confirmed_is_fenced_then_the_debit_refunded() {
        let mut s = saga();
        s.on_answer(StepAnswer::Applied, ATTEMPTS, 1);
        assert_eq!(fail(&mut s, 2), Next::Retry);
        assert_eq!(s.phase, Phase::Credit);
        assert_eq!(fail(&mut s, 1), Next::Run);
        assert_eq!(s.phase, Phase::FenceCredit);
        assert!(s.reason.as_ref().unwrap().contains("3 attempts"));
        assert_eq!(s.in_flight(), 10, "still debited while compensating");
        let next = s.on_answer(StepAnswer::Cancelled { was_applied: false }, ATTEMPTS, 2);
        assert_eq!((next, s.phase), (Next::Run, Phase::Refund));
        let next = s.on_answer(StepAnswer::Cancelled { was_applied: true }, ATTEMPTS, 3);
        assert_eq!(
            (next, s.phase, s.in_flight()),
            (Next::End, Phase::Compensated, 0)
        );
        assert_eq!(TransferEvent::of(&s).unwrap().outcome, "compensated");
    }

    #[test]
    fn a_credit_that_landed_after_all_goes_forward() {
        let mut s = saga();
        s.on_answer(StepAnswer::Applied, ATTEMPTS, 1);
        fail(&mut s, 3);
        let next = s.on_answer(StepAnswer::Cancelled { was_applied: true }, ATTEMPTS, 2);
        assert_eq!((next, s.phase), (Next::Run, Phase::Ledger));
        assert_eq!(s.on_answer(StepAnswer::Applied, ATTEMPTS, 3), Next::End);
        assert_eq!(s.phase, Phase::Completed);
    }

    #[test]
    fn a_debit_that_cannot_be_confirmed_is_refunded_or_fenced() {
        let mut s = saga();
        assert_eq!(fail(&mut s, 3), Next::Run);
        assert_eq!((s.phase, s.in_flight()), (Phase::Refund, 0));
        let next = s.on_answer(StepAnswer::Cancelled { was_applied: false }, ATTEMPTS, 2);
        assert_eq!((next, s.phase), (Next::End, Phase::Compensated));
    }

    #[test]
    fn a_compensation_that_keeps_failing_is_dead_lettered_and_can_be_retried() {
        let mut s = saga();
        s.on_answer(StepAnswer::Applied, ATTEMPTS, 1);
        fail(&mut s, 3);
        assert_eq!(fail(&mut s, 4), Next::Retry);
        assert_eq!(fail(&mut s, 1), Next::DeadLetter);
        assert!(s.dead_lettered);
        assert_eq!(s.phase, Phase::FenceCredit);
        assert_eq!(s.in_flight(), 10, "the money stays in flight while parked");
        assert!(s.retry_dead_letter(5));
        assert_eq!((s.attempts, s.dead_lettered), (0, false));
        assert!(!s.retry_dead_letter(5), "only a parked saga");
        assert_eq!(fail(&mut s, 5), Next::DeadLetter);
        assert!(s.discard(6));
        assert_eq!(s.phase, Phase::Discarded);
        assert!(s.phase.is_terminal());
        assert!(TransferEvent::of(&s).is_none());
    }

    #[test]
    fn a_ledger_that_keeps_failing_is_dead_lettered_not_compensated() {
        let mut s = saga();
        s.on_answer(StepAnswer::Applied, ATTEMPTS, 1);
        s.on_answer(StepAnswer::Applied, ATTEMPTS, 1);
        assert_eq!(fail(&mut s, 5), Next::DeadLetter);
        assert_eq!(s.phase, Phase::Ledger);
    }

    #[test]
    fn a_resumed_saga_that_finds_its_step_fenced_compensates() {
        let mut s = saga();
        let next = s.on_answer(StepAnswer::Fenced, ATTEMPTS, 1);
        assert_eq!((next, s.phase), (Next::Run, Phase::Refund));
        let mut s = saga();
        s.on_answer(StepAnswer::Applied, ATTEMPTS, 1);
        s.on_answer(StepAnswer::Fenced, ATTEMPTS, 1);
        assert_eq!(s.phase, Phase::Refund);
    }
}
