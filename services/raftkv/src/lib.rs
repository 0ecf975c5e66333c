//! Project 2: a key-value store replicated with Raft.
//!
//! openraft (0.9, storage v2) runs the protocol — elections, log replication, commitment,
//! snapshots, joint-consensus membership changes; this crate gives it storage, a network and a
//! state machine, and serves clients.
//!
//! # Layout
//! The Raft plumbing it shares with Project 3's controller lives in `distlab-raft`: the log
//! store and flusher, Raft's RPCs to peers over gRPC through the `--peer` addresses (the lab's
//! link proxies), the peer-facing Raft service, the leader lease, node naming.
//!
//! - [`types`]: what is replicated (commands, outcomes).
//! - [`store`]: the state machine on sled and its snapshots, beside the shared log store.
//! - [`server`]: the client-facing `raftkv.v1.RaftKv` API, with the three read modes (the
//!   lease one on `distlab_raft::lease`).
//! - [`client`]: the client library: finds the leader, follows hints, retries with sessions.
//! - [`node`]: flags, bootstrap and join, wiring, shutdown. [`status`], [`metrics`]: what the
//!   lab sees.
//! - [`cli`]: the `raftkv` command.
//!
//! A write flows: client -> leader's API -> `Raft::client_write` -> leader's log (flushed) and
//! AppendEntries to followers (each flushes before acknowledging) -> committed once a majority
//! holds it -> applied to the state machine (duplicate check by session) -> reply.

pub mod cli;
pub mod client;
pub mod metrics;
pub mod node;
pub mod proposer;
pub mod server;
pub mod status;
pub mod store;
pub mod types;
