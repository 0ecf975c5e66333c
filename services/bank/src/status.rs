//! What the bank's nodes report in `/status` `detail`: one definition, written by the
//! coordinator and the participants, read by the lab's transaction view, node table and
//! anything else that watches them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::domain::Bank;
use crate::lock::{LockWait, TxId};

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
}
