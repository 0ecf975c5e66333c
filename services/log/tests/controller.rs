//! Three real `log serve --role controller` processes on loopback: they elect a leader, take
//! broker registrations and heartbeats, create topics, fence a broker that goes silent (its
//! partitions get new leaders, it leaves the ISRs), survive the loss of their leader with the
//! metadata intact, refuse stale ISR changes, and a restarted controller catches up.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use distlab_log::controller::client::ControllerClient;
use distlab_log::controller::service::refusal_kind;
use distlab_proto::log::v1 as pb;
use distlab_runtime::launch::{NodeProcess, free_ports};
use distlab_runtime::retry::RetryPolicy;
use serde_json::Value;
use support::metadata_until;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

struct Quorum {
    ports: Vec<SocketAddr>,
    dirs: Vec<tempfile::TempDir>,
    nodes: BTreeMap<usize, NodeProcess>,
}

impl Quorum {
    async fn start(n: usize) -> Self {
        let mut quorum = Self {
            ports: free_ports(n).unwrap(),
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            nodes: BTreeMap::new(),
        };
        for i in 0..n {
            quorum.start_node(i).await;
        }
        quorum
    }

    async fn start_node(&mut self, i: usize) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_log"));
        command
            .args([
                "serve",
                "--role",
                "controller",
                "--id",
                &format!("c{}", i + 1),
            ])
            .arg("--listen")
            .arg(self.ports[i].to_string())
            .args(["--admin", "127.0.0.1:0", "--broker-session-timeout", "1s"])
            .arg("--data-dir")
            .arg(self.dirs[i].path());
        for (j, port) in self.ports.iter().enumerate() {
            if j != i {
                command.arg("--peer").arg(format!("c{}={port}", j + 1));
            }
        }
        let node = NodeProcess::spawn(command, Duration::from_secs(20))
            .await
            .unwrap();
        self.nodes.insert(i, node);
    }

    fn client(&self) -> ControllerClient {
        let nodes: Vec<(String, SocketAddr)> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, addr)| (format!("c{}", i + 1), *addr))
            .collect();
        let policy = RetryPolicy {
            max_attempts: 50,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
            ..RetryPolicy::default()
        };
        ControllerClient::connect_lazy(&nodes, policy).unwrap()
    }

    async fn status(&self, i: usize) -> Value {
        let url = format!("http://{}/status", self.nodes[&i].ready().admin);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// The running controller that leads, once one does (20 s at most).
    async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            for &i in self.nodes.keys() {
                if self.status(i).await["role"] == "leader" {
                    return i;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Heartbeats for `broker` every 200 ms until cancelled; re-registers if told its epoch is
/// stale (as a broker does).
fn heartbeat(client: ControllerClient, broker: &'static str, epoch: u64) -> CancellationToken {
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            let _ = client.heartbeat(broker, epoch).await;
        }
    });
    stop
}

fn partition<'a>(
    metadata: &'a pb::ClusterMetadata,
    topic: &str,
    index: usize,
) -> &'a pb::PartitionInfo {
    &metadata
        .topics
        .iter()
        .find(|t| t.name == topic)
        .unwrap()
        .partitions[index]
}

fn fenced(metadata: &pb::ClusterMetadata, broker: &str) -> bool {
    metadata
        .brokers
        .iter()
        .any(|b| b.name == broker && b.fenced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_quorum_fences_silent_brokers_and_survives_its_leader() {
    let mut quorum = Quorum::start(3).await;
    quorum.leader().await;
    let client = quorum.client();

    let mut beats = BTreeMap::new();
    for (i, broker) in ["b1", "b2", "b3"].into_iter().enumerate() {
        let epoch = client
            .register_broker(broker, &format!("127.0.0.1:{}", 9101 + i), 0)
            .await
            .unwrap();
        beats.insert(broker, heartbeat(client.clone(), broker, epoch));
    }
    let topic = client
        .create_topic(pb::CreateTopicRequest {
            name: "orders".into(),
            partitions: 3,
            replication_factor: 3,
            min_insync_replicas: 2,
            unclean_leader_election: Some(false),
        })
        .await
        .unwrap();
    assert_eq!(topic.partitions[0].leader.as_deref(), Some("b1"));
    let again = client
        .create_topic(pb::CreateTopicRequest {
            name: "orders".into(),
            partitions: 1,
            replication_factor: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refusal_kind(&again), Some("topic_exists"), "{again:?}");

    // b1 goes silent: fenced after its 1 s session; partition 0 moves to b2 in epoch 1.
    beats.remove("b1").unwrap().cancel();
    let metadata = metadata_until(&client, "b1 fenced", |m| fenced(m, "b1")).await;
    let p0 = partition(&metadata, "orders", 0);
    assert_eq!(p0.leader.as_deref(), Some("b2"));
    assert_eq!(p0.leader_epoch, 1);
    assert_eq!(p0.isr, vec!["b2", "b3"]);
    assert!(
        !partition(&metadata, "orders", 1)
            .isr
            .contains(&"b1".to_string())
    );

    // The controller leader dies: another takes over with the metadata intact, and keeps
    // the surviving brokers live (a leader change alone fences nobody).
    let old_leader = quorum.leader().await;
    quorum
        .nodes
        .get_mut(&old_leader)
        .unwrap()
        .kill()
        .await
        .unwrap();
    quorum.nodes.remove(&old_leader);
    let new_leader = quorum.leader().await;
    assert_ne!(new_leader, old_leader);
    let metadata = client.metadata(0, Duration::ZERO).await.unwrap();
    assert_eq!(metadata.controller, format!("c{}", new_leader + 1));
    assert!(fenced(&metadata, "b1"));
    assert_eq!(
        partition(&metadata, "orders", 0).leader.as_deref(),
        Some("b2")
    );

    // b1 heartbeats again under its registration: unfenced, but not back in any ISR.
    let b1_epoch = metadata
        .brokers
        .iter()
        .find(|b| b.name == "b1")
        .unwrap()
        .epoch;
    assert!(
        client.heartbeat("b1", b1_epoch).await.unwrap(),
        "b1 was fenced"
    );
    let metadata = metadata_until(&client, "b1 unfenced", |m| !fenced(m, "b1")).await;
    let p0 = partition(&metadata, "orders", 0).clone();
    assert_eq!(p0.isr, vec!["b2", "b3"]);
    assert!(!fenced(&metadata, "b2") && !fenced(&metadata, "b3"));

    // The partition's leader adds b1 back; the same change again is stale.
    let b2_epoch = metadata
        .brokers
        .iter()
        .find(|b| b.name == "b2")
        .unwrap()
        .epoch;
    let alter = pb::AlterPartitionRequest {
        topic: "orders".into(),
        partition: 0,
        leader: "b2".into(),
        broker_epoch: b2_epoch,
        leader_epoch: p0.leader_epoch,
        partition_epoch: p0.partition_epoch,
        isr: vec!["b1".into(), "b2".into(), "b3".into()],
    };
    let altered = client.alter_partition(alter.clone()).await.unwrap();
    assert_eq!(altered.isr, vec!["b1", "b2", "b3"]);
    assert_eq!(altered.partition_epoch, p0.partition_epoch + 1);
    let stale = client.alter_partition(alter).await.unwrap_err();
    assert_eq!(
        refusal_kind(&stale),
        Some("invalid_update_version"),
        "{stale:?}"
    );

    // The killed controller comes back on its data and catches up.
    quorum.start_node(old_leader).await;
    let leader_view = client.metadata(0, Duration::ZERO).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = quorum.status(old_leader).await;
        let theirs = &status["detail"]["metadata"]["topics"]["orders"]["partitions"][0]["isr"];
        if *theirs == serde_json::json!(["b1", "b2", "b3"])
            && status["detail"]["applied"].as_u64() >= Some(leader_view.version)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted controller did not catch up: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, beat) in beats {
        beat.cancel();
    }
}
