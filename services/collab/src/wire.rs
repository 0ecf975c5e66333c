//! The client side of the WebSocket transport (editors, and servers dialling servers), and the
//! redial backoff they share. Servers accept with axum; both ends carry one [`crate::sync::Frame`]
//! per binary message.

use std::time::Duration;

use anyhow::Context;
use tokio_tungstenite::tungstenite::Message;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a dial may take before it counts as failed (a partitioned link never answers).
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a WebSocket to `url` (`ws://host:port/path`).
pub async fn dial(url: &str) -> anyhow::Result<Socket> {
    let (socket, _) = tokio::time::timeout(DIAL_TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .with_context(|| format!("connecting to {url}: no answer in {DIAL_TIMEOUT:?}"))?
        .with_context(|| format!("connecting to {url}"))?;
    Ok(socket)
}

pub fn binary(bytes: Vec<u8>) -> Message {
    Message::Binary(bytes.into())
}

/// A binary message's bytes; `None` for anything else (pings, text).
pub fn payload(message: Message) -> Option<Vec<u8>> {
    match message {
        Message::Binary(bytes) => Some(bytes.to_vec()),
        _ => None,
    }
}

/// Redial delays: 100 ms doubling to 1 s, reset on success.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
        }
    }

    pub fn delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(1));
        now
    }

    pub fn reset(&mut self) {
        *self = Backoff::new();
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}
