//! Where a raftkv node keeps its state: one sled database under `--data-dir`, holding the
//! Raft log and vote ([`LogStore`], shared with Project 3) and the state machine with its
//! snapshots ([`machine::StateMachine`]); [`Flusher`] makes writes durable.

pub mod machine;

use std::path::Path;

use anyhow::Context;

pub use distlab_raft::Flusher;
pub use machine::StateMachine;

pub type LogStore = distlab_raft::LogStore<crate::types::TypeConfig>;

/// A node's storage, opened.
pub struct Storage {
    pub log: LogStore,
    pub machine: StateMachine,
    pub flusher: Flusher,
}

impl Storage {
    /// Opens (or creates) the database in `dir`. With `fsync` false nothing waits for the
    /// disk (sled still flushes every 500 ms).
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<Self> {
        let (db, flusher) = distlab_raft::boot::open_store(dir, fsync)?;
        let log = LogStore::open(&db, flusher.clone())?;
        let machine = StateMachine::open(&db, flusher.clone()).with_context(|| {
            format!(
                "opening the state machine in {}",
                dir.join("raft.sled").display()
            )
        })?;
        Ok(Self {
            log,
            machine,
            flusher,
        })
    }
}
