//! Project 3: Kafka-lite.
//!
//! # Layout
//! - [`storage`]: a partition's log on disk: record batches with checksums in segment files,
//!   sparse offset and time indexes, roll and retention, crash recovery, fsync policy.
//! - [`replication`]: the leader's view of its followers (high watermark, ISR, `acks=all`)
//!   and a follower's truncation point, as pure state machines.
//! - [`group`]: a consumer group as its coordinator sees it (join, sync, heartbeat, session
//!   timeout, generations, the range and round-robin assignors), a pure state machine.
//! - [`controller`]: the controller quorum: cluster metadata on Raft (KRaft style), broker
//!   registration, heartbeats and fencing, leader election, ISR changes.
//! - [`broker`]: partitions on a broker: produce with acks, fetch with long polls, follower
//!   replication with truncation to the leader's epoch boundary, ISR proposals; and the
//!   group coordinator (membership, committed offsets in `__consumer_offsets`, lag).
//! - [`client`]: produce, fetch, offsets, coordinator calls; [`consumer`]: a consumer group
//!   member (join, sync, heartbeat, poll, commit, rebalance).
//! - [`node`]: `lab node log --role controller|broker`; [`cli`]: the `log` command.

pub mod broker;
pub mod cli;
pub mod client;
pub mod consumer;
pub mod controller;
pub mod group;
pub mod node;
pub mod replication;
pub mod storage;
