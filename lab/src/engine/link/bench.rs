//! `lab bench links`: what a healthy link proxy costs. Targets: it adds < 100 µs to a loopback
//! round trip at p50, and moves >= 500 MB/s. One parseable line per figure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tcp::TcpLinkProxy;
use super::{LinkId, Links};

#[derive(Debug, Clone, clap::Args)]
pub struct LinkBenchArgs {
    /// Round trips to time, each way of connecting.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: u32,
    /// Megabytes to stream through the proxy for the throughput figure.
    #[arg(long, default_value_t = 2048)]
    pub megabytes: u64,
}

pub async fn run(args: &LinkBenchArgs) -> anyhow::Result<()> {
    let echo = echo_server().await?;
    let links = Arc::new(Links::new());
    let proxy = TcpLinkProxy::bind(LinkId::new("bench", "echo"), links.clone(), 0).await?;
    proxy.set_target(echo);

    let direct = round_trips(echo, args.round_trips).await?;
    let proxied = round_trips(proxy.local_addr(), args.round_trips).await?;
    let (d50, p50) = (
        direct.value_at_quantile(0.5),
        proxied.value_at_quantile(0.5),
    );
    println!(
        "bench=links figure=rtt round_trips={} direct_p50_us={d50} proxied_p50_us={p50} added_p50_us={} direct_p99_us={} proxied_p99_us={}",
        args.round_trips,
        p50.saturating_sub(d50),
        direct.value_at_quantile(0.99),
        proxied.value_at_quantile(0.99),
    );

    let sink = sink_server().await?;
    let proxy = TcpLinkProxy::bind(LinkId::new("bench", "sink"), links, 0).await?;
    proxy.set_target(sink);
    let direct = stream(sink, args.megabytes).await?;
    let proxied = stream(proxy.local_addr(), args.megabytes).await?;
    println!(
        "bench=links figure=throughput megabytes={} direct_mb_per_s={direct:.0} proxied_mb_per_s={proxied:.0}",
        args.megabytes
    );
    Ok(())
}

async fn round_trips(addr: SocketAddr, n: u32) -> anyhow::Result<Histogram<u64>> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3)?;
    let msg = [42u8; 64];
    let mut back = [0u8; 64];
    for i in 0..n + n / 10 {
        let started = Instant::now();
        stream.write_all(&msg).await?;
        stream.read_exact(&mut back).await?;
        if i >= n / 10 {
            // the first tenth warms up
            latency.saturating_record(started.elapsed().as_micros() as u64);
        }
    }
    Ok(latency)
}

/// Streams `megabytes` to a sink that counts them; returns MB/s as the sink saw it.
async fn stream(addr: SocketAddr, megabytes: u64) -> anyhow::Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    let chunk = vec![0u8; 256 * 1024];
    let total = megabytes * 1024 * 1024;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        stream.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    stream.shutdown().await?;
    // The sink answers one byte once it has read everything.
    let mut done = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(120), stream.read_exact(&mut done)).await??;
    Ok(sent as f64 / 1e6 / started.elapsed().as_secs_f64())
}

async fn echo_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

async fn sink_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = socket.write_all(&[1]).await;
            });
        }
    });
    Ok(addr)
}
