//! distlab's lab: run local clusters of the reference systems, break them, watch.
//!
//! # Layout
//! - [`engine`]: everything without a screen: supervisor, link proxies, status poller,
//!   workloads, histories, scenarios, checkers, reports. The console and `lab scenario` both
//!   drive it through a [`engine::session::Session`].
//! - [`console`]: `lab run PROJ`, the interactive screen on a live cluster.
//! - [`projects`]: one module per project: its cluster, workload, checks and console parts.
//! - [`headless`]: `lab scenario FILE`; [`up`]: `lab up PROJ`; [`check`]: `lab check RUN`.
//! - `main.rs`: the `lab` command line. `lab node <service>` runs one node of any service
//!   linked in; the engine starts its nodes by running this same executable.

pub mod check;
pub mod console;
pub mod engine;
pub mod headless;
pub mod projects;
pub mod up;
