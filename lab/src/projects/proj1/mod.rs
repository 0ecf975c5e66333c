//! Project 1 in the lab: a cluster of cache nodes (`services/cache`), its workload, and what
//! the console shows of it (the ring view, first, then the cluster view; the node table's
//! figures).
//!
//! The workload: each client reads, writes and deletes keys of one cluster-wide key set, with
//! unique integer values so a read names the write it saw. A client is a `CacheClient` over
//! every node (through the client link proxies), each starting at a different node: any node
//! serves any key. A failed call is `info` (a write may have reached some replicas).

pub mod bench;

use std::sync::Arc;
use std::time::Duration;

use distlab_cache::client::CacheClient;
use rand::rngs::SmallRng;
use serde_json::json;

use super::ring_view::RingView;
use crate::console::views::{ClusterView, Figure, ProjectUi, detail_number};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{
    BoxFuture, Client, Completion, Driver, RegisterOp, Target, WorkloadSpec, final_reads_policy,
    node_addrs, record_call, record_read, unique_value,
};

pub const PROJECT: Project = Project {
    name: "proj1",
    title: "consistent-hashing cache (SWIM gossip, N/W/R replication, hinted handoff, memcached protocol)",
    service: "cache",
    roles: &[Role {
        name: "node",
        count: Count::Rest,
        id_prefix: "n",
        service: None,
        flags: &[],
    }],
    default_nodes: 5,
    peer_links: PeerLinks::TcpAndUdp,
    node_flags: &[],
    initial_members_flag: None,
    node_main: distlab_cache::node::main,
    check_node_flags: distlab_cache::node::check_flags,
    scaling: None,
    remove_member: Some(leave),
    workload: &Items,
    checks: &[
        CheckSpec::NoLostWrites,
        CheckSpec::KeyMovement,
        CheckSpec::HintsDrained,
        CheckSpec::Availability { min: None },
    ],
};

/// `remove-node` for a cache node: nothing to ask the others first. The supervisor stops it
/// with SIGTERM, and a cache node's graceful shutdown announces its leave over gossip: the
/// others drop it from the ring and stream its keys to their new replicas.
fn leave<'a>(_targets: &'a [Target], _id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async { Ok(()) })
}

/// The node table's figures and the views of a Project 1 console.
pub fn console() -> ProjectUi {
    ProjectUi {
        figures: &[
            Figure {
                header: "live",
                value: |n| detail_number(n, "live_members"),
            },
            Figure {
                header: "items",
                value: |n| detail_number(n, "items"),
            },
            Figure {
                header: "hints",
                value: |n| detail_number(n, "hints_waiting"),
            },
        ],
        quiet_events: &[],
        views: vec![Box::new(RingView), Box::new(ClusterView)],
    }
}

fn key(index: usize) -> String {
    format!("k{index}")
}

/// Reads, writes and deletes over the cache API.
pub struct Items;

impl Driver for Items {
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>> {
        anyhow::ensure!(!targets.is_empty(), "a workload needs at least one node");
        let shared = CacheClient::connect_lazy(&node_addrs(targets), spec.retry_policy())?;
        Ok((0..spec.clients)
            .map(|i| {
                Box::new(ItemClient {
                    client: shared.starting_at(i),
                    recorder: recorder.clone(),
                    spec: spec.clone(),
                    next_value: 0,
                }) as Box<dyn Client>
            })
            .collect())
    }

    fn final_reads<'a>(
        &'a self,
        spec: &'a WorkloadSpec,
        targets: &'a [Target],
        recorder: &'a Recorder,
        deadline: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let client =
                CacheClient::connect_lazy(&node_addrs(targets), final_reads_policy(deadline))?;
            for k in 0..spec.keys.max(1) {
                read(&client, recorder, FINAL_PROCESS, &key(k), true).await;
            }
            Ok(())
        })
    }
}

struct ItemClient {
    client: CacheClient,
    recorder: Arc<Recorder>,
    spec: WorkloadSpec,
    next_value: i64,
}

impl Client for ItemClient {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            let key = key(self.spec.next_key(rng));
            let node = self.client.node().to_string();
            let (client, recorder) = (&self.client, &self.recorder);
            let outcome = match self.spec.next_op(rng) {
                RegisterOp::Read => read(client, recorder, process, &key, false).await,
                RegisterOp::Delete => {
                    let call = client.delete(key.clone());
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
                RegisterOp::Write => {
                    self.next_value += 1;
                    let value = unique_value(process, self.next_value);
                    let call = client.set(key.clone(), value.to_string(), None);
                    record_call(recorder, process, "write", &key, json!(value), call, |()| {
                        Completion::ok(json!(value), None)
                    })
                    .await
                    .0
                }
            };
            (node, outcome)
        })
    }
}

/// Reads `key` and records it, with the value's version.
async fn read(
    client: &CacheClient,
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
