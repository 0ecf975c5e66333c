//! The Raft log and the vote, on sled: what openraft's `RaftLogStorage` asks for.
//!
//! Tree `log`: entry index (8 bytes, big-endian, so sled's order is the log's order) -> the
//! entry as JSON. Tree `raft`: `vote`, `committed`, `purged` (the last purged log id). An
//! append is acknowledged to openraft (its `LogFlushed` callback) only after the flush thread
//! made it durable, and `save_vote` returns only after the vote is durable: a node that
//! restarts never forgets a vote it gave or an entry it acknowledged (unless `--fsync never`).

// openraft's trait methods return its `StorageError`, a large type we cannot shrink; our helpers
// return the same type so `?` works.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::flusher::Flusher;
use crate::types::{Entry, LogId, RaftId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// The log store; clones share the trees (openraft takes one as its log reader).
#[derive(Clone)]
pub struct LogStore {
    log: sled::Tree,
    raft: sled::Tree,
    flusher: Flusher,
}

fn io_error(
    subject: ErrorSubject<RaftId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| {
        io_error(
            ErrorSubject::Store,
            ErrorVerb::Read,
            std::io::Error::other(format!("corrupt {what}: {e}")),
        )
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("raft types serialize")
}

impl LogStore {
    pub fn open(db: &sled::Db, flusher: Flusher) -> sled::Result<Self> {
        Ok(Self {
            log: db.open_tree("log")?,
            raft: db.open_tree("raft")?,
            flusher,
        })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let bytes = self
            .raft
            .get(key)
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        bytes
            .map(|b| decode(&b, std::str::from_utf8(key).unwrap_or("metadata")))
            .transpose()
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        self.raft
            .insert(key, encode(value))
            .map_err(|e| io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.log
            .range((Bound::Included(start.to_be_bytes()), end))
            .map(|item| {
                let (_, bytes) =
                    item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                decode(&bytes, "log entry")
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let purged: Option<LogId> = self.read_meta(PURGED)?;
        let last = match self
            .log
            .last()
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?
        {
            Some((_, bytes)) => Some(decode::<Entry>(&bytes, "log entry")?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote)?;
        self.flusher
            .flush()
            .await
            .map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: after a crash the committed index is learned again from the leader;
        // it only lets a restarted node apply what it knows is committed sooner.
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&entry.log_id.index.to_be_bytes(), encode(&entry));
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.flusher.after_flush(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(from = log_id.index, "truncating the log");
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            let (key, _) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge mark first: a crash in between leaves entries below it, which are ignored.
        self.write_meta(PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_id.index.to_be_bytes()) {
            let (key, _) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
