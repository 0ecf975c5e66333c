//! Workloads: in-process clients that load the cluster through the client link proxies and
//! record every operation in the run's history.
//!
//! Project 0's workload is a register workload over the kv service: each client reads, writes
//! or deletes keys of a small key set (contention on purpose), with unique integer values so a
//! read names the write it saw. Project 0's nodes are independent stores, so the key set is
//! per node (`n2:k3` lives on n2 only) and each operation picks a node, then a key. Writes go through the real client library: idempotency token,
//! retries within the operation's timeout. An operation that fails with a code meaning "not
//! applied" is recorded `fail`; any other failure (timeout, unavailable) is `info`: it may
//! have happened.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use distlab_kv::client::{ClientOptions, KvClient};
use distlab_runtime::retry::RetryPolicy;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::history::{FINAL_PROCESS, OpType, Recorder};

/// The workload section of a scenario.
#[derive(Debug, Clone, Deserialize)]
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

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            clients: default_clients(),
            rate: default_rate(),
            keys: default_keys(),
            timeout: default_timeout(),
            reads: default_reads(),
            deletes: default_deletes(),
        }
    }
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
    pub addr: SocketAddr,
}

impl Target {
    /// The name of key `index` of this node's key set.
    fn key(&self, index: usize) -> String {
        format!("{}:k{index}", self.node)
    }
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

/// A running workload. Stops when [`Workload::stop`] is awaited or when dropped.
pub struct Workload {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    pub ops: Arc<AtomicU64>,
}

impl Workload {
    /// Starts the register workload against `targets`: each operation picks a node, then a
    /// key of that node's key set.
    pub fn start_registers(
        spec: &WorkloadSpec,
        targets: &[Target],
        recorder: Arc<Recorder>,
        stats: Arc<LoadStats>,
        seed: u64,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!targets.is_empty(), "a workload needs at least one node");
        let stop = CancellationToken::new();
        let ops = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let policy = RetryPolicy {
            attempt_timeout: (spec.timeout / 2).max(Duration::from_millis(50)),
            deadline: spec.timeout,
            initial_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        let interval =
            (spec.rate > 0.0).then(|| Duration::from_secs_f64(spec.clients as f64 / spec.rate));
        for process in 0..spec.clients {
            let clients = targets
                .iter()
                .map(|target| {
                    let options = ClientOptions {
                        policy: policy.clone(),
                        tls: None,
                    };
                    Ok((
                        target.clone(),
                        KvClient::connect_lazy(target.addr, options)?,
                    ))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let (stop, recorder, stats, ops, spec) = (
                stop.clone(),
                recorder.clone(),
                stats.clone(),
                ops.clone(),
                spec.clone(),
            );
            tasks.spawn(async move {
                let mut rng = SmallRng::seed_from_u64(seed.wrapping_add(process as u64));
                let mut next_value = 0i64;
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
                    let (target, client) = &clients[rng.random_range(0..clients.len())];
                    let key = target.key(rng.random_range(0..spec.keys.max(1)));
                    let p = process as u64;
                    let started = Instant::now();
                    let outcome = if rng.random_bool(spec.reads.clamp(0.0, 1.0)) {
                        recorded_read(client, &recorder, p, &key, false).await
                    } else if rng.random_bool(spec.deletes.clamp(0.0, 1.0)) {
                        recorded_delete(client, &recorder, p, &key).await
                    } else {
                        next_value += 1;
                        let value = (p as i64) * 1_000_000 + next_value;
                        recorded_write(client, &recorder, p, &key, value).await
                    };
                    stats.record(&target.node, outcome, started.elapsed());
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        Ok(Self { stop, tasks, ops })
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

/// Reads every key once more after the faults are over, recording them as ordinary reads of
/// extra processes: the checkers then see what survived. Retries patiently (`deadline`).
pub async fn final_reads(
    spec: &WorkloadSpec,
    targets: &[Target],
    recorder: &Recorder,
    deadline: Duration,
) -> anyhow::Result<()> {
    let policy = RetryPolicy {
        max_attempts: 50,
        attempt_timeout: Duration::from_secs(1),
        deadline,
        ..RetryPolicy::default()
    };
    for target in targets {
        let options = ClientOptions {
            policy: policy.clone(),
            tls: None,
        };
        let client = KvClient::connect_lazy(target.addr, options)?;
        for k in 0..spec.keys.max(1) {
            recorded_read(&client, recorder, FINAL_PROCESS, &target.key(k), true).await;
        }
    }
    Ok(())
}

/// Deletes `key` and records it: `ok` with whether it existed, `fail` if the code says it
/// was not applied, `info` otherwise.
async fn recorded_delete(client: &KvClient, recorder: &Recorder, p: u64, key: &str) -> OpType {
    recorder.record(p, OpType::Invoke, "delete", Some(key), json!(null), None);
    match client.delete(key.to_string()).await {
        Ok(existed) => {
            let meta = Some(json!({ "existed": existed }));
            recorder.record_with(p, OpType::Ok, "delete", Some(key), json!(null), None, meta);
            OpType::Ok
        }
        Err(status) => {
            let kind = failure_kind(status.code());
            let error = Some(distlab_runtime::rpc::describe(&status));
            recorder.record(p, kind, "delete", Some(key), json!(null), error);
            kind
        }
    }
}

/// Writes `value` to `key` and records it, with the key's new version.
async fn recorded_write(
    client: &KvClient,
    recorder: &Recorder,
    p: u64,
    key: &str,
    value: i64,
) -> OpType {
    recorder.record(p, OpType::Invoke, "write", Some(key), json!(value), None);
    match client.put(key.to_string(), value.to_string()).await {
        Ok(outcome) => {
            let meta = Some(json!({"version": outcome.version}));
            recorder.record_with(p, OpType::Ok, "write", Some(key), json!(value), None, meta);
            OpType::Ok
        }
        Err(status) => {
            let kind = failure_kind(status.code());
            let error = Some(distlab_runtime::rpc::describe(&status));
            recorder.record(p, kind, "write", Some(key), json!(value), error);
            kind
        }
    }
}

/// `fail` when the code says a mutation was certainly not applied, else `info`.
fn failure_kind(code: Code) -> OpType {
    if not_applied(code) {
        OpType::Fail
    } else {
        OpType::Info
    }
}

/// Reads `key` and records it: `invoke`, then `ok` with the value and the key's version (and
/// `final` for the final reads), or `fail` (a read that failed changed nothing).
async fn recorded_read(
    client: &KvClient,
    recorder: &Recorder,
    process: u64,
    key: &str,
    final_read: bool,
) -> OpType {
    recorder.record(
        process,
        OpType::Invoke,
        "read",
        Some(key),
        json!(null),
        None,
    );
    match client.get(key.to_string()).await {
        Ok(found) => {
            let value = found
                .as_ref()
                .and_then(|v| String::from_utf8_lossy(&v.value).parse::<i64>().ok());
            let meta = found.map(|v| {
                if final_read {
                    json!({"version": v.version, "final": true})
                } else {
                    json!({"version": v.version})
                }
            });
            recorder.record_with(
                process,
                OpType::Ok,
                "read",
                Some(key),
                json!(value),
                None,
                meta,
            );
            OpType::Ok
        }
        Err(status) => {
            let error = Some(distlab_runtime::rpc::describe(&status));
            recorder.record(process, OpType::Fail, "read", Some(key), json!(null), error);
            OpType::Fail
        }
    }
}
