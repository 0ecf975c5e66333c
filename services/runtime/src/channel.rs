//! How every client connects to a node: the client libraries (`raftkv`, `cache`) and
//! the node-to-node clients (Raft's network, the cache's peers) all start from [`endpoint`],
//! so they agree on the scheme, Nagle's algorithm and how a bad address is reported.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::retry::RetryPolicy;
use crate::telemetry::PropagateTrace;

/// A channel whose requests carry the caller's trace context.
pub type TracedChannel = InterceptedService<Channel, PropagateTrace>;

/// A plaintext HTTP/2 endpoint for `addr`, with Nagle off (small RPCs on loopback would wait
/// for ACKs otherwise) and `connect_timeout` for each connection attempt. Callers add what is
/// theirs (a per-call timeout, keep-alives) and usually `connect_lazy()`: a node may not be up
/// yet, and a lazy channel connects on first use and reconnects after a failure.
pub fn endpoint(addr: SocketAddr, connect_timeout: Duration) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))
        .with_context(|| format!("{addr} is not a usable address"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true))
}

/// A traced channel per node, for a client library that may talk to any of `nodes` (name,
/// address) with `policy`: checked (at least one node, a valid policy), connecting lazily,
/// each connection attempt bounded by the policy's attempt timeout (at most 2 s).
pub fn per_node(
    nodes: &[(String, SocketAddr)],
    policy: &RetryPolicy,
) -> anyhow::Result<Vec<(String, TracedChannel)>> {
    anyhow::ensure!(
        !nodes.is_empty(),
        "a client needs at least one node address"
    );
    policy
        .validate()
        .map_err(|e| anyhow::anyhow!("retry policy: {e}"))?;
    let connect_timeout = policy.attempt_timeout.min(Duration::from_secs(2));
    nodes
        .iter()
        .map(|(name, addr)| {
            let channel = endpoint(*addr, connect_timeout)?.connect_lazy();
            Ok((
                name.clone(),
                InterceptedService::new(channel, PropagateTrace),
            ))
        })
        .collect()
}
