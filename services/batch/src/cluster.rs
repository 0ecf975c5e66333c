//! A coordinator (`co`) and workers (`w1`..) as local processes on loopback ports, each with a
//! data dir and a log file under one directory: what the end-to-end tests and `lab bench
//! proj4` start (the lab's own clusters go through its supervisor and link proxies instead).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distlab_proto::batch::v1 as pb;
use distlab_runtime::launch::{LaunchOptions, NodeProcess, free_ports};
use tokio::process::Command;

use crate::client::{self, Client};

/// How to start a node: the program and the arguments before the node's flags
/// (`batch serve`, or `lab node batch`).
#[derive(Debug, Clone)]
pub struct NodeCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

pub struct LocalCluster {
    pub dir: PathBuf,
    command: NodeCommand,
    pub coordinator: Option<NodeProcess>,
    pub workers: BTreeMap<String, Option<NodeProcess>>,
    pub addrs: BTreeMap<String, SocketAddr>,
    coordinator_flags: Vec<String>,
}

impl LocalCluster {
    /// Starts `co` with `coordinator_flags` and `workers` workers, each with `worker_flags(id)`.
    pub async fn start(
        command: NodeCommand,
        dir: &Path,
        workers: usize,
        coordinator_flags: &[&str],
        worker_flags: &dyn Fn(&str) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        let ports = free_ports(workers + 1)?;
        let mut addrs = BTreeMap::from([("co".to_string(), ports[0])]);
        for (i, port) in ports.iter().enumerate().skip(1) {
            addrs.insert(format!("w{i}"), *port);
        }
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            command,
            coordinator: None,
            workers: BTreeMap::new(),
            addrs,
            coordinator_flags: coordinator_flags.iter().map(|s| s.to_string()).collect(),
        };
        cluster.start_coordinator().await?;
        for i in 1..=workers {
            let id = format!("w{i}");
            let flags = worker_flags(&id);
            cluster.start_worker(&id, &flags).await?;
        }
        Ok(cluster)
    }

    fn node(&self, id: &str, role: &str) -> Command {
        let mut command = Command::new(&self.command.program);
        command
            .args(&self.command.args)
            .args(["--role", role, "--id", id, "--listen"])
            .arg(self.addrs[id].to_string())
            .arg("--data-dir")
            .arg(self.dir.join(id));
        for (peer, addr) in &self.addrs {
            if peer != id {
                command.arg("--peer").arg(format!("{peer}={addr}"));
            }
        }
        command
    }

    /// Starts (or restarts) the coordinator on its data dir.
    pub async fn start_coordinator(&mut self) -> anyhow::Result<()> {
        let mut command = self.node("co", "coordinator");
        command.args(&self.coordinator_flags);
        self.coordinator = Some(spawn(command, &self.dir.join("co.log")).await?);
        Ok(())
    }

    /// Starts (or restarts) a worker with `flags`.
    pub async fn start_worker(&mut self, id: &str, flags: &[String]) -> anyhow::Result<()> {
        let mut command = self.node(id, "worker");
        command.args(flags);
        let process = spawn(command, &self.dir.join(format!("{id}.log"))).await?;
        self.workers.insert(id.to_string(), Some(process));
        Ok(())
    }

    pub fn client(&self) -> Client {
        client::connect(self.addrs["co"]).expect("a loopback address is usable")
    }

    pub async fn submit(&self, job: pb::JobDef) -> anyhow::Result<u64> {
        Ok(self
            .client()
            .submit(pb::SubmitRequest { job: Some(job) })
            .await?
            .into_inner()
            .job)
    }

    /// The job's status once it is over (`timeout` at most).
    pub async fn finished(&self, job: u64, timeout: Duration) -> anyhow::Result<pb::JobStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(answer) = self.client().status(pb::StatusRequest { job }).await
                && let Some(status) = answer.into_inner().jobs.pop()
                && status.state != "running"
            {
                return Ok(status);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "job {job} not over within {timeout:?}; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether every process started is still running.
    pub fn all_alive(&self) -> bool {
        self.coordinator
            .iter()
            .chain(self.workers.values().flatten())
            .all(|p| p.exit_status().is_none())
    }
}

async fn spawn(command: Command, log: &Path) -> anyhow::Result<NodeProcess> {
    NodeProcess::spawn_with(
        command,
        LaunchOptions {
            ready_timeout: Duration::from_secs(30),
            log_file: Some(log.to_path_buf()),
            on_line: None,
        },
    )
    .await
}
