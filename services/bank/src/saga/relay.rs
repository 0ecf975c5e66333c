//! The outbox relay: takes the events the saga log wrote into its outbox (each with the saga
//! end it announces, in one store write) to a Kafka-lite topic, and deletes them from the
//! outbox only once the brokers acknowledged them with `acks=all`. The producer is idempotent,
//! so a batch it resends after a timeout is appended once; after a crash (or a new producer
//! id) an event can still go twice, which is why the consumer is idempotent too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_log::client::{LogClient, Producer};
use distlab_log::controller::client::ControllerClient;
use distlab_proto::log::v1 as log_pb;
use distlab_runtime::retry::RetryPolicy;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::service::Shared;
use crate::clock_ms;
use crate::status::OutboxStatus;
use crate::store::SagaLog;

/// Where the outbox goes.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Kafka-lite broker node ids (`--peer`s); none: the outbox is not relayed.
    pub brokers: Vec<String>,
    /// Kafka-lite controller node ids, to create the topic.
    pub controllers: Vec<String>,
    pub topic: String,
    /// Partitions of the topic when the relay creates it.
    pub partitions: u32,
}

/// The relay's state, for `/status`.
pub struct Relay {
    config: RelayConfig,
    wake: Notify,
    published: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// An outbox event ready to send: its outbox sequence, record key and value.
struct Outgoing {
    seq: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// Events per batch at most.
const BATCH: usize = 500;

impl Relay {
    pub fn new(config: RelayConfig) -> Self {
        Self {
            config,
            wake: Notify::new(),
            published: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Something was written to the outbox.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn status(&self, log: &SagaLog) -> OutboxStatus {
        let oldest = log
            .outbox(1)
            .ok()
            .and_then(|e| e.first().map(|(_, e)| e.at_ms));
        OutboxStatus {
            topic: if self.config.brokers.is_empty() {
                String::new()
            } else {
                self.config.topic.clone()
            },
            depth: log.outbox_len(),
            lag_ms: oldest.map_or(0, |at| clock_ms().saturating_sub(at)),
            published: self.published.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }

    fn failed(&self, what: &str, e: impl std::fmt::Display) {
        let message = format!("{what}: {e}");
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap();
        if last.as_deref() != Some(message.as_str()) {
            tracing::warn!(event = "relay_failed", error = %message, "the outbox waits and goes again");
        }
        *last = Some(message);
    }
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        attempt_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..RetryPolicy::default()
    }
}

/// Sleeps `pause`, or less if shutdown comes; false on shutdown.
async fn pause(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => true,
        () = shutdown.cancelled() => false,
    }
}

/// Creates the topic if it does not exist; its partition count.
async fn ensure_topic(
    relay: &Relay,
    controllers: &ControllerClient,
    client: &LogClient,
    brokers: usize,
) -> Result<u32, String> {
    let metadata = client
        .refresh_metadata()
        .await
        .map_err(|e| distlab_runtime::rpc::describe(&e))?;
    if let Some(topic) = metadata
        .topics
        .iter()
        .find(|t| t.name == relay.config.topic)
    {
        return Ok(topic.partitions.len() as u32);
    }
    let replicas = brokers.clamp(1, 3) as u32;
    let created = controllers
        .create_topic(log_pb::CreateTopicRequest {
            name: relay.config.topic.clone(),
            partitions: relay.config.partitions,
            replication_factor: replicas,
            min_insync_replicas: replicas.min(2),
            unclean_leader_election: Some(false),
        })
        .await;
    match created {
        Ok(topic) => {
            tracing::info!(event = "topic_created", topic = %topic.name, partitions = topic.partitions.len(), replicas, "created the outbox's topic");
            Ok(topic.partitions.len() as u32)
        }
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(relay.config.partitions),
        Err(e) => Err(distlab_runtime::rpc::describe(&e)),
    }
}

/// Publishes the outbox until shutdown.
pub async fn run(
    shared: Arc<Shared>,
    brokers: Vec<(String, SocketAddr)>,
    controllers: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let relay = &shared.relay;
    if brokers.is_empty() {
        tracing::warn!("no --brokers: the outbox fills and nothing publishes it");
        return;
    }
    let (client, controller) = match (
        LogClient::connect_lazy(&brokers, policy()),
        ControllerClient::connect_lazy(&controllers, policy()),
    ) {
        (Ok(client), Ok(controller)) => (client, controller),
        (Err(e), _) | (_, Err(e)) => {
            relay.failed("connecting to Kafka-lite", format!("{e:#}"));
            return;
        }
    };
    let partitions = loop {
        match ensure_topic(relay, &controller, &client, brokers.len()).await {
            Ok(n) if n > 0 => break n,
            Ok(_) => relay.failed("the topic", "it has no partitions"),
            Err(e) => relay.failed("creating the topic", e),
        }
        if !pause(Duration::from_millis(500), &shutdown).await {
            return;
        }
    };
    let mut producer: Option<Producer> = None;
    while !shutdown.is_cancelled() {
        let events = match shared.log.outbox(BATCH) {
            Ok(events) => events,
            Err(e) => {
                relay.failed("reading the outbox", format!("{e:#}"));
                if !pause(Duration::from_secs(1), &shutdown).await {
                    return;
                }
                continue;
            }
        };
        if events.is_empty() {
            tokio::select! {
                () = relay.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = shutdown.cancelled() => return,
            }
            continue;
        }
        let sender = match &producer {
            Some(p) => p,
            None => match Producer::new(client.clone(), log_pb::Acks::All, true).await {
                Ok(p) => producer.insert(p),
                Err(e) => {
                    relay.failed("getting a producer id", distlab_runtime::rpc::describe(&e));
                    if !pause(Duration::from_millis(500), &shutdown).await {
                        return;
                    }
                    continue;
                }
            },
        };
        // Per partition, in outbox order: the transfer id picks the partition.
        let mut by_partition: BTreeMap<u32, Vec<Outgoing>> = BTreeMap::new();
        for (seq, event) in events {
            let partition = (distlab_runtime::hash::fnv1a(event.transfer.bytes())
                % u64::from(partitions)) as u32;
            let value = serde_json::to_vec(&event).expect("an event serializes");
            by_partition.entry(partition).or_default().push(Outgoing {
                seq,
                key: event.transfer.into_bytes(),
                value,
            });
        }
        let mut failed = false;
        for (partition, events) in by_partition {
            let records: Vec<(Option<&[u8]>, &[u8])> = events
                .iter()
                .map(|o| (Some(o.key.as_slice()), o.value.as_slice()))
                .collect();
            match sender.send(&relay.config.topic, partition, &records).await {
                Ok(_) => {
                    let seqs: Vec<u64> = events.iter().map(|o| o.seq).collect();
                    if let Err(e) = shared.log.published(&seqs) {
                        relay.failed("marking events published", e);
                    }
                    relay
                        .published
                        .fetch_add(seqs.len() as u64, Ordering::Relaxed);
                    *relay.last_error.lock().unwrap() = None;
                }
                Err(e) => {
                    relay.failed(
                        &format!("publishing to {}/{partition}", relay.config.topic),
                        distlab_runtime::rpc::describe(&e),
                    );
                    failed = true;
                    break;
                }
            }
        }
        if failed && !pause(Duration::from_millis(300), &shutdown).await {
            return;
        }
    }
}
