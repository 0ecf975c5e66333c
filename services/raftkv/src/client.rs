//! The Project 2 client library: talks to a cluster, not a node.
//!
//! It knows every node's address and guesses which is the leader. A follower's answer names
//! the leader (`raft-leader` metadata) and the next attempt goes there; a node that does not
//! answer makes it try the next one. Every call runs under the shared [`RetryPolicy`].
//! Mutations carry a session (this client's random id, a sequence number per logical call,
//! the same on every retry), so a retry of a write that did commit is answered from the state
//! machine's memory, not applied twice: that is what makes retrying writes, and cas, safe.
//! One client handle is one session: run one mutation at a time on it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use distlab_proto::raftkv::v1 as pb;
use distlab_runtime::retry::{Attempt, ClientMetrics, Idempotence, RetryPolicy};
use prost::bytes::Bytes;
use tonic::Status;

use crate::server::LEADER_HINT;

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
    nodes: Arc<Vec<(String, Rpc)>>,
    /// Index in `nodes` of the node believed to lead.
    leader: Arc<AtomicUsize>,
    policy: RetryPolicy,
    metrics: ClientMetrics,
    session: u64,
    seq: Arc<AtomicU64>,
}

impl RaftKvClient {
    /// A client of the cluster whose nodes are `nodes` (name, address). Connects lazily.
    pub fn connect_lazy(
        nodes: &[(String, SocketAddr)],
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let rpcs = distlab_runtime::channel::per_node(nodes, &policy)?
            .into_iter()
            .map(|(name, channel)| (name, pb::raft_kv_client::RaftKvClient::new(channel)))
            .collect();
        Ok(Self {
            nodes: Arc::new(rpcs),
            leader: Arc::new(AtomicUsize::new(0)),
            policy,
            metrics: ClientMetrics::default(),
            session: rand::random(),
            seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Another client of the same cluster over the same connections, with its own session
    /// (and its own leader guess): many concurrent clients need not open many connections.
    pub fn new_session(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            leader: Arc::new(AtomicUsize::new(self.leader.load(Ordering::Relaxed))),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
            session: rand::random(),
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    /// The node this client currently sends to.
    pub fn leader_guess(&self) -> String {
        self.nodes[self.leader.load(Ordering::Relaxed) % self.nodes.len()]
            .0
            .clone()
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
            .call(|mut rpc, attempt| {
                let request = with_timeout(request.clone(), attempt);
                async move { rpc.put(request).await }
            })
            .await?;
        Ok(reply.index)
    }

    /// The value of `key`, as the cluster's read mode reads it.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Status> {
        let request = pb::GetRequest {
            key: key.to_string(),
        };
        let reply = self
            .call(|mut rpc, attempt| {
                let request = with_timeout(request.clone(), attempt);
                async move { rpc.get(request).await }
            })
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
            .call(|mut rpc, attempt| {
                let request = with_timeout(request.clone(), attempt);
                async move { rpc.delete(request).await }
            })
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
            .call(|mut rpc, attempt| {
                let request = with_timeout(request.clone(), attempt);
                async move { rpc.compare_and_set(request).await }
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
        self.call(|mut rpc, attempt| {
            let request = with_timeout(request.clone(), attempt);
            async move { rpc.add_member(request).await }
        })
        .await
    }

    /// Removes node `id` from the voters.
    pub async fn remove_member(&self, id: &str) -> Result<pb::MembershipResponse, Status> {
        let request = pb::MemberRequest { id: id.to_string() };
        self.call(|mut rpc, attempt| {
            let request = with_timeout(request.clone(), attempt);
            async move { rpc.remove_member(request).await }
        })
        .await
    }

    /// Node `name`'s own view of the cluster.
    pub async fn status_of(&self, name: &str) -> Result<pb::StatusResponse, Status> {
        let Some((_, rpc)) = self.nodes.iter().find(|(n, _)| n == name) else {
            return Err(Status::invalid_argument(format!("no node called {name}")));
        };
        let mut request = tonic::Request::new(pb::StatusRequest {});
        request.set_timeout(self.policy.attempt_timeout);
        Ok(rpc.clone().status(request).await?.into_inner())
    }

    /// Runs one call under the retry policy, at the node believed to lead, following leader
    /// hints and moving on from nodes that do not answer.
    ///
    /// A node that did not answer during this call is not tried again in it while another
    /// node might answer, and a hint naming it is ignored: a follower cut off with an old
    /// leader still names that leader, and following the hint back to it would loop between
    /// the two until the deadline while the majority, with its new leader, is one hop away.
    async fn call<T, F, Fut>(&self, mut attempt_fn: F) -> Result<T, Status>
    where
        F: FnMut(Rpc, Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.nodes.len();
        let silent = Silent::default();
        // The node of an attempt the policy's own timer cut off (it never returned here).
        let unanswered = AtomicUsize::new(NONE);
        self.policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                let cut_off = unanswered.swap(NONE, Ordering::Relaxed);
                if cut_off != NONE {
                    silent.mark(cut_off);
                    self.move_on(cut_off, None, &silent);
                }
                let index = self.leader.load(Ordering::Relaxed) % n;
                unanswered.store(index, Ordering::Relaxed);
                let (name, rpc) = &self.nodes[index];
                let fut = attempt_fn(rpc.clone(), attempt);
                let (silent, unanswered) = (&silent, &unanswered);
                async move {
                    let result = fut.await;
                    unanswered.store(NONE, Ordering::Relaxed);
                    match result {
                        Ok(reply) => Ok(reply.into_inner()),
                        Err(status) => Err(self.redirect(index, name, status, silent)),
                    }
                }
            })
            .await
    }

    /// After a failed attempt at node `index`: where to go next, and whether to retry (a
    /// redirect is retried: the answer was "not here", not "failed").
    fn redirect(&self, index: usize, name: &str, status: Status, silent: &Silent) -> Status {
        let not_leader = status.metadata().contains_key(LEADER_HINT);
        if !not_leader {
            if !distlab_runtime::retry::is_retryable(&status) {
                return status;
            }
            silent.mark(index);
        }
        let hint = status
            .metadata()
            .get(LEADER_HINT)
            .and_then(|v| v.to_str().ok())
            .and_then(|leader| self.nodes.iter().position(|(n, _)| n == leader));
        self.move_on(index, hint, silent);
        if not_leader {
            Status::unavailable(format!("{name}: {}", status.message()))
        } else {
            status
        }
    }

    /// Points the client away from node `index`: at `hint` if it may answer, else at the
    /// next node that has not been silent in this call (or simply the next one, if all were).
    fn move_on(&self, index: usize, hint: Option<usize>, silent: &Silent) {
        let n = self.nodes.len();
        let next = match hint {
            Some(leader) if leader != index && !silent.has(leader) => leader,
            _ => (1..=n)
                .map(|step| (index + step) % n)
                .find(|&i| i != index && !silent.has(i))
                .unwrap_or((index + 1) % n),
        };
        let _ = self
            .leader
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// No attempt in flight.
const NONE: usize = usize::MAX;

/// The nodes that did not answer during one call (a bit per node; a cluster has at most 18).
#[derive(Default)]
struct Silent(AtomicU64);

impl Silent {
    fn mark(&self, index: usize) {
        self.0.fetch_or(1 << (index % 64), Ordering::Relaxed);
    }

    fn has(&self, index: usize) -> bool {
        self.0.load(Ordering::Relaxed) & (1 << (index % 64)) != 0
    }
}

fn with_timeout<T>(message: T, attempt: Attempt) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(attempt.timeout);
    request
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
