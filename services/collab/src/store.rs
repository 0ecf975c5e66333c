//! A server's durable documents: every operation it integrated, per document, in the order it
//! integrated them (so a replay is in causal order), in sled. One tree per document, keyed by
//! a big-endian sequence number; each value one codec record.
//!
//! An operation is acknowledged to its editor only after [`Store::flush`] (group commit through
//! the runtime's flusher), so an acknowledged operation survives `kill -9`. A record that does
//! not decode, or does not apply, is reported (which document, which record, why) and skipped;
//! every other record still loads, those that needed the damaged one wait in the document's
//! pending buffer until a peer's anti-entropy brings it back. Damaged records stay on disk
//! untouched: new operations are written after them.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use distlab_runtime::flusher::Flusher;

use crate::causal::ReplicaId;
use crate::codec::{self, Decoder};
use crate::doc::Doc;
use crate::op::Op;

const TREE_PREFIX: &str = "doc/";

/// Where a document's stored operations stopped being usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub doc: String,
    /// The record's key.
    pub record: u64,
    pub reason: String,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "document {:?}: stored record {} is damaged ({}); skipped and kept on disk",
            self.doc, self.record, self.reason
        )
    }
}

/// One document as loaded.
pub struct Loaded {
    pub name: String,
    pub doc: Doc,
    /// Records that could not be read or applied.
    pub damage: Vec<Damage>,
}

pub struct Store {
    db: sled::Db,
    flusher: Flusher,
    /// Per document, the key the next record gets.
    next: HashMap<String, u64>,
}

impl Store {
    /// Opens (or creates) the store in `dir`; `fsync: false` answers flushes at once.
    pub fn open(dir: &Path, fsync: bool) -> anyhow::Result<Store> {
        let db = sled::open(dir.join("collab.sled"))
            .with_context(|| format!("opening the document store in {}", dir.display()))?;
        let flusher = Flusher::start(db.clone(), !fsync).context("starting the flush thread")?;
        Ok(Store {
            db,
            flusher,
            next: HashMap::new(),
        })
    }

    /// Every stored document, rebuilt as `replica`'s copy.
    pub fn load(&mut self, replica: ReplicaId) -> anyhow::Result<Vec<Loaded>> {
        let mut loaded = Vec::new();
        for name in self.db.tree_names() {
            let Some(doc_name) = name.strip_prefix(TREE_PREFIX.as_bytes()) else {
                continue;
            };
            let doc_name = String::from_utf8_lossy(doc_name).into_owned();
            let tree = self.db.open_tree(&name)?;
            let mut doc = Doc::new(replica);
            let mut damage = Vec::new();
            let mut next = 0;
            for entry in tree.iter() {
                let (key, value) =
                    entry.with_context(|| format!("reading document {doc_name:?}"))?;
                let record = key_number(&key);
                next = record + 1;
                if let Err(reason) = apply_record(&mut doc, &value) {
                    damage.push(Damage {
                        doc: doc_name.clone(),
                        record,
                        reason,
                    });
                }
            }
            self.next.insert(doc_name.clone(), next);
            loaded.push(Loaded {
                name: doc_name,
                doc,
                damage,
            });
        }
        Ok(loaded)
    }

    /// Appends `ops` (newly integrated, in order) to `doc`'s records; durable after
    /// [`Store::flush`].
    pub fn append(&mut self, doc: &str, ops: &[Op]) -> anyhow::Result<()> {
        let tree = self.db.open_tree(format!("{TREE_PREFIX}{doc}"))?;
        let next = self.next.entry(doc.to_string()).or_insert(0);
        let mut batch = sled::Batch::default();
        for op in ops {
            let mut bytes = Vec::new();
            codec::encode_op(op, &mut bytes);
            batch.insert(&next.to_be_bytes(), bytes);
            *next += 1;
        }
        tree.apply_batch(batch)
            .with_context(|| format!("storing operations of document {doc:?}"))?;
        Ok(())
    }

    /// The flush thread, for waiting on durability without holding the store.
    pub fn flusher(&self) -> Flusher {
        self.flusher.clone()
    }

    /// Returns once everything appended so far is on disk.
    pub async fn flush(&self) -> anyhow::Result<()> {
        self.flusher
            .flush()
            .await
            .context("flushing the document store")
    }

    /// Overwrites one stored record (tests use it to damage a store).
    pub fn put_raw(&self, doc: &str, record: u64, bytes: &[u8]) -> anyhow::Result<()> {
        let tree = self.db.open_tree(format!("{TREE_PREFIX}{doc}"))?;
        tree.insert(record.to_be_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }
}

fn key_number(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[8 - n..].copy_from_slice(&key[key.len() - n..]);
    u64::from_be_bytes(bytes)
}

/// One stored record into the document: it must be exactly one operation that applies.
fn apply_record(doc: &mut Doc, bytes: &[u8]) -> Result<(), String> {
    let mut decoder = Decoder::new(bytes);
    let op = match decoder.next() {
        Some(Ok(op)) => op,
        Some(Err(error)) => return Err(error.reason),
        None => return Err("an empty record".into()),
    };
    if decoder.next().is_some() {
        return Err("more than one operation in a record".into());
    }
    // Pending: it needs a record that was damaged; it waits for a peer to resend that one.
    doc.apply(op).map(|_| ()).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens the store once the last one's flush thread has let go of it (it ends on its own
    /// after the store is dropped).
    fn reopen(dir: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir, true) {
                Ok(store) => return store,
                Err(error) if std::time::Instant::now() < deadline => {
                    assert!(format!("{error:#}").contains("lock"), "{error:#}");
                    std::thread::yield_now();
                }
                Err(error) => panic!("{error:#}"),
            }
        }
    }

    #[tokio::test]
    async fn documents_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Doc::new(ReplicaId(1));
        let ops = [
            a.insert(0, "hello").unwrap().unwrap(),
            a.insert(5, " world").unwrap().unwrap(),
            a.delete(0, 1).unwrap().unwrap(),
        ];
        {
            let mut store = Store::open(dir.path(), true).unwrap();
            store.append("notes", &ops[..2]).unwrap();
            store.append("notes", &ops[2..]).unwrap();
            store.append("other", &ops[..1]).unwrap();
            store.flush().await.unwrap();
        }
        let mut store = reopen(dir.path());
        let mut loaded = store.load(ReplicaId(9)).unwrap();
        loaded.sort_by(|x, y| x.name.cmp(&y.name));
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].name, "notes");
        assert_eq!(loaded[0].doc.text(), "ello world");
        assert!(loaded[0].damage.is_empty());
        assert_eq!(loaded[1].doc.text(), "hello");
        // New records go after the old ones.
        let more = a.insert(0, ">").unwrap().unwrap();
        store.append("notes", &[more]).unwrap();
        store.flush().await.unwrap();
        drop(store);
        let mut store = reopen(dir.path());
        let notes = store
            .load(ReplicaId(9))
            .unwrap()
            .into_iter()
            .find(|l| l.name == "notes")
            .unwrap();
        assert_eq!(notes.doc.text(), ">ello world");
    }

    #[tokio::test]
    async fn a_damaged_record_is_named_skipped_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Doc::new(ReplicaId(1));
        let mut b = Doc::new(ReplicaId(2));
        // Records: a's "x", b's "y" (concurrent), a's "z" after "x" (needs record 0 only).
        let x = a.insert(0, "x").unwrap().unwrap();
        let y = b.insert(0, "y").unwrap().unwrap();
        let z = a.insert(1, "z").unwrap().unwrap();
        {
            let mut store = Store::open(dir.path(), true).unwrap();
            store.append("notes", &[x.clone(), y.clone(), z]).unwrap();
            store.flush().await.unwrap();
            store.put_raw("notes", 1, &[1, 0xff, 0xff]).unwrap();
        }
        let mut store = reopen(dir.path());
        let loaded = store.load(ReplicaId(9)).unwrap();
        let damage = &loaded[0].damage;
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert_eq!((damage[0].doc.as_str(), damage[0].record), ("notes", 1));
        assert!(
            damage[0].to_string().contains("stored record 1 is damaged"),
            "{}",
            damage[0]
        );
        // Every other record loaded.
        assert_eq!(loaded[0].doc.text(), "xz");
        // A new record goes after the damaged one, which stays on disk as it was.
        store.append("notes", &[y]).unwrap();
        store.flush().await.unwrap();
        // The damaged record is still there, as it was.
        let tree = store.db.open_tree("doc/notes").unwrap();
        assert_eq!(tree.len(), 4);
        assert_eq!(
            &tree.get(1u64.to_be_bytes()).unwrap().unwrap()[..],
            &[1, 0xff, 0xff]
        );
        drop((tree, store));
        let mut store = reopen(dir.path());
        let loaded = store.load(ReplicaId(9)).unwrap();
        assert_eq!(loaded[0].doc.version().total(), 3);
        assert_eq!(loaded[0].damage.len(), 1);
    }
}
