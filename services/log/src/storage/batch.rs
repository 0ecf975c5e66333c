//! The record batch: the unit a producer sends, a leader appends, a follower copies and a
//! consumer reads, stored byte for byte as it travels (no re-encoding on the broker).
//!
//! Kafka's idea, in a simpler encoding of our own (big-endian, fixed-width fields):
//!
//! ```text
//!  0 base_offset       u64   assigned by the leader when it appends
//!  8 length            u32   bytes after this field
//! 12 leader_epoch      u32   assigned by the leader when it appends
//! 16 magic             u8    FORMAT
//! 17 crc               u32   CRC-32 of every byte from `attributes` to the end
//! 21 attributes        u16   reserved (0)
//! 23 last_offset_delta u32   record_count - 1
//! 27 first_timestamp   i64   ms since the epoch
//! 35 max_timestamp     i64
//! 43 producer_id       i64   -1: not an idempotent producer
//! 51 producer_epoch    i16
//! 53 base_sequence     i32   the first record's sequence number (-1: none)
//! 57 record_count      u32
//! 61 records: length u32 | timestamp_delta i64 | key_len i32 (-1: none) | key |
//!             value_len i32 | value
//! ```
//!
//! The CRC leaves out what the leader fills in (the base offset, the leader epoch), so the
//! producer's checksum stays valid from the producer to the consumer, through every replica:
//! a flipped bit anywhere on the way or on disk is caught.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The encoding version in `magic`.
pub const FORMAT: u8 = 1;
/// Bytes before the first record.
pub const HEADER_LEN: usize = 61;
/// Bytes of the fields before `length` and `length` itself: what must be read to know a
/// batch's size.
pub const PREFIX_LEN: usize = 12;
/// No producer id (a producer that is not idempotent).
pub const NO_PRODUCER: i64 = -1;
/// The largest batch accepted (keeps a corrupt `length` from asking for gigabytes).
pub const MAX_BATCH_LEN: usize = 64 << 20;

const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;

/// One record as a producer gives it and a consumer gets it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
}

/// Who wrote a batch, for the idempotent producer's duplicate and gap checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

impl ProducerStamp {
    pub const NONE: Self = Self {
        producer_id: NO_PRODUCER,
        producer_epoch: -1,
        base_sequence: -1,
    };
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{0} bytes is shorter than a batch header ({HEADER_LEN})")]
    Short(usize),
    #[error("length field says {said} bytes but {have} follow it")]
    Length { said: usize, have: usize },
    #[error("length {0} is over the {MAX_BATCH_LEN}-byte limit or under the header's")]
    BadLength(usize),
    #[error("unknown format {0} (expected {FORMAT})")]
    Format(u8),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record {index} is malformed: {why}")]
    Record { index: u32, why: &'static str },
    #[error("an empty batch (no records)")]
    Empty,
}

/// A checked batch over its bytes (cheap to clone: the bytes are shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
}

impl Batch {
    /// Builds a batch of `records` (key, value, timestamp), offsets from 0 (the leader
    /// assigns the real ones), stamped with `producer`.
    pub fn build<'a, I>(records: I, producer: ProducerStamp) -> Self
    where
        I: IntoIterator<Item = (Option<&'a [u8]>, &'a [u8], i64)>,
    {
        let mut body = BytesMut::new();
        let (mut count, mut first_ts, mut max_ts) = (0u32, None::<i64>, i64::MIN);
        for (key, value, timestamp) in records {
            let first = *first_ts.get_or_insert(timestamp);
            max_ts = max_ts.max(timestamp);
            let len = 8 + 4 + key.map_or(0, <[u8]>::len) + 4 + value.len();
            body.put_u32(len as u32);
            body.put_i64(timestamp - first);
            match key {
                Some(key) => {
                    body.put_i32(key.len() as i32);
                    body.put_slice(key);
                }
                None => body.put_i32(-1),
            }
            body.put_i32(value.len() as i32);
            body.put_slice(value);
            count += 1;
        }
        let mut bytes = BytesMut::with_capacity(HEADER_LEN + body.len());
        bytes.put_u64(0);
        bytes.put_u32((HEADER_LEN - PREFIX_LEN + body.len()) as u32);
        bytes.put_u32(0);
        bytes.put_u8(FORMAT);
        bytes.put_u32(0); // the crc, below
        bytes.put_u16(0);
        bytes.put_u32(count.saturating_sub(1));
        bytes.put_i64(first_ts.unwrap_or(0));
        bytes.put_i64(if count == 0 { 0 } else { max_ts });
        bytes.put_i64(producer.producer_id);
        bytes.put_i16(producer.producer_epoch);
        bytes.put_i32(producer.base_sequence);
        bytes.put_u32(count);
        bytes.put_slice(&body);
        let crc = crc32fast::hash(&bytes[CRC_FROM..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Self {
            bytes: bytes.freeze(),
        }
    }

    /// Checks `bytes` hold exactly one valid batch: size, format, checksum, records.
    pub fn parse(bytes: Bytes) -> Result<Self, BatchError> {
        let len = Self::framed_len(&bytes)?;
        if len != bytes.len() {
            return Err(BatchError::Length {
                said: len - PREFIX_LEN,
                have: bytes.len() - PREFIX_LEN,
            });
        }
        let batch = Self { bytes };
        batch.verify()?;
        Ok(batch)
    }

    /// The whole size of the batch whose first bytes are `prefix` (at least
    /// [`PREFIX_LEN`] of them), from its length field; checks the length is plausible.
    pub fn framed_len(prefix: &[u8]) -> Result<usize, BatchError> {
        if prefix.len() < PREFIX_LEN {
            return Err(BatchError::Short(prefix.len()));
        }
        let length = u32::from_be_bytes(prefix[8..12].try_into().expect("4 bytes")) as usize;
        if !(HEADER_LEN - PREFIX_LEN..=MAX_BATCH_LEN).contains(&length) {
            return Err(BatchError::BadLength(length));
        }
        Ok(PREFIX_LEN + length)
    }

    fn verify(&self) -> Result<(), BatchError> {
        let b = &self.bytes;
        if b.len() < HEADER_LEN {
            return Err(BatchError::Short(b.len()));
        }
        if b[16] != FORMAT {
            return Err(BatchError::Format(b[16]));
        }
        let computed = crc32fast::hash(&b[CRC_FROM..]);
        if computed != self.crc() {
            return Err(BatchError::Crc {
                stored: self.crc(),
                computed,
            });
        }
        let count = self.record_count();
        if count == 0 {
            return Err(BatchError::Empty);
        }
        if self.last_offset_delta() != count - 1 {
            return Err(BatchError::Record {
                index: 0,
                why: "last offset delta disagrees with the record count",
            });
        }
        let mut rest = &b[HEADER_LEN..];
        for index in 0..count {
            let bad = |why| BatchError::Record { index, why };
            if rest.len() < 4 {
                return Err(bad("truncated length"));
            }
            let len = rest.get_u32() as usize;
            if rest.len() < len || len < 16 {
                return Err(bad("length past the batch's end"));
            }
            let mut record = &rest[..len];
            record.advance(8);
            let key_len = record.get_i32();
            if key_len >= 0 {
                if record.len() < key_len as usize + 4 {
                    return Err(bad("key past the record's end"));
                }
                record.advance(key_len as usize);
            } else if key_len != -1 {
                return Err(bad("negative key length"));
            }
            if record.len() < 4 {
                return Err(bad("truncated value length"));
            }
            let value_len = record.get_i32();
            if value_len < 0 || record.len() != value_len as usize {
                return Err(bad("value length disagrees with the record's"));
            }
            rest.advance(len);
        }
        if !rest.is_empty() {
            return Err(BatchError::Record {
                index: count,
                why: "bytes after the last record",
            });
        }
        Ok(())
    }

    /// The same batch, placed at `base_offset` by a leader of `leader_epoch` (the checksum
    /// does not cover these, so it stays valid).
    pub fn assigned(&self, base_offset: u64, leader_epoch: u32) -> Self {
        let mut bytes = BytesMut::from(&self.bytes[..]);
        bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        bytes[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
        Self {
            bytes: bytes.freeze(),
        }
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The records, with their offsets and timestamps.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let (base, first_ts) = (self.base_offset(), self.first_timestamp());
        let mut rest = self.bytes.slice(HEADER_LEN..);
        (0..u64::from(self.record_count())).map(move |i| {
            let len = rest.get_u32() as usize;
            let mut record = rest.split_to(len);
            let timestamp = first_ts + record.get_i64();
            let key_len = record.get_i32();
            let key = (key_len >= 0).then(|| record.split_to(key_len as usize));
            let value_len = record.get_i32() as usize;
            let value = record.split_to(value_len);
            Record {
                offset: base + i,
                timestamp,
                key,
                value,
            }
        })
    }
}

/// The header's fields, in one place for a whole [`Batch`] and a [`Header`] read alone.
pub trait HeaderFields {
    /// At least the header's bytes.
    fn header_bytes(&self) -> &[u8];

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.header_bytes()[at..at + 4].try_into().expect("4 bytes"))
    }

    fn i64_at(&self, at: usize) -> i64 {
        i64::from_be_bytes(self.header_bytes()[at..at + 8].try_into().expect("8 bytes"))
    }

    fn base_offset(&self) -> u64 {
        self.i64_at(0) as u64
    }

    /// The whole batch's size in bytes.
    fn framed_len(&self) -> usize {
        PREFIX_LEN + self.u32_at(8) as usize
    }

    fn leader_epoch(&self) -> u32 {
        self.u32_at(12)
    }

    fn crc(&self) -> u32 {
        self.u32_at(CRC_AT)
    }

    fn last_offset_delta(&self) -> u32 {
        self.u32_at(23)
    }

    /// The offset of the batch's last record.
    fn last_offset(&self) -> u64 {
        self.base_offset() + u64::from(self.last_offset_delta())
    }

    /// The offset after the batch's last record.
    fn next_offset(&self) -> u64 {
        self.last_offset() + 1
    }

    fn first_timestamp(&self) -> i64 {
        self.i64_at(27)
    }

    fn max_timestamp(&self) -> i64 {
        self.i64_at(35)
    }

    fn producer(&self) -> ProducerStamp {
        let b = self.header_bytes();
        ProducerStamp {
            producer_id: self.i64_at(43),
            producer_epoch: i16::from_be_bytes([b[51], b[52]]),
            base_sequence: self.u32_at(53) as i32,
        }
    }

    fn record_count(&self) -> u32 {
        self.u32_at(57)
    }
}

impl HeaderFields for Batch {
    fn header_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// A batch's header read without its records (scanning a segment), not checked.
pub struct Header(pub [u8; HEADER_LEN]);

impl HeaderFields for Header {
    fn header_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Splits `bytes` (whole batches back to back, as a fetch returns them) into checked
/// batches.
pub fn split(mut bytes: Bytes) -> Result<Vec<Batch>, BatchError> {
    let mut batches = Vec::new();
    while !bytes.is_empty() {
        let len = Batch::framed_len(&bytes)?;
        if len > bytes.len() {
            return Err(BatchError::Length {
                said: len - PREFIX_LEN,
                have: bytes.len().saturating_sub(PREFIX_LEN),
            });
        }
        batches.push(Batch::parse(bytes.split_to(len))?);
    }
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Batch {
        let records = [
            (Some(&b"k1"[..]), &b"hello"[..], 1_000),
            (None, &b""[..], 1_005),
            (Some(&b""[..]), &b"world"[..], 999),
        ];
        Batch::build(
            records,
            ProducerStamp {
                producer_id: 7,
                producer_epoch: 2,
                base_sequence: 40,
            },
        )
    }

    #[test]
    fn a_batch_round_trips_its_records_and_header() {
        let batch = sample().assigned(100, 3);
        let batch = Batch::parse(batch.bytes().clone()).unwrap();
        assert_eq!(batch.base_offset(), 100);
        assert_eq!(batch.last_offset(), 102);
        assert_eq!(batch.next_offset(), 103);
        assert_eq!(batch.leader_epoch(), 3);
        assert_eq!(batch.record_count(), 3);
        assert_eq!(batch.first_timestamp(), 1_000);
        assert_eq!(batch.max_timestamp(), 1_005);
        assert_eq!(batch.producer().producer_id, 7);
        assert_eq!(batch.producer().producer_epoch, 2);
        assert_eq!(batch.producer().base_sequence, 40);
        let records: Vec<Record> = batch.records().collect();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].offset, 100);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[0].value, "hello");
        assert_eq!(records[1].key, None);
        assert_eq!(records[1].timestamp, 1_005);
        assert_eq!(records[2].key.as_deref(), Some(&b""[..]));
        assert_eq!(records[2].timestamp, 999);
        assert_eq!(records[2].offset, 102);
    }

    #[test]
    fn every_flipped_byte_under_the_checksum_is_caught() {
        let good = sample();
        for at in CRC_FROM..good.len() {
            let mut bytes = BytesMut::from(&good.bytes()[..]);
            bytes[at] ^= 0x40;
            assert!(
                Batch::parse(bytes.freeze()).is_err(),
                "a flip at byte {at} went unnoticed"
            );
        }
        // What the leader assigns is outside it, on purpose.
        assert!(Batch::parse(good.assigned(9, 9).bytes().clone()).is_ok());
    }

    #[test]
    fn bad_lengths_are_named() {
        let good = sample();
        let short = good.bytes().slice(..good.len() - 1);
        assert!(matches!(
            Batch::parse(short),
            Err(BatchError::Length { .. })
        ));
        assert!(matches!(
            Batch::parse(Bytes::from_static(b"abc")),
            Err(BatchError::Short(3))
        ));
        let mut huge = BytesMut::from(&good.bytes()[..]);
        huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Batch::parse(huge.freeze()),
            Err(BatchError::BadLength(_))
        ));
        let empty = Batch::build([], ProducerStamp::NONE);
        assert_eq!(Batch::parse(empty.bytes().clone()), Err(BatchError::Empty));
    }

    #[test]
    fn back_to_back_batches_split() {
        let (a, b) = (sample().assigned(0, 1), sample().assigned(3, 1));
        let mut bytes = BytesMut::new();
        bytes.put_slice(a.bytes());
        bytes.put_slice(b.bytes());
        let bytes = bytes.freeze();
        assert_eq!(split(bytes.clone()).unwrap(), vec![a, b]);
        assert!(split(bytes.slice(..bytes.len() - 2)).is_err());
    }
}
