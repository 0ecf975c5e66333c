//! The `raftkv` command: run a node, or talk to a cluster.

use std::process::ExitCode;
use std::time::Duration;

use distlab_runtime::cli::Peer;
use distlab_runtime::node::run_cli;
use distlab_runtime::retry::RetryPolicy;

use crate::client::RaftKvClient;
use crate::node::{self, RaftKvNodeArgs};

/// Project 2 of distlab: a key-value store replicated with Raft.
#[derive(Debug, clap::Parser)]
#[command(name = "raftkv", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a node (the same as `lab node raftkv`).
    Serve(RaftKvNodeArgs),
    /// Store a value.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a key's value.
    Get {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a key.
    Del {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set KEY to NEW if its value is EXPECTED (`--absent`: if it does not exist).
    Cas {
        key: String,
        #[arg(required_unless_present = "absent")]
        expected: Option<String>,
        new: Option<String>,
        #[arg(long)]
        absent: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Each node's view: role, term, leader, log, membership.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a node (started with this cluster's peers and not in --initial-members).
    AddMember {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a voter.
    RemoveMember {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The cluster's nodes: ID=ADDR (gRPC), repeatable or comma-separated.
    #[arg(long = "node", env = "RAFTKV_NODES", value_delimiter = ',', value_parser = Peer::parse, required = true)]
    pub nodes: Vec<Peer>,
    /// Longest one attempt may take.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "2s")]
    pub timeout: Duration,
    /// Longest the whole command may take, retries included.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "10s")]
    pub deadline: Duration,
}

impl ClientArgs {
    fn connect(&self) -> anyhow::Result<RaftKvClient> {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|p| (p.id.to_string(), p.addr))
            .collect();
        let policy = RetryPolicy {
            max_attempts: 20,
            attempt_timeout: self.timeout,
            deadline: self.deadline,
            ..RetryPolicy::default()
        };
        RaftKvClient::connect_lazy(&nodes, policy)
    }
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => node::run_blocking(args),
        command => run_cli("raftkv", "warn", || client_command(command)),
    }
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(_) => unreachable!("handled by run"),
        Command::Put { key, value, client } => {
            let index = client.connect()?.put(&key, value).await?;
            println!("OK (log index {index})");
        }
        Command::Get { key, client } => match client.connect()?.get(&key).await? {
            Some(value) => println!("{}", String::from_utf8_lossy(&value)),
            None => anyhow::bail!("{key}: not found"),
        },
        Command::Del { key, client } => {
            let existed = client.connect()?.delete(&key).await?;
            println!("{}", if existed { "deleted" } else { "not found" });
        }
        Command::Cas {
            key,
            expected,
            new,
            absent,
            client,
        } => {
            let (expected, new) = match (absent, expected, new) {
                (true, Some(new), None) | (true, None, Some(new)) => (None, new),
                (false, Some(expected), Some(new)) => (Some(expected.into_bytes()), new),
                _ => anyhow::bail!(
                    "usage: raftkv cas KEY EXPECTED NEW, or raftkv cas KEY --absent NEW"
                ),
            };
            let outcome = client
                .connect()?
                .compare_and_set(&key, expected, new)
                .await?;
            let current = outcome
                .current
                .map(|c| String::from_utf8_lossy(&c).into_owned())
                .unwrap_or_else(|| "(absent)".into());
            if outcome.swapped {
                println!("swapped (was {current})");
            } else {
                println!("not swapped: the value is {current}");
            }
        }
        Command::Status { client } => {
            let cluster = client.connect()?;
            for node in &client.nodes {
                match cluster.status_of(node.id.as_str()).await {
                    Ok(s) => println!(
                        "{:<6} {:<9} term {:<4} leader {:<6} last {:<7} applied {:<7} voters {}{}",
                        s.id,
                        s.role,
                        s.term,
                        if s.leader.is_empty() { "-" } else { &s.leader },
                        s.last_log_index,
                        s.applied,
                        s.voters.join(","),
                        if s.learners.is_empty() {
                            String::new()
                        } else {
                            format!(" learners {}", s.learners.join(","))
                        }
                    ),
                    Err(e) => println!("{:<6} unreachable: {}", node.id, e.message()),
                }
            }
        }
        Command::AddMember { id, client } => {
            let reply = client.connect()?.add_member(&id).await?;
            println!(
                "voters {} (log index {})",
                reply.voters.join(","),
                reply.index
            );
        }
        Command::RemoveMember { id, client } => {
            let reply = client.connect()?.remove_member(&id).await?;
            println!(
                "voters {} (log index {})",
                reply.voters.join(","),
                reply.index
            );
        }
    }
    Ok(())
}
