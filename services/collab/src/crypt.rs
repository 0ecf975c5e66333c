//! Per-document encryption: editors that share a passphrase send and receive every inserted
//! character encrypted, so servers relay and store text they cannot read (`--key` on editors;
//! servers need nothing and know nothing).
//!
//! What the CRDT needs of an insertion (its id, parents, origins, and how many characters it
//! has) stays in the clear; only the characters are hidden. Each character is enciphered on
//! its own, keyed by the document's key and its id (replica, seq): the keystream is ChaCha20
//! with the key from SHA-256 of the document name and the passphrase, the replica as the
//! stream and the seq as the position. The cipher adds the keystream to the character's index
//! among Unicode scalar values (modulo their number, 1,112,064), so a character becomes
//! exactly one character and every run length, split and position the server computes stays
//! right. Per character, not per operation, so the same character deciphers the same however
//! runs are split or merged on the way.
//!
//! Not provided: integrity (a server could change ciphertext characters undetected) and
//! hiding the shape of the editing (lengths, positions, who typed when).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use crate::causal::Dot;
use crate::op::{Body, Op};

/// Unicode scalar values: every code point but the 2,048 surrogates.
const SCALARS: u64 = 0x11_0000 - 0x800;

fn index(c: char) -> u64 {
    let x = u64::from(u32::from(c));
    if x >= 0xE000 { x - 0x800 } else { x }
}

fn scalar(i: u64) -> char {
    let x = if i >= 0xD800 { i + 0x800 } else { i };
    char::from_u32(x as u32).expect("an index below SCALARS names a scalar value")
}

/// One document's key.
#[derive(Clone)]
pub struct DocKey {
    seed: [u8; 32],
}

impl std::fmt::Debug for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DocKey(..)")
    }
}

impl DocKey {
    /// The key of document `doc` for `passphrase` (another document, another key).
    pub fn new(doc: &str, passphrase: &str) -> DocKey {
        let mut hash = Sha256::new();
        hash.update(b"distlab-collab doc key\0");
        hash.update(doc.as_bytes());
        hash.update([0]);
        hash.update(passphrase.as_bytes());
        DocKey {
            seed: hash.finalize().into(),
        }
    }

    /// The keystream for the character `dot`, reduced modulo the scalar values (bias below
    /// 2^-43: 64 bits of keystream per character).
    fn pad(&self, dot: Dot) -> u64 {
        let mut rng = ChaCha20Rng::from_seed(self.seed);
        rng.set_stream(dot.replica.0);
        rng.set_word_pos(u128::from(dot.seq) * 2);
        rng.next_u64() % SCALARS
    }

    fn map(&self, op: &Op, f: impl Fn(u64, u64) -> u64) -> Op {
        let mut op = op.clone();
        if let Body::Insert { text, .. } = &mut op.body {
            *text = text
                .chars()
                .enumerate()
                .map(|(i, c)| scalar(f(index(c), self.pad(op.id.plus(i as u64)))))
                .collect();
        }
        op
    }

    /// `op` as servers may see it: its inserted characters enciphered.
    pub fn seal(&self, op: &Op) -> Op {
        self.map(op, |c, pad| (c + pad) % SCALARS)
    }

    /// `op` as it was before [`DocKey::seal`].
    pub fn open(&self, op: &Op) -> Op {
        self.map(op, |c, pad| (c + SCALARS - pad) % SCALARS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::ReplicaId;
    use crate::doc::Doc;

    #[test]
    fn sealed_text_is_unreadable_the_same_length_and_opens_per_character() {
        let key = DocKey::new("notes", "correct horse");
        let mut a = Doc::new(ReplicaId(1));
        let op = a.insert(0, "secret plan 🦀 ü").unwrap().unwrap();
        let sealed = key.seal(&op);
        let Body::Insert { text, .. } = &sealed.body else {
            panic!()
        };
        assert_eq!(text.chars().count(), "secret plan 🦀 ü".chars().count());
        assert!(!text.contains("secret"));
        assert_eq!(key.open(&sealed), op);
        // A server integrates sealed operations like any others; a suffix of a sealed run
        // opens on its own (each character is keyed by its own id).
        let mut server = Doc::new(ReplicaId(9));
        server.apply(sealed.clone()).unwrap();
        let suffix = sealed.suffix_from(7);
        assert_eq!(key.open(&suffix), op.suffix_from(7));
        // Another passphrase or another document opens to something else.
        assert_ne!(DocKey::new("notes", "wrong").open(&sealed), op);
        assert_ne!(DocKey::new("plans", "correct horse").open(&sealed), op);
    }

    #[test]
    fn every_scalar_value_survives_the_round_trip() {
        for c in ['\0', 'a', '\u{D7FF}', '\u{E000}', '\u{FFFF}', '\u{10FFFF}'] {
            assert_eq!(scalar(index(c)), c);
        }
        assert!(index('\u{10FFFF}') < SCALARS);
    }
}
