//! `lab node bank --role coordinator|orchestrator|shard|ledger|notifier ...` (or `bank
//! serve`). Every node takes the bank's shape (`--accounts`, `--opening`, `--shards`) so they
//! agree on which accounts exist and where each lives. The coordinator runs transfers as
//! two-phase commits, the orchestrator as sagas; shards and the ledger serve both.

use std::time::Duration;

use distlab_runtime::BadInput;
use distlab_runtime::cli::{NodeArgs, NodeId};
use distlab_runtime::node::Threads;

use crate::coordinator::service::CoordinatorConfig;
use crate::domain::{Bank, shard_of};
use crate::lock::Policy;
use crate::notifier::NotifierConfig;
use crate::participant::service::ParticipantConfig;
use crate::participant::storage::StoreKind;
use crate::saga::Attempts;
use crate::saga::relay::RelayConfig;
use crate::saga::service::OrchestratorConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRole {
    /// The transaction coordinator: runs transfers as two-phase commits, logs decisions.
    Coordinator,
    /// The saga orchestrator: runs transfers as sagas, keeps the saga log, the dead-letter
    /// queue and the outbox it relays to Kafka-lite.
    Orchestrator,
    /// An account shard: owns the accounts that hash to it; a 2PC participant.
    Shard,
    /// The ledger: journals every committed transfer; a 2PC participant.
    Ledger,
    /// The notifications service: consumes the transfer events from Kafka-lite, one
    /// notification per completed or compensated transfer.
    Notifier,
}

/// How the bank runs transfers: what `--role coordinator` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Two-phase commit: the coordinator is a transaction coordinator.
    #[value(name = "2pc")]
    TwoPhaseCommit,
    /// Sagas: the coordinator is a saga orchestrator.
    Saga,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BankNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    #[arg(long, value_enum)]
    pub role: NodeRole,

    /// What `--role coordinator` runs: `2pc` (a transaction coordinator) or `saga` (the saga
    /// orchestrator, as `--role orchestrator`). The other roles serve both modes.
    #[arg(long, value_enum, default_value = "2pc")]
    pub mode: Mode,

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
    /// Saga mode (orchestrator): how long one attempt of a step may take.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "1s")]
    pub step_timeout: Duration,
    /// Saga mode: attempts of a debit or credit before the saga compensates.
    #[arg(long, default_value_t = 3)]
    pub forward_attempts: u32,
    /// Saga mode: attempts of a compensation or of the ledger step before the saga goes to
    /// the dead-letter queue.
    #[arg(long, default_value_t = 30)]
    pub must_finish_attempts: u32,
    /// Kafka-lite broker node ids among the peers (orchestrator: where the outbox goes;
    /// notifier: where events come from). Without them the outbox is not relayed.
    #[arg(long, value_delimiter = ',')]
    pub brokers: Vec<String>,
    /// Kafka-lite controller node ids among the peers (orchestrator: to create the topic).
    #[arg(long, value_delimiter = ',')]
    pub controllers: Vec<String>,
    /// The topic of transfer events.
    #[arg(long, default_value = "bank-transfers")]
    pub topic: String,
    /// The topic's partitions, when the orchestrator creates it.
    #[arg(long, default_value_t = 3)]
    pub topic_partitions: u32,
    /// The notifier's consumer group.
    #[arg(long, default_value = "notifications")]
    pub group: String,
    /// Fault knob: `ID=N`: on node ID, every Nth credit is acknowledged and recorded but not
    /// added to the balance (real drift, for the anti-entropy job to find). Repeatable.
    #[arg(long, value_parser = parse_skip)]
    pub skip_credit_every: Vec<(String, u64)>,
    /// The coordinator (orchestrator) runs an anti-entropy pass this often: every balance
    /// recomputed from the ledger's journal and compared (0s: only on `bank reconcile`).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "0s")]
    pub reconcile_every: Duration,
    /// The periodic anti-entropy pass repairs the drift it finds (else it reports it).
    #[arg(long)]
    pub repair: bool,
    /// Where a shard or the ledger keeps its state: `embedded` (sled, the default) or
    /// `postgres` (a throwaway PostgreSQL server in its data dir, prepared transactions as
    /// PREPARE TRANSACTION / COMMIT PREPARED: two-phase commit only).
    #[arg(long, value_enum, default_value = "embedded")]
    pub store: StoreKind,
    /// Do not flush before answering (fast; a crash can lose acknowledged work: only for
    /// seeing what the flushes cost).
    #[arg(long)]
    pub no_fsync: bool,
}

/// `ID=N` of `--skip-credit-every`.
fn parse_skip(text: &str) -> Result<(String, u64), String> {
    let (id, n) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected ID=N, e.g. s1=40"))?;
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: N must be a whole number above 0"))?;
    if id.is_empty() {
        return Err(format!("{text:?}: expected ID=N, e.g. s1=40"));
    }
    Ok((id.to_string(), n))
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
        if self.step_timeout.is_zero() {
            return Err(BadInput::new("--step-timeout must be more than 0"));
        }
        if self.forward_attempts == 0 || self.must_finish_attempts == 0 {
            return Err(BadInput::new(
                "--forward-attempts and --must-finish-attempts must be at least 1",
            ));
        }
        if self.topic.is_empty() || self.topic_partitions == 0 || self.topic_partitions > 64 {
            return Err(BadInput::new(
                "--topic needs a name and --topic-partitions 1 to 64",
            ));
        }
        if self.store == StoreKind::Postgres {
            if self.mode == Mode::Saga {
                return Err(BadInput::new(
                    "--store postgres serves two-phase commit (PostgreSQL's prepared transactions): \
                     saga steps need --store embedded",
                ));
            }
            if !self.skip_credit_every.is_empty() {
                return Err(BadInput::new(
                    "--skip-credit-every is a fault knob of the embedded store: not with --store postgres",
                ));
            }
        }
        Ok(Bank {
            accounts: self.accounts,
            opening: self.opening,
        })
    }

    /// The periodic anti-entropy pass, if any: how often, and whether it repairs.
    fn reconcile_schedule(&self) -> Option<(Duration, bool)> {
        (!self.reconcile_every.is_zero()).then_some((self.reconcile_every, self.repair))
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
    let role = match (args.role, args.mode) {
        (NodeRole::Coordinator, Mode::Saga) => NodeRole::Orchestrator,
        (role, _) => role,
    };
    match role {
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
                reconcile: args.reconcile_schedule(),
            };
            crate::coordinator::service::run(node, config).await
        }
        NodeRole::Orchestrator => {
            let config = OrchestratorConfig {
                bank,
                shards: args.shard_ids(),
                ledger: args.ledger_id.to_string(),
                fsync,
                step_timeout: args.step_timeout,
                attempts: Attempts {
                    forward: args.forward_attempts,
                    must_finish: args.must_finish_attempts,
                },
                relay: RelayConfig {
                    brokers: args.brokers.clone(),
                    controllers: args.controllers.clone(),
                    topic: args.topic.clone(),
                    partitions: args.topic_partitions,
                },
                reconcile: args.reconcile_schedule(),
            };
            crate::saga::service::run(node, config).await
        }
        NodeRole::Notifier => {
            let config = NotifierConfig {
                brokers: args.brokers.clone(),
                topic: args.topic.clone(),
                group: args.group.clone(),
                fsync,
            };
            crate::notifier::run(node, config).await
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
                skip_credit_every: args
                    .skip_credit_every
                    .iter()
                    .rev()
                    .find(|(id, _)| id == args.node.id.as_str())
                    .map(|(_, n)| *n),
                store: args.store,
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
        let e = check_flags(&["--skip-credit-every".into(), "s1".into()]).unwrap_err();
        assert!(e.contains("expected ID=N"), "{e}");
        let e = check_flags(&["--skip-credit-every".into(), "s1=0".into()]).unwrap_err();
        assert!(e.contains("above 0"), "{e}");
        let saga_on_postgres = ["--mode", "saga", "--store", "postgres"].map(String::from);
        let e = check_flags(&saga_on_postgres).unwrap_err();
        assert!(e.contains("two-phase commit"), "{e}");
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
