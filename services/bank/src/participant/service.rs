//! A participant behind gRPC (an account shard, or the ledger): lock waits with deadlines
//! around the pure [`Participant`], its store, and a resolver that asks the coordinator about
//! transactions left in doubt.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlab_proto::bank::v1 as pb;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::channel::TracedChannel;
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::clock::Every;
use distlab_runtime::node::Node;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::step::{ApplyPlan, StepRecord, StepState};
use super::storage::{Storage, StoreKind};
use super::{Outcome, Participant, Write};
use crate::coordinator::Branch;
use crate::domain::{Bank, Transfer};
use crate::lock::{Acquire, Age, Mode, Policy, TxId};
use crate::status::{ParticipantCounters, ParticipantDetail, PreparedStatus};
use crate::{clock_ms, refusal};

/// How a participant runs.
#[derive(Debug, Clone)]
pub struct ParticipantConfig {
    pub bank: Bank,
    /// The accounts it owns (none for the ledger).
    pub accounts: Vec<String>,
    pub policy: Policy,
    pub fsync: bool,
    /// A prepared transaction older than this is in doubt: ask its coordinator.
    pub in_doubt_after: Duration,
    /// Shared locks taken for a read are dropped after this if no release came.
    pub read_lease: Duration,
    /// `shard` or `ledger`.
    pub role: &'static str,
    /// Fault knob: every Nth credit here is acknowledged and recorded but not added to the
    /// balance (drift for the anti-entropy job to find).
    pub skip_credit_every: Option<u64>,
    /// Where its state lives.
    pub store: StoreKind,
}

#[derive(Default)]
struct Counters {
    prepared: AtomicU64,
    committed: AtomicU64,
    aborted: AtomicU64,
    voted_no: AtomicU64,
    lock_conflicts: AtomicU64,
    lock_timeouts: AtomicU64,
    outcome_queries: AtomicU64,
    steps_applied: AtomicU64,
    steps_refused: AtomicU64,
    steps_repeated: AtomicU64,
    steps_fenced: AtomicU64,
    steps_reversed: AtomicU64,
    credits: AtomicU64,
    credits_skipped: AtomicU64,
}

struct Inner {
    core: Participant,
    /// Lock waits to wake when granted, by (transaction, account).
    waiters: HashMap<(TxId, String), oneshot::Sender<()>>,
    /// Read locks and when their lease ends.
    reads: HashMap<TxId, Instant>,
    /// Transactions in doubt already reported as such (once each, for the timeline).
    reported: BTreeSet<TxId>,
}

impl Inner {
    fn wake(&mut self, granted: Vec<(TxId, String)>) {
        for key in granted {
            if let Some(waiter) = self.waiters.remove(&key) {
                let _ = waiter.send(());
            }
        }
    }

    /// Releases every lock and wait of `tx` (its waits end with an error).
    fn release(&mut self, tx: TxId) {
        self.waiters.retain(|(t, _), _| *t != tx);
        self.reads.remove(&tx);
        let granted = self.core.locks.release(tx);
        self.wake(granted);
    }
}

pub struct Shared {
    id: String,
    config: ParticipantConfig,
    inner: Mutex<Inner>,
    store: Storage,
    /// A client of each peer's `Decisions` service (the coordinator's), for transactions in
    /// doubt.
    decisions: BTreeMap<String, pb::decisions_client::DecisionsClient<TracedChannel>>,
    counters: Counters,
}

/// A no vote, and whether a lock conflict caused it (worth retrying).
struct No {
    reason: String,
    retryable: bool,
}

impl Shared {
    /// Whether the fault knob skips this credit (of `account`, by `amount`).
    fn skip_credit(&self, account: &str, amount: i64) -> bool {
        let Some(every) = self.config.skip_credit_every else {
            return false;
        };
        let n = self.counters.credits.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(every.max(1)) {
            return false;
        }
        self.counters
            .credits_skipped
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            event = "credit_skipped",
            account,
            amount,
            "fault knob --skip-credit-every: {account}'s credit of {amount} acknowledged and not applied"
        );
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("the participant's lock is never poisoned")
    }

    /// Takes `accounts` in `mode` for `tx`, in order, waiting until `deadline` at most.
    /// On failure every lock of `tx` is released.
    async fn lock_all(
        &self,
        age: Age,
        accounts: &[String],
        mode: Mode,
        timeout: Duration,
    ) -> Result<(), No> {
        let deadline = tokio::time::Instant::now() + timeout;
        for account in accounts {
            let granted = {
                let mut inner = self.lock();
                match inner.core.locks.acquire(age, account, mode) {
                    Acquire::Granted => None,
                    Acquire::Die { blocker } => {
                        inner.release(age.tx);
                        self.counters.lock_conflicts.fetch_add(1, Ordering::Relaxed);
                        let policy = match self.config.policy {
                            Policy::WaitDie => "wait-die: the younger one aborts",
                            Policy::NoWait => "no-wait",
                        };
                        return Err(No {
                            reason: format!(
                                "{account} is locked by transaction {blocker} ({policy})"
                            ),
                            retryable: true,
                        });
                    }
                    Acquire::Wait => {
                        let (tx, rx) = oneshot::channel();
                        inner.waiters.insert((age.tx, account.clone()), tx);
                        Some(rx)
                    }
                }
            };
            let Some(granted) = granted else { continue };
            match tokio::time::timeout_at(deadline, granted).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(No {
                        reason: "aborted while waiting for a lock".into(),
                        retryable: false,
                    });
                }
                Err(_) => {
                    // Its wait and its locks go; whatever queued behind them is granted.
                    self.lock().release(age.tx);
                    self.counters.lock_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(No {
                        reason: format!("waited {timeout:?} for the lock on {account}: voting no"),
                        retryable: true,
                    });
                }
            }
        }
        Ok(())
    }

    async fn prepare(&self, request: pb::PrepareRequest) -> Result<pb::PrepareResponse, Status> {
        let tx = request.tx;
        let age = Age {
            started: request.started_us,
            tx,
        };
        let timeout = Duration::from_millis(u64::from(request.lock_timeout_ms.clamp(1, 60_000)));
        let branch = Branch {
            writes: request.writes.into_iter().map(Write::from).collect(),
            journal: request.journal.map(Transfer::from),
        };
        let no = |no: No| {
            self.counters.voted_no.fetch_add(1, Ordering::Relaxed);
            Ok(pb::PrepareResponse {
                yes: false,
                reason: no.reason,
                retryable: no.retryable,
            })
        };
        let mut accounts: Vec<String> = branch.writes.iter().map(|w| w.account.clone()).collect();
        accounts.sort();
        accounts.dedup();
        if let Some(stranger) = accounts
            .iter()
            .find(|a| self.config.accounts.binary_search(a).is_err())
        {
            return no(No {
                reason: format!("{stranger} does not live on {}", self.id),
                retryable: false,
            });
        }
        if self.lock().core.outcome(tx) == Some(Outcome::Aborted) {
            return no(No {
                reason: "the transaction was already aborted here".into(),
                retryable: false,
            });
        }
        if let Err(e) = self
            .lock_all(age, &accounts, Mode::Exclusive, timeout)
            .await
        {
            return no(e);
        }
        let checked = {
            let mut inner = self.lock();
            let checked =
                inner
                    .core
                    .check_prepare(tx, age, &request.coordinator, &branch, clock_ms());
            if checked.is_err() {
                let _ = inner.core.aborted(tx);
                inner.release(tx);
            }
            checked
        };
        let record = match checked {
            Ok(record) => record,
            Err(refusal) => {
                return no(No {
                    reason: refusal.to_string(),
                    retryable: false,
                });
            }
        };
        if let Err(e) = self.store.prepare(&record).await {
            let _ = self.store.abort(tx).await;
            {
                let mut inner = self.lock();
                let _ = inner.core.aborted(tx);
                inner.release(tx);
            }
            return no(No {
                reason: format!("could not make the prepare durable: {e}"),
                retryable: false,
            });
        }
        let aborted_meanwhile = {
            let mut inner = self.lock();
            let aborted = inner.core.outcome(tx) == Some(Outcome::Aborted);
            if !aborted {
                inner.core.prepared_durably(record);
            }
            aborted
        };
        if aborted_meanwhile {
            // Aborted while the record was being written: it must not stay prepared.
            let _ = self.store.abort(tx).await;
            return no(No {
                reason: "aborted while preparing".into(),
                retryable: false,
            });
        }
        self.counters.prepared.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(tx, "prepared");
        Ok(pb::PrepareResponse {
            yes: true,
            reason: String::new(),
            retryable: false,
        })
    }

    async fn commit(&self, tx: TxId) -> Result<(), Status> {
        let mut applied = {
            let inner = self.lock();
            let applied = inner
                .core
                .check_commit(tx)
                .map_err(|e| refusal(tonic::Code::FailedPrecondition, "protocol", e.to_string()))?;
            let before: BTreeMap<String, i64> = applied
                .balances
                .iter()
                .filter_map(|(a, _)| Some((a.clone(), inner.core.balance(a)?)))
                .collect();
            (applied, before)
        };
        if self.config.skip_credit_every.is_some() {
            let (applied, before) = &mut applied;
            applied.balances.retain(|(account, balance)| {
                let credit = balance - before.get(account).copied().unwrap_or(*balance);
                credit <= 0 || !self.skip_credit(account, credit)
            });
        }
        let applied = applied.0;
        self.store
            .commit(tx, &applied)
            .await
            .map_err(|e| Status::unavailable(format!("committing transaction {tx}: {e}")))?;
        let mut inner = self.lock();
        let granted = inner.core.committed(tx, &applied);
        inner.wake(granted);
        inner.reported.remove(&tx);
        if applied.changed {
            self.counters.committed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn abort(&self, tx: TxId) -> Result<(), Status> {
        // A committed transaction has no prepared record: it reaches `aborted`, which refuses.
        let had = self.lock().core.is_prepared(tx);
        if had {
            // The prepared record goes durably before the locks do: were it to come back
            // after a crash, it would claim accounts a later transaction prepared on.
            self.store
                .abort(tx)
                .await
                .map_err(|e| Status::unavailable(format!("aborting transaction {tx}: {e}")))?;
        }
        let mut inner = self.lock();
        inner.core.aborted(tx).map_err(|_| {
            refusal(
                tonic::Code::FailedPrecondition,
                "protocol",
                format!("transaction {tx} is committed here: it cannot abort"),
            )
        })?;
        inner.release(tx);
        inner.reported.remove(&tx);
        if had {
            self.counters.aborted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Asks the coordinators of transactions in doubt for their outcome, and applies it.
    async fn resolve_in_doubt(&self) {
        let asking: Vec<(TxId, String)> = {
            let mut inner = self.lock();
            let now = clock_ms();
            let doubtful: Vec<(TxId, String)> = inner
                .core
                .in_doubt(now, self.config.in_doubt_after.as_millis() as u64)
                .into_iter()
                .map(|p| (p.tx, p.coordinator.clone()))
                .collect();
            for (tx, coordinator) in &doubtful {
                if inner.reported.insert(*tx) {
                    tracing::warn!(
                        event = "in_doubt",
                        tx,
                        coordinator = %coordinator,
                        "prepared and no outcome yet: the locks stay held until the coordinator answers"
                    );
                }
            }
            doubtful
        };
        for (tx, coordinator) in asking {
            let Some(mut client) = self.decisions.get(&coordinator).cloned() else {
                tracing::warn!(tx, coordinator = %coordinator, "in doubt, and the coordinator has no --peer address");
                continue;
            };
            self.counters
                .outcome_queries
                .fetch_add(1, Ordering::Relaxed);
            let mut request = Request::new(pb::OutcomeRequest { tx });
            request.set_timeout(Duration::from_secs(1));
            match client.outcome(request).await {
                Ok(answer) => {
                    let result = if answer.into_inner().committed {
                        self.commit(tx).await
                    } else {
                        self.abort(tx).await
                    };
                    if let Err(e) = result {
                        tracing::warn!(tx, error = %e, "applying the outcome of a transaction in doubt");
                    } else {
                        tracing::info!(event = "doubt_resolved", tx, "the coordinator answered");
                    }
                }
                Err(e) => {
                    tracing::debug!(tx, error = %e.message(), "the coordinator did not answer")
                }
            }
        }
    }

    /// Drops read locks whose reader never released them.
    fn expire_reads(&self) {
        let mut inner = self.lock();
        let now = Instant::now();
        let expired: Vec<TxId> = inner
            .reads
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(tx, _)| *tx)
            .collect();
        for tx in expired {
            inner.release(tx);
        }
    }

    /// The store saga steps are recorded in: the embedded one (a participant on PostgreSQL
    /// serves two-phase commit only).
    fn steps_store(&self) -> Result<&crate::store::ParticipantStore, Status> {
        self.store.embedded().ok_or_else(|| {
            refusal(
                tonic::Code::FailedPrecondition,
                "unsupported",
                format!(
                    "{} runs on PostgreSQL (--store postgres), which serves two-phase commit \
                     only: saga steps need --store embedded",
                    self.id
                ),
            )
        })
    }

    /// A saga step as a local transaction: the key's record and its effect written together,
    /// durable before the answer.
    async fn apply(&self, request: pb::ApplyRequest) -> Result<pb::ApplyResponse, Status> {
        let store = self.steps_store()?;
        let journal = request.journal.map(Transfer::from);
        let (account, delta) = match (&journal, self.config.role) {
            (Some(_), "ledger") => (String::new(), 0),
            (None, "shard") => {
                if self
                    .config
                    .accounts
                    .binary_search(&request.account)
                    .is_err()
                {
                    return Err(refusal(
                        tonic::Code::InvalidArgument,
                        "bad_request",
                        format!("{} does not live on {}", request.account, self.id),
                    ));
                }
                (request.account, request.delta)
            }
            _ => {
                return Err(refusal(
                    tonic::Code::InvalidArgument,
                    "bad_request",
                    format!(
                        "{} ({}): a shard applies account changes, the ledger journal entries",
                        self.id, self.config.role
                    ),
                ));
            }
        };
        let store_error = |e: &dyn std::fmt::Display| {
            Status::unavailable(format!("step {}: the store: {e}", request.key))
        };
        let plan = {
            let mut inner = self.lock();
            let existing = store
                .step(&request.key)
                .map_err(|e| store_error(&format!("{e:#}")))?;
            let mut plan = inner
                .core
                .plan_apply(existing.as_ref(), &request.key, &account, delta);
            if let ApplyPlan::Write { record, balance } = &mut plan
                && record.state == StepState::Applied
                && delta > 0
                && !request.key.starts_with("repair/")
                && self.skip_credit(&account, delta)
            {
                *balance = None;
            }
            if let ApplyPlan::Write { record, balance } = &plan {
                store
                    .write_step(record, balance.as_ref(), journal.as_ref())
                    .map_err(|e| store_error(&e))?;
                inner.core.step_written(balance.as_ref());
            }
            plan
        };
        // A repeat too: its first answer may still be on its way to the disk.
        store.flushed().await.map_err(|e| store_error(&e))?;
        let count = |n: &AtomicU64| n.fetch_add(1, Ordering::Relaxed);
        let (record, repeat) = match plan {
            ApplyPlan::Busy(why) => {
                count(&self.counters.lock_conflicts);
                return Err(Status::unavailable(why));
            }
            ApplyPlan::Repeat(record) => {
                count(&self.counters.steps_repeated);
                (record, true)
            }
            ApplyPlan::Write { record, .. } => {
                count(match record.state {
                    StepState::Applied => &self.counters.steps_applied,
                    _ => &self.counters.steps_refused,
                });
                (record, false)
            }
        };
        let fenced = matches!(record.state, StepState::Fenced | StepState::Reversed);
        Ok(pb::ApplyResponse {
            applied: record.state == StepState::Applied,
            reason: match record.state {
                StepState::Fenced | StepState::Reversed => {
                    format!("step {} was cancelled", record.key)
                }
                _ => record.reason.unwrap_or_default(),
            },
            repeat,
            fenced,
        })
    }

    /// A saga step's compensation: fence the key, or undo what it applied.
    async fn cancel(&self, request: pb::CancelRequest) -> Result<pb::CancelResponse, Status> {
        let store = self.steps_store()?;
        let store_error = |e: &dyn std::fmt::Display| {
            Status::unavailable(format!("cancelling step {}: the store: {e}", request.key))
        };
        let was_applied = {
            let mut inner = self.lock();
            let existing = store
                .step(&request.key)
                .map_err(|e| store_error(&format!("{e:#}")))?;
            let plan = inner.core.plan_cancel(
                existing.as_ref(),
                &request.key,
                &request.account,
                request.reverse,
            );
            if let Some((record, balance)) = &plan.write {
                store
                    .write_step(record, balance.as_ref(), None)
                    .map_err(|e| store_error(&e))?;
                inner.core.step_written(balance.as_ref());
                self.counters.steps_fenced.fetch_add(
                    u64::from(record.state == StepState::Fenced),
                    Ordering::Relaxed,
                );
                self.counters.steps_reversed.fetch_add(
                    u64::from(record.state == StepState::Reversed),
                    Ordering::Relaxed,
                );
            }
            plan.was_applied
        };
        store.flushed().await.map_err(|e| store_error(&e))?;
        Ok(pb::CancelResponse { was_applied })
    }

    fn balances(&self) -> Vec<pb::Balance> {
        self.lock()
            .core
            .balances()
            .iter()
            .map(|(account, balance)| pb::Balance {
                account: account.clone(),
                balance: *balance,
            })
            .collect()
    }
}

struct ParticipantApi {
    shared: Arc<Shared>,
}

impl ParticipantApi {
    /// Runs a request that changes state in a task of its own, so it finishes even if its
    /// caller goes away (a coordinator that stops waiting drops the request): a prepare, a
    /// commit or a step cut off between its store and its in-memory state would leave the
    /// two disagreeing (and a PostgreSQL connection inside an open transaction).
    async fn to_the_end<T, F, Fut>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>> + Send + 'static,
    {
        tokio::spawn(work(self.shared.clone()))
            .await
            .map_err(|e| Status::internal(format!("the request's task failed: {e}")))?
    }
}

fn finish_request(request: Request<pb::FinishRequest>) -> Result<TxId, Status> {
    let tx = request.into_inner().tx;
    if tx == 0 {
        return Err(refusal(
            tonic::Code::InvalidArgument,
            "bad_request",
            "tx 0 is not a transaction",
        ));
    }
    Ok(tx)
}

#[tonic::async_trait]
impl pb::participant_server::Participant for ParticipantApi {
    async fn prepare(
        &self,
        request: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::PrepareResponse>, Status> {
        let request = request.into_inner();
        if request.tx == 0 || request.coordinator.is_empty() {
            return Err(refusal(
                tonic::Code::InvalidArgument,
                "bad_request",
                "a prepare needs a transaction id and its coordinator",
            ));
        }
        self.to_the_end(move |s| async move { s.prepare(request).await })
            .await
            .map(Response::new)
    }

    async fn commit(
        &self,
        request: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        let tx = finish_request(request)?;
        self.to_the_end(move |s| async move { s.commit(tx).await })
            .await?;
        Ok(Response::new(pb::FinishResponse {}))
    }

    async fn abort(
        &self,
        request: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        let tx = finish_request(request)?;
        self.to_the_end(move |s| async move { s.abort(tx).await })
            .await?;
        Ok(Response::new(pb::FinishResponse {}))
    }

    async fn read_locked(
        &self,
        request: Request<pb::ReadLockedRequest>,
    ) -> Result<Response<pb::ReadLockedResponse>, Status> {
        let request = request.into_inner();
        let age = Age {
            started: request.started_us,
            tx: request.tx,
        };
        let timeout = Duration::from_millis(u64::from(request.lock_timeout_ms.clamp(1, 60_000)));
        let accounts = self.shared.config.accounts.clone();
        if let Err(no) = self
            .shared
            .lock_all(age, &accounts, Mode::Shared, timeout)
            .await
        {
            return Ok(Response::new(pb::ReadLockedResponse {
                granted: false,
                reason: no.reason,
                retryable: no.retryable,
                balances: Vec::new(),
            }));
        }
        self.shared
            .lock()
            .reads
            .insert(request.tx, Instant::now() + self.shared.config.read_lease);
        Ok(Response::new(pb::ReadLockedResponse {
            granted: true,
            reason: String::new(),
            retryable: false,
            balances: self.shared.balances(),
        }))
    }

    async fn release(
        &self,
        request: Request<pb::FinishRequest>,
    ) -> Result<Response<pb::FinishResponse>, Status> {
        let tx = finish_request(request)?;
        self.shared.lock().release(tx);
        Ok(Response::new(pb::FinishResponse {}))
    }

    async fn journal(
        &self,
        request: Request<pb::JournalRequest>,
    ) -> Result<Response<pb::JournalResponse>, Status> {
        let request = request.into_inner();
        let limit = request.limit.clamp(1, 10_000) as usize;
        let entries = self
            .shared
            .store
            .journal(request.from, limit)
            .await
            .map_err(|e| Status::internal(format!("reading the journal: {e:#}")))?
            .into_iter()
            .map(|(seq, e)| pb::JournalEntry {
                seq,
                tx: e.tx,
                id: e.transfer.id,
                from: e.transfer.from,
                to: e.transfer.to,
                amount: e.transfer.amount,
            })
            .collect();
        Ok(Response::new(pb::JournalResponse { entries }))
    }

    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        self.to_the_end(move |s| async move { s.apply(request).await })
            .await
            .map(Response::new)
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        self.to_the_end(move |s| async move { s.cancel(request).await })
            .await
            .map(Response::new)
    }

    async fn balances(
        &self,
        _: Request<pb::BalancesRequest>,
    ) -> Result<Response<pb::BalancesResponse>, Status> {
        Ok(Response::new(pb::BalancesResponse {
            balances: self.shared.balances(),
        }))
    }

    async fn steps(
        &self,
        request: Request<pb::StepsRequest>,
    ) -> Result<Response<pb::StepsResponse>, Status> {
        let request = request.into_inner();
        let limit = request.limit.clamp(1, 10_000) as usize;
        let Some(store) = self.shared.store.embedded() else {
            // PostgreSQL participants record no saga steps.
            return Ok(Response::new(pb::StepsResponse { steps: Vec::new() }));
        };
        let steps = store
            .steps(request.from, limit)
            .map_err(|e| Status::internal(format!("reading the steps: {e:#}")))?
            .into_iter()
            .map(|(seq, r): (u64, StepRecord)| pb::Step {
                seq,
                key: r.key,
                account: r.account,
                delta: r.delta,
                state: r.state.as_str().into(),
            })
            .collect();
        Ok(Response::new(pb::StepsResponse { steps }))
    }
}

/// A step's idempotency key: 1 to 200 bytes.
fn check_key(key: &str) -> Result<(), Status> {
    if key.is_empty() || key.len() > 200 {
        return Err(refusal(
            tonic::Code::InvalidArgument,
            "bad_request",
            "a step needs an idempotency key of 1 to 200 bytes",
        ));
    }
    Ok(())
}

struct ParticipantStatus {
    shared: Arc<Shared>,
}

impl NodeStatus for ParticipantStatus {
    fn role(&self) -> String {
        self.shared.config.role.into()
    }

    fn detail(&self) -> Value {
        let s = &self.shared;
        let inner = s.lock();
        let now = clock_ms();
        let in_doubt_after = s.config.in_doubt_after.as_millis() as u64;
        let c = &s.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let detail = ParticipantDetail {
            kind: s.config.role.into(),
            accounts: inner.core.balances().len(),
            total: inner
                .core
                .balances()
                .values()
                .map(|b| i128::from(*b))
                .sum::<i128>()
                .to_string(),
            prepared: inner
                .core
                .prepared()
                .map(|p| PreparedStatus {
                    tx: p.tx,
                    coordinator: p.coordinator.clone(),
                    since_ms: now.saturating_sub(p.at_ms),
                    in_doubt: now.saturating_sub(p.at_ms) >= in_doubt_after,
                    accounts: p.writes.iter().map(|w| w.account.clone()).collect(),
                })
                .collect(),
            locked: inner.core.locks.locked(),
            lock_waits: inner.core.locks.waits(),
            policy: match s.config.policy {
                Policy::WaitDie => "wait-die",
                Policy::NoWait => "no-wait",
            }
            .into(),
            store: s.store.kind().name().into(),
            counters: ParticipantCounters {
                prepared: load(&c.prepared),
                committed: load(&c.committed),
                aborted: load(&c.aborted),
                voted_no: load(&c.voted_no),
                lock_conflicts: load(&c.lock_conflicts),
                lock_timeouts: load(&c.lock_timeouts),
                outcome_queries: load(&c.outcome_queries),
                steps_applied: load(&c.steps_applied),
                steps_refused: load(&c.steps_refused),
                steps_repeated: load(&c.steps_repeated),
                steps_fenced: load(&c.steps_fenced),
                steps_reversed: load(&c.steps_reversed),
                credits_skipped: load(&c.credits_skipped),
            },
        };
        serde_json::to_value(detail).expect("the detail serializes")
    }
}

async fn background(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut every = Every::new(Duration::from_millis(250), &shutdown);
    while every.tick().await {
        shared.expire_reads();
        shared.store.upkeep().await;
        shared.resolve_in_doubt().await;
    }
}

/// Runs a participant node until shutdown.
pub async fn run(args: ValidNodeArgs, config: ParticipantConfig) -> anyhow::Result<()> {
    let Some(data_dir) = args.data_dir.clone() else {
        return Err(distlab_runtime::BadInput::new(
            "a bank participant needs --data-dir: its balances and prepared transactions live there",
        )
        .into());
    };
    let decisions = crate::peer_channels(&args)?
        .into_iter()
        .map(|(id, channel)| (id, pb::decisions_client::DecisionsClient::new(channel)))
        .collect();
    let id = args.id.to_string();
    let mut node = Node::bind(args, "proj5", "bank").await?;
    let (store, recovered) = Storage::open(
        config.store,
        &data_dir,
        config.bank,
        &config.accounts,
        config.fsync,
    )
    .await?;
    let in_doubt = recovered.prepared.len();
    tracing::info!(
        event = "store_opened",
        accounts = recovered.balances.len(),
        prepared = in_doubt,
        store = store.kind().name(),
        journal = recovered.journal,
        "participant store opened"
    );
    if in_doubt > 0 {
        tracing::warn!(
            event = "recovered_prepared",
            count = in_doubt,
            "prepared transactions found on restart: their locks are held until their coordinator answers"
        );
    }
    let mut accounts = config.accounts.clone();
    accounts.sort();
    let config = ParticipantConfig { accounts, ..config };
    let shared = Arc::new(Shared {
        id,
        inner: Mutex::new(Inner {
            core: Participant::new(recovered.balances, recovered.prepared, config.policy),
            waiters: HashMap::new(),
            reads: HashMap::new(),
            reported: BTreeSet::new(),
        }),
        config,
        store,
        decisions,
        counters: Counters::default(),
    });
    let shutdown = node.shutdown_token();
    node.add_ready_field("role", shared.config.role);
    tokio::spawn(background(shared.clone(), shutdown.clone()));
    let routes = tonic::service::Routes::new(pb::participant_server::ParticipantServer::new(
        ParticipantApi {
            shared: shared.clone(),
        },
    ));
    let result = node
        .serve(
            routes,
            Arc::new(ParticipantStatus {
                shared: shared.clone(),
            }),
        )
        .await;
    shutdown.cancel();
    shared.store.close().await?;
    result
}
