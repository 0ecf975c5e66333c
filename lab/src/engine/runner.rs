//! Runs a validated scenario: cluster up, workload on, steps in order, then recovery (heal,
//! resume, restart what is down), final reads, checks, and the report.
//!
//! ```text
//! start nodes -> workload -> step 1 .. step N -> stop workload -> heal + resume + start down
//!   -> wait all up -> final reads -> checkers -> report.json + summary -> stop nodes
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tokio::sync::watch;

use super::check::{self, Verdict};
use super::events::{Event, EventKind};
use super::history::{Op, OpType, completions};
use super::outage::{self, Outage};
use super::project::ClusterSpec;
use super::scenario::{CheckSpec, Expect, Validated};
use super::session::Session;

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
    /// How long each disruptive fault stopped the workload (a Raft leader's kill: the
    /// failover time).
    pub outages: Vec<Outage>,
    pub checks: Vec<CheckResult>,
    /// Every check reached the verdict the scenario expects of it.
    pub passed: bool,
    /// Not passed, and nothing failed either: a checker could not decide.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

/// How a run, or a check, ended: what scripts tell apart by exit code (0, 1, 3; 2 is bad
/// input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Unknown,
}

impl Outcome {
    /// Of a set of check results: any failed, else any unknown, else a pass.
    pub fn of(checks: &[CheckResult]) -> Outcome {
        if checks.iter().any(|c| !c.met() && !c.unknown()) {
            Outcome::Fail
        } else if checks.iter().any(CheckResult::unknown) {
            Outcome::Unknown
        } else {
            Outcome::Pass
        }
    }

    /// The worst of several: a failure over an unknown over a pass.
    pub fn worst(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
        outcomes
            .into_iter()
            .fold(Outcome::Pass, |a, b| match (a, b) {
                (Outcome::Fail, _) | (_, Outcome::Fail) => Outcome::Fail,
                (Outcome::Unknown, _) | (_, Outcome::Unknown) => Outcome::Unknown,
                _ => Outcome::Pass,
            })
    }

    pub fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Unknown => "UNKNOWN",
        }
    }

    /// `lab scenario`'s and `lab check`'s exit code: 0, 1, or 3 for unknown.
    pub fn exit_code(self) -> std::process::ExitCode {
        match self {
            Outcome::Pass => std::process::ExitCode::SUCCESS,
            Outcome::Fail => std::process::ExitCode::FAILURE,
            Outcome::Unknown => std::process::ExitCode::from(3),
        }
    }
}

impl Report {
    pub fn outcome(&self) -> Outcome {
        match (self.passed, self.unknown) {
            (true, _) => Outcome::Pass,
            (false, true) => Outcome::Unknown,
            (false, false) => Outcome::Fail,
        }
    }
}

/// A check's verdict and the verdict the scenario expected of it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    #[serde(flatten)]
    pub verdict: Verdict,
    pub expected: Expect,
}

impl CheckResult {
    /// The check reached the expected verdict (an unknown one reaches none).
    pub fn met(&self) -> bool {
        !self.verdict.unknown && self.verdict.valid == (self.expected == Expect::Valid)
    }

    /// The checker could not decide within its budget.
    pub fn unknown(&self) -> bool {
        self.verdict.unknown
    }

    /// How the result reads in summaries: `PASS`, `FAIL`, `UNKNOWN`, or which way an
    /// expectation of `invalid` went.
    pub fn mark(&self) -> &'static str {
        if self.verdict.unknown {
            return "UNKNOWN";
        }
        match (self.verdict.valid, self.expected) {
            (true, Expect::Valid) => "PASS",
            (false, Expect::Valid) => "FAIL",
            (false, Expect::Invalid) => "PASS (invalid, as the scenario expects)",
            (true, Expect::Invalid) => "FAIL (valid, but the scenario expects invalid)",
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct OpCounts {
    pub total: u64,
    pub ok: u64,
    /// The service answered "no" (a cas whose expected value did not match): it worked, and
    /// said the operation did not happen. Not an error.
    pub refused: u64,
    /// Why, and how often (`cas did not match`: 174).
    pub refused_why: std::collections::BTreeMap<String, u64>,
    /// Failed without an answer from the service (an error the client got instead).
    pub fail: u64,
    pub info: u64,
}

impl OpCounts {
    /// `ok 668, refused 136 (cas did not match), fail 0, info 0`.
    pub fn describe(&self) -> String {
        let why: Vec<&str> = self.refused_why.keys().map(String::as_str).collect();
        let refused = if self.refused == 0 {
            String::new()
        } else {
            format!(", refused {} ({})", self.refused, why.join(", "))
        };
        format!(
            "ok {}{refused}, fail {}, info {}",
            self.ok, self.fail, self.info
        )
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Where a scenario being played is: the console shows it, the headless runner ignores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Carrying out step `index` (0-based).
    Step(usize),
    /// After the steps: heal, resume, restart, final reads.
    Recovery,
    /// Running the checkers.
    Checking,
    /// Finished: passed, failed, or a checker could not decide.
    Done { outcome: Outcome },
    /// The run stopped on an error (a wait that timed out, a node that would not start).
    Failed(String),
}

/// Runs `validated`, leaving everything in a fresh run dir under `runs_root`.
/// `cluster` is what [`Validated::cluster`] makes of it (seed and node flags).
pub async fn run(
    validated: &Validated,
    source: &Path,
    cluster: ClusterSpec,
    runs_root: &Path,
    exe: PathBuf,
) -> anyhow::Result<Report> {
    let session = Session::start(cluster, runs_root, exe).await?;
    let (progress, _) = watch::channel(Progress::Step(0));
    let outcome = play(&session, validated, source, &progress).await;
    session.stop().await;
    outcome?;
    conclude(&session, validated)
}

/// Plays the scenario on a started session: its workload, every step in order, then
/// recovery and the final reads. Reports where it is on `progress`.
pub async fn play(
    session: &Session,
    validated: &Validated,
    source: &Path,
    progress: &watch::Sender<Progress>,
) -> anyhow::Result<()> {
    let scenario = &validated.scenario;
    let _ = std::fs::copy(source, session.run_dir().join("scenario.yaml"));
    let timeline = session.supervisor().timeline();
    if let Some(spec) = &scenario.workload {
        session.start_load(spec.clone()).await?;
    }
    for (i, step) in scenario.steps.iter().enumerate() {
        progress.send_replace(Progress::Step(i));
        timeline.record(
            EventKind::Note,
            None,
            format!("step {}: {}", i + 1, step.describe()),
        );
        session
            .step(step)
            .await
            .with_context(|| format!("step {} ({})", i + 1, step.describe()))?;
    }
    session.stop_load().await;
    progress.send_replace(Progress::Recovery);
    session.recover().await?;
    session.final_reads().await?;
    let _ = session.recorder().flush();
    Ok(())
}

/// Runs `checks` on a history and the timeline of the run that made it; `expect` is what the
/// scenario expects of them (a check it does not name is expected valid).
pub fn run_checks(
    checks: &[CheckSpec],
    expect: &BTreeMap<String, Expect>,
    history: &[Op],
    events: &[Event],
    budget: &check::Budget,
) -> Vec<CheckResult> {
    checks
        .iter()
        .map(|c| CheckResult {
            verdict: match c {
                CheckSpec::Linearizable => check::linearizable::check(history, budget),
                CheckSpec::AppliedOnce => check::kv::applied_once(history),
                CheckSpec::ElectionSafety => check::raft::election_safety(events),
                CheckSpec::NoLostWrites => check::cache::no_lost_writes(history),
                CheckSpec::KeyMovement => check::cache::key_movement(events),
                CheckSpec::HintsDrained => check::cache::hints_drained(events),
                CheckSpec::LogDelivery => check::log::log_delivery(history),
                CheckSpec::GroupDelivery => check::log::group_delivery(history, events),
                CheckSpec::BatchJobs => check::batch::jobs(history),
                CheckSpec::BatchCommits => check::batch::commits(events),
                CheckSpec::BankTotal => check::bank::total(history),
                CheckSpec::BankTransfers => check::bank::transfers(history),
                CheckSpec::BankNotifications => check::bank::notifications(history),
                CheckSpec::CollabConvergence => check::collab::convergence(history),
                CheckSpec::CollabAcked => check::collab::acked(history),
                CheckSpec::CollabIntention => check::collab::intention(history),
                CheckSpec::Availability { min } => check::kv::availability(history, events, *min),
            },
            expected: expect.get(&c.name()).copied().unwrap_or_default(),
        })
        .collect()
}

/// Checks the session's history, draws the latency graph and writes `report.json`.
pub fn conclude(session: &Session, validated: &Validated) -> anyhow::Result<Report> {
    let scenario = &validated.scenario;
    let timeline = session.supervisor().timeline();
    let run_dir = session.run_dir().to_path_buf();
    let history = session.recorder().ops();
    let checks = run_checks(
        &scenario.check,
        &scenario.expect,
        &history,
        &timeline.events(),
        &validated.check_budget,
    );
    for check in &checks {
        timeline.record(
            EventKind::Note,
            None,
            format!("check {}: {}", check.verdict.checker, check.mark()),
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
        seed: session.seed(),
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
        outages: outage::outages(&history, &timeline.events()),
        passed: checks.iter().all(CheckResult::met),
        unknown: Outcome::of(&checks) == Outcome::Unknown,
        checks,
    };
    std::fs::write(
        run_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .with_context(|| format!("writing {}", run_dir.join("report.json").display()))?;
    Ok(report)
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
            OpType::Fail if op.answered() => {
                counts.refused += 1;
                let why = op.error.clone().unwrap_or_else(|| "refused".into());
                *counts.refused_why.entry(why).or_default() += 1;
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
/// Runs of one scenario (its variants) as a table, one column per run: verdicts, throughput,
/// latency, then each check's mark and the figures it gives for comparison.
pub fn side_by_side(runs: &[(&str, &Report)]) -> String {
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            "verdict".into(),
            runs.iter()
                .map(|(_, r)| r.outcome().word().to_string())
                .collect(),
        ),
        (
            "ok/s".into(),
            runs.iter()
                .map(|(_, r)| format!("{:.1}", r.ok_per_sec))
                .collect(),
        ),
        (
            "p99".into(),
            runs.iter()
                .map(|(_, r)| format!("{:.1} ms", r.latency_ms.p99))
                .collect(),
        ),
    ];
    let checks = runs.iter().map(|(_, r)| r.checks.len()).max().unwrap_or(0);
    for i in 0..checks {
        let check = |r: &Report| r.checks.get(i).cloned();
        let name = runs
            .iter()
            .find_map(|(_, r)| check(r))
            .map(|c| c.verdict.checker)
            .unwrap_or_default();
        rows.push((
            name.clone(),
            runs.iter()
                .map(|(_, r)| check(r).map_or("-".into(), |c| c.mark().to_string()))
                .collect(),
        ));
        // Each figure's label, in the order the runs first give it.
        let mut labels: Vec<String> = Vec::new();
        for (_, r) in runs {
            for (label, _) in check(r).map(|c| c.verdict.figures).unwrap_or_default() {
                if !labels.contains(&label) {
                    labels.push(label);
                }
            }
        }
        for label in labels {
            let cells = runs
                .iter()
                .map(|(_, r)| {
                    check(r)
                        .and_then(|c| c.verdict.figures.into_iter().find(|(l, _)| *l == label))
                        .map_or("-".into(), |(_, value)| value)
                })
                .collect();
            rows.push((format!("  {label}"), cells));
        }
    }
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..runs.len())
        .map(|c| {
            rows.iter()
                .map(|(_, cells)| cells[c].len())
                .chain([runs[c].0.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |label: &str, cells: Vec<&str>| {
        let mut out = format!("{label:<label_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            out += &format!("  {cell:<width$}");
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line("side by side", runs.iter().map(|(name, _)| *name).collect());
    for (label, cells) in &rows {
        out += &line(label, cells.iter().map(String::as_str).collect());
    }
    out
}

pub fn summary(report: &Report) -> String {
    let mut out = format!(
        "scenario {} (project {}, seed {}): {}\n  run dir: {}\n  ops: {} ({}), {:.1} ok/s, latency p50 {:.1} ms, p99 {:.1} ms\n",
        report.scenario,
        report.project,
        report.seed,
        report.outcome().word(),
        report.run_dir.display(),
        report.ops.total,
        report.ops.describe(),
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
    for o in &report.outages {
        out += &format!(
            "  outage after {}{} @{:.1}s: {:.2} s without a success (last ok @{:.2}s, first ok after @{:.2}s)\n",
            o.node
                .as_deref()
                .map(|n| format!("{n} "))
                .unwrap_or_default(),
            o.fault.split(": cut").next().unwrap_or_default(),
            o.at,
            o.secs,
            o.last_ok,
            o.first_ok
        );
    }
    for check in &report.checks {
        let verdict = &check.verdict;
        out += &format!(
            "  check {}: {} — {}\n",
            verdict.checker,
            check.mark(),
            verdict.summary
        );
        if !verdict.valid || verdict.checker == "availability" {
            for line in &verdict.evidence {
                out += &format!("      {line}\n");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A cas whose expected value did not match is the service's "no": counted as refused,
    /// with its reason, not as a failure.
    #[test]
    fn refused_operations_are_told_from_failures() {
        let op = |index: u64, process: u64, kind: OpType, error: Option<&str>, meta| Op {
            index,
            time: index as f64 * 0.1,
            process,
            kind,
            f: "cas".into(),
            key: Some("k".into()),
            value: json!([1, 2]),
            error: error.map(String::from),
            meta,
        };
        let history = vec![
            op(0, 1, OpType::Invoke, None, None),
            op(1, 2, OpType::Invoke, None, None),
            op(2, 3, OpType::Invoke, None, None),
            op(3, 4, OpType::Invoke, None, None),
            op(4, 1, OpType::Ok, None, None),
            op(
                5,
                2,
                OpType::Fail,
                Some("cas did not match"),
                Some(json!({"swapped": false})),
            ),
            op(6, 3, OpType::Fail, Some("unavailable"), None),
            op(7, 4, OpType::Info, Some("timeout"), None),
        ];
        let (counts, _) = measure(&history);
        assert_eq!(
            (
                counts.total,
                counts.ok,
                counts.refused,
                counts.fail,
                counts.info
            ),
            (4, 1, 1, 1, 1)
        );
        assert_eq!(
            counts.describe(),
            "ok 1, refused 1 (cas did not match), fail 1, info 1"
        );
    }
}
