//! The `bank` command line: `bank serve` runs a node (the same as `lab node bank`),
//! `bank transfer` moves money through a coordinator, `bank balances` reads every balance in
//! one transaction and checks the total.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use distlab_proto::bank::v1 as pb;

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
        } => call(coordinator.addr, |mut client| async move {
            let id = id.unwrap_or_else(|| format!("cli-{:016x}", rand::random::<u64>()));
            let answer = client
                .transfer(pb::TransferRequest {
                    id: id.clone(),
                    from,
                    to,
                    amount,
                })
                .await?
                .into_inner();
            if answer.committed {
                println!(
                    "transfer {id}: committed (tx {}, {} attempt(s))",
                    answer.tx, answer.attempts
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!("transfer {id}: aborted: {}", answer.reason);
                Ok(ExitCode::FAILURE)
            }
        }),
        Command::Balances { total, coordinator } => {
            call(coordinator.addr, |mut client| async move {
                let answer = client.read_all(pb::ReadAllRequest {}).await?.into_inner();
                if !total {
                    for b in &answer.balances {
                        println!("{}\t{}", b.account, b.balance);
                    }
                }
                println!("total\t{}", answer.total);
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

fn call<F, Fut>(addr: SocketAddr, f: F) -> ExitCode
where
    F: FnOnce(pb::bank_client::BankClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, tonic::Status>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let endpoint = match distlab_runtime::channel::endpoint(addr, Duration::from_secs(2)) {
            Ok(e) => e.timeout(Duration::from_secs(30)),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        };
        let client = pb::bank_client::BankClient::new(endpoint.connect_lazy());
        match f(client).await {
            Ok(code) => code,
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                eprintln!("error: {}", distlab_runtime::rpc::describe(&status));
                ExitCode::from(2)
            }
            Err(status) => {
                eprintln!("error: {addr}: {}", distlab_runtime::rpc::describe(&status));
                ExitCode::FAILURE
            }
        }
    })
}
