//! `lab bench proj1`: the cache against stock memcached, a 5-node cluster under load, failure
//! detection time, and SWIM under packet loss.
//!
//! - `memcached`: one distlab cache node and one stock `memcached` (Debian's, if installed),
//!   each driven over the memcached text protocol by the same closed-loop tool (this one:
//!   `--connections` connections, one request at a time each, `--reads` gets and the rest
//!   sets over `--keys` keys loaded first), then by `memcslap` (libmemcached's load tool, a
//!   third-party client) if installed. Prints both and the ratio (target >= 0.5x).
//! - `cluster`: 5 nodes, N=3 W=2 R=2, through the lab's link proxies (as `lab run` has them);
//!   the same load spread over every node's memcached port; then through the client library
//!   over gRPC, a plain client (the node it talks to forwards) and a routing client (each key
//!   straight to a replica, by the ring it learns by gossip).
//! - `detection`: SIGKILL a node `--kills` times (restarting it between); from the kill to
//!   every other node reporting it `dead`. Median and max (target: median < 2 s).
//! - `loss`: `--loss-for` of 5% loss on every link between nodes: members declared dead
//!   (target 0), suspicions, and suspicions found false.
//!
//! One line per figure, `key=value` pairs, e.g.
//! `bench=proj1 system=distlab tool=lab nodes=1 connections=32 reads=0.90 value_bytes=100 seconds=5.000 ops=... ops_per_sec=... p50_us=... p99_us=... errors=0`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_cache::client::{CacheClient, Routing};
use distlab_cache::placement::PlacementKind;
use distlab_runtime::bench::{Figure, closed_loop};
use distlab_runtime::launch::{LaunchOptions, NodeProcess};
use distlab_runtime::retry::RetryPolicy;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::sync::Mutex;

use crate::engine::model::fetch_statuses;
use crate::engine::project::{self, ClusterSpec};
use crate::engine::supervisor::Supervisor;

#[derive(Debug, Clone, clap::Args)]
pub struct Proj1BenchArgs {
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "memcached,cluster,detection,loss"
    )]
    pub phases: Vec<Phase>,
    /// Connections, each one request at a time.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Share of gets; the rest are sets.
    #[arg(long, default_value_t = 0.9)]
    pub reads: f64,
    /// Distinct keys, all set before the measured load.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Measured time per figure.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "5s")]
    pub duration: Duration,
    /// Unmeasured time before each figure.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "1s")]
    pub warmup: Duration,
    /// Node kills in the detection phase.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// How long the loss phase keeps 5% loss on.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "30s")]
    pub loss_for: Duration,
    /// The memcached program (Debian: `apt-get install memcached`).
    #[arg(long, default_value = "memcached")]
    pub memcached: PathBuf,
    /// libmemcached's load tool (Debian: `apt-get install libmemcached-tools`).
    #[arg(long, default_value = "memcslap")]
    pub memcslap: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Memcached,
    Cluster,
    Detection,
    Loss,
}

/// The cluster phases' size.
const CLUSTER_NODES: usize = 5;

pub async fn run(args: &Proj1BenchArgs, exe: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.connections > 0
            && args.keys > 0
            && args.value_size > 0
            && (0.0..=1.0).contains(&args.reads)
            && !args.duration.is_zero(),
        distlab_runtime::BadInput::new(
            "--connections, --keys, --value-size and --duration must be above zero, --reads between 0 and 1"
        )
    );
    let work = tempfile::Builder::new()
        .prefix("distlab-bench-proj1-")
        .tempdir()
        .context("creating a scratch directory")?;
    let bench = Bench {
        args,
        exe,
        work: work.path().to_path_buf(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .context("building an HTTP client")?,
    };
    let has = |phase| args.phases.contains(&phase);
    if has(Phase::Memcached) {
        bench.memcached().await?;
    }
    if has(Phase::Cluster) || has(Phase::Detection) || has(Phase::Loss) {
        let supervisor = bench.cluster().await?;
        if has(Phase::Cluster) {
            bench.cluster_load(&supervisor).await?;
        }
        if has(Phase::Detection) {
            bench.detection(&supervisor).await?;
        }
        if has(Phase::Loss) {
            bench.loss(&supervisor).await?;
        }
        supervisor.stop_all().await;
    }
    Ok(())
}

struct Bench<'a> {
    args: &'a Proj1BenchArgs,
    exe: PathBuf,
    work: PathBuf,
    /// For the nodes' `/status` (one client: its connections are kept).
    http: reqwest::Client,
}

/// A figure's line.
fn line(figure: &Figure, labels: &str) -> String {
    format!(
        "bench=proj1 {labels} seconds={:.3} ops={} ops_per_sec={:.0} p50_us={} p99_us={} errors={}",
        figure.seconds,
        figure.ops,
        figure.ops_per_sec(),
        figure.us_at(0.5),
        figure.us_at(0.99),
        figure.errors
    )
}

impl Bench<'_> {
    fn labels(&self, system: &str, nodes: usize) -> String {
        format!(
            "system={system} tool=lab nodes={nodes} connections={} reads={:.2} value_bytes={}",
            self.args.connections, self.args.reads, self.args.value_size
        )
    }

    async fn memcached(&self) -> anyhow::Result<()> {
        let node = self.single_node().await?;
        let ours_addr: SocketAddr = node.ready().extra["memcached"]
            .as_str()
            .context("the node's ready line has no memcached address")?
            .parse()?;
        let ours = self.load(&[ours_addr]).await?;
        println!("{}", line(&ours, &self.labels("distlab", 1)));
        let theirs = match self.stock_memcached().await? {
            Some((child, addr)) => {
                let figure = self.load(&[addr]).await?;
                println!("{}", line(&figure, &self.labels("memcached", 1)));
                Some((child, addr, figure))
            }
            None => None,
        };
        if let Some((_, _, figure)) = &theirs {
            println!(
                "bench=proj1 figure=throughput_vs_memcached tool=lab ratio={:.2} target=0.50 p99_ratio={:.2}",
                ours.ops_per_sec() / figure.ops_per_sec().max(1.0),
                ours.us_at(0.99) as f64 / figure.us_at(0.99).max(1) as f64
            );
        }
        // The third-party client, against both.
        let mut slap = Vec::new();
        for (system, addr) in std::iter::once(("distlab", ours_addr))
            .chain(theirs.as_ref().map(|(_, addr, _)| ("memcached", *addr)))
        {
            for test in ["get", "set"] {
                match self.memcslap(addr, test).await? {
                    Some(ops_per_sec) => {
                        println!(
                            "bench=proj1 system={system} tool=memcslap test={test} concurrency={} ops_per_sec={ops_per_sec:.0}",
                            self.args.connections
                        );
                        slap.push((system, test, ops_per_sec));
                    }
                    None => break,
                }
            }
        }
        for test in ["get", "set"] {
            let of = |system| {
                slap.iter()
                    .find(|(s, t, _)| *s == system && *t == test)
                    .map(|r| r.2)
            };
            if let (Some(ours), Some(theirs)) = (of("distlab"), of("memcached")) {
                println!(
                    "bench=proj1 figure=throughput_vs_memcached tool=memcslap test={test} ratio={:.2} target=0.50",
                    ours / theirs.max(1.0)
                );
            }
        }
        Ok(())
    }

    /// One cache node on its own (N=3 W=2 R=2 over one member: every write and read is local).
    async fn single_node(&self) -> anyhow::Result<NodeProcess> {
        let dir = self.work.join("single");
        let mut command = Command::new(&self.exe);
        command
            .args(["node", "cache", "--id", "n1", "--listen", "127.0.0.1:0"])
            .args(["--admin", "127.0.0.1:0", "--memcached", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&dir);
        NodeProcess::spawn_with(
            command,
            LaunchOptions {
                log_file: Some(self.work.join("single.log")),
                ..LaunchOptions::default()
            },
        )
        .await
        .context("starting a cache node")
    }

    /// Starts the stock memcached on a free port; `None` (with a message) if it is not here.
    async fn stock_memcached(&self) -> anyhow::Result<Option<(tokio::process::Child, SocketAddr)>> {
        let addr = distlab_runtime::launch::free_ports(1)?[0];
        let mut command = Command::new(&self.args.memcached);
        command
            .args(["-l", "127.0.0.1", "-U", "0", "-m", "64", "-c", "1024", "-p"])
            .arg(addr.port().to_string());
        if nix::unistd::geteuid().is_root() {
            // memcached refuses to run as root without a user to switch to.
            command.args(["-u", "nobody"]);
        }
        let child = match distlab_runtime::launch::spawn_program(
            command,
            &self.work.join("memcached.log"),
        ) {
            Ok(child) => child,
            Err(e) => {
                println!(
                    "# memcached is not installed ({e:#}): `apt-get install memcached` for the comparison"
                );
                return Ok(None);
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).await.is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "memcached did not listen on {addr} within 10 s (see {})",
                self.work.join("memcached.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Some((child, addr)))
    }

    /// The closed-loop mix over the servers at `addrs` (connection i to server i mod n), every
    /// key set first.
    async fn load(&self, addrs: &[SocketAddr]) -> anyhow::Result<Figure> {
        let value = vec![b'x'; self.args.value_size];
        let mut loader = Connection::open(addrs[0]).await?;
        for k in 0..self.args.keys {
            loader.set(&key(k), &value).await?;
        }
        let mut connections = Vec::new();
        for i in 0..self.args.connections {
            let connection = Connection::open(addrs[i % addrs.len()]).await?;
            connections.push(Arc::new(Mutex::new(connection)));
        }
        let (keys, reads) = (self.args.keys, self.args.reads);
        closed_loop(
            self.args.connections,
            self.args.warmup,
            self.args.duration,
            |i| {
                let connection = connections[i].clone();
                let value = value.clone();
                let rng = Arc::new(std::sync::Mutex::new(SmallRng::seed_from_u64(i as u64)));
                move || {
                    let (connection, value, rng) = (connection.clone(), value.clone(), rng.clone());
                    async move {
                        let (k, read) = next_op(&rng, keys, reads);
                        let mut connection = connection.lock().await;
                        if read {
                            connection.get(&key(k)).await.map(|_| ())
                        } else {
                            connection.set(&key(k), &value).await
                        }
                    }
                }
            },
        )
        .await
    }

    /// memcslap's `test` (get or set) against `addr`: ops/s, or `None` (with a message) if it
    /// is not installed.
    async fn memcslap(&self, addr: SocketAddr, test: &str) -> anyhow::Result<Option<f64>> {
        let output = Command::new(&self.args.memcslap)
            .arg(format!("--servers={addr}"))
            .arg(format!("--concurrency={}", self.args.connections))
            .arg("--execute-number=10000")
            .arg(format!("--test={test}"))
            .kill_on_drop(true)
            .output()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                println!(
                    "# memcslap is not installed ({e}): `apt-get install libmemcached-tools` for the third-party figures"
                );
                return Ok(None);
            }
        };
        let text = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        parse_memcslap(&text, test).map(Some).with_context(|| {
            format!("memcslap --test={test} against {addr} did not report a time:\n{text}")
        })
    }

    /// A 5-node cluster through the lab's link proxies, every member seeing all others.
    async fn cluster(&self) -> anyhow::Result<Supervisor> {
        let project = project::find("proj1").map_err(distlab_runtime::BadInput)?;
        let spec = ClusterSpec::new(project, CLUSTER_NODES, 1);
        let supervisor = Supervisor::new(spec, &self.work, self.exe.clone()).await?;
        supervisor.start_all().await?;
        self.until(
            &supervisor,
            "every member sees five live",
            Duration::from_secs(20),
            |d| d["live_members"].as_u64() == Some(CLUSTER_NODES as u64),
        )
        .await?;
        Ok(supervisor)
    }

    async fn cluster_load(&self, supervisor: &Supervisor) -> anyhow::Result<()> {
        let mut addrs = Vec::new();
        for status in self.statuses(supervisor).await.into_values() {
            let addr = status["detail"]["config"]["memcached"]
                .as_str()
                .context("a node's status has no memcached address")?;
            addrs.push(addr.parse()?);
        }
        let figure = self.load(&addrs).await?;
        println!(
            "{} replicas=3 write_quorum=2 read_quorum=2 proxies=on",
            line(&figure, &self.labels("distlab", CLUSTER_NODES))
        );
        // The client library over gRPC: a plain client lets the node it talks to forward; a
        // routing client sends each key to a replica itself.
        let nodes: Vec<(String, SocketAddr)> = supervisor
            .nodes()
            .await
            .into_iter()
            .map(|node| (node.id, node.client))
            .collect();
        let policy = RetryPolicy::default();
        let plain = CacheClient::connect_lazy(&nodes, policy.clone())?;
        let routing = Routing {
            replicas: 3,
            placement: PlacementKind::parse("ring", PlacementKind::DEFAULT_VNODES)
                .map_err(anyhow::Error::msg)?,
            watch_every: Duration::from_millis(200),
        };
        let router = CacheClient::routing(&nodes, policy, routing).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while router
            .ring()
            .is_some_and(|r| r.members().len() < CLUSTER_NODES)
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the routing client did not learn the ring within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (name, client) in [("plain", plain), ("routing", router)] {
            let figure = self.client_load(&client).await?;
            let labels = format!(
                "system=distlab tool=client client={name} nodes={CLUSTER_NODES} clients={} reads={:.2} value_bytes={}",
                self.args.connections, self.args.reads, self.args.value_size
            );
            let (routed, unrouted) = client.routed();
            println!(
                "{} replicas=3 write_quorum=2 read_quorum=2 proxies=on routed_attempts={routed} unrouted_attempts={unrouted}",
                line(&figure, &labels)
            );
        }
        Ok(())
    }

    /// The closed-loop mix through the client library (`connections` clients, each starting
    /// at a different node), every key set first.
    async fn client_load(&self, shared: &CacheClient) -> anyhow::Result<Figure> {
        let value = vec![b'x'; self.args.value_size];
        for k in 0..self.args.keys {
            shared.set(key(k), value.clone(), None).await?;
        }
        let (keys, reads) = (self.args.keys, self.args.reads);
        closed_loop(
            self.args.connections,
            self.args.warmup,
            self.args.duration,
            |i| {
                let client = shared.starting_at(i);
                let value = value.clone();
                let rng = Arc::new(std::sync::Mutex::new(SmallRng::seed_from_u64(i as u64)));
                move || {
                    let (client, value, rng) = (client.clone(), value.clone(), rng.clone());
                    async move {
                        let (k, read) = next_op(&rng, keys, reads);
                        if read {
                            client.get(key(k)).await.map(|_| ())
                        } else {
                            client.set(key(k), value, None).await
                        }
                    }
                }
            },
        )
        .await
    }

    async fn detection(&self, supervisor: &Supervisor) -> anyhow::Result<()> {
        let ids = supervisor.ids();
        let mut times = Vec::new();
        for k in 0..self.args.kills {
            let victim = ids[1 + k % (ids.len() - 1)].clone();
            let killed = Instant::now();
            supervisor.kill(&victim).await?;
            self.until(
                supervisor,
                &format!("{victim} dead everywhere"),
                Duration::from_secs(20),
                |d| d["members"][&victim]["state"] == "dead",
            )
            .await?;
            let took = killed.elapsed();
            println!(
                "bench=proj1 figure=detection kill={} node={victim} ms={}",
                k + 1,
                took.as_millis()
            );
            times.push(took);
            supervisor.start(&victim).await?;
            self.until(
                supervisor,
                &format!("{victim} back everywhere"),
                Duration::from_secs(20),
                |d| d["live_members"].as_u64() == Some(ids.len() as u64),
            )
            .await?;
        }
        times.sort();
        if let (Some(median), Some(max)) = (times.get(times.len() / 2), times.last()) {
            println!(
                "bench=proj1 figure=detection_summary nodes={} kills={} median_ms={} max_ms={} target_median_ms=2000",
                ids.len(),
                times.len(),
                median.as_millis(),
                max.as_millis()
            );
        }
        Ok(())
    }

    async fn loss(&self, supervisor: &Supervisor) -> anyhow::Result<()> {
        let counts = |all: &BTreeMap<String, Value>, what: &str| -> u64 {
            all.values()
                .map(|s| s["detail"]["counts"][what].as_u64().unwrap_or(0))
                .sum()
        };
        let before = self.statuses(supervisor).await;
        supervisor.link("*->*", "loss 5%")?;
        tokio::time::sleep(self.args.loss_for).await;
        let after = self.statuses(supervisor).await;
        supervisor.heal();
        let delta = |what| counts(&after, what).saturating_sub(counts(&before, what));
        println!(
            "bench=proj1 figure=loss loss_pct=5 seconds={:.0} nodes={} deaths={} suspicions={} false_suspicions={} target_deaths=0",
            self.args.loss_for.as_secs_f64(),
            after.len(),
            delta("deaths"),
            delta("suspicions"),
            delta("false_suspicions"),
        );
        Ok(())
    }
}

/// The next request of the mix: a key, and whether it is a get.
fn next_op(rng: &std::sync::Mutex<SmallRng>, keys: usize, reads: f64) -> (usize, bool) {
    let mut rng = rng.lock().expect("never poisoned");
    (rng.random_range(0..keys), rng.random_bool(reads))
}

fn key(k: usize) -> String {
    format!("key:{k:08}")
}

/// `Time to get 64000 keys by 32 threads: 1.020 seconds.` -> 64000 / 1.020.
fn parse_memcslap(text: &str, test: &str) -> Option<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("Time to {test} ")) && l.contains("threads"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let keys: f64 = words.get(3)?.parse().ok()?;
    let seconds: f64 = words.iter().rev().nth(1)?.parse().ok()?;
    (seconds > 0.0).then(|| keys / seconds)
}

impl Bench<'_> {
    /// Every running node's `/status`, by node.
    async fn statuses(&self, supervisor: &Supervisor) -> BTreeMap<String, Value> {
        fetch_statuses(&self.http, &supervisor.nodes().await).await
    }

    /// Polls the running nodes' status details every 10 ms until `done` holds for every one.
    async fn until(
        &self,
        supervisor: &Supervisor,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let all = self.statuses(supervisor).await;
            if !all.is_empty() && all.values().all(|s| done(&s["detail"])) {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{what}: not within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One memcached text-protocol connection, one request at a time.
struct Connection {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(read),
            writer: write,
            line: String::new(),
        })
    }

    async fn read_line(&mut self) -> anyhow::Result<&str> {
        self.line.clear();
        let n = self.reader.read_line(&mut self.line).await?;
        anyhow::ensure!(n > 0, "the server closed the connection");
        Ok(self.line.trim_end())
    }

    async fn set(&mut self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        let mut request = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\n");
        self.writer.write_all(&request).await?;
        let reply = self.read_line().await?;
        anyhow::ensure!(reply == "STORED", "set {key}: {reply}");
        Ok(())
    }

    /// The value's length, if the key was found.
    async fn get(&mut self, key: &str) -> anyhow::Result<Option<usize>> {
        self.writer
            .write_all(format!("get {key}\r\n").as_bytes())
            .await?;
        let header = self.read_line().await?.to_string();
        if header == "END" {
            return Ok(None);
        }
        let length: usize = header
            .strip_prefix("VALUE ")
            .and_then(|rest| rest.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("get {key}: {header}"))?;
        let mut data = vec![0; length + 2];
        self.reader.read_exact(&mut data).await?;
        let end = self.read_line().await?;
        anyhow::ensure!(end == "END", "get {key}: {end} after the value");
        Ok(Some(length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcslap_reports_are_read() {
        let report = "Time to set            2000 keys:                     0.046 seconds.\n\
                      --------\n\
                      Time to get           64000 keys by   32 threads:     1.020 seconds.\n";
        let ops = parse_memcslap(report, "get").unwrap();
        assert!((ops - 64000.0 / 1.020).abs() < 1.0);
        assert_eq!(
            parse_memcslap(report, "set"),
            None,
            "the load line is not the test"
        );
        assert_eq!(parse_memcslap("Fatal error", "get"), None);
    }
}
