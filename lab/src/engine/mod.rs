//! The lab engine: everything the lab does without a screen. The console renders what the
//! engine knows and sends it commands; `lab scenario` drives the same engine headless.
//!
//! Built so far:
//! - [`project`]: each project's roles, sizes and node flags (the plug-in table).
//! - [`supervisor`]: a cluster's node processes and the signal faults (pause, resume, kill,
//!   terminate, restart); crashes recorded with the node's last lines.
//! - [`network`], [`link`]: the link proxies every node-to-node and client-to-node byte goes
//!   through, and the faults applied to them.
//! - [`events`]: the run's timeline (`events.jsonl`). [`rundir`]: where a run leaves it all.
//! - [`autoscale`]: `--autoscale MIN..MAX`, adding and retiring nodes by queue depth.
//! - [`repeat`]: `lab scenario --repeat N`'s table: one run per seed, the figures' spread.

pub mod autoscale;
pub mod check;
pub mod events;
pub mod history;
pub mod link;
pub mod model;
pub mod nemesis;
pub mod network;
pub mod outage;
pub mod partition;
pub mod plot;
pub mod predicate;
pub mod project;
pub mod repeat;
pub mod rundir;
pub mod runner;
pub mod scenario;
pub mod session;
pub mod supervisor;
pub mod workload;

/// serde's error messages end with their own "at line L column C"; ours put the place first
/// (`FILE:LINE:COL: message`), so the tail is dropped.
pub(crate) fn serde_message(error: &impl std::fmt::Display) -> String {
    let message = error.to_string();
    match message.split_once(" at line ") {
        Some((head, _)) => head.to_string(),
        None => message,
    }
}
