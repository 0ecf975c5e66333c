//! `lab bench proj6`: our sequence CRDT beside the libraries the field holds up
//! (diamond-types, yrs, automerge, loro), replaying the same editing trace
//! (`assets/traces/automerge-paper.json.gz`, 259,778 edits) in the same run.
//!
//! The peers are heavy crates the workspace does not build: this builds
//! `services/collab/peers` (its own workspace, release, into `target/peers`) and runs it once
//! per implementation and repeat, each in a fresh process so that heap peaks are its own. Each
//! implementation's figures are the median over `--repeat` runs; then the ratios the issue
//! sets targets for (replay time within 2x diamond-types', and below automerge's).
//!
//! Also, in process: the sync protocol's bytes (a live edit's frame; a catch-up's delta
//! against the whole document) and the merge of two replicas diverged by N operations each.
//!
//! One line per figure, e.g.
//! `bench=proj6 impl=distlab phase=replay grouping=patch runs=3 seconds=0.1412 peak_heap_bytes=... retained_heap_bytes=... encoded_bytes=... chars=104852`
//! `bench=proj6 figure=replay_seconds_vs_diamond_types ratio=1.62 target=2 met=true`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use distlab_collab::sync::{Frame, Message};
use distlab_collab::trace::EditTrace;
use distlab_collab::{Doc, ReplicaId, VersionVector};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Implementation {
    Distlab,
    DiamondTypes,
    Yrs,
    Automerge,
    Loro,
}

impl Implementation {
    fn name(self) -> &'static str {
        match self {
            Implementation::Distlab => "distlab",
            Implementation::DiamondTypes => "diamond-types",
            Implementation::Yrs => "yrs",
            Implementation::Automerge => "automerge",
            Implementation::Loro => "loro",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grouping {
    /// Each edit its own transaction or commit, as a live editor sends keystrokes.
    Patch,
    /// The whole trace one transaction, where the library groups edits.
    Trace,
}

impl Grouping {
    fn name(self) -> &'static str {
        match self {
            Grouping::Patch => "patch",
            Grouping::Trace => "trace",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Proj6BenchArgs {
    /// Implementations to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "distlab,diamond-types,yrs,automerge,loro"
    )]
    pub impls: Vec<Implementation>,
    /// The editing trace (josephg/editing-traces JSON, gzip or not).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Runs per implementation; figures are medians.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Transaction grouping for the libraries that group edits.
    #[arg(long, value_delimiter = ',', default_value = "patch")]
    pub grouping: Vec<Grouping>,
    /// Parts to run: `trace` (the implementations side by side), `sync` (bytes on the wire:
    /// a live edit, a catch-up, against the whole state), `merge` (two replicas diverged by N
    /// operations each, merged), `relay` (a server's throughput and editor-to-editor latency).
    #[arg(long, value_delimiter = ',', default_value = "trace,sync,merge,relay")]
    pub phases: Vec<Phase>,
    /// `relay`: writers typing into one document on a real server.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// `relay`: characters each writer types.
    #[arg(long, default_value_t = 2000)]
    pub relay_ops: u64,
    /// `relay`: characters a writer may have typed that the reader has not yet received.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// `relay`: the servers measured, side by side (`y-websocket` needs Node.js and npm).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "distlab,distlab-nofsync,y-websocket"
    )]
    pub relay_servers: Vec<super::relay::RelayServer>,
    /// Operations each replica makes while diverged, for `merge`.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub diverged: Vec<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Trace,
    Sync,
    Merge,
    Relay,
}

/// The repository this lab was built from.
pub(super) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the peers benchmark; its binary.
fn build_peers() -> anyhow::Result<PathBuf> {
    let repo = repo();
    let manifest = repo.join("services/collab/peers/Cargo.toml");
    let target = repo.join("target/peers");
    eprintln!(
        "building {} (release; the first build takes minutes)",
        manifest.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .with_context(|| format!("running cargo to build {}", manifest.display()))?;
    if !status.success() {
        bail!("building {} failed ({status})", manifest.display());
    }
    Ok(target.join("release/distlab-collab-peers"))
}

/// One output line's `key=value` fields.
type Fields = BTreeMap<String, String>;

fn fields(line: &str) -> Fields {
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The per-phase medians of several runs' lines: numbers become medians, the rest is kept.
fn summarise(runs: &[Vec<Fields>]) -> Vec<Fields> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let mut summary = line.clone();
            for (key, value) in line {
                if value.parse::<f64>().is_err() {
                    continue;
                }
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|run| run.get(i)?.get(key)?.parse().ok())
                    .collect();
                let m = median(values);
                summary.insert(
                    key.clone(),
                    if key == "seconds" {
                        format!("{m:.4}")
                    } else {
                        format!("{m:.0}")
                    },
                );
            }
            summary.insert("runs".into(), runs.len().to_string());
            summary
        })
        .collect()
}

fn print(line: &Fields) {
    // A stable order: what it is first, then the figures.
    let order = ["impl", "phase", "grouping", "runs"];
    let mut out = String::from("bench=proj6");
    for key in order {
        if let Some(value) = line.get(key) {
            out.push_str(&format!(" {key}={value}"));
        }
    }
    for (key, value) in line {
        if !order.contains(&key.as_str()) {
            out.push_str(&format!(" {key}={value}"));
        }
    }
    println!("{out}");
}

/// `figure=...`: ours over theirs, with the target where the issue sets one (met when the
/// ratio is at most the target).
fn ratio(
    results: &[Fields],
    figure: &str,
    phase: &str,
    key: &str,
    peer: &str,
    target: Option<f64>,
) {
    let find = |name: &str| -> Option<f64> {
        results
            .iter()
            .find(|line| {
                line.get("impl").map(String::as_str) == Some(name)
                    && line.get("phase").map(String::as_str) == Some(phase)
            })?
            .get(key)?
            .parse()
            .ok()
    };
    let (Some(ours), Some(theirs)) = (find("distlab"), find(peer)) else {
        return;
    };
    let ratio = ours / theirs.max(1e-12);
    let mut line =
        format!("bench=proj6 figure={figure} distlab={ours} {peer}={theirs} ratio={ratio:.2}");
    if let Some(target) = target {
        line.push_str(&format!(" target={target} met={}", ratio <= target));
    }
    println!("{line}");
}

pub fn run(args: &Proj6BenchArgs) -> anyhow::Result<()> {
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let trace = args
        .trace
        .clone()
        .unwrap_or_else(|| repo().join("assets/traces/automerge-paper.json.gz"));
    // Loaded here, so a bad path is named before minutes of building.
    let loaded = distlab_collab::trace::EditTrace::load(&trace)?;
    if args.phases.contains(&Phase::Sync) {
        sync_figures(&loaded)?;
    }
    if args.phases.contains(&Phase::Merge) {
        for &n in &args.diverged {
            merge_figure(&loaded, n)?;
        }
    }
    if args.phases.contains(&Phase::Relay) {
        anyhow::ensure!(
            args.writers > 0 && args.relay_ops > 0 && args.window > 0,
            "--writers, --relay-ops and --window must be at least 1"
        );
        super::relay::run(
            &std::env::current_exe()?,
            build_peers,
            &args.relay_servers,
            &super::relay::RelayArgs {
                writers: args.writers,
                chars: args.relay_ops,
                window: args.window,
            },
            args.repeat,
        )?;
    }
    if !args.phases.contains(&Phase::Trace) {
        return Ok(());
    }
    let peers = build_peers()?;
    for &grouping in &args.grouping {
        // Round after round, every implementation once per round: the machine's speed drifts
        // over a run, and interleaving spreads the drift over all of them.
        let mut runs: BTreeMap<Implementation, Vec<Vec<Fields>>> = BTreeMap::new();
        let mut failed: BTreeMap<Implementation, String> = BTreeMap::new();
        for _ in 0..args.repeat {
            for &implementation in &args.impls {
                if failed.contains_key(&implementation) {
                    continue;
                }
                let output = Command::new(&peers)
                    .arg(implementation.name())
                    .arg(&trace)
                    .args(["--grouping", grouping.name()])
                    .output()
                    .with_context(|| format!("running {}", peers.display()))?;
                if !output.status.success() {
                    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
                    failed.insert(implementation, stderr);
                    runs.remove(&implementation);
                    continue;
                }
                let stdout = String::from_utf8_lossy(&output.stdout);
                runs.entry(implementation)
                    .or_default()
                    .push(stdout.lines().map(fields).collect());
            }
        }
        let mut results = Vec::new();
        for implementation in &args.impls {
            if let Some(error) = failed.get(implementation) {
                println!(
                    "bench=proj6 impl={} grouping={} error={error:?}",
                    implementation.name(),
                    grouping.name()
                );
            }
            for line in summarise(runs.get(implementation).map_or(&[][..], Vec::as_slice)) {
                print(&line);
                results.push(line);
            }
        }
        let g = grouping.name();
        println!("bench=proj6 grouping={g} figures=ratios");
        ratio(
            &results,
            "replay_seconds_vs_diamond_types",
            "replay",
            "seconds",
            "diamond-types",
            Some(2.0),
        );
        ratio(
            &results,
            "replay_seconds_vs_automerge",
            "replay",
            "seconds",
            "automerge",
            Some(1.0),
        );
        ratio(
            &results,
            "replay_seconds_vs_yrs",
            "replay",
            "seconds",
            "yrs",
            None,
        );
        ratio(
            &results,
            "replay_seconds_vs_loro",
            "replay",
            "seconds",
            "loro",
            None,
        );
        for peer in ["diamond-types", "yrs", "automerge", "loro"] {
            let name = peer.replace('-', "_");
            ratio(
                &results,
                &format!("retained_heap_vs_{name}"),
                "replay",
                "retained_heap_bytes",
                peer,
                None,
            );
            ratio(
                &results,
                &format!("encoded_bytes_vs_{name}"),
                "replay",
                "encoded_bytes",
                peer,
                None,
            );
            ratio(
                &results,
                &format!("load_seconds_vs_{name}"),
                "load",
                "seconds",
                peer,
                None,
            );
        }
    }
    Ok(())
}

/// Bytes on the wire with our sync protocol: one live edit's frame, and catching up a replica
/// that is behind (a delta) against sending the whole document.
fn sync_figures(trace: &EditTrace) -> anyhow::Result<()> {
    // Live: each edit as its own Ops frame, as an editor sends it.
    let mut doc = Doc::new(ReplicaId(1));
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut send = |ops: Vec<distlab_collab::Op>| {
        for op in ops {
            frames += 1;
            bytes += Frame::new("notes", Message::Ops(vec![op])).encode().len() as u64;
        }
    };
    send(doc.insert(0, &trace.start)?.into_iter().collect());
    for patch in &trace.patches {
        send(patch.apply(&mut doc)?);
    }
    let whole = Frame::new("notes", Message::Ops(doc.ops_since(&VersionVector::new())))
        .encode()
        .len();
    println!(
        "bench=proj6 figure=sync_live frames={frames} bytes_per_frame={:.1} whole_state_bytes={whole}",
        bytes as f64 / frames.max(1) as f64
    );
    // Catch-up: a replica holding the first part of the history asks with its version.
    let log = doc.history();
    for behind_pct in [1usize, 10, 50] {
        let keep = log.len() - log.len() * behind_pct / 100;
        let delta = doc.ops_since(&distlab_collab::history::version_after(&doc, keep));
        let delta_bytes = Frame::new("notes", Message::Ops(delta)).encode().len();
        println!(
            "bench=proj6 figure=sync_catch_up behind_pct={behind_pct} delta_bytes={delta_bytes} whole_state_bytes={whole} ratio={:.3}",
            delta_bytes as f64 / whole.max(1) as f64
        );
    }
    Ok(())
}

/// Two replicas share the first half of the trace, then each makes `n` operations the other
/// has not seen (one continues the trace, the other edits at seeded random places); the time
/// to merge each one's delta into the other, and the texts checked equal.
fn merge_figure(trace: &EditTrace, n: usize) -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let half = trace.patches.len() / 2;
    anyhow::ensure!(
        half + n <= trace.patches.len(),
        "--diverged {n}: the trace has too few edits"
    );
    let mut a = Doc::new(ReplicaId(1));
    a.insert(0, &trace.start)?;
    for patch in &trace.patches[..half] {
        patch.apply(&mut a)?;
    }
    let mut b = Doc::new(ReplicaId(2));
    for op in a.history() {
        b.apply(op.clone())?;
    }
    for patch in &trace.patches[half..half + n] {
        patch.apply(&mut a)?;
    }
    let mut rng = rand::rngs::SmallRng::seed_from_u64(n as u64);
    for _ in 0..n {
        let len = b.len();
        if len > 0 && rng.random_bool(0.2) {
            b.delete(rng.random_range(0..len), 1)?;
        } else {
            b.insert(rng.random_range(0..=len), "x")?;
        }
    }
    let to_a = b.ops_since(a.version());
    let to_b = a.ops_since(b.version());
    let started = std::time::Instant::now();
    for op in to_a {
        a.apply(op)?;
    }
    for op in to_b {
        b.apply(op)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let converged = a.text() == b.text();
    println!(
        "bench=proj6 figure=merge diverged_ops={n} seconds={seconds:.4} converged={converged} chars={}",
        a.len()
    );
    anyhow::ensure!(
        converged,
        "merging {n} diverged operations each left two texts"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_summarised_by_their_medians() {
        let runs: Vec<Vec<Fields>> = ["0.3", "0.1", "0.2"]
            .iter()
            .map(|s| {
                vec![fields(&format!(
                    "impl=x phase=replay seconds={s} encoded_bytes=10"
                ))]
            })
            .collect();
        let summary = summarise(&runs);
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0]["seconds"], "0.2000");
        assert_eq!(summary[0]["encoded_bytes"], "10");
        assert_eq!(summary[0]["impl"], "x");
        assert_eq!(summary[0]["runs"], "3");
    }
}
