//! The saga orchestrator behind gRPC: begins each transfer's saga durably, drives it step by
//! step against the participants at their `--peer` addresses (each step with a timeout, its
//! idempotency key and retries), resumes every unfinished saga after a restart, keeps the
//! dead-letter queue, and answers whole-bank reads with the money it has in flight.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_proto::bank::v1 as pb;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::channel::TracedChannel;
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::node::Node;
use serde_json::Value;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::relay::{Relay, RelayConfig};
use super::{Attempts, Next, Phase, Saga, StepAnswer};
use crate::domain::{Bank, Transfer, shard_of};
use crate::front::{BankApi, Front};
use crate::status::{OrchestratorDetail, SHOWN, SagaStatus};
use crate::store::SagaLog;
use crate::{clock_ms, refusal};

type ParticipantClient = pb::participant_client::ParticipantClient<TracedChannel>;

/// How an orchestrator runs.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    pub bank: Bank,
    /// The account shards' node ids, shard 0 first.
    pub shards: Vec<String>,
    pub ledger: String,
    pub fsync: bool,
    /// How long one attempt of a step may take.
    pub step_timeout: Duration,
    pub attempts: Attempts,
    /// Where the outbox goes: Kafka-lite's brokers and controllers (none: it stays unrelayed).
    pub relay: RelayConfig,
    /// The periodic anti-entropy pass: how often, and whether it repairs.
    pub reconcile: Option<(Duration, bool)>,
}

#[derive(Default)]
pub(super) struct Counters {
    completed: AtomicU64,
    refused: AtomicU64,
    compensated: AtomicU64,
    discarded: AtomicU64,
    step_retries: AtomicU64,
    reads: AtomicU64,
}

pub struct Shared {
    config: OrchestratorConfig,
    pub(super) log: SagaLog,
    /// Sagas not ended (dead-lettered ones included), by transfer id.
    running: Mutex<BTreeMap<String, Saga>>,
    /// Woken when a saga ends or is dead-lettered.
    settled: Notify,
    participants: BTreeMap<String, ParticipantClient>,
    counters: Counters,
    pub(super) relay: Relay,
    /// Held (shared) by each step from its call until its answer is taken; held exclusively
    /// by an anti-entropy pass while it reads: no step moves money during the snapshot.
    steps_still: tokio::sync::RwLock<()>,
    reconciler: crate::reconcile::Reconciler,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Saga>> {
        self.running
            .lock()
            .expect("the orchestrator's lock is never poisoned")
    }

    /// The log could not take a write the saga depends on: stop (fail-stop), as the 2PC
    /// coordinator does. A restart resumes from what the log holds.
    fn log_failed(&self, e: std::io::Error) -> ! {
        tracing::error!(event = "saga_log_failed", error = %e, "cannot write the saga log: stopping");
        std::process::exit(70)
    }

    fn shard(&self, account: &str) -> &str {
        &self.config.shards[shard_of(account, self.config.shards.len())]
    }

    async fn transfer(self: &Arc<Self>, t: Transfer) -> Result<pb::TransferResponse, Status> {
        if let Err(e) = self.config.bank.check(&t) {
            tracing::info!(event = "transfer_refused", id = %t.id, reason = %e, "a bad transfer: nothing moved");
            return Err(refusal(tonic::Code::InvalidArgument, "bad_transfer", e));
        }
        let reused = |other: &Transfer| {
            let e = format!(
                "transfer id {} was used for another transfer ({} -> {}, {})",
                t.id, other.from, other.to, other.amount
            );
            tracing::info!(event = "transfer_refused", id = %t.id, reason = %e, "a reused transfer id: nothing moved");
            refusal(tonic::Code::AlreadyExists, "reused_id", e)
        };
        let begun = {
            let mut running = self.running();
            match running.get(&t.id) {
                Some(saga) if saga.transfer != t => return Err(reused(&saga.transfer)),
                Some(_) => None,
                None => match self.log.get(&t.id) {
                    Err(e) => {
                        return Err(Status::unavailable(format!("reading the saga log: {e:#}")));
                    }
                    Ok(Some(saga)) if saga.transfer != t => return Err(reused(&saga.transfer)),
                    Ok(Some(saga)) => return Ok(answer(&saga)),
                    Ok(None) => {
                        let saga = Saga::new(t.clone(), clock_ms());
                        running.insert(t.id.clone(), saga.clone());
                        Some(saga)
                    }
                },
            }
        };
        if let Some(saga) = begun {
            // Durable before the first step: a saga the log lost could not be compensated.
            if let Err(e) = self.log.write(&saga, true).await {
                self.log_failed(e);
            }
            tracing::debug!(id = %t.id, "saga begun");
            tokio::spawn(self.clone().drive(t.id.clone()));
        }
        self.wait_for(&t.id).await
    }

    /// Waits until saga `id` is past its pivot (committed: the rest runs after the answer),
    /// ends otherwise, or is dead-lettered.
    async fn wait_for(&self, id: &str) -> Result<pb::TransferResponse, Status> {
        loop {
            let settled = self.settled.notified();
            let saga = match self.running().get(id) {
                Some(saga) if saga.dead_lettered || saga.phase.past_the_pivot() => {
                    return Ok(answer(saga));
                }
                Some(_) => None,
                None => Some(self.log.get(id)),
            };
            match saga {
                None => settled.await,
                Some(Ok(Some(saga))) => return Ok(answer(&saga)),
                Some(Ok(None)) => {
                    return Err(Status::internal(format!("saga {id} left no record")));
                }
                Some(Err(e)) => {
                    return Err(Status::unavailable(format!("reading the saga log: {e:#}")));
                }
            }
        }
    }

    /// Runs saga `id` until it ends or is dead-lettered.
    async fn drive(self: Arc<Self>, id: String) {
        loop {
            let Some(saga) = self.running().get(&id).cloned() else {
                return;
            };
            if saga.dead_lettered || saga.phase.is_terminal() {
                return;
            }
            let held = self.steps_still.read().await;
            let answer = self.step(&saga).await;
            let (next, saga) = {
                let mut running = self.running();
                let Some(saga) = running.get_mut(&id) else {
                    return;
                };
                let next = saga.on_answer(answer, self.config.attempts, clock_ms());
                (next, saga.clone())
            };
            drop(held);
            match next {
                Next::Run => {
                    if saga.phase.is_compensating() && saga.attempts == 0 {
                        let reason = saga.reason.as_deref().unwrap_or("");
                        tracing::info!(
                            event = "saga_compensating",
                            id = %id,
                            phase = saga.phase.as_str(),
                            reason,
                            "{id} compensating ({}): {reason}",
                            saga.phase.as_str().replace('_', " ")
                        );
                    }
                    // Not flushed: every step is idempotent, so a saga resumed from an older
                    // phase runs its steps again and gets the same answers.
                    if let Err(e) = self.log.write(&saga, false).await {
                        self.log_failed(e);
                    }
                    if saga.phase == Phase::Ledger {
                        // The pivot landed (durably, at the destination): the client may know.
                        self.settled.notify_waiters();
                    }
                }
                Next::Retry => {
                    self.counters.step_retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff(saga.attempts)).await;
                }
                Next::End => {
                    if let Err(e) = self.log.write(&saga, true).await {
                        self.log_failed(e);
                    }
                    self.running().remove(&id);
                    let counter = match saga.phase {
                        Phase::Completed => &self.counters.completed,
                        Phase::Refused => &self.counters.refused,
                        Phase::Compensated => &self.counters.compensated,
                        _ => &self.counters.discarded,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if saga.phase == Phase::Compensated {
                        tracing::info!(event = "saga_compensated", id = %id, "{id} compensated: nothing moved");
                    }
                    self.relay.wake();
                    self.settled.notify_waiters();
                    return;
                }
                Next::DeadLetter => {
                    if let Err(e) = self.log.write(&saga, true).await {
                        self.log_failed(e);
                    }
                    let error = saga.last_error.as_deref().unwrap_or("");
                    tracing::warn!(
                        event = "saga_dead_lettered",
                        id = %id,
                        phase = saga.phase.as_str(),
                        error,
                        "{id} dead-lettered at {}: {error}",
                        saga.phase.as_str().replace('_', " ")
                    );
                    self.settled.notify_waiters();
                    return;
                }
            }
        }
    }

    /// Runs the current phase's step once.
    async fn step(&self, saga: &Saga) -> StepAnswer {
        let t = &saga.transfer;
        let (participant, key) = match saga.phase {
            Phase::Debit | Phase::Refund => (self.shard(&t.from), "debit"),
            Phase::Credit | Phase::FenceCredit => (self.shard(&t.to), "credit"),
            Phase::Ledger => (self.config.ledger.as_str(), "ledger"),
            _ => unreachable!("an ended saga has no step"),
        };
        let Some(mut client) = self.participants.get(participant).cloned() else {
            return StepAnswer::Failed(format!("no --peer address for {participant}"));
        };
        let key = format!("{}/{key}", t.id);
        let timeout = self.config.step_timeout;
        let failed = |participant: &str, e: Status| {
            StepAnswer::Failed(format!(
                "{participant}: {}",
                distlab_runtime::rpc::describe(&e)
            ))
        };
        match saga.phase {
            Phase::Debit | Phase::Credit | Phase::Ledger => {
                let (account, delta, journal) = match saga.phase {
                    Phase::Debit => (t.from.clone(), -t.amount, None),
                    Phase::Credit => (t.to.clone(), t.amount, None),
                    _ => (String::new(), 0, Some(pb::Journal::from(t))),
                };
                let mut request = Request::new(pb::ApplyRequest {
                    key,
                    account,
                    delta,
                    journal,
                });
                request.set_timeout(timeout);
                match client.apply(request).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        if r.applied {
                            StepAnswer::Applied
                        } else if r.fenced {
                            StepAnswer::Fenced
                        } else {
                            StepAnswer::Refused(r.reason)
                        }
                    }
                    Err(e) => failed(participant, e),
                }
            }
            _ => {
                let (account, reverse) = match saga.phase {
                    Phase::Refund => (t.from.clone(), true),
                    _ => (t.to.clone(), false),
                };
                let mut request = Request::new(pb::CancelRequest {
                    key,
                    account,
                    reverse,
                });
                request.set_timeout(timeout);
                match client.cancel(request).await {
                    Ok(r) => StepAnswer::Cancelled {
                        was_applied: r.into_inner().was_applied,
                    },
                    Err(e) => failed(participant, e),
                }
            }
        }
    }

    /// Money debited and not yet credited or refunded, by the sagas running now.
    fn money_in_flight(&self) -> i64 {
        self.running().values().map(Saga::in_flight).sum()
    }

    /// Every balance, each shard read as it is (no locks), with the money in flight before and
    /// after the reads.
    async fn read_all(&self) -> Result<pb::ReadAllResponse, Status> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        let in_flight_before = self.money_in_flight();
        let mut reads = tokio::task::JoinSet::new();
        for shard in &self.config.shards {
            let Some(mut client) = self.participants.get(shard).cloned() else {
                return Err(Status::internal(format!("no --peer address for {shard}")));
            };
            let mut request = Request::new(pb::BalancesRequest {});
            request.set_timeout(self.config.step_timeout);
            let shard = shard.clone();
            reads.spawn(async move { (shard, client.balances(request).await) });
        }
        let mut balances = Vec::new();
        while let Some(read) = reads.join_next().await {
            let Ok((shard, read)) = read else { continue };
            match read {
                Ok(r) => balances.extend(r.into_inner().balances),
                Err(e) => {
                    return Err(Status::unavailable(format!(
                        "could not read every balance: {shard}: {}",
                        e.message()
                    )));
                }
            }
        }
        balances.sort_by(|a, b| a.account.cmp(&b.account));
        Ok(pb::ReadAllResponse {
            total: balances.iter().map(|b| b.balance).sum(),
            balances,
            expected: self.config.bank.total() as i64,
            in_flight_before,
            in_flight_after: self.money_in_flight(),
            mode: "saga".into(),
            outbox: self.log.outbox_len() as u64,
        })
    }

    /// One anti-entropy pass: with every step held still, the balances, the ledger's journal
    /// and what the running sagas have applied and not journalled; compared, and with
    /// `repair` each drift corrected.
    async fn reconcile(&self, repair: bool) -> Result<pb::ReconcileResponse, Status> {
        let client = |id: &str| {
            self.participants
                .get(id)
                .cloned()
                .ok_or_else(|| Status::internal(format!("no --peer address for {id}")))
        };
        let snapshot = {
            let _still = self.steps_still.write().await;
            let mut snapshot = crate::reconcile::Snapshot::default();
            for saga in self.running().values() {
                let t = &saga.transfer;
                // A failed attempt may still land (a delayed request): its account is not
                // judged this pass.
                let unsure = saga.attempts > 0;
                match saga.phase {
                    Phase::Debit if unsure => {
                        snapshot.uncertain.insert(t.from.clone());
                    }
                    Phase::Credit => {
                        *snapshot.in_flight.entry(t.from.clone()).or_default() -= t.amount;
                        if unsure {
                            snapshot.uncertain.insert(t.to.clone());
                        }
                    }
                    // The credit may have landed; the fence will say.
                    Phase::FenceCredit => {
                        *snapshot.in_flight.entry(t.from.clone()).or_default() -= t.amount;
                        snapshot.uncertain.insert(t.to.clone());
                    }
                    Phase::Ledger => {
                        *snapshot.in_flight.entry(t.from.clone()).or_default() -= t.amount;
                        *snapshot.in_flight.entry(t.to.clone()).or_default() += t.amount;
                        if unsure {
                            snapshot.uncertain.insert(t.from.clone());
                            snapshot.uncertain.insert(t.to.clone());
                        }
                    }
                    // Whether the debit landed, or its refund did, is what the refund finds.
                    Phase::Refund => {
                        snapshot.uncertain.insert(t.from.clone());
                    }
                    _ => {}
                }
            }
            for shard in &self.config.shards {
                let mut request = Request::new(pb::BalancesRequest {});
                request.set_timeout(Duration::from_secs(5));
                let balances = client(shard)?
                    .balances(request)
                    .await?
                    .into_inner()
                    .balances;
                snapshot
                    .balances
                    .extend(balances.into_iter().map(|b| (b.account, b.balance)));
            }
            snapshot.journal = crate::reconcile::read_journal(client(&self.config.ledger)?).await?;
            snapshot
        };
        self.reconciler
            .pass(
                &self.config.bank,
                &snapshot,
                repair,
                &self.config.shards,
                client,
            )
            .await
    }

    /// The sagas a dead-letter request names (parked ones only).
    fn dead_letters_named(&self, request: &pb::DeadLetterRequest) -> Result<Vec<String>, Status> {
        let running = self.running();
        if request.all {
            return Ok(running
                .values()
                .filter(|s| s.dead_lettered)
                .map(|s| s.transfer.id.clone())
                .collect());
        }
        match running.get(&request.id) {
            Some(s) if s.dead_lettered => Ok(vec![request.id.clone()]),
            _ => Err(refusal(
                tonic::Code::NotFound,
                "not_dead_lettered",
                format!(
                    "transfer {:?} is not in the dead-letter queue (`bank dlq list` shows it)",
                    request.id
                ),
            )),
        }
    }

    async fn retry_dead_letters(
        self: &Arc<Self>,
        request: pb::DeadLetterRequest,
    ) -> Result<Vec<String>, Status> {
        let ids = self.dead_letters_named(&request)?;
        let mut retried = Vec::new();
        for id in ids {
            let saga = {
                let mut running = self.running();
                match running.get_mut(&id) {
                    Some(saga) if saga.dead_lettered => {
                        saga.retry_dead_letter(clock_ms());
                        saga.clone()
                    }
                    _ => continue,
                }
            };
            if let Err(e) = self.log.write(&saga, true).await {
                self.log_failed(e);
            }
            tracing::info!(event = "saga_retried", id = %id, phase = saga.phase.as_str(), "{id} taken out of the dead-letter queue");
            tokio::spawn(self.clone().drive(id.clone()));
            retried.push(id);
        }
        Ok(retried)
    }

    async fn discard_dead_letters(
        &self,
        request: pb::DeadLetterRequest,
    ) -> Result<Vec<String>, Status> {
        let ids = self.dead_letters_named(&request)?;
        let mut discarded = Vec::new();
        for id in ids {
            let saga = {
                let mut running = self.running();
                match running.get_mut(&id) {
                    Some(saga) if saga.dead_lettered => {
                        saga.discard(clock_ms());
                        saga.clone()
                    }
                    _ => continue,
                }
            };
            if let Err(e) = self.log.write(&saga, true).await {
                self.log_failed(e);
            }
            self.running().remove(&id);
            self.counters.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event = "saga_discarded", id = %id, "{id} given up: its money in flight stays where it is");
            discarded.push(id);
        }
        self.settled.notify_waiters();
        Ok(discarded)
    }
}

/// A saga's outcome (or its parking) as the client sees it: `committed` once past the pivot
/// (state `completed`, or `committed` while the ledger and notify steps still run).
fn answer(saga: &Saga) -> pb::TransferResponse {
    let state = if saga.dead_lettered {
        "dead_lettered"
    } else if saga.phase == Phase::Ledger {
        "committed"
    } else {
        saga.phase.as_str()
    };
    pb::TransferResponse {
        committed: saga.phase.past_the_pivot(),
        reason: saga
            .reason
            .clone()
            .or_else(|| saga.last_error.clone())
            .unwrap_or_default(),
        tx: 0,
        attempts: 1,
        state: state.into(),
    }
}

/// The pause before attempt `attempt + 1` of a step: full jitter up to 100 ms x 2^attempt, at
/// most 2 s.
fn backoff(attempt: u32) -> Duration {
    let ceiling = (100u64 << attempt.min(5)).min(2000);
    Duration::from_millis(rand::random_range(ceiling / 4..=ceiling))
}

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

struct DeadLettersApi {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl pb::dead_letters_server::DeadLetters for DeadLettersApi {
    async fn list(
        &self,
        _: Request<pb::DeadLettersRequest>,
    ) -> Result<Response<pb::DeadLettersResponse>, Status> {
        let now = clock_ms();
        let sagas = self
            .shared
            .running()
            .values()
            .filter(|s| s.dead_lettered)
            .map(|s| pb::DeadLetter {
                id: s.transfer.id.clone(),
                from: s.transfer.from.clone(),
                to: s.transfer.to.clone(),
                amount: s.transfer.amount,
                step: s.phase.as_str().into(),
                error: s.last_error.clone().unwrap_or_default(),
                since_ms: now.saturating_sub(s.changed_ms),
            })
            .collect();
        Ok(Response::new(pb::DeadLettersResponse { sagas }))
    }

    async fn retry(
        &self,
        request: Request<pb::DeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetterResponse>, Status> {
        let ids = self.shared.retry_dead_letters(request.into_inner()).await?;
        Ok(Response::new(pb::DeadLetterResponse { ids }))
    }

    async fn discard(
        &self,
        request: Request<pb::DeadLetterRequest>,
    ) -> Result<Response<pb::DeadLetterResponse>, Status> {
        let ids = self
            .shared
            .discard_dead_letters(request.into_inner())
            .await?;
        Ok(Response::new(pb::DeadLetterResponse { ids }))
    }
}

struct OrchestratorStatus {
    shared: Arc<Shared>,
}

impl NodeStatus for OrchestratorStatus {
    fn role(&self) -> String {
        "orchestrator".into()
    }

    fn detail(&self) -> Value {
        let s = &self.shared;
        let now = clock_ms();
        let running = s.running();
        let mut oldest: Vec<&Saga> = running.values().collect();
        oldest.sort_by_key(|saga| saga.started_ms);
        let in_flight = oldest
            .iter()
            .take(SHOWN)
            .map(|saga| SagaStatus {
                transfer: saga.transfer.id.clone(),
                from: saga.transfer.from.clone(),
                to: saga.transfer.to.clone(),
                amount: saga.transfer.amount,
                phase: saga.phase.as_str().into(),
                step: saga.phase.step_number(),
                compensating: saga.phase.is_compensating(),
                dead_lettered: saga.dead_lettered,
                attempts: saga.attempts,
                age_ms: now.saturating_sub(saga.started_ms),
                reason: saga.reason.clone(),
                last_error: saga.last_error.clone(),
            })
            .collect();
        let c = &s.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let detail = OrchestratorDetail {
            mode: "saga".into(),
            bank: Some(s.config.bank),
            in_flight,
            in_flight_count: running.len(),
            money_in_flight: running.values().map(Saga::in_flight).sum(),
            compensating: running
                .values()
                .filter(|s| s.phase.is_compensating())
                .count(),
            dead_lettered: running.values().filter(|s| s.dead_lettered).count(),
            completed: load(&c.completed),
            refused: load(&c.refused),
            compensated: load(&c.compensated),
            discarded: load(&c.discarded),
            step_retries: load(&c.step_retries),
            reads: load(&c.reads),
            outbox: s.relay.status(&s.log),
            reconcile: s.reconciler.status(),
        };
        serde_json::to_value(detail).expect("the detail serializes")
    }
}

/// The addresses of the `--peer`s named in `ids`.
pub fn peers_named(
    args: &ValidNodeArgs,
    ids: &[String],
    what: &str,
) -> Result<Vec<(String, SocketAddr)>, distlab_runtime::BadInput> {
    ids.iter()
        .map(|id| {
            args.peers
                .iter()
                .find(|(peer, _)| peer.as_str() == id)
                .map(|(peer, addr)| (peer.to_string(), *addr))
                .ok_or_else(|| {
                    distlab_runtime::BadInput::new(format!("{what} {id} has no --peer address"))
                })
        })
        .collect()
}

/// Runs an orchestrator node until shutdown.
pub async fn run(args: ValidNodeArgs, config: OrchestratorConfig) -> anyhow::Result<()> {
    let Some(data_dir) = args.data_dir.clone() else {
        return Err(distlab_runtime::BadInput::new(
            "a saga orchestrator needs --data-dir: its saga log and outbox live there",
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
        participants.insert(participant.clone(), ParticipantClient::new(channel));
    }
    let brokers = peers_named(&args, &config.relay.brokers, "broker")?;
    let controllers = peers_named(&args, &config.relay.controllers, "controller")?;
    let mut node = Node::bind(args, "proj5", "bank").await?;
    let (log, resume) = SagaLog::open(&data_dir, config.fsync)?;
    tracing::info!(
        event = "saga_log_opened",
        unfinished = resume.len(),
        outbox = log.outbox_len(),
        "the orchestrator resumes every saga its log says is unfinished"
    );
    let relay = Relay::new(config.relay.clone());
    let shared = Arc::new(Shared {
        running: Mutex::new(
            resume
                .into_iter()
                .map(|s| (s.transfer.id.clone(), s))
                .collect(),
        ),
        config,
        log,
        settled: Notify::new(),
        participants,
        counters: Counters::default(),
        relay,
        steps_still: tokio::sync::RwLock::new(()),
        reconciler: crate::reconcile::Reconciler::default(),
    });
    let resumable: Vec<String> = shared
        .running()
        .values()
        .filter(|s| !s.dead_lettered)
        .map(|s| s.transfer.id.clone())
        .collect();
    for id in resumable {
        tokio::spawn(shared.clone().drive(id));
    }
    let shutdown = node.shutdown_token();
    if let Some((every, repair)) = shared.config.reconcile {
        crate::front::reconcile_every(shared.clone(), every, repair, &shutdown);
    }
    node.add_ready_field("role", "orchestrator");
    tokio::spawn(super::relay::run(
        shared.clone(),
        brokers,
        controllers,
        shutdown.clone(),
    ));
    let routes = tonic::service::Routes::new(pb::bank_server::BankServer::new(BankApi {
        front: shared.clone(),
    }))
    .add_service(pb::dead_letters_server::DeadLettersServer::new(
        DeadLettersApi {
            shared: shared.clone(),
        },
    ));
    let result = node
        .serve(
            routes,
            Arc::new(OrchestratorStatus {
                shared: shared.clone(),
            }),
        )
        .await;
    shutdown.cancel();
    shared.log.close().await?;
    result
}
