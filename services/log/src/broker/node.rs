//! Running a broker (`lab node log --role broker ...`): its partitions' logs under
//! `--data-dir`, the broker API, and the tasks that keep it registered with the controller and
//! in step with the metadata.
//!
//! The controllers are the `--controllers` among its `--peer`s; every other peer is a broker
//! (followers fetch from leaders through those addresses, so under the lab through its link
//! proxies).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use distlab_proto::log::v1 as pb;
use distlab_runtime::BadInput;
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::node::Node;
use distlab_runtime::retry::RetryPolicy;
use serde_json::json;
use tonic::service::Routes;

use super::coordinator::{self, GroupApi};
use super::service::BrokerApi;
use super::status::BrokerStatus;
use super::{
    Broker, BrokerRpc, MAX_MESSAGE, broker_rpc, follow_metadata, housekeeping, keep_registered,
};
use crate::controller::client::ControllerClient;
use crate::storage::partition::{FsyncPolicy, LogConfig};

/// A broker's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerFlags {
    /// When a partition's log reaches the disk: `every-batch`, `never` (leave durability to
    /// replication), or an interval such as `100ms`.
    #[arg(long, value_parser = FsyncPolicy::parse, default_value = "100ms")]
    pub log_fsync: FsyncPolicy,

    /// A segment file rolls at this size.
    #[arg(long, value_parser = distlab_runtime::size::parse, default_value = "64m")]
    pub segment_bytes: usize,

    /// Delete a partition's oldest segments beyond this size (default: no limit).
    #[arg(long, value_parser = distlab_runtime::size::parse)]
    pub retention_bytes: Option<usize>,

    /// Delete segments whose newest record is older than this (default: 7 days).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "7d")]
    pub retention: Duration,

    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "3s")]
    pub replica_lag_time_max: Duration,

    /// How often the broker tells the controller it is alive.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "250ms")]
    pub heartbeat_every: Duration,
}

impl BrokerFlags {
    pub fn log_config(&self) -> Result<LogConfig, BadInput> {
        if self.segment_bytes < 4096 {
            return Err(BadInput::new(format!(
                "--segment-bytes {} is below 4k",
                self.segment_bytes
            )));
        }
        if self.replica_lag_time_max < Duration::from_millis(100) {
            return Err(BadInput::new(
                "--replica-lag-time-max must be at least 100ms",
            ));
        }
        Ok(LogConfig {
            segment_bytes: self.segment_bytes as u64,
            retention_bytes: self.retention_bytes.map(|b| b as u64),
            retention_age: Some(self.retention),
            fsync: self.log_fsync,
            ..LogConfig::default()
        })
    }
}

/// Runs a broker until SIGTERM/SIGINT.
pub async fn run(
    node_args: ValidNodeArgs,
    quorum: Vec<String>,
    flags: BrokerFlags,
) -> anyhow::Result<()> {
    let log_config = flags.log_config()?;
    let Some(data_dir) = node_args.data_dir.clone() else {
        return Err(BadInput::new(
            "a broker needs --data-dir DIR (its partitions' logs live there)",
        )
        .into());
    };
    let me = node_args.id.to_string();
    let (controllers, brokers): (Vec<_>, Vec<_>) = node_args
        .peers
        .iter()
        .map(|(id, addr)| (id.to_string(), *addr))
        .partition(|(id, _)| quorum.contains(id));
    let calls = RetryPolicy {
        max_attempts: 6,
        attempt_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(3),
        ..RetryPolicy::default()
    };
    let controller = ControllerClient::connect_lazy(&controllers, calls)?;
    let polls = RetryPolicy {
        max_attempts: 3,
        attempt_timeout: Duration::from_secs(7),
        deadline: Duration::from_secs(8),
        ..RetryPolicy::default()
    };
    let poller = ControllerClient::connect_lazy(&controllers, polls)?;
    let peers: BTreeMap<String, BrokerRpc> = if brokers.is_empty() {
        BTreeMap::new()
    } else {
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_secs(3),
            ..RetryPolicy::default()
        };
        distlab_runtime::channel::per_node(&brokers, &policy)?
            .into_iter()
            .map(|(name, channel)| (name, broker_rpc(channel)))
            .collect()
    };

    let mut node = Node::bind(node_args, "proj3", "log").await?;
    node.add_ready_field("role", "broker");
    let address = node.grpc_addr().to_string();
    let broker = Arc::new(Broker::new(
        me,
        controller,
        peers,
        data_dir,
        log_config,
        flags.replica_lag_time_max,
    ));
    let shutdown = node.shutdown_token();
    let registration = tokio::spawn(keep_registered(
        broker.clone(),
        address,
        flags.heartbeat_every,
        shutdown.clone(),
    ));
    tokio::spawn(follow_metadata(broker.clone(), poller, shutdown.clone()));
    tokio::spawn(housekeeping(broker.clone(), shutdown.clone()));
    tokio::spawn(coordinator::run(broker.clone(), shutdown.clone()));

    let status = Arc::new(BrokerStatus {
        broker: broker.clone(),
        config: json!({
            "log_fsync": format!("{:?}", flags.log_fsync),
            "segment_bytes": flags.segment_bytes,
            "retention_bytes": flags.retention_bytes,
            "retention": distlab_runtime::duration::format(flags.retention),
            "replica_lag_time_max_ms": flags.replica_lag_time_max.as_millis() as u64,
            "controllers": quorum,
        }),
    });
    let api = BrokerApi {
        broker: broker.clone(),
    };
    let routes = Routes::new(
        pb::broker_server::BrokerServer::new(api)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
    .add_service(pb::group_coordinator_server::GroupCoordinatorServer::new(
        GroupApi {
            broker: broker.clone(),
        },
    ));
    let served = node.serve(routes, status).await;
    // Tell the controller this broker is leaving (leadership moves at once).
    let _ = tokio::time::timeout(Duration::from_secs(3), registration).await;
    for (_, replica) in broker.replicas() {
        let mut r = replica.lock().unwrap();
        if let Err(e) = r.log_mut().flush() {
            tracing::error!(partition = %r.name, error = %format!("{e:#}"), "flushing at shutdown");
        }
    }
    tracing::info!(event = "node_stopped", "logs flushed; bye");
    served
}
