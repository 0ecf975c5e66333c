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

pub mod tx_view;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use distlab_bank::status::{CoordinatorDetail, ParticipantDetail};
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
    title: "Distributed transactions: a sharded bank on two-phase commit (presumed abort, strict 2PL with wait-die)",
    service: "bank",
    roles: &[
        Role {
            name: "coordinator",
            count: Count::Fixed(1),
            id_prefix: "tc",
            flags: &["--role", "coordinator"],
        },
        Role {
            name: "ledger",
            count: Count::Fixed(1),
            id_prefix: "ledger",
            flags: &["--role", "ledger"],
        },
        Role {
            name: "shard",
            count: Count::Rest,
            id_prefix: "s",
            flags: &["--role", "shard"],
        },
    ],
    default_nodes: 4,
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
                header: "committed",
                value: |n| match n.node.role {
                    "coordinator" => serde_json::from_value::<CoordinatorDetail>(n.detail.clone())
                        .map_or(String::new(), |d| d.committed.to_string()),
                    _ => participant(n).map_or(String::new(), |d| d.counters.committed.to_string()),
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
    json!({"total": read.total, "expected": read.expected, "balances": balances})
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
            record_call(
                recorder,
                FINAL_PROCESS,
                "read_all",
                "bank",
                json!(null),
                with_retries(&policy, pb::ReadAllRequest {}, |r| {
                    let mut client = client.clone();
                    async move { client.read_all(r).await }
                }),
                |read| Completion::ok(read_value(read), Some(json!({"final": true}))),
            )
            .await;
            let ledger = targets
                .iter()
                .find(|t| t.role == "ledger")
                .ok_or_else(|| anyhow::anyhow!("the final reads need the ledger"))?;
            let endpoint = distlab_runtime::channel::endpoint(ledger.addr, Duration::from_secs(1))?;
            let ledger = pb::participant_client::ParticipantClient::new(endpoint.connect_lazy());
            record_call(
                recorder,
                FINAL_PROCESS,
                "journal",
                "ledger",
                json!(null),
                async {
                    let mut entries = Vec::new();
                    let mut from = 0;
                    loop {
                        let request = pb::JournalRequest { from, limit: 10_000 };
                        let page = with_retries(&policy, request, |r| {
                            let mut ledger = ledger.clone();
                            async move { ledger.journal(r).await }
                        })
                        .await?
                        .entries;
                        let Some(last) = page.last().map(|e| e.seq) else {
                            break;
                        };
                        entries.extend(page.into_iter().map(|e| {
                            json!({"seq": e.seq, "tx": e.tx, "id": e.id, "from": e.from, "to": e.to, "amount": e.amount})
                        }));
                        from = last + 1;
                    }
                    Ok(entries)
                },
                |entries| Completion::ok(json!(entries), Some(json!({"final": true}))),
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
                    let meta = json!({"tx": answer.tx, "attempts": answer.attempts});
                    if answer.committed {
                        Completion::ok(value.clone(), Some(meta))
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
