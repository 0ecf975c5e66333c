//! A live session: a started cluster, its cluster model, its workload and its history, and
//! the one place where a scenario step is carried out. `lab scenario` plays a file's steps
//! through it; the console sends it the steps its keys and its command palette make, so a key
//! press and a YAML step do exactly the same thing.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::events::EventKind;
use super::history::Recorder;
use super::model::{ClusterModel, Health, NodeView, spawn_poller};
use super::partition;
use super::predicate::StatusPredicate;
use super::project::ClusterSpec;
use super::scenario::{ClusterNow, Condition, LoadStep, LoadSwitch, Selector, Step, WaitStep};
use super::supervisor::{NodeInfo, ProcessFault, ProcessState, Supervisor};
use super::workload::{LoadStats, Target, Workload, WorkloadSpec};

/// Whether the workload runs, and how fast; readable at any time without waiting.
#[derive(Debug, Clone)]
pub struct LoadInfo {
    pub running: bool,
    /// The spec the workload runs (or would run when started again).
    pub spec: Option<WorkloadSpec>,
}

pub struct Session {
    supervisor: Arc<Supervisor>,
    model: watch::Receiver<ClusterModel>,
    recorder: Arc<Recorder>,
    stats: Arc<LoadStats>,
    seed: u64,
    load: tokio::sync::Mutex<Option<Workload>>,
    /// What [`Session::load_info`] reports.
    load_info: Mutex<LoadInfo>,
    /// How many times a workload was started (each start gets its own seed).
    starts: Mutex<u64>,
    /// The autoscaler's stop (if one runs): when the session stops or is dropped.
    autoscaler: tokio_util::sync::CancellationToken,
    _stop_autoscaler: tokio_util::sync::DropGuard,
}

impl Session {
    /// Plans the cluster, creates its run dir, starts every node and the status poller.
    /// `exe` is the program that runs `node <service> ...` (the lab itself).
    pub async fn start(spec: ClusterSpec, runs_root: &Path, exe: PathBuf) -> anyhow::Result<Self> {
        let seed = spec.seed;
        let autoscale = spec.autoscale.zip(spec.project.scaling);
        let supervisor = Arc::new(Supervisor::new(spec, runs_root, exe).await?);
        let recorder = Arc::new(Recorder::create(Some(
            &supervisor.run_dir().file("history.jsonl"),
        ))?);
        supervisor.start_all().await?;
        let model = spawn_poller(supervisor.clone());
        let autoscaler = tokio_util::sync::CancellationToken::new();
        if let Some((range, scaling)) = autoscale {
            supervisor.timeline().record(
                super::events::EventKind::Note,
                None,
                format!("autoscale {range}: {}s by queue depth", scaling.role),
            );
            tokio::spawn(super::autoscale::run(
                supervisor.clone(),
                model.clone(),
                range,
                scaling,
                autoscaler.clone(),
            ));
        }
        Ok(Self {
            _stop_autoscaler: autoscaler.clone().drop_guard(),
            autoscaler,
            supervisor,
            model,
            recorder,
            stats: Arc::new(LoadStats::default()),
            seed,
            load: tokio::sync::Mutex::new(None),
            load_info: Mutex::new(LoadInfo {
                running: false,
                spec: None,
            }),
            starts: Mutex::new(0),
        })
    }

    pub fn supervisor(&self) -> &Arc<Supervisor> {
        &self.supervisor
    }

    /// The cluster model stream (a fresh receiver).
    pub fn model(&self) -> watch::Receiver<ClusterModel> {
        self.model.clone()
    }

    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    pub fn stats(&self) -> &Arc<LoadStats> {
        &self.stats
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn run_dir(&self) -> &Path {
        self.supervisor.run_dir().path()
    }

    pub fn load_info(&self) -> LoadInfo {
        self.load_info.lock().unwrap().clone()
    }

    /// Where the workload's clients reach every node (the client link proxies).
    async fn targets(&self) -> Vec<Target> {
        self.supervisor
            .nodes()
            .await
            .into_iter()
            .map(|n| Target {
                node: n.id,
                role: n.role,
                addr: n.client,
                admin: n.admin,
                data_dir: n.data_dir,
            })
            .collect()
    }

    /// Starts the project's workload with `spec`, replacing the one that runs.
    pub async fn start_load(&self, spec: WorkloadSpec) -> anyhow::Result<()> {
        let mut load = self.load.lock().await;
        if let Some(running) = load.take() {
            running.stop().await;
        }
        let seed = {
            let mut starts = self.starts.lock().unwrap();
            *starts += 1;
            self.seed.wrapping_add(*starts * 1000)
        };
        let targets = self.targets().await;
        let clients =
            self.supervisor
                .project()
                .workload
                .clients(&spec, &targets, &self.recorder)?;
        let started = Workload::start(&spec, clients, self.stats.clone(), seed);
        *load = Some(started);
        *self.load_info.lock().unwrap() = LoadInfo {
            running: true,
            spec: Some(spec),
        };
        Ok(())
    }

    /// Stops the workload (its clients finish their current operation).
    pub async fn stop_load(&self) {
        if let Some(running) = self.load.lock().await.take() {
            running.stop().await;
        }
        self.load_info.lock().unwrap().running = false;
    }

    /// Carries out one scenario step (a palette command is one too).
    pub async fn step(&self, step: &Step) -> anyhow::Result<()> {
        let supervisor = &*self.supervisor;
        match step {
            Step::Sleep(d) => tokio::time::sleep(d.0).await,
            Step::Wait(w) => {
                let until = self.until(w).await?;
                self.wait_until(until, w.timeout()).await?
            }
            Step::Assert(w) => {
                let until = self.until(w).await?;
                self.wait_until(until, Duration::ZERO).await?
            }
            Step::Kill(s) => self.apply(s, ProcessFault::Kill).await?,
            Step::Terminate(s) => self.apply(s, ProcessFault::Terminate).await?,
            Step::Pause(s) => self.apply(s, ProcessFault::Pause).await?,
            Step::Resume(s) => self.apply(s, ProcessFault::Resume).await?,
            Step::Restart(s) => self.apply(s, ProcessFault::Restart).await?,
            Step::Start(s) => self.apply(s, ProcessFault::Start).await?,
            Step::Partition(shape) if partition::names_leader(shape) => {
                let leader = self
                    .resolve(&Selector::One(partition::LEADER.into()))
                    .await?;
                supervisor.partition(&partition::with_leader(shape, &leader[0]))?
            }
            Step::Partition(shape) => supervisor.partition(shape)?,
            Step::Heal => supervisor.heal(),
            Step::AddNode => self.add_node().await?,
            Step::RemoveNode(s) => self.remove_nodes(s).await?,
            Step::Link(spec) => {
                let (links, faults) = spec.split_once(char::is_whitespace).unwrap_or((spec, ""));
                supervisor.link(links, faults)?;
            }
            Step::Load(change) => {
                let base = self.load_info().spec.unwrap_or_default();
                match change {
                    LoadStep::Switch(LoadSwitch::Stop) => self.stop_load().await,
                    LoadStep::Switch(LoadSwitch::Start) => self.start_load(base).await?,
                    LoadStep::Rate { rate } => {
                        let spec = WorkloadSpec {
                            rate: *rate,
                            ..base
                        };
                        self.start_load(spec).await?;
                    }
                }
                let info = self.load_info();
                let rate = info.spec.map_or(0.0, |s| s.rate);
                supervisor.timeline().record(
                    EventKind::Note,
                    None,
                    if info.running {
                        format!("load: {rate} ops/s")
                    } else {
                        "load: stopped".to_string()
                    },
                );
            }
            Step::Nemesis(nemesis) => super::nemesis::run(supervisor, nemesis).await?,
            Step::Mark(label) => {
                supervisor
                    .timeline()
                    .record(EventKind::Note, None, format!("mark: {label}"));
            }
        }
        Ok(())
    }

    /// Membership growth: starts the next node; a running workload is restarted so its
    /// clients reach the new node too.
    async fn add_node(&self) -> anyhow::Result<()> {
        self.supervisor.add_node().await?;
        self.reconnect_load().await
    }

    /// Membership shrink: tells the cluster each selected node leaves (the project's
    /// membership change), then stops it; the workload's clients forget it.
    async fn remove_nodes(&self, selector: &Selector) -> anyhow::Result<()> {
        let project = self.supervisor.project();
        let remove = project.remove_member.ok_or_else(|| {
            distlab_runtime::BadInput(format!(
                "{} has no membership to remove a node from",
                project.name
            ))
        })?;
        for id in self.resolve(selector).await? {
            self.supervisor
                .timeline()
                .record(EventKind::Note, Some(&id), "leaving the membership");
            let targets = self.targets().await;
            remove(&targets, &id).await?;
            self.supervisor.remove_node(&id).await?;
        }
        self.reconnect_load().await
    }

    /// After the cluster's nodes changed: a running workload starts again with clients for
    /// the nodes there are now.
    async fn reconnect_load(&self) -> anyhow::Result<()> {
        let info = self.load_info();
        if let (true, Some(spec)) = (info.running, info.spec) {
            self.start_load(spec).await?;
        }
        Ok(())
    }

    /// After the faults: heal every link, resume paused nodes, start the ones that are down,
    /// and wait until all of them answer.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let supervisor = &*self.supervisor;
        supervisor.timeline().record(
            EventKind::Note,
            None,
            "recovery: heal, resume, start what is down",
        );
        supervisor.heal();
        for node in supervisor.nodes().await {
            match node.state {
                ProcessState::Paused => supervisor.resume(&node.id).await?,
                ProcessState::Down => supervisor.start(&node.id).await?,
                ProcessState::Running => {}
            }
        }
        self.wait_until(Until::AllUp, Duration::from_secs(30))
            .await
            .context("recovery: wait all_up")
    }

    /// Reads every key of the workload once more (if a workload ran): what survived.
    pub async fn final_reads(&self) -> anyhow::Result<()> {
        let Some(spec) = self.load_info().spec else {
            return Ok(());
        };
        let targets = self.targets().await;
        self.supervisor
            .project()
            .workload
            .final_reads(&spec, &targets, &self.recorder, Duration::from_secs(20))
            .await
    }

    /// Stops the workload and every node; flushes the history.
    pub async fn stop(&self) {
        self.autoscaler.cancel();
        self.stop_load().await;
        let _ = self.recorder.flush();
        self.supervisor.stop_all().await;
    }

    /// Resolves a selector to node ids, now (so `down` means down at this moment, `leader`
    /// the node that reports itself leader now).
    pub async fn resolve(&self, selector: &Selector) -> anyhow::Result<Vec<String>> {
        let current = self.supervisor.nodes().await;
        let snapshot = self.model.borrow().clone();
        let now = ClusterNow {
            ids: current.iter().map(|n| n.id.clone()).collect(),
            down: current
                .iter()
                .filter(|n| n.state == ProcessState::Down)
                .map(|n| n.id.clone())
                .collect(),
            paused: current
                .iter()
                .filter(|n| n.state == ProcessState::Paused)
                .map(|n| n.id.clone())
                .collect(),
            roles: fresh_views(&current, &snapshot)
                .into_iter()
                .filter_map(|v| Some((v.node.id.clone(), v.role.clone()?)))
                .collect(),
        };
        self.supervisor
            .with_rng(|rng| selector.resolve(&now, rng))
            .map_err(|e| distlab_runtime::BadInput(e).into())
    }

    async fn apply(&self, selector: &Selector, fault: ProcessFault) -> anyhow::Result<()> {
        for id in self.resolve(selector).await? {
            self.supervisor.apply(fault, &id).await?;
        }
        Ok(())
    }

    /// Waits until the `wait` step's condition holds, or fails after its timeout.
    /// What a `wait` or `assert` step's condition means on the cluster now.
    async fn until(&self, step: &WaitStep) -> anyhow::Result<Until> {
        Ok(match step {
            WaitStep::Condition(Condition::AllUp)
            | WaitStep::Full {
                until: Condition::AllUp,
                ..
            } => Until::AllUp,
            WaitStep::Condition(Condition::Leader)
            | WaitStep::Full {
                until: Condition::Leader,
                ..
            } => Until::Leader,
            WaitStep::Condition(Condition::OneLeader)
            | WaitStep::Full {
                until: Condition::OneLeader,
                ..
            } => Until::OneLeader,
            WaitStep::Condition(Condition::Converged)
            | WaitStep::Full {
                until: Condition::Converged,
                ..
            } => Until::Converged,
            WaitStep::Status {
                status, on, count, ..
            } => {
                let predicate =
                    StatusPredicate::parse(status).map_err(distlab_runtime::BadInput)?;
                let all = Selector::One("all".into());
                let on = self.resolve(on.as_ref().unwrap_or(&all)).await?;
                let count = count.unwrap_or(on.len());
                Until::Status(predicate, on, count)
            }
            WaitStep::Equal { equal, on, .. } => {
                let all = Selector::One("all".into());
                Until::Equal(
                    equal.clone(),
                    self.resolve(on.as_ref().unwrap_or(&all)).await?,
                )
            }
        })
    }

    /// Waits, on the cluster model, until `until` holds. A node counts only through a view of
    /// its *current* process (same pid as the supervisor reports now) that answered
    /// `/status`, so a snapshot taken before a kill or a restart can never satisfy a wait that
    /// follows it.
    async fn wait_until(&self, until: Until, timeout: Duration) -> anyhow::Result<()> {
        let mut model = self.model.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.supervisor.nodes().await;
            let snapshot = model.borrow_and_update().clone();
            let up = fresh_views(&current, &snapshot);
            let holds = match &until {
                Until::AllUp => up.len() == current.len(),
                Until::Leader => up.iter().any(|view| view.role.as_deref() == Some("leader")),
                Until::OneLeader => {
                    up.iter()
                        .filter(|view| view.role.as_deref() == Some("leader"))
                        .count()
                        == 1
                }
                Until::Converged => {
                    up.len() == current.len()
                        && up
                            .iter()
                            .all(|view| view.detail.get("converged") == Some(&true.into()))
                }
                Until::Status(predicate, on, count) => {
                    on.iter()
                        .filter(|id| {
                            up.iter()
                                .any(|view| view.node.id == **id && predicate.holds(&view.status()))
                        })
                        .count()
                        >= *count
                }
                Until::Equal(path, on) => {
                    let values: Vec<Option<serde_json::Value>> = on
                        .iter()
                        .map(|id| {
                            up.iter().find(|view| view.node.id == *id).and_then(|view| {
                                super::predicate::lookup(&view.status(), path).cloned()
                            })
                        })
                        .collect();
                    values.iter().all(Option::is_some) && values.windows(2).all(|w| w[0] == w[1])
                }
            };
            if holds {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline, model.changed()).await;
            let when = if timeout.is_zero() {
                "now".to_string()
            } else {
                format!("after {}", distlab_runtime::duration::format(timeout))
            };
            anyhow::ensure!(
                matches!(changed, Ok(Ok(()))),
                "not true {when} ({} of {} nodes up)",
                up.len(),
                current.len()
            );
        }
    }
}

/// The views of the nodes that run now and answered `/status` from their *current* process
/// (same pid as the supervisor reports now): a snapshot taken before a kill or a restart never
/// counts.
fn fresh_views<'a>(current: &[NodeInfo], snapshot: &'a ClusterModel) -> Vec<&'a NodeView> {
    current
        .iter()
        .filter(|node| node.state == ProcessState::Running)
        .filter_map(|node| {
            snapshot.nodes.iter().find(|view| {
                view.node.id == node.id
                    && view.node.pid == node.pid
                    && view.health == Health::Responsive
            })
        })
        .collect()
}

/// What a `wait` step waits for.
enum Until {
    AllUp,
    Leader,
    OneLeader,
    Converged,
    /// At least this many of these nodes answer and satisfy the predicate.
    Status(StatusPredicate, Vec<String>, usize),
    /// These nodes answer with one same value at this path.
    Equal(String, Vec<String>),
}
