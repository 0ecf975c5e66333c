//! Workloads: in-process clients that load the cluster through the client link proxies and
//! record every operation in the run's history.
//!
//! Project 0's workload is a register workload over the kv service: each client reads, writes
//! or deletes keys of a small key set (contention on purpose), with unique integer values so a
//! read names the write it saw. Writes go through the real client library: idempotency token,
//! retries within the operation's timeout. An operation that fails with a code meaning "not
//! applied" is recorded `fail`; any other failure (timeout, unavailable) is `info`: it may
//! have happened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// A running workload. Stops when [`Workload::stop`] is awaited or when dropped.
pub struct Workload {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    pub ops: Arc<AtomicU64>,
}

impl Workload {
    /// Starts the register workload against `targets` (clients spread over them).
    pub fn start_registers(
        spec: &WorkloadSpec,
        targets: &[SocketAddr],
        recorder: Arc<Recorder>,
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
            let client = KvClient::connect_lazy(
                targets[process % targets.len()],
                ClientOptions {
                    policy: policy.clone(),
                    tls: None,
                },
            )?;
            let (stop, recorder, ops, spec) =
                (stop.clone(), recorder.clone(), ops.clone(), spec.clone());
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
                    let key = format!("k{}", rng.random_range(0..spec.keys.max(1)));
                    let p = process as u64;
                    if rng.random_bool(spec.reads.clamp(0.0, 1.0)) {
                        recorded_read(&client, &recorder, p, &key, false).await;
                    } else if rng.random_bool(spec.deletes.clamp(0.0, 1.0)) {
                        recorder.record(p, OpType::Invoke, "delete", Some(&key), json!(null), None);
                        match client.delete(key.clone()).await {
                            Ok(existed) => {
                                let meta = Some(json!({ "existed": existed }));
                                recorder.record_with(
                                    p,
                                    OpType::Ok,
                                    "delete",
                                    Some(&key),
                                    json!(null),
                                    None,
                                    meta,
                                );
                            }
                            Err(status) => {
                                let kind = if not_applied(status.code()) {
                                    OpType::Fail
                                } else {
                                    OpType::Info
                                };
                                let error = Some(distlab_runtime::rpc::describe(&status));
                                recorder.record(p, kind, "delete", Some(&key), json!(null), error);
                            }
                        }
                    } else {
                        next_value += 1;
                        let value = (p as i64) * 1_000_000 + next_value;
                        recorder.record(p, OpType::Invoke, "write", Some(&key), json!(value), None);
                        match client.put(key.clone(), value.to_string()).await {
                            Ok(outcome) => {
                                recorder.record_with(
                                    p,
                                    OpType::Ok,
                                    "write",
                                    Some(&key),
                                    json!(value),
                                    None,
                                    Some(json!({"version": outcome.version})),
                                );
                            }
                            Err(status) => {
                                let kind = if not_applied(status.code()) {
                                    OpType::Fail
                                } else {
                                    OpType::Info
                                };
                                recorder.record(
                                    p,
                                    kind,
                                    "write",
                                    Some(&key),
                                    json!(value),
                                    Some(distlab_runtime::rpc::describe(&status)),
                                );
                            }
                        }
                    }
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
    target: SocketAddr,
    recorder: &Recorder,
    deadline: Duration,
) -> anyhow::Result<()> {
    let policy = RetryPolicy {
        max_attempts: 50,
        attempt_timeout: Duration::from_secs(1),
        deadline,
        ..RetryPolicy::default()
    };
    let client = KvClient::connect_lazy(target, ClientOptions { policy, tls: None })?;
    for k in 0..spec.keys.max(1) {
        recorded_read(&client, recorder, FINAL_PROCESS, &format!("k{k}"), true).await;
    }
    Ok(())
}

/// Reads `key` and records it: `invoke`, then `ok` with the value and the key's version (and
/// `final` for the final reads), or `fail` (a read that failed changed nothing).
async fn recorded_read(
    client: &KvClient,
    recorder: &Recorder,
    process: u64,
    key: &str,
    final_read: bool,
) {
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
        }
        Err(status) => {
            let error = Some(distlab_runtime::rpc::describe(&status));
            recorder.record(process, OpType::Fail, "read", Some(key), json!(null), error);
        }
    }
}
