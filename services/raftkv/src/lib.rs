//! Project 2: a key-value store replicated with Raft.
//!
//! openraft (0.9, storage v2) runs the protocol — elections, log replication, commitment,
//! snapshots, joint-consensus membership changes; this crate gives it storage, a network and a
//! state machine, and serves clients.
//!
//! # Layout
//! - [`types`]: what is replicated (commands, outcomes) and how nodes are named.
//! - [`store`]: the Raft log, the vote and the state machine on sled, flushed before Raft is
//!   told anything is stored; snapshots.
//! - [`network`]: Raft's RPCs to peers over gRPC, through the `--peer` addresses (the lab's
//!   link proxies). [`lease`]: the leader lease built on those RPCs' acknowledgements.
//! - [`server`]: the peer-facing Raft service and the client-facing `raftkv.v1.RaftKv` API,
//!   with the three read modes.
//! - [`client`]: the client library: finds the leader, follows hints, retries with sessions.
//! - [`node`]: flags, bootstrap and join, wiring, shutdown. [`status`], [`metrics`],
//!   [`observer`]: what the lab sees.
//! - [`cli`]: the `raftkv` command.
//!
//! A write flows: client -> leader's API -> `Raft::client_write` -> leader's log (flushed) and
//! AppendEntries to followers (each flushes before acknowledging) -> committed once a majority
//! holds it -> applied to the state machine (duplicate check by session) -> reply.

pub mod cli;
pub mod client;
pub mod lease;
pub mod metrics;
pub mod network;
pub mod node;
pub mod observer;
pub mod proposer;
pub mod server;
pub mod status;
pub mod store;
pub mod types;
