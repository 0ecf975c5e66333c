//! The lab's netem: every link between two nodes, and between a client and a node, goes
//! through a proxy the lab owns, one per directed link. The kernel here has no netem qdisc and
//! users must not need root, so faults are applied in user space, TCP and UDP alike.
//!
//! - [`faults`]: the fault vocabulary (`partition`, `delay 100ms 20ms`, `loss 5%`...).
//! - [`Links`]: the current faults of every directed link. The engine writes it; proxies
//!   watch it, so a change applies at once, to open connections too.
//! - [`tcp::TcpLinkProxy`], [`udp::UdpLinkProxy`]: one listening socket per directed link
//!   `from -> to`. Node `from` is given the proxy's address as `--peer to=ADDR`; the proxy
//!   forwards to `to`'s real address, which the engine sets (and resets after a restart).
//!
//! Bytes travelling `from -> to` obey the faults of link `from -> to`; replies travelling back
//! on the same connection obey link `to -> from`. That is what makes one-way partitions
//! behave like real ones: with `n1 -> n2` cut, n1's requests do not arrive, and n2's requests
//! arrive but their replies do not.

pub mod bench;
pub mod faults;
pub mod tcp;
pub mod udp;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use faults::{Chance, Cut, Delay, LinkFaults};

/// A directed link: traffic from `from` to `to`. Clients are endpoints too (`client`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId {
    pub from: String,
    pub to: String,
}

impl LinkId {
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
        }
    }

    pub fn reverse(&self) -> Self {
        Self {
            from: self.to.clone(),
            to: self.from.clone(),
        }
    }

    /// A stable number for seeding this link's randomness from the run's seed.
    fn salt(&self) -> u64 {
        distlab_runtime::hash::fnv1a(self.from.bytes().chain([b'>']).chain(self.to.bytes()))
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.from, self.to)
    }
}

/// What every link proxy is to its owner, whatever the transport: the link it carries, the
/// address `from` sends to, where it forwards (changed when `to` restarts on another port), and
/// the switch that stops it. Dropping the handle stops the proxy and its connections.
pub struct ProxyHandle {
    link: LinkId,
    addr: SocketAddr,
    target: watch::Sender<Option<SocketAddr>>,
    stop: CancellationToken,
}

impl ProxyHandle {
    /// A handle for a proxy listening at `addr`; the proxy's tasks get the target to follow
    /// and the token to stop on.
    fn new(
        link: LinkId,
        addr: SocketAddr,
    ) -> (Self, watch::Receiver<Option<SocketAddr>>, CancellationToken) {
        let (target, target_rx) = watch::channel(None);
        let stop = CancellationToken::new();
        (
            Self {
                link,
                addr,
                target,
                stop: stop.clone(),
            },
            target_rx,
            stop,
        )
    }

    /// The address to give `from` as its way to reach `to`.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn link(&self) -> &LinkId {
        &self.link
    }

    /// Where `to` listens now. Traffic waits (TCP) or is dropped (UDP) until it is known.
    pub fn set_target(&self, target: SocketAddr) {
        self.target.send_replace(Some(target));
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A link proxy of some transport: its handle (address, target, stop switch; reached through
/// `Deref`) and its transport's counters. `TcpLinkProxy` and `UdpLinkProxy` are the two kinds.
pub struct LinkProxy<Stats> {
    handle: ProxyHandle,
    stats: std::sync::Arc<Stats>,
}

impl<Stats> LinkProxy<Stats> {
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl<Stats> std::ops::Deref for LinkProxy<Stats> {
    type Target = ProxyHandle;

    fn deref(&self) -> &ProxyHandle {
        &self.handle
    }
}

/// The faults of every directed link, each behind a watch channel.
#[derive(Default)]
pub struct Links {
    links: Mutex<HashMap<LinkId, watch::Sender<LinkFaults>>>,
}

impl Links {
    pub fn new() -> Self {
        Self::default()
    }

    fn sender(&self, link: &LinkId) -> watch::Sender<LinkFaults> {
        self.links
            .lock()
            .unwrap()
            .entry(link.clone())
            .or_insert_with(|| watch::channel(LinkFaults::default()).0)
            .clone()
    }

    /// Replaces the faults of `link`.
    pub fn set(&self, link: &LinkId, faults: LinkFaults) {
        self.sender(link).send_replace(faults);
    }

    pub fn get(&self, link: &LinkId) -> LinkFaults {
        *self.sender(link).borrow()
    }

    /// Follows the faults of `link` as they change.
    pub fn watch(&self, link: &LinkId) -> watch::Receiver<LinkFaults> {
        self.sender(link).subscribe()
    }

    /// Makes every link healthy again.
    pub fn heal_all(&self) {
        for sender in self.links.lock().unwrap().values() {
            sender.send_if_modified(|faults| {
                let changed = !faults.is_healthy();
                *faults = LinkFaults::default();
                changed
            });
        }
    }

    /// Links that currently have a fault, with their faults.
    pub fn faulty(&self) -> Vec<(LinkId, LinkFaults)> {
        let mut faulty: Vec<_> = self
            .links
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| !s.borrow().is_healthy())
            .map(|(l, s)| (l.clone(), *s.borrow()))
            .collect();
        faulty.sort_by(|a, b| a.0.cmp(&b.0));
        faulty
    }
}

/// The random draws of one link direction: seeded (the same seed gives the same losses) and
/// correlated the way netem correlates them.
pub(crate) struct Dice {
    rng: SmallRng,
    last_loss: f64,
    last_jitter: f64,
}

impl Dice {
    pub(crate) fn new(seed: u64, link: &LinkId) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed ^ link.salt()),
            last_loss: 0.5,
            last_jitter: 0.5,
        }
    }

    fn correlated(rng: &mut SmallRng, last: &mut f64, correlation: f64) -> f64 {
        let fresh: f64 = rng.random();
        *last = correlation * *last + (1.0 - correlation) * fresh;
        *last
    }

    /// Whether this packet is lost.
    pub(crate) fn lose(&mut self, loss: Option<Chance>) -> bool {
        loss.is_some_and(|c| {
            c.p > 0.0 && Self::correlated(&mut self.rng, &mut self.last_loss, c.correlation) < c.p
        })
    }

    /// An independent yes with probability `chance` (duplicate, reorder).
    pub(crate) fn roll(&mut self, chance: Option<Chance>) -> bool {
        chance.is_some_and(|c| self.rng.random::<f64>() < c.p)
    }

    /// This packet's delay: base ± jitter, never negative.
    pub(crate) fn delay(&mut self, delay: Option<Delay>) -> std::time::Duration {
        let Some(d) = delay else {
            return std::time::Duration::ZERO;
        };
        if d.jitter.is_zero() {
            return d.base;
        }
        let u = Self::correlated(&mut self.rng, &mut self.last_jitter, d.correlation);
        let offset = (u * 2.0 - 1.0) * d.jitter.as_secs_f64();
        std::time::Duration::from_secs_f64((d.base.as_secs_f64() + offset).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_same_seed_gives_the_same_losses() {
        let link = LinkId::new("n1", "n2");
        let loss = Some(Chance {
            p: 0.3,
            correlation: 0.0,
        });
        let draws = |seed| {
            let mut dice = Dice::new(seed, &link);
            (0..200).map(|_| dice.lose(loss)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let lost = draws(7).iter().filter(|l| **l).count();
        assert!((30..90).contains(&lost), "{lost} of 200 lost at 30%");
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut dice = Dice::new(1, &LinkId::new("a", "b"));
        let delay = Some(Delay {
            base: Duration::from_millis(100),
            jitter: Duration::from_millis(20),
            correlation: 0.25,
        });
        for _ in 0..1000 {
            let d = dice.delay(delay);
            assert!(
                d >= Duration::from_millis(80) && d <= Duration::from_millis(120),
                "{d:?}"
            );
        }
    }

    #[test]
    fn heal_all_clears_every_link() {
        let links = Links::new();
        let a = LinkId::new("n1", "n2");
        links.set(&a, LinkFaults::parse("partition").unwrap());
        links.set(&a.reverse(), LinkFaults::parse("delay 10ms").unwrap());
        assert_eq!(links.faulty().len(), 2);
        let mut watcher = links.watch(&a);
        links.heal_all();
        assert!(watcher.has_changed().unwrap());
        assert!(watcher.borrow_and_update().is_healthy());
        assert!(links.faulty().is_empty());
    }
}
