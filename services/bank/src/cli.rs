//! The `bank` command line: `bank serve` runs a node (the same as `lab node bank`),
//! `bank transfer` moves money through a coordinator, `bank balances` reads every balance in
//! one transaction and checks the total.

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
    about = "A sharded bank on two-phase commit (distlab Project 5)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the same as `lab node bank`).
    Serve(Box<crate::node::BankNodeArgs>),
    /// Move AMOUNT from one account to another; prints committed or aborted and why.
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
    /// Every balance, read in one transaction, and their total.
    Balances {
        /// Only the total.
        #[arg(long)]
        total: bool,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// The coordinator's gRPC address.
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
            if !answer.committed {
                println!("transfer {id}: aborted: {}", answer.reason);
                anyhow::bail!("transfer {id} aborted");
            }
            println!(
                "transfer {id}: committed (tx {}, {} attempt(s))",
                answer.tx, answer.attempts
            );
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
