//! The coordinator's decisions as a pure state machine: which worker runs which task, when a
//! worker has lost its tasks, which answers count, when a task is retried, re-run or given a
//! backup, when a job is done or failed. It owns no sockets, threads or clocks: the service
//! feeds it events (a heartbeat, a request for work, a completion, a failure, a tick) with the
//! time, and does what it answers. So every rule below is tested here, in microseconds, with
//! the exact interleavings that are hard to produce with real processes.
//!
//! The rules (MapReduce, Dean and Ghemawat 2004, section 3.3, and 6.5840's lab):
//! - **Leases.** A worker not heard from for `lease` has lost everything it was running: those
//!   tasks go back to idle. Its attempts are forgotten, so anything it says about them later is
//!   refused ([`Refusal::UnknownAttempt`]): a late answer never commits an output twice.
//! - **Lost map outputs.** A map task's output lives on its worker's disk until every reducer
//!   has fetched it. If that worker is lost while the job still has reduce work, the map is run
//!   again elsewhere; so is a map whose output a reducer reports it could not fetch.
//! - **Retries.** A failed attempt is retried after a backoff that doubles, up to
//!   `max_attempts`; then the job fails with the last error (which names the record), and the
//!   other jobs go on. A worker whose attempts fail `exclude_after` times in a row through its
//!   own fault ([`Blame::Worker`]: not a plugin failing on its data) gets no more tasks.
//! - **Speculation.** Near the end of a phase (no idle task left and `after_done` of its tasks
//!   done), a task that has run `slower` times longer than the phase's median gets a backup
//!   attempt on another worker; the first to finish commits, the other is told to cancel.
//! - **Locality.** A map task goes preferably to a worker that holds a copy of its split.
//! - **Checkpoints.** The whole state serializes; [`Scheduler::recover`] after a restart keeps
//!   every committed task and forgets every attempt, so nothing committed is run again and
//!   nothing in flight is trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub type JobId = u64;
pub type AttemptId = u64;
pub type WorkerId = String;

/// How the scheduler behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// A worker not heard from for this long has lost its tasks and its map outputs.
    pub lease: Duration,
    /// Attempts a task may make before its job fails.
    pub max_attempts: u32,
    /// The wait before the first retry of a failed task; it doubles with each failure.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A worker whose attempts failed this many times in a row is given no more tasks.
    pub exclude_after: u32,
    /// Backup attempts for stragglers; `None` turns them off.
    pub speculation: Option<Speculation>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(3),
            max_attempts: 4,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            exclude_after: 3,
            speculation: Some(Speculation::default()),
        }
    }
}

/// When a straggler gets a backup attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speculation {
    /// Only once this share of the phase's tasks is done (and none is waiting to start).
    pub after_done: f64,
    /// Only for an attempt running this many times longer than the phase's median task.
    pub slower: f64,
    /// And never before it has run this long.
    pub min_runtime: Duration,
}

impl Default for Speculation {
    fn default() -> Self {
        Self {
            after_done: 0.5,
            slower: 2.0,
            min_runtime: Duration::from_millis(500),
        }
    }
}

/// What a job asks for: its map tasks (one per input split, with the workers that hold a local
/// copy of each) and its number of reduce tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Per map task, the workers holding its split (empty: nobody in particular).
    pub holders: Vec<Vec<WorkerId>>,
    pub reduces: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Map,
    Reduce,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Map => "map",
            Phase::Reduce => "reduce",
        }
    }
}

/// One task of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId {
    pub job: JobId,
    pub phase: Phase,
    pub index: u32,
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job {} {} task {}",
            self.job,
            self.phase.name(),
            self.index
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for a worker, not before `not_before` (a retry's backoff).
    Idle { not_before: Duration },
    /// Attempts are running (see [`Task::running`]).
    Running,
    /// Committed by `attempt` of `worker`, after running `took`.
    Done {
        attempt: AttemptId,
        worker: WorkerId,
        took: Duration,
    },
    /// Out of attempts.
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub state: TaskState,
    /// The attempts running now (two when a backup runs).
    pub running: Vec<AttemptId>,
    /// Attempts made (started), failed ones included; lost ones (lease, restart) are not.
    pub attempts: u32,
    pub failures: u32,
    /// Times its committed output was lost (its worker died before the reducers fetched it) and
    /// it had to run again. Map tasks only.
    pub reruns: u32,
    pub last_error: Option<String>,
}

impl Task {
    fn new() -> Self {
        Self {
            state: TaskState::Idle {
                not_before: Duration::ZERO,
            },
            running: Vec::new(),
            attempts: 0,
            failures: 0,
            reruns: 0,
            last_error: None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, TaskState::Done { .. })
    }

    /// An attempt that ended without a verdict (its worker was lost, its reducer could not
    /// fetch): no failure of the task's, so it is not counted; the task waits for a worker
    /// again unless another attempt still runs it.
    fn forget(&mut self, attempt: AttemptId, now: Duration) {
        self.running.retain(|a| *a != attempt);
        self.attempts = self.attempts.saturating_sub(1);
        if self.running.is_empty() && !self.is_done() {
            self.state = TaskState::Idle { not_before: now };
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobState {
    Running,
    Done,
    Failed { error: String },
}

/// What happened to a job, for reports and the task board.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStats {
    /// Map tasks committed by a worker holding their split, and by one that did not.
    pub local_maps: u32,
    pub remote_maps: u32,
    pub backups_launched: u32,
    /// Tasks committed by their backup attempt.
    pub backups_won: u32,
    /// Map outputs lost with their worker (or unfetchable) and run again.
    pub lost_map_outputs: u32,
    /// Answers refused: from attempts whose lease had expired, or for tasks already committed.
    pub refused: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub spec: JobSpec,
    pub maps: Vec<Task>,
    pub reduces: Vec<Task>,
    pub state: JobState,
    pub submitted: Duration,
    pub finished: Option<Duration>,
    pub stats: JobStats,
}

impl Job {
    pub fn tasks(&self, phase: Phase) -> &[Task] {
        match phase {
            Phase::Map => &self.maps,
            Phase::Reduce => &self.reduces,
        }
    }

    fn tasks_mut(&mut self, phase: Phase) -> &mut Vec<Task> {
        match phase {
            Phase::Map => &mut self.maps,
            Phase::Reduce => &mut self.reduces,
        }
    }

    /// The phase the job is in: reduce once every map is committed.
    pub fn phase(&self) -> Phase {
        if self.maps.iter().all(Task::is_done) {
            Phase::Reduce
        } else {
            Phase::Map
        }
    }

    fn task_mut(&mut self, id: TaskId) -> &mut Task {
        &mut self.tasks_mut(id.phase)[id.index as usize]
    }

    /// Where each map's output is: the worker and attempt that committed it.
    pub fn map_outputs(&self) -> Vec<MapOutput> {
        self.maps
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.state {
                TaskState::Done {
                    worker, attempt, ..
                } => Some(MapOutput {
                    map: i as u32,
                    worker: worker.clone(),
                    attempt: *attempt,
                }),
                _ => None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub task: TaskId,
    pub worker: WorkerId,
    pub started: Duration,
    pub backup: bool,
    /// A map attempt on a worker holding its split.
    pub local: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    pub last_seen: Duration,
    /// False once its lease expired (until it is heard from again).
    pub alive: bool,
    pub consecutive_failures: u32,
    pub excluded: bool,
}

/// A worker whose lease expired, and what it took with it.
#[derive(Debug, Clone, PartialEq)]
pub struct LostWorker {
    pub worker: WorkerId,
    /// The attempts it was running, now forgotten.
    pub attempts: Vec<(AttemptId, TaskId)>,
    /// Committed map outputs on its disk that must be computed again.
    pub map_outputs: u32,
}

/// A task handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub attempt: AttemptId,
    pub task: TaskId,
    pub backup: bool,
    /// For a reduce task: where every map's output is.
    pub map_outputs: Vec<MapOutput>,
}

/// A committed map task's output, on the disk of the worker whose attempt committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOutput {
    pub map: u32,
    pub worker: WorkerId,
    pub attempt: AttemptId,
}

/// The answer to a completion.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// This attempt's output is the task's: commit it. `job_done` when it was the last task.
    Committed { job_done: bool },
    /// It does not count: discard the output.
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No such attempt runs: its lease expired (its worker went silent), the coordinator
    /// restarted since, or it was cancelled.
    UnknownAttempt,
    /// Another attempt of the task committed first.
    AlreadyDone { by: AttemptId },
}

/// Whose fault a failed attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The task's own: the plugin trapped or ran out of budget on a record. Any worker would
    /// fail the same way, so it counts against the task's attempts, not against the worker.
    Task,
    /// The worker's: it could not read its input, write its output, or run at all. Counts
    /// towards excluding the worker too.
    Worker,
}

/// The answer to a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The task runs again, not before `after` from now (or another attempt of it still runs).
    Retry { after: Duration },
    /// Out of attempts: the job failed with this error.
    JobFailed { error: String },
    /// The attempt was not running (see [`Refusal::UnknownAttempt`]).
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    pub submitted: u64,
    pub done: u64,
    pub failed: u64,
    /// Committed map outputs lost (their worker died, or a reducer could not fetch them) and
    /// recomputed.
    #[serde(default)]
    pub lost_map_outputs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduler {
    pub config: Config,
    pub jobs: BTreeMap<JobId, Job>,
    pub workers: BTreeMap<WorkerId, Worker>,
    pub attempts: BTreeMap<AttemptId, Attempt>,
    /// Attempts each worker should stop (the losing twin of a backup, or the task of a job
    /// that failed), told on its next heartbeat.
    pub cancel: BTreeMap<WorkerId, Vec<AttemptId>>,
    /// Completions refused because their attempt was not running: a lease that had expired, an
    /// attempt from before a restart, or one already told to cancel.
    pub refused_unknown: u64,
    /// Jobs submitted, done and failed, retired ones included.
    #[serde(default)]
    pub counts: JobCounts,
    next_job: JobId,
    next_attempt: AttemptId,
}

impl Scheduler {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            jobs: BTreeMap::new(),
            workers: BTreeMap::new(),
            attempts: BTreeMap::new(),
            cancel: BTreeMap::new(),
            refused_unknown: 0,
            counts: JobCounts::default(),
            next_job: 1,
            next_attempt: 1,
        }
    }

    /// Queues a job. A job needs at least one map task and one reduce task.
    pub fn submit(&mut self, spec: JobSpec, now: Duration) -> Result<JobId, String> {
        if spec.reduces == 0 {
            return Err("a job needs at least one reduce task (R >= 1)".into());
        }
        if spec.holders.is_empty() {
            return Err("a job needs at least one map task: its input is empty".into());
        }
        let id = self.next_job;
        self.next_job += 1;
        self.counts.submitted += 1;
        self.jobs.insert(
            id,
            Job {
                id,
                maps: (0..spec.holders.len()).map(|_| Task::new()).collect(),
                reduces: (0..spec.reduces).map(|_| Task::new()).collect(),
                spec,
                state: JobState::Running,
                submitted: now,
                finished: None,
                stats: JobStats::default(),
            },
        );
        Ok(id)
    }

    /// A worker says it is alive. Returns the attempts it should cancel.
    pub fn heartbeat(&mut self, worker: &str, now: Duration) -> Vec<AttemptId> {
        self.seen(worker, now);
        self.cancel.remove(worker).unwrap_or_default()
    }

    /// Any word from a worker renews its lease (and registers a worker never seen before).
    fn seen(&mut self, worker: &str, now: Duration) {
        let entry = self.workers.entry(worker.to_string()).or_insert(Worker {
            last_seen: now,
            alive: true,
            consecutive_failures: 0,
            excluded: false,
        });
        entry.last_seen = now;
        entry.alive = true;
    }

    /// Work for `worker`, if there is any it may do: the oldest running job's idle tasks first
    /// (a map on a worker holding its split preferred), then a backup for a straggler.
    pub fn next_task(&mut self, worker: &str, now: Duration) -> Option<Assignment> {
        self.seen(worker, now);
        if self.workers.get(worker).is_some_and(|w| w.excluded) {
            return None;
        }
        let picked = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .find_map(|job| idle_task(job, worker, now).map(|task| (task, false)))
            .or_else(|| {
                self.jobs
                    .values()
                    .filter(|j| j.state == JobState::Running)
                    .find_map(|job| self.straggler(job, worker, now))
                    .map(|task| (task, true))
            });
        let (task, backup) = picked?;
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let local = task.phase == Phase::Map
            && self.jobs[&task.job].spec.holders[task.index as usize]
                .iter()
                .any(|h| h == worker);
        self.attempts.insert(
            attempt,
            Attempt {
                task,
                worker: worker.to_string(),
                started: now,
                backup,
                local,
            },
        );
        let job = self.jobs.get_mut(&task.job).expect("picked from the jobs");
        if backup {
            job.stats.backups_launched += 1;
        }
        let t = job.task_mut(task);
        t.state = TaskState::Running;
        t.running.push(attempt);
        t.attempts += 1;
        let map_outputs = match task.phase {
            Phase::Reduce => job.map_outputs(),
            Phase::Map => Vec::new(),
        };
        Some(Assignment {
            attempt,
            task,
            backup,
            map_outputs,
        })
    }

    /// The task `attempt` committed, if it did (and the job is still remembered): a
    /// completion retried after its answer was lost is recognised by it.
    pub fn committed_by(&self, attempt: AttemptId) -> Option<TaskId> {
        self.jobs.values().find_map(|job| {
            [Phase::Map, Phase::Reduce].into_iter().find_map(|phase| {
                job.tasks(phase)
                    .iter()
                    .position(
                        |t| matches!(t.state, TaskState::Done { attempt: a, .. } if a == attempt),
                    )
                    .map(|index| TaskId {
                        job: job.id,
                        phase,
                        index: index as u32,
                    })
            })
        })
    }

    /// A worker finished an attempt and has its output ready.
    pub fn completed(&mut self, attempt: AttemptId, now: Duration) -> Completion {
        let Some(done) = self.attempts.remove(&attempt) else {
            // Which job a forgotten attempt belonged to is forgotten with it: counted here.
            self.refused_unknown += 1;
            return Completion::Refused(Refusal::UnknownAttempt);
        };
        self.seen(&done.worker, now);
        if let Some(w) = self.workers.get_mut(&done.worker) {
            w.consecutive_failures = 0;
        }
        let job = self
            .jobs
            .get_mut(&done.task.job)
            .expect("attempts belong to jobs");
        let running = job.state == JobState::Running;
        let task = job.task_mut(done.task);
        task.running.retain(|a| *a != attempt);
        if let TaskState::Done { attempt: by, .. } = task.state {
            job.stats.refused += 1;
            return Completion::Refused(Refusal::AlreadyDone { by });
        }
        if !running {
            return Completion::Refused(Refusal::UnknownAttempt);
        }
        task.state = TaskState::Done {
            attempt,
            worker: done.worker.clone(),
            took: now.saturating_sub(done.started),
        };
        // The twin of a backup (or the original a backup beat) stops.
        let losers = std::mem::take(&mut task.running);
        if done.backup {
            job.stats.backups_won += 1;
        }
        if done.task.phase == Phase::Map {
            if done.local {
                job.stats.local_maps += 1;
            } else {
                job.stats.remote_maps += 1;
            }
        }
        let job_done = job.reduces.iter().all(Task::is_done);
        if job_done {
            job.state = JobState::Done;
            job.finished = Some(now);
            self.counts.done += 1;
        }
        for loser in losers {
            if let Some(a) = self.attempts.remove(&loser) {
                self.cancel.entry(a.worker).or_default().push(loser);
            }
        }
        Completion::Committed { job_done }
    }

    /// An attempt failed (the plugin trapped on a record, the input could not be read...).
    pub fn failed(
        &mut self,
        attempt: AttemptId,
        error: &str,
        blame: Blame,
        now: Duration,
    ) -> Failure {
        let Some(gone) = self.attempts.remove(&attempt) else {
            return Failure::Unknown;
        };
        let exclude_after = self.config.exclude_after;
        if let Some(w) = self.workers.get_mut(&gone.worker)
            && blame == Blame::Worker
        {
            w.consecutive_failures += 1;
            if w.consecutive_failures >= exclude_after {
                w.excluded = true;
            }
        }
        let (max_attempts, backoff, max_backoff) = (
            self.config.max_attempts,
            self.config.backoff,
            self.config.max_backoff,
        );
        let job = self
            .jobs
            .get_mut(&gone.task.job)
            .expect("attempts belong to jobs");
        let task = job.task_mut(gone.task);
        task.running.retain(|a| *a != attempt);
        task.failures += 1;
        task.last_error = Some(error.to_string());
        if !task.running.is_empty() || task.is_done() {
            return Failure::Retry {
                after: Duration::ZERO,
            };
        }
        if task.attempts >= max_attempts {
            let error = format!(
                "{} failed {} times; last: {error}",
                gone.task, task.failures
            );
            task.state = TaskState::Failed {
                error: error.clone(),
            };
            job.state = JobState::Failed {
                error: error.clone(),
            };
            job.finished = Some(now);
            self.counts.failed += 1;
            self.cancel_job(gone.task.job);
            return Failure::JobFailed { error };
        }
        let after = backoff
            .saturating_mul(1 << (task.failures.saturating_sub(1)).min(16))
            .min(max_backoff);
        task.state = TaskState::Idle {
            not_before: now + after,
        };
        Failure::Retry { after }
    }

    /// A reducer could not fetch map `map`'s output from the worker that committed it: the map
    /// runs again, and the reduce attempt is dropped (its task waits for the new output; this
    /// costs it no attempt, and the reducer no failure).
    pub fn fetch_failed(&mut self, attempt: AttemptId, map: u32, now: Duration) {
        let Some(reducer) = self.attempts.remove(&attempt) else {
            return;
        };
        let job = self
            .jobs
            .get_mut(&reducer.task.job)
            .expect("attempts belong to jobs");
        job.task_mut(reducer.task).forget(attempt, now);
        if let Some(lost) = job.maps.get_mut(map as usize)
            && lost.is_done()
        {
            lost.state = TaskState::Idle { not_before: now };
            lost.reruns += 1;
            job.stats.lost_map_outputs += 1;
            self.counts.lost_map_outputs += 1;
        }
    }

    /// Time passes: workers silent for longer than the lease lose their attempts, and their
    /// map outputs where a job still needs them.
    /// Returns the workers lost now, with what each took with it.
    pub fn tick(&mut self, now: Duration) -> Vec<LostWorker> {
        let lease = self.config.lease;
        let expired: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive && now.saturating_sub(w.last_seen) > lease)
            .map(|(id, _)| id.clone())
            .collect();
        expired
            .into_iter()
            .map(|worker| self.lose_worker(worker, now))
            .collect()
    }

    /// After a restart from a checkpoint: committed tasks stay committed; every attempt is
    /// forgotten (whatever ran before the restart is run again, and answers about it are
    /// refused); workers get a lease from now to come back; backoffs restart from now.
    pub fn recover(&mut self, now: Duration) {
        self.attempts.clear();
        self.cancel.clear();
        for worker in self.workers.values_mut() {
            worker.last_seen = now;
        }
        for job in self.jobs.values_mut() {
            for task in job.maps.iter_mut().chain(job.reduces.iter_mut()) {
                task.running.clear();
                match task.state {
                    TaskState::Running | TaskState::Idle { .. } => {
                        task.state = TaskState::Idle { not_before: now };
                    }
                    TaskState::Done { .. } | TaskState::Failed { .. } => {}
                }
            }
        }
    }

    /// Forgets the oldest finished jobs beyond the newest `keep` finished ones (their outputs
    /// stay where they were committed). Returns the ids forgotten.
    pub fn retire(&mut self, keep: usize) -> Vec<JobId> {
        let finished: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| j.state != JobState::Running)
            .map(|j| j.id)
            .collect();
        let old = &finished[..finished.len().saturating_sub(keep)];
        for id in old {
            self.jobs.remove(id);
            self.attempts.retain(|_, a| a.task.job != *id);
        }
        old.to_vec()
    }

    /// Whether every job submitted is over (done or failed).
    pub fn idle(&self) -> bool {
        self.jobs.values().all(|j| j.state != JobState::Running)
    }

    fn lose_worker(&mut self, worker: WorkerId, now: Duration) -> LostWorker {
        let mut lost_worker = LostWorker {
            worker,
            attempts: Vec::new(),
            map_outputs: 0,
        };
        let worker = lost_worker.worker.as_str();
        if let Some(w) = self.workers.get_mut(worker) {
            w.alive = false;
        }
        self.cancel.remove(worker);
        let lost: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.worker == worker)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let attempt = self.attempts.remove(&id).expect("listed above");
            let job = self
                .jobs
                .get_mut(&attempt.task.job)
                .expect("attempts belong to jobs");
            job.task_mut(attempt.task).forget(id, now);
            lost_worker.attempts.push((id, attempt.task));
        }
        for job in self.jobs.values_mut() {
            if job.state != JobState::Running || job.reduces.iter().all(Task::is_done) {
                continue;
            }
            for task in &mut job.maps {
                if matches!(&task.state, TaskState::Done { worker: w, .. } if w == worker) {
                    task.state = TaskState::Idle { not_before: now };
                    task.reruns += 1;
                    job.stats.lost_map_outputs += 1;
                    self.counts.lost_map_outputs += 1;
                    lost_worker.map_outputs += 1;
                }
            }
        }
        lost_worker
    }

    fn cancel_job(&mut self, job: JobId) {
        let running: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.task.job == job)
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            let attempt = self.attempts.remove(&id).expect("listed above");
            self.cancel.entry(attempt.worker).or_default().push(id);
        }
        if let Some(job) = self.jobs.get_mut(&job) {
            for task in job.maps.iter_mut().chain(job.reduces.iter_mut()) {
                task.running.clear();
            }
        }
    }

    /// A running task of `job`'s current phase that deserves a backup on `worker`: the phase
    /// is near its end, and the task has run much longer than the phase's median.
    fn straggler(&self, job: &Job, worker: &str, now: Duration) -> Option<TaskId> {
        let speculation = self.config.speculation.as_ref()?;
        let phase = job.phase();
        let tasks = job.tasks(phase);
        let done: Vec<Duration> = tasks
            .iter()
            .filter_map(|t| match t.state {
                TaskState::Done { took, .. } => Some(took),
                _ => None,
            })
            .collect();
        let waiting = tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Idle { .. }));
        if waiting
            || done.is_empty()
            || (done.len() as f64) < speculation.after_done * tasks.len() as f64
        {
            return None;
        }
        let median = median(done);
        let threshold = speculation
            .min_runtime
            .max(median.mul_f64(speculation.slower));
        tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.state == TaskState::Running && t.running.len() == 1)
            .filter_map(|(i, t)| {
                let attempt = &self.attempts[&t.running[0]];
                let ran = now.saturating_sub(attempt.started);
                (attempt.worker != worker && ran > threshold).then_some((i, ran))
            })
            .max_by_key(|(_, ran)| *ran)
            .map(|(i, _)| TaskId {
                job: job.id,
                phase,
                index: i as u32,
            })
    }
}

/// The job's first idle task of its current phase that may start now: for maps, one whose
/// split `worker` holds if there is one.
fn idle_task(job: &Job, worker: &str, now: Duration) -> Option<TaskId> {
    let phase = job.phase();
    let ready = |t: &Task| matches!(t.state, TaskState::Idle { not_before } if not_before <= now);
    let id = |i: usize| TaskId {
        job: job.id,
        phase,
        index: i as u32,
    };
    let tasks = job.tasks(phase);
    if phase == Phase::Map
        && let Some(i) = tasks
            .iter()
            .enumerate()
            .position(|(i, t)| ready(t) && job.spec.holders[i].iter().any(|h| h == worker))
    {
        return Some(id(i));
    }
    tasks.iter().position(ready).map(id)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (map, worker) of each map output.
    fn where_(outputs: &[MapOutput]) -> Vec<(u32, String)> {
        outputs.iter().map(|o| (o.map, o.worker.clone())).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> Config {
        Config {
            lease: ms(1000),
            max_attempts: 3,
            backoff: ms(100),
            max_backoff: ms(1000),
            exclude_after: 3,
            speculation: None,
        }
    }

    fn job(maps: usize, reduces: u32) -> JobSpec {
        JobSpec {
            holders: vec![Vec::new(); maps],
            reduces,
        }
    }

    /// Runs every task of every job on `worker`, one at a time, until there is no work.
    fn drain(s: &mut Scheduler, worker: &str, now: Duration) -> Vec<TaskId> {
        let mut ran = Vec::new();
        while let Some(a) = s.next_task(worker, now) {
            assert!(matches!(
                s.completed(a.attempt, now),
                Completion::Committed { .. }
            ));
            ran.push(a.task);
        }
        ran
    }

    #[test]
    fn each_task_runs_once_and_reduces_wait_for_every_map() {
        let mut s = Scheduler::new(config());
        let id = s.submit(job(2, 2), ms(0)).unwrap();
        let a = s.next_task("w1", ms(0)).unwrap();
        let b = s.next_task("w2", ms(0)).unwrap();
        assert_eq!((a.task.phase, b.task.phase), (Phase::Map, Phase::Map));
        assert_eq!(s.next_task("w3", ms(0)), None, "reduces wait for the maps");
        assert_eq!(
            s.completed(a.attempt, ms(10)),
            Completion::Committed { job_done: false }
        );
        assert_eq!(s.next_task("w3", ms(10)), None);
        s.completed(b.attempt, ms(20));
        let r = s.next_task("w3", ms(20)).unwrap();
        assert_eq!(r.task.phase, Phase::Reduce);
        assert_eq!(
            where_(&r.map_outputs),
            [(0, "w1".to_string()), (1, "w2".to_string())]
        );
        assert_eq!(r.map_outputs[0].attempt, a.attempt);
        let ran = drain(&mut s, "w1", ms(30));
        assert_eq!(ran.len(), 1);
        assert_eq!(
            s.completed(r.attempt, ms(40)),
            Completion::Committed { job_done: true }
        );
        let job = &s.jobs[&id];
        assert_eq!(job.state, JobState::Done);
        assert!(job.maps.iter().chain(&job.reduces).all(|t| t.attempts == 1));
        assert!(s.idle());
    }

    #[test]
    fn bad_jobs_are_refused_with_a_reason() {
        let mut s = Scheduler::new(config());
        assert!(s.submit(job(2, 0), ms(0)).unwrap_err().contains("R >= 1"));
        assert!(
            s.submit(job(0, 2), ms(0))
                .unwrap_err()
                .contains("input is empty")
        );
    }

    /// A worker that goes silent loses its task after the lease; another worker runs it; the
    /// silent one's late answer is refused, so the output is committed once.
    #[test]
    fn a_silent_worker_loses_its_task_and_its_late_answer_is_refused() {
        let mut s = Scheduler::new(config());
        let id = s.submit(job(1, 1), ms(0)).unwrap();
        let late = s.next_task("w1", ms(0)).unwrap();
        s.heartbeat("w2", ms(0));
        s.tick(ms(900));
        assert_eq!(s.next_task("w2", ms(900)), None, "w1 still holds it");
        s.heartbeat("w2", ms(1500));
        s.tick(ms(1500));
        let again = s.next_task("w2", ms(1500)).unwrap();
        assert_eq!(again.task, late.task);
        assert_eq!(
            s.completed(late.attempt, ms(1600)),
            Completion::Refused(Refusal::UnknownAttempt)
        );
        assert!(matches!(
            s.completed(again.attempt, ms(1700)),
            Completion::Committed { .. }
        ));
        assert_eq!(
            s.jobs[&id].maps[0].attempts, 1,
            "the lost attempt is not counted"
        );
        assert_eq!(s.refused_unknown, 1);
        // w1 comes back: it is alive again, with nothing of its old work.
        assert!(s.heartbeat("w1", ms(1800)).is_empty());
        assert!(s.workers["w1"].alive);
    }

    /// The real MapReduce lesson: a map's output lives on its worker. That worker dying before
    /// the reducers fetched it sends the map back to run elsewhere; the reducers then fetch from
    /// the new worker.
    #[test]
    fn a_map_output_lost_with_its_worker_is_run_again() {
        let mut s = Scheduler::new(config());
        let id = s.submit(job(2, 1), ms(0)).unwrap();
        let m0 = s.next_task("w1", ms(0)).unwrap();
        let m1 = s.next_task("w2", ms(0)).unwrap();
        s.completed(m0.attempt, ms(10));
        s.completed(m1.attempt, ms(10));
        s.heartbeat("w2", ms(1500));
        s.tick(ms(1500)); // w1 silent since 10 ms
        assert_eq!(s.jobs[&id].phase(), Phase::Map, "back to mapping");
        assert_eq!(s.jobs[&id].stats.lost_map_outputs, 1);
        let rerun = s.next_task("w2", ms(1500)).unwrap();
        assert_eq!(rerun.task, m0.task);
        s.completed(rerun.attempt, ms(1600));
        let r = s.next_task("w2", ms(1600)).unwrap();
        assert_eq!(
            where_(&r.map_outputs),
            [(0, "w2".to_string()), (1, "w2".to_string())]
        );
        assert_eq!(s.jobs[&id].maps[0].reruns, 1);
        // Once every reduce committed, losing a map worker costs nothing.
        s.completed(r.attempt, ms(1700));
        s.tick(ms(5000));
        assert_eq!(s.jobs[&id].state, JobState::Done);
        assert_eq!(s.jobs[&id].stats.lost_map_outputs, 1);
    }

    #[test]
    fn an_unfetchable_map_output_is_run_again_and_the_reducer_waits() {
        let mut s = Scheduler::new(config());
        let id = s.submit(job(1, 1), ms(0)).unwrap();
        let m = s.next_task("w1", ms(0)).unwrap();
        s.completed(m.attempt, ms(10));
        let r = s.next_task("w2", ms(10)).unwrap();
        s.fetch_failed(r.attempt, 0, ms(20));
        let rerun = s.next_task("w2", ms(20)).unwrap();
        assert_eq!(rerun.task.phase, Phase::Map, "the map first");
        s.completed(rerun.attempt, ms(30));
        let r2 = s.next_task("w1", ms(30)).unwrap();
        assert_eq!(r2.task, r.task);
        assert_eq!(where_(&r2.map_outputs), [(0, "w2".to_string())]);
        assert_eq!(r2.map_outputs[0].attempt, rerun.attempt);
        assert_eq!(
            s.jobs[&id].reduces[0].attempts, 1,
            "the fetch failure cost no attempt"
        );
        assert_eq!(s.workers["w2"].consecutive_failures, 0);
    }

    /// Failures are retried after a doubling backoff; out of attempts, the job fails with the
    /// last error, naming its task, and the next job still runs.
    #[test]
    fn failures_back_off_then_fail_the_job_and_other_jobs_go_on() {
        let mut s = Scheduler::new(Config {
            exclude_after: 10,
            ..config()
        });
        let bad = s.submit(job(1, 1), ms(0)).unwrap();
        let a1 = s.next_task("w1", ms(0)).unwrap();
        assert_eq!(
            s.failed(a1.attempt, "plugin trapped on record 7", Blame::Task, ms(0)),
            Failure::Retry { after: ms(100) }
        );
        assert_eq!(s.next_task("w1", ms(50)), None, "backing off");
        let a2 = s.next_task("w1", ms(100)).unwrap();
        assert_eq!(
            s.failed(
                a2.attempt,
                "plugin trapped on record 7",
                Blame::Task,
                ms(100)
            ),
            Failure::Retry { after: ms(200) }
        );
        let good = s.submit(job(1, 1), ms(150)).unwrap();
        let other = s.next_task("w2", ms(150)).unwrap();
        assert_eq!(other.task.job, good, "the other job runs meanwhile");
        let a3 = s.next_task("w1", ms(300)).unwrap();
        assert_eq!(a3.task.job, bad);
        let Failure::JobFailed { error } = s.failed(
            a3.attempt,
            "plugin trapped on record 7",
            Blame::Task,
            ms(300),
        ) else {
            panic!("out of attempts")
        };
        assert_eq!(
            error,
            "job 1 map task 0 failed 3 times; last: plugin trapped on record 7"
        );
        assert!(matches!(s.jobs[&bad].state, JobState::Failed { .. }));
        s.completed(other.attempt, ms(310));
        drain(&mut s, "w2", ms(320));
        assert_eq!(s.jobs[&good].state, JobState::Done);
    }

    #[test]
    fn a_worker_that_keeps_failing_is_excluded() {
        let mut s = Scheduler::new(Config {
            max_attempts: 10,
            backoff: Duration::ZERO,
            ..config()
        });
        s.submit(job(1, 1), ms(0)).unwrap();
        // A plugin failing on its data is not the worker's fault.
        for _ in 0..5 {
            let a = s.next_task("bad", ms(0)).unwrap();
            s.failed(a.attempt, "the plugin trapped", Blame::Task, ms(0));
        }
        assert!(!s.workers["bad"].excluded);
        for _ in 0..3 {
            let a = s.next_task("bad", ms(0)).unwrap();
            s.failed(a.attempt, "disk full", Blame::Worker, ms(0));
        }
        assert!(s.workers["bad"].excluded);
        assert_eq!(s.next_task("bad", ms(0)), None);
        let a = s.next_task("good", ms(0)).unwrap();
        assert!(matches!(
            s.completed(a.attempt, ms(1)),
            Completion::Committed { .. }
        ));
    }

    /// A straggler near the end of its phase gets a backup on another worker; the backup
    /// finishes first and commits; the original is told to cancel, and its answer is refused.
    #[test]
    fn a_straggler_gets_a_backup_and_the_first_to_finish_wins() {
        let mut s = Scheduler::new(Config {
            speculation: Some(Speculation {
                after_done: 0.5,
                slower: 2.0,
                min_runtime: ms(100),
            }),
            ..config()
        });
        let id = s.submit(job(4, 1), ms(0)).unwrap();
        let slow = s.next_task("slow", ms(0)).unwrap();
        for i in 0..3 {
            let a = s.next_task("fast", ms(i * 100)).unwrap();
            s.completed(a.attempt, ms(i * 100 + 100));
            s.heartbeat("slow", ms(i * 100 + 100));
        }
        // Median 100 ms: the straggler qualifies once it has run more than 200 ms.
        assert_eq!(s.next_task("fast", ms(150)), None, "not slow enough yet");
        let backup = s.next_task("fast", ms(400)).unwrap();
        assert!(backup.backup);
        assert_eq!(backup.task, slow.task);
        assert_eq!(s.next_task("fast", ms(400)), None, "one backup per task");
        assert_eq!(
            s.completed(backup.attempt, ms(450)),
            Completion::Committed { job_done: false }
        );
        assert_eq!(
            s.heartbeat("slow", ms(460)),
            [slow.attempt],
            "told to cancel"
        );
        assert_eq!(
            s.completed(slow.attempt, ms(470)),
            Completion::Refused(Refusal::UnknownAttempt)
        );
        let stats = &s.jobs[&id].stats;
        assert_eq!((stats.backups_launched, stats.backups_won), (1, 1));
    }

    #[test]
    fn without_speculation_a_straggler_is_waited_for() {
        let mut s = Scheduler::new(config());
        s.submit(job(2, 1), ms(0)).unwrap();
        let _slow = s.next_task("slow", ms(0)).unwrap();
        let a = s.next_task("fast", ms(0)).unwrap();
        s.completed(a.attempt, ms(10));
        s.heartbeat("slow", ms(900));
        assert_eq!(s.next_task("fast", ms(900)), None);
    }

    #[test]
    fn a_map_goes_to_a_worker_holding_its_split() {
        let mut s = Scheduler::new(config());
        let id = s
            .submit(
                JobSpec {
                    holders: vec![vec!["w1".into()], vec!["w2".into()], vec![]],
                    reduces: 1,
                },
                ms(0),
            )
            .unwrap();
        let a = s.next_task("w2", ms(0)).unwrap();
        assert_eq!(a.task.index, 1, "w2 holds split 1");
        let b = s.next_task("w2", ms(0)).unwrap();
        assert_eq!(b.task.index, 0, "nothing else local: the first idle one");
        let c = s.next_task("w1", ms(0)).unwrap();
        assert_eq!(c.task.index, 2);
        for x in [a, b, c] {
            s.completed(x.attempt, ms(5));
        }
        let stats = &s.jobs[&id].stats;
        assert_eq!((stats.local_maps, stats.remote_maps), (1, 2));
    }

    /// kill -9 the coordinator mid-job and restart it from its checkpoint: committed tasks are
    /// not run again, what was running is, attempt ids are never reused, and answers about
    /// attempts from before the restart are refused.
    #[test]
    fn a_restarted_coordinator_keeps_what_was_committed() {
        let mut s = Scheduler::new(config());
        let id = s.submit(job(3, 2), ms(0)).unwrap();
        let m0 = s.next_task("w1", ms(0)).unwrap();
        let m1 = s.next_task("w2", ms(0)).unwrap();
        s.completed(m0.attempt, ms(10));
        let checkpoint = serde_json::to_string(&s).unwrap();
        let mut s: Scheduler = serde_json::from_str(&checkpoint).unwrap();
        s.recover(ms(0));
        assert_eq!(
            s.completed(m1.attempt, ms(5)),
            Completion::Refused(Refusal::UnknownAttempt)
        );
        let mut ran = Vec::new();
        while let Some(a) = s.next_task("w2", ms(20)) {
            assert!(a.attempt > m1.attempt, "attempt ids go on");
            s.completed(a.attempt, ms(21));
            ran.push((a.task.phase, a.task.index));
        }
        assert_eq!(
            ran,
            [
                (Phase::Map, 1),
                (Phase::Map, 2),
                (Phase::Reduce, 0),
                (Phase::Reduce, 1)
            ],
            "map 0 was committed before the restart: not run again"
        );
        assert_eq!(s.jobs[&id].state, JobState::Done);
    }

    /// Jobs queue: the second starts its maps while the first waits for a straggler.
    #[test]
    fn a_waiting_job_does_not_hold_up_the_next() {
        let mut s = Scheduler::new(config());
        let first = s.submit(job(1, 1), ms(0)).unwrap();
        let second = s.submit(job(1, 1), ms(0)).unwrap();
        let a = s.next_task("w1", ms(0)).unwrap();
        assert_eq!(a.task.job, first);
        let b = s.next_task("w2", ms(0)).unwrap();
        assert_eq!(b.task.job, second);
    }
}
