//! Project 3 in the lab: Kafka-lite (`services/log`): three controllers (Raft over the cluster
//! metadata), brokers, and two consumer nodes (`g1`, `g2`: members of consumer group `lab`
//! reading `events`); a producer workload, and the delivery checks.
//!
//! The workload: each client is a producer (idempotent unless `acks: 0`) sending messages
//! `PROCESS:SEQ` to topic `events` (3 partitions, replicated on up to 3 brokers,
//! `min.insync.replicas` 2 when there are 2 or more), each keyed by one of the spec's keys so
//! a key's messages share a partition. The client creates the topic if it is missing. At the
//! end the runner waits for the group to catch up (its committed offsets at every partition's
//! high watermark), records what each consumer node's journal says it read, and reads every
//! partition back: `log_delivery` checks the producers' promises, `group_delivery` the
//! group's.

pub mod bench;
pub mod isr_view;
pub mod lag_view;

use std::sync::Arc;
use std::time::Duration;

use distlab_log::broker::partition_info;
use distlab_log::cli::partition_for_key;
use distlab_log::client::{LogClient, Producer};
use distlab_log::consumer::journal;
use distlab_log::controller::client::ControllerClient;
use distlab_log::controller::service::refusal_kind;
use distlab_proto::log::v1 as pb;
use distlab_runtime::retry::RetryPolicy;
use rand::rngs::SmallRng;
use serde_json::json;

use crate::console::views::{ClusterView, Figure, ProjectUi, detail_number, detail_text};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{
    BoxFuture, Client, Completion, Driver, Target, WorkloadSpec, final_reads_policy, node_addrs,
    record_call,
};

pub const PROJECT: Project = Project {
    name: "proj3",
    title: "Kafka-lite (segmented log, ISR replication with acks, KRaft-style controller quorum, idempotent producer)",
    service: "log",
    roles: &[
        Role {
            name: "controller",
            count: Count::Fixed(3),
            id_prefix: "c",
            service: None,
            flags: &["--role", "controller"],
        },
        Role {
            name: "broker",
            count: Count::Rest,
            id_prefix: "b",
            service: None,
            flags: &["--role", "broker"],
        },
        Role {
            name: "consumer",
            count: Count::Fixed(2),
            id_prefix: "g",
            service: None,
            flags: &["--role", "consumer", "--group", GROUP, "--topic", TOPIC],
        },
    ],
    default_nodes: 8,
    peer_links: PeerLinks::Tcp,
    node_flags: &["--controllers", "c1,c2,c3"],
    initial_members_flag: None,
    node_main: distlab_log::node::main,
    check_node_flags: distlab_log::node::check_flags,
    scaling: None,
    remove_member: None,
    workload: &Producers,
    checks: &[
        CheckSpec::LogDelivery,
        CheckSpec::GroupDelivery,
        // The controllers' Raft: their `became_leader` events.
        CheckSpec::ElectionSafety,
        CheckSpec::Availability { min: None },
    ],
};

/// The workload's topic.
pub const TOPIC: &str = "events";
/// The consumer nodes' group.
pub const GROUP: &str = "lab";
const PARTITIONS: u32 = 3;

/// The node table's figures and the views of a Project 3 console (it opens on the ISR view).
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
                header: "epoch",
                value: |n| detail_number(n, "epoch"),
            },
            Figure {
                header: "leads",
                value: |n| {
                    n.detail
                        .get("partitions")
                        .and_then(|p| p.as_array())
                        .map_or("-".into(), |parts| {
                            parts
                                .iter()
                                .filter(|p| p["role"] == "leader")
                                .count()
                                .to_string()
                        })
                },
            },
            Figure {
                header: "meta v",
                value: |n| detail_number(n, "metadata_version"),
            },
            Figure {
                header: "gen",
                value: |n| detail_number(n, "generation"),
            },
            Figure {
                header: "lag",
                value: |n| detail_number(n, "total_lag"),
            },
        ],
        quiet_events: &[],
        views: vec![
            Box::new(isr_view::IsrView),
            Box::new(lag_view::LagView),
            Box::new(ClusterView),
        ],
    }
}

/// `0`, `1` or `all` (the default) from a workload spec.
fn acks(spec: &WorkloadSpec) -> anyhow::Result<(pb::Acks, &'static str)> {
    match spec.acks.as_deref().unwrap_or("all") {
        "all" | "-1" => Ok((pb::Acks::All, "all")),
        "1" => Ok((pb::Acks::Leader, "1")),
        "0" => Ok((pb::Acks::None, "0")),
        other => anyhow::bail!("workload acks {other:?}: expected 0, 1 or all"),
    }
}

fn with_role(targets: &[Target], role: &str) -> Vec<Target> {
    targets.iter().filter(|t| t.role == role).cloned().collect()
}

/// The producer workload over the brokers.
pub struct Producers;

impl Driver for Producers {
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>> {
        let (acks, acks_name) = acks(spec)?;
        let brokers = with_role(targets, "broker");
        let controllers = with_role(targets, "controller");
        anyhow::ensure!(
            !brokers.is_empty(),
            "the workload needs at least one broker"
        );
        let policy = RetryPolicy {
            max_attempts: 50,
            attempt_timeout: (spec.timeout / 2).max(Duration::from_millis(200)),
            max_backoff: Duration::from_millis(200),
            ..spec.retry_policy()
        };
        let client = LogClient::connect_lazy(&node_addrs(&brokers), policy.clone())?;
        let controller = ControllerClient::connect_lazy(&node_addrs(&controllers), policy)?;
        (0..spec.clients)
            .map(|_| {
                Ok(Box::new(ProducerClient {
                    client: client.clone(),
                    controller: controller.clone(),
                    brokers: brokers.len() as u32,
                    recorder: recorder.clone(),
                    spec: spec.clone(),
                    acks,
                    acks_name,
                    producer: None,
                    seq: 0,
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
            let policy = RetryPolicy {
                max_attempts: 200,
                ..final_reads_policy(deadline)
            };
            let client =
                LogClient::connect_lazy(&node_addrs(&with_role(targets, "broker")), policy)?;
            let _ = client.refresh_metadata().await;
            let consumers = with_role(targets, "consumer");
            if !consumers.is_empty() {
                record_call(
                    recorder,
                    FINAL_PROCESS,
                    "drain",
                    GROUP,
                    json!(null),
                    drain_group(&client, deadline),
                    |ends| Completion::ok(ends, Some(json!({"final": true}))),
                )
                .await;
                record_journals(recorder, &consumers);
            }
            for partition in 0..PARTITIONS {
                let key = format!("{TOPIC}/{partition}");
                record_call(
                    recorder,
                    FINAL_PROCESS,
                    "read",
                    &key,
                    json!(null),
                    read_partition(&client, partition),
                    |messages| Completion::ok(json!(messages), Some(json!({"final": true}))),
                )
                .await;
            }
            Ok(())
        })
    }
}

/// Waits (up to `deadline`) until group [`GROUP`] has committed every partition of `events`
/// up to its high watermark; its committed offsets and the high watermarks.
async fn drain_group(
    client: &LogClient,
    deadline: Duration,
) -> Result<serde_json::Value, tonic::Status> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let group = client.describe_group(GROUP).await?;
        let mut committed = serde_json::Map::new();
        let mut ends = serde_json::Map::new();
        let mut behind = 0;
        for partition in 0..PARTITIONS {
            let key = format!("{TOPIC}/{partition}");
            let end = client.list_offsets(TOPIC, partition).await?.high_watermark;
            let done = group
                .partitions
                .iter()
                .find(|p| p.topic == TOPIC && p.partition == partition)
                .and_then(|p| p.committed);
            if done.unwrap_or(0) < end {
                behind += 1;
            }
            committed.insert(key.clone(), json!(done));
            ends.insert(key, json!(end));
        }
        if behind == 0 {
            return Ok(json!({"committed": committed, "high_watermark": ends}));
        }
        if tokio::time::Instant::now() >= until {
            return Err(tonic::Status::deadline_exceeded(format!(
                "group {GROUP} did not catch up: committed {} of high watermarks {}",
                serde_json::Value::Object(committed),
                serde_json::Value::Object(ends)
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Records what the consumer nodes' journals say the group read: one `consumed` operation
/// per partition (value: its messages in the order they were read, by whichever member;
/// meta: the members' nodes, the largest lag a read found, and the longest time between two
/// reads, which under a steady workload is how long the partition went without a reader). A
/// journal that cannot be read is a failed `consumed` operation keyed by its node; a missing
/// one (the node never read anything) records nothing.
fn record_journals(recorder: &Recorder, consumers: &[Target]) {
    let mut entries: Vec<(String, journal::Entry)> = Vec::new();
    for consumer in consumers {
        let path = consumer.data_dir.join(journal::FILE);
        if !path.exists() {
            continue;
        }
        match journal::read(&path) {
            Ok(read) => entries.extend(read.into_iter().map(|e| (consumer.node.clone(), e))),
            Err(e) => {
                let key = Some(consumer.node.as_str());
                recorder.record(
                    FINAL_PROCESS,
                    OpType::Invoke,
                    "consumed",
                    key,
                    json!(null),
                    None,
                );
                recorder.record(
                    FINAL_PROCESS,
                    OpType::Fail,
                    "consumed",
                    key,
                    json!(null),
                    Some(format!("{e:#}")),
                );
            }
        }
    }
    entries.sort_by_key(|(_, e)| e.at_ms);
    let mut by_partition: std::collections::BTreeMap<&str, Vec<&(String, journal::Entry)>> =
        std::collections::BTreeMap::new();
    for entry in &entries {
        by_partition
            .entry(&entry.1.partition)
            .or_default()
            .push(entry);
    }
    for (partition, reads) in by_partition {
        let values: Vec<&str> = reads
            .iter()
            .flat_map(|(_, e)| e.values.iter().map(String::as_str))
            .collect();
        let nodes: std::collections::BTreeSet<&str> =
            reads.iter().map(|(node, _)| node.as_str()).collect();
        let max_lag = reads.iter().map(|(_, e)| e.lag).max().unwrap_or(0);
        let longest_gap_ms = reads
            .windows(2)
            .map(|w| w[1].1.at_ms - w[0].1.at_ms)
            .max()
            .unwrap_or(0);
        recorder.record(
            FINAL_PROCESS,
            OpType::Invoke,
            "consumed",
            Some(partition),
            json!(null),
            None,
        );
        recorder.record_with(
            FINAL_PROCESS,
            OpType::Ok,
            "consumed",
            Some(partition),
            json!(values),
            None,
            Some(json!({
                "nodes": nodes,
                "max_lag": max_lag,
                "longest_gap_ms": longest_gap_ms,
                "final": true,
            })),
        );
    }
}

/// Every message of `events`/`partition` up to its high watermark, in offset order.
async fn read_partition(client: &LogClient, partition: u32) -> Result<Vec<String>, tonic::Status> {
    let records = client.read_all(TOPIC, partition).await?;
    Ok(records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect())
}

/// One producer.
struct ProducerClient {
    client: LogClient,
    controller: ControllerClient,
    brokers: u32,
    recorder: Arc<Recorder>,
    spec: WorkloadSpec,
    acks: pb::Acks,
    acks_name: &'static str,
    /// Made on the first operation (it asks a broker for a producer id).
    producer: Option<Producer>,
    seq: u64,
}

impl ProducerClient {
    /// Creates the topic unless it exists, then the producer.
    async fn start(&mut self) -> Result<(), tonic::Status> {
        let replication_factor = self.brokers.min(3);
        let created = self
            .controller
            .create_topic(pb::CreateTopicRequest {
                name: TOPIC.into(),
                partitions: PARTITIONS,
                replication_factor,
                min_insync_replicas: if replication_factor >= 2 { 2 } else { 1 },
                // The controllers' default (`--unclean-leader-election` as a node flag).
                unclean_leader_election: None,
            })
            .await;
        match created {
            Ok(_) => {}
            Err(status) if refusal_kind(&status) == Some("topic_exists") => {}
            Err(status) => return Err(status),
        }
        self.client.refresh_metadata().await?;
        let idempotent = self.acks != pb::Acks::None;
        self.producer = Some(Producer::new(self.client.clone(), self.acks, idempotent).await?);
        Ok(())
    }

    /// The broker that leads `partition`, as this client's metadata says.
    fn leader(&self, partition: u32) -> String {
        partition_info(&self.client.cached_metadata(), TOPIC, partition)
            .and_then(|p| p.leader.clone())
            .unwrap_or_else(|| "-".into())
    }
}

impl Client for ProducerClient {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            if self.producer.is_none()
                && let Err(status) = self.start().await
            {
                tracing::debug!(error = %status.message(), "the producer could not start yet");
                return ("-".to_string(), OpType::Fail);
            }
            let key = format!("k{}", self.spec.next_key(rng));
            let partition = partition_for_key(key.as_bytes(), PARTITIONS);
            self.seq += 1;
            let message = format!("{process}:{}", self.seq);
            let node = self.leader(partition);
            let producer = self.producer.as_ref().expect("started");
            let acks = self.acks_name;
            let (kind, _) = record_call(
                &self.recorder,
                process,
                "send",
                &format!("{TOPIC}/{partition}"),
                json!(message),
                producer.send(
                    TOPIC,
                    partition,
                    &[(Some(key.as_bytes()), message.as_bytes())],
                ),
                |(offset, _)| {
                    Completion::ok(
                        json!(message),
                        Some(json!({"offset": offset, "acks": acks})),
                    )
                },
            )
            .await;
            (node, kind)
        })
    }
}
