//! Anti-entropy: the balances recomputed from the ledger and compared with what the shards
//! hold. The ledger's journal is the record of every transfer that happened; each account's
//! balance must be its opening balance plus the journal's transfers to it minus those from it,
//! plus the effect of the transfers in flight that the journal does not have yet (a saga's
//! debit before its ledger step). Whatever else differs is drift: a lost or doubled write, a
//! shard that skipped a credit (`--skip-credit-every`, the fault knob that proves this finds
//! real drift). The repair adds the difference back to the account, under an idempotency key
//! of its own, so a repair resent applies once.
//!
//! This module is the comparison, pure; the coordinator and the orchestrator take the
//! snapshot it compares (a consistent one: under shared locks on every account in 2PC mode,
//! with the sagas' steps held still in saga mode) and send the repairs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use distlab_proto::bank::v1 as pb;
use distlab_runtime::channel::TracedChannel;
use serde::{Deserialize, Serialize};
use tonic::{Request, Status};

use crate::domain::{Bank, Transfer, shard_of};

/// One account whose balance is not what the ledger says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub account: String,
    pub balance: i64,
    /// What the ledger (and the transfers in flight) make it.
    pub expected: i64,
    /// The journal's latest transfers touching the account (newest last): where to look.
    pub transfers: Vec<String>,
}

impl Drift {
    /// What the repair adds.
    pub fn delta(&self) -> i64 {
        self.expected - self.balance
    }
}

/// A snapshot to compare.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub balances: BTreeMap<String, i64>,
    pub journal: Vec<Transfer>,
    /// Changes applied at the shards that the journal does not have yet (a saga's debit, or
    /// its debit and credit before the ledger step), per account.
    pub in_flight: BTreeMap<String, i64>,
    /// Accounts whose state cannot be known now (a saga's step outcome unknown): not judged.
    pub uncertain: BTreeSet<String>,
}

/// How many of an account's journal transfers a drift names.
const NAMED: usize = 5;

/// Every account whose balance differs from its opening plus the journal and what is in
/// flight, in account order.
pub fn drifts(bank: &Bank, snapshot: &Snapshot) -> Vec<Drift> {
    let mut expected: BTreeMap<&str, i128> = BTreeMap::new();
    let mut touched: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in &snapshot.journal {
        *expected.entry(&t.from).or_default() -= i128::from(t.amount);
        *expected.entry(&t.to).or_default() += i128::from(t.amount);
        for account in [&t.from, &t.to] {
            touched.entry(account).or_default().push(&t.id);
        }
    }
    for (account, delta) in &snapshot.in_flight {
        *expected.entry(account).or_default() += i128::from(*delta);
    }
    snapshot
        .balances
        .iter()
        .filter(|(account, _)| !snapshot.uncertain.contains(*account))
        .filter_map(|(account, balance)| {
            let want =
                i128::from(bank.opening) + expected.get(account.as_str()).copied().unwrap_or(0);
            let want = i64::try_from(want).ok()?;
            (want != *balance).then(|| Drift {
                account: account.clone(),
                balance: *balance,
                expected: want,
                transfers: touched
                    .get(account.as_str())
                    .map(|ids| {
                        ids[ids.len().saturating_sub(NAMED)..]
                            .iter()
                            .map(|s| s.to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// What the anti-entropy job has done, for `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    pub passes: u64,
    /// Drifted accounts found, over every pass.
    pub drifts_found: u64,
    pub repaired: u64,
    /// The money the repairs added (negative: took away).
    pub repaired_money: i64,
    /// How many accounts the last pass found drifted, and a few of them.
    pub last_found: usize,
    pub last_drifts: Vec<Drift>,
    /// The last pass's accounts not judged.
    pub last_uncertain: usize,
}

/// The job's bookkeeping: passes numbered (each pass's repairs have keys of their own), what
/// they found.
#[derive(Default)]
pub struct Reconciler {
    status: std::sync::Mutex<ReconcileStatus>,
}

type ParticipantClient = pb::participant_client::ParticipantClient<TracedChannel>;

/// Drifts shown in the status at most.
const SHOWN: usize = 5;

impl Reconciler {
    pub fn status(&self) -> ReconcileStatus {
        self.status.lock().unwrap().clone()
    }

    /// Compares `snapshot`; with `repair`, applies each drift's difference at the account's
    /// shard (`shards[shard_of(account)]`, reached through `client`).
    pub async fn pass(
        &self,
        bank: &Bank,
        snapshot: &Snapshot,
        repair: bool,
        shards: &[String],
        client: impl Fn(&str) -> Result<ParticipantClient, Status>,
    ) -> Result<pb::ReconcileResponse, Status> {
        let found = drifts(bank, snapshot);
        let pass = {
            let mut status = self.status.lock().unwrap();
            status.passes += 1;
            status.drifts_found += found.len() as u64;
            status.last_found = found.len();
            status.last_drifts = found.iter().take(SHOWN).cloned().collect();
            status.last_uncertain = snapshot.uncertain.len();
            status.passes
        };
        if !found.is_empty() {
            let accounts: Vec<String> = found
                .iter()
                .map(|d| format!("{} ({:+})", d.account, d.delta()))
                .collect();
            tracing::warn!(
                event = "drift_found",
                count = found.len(),
                "balances off the ledger: {}",
                accounts.join(", ")
            );
        }
        // Keys unique to this pass of this boot: a resent repair applies once.
        let boot = crate::clock_ms();
        let mut answer = Vec::new();
        for d in &found {
            let mut out = pb::Drift {
                account: d.account.clone(),
                balance: d.balance,
                expected: d.expected,
                transfers: d.transfers.clone(),
                repaired: false,
                error: String::new(),
            };
            if repair {
                let shard = &shards[shard_of(&d.account, shards.len())];
                let key = format!("repair/{boot}-{pass}/{}", d.account);
                match apply_repair(client(shard)?, &key, d).await {
                    Ok(()) => {
                        out.repaired = true;
                        let mut status = self.status.lock().unwrap();
                        status.repaired += 1;
                        status.repaired_money += d.delta();
                        tracing::info!(
                            event = "drift_repaired",
                            account = %d.account,
                            delta = d.delta(),
                            "{} repaired at {shard}: {:+} (the journal's {} against its {})",
                            d.account,
                            d.delta(),
                            d.expected,
                            d.balance
                        );
                    }
                    Err(e) => out.error = e,
                }
            }
            answer.push(out);
        }
        Ok(pb::ReconcileResponse {
            drifts: answer,
            accounts: snapshot.balances.len() as u32,
            uncertain: snapshot.uncertain.iter().cloned().collect(),
            journal: snapshot.journal.len() as u64,
        })
    }
}

/// Applies a repair as a local step under `key`: retried while a 2PC transaction holds the
/// account (a few seconds at most).
async fn apply_repair(mut shard: ParticipantClient, key: &str, d: &Drift) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..40 {
        let mut request = Request::new(pb::ApplyRequest {
            key: key.to_string(),
            account: d.account.clone(),
            delta: d.delta(),
            journal: None,
        });
        request.set_timeout(Duration::from_secs(2));
        match shard.apply(request).await {
            Ok(r) if r.get_ref().applied => return Ok(()),
            Ok(r) => return Err(r.into_inner().reason),
            Err(e) => last = distlab_runtime::rpc::describe(&e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// The ledger's whole journal, oldest first.
pub async fn read_journal(mut ledger: ParticipantClient) -> Result<Vec<Transfer>, Status> {
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let mut request = Request::new(pb::JournalRequest {
            from,
            limit: 10_000,
        });
        request.set_timeout(Duration::from_secs(10));
        let page = ledger.journal(request).await?.into_inner().entries;
        let Some(last) = page.last().map(|e| e.seq) else {
            return Ok(all);
        };
        from = last + 1;
        all.extend(page.into_iter().map(|e| Transfer {
            id: e.id,
            from: e.from,
            to: e.to,
            amount: e.amount,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, from: &str, to: &str, amount: i64) -> Transfer {
        Transfer {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            amount,
        }
    }

    const BANK: Bank = Bank {
        accounts: 3,
        opening: 100,
    };

    #[test]
    fn balances_that_follow_the_journal_have_no_drift() {
        let snapshot = Snapshot {
            balances: [("a", 70), ("b", 120), ("c", 110)]
                .map(|(a, b)| (a.to_string(), b))
                .into(),
            journal: vec![t("t1", "a", "b", 30), t("t2", "b", "c", 10)],
            ..Snapshot::default()
        };
        assert!(drifts(&BANK, &snapshot).is_empty());
    }

    #[test]
    fn a_skipped_credit_is_found_with_the_transfers_to_look_at() {
        let snapshot = Snapshot {
            // t2's credit to c never landed.
            balances: [("a", 70), ("b", 120), ("c", 100)]
                .map(|(a, b)| (a.to_string(), b))
                .into(),
            journal: vec![t("t1", "a", "b", 30), t("t2", "b", "c", 10)],
            ..Snapshot::default()
        };
        let found = drifts(&BANK, &snapshot);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].account, "c");
        assert_eq!((found[0].expected, found[0].delta()), (110, 10));
        assert_eq!(found[0].transfers, vec!["t2".to_string()]);
    }

    #[test]
    fn money_in_flight_is_not_drift_and_uncertain_accounts_are_not_judged() {
        let snapshot = Snapshot {
            // A saga debited a by 5 and has not reached the ledger; b is uncertain.
            balances: [("a", 95), ("b", 97), ("c", 100)]
                .map(|(a, b)| (a.to_string(), b))
                .into(),
            journal: Vec::new(),
            in_flight: [("a".to_string(), -5)].into(),
            uncertain: ["b".to_string()].into(),
        };
        assert!(drifts(&BANK, &snapshot).is_empty());
    }
}
