//! Checkers: each reads a history (and the final cluster state) and returns a [`Verdict`]
//! with the evidence for it.
//!
//! - [`linearizable`]: registers (read / write / cas / delete per key), Wing–Gong–Lowe search
//!   with memoisation, as Knossos and Porcupine do. Used by Projects 1-3.
//! - [`raft`]: Election Safety (one leader per term) from the nodes' `became_leader` events.

pub mod bench;
pub mod kv;
pub mod linearizable;
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
}
