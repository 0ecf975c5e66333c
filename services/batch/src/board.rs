//! The task board: what the coordinator's `/status` detail says about its jobs and workers.
//! The coordinator writes it ([`Board::of`]) and the lab's task board view, checks and
//! autoscaler read it, so it is defined once, here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::scheduler::{JobState, Phase, Scheduler, Task, TaskState};

/// Jobs the board shows at most (the newest).
pub const SHOWN_JOBS: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Board {
    /// The newest jobs, oldest first.
    pub jobs: Vec<JobBoard>,
    pub workers: Vec<WorkerBoard>,
    /// Tasks of running jobs waiting for a worker now (the autoscaler's queue depth).
    pub queued: u32,
    /// Jobs submitted, done and failed since the coordinator's state began.
    pub submitted: u64,
    pub done: u64,
    pub failed: u64,
    /// Completions refused because their attempt was not running (an expired lease, a
    /// cancelled twin, an attempt from before a restart).
    pub refused_late: u64,
    /// Map outputs lost and recomputed, since the state began.
    pub lost_map_outputs: u64,
    /// Per worker, the committed map outputs on its disk that no reducer has fetched yet (of
    /// jobs still mapping): what its death would cost.
    pub unfetched: BTreeMap<String, u32>,
    /// The phase of the oldest running job (`map`, `reduce`), or `idle`.
    pub phase: String,
    /// Workers heard from within their lease and not excluded.
    pub live_workers: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobBoard {
    pub id: u64,
    pub name: String,
    pub plugin: String,
    /// running, done or failed.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// map or reduce.
    pub phase: String,
    pub maps: Vec<Cell>,
    pub reduces: Vec<Cell>,
    pub elapsed_ms: u64,
    pub local_maps: u32,
    pub remote_maps: u32,
    pub backups_launched: u32,
    pub backups_won: u32,
    pub lost_map_outputs: u32,
    /// Bytes of input read by committed maps, fetched by committed reduces, and written by them.
    pub input_bytes: u64,
    pub shuffle_bytes: u64,
    pub output_bytes: u64,
    /// How long each committed task took, in milliseconds (maps, then reduces).
    pub map_runtimes_ms: Vec<u64>,
    pub reduce_runtimes_ms: Vec<u64>,
}

/// One task on the board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub state: CellState,
    /// The workers running it (two with a backup), or the one that committed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    /// Times its committed output was lost and it ran again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reruns: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellState {
    Idle,
    Running,
    /// Running twice: the original and a speculative backup.
    Backup,
    Done,
    Failed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerBoard {
    pub id: String,
    /// Since its last heartbeat or request.
    pub heartbeat_age_ms: u64,
    pub alive: bool,
    pub excluded: bool,
    /// The tasks it runs now (`job 3 map 4`).
    pub running: Vec<String>,
}

/// What the coordinator knows of a job beyond the scheduler: its name, plugin and byte counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobTotals {
    pub name: String,
    pub plugin: String,
    pub input_bytes: u64,
    pub shuffle_bytes: u64,
    pub output_bytes: u64,
}

impl Board {
    /// The board of `scheduler`'s state at `now`; `totals` adds names and byte counts;
    /// `committing` are the jobs whose last commits are decided but not yet in place (still
    /// shown running: their output is not complete).
    pub fn of(
        scheduler: &Scheduler,
        totals: &BTreeMap<u64, JobTotals>,
        committing: &std::collections::BTreeSet<u64>,
        now: Duration,
    ) -> Self {
        let skip = scheduler.jobs.len().saturating_sub(SHOWN_JOBS);
        let jobs = scheduler
            .jobs
            .values()
            .skip(skip)
            .map(|job| {
                let totals = totals.get(&job.id).cloned().unwrap_or_default();
                let cell = |task: &Task| cell(scheduler, task);
                let runtimes = |tasks: &[Task]| {
                    tasks
                        .iter()
                        .filter_map(|t| match t.state {
                            TaskState::Done { took, .. } => Some(took.as_millis() as u64),
                            _ => None,
                        })
                        .collect()
                };
                let (state, error) = shown_state(&job.state, committing.contains(&job.id));
                JobBoard {
                    id: job.id,
                    name: totals.name,
                    plugin: totals.plugin,
                    state: state.into(),
                    error,
                    phase: job.phase().name().into(),
                    maps: job.maps.iter().map(cell).collect(),
                    reduces: job.reduces.iter().map(cell).collect(),
                    elapsed_ms: job
                        .finished
                        .unwrap_or(now)
                        .saturating_sub(job.submitted)
                        .as_millis() as u64,
                    local_maps: job.stats.local_maps,
                    remote_maps: job.stats.remote_maps,
                    backups_launched: job.stats.backups_launched,
                    backups_won: job.stats.backups_won,
                    lost_map_outputs: job.stats.lost_map_outputs,
                    input_bytes: totals.input_bytes,
                    shuffle_bytes: totals.shuffle_bytes,
                    output_bytes: totals.output_bytes,
                    map_runtimes_ms: runtimes(&job.maps),
                    reduce_runtimes_ms: runtimes(&job.reduces),
                }
            })
            .collect();
        let workers = scheduler
            .workers
            .iter()
            .map(|(id, w)| WorkerBoard {
                id: id.clone(),
                heartbeat_age_ms: now.saturating_sub(w.last_seen).as_millis() as u64,
                alive: w.alive,
                excluded: w.excluded,
                running: scheduler
                    .attempts
                    .values()
                    .filter(|a| &a.worker == id)
                    .map(|a| a.task.to_string())
                    .collect(),
            })
            .collect();
        let queued = scheduler
            .jobs
            .values()
            .filter(|j| j.state == JobState::Running)
            .map(|j| {
                let phase = j.phase();
                let waiting = j
                    .tasks(phase)
                    .iter()
                    .filter(|t| matches!(t.state, TaskState::Idle { .. }))
                    .count();
                // A job in its map phase will also need its reduces done.
                let later = if phase == Phase::Map {
                    j.reduces.len()
                } else {
                    0
                };
                (waiting + later) as u32
            })
            .sum();
        let running = || {
            scheduler
                .jobs
                .values()
                .filter(|j| j.state == JobState::Running)
        };
        let mut unfetched = BTreeMap::new();
        for job in running().filter(|j| j.phase() == Phase::Map) {
            for task in &job.maps {
                if let TaskState::Done { worker, .. } = &task.state {
                    *unfetched.entry(worker.clone()).or_insert(0) += 1;
                }
            }
        }
        Self {
            jobs,
            workers,
            queued,
            lost_map_outputs: scheduler.counts.lost_map_outputs,
            live_workers: scheduler
                .workers
                .values()
                .filter(|w| w.alive && !w.excluded)
                .count() as u32,
            unfetched,
            phase: running().next().map_or("idle", |j| j.phase().name()).into(),
            submitted: scheduler.counts.submitted,
            done: scheduler.counts.done,
            failed: scheduler.counts.failed,
            refused_late: scheduler.refused_unknown,
        }
    }

    /// The job with this id, if the board shows it.
    pub fn job(&self, id: u64) -> Option<&JobBoard> {
        self.jobs.iter().find(|j| j.id == id)
    }
}

/// A job's state as clients see it (`running`, `done`, `failed`) and its error: a job whose
/// last commits are not in place yet (`committing`) still runs, its output is not complete.
pub fn shown_state(state: &JobState, committing: bool) -> (&'static str, Option<String>) {
    match state {
        JobState::Running => ("running", None),
        JobState::Done if committing => ("running", None),
        JobState::Done => ("done", None),
        JobState::Failed { error } => ("failed", Some(error.clone())),
    }
}

fn cell(scheduler: &Scheduler, task: &Task) -> Cell {
    let running: Vec<String> = task
        .running
        .iter()
        .filter_map(|a| scheduler.attempts.get(a).map(|a| a.worker.clone()))
        .collect();
    let (state, workers) = match &task.state {
        TaskState::Idle { .. } => (CellState::Idle, Vec::new()),
        TaskState::Running if running.len() > 1 => (CellState::Backup, running),
        TaskState::Running => (CellState::Running, running),
        TaskState::Done { worker, .. } => (CellState::Done, vec![worker.clone()]),
        TaskState::Failed { .. } => (CellState::Failed, Vec::new()),
    };
    Cell {
        state,
        workers,
        reruns: task.reruns,
        failures: task.failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{Config, JobSpec};

    #[test]
    fn the_board_shows_tasks_workers_and_the_queue() {
        let mut s = Scheduler::new(Config::default());
        let ms = Duration::from_millis;
        let id = s
            .submit(
                JobSpec {
                    holders: vec![vec![], vec![]],
                    reduces: 1,
                },
                ms(0),
            )
            .unwrap();
        let a = s.next_task("w1", ms(0)).unwrap();
        s.completed(a.attempt, ms(40));
        s.next_task("w2", ms(50)).unwrap();
        let totals = BTreeMap::from([(
            id,
            JobTotals {
                name: "count".into(),
                plugin: "wordcount".into(),
                ..JobTotals::default()
            },
        )]);
        let board = Board::of(&s, &totals, &Default::default(), ms(100));
        let job = board.job(id).unwrap();
        assert_eq!(job.name, "count");
        assert_eq!(job.phase, "map");
        assert_eq!(job.maps[0].state, CellState::Done);
        assert_eq!(job.maps[0].workers, ["w1"]);
        assert_eq!(job.maps[1].state, CellState::Running);
        assert_eq!(job.map_runtimes_ms, [40]);
        assert_eq!(board.queued, 1, "the reduce still to come");
        assert_eq!(board.workers[1].running, ["job 1 map task 1"]);
        assert_eq!(board.workers[0].heartbeat_age_ms, 60);
        assert_eq!(board.unfetched["w1"], 1);
        assert_eq!(board.phase, "map");
        let json = serde_json::to_string(&board).unwrap();
        assert_eq!(serde_json::from_str::<Board>(&json).unwrap(), board);
    }
}
