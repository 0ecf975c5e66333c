//! What a consumer node read, one JSON line per poll and partition, in `consumed.jsonl` in its
//! data dir: the lab reads these after a run to check that the group consumed every
//! acknowledged message.
//!
//! A line is written (and flushed to the OS) before the poll's offsets are committed, so
//! everything committed is in some journal even if the process is killed right after; what
//! was read but not committed may be missing, and is read again by the partition's next owner.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The journal's file name in a consumer's data dir.
pub const FILE: &str = "consumed.jsonl";

/// One poll's records of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Wall clock, ms since the epoch.
    pub at_ms: i64,
    pub member: String,
    pub generation: u32,
    /// `topic/partition`.
    pub partition: String,
    /// The first and last offsets read.
    pub offsets: (u64, u64),
    pub values: Vec<String>,
    /// How far behind the partition's high watermark the member was when this read began
    /// (what it read plus what was still left).
    #[serde(default)]
    pub lag: u64,
}

/// Appends entries to a journal.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Opens (creating) the journal in `data_dir`, appending to what a previous run of this
    /// node wrote.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join(FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Self { path, file })
    }

    pub fn append(&mut self, entries: &[Entry]) -> anyhow::Result<()> {
        let mut text = String::new();
        for entry in entries {
            text.push_str(&serde_json::to_string(entry).expect("an entry serializes"));
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .with_context(|| format!("appending to {}", self.path.display()))
    }
}

/// Every entry of the journal at `path`. A torn last line (the process was killed while
/// writing it) is skipped; a malformed line elsewhere is an error naming it.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut entries = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(entry) => entries.push(entry),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => anyhow::bail!("{} line {}: {e}", path.display(), i + 1),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: u32) -> Entry {
        Entry {
            at_ms: 1,
            member: "g1-b1e0-1".into(),
            generation,
            partition: "events/0".into(),
            offsets: (3, 4),
            values: vec!["1:1".into(), "1:2".into()],
            lag: 7,
        }
    }

    #[test]
    fn entries_round_trip_across_reopens_and_a_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        Journal::open(dir.path())
            .unwrap()
            .append(&[entry(1)])
            .unwrap();
        Journal::open(dir.path())
            .unwrap()
            .append(&[entry(2)])
            .unwrap();
        let path = dir.path().join(FILE);
        assert_eq!(read(&path).unwrap(), vec![entry(1), entry(2)]);

        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"at_ms\": 5, \"memb");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path).unwrap().len(), 2, "the torn line is skipped");

        let broken = text.replacen("\"member\"", "\"mem\"", 1);
        std::fs::write(&path, broken).unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
