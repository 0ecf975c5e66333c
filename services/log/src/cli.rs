//! The `log` command: run a node, or talk to a cluster.
//!
//! `log serve --role controller|broker ...` runs a node (the same as `lab node log`);
//! `log topics create|list|describe` manage topics through the controller quorum.

use std::process::ExitCode;
use std::time::Duration;

use distlab_proto::log::v1 as pb;
use distlab_runtime::cli::Peer;
use distlab_runtime::node::run_cli;
use distlab_runtime::retry::RetryPolicy;

use crate::controller::client::ControllerClient;
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
        #[arg(long)]
        unclean_leader_election: bool,
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
    }
}

async fn topics(command: TopicsCommand, controller: ControllerClient) -> anyhow::Result<()> {
    match command {
        TopicsCommand::Create {
            name,
            partitions,
            replication_factor,
            min_insync_replicas,
            unclean_leader_election,
        } => {
            let topic = controller
                .create_topic(pb::CreateTopicRequest {
                    name,
                    partitions,
                    replication_factor,
                    min_insync_replicas,
                    unclean_leader_election,
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
