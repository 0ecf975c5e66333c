//! The broker's gRPC API (`log.v1.Broker`): produce with acks, fetch with long polls (for
//! consumers and for follower replicas), the leader-epoch query followers truncate by, offsets,
//! producer ids, and the metadata this broker follows.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use distlab_proto::log::v1 as pb;
use tonic::{Request, Response, Status};

use super::replica::{Ends, Replica, ReplicaError};
use super::{Broker, partition_info, partition_name};
use crate::controller::service::ERROR_KIND;
use crate::storage::batch::Batch;
use crate::storage::partition::Appended;

/// The longest a fetch or an `acks=all` produce waits.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub struct BrokerApi {
    pub broker: Arc<Broker>,
}

/// A refusal: the gRPC code and message, with [`ERROR_KIND`] metadata.
pub fn refusal(code: tonic::Code, kind: &str, message: impl Into<String>) -> Status {
    distlab_runtime::rpc::refusal(code, ERROR_KIND, kind, message)
}

fn replica_refusal(e: &ReplicaError) -> Status {
    let code = match e {
        ReplicaError::NotLeader(_) | ReplicaError::FencedLeaderEpoch { .. } => {
            tonic::Code::FailedPrecondition
        }
        ReplicaError::Replication(_) => tonic::Code::Unavailable,
        ReplicaError::Sequence(_) => tonic::Code::FailedPrecondition,
        ReplicaError::OutOfRange(_) => tonic::Code::OutOfRange,
        ReplicaError::Io(_) => tonic::Code::Internal,
    };
    refusal(code, e.kind(), e.to_string())
}

/// The replica of `topic`/`partition` on `broker`, or the refusal saying why there is none
/// (the partition is elsewhere, or does not exist).
pub fn replica_of(
    broker: &Broker,
    topic: &str,
    partition: u32,
) -> Result<Arc<Mutex<Replica>>, Status> {
    broker.replica(topic, partition).ok_or_else(|| {
        let metadata = broker.metadata();
        let known = partition_info(&metadata, topic, partition).is_some();
        let name = partition_name(topic, partition);
        if known {
            refusal(
                tonic::Code::FailedPrecondition,
                "not_leader_or_follower",
                format!("{} does not replicate {name}", broker.me),
            )
        } else {
            refusal(
                tonic::Code::NotFound,
                "unknown_topic_or_partition",
                format!(
                    "no partition {name} (as of metadata version {})",
                    metadata.version
                ),
            )
        }
    })
}

/// Waits until `ready` holds for the replica's ends, or `wait` passes.
async fn wait_for(replica: &Mutex<Replica>, wait: Duration, ready: impl Fn(Ends) -> bool) {
    let mut ends = replica.lock().unwrap().watch();
    let _ = tokio::time::timeout(wait, ends.wait_for(|e| ready(*e))).await;
}

/// Appends `batch` to `topic`/`partition`, which this broker must lead. With `acks_all`
/// (refused below min.insync.replicas) the answer waits, up to `wait`, until the ISR holds
/// the batch. Used by Produce and by the group coordinator's offset commits.
pub async fn append(
    broker: &Broker,
    topic: &str,
    partition: u32,
    batch: &Batch,
    acks_all: bool,
    wait: Duration,
) -> Result<pb::ProduceResponse, Status> {
    let replica = replica_of(broker, topic, partition)?;
    let (appended, leader_epoch) = replica
        .lock()
        .unwrap()
        .produce(batch, acks_all, distlab_runtime::clock::wall_ms())
        .map_err(|e| replica_refusal(&e))?;
    let (base_offset, last_offset) = appended.offsets();
    if acks_all {
        let wait = wait.min(MAX_WAIT);
        wait_for(&replica, wait, |ends| ends.high_watermark > last_offset).await;
        match replica.lock().unwrap().acks_all_outcome(last_offset) {
            Ok(Some(())) => {}
            Ok(None) => {
                return Err(refusal(
                    tonic::Code::DeadlineExceeded,
                    "request_timed_out",
                    format!(
                        "offset {last_offset} was appended but not replicated to the ISR within {} ms",
                        wait.as_millis()
                    ),
                ));
            }
            Err(e) => return Err(replica_refusal(&e)),
        }
    }
    Ok(pb::ProduceResponse {
        base_offset,
        last_offset,
        duplicate: matches!(appended, Appended::Duplicate { .. }),
        leader_epoch,
    })
}

impl BrokerApi {
    fn replica(&self, topic: &str, partition: u32) -> Result<Arc<Mutex<Replica>>, Status> {
        replica_of(&self.broker, topic, partition)
    }
}

#[tonic::async_trait]
impl pb::broker_server::Broker for BrokerApi {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let request = request.into_inner();
        let acks = pb::Acks::try_from(request.acks).map_err(|_| {
            Status::invalid_argument(format!("acks {} is not 0, 1 or all", request.acks))
        })?;
        let batch = Batch::parse(request.batch).map_err(|e| {
            refusal(
                tonic::Code::InvalidArgument,
                "corrupt_message",
                format!("the batch: {e}"),
            )
        })?;
        let wait = Duration::from_millis(request.timeout_ms.into());
        let answer = append(
            &self.broker,
            &request.topic,
            request.partition,
            &batch,
            acks == pb::Acks::All,
            wait,
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let request = request.into_inner();
        let replica = self.replica(&request.topic, request.partition)?;
        let follower = (!request.replica.is_empty()).then_some(request.replica.as_str());
        let epoch = request.check_epoch.then_some(request.leader_epoch);
        let max_bytes = (request.max_bytes as usize).max(1);
        let read = || {
            replica
                .lock()
                .unwrap()
                .fetch(
                    request.offset,
                    max_bytes,
                    follower,
                    epoch,
                    self.broker.mono_ms(),
                )
                .map_err(|e| replica_refusal(&e))
        };
        let mut fetched = read()?;
        // A proposal the first read made must not be lost to the second (the leader counts
        // it as pending until the controller answers).
        let mut proposal = fetched.outcome.propose_isr.take();
        if fetched.records.is_empty() && request.max_wait_ms > 0 {
            let wait = Duration::from_millis(request.max_wait_ms.into()).min(MAX_WAIT);
            let offset = request.offset;
            let is_follower = follower.is_some();
            wait_for(&replica, wait, |ends| {
                if is_follower {
                    ends.log_end > offset
                } else {
                    ends.high_watermark > offset
                }
            })
            .await;
            fetched = read()?;
            proposal = proposal.or(fetched.outcome.propose_isr.take());
        }
        if let Some(isr) = proposal {
            let epochs = replica.lock().unwrap().leader_epochs();
            if let Some(epochs) = epochs {
                let name = partition_name(&request.topic, request.partition);
                tracing::info!(
                    event = "isr_expand_proposed",
                    partition = name,
                    follower = request.replica,
                    "{name}: {} caught up; proposing ISR [{}]",
                    request.replica,
                    isr.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                tokio::spawn(self.broker.clone().propose_isr(
                    request.topic.clone(),
                    request.partition,
                    isr,
                    epochs,
                ));
            }
        }
        Ok(Response::new(pb::FetchResponse {
            records: Bytes::from(fetched.records),
            high_watermark: fetched.ends.high_watermark,
            log_end: fetched.ends.log_end,
            log_start: fetched.log_start,
            leader_epoch: fetched.leader_epoch,
        }))
    }

    async fn offsets_for_leader_epoch(
        &self,
        request: Request<pb::OffsetsForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetsForLeaderEpochResponse>, Status> {
        let request = request.into_inner();
        let replica = self.replica(&request.topic, request.partition)?;
        let r = replica.lock().unwrap();
        if r.leader_epochs().is_none() {
            return Err(replica_refusal(&ReplicaError::NotLeader(r.name.clone())));
        }
        let answer = r
            .log()
            .epochs()
            .end_of(request.leader_epoch, r.log().log_end_offset());
        Ok(Response::new(match answer {
            Some((leader_epoch, end_offset)) => pb::OffsetsForLeaderEpochResponse {
                found: true,
                leader_epoch,
                end_offset,
            },
            None => pb::OffsetsForLeaderEpochResponse::default(),
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        let request = request.into_inner();
        let replica = self.replica(&request.topic, request.partition)?;
        let r = replica.lock().unwrap();
        if r.leader_epochs().is_none() {
            return Err(replica_refusal(&ReplicaError::NotLeader(r.name.clone())));
        }
        let offset_for_timestamp = match request.timestamp {
            Some(ts) => r
                .log()
                .offset_for_timestamp(ts)
                .map_err(|e| Status::internal(format!("{e:#}")))?,
            None => None,
        };
        let ends = r.ends();
        Ok(Response::new(pb::ListOffsetsResponse {
            log_start: r.log().log_start_offset(),
            high_watermark: ends.high_watermark,
            log_end: ends.log_end,
            offset_for_timestamp,
        }))
    }

    async fn init_producer_id(
        &self,
        _request: Request<pb::InitProducerIdRequest>,
    ) -> Result<Response<pb::InitProducerIdResponse>, Status> {
        if self.broker.epoch.load(Ordering::Relaxed) == 0 {
            return Err(Status::unavailable(
                "not registered with the controller yet",
            ));
        }
        let id = self.broker.next_producer_id().await?;
        Ok(Response::new(pb::InitProducerIdResponse {
            producer_id: id as i64,
            producer_epoch: 0,
        }))
    }

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::ClusterMetadata>, Status> {
        let request = request.into_inner();
        let mut metadata = self.broker.subscribe_metadata();
        let wait = Duration::from_millis(request.max_wait_ms.into()).min(MAX_WAIT);
        let after = request.after_version;
        let _ = tokio::time::timeout(wait, metadata.wait_for(|m| m.version > after)).await;
        let current = metadata.borrow().clone();
        Ok(Response::new(current))
    }
}
