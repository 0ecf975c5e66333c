//! What the bank's nodes report in `/status` `detail`: one definition, written by the
//! coordinator and the participants, read by the lab's transaction view, node table and
//! anything else that watches them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::Bank;
use crate::lock::{LockWait, TxId};
use crate::reconcile::ReconcileStatus;

/// The coordinator's detail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorDetail {
    /// `2pc`.
    pub mode: String,
    pub bank: Option<Bank>,
    /// The oldest transactions in flight (at most [`SHOWN`]).
    pub in_flight: Vec<TxStatus>,
    /// How many are in flight in all.
    pub in_flight_count: usize,
    pub committed: u64,
    pub aborted: u64,
    /// Transactions retried after a lock conflict.
    pub retries: u64,
    pub reads: u64,
    pub read_retries: u64,
    /// The anti-entropy job's passes and what they found.
    #[serde(default)]
    pub reconcile: ReconcileStatus,
}

/// Transactions listed in a detail at most.
pub const SHOWN: usize = 50;

/// One transaction in flight at the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TxStatus {
    pub tx: TxId,
    pub transfer: String,
    pub from: String,
    pub to: String,
    pub amount: i64,
    /// `preparing`, `deciding` (the commit being logged), `committing` or `aborting`.
    pub state: String,
    /// While preparing: each participant's vote so far.
    #[serde(default)]
    pub votes: BTreeMap<String, bool>,
    /// While committing or aborting: who has not acknowledged.
    #[serde(default)]
    pub unacked: BTreeSet<String>,
    pub attempt: u32,
    pub age_ms: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A participant's detail (an account shard or the ledger).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParticipantDetail {
    /// `shard` or `ledger`.
    pub kind: String,
    pub accounts: usize,
    /// The committed balances' sum (a string: it may exceed what JSON numbers hold exactly).
    pub total: String,
    pub prepared: Vec<PreparedStatus>,
    /// Accounts locked now.
    pub locked: usize,
    pub lock_waits: Vec<LockWait>,
    /// `wait-die` or `no-wait`.
    pub policy: String,
    /// `embedded` (sled) or `postgres` (prepared transactions are PostgreSQL's).
    #[serde(default)]
    pub store: String,
    pub counters: ParticipantCounters,
}

/// A transaction prepared at a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedStatus {
    pub tx: TxId,
    pub coordinator: String,
    pub since_ms: u64,
    /// Prepared long enough that the participant asks its coordinator.
    pub in_doubt: bool,
    /// The accounts it writes (the ledger: none).
    pub accounts: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParticipantCounters {
    pub prepared: u64,
    pub committed: u64,
    pub aborted: u64,
    pub voted_no: u64,
    pub lock_conflicts: u64,
    pub lock_timeouts: u64,
    pub outcome_queries: u64,
    /// Saga steps applied, refused (insufficient funds), answered again for a repeated key,
    /// fenced by a cancel before they applied, reversed by a compensation.
    #[serde(default)]
    pub steps_applied: u64,
    #[serde(default)]
    pub steps_refused: u64,
    #[serde(default)]
    pub steps_repeated: u64,
    #[serde(default)]
    pub steps_fenced: u64,
    #[serde(default)]
    pub steps_reversed: u64,
    /// Credits the fault knob `--skip-credit-every` dropped.
    #[serde(default)]
    pub credits_skipped: u64,
}

/// The saga orchestrator's detail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorDetail {
    /// `saga`.
    pub mode: String,
    pub bank: Option<Bank>,
    /// The oldest sagas not ended (at most [`SHOWN`]), dead-lettered ones included.
    pub in_flight: Vec<SagaStatus>,
    /// Sagas not ended, in all (dead-lettered ones included).
    pub in_flight_count: usize,
    /// Money debited and not yet credited or refunded.
    pub money_in_flight: i64,
    pub compensating: usize,
    pub dead_lettered: usize,
    pub completed: u64,
    pub refused: u64,
    pub compensated: u64,
    pub discarded: u64,
    /// Step attempts that failed and were tried again.
    pub step_retries: u64,
    pub reads: u64,
    pub outbox: OutboxStatus,
    #[serde(default)]
    pub reconcile: ReconcileStatus,
}

/// One saga not ended, for the transaction view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaStatus {
    pub transfer: String,
    pub from: String,
    pub to: String,
    pub amount: i64,
    /// `debit`, `credit`, `ledger`, `fence_credit` or `refund`.
    pub phase: String,
    /// Step k of 4 (debit, credit, ledger, notify).
    pub step: u32,
    pub compensating: bool,
    pub dead_lettered: bool,
    pub attempts: u32,
    pub age_ms: u64,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// An outbox and its relay to Kafka-lite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutboxStatus {
    /// The topic it publishes to (empty: no brokers given, nothing is relayed).
    pub topic: String,
    /// Events written and not yet acknowledged by every in-sync replica.
    pub depth: usize,
    /// How long the oldest of them has waited.
    pub lag_ms: u64,
    pub published: u64,
    /// Publishing attempts that failed (the events stay and go again).
    pub errors: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// The notifications service's detail.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotifierDetail {
    pub topic: String,
    pub group: String,
    /// Notifications written (one per completed or compensated transfer).
    pub notifications: u64,
    /// Events delivered again and found already written.
    pub duplicates: u64,
    /// Records that were not transfer events (skipped, logged).
    pub undecodable: u64,
    /// The consumer group generation it is in (0: joining).
    pub generation: u32,
    /// Records on its partitions not yet read.
    pub lag: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}
