//! The tower layer in front of every gRPC server of every service.
//!
//! One place gives every RPC of every service the same treatment, so no handler has to
//! remember it:
//! - a `rpc` span, continuing the caller's trace when a `traceparent` came with the request
//!   (every log line inside the request then names the trace: see [`crate::telemetry`]);
//! - `rpc_requests_total{method,code}`, `rpc_duration_seconds{method}`, `rpc_in_flight`.
//!
//! The status code of a unary RPC is read from the response headers: tonic sends errors as
//! "trailers-only" responses with `grpc-status` in the headers, and success without it. A
//! request whose future is dropped before it answers (its deadline passed, or the client went
//! away) counts as `CANCELLED`. Streaming RPCs are counted when their response starts.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::trace::TraceContextExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    method: String,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The name of the span every served RPC runs in.
pub const SPAN_NAME: &str = "rpc";

/// Server-side RPC metrics, shared by every clone of the layer.
#[derive(Clone)]
pub struct RpcMetrics {
    requests: Family<CodeLabels, Counter>,
    duration: HistogramFamily,
    in_flight: Gauge,
}

impl RpcMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 50 µs .. ~1.6 s: loopback RPCs live at the bottom, stalls at the top.
                Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
            }),
            in_flight: Gauge::default(),
        };
        registry.register(
            "rpc_requests",
            "gRPC requests served, by method and status code",
            metrics.requests.clone(),
        );
        registry.register(
            "rpc_duration_seconds",
            "gRPC request latency as seen by the server, by method",
            metrics.duration.clone(),
        );
        registry.register(
            "rpc_in_flight",
            "gRPC requests being served now",
            metrics.in_flight.clone(),
        );
        metrics
    }

    /// Takes the method name the request already allocated (one clone for the second label set).
    fn observe(&self, method: String, code: &'static str, started: Instant) {
        self.duration
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        self.requests
            .get_or_create(&CodeLabels { method, code })
            .inc();
    }
}

/// Wraps a tonic server's routes; see the module docs.
#[derive(Clone)]
pub struct RpcLayer {
    metrics: RpcMetrics,
}

impl RpcLayer {
    pub fn new(metrics: RpcMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_string();
        let span = tracing::info_span!(SPAN_NAME, rpc.method = %method, otel.kind = "server");
        if !span.is_disabled() {
            let parent = telemetry::extract(request.headers());
            if parent.span().span_context().is_valid() {
                // Fails only when no OpenTelemetry layer is installed: then there is no trace.
                let _ = span.set_parent(parent);
            }
        }

        // The service that was polled ready is the one to call; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut observation = Observation {
            metrics: self.metrics.clone(),
            method,
            started: Instant::now(),
            finished: false,
        };
        observation.metrics.in_flight.inc();
        Box::pin(
            async move {
                let result = inner.call(request).await;
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or("OK", |n| code_name(tonic::Code::from_i32(n))),
                    Err(_) => "TRANSPORT_ERROR",
                };
                observation.finish(code);
                result
            }
            .instrument(span),
        )
    }
}

/// Records the request when it finishes, or as `CANCELLED` if its future is dropped first.
struct Observation {
    metrics: RpcMetrics,
    method: String,
    started: Instant,
    finished: bool,
}

impl Observation {
    fn finish(&mut self, code: &'static str) {
        self.finished = true;
        tracing::debug!(
            method = %self.method,
            code,
            micros = self.started.elapsed().as_micros() as u64,
            "rpc finished"
        );
        self.metrics
            .observe(std::mem::take(&mut self.method), code, self.started);
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if !self.finished {
            self.metrics
                .observe(std::mem::take(&mut self.method), "CANCELLED", self.started);
        }
        self.metrics.in_flight.dec();
    }
}

/// A refusal a client can tell apart from other errors of the same code: the status with
/// metadata `key: kind` (`log-error: not_leader_or_follower`, `batch-error: bad_job`), the
/// service's own vocabulary, documented in its proto file.
pub fn refusal(
    code: tonic::Code,
    key: &'static str,
    kind: &str,
    message: impl Into<String>,
) -> tonic::Status {
    let mut status = tonic::Status::new(code, message);
    status
        .metadata_mut()
        .insert(key, kind.parse().expect("refusal kinds are ASCII"));
    status
}

/// `INVALID_ARGUMENT: key must not be empty`: a status as a person wants to read it.
pub fn describe(status: &tonic::Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}

/// The canonical upper-case name of a gRPC status code, as the gRPC spec spells it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
