//! The coordinator behind gRPC: one lock around [`Coordinator`], workers long-polling for
//! work, a beat that expires leases, and a background writer that keeps the checkpoint
//! current (a submission is answered only once it is durable; anything else lost in a crash
//! is run again, which is safe).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_proto::batch::v1 as pb;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::cli::ValidNodeArgs;
use distlab_runtime::clock::Every;
use distlab_runtime::node::Node;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{Coordinator, Outcome, Submission, Work, bounds_of, checkpoint_path, write_atomically};
use crate::local::JobDef;
use crate::scheduler::{Blame, Config, Failure, Phase, Refusal};

/// Metadata naming a refusal's kind (see batch.proto).
pub const ERROR_KIND: &str = "batch-error";

/// The longest a worker's request for work waits.
const MAX_WAIT: Duration = Duration::from_secs(2);

/// A refusal: the gRPC code and message, with [`ERROR_KIND`] metadata.
pub fn refusal(code: tonic::Code, kind: &str, message: impl Into<String>) -> Status {
    distlab_runtime::rpc::refusal(code, ERROR_KIND, kind, message)
}

/// The wall clock as the scheduler takes it: since the Unix epoch, so a restarted coordinator's
/// times agree with its checkpoint's.
pub fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

pub struct Shared {
    core: Mutex<Coordinator>,
    /// Woken when work may have appeared.
    work: Notify,
    checkpoint: Checkpoint,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Coordinator> {
        self.core
            .lock()
            .expect("the coordinator's lock is never poisoned")
    }

    /// The state changed: wake the waiting workers and the checkpoint writer.
    fn changed(&self) -> u64 {
        self.work.notify_waiters();
        self.checkpoint.changed()
    }
}

/// The checkpoint's versions: `wanted` counts changes, `durable` says which is on disk.
struct Checkpoint {
    wanted: AtomicU64,
    dirty: Notify,
    durable: watch::Sender<u64>,
}

impl Checkpoint {
    fn changed(&self) -> u64 {
        let version = self.wanted.fetch_add(1, Ordering::SeqCst) + 1;
        self.dirty.notify_one();
        version
    }

    async fn wait_durable(&self, version: u64) -> Result<(), Status> {
        let mut durable = self.durable.subscribe();
        durable
            .wait_for(|v| *v >= version)
            .await
            .map(|_| ())
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))
    }
}

/// Writes the checkpoint whenever the state changed (coalescing bursts of changes).
async fn write_checkpoints(shared: Arc<Shared>, shutdown: CancellationToken) {
    let dir: Option<std::path::PathBuf> = shared.lock().data_dir().map(Into::into);
    loop {
        let wanted = shared.checkpoint.wanted.load(Ordering::SeqCst);
        if wanted > *shared.checkpoint.durable.borrow() {
            let (bytes, pending) = {
                let core = shared.lock();
                let bytes = dir
                    .as_ref()
                    .map(|_| serde_json::to_vec(&core.state).expect("state serializes"));
                (bytes, core.state.pending.clone())
            };
            if let (Some(dir), Some(bytes)) = (&dir, bytes) {
                let path = checkpoint_path(dir);
                let written =
                    tokio::task::spawn_blocking(move || write_atomically(&path, &bytes)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::error!("writing the checkpoint: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    Err(e) => tracing::error!("the checkpoint writer panicked: {e}"),
                }
            }
            shared.checkpoint.durable.send_replace(wanted);
            if !pending.is_empty() {
                // Their decisions are durable now: rename the outputs into place (a change
                // of state the next checkpoint records).
                shared.lock().apply(&pending);
                shared.changed();
            }
            continue;
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            () = shared.checkpoint.dirty.notified() => {}
            () = shutdown.cancelled() => {}
        }
    }
}

/// How often leases are checked.
const TICK: Duration = Duration::from_millis(100);

async fn beat(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut every = Every::new(TICK, &shutdown);
    while every.tick().await {
        let changed = shared.lock().tick(now());
        if changed {
            shared.changed();
        }
        // Retries whose backoff ended, stragglers that grew old enough for a backup.
        shared.work.notify_waiters();
    }
}

pub struct CoordinatorApi {
    shared: Arc<Shared>,
}

fn job_def(job: pb::JobDef) -> Result<Submission, Status> {
    let bad = |m: String| refusal(tonic::Code::InvalidArgument, "bad_job", m);
    if job.plugin.is_empty() {
        return Err(bad("the job names no plugin".into()));
    }
    if job.input.is_empty() {
        return Err(bad("the job names no input".into()));
    }
    if job.output.is_empty() {
        return Err(bad("the job names no output directory".into()));
    }
    if job.reduces == 0 {
        return Err(bad("a job needs at least one reduce task (R >= 1)".into()));
    }
    let name = if job.name.is_empty() {
        job.plugin.clone()
    } else {
        job.name.clone()
    };
    Ok(Submission {
        def: JobDef {
            plugin: job.plugin,
            arg: job.arg,
            input: job.input.into(),
            reduces: job.reduces,
            split_bytes: if job.split_bytes == 0 {
                64 << 20
            } else {
                job.split_bytes
            },
            range_partition: job.range_partition,
        },
        name,
        output: job.output.into(),
        request_id: job.request_id,
    })
}

fn task_message(work: Work) -> pb::Task {
    let plan = &work.plan;
    let (input_path, start, end) = match work.task.phase {
        Phase::Map => {
            let split = &plan.splits[work.task.index as usize];
            (
                split.path.to_string_lossy().into_owned(),
                split.start,
                split.end,
            )
        }
        Phase::Reduce => (String::new(), 0, 0),
    };
    let bounds = bounds_of(&plan.partitioner);
    pb::Task {
        attempt: work.attempt,
        job: work.task.job,
        phase: work.task.phase.name().into(),
        index: work.task.index,
        backup: work.backup,
        plugin_name: plan.def.plugin.clone(),
        arg: plan.def.arg.clone(),
        reduces: plan.def.reduces,
        split_start: start,
        split_end: end,
        range_partition: bounds.is_some(),
        bounds: bounds
            .unwrap_or_default()
            .iter()
            .map(|b| b.clone().into())
            .collect(),
        map_outputs: work
            .map_outputs
            .into_iter()
            .map(|o| pb::MapOutput {
                map: o.map,
                worker: o.worker,
                attempt: o.attempt,
            })
            .collect(),
        output_path: work
            .output_path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        input_path,
    }
}

#[tonic::async_trait]
impl pb::coordinator_server::Coordinator for CoordinatorApi {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let job = request
            .into_inner()
            .job
            .ok_or_else(|| refusal(tonic::Code::InvalidArgument, "bad_job", "no job given"))?;
        let submission = job_def(job)?;
        // A retry of a submission that got through: the same job, not another.
        let earlier = self
            .shared
            .lock()
            .submitted_as(&submission.request_id)
            .map(|(id, plan)| (id, plan.splits.len() as u32, plan.def.reduces));
        if let Some((job, maps, reduces)) = earlier {
            self.shared
                .checkpoint
                .wait_durable(self.shared.checkpoint.wanted.load(Ordering::SeqCst))
                .await?;
            return Ok(Response::new(pb::SubmitResponse { job, maps, reduces }));
        }
        let (files, dir) = {
            let core = self.shared.lock();
            (
                core.local_files().clone(),
                core.data_dir().map(|d| d.to_path_buf()),
            )
        };
        let (plan, spec) = tokio::task::spawn_blocking(move || {
            Coordinator::plan(submission, dir.as_deref(), &files)
        })
        .await
        .map_err(|e| Status::internal(format!("planning the job: {e}")))?
        .map_err(|e| refusal(tonic::Code::InvalidArgument, "bad_job", e))?;
        let (maps, reduces) = (plan.splits.len() as u32, plan.def.reduces);
        let job = {
            let mut core = self.shared.lock();
            match core.submitted_as(&plan.request_id).map(|(id, _)| id) {
                // A concurrent retry of this submission won the race.
                Some(id) => id,
                None => core
                    .submit(plan, spec, now())
                    .map_err(|e| refusal(tonic::Code::InvalidArgument, "bad_job", e))?,
            }
        };
        let version = self.shared.changed();
        self.shared.checkpoint.wait_durable(version).await?;
        Ok(Response::new(pb::SubmitResponse { job, maps, reduces }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let wanted = request.into_inner().job;
        let core = self.shared.lock();
        let now = now();
        let committing = core.committing();
        let jobs: Vec<pb::JobStatus> = core
            .state
            .scheduler
            .jobs
            .values()
            .filter(|j| wanted == 0 || j.id == wanted)
            .map(|job| {
                let plan = &core.state.plans[&job.id];
                let (state, error) =
                    crate::board::shown_state(&job.state, committing.contains(&job.id));
                pb::JobStatus {
                    id: job.id,
                    name: plan.name.clone(),
                    state: state.into(),
                    error: error.unwrap_or_default(),
                    phase: job.phase().name().into(),
                    maps: job.maps.len() as u32,
                    maps_done: job.maps.iter().filter(|t| t.is_done()).count() as u32,
                    reduces: job.reduces.len() as u32,
                    reduces_done: job.reduces.iter().filter(|t| t.is_done()).count() as u32,
                    running: job
                        .maps
                        .iter()
                        .chain(&job.reduces)
                        .map(|t| t.running.len() as u32)
                        .sum(),
                    output: plan.output.to_string_lossy().into_owned(),
                    elapsed_ms: job
                        .finished
                        .unwrap_or(now)
                        .saturating_sub(job.submitted)
                        .as_millis() as u64,
                }
            })
            .collect();
        if wanted != 0 && jobs.is_empty() {
            return Err(refusal(
                tonic::Code::NotFound,
                "unknown_job",
                format!(
                    "job {wanted} is not known (never submitted, or long finished and forgotten)"
                ),
            ));
        }
        Ok(Response::new(pb::StatusResponse { jobs }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let request = request.into_inner();
        let (cancel, active_jobs) =
            self.shared
                .lock()
                .heartbeat(&request.worker, request.local_files, now());
        Ok(Response::new(pb::HeartbeatResponse {
            cancel,
            active_jobs,
        }))
    }

    async fn next_task(
        &self,
        request: Request<pb::NextTaskRequest>,
    ) -> Result<Response<pb::NextTaskResponse>, Status> {
        let request = request.into_inner();
        let wait = Duration::from_millis(request.wait_ms.into()).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.shared.work.notified();
            let work = self.shared.lock().next_task(&request.worker, now());
            if let Some(work) = work {
                return Ok(Response::new(pb::NextTaskResponse {
                    task: Some(task_message(work)),
                }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(pb::NextTaskResponse { task: None }));
            }
        }
    }

    async fn complete(
        &self,
        request: Request<pb::CompleteRequest>,
    ) -> Result<Response<pb::CompleteResponse>, Status> {
        let r = request.into_inner();
        let outcome = Outcome {
            records: r.records,
            input_bytes: r.input_bytes,
            output_bytes: r.output_bytes,
            shuffle_bytes: r.shuffle_bytes,
        };
        let result = self
            .shared
            .lock()
            .complete(r.attempt, &r.worker, outcome, now());
        // The answer promises the commit: only once it is durable.
        let version = self.shared.changed();
        self.shared.checkpoint.wait_durable(version).await?;
        Ok(Response::new(match result {
            Ok(()) => pb::CompleteResponse {
                committed: true,
                refusal: String::new(),
            },
            Err(refusal) => pb::CompleteResponse {
                committed: false,
                refusal: match refusal {
                    Refusal::UnknownAttempt => "the attempt is not running: its lease expired, it was cancelled, or it is from before a restart".into(),
                    Refusal::AlreadyDone { by } => format!("attempt {by} committed the task first"),
                },
            },
        }))
    }

    async fn fail(
        &self,
        request: Request<pb::FailRequest>,
    ) -> Result<Response<pb::FailResponse>, Status> {
        let r = request.into_inner();
        let blame = if r.task_fault {
            Blame::Task
        } else {
            Blame::Worker
        };
        let failure = self
            .shared
            .lock()
            .fail(r.attempt, &r.worker, &r.error, blame, now());
        self.shared.changed();
        let outcome = match failure {
            Failure::Retry { .. } => "retry",
            Failure::JobFailed { .. } => "job_failed",
            Failure::Unknown => "unknown",
        };
        Ok(Response::new(pb::FailResponse {
            outcome: outcome.into(),
        }))
    }

    async fn fetch_failed(
        &self,
        request: Request<pb::FetchFailedRequest>,
    ) -> Result<Response<pb::FetchFailedResponse>, Status> {
        let r = request.into_inner();
        self.shared
            .lock()
            .fetch_failed(r.attempt, &r.worker, r.map, &r.error, now());
        self.shared.changed();
        Ok(Response::new(pb::FetchFailedResponse {}))
    }

    async fn get_plugin(
        &self,
        request: Request<pb::GetPluginRequest>,
    ) -> Result<Response<pb::GetPluginResponse>, Status> {
        let job = request.into_inner().job;
        let module = self
            .shared
            .lock()
            .plugin(job)
            .map_err(|e| refusal(tonic::Code::NotFound, "unknown_job", e))?;
        Ok(Response::new(pb::GetPluginResponse {
            module: module.into(),
        }))
    }
}

struct CoordinatorStatus {
    shared: Arc<Shared>,
}

impl NodeStatus for CoordinatorStatus {
    fn role(&self) -> String {
        "coordinator".into()
    }

    fn detail(&self) -> Value {
        let board = self.shared.lock().board(now());
        serde_json::to_value(board).expect("the board serializes")
    }
}

/// Runs a coordinator node until shutdown.
pub async fn run(args: ValidNodeArgs, config: Config) -> anyhow::Result<()> {
    let data_dir = args.data_dir.clone();
    let mut node = Node::bind(args, "proj4", "batch").await?;
    let coordinator = Coordinator::open(config, data_dir, now())?;
    let recovered = coordinator.state.scheduler.jobs.len() as u64;
    let shared = Arc::new(Shared {
        core: Mutex::new(coordinator),
        work: Notify::new(),
        checkpoint: Checkpoint {
            wanted: AtomicU64::new(recovered.min(1)),
            dirty: Notify::new(),
            durable: watch::Sender::new(0),
        },
    });
    let shutdown = node.shutdown_token();
    node.add_ready_field("role", "coordinator");
    let writer = tokio::spawn(write_checkpoints(shared.clone(), shutdown.clone()));
    tokio::spawn(beat(shared.clone(), shutdown.clone()));
    let routes = tonic::service::Routes::new(pb::coordinator_server::CoordinatorServer::new(
        CoordinatorApi {
            shared: shared.clone(),
        },
    ));
    node.serve(routes, Arc::new(CoordinatorStatus { shared }))
        .await?;
    shutdown.cancel();
    let _ = writer.await;
    Ok(())
}
