//! A partition's log: its segments, oldest to newest, in one directory.
//!
//! Appends go to the newest segment, which rolls (is sealed, and a new one started at the
//! next offset) when a batch would take it past `segment_bytes` or its first batch is older
//! than `segment_age`. Retention deletes whole sealed segments, oldest first, while the log
//! is over `retention_bytes` or a segment's newest record is older than `retention_age`.
//! Reads find their segment by base offset and their place in it by its index.
//!
//! When data reaches the disk is the [`FsyncPolicy`]'s choice:
//! - `every-batch`: each append is synced before it returns (a power loss loses nothing
//!   acknowledged; the slowest);
//! - `interval` (e.g. `100ms`): synced when an append finds the last sync that old, and by
//!   the broker's timer ([`PartitionLog::flush_if_due`]); a power loss loses at most that
//!   window;
//! - `never`: left to the operating system (and to replication: with `acks=all` another
//!   replica holds the data).
//!
//! A killed process (SIGKILL, the lab's fault) loses nothing the kernel accepted under any
//! policy; the policies differ on a machine crash. Sealed segments are synced when they roll
//! (except under `never`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::batch::{Batch, HeaderFields};
use super::epochs::EpochCache;
use super::producers::{ProducerStates, SequenceError, Verdict};
use super::segment::{Recovery, Segment};

/// When appended data is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    EveryBatch,
    Interval(Duration),
    Never,
}

impl FsyncPolicy {
    /// `every-batch`, `never`, or a duration (`100ms`, `1s`).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "every-batch" => Ok(Self::EveryBatch),
            "never" => Ok(Self::Never),
            other => {
                let every = distlab_runtime::duration::parse(other).map_err(|e| {
                    format!("fsync policy {other:?}: expected every-batch, never or a duration like 100ms ({e})")
                })?;
                if every.is_zero() {
                    return Err("an fsync interval must be above zero (or every-batch)".into());
                }
                Ok(Self::Interval(every))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Roll when the newest segment would grow past this.
    pub segment_bytes: u64,
    /// Roll when the newest segment's first batch is older than this.
    pub segment_age: Option<Duration>,
    /// Delete the oldest segments while the log is bigger than this.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// Log bytes between two index entries.
    pub index_interval_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            segment_age: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            retention_age: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval_bytes: 4096,
            fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
        }
    }
}

/// An offset outside the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("offset {offset} is out of range: the log holds [{start}, {end})")]
pub struct OutOfRange {
    pub offset: u64,
    pub start: u64,
    pub end: u64,
}

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// By base offset; never empty (the newest is the one appended to).
    segments: BTreeMap<u64, Segment>,
    epochs: EpochCache,
    producers: ProducerStates,
    last_sync: Instant,
    unsynced: bool,
    /// When (the appender's clock) the newest segment got its first batch in this process:
    /// its age counts from the later of this and its first record's timestamp, so records
    /// stamped long ago do not roll a segment per batch.
    newest_since_ms: Option<i64>,
}

impl PartitionLog {
    /// Opens the log in `dir` (created if absent), recovering it: the newest segment is
    /// scanned whole and cut after its last valid batch. Returns what was mended (also
    /// logged).
    pub fn open(dir: &Path, config: LogConfig) -> anyhow::Result<(Self, Vec<Recovery>)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            match (ext, stem.parse::<u64>()) {
                ("log", Ok(base)) => bases.push(base),
                // Leftovers of an interrupted index rebuild or checkpoint.
                ("rebuilding" | "tmp", _) => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        bases.sort_unstable();
        if bases.is_empty() {
            bases.push(0);
        }
        let mut segments = BTreeMap::new();
        let mut recoveries = Vec::new();
        let newest = *bases.last().expect("at least one");
        for base in bases {
            let (segment, recovery) =
                Segment::open(dir, base, config.index_interval_bytes, base == newest)?;
            if let Some(recovery) = recovery {
                match &recovery.truncated {
                    Some(cut) => tracing::warn!(
                        dir = %dir.display(),
                        segment = base,
                        offset = cut.at_offset,
                        position = cut.at_position,
                        dropped_bytes = cut.dropped_bytes,
                        "recovery: log cut at offset {} (byte {}): {}",
                        cut.at_offset,
                        cut.at_position,
                        cut.reason
                    ),
                    None => tracing::warn!(
                        dir = %dir.display(),
                        segment = base,
                        "recovery: index rebuilt from the log"
                    ),
                }
                recoveries.push(recovery);
            }
            segments.insert(base, segment);
        }
        let mut log = Self {
            dir: dir.to_path_buf(),
            config,
            segments,
            epochs: EpochCache::open(dir)?,
            producers: ProducerStates::default(),
            last_sync: Instant::now(),
            unsynced: false,
            newest_since_ms: None,
        };
        // Epochs past what survived are gone with their data.
        let end = log.log_end_offset();
        log.epochs.truncate_from(end)?;
        log.rebuild_producers()?;
        Ok((log, recoveries))
    }

    /// Reads every batch header to learn the producers again (after a restart or a
    /// truncation). Producers whose batches retention deleted are forgotten: their next batch
    /// is refused as out of order, and they start a new epoch.
    fn rebuild_producers(&mut self) -> anyhow::Result<()> {
        let mut producers = ProducerStates::default();
        for segment in self.segments.values() {
            for header in segment.headers()? {
                producers.record(&header);
            }
        }
        self.producers = producers;
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The first offset still held.
    pub fn log_start_offset(&self) -> u64 {
        self.segments.values().next().map_or(0, Segment::base)
    }

    /// The offset the next batch gets (LEO).
    pub fn log_end_offset(&self) -> u64 {
        self.newest().next_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn epochs(&self) -> &EpochCache {
        &self.epochs
    }

    fn newest(&self) -> &Segment {
        self.segments.values().next_back().expect("never empty")
    }

    fn newest_mut(&mut self) -> &mut Segment {
        self.segments.values_mut().next_back().expect("never empty")
    }

    pub fn producers(&self) -> &ProducerStates {
        &self.producers
    }

    /// Appends a producer's `batch` as the leader of `leader_epoch`: it gets the next
    /// offsets, unless the idempotent producer's checks find it a retry of a batch already
    /// here (its offsets are returned again) or out of sequence (refused).
    pub fn append_as_leader(
        &mut self,
        batch: &Batch,
        leader_epoch: u32,
        now_ms: i64,
    ) -> Result<Appended, AppendError> {
        match self.producers.check(batch).map_err(AppendError::Sequence)? {
            Verdict::Duplicate {
                base_offset,
                last_offset,
            } => Ok(Appended::Duplicate {
                base_offset,
                last_offset,
            }),
            Verdict::Append => {
                let placed = batch.assigned(self.log_end_offset(), leader_epoch);
                self.append(&placed, now_ms).map_err(AppendError::Io)?;
                Ok(Appended::New(placed))
            }
        }
    }

    /// Appends a batch already placed (a follower copying its leader's): it must start at
    /// the log end offset.
    pub fn append(&mut self, batch: &Batch, now_ms: i64) -> anyhow::Result<()> {
        anyhow::ensure!(
            batch.base_offset() == self.log_end_offset(),
            "{}: batch at offset {} does not follow the log end {}",
            self.dir.display(),
            batch.base_offset(),
            self.log_end_offset()
        );
        if self.should_roll(batch, now_ms) {
            self.roll()?;
        }
        if self.newest().is_empty() || self.newest_since_ms.is_none() {
            self.newest_since_ms = Some(now_ms);
        }
        self.epochs
            .assign(batch.leader_epoch(), batch.base_offset())?;
        self.newest_mut().append(batch)?;
        self.producers.record(batch);
        self.unsynced = true;
        match self.config.fsync {
            FsyncPolicy::EveryBatch => self.flush()?,
            FsyncPolicy::Interval(_) => self.flush_if_due(Instant::now())?,
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    fn should_roll(&self, batch: &Batch, now_ms: i64) -> bool {
        let newest = self.newest();
        if newest.is_empty() {
            return false;
        }
        let too_big = newest.size() + batch.len() as u64 > self.config.segment_bytes;
        let too_old = self.config.segment_age.is_some_and(|age| {
            newest.first_timestamp().is_some_and(|first| {
                let since = first.max(self.newest_since_ms.unwrap_or(first));
                now_ms.saturating_sub(since) >= age.as_millis() as i64
            })
        });
        // Offsets in a segment's index are 32 bits from its base.
        let too_far = batch.last_offset() - newest.base() > u64::from(u32::MAX);
        too_big || too_old || too_far
    }

    /// Seals the newest segment and starts one at the log end.
    pub fn roll(&mut self) -> anyhow::Result<()> {
        let next = self.log_end_offset();
        if self.newest().is_empty() {
            return Ok(());
        }
        if self.config.fsync != FsyncPolicy::Never {
            self.newest_mut().sync()?;
        }
        let (segment, _) = Segment::open(&self.dir, next, self.config.index_interval_bytes, true)?;
        tracing::info!(dir = %self.dir.display(), segment = next, "rolled a new segment");
        self.segments.insert(next, segment);
        Ok(())
    }

    /// Syncs everything appended.
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if self.unsynced {
            self.newest_mut().sync()?;
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Under an interval policy, syncs if the last sync is that old.
    pub fn flush_if_due(&mut self, now: Instant) -> anyhow::Result<()> {
        if let FsyncPolicy::Interval(every) = self.config.fsync
            && self.unsynced
            && now.duration_since(self.last_sync) >= every
        {
            self.flush()?;
        }
        Ok(())
    }

    /// Whole batches from the one holding `offset`, none at or past `limit` (the high
    /// watermark, for consumers; the log end, for followers), about `max_bytes` at most but
    /// never less than one batch. Empty when `offset` is the log end (or `limit`).
    pub fn read(&self, offset: u64, max_bytes: usize, limit: u64) -> Result<Vec<u8>, ReadError> {
        let (start, end) = (self.log_start_offset(), self.log_end_offset());
        if offset < start || offset > end {
            return Err(ReadError::OutOfRange(OutOfRange { offset, start, end }));
        }
        let holding = self
            .segments
            .range(..=offset)
            .next_back()
            .map_or(start, |(base, _)| *base);
        // A segment cut short by recovery leaves a gap before the next: skip it.
        for segment in self.segments.range(holding..).map(|(_, s)| s) {
            let from = offset.max(segment.base());
            if from >= segment.next_offset() {
                continue;
            }
            return segment.read(from, max_bytes, limit).map_err(ReadError::Io);
        }
        Ok(Vec::new())
    }

    /// The offset of the first record at or after `timestamp` (ms), if any.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> anyhow::Result<Option<u64>> {
        for segment in self.segments.values() {
            if let Some(offset) = segment.offset_for_timestamp(timestamp)? {
                return Ok(Some(offset));
            }
        }
        Ok(None)
    }

    /// Drops everything from `offset` on (a follower matching its new leader); returns the new
    /// log end, which may be lower than `offset` if it fell inside a batch.
    pub fn truncate_to(&mut self, offset: u64) -> anyhow::Result<u64> {
        if offset >= self.log_end_offset() {
            return Ok(self.log_end_offset());
        }
        if offset <= self.log_start_offset() {
            return self.reset_to(offset);
        }
        let doomed: Vec<u64> = self.segments.range(offset..).map(|(b, _)| *b).collect();
        for base in doomed {
            if base != self.log_start_offset() {
                let segment = self.segments.remove(&base).expect("listed");
                segment.delete()?;
            }
        }
        let end = self.newest_mut().truncate_to(offset)?;
        self.epochs.truncate_from(end)?;
        self.rebuild_producers()?;
        self.unsynced = true;
        self.flush()?;
        tracing::info!(dir = %self.dir.display(), offset = end, "log truncated");
        Ok(end)
    }

    /// Deletes every segment and starts empty at `offset` (a follower whose log is entirely
    /// behind or diverged from its leader's start).
    pub fn reset_to(&mut self, offset: u64) -> anyhow::Result<u64> {
        for (_, segment) in std::mem::take(&mut self.segments) {
            segment.delete()?;
        }
        let (segment, _) =
            Segment::open(&self.dir, offset, self.config.index_interval_bytes, true)?;
        self.segments.insert(offset, segment);
        self.epochs.truncate_from(0)?;
        self.producers = ProducerStates::default();
        tracing::info!(dir = %self.dir.display(), offset, "log reset");
        Ok(offset)
    }

    /// Deletes sealed segments past retention; returns the bases deleted. The newest
    /// segment is never deleted (roll by age keeps it from living forever).
    pub fn enforce_retention(&mut self, now_ms: i64) -> anyhow::Result<Vec<u64>> {
        let mut deleted = Vec::new();
        while self.segments.len() > 1 {
            let (&base, oldest) = self.segments.iter().next().expect("more than one");
            let over_size = self
                .config
                .retention_bytes
                .is_some_and(|limit| self.size_bytes() > limit);
            let expired = self.config.retention_age.is_some_and(|age| {
                oldest
                    .max_timestamp()
                    .is_some_and(|newest| now_ms.saturating_sub(newest) > age.as_millis() as i64)
            });
            if !(over_size || expired) {
                break;
            }
            let segment = self.segments.remove(&base).expect("listed");
            let (size, next) = (segment.size(), segment.next_offset());
            segment.delete()?;
            tracing::info!(
                dir = %self.dir.display(),
                segment = base,
                bytes = size,
                reason = if over_size { "size" } else { "age" },
                "retention deleted a segment of offsets [{base}, {next})"
            );
            deleted.push(base);
        }
        if !deleted.is_empty() {
            self.epochs.trim_before(self.log_start_offset())?;
        }
        Ok(deleted)
    }
}

/// A leader's append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored, at the offsets the batch now carries.
    New(Batch),
    /// A retry of a batch already stored at these offsets: nothing appended.
    Duplicate { base_offset: u64, last_offset: u64 },
}

impl Appended {
    /// The offsets the producer is acknowledged with.
    pub fn offsets(&self) -> (u64, u64) {
        match self {
            Self::New(batch) => (batch.base_offset(), batch.last_offset()),
            Self::Duplicate {
                base_offset,
                last_offset,
            } => (*base_offset, *last_offset),
        }
    }
}

/// Why a leader's append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Sequence(SequenceError),
    #[error("{0:#}")]
    Io(anyhow::Error),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    OutOfRange(OutOfRange),
    #[error("{0:#}")]
    Io(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::{ProducerStamp, Record, split};

    fn small() -> LogConfig {
        LogConfig {
            segment_bytes: 2_000,
            segment_age: None,
            retention_bytes: None,
            retention_age: None,
            index_interval_bytes: 300,
            fsync: FsyncPolicy::Never,
        }
    }

    /// Batch `i`: three records `i.0`, `i.1`, `i.2` at time 1000 + 10 i.
    fn batch(i: u64) -> Batch {
        let values: Vec<String> = (0..3).map(|r| format!("value {i}.{r}")).collect();
        Batch::build(
            values
                .iter()
                .map(|v| (None, v.as_bytes(), 1_000 + 10 * i as i64)),
            ProducerStamp::NONE,
        )
    }

    fn fill(log: &mut PartitionLog, batches: std::ops::Range<u64>, epoch: u32) {
        for i in batches {
            log.append_as_leader(&batch(i), epoch, 0).unwrap();
        }
    }

    /// Every record from `from` to the log end, reading `max_bytes` at a time.
    fn read_all(log: &PartitionLog, from: u64, max_bytes: usize) -> Vec<Record> {
        read_up_to(log, from, max_bytes, log.log_end_offset())
    }

    /// Every record from `from` that a reader limited to `limit` sees.
    fn read_up_to(log: &PartitionLog, from: u64, max_bytes: usize, limit: u64) -> Vec<Record> {
        let (mut offset, mut out) = (from, Vec::new());
        loop {
            let bytes = log.read(offset, max_bytes, limit).unwrap();
            if bytes.is_empty() {
                return out;
            }
            for batch in split(bytes.into()).unwrap() {
                out.extend(batch.records().filter(|r| r.offset >= offset));
            }
            offset = out.last().unwrap().offset + 1;
        }
    }

    fn assert_records(records: &[Record], from: u64, to: u64) {
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (from..to).collect::<Vec<_>>());
        for r in records {
            assert_eq!(r.value, format!("value {}.{}", r.offset / 3, r.offset % 3));
        }
    }

    #[test]
    fn appends_roll_into_segments_and_read_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, recovered) = PartitionLog::open(dir.path(), small()).unwrap();
        assert!(recovered.is_empty());
        fill(&mut log, 0..100, 1);
        assert_eq!(log.log_end_offset(), 300);
        assert!(log.segment_count() > 5, "{} segments", log.segment_count());
        assert_records(&read_all(&log, 0, 1), 0, 300);
        assert_records(&read_all(&log, 151, 700), 151, 300);
        // Consumers see only up to the high watermark, in whole batches.
        let seen = read_up_to(&log, 0, 1 << 20, 100);
        assert_records(&seen, 0, 99);
        assert!(log.read(300, 100, 300).unwrap().is_empty());
        assert!(matches!(
            log.read(301, 100, 300),
            Err(ReadError::OutOfRange(_))
        ));
        drop(log);

        let (log, recovered) = PartitionLog::open(dir.path(), small()).unwrap();
        assert!(recovered.is_empty(), "{recovered:?}");
        assert_eq!(log.log_end_offset(), 300);
        assert_records(&read_all(&log, 0, 500), 0, 300);
        assert_eq!(log.offset_for_timestamp(1_500).unwrap(), Some(150));
        assert_eq!(log.offset_for_timestamp(1_505).unwrap(), Some(153));
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
        assert_eq!(log.offset_for_timestamp(99_999).unwrap(), None);
    }

    fn newest_log_file(dir: &Path) -> PathBuf {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        logs.sort();
        logs.pop().unwrap()
    }

    #[test]
    fn a_corrupt_byte_cuts_the_log_at_that_batch_and_nothing_before_it_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        fill(&mut log, 0..36, 1);
        let base = log.newest().base();
        let batch_len = batch(base / 3).len() as u64;
        assert!(
            log.newest().size() > 3 * batch_len,
            "the newest segment has 3 batches"
        );
        drop(log);
        // Flip a byte inside the newest segment's third batch.
        let path = newest_log_file(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        let at = (2 * batch_len + 40) as usize;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let (mut log, recovered) = PartitionLog::open(dir.path(), small()).unwrap();
        let cut = recovered[0].truncated.clone().unwrap();
        assert_eq!(cut.at_offset, base + 6);
        assert_eq!(cut.at_position, 2 * batch_len);
        assert!(cut.reason.contains("checksum"), "{}", cut.reason);
        assert_eq!(log.log_end_offset(), base + 6);
        assert_records(&read_all(&log, 0, 1000), 0, base + 6);
        // The log goes on from the cut.
        let next = base / 3 + 2;
        fill(&mut log, next..next + 5, 1);
        assert_records(&read_all(&log, 0, 1000), 0, base + 6 + 15);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        fill(&mut log, 0..40, 1);
        let end = log.log_end_offset();
        drop(log);
        let path = newest_log_file(dir.path());
        let len = std::fs::metadata(&path).unwrap().len();
        // Half of the last batch made it to disk.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 20).unwrap();

        let (log, recovered) = PartitionLog::open(dir.path(), small()).unwrap();
        let cut = recovered[0].truncated.clone().unwrap();
        assert_eq!(cut.at_offset, end - 3);
        assert_eq!(log.log_end_offset(), end - 3);
        assert_records(&read_all(&log, 0, 1000), 0, end - 3);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len - batch(end / 3 - 1).len() as u64
        );
    }

    #[test]
    fn damaged_or_missing_indexes_are_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        fill(&mut log, 0..100, 1);
        drop(log);
        let mut indexes: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "index"))
            .collect();
        indexes.sort();
        // The first (sealed) segment's index points past its file; the newest's is gone.
        std::fs::write(&indexes[0], [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]).unwrap();
        std::fs::remove_file(indexes.last().unwrap()).unwrap();

        let (log, recovered) = PartitionLog::open(dir.path(), small()).unwrap();
        assert!(
            recovered
                .iter()
                .all(|r| r.index_rebuilt && r.truncated.is_none())
        );
        assert_eq!(recovered.len(), 2, "{recovered:?}");
        assert_records(&read_all(&log, 0, 1), 0, 300);
        drop(log);
        let (_, recovered) = PartitionLog::open(dir.path(), small()).unwrap();
        assert!(recovered.is_empty(), "rebuilt for good: {recovered:?}");
    }

    #[test]
    fn retention_deletes_the_oldest_sealed_segments_by_size_and_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes: Some(5_000),
            ..small()
        };
        let (mut log, _) = PartitionLog::open(dir.path(), config).unwrap();
        fill(&mut log, 0..100, 1);
        let before = log.segment_count();
        let deleted = log.enforce_retention(0).unwrap();
        assert!(!deleted.is_empty());
        assert!(log.size_bytes() <= 5_000);
        assert_eq!(log.segment_count(), before - deleted.len());
        let start = log.log_start_offset();
        assert!(start > 0);
        assert_records(&read_all(&log, start, 1000), start, 300);
        assert!(matches!(
            log.read(0, 10, 300),
            Err(ReadError::OutOfRange(_))
        ));
        assert_eq!(log.epochs().entries()[0].start_offset, start);

        // By age: batch i is at 1000 + 10 i ms; keep what is younger than 100 ms at 1900.
        log.config.retention_bytes = None;
        log.config.retention_age = Some(Duration::from_millis(100));
        log.enforce_retention(1_900).unwrap();
        let start = log.log_start_offset();
        let oldest = log.segments.values().next().unwrap();
        assert!(
            oldest.max_timestamp().unwrap() >= 1_800,
            "the oldest kept segment has a record at most 100 ms old"
        );
        assert!(start > 200, "segments of older records went: start {start}");
        assert_records(&read_all(&log, start, 1000), start, 300);
        drop(log);
        let (log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        assert_eq!(log.log_start_offset(), start);
    }

    #[test]
    fn a_segment_rolls_when_its_first_batch_is_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 1 << 20,
            segment_age: Some(Duration::from_millis(50)),
            ..small()
        };
        let (mut log, _) = PartitionLog::open(dir.path(), config.clone()).unwrap();
        // Batch i's timestamp is 1000 + 10 i: a new segment every 5 batches.
        for i in 0..20 {
            log.append_as_leader(&batch(i), 1, 1_000 + 10 * i as i64)
                .unwrap();
        }
        assert_eq!(log.segment_count(), 4);

        // Records stamped long ago (a client's clock, or timestamp 0) roll the segment once
        // it has been written to for the age, not on every batch.
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), config).unwrap();
        let stamped_at = |i: u64, ts: i64| {
            Batch::build(
                [(None, format!("v{i}").as_bytes(), ts)],
                ProducerStamp::NONE,
            )
        };
        for i in 0..20 {
            log.append_as_leader(&stamped_at(i, 0), 1, 1_000 + 10 * i as i64)
                .unwrap();
        }
        assert_eq!(log.segment_count(), 4);
    }

    #[test]
    fn truncation_drops_whole_batches_across_segments_and_their_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        fill(&mut log, 0..30, 1);
        fill(&mut log, 30..60, 2);
        fill(&mut log, 60..100, 3);
        assert_eq!(log.epochs().end_of(2, log.log_end_offset()), Some((2, 180)));
        // Offset 100 is inside batch 33 (offsets 99..=101): the cut is at 99.
        assert_eq!(log.truncate_to(100).unwrap(), 99);
        assert_eq!(log.log_end_offset(), 99);
        assert_eq!(log.epochs().latest().unwrap().epoch, 2);
        assert_records(&read_all(&log, 0, 1000), 0, 99);
        fill(&mut log, 33..40, 4);
        assert_eq!(log.epochs().end_of(2, log.log_end_offset()), Some((2, 99)));
        drop(log);
        let (log, recovered) = PartitionLog::open(dir.path(), small()).unwrap();
        assert!(recovered.is_empty(), "{recovered:?}");
        assert_records(&read_all(&log, 0, 1000), 0, 120);
        assert_eq!(log.epochs().latest().unwrap().epoch, 4);
    }

    #[test]
    fn a_retried_producer_batch_is_stored_once_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        let stamp = |seq| ProducerStamp {
            producer_id: 42,
            producer_epoch: 0,
            base_sequence: seq,
        };
        let produce =
            |seq: i32| Batch::build([(None, &b"m"[..], 0), (None, &b"n"[..], 0)], stamp(seq));
        fill(&mut log, 0..2, 1);
        let first = log.append_as_leader(&produce(0), 1, 0).unwrap();
        assert_eq!(first.offsets(), (6, 7));
        drop(log);
        let (mut log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        let retried = log.append_as_leader(&produce(0), 1, 0).unwrap();
        assert_eq!(
            retried,
            Appended::Duplicate {
                base_offset: 6,
                last_offset: 7
            }
        );
        assert_eq!(log.log_end_offset(), 8);
        assert!(matches!(
            log.append_as_leader(&produce(4), 1, 0),
            Err(AppendError::Sequence(SequenceError::OutOfOrder {
                expected: 2,
                ..
            }))
        ));
        assert_eq!(
            log.append_as_leader(&produce(2), 1, 0).unwrap().offsets(),
            (8, 9)
        );
        // Truncated away, the batch may come again.
        log.truncate_to(8).unwrap();
        assert_eq!(
            log.append_as_leader(&produce(2), 1, 0).unwrap().offsets(),
            (8, 9)
        );
    }

    #[test]
    fn a_batch_must_follow_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = PartitionLog::open(dir.path(), small()).unwrap();
        fill(&mut log, 0..2, 1);
        let error = log.append(&batch(5).assigned(15, 1), 0).unwrap_err();
        assert!(
            error.to_string().contains("does not follow the log end 6"),
            "{error}"
        );
    }

    #[test]
    fn fsync_policies_parse_and_bad_ones_are_named() {
        assert_eq!(
            FsyncPolicy::parse("every-batch"),
            Ok(FsyncPolicy::EveryBatch)
        );
        assert_eq!(FsyncPolicy::parse("never"), Ok(FsyncPolicy::Never));
        assert_eq!(
            FsyncPolicy::parse("250ms"),
            Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
        );
        assert!(FsyncPolicy::parse("0s").is_err());
        let error = FsyncPolicy::parse("sometimes").unwrap_err();
        assert!(error.contains("sometimes"), "{error}");
    }

    #[test]
    fn every_batch_and_interval_policies_sync() {
        for fsync in [
            FsyncPolicy::EveryBatch,
            FsyncPolicy::Interval(Duration::ZERO),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { fsync, ..small() };
            let (mut log, _) = PartitionLog::open(dir.path(), config).unwrap();
            fill(&mut log, 0..3, 1);
            assert!(!log.unsynced, "{fsync:?} left data unsynced");
        }
    }
}
