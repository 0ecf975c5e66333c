//! The `kv` command: run a node, talk to one, benchmark one, make certificates.

use std::io::Read;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use distlab_runtime::BadInput;
use distlab_runtime::cli::TlsArgs;
use distlab_runtime::node::run_cli;
use distlab_runtime::retry::RetryPolicy;
use tracing::Instrument;

use crate::bench::{self, BenchArgs, NodeCommand};
use crate::client::{ClientOptions, KvClient};
use crate::node::{self, KvNodeArgs};
use crate::store::Token;

/// Project 0 of distlab: a gRPC key-value service with idempotent retries, deadlines,
/// metrics, tracing and mTLS.
#[derive(Debug, clap::Parser)]
#[command(name = "kv", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a kv node (the same as `lab node kv`).
    Serve(KvNodeArgs),
    /// Store a value.
    Put {
        key: String,
        /// The value; `-` reads it from stdin.
        value: String,
        /// Idempotency token to send (reuse one to see a retry answered without applying).
        #[arg(long, conflicts_with = "no_token")]
        token: Option<String>,
        /// Send no token: the PUT is then not retried (it might be applied twice).
        #[arg(long)]
        no_token: bool,
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
    /// Load a node with concurrent clients; print throughput and latency.
    Bench(BenchArgs),
    /// Write a throwaway CA, node and client certificates into DIR, for trying mTLS.
    GenCerts { dir: std::path::PathBuf },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The node's gRPC address (its ready line's "grpc").
    #[arg(long, env = "KV_ADDR")]
    pub addr: SocketAddr,
    /// Longest one attempt may take.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "1s")]
    pub timeout: Duration,
    /// Longest the whole command may take, retries included.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "5s")]
    pub deadline: Duration,
    /// Attempts in all, the first included.
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl ClientArgs {
    fn connect(&self) -> anyhow::Result<KvClient> {
        let policy = RetryPolicy {
            max_attempts: self.attempts,
            attempt_timeout: self.timeout,
            deadline: self.deadline,
            ..RetryPolicy::default()
        };
        policy.validate().map_err(BadInput)?;
        KvClient::connect_lazy(
            self.addr,
            ClientOptions {
                policy,
                tls: self.tls.load()?,
            },
        )
    }
}

/// Runs the parsed command; `this_binary` is how `bench` starts a node (`kv serve`).
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => node::run_blocking(args),
        Command::Bench(args) => run_cli("kv", "warn", || async move {
            let program = std::env::current_exe().context("finding the kv binary")?;
            bench::run(
                &args,
                NodeCommand {
                    program,
                    args: vec!["serve".into()],
                },
            )
            .await?;
            Ok(())
        }),
        Command::GenCerts { dir } => run_cli("kv", "warn", || async move {
            let certs = distlab_runtime::tls::generate(&dir)?;
            println!("wrote {}", dir.display());
            println!(
                "try:\n  kv serve --id n1 --tls-cert {} --tls-key {} --tls-ca {}\n  kv get KEY --addr ADDR --tls-cert {} --tls-key {} --tls-ca {}",
                certs.node_cert.display(),
                certs.node_key.display(),
                certs.ca.display(),
                certs.client_cert.display(),
                certs.client_key.display(),
                certs.ca.display(),
            );
            Ok(())
        }),
        command => run_cli("kv", "warn", || client_command(command)),
    }
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    let span = tracing::info_span!("kv", command = tracing::field::Empty);
    if let Some(trace_id) = distlab_runtime::telemetry::trace_id(&span) {
        tracing::info!(parent: &span, %trace_id, "calling the node");
    }
    async move {
        match command {
            Command::Put {
                key,
                value,
                token,
                no_token,
                client,
            } => {
                let value = if value == "-" {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("reading the value from stdin")?;
                    buf
                } else {
                    value.into_bytes()
                };
                let token = match (token, no_token) {
                    (_, true) => None,
                    (Some(t), false) => Some(Token::new(t.into_bytes()).map_err(BadInput)?),
                    (None, false) => Some(Token::random()),
                };
                let outcome = client.connect()?.put_with_token(key, value, token).await?;
                println!("version={} created={}", outcome.version, outcome.created);
            }
            Command::Get { key, client } => match client.connect()?.get(key.clone()).await? {
                Some(found) => println!("{}", String::from_utf8_lossy(&found.value)),
                None => return Err(anyhow::anyhow!("key {key:?} not found")),
            },
            Command::Del { key, client } => {
                let existed = client.connect()?.delete(key).await?;
                println!("existed={existed}");
            }
            Command::Serve(_) | Command::Bench(_) | Command::GenCerts { .. } => {
                unreachable!("handled in run")
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}
