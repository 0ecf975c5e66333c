//! The controller's gRPC API (`log.v1.Controller`) and the leader's fencing loop.
//!
//! Every request is served by the leader only: a follower answers "not the leader" naming it
//! (`distlab_raft::leader`). Changes are proposed to Raft as [`Command`]s and answered with
//! their [`Outcome`] once committed and applied; heartbeats are not: the leader keeps them in
//! memory ([`Liveness`]) and proposes a fence when a broker's session runs out, an unfence
//! when a fenced broker heartbeats again. Leadership changes that follow are logged as
//! timeline events (`leader_elected`, `partition_offline`, `unclean_election`,
//! `broker_fenced`, `broker_unfenced`, `broker_registered`, `isr_changed`, `topic_created`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlab_proto::log::v1 as pb;
use distlab_raft::{Names, RaftId};
use distlab_runtime::clock::Every;
use openraft::ServerState;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::liveness::{Heard, Liveness};
use super::metadata::{
    Command, Election, Metadata, MetadataError, Outcome, Partition, Topic, TopicConfig,
};
use super::{MetadataMachine, Raft};

/// The metadata that names what a refusal refused (`stale_broker_epoch`...).
pub const ERROR_KIND: &str = "log-error";

/// Proposals not committed in this long are answered UNAVAILABLE (the caller retries).
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// The longest a metadata long-poll waits.
pub const MAX_METADATA_WAIT: Duration = Duration::from_secs(30);

pub struct ControllerApi {
    pub raft: Raft,
    pub me: RaftId,
    pub names: Names,
    pub machine: MetadataMachine,
    pub liveness: Arc<LeaderLiveness>,
    /// Whether a topic created without saying allows unclean leader election.
    pub unclean_by_default: bool,
}

/// The leader's liveness tracking: present while this controller leads.
pub struct LeaderLiveness {
    pub session_timeout: Duration,
    /// The clock heartbeat times are measured on.
    started: Instant,
    tracking: Mutex<Option<Liveness>>,
}

impl LeaderLiveness {
    pub fn new(session_timeout: Duration) -> Self {
        Self {
            session_timeout,
            started: Instant::now(),
            tracking: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    /// Runs `f` on the tracking, starting it if this controller just became leader.
    fn with<T>(&self, f: impl FnOnce(&mut Liveness, i64) -> T) -> T {
        let now = self.now_ms();
        let mut tracking = self.tracking.lock().unwrap();
        let live = tracking
            .get_or_insert_with(|| Liveness::new(self.session_timeout.as_millis() as i64, now));
        f(live, now)
    }

    /// This controller no longer leads: a later leadership starts afresh.
    fn forget(&self) {
        self.tracking.lock().unwrap().take();
    }
}

impl ControllerApi {
    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Refuses unless this controller leads.
    fn leader_only(&self) -> Result<(), Status> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state == ServerState::Leader {
            return Ok(());
        }
        let forward = ForwardToLeader {
            leader_id: metrics.current_leader,
            leader_node: None,
        };
        Err(distlab_raft::leader::not_leader(&forward, &self.names))
    }

    /// Proposes `command` and returns its outcome once applied; a refusal is an error.
    pub async fn propose(&self, command: Command) -> Result<Outcome, Status> {
        let written = tokio::time::timeout(WAIT_LIMIT, self.raft.client_write(command))
            .await
            .map_err(|_| Status::unavailable("the change was not committed in time"))?;
        match written {
            Ok(response) => match response.data {
                Outcome::Refused { error } => Err(refusal(&error)),
                outcome => Ok(outcome),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(distlab_raft::leader::not_leader(&forward, &self.names))
            }
            Err(e) => Err(Status::unavailable(format!("raft: {e}"))),
        }
    }

    fn metadata(&self) -> pb::ClusterMetadata {
        let version = self.machine.applied().map_or(0, |id| id.index);
        self.machine
            .read(|m| cluster_metadata(m, version, &self.names.name(self.me)))
    }
}

/// A refusal as a gRPC status: the code, the message, and [`ERROR_KIND`].
pub fn refusal(error: &MetadataError) -> Status {
    let (code, kind) = match error {
        MetadataError::UnknownBroker(_) => (tonic::Code::FailedPrecondition, "unknown_broker"),
        MetadataError::StaleBrokerEpoch { .. } => {
            (tonic::Code::FailedPrecondition, "stale_broker_epoch")
        }
        MetadataError::TopicExists(_) => (tonic::Code::AlreadyExists, "topic_exists"),
        MetadataError::InvalidTopic(_) => (tonic::Code::InvalidArgument, "invalid_topic"),
        MetadataError::NotEnoughBrokers { .. } => {
            (tonic::Code::FailedPrecondition, "not_enough_brokers")
        }
        MetadataError::UnknownTopicOrPartition { .. } => {
            (tonic::Code::NotFound, "unknown_topic_or_partition")
        }
        MetadataError::NotLeader { .. } => (tonic::Code::FailedPrecondition, "not_leader"),
        MetadataError::FencedLeaderEpoch { .. } => {
            (tonic::Code::FailedPrecondition, "fenced_leader_epoch")
        }
        MetadataError::InvalidUpdateVersion { .. } => {
            (tonic::Code::FailedPrecondition, "invalid_update_version")
        }
        MetadataError::IneligibleReplica(_) => {
            (tonic::Code::FailedPrecondition, "ineligible_replica")
        }
        MetadataError::InvalidRequest(_) => (tonic::Code::InvalidArgument, "invalid_request"),
    };
    let mut status = Status::new(code, error.to_string());
    status
        .metadata_mut()
        .insert(ERROR_KIND, kind.parse().expect("kinds are ASCII"));
    status
}

/// The kind of refusal `status` is ([`ERROR_KIND`]), if it is one.
pub fn refusal_kind(status: &Status) -> Option<&str> {
    status.metadata().get(ERROR_KIND)?.to_str().ok()
}

pub fn partition_info(index: u32, p: &Partition) -> pb::PartitionInfo {
    pb::PartitionInfo {
        partition: index,
        replicas: p.replicas.clone(),
        leader: p.leader.clone(),
        leader_epoch: p.leader_epoch,
        isr: p.isr.clone(),
        partition_epoch: p.partition_epoch,
    }
}

pub fn topic_info(name: &str, topic: &Topic) -> pb::TopicInfo {
    pb::TopicInfo {
        name: name.to_string(),
        min_insync_replicas: topic.config.min_insync_replicas,
        unclean_leader_election: topic.config.unclean_leader_election,
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| partition_info(i as u32, p))
            .collect(),
    }
}

pub fn cluster_metadata(m: &Metadata, version: u64, controller: &str) -> pb::ClusterMetadata {
    pb::ClusterMetadata {
        version,
        controller: controller.to_string(),
        brokers: m
            .brokers
            .iter()
            .map(|(name, b)| pb::BrokerInfo {
                name: name.clone(),
                epoch: b.epoch,
                address: b.address.clone(),
                fenced: b.fenced,
            })
            .collect(),
        topics: m
            .topics
            .iter()
            .map(|(name, t)| topic_info(name, t))
            .collect(),
        unclean_elections: m.unclean_elections,
    }
}

/// Logs leadership changes as timeline events.
fn log_elections(elections: &[Election], cause: &str) {
    for e in elections {
        let partition = format!("{}/{}", e.topic, e.partition);
        match &e.leader {
            Some(leader) if e.unclean => tracing::warn!(
                event = "unclean_election",
                partition,
                leader,
                leader_epoch = e.leader_epoch,
                "{partition}: {leader} leads uncleanly (not in the ISR; {cause}): messages only the ISR held are lost"
            ),
            Some(leader) => tracing::info!(
                event = "leader_elected",
                partition,
                leader,
                leader_epoch = e.leader_epoch,
                "{partition}: {leader} leads in epoch {} ({cause})",
                e.leader_epoch
            ),
            None => tracing::warn!(
                event = "partition_offline",
                partition,
                leader_epoch = e.leader_epoch,
                "{partition}: offline, no live in-sync replica ({cause})"
            ),
        }
    }
}

fn elections_of(outcome: &Outcome) -> &[Election] {
    match outcome {
        Outcome::Registered { elections, .. }
        | Outcome::Fenced { elections }
        | Outcome::Unfenced { elections } => elections,
        _ => &[],
    }
}

fn check_broker_name(name: &str) -> Result<(), Status> {
    distlab_runtime::cli::NodeId::parse(name)
        .map(|_| ())
        .map_err(|e| Status::invalid_argument(format!("broker: {e}")))
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ControllerApi {
    async fn register_broker(
        &self,
        request: Request<pb::RegisterBrokerRequest>,
    ) -> Result<Response<pb::RegisterBrokerResponse>, Status> {
        let request = request.into_inner();
        check_broker_name(&request.broker)?;
        request
            .address
            .parse::<std::net::SocketAddr>()
            .map_err(|e| Status::invalid_argument(format!("address {:?}: {e}", request.address)))?;
        self.leader_only()?;
        let broker = request.broker.clone();
        let outcome = self
            .propose(Command::RegisterBroker {
                broker: request.broker,
                address: request.address.clone(),
                now_ms: request.now_ms,
            })
            .await?;
        let Outcome::Registered { epoch, .. } = &outcome else {
            return Err(Status::internal(format!(
                "registration answered {outcome:?}"
            )));
        };
        let epoch = *epoch;
        self.liveness
            .with(|live, now| live.registered(&broker, epoch, now));
        tracing::info!(
            event = "broker_registered",
            broker,
            epoch,
            address = request.address,
            "{broker} registered (epoch {epoch})"
        );
        log_elections(elections_of(&outcome), &format!("{broker} registered"));
        Ok(Response::new(pb::RegisterBrokerResponse { epoch }))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let request = request.into_inner();
        self.leader_only()?;
        let heard = self.machine.read(|m| {
            self.liveness
                .with(|live, now| live.heartbeat(m, &request.broker, request.epoch, now))
        });
        match heard {
            Heard::Alive => Ok(Response::new(pb::BrokerHeartbeatResponse { fenced: false })),
            Heard::Unfence => {
                let outcome = self
                    .propose(Command::UnfenceBroker {
                        broker: request.broker.clone(),
                        epoch: request.epoch,
                    })
                    .await?;
                let broker = &request.broker;
                tracing::info!(
                    event = "broker_unfenced",
                    broker,
                    "{broker} heartbeats again: unfenced"
                );
                log_elections(elections_of(&outcome), &format!("{broker} is back"));
                Ok(Response::new(pb::BrokerHeartbeatResponse { fenced: true }))
            }
            Heard::Stale { current } => Err(refusal(&match current {
                Some(current) => MetadataError::StaleBrokerEpoch {
                    broker: request.broker,
                    given: request.epoch,
                    current,
                },
                None => MetadataError::UnknownBroker(request.broker),
            })),
        }
    }

    async fn shutdown_broker(
        &self,
        request: Request<pb::BrokerHeartbeatRequest>,
    ) -> Result<Response<pb::BrokerHeartbeatResponse>, Status> {
        let request = request.into_inner();
        self.leader_only()?;
        let broker = request.broker.clone();
        let outcome = self
            .propose(Command::FenceBroker {
                broker: request.broker,
                epoch: request.epoch,
                reason: "shutting down".into(),
            })
            .await?;
        tracing::info!(
            event = "broker_fenced",
            broker,
            reason = "shutting down",
            "{broker} is shutting down: fenced"
        );
        log_elections(elections_of(&outcome), &format!("{broker} shut down"));
        Ok(Response::new(pb::BrokerHeartbeatResponse { fenced: true }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let request = request.into_inner();
        self.leader_only()?;
        let config = TopicConfig {
            min_insync_replicas: request.min_insync_replicas.max(1),
            unclean_leader_election: request
                .unclean_leader_election
                .unwrap_or(self.unclean_by_default),
        };
        let name = request.name.clone();
        let outcome = self
            .propose(Command::CreateTopic {
                name: request.name,
                partitions: request.partitions,
                replication_factor: request.replication_factor,
                config,
            })
            .await?;
        let Outcome::TopicCreated { partitions } = outcome else {
            return Err(Status::internal(format!("creation answered {outcome:?}")));
        };
        tracing::info!(
            event = "topic_created",
            topic = name,
            partitions = partitions.len(),
            "topic {name} created"
        );
        let topic = Topic { config, partitions };
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(topic_info(&name, &topic)),
        }))
    }

    async fn alter_partition(
        &self,
        request: Request<pb::AlterPartitionRequest>,
    ) -> Result<Response<pb::AlterPartitionResponse>, Status> {
        let request = request.into_inner();
        self.leader_only()?;
        let (topic, index) = (request.topic.clone(), request.partition);
        let before = self
            .machine
            .read(|m| m.partition(&topic, index).map(|p| p.isr.clone()));
        let outcome = self
            .propose(Command::AlterPartition {
                topic: request.topic,
                partition: request.partition,
                leader: request.leader,
                broker_epoch: request.broker_epoch,
                leader_epoch: request.leader_epoch,
                partition_epoch: request.partition_epoch,
                isr: request.isr,
            })
            .await?;
        let Outcome::PartitionAltered { partition } = outcome else {
            return Err(Status::internal(format!("alter answered {outcome:?}")));
        };
        let before = before.unwrap_or_default();
        let change = if partition.isr.len() < before.len() {
            "shrank"
        } else {
            "expanded"
        };
        let name = format!("{topic}/{index}");
        tracing::info!(
            event = "isr_changed",
            partition = name,
            isr = partition.isr.join(","),
            change,
            "{name}: ISR {change} to [{}]",
            partition.isr.join(", ")
        );
        Ok(Response::new(pb::AlterPartitionResponse {
            partition: Some(partition_info(index, &partition)),
        }))
    }

    async fn allocate_producer_ids(
        &self,
        request: Request<pb::AllocateProducerIdsRequest>,
    ) -> Result<Response<pb::AllocateProducerIdsResponse>, Status> {
        let count = request.into_inner().count;
        self.leader_only()?;
        match self.propose(Command::AllocateProducerIds { count }).await? {
            Outcome::ProducerIds { first, count } => {
                Ok(Response::new(pb::AllocateProducerIdsResponse {
                    first,
                    count,
                }))
            }
            other => Err(Status::internal(format!("allocation answered {other:?}"))),
        }
    }

    async fn metadata(
        &self,
        request: Request<pb::MetadataRequest>,
    ) -> Result<Response<pb::ClusterMetadata>, Status> {
        let request = request.into_inner();
        self.leader_only()?;
        let wait = Duration::from_millis(request.max_wait_ms.into()).min(MAX_METADATA_WAIT);
        let mut applied = self.machine.subscribe();
        let newer = applied.wait_for(|id| id.map_or(0, |id| id.index) > request.after_version);
        // Either way the answer is the metadata as it is then.
        let _ = tokio::time::timeout(wait, newer).await;
        self.leader_only()?;
        Ok(Response::new(self.metadata()))
    }
}

/// While this controller leads: fences brokers whose session ran out. Runs until `shutdown`.
pub async fn fence_silent_brokers(api: Arc<ControllerApi>, shutdown: CancellationToken) {
    let mut every = Every::new(Duration::from_millis(100), &shutdown);
    while every.tick().await {
        if !api.is_leader() {
            api.liveness.forget();
            continue;
        }
        let expired = api
            .machine
            .read(|m| api.liveness.with(|live, now| live.expired(m, now)));
        for (broker, epoch) in expired {
            let timeout = api.liveness.session_timeout;
            let reason = format!(
                "no heartbeat for {}",
                distlab_runtime::duration::format(timeout)
            );
            match api
                .propose(Command::FenceBroker {
                    broker: broker.clone(),
                    epoch,
                    reason: reason.clone(),
                })
                .await
            {
                Ok(outcome) => {
                    tracing::warn!(
                        event = "broker_fenced",
                        broker,
                        reason,
                        "{broker} fenced: {reason}"
                    );
                    log_elections(elections_of(&outcome), &format!("{broker} fenced"));
                }
                Err(status) => tracing::info!(
                    broker,
                    error = %distlab_runtime::rpc::describe(&status),
                    "fencing failed; trying again"
                ),
            }
        }
    }
}
