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
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_runtime::BadInput;
use distlab_runtime::launch::NodeProcess;
use distlab_runtime::retry::RetryPolicy;
use hdrhistogram::Histogram;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
        }
    }
}

/// One measured phase.
pub struct Figure {
    pub op: &'static str,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub latency_us: Histogram<u64>,
}

impl Figure {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
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
        let figure = phase(op, &clients, &keys, &value, args).await;
        println!(
            "bench=proj0 op={} store={store} clients={} connections={} node_threads={} client_threads={} value_bytes={} seconds={:.3} ops={} ops_per_sec={:.0} p50_us={} p99_us={} p999_us={} errors={}",
            figure.op,
            args.clients,
            args.connections,
            args.node_threads,
            args.client_threads,
            args.value_size,
            figure.seconds,
            figure.ops,
            figure.ops_per_sec(),
            figure.latency_us.value_at_quantile(0.50),
            figure.latency_us.value_at_quantile(0.99),
            figure.latency_us.value_at_quantile(0.999),
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
) -> Figure {
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let stop_at = measure_from + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..args.clients {
        let client = clients[worker % clients.len()].clone();
        let keys = keys.clone();
        let value = value.clone();
        tasks.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(worker as u64);
            let mut latency = new_histogram();
            let (mut ops, mut errors) = (0u64, 0u64);
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let key = keys[rng.random_range(0..keys.len())].clone();
                let ok = match op {
                    Op::Put => client.put(key, value.clone()).await.is_ok(),
                    Op::Get => client.get(key).await.is_ok(),
                };
                if sent >= measure_from {
                    if ok {
                        ops += 1;
                        latency.saturating_record(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (ops, errors, latency)
        });
    }
    let mut figure = Figure {
        op: op.name(),
        ops: 0,
        errors: 0,
        seconds: args.duration.as_secs_f64(),
        latency_us: new_histogram(),
    };
    while let Some(done) = tasks.join_next().await {
        let (ops, errors, latency) = done.expect("a bench client panicked");
        figure.ops += ops;
        figure.errors += errors;
        figure
            .latency_us
            .add(latency)
            .expect("histograms have the same bounds");
    }
    figure
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}
