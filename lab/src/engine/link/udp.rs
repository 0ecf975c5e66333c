//! The UDP link proxy: one socket per directed link `from -> to` (gossip runs over these).
//!
//! Datagrams sent to the proxy are forwarded to `to`'s current address from a socket the proxy
//! keeps per sender, so replies come back through the proxy and obey link `to -> from`. Each
//! datagram is judged on its own, which is what makes UDP faults exact:
//! - a partition drops it (one-way partitions are truly one-way here);
//! - `loss P%` drops it with probability P (correlated as netem does);
//! - `delay D J` sends it D ± J later: with jitter, datagrams overtake each other;
//! - `duplicate P%` sends it twice; `reorder P%` holds it back [`REORDER_HOLD`] (or the link's
//!   delay, if longer) so the datagrams after it overtake it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::faults::LinkFaults;
use super::{Dice, LinkId, LinkProxy, Links, ProxyHandle};

/// How long a reordered datagram is held back when the link has no longer delay.
pub const REORDER_HOLD: Duration = Duration::from_millis(5);

const MAX_DATAGRAM: usize = 64 * 1024;

/// Counters of one UDP proxy.
#[derive(Debug, Default)]
pub struct UdpStats {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub duplicated: AtomicU64,
}

/// A proxy for one directed link; dropping it stops it.
pub type UdpLinkProxy = LinkProxy<UdpStats>;

impl UdpLinkProxy {
    pub async fn bind(link: LinkId, links: Arc<Links>, seed: u64) -> std::io::Result<Self> {
        Self::bind_at(
            "127.0.0.1:0".parse().expect("an address"),
            link,
            links,
            seed,
        )
        .await
    }

    /// A proxy listening at `addr` (a cluster puts a link's UDP proxy on the same port number
    /// as its TCP proxy, so one `--peer` address serves both).
    pub async fn bind_at(
        addr: SocketAddr,
        link: LinkId,
        links: Arc<Links>,
        seed: u64,
    ) -> std::io::Result<Self> {
        let socket = Arc::new(UdpSocket::bind(addr).await?);
        let addr = socket.local_addr()?;
        let (handle, target_rx, stop) = ProxyHandle::new(link.clone(), addr);
        let stats = Arc::new(UdpStats::default());
        tokio::spawn(forward_loop(
            socket,
            link.clone(),
            links,
            target_rx,
            stats.clone(),
            stop,
            seed,
        ));
        Ok(Self { handle, stats })
    }
}

async fn forward_loop(
    socket: Arc<UdpSocket>,
    link: LinkId,
    links: Arc<Links>,
    target: watch::Receiver<Option<SocketAddr>>,
    stats: Arc<UdpStats>,
    stop: CancellationToken,
    seed: u64,
) {
    let faults = links.watch(&link);
    let mut dice = Dice::new(seed, &link);
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, sender) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(_) => continue, // e.g. ICMP port unreachable from an earlier send
            },
            () = stop.cancelled() => return,
        };
        let upstream = match upstreams.get(&sender) {
            Some(upstream) => upstream.clone(),
            None => {
                let Ok(upstream) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                let upstream = Arc::new(upstream);
                upstreams.insert(sender, upstream.clone());
                // Replies to this sender travel the reverse link.
                tokio::spawn(reply_loop(
                    upstream.clone(),
                    socket.clone(),
                    sender,
                    links.watch(&link.reverse()),
                    Dice::new(seed, &link.reverse()),
                    stats.clone(),
                    stop.clone(),
                ));
                upstream
            }
        };
        let Some(to) = *target.borrow() else {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let current = *faults.borrow();
        deliver(&buf[..n], upstream, to, &current, &mut dice, &stats).await;
    }
}

async fn reply_loop(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    sender: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    mut dice: Dice,
    stats: Arc<UdpStats>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = tokio::select! {
            received = upstream.recv_from(&mut buf) => match received {
                Ok((n, _)) => n,
                Err(_) => continue,
            },
            () = stop.cancelled() => return,
        };
        let current = *faults.borrow();
        deliver(
            &buf[..n],
            socket.clone(),
            sender,
            &current,
            &mut dice,
            &stats,
        )
        .await;
    }
}

/// Sends one datagram from `via` to `to`, as the link's faults say.
async fn deliver(
    datagram: &[u8],
    via: Arc<UdpSocket>,
    to: SocketAddr,
    faults: &LinkFaults,
    dice: &mut Dice,
    stats: &Arc<UdpStats>,
) {
    if faults.cut.is_some() || dice.lose(faults.loss) {
        stats.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let copies = if dice.roll(faults.duplicate) {
        stats.duplicated.fetch_add(1, Ordering::Relaxed);
        2
    } else {
        1
    };
    let mut delay = dice.delay(faults.delay);
    if dice.roll(faults.reorder) {
        delay += REORDER_HOLD.max(faults.delay.map_or(Duration::ZERO, |d| d.base));
    }
    stats.forwarded.fetch_add(copies, Ordering::Relaxed);
    if delay.is_zero() {
        for _ in 0..copies {
            // Awaited, not try_send_to: a fresh socket is not known writable until the
            // reactor has seen it, and a burst would be dropped.
            let _ = via.send_to(datagram, to).await;
        }
        return;
    }
    let datagram = datagram.to_vec();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        for _ in 0..copies {
            let _ = via.send_to(&datagram, to).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::link::LinkFaults;

    /// A UDP echo server that counts what it received.
    async fn echo_server() -> (SocketAddr, Arc<AtomicU64>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                count.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        (addr, received)
    }

    struct Setup {
        proxy: UdpLinkProxy,
        links: Arc<Links>,
        link: LinkId,
        server_received: Arc<AtomicU64>,
        client: UdpSocket,
    }

    async fn setup() -> Setup {
        let links = Arc::new(Links::new());
        let link = LinkId::new("n1", "n2");
        let proxy = UdpLinkProxy::bind(link.clone(), links.clone(), 1)
            .await
            .unwrap();
        let (server, server_received) = echo_server().await;
        proxy.set_target(server);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Setup {
            proxy,
            links,
            link,
            server_received,
            client,
        }
    }

    /// Sends `n` datagrams and counts the echoes that come back within `within`.
    async fn echoes(s: &Setup, n: usize, within: Duration) -> usize {
        for i in 0..n {
            s.client
                .send_to(&[i as u8], s.proxy.local_addr())
                .await
                .unwrap();
        }
        let mut got = 0;
        let mut buf = [0u8; 16];
        while let Ok(Ok(_)) = tokio::time::timeout(within, s.client.recv_from(&mut buf)).await {
            got += 1;
        }
        got
    }

    #[tokio::test]
    async fn datagrams_and_replies_pass_a_healthy_link() {
        let s = setup().await;
        assert_eq!(echoes(&s, 10, Duration::from_millis(300)).await, 10);
    }

    #[tokio::test]
    async fn one_way_partitions_are_one_way() {
        let s = setup().await;
        // Requests cut: nothing reaches the server.
        s.links
            .set(&s.link, LinkFaults::parse("partition").unwrap());
        assert_eq!(echoes(&s, 5, Duration::from_millis(200)).await, 0);
        assert_eq!(s.server_received.load(Ordering::Relaxed), 0);
        // Replies cut: the server hears every request, the client hears nothing.
        s.links.set(&s.link, LinkFaults::default());
        s.links
            .set(&s.link.reverse(), LinkFaults::parse("partition").unwrap());
        assert_eq!(echoes(&s, 5, Duration::from_millis(200)).await, 0);
        assert_eq!(s.server_received.load(Ordering::Relaxed), 5);
        // Heal: everything passes again.
        s.links.heal_all();
        assert_eq!(echoes(&s, 5, Duration::from_millis(300)).await, 5);
    }

    #[tokio::test]
    async fn loss_and_duplicate_act_per_datagram() {
        let s = setup().await;
        s.links
            .set(&s.link, LinkFaults::parse("loss 100%").unwrap());
        assert_eq!(echoes(&s, 5, Duration::from_millis(200)).await, 0);
        s.links
            .set(&s.link, LinkFaults::parse("duplicate 100%").unwrap());
        assert_eq!(echoes(&s, 5, Duration::from_millis(300)).await, 10);
        assert_eq!(s.proxy.stats().duplicated.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn delay_holds_each_datagram() {
        let s = setup().await;
        s.links
            .set(&s.link, LinkFaults::parse("delay 80ms").unwrap());
        let started = std::time::Instant::now();
        s.client.send_to(b"x", s.proxy.local_addr()).await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(80),
            "{:?}",
            started.elapsed()
        );
    }
}
