//! The Raft log and the vote, on sled: what openraft's `RaftLogStorage` asks for.
//!
//! Tree `log`: entry index (8 bytes, big-endian, so sled's order is the log's order) -> the
//! entry as JSON. Tree `raft`: `vote`, `committed`, `purged` (the last purged log id). An
//! append is acknowledged to openraft (its `LogFlushed` callback) only after the flush thread
//! made it durable, and `save_vote` returns only after the vote is durable: a node that
//! restarts never forgets a vote it gave or an entry it acknowledged (unless `--fsync never`).
//!
//! The newest entries are also kept in memory ([`Recent`]): a leader reads each entry it
//! appends again for every follower it replicates to and for its state machine, and decoding
//! it from sled each time cost more than the append itself. sled stays the truth: the memory
//! copy only answers reads it holds all of, and changes with every append, truncate and purge.

// openraft's trait methods return its `StorageError`, a large type we cannot shrink; our helpers
// return the same type so `?` works.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Flusher, LogId, StorageError, Types, Vote, storage_error};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// Entries kept in memory at most (the newest ones).
pub const RECENT_ENTRIES: usize = 256;

/// The newest log entries, by index, contiguous: what replication and apply read under load.
struct Recent<C: Types>(BTreeMap<u64, Entry<C>>);

impl<C: Types> Default for Recent<C> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<C: Types> Recent<C> {
    fn append(&mut self, entries: &[Entry<C>]) {
        for entry in entries {
            let index = entry.log_id.index;
            // Keep the run contiguous: an append that does not follow on starts a new one.
            if self
                .0
                .last_key_value()
                .is_some_and(|(last, _)| last + 1 != index)
            {
                self.0.clear();
            }
            self.0.insert(index, entry.clone());
        }
        while self.0.len() > RECENT_ENTRIES {
            self.0.pop_first();
        }
    }

    /// Entries `start..end` if all of them are here.
    fn get(&self, start: u64, end: Bound<u64>) -> Option<Vec<Entry<C>>> {
        let (&first, _) = self.0.first_key_value()?;
        let (&last, _) = self.0.last_key_value()?;
        let end = match end {
            Bound::Included(i) => i.checked_add(1)?,
            Bound::Excluded(i) => i,
            Bound::Unbounded => last + 1,
        };
        if end <= start {
            return Some(Vec::new());
        }
        if start < first || end > last + 1 {
            return None;
        }
        Some(self.0.range(start..end).map(|(_, e)| e.clone()).collect())
    }

    /// Forgets entries from `index` on.
    fn truncate(&mut self, index: u64) {
        self.0.split_off(&index);
    }

    /// Forgets entries up to `index`.
    fn purge(&mut self, index: u64) {
        self.0 = self.0.split_off(&index.saturating_add(1));
    }
}

/// The log store; clones share the trees (openraft takes one as its log reader).
pub struct LogStore<C: Types> {
    log: sled::Tree,
    raft: sled::Tree,
    recent: Arc<Mutex<Recent<C>>>,
    flusher: Flusher,
}

impl<C: Types> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            log: self.log.clone(),
            raft: self.raft.clone(),
            recent: self.recent.clone(),
            flusher: self.flusher.clone(),
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|e| {
        storage_error(
            ErrorSubject::Store,
            ErrorVerb::Read,
            format!("corrupt {what}: {e}"),
        )
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("raft types serialize")
}

impl<C: Types> LogStore<C> {
    pub fn open(db: &sled::Db, flusher: Flusher) -> sled::Result<Self> {
        Ok(Self {
            log: db.open_tree("log")?,
            raft: db.open_tree("raft")?,
            recent: Arc::default(),
            flusher,
        })
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let bytes = self
            .raft
            .get(key)
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        bytes
            .map(|b| decode(&b, std::str::from_utf8(key).unwrap_or("metadata")))
            .transpose()
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        self.raft
            .insert(key, encode(value))
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        Ok(())
    }
}

impl<C: Types> RaftLogReader<C> for LogStore<C> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        if let Some(entries) = self.recent.lock().unwrap().get(start, end) {
            return Ok(entries);
        }
        let end = match end {
            Bound::Included(i) => Bound::Included(i.to_be_bytes()),
            Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.log
            .range((Bound::Included(start.to_be_bytes()), end))
            .map(|item| {
                let (_, bytes) =
                    item.map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                decode(&bytes, "log entry")
            })
            .collect()
    }
}

impl<C: Types> RaftLogStorage<C> for LogStore<C> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let purged: Option<LogId> = self.read_meta(PURGED)?;
        let last = match self
            .log
            .last()
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?
        {
            Some((_, bytes)) => Some(decode::<Entry<C>>(&bytes, "log entry")?.log_id),
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
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))
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

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<C>> = entries.into_iter().collect();
        let mut batch = sled::Batch::default();
        for entry in &entries {
            batch.insert(&entry.log_id.index.to_be_bytes(), encode(entry));
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.recent.lock().unwrap().append(&entries);
        self.flusher
            .after_flush(move |flushed| callback.log_io_completed(flushed));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(from = log_id.index, "truncating the log");
        self.recent.lock().unwrap().truncate(log_id.index);
        let mut batch = sled::Batch::default();
        for item in self.log.range(log_id.index.to_be_bytes()..) {
            let (key, _) =
                item.map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge mark first: a crash in between leaves entries below it, which are ignored.
        self.write_meta(PURGED, &log_id)?;
        self.recent.lock().unwrap().purge(log_id.index);
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=log_id.index.to_be_bytes()) {
            let (key, _) =
                item.map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestTypes;

    fn entry(index: u64) -> Entry<TestTypes> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(format!("entry {index}")),
        }
    }

    fn indexes(entries: Option<Vec<Entry<TestTypes>>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_answer_only_ranges_they_hold_whole() {
        let mut recent = Recent::<TestTypes>::default();
        recent.append(&(1..=300).map(entry).collect::<Vec<_>>());
        let first = 300 - RECENT_ENTRIES as u64 + 1;
        assert_eq!(
            indexes(recent.get(first, Bound::Included(first + 2))),
            Some(vec![first, first + 1, first + 2])
        );
        assert_eq!(
            indexes(recent.get(first - 1, Bound::Excluded(first + 2))),
            None
        );
        assert_eq!(indexes(recent.get(300, Bound::Unbounded)), Some(vec![300]));
        assert_eq!(indexes(recent.get(299, Bound::Excluded(302))), None);
        assert_eq!(indexes(recent.get(10, Bound::Excluded(10))), Some(vec![]));

        recent.truncate(298);
        assert_eq!(indexes(recent.get(297, Bound::Excluded(299))), None);
        assert_eq!(
            indexes(recent.get(296, Bound::Unbounded)),
            Some(vec![296, 297])
        );
        recent.purge(296);
        assert_eq!(indexes(recent.get(296, Bound::Unbounded)), None);
        assert_eq!(indexes(recent.get(297, Bound::Unbounded)), Some(vec![297]));
    }

    #[test]
    fn an_append_that_does_not_follow_on_starts_over() {
        let mut recent = Recent::<TestTypes>::default();
        recent.append(&[entry(1), entry(2)]);
        // A follower that installed a snapshot appends after a gap.
        recent.append(&[entry(10)]);
        assert_eq!(indexes(recent.get(1, Bound::Unbounded)), None);
        assert_eq!(indexes(recent.get(10, Bound::Unbounded)), Some(vec![10]));
        // A truncated tail is overwritten from the truncation point.
        recent.append(&[entry(11), entry(12)]);
        recent.truncate(12);
        recent.append(&[entry(12)]);
        assert_eq!(
            indexes(recent.get(10, Bound::Included(12))),
            Some(vec![10, 11, 12])
        );
    }
}
