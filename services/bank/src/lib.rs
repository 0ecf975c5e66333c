//! Project 5: distributed transactions. A bank whose accounts are sharded over several
//! services moves money between them with two-phase commit or with sagas and an outbox on
//! Kafka-lite; money is never created or destroyed, whatever fails.
//!
//! - [`domain`]: accounts, which shard owns each (a stable hash), what a valid transfer is.
//! - [`lock`]: per-account locks for strict two-phase locking, with wait-die or no-wait
//!   against deadlock (pure).
//! - [`participant`]: a 2PC participant's protocol state (prepare, commit, abort, in doubt),
//!   pure; [`participant::service`] puts it behind gRPC (account shards and the ledger), on
//!   the embedded store or on PostgreSQL's own prepared transactions ([`participant::xa`]).
//! - [`coordinator`]: the 2PC coordinator's protocol state under presumed abort (votes,
//!   decision, acknowledgements, recovery from its log), pure; [`coordinator::service`] runs
//!   transfers and whole-bank reads against the participants.
//! - [`saga`]: a transfer as a saga (debit, credit, ledger, notify; compensation; the
//!   dead-letter queue), pure; [`saga::service`] is the orchestrator, [`saga::relay`] its
//!   outbox's relay to Kafka-lite; [`notifier`] consumes what it publishes.
//! - [`front`]: `bank.v1.Bank` over either front (the coordinator or the orchestrator).
//! - [`postgres`]: a throwaway PostgreSQL server (`--store postgres` participants, the
//!   benchmark's single-node anchor).
//! - [`reconcile`]: anti-entropy: balances recomputed from the ledger, drift found and repaired.
//! - [`status`]: the nodes' `/status` detail, one definition for the nodes and the lab.
//! - [`store`]: the embedded stores (sled): balances, prepared records, journal; the decision
//!   log.
//! - [`cluster`]: a bank as local processes (tests, the benchmark).
//! - [`wire`]: conversions between `bank.v1` and the domain, and [`wire::connect`], a client.
//! - [`node`]: `lab node bank --role coordinator|orchestrator|shard|ledger|notifier` flags;
//!   [`cli`]: the `bank` command (`serve`, `transfer`, `balances`, `dlq`, `notifications`,
//!   `reconcile`).

pub mod cli;
pub mod cluster;
pub mod coordinator;
pub mod domain;
pub mod front;
pub mod lock;
pub mod node;
pub mod notifier;
pub mod participant;
pub mod postgres;
pub mod reconcile;
pub mod saga;
pub mod status;
pub mod store;
pub mod wire;

/// Metadata naming a refusal's kind (see bank.proto).
pub const ERROR_KIND: &str = "bank-error";

/// A refusal: the gRPC code and message, with [`ERROR_KIND`] metadata.
pub fn refusal(code: tonic::Code, kind: &str, message: impl Into<String>) -> tonic::Status {
    distlab_runtime::rpc::refusal(code, ERROR_KIND, kind, message)
}

/// The wall clock in milliseconds since the epoch (prepared records' times survive restarts).
pub fn clock_ms() -> u64 {
    distlab_runtime::clock::wall_ms().max(0) as u64
}

/// The wall clock in microseconds: transactions' ages for wait-die.
pub fn clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A traced, lazily connecting channel to each `--peer` of a node (the coordinator's to its
/// participants, a participant's to the coordinator).
pub fn peer_channels(
    args: &distlab_runtime::cli::ValidNodeArgs,
) -> anyhow::Result<Vec<(String, distlab_runtime::channel::TracedChannel)>> {
    let peers: Vec<(String, std::net::SocketAddr)> = args
        .peers
        .iter()
        .map(|(id, addr)| (id.to_string(), *addr))
        .collect();
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    distlab_runtime::channel::per_node(&peers, &distlab_runtime::retry::RetryPolicy::default())
}
