//! Running a kv node: `kv serve ...` and `lab node kv ...` both end up in [`run`].

use std::sync::Arc;
use std::time::Duration;

use distlab_runtime::BadInput;
use distlab_runtime::cli::NodeArgs;
use distlab_runtime::clock::Every;
use distlab_runtime::node::{Node, Threads};
use serde_json::json;
use tonic::service::Routes;

use crate::metrics::KvMetrics;
use crate::server::{KvService, Limits};
use crate::status::KvStatus;
use crate::store::{self, MemStore, SledStore, Store, SyncMode, TokenPolicy};

/// Which backend stores the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// In memory: fast, gone with the process.
    Mem,
    /// sled on disk under --data-dir: survives crashes.
    Sled,
}

/// The node contract's flags plus Project 0's own.
#[derive(Debug, Clone, clap::Args)]
pub struct KvNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    /// Storage backend [default: sled with --data-dir, mem without]
    #[arg(long, value_enum)]
    pub store: Option<StoreKind>,

    /// sled only: flush before answering (always) or every 500 ms (never: faster, and an
    /// acknowledged write can be lost to a crash).
    #[arg(long, value_enum, default_value = "always")]
    pub sync: SyncMode,

    /// Longest key accepted, in bytes.
    #[arg(long, default_value_t = Limits::default().max_key_bytes)]
    pub max_key_bytes: usize,

    /// Longest value accepted, in bytes (at most 64 MiB).
    #[arg(long, default_value_t = Limits::default().max_value_bytes)]
    pub max_value_bytes: usize,

    /// How long idempotency tokens are remembered; must exceed clients' retry deadlines.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "10m")]
    pub token_ttl: Duration,

    /// How many idempotency tokens are remembered at most (oldest forgotten first).
    #[arg(long, default_value_t = TokenPolicy::default().capacity)]
    pub token_capacity: usize,
}

/// The node's command line. A flag given twice takes its last value, so the lab can add a
/// user's flags after its own.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: KvNodeArgs,
}

/// Checks service flags a user adds to every node (`lab ... --node-flags`) before any node
/// starts: `Err` says what the node would refuse.
pub fn check_flags(flags: &[String]) -> Result<(), String> {
    distlab_runtime::cli::parse_service_flags::<Cli>("kv", flags).map(|_| ())
}

/// `lab node kv ARGS...`: parses the node's flags (a mistake prints usage and exits 2) and
/// runs it. `program` is what usage messages call the command.
pub fn main(program: &str, args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from(program)).chain(args);
    match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => run_blocking(cli.args),
        Err(e) => e.exit(),
    }
}

/// Runs a node with its telemetry and runtime until it stops; the process's exit code.
pub fn run_blocking(args: KvNodeArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    distlab_runtime::node::run_main("kv", &id, "info", Threads::PerCore, || run(args))
}

/// How often expired idempotency tokens are swept.
const TOKEN_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Runs a kv node until SIGTERM/SIGINT. Bad flags fail with [`BadInput`] before anything is
/// bound or written.
pub async fn run(args: KvNodeArgs) -> anyhow::Result<()> {
    let node_args = args.node.validate()?;
    let kind = match (args.store, &node_args.data_dir) {
        (Some(StoreKind::Sled), None) => {
            return Err(BadInput::new("--store sled needs --data-dir DIR").into());
        }
        (Some(kind), _) => kind,
        (None, Some(_)) => StoreKind::Sled,
        (None, None) => StoreKind::Mem,
    };
    if args.max_key_bytes == 0 {
        return Err(BadInput::new("--max-key-bytes must be at least 1").into());
    }
    if args.max_value_bytes > 64 * 1024 * 1024 {
        return Err(BadInput::new("--max-value-bytes must be at most 67108864 (64 MiB)").into());
    }
    if args.token_capacity == 0 || args.token_ttl.is_zero() {
        return Err(
            BadInput::new("--token-capacity and --token-ttl must be greater than zero").into(),
        );
    }
    let policy = TokenPolicy {
        ttl: args.token_ttl,
        capacity: args.token_capacity,
    };
    let limits = Limits {
        max_key_bytes: args.max_key_bytes,
        max_value_bytes: args.max_value_bytes,
    };

    let store: Arc<dyn Store> = match (kind, &node_args.data_dir) {
        (StoreKind::Sled, Some(dir)) => Arc::new(SledStore::open(dir, policy, args.sync)?),
        _ => Arc::new(MemStore::new(policy)),
    };
    let config = json!({
        "store": store.kind(),
        "sync": (kind == StoreKind::Sled).then_some(args.sync),
        "limits": limits,
        "token_ttl_secs": policy.ttl.as_secs_f64(),
        "token_capacity": policy.capacity,
        "tls": node_args.tls.is_some(),
    });

    let mut node = Node::bind(node_args, "proj0", "kv").await?;
    let metrics = KvMetrics::register(node.registry());
    let sweeper = tokio::spawn(sweep_tokens(store.clone(), node.shutdown_token()));

    let service = KvService::new(store.clone(), limits, metrics.clone());
    let status = Arc::new(KvStatus {
        store: store.clone(),
        metrics,
        config,
    });
    let served = node.serve(Routes::new(service.into_server()), status).await;

    sweeper.abort();
    store.flush().await?;
    tracing::info!(event = "node_stopped", "store flushed; bye");
    served
}

async fn sweep_tokens(store: Arc<dyn Store>, shutdown: tokio_util::sync::CancellationToken) {
    let mut every = Every::new(TOKEN_SWEEP_EVERY, &shutdown);
    while every.tick().await {
        match store.expire_tokens(store::now_ms()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "expired idempotency tokens"),
            Err(e) => tracing::warn!(error = %e, "expiring idempotency tokens failed"),
        }
    }
}
