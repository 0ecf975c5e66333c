//! The browser client, served by every server at `/`: the page, and the TypeScript client
//! compiled to JavaScript modules (`web/src` → `web/dist`, committed, so building the server
//! needs no Node.js; `tests/browser.rs` checks the committed modules are what `tsc` makes of
//! the sources).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

const PAGE: &str = include_str!("../web/index.html");

/// The modules the page loads, by file name under `/app/`.
const MODULES: &[(&str, &str)] = &[
    ("client.js", include_str!("../web/dist/client.js")),
    ("causal.js", include_str!("../web/dist/causal.js")),
    ("codec.js", include_str!("../web/dist/codec.js")),
    ("crypt.js", include_str!("../web/dist/crypt.js")),
    ("doc.js", include_str!("../web/dist/doc.js")),
    ("op.js", include_str!("../web/dist/op.js")),
    ("sync.js", include_str!("../web/dist/sync.js")),
];

/// `GET /`: the editor page.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

/// `GET /app/FILE`: one of the client's modules.
pub async fn module(Path(file): Path<String>) -> Response {
    match MODULES.iter().find(|(name, _)| *name == file) {
        Some((_, source)) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *source,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no module {file:?}")).into_response(),
    }
}
