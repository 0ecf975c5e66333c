//! Graceful shutdown: SIGTERM or SIGINT cancels one token that every server of the node waits
//! on. Servers then stop accepting, finish the requests in flight, and the service flushes its
//! stores before the process exits. SIGKILL, by design, gets none of this: that is the fault
//! the lab injects to test durability.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// How long in-flight work may take to finish after a shutdown signal before the node exits
/// anyway (a client holding a stream open must not keep a node alive forever).
pub const GRACE: Duration = Duration::from_secs(10);

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = token.cancelled() => return,
        };
        tracing::info!(
            event = "shutdown_requested",
            signal = name,
            "shutting down gracefully"
        );
        token.cancel();
    });
    Ok(())
}
