//! The durable backend, on sled.
//!
//! Three trees, written in one sled transaction per mutation so a write and its token record
//! land together:
//! - `data`: key -> version (8 bytes, big-endian) | value
//! - `tokens`: token -> [`TokenRecord`]
//! - `token_order`: created_ms (8 bytes, big-endian) | token -> (), oldest first, for expiry
//!
//! Durability: with [`SyncMode::Always`] every mutation is flushed to disk before the client
//! is answered ([`Store::persist`]). Concurrent writers share flushes (group commit): one flush
//! covers every write made before it started, so 32 writers waiting cost one or two fsyncs,
//! not 32 in a row.
//! With [`SyncMode::Never`] sled flushes on its own every 500 ms: an acknowledged write can be
//! lost if the process is killed within that window. That is the trade-off to demonstrate.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::tokens::TokenRecord;
use super::{
    Applied, DeleteOutcome, Fingerprint, PersistFuture, PutOutcome, Remembered, Store, StoreError,
    StoreStats, Token, TokenPolicy, Versioned,
};

/// When writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Flush before answering: an acknowledged write survives SIGKILL and power loss.
    Always,
    /// Let sled flush every 500 ms: faster, and an acknowledged write can be lost.
    Never,
}

pub struct SledStore {
    db: sled::Db,
    data: sled::Tree,
    tokens: sled::Tree,
    order: sled::Tree,
    policy: TokenPolicy,
    sync: SyncMode,
    keys: AtomicU64,
    token_count: AtomicU64,
    commits: Arc<GroupCommit>,
}

/// Group commit: writes are numbered; a flush records the highest number it covers.
///
/// One flush runs at a time, and it keeps its turn until sled is done, even when every
/// writer waiting on it gave up (a client deadline drops the request mid-wait). Flushes left
/// running by abandoned waiters would otherwise pile up, and sled 0.34 deadlocks when enough
/// of them do: its I/O threads all wait inside a flush for a log write queued behind them.
/// For the same reason the flush is sled's blocking `flush` on a tokio blocking thread, not
/// `flush_async` on sled's own small pool (whose async flush can also lose its wake-up:
/// sled issues #1241, #1308).
#[derive(Default)]
struct GroupCommit {
    /// Mutations applied so far.
    written: AtomicU64,
    /// Every mutation numbered up to this is on disk.
    flushed: AtomicU64,
    /// The turn to flush; its guard travels with the flush, not with the waiter.
    flushing: Arc<tokio::sync::Mutex<()>>,
    /// Flushes done, to see the grouping at work.
    flushes: AtomicU64,
    /// Flushes running now, and the most ever seen at once (1, or the turn is broken).
    running: AtomicU64,
    most_at_once: AtomicU64,
}

impl GroupCommit {
    /// Flushes `db` under `turn`, recording what the flush covers. Runs to the end whether or
    /// not anyone still waits for it.
    fn flush_with_turn(
        &self,
        db: &sled::Db,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<(), StoreError> {
        let now = self.running.fetch_add(1, Ordering::AcqRel) + 1;
        self.most_at_once.fetch_max(now, Ordering::AcqRel);
        let covers = self.written.load(Ordering::Acquire);
        let flushed = db.flush().map_err(storage);
        if flushed.is_ok() {
            self.flushed.fetch_max(covers, Ordering::AcqRel);
            self.flushes.fetch_add(1, Ordering::Relaxed);
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
        drop(turn);
        flushed.map(drop)
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl SledStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path, policy: TokenPolicy, sync: SyncMode) -> anyhow::Result<Self> {
        let path = dir.join("kv.sled");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(64 * 1024 * 1024)
            .flush_every_ms(Some(500))
            .open()
            .with_context(|| format!("opening the sled database at {}", path.display()))?;
        let open = |name: &str| {
            db.open_tree(name)
                .with_context(|| format!("opening tree {name:?} in {}", path.display()))
        };
        let data = open("data")?;
        let tokens = open("tokens")?;
        let order = open("token_order")?;
        let store = Self {
            keys: AtomicU64::new(data.len() as u64),
            token_count: AtomicU64::new(tokens.len() as u64),
            db,
            data,
            tokens,
            order,
            policy,
            sync,
            commits: Arc::default(),
        };
        tracing::info!(
            event = "store_opened",
            path = %path.display(),
            keys = store.keys.load(Ordering::Relaxed),
            tokens = store.token_count.load(Ordering::Relaxed),
            "sled store opened"
        );
        Ok(store)
    }

    pub fn sync_mode(&self) -> SyncMode {
        self.sync
    }

    /// Drops the oldest tokens while there are more than the policy allows. Runs after the
    /// transaction: eviction racing a retry only means that retry is applied as new, which
    /// is what a forgotten token means anyway.
    fn enforce_capacity(&self) -> Result<(), StoreError> {
        while self.token_count.load(Ordering::Relaxed) > self.policy.capacity as u64 {
            if !self.forget_oldest(None)? {
                break;
            }
        }
        Ok(())
    }

    /// Removes the oldest token, if any (and, with `older_than`, only if created before it).
    fn forget_oldest(&self, older_than: Option<u64>) -> Result<bool, StoreError> {
        let Some((order_key, _)) = self.order.first().map_err(storage)? else {
            return Ok(false);
        };
        if order_key.len() < 8 {
            return Err(StoreError::Corrupt {
                what: "token order tree",
                detail: format!("key of {} bytes", order_key.len()),
            });
        }
        let created = u64::from_be_bytes(order_key[..8].try_into().expect("8 bytes"));
        if older_than.is_some_and(|limit| created >= limit) {
            return Ok(false);
        }
        // Only the caller that actually removed the entry counts it.
        if self.order.remove(&order_key).map_err(storage)?.is_some()
            && self
                .tokens
                .remove(&order_key[8..])
                .map_err(storage)?
                .is_some()
        {
            self.token_count.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(true)
    }
}

fn order_key(created_ms: u64, token: &Token) -> Vec<u8> {
    let mut key = created_ms.to_be_bytes().to_vec();
    key.extend_from_slice(token.as_bytes());
    key
}

fn storage(e: sled::Error) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn from_tx(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

fn decode_value(key: &[u8], raw: &[u8]) -> Result<Versioned, StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Corrupt {
            what: "data tree",
            detail: format!(
                "value of key {:?} is {} bytes, shorter than its version",
                String::from_utf8_lossy(key),
                raw.len()
            ),
        });
    }
    Ok(Versioned {
        version: u64::from_be_bytes(raw[..8].try_into().expect("8 bytes")),
        value: raw[8..].to_vec(),
    })
}

fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(8 + value.len());
    raw.extend_from_slice(&version.to_be_bytes());
    raw.extend_from_slice(value);
    raw
}

impl Store for SledStore {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        self.data
            .get(key)
            .map_err(storage)?
            .map(|raw| decode_value(key, &raw))
            .transpose()
    }

    fn put(
        &self,
        key: &[u8],
        value: &[u8],
        token: Option<&Token>,
        now_ms: u64,
    ) -> Result<Applied<PutOutcome>, StoreError> {
        let fingerprint = Fingerprint::put(key, value);
        let applied = (&self.data, &self.tokens, &self.order)
            .transaction(|(data, tokens, order)| -> TxResult<Applied<PutOutcome>> {
                if let Some(token) = token
                    && let Some(raw) = tokens.get(token.as_bytes())?
                {
                    let record =
                        TokenRecord::decode(&raw).map_err(ConflictableTransactionError::Abort)?;
                    let outcome = record
                        .replay_put(fingerprint)
                        .map_err(ConflictableTransactionError::Abort)?;
                    return Ok(Applied {
                        outcome,
                        replayed: true,
                    });
                }
                let previous = match data.get(key)? {
                    Some(raw) => Some(
                        decode_value(key, &raw)
                            .map_err(ConflictableTransactionError::Abort)?
                            .version,
                    ),
                    None => None,
                };
                let outcome = PutOutcome {
                    version: previous.map_or(1, |v| v + 1),
                    created: previous.is_none(),
                };
                data.insert(key, encode_value(outcome.version, value))?;
                if let Some(token) = token {
                    let record = TokenRecord {
                        created_ms: now_ms,
                        fingerprint,
                        result: Remembered::Put(outcome),
                    };
                    tokens.insert(token.as_bytes(), record.encode())?;
                    order.insert(order_key(now_ms, token), &[] as &[u8])?;
                }
                Ok(Applied {
                    outcome,
                    replayed: false,
                })
            })
            .map_err(from_tx)?;
        self.commits.written.fetch_add(1, Ordering::AcqRel);
        if !applied.replayed {
            if applied.outcome.created {
                self.keys.fetch_add(1, Ordering::Relaxed);
            }
            if token.is_some() {
                self.token_count.fetch_add(1, Ordering::Relaxed);
                self.enforce_capacity()?;
            }
        }
        Ok(applied)
    }

    fn delete(
        &self,
        key: &[u8],
        token: Option<&Token>,
        now_ms: u64,
    ) -> Result<Applied<DeleteOutcome>, StoreError> {
        let fingerprint = Fingerprint::delete(key);
        let applied = (&self.data, &self.tokens, &self.order)
            .transaction(
                |(data, tokens, order)| -> TxResult<Applied<DeleteOutcome>> {
                    if let Some(token) = token
                        && let Some(raw) = tokens.get(token.as_bytes())?
                    {
                        let record = TokenRecord::decode(&raw)
                            .map_err(ConflictableTransactionError::Abort)?;
                        let outcome = record
                            .replay_delete(fingerprint)
                            .map_err(ConflictableTransactionError::Abort)?;
                        return Ok(Applied {
                            outcome,
                            replayed: true,
                        });
                    }
                    let outcome = DeleteOutcome {
                        existed: data.remove(key)?.is_some(),
                    };
                    if let Some(token) = token {
                        let record = TokenRecord {
                            created_ms: now_ms,
                            fingerprint,
                            result: Remembered::Delete(outcome),
                        };
                        tokens.insert(token.as_bytes(), record.encode())?;
                        order.insert(order_key(now_ms, token), &[] as &[u8])?;
                    }
                    Ok(Applied {
                        outcome,
                        replayed: false,
                    })
                },
            )
            .map_err(from_tx)?;
        self.commits.written.fetch_add(1, Ordering::AcqRel);
        if !applied.replayed {
            if applied.outcome.existed {
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
            if token.is_some() {
                self.token_count.fetch_add(1, Ordering::Relaxed);
                self.enforce_capacity()?;
            }
        }
        Ok(applied)
    }

    fn expire_tokens(&self, now_ms: u64) -> Result<usize, StoreError> {
        let cutoff = now_ms
            .saturating_sub(self.policy.ttl.as_millis() as u64)
            .saturating_add(1);
        let mut expired = 0;
        while self.forget_oldest(Some(cutoff))? {
            expired += 1;
        }
        Ok(expired)
    }

    fn persist(&self) -> PersistFuture<'_> {
        Box::pin(async move {
            match self.sync {
                SyncMode::Always => self.flush().await,
                SyncMode::Never => Ok(()),
            }
        })
    }

    fn flush(&self) -> PersistFuture<'_> {
        Box::pin(async move {
            // Everything this caller wrote is numbered at most `mine`.
            let mine = self.commits.written.load(Ordering::Acquire);
            if self.commits.flushed.load(Ordering::Acquire) >= mine {
                return Ok(());
            }
            let turn = self.commits.flushing.clone().lock_owned().await;
            if self.commits.flushed.load(Ordering::Acquire) >= mine {
                return Ok(()); // a flush that started after our write finished while we queued
            }
            let (db, commits) = (self.db.clone(), self.commits.clone());
            tokio::task::spawn_blocking(move || commits.flush_with_turn(&db, turn))
                .await
                .map_err(|e| StoreError::Storage(format!("the flush thread failed: {e}")))?
        })
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.keys.load(Ordering::Relaxed),
            tokens: self.token_count.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;
    use std::time::Duration;

    fn open(dir: &Path, policy: TokenPolicy) -> SledStore {
        SledStore::open(dir, policy, SyncMode::Always).unwrap()
    }

    #[test]
    fn versions_count_writes() {
        let dir = tempfile::tempdir().unwrap();
        contract::versions_count_writes(&open(dir.path(), TokenPolicy::default()));
    }

    #[test]
    fn a_token_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        contract::a_token_applies_once(&open(dir.path(), TokenPolicy::default()));
    }

    #[test]
    fn a_token_reused_for_another_request_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        contract::a_token_reused_for_another_request_is_refused(&open(
            dir.path(),
            TokenPolicy::default(),
        ));
    }

    #[test]
    fn tokens_are_bounded_by_ttl_and_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let policy = TokenPolicy {
            ttl: Duration::from_millis(100),
            capacity: 3,
        };
        contract::tokens_are_bounded_by_ttl_and_capacity(&open(dir.path(), policy));
    }

    #[tokio::test]
    async fn data_and_tokens_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::random();
        {
            let store = open(dir.path(), TokenPolicy::default());
            store.put(b"k", b"v", Some(&token), 1).unwrap();
            store.persist().await.unwrap();
        }
        let store = open(dir.path(), TokenPolicy::default());
        assert_eq!(store.stats().keys, 1);
        assert_eq!(store.stats().tokens, 1);
        let retry = store.put(b"k", b"v", Some(&token), 2).unwrap();
        assert!(retry.replayed);
        assert_eq!(store.get(b"k").unwrap().unwrap().version, 1);
    }

    /// 64 writers waiting for durability at once share flushes instead of queueing one
    /// fsync each; every one of them still returns only after its write is on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path(), TokenPolicy::default()));
        let mut writers = tokio::task::JoinSet::new();
        for i in 0..64u32 {
            let store = store.clone();
            writers.spawn(async move {
                store.put(&i.to_be_bytes(), b"v", None, 1).unwrap();
                store.persist().await.unwrap();
                store.commits.flushed.load(Ordering::Acquire)
            });
        }
        while let Some(flushed) = writers.join_next().await {
            assert!(flushed.unwrap() >= 1);
        }
        assert_eq!(
            store.commits.flushed.load(Ordering::Acquire),
            64,
            "every write covered"
        );
        let flushes = store.commits.flushes.load(Ordering::Relaxed);
        assert!(
            (1..64).contains(&flushes),
            "{flushes} flushes for 64 writers"
        );
    }

    /// Writers that give up waiting for durability (a client deadline dropping the request,
    /// as happens in bulk when a paused node resumes) must not leave flushes behind that run
    /// alongside the next ones: enough of those at once deadlock sled 0.34. Thousands of
    /// abandoned waits; flushes never overlap, and a last write still becomes durable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_flushes_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path(), TokenPolicy::default()));
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..32u32 {
            let store = store.clone();
            writers.spawn(async move {
                for i in 0..100u32 {
                    store
                        .put(
                            &w.to_be_bytes(),
                            &i.to_be_bytes(),
                            Some(&Token::random()),
                            1,
                        )
                        .unwrap();
                    let patience = Duration::from_micros(u64::from((w * 7 + i * 13) % 500));
                    let _ = tokio::time::timeout(patience, store.persist()).await;
                }
            });
        }
        let all = async {
            while let Some(done) = writers.join_next().await {
                done.unwrap();
            }
            store.put(b"last", b"v", None, 1).unwrap();
            store.persist().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("the store wedged: writes stopped becoming durable");
        let commits = &store.commits;
        assert_eq!(commits.most_at_once.load(Ordering::Acquire), 1);
        assert!(commits.flushes.load(Ordering::Relaxed) > 1);
        assert_eq!(
            commits.flushed.load(Ordering::Acquire),
            commits.written.load(Ordering::Acquire)
        );
    }

    #[test]
    fn a_corrupt_database_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("kv.sled");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("conf"), b"\xff\xff garbage").unwrap();
        let err = format!(
            "{:#}",
            SledStore::open(dir.path(), TokenPolicy::default(), SyncMode::Always)
                .err()
                .unwrap()
        );
        assert!(err.contains("kv.sled"), "{err}");
    }
}
