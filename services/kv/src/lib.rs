//! Project 0: a key-value microservice over gRPC.
//!
//! The warm-up of the learning path: serialization, RPC, deadlines, retries with backoff and
//! jitter, idempotency tokens, tracing, metrics, mTLS. One node, no peers; everything later
//! projects build on.
//!
//! # Layout
//! - [`store`]: the [`store::Store`] trait with two backends (memory, sled); per-key
//!   versions; idempotency tokens stored atomically with the writes they name.
//! - [`server`]: the `kv.v1.Kv` gRPC service: validation and limits, then the store.
//! - [`client`]: the client library: retry policy, deadlines, a token per logical mutation.
//! - [`node`]: `kv serve` / `lab node kv`: flags, wiring, token expiry, shutdown.
//! - [`status`], [`metrics`]: what the lab sees.
//! - [`bench`]: `kv bench`. [`cli`]: the `kv` command.
//!
//! A PUT flows: client (token, attempt timeout) -> runtime RPC layer (span, metrics) ->
//! [`server::KvService::put`] (limits) -> store (value + token in one step) -> persist
//! (flush, with `--sync always`) -> reply. A retry of it finds the token and gets the first
//! reply back without the write being applied again.

pub mod bench;
pub mod cli;
pub mod client;
pub mod metrics;
pub mod node;
pub mod server;
pub mod status;
pub mod store;
