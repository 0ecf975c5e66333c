//! The leader epoch cache: for each leader epoch, the first offset its leader wrote. Kept in
//! `leader-epoch-checkpoint` beside the segments (one `epoch start_offset` line each).
//!
//! This is what keeps replicas from diverging across leader changes (Kafka's KIP-101): a
//! follower of a new leader asks "where does my latest epoch end in your log?" and truncates
//! to that before fetching, instead of trusting its high watermark, which may be behind the
//! data it holds or ahead of what survived.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub const FILE: &str = "leader-epoch-checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStart {
    pub epoch: u32,
    pub start_offset: u64,
}

pub struct EpochCache {
    path: PathBuf,
    entries: Vec<EpochStart>,
}

impl EpochCache {
    /// Reads the checkpoint in `dir` (none: empty). A line that does not parse is an error
    /// naming it: this file decides what replicas truncate.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut entries: Vec<EpochStart> = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let parsed = line.split_once(' ').and_then(|(epoch, start)| {
                Some(EpochStart {
                    epoch: epoch.parse().ok()?,
                    start_offset: start.trim().parse().ok()?,
                })
            });
            let entry = parsed.with_context(|| {
                format!(
                    "{} line {}: expected `EPOCH START_OFFSET`, got {line:?}",
                    path.display(),
                    n + 1
                )
            })?;
            if let Some(last) = entries.last() {
                anyhow::ensure!(
                    entry.epoch > last.epoch && entry.start_offset >= last.start_offset,
                    "{} line {}: epochs and offsets must increase",
                    path.display(),
                    n + 1
                );
            }
            entries.push(entry);
        }
        Ok(Self { path, entries })
    }

    pub fn entries(&self) -> &[EpochStart] {
        &self.entries
    }

    pub fn latest(&self) -> Option<EpochStart> {
        self.entries.last().copied()
    }

    /// Notes that the leader of `epoch` wrote from `start_offset` on. Older epochs than the
    /// latest are ignored (a batch of an old leader copied by a follower was already noted).
    pub fn assign(&mut self, epoch: u32, start_offset: u64) -> anyhow::Result<()> {
        if self.latest().is_some_and(|l| l.epoch >= epoch) {
            return Ok(());
        }
        self.entries.push(EpochStart {
            epoch,
            start_offset,
        });
        self.save()
    }

    /// Where `epoch` ends in this log: the largest epoch at most `epoch`, and the start of
    /// the epoch after it (or `log_end` if it is the latest). `None` if the log has no epoch
    /// that old.
    pub fn end_of(&self, epoch: u32, log_end: u64) -> Option<(u32, u64)> {
        let at = self.entries.partition_point(|e| e.epoch <= epoch);
        let found = self.entries.get(at.checked_sub(1)?)?;
        let end = self
            .entries
            .get(at)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    /// The log was cut at `offset`: epochs that started at or after it are gone.
    pub fn truncate_from(&mut self, offset: u64) -> anyhow::Result<()> {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.save()?;
        }
        Ok(())
    }

    /// Everything before `offset` was deleted (retention): the epoch holding it now starts
    /// there.
    pub fn trim_before(&mut self, offset: u64) -> anyhow::Result<()> {
        let first_kept = self.entries.partition_point(|e| e.start_offset <= offset);
        if first_kept == 0 || self.entries[first_kept - 1].start_offset == offset {
            return Ok(());
        }
        let mut holding = self.entries[first_kept - 1];
        holding.start_offset = offset;
        self.entries.drain(..first_kept);
        self.entries.insert(0, holding);
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        let text: String = self
            .entries
            .iter()
            .map(|e| format!("{} {}\n", e.epoch, e.start_offset))
            .collect();
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("replacing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_end_where_the_next_begins_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path()).unwrap();
        assert_eq!(cache.end_of(0, 0), None);
        cache.assign(1, 0).unwrap();
        cache.assign(1, 5).unwrap(); // the same epoch: already noted
        cache.assign(3, 10).unwrap();
        cache.assign(4, 25).unwrap();
        assert_eq!(cache.end_of(1, 40), Some((1, 10)));
        assert_eq!(
            cache.end_of(2, 40),
            Some((1, 10)),
            "epoch 2 wrote nothing here"
        );
        assert_eq!(cache.end_of(3, 40), Some((3, 25)));
        assert_eq!(cache.end_of(9, 40), Some((4, 40)));
        assert_eq!(cache.end_of(0, 40), None);

        let cache = EpochCache::open(dir.path()).unwrap();
        assert_eq!(cache.entries().len(), 3);
        let mut cache = cache;
        cache.truncate_from(25).unwrap();
        assert_eq!(cache.latest().unwrap().epoch, 3);
        cache.trim_before(12).unwrap();
        assert_eq!(
            EpochCache::open(dir.path()).unwrap().entries(),
            [EpochStart {
                epoch: 3,
                start_offset: 12
            }]
        );
    }

    #[test]
    fn a_damaged_checkpoint_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "1 0\n2 x\n").unwrap();
        let error = format!("{:#}", EpochCache::open(dir.path()).err().unwrap());
        assert!(error.contains("line 2"), "{error}");
    }
}
