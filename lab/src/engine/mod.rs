//! The lab engine: everything the lab does without a screen. The console renders what the
//! engine knows and sends it commands; `lab scenario` drives the same engine headless.
//!
//! Built so far:
//! - [`link`]: the link proxies through which every node-to-node and client-to-node byte
//!   travels, and the faults applied to them.

pub mod link;
