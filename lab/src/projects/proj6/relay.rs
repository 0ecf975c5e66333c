//! `lab bench proj6 --phases relay`: one real server (`lab node collab --role server`, fsync
//! on), `writers` clients typing into one document as fast as the server acknowledges (at
//! most `window` unacknowledged operations each), and one reader: operations per second
//! acknowledged (stored durably) and relayed, and the latency from a writer's send to the
//! reader's receipt (editor to editor through the server).
//!
//! The clients speak the sync protocol directly (`distlab_collab::sync`), as editors do.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_collab::sync::{Frame, Message};
use distlab_collab::{Doc, Dot, ReplicaId, VersionVector};
use distlab_runtime::launch::NodeProcess;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const DOC: &str = "bench";

type Sent = Arc<Mutex<HashMap<Dot, Instant>>>;

fn hello(user: &str, replica: ReplicaId) -> WsMessage {
    let hello = Message::Hello {
        user: user.into(),
        token: String::new(),
        replica,
        version: VersionVector::new(),
    };
    WsMessage::Binary(Frame::new(DOC, hello).encode().into())
}

/// One writer: `ops` single-character insertions at the end of its own text.
async fn writer(
    url: String,
    replica: ReplicaId,
    ops: u64,
    window: u64,
    sent: Sent,
) -> anyhow::Result<()> {
    let (socket, _) = tokio_tungstenite::connect_async(&url).await?;
    let (mut sink, mut stream) = socket.split();
    sink.send(hello("writer", replica)).await?;
    let mut doc = Doc::new(replica);
    let mut acked = 0;
    let mut made = 0;
    while acked < ops {
        while made < ops && made < acked + window {
            let op = doc.insert(doc.len(), "x")?.expect("one character");
            sent.lock().unwrap().insert(op.id, Instant::now());
            let frame = Frame::new(DOC, Message::Ops(vec![op]));
            sink.send(WsMessage::Binary(frame.encode().into())).await?;
            made += 1;
        }
        let Some(message) = stream.next().await else {
            anyhow::bail!("the server closed the connection");
        };
        if let WsMessage::Binary(bytes) = message?
            && let Message::Ack { version } = Frame::decode(&bytes)?.message
        {
            acked = acked.max(version.get(replica));
        }
    }
    Ok(())
}

/// The reader: the latency of every character it receives, until it has `total`.
async fn reader(url: String, total: u64, sent: Sent) -> anyhow::Result<Vec<Duration>> {
    let (socket, _) = tokio_tungstenite::connect_async(&url).await?;
    let (mut sink, mut stream) = socket.split();
    sink.send(hello("reader", ReplicaId(u64::MAX))).await?;
    let mut latencies = Vec::with_capacity(total as usize);
    while (latencies.len() as u64) < total {
        let Some(message) = stream.next().await else {
            anyhow::bail!("the server closed the connection");
        };
        let WsMessage::Binary(bytes) = message? else {
            continue;
        };
        let Message::Ops(ops) = Frame::decode(&bytes)?.message else {
            continue;
        };
        let now = Instant::now();
        let sent = sent.lock().unwrap();
        for op in ops {
            for i in 0..op.len() {
                if let Some(at) = sent.get(&op.id.plus(i)) {
                    latencies.push(now - *at);
                }
            }
        }
    }
    Ok(latencies)
}

pub fn run(exe: &Path, writers: usize, ops: u64, window: u64) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(["node", "collab", "--role", "server", "--id", "s1"])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("s1"));
        let server = NodeProcess::spawn(command, Duration::from_secs(20))
            .await
            .context("starting the server")?;
        let url = format!("ws://{}/doc", server.ready().grpc);
        let sent: Sent = Arc::default();
        let total = ops * writers as u64;
        let reading = tokio::spawn(reader(url.clone(), total, sent.clone()));
        // The reader's Hello first, so it is a subscriber before anything is written.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let writing: Vec<_> = (0..writers)
            .map(|w| tokio::spawn(writer(url.clone(), ReplicaId(w as u64 + 1), ops, window, sent.clone())))
            .collect();
        for w in writing {
            w.await??;
        }
        let acked_seconds = started.elapsed().as_secs_f64();
        let mut latencies = tokio::time::timeout(Duration::from_secs(60), reading)
            .await
            .context("the reader did not get every operation in 60 s")???;
        let relayed_seconds = started.elapsed().as_secs_f64();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_micros();
        println!(
            "bench=proj6 figure=relay writers={writers} window={window} ops={total} acked_per_sec={:.0} relayed_per_sec={:.0} p50_us={} p99_us={}",
            total as f64 / acked_seconds,
            total as f64 / relayed_seconds,
            at(0.5),
            at(0.99)
        );
        drop(server);
        Ok(())
    })
}
