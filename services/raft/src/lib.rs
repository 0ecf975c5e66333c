//! The Raft plumbing every Raft-backed service in distlab shares: Project 2's key-value store
//! and Project 3's controller quorum run the same storage, network and peer service, each with
//! its own commands and state machine.
//!
//! openraft runs the protocol; this crate gives it what it asks an application for, generic
//! over the application's [`Types`]:
//! - [`log_store`]: the Raft log and the vote on sled, acknowledged only once flushed
//!   (`distlab_runtime::flusher`, re-exported as [`flusher`]).
//! - [`network`]: Raft's RPCs to peers over gRPC (`raft.v1.Raft`), through the `--peer`
//!   addresses (the lab's link proxies); [`rpc`]: the peer-facing service.
//! - [`lease`]: the leader lease built on AppendEntries acknowledgements; [`leader`]: the
//!   "not the leader" answer and the client that follows it to the leader.
//! - [`member`]: how nodes are named (openraft wants numbers); [`status`]: a membership in
//!   names, a node's role, and the Raft fields of `/status` the lab's Raft view draws.
//! - [`memory_machine`]: a state machine held in memory, snapshotted as JSON, for services
//!   whose state is small (cluster metadata).
//! - [`observer`]: Raft's changes as timeline events and Prometheus figures;
//!   [`openraft_logs`]: openraft's own log lines with node names, its election noise below WARN.
//! - [`flags`]: the flags every Raft node takes and the openraft config they make;
//!   [`boot`]: opening the store, forming the first cluster.
//!
//! An application declares its types with `openraft::declare_raft_types!` (its commands, its
//! outcomes, and the fixed choices below), and they are [`Types`] at once.

pub mod boot;
pub mod flags;
pub use distlab_runtime::flusher;
pub mod leader;
pub mod lease;
pub mod log_store;
pub mod member;
pub mod memory_machine;
pub mod network;
pub mod observer;
pub mod openraft_logs;
pub mod rpc;
pub mod status;

use std::io::Cursor;

pub use flusher::Flusher;
pub use lease::LeaseClock;
pub use log_store::LogStore;
pub use member::{Member, Names, raft_id};
pub use network::Network;
pub use rpc::RaftRpc;
pub use status::{Members, role_name};

/// A distlab Raft application's types: its own commands (`D`, cloned: the log store keeps
/// recent entries in memory) and outcomes (`R`); nodes
/// numbered by [`raft_id`] and named by [`Member`]; openraft's own entries; snapshots as
/// bytes in memory; tokio.
pub trait Types:
    openraft::RaftTypeConfig<
        D: Clone,
        NodeId = RaftId,
        Node = Member,
        Entry = openraft::Entry<Self>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
    >
{
}

impl<C> Types for C where
    C: openraft::RaftTypeConfig<
            D: Clone,
            NodeId = RaftId,
            Node = Member,
            Entry = openraft::Entry<C>,
            SnapshotData = Cursor<Vec<u8>>,
            AsyncRuntime = openraft::TokioRuntime,
        >
{
}

pub type RaftId = u64;
pub type LogId = openraft::LogId<RaftId>;
pub type Vote = openraft::Vote<RaftId>;
pub type StorageError = openraft::StorageError<RaftId>;
pub type StoredMembership = openraft::StoredMembership<RaftId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, Member>;

/// openraft's storage errors from any error, with what was being done to what.
pub fn storage_error(
    subject: openraft::ErrorSubject<RaftId>,
    verb: openraft::ErrorVerb,
    e: impl ToString,
) -> StorageError {
    openraft::StorageIOError::new(
        subject,
        verb,
        openraft::AnyError::new(&std::io::Error::other(e.to_string())),
    )
    .into()
}

#[cfg(test)]
pub(crate) mod testing {
    //! A type configuration for this crate's tests: text commands, text outcomes.
    openraft::declare_raft_types!(
        pub TestTypes:
            D = String,
            R = String,
            NodeId = u64,
            Node = crate::Member,
            Entry = openraft::Entry<TestTypes>,
            SnapshotData = std::io::Cursor<Vec<u8>>,
            AsyncRuntime = openraft::TokioRuntime,
    );
}
