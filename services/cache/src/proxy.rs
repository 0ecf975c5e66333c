//! `cache proxy`: the sidecar. A local memcached endpoint an application talks to as if it
//! were one memcached server; behind it, each request goes straight to a replica of its key,
//! by the placement the nodes use, so nothing is forwarded twice.
//!
//! It learns the ring by gossip, without joining it ([`crate::ring_watch`]: a SWIM `Watch`
//! to the next node of its `--peer` table every `--watch-every`), so proxies come and go
//! without moving keys. Members the view says are dead are skipped; a replica that does not
//! answer is too, for that request. Sets and deletes are stamped here with their version, as the client library
//! stamps them, so a retried request cannot overwrite newer writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_runtime::BadInput;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::cli::NodeArgs;
use distlab_runtime::node::{Node, Threads};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::service::Routes;

use crate::clock::HybridClock;
use crate::coordinator::{Peers, is_blind_write};
use crate::grpc::GrpcPeers;
use crate::memcached::{self, Now};
use crate::placement::{MemberId, PlacementKind};
use crate::protocol::{Command, Reply};
use crate::ring_watch::RingWatch;
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct ProxyArgs {
    /// `--id`, `--listen` (its port number is also the UDP socket the view comes back to),
    /// `--admin`, `--peer id=addr` for every cache node.
    #[command(flatten)]
    pub node: NodeArgs,

    /// The memcached endpoint applications talk to.
    #[arg(long, default_value = "127.0.0.1:11211")]
    pub memcached: SocketAddr,

    /// Replicas per key (N): must match the nodes'.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,

    /// Placement: must match the nodes'.
    #[arg(long, default_value = "ring", value_parser = ["ring", "rendezvous"])]
    pub placement: String,

    /// Virtual nodes per member: must match the nodes'.
    #[arg(long, default_value_t = PlacementKind::DEFAULT_VNODES)]
    pub vnodes: usize,

    /// How often the proxy asks a node for the membership.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "200ms")]
    pub watch_every: Duration,

    /// How long a call to a node may take.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "500ms")]
    pub peer_timeout: Duration,
}

pub fn run_blocking(args: ProxyArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    distlab_runtime::node::run_main("cache-proxy", &id, "info", Threads::One, || run(args))
}

struct Proxy {
    replicas: usize,
    ring: RingWatch,
    peers: GrpcPeers,
    clock: HybridClock,
    /// For `version` and `stats`, answered here.
    local: std::sync::Mutex<Store>,
    started: Instant,
    routed: AtomicU64,
    failed: AtomicU64,
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let node_args = args.node.validate()?;
    let kind = PlacementKind::parse(&args.placement, args.vnodes).map_err(BadInput)?;
    if args.replicas == 0 {
        return Err(BadInput::new("--replicas must be at least 1").into());
    }
    if args.watch_every < Duration::from_millis(10) {
        return Err(BadInput::new("--watch-every must be at least 10ms").into());
    }
    let peers: BTreeMap<MemberId, SocketAddr> = node_args
        .peers
        .iter()
        .map(|(id, addr)| (id.to_string(), *addr))
        .collect();
    if peers.is_empty() {
        return Err(BadInput::new("a proxy needs the cache nodes: --peer n1=ADDR ...").into());
    }
    let listener = TcpListener::bind(args.memcached)
        .await
        .with_context(|| format!("--memcached {}: cannot bind", args.memcached))?;
    // Gossip listens on the gRPC port number, over UDP: the lab's UDP link proxies sit on
    // their TCP proxies' port numbers, so one `--peer` address serves both.
    let (mut node, socket) = Node::bind_with_udp(node_args, "proj1", "cache-proxy").await?;
    node.add_ready_field("memcached", listener.local_addr()?.to_string());
    let proxy = Arc::new(Proxy {
        replicas: args.replicas,
        ring: RingWatch::start(
            node.id().to_string(),
            socket,
            peers.clone().into_iter().collect(),
            kind,
            args.watch_every,
        ),
        peers: GrpcPeers::new(&peers, args.peer_timeout)?,
        clock: HybridClock::default(),
        local: std::sync::Mutex::new(Store::new(1 << 20)),
        started: Instant::now(),
        routed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let endpoint = tokio::spawn(memcached::serve_with(listener, {
        let proxy = proxy.clone();
        move |command| {
            let proxy = proxy.clone();
            async move { proxy.handle(command).await }
        }
    }));
    let served = node.serve(Routes::default(), proxy).await;
    endpoint.abort();
    served
}

impl Proxy {
    async fn handle(&self, command: Command) -> Reply {
        match &command {
            Command::Get { keys, cas } if keys.len() != 1 => {
                memcached::get_each(keys, *cas, |key, one| self.route(key.to_vec(), one)).await
            }
            Command::FlushAll { .. } => {
                let mut reply = Reply::ServerError("no node answered".into());
                for member in self.ring.members() {
                    if let Ok(answer) = self.peers.forward(&member, command.clone(), None).await {
                        reply = answer;
                    }
                }
                reply
            }
            _ => match command.key() {
                Some(key) => self.route(key.to_vec(), command.clone()).await,
                None => {
                    let mut store = self.local.lock().expect("never poisoned");
                    memcached::apply(&command, &mut store, Now::read(), self.started)
                }
            },
        }
    }

    /// Sends the request to the first replica of its key that answers.
    async fn route(&self, key: Vec<u8>, command: Command) -> Reply {
        let stamp = is_blind_write(&command).then(|| self.clock.stamp());
        let replicas = self.ring.live_replicas(&key, self.replicas);
        if replicas.is_empty() {
            self.failed.fetch_add(1, Ordering::Relaxed);
            return Reply::ServerError("no live replica of the key known yet".into());
        }
        for replica in &replicas {
            match self.peers.forward(replica, command.clone(), stamp).await {
                Ok(reply) => {
                    self.routed.fetch_add(1, Ordering::Relaxed);
                    return reply;
                }
                Err(e) => tracing::debug!(error = %e, "replica did not answer; next"),
            }
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
        Reply::ServerError(format!(
            "no replica of the key answered ({})",
            replicas.join(", ")
        ))
    }
}

impl NodeStatus for Proxy {
    fn role(&self) -> String {
        "proxy".into()
    }

    fn detail(&self) -> serde_json::Value {
        let mut detail = self.ring.detail();
        detail["routed"] = json!(self.routed.load(Ordering::Relaxed));
        detail["failed"] = json!(self.failed.load(Ordering::Relaxed));
        detail
    }
}
