//! The controller quorum: three (or five) nodes that own the cluster metadata on Raft, KRaft
//! style, through the Raft plumbing Project 2 uses (`distlab-raft`).
//!
//! - [`metadata`]: what is replicated (brokers, topics, partition leaders, ISRs, epochs) and
//!   how each command changes it, as a pure state machine.
//! - [`liveness`]: the leader's view of broker heartbeats, which decides fencing.
//! - [`service`]: the `log.v1.Controller` gRPC API, and the leader's fencing loop.
//! - [`client`]: how brokers and the CLI call the controller leader.
//! - [`node`]: flags and wiring of a controller node; [`status`]: what the lab sees.

pub mod client;
pub mod liveness;
pub mod metadata;
pub mod node;
pub mod service;
pub mod status;

use std::io::Cursor;

use distlab_raft::Member;
use distlab_raft::memory_machine::MemoryMachine;

openraft::declare_raft_types!(
    /// The controller's Raft: metadata commands in, their outcomes out.
    pub ControllerTypes:
        D = metadata::Command,
        R = metadata::Outcome,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<ControllerTypes>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<ControllerTypes>;
pub type MetadataMachine = MemoryMachine<ControllerTypes, metadata::Metadata>;
pub type LogStore = distlab_raft::LogStore<ControllerTypes>;
