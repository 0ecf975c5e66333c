//! The group coordinator: every broker runs one, and it serves the consumer groups whose
//! partition of `__consumer_offsets` this broker leads (partition = FNV-1a of the group name
//! modulo the topic's partition count, as Kafka does with its own hash).
//!
//! - Membership and generations are the pure [`crate::group::Group`], one per group, driven
//!   here by the requests and by a timer (sessions and rebalance timeouts). They live in
//!   memory only: a new coordinator starts with no members, and the members it refuses find
//!   it and join again.
//! - Committed offsets are records in the group's `__consumer_offsets` partition, appended
//!   with acks=all before a commit is answered. A broker that becomes that partition's
//!   leader replays the partition (its log is the leader's, so complete) before it answers
//!   for those groups: committed offsets survive a coordinator failover. (There is no log
//!   compaction: the partition keeps every commit until retention removes old segments.)
//! - Lag: the coordinator asks the leaders of the groups' partitions for their high
//!   watermarks every second; lag is high watermark minus committed offset.
//!
//! Rebalances, expiries and coordinator moves are logged as events for the lab's timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use distlab_proto::log::v1 as pb;
use distlab_runtime::clock::Every;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::replica::Replica;
use super::service::{append, refusal};
use super::{Broker, partition_info, partition_name};
use crate::group::{Assignor, Group, GroupError, GroupState, TopicPartition};
use crate::storage::batch::{Batch, ProducerStamp, split};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Its partition count when a broker creates it (on the first FindCoordinator).
pub const OFFSETS_PARTITIONS: u32 = 3;

/// The coordinator's timer runs every 100 ms; a gap of more than this between two runs of
/// the coordinator means it was away (its process stopped, or starved), and its groups
/// excuse their members for that time.
const AWAY_AFTER_MS: i64 = 1_000;

/// How long an offset commit waits for the ISR to hold it.
const COMMIT_WAIT: Duration = Duration::from_secs(5);

/// Session timeouts a member may ask for.
const SESSION_TIMEOUTS_MS: std::ops::RangeInclusive<u32> = 100..=300_000;

/// The `__consumer_offsets` partition holding `group` (of `partitions`).
pub fn offsets_partition(group: &str, partitions: u32) -> u32 {
    (distlab_runtime::hash::fnv1a(group.bytes()) % u64::from(partitions.max(1))) as u32
}

/// One committed offset as stored in `__consumer_offsets` (key `group/topic/partition`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct CommitRecord {
    group: String,
    topic: String,
    partition: u32,
    offset: u64,
    member: String,
    generation: u32,
}

/// A group's committed offset and where its record sits in `__consumer_offsets` (the later
/// record wins, whatever order commits were answered in).
#[derive(Debug, Clone, Copy)]
struct Committed {
    offset: u64,
    at: u64,
}

/// The groups of one `__consumer_offsets` partition this broker leads, as of one leader
/// epoch of it.
struct Shard {
    leader_epoch: u32,
    /// Goes into member ids: unique per broker and leader epoch.
    incarnation: String,
    groups: BTreeMap<String, Group>,
    committed: BTreeMap<String, BTreeMap<TopicPartition, Committed>>,
}

impl Shard {
    fn remember(&mut self, record: CommitRecord, at: u64) {
        let offsets = self.committed.entry(record.group).or_default();
        let tp = TopicPartition::new(record.topic, record.partition);
        if offsets.get(&tp).is_none_or(|c| c.at <= at) {
            offsets.insert(
                tp,
                Committed {
                    offset: record.offset,
                    at,
                },
            );
        }
    }

    /// `group`, made if this coordinator has not seen it since it loaded.
    fn group(&mut self, id: &str, assignor: Assignor, rebalance_timeout_ms: i64) -> &mut Group {
        self.groups
            .entry(id.to_string())
            .or_insert_with(|| Group::new(id, assignor, rebalance_timeout_ms, &self.incarnation))
    }
}

/// Reads a `__consumer_offsets` partition from its start: the committed offsets it holds.
fn load(replica: &Mutex<Replica>, leader_epoch: u32, me: &str) -> Result<Shard, Status> {
    let mut shard = Shard {
        leader_epoch,
        incarnation: format!("{me}e{leader_epoch}"),
        groups: BTreeMap::new(),
        committed: BTreeMap::new(),
    };
    let (name, mut offset) = {
        let r = replica.lock().unwrap();
        (r.name.clone(), r.log().log_start_offset())
    };
    let mut records = 0usize;
    loop {
        let chunk = {
            let r = replica.lock().unwrap();
            let end = r.log().log_end_offset();
            if offset >= end {
                break;
            }
            r.log().read(offset, 1 << 20, end)
        }
        .map_err(|e| Status::internal(format!("loading {name} from offset {offset}: {e}")))?;
        let batches = split(Bytes::from(chunk))
            .map_err(|e| Status::data_loss(format!("{name} at offset {offset}: {e}")))?;
        let before = offset;
        for record in batches.iter().flat_map(Batch::records) {
            if record.offset < offset {
                continue;
            }
            offset = record.offset + 1;
            match serde_json::from_slice::<CommitRecord>(&record.value) {
                Ok(commit) => {
                    shard.remember(commit, record.offset);
                    records += 1;
                }
                Err(e) => tracing::warn!(
                    partition = name,
                    offset = record.offset,
                    error = %e,
                    "skipping a record that is not an offset commit"
                ),
            }
        }
        if offset == before {
            break;
        }
    }
    tracing::info!(
        event = "coordinator_loaded",
        partition = name,
        leader_epoch,
        records,
        groups = shard.committed.len(),
        "{name}: coordinating its groups from epoch {leader_epoch} ({records} committed offsets replayed)"
    );
    Ok(shard)
}

fn group_refusal(e: &GroupError) -> Status {
    let code = match e {
        GroupError::InconsistentAssignor { .. } => tonic::Code::InvalidArgument,
        _ => tonic::Code::FailedPrecondition,
    };
    refusal(code, e.kind(), e.to_string())
}

fn invalid_group(message: String) -> Status {
    refusal(tonic::Code::InvalidArgument, "invalid_group", message)
}

fn check_group_name(group: &str) -> Result<(), Status> {
    if group.is_empty() || group.len() > 249 {
        return Err(invalid_group(format!(
            "a group name is 1 to 249 characters; {group:?} has {}",
            group.len()
        )));
    }
    Ok(())
}

/// Partition counts of every topic in the metadata (what the assignors split).
fn topic_counts(metadata: &pb::ClusterMetadata) -> BTreeMap<String, u32> {
    metadata
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.len() as u32))
        .collect()
}

/// Logs what changed in `group` since `before` (state, generation); true if anything did.
fn observe(group: &Group, before: (GroupState, u32)) -> bool {
    let after = (group.state(), group.generation());
    if after == before {
        return false;
    }
    let id = &group.id;
    match after.0 {
        GroupState::PreparingRebalance if before.0 != GroupState::PreparingRebalance => {
            let reason = group.rebalancing().map_or("", |(_, r)| r.as_str());
            tracing::info!(
                event = "rebalance_started",
                group = id,
                generation = before.1,
                reason,
                "group {id}: rebalancing ({reason})"
            );
        }
        GroupState::Stable => {
            if let Some(r) = group.last_rebalance() {
                tracing::info!(
                    event = "rebalance_completed",
                    group = id,
                    generation = r.generation,
                    took_ms = r.took_ms,
                    members = r.members,
                    reason = r.reason,
                    "group {id}: generation {} with {} members after {} ms ({})",
                    r.generation,
                    r.members,
                    r.took_ms,
                    r.reason
                );
            }
        }
        GroupState::Empty => {
            tracing::info!(event = "group_empty", group = id, "group {id}: no members")
        }
        GroupState::PreparingRebalance => {}
    }
    true
}

/// The coordinator's state on one broker (held by [`Broker`]).
pub struct Coordinator {
    /// Per `__consumer_offsets` partition this broker leads.
    shards: Mutex<BTreeMap<u32, Shard>>,
    /// Bumped whenever a group's state or generation changes (joins wait on it).
    changed: watch::Sender<u64>,
    /// The high watermarks of the groups' partitions, as last asked.
    high_watermarks: Mutex<BTreeMap<TopicPartition, u64>>,
    /// When the coordinator last ran (its timer or a request), on the broker's clock.
    last_ran_ms: AtomicI64,
}

impl Default for Coordinator {
    fn default() -> Self {
        Self {
            shards: Mutex::default(),
            changed: watch::channel(0).0,
            high_watermarks: Mutex::default(),
            last_ran_ms: AtomicI64::new(-1),
        }
    }
}

impl Coordinator {
    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Notes that the coordinator runs now (with `shards` locked) and returns the time. After
    /// an absence (see [`AWAY_AFTER_MS`]) no member could reach it, so its groups do not count
    /// that time against sessions or rebalance timeouts: a coordinator that was paused does
    /// not expire its whole groups when it is back (nor, still believing it leads, before it
    /// learns that another broker took its groups over).
    fn running(&self, broker: &Broker, shards: &mut BTreeMap<u32, Shard>) -> i64 {
        let now = broker.mono_ms();
        let last = self.last_ran_ms.swap(now, Ordering::Relaxed);
        let away = now - last;
        if last >= 0 && away > AWAY_AFTER_MS {
            let groups: Vec<&mut Group> = shards
                .values_mut()
                .flat_map(|s| s.groups.values_mut())
                .collect();
            if !groups.is_empty() {
                tracing::info!(
                    event = "coordinator_was_away",
                    away_ms = away,
                    groups = groups.len(),
                    "the coordinator did not run for {away} ms (stopped or starved): that \
                     time counts against no session or rebalance of its {} group(s)",
                    groups.len()
                );
            }
            for group in groups {
                group.excuse_absence(away, now);
            }
        }
        now
    }

    /// Runs `f` on the shard holding `group`, if this broker coordinates it (loading the
    /// shard when it leads a new epoch of the partition); the partition and `f`'s result.
    fn with_shard<T>(
        &self,
        broker: &Broker,
        group: &str,
        f: impl FnOnce(&mut Shard) -> T,
    ) -> Result<(u32, T), Status> {
        let metadata = broker.metadata();
        let Some(topic) = metadata.topics.iter().find(|t| t.name == OFFSETS_TOPIC) else {
            return Err(refusal(
                tonic::Code::Unavailable,
                "coordinator_not_available",
                format!("there is no {OFFSETS_TOPIC} yet: ask FindCoordinator"),
            ));
        };
        let p = offsets_partition(group, topic.partitions.len() as u32);
        let replica = broker.replica(OFFSETS_TOPIC, p);
        let epoch = replica
            .as_ref()
            .and_then(|r| r.lock().unwrap().leader_epochs())
            .map(|(epoch, _)| epoch);
        let (Some(replica), Some(epoch)) = (replica, epoch) else {
            let leader = topic.partitions[p as usize]
                .leader
                .as_deref()
                .unwrap_or("nobody (offline)");
            return Err(refusal(
                tonic::Code::FailedPrecondition,
                "not_coordinator",
                format!(
                    "{} does not coordinate group {group:?}: {} is led by {leader}",
                    broker.me,
                    partition_name(OFFSETS_TOPIC, p)
                ),
            ));
        };
        let mut shards = self.shards.lock().unwrap();
        self.running(broker, &mut shards);
        if shards.get(&p).is_none_or(|s| s.leader_epoch != epoch) {
            shards.insert(p, load(&replica, epoch, &broker.me)?);
        }
        Ok((p, f(shards.get_mut(&p).expect("loaded"))))
    }

    /// FindCoordinator: the leader of `group`'s offsets partition; creates the offsets topic
    /// the first time.
    pub async fn find(
        &self,
        broker: &Broker,
        group: &str,
    ) -> Result<pb::FindCoordinatorResponse, Status> {
        check_group_name(group)?;
        let metadata = broker.metadata();
        let not_available =
            |why: String| refusal(tonic::Code::Unavailable, "coordinator_not_available", why);
        let Some(topic) = metadata.topics.iter().find(|t| t.name == OFFSETS_TOPIC) else {
            let live = metadata.brokers.iter().filter(|b| !b.fenced).count() as u32;
            if live == 0 {
                return Err(not_available("no live brokers yet".into()));
            }
            let created = broker
                .controller
                .create_topic(pb::CreateTopicRequest {
                    name: OFFSETS_TOPIC.to_string(),
                    partitions: OFFSETS_PARTITIONS,
                    replication_factor: live.min(3),
                    min_insync_replicas: 1,
                    // Committed offsets are never given up for availability.
                    unclean_leader_election: Some(false),
                })
                .await;
            match created {
                Ok(_) => tracing::info!(
                    event = "offsets_topic_created",
                    replication_factor = live.min(3),
                    "created {OFFSETS_TOPIC} for group {group:?}"
                ),
                Err(status)
                    if crate::controller::service::refusal_kind(&status)
                        == Some("topic_exists") => {}
                Err(status) => return Err(status),
            }
            return Err(not_available(format!(
                "{OFFSETS_TOPIC} is being created: ask again"
            )));
        };
        let p = offsets_partition(group, topic.partitions.len() as u32);
        let Some(leader) = topic.partitions[p as usize].leader.clone() else {
            return Err(not_available(format!(
                "{} is offline",
                partition_name(OFFSETS_TOPIC, p)
            )));
        };
        let address = metadata
            .brokers
            .iter()
            .find(|b| b.name == leader)
            .map(|b| b.address.clone())
            .unwrap_or_default();
        Ok(pb::FindCoordinatorResponse {
            coordinator: leader,
            address,
            offsets_partition: p,
        })
    }

    /// JoinGroup: joins and waits until the member's generation forms.
    pub async fn join(
        &self,
        broker: &Broker,
        request: pb::JoinGroupRequest,
    ) -> Result<pb::JoinGroupResponse, Status> {
        check_group_name(&request.group)?;
        if request.topics.is_empty() {
            return Err(invalid_group("a member must subscribe to a topic".into()));
        }
        if !SESSION_TIMEOUTS_MS.contains(&request.session_timeout_ms) {
            return Err(invalid_group(format!(
                "session timeout {} ms is outside {} to {} ms",
                request.session_timeout_ms,
                SESSION_TIMEOUTS_MS.start(),
                SESSION_TIMEOUTS_MS.end()
            )));
        }
        let assignor = if request.assignor.is_empty() {
            Assignor::Range
        } else {
            Assignor::parse(&request.assignor).map_err(invalid_group)?
        };
        let rebalance_timeout_ms = match request.rebalance_timeout_ms {
            0 => request.session_timeout_ms,
            ms => ms.min(*SESSION_TIMEOUTS_MS.end()),
        };
        let counts = topic_counts(&broker.metadata());
        let mut changes = self.changed.subscribe();
        let (_, joined) = self.with_shard(broker, &request.group, |shard| {
            let group = shard.group(&request.group, assignor, rebalance_timeout_ms.into());
            group.adopt(assignor, rebalance_timeout_ms.into())?;
            let before = (group.state(), group.generation());
            let now = broker.mono_ms();
            let member = group.join(
                &request.member_id,
                &request.client_id,
                request.topics.iter().cloned().collect(),
                request.session_timeout_ms.into(),
                now,
            )?;
            group.tick(now, &counts);
            observe(group, before);
            Ok::<_, GroupError>(member)
        })?;
        let member = joined.map_err(|e| group_refusal(&e))?;
        self.notify();
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(rebalance_timeout_ms.into())
            + Duration::from_secs(1);
        loop {
            let (_, answer) = self.with_shard(broker, &request.group, |shard| {
                shard
                    .groups
                    .get(&request.group)
                    .map(|g| (g.joined(&member), g.members().contains_key(&member)))
            })?;
            match answer {
                Some((Some(joined), _)) => {
                    return Ok(pb::JoinGroupResponse {
                        member_id: joined.member_id,
                        generation: joined.generation,
                        members: joined.members,
                        assignor: joined.assignor.to_string(),
                    });
                }
                Some((None, true)) => {}
                _ => return Err(group_refusal(&GroupError::UnknownMember(member))),
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return Err(group_refusal(&GroupError::RebalanceInProgress)),
            }
        }
    }

    /// Runs one membership check on `group` (sync, heartbeat, leave, commit), logging what
    /// changed; the group's offsets partition and the check's answer.
    fn on_member<T>(
        &self,
        broker: &Broker,
        group: &str,
        member: &str,
        f: impl FnOnce(&mut Group, i64) -> Result<T, GroupError>,
    ) -> Result<(u32, T), Status> {
        let (partition, result) = self.with_shard(broker, group, |shard| {
            let Some(g) = shard.groups.get_mut(group) else {
                return (Err(GroupError::UnknownMember(member.to_string())), false);
            };
            let before = (g.state(), g.generation());
            let result = f(g, broker.mono_ms());
            (result, observe(g, before))
        })?;
        let (result, changed) = result;
        if changed {
            self.notify();
        }
        Ok((partition, result.map_err(|e| group_refusal(&e))?))
    }

    pub fn sync(
        &self,
        broker: &Broker,
        request: &pb::SyncGroupRequest,
    ) -> Result<pb::SyncGroupResponse, Status> {
        let (_, partitions) =
            self.on_member(broker, &request.group, &request.member_id, |g, now| {
                g.sync(&request.member_id, request.generation, now)
            })?;
        Ok(pb::SyncGroupResponse {
            assignment: partitions.into_iter().map(Into::into).collect(),
        })
    }

    pub fn heartbeat(&self, broker: &Broker, request: &pb::HeartbeatRequest) -> Result<(), Status> {
        self.on_member(broker, &request.group, &request.member_id, |g, now| {
            g.heartbeat(&request.member_id, request.generation, now)
        })
        .map(|(_, ())| ())
    }

    pub fn leave(&self, broker: &Broker, request: &pb::LeaveGroupRequest) -> Result<(), Status> {
        self.on_member(broker, &request.group, &request.member_id, |g, now| {
            g.leave(&request.member_id, now)
        })
        .map(|(_, ())| ())
    }

    /// OffsetCommit: checks the member's generation, appends the offsets to the group's
    /// partition with acks=all, then answers.
    pub async fn commit(
        &self,
        broker: &Broker,
        request: pb::OffsetCommitRequest,
    ) -> Result<(), Status> {
        if request.offsets.is_empty() {
            return Ok(());
        }
        check_group_name(&request.group)?;
        let (partition, ()) =
            self.on_member(broker, &request.group, &request.member_id, |g, now| {
                g.check_commit(&request.member_id, request.generation, now)
            })?;
        let records: Vec<(String, CommitRecord)> = request
            .offsets
            .iter()
            .map(|o| {
                (
                    format!("{}/{}/{}", request.group, o.topic, o.partition),
                    CommitRecord {
                        group: request.group.clone(),
                        topic: o.topic.clone(),
                        partition: o.partition,
                        offset: o.offset,
                        member: request.member_id.clone(),
                        generation: request.generation,
                    },
                )
            })
            .collect();
        let values: Vec<Vec<u8>> = records
            .iter()
            .map(|(_, r)| serde_json::to_vec(r).expect("a commit record serializes"))
            .collect();
        let now = distlab_runtime::clock::wall_ms();
        let batch = Batch::build(
            records
                .iter()
                .zip(&values)
                .map(|((key, _), value)| (Some(key.as_bytes()), value.as_slice(), now)),
            ProducerStamp::NONE,
        );
        let appended = append(broker, OFFSETS_TOPIC, partition, &batch, true, COMMIT_WAIT).await?;
        self.with_shard(broker, &request.group, |shard| {
            for (i, (_, record)) in records.into_iter().enumerate() {
                shard.remember(record, appended.base_offset + i as u64);
            }
        })?;
        Ok(())
    }

    pub fn fetch_offsets(
        &self,
        broker: &Broker,
        request: &pb::OffsetFetchRequest,
    ) -> Result<pb::OffsetFetchResponse, Status> {
        check_group_name(&request.group)?;
        let wanted: BTreeSet<TopicPartition> = request.partitions.iter().map(Into::into).collect();
        let (_, offsets) = self.with_shard(broker, &request.group, |shard| {
            shard
                .committed
                .get(&request.group)
                .into_iter()
                .flatten()
                .filter(|(tp, _)| wanted.is_empty() || wanted.contains(*tp))
                .map(|(tp, c)| pb::CommittedOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: c.offset,
                })
                .collect()
        })?;
        Ok(pb::OffsetFetchResponse { offsets })
    }

    /// DescribeGroup: a group this broker coordinates (state, members, lag).
    pub fn describe(&self, broker: &Broker, group: &str) -> Result<pb::GroupDescription, Status> {
        check_group_name(group)?;
        let hws = self.high_watermarks.lock().unwrap().clone();
        let (_, description) =
            self.with_shard(broker, group, |shard| describe(broker, shard, group, &hws))?;
        Ok(description)
    }

    /// Every group this broker coordinates now, described (for `/status` and ListGroups).
    pub fn describe_all(&self, broker: &Broker) -> Vec<pb::GroupDescription> {
        let hws = self.high_watermarks.lock().unwrap().clone();
        let shards = self.shards.lock().unwrap();
        shards
            .values()
            .flat_map(|shard| {
                let names: BTreeSet<&String> =
                    shard.groups.keys().chain(shard.committed.keys()).collect();
                names
                    .into_iter()
                    .map(|g| describe(broker, shard, g, &hws))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The timer: drops the shards this broker no longer leads, expires sessions and
    /// completes rebalances.
    fn tick(&self, broker: &Broker) {
        let counts = topic_counts(&broker.metadata());
        let mut changed = false;
        let mut shards = self.shards.lock().unwrap();
        let now = self.running(broker, &mut shards);
        shards.retain(|p, shard| {
            let leads = broker
                .replica(OFFSETS_TOPIC, *p)
                .and_then(|r| r.lock().unwrap().leader_epochs())
                .is_some_and(|(epoch, _)| epoch == shard.leader_epoch);
            if !leads {
                let name = partition_name(OFFSETS_TOPIC, *p);
                tracing::info!(
                    event = "coordinator_resigned",
                    partition = name,
                    groups = shard.groups.len(),
                    "{name}: no longer its leader; its groups go to the new one"
                );
                changed = true;
            }
            leads
        });
        for shard in shards.values_mut() {
            for group in shard.groups.values_mut() {
                let before = (group.state(), group.generation());
                for member in group.tick(now, &counts) {
                    tracing::info!(
                        event = "member_removed",
                        group = group.id,
                        member,
                        "group {}: removed {member} (session expired or did not rejoin)",
                        group.id
                    );
                }
                changed |= observe(group, before);
            }
        }
        drop(shards);
        if changed {
            self.notify();
        }
    }

    /// Asks for the high watermarks of every partition the groups read or committed: from
    /// this broker's replica when it leads, else from the leader.
    async fn refresh_high_watermarks(&self, broker: &Broker) {
        let wanted: BTreeSet<TopicPartition> = {
            let shards = self.shards.lock().unwrap();
            shards
                .values()
                .flat_map(|s| {
                    let assigned = s
                        .groups
                        .values()
                        .flat_map(|g| g.assignment().values().flatten().cloned());
                    let committed = s.committed.values().flat_map(|c| c.keys().cloned());
                    assigned.chain(committed).collect::<Vec<_>>()
                })
                .collect()
        };
        let metadata = broker.metadata();
        let mut found = BTreeMap::new();
        for tp in wanted {
            if let Some(r) = broker.replica(&tp.topic, tp.partition) {
                let r = r.lock().unwrap();
                if r.leader_epochs().is_some() {
                    found.insert(tp, r.ends().high_watermark);
                    continue;
                }
            }
            let leader =
                partition_info(&metadata, &tp.topic, tp.partition).and_then(|p| p.leader.clone());
            let Some(mut rpc) = leader.and_then(|l| broker.peers.get(&l).cloned()) else {
                continue;
            };
            let mut request = Request::new(pb::ListOffsetsRequest {
                topic: tp.topic.clone(),
                partition: tp.partition,
                timestamp: None,
            });
            request.set_timeout(Duration::from_millis(500));
            if let Ok(reply) = rpc.list_offsets(request).await {
                found.insert(tp, reply.into_inner().high_watermark);
            }
        }
        self.high_watermarks.lock().unwrap().extend(found);
    }
}

fn describe(
    broker: &Broker,
    shard: &Shard,
    id: &str,
    hws: &BTreeMap<TopicPartition, u64>,
) -> pb::GroupDescription {
    let now = broker.mono_ms();
    let group = shard.groups.get(id);
    let committed = shard.committed.get(id);
    let mut owner: BTreeMap<TopicPartition, String> = BTreeMap::new();
    if let Some(g) = group {
        for (member, partitions) in g.assignment() {
            for tp in partitions {
                owner.insert(tp.clone(), member.clone());
            }
        }
    }
    let partitions: BTreeSet<TopicPartition> = owner
        .keys()
        .cloned()
        .chain(committed.into_iter().flat_map(|c| c.keys().cloned()))
        .collect();
    let partitions = partitions
        .into_iter()
        .map(|tp| {
            let committed = committed.and_then(|c| c.get(&tp)).map(|c| c.offset);
            // A member commits only what it read below the high watermark: a cached one
            // below the commit is stale, and the commit is the better bound.
            let high_watermark = match (hws.get(&tp).copied(), committed) {
                (Some(hw), Some(c)) => Some(hw.max(c)),
                (hw, _) => hw,
            };
            pb::PartitionLag {
                lag: committed
                    .zip(high_watermark)
                    .map(|(c, hw)| hw.saturating_sub(c)),
                member_id: owner.get(&tp).cloned().unwrap_or_default(),
                topic: tp.topic,
                partition: tp.partition,
                committed,
                high_watermark,
            }
        })
        .collect();
    let members = group
        .map(|g| {
            g.members()
                .values()
                .map(|m| pb::GroupMemberInfo {
                    member_id: m.id.clone(),
                    client_id: m.client_id.clone(),
                    topics: m.topics.iter().cloned().collect(),
                    assignment: g
                        .assignment()
                        .get(&m.id)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .map(Into::into)
                        .collect(),
                    silent_ms: now - m.last_heard_ms,
                })
                .collect()
        })
        .unwrap_or_default();
    pb::GroupDescription {
        group: id.to_string(),
        coordinator: broker.me.clone(),
        state: group
            .map_or(GroupState::Empty, Group::state)
            .name()
            .to_string(),
        generation: group.map_or(0, Group::generation),
        assignor: group.map_or("", |g| g.assignor().name()).to_string(),
        members,
        partitions,
        last_rebalance: group
            .and_then(Group::last_rebalance)
            .map(|r| pb::RebalanceInfo {
                generation: r.generation,
                reason: r.reason.clone(),
                took_ms: r.took_ms,
                members: r.members as u32,
            }),
        rebalances: group.map_or(0, Group::rebalances),
    }
}

/// The coordinator's timer (every 100 ms) and, on a task of its own so that a slow leader
/// never holds the timer up, its lag refresh (every second), until `shutdown`.
pub async fn run(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut lag = Every::new(Duration::from_secs(1), &shutdown);
    let lag_broker = broker.clone();
    tokio::spawn(async move {
        while lag.tick().await {
            lag_broker
                .coordinator
                .refresh_high_watermarks(&lag_broker)
                .await;
        }
    });
    let mut timer = Every::new(Duration::from_millis(100), &shutdown);
    while timer.tick().await {
        broker.coordinator.tick(&broker);
    }
}

/// The `log.v1.GroupCoordinator` gRPC API over a broker's coordinator.
pub struct GroupApi {
    pub broker: Arc<Broker>,
}

#[tonic::async_trait]
impl pb::group_coordinator_server::GroupCoordinator for GroupApi {
    async fn find_coordinator(
        &self,
        request: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let group = request.into_inner().group;
        Ok(Response::new(
            self.broker.coordinator.find(&self.broker, &group).await?,
        ))
    }

    async fn join_group(
        &self,
        request: Request<pb::JoinGroupRequest>,
    ) -> Result<Response<pb::JoinGroupResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.broker.coordinator.join(&self.broker, request).await?,
        ))
    }

    async fn sync_group(
        &self,
        request: Request<pb::SyncGroupRequest>,
    ) -> Result<Response<pb::SyncGroupResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.broker.coordinator.sync(&self.broker, &request)?,
        ))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        self.broker.coordinator.heartbeat(&self.broker, &request)?;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    async fn leave_group(
        &self,
        request: Request<pb::LeaveGroupRequest>,
    ) -> Result<Response<pb::LeaveGroupResponse>, Status> {
        let request = request.into_inner();
        self.broker.coordinator.leave(&self.broker, &request)?;
        Ok(Response::new(pb::LeaveGroupResponse {}))
    }

    async fn offset_commit(
        &self,
        request: Request<pb::OffsetCommitRequest>,
    ) -> Result<Response<pb::OffsetCommitResponse>, Status> {
        let request = request.into_inner();
        self.broker
            .coordinator
            .commit(&self.broker, request)
            .await?;
        Ok(Response::new(pb::OffsetCommitResponse {}))
    }

    async fn offset_fetch(
        &self,
        request: Request<pb::OffsetFetchRequest>,
    ) -> Result<Response<pb::OffsetFetchResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.broker
                .coordinator
                .fetch_offsets(&self.broker, &request)?,
        ))
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupDescription>, Status> {
        let group = request.into_inner().group;
        Ok(Response::new(
            self.broker.coordinator.describe(&self.broker, &group)?,
        ))
    }

    async fn list_groups(
        &self,
        _request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let groups = self
            .broker
            .coordinator
            .describe_all(&self.broker)
            .into_iter()
            .map(|g| g.group)
            .collect();
        Ok(Response::new(pb::ListGroupsResponse { groups }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_spread_over_the_offsets_partitions_and_stay_put() {
        let spread: BTreeSet<u32> = (0..30)
            .map(|i| offsets_partition(&format!("group-{i}"), OFFSETS_PARTITIONS))
            .collect();
        assert_eq!(spread.len(), OFFSETS_PARTITIONS as usize);
        assert_eq!(
            offsets_partition("orders", 3),
            offsets_partition("orders", 3)
        );
        assert!(offsets_partition("orders", 1) == 0);
    }

    /// A shard replayed from records keeps, per partition, the offset of the latest record.
    #[test]
    fn the_latest_commit_record_wins() {
        let mut shard = Shard {
            leader_epoch: 1,
            incarnation: "b1e1".into(),
            groups: BTreeMap::new(),
            committed: BTreeMap::new(),
        };
        let record = |offset| CommitRecord {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            offset,
            member: "m".into(),
            generation: 1,
        };
        shard.remember(record(10), 5);
        shard.remember(record(7), 3);
        shard.remember(record(12), 9);
        let tp = TopicPartition {
            topic: "t".into(),
            partition: 0,
        };
        assert_eq!(shard.committed["g"][&tp].offset, 12);
        shard.remember(record(11), 8);
        assert_eq!(
            shard.committed["g"][&tp].offset, 12,
            "an older record loses"
        );
    }
}
