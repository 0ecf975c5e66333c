//! Project 4: MapReduce-mini. A coordinator hands map and reduce tasks to workers and finishes
//! every job through worker crashes, slow workers and its own restart.
//!
//! - [`split`]: input files cut into map tasks by size, at line boundaries.
//! - [`partition`]: which reduce task a key goes to (a stable hash, the same on every machine).
//! - [`scheduler`]: the coordinator's decisions as a pure state machine (leases, retries with
//!   backoff, exclusion of failing workers, late answers refused, lost map outputs re-run,
//!   speculative backups, locality), driven by events and tested without sockets or clocks.

pub mod partition;
pub mod scheduler;
pub mod split;
