//! One segment: a run of batches in `<base>.log`, with its sparse `<base>.index` (offset ->
//! position) and `<base>.timeindex` (time -> offset). `<base>` is the first offset it holds,
//! zero-padded to 20 digits so a directory listing sorts them.
//!
//! Only the newest segment is written; the others are sealed. On open, a segment is checked
//! against itself: the newest one is scanned whole (a crash leaves torn or half-written batches
//! only there), a sealed one from its last index entry on. A batch that fails its checks ends
//! the segment: the file is cut there, and the indexes are rebuilt if they disagree with what
//! the scan found.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::batch::{Batch, BatchError, HEADER_LEN, Header, HeaderFields};
use super::index::{IndexFile, OffsetEntry, TimeEntry};

/// What opening a segment found wrong and mended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segment: u64,
    /// The log was cut: the first offset and byte position dropped, how many bytes, and why.
    pub truncated: Option<Truncation>,
    /// An index disagreed with the log and was rebuilt from it.
    pub index_rebuilt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub at_offset: u64,
    pub at_position: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// A batch's place and figures, as a scan sees them.
#[derive(Debug, Clone, Copy)]
struct Seen {
    position: u64,
    len: u64,
    base_offset: u64,
    next_offset: u64,
    max_timestamp: i64,
}

/// What a scan of a run of batches found.
struct Scan {
    seen: Vec<Seen>,
    /// Where the valid batches end.
    end: u64,
    /// The first bad batch, if one stopped the scan before the file's end.
    bad: Option<String>,
}

pub struct Segment {
    base: u64,
    path: PathBuf,
    log: File,
    /// Bytes of valid batches.
    size: u64,
    next_offset: u64,
    /// The first batch's largest timestamp (age-based roll counts from it).
    first_timestamp: Option<i64>,
    max_timestamp: Option<i64>,
    offsets: IndexFile<OffsetEntry>,
    times: IndexFile<TimeEntry>,
    index_interval: u64,
    bytes_since_index: u64,
    unsynced: bool,
}

/// A segment file's name: `00000000000000001234.log`.
pub fn file_name(base: u64, extension: &str) -> String {
    format!("{base:020}.{extension}")
}

impl Segment {
    /// Opens the segment starting at `base` in `dir` (creating it if absent). `newest`: scan
    /// it whole; otherwise from its last index entry.
    pub fn open(
        dir: &Path,
        base: u64,
        index_interval: u64,
        newest: bool,
    ) -> anyhow::Result<(Self, Option<Recovery>)> {
        let path = dir.join(file_name(base, "log"));
        let log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let file_len = log
            .metadata()
            .with_context(|| format!("reading {}'s size", path.display()))?
            .len();
        let offsets = IndexFile::open(&dir.join(file_name(base, "index")))?;
        let times = IndexFile::open(&dir.join(file_name(base, "timeindex")))?;
        let mut segment = Self {
            base,
            path,
            log,
            size: file_len,
            next_offset: base,
            first_timestamp: None,
            max_timestamp: None,
            offsets,
            times,
            index_interval: index_interval.max(1),
            bytes_since_index: 0,
            unsynced: false,
        };
        let recovery = if newest || !segment.indexes_look_sane(file_len) {
            segment.recover(file_len)?
        } else {
            let last = segment.offsets.last().copied();
            let (from, expect) = last.map_or((0, base), |e| {
                (u64::from(e.position), base + u64::from(e.relative_offset))
            });
            let tail = segment.scan(from, file_len, expect)?;
            if tail.bad.is_some() {
                segment.recover(file_len)?
            } else {
                segment.take_tail(&tail)?;
                None
            }
        };
        if segment.size > 0 {
            segment.first_timestamp = Some(segment.header_at(0)?.max_timestamp());
        }
        Ok((segment, recovery))
    }

    /// Whether the indexes can be believed without a scan: increasing, inside the file.
    fn indexes_look_sane(&self, file_len: u64) -> bool {
        let offsets = self.offsets.entries();
        let times = self.times.entries();
        let increasing = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position)
            && times.windows(2).all(|w| {
                w[0].timestamp <= w[1].timestamp && w[0].relative_offset <= w[1].relative_offset
            });
        let inside = offsets
            .last()
            .is_none_or(|e| u64::from(e.position) < file_len);
        let times_inside = match (times.last(), offsets.last()) {
            (Some(t), Some(o)) => t.relative_offset <= o.relative_offset,
            (Some(t), None) => t.relative_offset == 0,
            (None, _) => true,
        };
        increasing && inside && times_inside
    }

    /// Scans the whole log, cuts it after its last valid batch, and rebuilds the indexes if
    /// they disagree with it.
    fn recover(&mut self, file_len: u64) -> anyhow::Result<Option<Recovery>> {
        let scan = self.scan(0, file_len, self.base)?;
        let mut recovery = Recovery {
            segment: self.base,
            truncated: None,
            index_rebuilt: false,
        };
        if scan.end < file_len {
            self.log
                .set_len(scan.end)
                .with_context(|| format!("truncating {}", self.path.display()))?;
            self.log
                .sync_data()
                .with_context(|| format!("syncing {}", self.path.display()))?;
            let at_offset = scan.seen.last().map_or(self.base, |s| s.next_offset);
            recovery.truncated = Some(Truncation {
                at_offset,
                at_position: scan.end,
                dropped_bytes: file_len - scan.end,
                reason: scan
                    .bad
                    .clone()
                    .unwrap_or_else(|| "bytes after the last batch".into()),
            });
        }
        let (offsets, times) = self.build_indexes(&scan.seen);
        if offsets != self.offsets.entries() {
            self.offsets.rewrite(offsets)?;
            recovery.index_rebuilt = true;
        }
        if times != self.times.entries() {
            self.times.rewrite(times)?;
            recovery.index_rebuilt = true;
        }
        self.size = scan.end;
        self.next_offset = self.base;
        self.take_tail(&Scan {
            seen: scan.seen,
            end: scan.end,
            bad: None,
        })?;
        Ok((recovery.truncated.is_some() || recovery.index_rebuilt).then_some(recovery))
    }

    /// The indexes appending `seen` one by one would have written.
    fn build_indexes(&self, seen: &[Seen]) -> (Vec<OffsetEntry>, Vec<TimeEntry>) {
        let (mut offsets, mut times) = (Vec::new(), Vec::new());
        let (mut since, mut max_ts) = (0u64, None::<i64>);
        for s in seen {
            max_ts = Some(max_ts.map_or(s.max_timestamp, |m| m.max(s.max_timestamp)));
            if since >= self.index_interval {
                let relative_offset = (s.base_offset - self.base) as u32;
                offsets.push(OffsetEntry {
                    relative_offset,
                    position: s.position as u32,
                });
                if let Some(entry) = time_entry(times.last(), max_ts, relative_offset) {
                    times.push(entry);
                }
                since = 0;
            }
            since += s.len;
        }
        (offsets, times)
    }

    /// Takes the figures of the batches from the last index entry to the end.
    fn take_tail(&mut self, tail: &Scan) -> anyhow::Result<()> {
        self.size = tail.end;
        if let Some(last) = tail.seen.last() {
            self.next_offset = last.next_offset;
        } else if let Some(e) = self.offsets.last() {
            // An index entry points at a batch, so a scan from it sees at least that one.
            anyhow::bail!(
                "{}: index entry at position {} but no batch there",
                self.path.display(),
                e.position
            );
        }
        let tail_max = tail.seen.iter().map(|s| s.max_timestamp).max();
        let indexed_max = self.times.last().map(|t| t.timestamp);
        self.max_timestamp = tail_max.max(indexed_max);
        let from = self.offsets.last().map_or(0, |e| u64::from(e.position));
        self.bytes_since_index = self.size - from;
        Ok(())
    }

    /// Reads batch after batch from `from` (expected to start at offset `expect`) up to
    /// `end`, stopping at the first one that is torn, corrupt or out of sequence.
    fn scan(&self, from: u64, end: u64, mut expect: u64) -> anyhow::Result<Scan> {
        let mut seen = Vec::new();
        let mut position = from;
        let mut bad = None;
        while position < end {
            let batch = match self.batch_at(position, end) {
                Ok(batch) => batch,
                Err(e) => {
                    bad = Some(format!("{e} (at byte {position})"));
                    break;
                }
            };
            if batch.base_offset() != expect {
                bad = Some(format!(
                    "batch at byte {position} starts at offset {}, expected {expect}",
                    batch.base_offset()
                ));
                break;
            }
            seen.push(Seen {
                position,
                len: batch.len() as u64,
                base_offset: batch.base_offset(),
                next_offset: batch.next_offset(),
                max_timestamp: batch.max_timestamp(),
            });
            expect = batch.next_offset();
            position += batch.len() as u64;
        }
        Ok(Scan {
            seen,
            end: position,
            bad,
        })
    }

    /// The whole batch at `position`, checked (its records too).
    fn batch_at(&self, position: u64, end: u64) -> Result<Batch, BatchError> {
        let mut prefix = [0u8; super::batch::PREFIX_LEN];
        let available = (end - position) as usize;
        if available < prefix.len() {
            return Err(BatchError::Short(available));
        }
        self.read_exact(&mut prefix, position)
            .map_err(|_| BatchError::Short(available))?;
        let len = Batch::framed_len(&prefix)?;
        if len > available {
            return Err(BatchError::Length {
                said: len - prefix.len(),
                have: available - prefix.len(),
            });
        }
        let mut bytes = vec![0u8; len];
        self.read_exact(&mut bytes, position)
            .map_err(|_| BatchError::Short(available))?;
        Batch::parse(bytes.into())
    }

    /// The header of the batch at `position` (not checked: for batches already scanned).
    fn header_at(&self, position: u64) -> anyhow::Result<Header> {
        let mut bytes = [0u8; HEADER_LEN];
        self.read_exact(&mut bytes, position)?;
        Ok(Header(bytes))
    }

    fn read_exact(&self, buf: &mut [u8], position: u64) -> anyhow::Result<()> {
        self.log
            .read_exact_at(buf, position)
            .with_context(|| format!("reading {} at byte {position}", self.path.display()))
    }

    /// Appends `batch`, which must start at this segment's next offset.
    pub fn append(&mut self, batch: &Batch) -> anyhow::Result<()> {
        anyhow::ensure!(
            batch.base_offset() == self.next_offset,
            "batch starts at offset {} but {} expects {}",
            batch.base_offset(),
            self.path.display(),
            self.next_offset
        );
        let position = self.size;
        self.log
            .write_all(batch.bytes())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        self.size += batch.len() as u64;
        self.next_offset = batch.next_offset();
        self.first_timestamp.get_or_insert(batch.max_timestamp());
        let max_ts = self
            .max_timestamp
            .map_or(batch.max_timestamp(), |m| m.max(batch.max_timestamp()));
        self.max_timestamp = Some(max_ts);
        if self.bytes_since_index >= self.index_interval {
            let relative_offset = (batch.base_offset() - self.base) as u32;
            self.offsets.append(OffsetEntry {
                relative_offset,
                position: position as u32,
            })?;
            if let Some(entry) = time_entry(self.times.last(), Some(max_ts), relative_offset) {
                self.times.append(entry)?;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += batch.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    pub fn sync(&mut self) -> anyhow::Result<()> {
        if self.unsynced {
            self.log
                .sync_data()
                .with_context(|| format!("syncing {}", self.path.display()))?;
            self.unsynced = false;
        }
        self.offsets.sync()?;
        self.times.sync()
    }

    /// The headers of every batch, oldest first (rebuilding what is derived from them).
    pub fn headers(&self) -> anyhow::Result<Vec<Header>> {
        let mut headers = Vec::new();
        let mut position = 0;
        while position < self.size {
            let header = self.header_at(position)?;
            position += header.framed_len() as u64;
            headers.push(header);
        }
        Ok(headers)
    }

    /// The byte position to start a scan for `offset` from: the last indexed batch at or
    /// before it.
    fn start_for(&self, offset: u64) -> u64 {
        let relative = offset.saturating_sub(self.base);
        let entries = self.offsets.entries();
        let at = entries.partition_point(|e| u64::from(e.relative_offset) <= relative);
        at.checked_sub(1)
            .map_or(0, |i| u64::from(entries[i].position))
    }

    /// The bytes of whole batches from the one holding `offset`: no batch with an offset at
    /// or past `limit` (the high watermark), at most `max_bytes` unless the first batch alone
    /// is larger (so a reader always progresses). Empty at the end.
    pub fn read(&self, offset: u64, max_bytes: usize, limit: u64) -> anyhow::Result<Vec<u8>> {
        let mut position = self.start_for(offset);
        let mut first = None;
        let mut end = position;
        while position < self.size {
            let header = self.header_at(position)?;
            if header.last_offset() >= limit {
                break;
            }
            let next = position + header.framed_len() as u64;
            if header.last_offset() < offset {
                position = next;
                continue;
            }
            let start = *first.get_or_insert(position);
            if next - start > max_bytes as u64 && end > start {
                break;
            }
            end = next;
            position = next;
        }
        let Some(start) = first else {
            return Ok(Vec::new());
        };
        let mut bytes = vec![0u8; (end - start) as usize];
        self.read_exact(&mut bytes, start)?;
        Ok(bytes)
    }

    /// The offset of the first record with a timestamp at or after `timestamp`, if any.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> anyhow::Result<Option<u64>> {
        if self.max_timestamp.is_none_or(|m| m < timestamp) {
            return Ok(None);
        }
        let times = self.times.entries();
        let at = times.partition_point(|t| t.timestamp < timestamp);
        let from_offset = at.checked_sub(1).map_or(self.base, |i| {
            self.base + u64::from(times[i].relative_offset)
        });
        let mut position = self.start_for(from_offset);
        while position < self.size {
            let header = self.header_at(position)?;
            if header.max_timestamp() >= timestamp {
                let batch = self
                    .batch_at(position, self.size)
                    .with_context(|| format!("reading {}", self.path.display()))?;
                return Ok(batch
                    .records()
                    .find(|r| r.timestamp >= timestamp)
                    .map(|r| r.offset));
            }
            position += header.framed_len() as u64;
        }
        Ok(None)
    }

    /// Drops every batch from the one holding `offset` on; returns the new next offset (the
    /// dropped batch's base: a cut falls between batches).
    pub fn truncate_to(&mut self, offset: u64) -> anyhow::Result<u64> {
        if offset >= self.next_offset {
            return Ok(self.next_offset);
        }
        let mut position = self.start_for(offset);
        let mut cut = (position, self.base);
        while position < self.size {
            let header = self.header_at(position)?;
            cut = (position, header.base_offset());
            if header.last_offset() >= offset {
                break;
            }
            position += header.framed_len() as u64;
        }
        let (position, new_next) = cut;
        self.log
            .set_len(position)
            .with_context(|| format!("truncating {}", self.path.display()))?;
        let relative = new_next - self.base;
        let keep_offsets = self
            .offsets
            .entries()
            .partition_point(|e| u64::from(e.relative_offset) < relative);
        self.offsets.truncate(keep_offsets)?;
        let keep_times = self
            .times
            .entries()
            .partition_point(|t| u64::from(t.relative_offset) < relative);
        self.times.truncate(keep_times)?;
        let from = self.offsets.last().map_or(0, |e| u64::from(e.position));
        let expect = self
            .offsets
            .last()
            .map_or(self.base, |e| self.base + u64::from(e.relative_offset));
        let tail = self.scan(from, position, expect)?;
        self.next_offset = self.base;
        self.take_tail(&tail)?;
        if self.size == 0 {
            self.first_timestamp = None;
        }
        self.unsynced = true;
        Ok(self.next_offset)
    }

    /// Removes the segment's files.
    pub fn delete(self) -> anyhow::Result<()> {
        for path in [
            self.path.clone(),
            self.offsets.path().to_path_buf(),
            self.times.path().to_path_buf(),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("deleting {}", path.display())),
            }
        }
        Ok(())
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn first_timestamp(&self) -> Option<i64> {
        self.first_timestamp
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        self.max_timestamp
    }
}

/// The time index entry to add at a batch at `relative_offset`, if the segment's largest
/// timestamp (`max_ts`) grew since the last entry: one rule for appends and rebuilds.
fn time_entry(
    last: Option<&TimeEntry>,
    max_ts: Option<i64>,
    relative_offset: u32,
) -> Option<TimeEntry> {
    let timestamp = max_ts?;
    last.is_none_or(|t| t.timestamp < timestamp)
        .then_some(TimeEntry {
            timestamp,
            relative_offset,
        })
}
