//! The Project 3 client library: talks to brokers, finds each partition's leader from the
//! metadata, and follows leadership as it moves.
//!
//! - [`LogClient`]: produce a batch, fetch from an offset, list offsets, get a producer id.
//!   Every call runs under the shared retry policy; an answer that says "not the leader" (or
//!   "not enough replicas", or "not replicated in time") refreshes the metadata and tries
//!   again at the leader it names.
//! - [`Producer`]: builds batches and, when idempotent, stamps them with its producer id and a
//!   per-partition sequence number, the same on every retry: the leader appends a retried
//!   batch once and answers a duplicate with its first offsets; a gap is refused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_proto::log::v1 as pb;
use distlab_raft::leader::with_timeout;
use distlab_runtime::retry::{ClientMetrics, Idempotence, RetryPolicy};
use tokio::sync::mpsc;
use tonic::Status;

use crate::broker::{BrokerRpc, broker_rpc, partition_info};
use crate::controller::service::refusal_kind;
use crate::storage::batch::{Batch, ProducerStamp, Record, split};

/// Refusals that a fresh look at the metadata (and a wait) may cure.
const REROUTE: &[&str] = &[
    "not_leader_or_follower",
    "fenced_leader_epoch",
    "unknown_topic_or_partition",
    "not_enough_replicas",
    "request_timed_out",
];

/// A broker's group coordinator API.
pub type GroupRpc =
    pb::group_coordinator_client::GroupCoordinatorClient<distlab_runtime::channel::TracedChannel>;

/// Refusals after which a group's coordinator must be looked up again.
const FIND_AGAIN: &[&str] = &["not_coordinator", "coordinator_not_available"];

#[derive(Clone)]
pub struct LogClient {
    brokers: Arc<BTreeMap<String, BrokerRpc>>,
    groups: Arc<BTreeMap<String, GroupRpc>>,
    /// The coordinator of each group, as last found.
    coordinators: Arc<Mutex<BTreeMap<String, String>>>,
    /// Which broker the next FindCoordinator goes to.
    next_broker: Arc<std::sync::atomic::AtomicUsize>,
    metadata: Arc<Mutex<pb::ClusterMetadata>>,
    policy: RetryPolicy,
    metrics: ClientMetrics,
    /// `acks=0` produces, sent in order by one task (started with the first).
    unacknowledged: Arc<std::sync::OnceLock<mpsc::UnboundedSender<pb::ProduceRequest>>>,
}

impl LogClient {
    /// A client of the brokers `brokers` (name, address). Connects lazily.
    pub fn connect_lazy(
        brokers: &[(String, SocketAddr)],
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let channels = distlab_runtime::channel::per_node(brokers, &policy)?;
        let groups = channels
            .iter()
            .map(|(name, channel)| (name.clone(), GroupRpc::new(channel.clone())))
            .collect();
        let rpcs = channels
            .into_iter()
            .map(|(name, channel)| (name, broker_rpc(channel)))
            .collect();
        Ok(Self {
            brokers: Arc::new(rpcs),
            groups: Arc::new(groups),
            coordinators: Arc::default(),
            next_broker: Arc::default(),
            metadata: Arc::default(),
            policy,
            metrics: ClientMetrics::default(),
            unacknowledged: Arc::default(),
        })
    }

    /// Queues an `acks=0` produce: one task sends them in order, one at a time (as Kafka's
    /// producer does over one connection), without anyone waiting for the answers. A failed
    /// send refreshes the metadata (the leader moved or died) and is not retried.
    fn send_unacknowledged(
        &self,
        request: pb::ProduceRequest,
    ) -> Result<pb::ProduceResponse, Status> {
        let queue = self.unacknowledged.get_or_init(|| {
            let (queue, mut waiting) = mpsc::unbounded_channel::<pb::ProduceRequest>();
            // Without this queue: the task ends when the last client handle drops it.
            let client = Self {
                unacknowledged: Arc::default(),
                ..self.clone()
            };
            tokio::spawn(async move {
                while let Some(request) = waiting.recv().await {
                    let routed = client.leader_of(&request.topic, request.partition);
                    let sent = match routed {
                        Ok((_, mut rpc)) => {
                            let mut call = tonic::Request::new(request);
                            call.set_timeout(client.policy.attempt_timeout);
                            rpc.produce(call).await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if !sent {
                        let _ = client.refresh_metadata().await;
                    }
                }
            });
            queue
        });
        queue
            .send(request)
            .map_err(|_| Status::unavailable("the acks=0 sender stopped"))?;
        Ok(pb::ProduceResponse::default())
    }

    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    /// The metadata as this client last saw it.
    pub fn cached_metadata(&self) -> pb::ClusterMetadata {
        self.metadata.lock().unwrap().clone()
    }

    /// Asks the brokers in turn for their metadata; the first answer is kept unless the cache
    /// is newer (brokers follow the controller within a long poll, and a stale answer is
    /// corrected by the next refusal it leads to).
    pub async fn refresh_metadata(&self) -> Result<pb::ClusterMetadata, Status> {
        let mut last_error = Status::unavailable("no broker answered");
        for rpc in self.brokers.values() {
            let mut request = tonic::Request::new(pb::MetadataRequest {
                after_version: 0,
                max_wait_ms: 0,
            });
            request.set_timeout(self.policy.attempt_timeout);
            match rpc.clone().metadata(request).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let mut cached = self.metadata.lock().unwrap();
                    if reply.version >= cached.version {
                        *cached = reply;
                    }
                    return Ok(cached.clone());
                }
                Err(status) => last_error = status,
            }
        }
        Err(last_error)
    }

    /// The leader of `topic`/`partition` as the cached metadata says, and its RPC client.
    fn leader_of(&self, topic: &str, partition: u32) -> Result<(String, BrokerRpc), Status> {
        let metadata = self.metadata.lock().unwrap();
        let info = partition_info(&metadata, topic, partition).ok_or_else(|| {
            Status::unavailable(format!(
                "no partition {topic}/{partition} in the metadata yet"
            ))
        })?;
        let leader = info.leader.clone().ok_or_else(|| {
            Status::unavailable(format!("{topic}/{partition} is offline (no leader)"))
        })?;
        let rpc = self.brokers.get(&leader).cloned().ok_or_else(|| {
            Status::unavailable(format!(
                "the leader of {topic}/{partition}, {leader}, is not a broker this client knows"
            ))
        })?;
        Ok((leader, rpc))
    }

    /// Runs `call` at the leader of `topic`/`partition` under the retry policy, refreshing
    /// the metadata whenever the answer says the leader is elsewhere (or absent).
    async fn at_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        mut call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(BrokerRpc, distlab_runtime::retry::Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                let client = self.clone();
                let routed = self
                    .leader_of(topic, partition)
                    .map(|(_, rpc)| call(rpc, attempt));
                async move {
                    let result = match routed {
                        Ok(fut) => fut.await.map(|r| r.into_inner()),
                        Err(status) => Err(status),
                    };
                    match result {
                        Ok(value) => Ok(value),
                        Err(status) => {
                            let reroute = refusal_kind(&status)
                                .is_some_and(|k| REROUTE.contains(&k))
                                || distlab_runtime::retry::is_retryable(&status);
                            if !reroute {
                                return Err(status);
                            }
                            let _ = client.refresh_metadata().await;
                            Err(retryable(status))
                        }
                    }
                }
            })
            .await
    }

    /// Appends `batch` to `topic`/`partition`. `acks`: see [`pb::Acks`]. With `Acks::None`
    /// the answer is not waited for: the result is only whether it was sent.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: &Batch,
        acks: pb::Acks,
    ) -> Result<pb::ProduceResponse, Status> {
        let timeout_ms = self.policy.attempt_timeout.as_millis() as u32;
        let request = pb::ProduceRequest {
            topic: topic.to_string(),
            partition,
            acks: acks as i32,
            batch: batch.bytes().clone(),
            timeout_ms: timeout_ms.saturating_sub(200).max(100),
        };
        if acks == pb::Acks::None {
            return self.send_unacknowledged(request);
        }
        self.at_leader(topic, partition, |mut rpc, attempt| {
            let request = with_timeout(request.clone(), attempt);
            async move { rpc.produce(request).await }
        })
        .await
    }

    /// Batches from `offset` (up to the high watermark), waiting up to `max_wait` when there
    /// is nothing yet.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched, Status> {
        let reply = self
            .at_leader(topic, partition, |mut rpc, attempt| {
                let wait = max_wait.min(attempt.timeout.saturating_sub(Duration::from_millis(300)));
                let request = with_timeout(
                    pb::FetchRequest {
                        topic: topic.to_string(),
                        partition,
                        offset,
                        max_bytes,
                        max_wait_ms: wait.as_millis() as u32,
                        ..Default::default()
                    },
                    attempt,
                );
                async move { rpc.fetch(request).await }
            })
            .await?;
        let batches = split(reply.records.clone())
            .map_err(|e| Status::data_loss(format!("a corrupt batch from the broker: {e}")))?;
        let records = batches
            .iter()
            .flat_map(|b| b.records().collect::<Vec<_>>())
            .filter(|r| r.offset >= offset)
            .collect();
        Ok(Fetched {
            records,
            high_watermark: reply.high_watermark,
            log_start: reply.log_start,
        })
    }

    /// Reads `topic`/`partition` from its log start up to its high watermark, 1 MiB per
    /// fetch, handing each fetch's records (in offset order) to `each`.
    pub async fn read_through(
        &self,
        topic: &str,
        partition: u32,
        mut each: impl FnMut(Vec<Record>),
    ) -> Result<(), Status> {
        let mut offset = self.list_offsets(topic, partition).await?.log_start;
        loop {
            let fetched = self
                .fetch(topic, partition, offset, 1 << 20, Duration::ZERO)
                .await?;
            if fetched.records.is_empty() && offset >= fetched.high_watermark {
                return Ok(());
            }
            if let Some(last) = fetched.records.last() {
                offset = last.offset + 1;
            }
            each(fetched.records);
        }
    }

    /// Every record of `topic`/`partition` up to its high watermark, in offset order.
    pub async fn read_all(&self, topic: &str, partition: u32) -> Result<Vec<Record>, Status> {
        let mut records = Vec::new();
        self.read_through(topic, partition, |fetched| records.extend(fetched))
            .await?;
        Ok(records)
    }

    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<pb::ListOffsetsResponse, Status> {
        self.at_leader(topic, partition, |mut rpc, attempt| {
            let request = with_timeout(
                pb::ListOffsetsRequest {
                    topic: topic.to_string(),
                    partition,
                    timestamp: None,
                },
                attempt,
            );
            async move { rpc.list_offsets(request).await }
        })
        .await
    }

    /// A fresh producer id (and epoch) from any broker.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), Status> {
        let brokers: Vec<BrokerRpc> = self.brokers.values().cloned().collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let reply = self
            .policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut rpc = brokers[i % brokers.len()].clone();
                let request = with_timeout(pb::InitProducerIdRequest {}, attempt);
                async move { rpc.init_producer_id(request).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok((reply.producer_id, reply.producer_epoch as i16))
    }

    /// The policy calls run under.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The broker coordinating `group` (the first ask in a cluster creates
    /// `__consumer_offsets`; the answer comes once it has leaders).
    pub async fn find_coordinator(&self, group: &str) -> Result<String, Status> {
        let policy = RetryPolicy {
            max_attempts: self.policy.max_attempts.max(10),
            ..self.policy.clone()
        };
        policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                self.find_coordinator_once(group, attempt)
            })
            .await
    }

    /// One FindCoordinator, at the next broker in turn; remembers the answer.
    async fn find_coordinator_once(
        &self,
        group: &str,
        attempt: distlab_runtime::retry::Attempt,
    ) -> Result<String, Status> {
        let i = self
            .next_broker
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Among the peers the metadata names as brokers, once known (a client may have been
        // given peers that are not brokers: a consumer node gets every node of the cluster).
        let pool: Vec<GroupRpc> = {
            let metadata = self.metadata.lock().unwrap();
            let brokers: Vec<GroupRpc> = self
                .groups
                .iter()
                .filter(|(name, _)| metadata.brokers.iter().any(|b| &b.name == *name))
                .map(|(_, rpc)| rpc.clone())
                .collect();
            if brokers.is_empty() {
                self.groups.values().cloned().collect()
            } else {
                brokers
            }
        };
        let mut rpc = pool[i % pool.len()].clone();
        let request = with_timeout(
            pb::FindCoordinatorRequest {
                group: group.to_string(),
            },
            attempt,
        );
        let reply = rpc
            .find_coordinator(request)
            .await
            .map_err(retried_if(FIND_AGAIN))?
            .into_inner();
        self.coordinators
            .lock()
            .unwrap()
            .insert(group.to_string(), reply.coordinator.clone());
        Ok(reply.coordinator)
    }

    /// Every group some broker coordinates, with its coordinator (brokers that do not answer
    /// are skipped).
    pub async fn list_groups(&self) -> Result<BTreeMap<String, String>, Status> {
        let mut groups = BTreeMap::new();
        let mut answered = false;
        let mut last_error = Status::unavailable("no broker answered");
        for (name, rpc) in self.groups.iter() {
            let mut request = tonic::Request::new(pb::ListGroupsRequest {});
            request.set_timeout(self.policy.attempt_timeout);
            match rpc.clone().list_groups(request).await {
                Ok(reply) => {
                    answered = true;
                    for group in reply.into_inner().groups {
                        groups.insert(group, name.clone());
                    }
                }
                Err(status) => last_error = status,
            }
        }
        if answered {
            Ok(groups)
        } else {
            Err(last_error)
        }
    }

    /// `group` as its coordinator describes it: state, members, committed offsets, lag.
    pub async fn describe_group(&self, group: &str) -> Result<pb::GroupDescription, Status> {
        let request = pb::DescribeGroupRequest {
            group: group.to_string(),
        };
        self.at_coordinator(group, None, |mut rpc, attempt| {
            let request = with_timeout(request.clone(), attempt);
            async move { rpc.describe_group(request).await }
        })
        .await
    }

    /// Runs `call` at `group`'s coordinator under `policy` (the client's when `None`),
    /// looking the coordinator up again whenever an answer says it moved.
    pub async fn at_coordinator<T, F, Fut>(
        &self,
        group: &str,
        policy: Option<&RetryPolicy>,
        call: F,
    ) -> Result<T, Status>
    where
        F: FnMut(GroupRpc, distlab_runtime::retry::Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let policy = policy.unwrap_or(&self.policy);
        let call = Mutex::new(call);
        policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                let call = &call;
                async move {
                    let known = self.coordinators.lock().unwrap().get(group).cloned();
                    let name = match known {
                        Some(name) => name,
                        None => self.find_coordinator_once(group, attempt).await?,
                    };
                    let rpc = self.groups.get(&name).cloned().ok_or_else(|| {
                        Status::unavailable(format!(
                            "the coordinator {name} is not a broker this client knows"
                        ))
                    })?;
                    let pending = (call.lock().unwrap())(rpc, attempt);
                    pending.await.map(|r| r.into_inner()).map_err(|status| {
                        let find_again = refusal_kind(&status)
                            .is_some_and(|k| FIND_AGAIN.contains(&k))
                            || distlab_runtime::retry::is_retryable(&status);
                        if find_again {
                            self.coordinators.lock().unwrap().remove(group);
                        }
                        retried_if(FIND_AGAIN)(status)
                    })
                }
            })
            .await
    }
}

/// What a consumer's fetch got.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Records at or after the offset asked for, in offset order.
    pub records: Vec<Record>,
    pub high_watermark: u64,
    pub log_start: u64,
}

/// Sends records to partitions with one acks setting; idempotent if asked.
///
/// A send that fails may still have been appended. Its sequence numbers cannot be given to
/// other records (the broker would take them for a retry of it) nor skipped (a gap is
/// refused), so after a failure an idempotent producer starts over with a new producer id
/// (as Kafka's producer bumps its epoch).
pub struct Producer {
    client: LogClient,
    acks: pb::Acks,
    idempotent: bool,
    state: Mutex<Sequences>,
}

#[derive(Default)]
struct Sequences {
    /// Producer id and epoch, when idempotent and known.
    identity: Option<(i64, i16)>,
    /// The next sequence number per partition.
    next: BTreeMap<(String, u32), i32>,
}

impl Producer {
    /// A producer; `idempotent` asks a broker for a producer id first.
    pub async fn new(client: LogClient, acks: pb::Acks, idempotent: bool) -> Result<Self, Status> {
        let producer = Self {
            client,
            acks,
            idempotent,
            state: Mutex::default(),
        };
        producer.identity().await?;
        Ok(producer)
    }

    pub fn producer_id(&self) -> Option<i64> {
        self.state.lock().unwrap().identity.map(|(id, _)| id)
    }

    /// The producer id to stamp batches with (a new one after a failed send).
    async fn identity(&self) -> Result<Option<(i64, i16)>, Status> {
        if !self.idempotent {
            return Ok(None);
        }
        if let Some(identity) = self.state.lock().unwrap().identity {
            return Ok(Some(identity));
        }
        let identity = self.client.init_producer_id().await?;
        let mut state = self.state.lock().unwrap();
        state.identity = Some(identity);
        state.next.clear();
        Ok(Some(identity))
    }

    /// Sends `records` (key, value) to `topic`/`partition` as one batch; its first and last
    /// offsets (zeros with acks=0).
    pub async fn send(
        &self,
        topic: &str,
        partition: u32,
        records: &[(Option<&[u8]>, &[u8])],
    ) -> Result<(u64, u64), Status> {
        if records.is_empty() {
            return Err(Status::invalid_argument(
                "a batch needs at least one record",
            ));
        }
        let now = distlab_runtime::clock::wall_ms();
        let key = (topic.to_string(), partition);
        let stamp = match self.identity().await? {
            Some((producer_id, producer_epoch)) => ProducerStamp {
                producer_id,
                producer_epoch,
                base_sequence: *self.state.lock().unwrap().next.get(&key).unwrap_or(&0),
            },
            None => ProducerStamp::NONE,
        };
        let batch = Batch::build(records.iter().map(|(k, v)| (*k, *v, now)), stamp);
        match self
            .client
            .produce(topic, partition, &batch, self.acks)
            .await
        {
            Ok(reply) => {
                if self.idempotent {
                    let mut state = self.state.lock().unwrap();
                    let next = state.next.entry(key).or_insert(0);
                    *next = next.wrapping_add(records.len() as i32);
                }
                Ok((reply.base_offset, reply.last_offset))
            }
            Err(status) => {
                // Appended or not, its sequence numbers are spent: start over.
                self.state.lock().unwrap().identity = None;
                Err(status)
            }
        }
    }
}

/// `status` said as UNAVAILABLE, which the retry policy retries, with its message and kind
/// kept for the caller.
fn retryable(status: Status) -> Status {
    let mut again = Status::unavailable(status.message().to_string());
    *again.metadata_mut() = status.metadata().clone();
    again
}

/// [`retryable`] for a refusal whose kind is in `kinds`; others unchanged.
fn retried_if(kinds: &'static [&'static str]) -> impl Fn(Status) -> Status {
    move |status| {
        if refusal_kind(&status).is_some_and(|k| kinds.contains(&k)) {
            retryable(status)
        } else {
            status
        }
    }
}
