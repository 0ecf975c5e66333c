//! The peer-facing Raft service (`raft.v1.Raft`): hands openraft's RPCs, JSON in the message
//! body, to the local Raft, and its answers (Raft errors included) back the same way.

use std::time::Instant;

use distlab_proto::raft::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Types;

/// Raft messages up to this size (a batch of entries, a snapshot) cross between peers.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub struct RaftRpc<C: Types> {
    pub raft: openraft::Raft<C>,
    /// Votes are refused until then (see `lease.rs`: a restarted node forgot its leader).
    pub votes_from: Instant,
}

impl<C: Types> RaftRpc<C> {
    /// The service, ready to add to a node's routes, taking messages up to [`MAX_MESSAGE`].
    pub fn service(self) -> pb::raft_server::RaftServer<Self> {
        pb::raft_server::RaftServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

fn decode<T: serde::de::DeserializeOwned>(request: Request<pb::RaftMessage>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().body)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Response<pb::RaftMessage> {
    Response::new(pb::RaftMessage {
        body: serde_json::to_vec(value)
            .expect("raft messages serialize")
            .into(),
    })
}

#[tonic::async_trait]
impl<C: Types> pb::raft_server::Raft for RaftRpc<C> {
    async fn append_entries(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let result = self.raft.append_entries(decode(request)?).await;
        Ok(encode(&result))
    }

    async fn vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        if Instant::now() < self.votes_from {
            return Err(Status::unavailable(
                "just restarted: not voting until an election timeout has passed",
            ));
        }
        let result = self.raft.vote(decode(request)?).await;
        Ok(encode(&result))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let result = self.raft.install_snapshot(decode(request)?).await;
        Ok(encode(&result))
    }
}
