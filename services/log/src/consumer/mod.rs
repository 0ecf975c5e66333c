//! A consumer group member: joins the group at its coordinator, reads the partitions its
//! generation assigns it from their committed offsets, commits what it read, and follows
//! rebalances.
//!
//! The loop is the caller's: [`GroupConsumer::poll`] returns the next records (joining or
//! rejoining first when needed), [`GroupConsumer::commit`] stores the positions reached,
//! [`GroupConsumer::close`] commits and leaves. A background task heartbeats; when the
//! coordinator answers "rebalance in progress" (or stops knowing the member, or moves), the
//! next poll commits what was read and joins again. Delivery is at least once: what a member
//! read but did not commit before it died is read again by the partition's next owner.
//!
//! - [`node`]: `--role consumer`, a group member as a node the lab can kill and pause.
//! - [`journal`]: what such a node read, kept in its data dir for the lab's checks.

pub mod journal;
pub mod node;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use distlab_proto::log::v1 as pb;
use distlab_raft::leader::with_timeout;
use distlab_runtime::retry::RetryPolicy;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;

use crate::client::LogClient;
use crate::controller::service::refusal_kind;
use crate::group::{Assignor, TopicPartition};
use crate::storage::batch::Record;

/// How a member takes part in its group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    /// Member ids start with it.
    pub client_id: String,
    pub topics: Vec<String>,
    pub assignor: Assignor,
    /// Silent this long, the member is removed (and its partitions reassigned).
    pub session_timeout: Duration,
    /// How long a rebalance waits for the members to rejoin.
    pub rebalance_timeout: Duration,
    pub heartbeat_every: Duration,
    /// Per partition per fetch.
    pub max_bytes: u32,
    /// A partition without a committed offset starts at its log start (else at its high
    /// watermark: only new records).
    pub from_earliest: bool,
}

impl GroupConfig {
    /// Kafka-like defaults scaled to the lab: 3 s sessions, heartbeats every 500 ms.
    pub fn new(group: &str, client_id: &str, topics: Vec<String>) -> Self {
        Self {
            group: group.to_string(),
            client_id: client_id.to_string(),
            topics,
            assignor: Assignor::Range,
            session_timeout: Duration::from_secs(3),
            rebalance_timeout: Duration::from_secs(3),
            heartbeat_every: Duration::from_millis(500),
            max_bytes: 1 << 20,
            from_earliest: true,
        }
    }
}

/// One record read by a member.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: TopicPartition,
    pub record: Record,
}

/// A generation this member joined: what the lab and the CLI report.
#[derive(Debug, Clone)]
pub struct Generation {
    pub member_id: String,
    pub generation: u32,
    pub assignment: Vec<TopicPartition>,
    /// From deciding to (re)join to having the assignment and offsets.
    pub took: Duration,
}

/// What a refusal from the coordinator means for a member: join again (as a new member when
/// it no longer knows this one), or nothing (`None`: retry as before).
fn rejoin_for(status: &Status) -> Option<u8> {
    match refusal_kind(status) {
        Some("unknown_member_id") => Some(REJOIN_AS_NEW),
        Some("illegal_generation" | "rebalance_in_progress") => Some(REJOIN),
        _ => None,
    }
}

/// What the heartbeat task tells the poll loop.
const IN_GENERATION: u8 = 0;
const REJOIN: u8 = 1;
/// The coordinator does not know this member: join as a new one.
const REJOIN_AS_NEW: u8 = 2;

pub struct GroupConsumer {
    client: LogClient,
    config: GroupConfig,
    member_id: String,
    /// 0: not in a generation.
    generation: u32,
    assignment: Vec<TopicPartition>,
    positions: BTreeMap<TopicPartition, u64>,
    committed: BTreeMap<TopicPartition, u64>,
    /// Per assigned partition, the high watermark its last fetch saw.
    high_watermarks: BTreeMap<TopicPartition, u64>,
    rejoin: Arc<AtomicU8>,
    /// Stops the heartbeat task (also when the consumer is dropped without closing).
    heartbeat: Option<DropGuard>,
}

impl GroupConsumer {
    /// A member of `config.group`; it joins on the first poll.
    pub fn new(client: LogClient, config: GroupConfig) -> Self {
        Self {
            client,
            config,
            member_id: String::new(),
            generation: 0,
            assignment: Vec::new(),
            positions: BTreeMap::new(),
            committed: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
            rejoin: Arc::new(AtomicU8::new(REJOIN)),
            heartbeat: None,
        }
    }

    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn assignment(&self) -> &[TopicPartition] {
        &self.assignment
    }

    /// The next offset to read per assigned partition.
    pub fn positions(&self) -> &BTreeMap<TopicPartition, u64> {
        &self.positions
    }

    /// The offsets committed for the assigned partitions, as this member knows them.
    pub fn committed(&self) -> &BTreeMap<TopicPartition, u64> {
        &self.committed
    }

    /// Per assigned partition: how far behind its high watermark (as last fetched) this
    /// member's position is.
    pub fn lag(&self) -> BTreeMap<TopicPartition, u64> {
        self.positions
            .iter()
            .filter_map(|(tp, position)| {
                let hw = self.high_watermarks.get(tp)?;
                Some((tp.clone(), hw.saturating_sub(*position)))
            })
            .collect()
    }

    /// Whether the next poll will (re)join first.
    pub fn needs_join(&self) -> bool {
        self.rejoin.load(Ordering::Relaxed) != IN_GENERATION
    }

    /// Joins (or rejoins) when needed and returns the generation joined, if it did.
    pub async fn ensure_joined(&mut self) -> Result<Option<Generation>, Status> {
        if !self.needs_join() {
            return Ok(None);
        }
        self.join().await.map(Some)
    }

    /// The next records of the assigned partitions, joining the group first when needed.
    /// Every assigned partition is fetched at once, each waiting up to `max_wait` when it has
    /// nothing new (so an idle partition delays the poll by `max_wait`, and a busy one is
    /// never starved). A partition whose fetch fails is skipped this time (its leader may be
    /// moving).
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<Consumed>, Status> {
        self.ensure_joined().await?;
        if self.assignment.is_empty() {
            tokio::time::sleep(max_wait).await;
            return Ok(Vec::new());
        }
        let mut fetches = tokio::task::JoinSet::new();
        for tp in &self.assignment {
            let Some(&offset) = self.positions.get(tp) else {
                continue;
            };
            let (client, tp, max_bytes) = (self.client.clone(), tp.clone(), self.config.max_bytes);
            fetches.spawn(async move {
                let fetched = client
                    .fetch(&tp.topic, tp.partition, offset, max_bytes, max_wait)
                    .await;
                (tp, offset, fetched)
            });
        }
        // Every fetch first, then the positions: a poll cancelled while it waits has moved
        // nothing, so no record is skipped.
        let mut results = Vec::new();
        while let Some(done) = fetches.join_next().await {
            results.push(done.map_err(|e| Status::internal(format!("a fetch task failed: {e}")))?);
        }
        let mut out = Vec::new();
        let mut out_of_range = Vec::new();
        for (tp, offset, fetched) in results {
            match fetched {
                Ok(fetched) => {
                    self.high_watermarks
                        .insert(tp.clone(), fetched.high_watermark);
                    if let Some(last) = fetched.records.last() {
                        self.positions.insert(tp.clone(), last.offset + 1);
                    }
                    out.extend(fetched.records.into_iter().map(|record| Consumed {
                        partition: tp.clone(),
                        record,
                    }));
                }
                Err(status) if refusal_kind(&status) == Some("offset_out_of_range") => {
                    out_of_range.push((tp, offset));
                }
                Err(status) => {
                    tracing::debug!(partition = %tp, error = %distlab_runtime::rpc::describe(&status), "fetch failed; trying again next poll");
                }
            }
        }
        for (tp, offset) in out_of_range {
            // Retention removed what this member had not read: start at what is left.
            if let Ok(offsets) = self.client.list_offsets(&tp.topic, tp.partition).await {
                tracing::warn!(partition = %tp, offset, start = offsets.log_start, "offset out of range; starting over at the log start");
                self.positions.insert(tp, offsets.log_start);
            }
        }
        out.sort_by(|a, b| (&a.partition, a.record.offset).cmp(&(&b.partition, b.record.offset)));
        Ok(out)
    }

    /// Commits the positions reached since the last commit.
    pub async fn commit(&mut self) -> Result<(), Status> {
        let offsets: Vec<pb::CommittedOffset> = self
            .positions
            .iter()
            .filter(|(tp, offset)| self.committed.get(*tp) != Some(*offset))
            .map(|(tp, offset)| pb::CommittedOffset {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: *offset,
            })
            .collect();
        if offsets.is_empty() || self.generation == 0 {
            return Ok(());
        }
        let request = pb::OffsetCommitRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            generation: self.generation,
            offsets: offsets.clone(),
        };
        let result = self
            .client
            .at_coordinator(&self.config.group, None, |mut rpc, attempt| {
                let request = with_timeout(request.clone(), attempt);
                async move { rpc.offset_commit(request).await }
            })
            .await;
        match result {
            Ok(_) => {
                for o in offsets {
                    self.committed
                        .insert(TopicPartition::new(o.topic, o.partition), o.offset);
                }
                Ok(())
            }
            Err(status) => {
                self.on_refusal(&status);
                Err(status)
            }
        }
    }

    /// Commits what was read and leaves the group (its partitions go to the others at once).
    pub async fn close(mut self) -> Result<(), Status> {
        let committed = self.commit().await;
        self.heartbeat = None;
        if self.generation != 0 {
            let request = pb::LeaveGroupRequest {
                group: self.config.group.clone(),
                member_id: self.member_id.clone(),
            };
            self.client
                .at_coordinator(&self.config.group, None, |mut rpc, attempt| {
                    let request = with_timeout(request.clone(), attempt);
                    async move { rpc.leave_group(request).await }
                })
                .await?;
        }
        committed
    }

    fn on_refusal(&self, status: &Status) {
        if let Some(flag) = rejoin_for(status) {
            self.rejoin.store(flag, Ordering::Relaxed);
        }
    }

    /// Commits what was read (allowed while the group prepares its next generation), then
    /// joins until a generation forms and syncs its assignment, then reads the committed
    /// offsets of the assigned partitions.
    async fn join(&mut self) -> Result<Generation, Status> {
        let started = Instant::now();
        self.heartbeat = None;
        if self.generation != 0 {
            let _ = self.commit().await;
        }
        // Long enough for a join that waits out a whole rebalance.
        let join_policy = RetryPolicy {
            attempt_timeout: self.config.rebalance_timeout + Duration::from_secs(2),
            deadline: (self.config.rebalance_timeout + Duration::from_secs(2)) * 3,
            max_attempts: 3,
            ..self.client.policy().clone()
        };
        let group = self.config.group.clone();
        for _ in 0..10 {
            if self.rejoin.load(Ordering::Relaxed) == REJOIN_AS_NEW {
                self.member_id.clear();
            }
            self.rejoin.store(REJOIN, Ordering::Relaxed);
            let request = pb::JoinGroupRequest {
                group: group.clone(),
                member_id: self.member_id.clone(),
                client_id: self.config.client_id.clone(),
                topics: self.config.topics.clone(),
                session_timeout_ms: self.config.session_timeout.as_millis() as u32,
                rebalance_timeout_ms: self.config.rebalance_timeout.as_millis() as u32,
                assignor: self.config.assignor.name().to_string(),
            };
            let joined = self
                .client
                .at_coordinator(&group, Some(&join_policy), |mut rpc, attempt| {
                    let request = with_timeout(request.clone(), attempt);
                    async move { rpc.join_group(request).await }
                })
                .await;
            let joined = match joined {
                Ok(joined) => joined,
                // Not known here any more (join as a new member), or the join outlasted the
                // rebalance: join again.
                Err(status) if rejoin_for(&status).is_some() => {
                    self.on_refusal(&status);
                    continue;
                }
                Err(status) => return Err(status),
            };
            self.member_id = joined.member_id.clone();
            let sync = pb::SyncGroupRequest {
                group: group.clone(),
                member_id: joined.member_id.clone(),
                generation: joined.generation,
            };
            let synced = self
                .client
                .at_coordinator(&group, None, |mut rpc, attempt| {
                    let request = with_timeout(sync.clone(), attempt);
                    async move { rpc.sync_group(request).await }
                })
                .await;
            let assignment = match synced {
                Ok(synced) => synced.assignment,
                // The generation moved on before this member synced: join it.
                Err(status) if rejoin_for(&status).is_some() => {
                    self.on_refusal(&status);
                    continue;
                }
                Err(status) => return Err(status),
            };
            self.generation = joined.generation;
            self.assignment = assignment.iter().map(Into::into).collect();
            self.start_positions().await?;
            self.rejoin.store(IN_GENERATION, Ordering::Relaxed);
            self.start_heartbeat();
            let generation = Generation {
                member_id: self.member_id.clone(),
                generation: self.generation,
                assignment: self.assignment.clone(),
                took: started.elapsed(),
            };
            // The consumer node logs it as an event; here it is for debugging a client.
            tracing::debug!(
                group,
                member = self.member_id,
                generation = self.generation,
                partitions = self.assignment.len(),
                "joined generation {} with {} partitions",
                self.generation,
                self.assignment.len()
            );
            return Ok(generation);
        }
        Err(Status::unavailable(format!(
            "group {group:?} kept rebalancing: no generation after 10 joins"
        )))
    }

    /// Positions for the new assignment: the committed offsets, else the log start (or the
    /// high watermark, per `from_earliest`).
    async fn start_positions(&mut self) -> Result<(), Status> {
        let request = pb::OffsetFetchRequest {
            group: self.config.group.clone(),
            partitions: self.assignment.iter().cloned().map(Into::into).collect(),
        };
        let fetched = self
            .client
            .at_coordinator(&self.config.group, None, |mut rpc, attempt| {
                let request = with_timeout(request.clone(), attempt);
                async move { rpc.offset_fetch(request).await }
            })
            .await?;
        self.committed = fetched
            .offsets
            .into_iter()
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect();
        self.positions.clear();
        self.high_watermarks.clear();
        for tp in self.assignment.clone() {
            let position = match self.committed.get(&tp) {
                Some(&offset) => offset,
                None => {
                    let offsets = self.client.list_offsets(&tp.topic, tp.partition).await?;
                    if self.config.from_earliest {
                        offsets.log_start
                    } else {
                        offsets.high_watermark
                    }
                }
            };
            self.positions.insert(tp, position);
        }
        Ok(())
    }

    fn start_heartbeat(&mut self) {
        let stop = CancellationToken::new();
        let (client, rejoin, every) = (
            self.client.clone(),
            self.rejoin.clone(),
            self.config.heartbeat_every,
        );
        let request = pb::HeartbeatRequest {
            group: self.config.group.clone(),
            member_id: self.member_id.clone(),
            generation: self.generation,
        };
        let policy = RetryPolicy {
            deadline: every.max(Duration::from_millis(500)),
            ..client.policy().clone()
        };
        let cancelled = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = cancelled.cancelled() => return,
                }
                let beat =
                    client.at_coordinator(&request.group, Some(&policy), |mut rpc, attempt| {
                        let request = with_timeout(request.clone(), attempt);
                        async move { rpc.heartbeat(request).await }
                    });
                let answer = tokio::select! {
                    answer = beat => answer,
                    () = cancelled.cancelled() => return,
                };
                let Err(status) = answer else { continue };
                // The coordinator is unreachable or moved: keep trying (a new coordinator
                // answers "unknown member").
                let Some(flag) = rejoin_for(&status) else {
                    continue;
                };
                rejoin.store(flag, Ordering::Relaxed);
                return;
            }
        });
        self.heartbeat = Some(stop.drop_guard());
    }
}
