//! `lab up PROJ`: a cluster with nobody watching. Starts it, prints where everything is, and
//! keeps it up until Ctrl-C or SIGTERM, then stops every node gracefully.

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::engine::project::{self, ClusterSpec};
use crate::engine::supervisor::Supervisor;

pub async fn run(
    project: String,
    nodes: Option<usize>,
    runs_dir: PathBuf,
    seed: u64,
    node_flags: Vec<String>,
) -> anyhow::Result<()> {
    // Both signals are caught from here to the end, each by one stream that keeps a signal
    // delivered while nobody waits on it. A `ctrl_c()` future made for each wait lost two:
    // one that arrived as the start finished (the select took the finished start and dropped
    // the future that had consumed the signal), and one that arrived between the two waits,
    // while the addresses were printed (a new `ctrl_c()` hears only later signals).
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let project = project::find(&project).map_err(distlab_runtime::BadInput)?;
    let exe = std::env::current_exe().context("finding the lab executable")?;
    let spec = ClusterSpec {
        node_flags,
        ..ClusterSpec::new(project, nodes.unwrap_or(project.default_nodes), seed)
    };
    let supervisor = Supervisor::new(spec, &runs_dir, exe).await?;
    let started = tokio::select! {
        started = supervisor.start_all() => started,
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted while starting")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated while starting")),
    };
    if let Err(e) = started {
        supervisor.stop_all().await;
        return Err(e);
    }

    let nodes = supervisor.nodes().await;
    println!(
        "{} is up: {} node(s); run dir {}",
        project.name,
        nodes.len(),
        supervisor.run_dir().path().display()
    );
    // Columns as wide as their longest entry (`ledger1`, `coordinator`).
    let id_width = nodes.iter().map(|n| n.id.len()).max().unwrap_or(0).max(6);
    let role_width = nodes.iter().map(|n| n.role.len()).max().unwrap_or(0).max(8);
    println!(
        "{:<id_width$} {:<role_width$} {:>7}  {:<22} {:<22} {:<22}",
        "node", "role", "pid", "clients use", "grpc (direct)", "admin"
    );
    for node in &nodes {
        println!(
            "{:<id_width$} {:<role_width$} {:>7}  {:<22} {:<22} {:<22}",
            node.id,
            node.role,
            node.pid.map_or("-".into(), |p| p.to_string()),
            node.client.to_string(),
            node.grpc.map_or("-".into(), |a| a.to_string()),
            node.admin.map_or("-".into(), |a| a.to_string()),
        );
    }
    // One line for scripts and tests.
    println!(
        "{}",
        serde_json::json!({"event": "cluster_up", "run_dir": supervisor.run_dir().path(), "nodes": nodes})
    );
    println!("Ctrl-C stops the cluster.");

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping...");
    supervisor.stop_all().await;
    println!(
        "stopped; logs and events in {}",
        supervisor.run_dir().path().display()
    );
    Ok(())
}
