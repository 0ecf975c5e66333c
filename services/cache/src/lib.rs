//! Project 1: a consistent-hashing distributed cache.
//!
//! Partitioning, membership and failure detection: keys spread over nodes by a hash ring
//! with virtual nodes (or rendezvous hashing), replicated on N of them, with members found
//! and failures detected by SWIM gossip, and hinted handoff when a replica is down. Each node
//! speaks the memcached text protocol, so stock clients and tools work against it.
//!
//! # Layout
//! - [`store`]: one node's items: a memory-bounded LRU with expiry, memcached's semantics.
//! - [`protocol`]: parsing memcached's text protocol; [`memcached`]: serving it over TCP.
//! - [`swim`]: SWIM membership and failure detection, as a state machine without I/O.
//! - [`client`]: the `cache.v1` client library: one node at a time, the next on failure, or
//!   routing each key to its replicas by the ring it follows ([`ring_watch`], as the
//!   [`proxy`] sidecar does).
//! - [`coordinator`]: a key's coordinator: forwarding, quorums, read repair, hints, rebalancing.
//! - [`gossip`]: SWIM over UDP: the socket, the ticks, the published membership.
//! - [`grpc`]: `cache.v1` over gRPC: the service, and the peers a coordinator calls.
//! - [`hints`]: hinted handoff: writes kept for a replica that is down.
//! - [`node`]: `cache serve`: flags, wiring, the membership follower, `/status`.
//! - [`placement`]: which members hold a key: [`placement::Ring`] or
//!   [`placement::Rendezvous`], behind [`placement::Placement`].

pub mod client;
pub mod clock;
pub mod coordinator;
pub mod gossip;
pub mod grpc;
pub mod hints;
pub mod memcached;
pub mod node;
pub mod page;
pub mod placement;
pub mod protocol;
pub mod proxy;
pub mod ring_watch;
pub mod store;
pub mod swim;
