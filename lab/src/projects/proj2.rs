//! Project 2 in the lab: a Raft-replicated kv cluster (`services/raftkv`), its register
//! workload, and what the console shows of it.
//!
//! The workload: each client reads, writes and compare-and-sets keys of one small, cluster-wide
//! key set (contention on purpose), with unique integer values so a read names the write it
//! saw. A client is a `RaftKvClient` over every node (through the client link proxies): it
//! finds the leader itself, and its mutations carry a session so retries are applied once. A
//! mutation that certainly did not apply is `fail`; a timeout or an unavailable cluster is
//! `info` (it may have applied); the linearizability checker decides the rest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use distlab_raftkv::client::RaftKvClient;
use distlab_runtime::retry::RetryPolicy;
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::{Value, json};
use tonic::Status;

use crate::console::views::{ClusterView, Figure, ProjectUi, detail_number, detail_text};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{BoxFuture, Client, Driver, Target, WorkloadSpec, failure_kind};

pub const PROJECT: Project = Project {
    name: "proj2",
    title: "Raft-replicated key-value store (openraft on sled; read-index, lease and local reads)",
    service: "raftkv",
    roles: &[Role {
        name: "node",
        count: Count::Rest,
        id_prefix: "n",
    }],
    default_nodes: 3,
    peer_links: PeerLinks::Tcp,
    node_flags: &[],
    initial_members_flag: Some("--initial-members"),
    node_main: distlab_raftkv::node::main,
    workload: &Registers,
    checks: &[
        CheckSpec::Linearizable,
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
        views: vec![Box::new(ClusterView)],
    }
}

fn key(index: usize) -> String {
    format!("k{index}")
}

fn cluster_client(targets: &[Target], policy: RetryPolicy) -> anyhow::Result<RaftKvClient> {
    let nodes: Vec<_> = targets.iter().map(|t| (t.node.clone(), t.addr)).collect();
    RaftKvClient::connect_lazy(&nodes, policy)
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
            deadline: spec.timeout,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
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
                attempt_timeout: Duration::from_secs(1),
                deadline,
                ..RetryPolicy::default()
            };
            let client = cluster_client(targets, policy)?;
            for k in 0..spec.keys.max(1) {
                let key = key(k);
                let read = client.get(&key);
                recorded(
                    recorder,
                    FINAL_PROCESS,
                    "read",
                    &key,
                    json!(null),
                    false,
                    read,
                    |v| (int_value(v.as_deref()), Some(json!({"final": true}))),
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

fn int_value(value: Option<&[u8]>) -> Value {
    json!(value.and_then(|v| String::from_utf8_lossy(v).parse::<i64>().ok()))
}

impl Client for RegisterClient {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            let node = self.client.leader_guess();
            let key = key(rng.random_range(0..self.spec.keys.max(1)));
            let recorder = &*self.recorder;
            let client = &self.client;
            let outcome = if rng.random_bool(self.spec.reads.clamp(0.0, 1.0)) {
                let (kind, seen) = recorded(
                    recorder,
                    process,
                    "read",
                    &key,
                    json!(null),
                    false,
                    client.get(&key),
                    |v| (int_value(v.as_deref()), None),
                )
                .await;
                if let Some(v) = seen.and_then(|v| v.as_i64()) {
                    self.known.insert(key.clone(), v);
                }
                kind
            } else if rng.random_bool(self.spec.deletes.clamp(0.0, 1.0)) {
                self.known.remove(&key);
                let call = client.delete(&key);
                recorded(
                    recorder,
                    process,
                    "delete",
                    &key,
                    json!(null),
                    true,
                    call,
                    |existed| (json!(null), Some(json!({ "existed": existed }))),
                )
                .await
                .0
            } else {
                self.next_value += 1;
                let value = (process as i64) * 1_000_000 + self.next_value;
                let expected = self.known.get(&key).copied();
                match expected.filter(|_| rng.random_bool(self.spec.cas.clamp(0.0, 1.0))) {
                    Some(expected) => {
                        let call = client.compare_and_set(
                            &key,
                            Some(expected.to_string().into_bytes()),
                            value.to_string(),
                        );
                        let (kind, swapped) = recorded(
                            recorder,
                            process,
                            "cas",
                            &key,
                            json!([expected, value]),
                            true,
                            call,
                            |o| {
                                (
                                    json!([expected, value]),
                                    Some(json!({ "swapped": o.swapped })),
                                )
                            },
                        )
                        .await;
                        // A cas that did not swap failed: the register knows it did not happen.
                        if kind == OpType::Ok && swapped.is_some() {
                            self.known.insert(key.clone(), value);
                        }
                        kind
                    }
                    None => {
                        let call = client.put(&key, value.to_string());
                        let (kind, _) = recorded(
                            recorder,
                            process,
                            "write",
                            &key,
                            json!(value),
                            true,
                            call,
                            |index| (json!(value), Some(json!({ "index": index }))),
                        )
                        .await;
                        if kind == OpType::Ok {
                            self.known.insert(key.clone(), value);
                        }
                        kind
                    }
                }
            };
            (node, outcome)
        })
    }
}

/// Records one operation: its invocation, then `ok` with the value and meta `ok_of` makes of
/// the result, or the failure: reads that failed changed nothing (`fail`); a mutation is
/// `fail` only when the code says it did not apply, else `info`. A cas that did not swap is
/// recorded `fail` (it did not happen) and returns `None` as its value.
#[allow(clippy::too_many_arguments)]
async fn recorded<T>(
    recorder: &Recorder,
    process: u64,
    f: &str,
    key: &str,
    arg: Value,
    mutation: bool,
    call: impl Future<Output = Result<T, Status>>,
    ok_of: impl FnOnce(T) -> (Value, Option<Value>),
) -> (OpType, Option<Value>) {
    recorder.record(process, OpType::Invoke, f, Some(key), arg.clone(), None);
    match call.await {
        Ok(result) => {
            let (value, meta) = ok_of(result);
            let swapped = meta
                .as_ref()
                .and_then(|m| m.get("swapped"))
                .and_then(|s| s.as_bool());
            if swapped == Some(false) {
                recorder.record_with(
                    process,
                    OpType::Fail,
                    f,
                    Some(key),
                    arg,
                    Some("cas did not match".into()),
                    meta,
                );
                return (OpType::Ok, None);
            }
            recorder.record_with(process, OpType::Ok, f, Some(key), value.clone(), None, meta);
            (OpType::Ok, Some(value))
        }
        Err(status) => {
            let kind = if mutation {
                failure_kind(status.code())
            } else {
                OpType::Fail
            };
            let error = Some(distlab_runtime::rpc::describe(&status));
            recorder.record(process, kind, f, Some(key), arg, error);
            (kind, None)
        }
    }
}
