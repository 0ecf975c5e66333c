//! The `log` command: run a node, or talk to a cluster.
//!
//! `log serve --role controller|broker ...` runs a node (the same as `lab node log`);
//! `log topics create|list|describe` manage topics through the controller quorum;
//! `log produce` sends stdin's lines, `log consume` prints a partition (or, with `--group`,
//! the partitions a consumer group assigns it); `log groups list|describe` show the groups.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use distlab_proto::log::v1 as pb;
use distlab_runtime::cli::Peer;
use distlab_runtime::node::run_cli;
use distlab_runtime::retry::RetryPolicy;

use crate::client::{LogClient, Producer};
use crate::consumer::{Consumed, GroupConfig, GroupConsumer};
use crate::controller::client::ControllerClient;
use crate::group::Assignor;
use crate::node::{self, LogNodeArgs};

/// Project 3 of distlab: Kafka-lite, a replicated commit log.
#[derive(Debug, clap::Parser)]
#[command(name = "log", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a node (the same as `lab node log`).
    Serve(Box<LogNodeArgs>),
    /// Create, list and describe topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Send stdin to a topic, one message per line (`KEY<TAB>VALUE` with --keyed).
    Produce {
        topic: String,
        /// The partition (default: by key with --keyed, else round-robin over the partitions).
        #[arg(long)]
        partition: Option<u32>,
        #[arg(long, value_parser = parse_acks, default_value = "all")]
        acks: pb::Acks,
        /// Lines are `KEY<TAB>VALUE`.
        #[arg(long)]
        keyed: bool,
        /// Messages per batch at most.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Not idempotent: a retried batch may be appended twice.
        #[arg(long)]
        no_idempotence: bool,
        #[command(flatten)]
        brokers: BrokerArgs,
    },
    /// Print a partition's messages, one per line; with --group, as a member of a consumer
    /// group (every partition the group assigns it, from the group's committed offsets).
    Consume {
        topic: String,
        #[arg(long, default_value_t = 0, conflicts_with = "group")]
        partition: u32,
        /// The first offset (default: the log's start).
        #[arg(long, conflicts_with = "group")]
        offset: Option<u64>,
        /// Read as a member of this consumer group, committing what was printed.
        #[arg(long)]
        group: Option<String>,
        /// How the group splits partitions: `range` or `roundrobin`.
        #[arg(long, value_parser = Assignor::parse, default_value = "range", requires = "group")]
        assignor: Assignor,
        /// A member silent this long is removed from the group.
        #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "3s", requires = "group")]
        session_timeout: Duration,
        /// Keep waiting for new messages (until interrupted).
        #[arg(long)]
        follow: bool,
        /// Print each message's offset and key before its value.
        #[arg(long)]
        verbose: bool,
        #[command(flatten)]
        brokers: BrokerArgs,
    },
    /// List consumer groups, or describe one (members, assignment, committed offsets, lag).
    Groups {
        #[command(subcommand)]
        command: GroupsCommand,
        #[command(flatten)]
        brokers: BrokerArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupsCommand {
    /// Every group the brokers coordinate, with its coordinator.
    List,
    /// A group's state, generation, members and their partitions, committed offsets and lag.
    Describe { group: String },
}

/// `0`, `1` or `all` (`-1`).
fn parse_acks(text: &str) -> Result<pb::Acks, String> {
    match text {
        "0" => Ok(pb::Acks::None),
        "1" => Ok(pb::Acks::Leader),
        "all" | "-1" => Ok(pb::Acks::All),
        other => Err(format!("acks {other:?}: expected 0, 1 or all")),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// The brokers: ID=ADDR (gRPC), repeatable or comma-separated.
    #[arg(long = "broker", env = "LOG_BROKERS", value_delimiter = ',', value_parser = Peer::parse, required = true)]
    pub brokers: Vec<Peer>,
    /// Longest one attempt may take.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "2s")]
    pub timeout: Duration,
    /// Longest one call may take, retries included.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "15s")]
    pub deadline: Duration,
}

impl BrokerArgs {
    async fn connect(&self) -> anyhow::Result<LogClient> {
        let nodes: Vec<_> = self
            .brokers
            .iter()
            .map(|p| (p.id.to_string(), p.addr))
            .collect();
        let policy = RetryPolicy {
            max_attempts: 50,
            attempt_timeout: self.timeout,
            deadline: self.deadline,
            max_backoff: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        let client = LogClient::connect_lazy(&nodes, policy)?;
        client.refresh_metadata().await?;
        Ok(client)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicsCommand {
    /// Create a topic; its partitions' replicas are spread over the live brokers.
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 1)]
        replication_factor: u32,
        /// `min.insync.replicas`: `acks=all` needs at least this many in the ISR.
        #[arg(long, default_value_t = 1)]
        min_insync_replicas: u32,
        /// Let a replica outside the ISR lead when no in-sync one is alive (loses data).
        /// Default: the controllers' `--unclean-leader-election`.
        #[arg(long, conflicts_with = "clean_leader_election")]
        unclean_leader_election: bool,
        /// Never let a replica outside the ISR lead, whatever the controllers' default.
        #[arg(long)]
        clean_leader_election: bool,
    },
    /// Every topic, one line each.
    List,
    /// A topic's partitions: leader, replicas, ISR, epochs (every topic without NAME).
    Describe { name: Option<String> },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The controllers: ID=ADDR (gRPC), repeatable or comma-separated.
    #[arg(long = "controller", env = "LOG_CONTROLLERS", value_delimiter = ',', value_parser = Peer::parse, required = true)]
    pub controllers: Vec<Peer>,
    /// Longest one attempt may take.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "2s")]
    pub timeout: Duration,
    /// Longest the whole command may take, retries included.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "10s")]
    pub deadline: Duration,
}

impl ClientArgs {
    fn connect(&self) -> anyhow::Result<ControllerClient> {
        let nodes: Vec<_> = self
            .controllers
            .iter()
            .map(|p| (p.id.to_string(), p.addr))
            .collect();
        let policy = RetryPolicy {
            max_attempts: 20,
            attempt_timeout: self.timeout,
            deadline: self.deadline,
            ..RetryPolicy::default()
        };
        ControllerClient::connect_lazy(&nodes, policy)
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => node::run_blocking(*args),
        command => run_cli("log", "warn", || client_command(command)),
    }
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => unreachable!("handled by run"),
        Command::Topics { command, client } => topics(command, client.connect()?).await,
        Command::Produce {
            topic,
            partition,
            acks,
            keyed,
            batch,
            no_idempotence,
            brokers,
        } => {
            let client = brokers.connect().await?;
            let partitions = partition_count(&client, &topic)?;
            if let Some(p) = partition
                && p >= partitions
            {
                anyhow::bail!("{topic} has {partitions} partitions; there is no partition {p}");
            }
            let producer = Producer::new(client, acks, !no_idempotence).await?;
            produce(
                &producer,
                &topic,
                partition,
                partitions,
                keyed,
                batch.max(1),
            )
            .await
        }
        Command::Consume {
            topic,
            group: Some(group),
            assignor,
            session_timeout,
            follow,
            verbose,
            brokers,
            ..
        } => {
            let client = brokers.connect().await?;
            partition_count(&client, &topic)?;
            let mut config = GroupConfig::new(&group, "log-consume", vec![topic]);
            config.assignor = assignor;
            config.session_timeout = session_timeout;
            config.rebalance_timeout = session_timeout;
            config.heartbeat_every = (session_timeout / 6).max(Duration::from_millis(50));
            consume_in_group(GroupConsumer::new(client, config), follow, verbose).await
        }
        Command::Consume {
            topic,
            partition,
            offset,
            follow,
            verbose,
            brokers,
            ..
        } => {
            let client = brokers.connect().await?;
            let partitions = partition_count(&client, &topic)?;
            if partition >= partitions {
                anyhow::bail!(
                    "{topic} has {partitions} partitions; there is no partition {partition}"
                );
            }
            consume(&client, &topic, partition, offset, follow, verbose).await
        }
        Command::Groups { command, brokers } => groups(command, brokers.connect().await?).await,
    }
}

fn partition_count(client: &LogClient, topic: &str) -> anyhow::Result<u32> {
    let metadata = client.cached_metadata();
    let info = metadata
        .topics
        .iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| anyhow::anyhow!("no topic {topic} (create it with `log topics create`)"))?;
    Ok(info.partitions.len() as u32)
}

/// Which partition a keyed message goes to: FNV-1a of the key, modulo the partitions.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (distlab_runtime::hash::fnv1a(key.iter().copied()) % u64::from(partitions.max(1))) as u32
}

/// A line to send: its key (with --keyed) and value.
type Message = (Option<Vec<u8>>, Vec<u8>);

async fn produce(
    producer: &Producer,
    topic: &str,
    partition: Option<u32>,
    partitions: u32,
    keyed: bool,
    batch: usize,
) -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut pending: BTreeMap<u32, Vec<Message>> = BTreeMap::new();
    let (mut sent, mut next) = (0u64, 0u32);
    let mut line_number = 0;
    loop {
        let line = lines.next_line().await?;
        let done = line.is_none();
        if let Some(line) = line {
            line_number += 1;
            let (key, value) = if keyed {
                let (key, value) = line.split_once('\t').ok_or_else(|| {
                    anyhow::anyhow!("line {line_number}: --keyed wants KEY<TAB>VALUE")
                })?;
                (Some(key.as_bytes().to_vec()), value.as_bytes().to_vec())
            } else {
                (None, line.into_bytes())
            };
            let p = match (partition, &key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, partitions),
                (None, None) => {
                    next = (next + 1) % partitions;
                    next
                }
            };
            pending.entry(p).or_default().push((key, value));
        }
        let full: Vec<u32> = pending
            .iter()
            .filter(|(_, messages)| done || messages.len() >= batch)
            .map(|(p, _)| *p)
            .collect();
        for p in full {
            let messages = pending.remove(&p).unwrap_or_default();
            let records: Vec<(Option<&[u8]>, &[u8])> = messages
                .iter()
                .map(|(k, v)| (k.as_deref(), v.as_slice()))
                .collect();
            let (first, last) = producer.send(topic, p, &records).await?;
            sent += records.len() as u64;
            eprintln!(
                "{topic}/{p}: {} messages at offsets {first}..={last}",
                records.len()
            );
        }
        if done {
            break;
        }
    }
    eprintln!("sent {sent} messages to {topic}");
    Ok(())
}

async fn consume(
    client: &LogClient,
    topic: &str,
    partition: u32,
    offset: Option<u64>,
    follow: bool,
    verbose: bool,
) -> anyhow::Result<()> {
    let mut offset = match offset {
        Some(offset) => offset,
        None => client.list_offsets(topic, partition).await?.log_start,
    };
    loop {
        let wait = if follow {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        let fetched = client
            .fetch(topic, partition, offset, 1 << 20, wait)
            .await?;
        for record in &fetched.records {
            let value = String::from_utf8_lossy(&record.value);
            if verbose {
                let key = record
                    .key
                    .as_ref()
                    .map(|k| String::from_utf8_lossy(k).into_owned());
                println!("{}\t{}\t{value}", record.offset, key.unwrap_or_default());
            } else {
                println!("{value}");
            }
            offset = record.offset + 1;
        }
        if fetched.records.is_empty() && !follow && offset >= fetched.high_watermark {
            return Ok(());
        }
    }
}

fn print_record(consumed: &Consumed, verbose: bool) {
    let record = &consumed.record;
    let value = String::from_utf8_lossy(&record.value);
    if verbose {
        let key = record
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        println!(
            "{}\t{}\t{}\t{value}",
            consumed.partition,
            record.offset,
            key.unwrap_or_default()
        );
    } else {
        println!("{value}");
    }
}

/// Reads as a group member: without `follow`, until a poll finds nothing new; with it, until
/// interrupted. Commits after every poll and leaves at the end.
async fn consume_in_group(
    mut consumer: GroupConsumer,
    follow: bool,
    verbose: bool,
) -> anyhow::Result<()> {
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        if let Some(joined) = consumer.ensure_joined().await? {
            let partitions: Vec<String> =
                joined.assignment.iter().map(ToString::to_string).collect();
            eprintln!(
                "joined generation {} as {} with [{}] in {} ms",
                joined.generation,
                joined.member_id,
                partitions.join(", "),
                joined.took.as_millis()
            );
        }
        let polled = tokio::select! {
            polled = consumer.poll(Duration::from_millis(500)) => polled?,
            _ = &mut interrupted => break,
        };
        for consumed in &polled {
            print_record(consumed, verbose);
        }
        if let Err(status) = consumer.commit().await {
            eprintln!(
                "commit refused ({}); rejoining",
                distlab_runtime::rpc::describe(&status)
            );
        }
        if polled.is_empty() && !follow && !consumer.needs_join() {
            break;
        }
    }
    consumer.close().await?;
    Ok(())
}

async fn groups(command: GroupsCommand, client: LogClient) -> anyhow::Result<()> {
    match command {
        GroupsCommand::List => {
            let groups = client.list_groups().await?;
            if groups.is_empty() {
                println!("(no groups)");
            }
            for (group, coordinator) in groups {
                println!("{group:<24} coordinator {coordinator}");
            }
        }
        GroupsCommand::Describe { group } => {
            let g = client.describe_group(&group).await?;
            print!("{}", describe_group(&g));
        }
    }
    Ok(())
}

/// A group as `log groups describe` prints it.
fn describe_group(g: &pb::GroupDescription) -> String {
    let mut out = format!(
        "group {} · coordinator {} · {} · generation {} · assignor {} · rebalances {}\n",
        g.group,
        g.coordinator,
        g.state,
        g.generation,
        if g.assignor.is_empty() {
            "-"
        } else {
            &g.assignor
        },
        g.rebalances
    );
    if let Some(r) = &g.last_rebalance {
        out.push_str(&format!(
            "  last rebalance: generation {} with {} members in {} ms ({})\n",
            r.generation, r.members, r.took_ms, r.reason
        ));
    }
    for m in &g.members {
        let partitions: Vec<String> = m
            .assignment
            .iter()
            .map(|p| format!("{}/{}", p.topic, p.partition))
            .collect();
        out.push_str(&format!(
            "  member {:<28} partitions [{}] · heard {} ms ago\n",
            m.member_id,
            partitions.join(", "),
            m.silent_ms
        ));
    }
    let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for p in &g.partitions {
        out.push_str(&format!(
            "  {}/{:<3} committed {:<8} high watermark {:<8} lag {:<8} member {}\n",
            p.topic,
            p.partition,
            or_dash(p.committed),
            or_dash(p.high_watermark),
            or_dash(p.lag),
            if p.member_id.is_empty() {
                "-"
            } else {
                &p.member_id
            },
        ));
    }
    out
}

async fn topics(command: TopicsCommand, controller: ControllerClient) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            min_insync_replicas,
            unclean_leader_election,
            clean_leader_election,
        } => {
            let topic = controller
                .create_topic(pb::CreateTopicRequest {
                    name,
                    partitions,
                    replication_factor,
                    min_insync_replicas,
                    unclean_leader_election: if unclean_leader_election {
                        Some(true)
                    } else if clean_leader_election {
                        Some(false)
                    } else {
                        None
                    },
                })
                .await?;
            println!("created {}", topic.name);
            print!("{}", describe(&topic));
        }
        TopicsCommand::List => {
            let metadata = controller.metadata(0, Duration::ZERO).await?;
            if metadata.topics.is_empty() {
                println!("(no topics)");
            }
            for topic in &metadata.topics {
                let offline = topic
                    .partitions
                    .iter()
                    .filter(|p| p.leader.is_none())
                    .count();
                let under = topic
                    .partitions
                    .iter()
                    .filter(|p| p.isr.len() < p.replicas.len())
                    .count();
                println!(
                    "{:<24} partitions {:<3} rf {:<2} min.insync {:<2} under-replicated {under} offline {offline}",
                    topic.name,
                    topic.partitions.len(),
                    topic.partitions.first().map_or(0, |p| p.replicas.len()),
                    topic.min_insync_replicas,
                );
            }
        }
        TopicsCommand::Describe { name } => {
            let metadata = controller.metadata(0, Duration::ZERO).await?;
            let topics: Vec<&pb::TopicInfo> = metadata
                .topics
                .iter()
                .filter(|t| name.as_ref().is_none_or(|n| &t.name == n))
                .collect();
            if let (Some(name), true) = (&name, topics.is_empty()) {
                anyhow::bail!("no topic {name}");
            }
            for topic in topics {
                print!("{}", describe(topic));
            }
        }
    }
    Ok(())
}

/// A topic's partitions, one line each.
fn describe(topic: &pb::TopicInfo) -> String {
    let mut out = format!(
        "topic {} · min.insync.replicas {} · unclean election {}\n",
        topic.name,
        topic.min_insync_replicas,
        if topic.unclean_leader_election {
            "on"
        } else {
            "off"
        }
    );
    for p in &topic.partitions {
        out.push_str(&format!(
            "  {}/{:<3} leader {:<6} epoch {:<3} replicas {:<14} isr {}\n",
            topic.name,
            p.partition,
            p.leader.as_deref().unwrap_or("(none)"),
            p.leader_epoch,
            p.replicas.join(","),
            p.isr.join(","),
        ));
    }
    out
}
