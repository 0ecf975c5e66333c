//! Three controllers and three brokers as real `log serve` processes on loopback (short
//! broker sessions and lag times, so failures show quickly). Each test binary uses a part.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use distlab_log::client::LogClient;
use distlab_log::controller::client::ControllerClient;
use distlab_proto::log::v1 as pb;
use distlab_runtime::launch::{NodeProcess, free_ports};
use distlab_runtime::retry::RetryPolicy;
use serde_json::Value;
use tokio::process::Command;

use super::metadata_until;

pub const CONTROLLERS: [&str; 3] = ["c1", "c2", "c3"];
pub const BROKERS: [&str; 3] = ["b1", "b2", "b3"];

pub struct Cluster {
    pub ports: BTreeMap<&'static str, SocketAddr>,
    pub dirs: BTreeMap<&'static str, tempfile::TempDir>,
    pub nodes: BTreeMap<&'static str, NodeProcess>,
}

impl Cluster {
    pub async fn start() -> Self {
        let names: Vec<&'static str> = CONTROLLERS.into_iter().chain(BROKERS).collect();
        let ports = free_ports(names.len()).unwrap();
        let mut cluster = Self {
            ports: names.iter().copied().zip(ports).collect(),
            dirs: names
                .iter()
                .map(|n| (*n, tempfile::tempdir().unwrap()))
                .collect(),
            nodes: BTreeMap::new(),
        };
        for name in names {
            cluster.start_node(name).await;
        }
        cluster
    }

    pub async fn start_node(&mut self, name: &'static str) {
        let role = if CONTROLLERS.contains(&name) {
            "controller"
        } else {
            "broker"
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_log"));
        command
            .args([
                "serve",
                "--role",
                role,
                "--id",
                name,
                "--controllers",
                "c1,c2,c3",
            ])
            .arg("--listen")
            .arg(self.ports[name].to_string())
            .args(["--admin", "127.0.0.1:0"])
            .args([
                "--broker-session-timeout",
                "1s",
                "--replica-lag-time-max",
                "1s",
            ])
            .arg("--data-dir")
            .arg(self.dirs[name].path());
        for (peer, port) in &self.ports {
            if *peer != name {
                command.arg("--peer").arg(format!("{peer}={port}"));
            }
        }
        let node = NodeProcess::spawn(command, Duration::from_secs(20))
            .await
            .unwrap();
        self.nodes.insert(name, node);
    }

    pub fn addresses(&self, names: &[&str]) -> Vec<(String, SocketAddr)> {
        names
            .iter()
            .map(|n| (n.to_string(), self.ports[n]))
            .collect()
    }

    pub fn controller(&self) -> ControllerClient {
        let policy = RetryPolicy {
            max_attempts: 50,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
            ..RetryPolicy::default()
        };
        ControllerClient::connect_lazy(&self.addresses(&CONTROLLERS), policy).unwrap()
    }

    pub fn client(&self) -> LogClient {
        let policy = RetryPolicy {
            max_attempts: 100,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(20),
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            ..RetryPolicy::default()
        };
        LogClient::connect_lazy(&self.addresses(&BROKERS), policy).unwrap()
    }

    pub async fn status(&self, name: &str) -> Value {
        let url = format!("http://{}/status", self.nodes[name].ready().admin);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }
}

/// Starts the cluster and creates topic `t`: `partitions`, three replicas, `min_insync`.
pub async fn cluster_with_topic(partitions: u32, min_insync: u32) -> (Cluster, ControllerClient) {
    let cluster = Cluster::start().await;
    let controller = cluster.controller();
    metadata_until(&controller, "three live brokers", |m| {
        m.brokers.iter().filter(|b| !b.fenced).count() == 3
    })
    .await;
    controller
        .create_topic(pb::CreateTopicRequest {
            name: "t".into(),
            partitions,
            replication_factor: 3,
            min_insync_replicas: min_insync,
            unclean_leader_election: Some(false),
        })
        .await
        .unwrap();
    (cluster, controller)
}
