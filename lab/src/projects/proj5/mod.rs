//! Project 5 in the lab: the bank on two-phase commit (`services/bank`): a transaction
//! coordinator (`tc1`), the ledger (`ledger1`) and account shards (`s1`..), a transfer
//! workload, and the money checks.
//!
//! The workload: each client moves money between two of the first `keys` accounts (uniform,
//! or hot accounts with `zipf`), amounts 1 to 50, each transfer with its own id (the
//! idempotency key: a transfer the coordinator did not answer is retried with the same id
//! until the operation's timeout, and cannot apply twice). With probability `reads` an
//! operation is a whole-bank read instead (every balance in one transaction: shared locks on
//! every account of every shard). At the end the runner reads every balance once more and the
//! ledger's journal: `bank_total` and `bank_transfers` check them.

pub mod bench;
pub mod tx_view;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use distlab_bank::status::{
    CoordinatorDetail, NotifierDetail, OrchestratorDetail, ParticipantDetail,
};
use distlab_proto::bank::v1 as pb;
use distlab_runtime::retry::{ClientMetrics, Idempotence, RetryPolicy};
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::json;
use tonic::Request;
use tonic::transport::Channel;

use crate::console::views::{ClusterView, Figure, ProjectUi};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::model::NodeView;
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{
    BoxFuture, Client, Completion, Driver, Target, WorkloadSpec, final_reads_policy, record_call,
};

pub const PROJECT: Project = Project {
    name: "proj5",
    title: "Distributed transactions: a sharded bank on two-phase commit (presumed abort, strict 2PL with wait-die) or on sagas (compensation, outbox to Kafka-lite)",
    service: "bank",
    roles: &[
        Role {
            name: "coordinator",
            count: Count::Fixed(1),
            id_prefix: "tc",
            service: None,
            // `--mode saga` (a node flag) makes it the saga orchestrator.
            flags: &[
                "--role",
                "coordinator",
                "--brokers",
                "b1,b2",
                "--controllers",
                "c1",
            ],
        },
        Role {
            name: "ledger",
            count: Count::Fixed(1),
            id_prefix: "ledger",
            service: None,
            flags: &["--role", "ledger"],
        },
        Role {
            name: "notifier",
            count: Count::Fixed(1),
            id_prefix: "n",
            service: None,
            flags: &["--role", "notifier", "--brokers", "b1,b2"],
        },
        // Kafka-lite for the saga's outbox: one controller, two brokers (the topic has two
        // replicas and min.insync 2: acks=all waits for both).
        Role {
            name: "controller",
            count: Count::Fixed(1),
            id_prefix: "c",
            service: Some("log"),
            flags: &["--role", "controller", "--controllers", "c1"],
        },
        Role {
            name: "broker",
            count: Count::Fixed(2),
            id_prefix: "b",
            service: Some("log"),
            flags: &["--role", "broker", "--controllers", "c1"],
        },
        Role {
            name: "shard",
            count: Count::Rest,
            id_prefix: "s",
            service: None,
            flags: &["--role", "shard"],
        },
    ],
    default_nodes: 8,
    peer_links: PeerLinks::Tcp,
    node_flags: &["--coordinator-id", "tc1", "--ledger-id", "ledger1"],
    // The shards are the first cluster's sK nodes (spares planned for add-node are not).
    initial_members_flag: Some("--members"),
    node_main: distlab_bank::node::main,
    check_node_flags: distlab_bank::node::check_flags,
    scaling: None,
    remove_member: None,
    workload: &Transfers,
    checks: &[
        CheckSpec::BankTotal,
        CheckSpec::BankTransfers,
        CheckSpec::BankNotifications,
        CheckSpec::Availability { min: None },
    ],
};

/// A participant's detail, if the node is one.
fn participant(n: &NodeView) -> Option<ParticipantDetail> {
    serde_json::from_value(n.detail.clone()).ok()
}

/// The node table's figures and the views of a Project 5 console (it opens on the
/// transaction view).
pub fn console() -> ProjectUi {
    ProjectUi {
        figures: &[
            Figure {
                header: "done",
                // Transfers done: committed (2PC), completed (saga: steps applied at a
                // participant), notified (the notifier).
                value: |n| match n.node.role {
                    "coordinator" if n.detail["mode"] == "saga" => {
                        serde_json::from_value::<OrchestratorDetail>(n.detail.clone())
                            .map_or(String::new(), |d| d.completed.to_string())
                    }
                    "coordinator" => serde_json::from_value::<CoordinatorDetail>(n.detail.clone())
                        .map_or(String::new(), |d| d.committed.to_string()),
                    "notifier" => serde_json::from_value::<NotifierDetail>(n.detail.clone())
                        .map_or(String::new(), |d| d.notifications.to_string()),
                    _ => participant(n).map_or(String::new(), |d| {
                        (d.counters.committed + d.counters.steps_applied).to_string()
                    }),
                },
            },
            Figure {
                header: "in doubt",
                value: |n| {
                    participant(n).map_or(String::new(), |d| {
                        d.prepared.iter().filter(|p| p.in_doubt).count().to_string()
                    })
                },
            },
            Figure {
                header: "locked",
                value: |n| participant(n).map_or(String::new(), |d| d.locked.to_string()),
            },
            Figure {
                header: "total",
                value: |n| participant(n).map_or(String::new(), |d| d.total),
            },
        ],
        views: vec![Box::new(tx_view::TxView), Box::new(ClusterView)],
        quiet_events: &[],
    }
}

/// The transfer workload.
pub struct Transfers;

fn coordinator(targets: &[Target]) -> anyhow::Result<&Target> {
    targets
        .iter()
        .find(|t| t.role == "coordinator")
        .ok_or_else(|| anyhow::anyhow!("the workload needs the coordinator"))
}

/// Calls `call` (a fresh request each attempt, bounded by the attempt's timeout) under
/// `policy`: retried on the codes that say the coordinator may not have heard, and a transfer
/// retried keeps its id, so it cannot apply twice.
async fn with_retries<R, T, F, Fut>(
    policy: &RetryPolicy,
    request: R,
    call: F,
) -> Result<T, tonic::Status>
where
    R: Clone,
    F: Fn(Request<R>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    policy
        .call(
            Idempotence::Idempotent,
            &ClientMetrics::default(),
            |attempt| {
                let mut request = Request::new(request.clone());
                request.set_timeout(attempt.timeout);
                let answer = call(request);
                async move { answer.await.map(tonic::Response::into_inner) }
            },
        )
        .await
}

/// A whole-bank read as the history records it.
fn read_value(read: pb::ReadAllResponse) -> serde_json::Value {
    let balances: serde_json::Map<String, serde_json::Value> = read
        .balances
        .into_iter()
        .map(|b| (b.account, json!(b.balance)))
        .collect();
    json!({
        "total": read.total,
        "expected": read.expected,
        "balances": balances,
        "mode": read.mode,
        "in_flight_before": read.in_flight_before,
        "in_flight_after": read.in_flight_after,
        "outbox": read.outbox,
    })
}

/// A channel to a target's gRPC address.
fn channel(target: &Target) -> anyhow::Result<Channel> {
    Ok(distlab_runtime::channel::endpoint(target.addr, Duration::from_secs(1))?.connect_lazy())
}

/// Reads every page of something paged by sequence number: `page(from)` returns a page and
/// the sequence number after its last entry (`None`: the end).
async fn read_pages<F, Fut>(mut page: F) -> Result<Vec<serde_json::Value>, tonic::Status>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<serde_json::Value>, Option<u64>), tonic::Status>>,
{
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let (entries, next) = page(from).await?;
        all.extend(entries);
        match next {
            Some(next) => from = next,
            None => return Ok(all),
        }
    }
}

impl Driver for Transfers {
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>> {
        let client = distlab_bank::wire::connect(coordinator(targets)?.addr, spec.timeout)?;
        let sent = Arc::new(AtomicU64::new(0));
        (0..spec.clients)
            .map(|_| {
                Ok(Box::new(TransferClient {
                    client: client.clone(),
                    recorder: recorder.clone(),
                    spec: spec.clone(),
                    sent: sent.clone(),
                }) as Box<dyn Client>)
            })
            .collect()
    }

    fn final_reads<'a>(
        &'a self,
        _spec: &'a WorkloadSpec,
        targets: &'a [Target],
        recorder: &'a Recorder,
        deadline: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let client = distlab_bank::wire::connect(coordinator(targets)?.addr, deadline)?;
            // Transactions in doubt hold their locks until resolved: patient attempts.
            let policy = RetryPolicy {
                max_attempts: 200,
                attempt_timeout: Duration::from_secs(10),
                ..final_reads_policy(deadline)
            };
            // Saga mode: the sagas still running (a compensation waiting for a shard that
            // just came back) and the outbox finish first; the final read is of a quiet bank.
            let quiet_read = async {
                let give_up = tokio::time::Instant::now() + deadline;
                loop {
                    let read = with_retries(&policy, pb::ReadAllRequest {}, |r| {
                        let mut client = client.clone();
                        async move { client.read_all(r).await }
                    })
                    .await?;
                    let quiet =
                        read.in_flight_before == 0 && read.in_flight_after == 0 && read.outbox == 0;
                    if quiet || tokio::time::Instant::now() >= give_up {
                        return Ok::<_, tonic::Status>(read);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            };
            let (_, read) = record_call(
                recorder,
                FINAL_PROCESS,
                "read_all",
                "bank",
                json!(null),
                quiet_read,
                |read| Completion::ok(read_value(read), Some(json!({"final": true}))),
            )
            .await;
            let saga = read.is_some_and(|r| r["mode"] == "saga");
            let ledger = targets
                .iter()
                .find(|t| t.role == "ledger")
                .ok_or_else(|| anyhow::anyhow!("the final reads need the ledger"))?;
            let ledger = pb::participant_client::ParticipantClient::new(channel(ledger)?);
            record_call(
                recorder,
                FINAL_PROCESS,
                "journal",
                "ledger",
                json!(null),
                read_pages(|from| {
                    let ledger = ledger.clone();
                    let policy = policy.clone();
                    async move {
                        let request = pb::JournalRequest { from, limit: 10_000 };
                        let page = with_retries(&policy, request, |r| {
                            let mut ledger = ledger.clone();
                            async move { ledger.journal(r).await }
                        })
                        .await?
                        .entries;
                        let next = page.last().map(|e| e.seq + 1);
                        let entries = page.into_iter().map(|e| {
                            json!({"seq": e.seq, "tx": e.tx, "id": e.id, "from": e.from, "to": e.to, "amount": e.amount})
                        });
                        Ok((entries.collect(), next))
                    }
                }),
                |entries| Completion::ok(json!(entries), Some(json!({"final": true}))),
            )
            .await;
            if !saga {
                return Ok(());
            }
            // Every shard's step records: what each idempotency key did.
            let shards: Vec<&Target> = targets.iter().filter(|t| t.role == "shard").collect();
            let mut shard_clients = Vec::new();
            for shard in &shards {
                shard_clients.push((
                    shard.node.clone(),
                    pb::participant_client::ParticipantClient::new(channel(shard)?),
                ));
            }
            record_call(
                recorder,
                FINAL_PROCESS,
                "steps",
                "shards",
                json!(null),
                async {
                    let mut all = Vec::new();
                    for (node, shard) in &shard_clients {
                        let steps = read_pages(|from| {
                            let shard = shard.clone();
                            let policy = policy.clone();
                            let node = node.clone();
                            async move {
                                let request = pb::StepsRequest { from, limit: 10_000 };
                                let page = with_retries(&policy, request, |r| {
                                    let mut shard = shard.clone();
                                    async move { shard.steps(r).await }
                                })
                                .await?
                                .steps;
                                let next = page.last().map(|s| s.seq + 1);
                                let steps = page.into_iter().map(|s| {
                                    json!({"shard": node, "seq": s.seq, "key": s.key, "account": s.account, "delta": s.delta, "state": s.state})
                                });
                                Ok((steps.collect(), next))
                            }
                        })
                        .await?;
                        all.extend(steps);
                    }
                    Ok(all)
                },
                |steps| Completion::ok(json!(steps), Some(json!({"final": true}))),
            )
            .await;
            // The notifications, once the notifier has read everything published (its lag
            // is 0 on two reads in a row, the count unchanged between them).
            let notifier = targets
                .iter()
                .find(|t| t.role == "notifier")
                .ok_or_else(|| anyhow::anyhow!("the final reads need the notifier"))?;
            let notifier = pb::notifications_client::NotificationsClient::new(channel(notifier)?);
            let caught_up = async {
                let give_up = tokio::time::Instant::now() + deadline;
                let mut last: Option<(usize, u64)> = None;
                loop {
                    let mut duplicates = 0;
                    let mut caught_up = true;
                    let all = read_pages(|from| {
                        let notifier = notifier.clone();
                        let policy = policy.clone();
                        async move {
                            let request = pb::NotificationsRequest { from, limit: 10_000 };
                            let page = with_retries(&policy, request, |r| {
                                let mut notifier = notifier.clone();
                                async move { notifier.list(r).await }
                            })
                            .await?;
                            let next = page.notifications.last().map(|n| n.seq + 1);
                            let meta = json!({"duplicates": page.duplicates, "lag": page.lag, "generation": page.generation});
                            let mut entries: Vec<serde_json::Value> = page
                                .notifications
                                .into_iter()
                                .map(|n| json!({"seq": n.seq, "event": n.event, "transfer": n.transfer, "outcome": n.outcome, "from": n.from, "to": n.to, "amount": n.amount}))
                                .collect();
                            if next.is_none() {
                                entries.push(json!({"meta": meta}));
                            }
                            Ok((entries, next))
                        }
                    })
                    .await?;
                    let mut notifications = Vec::new();
                    for entry in all {
                        match entry.get("meta") {
                            Some(meta) => {
                                duplicates = meta["duplicates"].as_u64().unwrap_or(0);
                                caught_up = meta["lag"] == 0 && meta["generation"] != 0;
                            }
                            None => notifications.push(entry),
                        }
                    }
                    let now = (notifications.len(), duplicates);
                    if (caught_up && last == Some(now)) || tokio::time::Instant::now() >= give_up {
                        return Ok::<_, tonic::Status>(json!({
                            "notifications": notifications,
                            "duplicates": duplicates,
                            "caught_up": caught_up,
                        }));
                    }
                    last = caught_up.then_some(now);
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
            };
            record_call(
                recorder,
                FINAL_PROCESS,
                "notifications",
                "notifier",
                json!(null),
                caught_up,
                |n| Completion::ok(n, Some(json!({"final": true}))),
            )
            .await;
            Ok(())
        })
    }
}

struct TransferClient {
    client: pb::bank_client::BankClient<Channel>,
    recorder: Arc<Recorder>,
    spec: WorkloadSpec,
    sent: Arc<AtomicU64>,
}

impl Client for TransferClient {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            let mut client = self.client.clone();
            // Until the operation's timeout, every 200 ms at most: the coordinator may be down
            // for seconds, and a retried transfer keeps its id.
            let transfer_policy = RetryPolicy {
                max_attempts: 1000,
                max_backoff: Duration::from_millis(200),
                ..self.spec.retry_policy()
            };
            if rng.random_bool(self.spec.reads.clamp(0.0, 1.0)) {
                let (kind, _) = record_call(
                    &self.recorder,
                    process,
                    "read_all",
                    "bank",
                    json!(null),
                    async move {
                        client
                            .read_all(pb::ReadAllRequest {})
                            .await
                            .map(|r| r.into_inner())
                    },
                    |read| Completion::ok(read_value(read), None),
                )
                .await;
                return ("tc1".to_string(), kind);
            }
            let accounts = self.spec.keys.max(2);
            let from = self.spec.next_key(rng);
            let mut to = self.spec.next_key(rng);
            while to == from {
                to = rng.random_range(0..accounts);
            }
            let n = self.sent.fetch_add(1, Ordering::Relaxed);
            let request = pb::TransferRequest {
                id: format!("w{n}"),
                from: distlab_bank::domain::account_name(from),
                to: distlab_bank::domain::account_name(to),
                amount: rng.random_range(1..=50),
            };
            let value = json!({
                "id": request.id,
                "from": request.from,
                "to": request.to,
                "amount": request.amount,
            });
            let (kind, _) = record_call(
                &self.recorder,
                process,
                "transfer",
                &request.from.clone(),
                value.clone(),
                with_retries(&transfer_policy, request.clone(), |r| {
                    let mut client = client.clone();
                    async move { client.transfer(r).await }
                }),
                |answer| {
                    let meta =
                        json!({"tx": answer.tx, "attempts": answer.attempts, "state": answer.state});
                    if answer.committed {
                        Completion::ok(value.clone(), Some(meta))
                    } else if answer.state == "dead_lettered" {
                        // Parked mid-saga: its money may be in flight; nobody knows yet
                        // whether it will move.
                        Completion {
                            kind: OpType::Info,
                            value: value.clone(),
                            error: Some(answer.reason),
                            meta: Some(meta),
                        }
                    } else {
                        Completion::refused(value.clone(), &answer.reason, meta)
                    }
                },
            )
            .await;
            ("tc1".to_string(), kind)
        })
    }
}
