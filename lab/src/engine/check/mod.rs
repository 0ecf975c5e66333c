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
//! - [`collab`]: Project 6's: every replica converged on one text once quiet; every
//!   acknowledged edit held by every server.

pub mod bank;
pub mod batch;
pub mod bench;
pub mod cache;
pub mod collab;
pub mod kv;
pub mod linearizable;
pub mod log;
pub mod raft;

use std::time::Duration;

use serde::Serialize;

/// What a checker concluded, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub checker: String,
    pub valid: bool,
    /// The checker could not decide within its [`Budget`]: neither valid nor invalid (Jepsen's
    /// `:valid? :unknown`). `valid` is false with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
    /// One line for the summary.
    pub summary: String,
    /// The operations or facts that show it (the offending window when invalid).
    pub evidence: Vec<String>,
    /// What a reader compares across runs of one scenario (its `variants`), as (label,
    /// value): a scenario run per variant prints these side by side.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<(String, String)>,
}

/// What a checker may spend on one run's history (`--check-budget TIME[,MEMORY]`): past
/// either limit it answers "unknown: budget exhausted" instead of hanging the run or running
/// the machine out of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub time: Duration,
    /// Bytes of search state (the linearizability search's memo of visited states).
    pub memory: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            time: Duration::from_secs(120),
            memory: 2 << 30,
        }
    }
}

impl Budget {
    /// `60s` or `60s,1g` (the memory part, a size as `512m` or `2g`, defaults to 2g).
    pub fn parse(text: &str) -> Result<Budget, String> {
        let (time, memory) = match text.split_once(',') {
            Some((time, memory)) => (time, Some(memory)),
            None => (text, None),
        };
        let time = distlab_runtime::duration::parse(time.trim())
            .map_err(|e| format!("--check-budget {text:?}: {e}"))?;
        let memory = match memory {
            Some(m) => distlab_runtime::size::parse(m.trim())
                .map_err(|e| format!("--check-budget {text:?}: {e}"))?,
            None => Budget::default().memory,
        };
        if time.is_zero() || memory == 0 {
            return Err(format!(
                "--check-budget {text:?}: time and memory must be more than 0"
            ));
        }
        Ok(Budget { time, memory })
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_budget_is_a_time_and_optionally_a_memory_size() {
        assert_eq!(
            Budget::parse("30s").unwrap(),
            Budget {
                time: Duration::from_secs(30),
                memory: 2 << 30
            }
        );
        assert_eq!(Budget::parse("2m,512m").unwrap().memory, 512 << 20);
        for bad in ["", "fast", "0s", "10s,lots", "10s,0"] {
            let e = Budget::parse(bad).unwrap_err();
            assert!(e.contains("--check-budget"), "{e}");
        }
    }
}
