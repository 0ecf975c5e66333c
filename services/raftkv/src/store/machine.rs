//! The state machine: the key-value map Raft's committed entries are applied to, on sled, and
//! its snapshots.
//!
//! Tree `sm` holds, under prefixes, everything a snapshot must carry: `d/<key>` the data,
//! `s/<client>` each client session's last sequence number and answer (duplicate detection),
//! and `m/applied`, `m/membership`. One entry batch is applied as one sled batch, so the
//! tree on disk is always the state after some whole batch: after a crash it is behind at
//! worst, and openraft replays the log from `m/applied`.
//!
//! Tree `snapshot` holds the current snapshot (`meta`, `data`). Installing one stores it
//! (flushed) before replacing `sm`; if a crash interrupts the replacement, opening finds the
//! snapshot ahead of `m/applied` and restores from it again.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use distlab_raft::{Flusher, storage_error as io_error};

use crate::types::{
    Command, Entry, LogId, Op, Outcome, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const DATA: &[u8] = b"d/";
const SESSIONS: &[u8] = b"s/";
const APPLIED: &[u8] = b"m/applied";
const MEMBERSHIP: &[u8] = b"m/membership";

/// Sessions remembered at most; the one that applied longest ago is forgotten first.
pub const MAX_SESSIONS: usize = 10_000;

/// A session's memory: its last mutation and what that answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionRecord {
    seq: u64,
    index: u64,
    outcome: Outcome,
}

fn sm_error(e: impl ToString) -> StorageError {
    io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

/// Counters for the status page and metrics.
#[derive(Debug, Default)]
pub struct MachineStats {
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub duplicates: AtomicU64,
}

/// The state machine; clones share it (the snapshot builder is a clone).
#[derive(Clone)]
pub struct StateMachine {
    sm: sled::Tree,
    snapshot: sled::Tree,
    flusher: Flusher,
    /// Held while a batch is applied or the state is copied for a snapshot, so a snapshot
    /// is the state after a whole batch.
    gate: Arc<Mutex<()>>,
    /// How many keys (`d/`) and sessions (`s/`) the tree holds, kept up to date as batches
    /// apply so the status page never scans the tree.
    keys: Arc<AtomicU64>,
    sessions: Arc<AtomicU64>,
    pub stats: Arc<MachineStats>,
}

impl StateMachine {
    pub fn open(db: &sled::Db, flusher: Flusher) -> anyhow::Result<Self> {
        let machine = Self {
            sm: db.open_tree("sm")?,
            snapshot: db.open_tree("snapshot")?,
            flusher,
            gate: Arc::new(Mutex::new(())),
            keys: Arc::new(AtomicU64::new(0)),
            sessions: Arc::new(AtomicU64::new(0)),
            stats: Arc::default(),
        };
        if let Some((meta, data)) = machine.stored_snapshot()? {
            let applied = machine.applied()?;
            if meta.last_log_id > applied {
                tracing::warn!(
                    snapshot = ?meta.last_log_id,
                    applied = ?applied,
                    "the state machine is behind its snapshot (an install was interrupted): restoring it"
                );
                machine.restore(&meta, &data)?;
            }
        }
        let keys = machine.sm.scan_prefix(DATA).count() as u64;
        machine.keys.store(keys, Ordering::Relaxed);
        let sessions = machine.sm.scan_prefix(SESSIONS).count() as u64;
        machine.sessions.store(sessions, Ordering::Relaxed);
        Ok(machine)
    }

    /// The value of `key` now (whatever has been applied on this node).
    pub fn get(&self, key: &str) -> sled::Result<Option<Vec<u8>>> {
        Ok(self
            .sm
            .get(prefixed(DATA, key.as_bytes()))?
            .map(|v| v.to_vec()))
    }

    /// Keys stored now.
    pub fn keys(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn applied(&self) -> anyhow::Result<Option<LogId>> {
        Ok(match self.sm.get(APPLIED)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => None,
        })
    }

    fn membership(&self) -> anyhow::Result<StoredMembership> {
        Ok(match self.sm.get(MEMBERSHIP)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => StoredMembership::default(),
        })
    }

    fn stored_snapshot(&self) -> anyhow::Result<Option<(SnapshotMeta, Vec<u8>)>> {
        let (Some(meta), Some(data)) = (self.snapshot.get("meta")?, self.snapshot.get("data")?)
        else {
            return Ok(None);
        };
        Ok(Some((serde_json::from_slice(&meta)?, data.to_vec())))
    }

    /// Replaces the state with a snapshot's.
    fn restore(&self, meta: &SnapshotMeta, data: &[u8]) -> anyhow::Result<()> {
        let pairs = decode_pairs(data)?;
        let _gate = self.gate.lock().unwrap();
        self.sm.clear()?;
        let mut batch = sled::Batch::default();
        let (mut keys, mut sessions) = (0, 0);
        for (key, value) in pairs {
            keys += u64::from(key.starts_with(DATA));
            sessions += u64::from(key.starts_with(SESSIONS));
            batch.insert(key, value);
        }
        batch.insert(APPLIED, serde_json::to_vec(&meta.last_log_id)?);
        batch.insert(MEMBERSHIP, serde_json::to_vec(&meta.last_membership)?);
        self.sm.apply_batch(batch)?;
        self.keys.store(keys, Ordering::Relaxed);
        self.sessions.store(sessions, Ordering::Relaxed);
        Ok(())
    }

    /// Applies one command on top of `pending` (this batch's writes so far).
    fn apply_command(
        &self,
        command: &Command,
        index: u64,
        pending: &mut HashMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> anyhow::Result<Outcome> {
        let read = |pending: &HashMap<Vec<u8>, Option<Vec<u8>>>,
                    key: &[u8]|
         -> sled::Result<Option<Vec<u8>>> {
            match pending.get(key) {
                Some(value) => Ok(value.clone()),
                None => Ok(self.sm.get(key)?.map(|v| v.to_vec())),
            }
        };
        // Whether `key` holds a value, without copying it.
        let exists =
            |pending: &HashMap<Vec<u8>, Option<Vec<u8>>>, key: &[u8]| -> sled::Result<bool> {
                match pending.get(key) {
                    Some(value) => Ok(value.is_some()),
                    None => self.sm.contains_key(key),
                }
            };
        let session_key = command
            .session
            .map(|s| prefixed(SESSIONS, &s.client.to_be_bytes()));
        let remembered = match &session_key {
            Some(key) => read(pending, key)?,
            None => None,
        };
        if let (Some(session), Some(bytes)) = (command.session, &remembered) {
            let record: SessionRecord = serde_json::from_slice(bytes)?;
            if session.seq == record.seq {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(record.outcome);
            }
            if session.seq < record.seq {
                return Ok(Outcome::Stale);
            }
        }
        let outcome = match &command.op {
            Op::Put { key, value } => {
                let key = prefixed(DATA, key.as_bytes());
                if !exists(pending, &key)? {
                    self.keys.fetch_add(1, Ordering::Relaxed);
                }
                pending.insert(key, Some(value.clone()));
                Outcome::Put
            }
            Op::Delete { key } => {
                let key = prefixed(DATA, key.as_bytes());
                let existed = exists(pending, &key)?;
                if existed {
                    self.keys.fetch_sub(1, Ordering::Relaxed);
                }
                pending.insert(key, None);
                Outcome::Deleted { existed }
            }
            Op::Cas { key, expected, new } => {
                let key = prefixed(DATA, key.as_bytes());
                let current = read(pending, &key)?;
                let swapped = current == *expected;
                if swapped {
                    if current.is_none() {
                        self.keys.fetch_add(1, Ordering::Relaxed);
                    }
                    pending.insert(key, Some(new.clone()));
                }
                Outcome::Cas { swapped, current }
            }
        };
        if let (Some(session), Some(key)) = (command.session, session_key) {
            if remembered.is_none() {
                self.sessions.fetch_add(1, Ordering::Relaxed);
            }
            let record = SessionRecord {
                seq: session.seq,
                index,
                outcome: outcome.clone(),
            };
            pending.insert(key, Some(serde_json::to_vec(&record)?));
        }
        Ok(outcome)
    }

    /// Forgets the sessions that applied longest ago until at most [`MAX_SESSIONS`] remain.
    /// Every node forgets the same ones: it depends only on the log.
    fn evict_sessions(
        &self,
        pending: &mut HashMap<Vec<u8>, Option<Vec<u8>>>,
    ) -> anyhow::Result<()> {
        let excess = self.sessions().saturating_sub(MAX_SESSIONS as u64);
        if excess == 0 {
            return Ok(());
        }
        let mut by_age = Vec::new();
        for item in self.sm.scan_prefix(SESSIONS) {
            let (key, value) = item?;
            if pending.contains_key(key.as_ref()) {
                continue;
            }
            let record: SessionRecord = serde_json::from_slice(&value)?;
            by_age.push((record.index, key.to_vec()));
        }
        by_age.sort();
        for (_, key) in by_age.into_iter().take(excess as usize) {
            pending.insert(key, None);
            self.sessions.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn apply_entries(&self, entries: Vec<Entry>) -> anyhow::Result<Vec<Vec<Outcome>>> {
        let _gate = self.gate.lock().unwrap();
        let mut pending = HashMap::new();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut membership = None;
        let mut last = None;
        for entry in &entries {
            last = Some(entry.log_id);
            outcomes.push(match &entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => proposal
                    .commands
                    .iter()
                    .map(|command| self.apply_command(command, entry.log_id.index, &mut pending))
                    .collect::<anyhow::Result<Vec<Outcome>>>()?,
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    Vec::new()
                }
            });
        }
        self.evict_sessions(&mut pending)?;
        let mut batch = sled::Batch::default();
        for (key, value) in pending {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        if let Some(last) = last {
            batch.insert(APPLIED, serde_json::to_vec(&Some(last))?);
        }
        if let Some(membership) = membership {
            batch.insert(MEMBERSHIP, serde_json::to_vec(&membership)?);
        }
        self.sm.apply_batch(batch)?;
        Ok(outcomes)
    }

    /// A copy of the state (data and sessions) as one buffer, with what it covers.
    fn copy_state(&self) -> anyhow::Result<(Option<LogId>, StoredMembership, Vec<u8>)> {
        let _gate = self.gate.lock().unwrap();
        let mut data = Vec::new();
        for item in self.sm.iter() {
            let (key, value) = item?;
            if key.starts_with(DATA) || key.starts_with(SESSIONS) {
                encode_pair(&mut data, &key, &value);
            }
        }
        Ok((self.applied()?, self.membership()?, data))
    }

    async fn store_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> anyhow::Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert("meta", serde_json::to_vec(meta)?);
        batch.insert("data", data);
        self.snapshot.apply_batch(batch)?;
        self.flusher.flush_now().await?;
        Ok(())
    }
}

/// Snapshot data: `[key length u32][key][value length u32][value]`, repeated.
fn encode_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

fn decode_pairs(mut data: &[u8]) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    fn take<'a>(data: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
        anyhow::ensure!(data.len() >= n, "snapshot data is cut short");
        let (head, rest) = data.split_at(n);
        *data = rest;
        Ok(head)
    }
    fn length(data: &mut &[u8]) -> anyhow::Result<usize> {
        Ok(u32::from_be_bytes(take(data, 4)?.try_into().expect("4 bytes")) as usize)
    }
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let n = length(&mut data)?;
        let key = take(&mut data, n)?.to_vec();
        anyhow::ensure!(
            key.starts_with(DATA) || key.starts_with(SESSIONS),
            "snapshot data holds an unexpected key {:?}",
            String::from_utf8_lossy(&key)
        );
        let n = length(&mut data)?;
        pairs.push((key, take(&mut data, n)?.to_vec()));
    }
    Ok(pairs)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (applied, membership, data) = self
            .copy_state()
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let built = self.stats.snapshots_built.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match applied {
            Some(id) => format!("{}-{}-{built}", id.leader_id.term, id.index),
            None => format!("0-0-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        self.store_snapshot(&meta, &data).await.map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        })?;
        tracing::info!(
            event = "snapshot_built",
            index = applied.map(|id| id.index),
            bytes = data.len(),
            "built a snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let read = || -> anyhow::Result<_> { Ok((self.applied()?, self.membership()?)) };
        read().map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries.into_iter().collect())
            .map_err(sm_error)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        decode_pairs(&data).map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Read,
                e,
            )
        })?;
        self.store_snapshot(meta, &data).await.map_err(|e| {
            io_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Write,
                e,
            )
        })?;
        self.restore(meta, &data)
            .map_err(|e| io_error(ErrorSubject::Snapshot(signature), ErrorVerb::Write, e))?;
        self.stats
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            event = "snapshot_installed",
            index = meta.last_log_id.map(|id| id.index),
            bytes = data.len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let stored = self
            .stored_snapshot()
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests;
