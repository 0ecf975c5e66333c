//! A broker: the partitions' logs, produce and fetch, and replication between brokers.
//!
//! - [`replica`]: one partition on this broker (its log; leader, follower or offline).
//! - [`service`]: the `log.v1.Broker` gRPC API.
//! - [`fetcher`]: a follower's loop: truncate to the leader's epoch boundary, then fetch.
//! - [`coordinator`]: the consumer groups whose `__consumer_offsets` partition it leads.
//! - [`node`]: flags and wiring; [`status`]: what the lab sees.
//!
//! This module holds the broker's shared state and the tasks that keep it in step with the
//! controller: register and heartbeat, follow the metadata (becoming leader or follower of
//! each partition as it says), propose ISR changes (a follower that caught up, one that fell
//! behind), flush logs on the fsync interval.

pub mod coordinator;
pub mod fetcher;
pub mod node;
pub mod replica;
pub mod service;
pub mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlab_proto::log::v1 as pb;
use distlab_runtime::clock::Every;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::controller::client::ControllerClient;
use crate::replication::{Leadership, ReplicationConfig};
use crate::storage::partition::LogConfig;
use replica::{Replica, Role};

pub type BrokerRpc = pb::broker_client::BrokerClient<distlab_runtime::channel::TracedChannel>;

/// Messages between brokers and clients may be this large (a fetch of many batches).
pub const MAX_MESSAGE: usize = 64 << 20;

/// A broker's RPC client over `channel`, taking messages up to [`MAX_MESSAGE`].
pub fn broker_rpc(channel: distlab_runtime::channel::TracedChannel) -> BrokerRpc {
    BrokerRpc::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// A partition's name: `topic/index`.
pub fn partition_name(topic: &str, partition: u32) -> String {
    format!("{topic}/{partition}")
}

/// `topic`/`partition` in `metadata`, if the metadata has it.
pub fn partition_info<'a>(
    metadata: &'a pb::ClusterMetadata,
    topic: &str,
    partition: u32,
) -> Option<&'a pb::PartitionInfo> {
    metadata
        .topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.partitions.get(partition as usize))
}

/// A partition on this broker, shared by the service and the tasks.
pub type SharedReplica = Arc<Mutex<Replica>>;

/// Which partition: topic and index.
pub type PartitionKey = (String, u32);

pub struct Broker {
    pub me: String,
    /// This broker's registration epoch (0 until registered).
    pub epoch: AtomicU64,
    pub controller: ControllerClient,
    /// Other brokers, through this broker's `--peer` addresses.
    pub peers: BTreeMap<String, BrokerRpc>,
    pub data_dir: PathBuf,
    pub log_config: LogConfig,
    pub lag_time_max: Duration,
    replicas: Mutex<BTreeMap<PartitionKey, SharedReplica>>,
    metadata: watch::Sender<pb::ClusterMetadata>,
    started: Instant,
    /// Producer ids handed out from the block the controller gave: (next, end).
    producer_ids: tokio::sync::Mutex<(u64, u64)>,
    pub coordinator: coordinator::Coordinator,
}

impl Broker {
    pub fn new(
        me: String,
        controller: ControllerClient,
        peers: BTreeMap<String, BrokerRpc>,
        data_dir: PathBuf,
        log_config: LogConfig,
        lag_time_max: Duration,
    ) -> Self {
        Self {
            me,
            epoch: AtomicU64::new(0),
            controller,
            peers,
            data_dir,
            log_config,
            lag_time_max,
            replicas: Mutex::default(),
            metadata: watch::channel(pb::ClusterMetadata::default()).0,
            started: Instant::now(),
            producer_ids: tokio::sync::Mutex::new((0, 0)),
            coordinator: coordinator::Coordinator::default(),
        }
    }

    /// Milliseconds on this broker's monotonic clock (replication timing).
    pub fn mono_ms(&self) -> i64 {
        self.started.elapsed().as_millis() as i64
    }

    pub fn metadata(&self) -> pb::ClusterMetadata {
        self.metadata.borrow().clone()
    }

    pub fn subscribe_metadata(&self) -> watch::Receiver<pb::ClusterMetadata> {
        self.metadata.subscribe()
    }

    /// The replica of `topic`/`partition` on this broker.
    pub fn replica(&self, topic: &str, partition: u32) -> Option<SharedReplica> {
        self.replicas
            .lock()
            .unwrap()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    pub fn replicas(&self) -> Vec<(PartitionKey, SharedReplica)> {
        self.replicas
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A producer id from this broker's block, fetching a new block when it runs out.
    pub async fn next_producer_id(&self) -> Result<u64, tonic::Status> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let (first, count) = self.controller.allocate_producer_ids(100).await?;
            *ids = (first, first + count);
        }
        ids.0 += 1;
        Ok(ids.0 - 1)
    }

    /// Applies new metadata: opens the partitions this broker replicates and takes the role
    /// the metadata gives it in each (starting or stopping follower fetchers).
    pub fn apply_metadata(
        self: &Arc<Self>,
        metadata: pb::ClusterMetadata,
        shutdown: &CancellationToken,
    ) {
        for topic in &metadata.topics {
            for p in &topic.partitions {
                if !p.replicas.contains(&self.me) {
                    continue;
                }
                if let Err(e) = self.apply_partition(topic, p, shutdown) {
                    tracing::error!(partition = partition_name(&topic.name, p.partition), error = %format!("{e:#}"), "cannot open the partition's log");
                }
            }
        }
        self.metadata.send_replace(metadata);
    }

    fn apply_partition(
        self: &Arc<Self>,
        topic: &pb::TopicInfo,
        p: &pb::PartitionInfo,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let key = (topic.name.clone(), p.partition);
        let name = partition_name(&topic.name, p.partition);
        let replica = {
            let mut replicas = self.replicas.lock().unwrap();
            match replicas.get(&key) {
                Some(r) => r.clone(),
                None => {
                    let dir = self
                        .data_dir
                        .join(format!("{}-{}", topic.name, p.partition));
                    let replica = Arc::new(Mutex::new(Replica::open(
                        &name,
                        &dir,
                        self.log_config.clone(),
                    )?));
                    replicas.insert(key.clone(), replica.clone());
                    replica
                }
            }
        };
        let mut r = replica.lock().unwrap();
        let isr: BTreeSet<String> = p.isr.iter().cloned().collect();
        match p.leader.as_deref() {
            Some(leader) if leader == self.me => {
                let current =
                    matches!(r.role(), Role::Leader { .. }) && r.leader_epoch() == p.leader_epoch;
                if current {
                    r.leader_metadata(isr, p.partition_epoch);
                } else {
                    let config = ReplicationConfig {
                        lag_time_max_ms: self.lag_time_max.as_millis() as i64,
                        min_insync: topic.min_insync_replicas.max(1) as usize,
                    };
                    let leadership = Leadership {
                        leader: self.me.clone(),
                        leader_epoch: p.leader_epoch,
                        replicas: p.replicas.clone(),
                        isr,
                    };
                    r.become_leader(leadership, p.partition_epoch, config, self.mono_ms());
                }
            }
            Some(leader) => {
                let current = matches!(r.role(), Role::Follower { leader: l, leader_epoch, .. } if l == leader && *leader_epoch == p.leader_epoch);
                if !current {
                    let stop = shutdown.child_token();
                    r.become_follower(leader, p.leader_epoch, stop.clone());
                    tracing::info!(
                        event = "following",
                        partition = name,
                        leader,
                        leader_epoch = p.leader_epoch,
                        "{name}: following {leader} in epoch {}",
                        p.leader_epoch
                    );
                    tokio::spawn(fetcher::follow(
                        self.clone(),
                        key.0.clone(),
                        key.1,
                        leader.to_string(),
                        p.leader_epoch,
                        stop,
                    ));
                }
            }
            None => {
                if !matches!(r.role(), Role::Offline { .. }) || r.leader_epoch() != p.leader_epoch {
                    r.become_offline(p.leader_epoch);
                }
            }
        }
        Ok(())
    }

    /// Sends this leader's proposed ISR for a partition to the controller and adopts the
    /// answer (or drops the proposal when refused: new metadata will say what holds).
    pub async fn propose_isr(
        self: Arc<Self>,
        topic: String,
        partition: u32,
        isr: BTreeSet<String>,
        (leader_epoch, partition_epoch): (u32, u32),
    ) {
        let Some(replica) = self.replica(&topic, partition) else {
            return;
        };
        let request = pb::AlterPartitionRequest {
            topic: topic.clone(),
            partition,
            leader: self.me.clone(),
            broker_epoch: self.epoch.load(Ordering::Relaxed),
            leader_epoch,
            partition_epoch,
            isr: isr.iter().cloned().collect(),
        };
        let name = partition_name(&topic, partition);
        match self.controller.alter_partition(request).await {
            Ok(info) => {
                let committed: BTreeSet<String> = info.isr.iter().cloned().collect();
                tracing::info!(
                    event = "isr_committed",
                    partition = name,
                    isr = info.isr.join(","),
                    "{name}: ISR now [{}]",
                    info.isr.join(", ")
                );
                replica
                    .lock()
                    .unwrap()
                    .isr_committed(committed, info.partition_epoch);
            }
            Err(status) => {
                tracing::info!(partition = name, error = %distlab_runtime::rpc::describe(&status), "ISR change refused");
                replica.lock().unwrap().isr_rejected();
            }
        }
    }
}

/// Registers with the controller, then heartbeats; registers again when told its epoch is
/// stale. Runs until `shutdown`, then tells the controller it is leaving.
pub async fn keep_registered(
    broker: Arc<Broker>,
    address: String,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if broker.epoch.load(Ordering::Relaxed) == 0 {
            match broker
                .controller
                .register_broker(&broker.me, &address, distlab_runtime::clock::wall_ms())
                .await
            {
                Ok(epoch) => {
                    broker.epoch.store(epoch, Ordering::Relaxed);
                    tracing::info!(
                        event = "registered",
                        epoch,
                        "registered with the controller (epoch {epoch})"
                    );
                }
                Err(status) => {
                    tracing::info!(error = %distlab_runtime::rpc::describe(&status), "registering failed; retrying")
                }
            }
        } else {
            let epoch = broker.epoch.load(Ordering::Relaxed);
            if let Err(status) = broker.controller.heartbeat(&broker.me, epoch).await
                && matches!(
                    crate::controller::service::refusal_kind(&status),
                    Some("stale_broker_epoch" | "unknown_broker")
                )
            {
                tracing::warn!(error = %status.message(), "the controller no longer knows this registration; registering again");
                broker.epoch.store(0, Ordering::Relaxed);
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => break,
        }
    }
    let epoch = broker.epoch.load(Ordering::Relaxed);
    if epoch != 0 {
        let leaving = broker.controller.shutdown_broker(&broker.me, epoch);
        let _ = tokio::time::timeout(Duration::from_secs(2), leaving).await;
    }
}

/// Follows the controller's metadata (long polls through `poller`, whose attempts outlast
/// them) and applies each new version.
pub async fn follow_metadata(
    broker: Arc<Broker>,
    poller: ControllerClient,
    shutdown: CancellationToken,
) {
    let mut version = 0;
    loop {
        let poll = poller.metadata(version, Duration::from_secs(5));
        let metadata = tokio::select! {
            m = poll => m,
            () = shutdown.cancelled() => return,
        };
        match metadata {
            Ok(metadata) => {
                if metadata.version != version || version == 0 {
                    version = metadata.version;
                    broker.apply_metadata(metadata, &shutdown);
                }
            }
            Err(status) => {
                tracing::debug!(error = %distlab_runtime::rpc::describe(&status), "metadata poll failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// On every tick: leaders check their followers' lag (and propose shrinking the ISR), and
/// logs flush when their fsync interval is due.
pub async fn housekeeping(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut every = Every::new(Duration::from_millis(50), &shutdown);
    let mut last_retention = Instant::now();
    while every.tick().await {
        let now = broker.mono_ms();
        let retention_due = last_retention.elapsed() > Duration::from_secs(5);
        if retention_due {
            last_retention = Instant::now();
        }
        for ((topic, partition), replica) in broker.replicas() {
            let mut r = replica.lock().unwrap();
            if let Some((isr, leader_epoch, partition_epoch)) = r.check_lag(now) {
                let name = partition_name(&topic, partition);
                tracing::warn!(
                    event = "isr_shrink_proposed",
                    partition = name,
                    isr = isr.iter().cloned().collect::<Vec<_>>().join(","),
                    "{name}: followers fell behind; proposing ISR [{}]",
                    isr.iter().cloned().collect::<Vec<_>>().join(", ")
                );
                tokio::spawn(broker.clone().propose_isr(
                    topic.clone(),
                    partition,
                    isr,
                    (leader_epoch, partition_epoch),
                ));
            }
            if let Err(e) = r.log_mut().flush_if_due(Instant::now()) {
                tracing::error!(partition = %r.name, error = %format!("{e:#}"), "flushing the log");
            }
            if retention_due
                && let Err(e) = r
                    .log_mut()
                    .enforce_retention(distlab_runtime::clock::wall_ms())
            {
                tracing::error!(partition = %r.name, error = %format!("{e:#}"), "retention");
            }
        }
    }
}
