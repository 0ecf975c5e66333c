//! Logs and traces.
//!
//! - Logs: `tracing` events as one JSON object per line on stdout (nodes, so the lab can parse
//!   and show them) or human-readable on stderr (CLIs). Level from `RUST_LOG`.
//!   State changes worth a place on the lab's timeline carry a stable `event` field
//!   (`event = "became_leader"`), which is how the lab recognises them.
//! - Traces: every `tracing` span is also an OpenTelemetry span, so it has a trace id even
//!   when nothing is exported. Spans are exported over OTLP/HTTP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (for example `http://127.0.0.1:4318`), otherwise they
//!   live only in the logs: every JSON line logged inside a span carries that span's
//!   `trace_id` (looked up when the line is written), and lists the spans it happened in.
//! - Propagation: W3C `traceparent` in gRPC metadata. Clients inject it with
//!   [`PropagateTrace`]; servers continue the caller's trace in [`crate::rpc::RpcLayer`].

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::dispatcher::WeakDispatch;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// One JSON object per line on stdout: what nodes do.
    JsonStdout,
    /// Human-readable lines on stderr, so stdout stays free for a command's output.
    HumanStderr,
}

/// Keeps the tracer provider alive; dropping it flushes spans not yet exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Nothing useful to do if the collector is gone at exit.
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber. Call once, before starting the tokio runtime (the OTLP
/// exporter runs on its own thread with its own blocking HTTP client).
/// `default_filter` applies when `RUST_LOG` is unset (e.g. `"info"`, `"warn"`).
pub fn init(
    service: &str,
    instance: &str,
    output: LogOutput,
    default_filter: &str,
) -> anyhow::Result<Telemetry> {
    let resource = Resource::builder()
        .with_service_name(format!("distlab-{service}"))
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance.to_string(),
        ))
        .build();
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty());
    // Spans nobody exports are not sampled: they still get trace and span ids (for
    // propagation and the logs) but record nothing, which keeps a traced RPC cheap.
    let sampler = if exporting {
        Sampler::AlwaysOn
    } else {
        Sampler::AlwaysOff
    };
    let mut provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler);
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| {
                anyhow::anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the OTLP exporter: {e}")
            })?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer("distlab");

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = match output {
        LogOutput::JsonStdout => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .event_format(JsonWithTraceId(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true),
            ))
            .with_writer(std::io::stdout)
            // The log layer never sees `rpc` spans: formatting their fields for every request
            // costs a fifth of a node's throughput, and lines inside a request still name its
            // trace (the trace id comes from the OpenTelemetry layer, which does see them).
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                !(meta.is_span() && meta.name() == crate::rpc::SPAN_NAME)
            }))
            .boxed(),
        LogOutput::HumanStderr => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(
            // Only what a trace viewer needs; the defaults add per-poll timing, thread and
            // source-location attributes that cost more than the RPC they describe.
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false),
        )
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    // The formatter needs the dispatcher to look up trace ids while it is dispatching.
    let _ = DISPATCH.set(tracing::dispatcher::get_default(|d| d.downgrade()));
    if exporting {
        tracing::info!(event = "otlp_export", "exporting spans over OTLP");
    }
    Ok(Telemetry { provider })
}

static DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// The JSON line format, with the trace id of the span a line was logged in as a top-level
/// `trace_id` field. Looked up when a line is written, not recorded on every span: a traced
/// RPC that logs nothing costs no trace-id formatting at all.
struct JsonWithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for JsonWithTraceId<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let rewrite = rewrite_for(event.metadata().target());
        let trace_id = event_trace_id(ctx, event);
        if trace_id.is_none() && rewrite.is_none() {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        if let Some(rewrite) = rewrite
            && !rewrite(&mut line)
        {
            return Ok(()); // dropped: nothing is written, not even the newline
        }
        match (trace_id, line.strip_prefix('{')) {
            (Some(trace_id), Some(rest)) => {
                write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}")
            }
            _ => writer.write_str(&line),
        }
    }
}

/// Rewrites a JSON log line in place; `false` drops it.
pub type Rewrite = Box<dyn Fn(&mut String) -> bool + Send + Sync>;

static REWRITES: std::sync::RwLock<Vec<(&'static str, std::sync::Arc<Rewrite>)>> =
    std::sync::RwLock::new(Vec::new());

/// Rewrites the JSON lines of events whose target starts with `target` before they are
/// written (a library's own log, whose words and levels are not ours: openraft logs an
/// ordinary election's vote timeouts as ERROR and names nodes by 18-digit numbers). The
/// rewrite may change the line ([`relevel`] its level, name what it numbers) or drop it.
pub fn rewrite_lines(target: &'static str, rewrite: Rewrite) {
    REWRITES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push((target, std::sync::Arc::new(rewrite)));
    ANY_REWRITE.store(true, std::sync::atomic::Ordering::Release);
}

/// Whether any rewrite was registered: every log line of every node asks, and almost none has
/// one, so the common answer costs an atomic load rather than a lock.
static ANY_REWRITE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn rewrite_for(target: &str) -> Option<std::sync::Arc<Rewrite>> {
    if !ANY_REWRITE.load(std::sync::atomic::Ordering::Acquire) {
        return None;
    }
    let rewrites = REWRITES.read().unwrap_or_else(|e| e.into_inner());
    rewrites
        .iter()
        .find(|(prefix, _)| target.starts_with(prefix))
        .map(|(_, rewrite)| rewrite.clone())
}

/// Sets a JSON log line's `level` field to `level`.
pub fn relevel(line: &mut String, level: tracing::Level) {
    for from in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] {
        let field = format!("\"level\":\"{from}\"");
        if let Some(at) = line.find(&field) {
            line.replace_range(at..at + field.len(), &format!("\"level\":\"{level}\""));
            return;
        }
    }
}

fn event_trace_id<S, N>(ctx: &FmtContext<'_, S, N>, event: &tracing::Event<'_>) -> Option<String>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    // Ask the dispatcher, not `ctx`: the log layer's own view of the scope leaves out the
    // spans it filters (`rpc`), which are the ones that carry the caller's trace.
    let _ = ctx;
    let dispatch = DISPATCH.get()?.upgrade()?;
    let span = match event.parent() {
        Some(parent) => parent.clone(),
        None if event.is_contextual() => dispatch.current_span().id()?.clone(),
        None => return None,
    };
    let cx = tracing_opentelemetry::get_otel_context(&span, &dispatch)?;
    let span_cx = cx.span().span_context().clone();
    span_cx.is_valid().then(|| span_cx.trace_id().to_string())
}

/// The trace id of `span` as 32 hex digits, if it belongs to a trace (it does whenever
/// [`init`] ran and the span is enabled).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_cx = cx.span().span_context().clone();
    span_cx.is_valid().then(|| span_cx.trace_id().to_string())
}

/// Writes the current span's `traceparent` into outgoing gRPC metadata.
pub fn inject_current(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// Reads a caller's trace context from incoming HTTP/2 headers (empty if there is none).
pub fn extract(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// A tonic interceptor for clients: every request carries the caller's `traceparent`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateTrace;

impl tonic::service::Interceptor for PropagateTrace {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current(request.metadata_mut());
        Ok(request)
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_survives_inject_then_extract() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", header.parse().unwrap());
        let cx = extract(&headers);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut metadata = MetadataMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").unwrap().to_str().unwrap(),
            header
        );
    }

    #[test]
    fn no_caller_context_means_nothing_injected() {
        let mut metadata = MetadataMap::new();
        inject_current(&mut metadata);
        assert!(metadata.get("traceparent").is_none());
    }
}
