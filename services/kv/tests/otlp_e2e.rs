//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, a node exports its spans over OTLP/HTTP. A fake
//! collector on loopback receives them; a graceful shutdown flushes what is still batched.

mod support;

use std::time::Duration;

use support::{client, start_with_env};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Accepts HTTP/1.1 requests and answers 200 to each; returns (request line, body) pairs.
async fn collect(listener: TcpListener, tx: tokio::sync::mpsc::UnboundedSender<(String, Vec<u8>)>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                // Read the head, then Content-Length bytes of body.
                let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                if let Some(end) = head_end {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        let body = buf[end + 4..end + 4 + length].to_vec();
                        let _ = tx.send((head.lines().next().unwrap_or("").to_string(), body));
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        buf.drain(..end + 4 + length);
                        continue;
                    }
                }
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}

#[tokio::test]
async fn spans_are_exported_to_the_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(collect(listener, tx));

    let mut node = start_with_env(
        &["--id", "n1"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    )
    .await;
    client(&node).put("k", "v").await.unwrap();
    assert!(
        node.terminate(Duration::from_secs(10))
            .await
            .unwrap()
            .success()
    );

    let (request_line, body) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the collector got an export")
        .unwrap();
    assert!(
        request_line.starts_with("POST /v1/traces"),
        "{request_line}"
    );
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("distlab-kv"),
        "the resource names the service"
    );
    assert!(
        body.contains("kv.v1.Kv/Put"),
        "the rpc span is in the export"
    );
}
