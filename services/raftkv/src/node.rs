//! Running a raftkv node: `raftkv serve ...` and `lab node raftkv ...` both end up in [`run`].
//!
//! Bootstrapping: the nodes named by `--initial-members` (default: this node and all its
//! peers) form the first cluster (`distlab_raft::boot`). A node outside that list joins: it asks the cluster to add it (learner,
//! catch up, then voter by joint consensus) until one does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distlab_proto::raftkv::v1 as pb;
use distlab_raft::flags::{Fsync, RaftFlags, first_members};
use distlab_raft::observer::Committed;
use distlab_raft::{LeaseClock, Network, RaftRpc};
use distlab_runtime::BadInput;
use distlab_runtime::cli::{NodeArgs, NodeId};
use distlab_runtime::node::{Node, Threads};
use distlab_runtime::retry::RetryPolicy;
use openraft::Config;
use openraft::storage::RaftLogStorage;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::client::RaftKvClient;
use crate::metrics::RaftKvMetrics;
use crate::server::{KvApi, ReadMode};
use crate::status::RaftKvStatus;
use crate::store::Storage;
use crate::types::{Names, Raft, raft_id};

/// The node contract's flags plus Project 2's own.
#[derive(Debug, Clone, clap::Args)]
pub struct RaftKvNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    /// The first cluster's members, comma-separated (default: this node and every --peer).
    /// A node not among them joins the running cluster instead.
    #[arg(long, value_delimiter = ',', value_parser = NodeId::parse)]
    pub initial_members: Vec<NodeId>,

    /// How reads are served.
    #[arg(long, value_enum, default_value = "read-index")]
    pub read_mode: ReadMode,

    #[command(flatten)]
    pub raft: RaftFlags,

    /// Lease length for `--read-mode lease`, as a fraction of the election timeout; below 1,
    /// the rest is the margin for clock drift.
    #[arg(long, default_value_t = 0.6)]
    pub lease_fraction: f64,
}

/// The node's command line. A flag given twice takes its last value, so the lab can add a
/// user's flags after its own.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: RaftKvNodeArgs,
}

/// Checks service flags a user adds to every node (`lab ... --node-flags`) before any node
/// starts: `Err` says what the node would refuse.
pub fn check_flags(flags: &[String]) -> Result<(), String> {
    distlab_runtime::cli::parse_service_flags::<Cli>("raftkv", flags).and_then(|cli| {
        cli.args
            .raft_config()
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// `lab node raftkv ARGS...`: parses the node's flags (a mistake prints usage and exits 2)
/// and runs it.
pub fn main(program: &str, args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from(program)).chain(args);
    match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => run_blocking(cli.args),
        Err(e) => e.exit(),
    }
}

pub fn run_blocking(args: RaftKvNodeArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    // openraft narrates every vote and replication step at INFO; the lab's log pane and
    // timeline want this node's own events. RUST_LOG=info shows openraft's too.
    distlab_runtime::node::run_main("raftkv", &id, "info,openraft=warn", Threads::One, || {
        run(args)
    })
}

impl RaftKvNodeArgs {
    fn raft_config(&self) -> Result<Config, BadInput> {
        if !(self.lease_fraction > 0.0 && self.lease_fraction < 1.0) {
            return Err(BadInput::new(format!(
                "--lease-fraction {} must be between 0 and 1 (exclusive): the lease must end before an election can",
                self.lease_fraction
            )));
        }
        self.raft.config("raftkv")
    }
}

/// Runs a raftkv node until SIGTERM/SIGINT. Bad flags fail with [`BadInput`] before anything
/// is bound or written.
pub async fn run(args: RaftKvNodeArgs) -> anyhow::Result<()> {
    let node_args = args.node.validate()?;
    let config = Arc::new(args.raft_config()?);
    let Some(data_dir) = node_args.data_dir.clone() else {
        return Err(BadInput::new(
            "raftkv needs --data-dir DIR (the Raft log and state live there)",
        )
        .into());
    };
    let me_name = node_args.id.to_string();
    let peer_names: Vec<String> = node_args.peers.keys().map(|p| p.to_string()).collect();
    let given: Vec<String> = args.initial_members.iter().map(|m| m.to_string()).collect();
    let initial = first_members(
        &me_name,
        &peer_names.iter().map(String::as_str).collect::<Vec<_>>(),
        &given,
        "--initial-members",
    )?;
    let peers: Vec<(String, std::net::SocketAddr)> = node_args
        .peers
        .iter()
        .map(|(id, addr)| (id.to_string(), *addr))
        .collect();
    let names =
        Names::new(std::iter::once(me_name.as_str()).chain(peers.iter().map(|(n, _)| n.as_str())));
    distlab_raft::openraft_logs::install(&names);
    let me = raft_id(&me_name);

    let mut storage = Storage::open(&data_dir, args.raft.fsync == Fsync::Always)?;
    let restarted = storage.log.read_vote().await?.is_some();

    let mut node = Node::bind(node_args, "proj2", "raftkv").await?;
    let metrics = RaftKvMetrics::register(node.registry());
    let lease_clock = Arc::new(LeaseClock::default());
    let network = Network::new(&peers, lease_clock.clone())?;
    let raft = Raft::new(
        me,
        config.clone(),
        network,
        storage.log.clone(),
        storage.machine.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting Raft: {e}"))?;

    let shutdown = node.shutdown_token();
    let committed = Arc::new(Committed::default());
    let (machine, figures) = (storage.machine.clone(), metrics.clone());
    tokio::spawn(distlab_raft::observer::observe(
        raft.clone(),
        names.clone(),
        metrics.raft.clone(),
        committed.clone(),
        shutdown.clone(),
        move || figures.mirror(&machine.stats),
    ));
    if initial.contains(&me_name) {
        distlab_raft::boot::initialize(&raft, &initial).await;
    } else {
        tokio::spawn(join(
            raft.clone(),
            me_name.clone(),
            peers.clone(),
            shutdown.clone(),
        ));
    }

    let election_max = Duration::from_millis(config.election_timeout_max);
    let lease = Duration::from_millis(config.election_timeout_min).mul_f64(args.lease_fraction);
    let votes_from = if restarted {
        Instant::now() + election_max
    } else {
        Instant::now()
    };
    let rpc = RaftRpc {
        raft: raft.clone(),
        votes_from,
    };
    let api = KvApi {
        raft: raft.clone(),
        me,
        machine: storage.machine.clone(),
        names: names.clone(),
        read_mode: args.read_mode,
        lease_clock,
        lease,
        metrics,
        proposer: crate::proposer::Proposer::start(raft.clone()),
    };
    let status = Arc::new(RaftKvStatus {
        raft: raft.clone(),
        names,
        me: me_name,
        machine: storage.machine.clone(),
        committed,
        config: {
            let mut shown = args.raft.describe(&config);
            shown["read_mode"] = json!(args.read_mode);
            shown["lease_ms"] = json!(lease.as_millis() as u64);
            shown["initial_members"] = json!(initial);
            shown
        },
    });
    let routes = Routes::new(rpc.service()).add_service(pb::raft_kv_server::RaftKvServer::new(api));
    let served = node.serve(routes, status).await;

    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "stopping Raft");
    }
    storage.flusher.flush_now().await?;
    tracing::info!(event = "node_stopped", "Raft stopped, store flushed; bye");
    served
}

/// Asks the cluster to add this node until one of its members does (or this node is a member
/// already, after a restart).
async fn join(
    raft: Raft,
    me: String,
    peers: Vec<(String, std::net::SocketAddr)>,
    shutdown: CancellationToken,
) {
    if raft.is_initialized().await.unwrap_or(false) {
        return;
    }
    // The client library finds the leader (following hints, skipping nodes that are down).
    let policy = RetryPolicy {
        max_attempts: 20,
        // Adding waits for this node to catch up as a learner.
        attempt_timeout: Duration::from_secs(30),
        deadline: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let cluster = match RaftKvClient::connect_lazy(&peers, policy) {
        Ok(cluster) => cluster,
        Err(e) => {
            tracing::error!(error = %e, "cannot join: no usable peer addresses");
            return;
        }
    };
    loop {
        let outcome = tokio::select! {
            outcome = cluster.add_member(&me) => outcome,
            () = shutdown.cancelled() => return,
        };
        match outcome {
            Ok(reply) => {
                tracing::info!(event = "joined", voters = ?reply.voters, "joined the cluster as a voter");
                return;
            }
            Err(status) => tracing::info!(
                error = %distlab_runtime::rpc::describe(&status),
                "joining failed; retrying"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<Cli, String> {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        distlab_runtime::cli::parse_service_flags::<Cli>("raftkv", &flags)
    }

    /// The lab puts a user's flags after its own: the last value of a flag wins, and
    /// repeatable flags still collect every value.
    #[test]
    fn later_flags_override_earlier_ones() {
        let cli = parse(&[
            "--read-mode",
            "local",
            "--peer",
            "n2=127.0.0.1:7002",
            "--peer",
            "n3=127.0.0.1:7003",
            "--read-mode",
            "lease",
        ])
        .unwrap();
        assert_eq!(cli.args.read_mode, ReadMode::Lease);
        assert_eq!(cli.args.node.peers.len(), 2);
        assert!(check_flags(&["--fsync".into(), "sometimes".into()]).is_err());
        let e = check_flags(&["--lease-fraction".into(), "1.5".into()]).unwrap_err();
        assert!(e.contains("--lease-fraction 1.5"), "{e}");
    }
}
