//! The client library for `cache.v1`. Any node serves any key, so a plain client
//! ([`CacheClient::connect_lazy`]) talks to one node and moves to the next when that one
//! fails (with the shared retry policy's backoff); the node forwards what it does not hold. A
//! routing client ([`CacheClient::routing`]) follows the ring by gossip
//! ([`crate::ring_watch`]) and sends each key straight to its first live replica, the next
//! one on a failed attempt: no forwarding hop.
//!
//! Writes are stamped here, once, with a version from the client's hybrid clock (as
//! Cassandra's drivers stamp theirs): every retry carries the same one, so a copy of the
//! request that reaches a node late (it was frozen, the client moved on) loses to whatever was
//! written after it instead of overwriting it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use distlab_proto::cache::v1 as pb;
use distlab_runtime::retry::{ClientMetrics, Idempotence, RetryPolicy};
use tonic::Status;

use crate::clock::HybridClock;
use crate::placement::PlacementKind;
use crate::ring_watch::RingWatch;

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
    /// Set for a routing client.
    router: Option<Arc<Router>>,
}

/// How a routing client places keys: the nodes' own settings.
#[derive(Debug, Clone, Copy)]
pub struct Routing {
    /// Replicas per key (N), as the nodes' `--replicas`.
    pub replicas: usize,
    /// As the nodes' `--placement` and `--vnodes`.
    pub placement: PlacementKind,
    /// How often to ask a node for the membership.
    pub watch_every: Duration,
}

/// A routing client's ring, and how often it could use it.
struct Router {
    ring: RingWatch,
    replicas: usize,
    /// Attempts sent to a replica the ring named.
    routed: AtomicU64,
    /// Attempts sent to the current node instead, the ring not known (yet) or naming no
    /// live replica among this client's nodes.
    unrouted: AtomicU64,
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
            router: None,
        })
    }

    /// A client that sends each key to its first live replica by the ring it learns from
    /// `nodes` (their gossip listens on their gRPC port numbers, over UDP). Until the first
    /// view comes, or when the ring names no live replica, it behaves as a plain client.
    pub async fn routing(
        nodes: &[(String, SocketAddr)],
        policy: RetryPolicy,
        routing: Routing,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(routing.replicas >= 1, "replicas must be at least 1");
        anyhow::ensure!(
            routing.watch_every >= Duration::from_millis(10),
            "watch_every must be at least 10ms"
        );
        let mut client = Self::connect_lazy(nodes, policy)?;
        let first = nodes
            .first()
            .map(|(_, addr)| addr.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        // Views come back to this socket: on loopback when the nodes are.
        let local = match (first.is_loopback(), first) {
            (true, ip) => ip,
            (false, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            (false, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = tokio::net::UdpSocket::bind((local, 0))
            .await
            .with_context(|| format!("cannot bind a UDP socket on {local} for ring views"))?;
        let me = format!(
            "client-{}-{}",
            std::process::id(),
            socket.local_addr()?.port()
        );
        let ring = RingWatch::start(
            me,
            socket,
            nodes.to_vec(),
            routing.placement,
            routing.watch_every,
        );
        client.router = Some(Arc::new(Router {
            ring,
            replicas: routing.replicas,
            routed: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
        }));
        Ok(client)
    }

    /// A routing client's ring (`None` for a plain client).
    pub fn ring(&self) -> Option<&RingWatch> {
        self.router.as_ref().map(|r| &r.ring)
    }

    /// A routing client's attempts so far: (sent to a replica by the ring, sent to the
    /// current node because the ring named none).
    pub fn routed(&self) -> (u64, u64) {
        self.router.as_ref().map_or((0, 0), |r| {
            (
                r.routed.load(Ordering::Relaxed),
                r.unrouted.load(Ordering::Relaxed),
            )
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
            .call(&key, |mut rpc, timeout| {
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
        self.call(&key, |mut rpc, timeout| {
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
        self.call(&key, |mut rpc, timeout| {
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

    /// One call about `key` with the retry policy. A routing client sends attempt k to the
    /// k-th live replica of the key (round and round); otherwise, and when the ring names
    /// none, a failed attempt moves the client to the next node.
    async fn call<T, F, Fut>(&self, key: &[u8], mut attempt_fn: F) -> Result<T, Status>
    where
        F: FnMut(Rpc, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.nodes.len();
        // Set/get/delete of a whole value are safe to repeat.
        self.policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                let routed = self.replica_for(key, attempt.number);
                let index = routed.unwrap_or_else(|| self.current.load(Ordering::Relaxed) % n);
                let fut = attempt_fn(self.nodes[index].1.clone(), attempt.timeout);
                async move {
                    let result = fut.await;
                    if routed.is_none()
                        && let Err(status) = &result
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

    /// For a routing client, the index in `nodes` of the replica of `key` that attempt
    /// `number` (from 1) goes to; `None` to use the current node.
    fn replica_for(&self, key: &[u8], number: u32) -> Option<usize> {
        let router = self.router.as_ref()?;
        let replicas: Vec<usize> = router
            .ring
            .live_replicas(key, router.replicas)
            .iter()
            .filter_map(|member| self.nodes.iter().position(|(name, _)| name == member))
            .collect();
        if replicas.is_empty() {
            router.unrouted.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        router.routed.fetch_add(1, Ordering::Relaxed);
        Some(replicas[(number.max(1) as usize - 1) % replicas.len()])
    }
}

/// A request that tells the server how long this attempt may take.
fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}
