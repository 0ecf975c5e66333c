//! SWIM over UDP: the I/O around [`crate::swim::Swim`].
//!
//! One task owns the state machine and a UDP socket. It ticks it every few milliseconds,
//! feeds it every datagram that arrives (JSON [`Envelope`]s), sends what it returns to the
//! members' addresses from the node's own `--peer` table (so the lab's UDP link proxies stay
//! in the path; a member with no address there is not sent to), logs every membership change
//! as an event line, and publishes the membership for the rest of the node through a
//! `watch` channel. On shutdown it announces that it leaves and keeps gossiping for two
//! periods so the news gets out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::placement::MemberId;
use crate::swim::{self, Body, Change, Envelope, Outbound, State, Swim};

/// How often the state machine is ticked: fine enough for an 80 ms ping timeout.
const TICK: Duration = Duration::from_millis(10);

/// The largest datagram read (a `Welcome` of a few dozen members fits easily).
const MAX_DATAGRAM: usize = 64 * 1024;

/// What one member knows of the group, as published after every change.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    /// Every other member known, with its state and incarnation.
    pub members: BTreeMap<MemberId, (State, u64)>,
    /// This member and the others alive or suspect: who answers.
    pub live: Vec<MemberId>,
    /// This member and every other that has not left: who places data (see
    /// [`Swim::ring_members`]).
    pub ring: Vec<MemberId>,
    /// This member's own incarnation.
    pub incarnation: u64,
    /// Whether some member has welcomed this one yet.
    pub joined: bool,
    pub counts: GossipCounts,
    /// The last membership changes, newest last: (Unix time in ms, what changed).
    pub recent: VecDeque<(u64, String)>,
}

impl Membership {
    /// The members declared dead.
    pub fn down(&self) -> std::collections::BTreeSet<MemberId> {
        self.members
            .iter()
            .filter(|(_, (state, _))| *state == State::Dead)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// How many membership changes [`Membership::recent`] keeps.
pub const RECENT_CHANGES: usize = 20;

/// Running totals for `/metrics` and the admin page (shared: a clone counts into the same
/// totals, so the published view reads them live).
#[derive(Debug, Clone)]
pub struct GossipCounts {
    pub suspicions: Counter,
    /// Suspects found alive after all.
    pub false_suspicions: Counter,
    pub deaths: Counter,
    pub joins: Counter,
    pub leaves: Counter,
    /// Datagrams that did not decode.
    pub bad_datagrams: Counter,
    /// Messages for members without an address in the peer table.
    pub unaddressed: Counter,
    /// From the last message heard from a member to this node declaring it dead: failure
    /// detection time as this node saw it.
    pub detection_seconds: Histogram,
}

impl Default for GossipCounts {
    fn default() -> Self {
        Self {
            suspicions: Counter::default(),
            false_suspicions: Counter::default(),
            deaths: Counter::default(),
            joins: Counter::default(),
            leaves: Counter::default(),
            bad_datagrams: Counter::default(),
            unaddressed: Counter::default(),
            detection_seconds: Histogram::new(exponential_buckets(0.125, 1.5, 12)),
        }
    }
}

impl GossipCounts {
    pub fn register(&self, registry: &mut Registry) {
        for (name, help, counter) in [
            (
                "cache_gossip_suspicions",
                "members this node suspected",
                &self.suspicions,
            ),
            (
                "cache_gossip_false_suspicions",
                "suspects found alive after all",
                &self.false_suspicions,
            ),
            (
                "cache_gossip_deaths",
                "members this node declared dead",
                &self.deaths,
            ),
            (
                "cache_gossip_joins",
                "members seen joining (or coming back)",
                &self.joins,
            ),
            (
                "cache_gossip_leaves",
                "members seen leaving gracefully",
                &self.leaves,
            ),
            (
                "cache_gossip_bad_datagrams",
                "gossip datagrams that did not decode",
                &self.bad_datagrams,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "cache_failure_detection_seconds",
            "from the last message heard from a member to declaring it dead",
            self.detection_seconds.clone(),
        );
    }
}

pub struct GossipConfig {
    pub me: MemberId,
    /// Member id -> the address to reach it (the `--peer` table).
    pub peers: BTreeMap<MemberId, SocketAddr>,
    pub swim: swim::Config,
    /// Seeds the state machine's random choices.
    pub seed: u64,
    /// Where the task counts (registered for `/metrics` by the caller).
    pub counts: GossipCounts,
}

/// Starts gossiping on `socket`. The membership channel always holds the latest view; the
/// task ends after `shutdown` is cancelled and the leave has been announced.
pub fn start(
    config: GossipConfig,
    socket: UdpSocket,
    shutdown: CancellationToken,
) -> (watch::Receiver<Arc<Membership>>, JoinHandle<()>) {
    let seeds = config.peers.keys().cloned().collect();
    let swim = Swim::new(config.me.clone(), seeds, config.swim.clone(), config.seed);
    let mut task = Task {
        period: config.swim.period,
        swim,
        peers: config.peers,
        socket,
        counts: config.counts,
        last_heard: HashMap::new(),
        recent: VecDeque::new(),
        published: watch::channel(Arc::new(Membership::default())).0,
    };
    let view = task.published.subscribe();
    task.publish();
    let handle = tokio::spawn(async move { task.run(shutdown).await });
    (view, handle)
}

struct Task {
    period: Duration,
    swim: Swim,
    peers: BTreeMap<MemberId, SocketAddr>,
    socket: UdpSocket,
    counts: GossipCounts,
    /// When each member was last heard from (for the detection time).
    last_heard: HashMap<MemberId, Instant>,
    recent: VecDeque<(u64, String)>,
    published: watch::Sender<Arc<Membership>>,
}

impl Task {
    async fn run(&mut self, shutdown: CancellationToken) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaving_until: Option<Instant> = None;
        loop {
            let (out, source) = tokio::select! {
                received = self.socket.recv_from(&mut buffer) => match received {
                    Ok((len, source)) => (self.receive(&buffer[..len]), Some(source)),
                    Err(e) => {
                        // ICMP "port unreachable" from a peer that is down surfaces here on
                        // Linux; it says nothing SWIM does not find out by itself.
                        tracing::trace!(error = %e, "gossip receive failed");
                        (Vec::new(), None)
                    }
                },
                _ = tick.tick() => {
                    if leaving_until.is_some_and(|until| Instant::now() >= until) {
                        return;
                    }
                    (self.swim.tick(Instant::now()), None)
                }
                () = shutdown.cancelled(), if leaving_until.is_none() => {
                    self.swim.leave();
                    tracing::info!(event = "member_leaving", "announcing that this node leaves");
                    leaving_until = Some(Instant::now() + self.period * 2);
                    (Vec::new(), None)
                }
            };
            self.send(out, source).await;
            self.note_changes();
        }
    }

    fn receive(&mut self, datagram: &[u8]) -> Vec<Outbound> {
        match serde_json::from_slice::<Envelope>(datagram) {
            Ok(envelope) => {
                let now = Instant::now();
                self.last_heard.insert(envelope.from.clone(), now);
                self.swim.receive(envelope, now)
            }
            Err(e) => {
                self.counts.bad_datagrams.inc();
                tracing::warn!(error = %e, bytes = datagram.len(), "dropped a gossip datagram that does not decode");
                self.publish();
                Vec::new()
            }
        }
    }

    /// Sends each message to its member's `--peer` address; a reply to a sender that is not
    /// a member (a `cache proxy` watching, `source`) goes back where the datagram came from.
    async fn send(&mut self, out: Vec<Outbound>, source: Option<SocketAddr>) {
        for message in out {
            let watcher = source.filter(|_| matches!(message.envelope.body, Body::Welcome { .. }));
            let Some(addr) = self.peers.get(&message.to).copied().or(watcher) else {
                self.counts.unaddressed.inc();
                tracing::debug!(member = %message.to, "no --peer address for a member; not sent");
                continue;
            };
            let bytes = match serde_json::to_vec(&message.envelope) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a gossip message");
                    continue;
                }
            };
            // Loss is SWIM's business: a failed send is a lost datagram.
            if let Err(e) = self.socket.send_to(&bytes, addr).await {
                tracing::trace!(error = %e, to = %message.to, "gossip send failed");
            }
        }
    }

    /// Logs and counts membership changes; publishes if anything published changed.
    fn note_changes(&mut self) {
        let changes = self.swim.take_changes();
        for change in &changes {
            self.count(change);
            let what = log_change(change);
            if self.recent.len() == RECENT_CHANGES {
                self.recent.pop_front();
            }
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.recent.push_back((unix_ms, what));
        }
        let stale = {
            let published = self.published.borrow();
            published.joined != self.swim.joined()
                || published.incarnation != self.swim.incarnation()
        };
        if !changes.is_empty() || stale {
            self.publish();
        }
    }

    fn count(&mut self, change: &Change) {
        let counts = &self.counts;
        match change.to {
            State::Suspect => counts.suspicions.inc(),
            State::Dead => {
                if let Some(heard) = self.last_heard.get(&change.member) {
                    counts
                        .detection_seconds
                        .observe(heard.elapsed().as_secs_f64());
                }
                counts.deaths.inc()
            }
            State::Left => counts.leaves.inc(),
            State::Alive if change.is_false_suspicion() => counts.false_suspicions.inc(),
            State::Alive => counts.joins.inc(),
        };
    }

    fn publish(&self) {
        let members = self
            .swim
            .members()
            .iter()
            .map(|(id, m)| (id.clone(), (m.state, m.incarnation)))
            .collect();
        self.published.send_replace(Arc::new(Membership {
            members,
            live: self.swim.live_members(),
            ring: self.swim.ring_members(),
            incarnation: self.swim.incarnation(),
            joined: self.swim.joined(),
            counts: self.counts.clone(),
            recent: self.recent.clone(),
        }));
    }
}

/// One event line per change, named for the console's timeline: `member_alive`,
/// `member_suspect`, `member_dead`, `member_left`.
/// Logs a change as an event line; what it says, for the admin page.
fn log_change(change: &Change) -> String {
    let from = change.from.map_or("unknown", State::name);
    let to = change.to.name();
    let event = match change.to {
        State::Alive => "member_alive",
        State::Suspect => "member_suspect",
        State::Dead => "member_dead",
        State::Left => "member_left",
    };
    tracing::info!(
        event,
        member = %change.member,
        from,
        to,
        incarnation = change.incarnation,
        "{}: {from} -> {to} (incarnation {})",
        change.member,
        change.incarnation
    );
    format!(
        "{}: {from} -> {to} (incarnation {})",
        change.member, change.incarnation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Member {
        view: watch::Receiver<Arc<Membership>>,
        handle: JoinHandle<()>,
        shutdown: CancellationToken,
    }

    /// `n` members on real loopback UDP sockets, each knowing every other's address; and
    /// those addresses.
    async fn group(n: usize) -> (BTreeMap<MemberId, Member>, BTreeMap<MemberId, SocketAddr>) {
        let mut sockets = BTreeMap::new();
        for i in 1..=n {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sockets.insert(format!("n{i}"), socket);
        }
        let addrs: BTreeMap<MemberId, SocketAddr> = sockets
            .iter()
            .map(|(id, s)| (id.clone(), s.local_addr().unwrap()))
            .collect();
        let mut members = BTreeMap::new();
        for (i, (id, socket)) in sockets.into_iter().enumerate() {
            let peers = addrs
                .iter()
                .filter(|(other, _)| **other != id)
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            let config = GossipConfig {
                me: id.clone(),
                peers,
                swim: swim::Config::default(),
                seed: i as u64,
                counts: GossipCounts::default(),
            };
            let shutdown = CancellationToken::new();
            let (view, handle) = start(config, socket, shutdown.clone());
            members.insert(
                id,
                Member {
                    view,
                    handle,
                    shutdown,
                },
            );
        }
        (members, addrs)
    }

    async fn until(
        view: &mut watch::Receiver<Arc<Membership>>,
        what: impl Fn(&Membership) -> bool,
    ) {
        let waited = tokio::time::timeout(Duration::from_secs(20), view.wait_for(|m| what(m)))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the gossip task ended"),
            Err(_) => panic!("not there in 20 s: {:?}", view.borrow()),
        }
    }

    fn sees(m: &Membership, id: &str, state: State) -> bool {
        m.members.get(id).is_some_and(|(s, _)| *s == state)
    }

    #[tokio::test]
    async fn members_over_udp_find_each_other_detect_a_crash_and_see_a_leave() {
        let (mut group, _) = group(4).await;
        for member in group.values_mut() {
            until(&mut member.view, |m| m.live.len() == 4 && m.joined).await;
        }
        // A crash: the task is gone, its socket closed, nothing announced.
        let crashed = group.remove("n4").unwrap();
        crashed.handle.abort();
        let _ = crashed.handle.await;
        for member in group.values_mut() {
            until(&mut member.view, |m| sees(m, "n4", State::Dead)).await;
            let view = member.view.borrow();
            assert_eq!(view.live.len(), 3);
            assert!(view.counts.suspicions.get() >= 1 && view.counts.deaths.get() == 1);
        }
        // A graceful leave: announced, so the others record `left`, never suspecting it.
        let leaving = group.remove("n3").unwrap();
        leaving.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), leaving.handle)
            .await
            .expect("a leaving member stops after announcing it")
            .unwrap();
        for member in group.values_mut() {
            until(&mut member.view, |m| sees(m, "n3", State::Left)).await;
        }
        for member in group.into_values() {
            member.shutdown.cancel();
            member.handle.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_datagram_that_does_not_decode_is_counted_and_dropped() {
        let (mut group, addrs) = group(2).await;
        let n1 = group.get_mut("n1").unwrap();
        until(&mut n1.view, |m| m.live.len() == 2).await;
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        stranger.send_to(b"{not json", addrs["n1"]).await.unwrap();
        until(&mut n1.view, |m| m.counts.bad_datagrams.get() == 1).await;
        assert_eq!(n1.view.borrow().live.len(), 2, "nothing else changed");
        for member in group.into_values() {
            member.shutdown.cancel();
            member.handle.await.unwrap();
        }
    }
}
