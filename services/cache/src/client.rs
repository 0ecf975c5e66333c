//! The client library for `cache.v1`: any node serves any key, so a client talks to one node
//! and moves to the next when that one fails (with the shared retry policy's backoff).
//!
//! Writes are stamped here, once, with a version from the client's hybrid clock (as
//! Cassandra's drivers stamp theirs): every retry carries the same one, so a copy of the
//! request that reaches a node late (it was frozen, the client moved on) loses to whatever was
//! written after it instead of overwriting it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use distlab_proto::cache::v1 as pb;
use distlab_runtime::retry::{ClientMetrics, Idempotence, RetryPolicy};
use tonic::Status;

use crate::clock::HybridClock;

type Rpc = pb::cache_client::CacheClient<distlab_runtime::channel::TracedChannel>;

/// An item as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub value: Bytes,
    pub flags: u32,
    pub version: u64,
}

#[derive(Clone)]
pub struct CacheClient {
    nodes: Arc<Vec<(String, Rpc)>>,
    /// Index in `nodes` of the node this client talks to now.
    current: Arc<AtomicUsize>,
    policy: RetryPolicy,
    metrics: ClientMetrics,
    /// Where write versions come from (shared by every client over these connections).
    clock: Arc<HybridClock>,
}

impl CacheClient {
    /// A client of the nodes `nodes` (name, gRPC address). Connects lazily.
    pub fn connect_lazy(
        nodes: &[(String, SocketAddr)],
        policy: RetryPolicy,
    ) -> anyhow::Result<Self> {
        let rpcs = distlab_runtime::channel::per_node(nodes, &policy)?
            .into_iter()
            .map(|(name, channel)| (name, pb::cache_client::CacheClient::new(channel)))
            .collect();
        Ok(Self {
            nodes: Arc::new(rpcs),
            current: Arc::new(AtomicUsize::new(0)),
            policy,
            metrics: ClientMetrics::default(),
            clock: Arc::new(HybridClock::default()),
        })
    }

    /// Another client over the same connections that starts at node `index` (so many
    /// clients spread over the nodes) and moves on by itself.
    pub fn starting_at(&self, index: usize) -> Self {
        Self {
            current: Arc::new(AtomicUsize::new(index % self.nodes.len())),
            ..self.clone()
        }
    }

    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    /// The node this client talks to now.
    pub fn node(&self) -> &str {
        &self.nodes[self.current.load(Ordering::Relaxed) % self.nodes.len()].0
    }

    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Found>, Status> {
        let key = key.into();
        let reply = self
            .call(|mut rpc, timeout| {
                let request = with_timeout(pb::GetRequest { key: key.clone() }, timeout);
                async move { rpc.get(request).await }
            })
            .await?;
        Ok(reply.found.then_some(Found {
            value: reply.value,
            flags: reply.flags,
            version: reply.version,
        }))
    }

    /// Stores `value` under `key`, expiring after `ttl` (whole seconds, rounded up) if given.
    pub async fn set(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        ttl: Option<Duration>,
    ) -> Result<(), Status> {
        let (key, value) = (key.into(), value.into());
        let ttl_ms = ttl.map_or(0, |t| (t.as_millis() as u64).max(1));
        let version = self.clock.stamp();
        self.call(|mut rpc, timeout| {
            let message = pb::SetRequest {
                key: key.clone(),
                value: value.clone(),
                flags: 0,
                ttl_ms,
                version,
            };
            let request = with_timeout(message, timeout);
            async move { rpc.set(request).await }
        })
        .await
        .map(|_| ())
    }

    /// Deletes `key`; false if there was none.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, Status> {
        let key = key.into();
        let version = self.clock.stamp();
        self.call(|mut rpc, timeout| {
            let message = pb::DeleteRequest {
                key: key.clone(),
                version,
            };
            let request = with_timeout(message, timeout);
            async move { rpc.delete(request).await }
        })
        .await
        .map(|reply| reply.deleted)
    }

    /// One call with the retry policy; a failed attempt moves the client to the next node.
    async fn call<T, F, Fut>(&self, mut attempt_fn: F) -> Result<T, Status>
    where
        F: FnMut(Rpc, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.nodes.len();
        // Set/get/delete of a whole value are safe to repeat.
        self.policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                let index = self.current.load(Ordering::Relaxed) % n;
                let rpc = self.nodes[index].1.clone();
                let fut = attempt_fn(rpc, attempt.timeout);
                async move {
                    let result = fut.await;
                    if let Err(status) = &result
                        && distlab_runtime::retry::is_retryable(status)
                    {
                        let _ = self.current.compare_exchange(
                            index,
                            (index + 1) % n,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    result.map(tonic::Response::into_inner)
                }
            })
            .await
    }
}

/// A request that tells the server how long this attempt may take.
fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
