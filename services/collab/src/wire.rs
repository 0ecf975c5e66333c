//! The client side of the WebSocket transport (editors, and servers dialling servers): dial,
//! carry frames both ways, redial with backoff when the connection ends. Servers accept with axum; both ends carry one [`crate::sync::Frame`]
//! per binary message.

use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::codec::DecodeError;
use crate::sync::Frame;

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

/// What a dialler does with its connections (an editor, a server replicating to another).
pub trait Dialler {
    /// The next `(peer, url)` to dial.
    fn target(&mut self) -> (String, String);
    /// A connection to `peer` opened; frames sent on `tx` go out on it.
    fn opened(&mut self, peer: &str, tx: mpsc::UnboundedSender<Frame>);
    /// A frame arrived (`bytes` long), or bytes that are not one.
    fn received(&mut self, peer: &str, frame: Result<Frame, DecodeError>, bytes: usize);
    /// `bytes` went out.
    fn sent(&mut self, _bytes: usize) {}
    /// The connection to `peer` ended.
    fn closed(&mut self, peer: &str);
}

/// Dials `dialler`'s targets one after the other until one answers, carries frames until the
/// connection ends, and starts again, until `token` is cancelled.
pub async fn dial_forever(mut dialler: impl Dialler, token: CancellationToken) {
    let mut backoff = Backoff::new();
    while !token.is_cancelled() {
        let (peer, url) = dialler.target();
        let dialled = tokio::select! {
            result = dial(&url) => result,
            () = token.cancelled() => return,
        };
        let socket = match dialled {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(event = "dial_failed", %peer, error = %format!("{error:#}"), "no answer");
                tokio::select! {
                    () = tokio::time::sleep(backoff.delay()) => continue,
                    () = token.cancelled() => return,
                }
            }
        };
        backoff.reset();
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        dialler.opened(&peer, tx);
        let (mut sink, mut stream) = socket.split();
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some(frame) = frame else { break };
                    let bytes = frame.encode();
                    dialler.sent(bytes.len());
                    if sink.send(binary(bytes)).await.is_err() {
                        break;
                    }
                }
                message = stream.next() => {
                    let Some(Ok(message)) = message else { break };
                    let Some(bytes) = payload(message) else { continue };
                    dialler.received(&peer, Frame::decode(&bytes), bytes.len());
                }
                () = token.cancelled() => break,
            }
        }
        dialler.closed(&peer);
    }
}
