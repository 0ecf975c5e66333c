//! The admin HTTP server every node runs beside its gRPC server.
//!
//! - `GET /status`: JSON the lab polls several times a second: who the node is, its role, and
//!   a service-specific `detail` object (a Raft node's term and log indexes, a cache node's
//!   ring...). Must be cheap and must never block on the data path.
//! - `GET /metrics`: Prometheus text exposition of the node's registry.
//! - `GET /healthz`: `ok` while the process serves.
//! - `GET /`: the admin page, HTML for a person with a browser: who the node is, then the
//!   service's own page ([`NodeStatus::page`]) or, by default, its status detail; it reloads
//!   itself every two seconds.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::cli::NodeId;

/// What a service tells the lab about itself. Implementations read in-memory state only.
pub trait NodeStatus: Send + Sync + 'static {
    /// The node's current role: `server`, `leader`, `follower`, `broker`...
    fn role(&self) -> String;
    /// Service-specific state for the lab's views.
    fn detail(&self) -> serde_json::Value;
    /// The body of the admin page (HTML; escape what came from outside with [`escape`]).
    /// `None`: the page shows the status detail as JSON.
    fn page(&self) -> Option<String> {
        None
    }
}

/// Text made safe to put in HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who a node is, fixed at start.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub id: NodeId,
    /// The learning-path project this node belongs to (`proj0`, `proj2`...).
    pub project: &'static str,
    /// The service name (`kv`, `raftkv`...).
    pub service: &'static str,
    pub started: Instant,
}

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub id: NodeId,
    pub project: &'static str,
    pub service: &'static str,
    pub role: String,
    pub pid: u32,
    pub uptime_secs: f64,
    pub version: &'static str,
    pub detail: serde_json::Value,
}

#[derive(Clone)]
struct AdminState {
    identity: NodeIdentity,
    status: Arc<dyn NodeStatus>,
    registry: Arc<Registry>,
}

/// The admin routes, ready to serve.
pub fn router(
    identity: NodeIdentity,
    status: Arc<dyn NodeStatus>,
    registry: Arc<Registry>,
) -> axum::Router {
    axum::Router::new()
        .route("/status", get(status_handler))
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/", get(page_handler))
        .with_state(AdminState {
            identity,
            status,
            registry,
        })
}

async fn status_handler(State(state): State<AdminState>) -> axum::Json<StatusReport> {
    let identity = &state.identity;
    axum::Json(StatusReport {
        id: identity.id.clone(),
        project: identity.project,
        service: identity.service,
        role: state.status.role(),
        pid: std::process::id(),
        uptime_secs: identity.started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION"),
        detail: state.status.detail(),
    })
}

async fn page_handler(State(state): State<AdminState>) -> axum::response::Html<String> {
    let identity = &state.identity;
    let body = state.status.page().unwrap_or_else(|| {
        let detail = serde_json::to_string_pretty(&state.status.detail()).unwrap_or_default();
        format!("<h2>status detail</h2><pre>{}</pre>", escape(&detail))
    });
    let title = format!(
        "{} · {} ({})",
        identity.id, identity.service, identity.project
    );
    axum::response::Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <h1>{title}</h1><p class=\"dim\">role {role} · pid {pid} · up {up:.0} s · \
         <a href=\"/status\">/status</a> · <a href=\"/metrics\">/metrics</a></p>{body}</body></html>",
        title = escape(&title),
        role = escape(&state.status.role()),
        pid = std::process::id(),
        up = identity.started.elapsed().as_secs_f64(),
    ))
}

/// The admin pages' look: plain, readable, no scripts.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
    table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:.2em .8em;text-align:left;\
    border-bottom:1px solid #ddd}th{color:#666;font-weight:normal}.dim{color:#777}\
    .bar{display:inline-block;height:.8em;background:#4a90d9}.dead{color:#c00;font-weight:bold}\
    .suspect{color:#b80}.alive{color:#080}pre{background:#f6f6f6;padding:1em}";

async fn metrics_handler(State(state): State<AdminState>) -> impl IntoResponse {
    let mut body = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut body, &state.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}
