//! Checkers: each reads a history (and the final cluster state) and returns a [`Verdict`]
//! with the evidence for it.
//!
//! - [`linearizable`]: registers (read / write / cas / delete per key), Wing–Gong–Lowe search
//!   with memoisation, as Knossos and Porcupine do. Used by Projects 1-3.
//! - [`cache`]: Project 1's: no lost acknowledged write (last-writer-wins), key movement per
//!   join or leave, hints drained.
//! - [`raft`]: Election Safety (one leader per term) from the nodes' `became_leader` events.
//! - [`log`]: Project 3's delivery: acknowledged messages read back once, in order.
//! - [`batch`]: Project 4's: every job done with the sequential run's output; no late or
//!   double commit.
//! - [`bank`]: Project 5's: whole-bank reads see the exact total; balances equal the opening
//!   plus the ledger's journal, each transfer applied once.

pub mod bank;
pub mod batch;
pub mod bench;
pub mod cache;
pub mod kv;
pub mod linearizable;
pub mod log;
pub mod raft;

use serde::Serialize;

/// What a checker concluded, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub checker: String,
    pub valid: bool,
    /// One line for the summary.
    pub summary: String,
    /// The operations or facts that show it (the offending window when invalid).
    pub evidence: Vec<String>,
    /// What a reader compares across runs of one scenario (its `variants`), as (label,
    /// value): a scenario run per variant prints these side by side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<(String, String)>,
}
