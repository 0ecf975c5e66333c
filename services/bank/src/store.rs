//! The embedded stores (sled): a participant's balances, prepared records and journal, and
//! the coordinator's decision log. Whatever the protocol relies on after a crash is flushed
//! before it is acknowledged (a yes vote after its prepared record, a commit decision before
//! the first participant hears it), through one group-commit thread per database
//! ([`distlab_runtime::flusher`]). A record that does not decode stops the open with its tree
//! and key named; nothing is rewritten to make it fit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::Context;
use distlab_runtime::flusher::Flusher;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::coordinator::LogRecord;
use crate::domain::{Bank, JournalEntry, Transfer};
use crate::lock::TxId;
use crate::participant::step::StepRecord;
use crate::participant::{Applied, Prepared};
use crate::saga::{Saga, TransferEvent};

fn open_db(dir: &Path, name: &str) -> anyhow::Result<sled::Db> {
    let path = dir.join(name);
    sled::Config::new()
        .path(&path)
        .cache_capacity(32 * 1024 * 1024)
        .flush_every_ms(Some(500))
        .open()
        .with_context(|| format!("opening the sled database at {}", path.display()))
}

fn tree(db: &sled::Db, name: &str) -> anyhow::Result<sled::Tree> {
    db.open_tree(name)
        .with_context(|| format!("opening tree {name:?}"))
}

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("the store: {e}"))
}

/// What a participant finds in its store when it opens.
#[derive(Debug, Default)]
pub struct Recovered {
    pub balances: BTreeMap<String, i64>,
    pub prepared: Vec<Prepared>,
    pub journal: u64,
}

/// A participant's store: `balances` (account -> i64 big-endian), `prepared` (tx -> JSON),
/// `journal` (sequence -> JSON entry; the ledger's), `meta` (the bank it was opened for); for
/// saga steps, `step_log` (sequence -> JSON step record, every state a key went through) and
/// `steps` (key -> its latest sequence).
pub struct ParticipantStore {
    db: sled::Db,
    balances: sled::Tree,
    prepared: sled::Tree,
    journal: sled::Tree,
    steps: sled::Tree,
    step_log: sled::Tree,
    flusher: Flusher,
}

impl ParticipantStore {
    /// Opens the store under `dir`, creating `accounts` with the bank's opening balance the
    /// first time. A store made for another bank (other accounts or opening balance) is
    /// refused rather than mixed with it.
    pub fn open(
        dir: &Path,
        bank: Bank,
        accounts: &[String],
        fsync: bool,
    ) -> anyhow::Result<(ParticipantStore, Recovered)> {
        let db = open_db(dir, "participant.sled")?;
        let meta = tree(&db, "meta")?;
        let balances = tree(&db, "balances")?;
        let prepared = tree(&db, "prepared")?;
        let journal = tree(&db, "journal")?;
        let steps = tree(&db, "steps")?;
        let step_log = tree(&db, "step_log")?;
        let want = serde_json::to_vec(&bank)?;
        match meta.get("bank")? {
            Some(have) if have.as_ref() == want.as_slice() => {}
            Some(have) => anyhow::bail!(
                "{} holds the accounts of another bank ({}), not {}: use another --data-dir",
                dir.display(),
                String::from_utf8_lossy(&have),
                String::from_utf8_lossy(&want)
            ),
            None => {
                let mut batch = sled::Batch::default();
                for account in accounts {
                    batch.insert(account.as_bytes(), &bank.opening.to_be_bytes());
                }
                balances.apply_batch(batch)?;
                meta.insert("bank", want)?;
                db.flush()?;
            }
        }
        let mut recovered = Recovered::default();
        for item in balances.iter() {
            let (key, value) = item?;
            let account = String::from_utf8(key.to_vec())
                .map_err(|_| anyhow::anyhow!("tree balances: a key that is not UTF-8"))?;
            let balance = <[u8; 8]>::try_from(value.as_ref()).map_err(|_| {
                anyhow::anyhow!("tree balances, key {account}: {} bytes, not 8", value.len())
            })?;
            recovered
                .balances
                .insert(account, i64::from_be_bytes(balance));
        }
        for item in prepared.iter() {
            let (key, value) = item?;
            let record: Prepared = serde_json::from_slice(&value).with_context(|| {
                format!("tree prepared, key {}: not a prepared record", hex(&key))
            })?;
            recovered.prepared.push(record);
        }
        recovered.journal = journal.len() as u64;
        let flusher = Flusher::start(db.clone(), !fsync).context("starting the flush thread")?;
        Ok((
            ParticipantStore {
                db,
                balances,
                prepared,
                journal,
                steps,
                step_log,
                flusher,
            },
            recovered,
        ))
    }

    /// Makes a prepared record durable (before the yes vote).
    pub async fn prepare(&self, record: &Prepared) -> std::io::Result<()> {
        let value = serde_json::to_vec(record).map_err(io)?;
        self.prepared
            .insert(record.tx.to_be_bytes(), value)
            .map_err(io)?;
        self.flusher.flush().await
    }

    /// Applies a commit in one step: the new balances, the journal entry, the prepared record
    /// gone. Durable before it returns.
    pub async fn commit(&self, tx: TxId, applied: &Applied) -> std::io::Result<()> {
        if !applied.changed {
            return Ok(());
        }
        let entry = applied
            .journal
            .as_ref()
            .map(|transfer| {
                serde_json::to_vec(&JournalEntry {
                    transfer: transfer.clone(),
                    tx,
                })
            })
            .transpose()
            .map_err(io)?;
        let sequence = match &entry {
            Some(_) => Some(self.db.generate_id().map_err(io)?),
            None => None,
        };
        (&self.balances, &self.prepared, &self.journal)
            .transaction(|(balances, prepared, journal)| {
                for (account, balance) in &applied.balances {
                    balances.insert(account.as_bytes(), &balance.to_be_bytes())?;
                }
                prepared.remove(&tx.to_be_bytes())?;
                if let (Some(entry), Some(seq)) = (&entry, sequence) {
                    journal.insert(&seq.to_be_bytes(), entry.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| io(format!("{e:?}")))?;
        self.flusher.flush().await
    }

    /// Drops a prepared record (abort), durably: a prepared record lost in a crash and back
    /// after the restart would hold locks on accounts a later transaction prepared on.
    pub async fn abort(&self, tx: TxId) -> std::io::Result<()> {
        self.prepared.remove(tx.to_be_bytes()).map_err(io)?;
        self.flusher.flush().await
    }

    /// The latest record of saga step `key`, if it was ever seen here.
    pub fn step(&self, key: &str) -> anyhow::Result<Option<StepRecord>> {
        let Some(seq) = self.steps.get(key.as_bytes())? else {
            return Ok(None);
        };
        let record = self.step_log.get(&seq)?.ok_or_else(|| {
            anyhow::anyhow!("tree steps, key {key}: its record {} is missing", hex(&seq))
        })?;
        serde_json::from_slice(&record)
            .map(Some)
            .with_context(|| format!("tree step_log, key {}: not a step record", hex(&seq)))
    }

    /// Writes a step's record with its effect in one transaction: the new balance (a shard),
    /// the journal entry (the ledger). Not yet durable: await [`ParticipantStore::flushed`]
    /// before answering.
    pub fn write_step(
        &self,
        record: &StepRecord,
        balance: Option<&(String, i64)>,
        journal: Option<&Transfer>,
    ) -> std::io::Result<()> {
        let value = serde_json::to_vec(record).map_err(io)?;
        let entry = journal
            .map(|transfer| {
                serde_json::to_vec(&JournalEntry {
                    transfer: transfer.clone(),
                    tx: 0,
                })
            })
            .transpose()
            .map_err(io)?;
        let seq = self.db.generate_id().map_err(io)?.to_be_bytes();
        let journal_seq = match &entry {
            Some(_) => Some(self.db.generate_id().map_err(io)?.to_be_bytes()),
            None => None,
        };
        (&self.balances, &self.steps, &self.step_log, &self.journal)
            .transaction(|(balances, steps, step_log, journal)| {
                if let Some((account, balance)) = balance {
                    balances.insert(account.as_bytes(), &balance.to_be_bytes())?;
                }
                step_log.insert(&seq, value.as_slice())?;
                steps.insert(record.key.as_bytes(), &seq)?;
                if let (Some(entry), Some(at)) = (&entry, journal_seq) {
                    journal.insert(&at, entry.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| io(format!("{e:?}")))
    }

    /// Waits until everything written so far is durable.
    pub async fn flushed(&self) -> std::io::Result<()> {
        self.flusher.flush().await
    }

    /// Up to `limit` step records from sequence number `from` on, oldest first: every state
    /// each key went through.
    pub fn steps(&self, from: u64, limit: usize) -> anyhow::Result<Vec<(u64, StepRecord)>> {
        sequenced(&self.step_log, "step_log", "a step record", from, limit)
    }

    /// Up to `limit` journal entries from sequence number `from` on, with their sequence
    /// numbers, oldest first (the ledger's; the checks and the anti-entropy job read it).
    pub fn journal(&self, from: u64, limit: usize) -> anyhow::Result<Vec<(u64, JournalEntry)>> {
        sequenced(&self.journal, "journal", "an entry", from, limit)
    }

    /// Flushes everything (shutdown).
    pub async fn close(&self) -> std::io::Result<()> {
        self.flusher.flush_now().await
    }
}

/// Up to `limit` JSON records of `tree` (named `name`; keys are big-endian sequence numbers)
/// from sequence number `from` on, oldest first, with their numbers. A key or record that does
/// not decode is an error naming the tree, the key and `what` the record should be.
fn sequenced<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    name: &str,
    what: &str,
    from: u64,
    limit: usize,
) -> anyhow::Result<Vec<(u64, T)>> {
    tree.range(from.to_be_bytes()..)
        .take(limit)
        .map(|item| {
            let (key, value) = item?;
            let seq = <[u8; 8]>::try_from(key.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| anyhow::anyhow!("tree {name}: a key of {} bytes", key.len()))?;
            let record = serde_json::from_slice(&value)
                .with_context(|| format!("tree {name}, key {seq}: not {what}"))?;
            Ok((seq, record))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The coordinator's decision log: records keyed by transaction and kind, so a replay in key
/// order meets each transaction's `Begin`, `Commit` and `End` in that order.
pub struct DecisionLog {
    records: sled::Tree,
    /// How many records `records` holds (sled counts a tree by walking it).
    count: std::sync::atomic::AtomicUsize,
    flusher: Flusher,
}

fn record_key(record: &LogRecord) -> [u8; 9] {
    let (tx, kind) = match record {
        LogRecord::Begin { tx, .. } => (*tx, 0u8),
        LogRecord::Commit { tx } => (*tx, 1),
        LogRecord::End { tx, .. } => (*tx, 2),
    };
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&tx.to_be_bytes());
    key[8] = kind;
    key
}

/// How many ended transactions the log keeps (for client retries of settled transfers).
const ENDED_KEPT: usize = 100_000;

impl DecisionLog {
    /// Opens the log under `dir` and returns its records in replay order.
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<(DecisionLog, Vec<LogRecord>)> {
        let db = open_db(dir, "decisions.sled")?;
        let records = tree(&db, "log")?;
        let mut replay = Vec::new();
        for item in records.iter() {
            let (key, value) = item?;
            replay.push(
                serde_json::from_slice(&value).with_context(|| {
                    format!("decision log, key {}: not a log record", hex(&key))
                })?,
            );
        }
        let flusher = Flusher::start(db, !fsync).context("starting the flush thread")?;
        let count = replay.len().into();
        Ok((
            DecisionLog {
                records,
                count,
                flusher,
            },
            replay,
        ))
    }

    /// Appends `record`; `Begin` and `Commit` are durable when this returns, `End` is lazy.
    pub async fn append(&self, record: &LogRecord) -> std::io::Result<()> {
        let value = serde_json::to_vec(record).map_err(io)?;
        if self
            .records
            .insert(record_key(record), value)
            .map_err(io)?
            .is_none()
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        match record {
            LogRecord::End { .. } => {
                self.forget_old_ended().map_err(io)?;
                Ok(())
            }
            _ => self.flusher.flush().await,
        }
    }

    /// Keeps the log bounded: drops the oldest ended transactions beyond [`ENDED_KEPT`].
    /// Transactions end roughly in id order, so the oldest keys are the ended ones; a key
    /// range is dropped only up to the first transaction that has not ended.
    fn forget_old_ended(&self) -> sled::Result<()> {
        let excess = self
            .count
            .load(Ordering::Relaxed)
            .saturating_sub(3 * ENDED_KEPT);
        if excess == 0 {
            return Ok(());
        }
        let mut current: Option<(u64, Vec<sled::IVec>, bool)> = None;
        let mut dropped = 0;
        for item in self.records.iter() {
            let (key, _) = item?;
            let tx = u64::from_be_bytes(key[..8].try_into().expect("9-byte keys"));
            match &mut current {
                Some((t, keys, ended)) if *t == tx => {
                    keys.push(key.clone());
                    *ended |= key[8] == 2;
                }
                _ => {
                    if let Some((_, keys, ended)) = current.take() {
                        if !ended || dropped >= excess {
                            return Ok(());
                        }
                        for k in keys {
                            if self.records.remove(k)?.is_some() {
                                self.count.fetch_sub(1, Ordering::Relaxed);
                            }
                            dropped += 1;
                        }
                    }
                    current = Some((tx, vec![key.clone()], key[8] == 2));
                }
            }
        }
        Ok(())
    }

    pub async fn close(&self) -> std::io::Result<()> {
        self.flusher.flush_now().await
    }
}

/// The saga orchestrator's store: `sagas` (transfer id -> its saga, ended ones kept for
/// retries of settled transfers), `active` (the ids of sagas not ended: what a restart
/// resumes), `outbox` (sequence -> an event to publish). A saga's end and its event are one
/// write: the relay can never publish an end the log lost, nor the log hold an end whose event
/// is gone.
pub struct SagaLog {
    db: sled::Db,
    sagas: sled::Tree,
    active: sled::Tree,
    outbox: sled::Tree,
    flusher: Flusher,
}

impl SagaLog {
    /// Opens the log under `dir`; returns it with the sagas to resume.
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<(SagaLog, Vec<Saga>)> {
        let db = open_db(dir, "sagas.sled")?;
        let sagas = tree(&db, "sagas")?;
        let active = tree(&db, "active")?;
        let outbox = tree(&db, "outbox")?;
        let mut resume = Vec::new();
        for item in active.iter() {
            let (id, _) = item?;
            let name = String::from_utf8_lossy(&id).into_owned();
            let value = sagas.get(&id)?.ok_or_else(|| {
                anyhow::anyhow!("tree active names saga {name:?}, which tree sagas lacks")
            })?;
            resume.push(
                serde_json::from_slice(&value)
                    .with_context(|| format!("tree sagas, key {name:?}: not a saga"))?,
            );
        }
        let flusher = Flusher::start(db.clone(), !fsync).context("starting the flush thread")?;
        Ok((
            SagaLog {
                db,
                sagas,
                active,
                outbox,
                flusher,
            },
            resume,
        ))
    }

    /// The saga of transfer `id`, if it was ever begun.
    pub fn get(&self, id: &str) -> anyhow::Result<Option<Saga>> {
        self.sagas
            .get(id.as_bytes())?
            .map(|v| {
                serde_json::from_slice(&v)
                    .with_context(|| format!("tree sagas, key {id:?}: not a saga"))
            })
            .transpose()
    }

    /// Writes `saga` (and, when it ended with one, its event into the outbox) in one step;
    /// with `durable`, waits until it is on disk.
    pub async fn write(&self, saga: &Saga, durable: bool) -> std::io::Result<()> {
        let value = serde_json::to_vec(saga).map_err(io)?;
        let event = if saga.phase.is_terminal() {
            TransferEvent::of(saga)
                .map(|e| serde_json::to_vec(&e))
                .transpose()
                .map_err(io)?
        } else {
            None
        };
        let seq = match &event {
            Some(_) => Some(self.db.generate_id().map_err(io)?.to_be_bytes()),
            None => None,
        };
        let id = saga.transfer.id.as_bytes();
        let ended = saga.phase.is_terminal();
        (&self.sagas, &self.active, &self.outbox)
            .transaction(|(sagas, active, outbox)| {
                sagas.insert(id, value.as_slice())?;
                if ended {
                    active.remove(id)?;
                } else {
                    active.insert(id, &[])?;
                }
                if let (Some(event), Some(seq)) = (&event, seq) {
                    outbox.insert(&seq, event.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| io(format!("{e:?}")))?;
        if durable {
            self.flusher.flush().await?;
        }
        Ok(())
    }

    /// The oldest `limit` events not yet published, with their sequence numbers.
    pub fn outbox(&self, limit: usize) -> anyhow::Result<Vec<(u64, TransferEvent)>> {
        sequenced(&self.outbox, "outbox", "an event", 0, limit)
    }

    /// Marks events published (acknowledged by every in-sync replica): they leave the outbox.
    pub fn published(&self, seqs: &[u64]) -> std::io::Result<()> {
        let mut batch = sled::Batch::default();
        for seq in seqs {
            batch.remove(&seq.to_be_bytes());
        }
        self.outbox.apply_batch(batch).map_err(io)
    }

    /// Events waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub async fn close(&self) -> std::io::Result<()> {
        self.flusher.flush_now().await
    }
}

/// A notification as the notifications service stores it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub event: TransferEvent,
    /// When it was written (this service's clock).
    pub at_ms: u64,
}

/// The notifications service's store: `notifications` (sequence -> JSON), `events` (event id
/// -> its sequence: the consumer's idempotence), `meta` (`duplicates`, big-endian u64). A
/// notification and its event id are one write, so an event delivered again finds its id
/// and changes nothing.
pub struct NotificationStore {
    db: sled::Db,
    notifications: sled::Tree,
    events: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
}

fn counter(value: Option<sled::IVec>) -> u64 {
    value
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes)
}

impl NotificationStore {
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<NotificationStore> {
        let db = open_db(dir, "notifications.sled")?;
        let store = NotificationStore {
            notifications: tree(&db, "notifications")?,
            events: tree(&db, "events")?,
            meta: tree(&db, "meta")?,
            flusher: Flusher::start(db.clone(), !fsync).context("starting the flush thread")?,
            db,
        };
        Ok(store)
    }

    /// Writes `event`'s notification unless its id was written before; whether it was new.
    /// Not durable until [`NotificationStore::flushed`].
    pub fn record(&self, event: &TransferEvent, now_ms: u64) -> std::io::Result<bool> {
        let value = serde_json::to_vec(&Notification {
            event: event.clone(),
            at_ms: now_ms,
        })
        .map_err(io)?;
        let seq = self.db.generate_id().map_err(io)?.to_be_bytes();
        (&self.notifications, &self.events, &self.meta)
            .transaction(|(notifications, events, meta)| {
                if events.get(event.event.as_bytes())?.is_some() {
                    let seen = counter(meta.get("duplicates")?) + 1;
                    meta.insert("duplicates", &seen.to_be_bytes())?;
                    return Ok(false);
                }
                events.insert(event.event.as_bytes(), &seq)?;
                notifications.insert(&seq, value.as_slice())?;
                Ok::<_, ConflictableTransactionError<()>>(true)
            })
            .map_err(|e| io(format!("{e:?}")))
    }

    pub async fn flushed(&self) -> std::io::Result<()> {
        self.flusher.flush().await
    }

    pub fn len(&self) -> usize {
        self.notifications.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notifications.is_empty()
    }

    /// Events delivered again and found written.
    pub fn duplicates(&self) -> u64 {
        counter(self.meta.get("duplicates").ok().flatten())
    }

    /// Up to `limit` notifications from sequence `from` on, oldest first.
    pub fn list(&self, from: u64, limit: usize) -> anyhow::Result<Vec<(u64, Notification)>> {
        sequenced(
            &self.notifications,
            "notifications",
            "a notification",
            from,
            limit,
        )
    }

    pub async fn close(&self) -> std::io::Result<()> {
        self.flusher.flush_now().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::Branch;
    use crate::lock::Age;
    use crate::participant::{Outcome, Write};

    fn bank() -> Bank {
        Bank {
            accounts: 2,
            opening: 100,
        }
    }

    fn names() -> Vec<String> {
        bank().names().collect()
    }

    /// Opens a store again right after dropping it: the dropped one's flush thread lets go
    /// of sled's file lock a moment later.
    fn reopen<T>(open: impl Fn() -> anyhow::Result<T>) -> anyhow::Result<T> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open() {
                Err(e)
                    if format!("{e:#}").contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    fn transfer() -> Transfer {
        Transfer {
            id: "t1".into(),
            from: "acct-0000".into(),
            to: "acct-0001".into(),
            amount: 7,
        }
    }

    #[tokio::test]
    async fn prepared_records_and_commits_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let record = Prepared {
            tx: 3,
            age: Age { started: 1, tx: 3 },
            coordinator: "tc1".into(),
            writes: vec![Write {
                account: "acct-0000".into(),
                delta: -7,
            }],
            journal: Some(transfer()),
            at_ms: 10,
        };
        {
            let (store, recovered) =
                reopen(|| ParticipantStore::open(dir.path(), bank(), &names(), true)).unwrap();
            assert_eq!(recovered.balances.values().sum::<i64>(), 200);
            store.prepare(&record).await.unwrap();
        }
        let (store, recovered) =
            reopen(|| ParticipantStore::open(dir.path(), bank(), &names(), true)).unwrap();
        assert_eq!(recovered.prepared, vec![record.clone()]);
        let applied = Applied {
            balances: vec![("acct-0000".into(), 93)],
            journal: Some(transfer()),
            changed: true,
        };
        store.commit(3, &applied).await.unwrap();
        drop(store);
        let (store, recovered) =
            reopen(|| ParticipantStore::open(dir.path(), bank(), &names(), true)).unwrap();
        assert!(recovered.prepared.is_empty());
        assert_eq!(recovered.balances["acct-0000"], 93);
        assert_eq!(recovered.journal, 1);
        let journal = store.journal(0, 10).unwrap();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal[0].1.transfer, transfer());
        assert!(store.journal(journal[0].0 + 1, 10).unwrap().is_empty());
    }

    #[test]
    fn a_store_of_another_bank_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(reopen(|| ParticipantStore::open(dir.path(), bank(), &names(), true)).unwrap());
        let other = Bank {
            accounts: 2,
            opening: 5,
        };
        let e = reopen(|| ParticipantStore::open(dir.path(), other, &names(), true))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("another bank"), "{e}");
        let (_, recovered) =
            reopen(|| ParticipantStore::open(dir.path(), bank(), &names(), true)).unwrap();
        assert_eq!(recovered.balances["acct-0000"], 100, "nothing was lost");
    }

    #[tokio::test]
    async fn the_decision_log_replays_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let begin = |tx| LogRecord::Begin {
            tx,
            age: Age { started: 0, tx },
            transfer: transfer(),
            branches: [("s1".to_string(), Branch::default())]
                .into_iter()
                .collect(),
        };
        {
            let (log, replay) = reopen(|| DecisionLog::open(dir.path(), true)).unwrap();
            assert!(replay.is_empty());
            log.append(&begin(2)).await.unwrap();
            log.append(&begin(1)).await.unwrap();
            log.append(&LogRecord::Commit { tx: 2 }).await.unwrap();
            log.append(&LogRecord::End {
                tx: 1,
                outcome: Outcome::Aborted,
            })
            .await
            .unwrap();
            log.close().await.unwrap();
        }
        let (_, replay) = reopen(|| DecisionLog::open(dir.path(), true)).unwrap();
        assert_eq!(
            replay,
            vec![
                begin(1),
                LogRecord::End {
                    tx: 1,
                    outcome: Outcome::Aborted
                },
                begin(2),
                LogRecord::Commit { tx: 2 }
            ]
        );
    }

    #[tokio::test]
    async fn a_saga_log_resumes_the_unfinished_and_queues_each_end_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Saga::new(transfer(), 1);
        let mut b = Saga::new(
            Transfer {
                id: "t2".into(),
                ..transfer()
            },
            1,
        );
        {
            let (log, resume) = reopen(|| SagaLog::open(dir.path(), true)).unwrap();
            assert!(resume.is_empty());
            log.write(&a, true).await.unwrap();
            log.write(&b, true).await.unwrap();
            a.phase = crate::saga::Phase::Completed;
            log.write(&a, true).await.unwrap();
            b.phase = crate::saga::Phase::Credit;
            log.write(&b, true).await.unwrap();
            log.close().await.unwrap();
        }
        let (log, resume) = reopen(|| SagaLog::open(dir.path(), true)).unwrap();
        assert_eq!(resume, vec![b.clone()]);
        assert_eq!(log.get("t1").unwrap(), Some(a));
        let outbox = log.outbox(10).unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].1.event, "t1/completed");
        log.published(&[outbox[0].0]).unwrap();
        assert_eq!(log.outbox_len(), 0);
    }

    #[tokio::test]
    async fn a_notification_is_written_once_whatever_the_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let mut saga = Saga::new(transfer(), 1);
        saga.phase = crate::saga::Phase::Completed;
        let event = TransferEvent::of(&saga).unwrap();
        {
            let store = reopen(|| NotificationStore::open(dir.path(), true)).unwrap();
            assert!(store.record(&event, 5).unwrap());
            assert!(!store.record(&event, 6).unwrap());
            store.close().await.unwrap();
        }
        let store = reopen(|| NotificationStore::open(dir.path(), true)).unwrap();
        assert!(
            !store.record(&event, 7).unwrap(),
            "remembered across a restart"
        );
        assert_eq!((store.len(), store.duplicates()), (1, 2));
        let listed = store.list(0, 10).unwrap();
        assert_eq!(listed[0].1.event, event);
        assert_eq!(listed[0].1.at_ms, 5);
    }
}
