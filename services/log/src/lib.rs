//! Project 3: Kafka-lite.
//!
//! # Layout
//! - [`storage`]: a partition's log on disk: record batches with checksums in segment files,
//!   sparse offset and time indexes, roll and retention, crash recovery, fsync policy.

pub mod storage;
