//! The proxies of one cluster: a client link to every node, and (for projects whose nodes
//! talk to each other) a link for every ordered pair of nodes. All are created before any
//! node starts, because their addresses go on the nodes' command lines (`--peer`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use std::collections::BTreeSet;

use super::link::tcp::TcpLinkProxy;
use super::link::udp::UdpLinkProxy;
use super::link::{Cut, LinkFaults, LinkId, Links};
use super::partition::CutLink;
use super::project::PeerLinks;

/// The endpoint name clients use in link ids (`client->n1`).
pub const CLIENT: &str = "client";

pub struct Network {
    links: Arc<Links>,
    proxies: BTreeMap<LinkId, TcpLinkProxy>,
    /// For projects that gossip: a UDP proxy per node link, on its TCP proxy's port number.
    datagrams: BTreeMap<LinkId, UdpLinkProxy>,
}

/// Binds the proxies of one link: TCP, and its UDP twin when the project gossips.
async fn bind_link(
    link: LinkId,
    peer_links: PeerLinks,
    links: &Arc<Links>,
    seed: u64,
    proxies: &mut BTreeMap<LinkId, TcpLinkProxy>,
    datagrams: &mut BTreeMap<LinkId, UdpLinkProxy>,
) -> std::io::Result<()> {
    if peer_links == PeerLinks::TcpAndUdp {
        let (tcp, udp) = bind_twins(&link, links, seed).await?;
        proxies.insert(link.clone(), tcp);
        datagrams.insert(link, udp);
    } else {
        let proxy = TcpLinkProxy::bind(link.clone(), links.clone(), seed).await?;
        proxies.insert(link, proxy);
    }
    Ok(())
}

/// How many times a TCP proxy's port is tried for its UDP twin before giving up.
const UDP_TWIN_ATTEMPTS: usize = 50;

impl Network {
    pub async fn build(
        nodes: &[String],
        peer_links: PeerLinks,
        seed: u64,
    ) -> std::io::Result<Self> {
        let links = Arc::new(Links::new());
        let mut proxies = BTreeMap::new();
        let mut datagrams = BTreeMap::new();
        for to in nodes {
            // Clients of a gossiping project may follow the gossip too (the cache's routing
            // client does), so their links carry UDP as the nodes' do.
            let link = LinkId::new(CLIENT.to_string(), to.clone());
            bind_link(link, peer_links, &links, seed, &mut proxies, &mut datagrams).await?;
            if peer_links == PeerLinks::None {
                continue;
            }
            for from in nodes.iter().filter(|n| *n != to) {
                let link = LinkId::new(from.clone(), to.clone());
                bind_link(link, peer_links, &links, seed, &mut proxies, &mut datagrams).await?;
            }
        }
        Ok(Self {
            links,
            proxies,
            datagrams,
        })
    }

    /// The faults of every link (the engine's knob for partitions, delay, loss...).
    pub fn links(&self) -> &Arc<Links> {
        &self.links
    }

    /// Where `from` must send to reach `to`.
    pub fn addr(&self, from: &str, to: &str) -> Option<SocketAddr> {
        self.proxies
            .get(&LinkId::new(from, to))
            .map(|proxy| proxy.local_addr())
    }

    /// The `--peer` flags of node `id`: every other node, through the proxies.
    pub fn peer_flags(&self, id: &str) -> Vec<String> {
        self.proxies
            .keys()
            .filter(|link| link.from == id)
            .flat_map(|link| {
                [
                    "--peer".to_string(),
                    format!("{}={}", link.to, self.proxies[link].local_addr()),
                ]
            })
            .collect()
    }

    /// Node `id` now listens at `grpc` (and, if it gossips, on UDP at the same port): point
    /// every link into it there.
    pub fn node_ready(&self, id: &str, grpc: SocketAddr) {
        for proxy in self.proxies.values().filter(|p| p.link().to == id) {
            proxy.set_target(grpc);
        }
        for proxy in self.datagrams.values().filter(|p| p.link().to == id) {
            proxy.set_target(grpc);
        }
    }

    /// Cuts these node links (a partition), keeping whatever delay or loss they have.
    pub fn cut(&self, cuts: &BTreeSet<CutLink>) {
        for (from, to) in cuts {
            let link = LinkId::new(from.clone(), to.clone());
            let mut faults = self.links.get(&link);
            faults.cut = Some(Cut::Blackhole);
            self.links.set(&link, faults);
        }
    }

    /// Sets the faults of every link from `from` to `to`. `*` matches any node (never the
    /// clients: name `client` to fault their side). Both directions of a proxied link are
    /// links: `n1->client` is the replies n1 sends its clients. Returns how many matched.
    pub fn set_faults(&self, from: &str, to: &str, faults: LinkFaults) -> usize {
        let matches =
            |pattern: &str, name: &str| pattern == name || (pattern == "*" && name != CLIENT);
        let candidates: BTreeSet<LinkId> = self
            .proxies
            .keys()
            .flat_map(|l| [l.clone(), l.reverse()])
            .collect();
        let mut n = 0;
        for link in candidates {
            if matches(from, &link.from) && matches(to, &link.to) {
                self.links.set(&link, faults);
                n += 1;
            }
        }
        n
    }

    /// Every link healthy again.
    pub fn heal(&self) {
        self.links.heal_all();
    }

    /// Every node's links except the client ones: the pairs a partition can cut.
    pub fn node_links(&self) -> impl Iterator<Item = &LinkId> {
        self.proxies.keys().filter(|l| l.from != CLIENT)
    }
}

/// A TCP proxy and a UDP proxy for `link` on the same port number.
async fn bind_twins(
    link: &LinkId,
    links: &Arc<Links>,
    seed: u64,
) -> std::io::Result<(TcpLinkProxy, UdpLinkProxy)> {
    let mut last_error = None;
    for _ in 0..UDP_TWIN_ATTEMPTS {
        let tcp = TcpLinkProxy::bind(link.clone(), links.clone(), seed).await?;
        match UdpLinkProxy::bind_at(tcp.local_addr(), link.clone(), links.clone(), seed).await {
            Ok(udp) => return Ok((tcp, udp)),
            // That port number is taken in UDP's space: try another.
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.expect("at least one attempt"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::partition::Partition;
    use rand::SeedableRng;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn talks(addr: SocketAddr) -> bool {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return false;
        };
        let mut b = [0u8; 2];
        s.write_all(b"hi").await.is_ok()
            && matches!(
                tokio::time::timeout(std::time::Duration::from_millis(200), s.read_exact(&mut b))
                    .await,
                Ok(Ok(_))
            )
    }

    #[tokio::test]
    async fn isolating_a_node_cuts_its_links_and_heal_restores_them() {
        let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let net = Network::build(&nodes, PeerLinks::Tcp, 1).await.unwrap();
        for node in &nodes {
            net.node_ready(node, echo().await);
        }
        assert_eq!(net.peer_flags("n1").len(), 4, "--peer for n2 and n3");
        let cuts = Partition::parse("isolate n1")
            .unwrap()
            .cuts(&nodes, &mut rand::rngs::SmallRng::seed_from_u64(1))
            .unwrap();
        net.cut(&cuts);
        assert!(!talks(net.addr("n1", "n2").unwrap()).await);
        assert!(!talks(net.addr("n3", "n1").unwrap()).await);
        assert!(
            talks(net.addr("n2", "n3").unwrap()).await,
            "the majority still talks"
        );
        assert!(
            talks(net.addr(CLIENT, "n1").unwrap()).await,
            "partitions are between nodes"
        );
        net.heal();
        assert!(talks(net.addr("n1", "n2").unwrap()).await);
    }

    /// A node that speaks TCP and UDP on one port number, echoing both.
    async fn echo_both() -> SocketAddr {
        loop {
            let tcp_addr = echo().await;
            let Ok(udp) = tokio::net::UdpSocket::bind(tcp_addr).await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                    let _ = udp.send_to(&buf[..n], from).await;
                }
            });
            return tcp_addr;
        }
    }

    async fn gossips(addr: SocketAddr) -> bool {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 8];
        for _ in 0..3 {
            socket.send_to(b"ping", addr).await.unwrap();
            let reply = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                socket.recv_from(&mut buf),
            )
            .await;
            if matches!(reply, Ok(Ok((4, _)))) {
                return true;
            }
        }
        false
    }

    #[tokio::test]
    async fn gossip_goes_through_udp_proxies_on_the_peer_address() {
        let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let net = Network::build(&nodes, PeerLinks::TcpAndUdp, 1)
            .await
            .unwrap();
        for node in &nodes {
            net.node_ready(node, echo_both().await);
        }
        let n1_to_n2 = net.addr("n1", "n2").unwrap();
        assert!(talks(n1_to_n2).await, "gRPC still goes through");
        assert!(
            gossips(n1_to_n2).await,
            "datagrams to the same --peer address"
        );
        let client_to_n2 = net.addr(CLIENT, "n2").unwrap();
        assert!(
            gossips(client_to_n2).await,
            "a client may follow the gossip (a routing client asks for the ring)"
        );
        assert_eq!(net.datagrams.len(), 9, "6 node links and 3 client links");

        let cuts = Partition::parse("isolate n1")
            .unwrap()
            .cuts(&nodes, &mut rand::rngs::SmallRng::seed_from_u64(1))
            .unwrap();
        net.cut(&cuts);
        assert!(!gossips(n1_to_n2).await, "a partition drops datagrams too");
        assert!(gossips(net.addr("n2", "n3").unwrap()).await);
        net.heal();
        assert!(gossips(n1_to_n2).await);
    }

    #[tokio::test]
    async fn link_patterns_match_node_links() {
        let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let net = Network::build(&nodes, PeerLinks::Tcp, 1).await.unwrap();
        let delay = LinkFaults::parse("delay 10ms").unwrap();
        assert_eq!(net.set_faults("n1", "*", delay), 2);
        assert_eq!(
            net.set_faults("*", "n1", delay),
            2,
            "client links are not matched by *"
        );
        assert_eq!(net.set_faults("client", "n1", delay), 1);
        assert_eq!(
            net.set_faults("n1", "client", delay),
            1,
            "the replies to clients"
        );
        assert_eq!(net.set_faults("n9", "*", delay), 0);
        assert_eq!(net.links().faulty().len(), 6);
    }
}
