//! Running a controller node (`lab node log --role controller ...`): its Raft store and state
//! machine, the Raft peer service, the controller API, the fencing loop.
//!
//! The quorum is `--controllers` (the nodes that form the first cluster; under the lab
//! `--peer` names brokers too, so it cannot be "every peer"). Raft's messages go only to
//! those, through their `--peer` addresses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use distlab_proto::log::v1 as pb;
use distlab_raft::flags::{Fsync, RaftFlags};
use distlab_raft::observer::{Committed, RaftFigures};
use distlab_raft::{LeaseClock, Names, Network, RaftRpc, raft_id};
use distlab_runtime::BadInput;
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::node::Node;
use openraft::storage::RaftLogStorage;
use tonic::service::Routes;

use super::service::{ControllerApi, LeaderLiveness, fence_silent_brokers};
use super::status::ControllerStatus;
use super::{LogStore, MetadataMachine, Raft};

/// A controller's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerFlags {
    #[command(flatten)]
    pub raft: RaftFlags,

    /// A broker the controller leader has not heard from for this long is fenced: its
    /// partitions get new leaders and it leaves every ISR.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "2s")]
    pub broker_session_timeout: Duration,

    /// The default for topics created without saying: a replica outside the ISR may lead
    /// when no in-sync one is alive (the partition stays available; what only the dead
    /// leader had is lost). Kafka's `unclean.leader.election.enable`.
    #[arg(long)]
    pub unclean_leader_election: bool,
}

impl ControllerFlags {
    pub fn check(&self) -> Result<openraft::Config, BadInput> {
        if self.broker_session_timeout < Duration::from_millis(100) {
            return Err(BadInput::new(format!(
                "--broker-session-timeout {} is below 100ms",
                distlab_runtime::duration::format(self.broker_session_timeout)
            )));
        }
        self.raft.config("controller")
    }
}

/// Runs a controller until SIGTERM/SIGINT. `quorum`: every controller's id, this one among
/// them, each other one with a `--peer` address.
pub async fn run(
    node_args: ValidNodeArgs,
    quorum: Vec<String>,
    flags: ControllerFlags,
) -> anyhow::Result<()> {
    let config = Arc::new(flags.check()?);
    let Some(data_dir) = node_args.data_dir.clone() else {
        return Err(BadInput::new(
            "a controller needs --data-dir DIR (the metadata log lives there)",
        )
        .into());
    };
    let me_name = node_args.id.to_string();
    let peers: Vec<(String, std::net::SocketAddr)> = node_args
        .peers
        .iter()
        .filter(|(id, _)| quorum.iter().any(|c| c == id.as_str()))
        .map(|(id, addr)| (id.to_string(), *addr))
        .collect();
    let names =
        Names::new(std::iter::once(me_name.as_str()).chain(peers.iter().map(|(n, _)| n.as_str())));
    distlab_raft::openraft_logs::install(&names);
    let me = raft_id(&me_name);

    let (db, flusher) =
        distlab_raft::boot::open_store(&data_dir, flags.raft.fsync == Fsync::Always)?;
    let mut log = LogStore::open(&db, flusher.clone())?;
    let machine = MetadataMachine::open(&db, flusher.clone())?;
    let restarted = log.read_vote().await?.is_some();

    let mut node = Node::bind(node_args, "proj3", "log").await?;
    node.add_ready_field("role", "controller");
    let figures = RaftFigures::register(node.registry());
    let network = Network::new(&peers, Arc::new(LeaseClock::default()))?;
    let raft = Raft::new(me, config.clone(), network, log, machine.clone())
        .await
        .map_err(|e| anyhow::anyhow!("starting Raft: {e}"))?;

    let shutdown = node.shutdown_token();
    let committed = Arc::new(Committed::default());
    tokio::spawn(distlab_raft::observer::observe(
        raft.clone(),
        names.clone(),
        figures,
        committed.clone(),
        shutdown.clone(),
        || {},
    ));
    distlab_raft::boot::initialize(&raft, &quorum).await;

    // A restarted node forgot whom it heard from: it does not vote for an election timeout.
    let votes_from = if restarted {
        Instant::now() + Duration::from_millis(config.election_timeout_max)
    } else {
        Instant::now()
    };
    let api = Arc::new(ControllerApi {
        raft: raft.clone(),
        me,
        names: names.clone(),
        machine: machine.clone(),
        liveness: Arc::new(LeaderLiveness::new(flags.broker_session_timeout)),
        unclean_by_default: flags.unclean_leader_election,
    });
    tokio::spawn(fence_silent_brokers(api.clone(), shutdown.clone()));
    let mut shown = flags.raft.describe(&config);
    shown["broker_session_timeout_ms"] = (flags.broker_session_timeout.as_millis() as u64).into();
    shown["controllers"] = quorum.clone().into();
    shown["unclean_leader_election"] = flags.unclean_leader_election.into();
    let status = Arc::new(ControllerStatus {
        raft: raft.clone(),
        names,
        me: me_name,
        machine,
        committed,
        config: shown,
    });
    let routes = Routes::new(
        RaftRpc {
            raft: raft.clone(),
            votes_from,
        }
        .service(),
    )
    .add_service(pb::controller_server::ControllerServer::from_arc(api));
    let served = node.serve(routes, status).await;

    if let Err(e) = raft.shutdown().await {
        tracing::warn!(error = %e, "stopping Raft");
    }
    flusher.flush_now().await?;
    tracing::info!(event = "node_stopped", "Raft stopped, store flushed; bye");
    served
}
