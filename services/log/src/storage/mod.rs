//! One partition's log on disk: batches in segment files with sparse indexes, rolled by size
//! and age, deleted by retention, recovered after a crash, synced by policy.
//!
//! - [`batch`]: the record batch, the unit everything moves in, with its checksum.
//! - [`index`]: the sparse offset and time indexes.
//! - [`segment`]: one segment file and its indexes; recovery of a torn tail.
//! - [`partition`]: a partition's segments: append, read, roll, retention, truncation,
//!   fsync policy. [`epochs`]: the leader epoch of each range of offsets. [`producers`]: the
//!   idempotent producer's sequence numbers. [`bench`]: `lab bench proj3 --phases storage`.

pub mod batch;
pub mod bench;
pub mod epochs;
pub mod index;
pub mod partition;
pub mod producers;
pub mod segment;
