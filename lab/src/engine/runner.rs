//! Runs a validated scenario: cluster up, workload on, steps in order, then recovery (heal,
//! resume, restart what is down), final reads, checks, and the report.
//!
//! ```text
//! start nodes -> workload -> step 1 .. step N -> stop workload -> heal + resume + start down
//!   -> wait all up -> final reads -> checkers -> report.json + summary -> stop nodes
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use super::check::{self, Verdict};
use super::events::{Event, EventKind};
use super::history::{Op, OpType, Recorder, completions};
use super::model::{ClusterModel, Health, NodeView, spawn_poller};
use super::predicate::StatusPredicate;
use super::scenario::{
    CheckSpec, Condition, LoadStep, LoadSwitch, Selector, Step, Validated, WaitStep,
};
use super::supervisor::{ProcessFault, ProcessState, Supervisor};
use super::workload::{self, Workload, WorkloadSpec};

/// What the run measured and concluded; written to `report.json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub project: String,
    pub seed: u64,
    pub run_dir: PathBuf,
    pub duration_secs: f64,
    pub ops: OpCounts,
    pub ok_per_sec: f64,
    pub latency_ms: Latency,
    pub faults: Vec<Event>,
    pub checks: Vec<Verdict>,
    pub passed: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct OpCounts {
    pub total: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Runs `validated`, leaving everything in a fresh run dir under `runs_root`.
pub async fn run(
    validated: &Validated,
    source: &Path,
    seed: Option<u64>,
    runs_root: &Path,
    exe: PathBuf,
) -> anyhow::Result<Report> {
    let scenario = &validated.scenario;
    let seed = seed.or(scenario.seed).unwrap_or(1);
    let supervisor = Arc::new(
        Supervisor::new(
            validated.project,
            validated.nodes.len(),
            runs_root,
            seed,
            exe,
        )
        .await?,
    );
    let run_dir = supervisor.run_dir().path().to_path_buf();
    let _ = std::fs::copy(source, run_dir.join("scenario.yaml"));
    let timeline = supervisor.timeline().clone();
    let recorder = Arc::new(Recorder::create(Some(&run_dir.join("history.jsonl")))?);

    let outcome = drive(validated, supervisor.clone(), recorder.clone(), seed).await;
    let _ = recorder.flush();
    supervisor.stop_all().await;
    outcome?;

    let history = recorder.ops();
    let checks: Vec<Verdict> = scenario
        .check
        .iter()
        .map(|c| match c {
            CheckSpec::Linearizable => check::linearizable::check(&history),
            CheckSpec::AppliedOnce => check::kv::applied_once(&history),
            CheckSpec::Availability { min } => {
                check::kv::availability(&history, &timeline.events(), *min)
            }
        })
        .collect();
    for verdict in &checks {
        timeline.record(
            EventKind::Note,
            None,
            format!(
                "check {}: {}",
                verdict.checker,
                if verdict.valid { "pass" } else { "FAIL" }
            ),
        );
    }
    // The graph helps a reader; a failure to draw it must not fail the run.
    if let Err(e) =
        super::plot::latency_svg(&history, &timeline.events(), &run_dir.join("latency.svg"))
    {
        tracing::warn!(error = %e, "could not draw latency.svg");
    }
    let (ops, latency) = measure(&history);
    let duration_secs = timeline.elapsed().as_secs_f64();
    let report = Report {
        scenario: scenario.name.clone(),
        description: scenario.description.trim().to_string(),
        project: validated.project.name.to_string(),
        seed,
        run_dir: run_dir.clone(),
        duration_secs,
        ok_per_sec: ops.ok as f64 / duration_secs.max(1e-9),
        ops,
        latency_ms: latency,
        faults: timeline
            .events()
            .into_iter()
            .filter(|e| e.kind == EventKind::Fault)
            .collect(),
        passed: checks.iter().all(|c| c.valid),
        checks,
    };
    std::fs::write(
        run_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .with_context(|| format!("writing {}", run_dir.join("report.json").display()))?;
    Ok(report)
}

async fn drive(
    validated: &Validated,
    supervisor: Arc<Supervisor>,
    recorder: Arc<Recorder>,
    seed: u64,
) -> anyhow::Result<()> {
    let scenario = &validated.scenario;
    supervisor.start_all().await?;
    // The model `wait` steps read; it polls until this run ends (its receiver is dropped).
    let model = spawn_poller(supervisor.clone());
    let supervisor = &*supervisor;
    let timeline = supervisor.timeline();
    // Project 0's nodes are independent stores: the workload talks to the first one.
    let target = supervisor
        .nodes()
        .await
        .first()
        .map(|n| n.client)
        .context("no nodes")?;
    let mut spec = scenario.workload.clone();
    let mut load = match &spec {
        Some(spec) => Some(Workload::start_registers(
            spec,
            &[target],
            recorder.clone(),
            seed,
        )?),
        None => None,
    };

    for (i, step) in scenario.steps.iter().enumerate() {
        timeline.record(
            EventKind::Note,
            None,
            format!("step {}: {}", i + 1, step.describe()),
        );
        match step {
            Step::Sleep(d) => tokio::time::sleep(d.0).await,
            Step::Wait(w) => wait(supervisor, model.clone(), w).await?,
            Step::Kill(s) => apply(supervisor, s, ProcessFault::Kill).await?,
            Step::Terminate(s) => apply(supervisor, s, ProcessFault::Terminate).await?,
            Step::Pause(s) => apply(supervisor, s, ProcessFault::Pause).await?,
            Step::Resume(s) => apply(supervisor, s, ProcessFault::Resume).await?,
            Step::Restart(s) => apply(supervisor, s, ProcessFault::Restart).await?,
            Step::Start(s) => apply(supervisor, s, ProcessFault::Start).await?,
            Step::Partition(shape) => supervisor.partition(shape)?,
            Step::Heal => supervisor.heal(),
            Step::Link(spec) => {
                let (links, faults) = spec.split_once(char::is_whitespace).unwrap_or((spec, ""));
                supervisor.link(links, faults)?;
            }
            Step::Load(change) => {
                if let Some(running) = load.take() {
                    running.stop().await;
                }
                let base = spec.clone().unwrap_or_default();
                let next = match change {
                    LoadStep::Switch(LoadSwitch::Stop) => None,
                    LoadStep::Switch(LoadSwitch::Start) => Some(base),
                    LoadStep::Rate { rate } => Some(WorkloadSpec {
                        rate: *rate,
                        ..base
                    }),
                };
                if let Some(next) = next {
                    load = Some(Workload::start_registers(
                        &next,
                        &[target],
                        recorder.clone(),
                        seed.wrapping_add(i as u64),
                    )?);
                    spec = Some(next);
                }
            }
            Step::Nemesis(nemesis) => super::nemesis::run(supervisor, nemesis).await?,
            Step::Mark(label) => {
                timeline.record(EventKind::Note, None, format!("mark: {label}"));
            }
        }
    }
    if let Some(running) = load.take() {
        running.stop().await;
    }

    // Recovery, then the final reads: what survived the faults.
    timeline.record(
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
    wait_until(
        supervisor,
        model,
        Until::AllUp,
        Duration::from_secs(30),
        "all_up (recovery)",
    )
    .await?;
    if let Some(spec) = &spec {
        workload::final_reads(spec, target, &recorder, Duration::from_secs(20)).await?;
    }
    Ok(())
}

/// Resolves a selector to node ids, now (so `down` means down at this moment).
async fn resolve(supervisor: &Supervisor, selector: &Selector) -> Vec<String> {
    let names = match selector {
        Selector::One(x) => vec![x.clone()],
        Selector::Many(xs) => xs.clone(),
    };
    let n = supervisor.ids().len();
    let mut ids = Vec::new();
    for name in names {
        match name.as_str() {
            "all" => ids.extend(supervisor.ids()),
            "random" => ids.extend(supervisor.random_nodes(1)),
            "minority" => ids.extend(supervisor.random_nodes(n / 2)),
            "majority" => ids.extend(supervisor.random_nodes(n / 2 + 1)),
            "down" => ids.extend(
                supervisor
                    .nodes()
                    .await
                    .into_iter()
                    .filter(|x| x.state == ProcessState::Down)
                    .map(|x| x.id),
            ),
            id => ids.push(id.to_string()),
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

async fn apply(
    supervisor: &Supervisor,
    selector: &Selector,
    fault: ProcessFault,
) -> anyhow::Result<()> {
    for id in resolve(supervisor, selector).await {
        supervisor.apply(fault, &id).await?;
    }
    Ok(())
}

/// What a `wait` step waits for.
enum Until {
    AllUp,
    Leader,
    Status(StatusPredicate, Vec<String>),
}

/// Waits until the `wait` step's condition holds, or fails after its timeout.
async fn wait(
    supervisor: &Supervisor,
    model: watch::Receiver<ClusterModel>,
    step: &WaitStep,
) -> anyhow::Result<()> {
    let until = match step {
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
        WaitStep::Status { status, on, .. } => {
            let predicate = StatusPredicate::parse(status).map_err(distlab_runtime::BadInput)?;
            let all = Selector::One("all".into());
            Until::Status(
                predicate,
                resolve(supervisor, on.as_ref().unwrap_or(&all)).await,
            )
        }
    };
    wait_until(supervisor, model, until, step.timeout(), &step.describe()).await
}

/// Waits, on the cluster model, until `until` holds. A node counts only through a view of its
/// *current* process (same pid as the supervisor reports now) that answered `/status`, so a
/// snapshot taken before a kill or a restart can never satisfy a wait that follows it.
async fn wait_until(
    supervisor: &Supervisor,
    mut model: watch::Receiver<ClusterModel>,
    until: Until,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = supervisor.nodes().await;
        let snapshot = model.borrow_and_update().clone();
        let up: Vec<&NodeView> = current
            .iter()
            .filter(|node| node.state == ProcessState::Running)
            .filter_map(|node| {
                snapshot.nodes.iter().find(|view| {
                    view.node.id == node.id
                        && view.node.pid == node.pid
                        && view.health == Health::Responsive
                })
            })
            .collect();
        let holds = match &until {
            Until::AllUp => up.len() == current.len(),
            Until::Leader => up.iter().any(|view| view.role.as_deref() == Some("leader")),
            Until::Status(predicate, on) => on.iter().all(|id| {
                up.iter().any(|view| {
                    view.node.id == *id
                        && predicate
                            .holds(&serde_json::json!({"role": view.role, "detail": view.detail}))
                })
            }),
        };
        if holds {
            return Ok(());
        }
        let changed = tokio::time::timeout_at(deadline, model.changed()).await;
        anyhow::ensure!(
            matches!(changed, Ok(Ok(()))),
            "wait {what}: not true after {} ({} of {} nodes up)",
            distlab_runtime::duration::format(timeout),
            up.len(),
            current.len()
        );
    }
}

/// Counts and latencies of the workload's operations (final reads excluded).
fn measure(history: &[Op]) -> (OpCounts, Latency) {
    let mut counts = OpCounts::default();
    let mut micros =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    for (start, op) in completions(history) {
        counts.total += 1;
        match op.kind {
            OpType::Ok => {
                counts.ok += 1;
                micros.saturating_record(((op.time - start) * 1e6) as u64);
            }
            OpType::Fail => counts.fail += 1,
            _ => counts.info += 1,
        }
    }
    let ms = |q: f64| micros.value_at_quantile(q) as f64 / 1000.0;
    let latency = if micros.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50: ms(0.5),
            p99: ms(0.99),
            max: micros.max() as f64 / 1000.0,
        }
    };
    (counts, latency)
}

/// The human summary `lab scenario` prints.
pub fn summary(report: &Report) -> String {
    let mut out = format!(
        "scenario {} (project {}, seed {}): {}\n  run dir: {}\n  ops: {} (ok {}, fail {}, info {}), {:.1} ok/s, latency p50 {:.1} ms, p99 {:.1} ms\n",
        report.scenario,
        report.project,
        report.seed,
        if report.passed { "PASS" } else { "FAIL" },
        report.run_dir.display(),
        report.ops.total,
        report.ops.ok,
        report.ops.fail,
        report.ops.info,
        report.ok_per_sec,
        report.latency_ms.p50,
        report.latency_ms.p99,
    );
    let faults: Vec<String> = report
        .faults
        .iter()
        .map(|e| {
            format!(
                "{}{} @{:.1}s",
                e.node
                    .as_deref()
                    .map(|n| format!("{n} "))
                    .unwrap_or_default(),
                e.what,
                e.t
            )
        })
        .collect();
    out += &format!(
        "  faults: {}\n",
        if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(", ")
        }
    );
    for check in &report.checks {
        out += &format!(
            "  check {}: {} — {}\n",
            check.checker,
            if check.valid { "PASS" } else { "FAIL" },
            check.summary
        );
        if !check.valid || check.checker == "availability" {
            for line in &check.evidence {
                out += &format!("      {line}\n");
            }
        }
    }
    out
}
