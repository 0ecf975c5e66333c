//! The proxies of one cluster: a client link to every node, and (for projects whose nodes
//! talk to each other) a link for every ordered pair of nodes. All are created before any
//! node starts, because their addresses go on the nodes' command lines (`--peer`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::link::tcp::TcpLinkProxy;
use super::link::{LinkId, Links};
use super::project::PeerLinks;

/// The endpoint name clients use in link ids (`client->n1`).
pub const CLIENT: &str = "client";

pub struct Network {
    links: Arc<Links>,
    proxies: BTreeMap<LinkId, TcpLinkProxy>,
}

impl Network {
    pub async fn build(
        nodes: &[String],
        peer_links: PeerLinks,
        seed: u64,
    ) -> std::io::Result<Self> {
        let links = Arc::new(Links::new());
        let mut proxies = BTreeMap::new();
        for to in nodes {
            let mut froms = vec![CLIENT.to_string()];
            if peer_links == PeerLinks::Tcp {
                froms.extend(nodes.iter().filter(|n| *n != to).cloned());
            }
            for from in froms {
                let link = LinkId::new(from, to.clone());
                let proxy = TcpLinkProxy::bind(link.clone(), links.clone(), seed).await?;
                proxies.insert(link, proxy);
            }
        }
        Ok(Self { links, proxies })
    }

    /// The faults of every link (the engine's knob for partitions, delay, loss...).
    pub fn links(&self) -> &Arc<Links> {
        &self.links
    }

    /// Where `from` must send to reach `to`.
    pub fn addr(&self, from: &str, to: &str) -> Option<SocketAddr> {
        self.proxies
            .get(&LinkId::new(from, to))
            .map(TcpLinkProxy::local_addr)
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

    /// Node `id` now listens at `grpc`: point every link into it there.
    pub fn node_ready(&self, id: &str, grpc: SocketAddr) {
        for proxy in self.proxies.values().filter(|p| p.link().to == id) {
            proxy.set_target(grpc);
        }
    }

    /// Every node's links except the client ones: the pairs a partition can cut.
    pub fn node_links(&self) -> impl Iterator<Item = &LinkId> {
        self.proxies.keys().filter(|l| l.from != CLIENT)
    }
}
