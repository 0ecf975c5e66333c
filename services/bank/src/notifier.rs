//! The notifications service (`--role notifier`): a Kafka-lite consumer group member that
//! reads the orchestrator's transfer events and writes one notification per completed or
//! compensated transfer. Delivery from the broker is at least once (an event read and not yet
//! committed when the member dies is read again by the next owner of its partition); the
//! event id, written in the same store write as the notification, makes it exactly once in
//! effect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_log::consumer::{GroupConfig, GroupConsumer};
use distlab_proto::bank::v1 as pb;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::node::Node;
use distlab_runtime::retry::RetryPolicy;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::clock_ms;
use crate::saga::TransferEvent;
use crate::status::NotifierDetail;
use crate::store::NotificationStore;

/// How a notifications service runs.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// Kafka-lite broker node ids (`--peer`s).
    pub brokers: Vec<String>,
    pub topic: String,
    pub group: String,
    pub fsync: bool,
}

struct Shared {
    config: NotifierConfig,
    store: NotificationStore,
    undecodable: AtomicU64,
    generation: AtomicU32,
    lag: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    fn failed(&self, what: &str, e: impl std::fmt::Display) {
        let message = format!("{what}: {e}");
        let mut last = self.last_error.lock().unwrap();
        if last.as_deref() != Some(message.as_str()) {
            tracing::info!(error = %message, "the notifications consumer tries again");
        }
        *last = Some(message);
    }
}

async fn pause(shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(Duration::from_millis(200)) => true,
        () = shutdown.cancelled() => false,
    }
}

/// Reads the topic as a member of the group until shutdown; notifies, then commits.
async fn consume(
    shared: Arc<Shared>,
    brokers: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let policy = RetryPolicy {
        max_attempts: 20,
        attempt_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(3),
        max_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let topics = vec![shared.config.topic.clone()];
    let Some(client) =
        distlab_log::consumer::node::connect(&brokers, &topics, &policy, &shutdown).await
    else {
        return;
    };
    let config = GroupConfig::new(&shared.config.group, "notifier", topics);
    let mut consumer = GroupConsumer::new(client, config);
    while !shutdown.is_cancelled() {
        let joined = tokio::select! {
            joined = consumer.ensure_joined() => joined,
            () = shutdown.cancelled() => break,
        };
        match joined {
            Ok(Some(generation)) => {
                shared
                    .generation
                    .store(generation.generation, Ordering::Relaxed);
                tracing::info!(
                    event = "joined_generation",
                    generation = generation.generation,
                    "joined the notifications group"
                );
            }
            Ok(None) => {}
            Err(e) => {
                shared.failed("joining the group", distlab_runtime::rpc::describe(&e));
                if !pause(&shutdown).await {
                    break;
                }
                continue;
            }
        }
        let polled = tokio::select! {
            polled = consumer.poll(Duration::from_millis(200)) => polled,
            () = shutdown.cancelled() => break,
        };
        let polled = match polled {
            Ok(polled) => polled,
            Err(e) => {
                shared.failed("polling", distlab_runtime::rpc::describe(&e));
                continue;
            }
        };
        let now = clock_ms();
        let mut written = 0;
        for consumed in &polled {
            let event: TransferEvent = match serde_json::from_slice(&consumed.record.value) {
                Ok(event) => event,
                Err(e) => {
                    shared.undecodable.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        partition = %consumed.partition,
                        offset = consumed.record.offset,
                        error = %e,
                        "a record that is not a transfer event: skipped"
                    );
                    continue;
                }
            };
            match shared.store.record(&event, now) {
                Ok(true) => written += 1,
                Ok(false) => {
                    tracing::debug!(event = %event.event, "delivered again: already notified")
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot write a notification; stopping");
                    return;
                }
            }
        }
        // Durable first, then committed: whatever is committed is notified.
        if let Err(e) = shared.store.flushed().await {
            tracing::error!(error = %e, "cannot flush the notifications; stopping");
            return;
        }
        if written > 0 {
            tracing::debug!(written, "notified");
        }
        if let Err(e) = consumer.commit().await {
            shared.failed("committing", distlab_runtime::rpc::describe(&e));
        } else if !polled.is_empty() {
            *shared.last_error.lock().unwrap() = None;
        }
        shared
            .lag
            .store(consumer.lag().values().sum(), Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), consumer.close()).await;
}

struct NotificationsApi {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl pb::notifications_server::Notifications for NotificationsApi {
    async fn list(
        &self,
        request: Request<pb::NotificationsRequest>,
    ) -> Result<Response<pb::NotificationsResponse>, Status> {
        let request = request.into_inner();
        let limit = request.limit.clamp(1, 10_000) as usize;
        let notifications = self
            .shared
            .store
            .list(request.from, limit)
            .map_err(|e| Status::internal(format!("reading the notifications: {e:#}")))?
            .into_iter()
            .map(|(seq, n)| pb::Notification {
                seq,
                event: n.event.event,
                transfer: n.event.transfer,
                outcome: n.event.outcome,
                from: n.event.from,
                to: n.event.to,
                amount: n.event.amount,
            })
            .collect();
        Ok(Response::new(pb::NotificationsResponse {
            notifications,
            duplicates: self.shared.store.duplicates(),
            lag: self.shared.lag.load(Ordering::Relaxed),
            generation: self.shared.generation.load(Ordering::Relaxed),
        }))
    }
}

struct NotifierStatus {
    shared: Arc<Shared>,
}

impl NodeStatus for NotifierStatus {
    fn role(&self) -> String {
        "notifier".into()
    }

    fn detail(&self) -> Value {
        let s = &self.shared;
        let detail = NotifierDetail {
            topic: s.config.topic.clone(),
            group: s.config.group.clone(),
            notifications: s.store.len() as u64,
            duplicates: s.store.duplicates(),
            undecodable: s.undecodable.load(Ordering::Relaxed),
            generation: s.generation.load(Ordering::Relaxed),
            lag: s.lag.load(Ordering::Relaxed),
            last_error: s.last_error.lock().unwrap().clone(),
        };
        serde_json::to_value(detail).expect("the detail serializes")
    }
}

/// Runs a notifications node until shutdown.
pub async fn run(args: ValidNodeArgs, config: NotifierConfig) -> anyhow::Result<()> {
    let Some(data_dir) = args.data_dir.clone() else {
        return Err(distlab_runtime::BadInput::new(
            "a notifications service needs --data-dir: its notifications live there",
        )
        .into());
    };
    if config.brokers.is_empty() {
        return Err(distlab_runtime::BadInput::new(
            "a notifications service needs --brokers: the Kafka-lite brokers it reads events from",
        )
        .into());
    }
    let brokers = crate::saga::service::peers_named(&args, &config.brokers, "broker")?;
    let mut node = Node::bind(args, "proj5", "bank").await?;
    let store = NotificationStore::open(&data_dir, config.fsync)?;
    tracing::info!(
        event = "store_opened",
        notifications = store.len(),
        "notifications store opened"
    );
    let shared = Arc::new(Shared {
        config,
        store,
        undecodable: AtomicU64::new(0),
        generation: AtomicU32::new(0),
        lag: AtomicU64::new(0),
        last_error: Mutex::new(None),
    });
    let shutdown = node.shutdown_token();
    node.add_ready_field("role", "notifier");
    let member = tokio::spawn(consume(shared.clone(), brokers, shutdown.clone()));
    let routes = tonic::service::Routes::new(pb::notifications_server::NotificationsServer::new(
        NotificationsApi {
            shared: shared.clone(),
        },
    ));
    let result = node
        .serve(
            routes,
            Arc::new(NotifierStatus {
                shared: shared.clone(),
            }),
        )
        .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), member).await;
    shared.store.close().await?;
    result
}
