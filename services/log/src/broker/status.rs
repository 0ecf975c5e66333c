//! What a broker shows the lab (`/status` detail): per partition it replicates, its role,
//! leader and epoch, replicas and ISR, its log's start, end and high watermark, and on a
//! leader each follower's progress (what the ISR view draws); and the consumer groups it
//! coordinates, with members, assignment, committed offsets and lag (the lag view).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use distlab_runtime::admin::NodeStatus;
use serde_json::{Value, json};

use super::Broker;
use super::replica::Role;

pub struct BrokerStatus {
    pub broker: Arc<Broker>,
    /// Fixed at start: log and replication settings.
    pub config: Value,
}

impl NodeStatus for BrokerStatus {
    fn role(&self) -> String {
        "broker".to_string()
    }

    fn detail(&self) -> Value {
        let now = self.broker.mono_ms();
        let metadata = self.broker.metadata();
        let partitions: Vec<Value> = self
            .broker
            .replicas()
            .into_iter()
            .map(|((topic, partition), replica)| {
                let r = replica.lock().unwrap();
                let info = super::partition_info(&metadata, &topic, partition);
                let ends = r.ends();
                let (role, followers) = match r.role() {
                    Role::Leader { state, .. } => {
                        let followers: serde_json::Map<String, Value> = state
                            .progress()
                            .iter()
                            .map(|(name, p)| {
                                (
                                    name.clone(),
                                    json!({
                                        "log_end": p.log_end,
                                        "in_sync": state.isr().contains(name),
                                        "caught_up_ms_ago": now - p.last_caught_up_ms,
                                        "fetched_ms_ago": p.last_fetch_ms.map(|t| now - t),
                                    }),
                                )
                            })
                            .collect();
                        ("leader", Some(followers))
                    }
                    Role::Follower { .. } => ("follower", None),
                    Role::Offline { .. } => ("offline", None),
                };
                json!({
                    "name": super::partition_name(&topic, partition),
                    "topic": topic,
                    "partition": partition,
                    "role": role,
                    "leader": info.and_then(|p| p.leader.clone()),
                    "leader_epoch": r.leader_epoch(),
                    "replicas": info.map(|p| p.replicas.clone()),
                    "isr": info.map(|p| p.isr.clone()),
                    "log_start": r.log().log_start_offset(),
                    "log_end": ends.log_end,
                    "high_watermark": ends.high_watermark,
                    "segments": r.log().segment_count(),
                    "bytes": r.log().size_bytes(),
                    "followers": followers,
                })
            })
            .collect();
        let groups: Vec<Value> = self
            .broker
            .coordinator
            .describe_all(&self.broker)
            .iter()
            .map(group_detail)
            .collect();
        json!({
            "service": "broker",
            "groups": groups,
            "epoch": self.broker.epoch.load(Ordering::Relaxed),
            "metadata_version": metadata.version,
            "controller": metadata.controller,
            "partitions": partitions,
            "config": self.config,
        })
    }
}

/// One coordinated group as JSON: lag per partition (`topic/partition`) and in total.
fn group_detail(g: &distlab_proto::log::v1::GroupDescription) -> Value {
    let lag: serde_json::Map<String, Value> = g
        .partitions
        .iter()
        .map(|p| {
            (
                super::partition_name(&p.topic, p.partition),
                json!({
                    "committed": p.committed,
                    "high_watermark": p.high_watermark,
                    "lag": p.lag,
                    "member": p.member_id,
                }),
            )
        })
        .collect();
    let members: serde_json::Map<String, Value> = g
        .members
        .iter()
        .map(|m| {
            let assigned: Vec<String> = m
                .assignment
                .iter()
                .map(|p| super::partition_name(&p.topic, p.partition))
                .collect();
            (
                m.member_id.clone(),
                json!({"assignment": assigned, "silent_ms": m.silent_ms}),
            )
        })
        .collect();
    json!({
        "group": g.group,
        "state": g.state,
        "generation": g.generation,
        "assignor": g.assignor,
        "members": members,
        "partitions": lag,
        "total_lag": g.partitions.iter().filter_map(|p| p.lag).sum::<u64>(),
        "rebalances": g.rebalances,
        "last_rebalance": g.last_rebalance.as_ref().map(|r| json!({
            "generation": r.generation,
            "reason": r.reason,
            "took_ms": r.took_ms,
            "members": r.members,
        })),
    })
}
