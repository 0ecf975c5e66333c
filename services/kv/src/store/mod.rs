//! Where Project 0 keeps its data, behind one trait with two backends.
//!
//! - [`MemStore`]: a map in memory; gone when the process is. The fast baseline.
//! - [`SledStore`]: sled trees on disk; survives SIGKILL once [`Store::persist`] returned.
//!
//! Each key has a *version*: 1 when a PUT creates it, +1 per later PUT. Versions make
//! "applied twice" visible: a retried PUT that was applied again would bump it.
//!
//! Idempotency lives here too, not in the server, because it must be atomic with the write:
//! the write and the record of its token are stored together or not at all, so a crash can
//! never leave a write applied without its token (which a retry would apply again).

mod mem;
mod sled_store;
mod tokens;

use std::future::Future;
use std::pin::Pin;

pub use mem::MemStore;
pub use sled_store::{SledStore, SyncMode};
pub use tokens::{Fingerprint, Token, TokenPolicy};

/// A value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Vec<u8>,
    pub version: u64,
}

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub version: u64,
    pub created: bool,
}

/// What a DELETE did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub existed: bool,
}

/// The result of a mutation, and whether it is the replay of an earlier application
/// (a retry carrying a token already seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied<T> {
    pub outcome: T,
    pub replayed: bool,
}

/// The first result of a token's operation, as remembered for its retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remembered {
    Put(PutOutcome),
    Delete(DeleteOutcome),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "idempotency token reused for a different request (a token names one logical operation; \
         retries must resend the same key and value)"
    )]
    TokenMismatch,
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
}

/// Counts for `/status`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct StoreStats {
    pub keys: u64,
    pub tokens: u64,
}

pub type PersistFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// A key-value store with per-key versions and idempotent mutations.
///
/// `now_ms` is wall-clock milliseconds since the Unix epoch, passed in (not read) so token
/// expiry is testable; wall clock, not monotonic, because tokens outlive the process.
pub trait Store: Send + Sync + 'static {
    /// `mem` or `sled`.
    fn kind(&self) -> &'static str;

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError>;

    /// Writes `value`. With a token already seen (and not expired), applies nothing and
    /// returns the first result, `replayed`.
    fn put(
        &self,
        key: &[u8],
        value: &[u8],
        token: Option<&Token>,
        now_ms: u64,
    ) -> Result<Applied<PutOutcome>, StoreError>;

    /// Removes `key`; same token rules as [`Store::put`].
    fn delete(
        &self,
        key: &[u8],
        token: Option<&Token>,
        now_ms: u64,
    ) -> Result<Applied<DeleteOutcome>, StoreError>;

    /// Forgets tokens older than the policy's TTL; returns how many.
    fn expire_tokens(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Makes every mutation returned so far as durable as the store's sync mode promises;
    /// called before a mutation is acknowledged. A no-op in memory.
    fn persist(&self) -> PersistFuture<'_>;

    /// Writes everything to disk whatever the sync mode: called on graceful shutdown.
    fn flush(&self) -> PersistFuture<'_>;

    fn stats(&self) -> StoreStats;
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The behaviour both backends must share, run against each of them.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn token(n: u8) -> Token {
        Token::new(vec![n; 16]).unwrap()
    }

    pub fn versions_count_writes(store: &dyn Store) {
        assert_eq!(store.get(b"k").unwrap(), None);
        let first = store.put(b"k", b"a", None, 1).unwrap();
        assert_eq!(
            first.outcome,
            PutOutcome {
                version: 1,
                created: true
            }
        );
        let second = store.put(b"k", b"b", None, 2).unwrap();
        assert_eq!(
            second.outcome,
            PutOutcome {
                version: 2,
                created: false
            }
        );
        assert_eq!(
            store.get(b"k").unwrap(),
            Some(Versioned {
                value: b"b".to_vec(),
                version: 2
            })
        );
        assert!(store.delete(b"k", None, 3).unwrap().outcome.existed);
        assert!(!store.delete(b"k", None, 4).unwrap().outcome.existed);
        assert_eq!(store.get(b"k").unwrap(), None);
        assert_eq!(store.stats().keys, 0);
    }

    pub fn a_token_applies_once(store: &dyn Store) {
        let t = token(1);
        let first = store.put(b"k", b"v", Some(&t), 10).unwrap();
        assert!(!first.replayed);
        // Someone else writes in between; the retry must not apply again.
        store.put(b"k", b"other", None, 11).unwrap();
        let retry = store.put(b"k", b"v", Some(&t), 12).unwrap();
        assert!(retry.replayed);
        assert_eq!(retry.outcome, first.outcome);
        assert_eq!(store.get(b"k").unwrap().unwrap().value, b"other");
        assert_eq!(store.stats().tokens, 1);

        let d = token(2);
        let deleted = store.delete(b"k", Some(&d), 13).unwrap();
        store.put(b"k", b"again", None, 14).unwrap();
        let retry = store.delete(b"k", Some(&d), 15).unwrap();
        assert!(retry.replayed && retry.outcome.existed);
        assert_eq!(retry.outcome, deleted.outcome);
        assert_eq!(store.get(b"k").unwrap().unwrap().value, b"again");
    }

    pub fn a_token_reused_for_another_request_is_refused(store: &dyn Store) {
        let t = token(3);
        store.put(b"k", b"v", Some(&t), 1).unwrap();
        assert!(matches!(
            store.put(b"k", b"different", Some(&t), 2),
            Err(StoreError::TokenMismatch)
        ));
        assert!(matches!(
            store.delete(b"k", Some(&t), 3),
            Err(StoreError::TokenMismatch)
        ));
        assert_eq!(store.get(b"k").unwrap().unwrap().value, b"v");
    }

    /// `policy` must be TTL 100 ms, capacity 3.
    pub fn tokens_are_bounded_by_ttl_and_capacity(store: &dyn Store) {
        for n in 0..5u8 {
            store
                .put(&[n], b"v", Some(&token(n)), 1000 + u64::from(n))
                .unwrap();
        }
        assert_eq!(store.stats().tokens, 3, "capacity evicts the oldest");
        // The oldest two are forgotten: a retry of them applies again (version 2).
        let again = store.put(&[0], b"v", Some(&token(0)), 1010).unwrap();
        assert!(!again.replayed);
        assert_eq!(again.outcome.version, 2);
        // Token 4 is still remembered.
        assert!(
            store
                .put(&[4], b"v", Some(&token(4)), 1010)
                .unwrap()
                .replayed
        );
        assert_eq!(
            store.expire_tokens(1104).unwrap(),
            2,
            "tokens 3 and 4 expired"
        );
        assert_eq!(store.expire_tokens(2000).unwrap(), 1);
        assert_eq!(store.stats().tokens, 0);
    }
}
