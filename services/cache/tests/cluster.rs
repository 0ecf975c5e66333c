//! Four real `cache serve` processes on loopback: gossip finds everyone, any node serves any
//! key over the memcached protocol, a killed node is declared dead and its writes become
//! hints, and when it comes back the hints are replayed to it; the `cache proxy` sidecar
//! follows the ring and goes around a dead node; `/metrics` and the admin page tell the story.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use distlab_cache::client::{CacheClient, Routing};
use distlab_cache::placement::PlacementKind;
use distlab_runtime::launch::{NodeProcess, free_ports};
use distlab_runtime::retry::RetryPolicy;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

struct Cluster {
    ports: Vec<SocketAddr>,
    nodes: BTreeMap<usize, NodeProcess>,
}

impl Cluster {
    async fn start(n: usize) -> Self {
        let mut cluster = Self {
            ports: free_ports(n).unwrap(),
            nodes: BTreeMap::new(),
        };
        for i in 0..n {
            cluster.start_node(i).await;
        }
        cluster
    }

    async fn start_node(&mut self, i: usize) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cache"));
        command
            .args(["serve", "--id", &format!("n{}", i + 1), "--listen"])
            .arg(self.ports[i].to_string())
            .args(["--admin", "127.0.0.1:0", "--memcached", "127.0.0.1:0"]);
        for (j, port) in self.ports.iter().enumerate() {
            if j != i {
                command.arg("--peer").arg(format!("n{}={port}", j + 1));
            }
        }
        let node = NodeProcess::spawn(command, Duration::from_secs(20))
            .await
            .unwrap();
        self.nodes.insert(i, node);
    }

    /// Every running node's name and gRPC address, for the client library.
    fn grpc_nodes(&self) -> Vec<(String, SocketAddr)> {
        self.nodes
            .iter()
            .map(|(i, node)| (format!("n{}", i + 1), node.ready().grpc))
            .collect()
    }

    fn memcached(&self, i: usize) -> SocketAddr {
        self.nodes[&i].ready().extra["memcached"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn status(&self, i: usize) -> Value {
        let url = format!("http://{}/status", self.nodes[&i].ready().admin);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    async fn metrics(&self, i: usize) -> String {
        let url = format!("http://{}/metrics", self.nodes[&i].ready().admin);
        reqwest::get(url).await.unwrap().text().await.unwrap()
    }

    /// Polls every running node's status until `done` holds for all (20 s at most).
    async fn until(&self, what: &str, done: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut all = true;
            for &i in self.nodes.keys() {
                all &= done(&self.status(i).await["detail"]);
            }
            if all {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within 20 s: {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sends `request` on a fresh connection and reads until the reply ends with `until`.
async fn memcached(addr: SocketAddr, request: &str, until: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).ends_with(until) {
        let read = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buffer))
            .await
            .expect("no reply in 10 s")
            .unwrap();
        assert!(
            read > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8(reply).unwrap()
}

async fn set_many(addr: SocketAddr, keys: std::ops::Range<usize>) {
    let mut request = String::new();
    for k in keys.clone() {
        request.push_str(&format!(
            "set key{k} 0 0 {}\r\nvalue{k}\r\n",
            5 + k.to_string().len()
        ));
    }
    let reply = memcached(addr, &request, &"STORED\r\n".repeat(keys.len())).await;
    assert_eq!(reply, "STORED\r\n".repeat(keys.len()));
}

async fn get_all(addr: SocketAddr, keys: std::ops::Range<usize>) {
    for k in keys {
        let reply = memcached(addr, &format!("get key{k}\r\n"), "END\r\n").await;
        let value = format!("value{k}");
        assert_eq!(
            reply,
            format!("VALUE key{k} 0 {}\r\n{value}\r\nEND\r\n", value.len())
        );
    }
}

/// What the client library tests retry with: short attempts, a long deadline.
fn client_policy() -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(10),
        ..RetryPolicy::default()
    }
}

/// Requests the running nodes forwarded to a replica, summed.
async fn forwarded(cluster: &Cluster) -> u64 {
    let mut sum = 0;
    for &i in cluster.nodes.keys() {
        sum += cluster.status(i).await["detail"]["counts"]["forwarded"]
            .as_u64()
            .unwrap();
    }
    sum
}

fn member_state(detail: &Value, id: &str) -> String {
    detail["members"][id]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn a_killed_node_gets_hints_and_they_are_replayed_when_it_returns() {
    let mut cluster = Cluster::start(4).await;
    cluster
        .until("every node sees four live members", |d| {
            d["live"].as_array().is_some_and(|l| l.len() == 4)
        })
        .await;
    set_many(cluster.memcached(0), 0..40).await;
    get_all(cluster.memcached(1), 0..40).await;

    // SIGKILL n4: the others declare it dead; writes still reach W = 2 replicas.
    cluster.nodes.remove(&3).unwrap().kill().await.unwrap();
    cluster
        .until("n4 dead everywhere", |d| member_state(d, "n4") == "dead")
        .await;
    set_many(cluster.memcached(2), 40..80).await;
    get_all(cluster.memcached(0), 40..80).await;
    let mut hints = 0;
    for i in 0..3 {
        hints += cluster.status(i).await["detail"]["hints"]["n4"]
            .as_u64()
            .unwrap_or(0);
    }
    assert!(hints > 0, "writes for n4 were kept as hints");
    // The same story in the metrics.
    let metrics = cluster.metrics(0).await;
    for line in [
        "cache_gossip_deaths_total 1",
        "cache_ops_total{kind=\"set\"}",
        "cache_failure_detection_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // And on the admin page.
    let url = format!("http://{}/", cluster.nodes[&0].ready().admin);
    let page = reqwest::get(url).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("<td>n4</td><td class=\"dead\">dead</td>"),
        "{page}"
    );
    assert!(page.contains("<h2>hint queues</h2><table>"), "{page}");

    // Back on the same port: it refutes its death, and the hints drain into it.
    cluster.start_node(3).await;
    cluster
        .until("n4 alive and every hint for it delivered", |d| {
            let alive = d["members"].get("n4").is_none_or(|m| m["state"] == "alive");
            alive && d["hints"].get("n4").is_none()
        })
        .await;
    let n4 = cluster.status(3).await;
    assert!(n4["detail"]["incarnation"].as_u64().unwrap() >= 1);
    assert!(n4["detail"]["store"]["items"].as_u64().unwrap() >= hints);
    get_all(cluster.memcached(3), 0..80).await;
}

/// A paused node (SIGSTOP) accepts connections and answers nothing: calls to it must time
/// out, not hang, so writes through the others go on; SWIM then declares it dead.
#[tokio::test]
async fn a_paused_node_does_not_stall_writes() {
    let cluster = Cluster::start(4).await;
    cluster
        .until("every node sees four live members", |d| {
            d["live"].as_array().is_some_and(|l| l.len() == 4)
        })
        .await;
    cluster.nodes[&1].signal(Signal::SIGSTOP).unwrap();
    set_many(cluster.memcached(0), 0..20).await;
    get_all(cluster.memcached(2), 0..20).await;
    // The others declare it dead (its own status would not answer: it is paused).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for i in [0, 2, 3] {
        while member_state(&cluster.status(i).await["detail"], "n2") != "dead" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "n2 not dead at n{}",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    cluster.nodes[&1].signal(Signal::SIGCONT).unwrap();
}

/// The client library over gRPC: set, get, delete through any node; when the node it talks
/// to dies, its next attempt goes to another.
#[tokio::test]
async fn the_client_library_moves_on_from_a_dead_node() {
    let mut cluster = Cluster::start(3).await;
    cluster
        .until("every node sees three live members", |d| {
            d["live"].as_array().is_some_and(|l| l.len() == 3)
        })
        .await;
    let (nodes, policy) = (cluster.grpc_nodes(), client_policy());
    let client = CacheClient::connect_lazy(&nodes, policy).unwrap();
    for k in 0..20 {
        client
            .set(format!("key{k}"), format!("value{k}"), None)
            .await
            .unwrap();
    }
    assert_eq!(client.node(), "n1");
    cluster.nodes.remove(&0).unwrap().kill().await.unwrap();
    for k in 0..20 {
        let found = client.get(format!("key{k}")).await.unwrap().unwrap();
        assert_eq!(found.value, format!("value{k}"));
    }
    assert_ne!(client.node(), "n1");
    assert!(client.delete("key0").await.unwrap());
    assert!(!client.delete("key0").await.unwrap());
    assert_eq!(client.get("key0").await.unwrap(), None);
    let ttl = client.set("brief", "v", Some(Duration::from_millis(1)));
    ttl.await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        client.get("brief").await.unwrap(),
        None,
        "expired after its ttl"
    );
}

/// The routing client: each key goes straight to a replica by the ring it learns (so no node
/// forwards anything, where a plain client's node forwards what it does not hold); when a
/// replica dies, the next one serves.
#[tokio::test]
async fn the_routing_client_sends_each_key_to_a_replica_and_goes_around_a_dead_one() {
    let mut cluster = Cluster::start(5).await;
    cluster
        .until("every node sees five live members", |d| {
            d["live"].as_array().is_some_and(|l| l.len() == 5)
        })
        .await;
    let (nodes, policy) = (cluster.grpc_nodes(), client_policy());
    // A plain client talks to n1, which forwards the keys it does not hold.
    let plain = CacheClient::connect_lazy(&nodes, policy.clone()).unwrap();
    for k in 0..40 {
        plain.set(format!("plain{k}"), "v", None).await.unwrap();
    }
    let before = forwarded(&cluster).await;
    assert!(before > 0, "n1 holds at most 3/5 of the keys");

    let routing = Routing {
        replicas: 3,
        placement: PlacementKind::parse("ring", PlacementKind::DEFAULT_VNODES).unwrap(),
        watch_every: Duration::from_millis(50),
    };
    let client = CacheClient::routing(&nodes, policy, routing).await.unwrap();
    let ring = client.ring().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ring.members() != ["n1", "n2", "n3", "n4", "n5"] {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never learned the ring"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in 0..40 {
        client
            .set(format!("key{k}"), format!("value{k}"), None)
            .await
            .unwrap();
        let found = client.get(format!("key{k}")).await.unwrap().unwrap();
        assert_eq!(found.value, format!("value{k}"));
    }
    assert!(client.delete("key0").await.unwrap());
    let (routed, unrouted) = client.routed();
    assert!(
        routed >= 81 && unrouted == 0,
        "every attempt went by the ring"
    );
    assert_eq!(forwarded(&cluster).await, before, "no node forwarded");
    // Not a member: the nodes never heard of it as one.
    let detail = &cluster.status(0).await["detail"];
    let others: Vec<&String> = detail["members"].as_object().unwrap().keys().collect();
    assert_eq!(others, ["n2", "n3", "n4", "n5"], "{detail}");

    // The primary of key1 dies: before the ring says so, an attempt on it fails and the next
    // replica serves; after, the dead one is skipped.
    let primary = ring.live_replicas(b"key1", 3)[0].clone();
    let victim: usize = primary[1..].parse::<usize>().unwrap() - 1;
    cluster.nodes.remove(&victim).unwrap().kill().await.unwrap();
    let found = client.get("key1").await.unwrap().unwrap();
    assert_eq!(found.value, "value1");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ring.live_replicas(b"key1", 3).contains(&primary) {
        assert!(
            std::time::Instant::now() < deadline,
            "the client never saw {primary} dead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for k in 1..40 {
        let found = client.get(format!("key{k}")).await.unwrap().unwrap();
        assert_eq!(found.value, format!("value{k}"));
    }
    client.set("after", "v", None).await.unwrap();
    assert_eq!(client.get("after").await.unwrap().unwrap().value, "v");
}

/// The sidecar: an application's memcached endpoint that follows the ring by gossip (never a
/// member itself) and goes around a dead node.
#[tokio::test]
async fn the_proxy_routes_by_the_ring_it_learns_and_goes_around_a_dead_node() {
    let mut cluster = Cluster::start(3).await;
    cluster
        .until("every node sees three live members", |d| {
            d["live"].as_array().is_some_and(|l| l.len() == 3)
        })
        .await;
    let mut command = Command::new(env!("CARGO_BIN_EXE_cache"));
    command.args(["proxy", "--id", "p1", "--listen", "127.0.0.1:0"]);
    command.args(["--admin", "127.0.0.1:0", "--memcached", "127.0.0.1:0"]);
    for (j, port) in cluster.ports.iter().enumerate() {
        command.arg("--peer").arg(format!("n{}={port}", j + 1));
    }
    let proxy = NodeProcess::spawn(command, Duration::from_secs(20))
        .await
        .unwrap();
    let endpoint: SocketAddr = proxy.ready().extra["memcached"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let status = |proxy: &NodeProcess| {
        let url = format!("http://{}/status", proxy.ready().admin);
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&proxy).await["detail"]["ring"] != serde_json::json!(["n1", "n2", "n3"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never learned the ring"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_many(endpoint, 0..30).await;
    get_all(endpoint, 0..30).await;
    get_all(cluster.memcached(1), 0..30).await;
    assert!(status(&proxy).await["detail"]["routed"].as_u64().unwrap() >= 60);
    // Not a member: the nodes never heard of it as one.
    for i in 0..3 {
        let detail = &cluster.status(i).await["detail"];
        assert!(detail["members"].get("p1").is_none(), "{detail}");
    }

    // n2 dies: the proxy learns it from the next view and goes around it.
    cluster.nodes.remove(&1).unwrap().kill().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&proxy).await["detail"]["down"] != serde_json::json!(["n2"]) {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never saw n2 dead"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    get_all(endpoint, 0..30).await;
    set_many(endpoint, 30..40).await;
    get_all(endpoint, 30..40).await;
    let version = memcached(endpoint, "version\r\n", "\r\n").await;
    assert!(version.starts_with("VERSION "), "{version}");
}
