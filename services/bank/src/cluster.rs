//! A bank as local processes: the coordinator `tc` (2PC) or the orchestrator `orch` (saga),
//! shards `s1`..`sN` and the `ledger` on loopback ports, each with a data dir and a log file
//! under one directory. What the end-to-end tests and the benchmark start (the lab's clusters
//! go through its supervisor and link proxies instead).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use distlab_proto::bank::v1 as pb;
use distlab_runtime::launch::{LaunchOptions, NodeProcess, free_ports};
use tokio::process::Command;

/// How to start a node: the program and the arguments before the node's flags (`bank serve`,
/// or `lab node bank`).
#[derive(Debug, Clone)]
pub struct NodeCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

pub struct LocalBank {
    pub dir: PathBuf,
    pub mode: Mode,
    command: NodeCommand,
    pub nodes: BTreeMap<String, Option<NodeProcess>>,
    pub addrs: BTreeMap<String, SocketAddr>,
    /// Each node's flags besides the contract's and its role.
    flags: BTreeMap<String, Vec<String>>,
}

/// A node id's role.
pub fn role_of(id: &str) -> &'static str {
    match id {
        "tc" => "coordinator",
        "orch" => "orchestrator",
        "ledger" => "ledger",
        _ => "shard",
    }
}

/// How the bank runs its transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    TwoPhaseCommit,
    Saga,
}

impl Mode {
    /// The node that takes transfers.
    pub fn front(self) -> &'static str {
        match self {
            Mode::TwoPhaseCommit => "tc",
            Mode::Saga => "orch",
        }
    }
}

impl LocalBank {
    /// Starts a bank of `shards` shards; `flags(id)` are each node's own flags (`--shards` is
    /// added).
    pub async fn start(
        command: NodeCommand,
        dir: &Path,
        mode: Mode,
        shards: usize,
        flags: &dyn Fn(&str) -> Vec<String>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let mut ids = vec![mode.front().to_string(), "ledger".to_string()];
        ids.extend((1..=shards).map(|k| format!("s{k}")));
        let ports = free_ports(ids.len())?;
        let addrs: BTreeMap<String, SocketAddr> = ids.iter().cloned().zip(ports).collect();
        let flags = ids
            .iter()
            .map(|id| {
                let mut f = vec!["--shards".to_string(), shards.to_string()];
                f.extend(flags(id));
                (id.clone(), f)
            })
            .collect();
        let mut bank = LocalBank {
            dir: dir.to_path_buf(),
            mode,
            command,
            nodes: BTreeMap::new(),
            addrs,
            flags,
        };
        // Participants first: the coordinator's (orchestrator's) recovery talks to them at once.
        for id in ids.iter().rev() {
            bank.start_node(id).await?;
        }
        Ok(bank)
    }

    /// Starts (or restarts, on its data dir) node `id`.
    pub async fn start_node(&mut self, id: &str) -> anyhow::Result<()> {
        let mut command = Command::new(&self.command.program);
        command
            .args(&self.command.args)
            .args(["--role", role_of(id), "--id", id, "--listen"])
            .arg(self.addrs[id].to_string())
            .arg("--data-dir")
            .arg(self.dir.join(id));
        for (peer, addr) in &self.addrs {
            if peer != id {
                command.arg("--peer").arg(format!("{peer}={addr}"));
            }
        }
        command.args(&self.flags[id]);
        let process = NodeProcess::spawn_with(
            command,
            LaunchOptions {
                ready_timeout: Duration::from_secs(30),
                log_file: Some(self.dir.join(format!("{id}.log"))),
                on_line: None,
            },
        )
        .await?;
        self.nodes.insert(id.to_string(), Some(process));
        Ok(())
    }

    /// Replaces node `id`'s own flags (for its next start).
    pub fn set_flags(&mut self, id: &str, flags: Vec<String>) {
        let shards = self.flags[id][..2].to_vec();
        self.flags.insert(id.to_string(), [shards, flags].concat());
    }

    /// kill -9 node `id`.
    pub async fn kill(&mut self, id: &str) -> anyhow::Result<()> {
        if let Some(Some(mut process)) = self.nodes.insert(id.to_string(), None) {
            process.kill().await?;
        }
        Ok(())
    }

    /// Node `id`'s admin address (while it runs).
    pub fn admin(&self, id: &str) -> Option<SocketAddr> {
        self.nodes.get(id)?.as_ref().map(|p| p.ready().admin)
    }

    /// A client of the coordinator (orchestrator).
    pub fn client(&self) -> pb::bank_client::BankClient<tonic::transport::Channel> {
        crate::wire::connect(self.addrs[self.mode.front()], Duration::from_secs(20))
            .expect("a loopback address is usable")
    }

    /// A lazily connecting channel to node `id`'s gRPC address.
    pub fn channel(&self, id: &str) -> tonic::transport::Channel {
        crate::wire::channel(self.addrs[id], Duration::from_secs(20))
            .expect("a loopback address is usable")
    }

    /// Whether every node started is still running.
    pub fn all_alive(&self) -> bool {
        self.nodes
            .values()
            .flatten()
            .all(|p| p.exit_status().is_none())
    }
}
