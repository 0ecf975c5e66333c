//! The relay benchmark's load, for any collaboration server that speaks over WebSocket: our
//! servers (`lab bench proj6 --phases relay`) and, in the peers benchmark, a Yjs server
//! (y-websocket), so both are measured by the same writers, reader, pacing and clock.
//!
//! `writers` clients type single characters at the end of their own text in one document; a
//! reader receives everything. A writer may have at most `window` characters the reader has
//! not yet received (the same back-pressure for every server: not every server acknowledges).
//! Figures: characters per second relayed to the reader, acknowledged as stored where the
//! server acknowledges, and the latency from a writer's send to the reader's receipt (editor
//! to editor through the server), p50 and p99.
//!
//! A [`Protocol`] says how a client of one server introduces itself, types a character and
//! reads what arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::causal::{ReplicaId, VersionVector};
use crate::doc::Doc;
use crate::sync::{Frame, Message};

/// One server's client side, as the benchmark drives it.
pub trait Protocol: Send + Sync + 'static {
    type Writer: Writer;
    type Reader: Reader;
    /// The WebSocket address of the benchmark's document.
    fn url(&self) -> String;
    /// Writer number `w` (from 0).
    fn writer(&self, w: usize) -> Self::Writer;
    fn reader(&self) -> Self::Reader;
}

pub trait Writer: Send + 'static {
    /// Who its characters are by, as the reader reports them.
    fn author(&self) -> u64;
    /// What it sends on connecting.
    fn hello(&mut self) -> Vec<Vec<u8>>;
    /// Types one character at the end: its number among the writer's characters (from 0)
    /// and the message that carries it.
    fn type_one(&mut self) -> anyhow::Result<(u64, Vec<u8>)>;
    /// A message from the server: how many of its characters the server now says it stored,
    /// if it says.
    fn receive(&mut self, bytes: &[u8]) -> anyhow::Result<Option<u64>>;
    /// Whether the server acknowledges storing what it is sent.
    fn acknowledged(&self) -> bool;
}

pub trait Reader: Send + 'static {
    fn hello(&mut self) -> Vec<Vec<u8>>;
    /// A message from the server: the characters newly received, as (author, first, count).
    fn receive(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<(u64, u64, u64)>>;
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub chars: u64,
    pub relayed_per_sec: f64,
    pub acked_per_sec: Option<f64>,
    pub p50: Duration,
    pub p99: Duration,
}

impl Figures {
    /// The benchmark's one parseable line for `server`.
    pub fn line(&self, server: &str, writers: usize, window: u64) -> String {
        format!(
            "bench=proj6 figure=relay server={server} writers={writers} window={window} chars={} relayed_per_sec={:.0} acked_per_sec={} p50_us={} p99_us={}",
            self.chars,
            self.relayed_per_sec,
            self.acked_per_sec
                .map_or("none".into(), |a| format!("{a:.0}")),
            self.p50.as_micros(),
            self.p99.as_micros()
        )
    }
}

type Sent = Arc<Mutex<HashMap<(u64, u64), Instant>>>;
/// Per author, characters the reader has received.
type Received = Arc<Mutex<HashMap<u64, u64>>>;

/// Runs the load against `protocol`'s server.
pub async fn run<P: Protocol>(
    protocol: P,
    writers: usize,
    chars: u64,
    window: u64,
) -> anyhow::Result<Figures> {
    let sent: Sent = Arc::default();
    let received: Received = Arc::default();
    let (progress_tx, progress) = watch::channel(0u64);
    let total = chars * writers as u64;
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let reading = tokio::spawn(read(
        protocol.url(),
        protocol.reader(),
        total,
        sent.clone(),
        received.clone(),
        progress_tx,
        ready_tx,
    ));
    ready.await.context("the reader did not connect")??;
    let started = Instant::now();
    let writing: Vec<_> = (0..writers)
        .map(|w| {
            tokio::spawn(write(
                protocol.url(),
                protocol.writer(w),
                chars,
                window,
                sent.clone(),
                received.clone(),
                progress.clone(),
            ))
        })
        .collect();
    let mut acked = true;
    for w in writing {
        acked &= w.await??;
    }
    let acked_seconds = started.elapsed().as_secs_f64();
    let (mut latencies, finished) = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .context("the reader did not get every character in 60 s")???;
    let relayed_seconds = (finished - started).as_secs_f64();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Ok(Figures {
        chars: total,
        relayed_per_sec: total as f64 / relayed_seconds,
        acked_per_sec: acked.then(|| total as f64 / acked_seconds),
        p50: at(0.5),
        p99: at(0.99),
    })
}

/// One writer; whether the server acknowledged everything it wrote.
async fn write<W: Writer>(
    url: String,
    mut writer: W,
    chars: u64,
    window: u64,
    sent: Sent,
    received: Received,
    mut progress: watch::Receiver<u64>,
) -> anyhow::Result<bool> {
    let (socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let (mut sink, mut stream) = socket.split();
    for hello in writer.hello() {
        sink.send(WsMessage::Binary(hello.into())).await?;
    }
    let author = writer.author();
    let (mut made, mut acked) = (0, 0);
    let mut reader_done = false;
    loop {
        let seen = received.lock().unwrap().get(&author).copied().unwrap_or(0);
        while made < chars && made < seen + window {
            let (n, message) = writer.type_one()?;
            sent.lock().unwrap().insert((author, n), Instant::now());
            sink.send(WsMessage::Binary(message.into())).await?;
            made += 1;
        }
        let relayed = seen == chars;
        if relayed && (!writer.acknowledged() || acked == chars) {
            return Ok(writer.acknowledged());
        }
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else { bail!("the server closed the connection") };
                if let WsMessage::Binary(bytes) = message?
                    && let Some(stored) = writer.receive(&bytes)?
                {
                    acked = acked.max(stored);
                }
            }
            changed = progress.changed(), if !reader_done => reader_done = changed.is_err(),
        }
    }
}

/// The reader: the latency of every character, until it has `total`; when it had them.
async fn read<R: Reader>(
    url: String,
    mut reader: R,
    total: u64,
    sent: Sent,
    received: Received,
    progress: watch::Sender<u64>,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
) -> anyhow::Result<(Vec<Duration>, Instant)> {
    let (socket, _) = match tokio_tungstenite::connect_async(&url).await {
        Ok(connected) => connected,
        Err(error) => {
            let _ = ready.send(Err(anyhow::anyhow!("connecting to {url}: {error}")));
            bail!("the reader could not connect");
        }
    };
    let (mut sink, mut stream) = socket.split();
    for hello in reader.hello() {
        sink.send(WsMessage::Binary(hello.into())).await?;
    }
    // Subscribed once the server has answered something (its hello).
    let first = stream.next().await.context("the server closed at once")??;
    let _ = ready.send(Ok(()));
    let mut latencies = Vec::with_capacity(total as usize);
    let mut message = Some(first);
    loop {
        if let Some(WsMessage::Binary(bytes)) = message.take() {
            let now = Instant::now();
            let arrived = reader.receive(&bytes)?;
            if !arrived.is_empty() {
                let sent = sent.lock().unwrap();
                let mut received = received.lock().unwrap();
                for (author, first, count) in arrived {
                    for n in first..first + count {
                        if let Some(at) = sent.get(&(author, n)) {
                            latencies.push(now - *at);
                        }
                    }
                    *received.entry(author).or_default() += count;
                }
                progress.send_modify(|n| *n += 1);
            }
        }
        if latencies.len() as u64 >= total {
            return Ok((latencies, Instant::now()));
        }
        message = Some(
            stream
                .next()
                .await
                .context("the server closed the reader's connection")??,
        );
    }
}

/// Our servers' clients: the sync protocol, as editors speak it.
pub struct Ours {
    pub url: String,
}

const DOC: &str = "bench";

fn hello(user: &str, replica: ReplicaId) -> Vec<u8> {
    Frame::new(
        DOC,
        Message::Hello {
            user: user.into(),
            token: String::new(),
            replica,
            version: VersionVector::new(),
        },
    )
    .encode()
}

pub struct OurWriter {
    doc: Doc,
}

impl Writer for OurWriter {
    fn author(&self) -> u64 {
        self.doc.replica().0
    }

    fn hello(&mut self) -> Vec<Vec<u8>> {
        vec![hello("writer", self.doc.replica())]
    }

    fn type_one(&mut self) -> anyhow::Result<(u64, Vec<u8>)> {
        let op = self
            .doc
            .insert(self.doc.len(), "x")?
            .expect("one character");
        let frame = Frame::new(DOC, Message::Ops(vec![op.clone()]));
        Ok((op.id.seq, frame.encode()))
    }

    fn receive(&mut self, bytes: &[u8]) -> anyhow::Result<Option<u64>> {
        Ok(match Frame::decode(bytes)?.message {
            Message::Ack { version } => Some(version.get(self.doc.replica())),
            _ => None,
        })
    }

    fn acknowledged(&self) -> bool {
        true
    }
}

pub struct OurReader;

impl Reader for OurReader {
    fn hello(&mut self) -> Vec<Vec<u8>> {
        vec![hello("reader", ReplicaId(u64::MAX))]
    }

    fn receive(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<(u64, u64, u64)>> {
        Ok(match Frame::decode(bytes)?.message {
            Message::Ops(ops) => ops
                .iter()
                .map(|op| (op.id.replica.0, op.id.seq, op.len()))
                .collect(),
            _ => Vec::new(),
        })
    }
}

impl Protocol for Ours {
    type Writer = OurWriter;
    type Reader = OurReader;

    fn url(&self) -> String {
        self.url.clone()
    }

    fn writer(&self, w: usize) -> OurWriter {
        OurWriter {
            doc: Doc::new(ReplicaId(w as u64 + 1)),
        }
    }

    fn reader(&self) -> OurReader {
        OurReader
    }
}
