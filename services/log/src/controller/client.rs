//! Calling the controller quorum: brokers (register, heartbeat, ISR changes, metadata) and the
//! `log` CLI (topics) reach whichever controller leads, following its hints
//! (`distlab_raft::leader::LeaderClient`).

use std::net::SocketAddr;
use std::time::Duration;

use distlab_proto::log::v1 as pb;
use distlab_raft::leader::{LeaderClient, with_timeout};
use distlab_runtime::retry::RetryPolicy;
use tonic::Status;

type Rpc = pb::controller_client::ControllerClient<distlab_runtime::channel::TracedChannel>;

#[derive(Clone)]
pub struct ControllerClient {
    cluster: LeaderClient<Rpc>,
}

/// A long poll waits at most this much less than the attempt timeout, so its answer arrives
/// before the attempt gives up.
const POLL_MARGIN: Duration = Duration::from_millis(500);

impl ControllerClient {
    /// A client of the controllers `nodes` (name, address). Connects lazily.
    pub fn connect_lazy(
        nodes: &[(String, SocketAddr)],
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            cluster: LeaderClient::connect_lazy(nodes, policy, Rpc::new)?,
        })
    }

    /// The controller this client currently sends to.
    pub fn leader_guess(&self) -> String {
        self.cluster.leader_guess()
    }

    /// Registers broker `broker` reachable at `address`; its new broker epoch.
    pub async fn register_broker(
        &self,
        broker: &str,
        address: &str,
        now_ms: i64,
    ) -> Result<u64, Status> {
        let request = pb::RegisterBrokerRequest {
            broker: broker.to_string(),
            address: address.to_string(),
            now_ms,
        };
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move {
                rpc.register_broker(r).await
            })
            .await?;
        Ok(reply.epoch)
    }

    /// Says broker `broker` (registration `epoch`) is alive; whether it was fenced.
    pub async fn heartbeat(&self, broker: &str, epoch: u64) -> Result<bool, Status> {
        let request = pb::BrokerHeartbeatRequest {
            broker: broker.to_string(),
            epoch,
        };
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move {
                rpc.broker_heartbeat(r).await
            })
            .await?;
        Ok(reply.fenced)
    }

    /// Broker `broker` stops: fence it now.
    pub async fn shutdown_broker(&self, broker: &str, epoch: u64) -> Result<(), Status> {
        let request = pb::BrokerHeartbeatRequest {
            broker: broker.to_string(),
            epoch,
        };
        self.cluster
            .unary(&request, |mut rpc, r| async move {
                rpc.shutdown_broker(r).await
            })
            .await?;
        Ok(())
    }

    pub async fn create_topic(
        &self,
        request: pb::CreateTopicRequest,
    ) -> Result<pb::TopicInfo, Status> {
        let reply = self
            .cluster
            .unary(
                &request,
                |mut rpc, r| async move { rpc.create_topic(r).await },
            )
            .await?;
        reply
            .topic
            .ok_or_else(|| Status::internal("the controller answered without the topic"))
    }

    pub async fn alter_partition(
        &self,
        request: pb::AlterPartitionRequest,
    ) -> Result<pb::PartitionInfo, Status> {
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move {
                rpc.alter_partition(r).await
            })
            .await?;
        reply
            .partition
            .ok_or_else(|| Status::internal("the controller answered without the partition"))
    }

    /// A block of producer ids: (first, count).
    pub async fn allocate_producer_ids(&self, count: u64) -> Result<(u64, u64), Status> {
        let request = pb::AllocateProducerIdsRequest { count };
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move {
                rpc.allocate_producer_ids(r).await
            })
            .await?;
        Ok((reply.first, reply.count))
    }

    /// The metadata once newer than `after_version`, waiting up to `max_wait` (less than the
    /// policy's attempt timeout); then the current one.
    pub async fn metadata(
        &self,
        after_version: u64,
        max_wait: Duration,
    ) -> Result<pb::ClusterMetadata, Status> {
        self.cluster
            .call(|mut rpc, attempt| {
                let wait = max_wait.min(attempt.timeout.saturating_sub(POLL_MARGIN));
                let request = with_timeout(
                    pb::MetadataRequest {
                        after_version,
                        max_wait_ms: wait.as_millis() as u32,
                    },
                    attempt,
                );
                async move { rpc.metadata(request).await }
            })
            .await
    }
}
