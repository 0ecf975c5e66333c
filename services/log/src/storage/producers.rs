//! The idempotent producer's bookkeeping, per partition: for each producer id, its epoch and
//! the sequence numbers of its last few batches, so that a retried batch is recognised and
//! not appended twice, and a batch that skips sequence numbers (one before it was lost) is
//! refused instead of leaving a hole.
//!
//! A pure state machine: the partition feeds it every batch it appends (a leader's and a
//! follower's alike, so a follower that becomes leader knows the producers), and rebuilds it
//! from the log after a restart or a truncation.

use std::collections::{BTreeMap, VecDeque};

use super::batch::{Batch, HeaderFields, NO_PRODUCER};

/// How many recent batches per producer are remembered for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` for idempotence is 5 for the same reason).
pub const REMEMBERED_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeenBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone, Default)]
struct ProducerState {
    epoch: i16,
    recent: VecDeque<SeenBatch>,
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: append it.
    Append,
    /// Already in the log at these offsets: acknowledge them again, append nothing.
    Duplicate { base_offset: u64, last_offset: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current}")]
    Fenced {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    #[error(
        "producer {producer_id}: sequence {got} out of order, expected {expected} (a batch before it is missing)"
    )]
    OutOfOrder {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ProducerStates {
    producers: BTreeMap<i64, ProducerState>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

fn last_seq(batch: &impl HeaderFields) -> i32 {
    let first = batch.producer().base_sequence;
    let span = batch.record_count() as i64 - 1;
    ((first as i64 + span) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    /// Judges a batch a leader is about to append.
    pub fn check(&self, batch: &Batch) -> Result<Verdict, SequenceError> {
        let stamp = batch.producer();
        if stamp.producer_id == NO_PRODUCER {
            return Ok(Verdict::Append);
        }
        let fresh = |expected: i32| {
            if stamp.base_sequence == expected {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id: stamp.producer_id,
                    expected,
                    got: stamp.base_sequence,
                })
            }
        };
        let Some(state) = self.producers.get(&stamp.producer_id) else {
            return fresh(0);
        };
        if stamp.producer_epoch < state.epoch {
            return Err(SequenceError::Fenced {
                producer_id: stamp.producer_id,
                epoch: stamp.producer_epoch,
                current: state.epoch,
            });
        }
        if stamp.producer_epoch > state.epoch {
            return fresh(0);
        }
        let last = last_seq(batch);
        if let Some(seen) = state
            .recent
            .iter()
            .find(|s| s.first_seq == stamp.base_sequence && s.last_seq == last)
        {
            return Ok(Verdict::Duplicate {
                base_offset: seen.base_offset,
                last_offset: seen.last_offset,
            });
        }
        let expected = state.recent.back().map_or(0, |s| next_seq(s.last_seq));
        fresh(expected)
    }

    /// Takes note of a batch now in the log (with its offsets): a whole batch or its header.
    pub fn record(&mut self, batch: &impl HeaderFields) {
        let stamp = batch.producer();
        if stamp.producer_id == NO_PRODUCER {
            return;
        }
        let state = self.producers.entry(stamp.producer_id).or_default();
        if stamp.producer_epoch != state.epoch {
            state.epoch = stamp.producer_epoch;
            state.recent.clear();
        }
        state.recent.push_back(SeenBatch {
            first_seq: stamp.base_sequence,
            last_seq: last_seq(batch),
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
        });
        if state.recent.len() > REMEMBERED_BATCHES {
            state.recent.pop_front();
        }
    }

    /// The next sequence number expected from `producer_id` (for status), if known.
    pub fn next_sequence(&self, producer_id: i64) -> Option<(i16, i32)> {
        let state = self.producers.get(&producer_id)?;
        let last = state.recent.back()?;
        Some((state.epoch, next_seq(last.last_seq)))
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::ProducerStamp;

    fn batch(producer_id: i64, epoch: i16, seq: i32, records: usize, offset: u64) -> Batch {
        let values = vec![&b"v"[..]; records];
        Batch::build(
            values.into_iter().map(|v| (None, v, 0)),
            ProducerStamp {
                producer_id,
                producer_epoch: epoch,
                base_sequence: seq,
            },
        )
        .assigned(offset, 1)
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut states = ProducerStates::default();
        let first = batch(7, 0, 0, 3, 0);
        assert_eq!(states.check(&first), Ok(Verdict::Append));
        states.record(&first);
        // The same batch again (its ack was lost): the offsets it got, nothing appended.
        assert_eq!(
            states.check(&batch(7, 0, 0, 3, 99)),
            Ok(Verdict::Duplicate {
                base_offset: 0,
                last_offset: 2
            })
        );
        // Sequence 5 when 3 is expected: batch 3..4 was lost on the way.
        assert_eq!(
            states.check(&batch(7, 0, 5, 1, 3)),
            Err(SequenceError::OutOfOrder {
                producer_id: 7,
                expected: 3,
                got: 5
            })
        );
        let second = batch(7, 0, 3, 2, 3);
        assert_eq!(states.check(&second), Ok(Verdict::Append));
        states.record(&second);
        assert_eq!(states.next_sequence(7), Some((0, 5)));
        // Other producers are independent; one without an id is never checked.
        assert_eq!(states.check(&batch(8, 0, 0, 1, 5)), Ok(Verdict::Append));
        assert!(states.check(&batch(8, 0, 4, 1, 5)).is_err());
        assert_eq!(
            states.check(&batch(NO_PRODUCER, -1, -1, 1, 5)),
            Ok(Verdict::Append)
        );
    }

    #[test]
    fn a_new_epoch_starts_over_and_fences_the_old_one() {
        let mut states = ProducerStates::default();
        states.record(&batch(7, 0, 0, 2, 0));
        assert!(states.check(&batch(7, 1, 2, 1, 2)).is_err(), "starts at 0");
        let bumped = batch(7, 1, 0, 1, 2);
        assert_eq!(states.check(&bumped), Ok(Verdict::Append));
        states.record(&bumped);
        assert!(matches!(
            states.check(&batch(7, 0, 2, 1, 3)),
            Err(SequenceError::Fenced { current: 1, .. })
        ));
    }

    #[test]
    fn only_the_last_few_batches_are_remembered() {
        let mut states = ProducerStates::default();
        for i in 0..(REMEMBERED_BATCHES as i32 + 2) {
            states.record(&batch(7, 0, i, 1, i as u64));
        }
        assert!(matches!(
            states.check(&batch(7, 0, 2, 1, 0)),
            Ok(Verdict::Duplicate { base_offset: 2, .. })
        ));
        // Too old to recognise: refused as out of order rather than appended twice.
        assert!(states.check(&batch(7, 0, 0, 1, 0)).is_err());
    }
}
