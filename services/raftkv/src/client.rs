//! The Project 2 client library: talks to a cluster, not a node.
//!
//! It knows every node's address and guesses which is the leader. A follower's answer names
//! the leader (`raft-leader` metadata) and the next attempt goes there; a node that does not
//! answer makes it try the next one (`distlab_raft::leader::LeaderClient`). Every call runs
//! under the shared [`RetryPolicy`].
//! Mutations carry a session (this client's random id, a sequence number per logical call,
//! the same on every retry), so a retry of a write that did commit is answered from the state
//! machine's memory, not applied twice: that is what makes retrying writes, and cas, safe.
//! One client handle is one session: run one mutation at a time on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use distlab_proto::raftkv::v1 as pb;
use distlab_raft::leader::LeaderClient;
use distlab_runtime::retry::{ClientMetrics, RetryPolicy};
use prost::bytes::Bytes;
use tonic::Status;

type Rpc = pb::raft_kv_client::RaftKvClient<distlab_runtime::channel::TracedChannel>;

/// Outcome of a compare-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasOutcome {
    pub swapped: bool,
    /// The value before the operation, if the key existed.
    pub current: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct RaftKvClient {
    cluster: LeaderClient<Rpc>,
    session: u64,
    seq: Arc<AtomicU64>,
}

impl RaftKvClient {
    /// A client of the cluster whose nodes are `nodes` (name, address). Connects lazily.
    pub fn connect_lazy(
        nodes: &[(String, SocketAddr)],
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            cluster: LeaderClient::connect_lazy(nodes, policy, Rpc::new)?,
            session: rand::random(),
            seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Another client of the same cluster over the same connections, with its own session
    /// (and its own leader guess): many concurrent clients need not open many connections.
    pub fn new_session(&self) -> Self {
        Self {
            cluster: self.cluster.fork(),
            session: rand::random(),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn metrics(&self) -> &ClientMetrics {
        self.cluster.metrics()
    }

    /// The node this client currently sends to.
    pub fn leader_guess(&self) -> String {
        self.cluster.leader_guess()
    }

    fn next_session(&self) -> Option<pb::Session> {
        Some(pb::Session {
            client: self.session,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64, Status> {
        let request = pb::PutRequest {
            key: key.to_string(),
            value: value.into(),
            session: self.next_session(),
        };
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move { rpc.put(r).await })
            .await?;
        Ok(reply.index)
    }

    /// The value of `key`, as the cluster's read mode reads it.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Status> {
        let request = pb::GetRequest {
            key: key.to_string(),
        };
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move { rpc.get(r).await })
            .await?;
        Ok(reply.found.then(|| reply.value.to_vec()))
    }

    /// Removes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Status> {
        let request = pb::DeleteRequest {
            key: key.to_string(),
            session: self.next_session(),
        };
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move { rpc.delete(r).await })
            .await?;
        Ok(reply.existed)
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: if it is absent).
    pub async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: impl Into<Bytes>,
    ) -> Result<CasOutcome, Status> {
        let request = pb::CompareAndSetRequest {
            key: key.to_string(),
            expected: expected.map(Bytes::from),
            new_value: new.into(),
            session: self.next_session(),
        };
        let reply = self
            .cluster
            .unary(&request, |mut rpc, r| async move {
                rpc.compare_and_set(r).await
            })
            .await?;
        Ok(CasOutcome {
            swapped: reply.swapped,
            current: reply.current.map(|c| c.to_vec()),
        })
    }

    /// Adds node `id` to the cluster (learner, catch-up, voter).
    pub async fn add_member(&self, id: &str) -> Result<pb::MembershipResponse, Status> {
        let request = pb::MemberRequest { id: id.to_string() };
        self.cluster
            .unary(
                &request,
                |mut rpc, r| async move { rpc.add_member(r).await },
            )
            .await
    }

    /// Removes node `id` from the voters.
    pub async fn remove_member(&self, id: &str) -> Result<pb::MembershipResponse, Status> {
        let request = pb::MemberRequest { id: id.to_string() };
        self.cluster
            .unary(
                &request,
                |mut rpc, r| async move { rpc.remove_member(r).await },
            )
            .await
    }

    /// Node `name`'s own view of the cluster.
    pub async fn status_of(&self, name: &str) -> Result<pb::StatusResponse, Status> {
        let Some(mut rpc) = self.cluster.node(name) else {
            return Err(Status::invalid_argument(format!("no node called {name}")));
        };
        let mut request = tonic::Request::new(pb::StatusRequest {});
        request.set_timeout(self.cluster.policy().attempt_timeout);
        Ok(rpc.status(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A node behind a proxy that lost it: the connection is accepted, then closed under the
    /// request. tonic calls that `Unknown` ("transport error"); the client must treat it as
    /// silence and try again (elsewhere, with more nodes), not give up on the call.
    #[tokio::test]
    async fn a_connection_closed_under_a_request_is_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                // Read what the client sends first, so its request is on the wire.
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                drop(socket);
            }
        });
        let policy = RetryPolicy {
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(3),
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            ..RetryPolicy::default()
        };
        let client = RaftKvClient::connect_lazy(&[("n1".into(), addr)], policy).unwrap();
        let result = client.get("k").await;
        closer.abort();
        assert!(result.is_err());
        assert_eq!(
            client.metrics().attempts(),
            3,
            "the broken connection was not retried: {result:?}"
        );
    }
}
