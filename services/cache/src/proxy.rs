//! `cache proxy`: the sidecar. A local memcached endpoint an application talks to as if it
//! were one memcached server; behind it, each request goes straight to a replica of its key,
//! by the placement the nodes use, so nothing is forwarded twice.
//!
//! It learns the ring by gossip, without joining it: every `--watch-every` it sends a SWIM
//! `Watch` to the next node of its `--peer` table (round robin, so a dead one costs one
//! period) and takes the `Welcome` view it gets back: members, states, incarnations. It is
//! never a member (holds no data, is not probed), so proxies come and go without moving keys.
//! Members the view says are dead are skipped; a replica that does not answer is too, for
//! that request. Sets and deletes are stamped here with their version, as the client library
//! stamps them, so a retried request cannot overwrite newer writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_runtime::BadInput;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::cli::NodeArgs;
use distlab_runtime::node::{Node, Threads};
use serde_json::json;
use tokio::net::{TcpListener, UdpSocket};
use tonic::service::Routes;

use crate::clock::HybridClock;
use crate::coordinator::{Peers, is_blind_write};
use crate::grpc::GrpcPeers;
use crate::memcached::{self, Now};
use crate::placement::{MemberId, Placement, PlacementKind};
use crate::protocol::{Command, Reply};
use crate::store::Store;
use crate::swim::{Body, Envelope, State};

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

/// The membership as the last `Welcome` gave it, and the placement built from it.
struct View {
    placement: Arc<dyn Placement>,
    down: Vec<MemberId>,
    /// Which node said so, and when.
    from: Option<(MemberId, Instant)>,
}

struct Proxy {
    me: MemberId,
    replicas: usize,
    kind: PlacementKind,
    view: RwLock<View>,
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
        me: node.id().to_string(),
        replicas: args.replicas,
        kind,
        view: RwLock::new(View {
            placement: Arc::from(kind.build(Vec::<MemberId>::new())),
            down: Vec::new(),
            from: None,
        }),
        peers: GrpcPeers::new(&peers, args.peer_timeout)?,
        clock: HybridClock::default(),
        local: std::sync::Mutex::new(Store::new(1 << 20)),
        started: Instant::now(),
        routed: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let watcher = tokio::spawn(watch(proxy.clone(), socket, peers, args.watch_every));
    let endpoint = tokio::spawn(memcached::serve_with(listener, {
        let proxy = proxy.clone();
        move |command| {
            let proxy = proxy.clone();
            async move { proxy.handle(command).await }
        }
    }));
    let served = node.serve(Routes::default(), proxy).await;
    watcher.abort();
    endpoint.abort();
    served
}

/// Asks the nodes for their view, one after another, forever.
async fn watch(
    proxy: Arc<Proxy>,
    socket: UdpSocket,
    peers: BTreeMap<MemberId, SocketAddr>,
    every: Duration,
) {
    let seeds: Vec<(MemberId, SocketAddr)> = peers.into_iter().collect();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = 0;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (_, addr) = &seeds[next % seeds.len()];
                next += 1;
                let envelope = Envelope {
                    from: proxy.me.clone(),
                    incarnation: 0,
                    body: Body::Watch,
                    updates: Vec::new(),
                };
                if let Ok(bytes) = serde_json::to_vec(&envelope) {
                    let _ = socket.send_to(&bytes, addr).await;
                }
            }
            received = socket.recv_from(&mut buffer) => {
                let Ok((len, _)) = received else { continue };
                match serde_json::from_slice::<Envelope>(&buffer[..len]) {
                    Ok(Envelope { from, body: Body::Welcome { members }, .. }) => {
                        proxy.take_view(from, &members);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "a datagram that is not a view"),
                }
            }
        }
    }
}

impl Proxy {
    /// Takes a node's view: the ring is every member that has not left (dead ones keep
    /// their place, as on the nodes); the dead are skipped.
    fn take_view(&self, from: MemberId, members: &[crate::swim::Update]) {
        let mut ring: Vec<MemberId> = members
            .iter()
            .filter(|u| u.state != State::Left)
            .map(|u| u.member.clone())
            .collect();
        ring.sort();
        let down: Vec<MemberId> = members
            .iter()
            .filter(|u| u.state == State::Dead)
            .map(|u| u.member.clone())
            .collect();
        let mut view = self.view.write().expect("never poisoned");
        if view.placement.members() != ring.as_slice() {
            tracing::info!(
                event = "ring_changed",
                members = %ring.join(","),
                "routing over {} members (view from {from})",
                ring.len()
            );
            view.placement = Arc::from(self.kind.build(ring));
        }
        view.down = down;
        view.from = Some((from, Instant::now()));
    }

    async fn handle(&self, command: Command) -> Reply {
        match &command {
            Command::Get { keys, cas } if keys.len() != 1 => {
                memcached::get_each(keys, *cas, |key, one| self.route(key.to_vec(), one)).await
            }
            Command::FlushAll { .. } => {
                let members = self
                    .view
                    .read()
                    .expect("never poisoned")
                    .placement
                    .members()
                    .to_vec();
                let mut reply = Reply::ServerError("no node answered".into());
                for member in members {
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
        let replicas: Vec<MemberId> = {
            let view = self.view.read().expect("never poisoned");
            view.placement
                .replicas(&key, self.replicas)
                .into_iter()
                .filter(|m| !view.down.contains(m))
                .cloned()
                .collect()
        };
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
        let view = self.view.read().expect("never poisoned");
        json!({
            "ring": view.placement.members(),
            "down": view.down,
            "placement": view.placement.describe(),
            "view_from": view.from.as_ref().map(|(m, _)| m),
            "view_age_ms": view.from.as_ref().map(|(_, at)| at.elapsed().as_millis() as u64),
            "routed": self.routed.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
        })
    }
}
