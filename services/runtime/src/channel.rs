//! How every client connects to a node: the client libraries (`kv`, `raftkv`, `cache`) and
//! the node-to-node clients (Raft's network, the cache's peers) all start from [`endpoint`],
//! so they agree on the scheme, Nagle's algorithm and how a bad address is reported.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Endpoint;

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
