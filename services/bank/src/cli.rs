//! The `bank` command line: `bank serve` runs a node (the same as `lab node bank`),
//! `bank transfer` moves money through a coordinator or an orchestrator, `bank balances`
//! reads every balance and the total, `bank dlq` works the orchestrator's dead-letter queue,
//! `bank notifications` lists what the notifications service wrote.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use distlab_proto::bank::v1 as pb;
use distlab_runtime::node::run_cli;

#[derive(Debug, Parser)]
#[command(
    name = "bank",
    version,
    about = "A sharded bank on two-phase commit or sagas (distlab Project 5)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the same as `lab node bank`).
    Serve(Box<crate::node::BankNodeArgs>),
    /// Move AMOUNT from one account to another; prints how it ended (2PC: committed or
    /// aborted; saga: completed, refused, compensated or dead-lettered) and why.
    Transfer {
        from: String,
        to: String,
        amount: i64,
        /// The transfer's idempotency key (default: a random one). Repeat it to retry safely.
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Every balance and their total (2PC: read in one transaction; saga: as each shard has
    /// it, with the money in flight).
    Balances {
        /// Only the total.
        #[arg(long)]
        total: bool,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Anti-entropy: every balance recomputed from the ledger's journal and compared with the
    /// shards'; each drifted account with the transfers to look at. Exit 1 if any drifted.
    Reconcile {
        /// Correct each drift at its shard.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// The saga orchestrator's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// The orchestrator's gRPC address.
        #[arg(long, env = "BANK_ORCHESTRATOR", value_name = "ADDR", global = true)]
        orchestrator: Option<SocketAddr>,
    },
    /// The notifications written, one line each, and how many redeliveries were absorbed.
    Notifications {
        /// The notifications service's gRPC address.
        #[arg(long, env = "BANK_NOTIFIER", value_name = "ADDR")]
        notifier: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// The sagas parked: transfer, step, last error, how long.
    List,
    /// Run parked sagas again from the step they stopped at.
    Retry(DlqTarget),
    /// Give parked sagas up (they end `discarded`; their money in flight stays put).
    Discard(DlqTarget),
}

#[derive(Debug, Clone, clap::Args)]
pub struct DlqTarget {
    /// A transfer id.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub id: Option<String>,
    /// Every parked saga.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// The coordinator's (2PC) or orchestrator's (saga) gRPC address.
    #[arg(long = "coordinator", env = "BANK_COORDINATOR", value_name = "ADDR")]
    pub addr: SocketAddr,
}

/// Runs the command; exit 0, 1 if a transfer aborted or a call failed, 2 for bad input.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => crate::node::run_blocking(*args),
        Command::Transfer {
            from,
            to,
            amount,
            id,
            coordinator,
        } => run_cli("bank", "warn", move || async move {
            let mut client = connect(coordinator.addr)?;
            let id = id.unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
            let answer = client
                .transfer(pb::TransferRequest {
                    id: id.clone(),
                    from,
                    to,
                    amount,
                })
                .await
                .map_err(classify)?
                .into_inner();
            let state = if answer.state.is_empty() {
                if answer.committed {
                    "committed"
                } else {
                    "aborted"
                }
            } else {
                answer.state.as_str()
            };
            if !answer.committed {
                println!("transfer {id}: {state}: {}", answer.reason);
                anyhow::bail!("transfer {id} did not move the money ({state})");
            }
            if answer.tx == 0 {
                println!("transfer {id}: {state}");
            } else {
                println!(
                    "transfer {id}: {state} (tx {}, {} attempt(s))",
                    answer.tx, answer.attempts
                );
            }
            Ok(())
        }),
        Command::Balances { total, coordinator } => run_cli("bank", "warn", move || async move {
            let mut client = connect(coordinator.addr)?;
            let answer = client
                .read_all(pb::ReadAllRequest {})
                .await
                .map_err(classify)?
                .into_inner();
            if !total {
                for b in &answer.balances {
                    println!("{}\t{}", b.account, b.balance);
                }
            }
            println!("total\t{}", answer.total);
            if answer.in_flight_before != 0 || answer.in_flight_after != 0 {
                println!(
                    "in flight\t{} before the reads, {} after",
                    answer.in_flight_before, answer.in_flight_after
                );
            }
            Ok(())
        }),
        Command::Reconcile {
            repair,
            coordinator,
        } => run_cli("bank", "warn", move || async move {
            let mut client = connect(coordinator.addr)?;
            let answer = client
                .reconcile(pb::ReconcileRequest { repair })
                .await
                .map_err(classify)?
                .into_inner();
            for d in &answer.drifts {
                let what = match (d.repaired, d.error.is_empty()) {
                    (true, _) => "repaired".to_string(),
                    (false, false) => format!("not repaired: {}", d.error),
                    (false, true) => "found".to_string(),
                };
                println!(
                    "{}\tholds {}, the ledger says {} ({:+})\t{what}\ttransfers: {}",
                    d.account,
                    d.balance,
                    d.expected,
                    d.expected - d.balance,
                    d.transfers.join(" ")
                );
            }
            println!(
                "{} accounts against {} journal entries: {} drifted, {} not judged (a step in flight)",
                answer.accounts,
                answer.journal,
                answer.drifts.len(),
                answer.uncertain.len()
            );
            let unrepaired = answer.drifts.iter().filter(|d| !d.repaired).count();
            anyhow::ensure!(unrepaired == 0, "{unrepaired} account(s) drifted");
            Ok(())
        }),
        Command::Dlq {
            command,
            orchestrator,
        } => run_cli("bank", "warn", move || async move {
            let Some(addr) = orchestrator else {
                return Err(distlab_runtime::BadInput::new(
                    "give the orchestrator's address: --orchestrator ADDR (or BANK_ORCHESTRATOR)",
                )
                .into());
            };
            let mut client = pb::dead_letters_client::DeadLettersClient::new(crate::wire::channel(
                addr,
                Duration::from_secs(30),
            )?);
            let retry = matches!(command, DlqCommand::Retry(_));
            match command {
                DlqCommand::List => {
                    let sagas = client
                        .list(pb::DeadLettersRequest {})
                        .await
                        .map_err(classify)?
                        .into_inner()
                        .sagas;
                    for s in &sagas {
                        println!(
                            "{}\t{} -> {} {}\tat {}\t{} s\t{}",
                            s.id,
                            s.from,
                            s.to,
                            s.amount,
                            s.step,
                            s.since_ms / 1000,
                            s.error
                        );
                    }
                    println!("{} dead-lettered", sagas.len());
                }
                DlqCommand::Retry(target) | DlqCommand::Discard(target) => {
                    let request = pb::DeadLetterRequest {
                        id: target.id.unwrap_or_default(),
                        all: target.all,
                    };
                    let ids = if retry {
                        client.retry(request).await
                    } else {
                        client.discard(request).await
                    }
                    .map_err(classify)?
                    .into_inner()
                    .ids;
                    let verb = if retry { "retried" } else { "discarded" };
                    for id in &ids {
                        println!("{verb} {id}");
                    }
                    println!("{} {verb}", ids.len());
                }
            }
            Ok(())
        }),
        Command::Notifications { notifier } => run_cli("bank", "warn", move || async move {
            let mut client = pb::notifications_client::NotificationsClient::new(
                crate::wire::channel(notifier, Duration::from_secs(30))?,
            );
            let mut from = 0;
            let mut count = 0;
            let duplicates = loop {
                let page = client
                    .list(pb::NotificationsRequest { from, limit: 1000 })
                    .await
                    .map_err(classify)?
                    .into_inner();
                let Some(last) = page.notifications.last() else {
                    break page.duplicates;
                };
                from = last.seq + 1;
                for n in &page.notifications {
                    count += 1;
                    println!(
                        "{}\t{}\t{} -> {} {}",
                        n.transfer, n.outcome, n.from, n.to, n.amount
                    );
                }
            };
            println!("{count} notifications, {duplicates} redeliveries absorbed");
            Ok(())
        }),
    }
}

fn connect(
    addr: SocketAddr,
) -> anyhow::Result<pb::bank_client::BankClient<tonic::transport::Channel>> {
    crate::wire::connect(addr, Duration::from_secs(30))
}

/// A refusal of bad input exits 2 (`BadInput`); any other failure 1.
fn classify(status: tonic::Status) -> anyhow::Error {
    let message = distlab_runtime::rpc::describe(&status);
    if status.code() == tonic::Code::InvalidArgument {
        distlab_runtime::BadInput::new(message).into()
    } else {
        anyhow::anyhow!(message)
    }
}
