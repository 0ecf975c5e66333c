//! The coordinator: the [`Scheduler`]'s decisions made real. It plans submitted jobs (splits,
//! partitioner, plugin checked), commits reduce output by renaming it into place, keeps its
//! whole state in a checkpoint file so a restart resumes every job, and logs what it decided
//! as JSON events (the lab's timeline and checks read them).
//!
//! [`Coordinator`] is the state and its rules, without sockets or async: one method per
//! request, given the time. [`service`] puts it behind gRPC, with a lock, long-polling for
//! work, and a background writer for the checkpoint.
//!
//! On disk (`--data-dir`): `coordinator.json` (the checkpoint, replaced atomically) and
//! `plugins/<digest>.wasm` (each job's plugin as submitted). A job's output directory gets
//! `_temporary/attempt-A/part-r-N` from reduce attempts, `part-r-N` once one commits, and
//! `_SUCCESS` when the job is done.

pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::board::{Board, JobTotals};
use crate::local::{JobDef, output_name, prepare};
use crate::partition::Ranges;
use crate::plugin::Plugin;
use crate::scheduler::{
    AttemptId, Blame, Completion, Config, Failure, JobId, JobSpec, JobState, Phase, Refusal,
    Scheduler, TaskId, TaskState,
};
use crate::split::Split;
use crate::task::Partitioner;

/// Finished jobs the coordinator remembers (older ones are forgotten; their output stays).
pub const KEEP_FINISHED: usize = 50;

/// A job as the coordinator planned it at submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPlan {
    pub def: JobDef,
    pub name: String,
    pub output: PathBuf,
    pub splits: Vec<Split>,
    pub partitioner: Partitioner,
    /// The plugin's file under `plugins/`.
    pub plugin_file: String,
    pub totals: JobTotals,
    /// The client's id for the submission (a retry with it gets this job back).
    #[serde(default)]
    pub request_id: String,
}

/// A job submission, checked.
#[derive(Debug, Clone)]
pub struct Submission {
    pub def: JobDef,
    pub name: String,
    pub output: PathBuf,
    pub request_id: String,
}

/// Everything the coordinator must not forget across a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub scheduler: Scheduler,
    pub plans: BTreeMap<JobId, JobPlan>,
    /// Reduce commits decided but not yet applied (renamed into place): applied once the
    /// decision is in a checkpoint, and again after a restart if the rename may not have
    /// happened. So an output appears only when its commit is durable, and a crash between
    /// the decision and the rename finishes the rename rather than running the task again.
    #[serde(default)]
    pub pending: Vec<PendingCommit>,
}

/// A reduce attempt's output to rename into place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCommit {
    pub task: TaskId,
    pub attempt: AttemptId,
    pub worker: String,
    pub backup: bool,
    pub took: Duration,
    pub records: u64,
    pub temporary: PathBuf,
    pub output: PathBuf,
}

/// A task for a worker, with everything it needs to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub attempt: AttemptId,
    pub task: TaskId,
    pub backup: bool,
    pub plan: JobPlan,
    pub map_outputs: Vec<crate::scheduler::MapOutput>,
    /// Reduce: where the attempt writes its output.
    pub output_path: Option<PathBuf>,
}

/// What a worker reports with a finished attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    pub records: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub shuffle_bytes: u64,
}

pub struct Coordinator {
    pub state: State,
    data_dir: Option<PathBuf>,
    /// The input files each worker holds a local copy of (by file name), from its heartbeats.
    local_files: BTreeMap<String, BTreeSet<String>>,
}

impl Coordinator {
    /// A coordinator with `config`, resuming from the checkpoint in `data_dir` if there is one
    /// (its configuration replaced by `config`). A checkpoint that cannot be read is an error
    /// naming it: the coordinator never starts over on top of one.
    pub fn open(config: Config, data_dir: Option<PathBuf>, now: Duration) -> anyhow::Result<Self> {
        let mut state = State {
            scheduler: Scheduler::new(config.clone()),
            plans: BTreeMap::new(),
            pending: Vec::new(),
        };
        if let Some(dir) = &data_dir {
            let path = checkpoint_path(dir);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    state = serde_json::from_slice(&bytes).map_err(|e| {
                        distlab_runtime::BadInput::new(format!(
                            "{}: not a coordinator checkpoint ({e}); move it away to start empty",
                            path.display()
                        ))
                    })?;
                    state.scheduler.config = config;
                    state.scheduler.recover(now);
                    let running = state
                        .scheduler
                        .jobs
                        .values()
                        .filter(|j| j.state == JobState::Running)
                        .count();
                    tracing::info!(
                        event = "coordinator_recovered",
                        jobs = state.scheduler.jobs.len(),
                        running,
                        "resumed from {}",
                        path.display()
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(anyhow::anyhow!("reading {}: {e}", path.display()));
                }
            }
        }
        let mut coordinator = Self {
            state,
            data_dir,
            local_files: BTreeMap::new(),
        };
        // Commits decided before the restart: finish them.
        let pending = coordinator.state.pending.clone();
        coordinator.apply(&pending);
        Ok(coordinator)
    }

    /// Checks a job and plans it: the input is split and the plugin compiled (and, for range
    /// partitioning, sampled). Slow (it compiles and reads): done outside the state's lock;
    /// [`Coordinator::submit`] then queues the plan.
    pub fn plan(
        submission: Submission,
        data_dir: Option<&Path>,
        workers_files: &BTreeMap<String, BTreeSet<String>>,
    ) -> Result<(JobPlan, JobSpec), String> {
        let Submission {
            def,
            name,
            output,
            request_id,
        } = submission;
        if !def.input.is_absolute() {
            return Err(format!(
                "input {}: give an absolute path (the workers run elsewhere)",
                def.input.display()
            ));
        }
        if !output.is_absolute() {
            return Err(format!(
                "output {}: give an absolute path (the workers run elsewhere)",
                output.display()
            ));
        }
        match std::fs::read_dir(&output) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(format!(
                        "output {} is not empty: a job never writes over earlier output",
                        output.display()
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("output {}: {e}", output.display())),
        }
        let bytes = crate::plugin::resolve(&def.plugin).map_err(|e| e.to_string())?;
        let plugin = Plugin::load(&bytes).map_err(|e| format!("plugin {}: {e}", def.plugin))?;
        let (splits, partitioner) = prepare(&def, &plugin)?;
        std::fs::create_dir_all(&output)
            .map_err(|e| format!("output {}: {e}", output.display()))?;
        let plugin_file = format!(
            "{:016x}.wasm",
            distlab_runtime::hash::fnv1a(bytes.iter().copied())
        );
        if let Some(dir) = data_dir {
            let plugins = dir.join("plugins");
            let path = plugins.join(&plugin_file);
            if !path.exists() {
                std::fs::create_dir_all(&plugins)
                    .and_then(|()| write_atomically(&path, &bytes))
                    .map_err(|e| format!("saving the plugin to {}: {e}", path.display()))?;
            }
        }
        let holders = splits
            .iter()
            .map(|split| {
                let file = file_name(&split.path);
                workers_files
                    .iter()
                    .filter(|(_, files)| files.contains(&file))
                    .map(|(w, _)| w.clone())
                    .collect()
            })
            .collect();
        let input_bytes = splits.iter().map(|s| s.end - s.start).sum();
        let spec = JobSpec {
            holders,
            reduces: def.reduces,
        };
        let plan = JobPlan {
            totals: JobTotals {
                name: name.clone(),
                plugin: def.plugin.clone(),
                input_bytes,
                ..JobTotals::default()
            },
            def,
            name,
            output,
            splits,
            partitioner,
            plugin_file,
            request_id,
        };
        Ok((plan, spec))
    }

    /// The job an earlier submission with `request_id` queued, if any.
    pub fn submitted_as(&self, request_id: &str) -> Option<(JobId, &JobPlan)> {
        if request_id.is_empty() {
            return None;
        }
        self.state
            .plans
            .iter()
            .find(|(_, p)| p.request_id == request_id)
            .map(|(id, p)| (*id, p))
    }

    /// Queues a planned job.
    pub fn submit(&mut self, plan: JobPlan, spec: JobSpec, now: Duration) -> Result<JobId, String> {
        if let Some(other) = self.state.plans.iter().find(|(id, p)| {
            p.output == plan.output
                && self
                    .state
                    .scheduler
                    .jobs
                    .get(id)
                    .is_some_and(|j| j.state == JobState::Running)
        }) {
            return Err(format!(
                "output {} is job {}'s, which is still running",
                plan.output.display(),
                other.0
            ));
        }
        let maps = spec.holders.len();
        let id = self.state.scheduler.submit(spec, now)?;
        tracing::info!(
            event = "job_submitted",
            job = id,
            name = %plan.name,
            plugin = %plan.def.plugin,
            maps,
            reduces = plan.def.reduces,
            "job {id} ({}) queued: {maps} maps, {} reduces",
            plan.name,
            plan.def.reduces
        );
        self.state.plans.insert(id, plan);
        for old in self.state.scheduler.retire(KEEP_FINISHED) {
            self.state.plans.remove(&old);
        }
        Ok(id)
    }

    /// A worker's heartbeat: the attempts it must stop and the jobs still running.
    pub fn heartbeat(
        &mut self,
        worker: &str,
        local_files: Vec<String>,
        now: Duration,
    ) -> (Vec<AttemptId>, Vec<JobId>) {
        let came_back = self
            .state
            .scheduler
            .workers
            .get(worker)
            .is_some_and(|w| !w.alive);
        let cancel = self.state.scheduler.heartbeat(worker, now);
        if came_back {
            tracing::info!(event = "worker_back", worker, "worker {worker} is back");
        }
        self.local_files
            .insert(worker.to_string(), local_files.into_iter().collect());
        let active = self
            .state
            .scheduler
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .map(|j| j.id)
            .collect();
        (cancel, active)
    }

    /// Work for `worker`, if any.
    pub fn next_task(&mut self, worker: &str, now: Duration) -> Option<Work> {
        let assignment = self.state.scheduler.next_task(worker, now)?;
        let plan = self.state.plans[&assignment.task.job].clone();
        if assignment.backup {
            tracing::info!(
                event = "backup_launched",
                job = assignment.task.job,
                phase = assignment.task.phase.name(),
                task = assignment.task.index,
                attempt = assignment.attempt,
                worker,
                "{} is a straggler: backup attempt {} on {worker}",
                assignment.task,
                assignment.attempt
            );
        }
        let output_path = (assignment.task.phase == Phase::Reduce)
            .then(|| temporary_output(&plan.output, assignment.attempt, assignment.task.index));
        Some(Work {
            attempt: assignment.attempt,
            task: assignment.task,
            backup: assignment.backup,
            plan,
            map_outputs: assignment.map_outputs,
            output_path,
        })
    }

    /// An attempt finished. A reduce attempt's output is renamed into place if it counts, and
    /// removed if it does not. Returns whether it counts, and why not.
    pub fn complete(
        &mut self,
        attempt: AttemptId,
        worker: &str,
        outcome: Outcome,
        now: Duration,
    ) -> Result<(), Refusal> {
        let running = self.state.scheduler.attempts.get(&attempt).cloned();
        if running.is_none() && self.state.scheduler.committed_by(attempt).is_some() {
            // A retry of a completion that counted (its answer was lost): it still counts, and
            // nothing happens twice.
            return Ok(());
        }
        if let Some(a) = &running
            && a.worker != worker
        {
            // A worker reporting another's attempt: a bug or a confused restart. Not counted.
            tracing::warn!(attempt, worker, owner = %a.worker, "completion from the wrong worker");
            return Err(Refusal::UnknownAttempt);
        }
        let temporary = running.as_ref().and_then(|a| {
            (a.task.phase == Phase::Reduce).then(|| {
                let plan = &self.state.plans[&a.task.job];
                (
                    temporary_output(&plan.output, attempt, a.task.index),
                    plan.output.join(output_name(a.task.index)),
                )
            })
        });
        if let Some((temporary, _)) = &temporary
            && !temporary.exists()
        {
            let error = format!(
                "the attempt reported success but its output {} is missing",
                temporary.display()
            );
            self.fail(attempt, worker, &error, Blame::Worker, now);
            return Err(Refusal::UnknownAttempt);
        }
        match self.state.scheduler.completed(attempt, now) {
            Completion::Committed { .. } => {
                let a = running.expect("a committed attempt was running");
                let took = now.saturating_sub(a.started);
                let plan = self
                    .state
                    .plans
                    .get_mut(&a.task.job)
                    .expect("plans for jobs");
                match temporary {
                    Some((temporary, output)) => {
                        plan.totals.shuffle_bytes += outcome.shuffle_bytes;
                        plan.totals.output_bytes += outcome.output_bytes;
                        self.state.pending.push(PendingCommit {
                            task: a.task,
                            attempt,
                            worker: worker.to_string(),
                            backup: a.backup,
                            took,
                            records: outcome.records,
                            temporary,
                            output,
                        });
                    }
                    None => log_commit(a.task, attempt, worker, a.backup, took, outcome.records),
                }
                Ok(())
            }
            Completion::Refused(refusal) => {
                if let Some((temporary, _)) = &temporary {
                    let _ = std::fs::remove_dir_all(temporary.parent().expect("in a directory"));
                }
                let why = match &refusal {
                    Refusal::UnknownAttempt => {
                        "not running (lease expired, cancelled, or from before a restart)"
                            .to_string()
                    }
                    Refusal::AlreadyDone { by } => format!("attempt {by} committed first"),
                };
                tracing::info!(
                    event = "completion_refused",
                    attempt,
                    worker,
                    reason = %why,
                    "attempt {attempt} from {worker} refused: {why}"
                );
                Err(refusal)
            }
        }
    }

    /// Applies reduce commits whose decision is durable: renames each output into place (unless
    /// an earlier life already did), logs the commit, and finishes the jobs they completed
    /// (`_SUCCESS`, `_temporary` removed).
    pub fn apply(&mut self, commits: &[PendingCommit]) {
        let mut jobs = BTreeSet::new();
        for commit in commits {
            if !self.state.pending.contains(commit) {
                continue;
            }
            self.state.pending.retain(|p| p != commit);
            if commit.temporary.exists() {
                if let Err(e) = std::fs::rename(&commit.temporary, &commit.output) {
                    tracing::error!(
                        attempt = commit.attempt,
                        "committing {} as {}: {e}",
                        commit.temporary.display(),
                        commit.output.display()
                    );
                    continue;
                }
                log_commit(
                    commit.task,
                    commit.attempt,
                    &commit.worker,
                    commit.backup,
                    commit.took,
                    commit.records,
                );
            }
            jobs.insert(commit.task.job);
        }
        for id in jobs {
            let waiting = self.state.pending.iter().any(|p| p.task.job == id);
            let Some(job) = self.state.scheduler.jobs.get(&id) else {
                continue;
            };
            if waiting || job.state != JobState::Done {
                continue;
            }
            let plan = &self.state.plans[&id];
            let output = &plan.output;
            let _ = std::fs::remove_dir_all(output.join("_temporary"));
            if let Err(e) = std::fs::write(output.join("_SUCCESS"), b"") {
                tracing::error!("writing {}: {e}", output.join("_SUCCESS").display());
            }
            tracing::info!(
                event = "job_done",
                job = id,
                name = %plan.name,
                elapsed_ms = job
                    .finished
                    .unwrap_or_default()
                    .saturating_sub(job.submitted)
                    .as_millis() as u64,
                backups_launched = job.stats.backups_launched,
                backups_won = job.stats.backups_won,
                lost_map_outputs = job.stats.lost_map_outputs,
                local_maps = job.stats.local_maps,
                remote_maps = job.stats.remote_maps,
                output = %output.display(),
                "job {id} ({}) done",
                plan.name
            );
        }
    }

    /// Applies every pending commit at once (a coordinator without a checkpoint, and tests).
    pub fn apply_all(&mut self) {
        let pending = self.state.pending.clone();
        self.apply(&pending);
    }

    /// An attempt failed.
    pub fn fail(
        &mut self,
        attempt: AttemptId,
        worker: &str,
        error: &str,
        blame: Blame,
        now: Duration,
    ) -> Failure {
        let task = self.state.scheduler.attempts.get(&attempt).map(|a| a.task);
        let failure = self.state.scheduler.failed(attempt, error, blame, now);
        if let Some(task) = task {
            if let Some(plan) = self.state.plans.get(&task.job) {
                let _ = std::fs::remove_dir_all(
                    temporary_output(&plan.output, attempt, task.index)
                        .parent()
                        .expect("in a directory"),
                );
            }
            tracing::warn!(
                event = "task_failed",
                job = task.job,
                phase = task.phase.name(),
                task = task.index,
                attempt,
                worker,
                error,
                "{task} failed on {worker}: {error}"
            );
            if let Failure::JobFailed { error } = &failure {
                tracing::error!(event = "job_failed", job = task.job, error = %error, "job {} failed: {error}", task.job);
            }
            if self
                .state
                .scheduler
                .workers
                .get(worker)
                .is_some_and(|w| w.excluded)
                && blame == Blame::Worker
            {
                tracing::warn!(
                    event = "worker_excluded",
                    worker,
                    "{worker} failed too often and gets no more tasks"
                );
            }
        }
        failure
    }

    /// A reducer could not fetch map `map`'s output.
    pub fn fetch_failed(
        &mut self,
        attempt: AttemptId,
        worker: &str,
        map: u32,
        error: &str,
        now: Duration,
    ) {
        let Some(task) = self.state.scheduler.attempts.get(&attempt).map(|a| a.task) else {
            return;
        };
        tracing::warn!(
            event = "map_output_lost",
            job = task.job,
            map,
            attempt,
            worker,
            error,
            "{task} on {worker} could not fetch map {map}'s output ({error}): the map runs again"
        );
        self.state.scheduler.fetch_failed(attempt, map, now);
    }

    /// Time passes: silent workers lose their attempts (logged). Whether anything changed.
    pub fn tick(&mut self, now: Duration) -> bool {
        let lost = self.state.scheduler.tick(now);
        for gone in &lost {
            let attempts: Vec<String> = gone
                .attempts
                .iter()
                .map(|(id, task)| format!("{id} ({task})"))
                .collect();
            tracing::warn!(
                event = "worker_lost",
                worker = %gone.worker,
                attempts = %attempts.join(", "),
                "{} missed its lease: {} attempts forgotten",
                gone.worker,
                attempts.len()
            );
            if gone.map_outputs > 0 {
                tracing::warn!(
                    event = "map_outputs_lost",
                    worker = %gone.worker,
                    reruns = gone.map_outputs,
                    "map outputs on {} will be recomputed",
                    gone.worker
                );
            }
        }
        !lost.is_empty()
    }

    /// The board for `/status`.
    pub fn board(&self, now: Duration) -> Board {
        let totals = self
            .state
            .plans
            .iter()
            .map(|(id, p)| (*id, p.totals.clone()))
            .collect();
        Board::of(&self.state.scheduler, &totals, &self.committing(), now)
    }

    /// The jobs with commits decided but not yet in place: not done for their clients yet.
    pub fn committing(&self) -> BTreeSet<JobId> {
        self.state.pending.iter().map(|p| p.task.job).collect()
    }

    /// The plugin bytes of job `job`.
    pub fn plugin(&self, job: JobId) -> Result<Vec<u8>, String> {
        let plan = self
            .state
            .plans
            .get(&job)
            .ok_or_else(|| format!("job {job} is not known"))?;
        match &self.data_dir {
            Some(dir) => {
                let path = dir.join("plugins").join(&plan.plugin_file);
                std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
            }
            None => crate::plugin::resolve(&plan.def.plugin).map_err(|e| e.to_string()),
        }
    }

    pub fn local_files(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.local_files
    }

    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Whether a job is over.
    pub fn job_state(&self, job: JobId) -> Option<&JobState> {
        self.state.scheduler.jobs.get(&job).map(|j| &j.state)
    }

    /// The task states of a job, for tests.
    pub fn task_states(&self, job: JobId, phase: Phase) -> Vec<TaskState> {
        self.state.scheduler.jobs[&job]
            .tasks(phase)
            .iter()
            .map(|t| t.state.clone())
            .collect()
    }
}

fn log_commit(
    task: TaskId,
    attempt: AttemptId,
    worker: &str,
    backup: bool,
    took: Duration,
    records: u64,
) {
    tracing::info!(
        event = "task_committed",
        job = task.job,
        phase = task.phase.name(),
        task = task.index,
        attempt,
        worker,
        backup,
        took_ms = took.as_millis() as u64,
        records,
        "{task} committed by attempt {attempt} on {worker}"
    );
}

/// Where the checkpoint lives in a data dir.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("coordinator.json")
}

/// Where a reduce attempt writes its output before it commits.
pub fn temporary_output(output: &Path, attempt: AttemptId, reduce: u32) -> PathBuf {
    output
        .join("_temporary")
        .join(format!("attempt-{attempt}"))
        .join(output_name(reduce))
}

/// A path's last component, as heartbeats name local files.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a
/// temporary file beside it, synced, renamed over it, and the directory synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Range split points as the wire carries them.
pub fn bounds_of(partitioner: &Partitioner) -> Option<&[Vec<u8>]> {
    match partitioner {
        Partitioner::Hash => None,
        Partitioner::Ranges(r) => Some(r.bounds()),
    }
}

/// A partitioner from the wire.
pub fn partitioner_from(range: bool, bounds: Vec<Vec<u8>>) -> Result<Partitioner, String> {
    if range {
        Ok(Partitioner::Ranges(Ranges::from_bounds(bounds)?))
    } else {
        Ok(Partitioner::Hash)
    }
}

#[cfg(test)]
mod tests;
