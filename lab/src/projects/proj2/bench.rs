//! `lab bench proj2`: the Raft KV under closed-loop load, and etcd under the same load.
//!
//! Each figure comes from a fresh cluster of real node processes on this machine (fsync on,
//! 256-byte values by default), loaded by C clients that each send their next request when
//! the previous one answered. The clients are spread over `--connections` TCP connections to
//! every node (etcd gets as many to every member): 64 clients sharing one HTTP/2 connection
//! would measure how two single-threaded ends take turns on it more than the servers.
//! Clusters run through the lab's link proxies (every byte between nodes, and from clients,
//! goes through the lab, as in `lab run`) or without them (nodes talk directly). Phases:
//!
//! - `writes`: PUT throughput and latency, 3 and 5 nodes, proxies on and off, 1/16/64 clients;
//! - `reads`: GET with read-index vs lease reads (64 clients, 3 nodes);
//! - `snapshots`: PUT latency with snapshots off, then with one every 2,000 entries;
//! - `failover`: SIGKILL the leader under load, N times: the time from the last write that
//!   succeeded before the kill to the first after it; median and max;
//! - `etcd`: a 3-member etcd (the `etcd` program, Debian's `etcd-server` 3.4) on loopback,
//!   PUT and linearizable GET with the same clients and value size, and the ratios.
//!
//! One line per figure, `key=value` pairs, e.g.
//! `bench=proj2 system=raftkv op=put nodes=3 proxies=off clients=64 connections=2 value_bytes=256 seconds=5.000 ops=... ops_per_sec=... p50_us=... p99_us=... errors=0`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_proto::etcdserverpb as etcd;
use distlab_raftkv::client::RaftKvClient;
use distlab_runtime::bench::{Figure, Op, closed_loop};
use distlab_runtime::launch::{LaunchOptions, NodeProcess};
use distlab_runtime::retry::RetryPolicy;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::process::Command;

use crate::engine::project::{self, ClusterSpec};
use crate::engine::supervisor::Supervisor;

#[derive(Debug, Clone, clap::Args)]
pub struct Proj2BenchArgs {
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "writes,reads,snapshots,failover,etcd"
    )]
    pub phases: Vec<Phase>,
    /// Cluster sizes for the write phase.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    pub nodes: Vec<usize>,
    /// Concurrent clients for the write phase.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Measured time per figure.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "5s")]
    pub duration: Duration,
    /// Unmeasured time before each figure.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "1s")]
    pub warmup: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// TCP connections to every node (etcd: to every member) the clients are spread over.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Leader kills in the failover phase.
    #[arg(long, default_value_t = 10)]
    pub kills: usize,
    /// Service flags added to every raftkv node (after the phase's own), e.g. "--fsync never".
    #[arg(
        long,
        value_name = "FLAGS",
        allow_hyphen_values = true,
        default_value = ""
    )]
    pub node_flags: String,
    /// The etcd program (Debian: `apt-get install etcd-server`).
    #[arg(long, default_value = "etcd")]
    pub etcd: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Writes,
    Reads,
    Snapshots,
    Failover,
    Etcd,
}

/// One figure's line: `bench=proj2 LABELS seconds=... ops=... ops_per_sec=... p50_us=...`.
fn line(figure: &Figure, labels: &str) -> String {
    format!(
        "bench=proj2 {labels} seconds={:.3} ops={} ops_per_sec={:.0} p50_us={} p99_us={} errors={}",
        figure.seconds,
        figure.ops,
        figure.ops_per_sec(),
        figure.us_at(0.5),
        figure.us_at(0.99),
        figure.errors
    )
}

pub async fn run(args: &Proj2BenchArgs, exe: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.value_size > 0 && args.keys > 0 && args.connections > 0 && !args.duration.is_zero(),
        distlab_runtime::BadInput::new(
            "--value-size, --keys, --connections and --duration must be above zero"
        )
    );
    let work = tempfile::Builder::new()
        .prefix("distlab-bench-proj2-")
        .tempdir()
        .context("creating a scratch directory")?;
    let bench = Bench {
        args,
        exe,
        work: work.path().to_path_buf(),
    };
    let has = |phase| args.phases.contains(&phase);
    let mut ours = None;
    if has(Phase::Writes) {
        ours = bench.writes().await?;
    }
    let mut reads = None;
    if has(Phase::Reads) {
        reads = Some(bench.reads().await?);
    }
    if has(Phase::Snapshots) {
        bench.snapshots().await?;
    }
    if has(Phase::Failover) {
        bench.failover().await?;
    }
    if has(Phase::Etcd) {
        bench.etcd(ours, reads.map(|r| r.0)).await?;
    }
    Ok(())
}

struct Bench<'a> {
    args: &'a Proj2BenchArgs,
    exe: PathBuf,
    work: PathBuf,
}

/// A raftkv cluster started for one figure; dropping it stops every process.
enum Cluster {
    Proxied { supervisor: Arc<Supervisor> },
    Direct { _nodes: Vec<NodeProcess> },
}

impl Bench<'_> {
    /// Starts `nodes` raftkv nodes with `flags`; returns the cluster and the clients' addresses.
    async fn cluster(
        &self,
        nodes: usize,
        proxies: bool,
        flags: &[&str],
    ) -> anyhow::Result<(Cluster, Vec<(String, SocketAddr)>)> {
        let flags: Vec<String> = flags
            .iter()
            .map(|f| f.to_string())
            .chain(project::split_flags(&self.args.node_flags))
            .collect();
        if proxies {
            let project = project::find("proj2").map_err(distlab_runtime::BadInput)?;
            let spec = ClusterSpec {
                node_flags: flags,
                ..ClusterSpec::new(project, nodes, 1)
            };
            let supervisor = Arc::new(Supervisor::new(spec, &self.work, self.exe.clone()).await?);
            supervisor.start_all().await?;
            let addrs = supervisor
                .nodes()
                .await
                .into_iter()
                .map(|n| (n.id, n.client))
                .collect();
            return Ok((Cluster::Proxied { supervisor }, addrs));
        }
        // Without proxies every node must know its peers' real addresses before it starts.
        let ids: Vec<String> = (1..=nodes).map(|i| format!("n{i}")).collect();
        let ports = distlab_runtime::launch::free_ports(nodes)?;
        let dir = tempfile::Builder::new()
            .prefix("direct-")
            .tempdir_in(&self.work)?
            .keep();
        let mut processes = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut command = Command::new(&self.exe);
            command
                .args(["node", "raftkv", "--id", id, "--listen"])
                .arg(ports[i].to_string())
                .args(["--admin", "127.0.0.1:0", "--data-dir"])
                .arg(dir.join(id))
                .args(&flags);
            for (j, peer) in ids.iter().enumerate() {
                if i != j {
                    command.arg("--peer").arg(format!("{peer}={}", ports[j]));
                }
            }
            let options = LaunchOptions {
                ready_timeout: Duration::from_secs(30),
                log_file: Some(dir.join(format!("{id}.log"))),
                on_line: None,
            };
            processes.push(NodeProcess::spawn_with(command, options).await?);
        }
        let addrs = ids.into_iter().zip(ports).collect();
        Ok((Cluster::Direct { _nodes: processes }, addrs))
    }

    /// Waits until the cluster answers a write (a leader is elected and reachable).
    async fn ready(&self, client: &RaftKvClient) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.put("bench-ready", "1").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!("the cluster elected no reachable leader in 30 s: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn client(addrs: &[(String, SocketAddr)]) -> anyhow::Result<RaftKvClient> {
        let policy = RetryPolicy {
            max_attempts: 20,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        RaftKvClient::connect_lazy(addrs, policy)
    }

    /// Fills the keys once, so reads find values.
    async fn fill(&self, client: &RaftKvClient) -> anyhow::Result<()> {
        let value = vec![b'v'; self.args.value_size];
        for k in 0..self.args.keys {
            client.put(&key(k), value.clone()).await?;
        }
        Ok(())
    }

    /// Closed-loop load on raftkv: `clients` sessions spread over `--connections` clients
    /// (each its own connection to every node).
    async fn load_raftkv(
        &self,
        addrs: &[(String, SocketAddr)],
        op: Op,
        clients: usize,
    ) -> anyhow::Result<Figure> {
        let connections = (0..self.args.connections)
            .map(|_| Self::client(addrs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let value = prost::bytes::Bytes::from(vec![b'v'; self.args.value_size]);
        let keys = self.args.keys;
        closed_loop(clients, self.args.warmup, self.args.duration, |i| {
            let session = connections[i % connections.len()].new_session();
            let value = value.clone();
            let mut rng = SmallRng::seed_from_u64(i as u64);
            move || {
                let session = session.clone();
                let value = value.clone();
                let k = key(rng.random_range(0..keys));
                async move {
                    match op {
                        Op::Put => session.put(&k, value).await.map(|_| ()),
                        Op::Get => session.get(&k).await.map(|_| ()),
                    }
                    .map_err(|e| anyhow::anyhow!("{}", e.message()))
                }
            }
        })
        .await
    }

    async fn writes(&self) -> anyhow::Result<Option<Figure>> {
        let mut anchor = None;
        for &nodes in &self.args.nodes {
            for proxies in [true, false] {
                let (_cluster, addrs) = self.cluster(nodes, proxies, &[]).await?;
                let client = Self::client(&addrs)?;
                self.ready(&client).await?;
                for &clients in &self.args.clients {
                    let figure = self.load_raftkv(&addrs, Op::Put, clients).await?;
                    println!(
                        "{}",
                        line(
                            &figure,
                            &format!(
                                "system=raftkv op=put nodes={nodes} proxies={} clients={clients} connections={} value_bytes={}",
                                on_off(proxies),
                                self.args.connections,
                                self.args.value_size
                            )
                        )
                    );
                    if nodes == 3 && !proxies && clients == 64 {
                        anchor = Some(figure);
                    }
                }
            }
        }
        Ok(anchor)
    }

    /// Read-index vs lease, 3 nodes without proxies, 64 clients. Returns both figures.
    async fn reads(&self) -> anyhow::Result<(Figure, Figure)> {
        let mut figures = Vec::new();
        for mode in ["read-index", "lease"] {
            let (_cluster, addrs) = self.cluster(3, false, &["--read-mode", mode]).await?;
            let client = Self::client(&addrs)?;
            self.ready(&client).await?;
            self.fill(&client).await?;
            let figure = self.load_raftkv(&addrs, Op::Get, 64).await?;
            println!(
                "{}",
                line(
                    &figure,
                    &format!(
                        "system=raftkv op=get read_mode={mode} nodes=3 proxies=off clients=64 connections={} value_bytes={}",
                        self.args.connections, self.args.value_size
                    )
                )
            );
            figures.push(figure);
        }
        println!(
            "bench=proj2 figure=lease_vs_read_index ratio={:.2}",
            figures[1].ops_per_sec() / figures[0].ops_per_sec().max(1e-9)
        );
        let read_index = figures.remove(0);
        Ok((read_index, figures.remove(0)))
    }

    /// PUT latency without snapshots, then with one every 2,000 entries (and the log purged
    /// behind it), 3 nodes, 64 clients.
    async fn snapshots(&self) -> anyhow::Result<()> {
        for (label, every) in [("off", "100000000"), ("every-2000", "2000")] {
            let (_cluster, addrs) = self
                .cluster(3, false, &["--snapshot-every", every, "--keep-log", "500"])
                .await?;
            let client = Self::client(&addrs)?;
            self.ready(&client).await?;
            let figure = self.load_raftkv(&addrs, Op::Put, 64).await?;
            println!(
                "{}",
                line(
                    &figure,
                    &format!(
                        "system=raftkv op=put snapshots={label} nodes=3 proxies=off clients=64 connections={} value_bytes={}",
                        self.args.connections, self.args.value_size
                    )
                )
            );
        }
        Ok(())
    }

    /// Kills the leader of a 3-node cluster (through the proxies, as `lab run` does) under a
    /// write load, `kills` times: last success before each kill to first success after.
    async fn failover(&self) -> anyhow::Result<()> {
        let (cluster, addrs) = self.cluster(3, true, &[]).await?;
        let Cluster::Proxied { supervisor } = &cluster else {
            unreachable!("a proxied cluster has a supervisor")
        };
        let client = Self::client(&addrs)?;
        self.ready(&client).await?;
        let mut gaps = Vec::new();
        for _ in 0..self.args.kills {
            let leader = settled_leader(&client, &addrs).await?;
            let recorder = SuccessTimes::default();
            let stop = tokio_util::sync::CancellationToken::new();
            let load = tokio::spawn(write_until(
                client.clone(),
                8,
                self.args.value_size,
                recorder.clone(),
                stop.clone(),
            ));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let killed_at = Instant::now();
            supervisor.kill(&leader).await?;
            // Until writes have resumed for a while.
            let resumed = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    if recorder
                        .first_sent_after(killed_at)
                        .is_some_and(|t| t.elapsed() > Duration::from_millis(300))
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            stop.cancel();
            let _ = load.await;
            resumed.context("writes did not resume within 30 s of the kill")?;
            let gap = recorder
                .gap_around(killed_at)
                .context("no write succeeded before the kill")?;
            gaps.push(gap);
            supervisor.start(&leader).await?;
        }
        gaps.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "bench=proj2 figure=failover nodes=3 proxies=on kills={} median_ms={:.0} min_ms={:.0} max_ms={:.0}",
            gaps.len(),
            ms(gaps[gaps.len() / 2]),
            ms(gaps[0]),
            ms(gaps[gaps.len() - 1])
        );
        drop(cluster);
        Ok(())
    }

    /// A 3-member etcd on loopback under the same load; then the ratios to raftkv's figures.
    async fn etcd(&self, ours: Option<Figure>, ours_reads: Option<Figure>) -> anyhow::Result<()> {
        let found = std::process::Command::new(&self.args.etcd)
            .arg("--version")
            .output();
        let version = match found {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            _ => {
                println!(
                    "bench=proj2 system=etcd skipped=\"{} not found: apt-get install etcd-server, or --etcd PATH\"",
                    self.args.etcd.display()
                );
                return Ok(());
            }
        };
        eprintln!("etcd: {version}");
        let members = EtcdCluster::start(
            &self.args.etcd,
            &self.work.join("etcd"),
            self.args.connections,
        )
        .await?;
        let channels = members.channels.clone();
        let value = vec![b'v'; self.args.value_size];
        for k in 0..self.args.keys {
            etcd::kv_client::KvClient::new(channels[0].clone())
                .put(etcd::PutRequest {
                    key: key(k).into_bytes().into(),
                    value: value.clone().into(),
                })
                .await
                .context("etcd put")?;
        }
        let mut figures = Vec::new();
        for op in [Op::Put, Op::Get] {
            let keys = self.args.keys;
            let channels = channels.clone();
            let value = prost::bytes::Bytes::from(value.clone());
            let figure = closed_loop(64, self.args.warmup, self.args.duration, |i| {
                // Clients spread over the members, as etcd's client balancer does.
                let kv = etcd::kv_client::KvClient::new(channels[i % channels.len()].clone());
                let value = value.clone();
                let mut rng = SmallRng::seed_from_u64(i as u64);
                move || {
                    let mut kv = kv.clone();
                    let value = value.clone();
                    let k = key(rng.random_range(0..keys)).into_bytes();
                    async move {
                        match op {
                            Op::Put => kv
                                .put(etcd::PutRequest {
                                    key: k.into(),
                                    value,
                                })
                                .await
                                .map(|_| ()),
                            Op::Get => kv
                                .range(etcd::RangeRequest {
                                    key: k.into(),
                                    serializable: false,
                                })
                                .await
                                .map(|_| ()),
                        }
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))
                    }
                }
            })
            .await?;
            println!(
                "{}",
                line(
                    &figure,
                    &format!(
                        "system=etcd op={} nodes=3 proxies=off clients=64 connections={} value_bytes={}",
                        op.name(),
                        self.args.connections,
                        self.args.value_size
                    )
                )
            );
            figures.push(figure);
        }
        drop(members);
        if let Some(ours) = ours {
            println!(
                "bench=proj2 figure=raftkv_vs_etcd op=put clients=64 throughput_ratio={:.2} p99_ratio={:.2}",
                ours.ops_per_sec() / figures[0].ops_per_sec().max(1e-9),
                ours.us_at(0.99) as f64 / figures[0].us_at(0.99).max(1) as f64
            );
        }
        if let Some(reads) = ours_reads {
            println!(
                "bench=proj2 figure=raftkv_vs_etcd op=get read_mode=read-index clients=64 throughput_ratio={:.2} p99_ratio={:.2}",
                reads.ops_per_sec() / figures[1].ops_per_sec().max(1e-9),
                reads.us_at(0.99) as f64 / figures[1].us_at(0.99).max(1) as f64
            );
        }
        Ok(())
    }
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

fn key(k: usize) -> String {
    format!("key{k:06}")
}

/// When writes succeeded (and when each was sent), for the failover figure.
#[derive(Clone, Default)]
struct SuccessTimes(Arc<std::sync::Mutex<Vec<(Instant, Instant)>>>);

impl SuccessTimes {
    fn record(&self, sent: Instant) {
        self.0.lock().unwrap().push((sent, Instant::now()));
    }

    /// When the first write *sent* after `t` succeeded: one the killed leader cannot have
    /// answered (an answer already in flight at the kill may land just after it).
    fn first_sent_after(&self, t: Instant) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent, _)| *sent > t)
            .map(|(_, done)| *done)
            .min()
    }

    /// The longest gap between consecutive successes that starts at or after the last success
    /// before `t` and ends after `t`.
    fn gap_around(&self, t: Instant) -> Option<Duration> {
        let mut times: Vec<Instant> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, done)| *done)
            .collect();
        times.sort();
        let from = times.iter().rposition(|s| *s <= t)?;
        times[from..]
            .windows(2)
            .filter(|w| w[1] > t)
            .map(|w| w[1] - w[0])
            .max()
    }
}

/// Writes with `clients` sessions until `stop`, recording each success's time.
async fn write_until(
    client: RaftKvClient,
    clients: usize,
    value_size: usize,
    times: SuccessTimes,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let session = client.new_session();
        let (times, stop) = (times.clone(), stop.clone());
        let value = prost::bytes::Bytes::from(vec![b'v'; value_size]);
        tasks.spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let key = format!("failover-{i}-{}", n % 100);
                let sent = Instant::now();
                let written = tokio::select! {
                    r = session.put(&key, value.clone()) => r.is_ok(),
                    () = stop.cancelled() => break,
                };
                if written {
                    times.record(sent);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The leader, once the cluster is settled: every node answers, one of them leads, all are in
/// its term, and that has not changed for half a second (a node restarted by the previous
/// kill may still be rejoining, or start an election of its own).
async fn settled_leader(
    client: &RaftKvClient,
    addrs: &[(String, SocketAddr)],
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: Option<(String, u64, Instant)> = None;
    loop {
        let mut statuses = Vec::new();
        for (name, _) in addrs {
            if let Ok(status) = client.status_of(name).await {
                statuses.push(status);
            }
        }
        let leaders: Vec<_> = statuses.iter().filter(|s| s.role == "leader").collect();
        let now = match leaders.as_slice() {
            [leader]
                if statuses.len() == addrs.len()
                    && statuses.iter().all(|s| s.term == leader.term) =>
            {
                Some((leader.id.clone(), leader.term))
            }
            _ => None,
        };
        match (&seen, now) {
            (Some((id, term, since)), Some((now_id, now_term)))
                if *id == now_id && *term == now_term =>
            {
                if since.elapsed() >= Duration::from_millis(500) {
                    return Ok(now_id);
                }
            }
            (_, Some((id, term))) => seen = Some((id, term, Instant::now())),
            (_, None) => seen = None,
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the cluster did not settle on one leader within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Three etcd members on loopback; dropping it kills them.
struct EtcdCluster {
    _members: Vec<tokio::process::Child>,
    /// `connections` channels (each its own connection) per member, the members interleaved:
    /// channel `i` goes to member `i % 3`.
    channels: Vec<tonic::transport::Channel>,
}

impl EtcdCluster {
    async fn start(program: &Path, dir: &Path, connections: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let ports: Vec<u16> = distlab_runtime::launch::free_ports(6)?
            .iter()
            .map(SocketAddr::port)
            .collect();
        let names = ["e1", "e2", "e3"];
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[3 + i]);
        let initial: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}={}", peer(i)))
            .collect();
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let client = format!("http://127.0.0.1:{}", ports[i]);
            let mut command = Command::new(program);
            command
                .args(["--name", name, "--data-dir"])
                .arg(dir.join(name))
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer(i),
                    "--initial-advertise-peer-urls",
                    &peer(i),
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args([
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "distlab-bench",
                ])
                .args(["--log-level", "warn"]);
            members.push(distlab_runtime::launch::spawn_program(
                command,
                &dir.join(format!("{name}.log")),
            )?);
            endpoints.push(tonic::transport::Endpoint::from_shared(client)?.tcp_nodelay(true));
        }
        let channels = (0..connections)
            .flat_map(|_| endpoints.iter().map(|e| e.connect_lazy()))
            .collect();
        let cluster = Self {
            _members: members,
            channels,
        };
        // Ready when a linearizable read succeeds (a leader is elected).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut kv = etcd::kv_client::KvClient::new(cluster.channels[0].clone());
            let ready = kv
                .range(etcd::RangeRequest {
                    key: b"ready".to_vec().into(),
                    serializable: false,
                })
                .await;
            match ready {
                Ok(_) => return Ok(cluster),
                Err(e) if Instant::now() > deadline => {
                    anyhow::bail!(
                        "etcd did not become ready in 30 s (logs in {}): {e}",
                        dir.display()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}
