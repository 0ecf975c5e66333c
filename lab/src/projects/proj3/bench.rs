//! `lab bench proj3`: Kafka-lite's throughput and latency, from the disk up.
//!
//! - `storage`: one partition's log alone, no network (`distlab_log::storage::bench`).
//! - `produce`: real `lab node log` processes on loopback (one controller; brokers with the
//!   default interval fsync), loaded by closed-loop producers each sending its next batch
//!   (`--batch-bytes` of messages) when the last was acknowledged, spread over the topic's
//!   partitions: 1 broker with acks=1, and 3 brokers with replication factor 3, acks=all and
//!   min.insync.replicas 2. MB/s and messages/s of message bytes, and per-batch latency.
//! - `consume`: then reads back every partition from the start, 1 MiB per fetch (what a
//!   consumer catching up does).
//! - `e2e`: on the 3-broker cluster, a producer sends one message at a time (acks=all) at a
//!   steady rate while consumers long-poll every partition: the time from the send to the
//!   consumer's read (the high watermark must pass it first), p50 and p99.
//!
//! One line per figure, e.g.
//! `bench=proj3 phase=produce brokers=3 rf=3 acks=all message_bytes=1024 batch_records=64 clients=4 partitions=3 seconds=5.000 messages=... mb_per_sec=... msgs_per_sec=... p50_batch_us=... p99_batch_us=... errors=0`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_log::client::LogClient;
use distlab_log::controller::client::ControllerClient;
use distlab_log::storage::batch::{Batch, ProducerStamp};
use distlab_log::storage::bench::StorageBenchArgs;
use distlab_proto::log::v1 as pb;
use distlab_runtime::bench::closed_loop;
use distlab_runtime::launch::{NodeProcess, free_ports};
use distlab_runtime::retry::RetryPolicy;
use hdrhistogram::Histogram;
use tokio::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Storage,
    Produce,
    Consume,
    E2e,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Proj3BenchArgs {
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "storage,produce,consume,e2e"
    )]
    pub phases: Vec<Phase>,
    /// Closed-loop producers in the produce phase.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// The benchmark topic's partitions.
    #[arg(long, default_value_t = 3)]
    pub partitions: u32,
    /// Messages per second in the end-to-end phase.
    #[arg(long, default_value_t = 500)]
    pub e2e_rate: u32,
    /// Sizes, batch size, fsync policies and duration (the storage phase's; the broker phases
    /// use the sizes, batch size and duration).
    #[command(flatten)]
    pub storage: StorageBenchArgs,
}

/// A cluster of one controller and `brokers` brokers, as real processes.
struct Cluster {
    brokers: Vec<(String, SocketAddr)>,
    controller: ControllerClient,
    _nodes: Vec<NodeProcess>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(exe: &PathBuf, brokers: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("distlab-bench-proj3-")
            .tempdir()
            .context("creating a scratch directory")?;
        let names: Vec<String> = std::iter::once("c1".to_string())
            .chain((1..=brokers).map(|i| format!("b{i}")))
            .collect();
        let ports = free_ports(names.len())?;
        let addrs: BTreeMap<&str, SocketAddr> =
            names.iter().map(String::as_str).zip(ports).collect();
        let mut nodes = Vec::new();
        for name in &names {
            let role = if name == "c1" { "controller" } else { "broker" };
            let mut command = Command::new(exe);
            command
                .args(["node", "log", "--role", role, "--id", name])
                .args(["--controllers", "c1", "--admin", "127.0.0.1:0"])
                .arg("--listen")
                .arg(addrs[name.as_str()].to_string())
                .arg("--data-dir")
                .arg(dir.path().join(name));
            for (peer, addr) in &addrs {
                if peer != name {
                    command.arg("--peer").arg(format!("{peer}={addr}"));
                }
            }
            nodes.push(
                NodeProcess::spawn(command, Duration::from_secs(20))
                    .await
                    .with_context(|| format!("starting {name}"))?,
            );
        }
        let policy = RetryPolicy {
            max_attempts: 50,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
            ..RetryPolicy::default()
        };
        let controller = ControllerClient::connect_lazy(&[("c1".into(), addrs["c1"])], policy)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = controller.metadata(0, Duration::ZERO).await?;
            if m.brokers.iter().filter(|b| !b.fenced).count() == brokers {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "brokers did not register in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            brokers: names[1..]
                .iter()
                .map(|n| (n.clone(), addrs[n.as_str()]))
                .collect(),
            controller,
            _nodes: nodes,
            _dir: dir,
        })
    }

    /// Creates `topic` and a client that has seen its leaders.
    async fn topic(&self, topic: &str, partitions: u32, rf: u32) -> anyhow::Result<LogClient> {
        self.controller
            .create_topic(pb::CreateTopicRequest {
                name: topic.into(),
                partitions,
                replication_factor: rf,
                min_insync_replicas: rf.min(2),
                unclean_leader_election: Some(false),
            })
            .await?;
        let policy = RetryPolicy {
            max_attempts: 50,
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(20),
            max_backoff: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let client = LogClient::connect_lazy(&self.brokers, policy)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = client.refresh_metadata().await?;
            let ready = m
                .topics
                .iter()
                .any(|t| t.name == topic && t.partitions.iter().all(|p| p.leader.is_some()));
            if ready {
                return Ok(client);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{topic} has no leaders after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub async fn run(args: &Proj3BenchArgs, exe: PathBuf) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.partitions > 0 && args.e2e_rate > 0,
        "--clients, --partitions and --e2e-rate must be above zero"
    );
    if args.phases.contains(&Phase::Storage) {
        distlab_log::storage::bench::run(&args.storage)?;
    }
    let broker_phases = [Phase::Produce, Phase::Consume, Phase::E2e];
    if !args.phases.iter().any(|p| broker_phases.contains(p)) {
        return Ok(());
    }
    for (brokers, acks) in [(1usize, pb::Acks::Leader), (3, pb::Acks::All)] {
        let cluster = Cluster::start(&exe, brokers).await?;
        let rf = brokers as u32;
        for &message_bytes in &args.storage.message_bytes {
            let topic = format!("bench-{message_bytes}");
            let client = cluster.topic(&topic, args.partitions, rf).await?;
            if args.phases.contains(&Phase::Produce) || args.phases.contains(&Phase::Consume) {
                produce(args, &client, &topic, brokers, acks, message_bytes).await?;
            }
            if args.phases.contains(&Phase::Consume) {
                consume(args, &client, &topic, brokers, message_bytes).await?;
            }
        }
        if acks == pb::Acks::All && args.phases.contains(&Phase::E2e) {
            let client = cluster.topic("bench-e2e", args.partitions, rf).await?;
            end_to_end(args, &client, brokers).await?;
        }
    }
    Ok(())
}

fn acks_name(acks: pb::Acks) -> &'static str {
    match acks {
        pb::Acks::All => "all",
        pb::Acks::Leader => "1",
        pb::Acks::None => "0",
    }
}

async fn produce(
    args: &Proj3BenchArgs,
    client: &LogClient,
    topic: &str,
    brokers: usize,
    acks: pb::Acks,
    message_bytes: usize,
) -> anyhow::Result<()> {
    let records = (args.storage.batch_bytes / message_bytes).max(1);
    let value = vec![b'x'; message_bytes];
    // One batch, sent again and again: not idempotent, so the broker appends each copy. Its
    // timestamp is now (segments roll and retention runs by the records' age).
    let now_ms = distlab_runtime::clock::wall_ms();
    let batch = Batch::build(
        (0..records).map(|_| (None, value.as_slice(), now_ms)),
        ProducerStamp::NONE,
    );
    let partitions = args.partitions;
    let figure = closed_loop(
        args.clients,
        Duration::from_secs(1),
        args.storage.duration,
        |i| {
            let (client, topic, batch) = (client.clone(), topic.to_string(), batch.clone());
            let mut next = i as u32;
            move || {
                let (client, topic, batch) = (client.clone(), topic.clone(), batch.clone());
                next += 1;
                let partition = next % partitions;
                async move { client.produce(&topic, partition, &batch, acks).await }
            }
        },
    )
    .await?;
    let messages = figure.ops * records as u64;
    println!(
        "bench=proj3 phase=produce brokers={brokers} rf={brokers} acks={} message_bytes={message_bytes} batch_records={records} clients={} partitions={partitions} seconds={:.3} messages={messages} mb_per_sec={:.1} msgs_per_sec={:.0} p50_batch_us={} p99_batch_us={} errors={}",
        acks_name(acks),
        args.clients,
        figure.seconds,
        (messages * message_bytes as u64) as f64 / figure.seconds / 1e6,
        messages as f64 / figure.seconds,
        figure.us_at(0.5),
        figure.us_at(0.99),
        figure.errors,
    );
    Ok(())
}

/// Reads every partition of `topic` from its start to its high watermark, all at once.
async fn consume(
    args: &Proj3BenchArgs,
    client: &LogClient,
    topic: &str,
    brokers: usize,
    message_bytes: usize,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut reads = tokio::task::JoinSet::new();
    for partition in 0..args.partitions {
        let (client, topic) = (client.clone(), topic.to_string());
        reads.spawn(async move {
            let mut messages = 0u64;
            client
                .read_through(&topic, partition, |records| {
                    messages += records.len() as u64
                })
                .await
                .map(|()| messages)
        });
    }
    let mut messages = 0;
    while let Some(done) = reads.join_next().await {
        messages += done??;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "bench=proj3 phase=consume brokers={brokers} message_bytes={message_bytes} partitions={} seconds={seconds:.3} messages={messages} mb_per_sec={:.1} msgs_per_sec={:.0}",
        args.partitions,
        (messages * message_bytes as u64) as f64 / seconds / 1e6,
        messages as f64 / seconds,
    );
    Ok(())
}

/// One message at a time at `--e2e-rate`, acks=all, against consumers long-polling every
/// partition: the time from each send to its read.
async fn end_to_end(
    args: &Proj3BenchArgs,
    client: &LogClient,
    brokers: usize,
) -> anyhow::Result<()> {
    let topic = "bench-e2e";
    let epoch = Instant::now();
    let latency = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let stop = tokio_util::sync::CancellationToken::new();
    let measure_from = Duration::from_secs(1);
    let mut consumers = tokio::task::JoinSet::new();
    for partition in 0..args.partitions {
        let (client, latency, stop) = (client.clone(), latency.clone(), stop.clone());
        consumers.spawn(async move {
            let mut offset = client.list_offsets(topic, partition).await?.high_watermark;
            while !stop.is_cancelled() {
                let fetched = client
                    .fetch(
                        topic,
                        partition,
                        offset,
                        1 << 20,
                        Duration::from_millis(200),
                    )
                    .await?;
                let now = epoch.elapsed();
                for record in &fetched.records {
                    let sent_us = u64::from_be_bytes(record.value[..8].try_into()?);
                    if Duration::from_micros(sent_us) >= measure_from {
                        let took = (now.as_micros() as u64).saturating_sub(sent_us);
                        latency.lock().unwrap().saturating_record(took.max(1));
                    }
                    offset = record.offset + 1;
                }
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.e2e_rate));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut sent, mut errors) = (0u64, 0u64);
    let mut sends = tokio::task::JoinSet::new();
    let total = measure_from + args.storage.duration;
    while epoch.elapsed() < total {
        tick.tick().await;
        let mut value = (epoch.elapsed().as_micros() as u64).to_be_bytes().to_vec();
        value.resize(100, b'x');
        let now_ms = distlab_runtime::clock::wall_ms();
        let batch = Batch::build([(None, value.as_slice(), now_ms)], ProducerStamp::NONE);
        let (client, partition) = (client.clone(), (sent % u64::from(args.partitions)) as u32);
        sends.spawn(async move {
            client
                .produce(topic, partition, &batch, pb::Acks::All)
                .await
        });
        sent += 1;
        while let Some(done) = sends.try_join_next() {
            errors += u64::from(!matches!(done, Ok(Ok(_))));
        }
    }
    while let Some(done) = sends.join_next().await {
        errors += u64::from(!matches!(done, Ok(Ok(_))));
    }
    // Let the consumers see the last ones.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    while let Some(done) = consumers.join_next().await {
        done??;
    }
    let latency = latency.lock().unwrap();
    println!(
        "bench=proj3 phase=e2e brokers={brokers} rf={brokers} acks=all message_bytes=100 rate={} partitions={} seconds={:.3} messages={} p50_us={} p99_us={} max_us={} errors={errors}",
        args.e2e_rate,
        args.partitions,
        args.storage.duration.as_secs_f64(),
        latency.len(),
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.max(),
    );
    Ok(())
}
