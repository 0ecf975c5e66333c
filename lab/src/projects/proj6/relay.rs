//! `lab bench proj6 --phases relay`: a collaboration server's throughput and editor-to-editor
//! latency, ours beside a Yjs server measured in the same run by the same load
//! (`distlab_collab::relay_bench`: writers typing into one document, a window of characters
//! not yet relayed, a reader timing every character).
//!
//! - `distlab`: one real server (`lab node collab --role server`), acknowledging each edit
//!   once a group-commit flush put it on disk;
//! - `distlab-nofsync`: the same with `--no-fsync` (stored, not forced to disk), which is
//!   what the Yjs server does not do either;
//! - `y-websocket`: Yjs's reference WebSocket server (npm `y-websocket` 1.5, Node.js), which
//!   relays and keeps documents in memory; its clients (yrs) run in the peers benchmark's
//!   binary (`distlab-collab-peers relay-yjs`), which has the Yjs implementation.

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::Duration;

use anyhow::{Context, bail};
use distlab_collab::relay_bench::{self, Ours};
use distlab_runtime::launch::{NodeProcess, free_ports, spawn_program};

/// Which servers `--relay-servers` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum RelayServer {
    Distlab,
    DistlabNofsync,
    YWebsocket,
}

impl RelayServer {
    pub fn name(self) -> &'static str {
        match self {
            RelayServer::Distlab => "distlab",
            RelayServer::DistlabNofsync => "distlab-nofsync",
            RelayServer::YWebsocket => "y-websocket",
        }
    }
}

pub struct RelayArgs {
    pub writers: usize,
    pub chars: u64,
    pub window: u64,
}

/// Our server, measured; its figure line.
fn ours(exe: &Path, args: &RelayArgs, fsync: bool) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(["node", "collab", "--role", "server", "--id", "s1"])
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("s1"));
        if !fsync {
            command.arg("--no-fsync");
        }
        let server = NodeProcess::spawn(command, Duration::from_secs(20))
            .await
            .context("starting the server")?;
        let url = format!("ws://{}/doc", server.ready().grpc);
        let figures = relay_bench::run(Ours { url }, args.writers, args.chars, args.window).await?;
        drop(server);
        let name = if fsync {
            RelayServer::Distlab
        } else {
            RelayServer::DistlabNofsync
        };
        Ok(figures.line(name.name(), args.writers, args.window))
    })
}

/// y-websocket, installed on demand from its package lock; its figure line.
fn y_websocket(peers: &Path, args: &RelayArgs) -> anyhow::Result<String> {
    let dir = super::bench::repo().join("services/collab/peers/yjs-relay");
    if !dir.join("node_modules/y-websocket").is_dir() {
        eprintln!("installing y-websocket (npm ci in {})", dir.display());
        let status = StdCommand::new("npm")
            .args([
                "ci",
                "--omit=optional",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir)
            .status()
            .context("running npm (Node.js and npm are needed for the y-websocket peer)")?;
        if !status.success() {
            bail!("npm ci in {} failed ({status})", dir.display());
        }
    }
    let port = free_ports(1)?[0].port();
    let log = tempfile::NamedTempFile::new()?;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join("node_modules/y-websocket/bin/server.js"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _server = runtime.block_on(async {
        let child = spawn_program(command, log.path())?;
        let started = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if started.elapsed() > Duration::from_secs(20) {
                bail!(
                    "y-websocket did not listen on {port}: {}",
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(child)
    })?;
    let output = StdCommand::new(peers)
        .args(["relay-yjs", &format!("ws://127.0.0.1:{port}/bench")])
        .args([
            args.writers.to_string(),
            args.chars.to_string(),
            args.window.to_string(),
        ])
        .output()
        .context("running the peers benchmark's Yjs clients")?;
    if !output.status.success() {
        bail!(
            "the Yjs clients failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let line = String::from_utf8(output.stdout)?;
    Ok(line.trim().to_string())
}

/// Each of `servers` in turn, `repeat` rounds; every figure line printed as it comes.
pub fn run(
    exe: &Path,
    peers: impl Fn() -> anyhow::Result<std::path::PathBuf>,
    servers: &[RelayServer],
    args: &RelayArgs,
    repeat: usize,
) -> anyhow::Result<()> {
    let peers = if servers.contains(&RelayServer::YWebsocket) {
        Some(peers()?)
    } else {
        None
    };
    for _ in 0..repeat {
        for &server in servers {
            let line = match server {
                RelayServer::Distlab => ours(exe, args, true)?,
                RelayServer::DistlabNofsync => ours(exe, args, false)?,
                RelayServer::YWebsocket => {
                    y_websocket(peers.as_deref().expect("built above"), args)?
                }
            };
            println!("{line}");
        }
    }
    Ok(())
}
