//! A worker: asks the coordinator for a task, runs it, reports, and again. Beside that loop it
//! heartbeats (the answer says which attempts to stop, and which jobs still run so old map
//! output can go) and serves its map outputs to reducers ([`shuffle`]).
//!
//! - A map attempt reads its split (from this worker's local copy of the file when it holds
//!   one: `--local-input`), runs the plugin over every record and writes sorted runs under
//!   `maps/`. They stay there after the attempt commits, until the job is over.
//! - A reduce attempt fetches its partition's run from every map's worker (its own disk for
//!   its own maps), merges and reduces them into the file the coordinator named, which the
//!   coordinator renames into place if the attempt counts. A run it cannot fetch is reported
//!   (`FetchFailed`): the map runs again and the reduce is handed out anew.
//! - `--slow F` makes every task take F times as long (a straggler for the scenarios).
//!
//! Plugins run on a blocking thread with their limits, so a plugin that loops or traps fails
//! its attempt and nothing else.

pub mod shuffle;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlab_proto::batch::v1 as pb;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::channel::{TracedChannel, endpoint};
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::clock::Every;
use distlab_runtime::node::Node;
use distlab_runtime::telemetry::PropagateTrace;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::coordinator::{file_name, partitioner_from};
use crate::plugin::{Limits, Plugin};
use crate::scheduler::{AttemptId, JobId};
use crate::split::Split;
use crate::task::{TaskError, run_map, run_path, run_reduce};
use shuffle::{ShuffleApi, map_dir};

type CoordinatorClient = pb::coordinator_client::CoordinatorClient<TracedChannel>;
type ShuffleClient = pb::shuffle_client::ShuffleClient<TracedChannel>;

/// Where a worker looks for local copies of input files without `--local-input` (in its data
/// dir; the lab puts them there).
pub const LOCAL_INPUT: &str = "local-input";

/// Plugin modules up to this size cross the wire.
const MAX_MESSAGE: usize = 64 << 20;

/// What a worker needs besides the node contract.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator's address (a `--peer`, through the lab's link proxy).
    pub coordinator: SocketAddr,
    pub heartbeat: Duration,
    /// Every task takes this many times as long (1: normal).
    pub slow: f64,
    /// A directory of local copies of input files (default: [`LOCAL_INPUT`] in the data dir).
    pub local_input: Option<PathBuf>,
    pub limits: Limits,
}

/// Counters for `/status`.
#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    fetch_failures: AtomicU64,
    fetched_bytes: AtomicU64,
}

struct Running {
    label: String,
    started: Instant,
    backup: bool,
    stop: Arc<AtomicBool>,
}

struct Worker {
    id: String,
    dir: PathBuf,
    config: WorkerConfig,
    coordinator: CoordinatorClient,
    peers: BTreeMap<String, ShuffleClient>,
    /// The local copies of input files (name -> path), rescanned every 2 s (the lab places
    /// them while the worker runs).
    local_files: Mutex<BTreeMap<String, PathBuf>>,
    running: Mutex<BTreeMap<AttemptId, Running>>,
    plugins: Mutex<BTreeMap<JobId, Plugin>>,
    counters: Counters,
    /// When the coordinator last answered.
    last_contact: Mutex<Option<Instant>>,
}

/// The end of an attempt, as reported.
enum Ended {
    Done(pb::CompleteRequest),
    Failed { error: String, task_fault: bool },
    FetchFailed { map: u32, error: String },
    Cancelled,
}

impl Worker {
    fn stop_flag(&self, attempt: AttemptId) -> Arc<AtomicBool> {
        self.running.lock().unwrap()[&attempt].stop.clone()
    }

    async fn plugin(&self, job: JobId) -> Result<Plugin, String> {
        if let Some(p) = self.plugins.lock().unwrap().get(&job) {
            return Ok(p.clone());
        }
        let module = self
            .coordinator
            .clone()
            .get_plugin(pb::GetPluginRequest { job })
            .await
            .map_err(|e| format!("fetching job {job}'s plugin: {}", e.message()))?
            .into_inner()
            .module;
        let plugin = tokio::task::spawn_blocking(move || Plugin::load(&module))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        self.plugins.lock().unwrap().insert(job, plugin.clone());
        Ok(plugin)
    }

    /// Runs one attempt to its end.
    async fn run(self: &Arc<Self>, task: pb::Task) -> Ended {
        let plugin = match self.plugin(task.job).await {
            Ok(p) => p,
            Err(error) => {
                return Ended::Failed {
                    error,
                    task_fault: false,
                };
            }
        };
        let started = Instant::now();
        let stop = self.stop_flag(task.attempt);
        let ended = if task.phase == "map" {
            self.run_map(&task, plugin, stop.clone()).await
        } else {
            self.run_reduce(&task, plugin, stop.clone()).await
        };
        if let Ended::Done(_) = ended
            && self.config.slow > 1.0
        {
            // The straggler: as if everything it did took `slow` times as long.
            let extra = started.elapsed().mul_f64(self.config.slow - 1.0);
            let until = Instant::now() + extra;
            while Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return Ended::Cancelled;
                }
                tokio::time::sleep(Duration::from_millis(20).min(until - Instant::now())).await;
            }
        }
        ended
    }

    async fn run_map(&self, task: &pb::Task, plugin: Plugin, stop: Arc<AtomicBool>) -> Ended {
        let shared = PathBuf::from(&task.input_path);
        // Read this worker's own copy of the file when it holds one of the same size.
        let local = self
            .local_files
            .lock()
            .unwrap()
            .get(&file_name(&shared))
            .cloned();
        let path = match local {
            Some(local)
                if std::fs::metadata(&local).ok().map(|m| m.len())
                    == std::fs::metadata(&shared).ok().map(|m| m.len()) =>
            {
                local
            }
            _ => shared.clone(),
        };
        let split = Split {
            path: shared,
            start: task.split_start,
            end: task.split_end,
        };
        let bounds = task.bounds.iter().map(|b| b.to_vec()).collect();
        let partitioner = match partitioner_from(task.range_partition, bounds) {
            Ok(p) => p,
            Err(error) => {
                return Ended::Failed {
                    error,
                    task_fault: false,
                };
            }
        };
        let dir = map_dir(&self.dir, task.job, task.index, task.attempt);
        let (limits, arg, attempt, reduces) = (
            self.config.limits,
            task.arg.clone(),
            task.attempt,
            task.reduces,
        );
        let result = tokio::task::spawn_blocking(move || {
            let mut instance = plugin
                .instance(limits, arg.as_bytes(), attempt)
                .map_err(|e| TaskError::Plugin {
                    at: "init".into(),
                    error: e,
                })?;
            run_map(
                &mut instance,
                &split,
                &path,
                &partitioner,
                reduces,
                &dir,
                &stop,
            )
        })
        .await;
        match result {
            Ok(Ok(stats)) => Ended::Done(pb::CompleteRequest {
                attempt: task.attempt,
                worker: self.id.clone(),
                records: stats.records,
                input_bytes: stats.input_bytes,
                output_bytes: stats.output_bytes,
                shuffle_bytes: 0,
            }),
            Ok(Err(e)) => ended_by(e),
            Err(join) => Ended::Failed {
                error: format!("the map task panicked: {join}"),
                task_fault: false,
            },
        }
    }

    async fn run_reduce(&self, task: &pb::Task, plugin: Plugin, stop: Arc<AtomicBool>) -> Ended {
        let fetch_dir = self
            .dir
            .join("shuffle")
            .join(format!("job-{}", task.job))
            .join(format!("reduce-{}-a{}", task.index, task.attempt));
        let mut runs: Vec<(String, PathBuf)> = Vec::new();
        let mut fetched = 0u64;
        for output in &task.map_outputs {
            if stop.load(Ordering::Relaxed) {
                return Ended::Cancelled;
            }
            let name = format!("map task {} (on {})", output.map, output.worker);
            if output.worker == self.id {
                let path = run_path(
                    &map_dir(&self.dir, task.job, output.map, output.attempt),
                    task.index,
                );
                if !path.exists() {
                    return Ended::FetchFailed {
                        map: output.map,
                        error: format!("{} is gone from this worker's disk", path.display()),
                    };
                }
                runs.push((name, path));
                continue;
            }
            let path = fetch_dir.join(format!("map-{}", output.map));
            match self.fetch(task, output, &path).await {
                Ok(bytes) => {
                    fetched += bytes;
                    runs.push((name, path));
                }
                Err(error) => {
                    self.counters.fetch_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = std::fs::remove_dir_all(&fetch_dir);
                    return Ended::FetchFailed {
                        map: output.map,
                        error,
                    };
                }
            }
        }
        self.counters
            .fetched_bytes
            .fetch_add(fetched, Ordering::Relaxed);
        let out_path = PathBuf::from(&task.output_path);
        let (limits, arg, attempt) = (self.config.limits, task.arg.clone(), task.attempt);
        let result = tokio::task::spawn_blocking(move || {
            let mut instance = plugin
                .instance(limits, arg.as_bytes(), attempt)
                .map_err(|e| TaskError::Plugin {
                    at: "init".into(),
                    error: e,
                })?;
            let io = |at: &Path| {
                let at = at.display().to_string();
                move |error| TaskError::Io { at, error }
            };
            let readers = runs
                .iter()
                .map(|(name, path)| {
                    std::fs::File::open(path)
                        .map(|f| (name.clone(), Box::new(f) as Box<dyn Read>))
                        .map_err(io(path))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let parent = out_path.parent().expect("an output path has a directory");
            std::fs::create_dir_all(parent).map_err(io(parent))?;
            let mut file = std::fs::File::create(&out_path).map_err(io(&out_path))?;
            let stats = run_reduce(&mut instance, readers, &mut file, &stop)?;
            file.flush().map_err(io(&out_path))?;
            file.sync_all().map_err(io(&out_path))?;
            Ok(stats)
        })
        .await;
        let _ = std::fs::remove_dir_all(&fetch_dir);
        match result {
            Ok(Ok(stats)) => Ended::Done(pb::CompleteRequest {
                attempt: task.attempt,
                worker: self.id.clone(),
                records: stats.keys,
                input_bytes: 0,
                output_bytes: stats.output_bytes,
                shuffle_bytes: fetched,
            }),
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(PathBuf::from(&task.output_path));
                ended_by(e)
            }
            Err(join) => Ended::Failed {
                error: format!("the reduce task panicked: {join}"),
                task_fault: false,
            },
        }
    }

    /// Fetches one map's run for this reduce into `path`; returns its size.
    async fn fetch(
        &self,
        task: &pb::Task,
        output: &pb::MapOutput,
        path: &Path,
    ) -> Result<u64, String> {
        let mut client = self
            .peers
            .get(&output.worker)
            .cloned()
            .ok_or_else(|| format!("no --peer address for {}", output.worker))?;
        let request = pb::FetchRunRequest {
            job: task.job,
            map: output.map,
            attempt: output.attempt,
            partition: task.index,
        };
        let fetch = async {
            let mut stream = client
                .fetch_run(request)
                .await
                .map_err(|e| format!("fetching from {}: {}", output.worker, e.message()))?
                .into_inner();
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let mut file = tokio::fs::File::create(path)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut bytes = 0u64;
            while let Some(chunk) = stream
                .message()
                .await
                .map_err(|e| format!("fetching from {}: {}", output.worker, e.message()))?
            {
                bytes += chunk.data.len() as u64;
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk.data)
                    .await
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(bytes)
        };
        // A fetch that stalls (a link that drops everything) fails rather than hangs.
        tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .map_err(|_| format!("fetching from {} timed out", output.worker))?
    }

    /// Tells the coordinator how an attempt ended, retrying while it is unreachable (it may be
    /// restarting; then it refuses the attempt, which is fine).
    async fn report(&self, task: &pb::Task, ended: Ended) {
        let label = label(task);
        let mut coordinator = self.coordinator.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let outcome = match &ended {
                Ended::Done(request) => coordinator
                    .complete(request.clone())
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        if r.committed {
                            self.counters.committed.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(attempt = task.attempt, "{label}: committed");
                        } else {
                            self.counters.refused.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(event = "attempt_refused", attempt = task.attempt, reason = %r.refusal, "{label}: refused: {}", r.refusal);
                            self.discard(task);
                        }
                    }),
                Ended::Failed { error, task_fault } => coordinator
                    .fail(pb::FailRequest {
                        attempt: task.attempt,
                        worker: self.id.clone(),
                        error: error.clone(),
                        task_fault: *task_fault,
                    })
                    .await
                    .map(|_| {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(event = "attempt_failed", attempt = task.attempt, error = %error, "{label}: {error}");
                        self.discard(task);
                    }),
                Ended::FetchFailed { map, error } => coordinator
                    .fetch_failed(pb::FetchFailedRequest {
                        attempt: task.attempt,
                        worker: self.id.clone(),
                        map: *map,
                        error: error.clone(),
                    })
                    .await
                    .map(|_| {
                        tracing::warn!(event = "fetch_failed", attempt = task.attempt, map, error = %error, "{label}: map {map}'s output: {error}");
                    }),
                Ended::Cancelled => {
                    self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(event = "attempt_cancelled", attempt = task.attempt, "{label}: cancelled");
                    self.discard(task);
                    return;
                }
            };
            match outcome {
                Ok(()) => {
                    self.contact();
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("reporting {label}: {}", e.message());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    tracing::warn!(
                        "{label}: could not report to the coordinator ({}); dropping it",
                        e.message()
                    );
                    self.discard(task);
                    return;
                }
            }
        }
    }

    /// Removes what an attempt that does not count wrote.
    fn discard(&self, task: &pb::Task) {
        if task.phase == "map" {
            let _ = std::fs::remove_dir_all(map_dir(&self.dir, task.job, task.index, task.attempt));
        } else if !task.output_path.is_empty() {
            let _ = std::fs::remove_file(&task.output_path);
        }
    }

    fn contact(&self) {
        *self.last_contact.lock().unwrap() = Some(Instant::now());
    }

    /// Rescans the local copies; their names.
    fn local_file_names(&self) -> Vec<String> {
        let copies = local_copies(self.config.local_input.as_deref());
        let names = copies.keys().cloned().collect();
        *self.local_files.lock().unwrap() = copies;
        names
    }
}

fn ended_by(e: TaskError) -> Ended {
    match e {
        TaskError::Cancelled => Ended::Cancelled,
        TaskError::Plugin { .. } => Ended::Failed {
            error: e.to_string(),
            task_fault: true,
        },
        TaskError::Io { .. } => Ended::Failed {
            error: e.to_string(),
            task_fault: false,
        },
    }
}

fn label(task: &pb::Task) -> String {
    format!(
        "job {} {} task {} attempt {}{}",
        task.job,
        task.phase,
        task.index,
        task.attempt,
        if task.backup { " (backup)" } else { "" }
    )
}

/// Heartbeats; stops cancelled attempts; clears map output of jobs that are over.
async fn heartbeats(worker: Arc<Worker>, shutdown: CancellationToken) {
    let mut every = Every::new(worker.config.heartbeat, &shutdown);
    let mut last_cleanup = Instant::now();
    let mut local_files = worker.local_file_names();
    while every.tick().await {
        let request = pb::HeartbeatRequest {
            worker: worker.id.clone(),
            local_files: local_files.clone(),
        };
        let Ok(answer) = worker.coordinator.clone().heartbeat(request).await else {
            continue;
        };
        worker.contact();
        let answer = answer.into_inner();
        {
            let running = worker.running.lock().unwrap();
            for attempt in &answer.cancel {
                if let Some(r) = running.get(attempt) {
                    r.stop.store(true, Ordering::Relaxed);
                }
            }
        }
        // Every 2 s, not every beat: old map output goes, new local copies are seen.
        if last_cleanup.elapsed() > Duration::from_secs(2) {
            last_cleanup = Instant::now();
            clean_up(&worker.dir, &answer.active_jobs);
            local_files = worker.local_file_names();
        }
    }
}

/// Deletes the map outputs and fetched runs of every job not in `active`.
fn clean_up(dir: &Path, active: &[JobId]) {
    for area in ["maps", "shuffle"] {
        let Ok(entries) = std::fs::read_dir(dir.join(area)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let job = name
                .strip_prefix("job-")
                .and_then(|n| n.parse::<JobId>().ok());
            if let Some(job) = job
                && !active.contains(&job)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Asks for work and runs it, one attempt at a time, until shutdown.
async fn work_loop(worker: Arc<Worker>, shutdown: CancellationToken) {
    let mut warned = false;
    while !shutdown.is_cancelled() {
        let request = pb::NextTaskRequest {
            worker: worker.id.clone(),
            wait_ms: 1000,
        };
        let mut coordinator = worker.coordinator.clone();
        let answer = tokio::select! {
            answer = coordinator.next_task(request) => answer,
            () = shutdown.cancelled() => return,
        };
        let task = match answer {
            Ok(answer) => {
                warned = false;
                worker.contact();
                answer.into_inner().task
            }
            Err(e) => {
                if !warned {
                    tracing::warn!("the coordinator does not answer: {}", e.message());
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Some(task) = task else { continue };
        tracing::info!(
            job = task.job,
            phase = %task.phase,
            task = task.index,
            attempt = task.attempt,
            backup = task.backup,
            "{}",
            label(&task)
        );
        worker.running.lock().unwrap().insert(
            task.attempt,
            Running {
                label: label(&task),
                started: Instant::now(),
                backup: task.backup,
                stop: Arc::new(AtomicBool::new(false)),
            },
        );
        let ended = worker.run(task.clone()).await;
        worker.report(&task, ended).await;
        worker.running.lock().unwrap().remove(&task.attempt);
    }
}

struct WorkerStatus {
    worker: Arc<Worker>,
}

impl NodeStatus for WorkerStatus {
    fn role(&self) -> String {
        "worker".into()
    }

    fn detail(&self) -> Value {
        let w = &self.worker;
        let c = &w.counters;
        let running: Vec<Value> = w
            .running
            .lock()
            .unwrap()
            .iter()
            .map(|(attempt, r)| {
                json!({
                    "attempt": attempt,
                    "task": r.label,
                    "backup": r.backup,
                    "running_ms": r.started.elapsed().as_millis() as u64,
                })
            })
            .collect();
        json!({
            "running": running,
            "committed": c.committed.load(Ordering::Relaxed),
            "refused": c.refused.load(Ordering::Relaxed),
            "failed": c.failed.load(Ordering::Relaxed),
            "cancelled": c.cancelled.load(Ordering::Relaxed),
            "fetch_failures": c.fetch_failures.load(Ordering::Relaxed),
            "fetched_bytes": c.fetched_bytes.load(Ordering::Relaxed),
            "slow": w.config.slow,
            "local_files": w.local_files.lock().unwrap().len(),
            "coordinator_contact_ms": w.last_contact.lock().unwrap().map(|t| t.elapsed().as_millis() as u64),
        })
    }
}

fn traced(addr: SocketAddr) -> anyhow::Result<TracedChannel> {
    let channel = endpoint(addr, Duration::from_secs(1))?
        .timeout(Duration::from_secs(30))
        .connect_lazy();
    Ok(InterceptedService::new(channel, PropagateTrace))
}

/// The local copies in `dir`: file name -> path (none if it does not exist).
fn local_copies(dir: Option<&Path>) -> BTreeMap<String, PathBuf> {
    let Some(Ok(entries)) = dir.map(std::fs::read_dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

/// Runs a worker node until shutdown.
pub async fn run(args: ValidNodeArgs, mut config: WorkerConfig) -> anyhow::Result<()> {
    let temp;
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    if let Some(given) = &config.local_input
        && !given.is_dir()
    {
        return Err(distlab_runtime::BadInput::new(format!(
            "--local-input {}: not a directory",
            given.display()
        ))
        .into());
    }
    config
        .local_input
        .get_or_insert_with(|| dir.join(LOCAL_INPUT));
    let local_files = Mutex::new(local_copies(config.local_input.as_deref()));
    let peers = args
        .peers
        .iter()
        .map(|(id, addr)| {
            Ok((
                id.to_string(),
                pb::shuffle_client::ShuffleClient::new(traced(*addr)?)
                    .max_decoding_message_size(MAX_MESSAGE),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let coordinator = pb::coordinator_client::CoordinatorClient::new(traced(config.coordinator)?)
        .max_decoding_message_size(MAX_MESSAGE);
    let mut node = Node::bind(args.clone(), "proj4", "batch").await?;
    node.add_ready_field("role", "worker");
    // Map output of earlier lives is useless: the coordinator forgot those attempts.
    let _ = std::fs::remove_dir_all(dir.join("maps"));
    let _ = std::fs::remove_dir_all(dir.join("shuffle"));
    let worker = Arc::new(Worker {
        id: args.id.to_string(),
        dir: dir.clone(),
        config,
        coordinator,
        peers,
        local_files,
        running: Mutex::new(BTreeMap::new()),
        plugins: Mutex::new(BTreeMap::new()),
        counters: Counters::default(),
        last_contact: Mutex::new(None),
    });
    let shutdown = node.shutdown_token();
    tokio::spawn(heartbeats(worker.clone(), shutdown.clone()));
    let work = tokio::spawn(work_loop(worker.clone(), shutdown.clone()));
    let routes = tonic::service::Routes::new(pb::shuffle_server::ShuffleServer::new(ShuffleApi {
        data_dir: dir,
    }));
    node.serve(
        routes,
        Arc::new(WorkerStatus {
            worker: worker.clone(),
        }),
    )
    .await?;
    for r in worker.running.lock().unwrap().values() {
        r.stop.store(true, Ordering::Relaxed);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), work).await;
    Ok(())
}
