//! Project 2 in the lab: a Raft-replicated kv cluster (`services/raftkv`), its register
//! workload, and what the console shows of it.
//!
//! The workload: each client reads, writes and compare-and-sets keys of one small, cluster-wide
//! key set (contention on purpose), with unique integer values so a read names the write it
//! saw. A client is a `RaftKvClient` over every node (through the client link proxies): it
//! finds the leader itself, and its mutations carry a session so retries are applied once. A
//! mutation that certainly did not apply is `fail`; a timeout or an unavailable cluster is
//! `info` (it may have applied); the linearizability checker decides the rest.

pub mod bench;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use distlab_raftkv::client::RaftKvClient;
use distlab_runtime::retry::RetryPolicy;
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::json;

use super::raft_view::RaftView;
use crate::console::views::{ClusterView, Figure, ProjectUi, detail_number, detail_text};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{
    BoxFuture, Client, Completion, Driver, RegisterOp, Target, WorkloadSpec, final_reads_policy,
    int_value, node_addrs, record_call, unique_value,
};

pub const PROJECT: Project = Project {
    name: "proj2",
    title: "Raft-replicated key-value store (openraft on sled; read-index, lease and local reads)",
    service: "raftkv",
    roles: &[Role {
        name: "node",
        count: Count::Rest,
        id_prefix: "n",
        service: None,
        flags: &[],
    }],
    default_nodes: 3,
    peer_links: PeerLinks::Tcp,
    node_flags: &[],
    initial_members_flag: Some("--initial-members"),
    node_main: distlab_raftkv::node::main,
    check_node_flags: distlab_raftkv::node::check_flags,
    scaling: None,
    remove_member: Some(remove_member),
    workload: &Registers,
    checks: &[
        CheckSpec::Linearizable,
        CheckSpec::ElectionSafety,
        CheckSpec::Availability { min: None },
    ],
};

/// The node table's figures and the views of a Project 2 console.
pub fn console() -> ProjectUi {
    ProjectUi {
        figures: &[
            Figure {
                header: "term",
                value: |n| detail_number(n, "term"),
            },
            Figure {
                header: "leader",
                value: |n| detail_text(n, "leader"),
            },
            Figure {
                header: "last",
                value: |n| detail_number(n, "last_log_index"),
            },
            Figure {
                header: "commit",
                value: |n| detail_number(n, "committed"),
            },
            Figure {
                header: "applied",
                value: |n| detail_number(n, "applied"),
            },
            Figure {
                header: "snap",
                value: |n| detail_number(n, "snapshot"),
            },
        ],
        quiet_events: &[],
        views: vec![Box::new(RaftView), Box::new(ClusterView)],
    }
}

/// `remove-node`: a membership change through the leader (joint consensus), retried through
/// leader changes until the deadline.
fn remove_member<'a>(targets: &'a [Target], id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async move {
        let policy = RetryPolicy {
            max_attempts: 50,
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(30),
            ..RetryPolicy::default()
        };
        let reply = cluster_client(targets, policy)?
            .remove_member(id)
            .await
            .map_err(|e| anyhow::anyhow!("removing {id}: {}", e.message()))?;
        anyhow::ensure!(
            !reply.voters.iter().any(|v| v == id),
            "removing {id}: the committed membership still has it: {:?}",
            reply.voters
        );
        Ok(())
    })
}

fn key(index: usize) -> String {
    format!("k{index}")
}

fn cluster_client(targets: &[Target], policy: RetryPolicy) -> anyhow::Result<RaftKvClient> {
    RaftKvClient::connect_lazy(&node_addrs(targets), policy)
}

/// The register workload over the raftkv API.
pub struct Registers;

impl Driver for Registers {
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>> {
        anyhow::ensure!(!targets.is_empty(), "a workload needs at least one node");
        let policy = RetryPolicy {
            max_attempts: 20,
            attempt_timeout: (spec.timeout / 2).max(Duration::from_millis(100)),
            max_backoff: Duration::from_millis(200),
            ..spec.retry_policy()
        };
        (0..spec.clients)
            .map(|_| {
                Ok(Box::new(RegisterClient {
                    client: cluster_client(targets, policy.clone())?,
                    recorder: recorder.clone(),
                    spec: spec.clone(),
                    next_value: 0,
                    known: HashMap::new(),
                }) as Box<dyn Client>)
            })
            .collect()
    }

    fn final_reads<'a>(
        &'a self,
        spec: &'a WorkloadSpec,
        targets: &'a [Target],
        recorder: &'a Recorder,
        deadline: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let policy = RetryPolicy {
                max_attempts: 100,
                ..final_reads_policy(deadline)
            };
            let client = cluster_client(targets, policy)?;
            for k in 0..spec.keys.max(1) {
                let key = key(k);
                record_call(
                    recorder,
                    FINAL_PROCESS,
                    "read",
                    &key,
                    json!(null),
                    client.get(&key),
                    |v| Completion::ok(int_value(v.as_deref()), Some(json!({"final": true}))),
                )
                .await;
            }
            Ok(())
        })
    }
}

/// One client of the register workload: one session with the cluster.
struct RegisterClient {
    client: RaftKvClient,
    recorder: Arc<Recorder>,
    spec: WorkloadSpec,
    next_value: i64,
    /// The last value this client saw per key: what its cas operations expect.
    known: HashMap<String, i64>,
}

impl RegisterClient {
    /// A write of a new unique value, or (with probability `cas`, on a key this client has
    /// seen) a compare-and-set from the value it saw.
    async fn write(&mut self, process: u64, rng: &mut SmallRng, key: &str) -> OpType {
        let recorder = &*self.recorder;
        let client = &self.client;
        self.next_value += 1;
        let value = unique_value(process, self.next_value);
        let expected = self.known.get(key).copied();
        let (kind, written) =
            match expected.filter(|_| rng.random_bool(self.spec.cas.clamp(0.0, 1.0))) {
                Some(expected) => {
                    let arg = json!([expected, value]);
                    let call = client.compare_and_set(
                        key,
                        Some(expected.to_string().into_bytes()),
                        value.to_string(),
                    );
                    record_call(recorder, process, "cas", key, arg.clone(), call, |o| {
                        let said = json!({ "swapped": o.swapped });
                        if o.swapped {
                            Completion::ok(arg, Some(said))
                        } else {
                            // It did not happen: the register's value was not the expected one.
                            Completion::refused(arg, "cas did not match", said)
                        }
                    })
                    .await
                }
                None => {
                    let call = client.put(key, value.to_string());
                    record_call(
                        recorder,
                        process,
                        "write",
                        key,
                        json!(value),
                        call,
                        |index| Completion::ok(json!(value), Some(json!({ "index": index }))),
                    )
                    .await
                }
            };
        if written.is_some() {
            self.known.insert(key.to_string(), value);
        }
        kind
    }
}

impl Client for RegisterClient {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            let node = self.client.leader_guess();
            let key = key(self.spec.next_key(rng));
            let recorder = &*self.recorder;
            let client = &self.client;
            let outcome = match self.spec.next_op(rng) {
                RegisterOp::Read => {
                    let (kind, seen) = record_call(
                        recorder,
                        process,
                        "read",
                        &key,
                        json!(null),
                        client.get(&key),
                        |v| Completion::ok(int_value(v.as_deref()), None),
                    )
                    .await;
                    if let Some(v) = seen.and_then(|v| v.as_i64()) {
                        self.known.insert(key.clone(), v);
                    }
                    kind
                }
                RegisterOp::Delete => {
                    self.known.remove(&key);
                    let call = client.delete(&key);
                    record_call(
                        recorder,
                        process,
                        "delete",
                        &key,
                        json!(null),
                        call,
                        |existed| Completion::ok(json!(null), Some(json!({ "existed": existed }))),
                    )
                    .await
                    .0
                }
                RegisterOp::Write => self.write(process, rng, &key).await,
            };
            (node, outcome)
        })
    }
}
