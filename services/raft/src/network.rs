//! Raft's RPCs from this node to its peers, over gRPC (`raft.v1.Raft`).
//!
//! A peer's address always comes from this node's `--peer` table, so under the lab every
//! Raft message crosses the lab's link proxy for that direction and suffers its faults. The
//! bodies are openraft's own messages as JSON; a peer's Raft error comes back in the body and
//! is handed to openraft as a remote error, a transport failure as unreachable (openraft backs
//! off) or as a network error (it retries). Accepted AppendEntries feed the [`LeaseClock`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use distlab_proto::raft::v1 as pb;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::{LeaseClock, Member, RaftId, Types};

type RpcError<E = openraft::error::Infallible> = RPCError<RaftId, Member, RaftError<RaftId, E>>;

/// Makes a client per peer; every client of one peer shares one HTTP/2 connection.
pub struct Network {
    channels: BTreeMap<RaftId, Channel>,
    lease: Arc<LeaseClock>,
}

impl Network {
    /// `peers`: each peer's name and the address this node must use for it.
    pub fn new(peers: &[(String, SocketAddr)], lease: Arc<LeaseClock>) -> anyhow::Result<Self> {
        let mut channels = BTreeMap::new();
        for (name, addr) in peers {
            let channel = distlab_runtime::channel::endpoint(*addr, Duration::from_millis(500))?
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .connect_lazy();
            channels.insert(crate::raft_id(name), channel);
        }
        Ok(Self { channels, lease })
    }
}

impl<C: Types> RaftNetworkFactory<C> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftId, node: &Member) -> PeerClient {
        let channel = self.channels.get(&target).cloned();
        PeerClient {
            target,
            name: node.name.clone(),
            rpc: channel.map(pb::raft_client::RaftClient::new),
            lease: self.lease.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerClient {
    target: RaftId,
    name: String,
    /// `None`: this node has no `--peer` address for it.
    rpc: Option<pb::raft_client::RaftClient<Channel>>,
    lease: Arc<LeaseClock>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(rpc) = self.rpc.as_mut() else {
            let e = TransportError(format!("no --peer address for {}", self.name));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let body = serde_json::to_vec(request).expect("raft messages serialize");
        let mut request = tonic::Request::new(pb::RaftMessage { body: body.into() });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => rpc.append_entries(request).await,
            Method::Vote => rpc.vote(request).await,
            Method::Snapshot => rpc.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let e = TransportError(format!(
                "{} {}: {}",
                method.name(),
                self.name,
                distlab_runtime::rpc::describe(&status)
            ));
            // Unreachable makes openraft back off; a network error is retried at once. A
            // connection the peer's link proxy accepted and then closed (the peer is down) is
            // unreachable too: retried at once, the replication to a dead peer would always
            // be in flight, and openraft does not purge a log that a replication is reading.
            if status.code() == tonic::Code::Unavailable
                || distlab_runtime::retry::connection_lost(&status)
            {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        let result: Result<Resp, RaftError<RaftId, E>> =
            serde_json::from_slice(&reply.into_inner().body).map_err(|e| {
                RPCError::Network(NetworkError::new(&TransportError(format!(
                    "{} {}: undecodable reply: {e}",
                    method.name(),
                    self.name
                ))))
            })?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Append => "append-entries",
            Method::Vote => "vote",
            Method::Snapshot => "install-snapshot",
        }
    }
}

impl<C: Types> RaftNetwork<C> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RpcError> {
        let sent = Instant::now();
        let vote = rpc.vote;
        let response: AppendEntriesResponse<RaftId> =
            self.call(Method::Append, &rpc, &option).await?;
        if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
            self.lease.accepted(self.target, vote, sent);
        }
        Ok(response)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, RpcError<InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RpcError> {
        self.call(Method::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
