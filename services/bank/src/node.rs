//! `lab node bank --role coordinator|shard|ledger ...` (or `bank serve`): the 2PC roles. Every
//! node takes the bank's shape (`--accounts`, `--opening`, `--shards`) so they agree on which
//! accounts exist and where each lives.

use std::time::Duration;

use distlab_runtime::BadInput;
use distlab_runtime::cli::{NodeArgs, NodeId};
use distlab_runtime::node::Threads;

use crate::coordinator::service::CoordinatorConfig;
use crate::domain::{Bank, shard_of};
use crate::lock::Policy;
use crate::participant::service::ParticipantConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRole {
    /// The transaction coordinator: runs transfers as two-phase commits, logs decisions.
    Coordinator,
    /// An account shard: owns the accounts that hash to it; a 2PC participant.
    Shard,
    /// The ledger: journals every committed transfer; a 2PC participant.
    Ledger,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BankNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    #[arg(long, value_enum)]
    pub role: NodeRole,

    /// Accounts in the bank (acct-0000 ...).
    #[arg(long, default_value_t = 100)]
    pub accounts: usize,
    /// Each account's opening balance.
    #[arg(long, default_value_t = 1000)]
    pub opening: i64,
    /// Account shards: named s1 .. sN, each owning the accounts that hash to it (default: how
    /// many of --members, or else of this node and its peers, are named sK).
    #[arg(long)]
    pub shards: Option<usize>,
    /// The bank's nodes, comma-separated (the lab passes them; its spare nodes have peer
    /// addresses too but are not shards of this bank).
    #[arg(long, value_delimiter = ',')]
    pub members: Vec<String>,
    /// This shard's number (1 .. --shards); default: from its id sK.
    #[arg(long)]
    pub shard: Option<usize>,
    /// The coordinator's node id.
    #[arg(long, value_parser = NodeId::parse, default_value = "tc")]
    pub coordinator_id: NodeId,
    /// The ledger's node id.
    #[arg(long, value_parser = NodeId::parse, default_value = "ledger")]
    pub ledger_id: NodeId,
    /// What a lock conflict does: wait-die (an older transaction waits, a younger one
    /// aborts and is retried) or no-wait (every conflict aborts).
    #[arg(long, default_value = "wait-die")]
    pub policy: Policy,
    /// How long a participant waits for a lock before voting no.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "500ms")]
    pub lock_timeout: Duration,
    /// How long the coordinator waits for a vote.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "2s")]
    pub prepare_timeout: Duration,
    /// Transactions a transfer may take when lock conflicts abort them (each retry keeps the
    /// first one's age, so under wait-die it eventually wins).
    #[arg(long, default_value_t = 16)]
    pub max_attempts: u32,
    /// A participant prepared this long without an outcome asks its coordinator (longer than
    /// --prepare-timeout: a coordinator still collecting votes aborts when asked).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "3s")]
    pub in_doubt_after: Duration,
    /// Fault knob (coordinator): pause this long once every vote is yes, before logging the
    /// commit: participants sit prepared and in doubt (kill the coordinator then).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "0s")]
    pub delay_decision: Duration,
    /// Fault knob (coordinator): pause this long after logging a decision, before telling the
    /// participants.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "0s")]
    pub delay_outcome: Duration,
    /// Do not flush before answering (fast; a crash can lose acknowledged work: only for
    /// seeing what the flushes cost).
    #[arg(long)]
    pub no_fsync: bool,
}

impl BankNodeArgs {
    fn bank(&self) -> Result<Bank, BadInput> {
        if self.accounts == 0 || self.accounts > 1_000_000 {
            return Err(BadInput::new("--accounts must be between 1 and 1000000"));
        }
        if self.opening < 0 {
            return Err(BadInput::new(format!(
                "--opening {} is negative: balances may not be",
                self.opening
            )));
        }
        if (self.accounts as i128) * (self.opening as i128) > i128::from(i64::MAX) {
            return Err(BadInput::new(
                "--accounts x --opening does not fit in a 64-bit total",
            ));
        }
        if self.lock_timeout.is_zero() || self.prepare_timeout <= self.lock_timeout {
            return Err(BadInput::new(
                "--prepare-timeout must be longer than --lock-timeout (a vote comes after the locks)",
            ));
        }
        if self.max_attempts == 0 {
            return Err(BadInput::new("--max-attempts must be at least 1"));
        }
        Ok(Bank {
            accounts: self.accounts,
            opening: self.opening,
        })
    }

    /// How many shards: `--shards`, or the nodes named sK among this one and its peers.
    fn shards(&self) -> usize {
        let is_shard = |id: &str| {
            id.strip_prefix('s')
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
        };
        self.shards.unwrap_or_else(|| {
            if !self.members.is_empty() {
                return self.members.iter().filter(|id| is_shard(id)).count();
            }
            std::iter::once(self.node.id.as_str())
                .chain(self.node.peers.iter().map(|p| p.id.as_str()))
                .filter(|id| is_shard(id))
                .count()
        })
    }

    fn shard_ids(&self) -> Vec<String> {
        (1..=self.shards()).map(|k| format!("s{k}")).collect()
    }

    /// This shard's 0-based index.
    fn shard_index(&self) -> Result<usize, BadInput> {
        let k = match self.shard {
            Some(k) => k,
            None => self
                .node
                .id
                .as_str()
                .strip_prefix('s')
                .and_then(|k| k.parse().ok())
                .ok_or_else(|| {
                    BadInput::new(format!(
                        "shard {}: give --shard K (its id is not sK)",
                        self.node.id
                    ))
                })?,
        };
        if k == 0 || k > self.shards() {
            return Err(BadInput::new(format!(
                "--shard {k} is not between 1 and --shards {}",
                self.shards()
            )));
        }
        Ok(k - 1)
    }
}

/// The node's command line. A flag given twice takes its last value, so the lab can add a
/// user's flags after its own.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: BankNodeArgs,
}

/// Checks service flags a user adds to every node (`lab ... --node-flags`) before any node
/// starts.
pub fn check_flags(flags: &[String]) -> Result<(), String> {
    let mut all = vec!["--role".to_string(), "coordinator".to_string()];
    all.extend(flags.iter().cloned());
    distlab_runtime::cli::parse_service_flags::<Cli>("bank", &all)
        .and_then(|cli| cli.args.bank().map(drop).map_err(|e| e.to_string()))
}

/// `lab node bank ARGS...`: parses the node's flags (a mistake prints usage and exits 2) and
/// runs it.
pub fn main(program: &str, args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from(program)).chain(args);
    match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => run_blocking(cli.args),
        Err(e) => e.exit(),
    }
}

pub fn run_blocking(args: BankNodeArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    distlab_runtime::node::run_main("bank", &id, "info", Threads::One, || run(args))
}

/// Runs a node of any role until SIGTERM/SIGINT. Bad flags fail with [`BadInput`] before
/// anything is bound or written.
pub async fn run(args: BankNodeArgs) -> anyhow::Result<()> {
    let bank = args.bank()?;
    let shards = args.shards();
    if shards == 0 || shards > 64 {
        return Err(BadInput::new(format!(
            "--shards {shards}: a bank needs 1 to 64 shards (named s1 .. sN, or give --shards)"
        ))
        .into());
    }
    let node = args.node.validate()?;
    let fsync = !args.no_fsync;
    match args.role {
        NodeRole::Coordinator => {
            let config = CoordinatorConfig {
                bank,
                shards: args.shard_ids(),
                ledger: args.ledger_id.to_string(),
                fsync,
                lock_timeout: args.lock_timeout,
                prepare_timeout: args.prepare_timeout,
                max_attempts: args.max_attempts,
                delay_decision: args.delay_decision,
                delay_outcome: args.delay_outcome,
            };
            crate::coordinator::service::run(node, config).await
        }
        NodeRole::Shard | NodeRole::Ledger => {
            let accounts = match args.role {
                NodeRole::Shard => {
                    let index = args.shard_index()?;
                    bank.names()
                        .filter(|a| shard_of(a, args.shards()) == index)
                        .collect()
                }
                _ => Vec::new(),
            };
            let config = ParticipantConfig {
                bank,
                accounts,
                policy: args.policy,
                fsync,
                in_doubt_after: args.in_doubt_after,
                read_lease: crate::coordinator::service::READ_LEASE,
                role: if args.role == NodeRole::Shard {
                    "shard"
                } else {
                    "ledger"
                },
            };
            crate::participant::service::run(node, config).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flags_are_named() {
        let e = check_flags(&["--opening=-5".into()]).unwrap_err();
        assert!(e.contains("--opening -5"), "{e}");
        let e = check_flags(&["--policy".into(), "wound-wait".into()]).unwrap_err();
        assert!(e.contains("wound-wait"), "{e}");
        let e = check_flags(&["--lock-timeout".into(), "5s".into()]).unwrap_err();
        assert!(e.contains("--prepare-timeout"), "{e}");
        assert!(
            check_flags(&[
                "--policy".into(),
                "no-wait".into(),
                "--shards".into(),
                "4".into()
            ])
            .is_ok()
        );
    }
}
