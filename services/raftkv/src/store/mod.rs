//! Where a raftkv node keeps its state: one sled database under `--data-dir`, holding the
//! Raft log and vote ([`log::LogStore`]) and the state machine with its snapshots
//! ([`machine::StateMachine`]); [`flusher::Flusher`] makes writes durable.

pub mod flusher;
pub mod log;
pub mod machine;

use std::path::Path;

use anyhow::Context;

pub use flusher::Flusher;
pub use log::LogStore;
pub use machine::StateMachine;

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
        let path = dir.join("raft.sled");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(500))
            .open()
            .with_context(|| format!("opening the Raft store at {}", path.display()))?;
        let flusher = Flusher::start(db.clone(), !fsync).context("starting the flush thread")?;
        let log = LogStore::open(&db, flusher.clone())?;
        let machine = StateMachine::open(&db, flusher.clone())
            .with_context(|| format!("opening the state machine in {}", path.display()))?;
        Ok(Self {
            log,
            machine,
            flusher,
        })
    }
}
