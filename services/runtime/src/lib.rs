//! The node runtime every distlab service shares.
//!
//! A distlab node is one OS process started as
//! `lab node <service> --id n1 --listen 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir D --peer n2=ADDR`.
//! Every service honours the same contract, and this crate is where that contract lives, so the
//! lab can drive any of them the same way.
//!
//! # Layout
//! - [`cli`]: the flags every node takes ([`cli::NodeArgs`]) and their validation. Bad flags
//!   exit with code 2 before anything binds or writes ([`BadInput`]).
//! - [`node`]: binds the gRPC and admin listeners (port 0 works), prints the [`ready`] line,
//!   serves until SIGTERM/SIGINT, then drains in-flight requests ([`shutdown`]).
//! - [`admin`]: the admin HTTP server: `/status` (with a service-specific `detail`),
//!   `/metrics` (Prometheus text), `/healthz`.
//! - [`telemetry`]: JSON logs on stdout, OpenTelemetry spans (exported over OTLP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set), W3C `traceparent` propagation through gRPC metadata.
//! - [`rpc`]: the tower layer every gRPC server gets: a span per RPC (joined to the caller's
//!   trace), and request counts and latency by method and status code.
//! - [`retry`]: the client-side retry policy (exponential backoff with full jitter, attempt
//!   timeouts, overall deadline) every client library uses.
//! - [`tls`]: mTLS configuration from PEM files, and throwaway certificates for trying it.
//! - [`clock`]: the wall clock records are stamped with, and [`clock::Every`], the beat of
//!   the services' periodic background tasks.
//! - [`flusher`]: group commit for a sled database: one thread flushes for every waiter
//!   (Raft's log, the bank's participants and decision log).
//! - [`launch`]: starting a node as a child process and waiting for its ready line (used by
//!   the lab, benchmarks and end-to-end tests).
//!
//! A request flows: socket -> (TLS) -> [`rpc::RpcLayer`] (span, metrics) -> the service's tonic
//! handler -> response; the admin server reads the same metrics registry and the service's
//! [`admin::NodeStatus`].

pub mod admin;
pub mod bench;
pub mod channel;
pub mod cli;
pub mod clock;
pub mod duration;
pub mod flusher;
pub mod hash;
pub mod launch;
pub mod node;
pub mod ready;
pub mod retry;
pub mod rpc;
pub mod shutdown;
pub mod size;
pub mod telemetry;
pub mod tls;

/// Input a user got wrong (a flag, a file, an argument): the process reports it and exits with
/// code 2, the convention for usage errors. Anything else that fails exits with code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

impl BadInput {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
