//! The admin HTTP server every node runs beside its gRPC server.
//!
//! - `GET /status`: JSON the lab polls several times a second: who the node is, its role, and
//!   a service-specific `detail` object (a Raft node's term and log indexes, a cache node's
//!   ring...). Must be cheap and must never block on the data path.
//! - `GET /metrics`: Prometheus text exposition of the node's registry.
//! - `GET /healthz`: `ok` while the process serves.

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
