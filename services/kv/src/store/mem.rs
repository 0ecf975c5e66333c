//! The in-memory backend: one lock over the map and the token table, so a write and its
//! token are recorded together. Reads share the lock; at Project 0's scale a single lock is
//! not the bottleneck (the RPC stack is), and it keeps atomicity obvious.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use super::tokens::TokenRecord;
use super::{
    Applied, DeleteOutcome, Fingerprint, PersistFuture, PutOutcome, Remembered, Store, StoreError,
    StoreStats, Token, TokenPolicy, Versioned,
};

pub struct MemStore {
    policy: TokenPolicy,
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    data: HashMap<Vec<u8>, Versioned>,
    tokens: HashMap<Token, TokenRecord>,
    /// Tokens in the order they were recorded, oldest first, for TTL and capacity eviction.
    order: VecDeque<(u64, Token)>,
}

impl MemStore {
    pub fn new(policy: TokenPolicy) -> Self {
        Self {
            policy,
            inner: RwLock::new(Inner::default()),
        }
    }
}

impl Inner {
    fn remember(&mut self, token: &Token, record: TokenRecord, capacity: usize) {
        self.tokens.insert(token.clone(), record);
        self.order.push_back((record.created_ms, token.clone()));
        while self.tokens.len() > capacity {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.tokens.remove(&oldest);
        }
    }
}

impl Store for MemStore {
    fn kind(&self) -> &'static str {
        "mem"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        Ok(self.inner.read().unwrap().data.get(key).cloned())
    }

    fn put(
        &self,
        key: &[u8],
        value: &[u8],
        token: Option<&Token>,
        now_ms: u64,
    ) -> Result<Applied<PutOutcome>, StoreError> {
        let fingerprint = Fingerprint::put(key, value);
        let mut inner = self.inner.write().unwrap();
        if let Some(record) = token.and_then(|t| inner.tokens.get(t)) {
            return Ok(Applied {
                outcome: record.replay_put(fingerprint)?,
                replayed: true,
            });
        }
        let outcome = match inner.data.get_mut(key) {
            Some(current) => {
                current.version += 1;
                current.value = value.to_vec();
                PutOutcome {
                    version: current.version,
                    created: false,
                }
            }
            None => {
                inner.data.insert(
                    key.to_vec(),
                    Versioned {
                        value: value.to_vec(),
                        version: 1,
                    },
                );
                PutOutcome {
                    version: 1,
                    created: true,
                }
            }
        };
        if let Some(token) = token {
            let record = TokenRecord {
                created_ms: now_ms,
                fingerprint,
                result: Remembered::Put(outcome),
            };
            inner.remember(token, record, self.policy.capacity);
        }
        Ok(Applied {
            outcome,
            replayed: false,
        })
    }

    fn delete(
        &self,
        key: &[u8],
        token: Option<&Token>,
        now_ms: u64,
    ) -> Result<Applied<DeleteOutcome>, StoreError> {
        let fingerprint = Fingerprint::delete(key);
        let mut inner = self.inner.write().unwrap();
        if let Some(record) = token.and_then(|t| inner.tokens.get(t)) {
            return Ok(Applied {
                outcome: record.replay_delete(fingerprint)?,
                replayed: true,
            });
        }
        let outcome = DeleteOutcome {
            existed: inner.data.remove(key).is_some(),
        };
        if let Some(token) = token {
            let record = TokenRecord {
                created_ms: now_ms,
                fingerprint,
                result: Remembered::Delete(outcome),
            };
            inner.remember(token, record, self.policy.capacity);
        }
        Ok(Applied {
            outcome,
            replayed: false,
        })
    }

    fn expire_tokens(&self, now_ms: u64) -> Result<usize, StoreError> {
        let ttl = self.policy.ttl.as_millis() as u64;
        let mut inner = self.inner.write().unwrap();
        let mut expired = 0;
        while let Some((created, _)) = inner.order.front() {
            if created.saturating_add(ttl) > now_ms {
                break;
            }
            let (_, token) = inner.order.pop_front().expect("front exists");
            inner.tokens.remove(&token);
            expired += 1;
        }
        Ok(expired)
    }

    fn persist(&self) -> PersistFuture<'_> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn flush(&self) -> PersistFuture<'_> {
        self.persist()
    }

    fn stats(&self) -> StoreStats {
        let inner = self.inner.read().unwrap();
        StoreStats {
            keys: inner.data.len() as u64,
            tokens: inner.tokens.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract;
    use std::time::Duration;

    fn store() -> MemStore {
        MemStore::new(TokenPolicy::default())
    }

    #[test]
    fn versions_count_writes() {
        contract::versions_count_writes(&store());
    }

    #[test]
    fn a_token_applies_once() {
        contract::a_token_applies_once(&store());
    }

    #[test]
    fn a_token_reused_for_another_request_is_refused() {
        contract::a_token_reused_for_another_request_is_refused(&store());
    }

    #[test]
    fn tokens_are_bounded_by_ttl_and_capacity() {
        let policy = TokenPolicy {
            ttl: Duration::from_millis(100),
            capacity: 3,
        };
        contract::tokens_are_bounded_by_ttl_and_capacity(&MemStore::new(policy));
    }
}
