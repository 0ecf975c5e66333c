//! The sparse indexes beside each segment: one entry every `index_interval_bytes` of log, so
//! a read finds its place with a binary search and a short scan instead of reading the
//! segment from the start.
//!
//! - The offset index maps an offset (relative to the segment's base) to the byte position of
//!   the batch that starts there.
//! - The time index maps a timestamp (the largest seen so far in the segment) to the offset
//!   of the batch where it was reached: "the first record at or after time T" starts its scan
//!   there.
//!
//! Both are files of fixed-size entries, also held in memory (they are sparse: a 1 GiB
//! segment with 4 KiB intervals has 256 Ki entries). They are only ever derived from the log,
//! so a damaged index is rebuilt from it, never trusted over it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// An entry of an index file.
pub trait Entry: Copy + PartialEq + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Self;
}

/// Offset index entry: the batch starting at `base + relative_offset` is at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self {
            relative_offset: u32::from_be_bytes(bytes[0..4].try_into().expect("4 bytes")),
            position: u32::from_be_bytes(bytes[4..8].try_into().expect("4 bytes")),
        }
    }
}

/// Time index entry: by the batch at `base + relative_offset`, the segment's largest
/// timestamp was `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }

    fn decode(bytes: &[u8]) -> Self {
        Self {
            timestamp: i64::from_be_bytes(bytes[0..8].try_into().expect("8 bytes")),
            relative_offset: u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")),
        }
    }
}

/// One index file and its entries in memory.
pub struct IndexFile<E: Entry> {
    path: PathBuf,
    file: File,
    entries: Vec<E>,
    /// Entries appended since the last sync.
    dirty: bool,
}

impl<E: Entry> IndexFile<E> {
    /// Opens (or creates) the index at `path` and reads its entries. A trailing partial
    /// entry (a torn write) is dropped here; whether the entries agree with the log is the
    /// segment's to check.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let entries = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut index = Self {
            path: path.to_path_buf(),
            file,
            entries,
            dirty: false,
        };
        if !bytes.len().is_multiple_of(E::SIZE) {
            index.rewrite(index.entries.clone())?;
        }
        Ok(index)
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub fn append(&mut self, entry: E) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(E::SIZE);
        entry.encode(&mut bytes);
        self.file
            .write_all(&bytes)
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.entries.push(entry);
        self.dirty = true;
        Ok(())
    }

    /// Keeps the first `len` entries.
    pub fn truncate(&mut self, len: usize) -> anyhow::Result<()> {
        if len >= self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(len);
        self.file
            .set_len((len * E::SIZE) as u64)
            .with_context(|| format!("truncating {}", self.path.display()))?;
        self.dirty = true;
        Ok(())
    }

    /// Replaces every entry (an index rebuilt from its log).
    pub fn rewrite(&mut self, entries: Vec<E>) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(entries.len() * E::SIZE);
        for entry in &entries {
            entry.encode(&mut bytes);
        }
        let tmp = self.path.with_extension("rebuilding");
        std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        self.entries = entries;
        self.dirty = true;
        Ok(())
    }

    pub fn sync(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            self.file
                .sync_data()
                .with_context(|| format!("syncing {}", self.path.display()))?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = IndexFile::<OffsetEntry>::open(&path).unwrap();
        for i in 0..5 {
            index
                .append(OffsetEntry {
                    relative_offset: i * 10,
                    position: i * 4096,
                })
                .unwrap();
        }
        drop(index);
        // A torn write: half an entry at the end.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, bytes).unwrap();
        let mut index = IndexFile::<OffsetEntry>::open(&path).unwrap();
        assert_eq!(index.entries().len(), 5);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 40);
        index.truncate(2).unwrap();
        index
            .append(OffsetEntry {
                relative_offset: 99,
                position: 1,
            })
            .unwrap();
        let index = IndexFile::<OffsetEntry>::open(&path).unwrap();
        assert_eq!(index.entries().len(), 3);
        assert_eq!(index.last().unwrap().relative_offset, 99);
    }
}
