//! Workloads: in-process clients that load the cluster through the client link proxies and
//! record every operation in the run's history.
//!
//! The engine owns what every workload shares: the scenario's `workload:` section
//! ([`WorkloadSpec`]), the client loop (one operation at a time per client, paced to the rate,
//! stopped on demand), and the live per-node figures ([`LoadStats`]). A project supplies the
//! operations: a [`Driver`] that makes its [`Client`]s and does the final reads (Project 0's is
//! in `crate::projects::proj0`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlab_runtime::retry::RetryPolicy;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::history::{OpType, Recorder};

/// The workload section of a scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Concurrent clients (each one operation at a time).
    #[serde(default = "default_clients")]
    pub clients: usize,
    /// Operations per second, all clients together; 0 for as fast as possible.
    #[serde(default = "default_rate")]
    pub rate: f64,
    /// Distinct keys.
    #[serde(default = "default_keys")]
    pub keys: usize,
    /// How long one operation may take, retries included.
    #[serde(default = "default_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// Fraction of reads (the rest are writes).
    #[serde(default = "default_reads")]
    pub reads: f64,
    /// Fraction of the mutations that are deletes (the rest are writes).
    #[serde(default = "default_deletes")]
    pub deletes: f64,
    /// Fraction of the writes that are compare-and-set instead (projects whose API has one;
    /// a client sets a key it has seen a value of, expecting that value).
    #[serde(default = "default_cas")]
    pub cas: f64,
    /// Hot-key skew: keys drawn from a Zipf distribution with this exponent (key 0 the
    /// hottest); 0, the default, draws them uniformly.
    #[serde(default)]
    pub zipf: f64,
    /// Project 3: when a producer counts a message as written: `0` (sent), `1` (the leader
    /// appended it) or `all` (every in-sync replica holds it), the default.
    #[serde(default)]
    pub acks: Option<String>,
}

fn default_clients() -> usize {
    4
}
fn default_rate() -> f64 {
    100.0
}
fn default_keys() -> usize {
    8
}
fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_reads() -> f64 {
    0.5
}
fn default_deletes() -> f64 {
    0.1
}
fn default_cas() -> f64 {
    0.3
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            clients: default_clients(),
            rate: default_rate(),
            keys: default_keys(),
            timeout: default_timeout(),
            reads: default_reads(),
            deletes: default_deletes(),
            cas: default_cas(),
            zipf: 0.0,
            acks: None,
        }
    }
}

/// What a register client does next (projects draw it with [`WorkloadSpec::next_op`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOp {
    Read,
    Delete,
    /// A write, which a project whose API has one may make a compare-and-set.
    Write,
}

impl WorkloadSpec {
    /// Draws a register client's next operation: a read with probability `reads`, else a
    /// delete with probability `deletes`, else a write.
    pub fn next_op(&self, rng: &mut SmallRng) -> RegisterOp {
        if rng.random_bool(self.reads.clamp(0.0, 1.0)) {
            RegisterOp::Read
        } else if rng.random_bool(self.deletes.clamp(0.0, 1.0)) {
            RegisterOp::Delete
        } else {
            RegisterOp::Write
        }
    }

    /// Draws the index of the key a client's next operation is on: uniform over `keys`, or
    /// Zipf-skewed with exponent `zipf` (a few hot keys take most of the operations).
    pub fn next_key(&self, rng: &mut SmallRng) -> usize {
        let keys = self.keys.max(1);
        if self.zipf > 0.0
            && let Ok(zipf) = rand_distr::Zipf::new(keys as f64, self.zipf)
        {
            // Zipf draws 1..=keys, as a float.
            return (rng.sample(zipf) as usize).clamp(1, keys) - 1;
        }
        rng.random_range(0..keys)
    }

    /// A workload client's retry policy: an operation may take `timeout`, retries included.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempt_timeout: (self.timeout / 2).max(Duration::from_millis(50)),
            deadline: self.timeout,
            initial_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        }
    }
}

/// The final reads' retry policy: patient, up to `deadline` (the faults are over).
pub fn final_reads_policy(deadline: Duration) -> RetryPolicy {
    RetryPolicy {
        max_attempts: 50,
        attempt_timeout: Duration::from_secs(1),
        deadline,
        ..RetryPolicy::default()
    }
}

/// Every target as (node, address): what a client library over the whole cluster takes.
pub fn node_addrs(targets: &[Target]) -> Vec<(String, SocketAddr)> {
    targets.iter().map(|t| (t.node.clone(), t.addr)).collect()
}

/// A register's value as the history records it: the integer written, or `null`.
pub fn int_value(value: Option<&[u8]>) -> serde_json::Value {
    serde_json::json!(value.and_then(|v| String::from_utf8_lossy(v).parse::<i64>().ok()))
}

/// The value of process `process`'s `count`-th write: unique in the run (the process in the
/// millions, the count below), so a read names the write it saw.
pub fn unique_value(process: u64, count: i64) -> i64 {
    (process as i64) * 1_000_000 + count
}

/// A register read's completion: `ok` with the value read as an integer (`null`: none) and
/// the item's version if there is one; `final` marks the run's last reads.
pub fn read_completion(found: Option<(&[u8], u64)>, final_read: bool) -> Completion {
    let value = int_value(found.map(|(v, _)| v));
    let meta = found.map(|(_, version)| {
        if final_read {
            serde_json::json!({"version": version, "final": true})
        } else {
            serde_json::json!({"version": version})
        }
    });
    Completion::ok(value, meta)
}

/// Records a register read made by `call` (a client library's get): `ok` with the value and
/// version `parts` finds in the answer (`final` for the final reads), `fail` if it failed.
pub async fn record_read<T>(
    recorder: &Recorder,
    process: u64,
    key: &str,
    final_read: bool,
    call: impl std::future::Future<Output = Result<Option<T>, tonic::Status>>,
    parts: impl Fn(&T) -> (&[u8], u64),
) -> OpType {
    record_call(
        recorder,
        process,
        "read",
        key,
        serde_json::Value::Null,
        call,
        |found| read_completion(found.as_ref().map(&parts), final_read),
    )
    .await
    .0
}

/// `500ms`, `2s` in YAML.
pub mod duration_text {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        distlab_runtime::duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How a failed gRPC mutation is recorded: `fail` when the code says it certainly did not
/// happen, else `info` (it may have).
pub fn failure_kind(code: Code) -> OpType {
    if not_applied(code) {
        OpType::Fail
    } else {
        OpType::Info
    }
}

/// What a call's answer means for the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `ok`; or `fail` when the service answered that it did not do it (a cas whose expected
    /// value did not match; see [`Completion::refused`]).
    pub kind: OpType,
    /// The result (a read's value) or, for `fail`, the argument again.
    pub value: serde_json::Value,
    pub error: Option<String>,
    /// What else the service said (a version, a log index).
    pub meta: Option<serde_json::Value>,
}

impl Completion {
    pub fn ok(value: serde_json::Value, meta: Option<serde_json::Value>) -> Self {
        Self {
            kind: OpType::Ok,
            value,
            error: None,
            meta,
        }
    }

    /// The service answered that it did not do it (`why`); `said` is its answer, which tells
    /// this `fail` from an error in the history ([`crate::engine::history::Op::answered`]).
    pub fn refused(value: serde_json::Value, why: &str, said: serde_json::Value) -> Self {
        Self {
            kind: OpType::Fail,
            value,
            error: Some(why.to_string()),
            meta: Some(said),
        }
    }
}

/// Records one client call in the history: `invoke` with `arg`, then what `complete` makes of
/// the answer, or the failure: a `read` that failed changed nothing (`fail`); any other
/// operation is `fail` only if its code says it did not apply, else `info`.
///
/// Returns how the call went for the live figures (`ok` whenever the service answered) and
/// the value recorded as `ok`, if it was.
pub async fn record_call<T>(
    recorder: &Recorder,
    process: u64,
    f: &str,
    key: &str,
    arg: serde_json::Value,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
    complete: impl FnOnce(T) -> Completion,
) -> (OpType, Option<serde_json::Value>) {
    recorder.record(process, OpType::Invoke, f, Some(key), arg.clone(), None);
    match call.await {
        Ok(answer) => {
            let done = complete(answer);
            let kept = (done.kind == OpType::Ok).then(|| done.value.clone());
            recorder.record_with(
                process,
                done.kind,
                f,
                Some(key),
                done.value,
                done.error,
                done.meta,
            );
            (OpType::Ok, kept)
        }
        Err(status) => {
            let kind = if f == "read" {
                OpType::Fail
            } else {
                failure_kind(status.code())
            };
            let error = Some(distlab_runtime::rpc::describe(&status));
            recorder.record(process, kind, f, Some(key), arg, error);
            (kind, None)
        }
    }
}

/// Codes after which a write certainly did not happen.
fn not_applied(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// A node the workload loads, and where its clients reach it (the client link proxy).
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    /// Its role in the project (`node`, `controller`, `broker`...).
    pub role: &'static str,
    pub addr: SocketAddr,
    /// Its admin address now (`/status`; no link proxy there), if it is up.
    pub admin: Option<SocketAddr>,
    /// Its data dir (what a node left there, e.g. a consumer's journal, for final reads).
    pub data_dir: std::path::PathBuf,
}

/// What the workload did on each node, for live figures (the console's sparklines): counts
/// since the start, and the latencies of successful operations since the last [`sample`].
///
/// [`sample`]: LoadStats::sample
#[derive(Default)]
pub struct LoadStats {
    per_node: Mutex<BTreeMap<String, NodeLoad>>,
}

struct NodeLoad {
    ok: u64,
    errors: u64,
    micros: hdrhistogram::Histogram<u64>,
}

/// One node's totals, and its latency since the previous sample.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSample {
    pub node: String,
    /// Operations that succeeded, since the start.
    pub ok: u64,
    /// Operations that failed or timed out (`fail` and `info`), since the start.
    pub errors: u64,
    /// Latency of the successful operations since the previous sample (None: there were none).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl LoadStats {
    fn record(&self, node: &str, kind: OpType, latency: Duration) {
        let mut per_node = self.per_node.lock().unwrap();
        let load = per_node
            .entry(node.to_string())
            .or_insert_with(|| NodeLoad {
                ok: 0,
                errors: 0,
                micros: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 2)
                    .expect("valid bounds"),
            });
        if kind == OpType::Ok {
            load.ok += 1;
            load.micros.saturating_record(latency.as_micros() as u64);
        } else {
            load.errors += 1;
        }
    }

    /// Every node's figures; starts a new latency window.
    pub fn sample(&self) -> Vec<LoadSample> {
        let mut per_node = self.per_node.lock().unwrap();
        per_node
            .iter_mut()
            .map(|(node, load)| {
                let ms = |q: f64| {
                    (!load.micros.is_empty())
                        .then(|| load.micros.value_at_quantile(q) as f64 / 1000.0)
                };
                let sample = LoadSample {
                    node: node.clone(),
                    ok: load.ok,
                    errors: load.errors,
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                };
                load.micros.reset();
                sample
            })
            .collect()
    }
}

/// One workload client: the project's operations, one at a time.
pub trait Client: Send + 'static {
    /// Does one operation as process `process` (recording it in the history) and says on
    /// which node and how it ended.
    fn operate<'a>(
        &'a mut self,
        process: u64,
        rng: &'a mut SmallRng,
    ) -> BoxFuture<'a, (String, OpType)>;
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A project's workload: how its clients are made, and how the run's last reads are done.
pub trait Driver: Sync {
    /// The clients of a workload with `spec` against `targets`.
    fn clients(
        &self,
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: &Arc<Recorder>,
    ) -> anyhow::Result<Vec<Box<dyn Client>>>;

    /// Reads what survived, after the faults: ordinary reads of the `FINAL_PROCESS` process,
    /// so the checkers see them. Retries patiently, up to `deadline`.
    fn final_reads<'a>(
        &'a self,
        spec: &'a WorkloadSpec,
        targets: &'a [Target],
        recorder: &'a Recorder,
        deadline: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// A running workload. Stops when [`Workload::stop`] is awaited or when dropped.
pub struct Workload {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    pub ops: Arc<AtomicU64>,
}

impl Workload {
    /// Starts one task per client, each running its operations one at a time, paced so all
    /// clients together make `spec.rate` operations a second (0: as fast as they can).
    pub fn start(
        spec: &WorkloadSpec,
        clients: Vec<Box<dyn Client>>,
        stats: Arc<LoadStats>,
        seed: u64,
    ) -> Self {
        let stop = CancellationToken::new();
        let ops = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let interval = (spec.rate > 0.0)
            .then(|| Duration::from_secs_f64(clients.len().max(1) as f64 / spec.rate));
        for (process, mut client) in clients.into_iter().enumerate() {
            let (stop, stats, ops) = (stop.clone(), stats.clone(), ops.clone());
            tasks.spawn(async move {
                let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(process as u64));
                let mut tick = interval.map(tokio::time::interval);
                loop {
                    if let Some(tick) = tick.as_mut() {
                        tokio::select! {
                            _ = tick.tick() => {}
                            () = stop.cancelled() => return,
                        }
                    } else if stop.is_cancelled() {
                        return;
                    }
                    let started = Instant::now();
                    let (node, outcome) = client.operate(process as u64, &mut rng).await;
                    stats.record(&node, outcome, started.elapsed());
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Self { stop, tasks, ops }
    }

    /// Stops every client after its current operation.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draws(spec: &WorkloadSpec) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = vec![0; spec.keys];
        for _ in 0..20_000 {
            counts[spec.next_key(&mut rng)] += 1;
        }
        counts
    }

    #[test]
    fn keys_are_uniform_by_default_and_skewed_with_zipf() {
        let uniform = WorkloadSpec {
            keys: 100,
            ..WorkloadSpec::default()
        };
        let counts = draws(&uniform);
        assert!(
            counts.iter().all(|&c| (100..300).contains(&c)),
            "{counts:?}"
        );

        let skewed = WorkloadSpec {
            zipf: 1.1,
            ..uniform
        };
        let counts = draws(&skewed);
        // Zipf(1.1) over 100 keys: the hottest key takes about a fifth of the draws, the
        // ten hottest about half; every key can still come up.
        assert!(counts[0] > 3_000, "{counts:?}");
        assert!(counts[..10].iter().sum::<usize>() > 8_000, "{counts:?}");
        assert!(counts[0] > 20 * counts[99], "{counts:?}");
        assert_eq!(counts.iter().sum::<usize>(), 20_000);
    }
}
