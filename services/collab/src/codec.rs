//! The binary encoding of operations: what servers store and replicas send each other.
//!
//! Compact because sync cost is measured in bytes per operation: numbers are LEB128 varints,
//! a parent or origin of the operation's own replica is written as a distance back rather than
//! a full dot, and a run of typed characters is one record with its text as UTF-8.
//!
//! ```text
//! record  = kind:u8 replica:varint seq:varint parents body
//! parents = count:varint (dot)*
//! dot     = 0 back:varint                    the op's own replica, seq - back
//!         | 1 replica:varint seq:varint      another replica
//! insert  = flags:u8 (bit 0 left, bit 1 right) [dot] [dot] bytes:varint utf8
//! delete  = count:varint (dot len:varint)*
//! ```
//!
//! Decoding checks every length against what is left and every string for UTF-8, and says at
//! which byte of which record it stopped; [`Decoder`] yields records one by one so a reader of
//! a damaged store keeps every record before the damage.

use crate::causal::{Dot, Frontier, ReplicaId, VersionVector};
use crate::doc::MAX_OP_CHARS;
use crate::op::{Body, Op, Span};

const INSERT: u8 = 1;
const DELETE: u8 = 2;

/// Where and why a byte string is not operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record} at byte {offset}: {reason}")]
pub struct DecodeError {
    /// Records decoded before this one.
    pub record: usize,
    pub offset: usize,
    pub reason: String,
}

pub fn encode_op(op: &Op, out: &mut Vec<u8>) {
    let own = op.id.replica;
    let kind = match op.body {
        Body::Insert { .. } => INSERT,
        Body::Delete { .. } => DELETE,
    };
    out.push(kind);
    put_varint(out, own.0);
    put_varint(out, op.id.seq);
    put_varint(out, op.parents.dots().len() as u64);
    for &parent in op.parents.dots() {
        put_dot(out, op.id, parent);
    }
    match &op.body {
        Body::Insert {
            origin_left,
            origin_right,
            text,
        } => {
            out.push(u8::from(origin_left.is_some()) | (u8::from(origin_right.is_some()) << 1));
            for dot in [origin_left, origin_right].into_iter().flatten() {
                put_dot(out, op.id, *dot);
            }
            put_varint(out, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
        Body::Delete { targets } => {
            put_varint(out, targets.len() as u64);
            for span in targets {
                put_dot(out, op.id, span.start);
                put_varint(out, span.len);
            }
        }
    }
}

pub fn encode_ops<'a>(ops: impl IntoIterator<Item = &'a Op>) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        encode_op(op, &mut out);
    }
    out
}

pub fn decode_ops(bytes: &[u8]) -> Result<Vec<Op>, DecodeError> {
    Decoder::new(bytes).collect()
}

/// Records one at a time.
pub struct Decoder<'a> {
    bytes: &'a [u8],
    at: usize,
    record: usize,
    failed: bool,
}

impl<'a> Decoder<'a> {
    pub fn new(bytes: &'a [u8]) -> Decoder<'a> {
        Decoder {
            bytes,
            at: 0,
            record: 0,
            failed: false,
        }
    }

    /// Bytes consumed by the records decoded so far.
    pub fn offset(&self) -> usize {
        self.at
    }

    pub(crate) fn error(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError {
            record: self.record,
            offset: self.at,
            reason: reason.into(),
        }
    }

    pub(crate) fn byte(&mut self) -> Result<u8, DecodeError> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.error("truncated"))?;
        self.at += 1;
        Ok(byte)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.error("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    /// A count of items each taking at least one byte: never more than the bytes left.
    pub(crate) fn length(&mut self, what: &str) -> Result<usize, DecodeError> {
        let count = self.varint()?;
        if count > (self.bytes.len() - self.at) as u64 {
            return Err(self.error(format!("{what} count {count} is more than the bytes left")));
        }
        Ok(count as usize)
    }

    /// A string: its length in bytes, then UTF-8, at most `limit` bytes.
    pub(crate) fn string(&mut self, what: &str, limit: usize) -> Result<String, DecodeError> {
        let len = self.length(what)?;
        if len > limit {
            return Err(self.error(format!(
                "{what} of {len} bytes is over the limit of {limit}"
            )));
        }
        let text = std::str::from_utf8(&self.bytes[self.at..self.at + len])
            .map_err(|e| self.error(format!("{what} is not UTF-8: {e}")))?
            .to_string();
        self.at += len;
        Ok(text)
    }

    /// A version vector: `count (replica held)*`.
    pub(crate) fn version(&mut self) -> Result<VersionVector, DecodeError> {
        let mut version = VersionVector::new();
        for _ in 0..self.length("version entry")? {
            let replica = ReplicaId(self.varint()?);
            version.advance(replica, self.varint()?);
        }
        Ok(version)
    }

    /// Whether every byte has been read.
    pub(crate) fn at_end(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn dot(&mut self, id: Dot) -> Result<Dot, DecodeError> {
        match self.byte()? {
            0 => {
                let back = self.varint()?;
                let seq = id.seq.checked_sub(back).ok_or_else(|| {
                    self.error(format!(
                        "a dot {back} before seq {} of its own replica",
                        id.seq
                    ))
                })?;
                Ok(Dot::new(id.replica, seq))
            }
            1 => Ok(Dot::new(ReplicaId(self.varint()?), self.varint()?)),
            tag => Err(self.error(format!("unknown dot tag {tag}"))),
        }
    }

    pub(crate) fn op(&mut self) -> Result<Op, DecodeError> {
        let kind = self.byte()?;
        if kind != INSERT && kind != DELETE {
            return Err(self.error(format!("unknown record kind {kind}")));
        }
        let id = Dot::new(ReplicaId(self.varint()?), self.varint()?);
        let mut parents = Vec::new();
        for _ in 0..self.length("parent")? {
            parents.push(self.dot(id)?);
        }
        let parents = Frontier::from_dots(parents);
        match kind {
            INSERT => {
                let flags = self.byte()?;
                if flags > 3 {
                    return Err(self.error(format!("unknown origin flags {flags:#x}")));
                }
                let origin_left = if flags & 1 != 0 {
                    Some(self.dot(id)?)
                } else {
                    None
                };
                let origin_right = if flags & 2 != 0 {
                    Some(self.dot(id)?)
                } else {
                    None
                };
                let text = self.string("text", 4 * MAX_OP_CHARS as usize)?;
                if text.is_empty() {
                    return Err(self.error("an insertion of no text"));
                }
                Ok(Op::insert(id, parents, origin_left, origin_right, text))
            }
            DELETE => {
                let mut targets = Vec::new();
                for _ in 0..self.length("span")? {
                    let start = self.dot(id)?;
                    let len = self.varint()?;
                    if len == 0 || start.seq.checked_add(len).is_none() {
                        return Err(
                            self.error(format!("a deleted span of length {len} from {start}"))
                        );
                    }
                    targets.push(Span { start, len });
                }
                if targets.is_empty() {
                    return Err(self.error("a deletion of nothing"));
                }
                Ok(Op::delete(id, parents, targets))
            }
            _ => unreachable!("the kind was checked when read"),
        }
    }
}

impl Iterator for Decoder<'_> {
    type Item = Result<Op, DecodeError>;

    fn next(&mut self) -> Option<Result<Op, DecodeError>> {
        if self.failed || self.at == self.bytes.len() {
            return None;
        }
        let start = self.at;
        match self.op() {
            Ok(op) => {
                self.record += 1;
                Some(Ok(op))
            }
            Err(error) => {
                self.failed = true;
                self.at = start;
                Some(Err(error))
            }
        }
    }
}

pub(crate) fn put_string(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

pub(crate) fn put_version(out: &mut Vec<u8>, version: &VersionVector) {
    put_varint(out, version.iter().count() as u64);
    for (replica, held) in version.iter() {
        put_varint(out, replica.0);
        put_varint(out, held);
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_dot(out: &mut Vec<u8>, id: Dot, dot: Dot) {
    if dot.replica == id.replica && dot.seq <= id.seq {
        out.push(0);
        put_varint(out, id.seq - dot.seq);
    } else {
        out.push(1);
        put_varint(out, dot.replica.0);
        put_varint(out, dot.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Doc;

    fn sample() -> Vec<Op> {
        let mut a = Doc::new(ReplicaId(0xa11ce));
        let mut b = Doc::new(ReplicaId(u64::MAX));
        let mut ops = vec![a.insert(0, "héllo wörld").unwrap().unwrap()];
        b.apply(ops[0].clone()).unwrap();
        ops.push(b.insert(5, ",").unwrap().unwrap());
        ops.push(a.delete(0, 3).unwrap().unwrap());
        a.apply(ops[1].clone()).unwrap();
        ops.push(a.insert(0, "🦀").unwrap().unwrap());
        ops
    }

    #[test]
    fn operations_round_trip() {
        let ops = sample();
        let bytes = encode_ops(&ops);
        assert_eq!(decode_ops(&bytes).unwrap(), ops);
    }

    #[test]
    fn damage_is_named_and_the_records_before_it_are_kept() {
        let ops = sample();
        let bytes = encode_ops(&ops);
        let first = encode_ops(&ops[..1]).len();
        // Cut inside the second record.
        let cut = &bytes[..first + 3];
        let mut decoder = Decoder::new(cut);
        assert_eq!(decoder.next().unwrap().unwrap(), ops[0]);
        let error = decoder.next().unwrap().unwrap_err();
        assert_eq!(error.record, 1);
        assert_eq!(error.reason, "truncated");
        assert!(decoder.next().is_none());
        assert_eq!(decoder.offset(), first, "the good prefix's length");

        let mut bad_kind = bytes.clone();
        bad_kind[first] = 9;
        let error = decode_ops(&bad_kind).unwrap_err();
        assert_eq!((error.record, error.offset), (1, first + 1));
        assert!(error.reason.contains("unknown record kind 9"), "{error}");
    }

    #[test]
    fn hostile_lengths_and_bytes_are_refused() {
        // An insertion claiming a huge text.
        let mut huge = vec![INSERT, 1, 0, 0, 0];
        put_varint(&mut huge, u64::MAX / 2);
        assert!(
            decode_ops(&huge)
                .unwrap_err()
                .reason
                .contains("more than the bytes left")
        );
        // Text that is not UTF-8.
        let bad = vec![INSERT, 1, 0, 0, 0, 2, 0xff, 0xfe];
        assert!(decode_ops(&bad).unwrap_err().reason.contains("not UTF-8"));
        // An eleven-byte varint.
        let long = [vec![INSERT], vec![0xff; 11]].concat();
        assert!(decode_ops(&long).is_err());
        // A parent further back than seq 0.
        let back = vec![INSERT, 1, 0, 1, 0, 5];
        assert!(
            decode_ops(&back)
                .unwrap_err()
                .reason
                .contains("before seq 0")
        );
    }
}
