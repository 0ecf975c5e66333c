//! Running a cache node: `cache serve ...` (and, once Project 1 is in the lab, `lab node
//! cache ...`) end up in [`run`].
//!
//! ```text
//! flags -> Node::bind (gRPC + admin) -> UDP socket on the gRPC port number (gossip)
//!   -> gossip task (SWIM) -> membership watch -> placement of the live members
//!   -> coordinator (store, hints, peers over gRPC) <- gRPC service, memcached endpoint
//!   -> on every membership change: new placement, rebalance, replay hints to members back
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use distlab_runtime::BadInput;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::cli::NodeArgs;
use distlab_runtime::node::{Node, Threads};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;

use crate::coordinator::{Coordinator, Settings};
use crate::gossip::{self, GossipConfig, GossipCounts, Membership};
use crate::grpc::{CacheService, GrpcPeers};
use crate::hints::Hints;
use crate::memcached;
use crate::placement::{Placement, PlacementKind};
use crate::store::Store;
use crate::swim;

/// The node contract's flags plus Project 1's own.
#[derive(Debug, Clone, clap::Args)]
pub struct CacheNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    /// Address of the memcached text-protocol endpoint (port 0: any; the ready line says).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub memcached: SocketAddr,

    /// Memory for items: bytes, or with k, m, g (64m).
    #[arg(long, value_parser = distlab_runtime::size::parse, default_value = "64m")]
    pub memory: usize,

    /// Replicas per key (N).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,

    /// Replicas that hold a write before it is acknowledged (W).
    #[arg(long, default_value_t = 2)]
    pub write_quorum: usize,

    /// Replicas asked for a read (R).
    #[arg(long, default_value_t = 2)]
    pub read_quorum: usize,

    /// Placement: consistent hashing with virtual nodes (ring) or rendezvous hashing.
    #[arg(long, default_value = "ring", value_parser = ["ring", "rendezvous"])]
    pub placement: String,

    /// Virtual nodes per member on the ring.
    #[arg(long, default_value_t = PlacementKind::DEFAULT_VNODES)]
    pub vnodes: usize,

    /// SWIM's protocol period (one probe per period).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "200ms")]
    pub gossip_period: Duration,

    /// How long a suspect has to refute before it is declared dead.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "1s")]
    pub suspicion_timeout: Duration,

    /// Memory for hints kept for replicas that are down: bytes, or with k, m, g.
    #[arg(long, value_parser = distlab_runtime::size::parse, default_value = "16m")]
    pub hint_memory: usize,

    /// How long a hint is kept for a replica that does not come back.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "10m")]
    pub hint_ttl: Duration,

    /// How long a call to another node may take.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "500ms")]
    pub peer_timeout: Duration,
}

#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: CacheNodeArgs,
}

/// Checks service flags a user adds to every node before any node starts.
pub fn check_flags(flags: &[String]) -> Result<(), String> {
    distlab_runtime::cli::parse_service_flags::<Cli>("cache", flags).map(|_| ())
}

/// `lab node cache ARGS...`: parses the node's flags (a mistake prints usage and exits 2)
/// and runs it.
pub fn main(program: &str, args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from(program)).chain(args);
    match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => run_blocking(cli.args),
        Err(e) => e.exit(),
    }
}

pub fn run_blocking(args: CacheNodeArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    distlab_runtime::node::run_main("cache", &id, "info", Threads::One, || run(args))
}

/// How often hints are offered to members that are alive again.
const HINT_REPLAY_EVERY: Duration = Duration::from_millis(500);

/// Runs a cache node until SIGTERM/SIGINT. Bad flags fail with [`BadInput`] before anything
/// is bound.
pub async fn run(args: CacheNodeArgs) -> anyhow::Result<()> {
    let node_args = args.node.validate()?;
    let settings = Settings {
        replicas: args.replicas,
        write_quorum: args.write_quorum,
        read_quorum: args.read_quorum,
    };
    settings.validate().map_err(BadInput)?;
    let kind = PlacementKind::parse(&args.placement, args.vnodes).map_err(BadInput)?;
    if args.gossip_period < Duration::from_millis(10) {
        return Err(BadInput::new("--gossip-period must be at least 10ms").into());
    }
    let peers: BTreeMap<String, SocketAddr> = node_args
        .peers
        .iter()
        .map(|(id, addr)| (id.to_string(), *addr))
        .collect();
    let me = node_args.id.to_string();

    let memcached_listener = TcpListener::bind(args.memcached)
        .await
        .with_context(|| format!("--memcached {}: cannot bind", args.memcached))?;
    // Gossip listens on the gRPC port number, over UDP: the lab's UDP link proxies sit on
    // their TCP proxies' port numbers, so one `--peer` address serves both.
    let (mut node, gossip_socket) = Node::bind_with_udp(node_args, "proj1", "cache").await?;
    let memcached_addr = memcached_listener.local_addr()?;
    node.add_ready_field("memcached", memcached_addr.to_string());

    let store = Arc::new(Mutex::new(Store::new(args.memory)));
    let placement: Arc<dyn Placement> = Arc::from(kind.build([me.clone()]));
    let coordinator = Coordinator::new(
        me.clone(),
        settings,
        store.clone(),
        Hints::new(args.hint_memory, args.hint_ttl),
        placement,
        GrpcPeers::new(&peers, args.peer_timeout)?,
    );
    coordinator.counts.register(node.registry());
    let gossip_counts = GossipCounts::default();
    gossip_counts.register(node.registry());
    let ring_metrics = RingMetrics::register(node.registry());

    let swim_config = swim::Config {
        period: args.gossip_period,
        ping_timeout: args.gossip_period * 2 / 5,
        suspicion_timeout: args.suspicion_timeout,
        ..swim::Config::default()
    };
    let (membership, gossip_task) = gossip::start(
        GossipConfig {
            me: me.clone(),
            peers,
            swim: swim_config,
            seed: rand::random(),
            counts: gossip_counts,
        },
        gossip_socket,
        node.shutdown_token(),
    );
    let last_change = Arc::new(Mutex::new(None));
    let follower = tokio::spawn(follow_membership(
        coordinator.clone(),
        membership.clone(),
        kind,
        last_change.clone(),
        ring_metrics,
    ));
    let memcached_task = tokio::spawn(memcached::serve_with(memcached_listener, {
        let coordinator = coordinator.clone();
        move |command| {
            let coordinator = coordinator.clone();
            async move { coordinator.handle(command, false).await }
        }
    }));

    let status = Arc::new(CacheStatus {
        me: me.clone(),
        coordinator: coordinator.clone(),
        store,
        membership,
        last_change,
        config: json!({
            "replicas": settings.replicas,
            "write_quorum": settings.write_quorum,
            "read_quorum": settings.read_quorum,
            "placement": args.placement,
            "vnodes": args.vnodes,
            "memory_bytes": args.memory,
            "gossip_period_ms": args.gossip_period.as_millis() as u64,
            "suspicion_timeout_ms": args.suspicion_timeout.as_millis() as u64,
            "memcached": memcached_addr.to_string(),
        }),
    });
    let served = node
        .serve(Routes::new(CacheService::new(coordinator.clone())), status)
        .await;
    memcached_task.abort();
    follower.abort();
    // The gossip task announces the leave, then ends (its shutdown token is the node's).
    let _ = tokio::time::timeout(args.gossip_period * 4, gossip_task).await;
    served
}

/// Keeps the coordinator in step with the membership: a member joining or leaving changes
/// the placement (and keys go to their new replicas); a member dying or coming back only
/// changes who is down (its writes become hints, which are replayed once it is back, and the
/// others send it their copies of its keys: it may have restarted with nothing).
///
/// Logs what the lab's checks read: `ring_changed` (with the keys this node counts and how
/// many of them changed primary), `hints_pending` when this node starts holding hints and
/// `hints_drained` when it holds none again.
async fn follow_membership(
    coordinator: Arc<Coordinator<GrpcPeers>>,
    mut membership: watch::Receiver<Arc<Membership>>,
    kind: PlacementKind,
    last_change: Arc<Mutex<Option<serde_json::Value>>>,
    metrics: RingMetrics,
) {
    let mut ring = membership.borrow().ring.clone();
    let mut down = membership.borrow().down();
    let mut replay = tokio::time::interval(HINT_REPLAY_EVERY);
    replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hints = HintWatch::default();
    loop {
        tokio::select! {
            changed = membership.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = membership.borrow_and_update().clone();
                let now_down = now.down();
                coordinator.set_down(now_down.clone());
                for back in down.difference(&now_down).filter(|m| now.ring.contains(m)) {
                    let (coordinator, member) = (coordinator.clone(), back.clone());
                    tokio::spawn(async move {
                        let sent = coordinator.resync(&member).await;
                        tracing::info!(event = "member_resynced", member = %member, copies = sent, "sent {member} {sent} copies of its keys");
                    });
                }
                down = now_down;
                if now.ring == ring {
                    continue;
                }
                let before = std::mem::replace(&mut ring, now.ring.clone());
                let after: Arc<dyn Placement> = Arc::from(kind.build(ring.clone()));
                let old = coordinator.set_placement(after.clone());
                let report = coordinator.rebalance(&*old, &*after).await;
                metrics.ring_changes.inc();
                *last_change.lock().expect("never poisoned") = Some(json!({
                    "before": before,
                    "members": ring,
                    "primary_keys": report.primary_keys,
                    "primaries_moved": report.primaries_moved,
                    "copies_sent": report.copies_sent,
                }));
                tracing::info!(
                    event = "ring_changed",
                    before = %before.join(","),
                    members = %ring.join(","),
                    copies_sent = report.copies_sent,
                    primary_keys = report.primary_keys,
                    primaries_moved = report.primaries_moved,
                    "placement now over {} members; {} of this node's {} keys changed primary; {} copies sent to new replicas",
                    ring.len(), report.primaries_moved, report.primary_keys, report.copies_sent
                );
            }
            _ = replay.tick() => {
                let live = membership.borrow().live.clone();
                let delivered = coordinator.replay_hints(&live).await;
                let depth = coordinator.hint_depth();
                metrics.hints_waiting.set(depth.values().sum::<usize>() as i64);
                hints.update(delivered, depth);
            }
        }
    }
}

/// The node's metrics about its placement (the coordinator and gossip register their own).
#[derive(Clone)]
struct RingMetrics {
    ring_changes: Counter,
    hints_waiting: Gauge,
}

impl RingMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            ring_changes: Counter::default(),
            hints_waiting: Gauge::default(),
        };
        registry.register(
            "cache_ring_changes",
            "joins and leaves that changed this node's placement (ring churn)",
            metrics.ring_changes.clone(),
        );
        registry.register(
            "cache_hints_waiting",
            "hints this node holds for members that were down (hint queue depth)",
            metrics.hints_waiting.clone(),
        );
        metrics
    }
}

/// Turns the hint queues' depth, seen every replay tick, into `hints_pending` and
/// `hints_drained` events.
#[derive(Default)]
struct HintWatch {
    /// Hints delivered since the queues were last empty.
    delivered: usize,
    pending: bool,
}

impl HintWatch {
    fn update(&mut self, delivered: usize, depth: BTreeMap<String, usize>) {
        self.delivered += delivered;
        let waiting: usize = depth.values().sum();
        if waiting > 0 && !self.pending {
            let owners: Vec<&str> = depth
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(owner, _)| owner.as_str())
                .collect();
            tracing::info!(event = "hints_pending", waiting, owners = %owners.join(","), "holding {waiting} hints for {}", owners.join(", "));
        } else if waiting == 0 && self.pending {
            tracing::info!(
                event = "hints_drained",
                delivered = self.delivered,
                "every hint delivered or expired ({} delivered)",
                self.delivered
            );
            self.delivered = 0;
        }
        self.pending = waiting > 0;
    }
}

/// `/status` of a cache node.
struct CacheStatus {
    me: String,
    coordinator: Arc<Coordinator<GrpcPeers>>,
    store: Arc<Mutex<Store>>,
    membership: watch::Receiver<Arc<Membership>>,
    /// This node's part of the last join or leave (the ring view sums the nodes' parts).
    last_change: Arc<Mutex<Option<serde_json::Value>>>,
    config: serde_json::Value,
}

impl NodeStatus for CacheStatus {
    fn role(&self) -> String {
        "cache".into()
    }

    fn page(&self) -> Option<String> {
        Some(crate::page::render(&self.me, &self.detail()))
    }

    fn detail(&self) -> serde_json::Value {
        let membership = self.membership.borrow().clone();
        let placement = self.coordinator.placement();
        let members: serde_json::Map<String, serde_json::Value> = membership
            .members
            .iter()
            .map(|(id, (state, incarnation))| {
                (
                    id.clone(),
                    json!({"state": state.name(), "incarnation": incarnation}),
                )
            })
            .collect();
        let ownership: serde_json::Map<String, serde_json::Value> = placement
            .ownership()
            .into_iter()
            .map(|(id, share)| (id, json!(share)))
            .collect();
        let store = self.store.lock().expect("never poisoned").stats();
        let counts = &self.coordinator.counts;
        let g = &membership.counts;
        let (hits, misses) = (counts.hits.get(), counts.misses.get());
        let recent: Vec<serde_json::Value> = membership
            .recent
            .iter()
            .map(|(at, what)| json!({"unix_ms": at, "what": what}))
            .collect();
        let hints = self.coordinator.hint_depth();
        json!({
            "config": self.config,
            "live_members": membership.live.len(),
            "items": store.items,
            "hints_waiting": hints.values().sum::<usize>(),
            "incarnation": membership.incarnation,
            "joined": membership.joined,
            "members": members,
            "live": membership.live,
            "ring": membership.ring,
            "placement": placement.describe(),
            "ownership": ownership,
            "store": {
                "items": store.items,
                "bytes": store.bytes,
                "limit": store.limit,
                "evictions": store.evictions,
            },
            "hints": hints,
            "last_ring_change": *self.last_change.lock().expect("never poisoned"),
            "recent_changes": recent,
            "hit_rate": if hits + misses == 0 { None } else { Some(hits as f64 / (hits + misses) as f64) },
            "counts": {
                "hits": counts.hits.get(),
                "misses": counts.misses.get(),
                "forwarded": counts.forwarded.get(),
                "read_repairs": counts.read_repairs.get(),
                "hints_sent": counts.hints_sent.get(),
                "replica_writes_lost": counts.replica_writes_lost.get(),
                "quorum_failures": counts.quorum_failures.get(),
                "keys_moved": counts.keys_moved.get(),
                "suspicions": g.suspicions.get(),
                "false_suspicions": g.false_suspicions.get(),
                "deaths": g.deaths.get(),
            },
        })
    }
}
