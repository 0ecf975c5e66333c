//! `kv bench`: C closed-loop clients against one node for a fixed time, PUT then GET.
//!
//! Each client sends its next request as soon as the previous one answered, through the real
//! client library (retry policy, idempotency tokens, tracing interceptor): the figures are
//! what an application would see. Latency is measured per request into HDR histograms; the
//! first `--warmup` of each phase is not recorded. One parseable line per figure:
//!
//! `bench=proj0 op=put store=mem clients=32 connections=4 value_bytes=100 seconds=5.000 ops=... ops_per_sec=... p50_us=... p99_us=... p999_us=... errors=0`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use distlab_runtime::BadInput;
use distlab_runtime::bench::{Figure, Op, closed_loop};
use distlab_runtime::launch::NodeProcess;
use distlab_runtime::retry::RetryPolicy;
use prost::bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::process::Command;

use crate::client::{ClientOptions, KvClient};
use crate::node::StoreKind;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Node to load. Without it, a local node is started for the run and stopped after.
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Measured time per phase.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "5s")]
    pub duration: Duration,
    /// Unmeasured time at the start of each phase.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "1s")]
    pub warmup: Duration,
    /// Distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Backend of the node started for the run (ignored with --addr).
    #[arg(long, value_enum, default_value = "mem")]
    pub store: StoreKind,
    /// Worker threads of the node started for the run (its TOKIO_WORKER_THREADS). Client and
    /// node share this machine's cores: one each keeps them from preempting each other.
    #[arg(long, default_value_t = 1)]
    pub node_threads: usize,
    /// Worker threads of the benchmark's own client runtime.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
}

/// How to start a kv node: the program and the arguments before the node flags
/// (`kv serve`, or `lab node kv`).
#[derive(Debug, Clone)]
pub struct NodeCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Runs the benchmark and prints one line per figure; returns the figures.
pub async fn run(args: &BenchArgs, node_command: NodeCommand) -> anyhow::Result<Vec<Figure>> {
    if args.clients == 0
        || args.connections == 0
        || args.keys == 0
        || args.duration.is_zero()
        || args.node_threads == 0
        || args.client_threads == 0
    {
        return Err(BadInput::new(
            "--clients, --connections, --keys, --duration, --node-threads and --client-threads must be greater than zero",
        )
        .into());
    }
    let data_dir = tempfile::tempdir().context("creating a data dir for the benchmark node")?;
    let (addr, mut node, store) = match args.addr {
        Some(addr) => (addr, None, "remote"),
        None => {
            let mut command = Command::new(&node_command.program);
            command
                .env("TOKIO_WORKER_THREADS", args.node_threads.to_string())
                .args(&node_command.args)
                .args([
                    "--id",
                    "bench",
                    "--listen",
                    "127.0.0.1:0",
                    "--admin",
                    "127.0.0.1:0",
                ]);
            let store = match args.store {
                StoreKind::Mem => {
                    command.args(["--store", "mem"]);
                    "mem"
                }
                StoreKind::Sled => {
                    command
                        .args(["--store", "sled", "--data-dir"])
                        .arg(data_dir.path());
                    "sled"
                }
            };
            let node = NodeProcess::spawn(command, Duration::from_secs(30)).await?;
            (node.ready().grpc, Some(node), store)
        }
    };

    // The load runs on a runtime of its own, sized by --client-threads.
    let load_args = args.clone();
    let figures = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(load_args.client_threads)
            .enable_all()
            .build()
            .context("starting the benchmark's client runtime")?
            .block_on(load(&load_args, addr, store))
    })
    .await
    .context("the benchmark's client runtime panicked")??;
    if let Some(node) = node.as_mut() {
        node.terminate(Duration::from_secs(10)).await?;
    }
    Ok(figures)
}

/// The measured part: fills the key space, then a PUT phase and a GET phase; prints a line
/// per figure.
async fn load(args: &BenchArgs, addr: SocketAddr, store: &str) -> anyhow::Result<Vec<Figure>> {
    let clients = (0..args.connections)
        .map(|_| {
            KvClient::connect_lazy(
                addr,
                ClientOptions {
                    policy: RetryPolicy::default(),
                    tls: None,
                },
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let keys: Arc<Vec<Bytes>> = Arc::new(
        (0..args.keys)
            .map(|i| Bytes::from(format!("key-{i:08}")))
            .collect(),
    );
    let value = Bytes::from(vec![b'x'; args.value_size]);

    fill(&clients, &keys, &value, args.clients).await?;
    let mut figures = Vec::new();
    for op in [Op::Put, Op::Get] {
        let figure = phase(op, &clients, &keys, &value, args).await?;
        println!(
            "bench=proj0 op={} store={store} clients={} connections={} node_threads={} client_threads={} value_bytes={} seconds={:.3} ops={} ops_per_sec={:.0} p50_us={} p99_us={} p999_us={} errors={}",
            op.name(),
            args.clients,
            args.connections,
            args.node_threads,
            args.client_threads,
            args.value_size,
            figure.seconds,
            figure.ops,
            figure.ops_per_sec(),
            figure.us_at(0.50),
            figure.us_at(0.99),
            figure.us_at(0.999),
            figure.errors,
        );
        figures.push(figure);
    }
    let (attempts, retries) = clients.iter().fold((0, 0), |(a, r), c| {
        (a + c.metrics().attempts(), r + c.metrics().retries())
    });
    println!("bench=proj0 op=client attempts={attempts} retries={retries}");
    Ok(figures)
}

/// Writes every key once, so the GET phase finds them all.
async fn fill(
    clients: &[KvClient],
    keys: &Arc<Vec<Bytes>>,
    value: &Bytes,
    workers: usize,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..workers {
        let client = clients[worker % clients.len()].clone();
        let keys = keys.clone();
        let value = value.clone();
        tasks.spawn(async move {
            for key in keys.iter().skip(worker).step_by(workers) {
                client.put(key.clone(), value.clone()).await?;
            }
            Ok::<_, tonic::Status>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done?.context("filling the key space before measuring")?;
    }
    Ok(())
}

async fn phase(
    op: Op,
    clients: &[KvClient],
    keys: &Arc<Vec<Bytes>>,
    value: &Bytes,
    args: &BenchArgs,
) -> anyhow::Result<Figure> {
    closed_loop(args.clients, args.warmup, args.duration, |worker| {
        let client = clients[worker % clients.len()].clone();
        let keys = keys.clone();
        let value = value.clone();
        let mut rng = SmallRng::seed_from_u64(worker as u64);
        move || {
            let client = client.clone();
            let key = keys[rng.random_range(0..keys.len())].clone();
            let value = value.clone();
            async move {
                match op {
                    Op::Put => client.put(key, value).await.map(|_| ()),
                    Op::Get => client.get(key).await.map(|_| ()),
                }
            }
        }
    })
    .await
}
