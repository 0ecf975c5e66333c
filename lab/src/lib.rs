//! distlab's lab: run local clusters of the reference systems, break them, watch.
//!
//! # Layout
//! - [`engine`]: everything without a screen (link proxies so far; supervisor, status poller,
//!   workloads, scenarios and checkers come next). The console and `lab scenario` both drive it.
//! - `main.rs`: the `lab` command line. `lab node <service>` runs one node of any service
//!   linked in; the engine starts its nodes by running this same executable.

pub mod check;
pub mod engine;
pub mod headless;
pub mod up;
