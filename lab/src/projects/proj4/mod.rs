//! Project 4 in the lab: MapReduce-mini (`services/batch`): a coordinator (`co1`) and workers
//! (`w1`..), a job-stream workload, and the job checks.
//!
//! The workload: the first client writes the input (a deterministic Zipf-worded corpus,
//! `input/doc*.txt` in the run dir, one file per workload key, 3 to 16) and places a local copy
//! of each file on two workers (`data/local-input/`, which workers report in their
//! heartbeats: data locality). Each client then submits jobs one after another, drawn from a
//! mix (word count, inverted index, grep, a globally sorted sort), and follows each to its
//! end: one `job` operation per job (ok when it is done, fail when it failed). At the end the
//! runner reads every done job's output back and the output of the same job run sequentially
//! in the lab's process (`batch run-local`'s code), one `output` operation per job:
//! `batch_jobs` compares them; `batch_commits` reads the coordinator's events for late or
//! double commits and counts speculation.

pub mod bench;
pub mod board_view;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_batch::client::Client as CoordinatorClient;
use distlab_batch::local::{JobDef, run_local};
use distlab_proto::batch::v1 as pb;
use rand::Rng;
use rand::rngs::SmallRng;
use serde_json::json;

use crate::console::views::{ClusterView, Figure, ProjectUi, detail_number};
use crate::engine::autoscale::{Scaling, Signal};
use crate::engine::history::{FINAL_PROCESS, OpType, Recorder};
use crate::engine::model::NodeView;
use crate::engine::project::{Count, PeerLinks, Project, Role};
use crate::engine::scenario::CheckSpec;
use crate::engine::workload::{
    BoxFuture, Client, Completion, Driver, Target, WorkloadSpec, record_call,
};

pub const PROJECT: Project = Project {
    name: "proj4",
    title: "MapReduce-mini (a coordinator with leases, retries, speculation and a checkpoint; workers running sandboxed WebAssembly plugins)",
    service: "batch",
    roles: &[
        Role {
            name: "coordinator",
            count: Count::Fixed(1),
            id_prefix: "co",
            service: None,
            flags: &["--role", "coordinator"],
        },
        Role {
            name: "worker",
            count: Count::Rest,
            id_prefix: "w",
            service: None,
            flags: &["--role", "worker"],
        },
    ],
    default_nodes: 4,
    peer_links: PeerLinks::Tcp,
    node_flags: &["--coordinator-id", "co1"],
    initial_members_flag: None,
    node_main: distlab_batch::node::main,
    check_node_flags: distlab_batch::node::check_flags,
    scaling: Some(Scaling {
        role: "worker",
        signal: scale_signal,
    }),
    // A worker leaves by stopping: the coordinator reassigns its tasks when its lease ends.
    remove_member: Some(leave),
    workload: &JobStream,
    checks: &[
        CheckSpec::BatchJobs,
        CheckSpec::BatchCommits,
        CheckSpec::Availability { min: None },
    ],
};

/// The autoscaler's signal: the coordinator's queue, and the live workers running nothing.
fn scale_signal(nodes: &[NodeView]) -> Option<Signal> {
    let coordinator = nodes
        .iter()
        .find(|n| n.node.role == "coordinator" && !n.detail.is_null())?;
    let board: distlab_batch::board::Board =
        serde_json::from_value(coordinator.detail.clone()).ok()?;
    Some(Signal {
        queue: u64::from(board.queued),
        idle: board
            .workers
            .iter()
            .filter(|w| w.alive && w.running.is_empty())
            .map(|w| w.id.clone())
            .collect(),
    })
}

fn leave<'a>(_targets: &'a [Target], _id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
    Box::pin(async { Ok(()) })
}

/// The node table's figures and the views of a Project 4 console (it opens on the task board).
pub fn console() -> ProjectUi {
    ProjectUi {
        figures: &[
            Figure {
                header: "jobs",
                value: |n| detail_number(n, "done"),
            },
            Figure {
                header: "queue",
                value: |n| detail_number(n, "queued"),
            },
            Figure {
                header: "tasks",
                value: |n| detail_number(n, "committed"),
            },
            Figure {
                header: "refused",
                value: |n| match n.detail.get("refused_late") {
                    Some(v) => v.to_string(),
                    None => detail_number(n, "refused"),
                },
            },
        ],
        views: vec![Box::new(board_view::BoardView), Box::new(ClusterView)],
        // One per task: the task board shows them as cells.
        quiet_events: &["task_committed"],
    }
}

/// The jobs the stream draws from: (plugin, argument, range partitioning, weight).
const MIX: &[(&str, &str, bool, u32)] = &[
    ("wordcount", "", false, 5),
    ("indexer", "", false, 2),
    ("grep", "ab", false, 2),
    ("sort", "", true, 1),
];

/// Bytes of input per file.
const FILE_BYTES: u64 = 256 * 1024;
/// Bytes per map task: a few maps per file.
const SPLIT_BYTES: u64 = 64 * 1024;
const REDUCES: u32 = 3;

/// The job-stream workload.
pub struct JobStream;

/// The run dir of a node's data dir (`RUN/ID/data`).
fn run_dir_of(target: &Target) -> PathBuf {
    target
        .data_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| target.data_dir.clone())
}

fn coordinator(targets: &[Target]) -> anyhow::Result<&Target> {
    targets
        .iter()
        .find(|t| t.role == "coordinator")
        .ok_or_else(|| anyhow::anyhow!("the workload needs the coordinator"))
}

/// Writes the input files (unless they are there) and a local copy of each on two workers.
fn place_input(run: &Path, files: usize, targets: &[Target]) -> anyhow::Result<PathBuf> {
    let input = run.join("input");
    std::fs::create_dir_all(&input)?;
    let workers: Vec<&Target> = targets.iter().filter(|t| t.role == "worker").collect();
    for i in 0..files {
        let name = format!("doc{i:02}.txt");
        let path = input.join(&name);
        if !path.exists() {
            let tmp = input.join(format!(".{name}.tmp"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            distlab_batch::corpus::write(&mut out, FILE_BYTES, 5_000, i as u64 + 1)?;
            std::io::Write::flush(&mut out)?;
            drop(out);
            std::fs::rename(&tmp, &path)?;
        }
        for k in 0..workers.len().min(2) {
            let worker = workers[(i + k) % workers.len()];
            let dir = worker.data_dir.join(distlab_batch::worker::LOCAL_INPUT);
            let copy = dir.join(&name);
            if !copy.exists() {
                std::fs::create_dir_all(&dir)?;
                std::fs::copy(&path, &copy)?;
            }
        }
    }
    Ok(input)
}

impl Driver for JobStream {
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>> {
        let coordinator = coordinator(targets)?;
        let run = run_dir_of(coordinator);
        let input = place_input(&run, spec.keys.clamp(3, 16), targets)?;
        let client = distlab_batch::client::connect(coordinator.addr)?;
        let submitted = Arc::new(Mutex::new(0u64));
        (0..spec.clients)
            .map(|_| {
                Ok(Box::new(JobClient {
                    client: client.clone(),
                    recorder: recorder.clone(),
                    input: input.clone(),
                    outputs: run.join("output"),
                    submitted: submitted.clone(),
                    deadline: spec.timeout.max(Duration::from_secs(180)),
                }) as Box<dyn Client>)
            })
            .collect()
    }

    fn final_reads<'a>(
        &'a self,
        _spec: &'a WorkloadSpec,
        _targets: &'a [Target],
        recorder: &'a Recorder,
        _deadline: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let done: Vec<serde_json::Value> = recorder
                .ops()
                .iter()
                .filter(|op| op.f == "job" && op.kind == OpType::Ok)
                .map(|op| op.value.clone())
                .collect();
            let mut references: BTreeMap<String, Result<Digest, String>> = BTreeMap::new();
            for job in done {
                let Ok(def) = serde_json::from_value::<JobDef>(job["def"].clone()) else {
                    continue;
                };
                let output = PathBuf::from(job["output"].as_str().unwrap_or_default());
                let key = format!("{}:{}:{}", def.plugin, def.arg, def.range_partition);
                if !references.contains_key(&key) {
                    let def = def.clone();
                    let reference = tokio::task::spawn_blocking(move || reference(&def))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r);
                    references.insert(key.clone(), reference);
                }
                let reference = references[&key].clone();
                let name = job["name"].as_str().unwrap_or("job").to_string();
                let sorted_output = def.range_partition;
                record_call(
                    recorder,
                    FINAL_PROCESS,
                    "output",
                    &name,
                    json!({"output": output, "plugin": def.plugin}),
                    async move {
                        let got = digest(&output, sorted_output)
                            .map_err(|e| tonic::Status::not_found(e.to_string()))?;
                        Ok((got, reference))
                    },
                    |(got, reference)| {
                        Completion::ok(
                            json!(got),
                            Some(json!({
                                "reference": reference.as_ref().ok(),
                                "reference_error": reference.as_ref().err(),
                                "final": true,
                            })),
                        )
                    },
                )
                .await;
            }
            Ok(())
        })
    }
}

/// A job's output, summarised for comparison: its lines (sorted) counted and hashed, and
/// whether the files read in order were already sorted (the sort job's promise).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Digest {
    pub lines: u64,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub globally_sorted: Option<bool>,
}

/// The digest of the `part-r-*` files in `dir`.
pub fn digest(dir: &Path, check_order: bool) -> std::io::Result<Digest> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-r-"))
        })
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        lines.extend(text.lines().map(String::from));
    }
    let globally_sorted = check_order.then(|| lines.windows(2).all(|w| w[0] <= w[1]));
    lines.sort();
    let hash = distlab_runtime::hash::fnv1a(lines.iter().flat_map(|l| l.bytes().chain([b'\n'])));
    Ok(Digest {
        lines: lines.len() as u64,
        hash: format!("{hash:016x}"),
        globally_sorted,
    })
}

/// The sequential run's digest of `def`.
fn reference(def: &JobDef) -> Result<Digest, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let out = scratch.path().join("out");
    run_local(def, &scratch.path().join("work"), &out)?;
    digest(&out, false).map_err(|e| e.to_string())
}

/// One client: submits a job and follows it to its end, again and again.
struct JobClient {
    client: CoordinatorClient,
    recorder: Arc<Recorder>,
    input: PathBuf,
    outputs: PathBuf,
    submitted: Arc<Mutex<u64>>,
    deadline: Duration,
}

impl JobClient {
    fn pick(rng: &mut SmallRng) -> (&'static str, &'static str, bool) {
        let total: u32 = MIX.iter().map(|m| m.3).sum();
        let mut roll = rng.random_range(0..total);
        for (plugin, arg, range, weight) in MIX {
            if roll < *weight {
                return (plugin, arg, *range);
            }
            roll -= weight;
        }
        unreachable!("the roll is below the total weight")
    }
}

impl Client for JobClient {
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)> {
        Box::pin(async move {
            let (plugin, arg, range) = Self::pick(rng);
            let n = {
                let mut submitted = self.submitted.lock().unwrap();
                *submitted += 1;
                *submitted
            };
            let name = format!("{plugin}-{n}");
            let output = self.outputs.join(&name);
            let def = JobDef {
                plugin: plugin.into(),
                arg: arg.into(),
                input: self.input.clone(),
                reduces: REDUCES,
                split_bytes: SPLIT_BYTES,
                range_partition: range,
            };
            let message = pb::JobDef {
                plugin: plugin.into(),
                arg: arg.into(),
                input: self.input.to_string_lossy().into_owned(),
                reduces: REDUCES,
                split_bytes: SPLIT_BYTES,
                range_partition: range,
                output: output.to_string_lossy().into_owned(),
                name: name.clone(),
                request_id: format!("lab-{}", output.display()),
            };
            let mut client = self.client.clone();
            let deadline = self.deadline;
            let arg_value = json!({"def": def, "output": output, "name": name});
            let (kind, _) = record_call(
                &self.recorder,
                process,
                "job",
                plugin,
                arg_value.clone(),
                async move {
                    let until = tokio::time::Instant::now() + deadline;
                    // The request id makes a retry safe: the coordinator may be down or
                    // restarting, or may have queued it and lost the answer.
                    let job = loop {
                        let submitted = client
                            .submit(pb::SubmitRequest {
                                job: Some(message.clone()),
                            })
                            .await;
                        match submitted {
                            Ok(answer) => break answer.into_inner().job,
                            Err(status)
                                if distlab_runtime::retry::is_retryable(&status)
                                    && tokio::time::Instant::now() < until =>
                            {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            Err(status) => return Err(status),
                        }
                    };
                    follow(&mut client, job, until).await
                },
                |status| {
                    let meta = json!({
                        "job": status.id,
                        "elapsed_ms": status.elapsed_ms,
                        "maps": status.maps,
                        "reduces": status.reduces,
                    });
                    if status.state == "done" {
                        Completion::ok(arg_value, Some(meta))
                    } else {
                        Completion::refused(arg_value, &status.error, meta)
                    }
                },
            )
            .await;
            ("co1".to_string(), kind)
        })
    }
}

/// Polls a job until it is over (or `until` passes: then an error, the outcome unknown).
async fn follow(
    client: &mut CoordinatorClient,
    job: u64,
    until: tokio::time::Instant,
) -> Result<pb::JobStatus, tonic::Status> {
    loop {
        match client.status(pb::StatusRequest { job }).await {
            Ok(answer) => {
                if let Some(status) = answer.into_inner().jobs.into_iter().next()
                    && status.state != "running"
                {
                    return Ok(status);
                }
            }
            // The coordinator may be restarting: keep asking until the deadline.
            Err(status) if status.code() == tonic::Code::NotFound => return Err(status),
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= until {
            return Err(tonic::Status::deadline_exceeded(format!(
                "job {job} not over in time"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
