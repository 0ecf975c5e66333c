//! Idempotency tokens: what they are, how long they are remembered, and how a stored one is
//! matched against a retry.

use std::time::Duration;

use super::{DeleteOutcome, PutOutcome, Remembered, StoreError};

/// The longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 64;

/// A client-chosen name for one logical mutation, resent unchanged on every retry of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(Vec<u8>);

impl Token {
    /// `None` for an empty token (the request is not idempotent).
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.is_empty() || bytes.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "idempotency_token is {} bytes; it must be 1 to {MAX_TOKEN_BYTES} bytes",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    /// A fresh random 16-byte token.
    pub fn random() -> Self {
        Self(rand::random::<[u8; 16]>().to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// How long and how many tokens are remembered. A retry that comes after its token was
/// forgotten is applied again, so the TTL must exceed any client's retry deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    pub ttl: Duration,
    pub capacity: usize,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            capacity: 100_000,
        }
    }
}

/// Identifies the request a token was first used for, so a token reused for a different
/// request is refused rather than answered with an unrelated result. FNV-1a over the
/// operation, key and value: stable across processes and versions (it is stored on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    pub fn put(key: &[u8], value: &[u8]) -> Self {
        Self::of(&[b"put", key, value])
    }

    pub fn delete(key: &[u8]) -> Self {
        Self::of(&[b"delete", key])
    }

    fn of(parts: &[&[u8]]) -> Self {
        // Length-prefix each part so ("ab","c") and ("a","bc") differ.
        Self(distlab_runtime::hash::fnv1a(parts.iter().flat_map(
            |part| {
                (part.len() as u64)
                    .to_le_bytes()
                    .into_iter()
                    .chain(part.iter().copied())
            },
        )))
    }
}

/// A remembered token: when it was first used, for what, and what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    pub created_ms: u64,
    pub fingerprint: Fingerprint,
    pub result: Remembered,
}

impl TokenRecord {
    /// The PUT result to replay, or a mismatch if the token was used for something else.
    pub fn replay_put(&self, fingerprint: Fingerprint) -> Result<PutOutcome, StoreError> {
        match self.result {
            Remembered::Put(outcome) if self.fingerprint == fingerprint => Ok(outcome),
            _ => Err(StoreError::TokenMismatch),
        }
    }

    pub fn replay_delete(&self, fingerprint: Fingerprint) -> Result<DeleteOutcome, StoreError> {
        match self.result {
            Remembered::Delete(outcome) if self.fingerprint == fingerprint => Ok(outcome),
            _ => Err(StoreError::TokenMismatch),
        }
    }

    /// On-disk form: created_ms (8, big-endian) | fingerprint (8) | tag (1) | fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(26);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.fingerprint.0.to_be_bytes());
        match self.result {
            Remembered::Put(p) => {
                out.push(1);
                out.extend_from_slice(&p.version.to_be_bytes());
                out.push(u8::from(p.created));
            }
            Remembered::Delete(d) => {
                out.push(2);
                out.push(u8::from(d.existed));
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            what: "idempotency token table",
            detail: format!("{detail} ({} bytes)", bytes.len()),
        };
        let u64_at = |at: usize| -> Result<u64, StoreError> {
            bytes
                .get(at..at + 8)
                .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
                .ok_or_else(|| corrupt("record too short"))
        };
        let flag = |at: usize| -> Result<bool, StoreError> {
            match bytes.get(at) {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(corrupt("bad flag byte")),
            }
        };
        let created_ms = u64_at(0)?;
        let fingerprint = Fingerprint(u64_at(8)?);
        let result = match bytes.get(16) {
            Some(1) if bytes.len() == 26 => Remembered::Put(PutOutcome {
                version: u64_at(17)?,
                created: flag(25)?,
            }),
            Some(2) if bytes.len() == 18 => {
                Remembered::Delete(DeleteOutcome { existed: flag(17)? })
            }
            _ => return Err(corrupt("unknown record kind")),
        };
        Ok(Self {
            created_ms,
            fingerprint,
            result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_corruption_is_reported() {
        let records = [
            TokenRecord {
                created_ms: 42,
                fingerprint: Fingerprint::put(b"k", b"v"),
                result: Remembered::Put(PutOutcome {
                    version: 7,
                    created: false,
                }),
            },
            TokenRecord {
                created_ms: u64::MAX,
                fingerprint: Fingerprint::delete(b"k"),
                result: Remembered::Delete(DeleteOutcome { existed: true }),
            },
        ];
        for record in records {
            assert_eq!(TokenRecord::decode(&record.encode()).unwrap(), record);
        }
        let mut bad = records[0].encode();
        bad[16] = 9;
        assert!(
            TokenRecord::decode(&bad)
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
        assert!(TokenRecord::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        assert_ne!(Fingerprint::put(b"ab", b"c"), Fingerprint::put(b"a", b"bc"));
        assert_ne!(Fingerprint::put(b"k", b""), Fingerprint::delete(b"k"));
        assert_eq!(Fingerprint::put(b"k", b"v"), Fingerprint::put(b"k", b"v"));
    }

    #[test]
    fn token_sizes_are_checked() {
        assert!(Token::new(vec![]).is_err());
        assert!(Token::new(vec![0; 65]).unwrap_err().contains("1 to 64"));
        assert_eq!(Token::random().as_bytes().len(), 16);
    }
}
