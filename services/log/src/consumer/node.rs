//! Running a consumer group member as a node (`lab node log --role consumer --group G --topic
//! T ...`), so the lab can kill it, pause it or cut it off like any other process and watch
//! the group rebalance.
//!
//! Its brokers are among its `--peer`s that are not `--controllers` (the others are consumers:
//! calls go to the brokers the cluster metadata names). It polls, writes what it read to its
//! [journal](super::journal) in `--data-dir`, commits, and shows its generation, assignment,
//! positions and lag in `/status`; a SIGTERM commits and leaves the group (a SIGKILL does not:
//! its session expires). It serves no gRPC API of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_runtime::BadInput;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::node::Node;
use distlab_runtime::retry::RetryPolicy;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::journal::{Entry, Journal};
use super::{Consumed, GroupConfig, GroupConsumer};
use crate::client::LogClient;
use crate::group::Assignor;

/// A consumer node's own flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerFlags {
    /// The consumer group to join.
    #[arg(long, default_value = "lab")]
    pub group: String,
    /// A topic to read (repeatable or comma-separated).
    #[arg(long = "topic", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// How the group splits partitions: `range` or `roundrobin`.
    #[arg(long, value_parser = Assignor::parse, default_value = "range")]
    pub assignor: Assignor,
    /// Silent this long, a member is removed from the group (and a rebalance waits this
    /// long for members to rejoin).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "3s")]
    pub session_timeout: Duration,
}

impl ConsumerFlags {
    pub fn check(&self) -> Result<(), BadInput> {
        if self.topics.is_empty() {
            return Err(BadInput::new(
                "a consumer needs --topic NAME (what its group reads)",
            ));
        }
        if self.group.is_empty() {
            return Err(BadInput::new("--group must not be empty"));
        }
        if self.session_timeout < Duration::from_millis(300)
            || self.session_timeout > Duration::from_secs(300)
        {
            return Err(BadInput::new(format!(
                "--session-timeout {} is outside 300ms to 5m",
                distlab_runtime::duration::format(self.session_timeout)
            )));
        }
        Ok(())
    }

    fn group_config(&self, client_id: &str) -> GroupConfig {
        let mut config = GroupConfig::new(&self.group, client_id, self.topics.clone());
        config.assignor = self.assignor;
        config.session_timeout = self.session_timeout;
        config.rebalance_timeout = self.session_timeout;
        config.heartbeat_every = self.session_timeout / 6;
        config
    }
}

/// What `/status` shows, updated after every poll.
#[derive(Default)]
struct Progress {
    detail: Value,
    consumed: u64,
    joins: u64,
    last_join_ms: Option<u64>,
}

struct ConsumerStatus {
    progress: Arc<Mutex<Progress>>,
    config: Value,
}

impl NodeStatus for ConsumerStatus {
    fn role(&self) -> String {
        "consumer".to_string()
    }

    fn detail(&self) -> Value {
        let progress = self.progress.lock().unwrap();
        let mut detail = progress.detail.clone();
        if !detail.is_object() {
            detail = json!({"state": "joining"});
        }
        detail["service"] = "consumer".into();
        detail["consumed"] = progress.consumed.into();
        detail["joins"] = progress.joins.into();
        detail["last_join_ms"] = progress.last_join_ms.into();
        detail["config"] = self.config.clone();
        detail
    }
}

/// Runs a consumer until SIGTERM/SIGINT, then commits and leaves its group.
pub async fn run(
    node_args: ValidNodeArgs,
    quorum: Vec<String>,
    flags: ConsumerFlags,
) -> anyhow::Result<()> {
    flags.check()?;
    let Some(data_dir) = node_args.data_dir.clone() else {
        return Err(BadInput::new(
            "a consumer needs --data-dir DIR (its journal of what it read lives there)",
        )
        .into());
    };
    let me = node_args.id.to_string();
    let candidates: Vec<(String, SocketAddr)> = node_args
        .peers
        .iter()
        .map(|(id, addr)| (id.to_string(), *addr))
        .filter(|(id, _)| !quorum.contains(id))
        .collect();
    if candidates.is_empty() {
        return Err(BadInput::new("a consumer needs the brokers as --peer NAME=ADDR").into());
    }
    let journal = Journal::open(&data_dir)?;
    let mut node = Node::bind(node_args, "proj3", "log").await?;
    node.add_ready_field("role", "consumer");
    let progress = Arc::new(Mutex::new(Progress::default()));
    let status = Arc::new(ConsumerStatus {
        progress: progress.clone(),
        config: json!({
            "group": flags.group,
            "topics": flags.topics,
            "assignor": flags.assignor.name(),
            "session_timeout_ms": flags.session_timeout.as_millis() as u64,
        }),
    });
    let shutdown = node.shutdown_token();
    let config = flags.group_config(&me);
    let member = tokio::spawn(consume(
        candidates,
        config,
        journal,
        progress,
        shutdown.clone(),
    ));
    let served = node.serve(tonic::service::Routes::default(), status).await;
    // Commit and leave (bounded: a cluster that is gone must not keep the node alive).
    let _ = tokio::time::timeout(Duration::from_secs(5), member).await;
    tracing::info!(event = "node_stopped", "bye");
    served
}

/// A client of the brokers among `candidates` (every peer but the controllers): asks them for
/// the metadata until one answers with brokers and every topic in `topics` in it (the group's
/// first join then comes after its topics exist, so `__consumer_offsets` is made after them and
/// does not shift their placement). The client keeps every candidate (a broker that is down
/// now, or registers later, is one of them); calls go to the brokers the metadata names.
pub async fn connect(
    candidates: &[(String, SocketAddr)],
    topics: &[String],
    policy: &RetryPolicy,
    shutdown: &CancellationToken,
) -> Option<LogClient> {
    let client = match LogClient::connect_lazy(candidates, policy.clone()) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot reach the brokers");
            return None;
        }
    };
    loop {
        if let Ok(metadata) = client.refresh_metadata().await
            && !metadata.brokers.is_empty()
            && topics
                .iter()
                .all(|topic| metadata.topics.iter().any(|t| &t.name == topic))
        {
            return Some(client);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

async fn consume(
    candidates: Vec<(String, SocketAddr)>,
    config: GroupConfig,
    mut journal: Journal,
    progress: Arc<Mutex<Progress>>,
    shutdown: CancellationToken,
) {
    let policy = RetryPolicy {
        max_attempts: 20,
        attempt_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(3),
        max_backoff: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let Some(client) = connect(&candidates, &config.topics, &policy, &shutdown).await else {
        return;
    };
    let mut consumer = GroupConsumer::new(client, config);
    while !shutdown.is_cancelled() {
        let joined = tokio::select! {
            joined = consumer.ensure_joined() => joined,
            () = shutdown.cancelled() => break,
        };
        match joined {
            Ok(Some(generation)) => {
                let partitions: Vec<String> = generation
                    .assignment
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let took_ms = generation.took.as_millis() as u64;
                tracing::info!(
                    event = "joined_generation",
                    generation = generation.generation,
                    member = generation.member_id,
                    partitions = partitions.join(","),
                    took_ms,
                    "joined generation {} as {} with [{}] after {took_ms} ms",
                    generation.generation,
                    generation.member_id,
                    partitions.join(", ")
                );
                let mut p = progress.lock().unwrap();
                p.joins += 1;
                p.last_join_ms = Some(took_ms);
            }
            Ok(None) => {}
            Err(status) => {
                tracing::info!(error = %distlab_runtime::rpc::describe(&status), "joining failed; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = shutdown.cancelled() => break,
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
            Err(status) => {
                tracing::debug!(error = %distlab_runtime::rpc::describe(&status), "poll failed");
                continue;
            }
        };
        // Journal first, then commit: whatever is committed is in the journal.
        let entries = journal_entries(&consumer, &polled);
        if let Err(e) = journal.append(&entries) {
            tracing::error!(error = %format!("{e:#}"), "cannot write the journal; stopping");
            break;
        }
        if let Err(status) = consumer.commit().await {
            tracing::info!(error = %distlab_runtime::rpc::describe(&status), "commit refused; rejoining");
        }
        let mut p = progress.lock().unwrap();
        p.consumed += polled.len() as u64;
        p.detail = detail(&consumer);
    }
    let member = consumer.member_id().to_string();
    match consumer.close().await {
        Ok(()) => tracing::info!(event = "left_group", member, "committed and left the group"),
        Err(status) => {
            tracing::warn!(error = %distlab_runtime::rpc::describe(&status), "leaving the group failed")
        }
    }
}

/// One entry per partition the poll read.
fn journal_entries(consumer: &GroupConsumer, polled: &[Consumed]) -> Vec<Entry> {
    let mut by_partition: BTreeMap<String, Entry> = BTreeMap::new();
    let now = distlab_runtime::clock::wall_ms();
    let lag = consumer.lag();
    for c in polled {
        let entry = by_partition
            .entry(c.partition.to_string())
            .or_insert_with(|| Entry {
                at_ms: now,
                member: consumer.member_id().to_string(),
                generation: consumer.generation(),
                partition: c.partition.to_string(),
                offsets: (c.record.offset, c.record.offset),
                values: Vec::new(),
                lag: lag.get(&c.partition).copied().unwrap_or(0),
            });
        entry.offsets.1 = c.record.offset;
        // Behind by what is left after this read, and by what it read.
        entry.lag += 1;
        entry
            .values
            .push(String::from_utf8_lossy(&c.record.value).into_owned());
    }
    by_partition.into_values().collect()
}

fn detail(consumer: &GroupConsumer) -> Value {
    let by_name =
        |m: &BTreeMap<crate::group::TopicPartition, u64>| -> serde_json::Map<String, Value> {
            m.iter().map(|(tp, v)| (tp.to_string(), json!(v))).collect()
        };
    let lag = consumer.lag();
    json!({
        "state": if consumer.needs_join() { "rejoining" } else { "member" },
        "member": consumer.member_id(),
        "generation": consumer.generation(),
        "assignment": consumer.assignment().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "positions": by_name(consumer.positions()),
        "committed": by_name(consumer.committed()),
        "lag": by_name(&lag),
        "total_lag": lag.values().sum::<u64>(),
    })
}
