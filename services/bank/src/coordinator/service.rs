//! The transaction coordinator behind gRPC: runs each transfer's two-phase commit against the
//! participants at their `--peer` addresses, logs what presumed abort needs, answers the
//! participants in doubt, and keeps resending outcomes until every participant has them.

use std::collections::{BTreeMap, BTreeSet};
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
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{Begun, Branch, Coordinator, LogRecord, Next, Phase, Settled};
use crate::domain::{Bank, Transfer, shard_of};
use crate::front::{BankApi, Front};
use crate::lock::TxId;
use crate::participant::{Outcome, Write};
use crate::status::{CoordinatorDetail, SHOWN, TxStatus};
use crate::store::DecisionLog;
use crate::{clock_ms, clock_us, refusal};

/// How a coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub bank: Bank,
    /// The account shards' node ids, shard 0 first.
    pub shards: Vec<String>,
    pub ledger: String,
    pub fsync: bool,
    /// How long a participant may wait for a lock before voting no.
    pub lock_timeout: Duration,
    /// A transaction with votes missing after this aborts.
    pub prepare_timeout: Duration,
    /// Transactions a transfer may take when the deadlock policy kills them.
    pub max_attempts: u32,
    /// Fault knobs for scenarios and tests: a pause once every vote is yes, before the commit
    /// is logged (participants sit prepared, in doubt) ...
    pub delay_decision: Duration,
    /// ... and one after the decision is logged, before participants hear it.
    pub delay_outcome: Duration,
    /// The periodic anti-entropy pass: how often, and whether it repairs.
    pub reconcile: Option<(Duration, bool)>,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    aborted: AtomicU64,
    retries: AtomicU64,
    reads: AtomicU64,
    read_retries: AtomicU64,
}

pub struct Shared {
    id: String,
    config: CoordinatorConfig,
    core: Mutex<Coordinator>,
    log: DecisionLog,
    participants: BTreeMap<String, pb::participant_client::ParticipantClient<TracedChannel>>,
    /// Woken whenever a transfer is decided.
    decided: Notify,
    /// Transactions whose outcome is being sent now.
    sending: Mutex<BTreeSet<TxId>>,
    counters: Counters,
    /// Read transactions' ids: apart from the logged ones (the high bit set), from a
    /// per-boot start.
    next_read: AtomicU64,
    reconciler: crate::reconcile::Reconciler,
}

impl Shared {
    fn core(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.core
            .lock()
            .expect("the coordinator's lock is never poisoned")
    }

    fn client(
        &self,
        participant: &str,
    ) -> Result<pb::participant_client::ParticipantClient<TracedChannel>, Status> {
        self.participants
            .get(participant)
            .cloned()
            .ok_or_else(|| Status::internal(format!("no --peer address for {participant}")))
    }

    /// Which participant prepares what for `t`.
    fn branches(&self, t: &Transfer) -> BTreeMap<String, Branch> {
        let mut branches: BTreeMap<String, Branch> = BTreeMap::new();
        for (account, delta) in [(&t.from, -t.amount), (&t.to, t.amount)] {
            let shard = &self.config.shards[shard_of(account, self.config.shards.len())];
            branches
                .entry(shard.clone())
                .or_default()
                .writes
                .push(Write {
                    account: account.clone(),
                    delta,
                });
        }
        branches
            .entry(self.config.ledger.clone())
            .or_default()
            .journal = Some(t.clone());
        branches
    }

    /// A decision that must be durable could not be logged: stop (fail-stop). Going on could
    /// tell participants one thing and a restarted coordinator another.
    fn log_failed(&self, e: std::io::Error) -> ! {
        tracing::error!(event = "decision_log_failed", error = %e, "cannot log a decision: stopping");
        std::process::exit(70)
    }

    async fn transfer(self: &Arc<Self>, t: Transfer) -> Result<pb::TransferResponse, Status> {
        if let Err(e) = self.config.bank.check(&t) {
            tracing::info!(event = "transfer_refused", id = %t.id, reason = %e, "a bad transfer: nothing moved");
            return Err(refusal(tonic::Code::InvalidArgument, "bad_transfer", e));
        }
        let branches = self.branches(&t);
        let begun = self
            .core()
            .begin(t.clone(), branches, clock_us(), clock_ms());
        let begun = begun.map_err(|e| {
            tracing::info!(event = "transfer_refused", id = %t.id, reason = %e, "a reused transfer id: nothing moved");
            refusal(tonic::Code::AlreadyExists, "reused_id", e.to_string())
        })?;
        match begun {
            Begun::Settled(settled) => Ok(self.answer(&t.id, settled)),
            Begun::Running(_) => self.wait_for(&t.id).await,
            Begun::New(record) => {
                let LogRecord::Begin { tx, .. } = record else {
                    unreachable!("begin returns a Begin record")
                };
                if let Err(e) = self.log.append(&record).await {
                    self.log_failed(e);
                }
                self.run(tx).await;
                self.wait_for(&t.id).await
            }
        }
    }

    fn answer(&self, id: &str, settled: Settled) -> pb::TransferResponse {
        let core = self.core();
        let (tx, attempts) = core
            .in_flight()
            .filter(|t| t.transfer.id == id)
            .map(|t| (t.id, t.attempt))
            .max()
            .unwrap_or((0, 1));
        match settled {
            Settled::Committed => pb::TransferResponse {
                committed: true,
                reason: String::new(),
                tx,
                attempts,
                state: "committed".into(),
            },
            Settled::Aborted(reason) => pb::TransferResponse {
                committed: false,
                reason,
                tx,
                attempts,
                state: "aborted".into(),
            },
        }
    }

    /// Waits until transfer `id` is decided.
    async fn wait_for(&self, id: &str) -> Result<pb::TransferResponse, Status> {
        loop {
            let decided = self.decided.notified();
            let outcome = self.core().outcome_of(id);
            if let Some(settled) = outcome {
                return Ok(self.answer(id, settled));
            }
            decided.await;
        }
    }

    /// Runs transaction `tx` (and its retries) to a decision.
    async fn run(self: &Arc<Self>, mut tx: TxId) {
        loop {
            let (age, branches) = {
                let core = self.core();
                let t = core.tx(tx).expect("a begun transaction");
                (t.age, t.branches.clone())
            };
            let mut votes = tokio::task::JoinSet::new();
            for (participant, branch) in branches {
                let shared = self.clone();
                votes.spawn(async move {
                    let vote = shared.prepare(&participant, tx, age.started, &branch).await;
                    (participant, vote)
                });
            }
            let mut next = Next::Wait;
            while let Some(answer) = votes.join_next().await {
                let Ok((participant, vote)) = answer else {
                    continue;
                };
                next = self.core().vote(
                    tx,
                    &participant,
                    vote.yes,
                    vote.retryable,
                    &vote.reason,
                    clock_ms(),
                );
                if next != Next::Wait {
                    break;
                }
            }
            drop(votes);
            match next {
                Next::Commit => {
                    if !self.config.delay_decision.is_zero() {
                        tracing::info!(tx, delay = ?self.config.delay_decision, "every vote is yes: pausing before the decision (--delay-decision)");
                        tokio::time::sleep(self.config.delay_decision).await;
                    }
                    if let Err(e) = self.log.append(&LogRecord::Commit { tx }).await {
                        self.log_failed(e);
                    }
                    self.core().decide(tx, Outcome::Committed, None, clock_ms());
                    self.counters.committed.fetch_add(1, Ordering::Relaxed);
                    self.decided.notify_waiters();
                    self.finish(tx);
                    return;
                }
                Next::Abort {
                    retry: Some(record),
                    ..
                } => {
                    self.finish(tx);
                    let LogRecord::Begin { tx: next_tx, .. } = record else {
                        unreachable!("a retry is a Begin record")
                    };
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.log.append(&record).await {
                        self.log_failed(e);
                    }
                    // Back off (exponentially, with full jitter, up to 100 ms) so the older
                    // transaction it met goes first.
                    let attempt = self.core().tx(next_tx).map_or(1, |t| t.attempt);
                    tokio::time::sleep(backoff(attempt)).await;
                    tx = next_tx;
                }
                Next::Abort { retry: None, .. } | Next::Wait => {
                    // A no vote, or decided elsewhere (a participant in doubt asked first).
                    self.core().decide(
                        tx,
                        Outcome::Aborted,
                        Some("aborted before every vote was in".into()),
                        clock_ms(),
                    );
                    self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                    self.decided.notify_waiters();
                    self.finish(tx);
                    return;
                }
            }
        }
    }

    async fn prepare(
        &self,
        participant: &str,
        tx: TxId,
        started_us: u64,
        branch: &Branch,
    ) -> pb::PrepareResponse {
        let no = |reason: String| pb::PrepareResponse {
            yes: false,
            reason,
            retryable: false,
        };
        let mut client = match self.client(participant) {
            Ok(c) => c,
            Err(e) => return no(e.message().to_string()),
        };
        let mut request = Request::new(pb::PrepareRequest {
            tx,
            started_us,
            coordinator: self.id.clone(),
            writes: branch.writes.iter().map(pb::Write::from).collect(),
            journal: branch.journal.as_ref().map(pb::Journal::from),
            lock_timeout_ms: self.config.lock_timeout.as_millis() as u32,
        });
        request.set_timeout(self.config.prepare_timeout);
        match client.prepare(request).await {
            Ok(vote) => vote.into_inner(),
            Err(e) => no(format!("{participant} did not vote: {}", e.message())),
        }
    }

    /// Sends `tx`'s outcome to every participant that has not acknowledged it (in the
    /// background; the beat calls again for what failed).
    fn finish(self: &Arc<Self>, tx: TxId) {
        let Some((outcome, unacked, decided_ms)) =
            self.core().tx(tx).and_then(|t| match &t.phase {
                Phase::Finishing { outcome, unacked } => {
                    Some((*outcome, unacked.clone(), t.decided_ms.unwrap_or(0)))
                }
                Phase::Preparing { .. } | Phase::Deciding => None,
            })
        else {
            return;
        };
        if !self.sending.lock().expect("never poisoned").insert(tx) {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            let wait = (decided_ms + shared.config.delay_outcome.as_millis() as u64)
                .saturating_sub(clock_ms());
            if wait > 0 {
                tracing::info!(
                    tx,
                    wait_ms = wait,
                    "decided: pausing before telling the participants (--delay-outcome)"
                );
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let mut sends = tokio::task::JoinSet::new();
            for participant in unacked {
                let shared = shared.clone();
                sends.spawn(async move {
                    let mut client = shared.client(&participant)?;
                    let mut request = Request::new(pb::FinishRequest { tx });
                    request.set_timeout(Duration::from_secs(1));
                    match outcome {
                        Outcome::Committed => client.commit(request).await?,
                        Outcome::Aborted => client.abort(request).await?,
                    };
                    Ok::<_, Status>(participant)
                });
            }
            while let Some(sent) = sends.join_next().await {
                match sent {
                    Ok(Ok(participant)) => {
                        let end = shared.core().ack(tx, &participant);
                        if let Some(end) = end
                            && let Err(e) = shared.log.append(&end).await
                        {
                            tracing::warn!(tx, error = %e, "logging a transaction's end");
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(tx, error = %e.message(), "sending an outcome"),
                    Err(_) => {}
                }
            }
            shared.sending.lock().expect("never poisoned").remove(&tx);
        });
    }

    /// Reads every balance under shared locks on every shard; retried (same age) when the
    /// deadlock policy refuses it.
    async fn read_all(&self) -> Result<pb::ReadAllResponse, Status> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let (tx, mut balances) = self.read_locked().await?;
        self.release(tx);
        balances.sort_by(|a, b| a.account.cmp(&b.account));
        let total = balances.iter().map(|b| b.balance).sum();
        Ok(pb::ReadAllResponse {
            balances,
            total,
            expected: self.config.bank.total() as i64,
            in_flight_before: 0,
            in_flight_after: 0,
            mode: "2pc".into(),
            outbox: 0,
        })
    }

    /// Every balance, with shared locks on every account of every shard still held by the
    /// read transaction returned (the caller releases it): nothing commits on any account
    /// until then.
    async fn read_locked(&self) -> Result<(TxId, Vec<pb::Balance>), Status> {
        let started_us = clock_us();
        let mut last = String::new();
        for attempt in 0..self.config.max_attempts.max(1) * 4 {
            let tx = self.next_read.fetch_add(1, Ordering::Relaxed);
            let began = Instant::now();
            let mut reads = tokio::task::JoinSet::new();
            for shard in &self.config.shards {
                let mut client = self.client(shard)?;
                let mut request = Request::new(pb::ReadLockedRequest {
                    tx,
                    started_us,
                    lock_timeout_ms: self.config.lock_timeout.as_millis() as u32,
                });
                request.set_timeout(self.config.prepare_timeout);
                let shard = shard.clone();
                reads.spawn(async move { (shard, client.read_locked(request).await) });
            }
            let mut balances = Vec::new();
            let mut failed = None;
            let mut retryable = false;
            while let Some(read) = reads.join_next().await {
                let Ok((shard, read)) = read else { continue };
                match read {
                    Ok(r) if r.get_ref().granted => balances.extend(r.into_inner().balances),
                    Ok(r) => {
                        let r = r.into_inner();
                        retryable |= r.retryable;
                        failed = Some(format!("{shard}: {}", r.reason));
                    }
                    Err(e) => failed = Some(format!("{shard}: {}", e.message())),
                }
            }
            // Shards drop read locks after their lease: a read slower than half of it may
            // have lost some before the last shard answered.
            let slow = began.elapsed() > READ_LEASE / 2;
            match failed {
                None if !slow => return Ok((tx, balances)),
                None => last = "the read outlived its locks' lease".into(),
                Some(why) => last = why,
            }
            self.release(tx);
            if !retryable && !slow {
                break;
            }
            self.counters.read_retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff(attempt + 1)).await;
        }
        Err(Status::unavailable(format!(
            "could not read every balance: {last}"
        )))
    }

    /// Releases read transaction `tx`'s shared locks on every shard (in the background).
    fn release(&self, tx: TxId) {
        for shard in self.config.shards.clone() {
            if let Ok(mut client) = self.client(&shard) {
                tokio::spawn(async move {
                    let mut request = Request::new(pb::FinishRequest { tx });
                    request.set_timeout(Duration::from_secs(1));
                    let _ = client.release(request).await;
                });
            }
        }
    }

    /// One anti-entropy pass: every balance and the ledger's journal read while the shared
    /// locks hold every account still (a transfer's commit needs its accounts' exclusive
    /// locks, so the journal and the balances agree unless something is wrong), compared;
    /// with `repair`, each drift is corrected once the locks are gone.
    async fn reconcile(&self, repair: bool) -> Result<pb::ReconcileResponse, Status> {
        let (tx, balances) = self.read_locked().await?;
        // A commit some participants have applied and others not yet (the outcome is sent
        // to all at once; the shards have applied theirs, as their locks are free): its
        // accounts are not judged this pass. Taken before the journal is read: one that
        // finishes meanwhile is in the journal.
        let uncertain = self
            .core()
            .in_flight()
            .filter(|t| {
                matches!(
                    t.phase,
                    Phase::Finishing {
                        outcome: Outcome::Committed,
                        ..
                    }
                )
            })
            .flat_map(|t| [t.transfer.from.clone(), t.transfer.to.clone()])
            .collect();
        let journal = crate::reconcile::read_journal(self.client(&self.config.ledger)?).await;
        self.release(tx);
        let snapshot = crate::reconcile::Snapshot {
            balances: balances
                .into_iter()
                .map(|b| (b.account, b.balance))
                .collect(),
            journal: journal?,
            uncertain,
            ..Default::default()
        };
        self.reconciler
            .pass(
                &self.config.bank,
                &snapshot,
                repair,
                &self.config.shards,
                |shard| self.client(shard),
            )
            .await
    }

    /// The beat: aborts transactions whose votes never came, resends outcomes.
    fn beat(self: &Arc<Self>) {
        let expired = self.core().expired(
            clock_ms(),
            self.config.prepare_timeout.as_millis() as u64 * 2,
        );
        if !expired.is_empty() {
            self.decided.notify_waiters();
        }
        let unfinished = self.core().unfinished();
        for (tx, _, _) in unfinished {
            self.finish(tx);
        }
    }
}

/// The pause before attempt `attempt` (2, 3, ...) of a transaction that met a lock conflict:
/// full jitter up to 2^attempt ms, at most 100 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 1u64 << attempt.min(7);
    Duration::from_millis(rand::random_range(0..=ceiling.min(100)))
}

/// How long shards hold a read's shared locks without a release.
pub const READ_LEASE: Duration = Duration::from_secs(5);

#[tonic::async_trait]
impl Front for Shared {
    async fn transfer(self: Arc<Self>, t: Transfer) -> Result<pb::TransferResponse, Status> {
        Shared::transfer(&self, t).await
    }

    async fn read_all(&self) -> Result<pb::ReadAllResponse, Status> {
        Shared::read_all(self).await
    }

    async fn reconcile(&self, repair: bool) -> Result<pb::ReconcileResponse, Status> {
        Shared::reconcile(self, repair).await
    }
}

struct DecisionsApi {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl pb::decisions_server::Decisions for DecisionsApi {
    async fn outcome(
        &self,
        request: Request<pb::OutcomeRequest>,
    ) -> Result<Response<pb::OutcomeResponse>, Status> {
        let tx = request.into_inner().tx;
        let outcome = self.shared.core().query(tx, clock_ms());
        self.shared.decided.notify_waiters();
        match outcome {
            Some(outcome) => Ok(Response::new(pb::OutcomeResponse {
                committed: outcome == Outcome::Committed,
            })),
            None => Err(Status::unavailable(format!(
                "transaction {tx}'s commit is being logged: ask again"
            ))),
        }
    }
}

struct CoordinatorStatus {
    shared: Arc<Shared>,
}

impl NodeStatus for CoordinatorStatus {
    fn role(&self) -> String {
        "coordinator".into()
    }

    fn detail(&self) -> Value {
        let s = &self.shared;
        let now = clock_ms();
        let core = s.core();
        let in_flight = core
            .in_flight()
            .take(SHOWN)
            .map(|t| {
                let (state, votes, unacked) = match &t.phase {
                    Phase::Preparing { votes } => ("preparing", votes.clone(), Default::default()),
                    Phase::Deciding => ("deciding", Default::default(), Default::default()),
                    Phase::Finishing {
                        outcome: Outcome::Committed,
                        unacked,
                    } => ("committing", Default::default(), unacked.clone()),
                    Phase::Finishing { unacked, .. } => {
                        ("aborting", Default::default(), unacked.clone())
                    }
                };
                TxStatus {
                    tx: t.id,
                    transfer: t.transfer.id.clone(),
                    from: t.transfer.from.clone(),
                    to: t.transfer.to.clone(),
                    amount: t.transfer.amount,
                    state: state.into(),
                    votes,
                    unacked,
                    attempt: t.attempt,
                    age_ms: now.saturating_sub(t.began_ms),
                    reason: t.refusal.clone(),
                }
            })
            .collect();
        let c = &s.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let detail = CoordinatorDetail {
            mode: "2pc".into(),
            bank: Some(s.config.bank),
            in_flight,
            in_flight_count: core.in_flight().count(),
            committed: load(&c.committed),
            aborted: load(&c.aborted),
            retries: load(&c.retries),
            reads: load(&c.reads),
            read_retries: load(&c.read_retries),
            reconcile: s.reconciler.status(),
        };
        serde_json::to_value(detail).expect("the detail serializes")
    }
}

async fn beat(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut every = Every::new(Duration::from_millis(500), &shutdown);
    while every.tick().await {
        shared.beat();
    }
}

/// Runs a coordinator node until shutdown.
pub async fn run(args: ValidNodeArgs, config: CoordinatorConfig) -> anyhow::Result<()> {
    let Some(data_dir) = args.data_dir.clone() else {
        return Err(distlab_runtime::BadInput::new(
            "a transaction coordinator needs --data-dir: its decision log lives there",
        )
        .into());
    };
    let mut channels: BTreeMap<String, TracedChannel> =
        crate::peer_channels(&args)?.into_iter().collect();
    let mut participants = BTreeMap::new();
    for participant in config.shards.iter().chain([&config.ledger]) {
        let channel = channels.remove(participant).ok_or_else(|| {
            distlab_runtime::BadInput::new(format!(
                "participant {participant} has no --peer address"
            ))
        })?;
        participants.insert(
            participant.clone(),
            pb::participant_client::ParticipantClient::new(channel),
        );
    }
    let id = args.id.to_string();
    let mut node = Node::bind(args, "proj5", "bank").await?;
    let (log, replay) = DecisionLog::open(&data_dir, config.fsync)?;
    let records = replay.len();
    let core = Coordinator::recover(replay, clock_ms(), config.max_attempts);
    let unfinished = core.unfinished().len();
    tracing::info!(
        event = "decision_log_replayed",
        records,
        unfinished,
        "the coordinator resumes every transaction its log says is unfinished"
    );
    let shared = Arc::new(Shared {
        id,
        config,
        core: Mutex::new(core),
        log,
        participants,
        decided: Notify::new(),
        sending: Mutex::new(BTreeSet::new()),
        counters: Counters::default(),
        next_read: AtomicU64::new((1 << 63) | (clock_us() & 0xffff_ffff) << 16),
        reconciler: crate::reconcile::Reconciler::default(),
    });
    let shutdown = node.shutdown_token();
    if let Some((every, repair)) = shared.config.reconcile {
        crate::front::reconcile_every(shared.clone(), every, repair, &shutdown);
    }
    node.add_ready_field("role", "coordinator");
    shared.beat();
    tokio::spawn(beat(shared.clone(), shutdown.clone()));
    let routes = tonic::service::Routes::new(pb::bank_server::BankServer::new(BankApi {
        front: shared.clone(),
    }))
    .add_service(pb::decisions_server::DecisionsServer::new(DecisionsApi {
        shared: shared.clone(),
    }));
    let result = node
        .serve(
            routes,
            Arc::new(CoordinatorStatus {
                shared: shared.clone(),
            }),
        )
        .await;
    shutdown.cancel();
    shared.log.close().await?;
    result
}
