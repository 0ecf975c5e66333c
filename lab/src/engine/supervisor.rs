//! The supervisor: a cluster's node processes, and the process-level faults.
//!
//! Each node is a child process (`lab node <service> ...`, run from this same executable) with
//! its own folder in the run dir (data dir and `node.log`), its peers reached through the
//! cluster's link proxies. The faults are signals: `pause` (SIGSTOP), `resume` (SIGCONT),
//! `kill` (SIGKILL), `terminate` (SIGTERM, then SIGKILL after a grace period), and `restart`
//! (same id, same data dir, same peer addresses; a new process and port, and the proxies follow
//! it). An exit the lab did not cause is recorded as a crash, with the node's last lines.
//!
//! Membership growth (`add_node`): the cluster is planned with a few spare nodes beyond its
//! size. Spares have their folders and link proxies from the start, and every node's `--peer`
//! table names them (the address book; who is a *member* is the service's business), but they
//! are not started and not shown until `add_node` starts the next one. Until then a spare's
//! address behaves like a host that is off: connections to it wait, datagrams are dropped.
//!
//! No orphans: children get `PR_SET_PDEATHSIG(SIGKILL)` and are killed when their handles are
//! dropped (see `distlab_runtime::launch`), so they die with the lab however it ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use distlab_runtime::launch::{LaunchOptions, NodeProcess};
use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::process::Command;

use super::events::{EventKind, Timeline};
use super::link::LinkFaults;
use super::network::{CLIENT, Network};
use super::partition::Partition;
use super::project::{ClusterSpec, Project};
use super::rundir::RunDir;

/// How long `terminate` waits before SIGKILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// How many nodes a cluster can grow by (`add_node`), within the plan's limit.
pub const SPARE_NODES: usize = 2;

/// The process-level faults, by the names scenarios and the console use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessFault {
    Kill,
    Terminate,
    Pause,
    Resume,
    Restart,
    Start,
}

/// How the lab stops a process.
#[derive(Debug, Clone, Copy)]
enum Halt {
    Kill,
    Terminate,
}

/// What a node's process is doing, as far as the lab knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    Running,
    Paused,
    Down,
}

/// A node as the lab sees it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub role: &'static str,
    pub state: ProcessState,
    pub pid: Option<u32>,
    /// The node's own gRPC address (changes on restart).
    pub grpc: Option<SocketAddr>,
    /// Where clients reach it: through the client link proxy (stable across restarts).
    pub client: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub restarts: u32,
    /// Its `--data-dir` (kept across restarts).
    pub data_dir: PathBuf,
}

struct Slot {
    role: &'static str,
    dir: PathBuf,
    process: Option<NodeProcess>,
    state: ProcessState,
    restarts: u32,
    /// Set before the lab stops the process, so its exit is not reported as a crash.
    stopping: Arc<AtomicBool>,
}

pub struct Supervisor {
    /// Every random choice of the run (random partitions, random nodes), from its seed.
    rng: std::sync::Mutex<rand::rngs::SmallRng>,
    project: &'static Project,
    /// The user's flags, added to every node's command line after the project's own.
    node_flags: Vec<String>,
    exe: PathBuf,
    run: RunDir,
    network: Network,
    timeline: Arc<Timeline>,
    slots: BTreeMap<String, tokio::sync::Mutex<Slot>>,
    /// Every planned node (members, then spares), in plan order.
    planned: Vec<String>,
    /// The nodes in the cluster (the first of `planned`): grows with `add_node`.
    members: std::sync::Mutex<usize>,
    /// Nodes that left the cluster (`remove_node`): stopped, and no longer among its nodes.
    removed: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// How many of `planned` formed the first cluster.
    initial: usize,
    /// What [`Supervisor::nodes`] reports, updated after every change: reading it never
    /// waits for a slot that a slow operation (a start, a terminate) holds.
    published: std::sync::Mutex<BTreeMap<String, Published>>,
}

struct Published {
    info: NodeInfo,
    exit: Option<tokio::sync::watch::Receiver<Option<std::process::ExitStatus>>>,
}

impl Supervisor {
    /// Plans the cluster and creates its run dir and proxies; starts nothing yet.
    /// `exe` is the program that runs `node <service> ...` (the lab itself).
    pub async fn new(spec: ClusterSpec, runs_root: &Path, exe: PathBuf) -> anyhow::Result<Self> {
        spec.check().map_err(distlab_runtime::BadInput)?;
        let spares = spec.spares();
        let ClusterSpec {
            project,
            nodes,
            seed,
            node_flags,
            autoscale: _,
        } = spec;
        let plan = project
            .plan(nodes + spares)
            .map_err(distlab_runtime::BadInput)?;
        let run = RunDir::create(runs_root, project.name)?;
        let timeline = Arc::new(Timeline::create(Some(&run.file("events.jsonl")))?);
        let ids: Vec<String> = plan.iter().map(|n| n.id.clone()).collect();
        let network = Network::build(&ids, project.peer_links, seed)
            .await
            .context("binding the link proxies")?;
        let mut slots = BTreeMap::new();
        for node in plan {
            let dir = run.node_path(&node.id);
            slots.insert(
                node.id,
                tokio::sync::Mutex::new(Slot {
                    role: node.role,
                    dir,
                    process: None,
                    state: ProcessState::Down,
                    restarts: 0,
                    stopping: Arc::new(AtomicBool::new(false)),
                }),
            );
        }
        let rng = std::sync::Mutex::new(
            <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(seed),
        );
        let supervisor = Self {
            rng,
            project,
            node_flags,
            exe,
            run,
            network,
            timeline,
            slots,
            planned: ids,
            members: std::sync::Mutex::new(nodes),
            removed: Default::default(),
            initial: nodes,
            published: std::sync::Mutex::new(BTreeMap::new()),
        };
        for id in supervisor.ids() {
            let slot = supervisor.slots[&id]
                .try_lock()
                .expect("nobody else has the slots yet");
            supervisor.publish(&id, &slot);
        }
        Ok(supervisor)
    }

    pub fn project(&self) -> &'static Project {
        self.project
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn timeline(&self) -> &Arc<Timeline> {
        &self.timeline
    }

    /// The cluster's nodes (spares not yet added, and nodes removed, are not among them).
    pub fn ids(&self) -> Vec<String> {
        let members = *self.members.lock().unwrap();
        let removed = self.removed.lock().unwrap();
        self.planned[..members]
            .iter()
            .filter(|id| !removed.contains(*id))
            .cloned()
            .collect()
    }

    fn slot(&self, id: &str) -> anyhow::Result<&tokio::sync::Mutex<Slot>> {
        let ids = self.ids();
        match self.slots.get(id) {
            Some(slot) if ids.iter().any(|m| m == id) => Ok(slot),
            _ => Err(distlab_runtime::BadInput(format!(
                "unknown node {id:?}; nodes: {}",
                ids.join(", ")
            ))
            .into()),
        }
    }

    /// Starts every node that is down.
    pub async fn start_all(&self) -> anyhow::Result<()> {
        for id in self.ids() {
            if self.slot(&id)?.lock().await.process.is_none() {
                self.start(&id).await?;
            }
        }
        Ok(())
    }

    /// Membership growth: starts the next spare node and makes it one of the cluster's.
    /// Returns its id.
    pub async fn add_node(&self) -> anyhow::Result<String> {
        let id = {
            let mut members = self.members.lock().unwrap();
            let Some(id) = self.planned.get(*members).cloned() else {
                return Err(distlab_runtime::BadInput(format!(
                    "the cluster cannot grow beyond {} nodes (it was planned with {} spares)",
                    self.planned.len(),
                    self.planned.len() - (*members).min(self.planned.len())
                ))
                .into());
            };
            *members += 1;
            id
        };
        self.timeline
            .record(EventKind::Fault, Some(&id), "add-node");
        let slot = self.slots[&id].lock().await;
        self.publish(&id, &slot);
        drop(slot);
        self.start(&id).await?;
        Ok(id)
    }

    /// A node removed earlier starts again on its data dir: for nodes that keep no membership
    /// of their own (the autoscaler's workers), so retiring and rejoining can go on forever.
    pub async fn rejoin(&self, id: &str) -> anyhow::Result<()> {
        if !self.removed.lock().unwrap().remove(id) {
            bail!("node {id} was not removed");
        }
        self.timeline
            .record(EventKind::Fault, Some(id), "add-node (rejoins)");
        self.start(id).await
    }

    /// The removed nodes of `role`, in plan order.
    pub fn removed_of_role(&self, role: &str) -> Vec<String> {
        let removed = self.removed.lock().unwrap();
        self.project
            .plan(self.planned.len())
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.role == role && removed.contains(&n.id))
            .map(|n| n.id)
            .collect()
    }

    /// Membership shrink, after the cluster was told node `id` left: stops it gracefully
    /// and drops it from the cluster's nodes (its run dir stays).
    pub async fn remove_node(&self, id: &str) -> anyhow::Result<()> {
        if self.ids().len() <= 1 {
            bail!("node {id} is the cluster's last node");
        }
        let running = self.slot(id)?.lock().await.process.is_some();
        if running {
            self.stop(id, Halt::Terminate, EventKind::Note).await?;
        }
        self.removed.lock().unwrap().insert(id.to_string());
        self.timeline
            .record(EventKind::Fault, Some(id), "remove-node");
        Ok(())
    }

    /// Starts node `id` (it must be down) and waits until it is ready.
    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        let mut slot = self.slot(id)?.lock().await;
        if slot.process.is_some() {
            bail!("node {id} is already running");
        }
        std::fs::create_dir_all(slot.dir.join("data"))
            .with_context(|| format!("creating {}", slot.dir.display()))?;
        let role = self.project.role(slot.role);
        let foreign = role.and_then(|r| r.service);
        let mut command = Command::new(&self.exe);
        command
            .args(["node", foreign.unwrap_or(self.project.service), "--id", id])
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(slot.dir.join("data"))
            .args(self.network.peer_flags(id))
            .args(role.map_or(&[][..], |r| r.flags));
        if foreign.is_none() {
            command.args(self.project.node_flags).args(&self.node_flags);
            if let Some(flag) = self.project.initial_members_flag {
                command
                    .arg(flag)
                    .arg(self.planned[..self.initial].join(","));
            }
        }
        let options = LaunchOptions {
            ready_timeout: Duration::from_secs(30),
            log_file: Some(slot.dir.join("node.log")),
            on_line: Some(node_events(id, self.timeline.clone())),
        };
        let process = NodeProcess::spawn_with(command, options)
            .await
            .with_context(|| format!("starting node {id}"))?;
        self.network.node_ready(id, process.ready().grpc);
        let stopping = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_exit(
            id.to_string(),
            process.exit_watch(),
            stopping.clone(),
            slot.dir.join("node.log"),
            self.timeline.clone(),
        ));
        self.timeline.record(
            EventKind::NodeUp,
            Some(id),
            format!("pid {} grpc {}", process.pid(), process.ready().grpc),
        );
        slot.process = Some(process);
        slot.state = ProcessState::Running;
        self.publish(id, &slot);
        slot.stopping = stopping;
        Ok(())
    }

    /// Applies a process fault to node `id`.
    pub async fn apply(&self, fault: ProcessFault, id: &str) -> anyhow::Result<()> {
        match fault {
            ProcessFault::Kill => self.kill(id).await,
            ProcessFault::Terminate => self.terminate(id).await,
            ProcessFault::Pause => self.pause(id).await,
            ProcessFault::Resume => self.resume(id).await,
            ProcessFault::Restart => self.restart(id).await,
            ProcessFault::Start => {
                self.timeline.record(EventKind::Fault, Some(id), "start");
                self.start(id).await
            }
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub async fn kill(&self, id: &str) -> anyhow::Result<()> {
        self.stop(id, Halt::Kill, EventKind::Fault).await
    }

    /// SIGTERM: a graceful shutdown; SIGKILL if it takes longer than [`TERMINATE_GRACE`].
    pub async fn terminate(&self, id: &str) -> anyhow::Result<()> {
        self.stop(id, Halt::Terminate, EventKind::Fault).await
    }

    /// Stops node `id` and records it as `kind` (a fault, or the end of the run).
    async fn stop(&self, id: &str, halt: Halt, kind: EventKind) -> anyhow::Result<()> {
        let mut slot = self.slot(id)?.lock().await;
        let mut process = running(&mut slot, id)?;
        slot.stopping.store(true, Ordering::SeqCst);
        let status = match halt {
            Halt::Kill => {
                self.timeline.record(kind, Some(id), "kill (SIGKILL)");
                process.kill().await?
            }
            Halt::Terminate => {
                self.timeline.record(kind, Some(id), "terminate (SIGTERM)");
                if slot.state == ProcessState::Paused {
                    // A stopped process would sit on the SIGTERM for the whole grace period.
                    process.signal(Signal::SIGCONT)?;
                }
                process.terminate(TERMINATE_GRACE).await?
            }
        };
        self.timeline.record(
            EventKind::NodeStopped,
            Some(id),
            format!("exited: {status}"),
        );
        slot.state = ProcessState::Down;
        self.publish(id, &slot);
        Ok(())
    }

    /// SIGSTOP: the process freezes; its sockets stay open, nobody answers.
    pub async fn pause(&self, id: &str) -> anyhow::Result<()> {
        self.signal_state(id, Signal::SIGSTOP, ProcessState::Paused, "pause (SIGSTOP)")
            .await
    }

    /// SIGCONT.
    pub async fn resume(&self, id: &str) -> anyhow::Result<()> {
        self.signal_state(
            id,
            Signal::SIGCONT,
            ProcessState::Running,
            "resume (SIGCONT)",
        )
        .await
    }

    /// Sends `signal` to a running node and records the state it leaves it in.
    async fn signal_state(
        &self,
        id: &str,
        signal: Signal,
        state: ProcessState,
        what: &str,
    ) -> anyhow::Result<()> {
        let mut slot = self.slot(id)?.lock().await;
        let process = slot
            .process
            .as_ref()
            .with_context(|| format!("node {id} is down"))?;
        process.signal(signal)?;
        slot.state = state;
        self.publish(id, &slot);
        self.timeline.record(EventKind::Fault, Some(id), what);
        Ok(())
    }

    /// Kills node `id` if it runs, then starts it again on the same data dir and peers.
    pub async fn restart(&self, id: &str) -> anyhow::Result<()> {
        let was_up = self.slot(id)?.lock().await.process.is_some();
        if was_up {
            self.kill(id).await?;
        }
        self.timeline.record(EventKind::Fault, Some(id), "restart");
        {
            let mut slot = self.slot(id)?.lock().await;
            slot.restarts += 1;
            self.publish(id, &slot);
        }
        self.start(id).await
    }

    /// Runs `f` with the run's seeded RNG (every random choice of a run goes through it).
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut rand::rngs::SmallRng) -> T) -> T {
        f(&mut self.rng.lock().unwrap())
    }

    /// Applies a partition (`isolate n1`, `n1,n2 | n3,n4,n5`, `majority-minority`...).
    pub fn partition(&self, spec: &str) -> anyhow::Result<()> {
        let shape = Partition::parse(spec).map_err(distlab_runtime::BadInput)?;
        let cuts = shape
            .cuts(&self.ids(), &mut *self.rng.lock().unwrap())
            .map_err(distlab_runtime::BadInput)?;
        self.network.cut(&cuts);
        let shown: Vec<String> = cuts.iter().map(|(a, b)| format!("{a}->{b}")).collect();
        self.timeline.record(
            EventKind::Fault,
            None,
            format!("partition {spec}: cut {}", shown.join(" ")),
        );
        Ok(())
    }

    /// Sets link faults: `n1->*`, `*->n2`, `client->n1`, with a netem spec (`delay 100ms loss 5%`).
    pub fn link(&self, links: &str, spec: &str) -> anyhow::Result<()> {
        let (from, to) = links.split_once("->").ok_or_else(|| {
            distlab_runtime::BadInput(format!(
                "{links:?}: links are FROM->TO, e.g. n1->* or client->n2"
            ))
        })?;
        let faults = LinkFaults::parse(spec).map_err(distlab_runtime::BadInput)?;
        let matched = self.network.set_faults(from.trim(), to.trim(), faults);
        if matched == 0 {
            return Err(distlab_runtime::BadInput(format!("no link matches {links:?}")).into());
        }
        self.timeline.record(
            EventKind::Fault,
            None,
            format!("link {links} {faults} ({matched} links)"),
        );
        Ok(())
    }

    /// Every link healthy again: partitions, delays, losses all removed.
    pub fn heal(&self) {
        self.network.heal();
        self.timeline.record(EventKind::Fault, None, "heal");
    }

    /// Terminates every node that runs (used at the end of a run).
    pub async fn stop_all(&self) {
        self.timeline
            .record(EventKind::Note, None, super::events::STOPPING_CLUSTER);
        for id in self.ids() {
            let up = self.slots[&id].lock().await.process.is_some();
            if up {
                let _ = self.stop(&id, Halt::Terminate, EventKind::Note).await;
            }
        }
    }

    /// Every node as the lab sees it. Never waits: safe to call from a poller or a UI.
    pub async fn nodes(&self) -> Vec<NodeInfo> {
        let published = self.published.lock().unwrap();
        self.ids()
            .iter()
            .filter_map(|id| published.get(id))
            .map(|p| {
                let mut info = p.info.clone();
                // A crash the watcher saw: published as running, but the process is gone.
                if p.exit.as_ref().is_some_and(|e| e.borrow().is_some()) {
                    info.state = ProcessState::Down;
                    info.pid = None;
                    info.grpc = None;
                    info.admin = None;
                }
                info
            })
            .collect()
    }

    fn publish(&self, id: &str, slot: &Slot) {
        let alive = slot.process.as_ref().filter(|p| p.exit_status().is_none());
        let info = NodeInfo {
            id: id.to_string(),
            role: slot.role,
            state: if alive.is_some() {
                slot.state
            } else {
                ProcessState::Down
            },
            pid: alive.map(NodeProcess::pid),
            grpc: alive.map(|p| p.ready().grpc),
            client: self
                .network
                .addr(CLIENT, id)
                .expect("every node has a client link"),
            admin: alive.map(|p| p.ready().admin),
            restarts: slot.restarts,
            data_dir: slot.dir.join("data"),
        };
        let exit = slot.process.as_ref().map(NodeProcess::exit_watch);
        self.published
            .lock()
            .unwrap()
            .insert(id.to_string(), Published { info, exit });
    }
}

/// Takes the process out of its slot for stopping; the error names a node that is down.
fn running(slot: &mut Slot, id: &str) -> anyhow::Result<NodeProcess> {
    match slot.process.take() {
        Some(process) if process.exit_status().is_none() => Ok(process),
        _ => Err(anyhow::anyhow!("node {id} is down")),
    }
}

/// Puts the node's state changes on the timeline: JSON log lines with a stable `event` field
/// (`became_leader`, `member_suspected`, `node_stopped`...), by the contract every service
/// follows. The ready line is the lab's own business and is left out.
fn node_events(id: &str, timeline: Arc<Timeline>) -> distlab_runtime::launch::LineHook {
    let id = id.to_string();
    Arc::new(move |line: &str| {
        if !line.contains("\"event\"") {
            return;
        }
        let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            return;
        };
        let Some(event) = fields.get("event").and_then(|e| e.as_str()) else {
            return;
        };
        if event == distlab_runtime::ready::Ready::EVENT {
            return;
        }
        let message = fields
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let what = format!("{event}: {message}");
        let mut fields = fields;
        for routine in [
            "timestamp",
            "level",
            "message",
            "event",
            "target",
            "span",
            "spans",
        ] {
            fields.remove(routine);
        }
        timeline.record_with(EventKind::NodeEvent, Some(&id), what, fields);
    })
}

/// Records a crash when a node exits without the lab having asked it to.
async fn watch_exit(
    id: String,
    mut exit: tokio::sync::watch::Receiver<Option<std::process::ExitStatus>>,
    stopping: Arc<AtomicBool>,
    log: PathBuf,
    timeline: Arc<Timeline>,
) {
    let Ok(status) = exit
        .wait_for(Option::is_some)
        .await
        .map(|s| s.expect("Some"))
    else {
        return;
    };
    if stopping.load(Ordering::SeqCst) {
        return;
    }
    // Give the log a moment to receive the last lines.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let last: Vec<&str> = text
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    timeline.record(
        EventKind::NodeCrashed,
        Some(&id),
        format!(
            "exited on its own ({status}); last lines:\n{}",
            last.join("\n")
        ),
    );
}
