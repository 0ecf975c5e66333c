//! Project 0 in the lab: a cluster of independent kv nodes (`services/kv`), its register
//! workload, and what the console shows of it. Everything the lab knows about Project 0 is in
//! this module; the engine's project table and the console's view registry each name it once.
//!
//! The workload: each client reads, writes or deletes keys of a small key set (contention on
//! purpose), with unique integer values so a read names the write it saw. The nodes are
//! independent stores, so the key set is per node (`n2:k3` lives on n2 only) and each
//! operation picks a node, then a key. Writes go through the real client library
//! (idempotency token, retries within the operation's timeout). A write that fails with a code
//! meaning "not applied" is recorded `fail`; any other failure (timeout, unavailable) is
//! `info`: it may have happened.

use std::sync::Arc;
use std::time::Duration;

use distlab_kv::client::{ClientOptions, KvClient};
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::json;

use crate::console::views::{ClusterView, Figure, ProjectUi, detail_number};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{
    BoxFuture, Client, Completion, Driver, RegisterOp, Target, WorkloadSpec, final_reads_policy,
    record_call, record_read, unique_value,
};

pub const PROJECT: Project = Project {
    name: "proj0",
    title: "gRPC key-value service (retries, deadlines, idempotency, mTLS)",
    service: "kv",
    roles: &[Role {
        name: "server",
        count: Count::Rest,
        id_prefix: "n",
        service: None,
        flags: &[],
    }],
    default_nodes: 1,
    peer_links: PeerLinks::None,
    node_flags: &["--store", "sled"],
    initial_members_flag: None,
    node_main: distlab_kv::node::main,
    check_node_flags: distlab_kv::node::check_flags,
    scaling: None,
    remove_member: None,
    workload: &Registers,
    checks: &[
        CheckSpec::Linearizable,
        CheckSpec::AppliedOnce,
        CheckSpec::Availability { min: None },
    ],
};

/// The node table's figures and the views of a Project 0 console.
pub fn console() -> ProjectUi {
    ProjectUi {
        figures: &[
            Figure {
                header: "keys",
                value: |n| detail_number(n, "keys"),
            },
            Figure {
                header: "tokens",
                value: |n| detail_number(n, "tokens"),
            },
            Figure {
                header: "replays",
                value: |n| detail_number(n, "replays"),
            },
        ],
        quiet_events: &[],
        views: vec![Box::new(ClusterView)],
    }
}

/// The name of key `index` of `target`'s key set.
fn key(target: &Target, index: usize) -> String {
    format!("{}:k{index}", target.node)
}

/// The register workload over the kv API.
pub struct Registers;

impl Driver for Registers {
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>> {
        anyhow::ensure!(!targets.is_empty(), "a workload needs at least one node");
        let policy = spec.retry_policy();
        (0..spec.clients)
            .map(|_| {
                let nodes = targets
                    .iter()
                    .map(|target| {
                        let options = ClientOptions {
                            policy: policy.clone(),
                            tls: None,
                        };
                        Ok((
                            target.clone(),
                            KvClient::connect_lazy(target.addr, options)?,
                        ))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Ok(Box::new(RegisterClient {
                    nodes,
                    recorder: recorder.clone(),
                    spec: spec.clone(),
                    next_value: 0,
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
            let policy = final_reads_policy(deadline);
            for target in targets {
                let options = ClientOptions {
                    policy: policy.clone(),
                    tls: None,
                };
                let client = KvClient::connect_lazy(target.addr, options)?;
                for k in 0..spec.keys.max(1) {
                    read(&client, recorder, FINAL_PROCESS, &key(target, k), true).await;
                }
            }
            Ok(())
        })
    }
}

/// One client of the register workload: a kv client per node.
struct RegisterClient {
    nodes: Vec<(Target, KvClient)>,
    recorder: Arc<Recorder>,
    spec: WorkloadSpec,
    next_value: i64,
}

impl Client for RegisterClient {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            let (target, client) = &self.nodes[rng.random_range(0..self.nodes.len())];
            let key = key(target, self.spec.next_key(rng));
            let recorder = &self.recorder;
            let outcome = match self.spec.next_op(rng) {
                RegisterOp::Read => read(client, recorder, process, &key, false).await,
                RegisterOp::Delete => recorded_delete(client, recorder, process, &key).await,
                RegisterOp::Write => {
                    self.next_value += 1;
                    let value = unique_value(process, self.next_value);
                    recorded_write(client, recorder, process, &key, value).await
                }
            };
            (target.node.clone(), outcome)
        })
    }
}

/// Deletes `key` and records it: `ok` with whether it existed.
async fn recorded_delete(client: &KvClient, recorder: &Recorder, p: u64, key: &str) -> OpType {
    let call = client.delete(key.to_string());
    record_call(recorder, p, "delete", key, json!(null), call, |existed| {
        Completion::ok(json!(null), Some(json!({ "existed": existed })))
    })
    .await
    .0
}

/// Writes `value` to `key` and records it, with the key's new version.
async fn recorded_write(
    client: &KvClient,
    recorder: &Recorder,
    p: u64,
    key: &str,
    value: i64,
) -> OpType {
    let call = client.put(key.to_string(), value.to_string());
    record_call(recorder, p, "write", key, json!(value), call, |outcome| {
        Completion::ok(json!(value), Some(json!({"version": outcome.version})))
    })
    .await
    .0
}

/// Reads `key` and records it, with the value's version.
async fn read(
    client: &KvClient,
    recorder: &Recorder,
    process: u64,
    key: &str,
    final_read: bool,
) -> OpType {
    let call = client.get(key.to_string());
    record_read(recorder, process, key, final_read, call, |v| {
        (&v.value[..], v.version)
    })
    .await
}
