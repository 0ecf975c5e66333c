//! Histories, Jepsen-style: every operation a client attempts is recorded twice, once when it
//! is invoked and once when it completes, in the order the lab saw those events:
//!
//! ```json
//! {"index":0,"time":0.101,"process":3,"type":"invoke","f":"write","key":"k1","value":5}
//! {"index":1,"time":0.104,"process":3,"type":"ok","f":"write","key":"k1","value":5}
//! ```
//!
//! A completion is `ok` (it happened), `fail` (it certainly did not happen) or `info` (unknown:
//! a timeout, a crash; it may or may not have happened). Checkers read these; the order of the
//! lines is real time, which is what linearizability is defined against.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    /// Seconds since the run started.
    pub time: f64,
    /// The client that did it; one operation at a time per process.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The operation: `read`, `write`, `cas`, `delete`...
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Invoke: the argument; ok: the result (a read's value). `null` for none.
    #[serde(default)]
    pub value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What else the service reported (Project 0: the key's version after a write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<serde_json::Value>,
}

impl Op {
    /// The service answered: `ok`, or a `fail` that carries what the service said in `meta`
    /// (a cas whose expected value did not match: the service's "no", not an outage). A
    /// `fail` without `meta` is an error the client got instead of an answer.
    pub fn answered(&self) -> bool {
        match self.kind {
            OpType::Ok => true,
            OpType::Fail => self.meta.is_some(),
            OpType::Invoke | OpType::Info => false,
        }
    }
}

/// Processes at or above this number are the runner's final reads, not the workload.
pub const FINAL_PROCESS: u64 = 1_000_000;

/// Every completed operation with the invocation it answers (final reads included), in
/// completion order.
pub fn invocations_and_completions(history: &[Op]) -> Vec<(&Op, &Op)> {
    let mut invoked = std::collections::HashMap::new();
    let mut done = Vec::new();
    for op in history {
        if op.kind == OpType::Invoke {
            invoked.insert(op.process, op);
        } else if let Some(start) = invoked.remove(&op.process) {
            done.push((start, op));
        }
    }
    done
}

/// The workload's completed operations (final reads left out), in completion order, each with
/// the time it was invoked: what latency and throughput figures are made of.
pub fn completions(history: &[Op]) -> Vec<(f64, &Op)> {
    invocations_and_completions(history)
        .into_iter()
        .filter(|(_, op)| op.process < FINAL_PROCESS)
        .map(|(start, op)| (start.time, op))
        .collect()
}

/// A history being recorded: appended to in memory and to `history.jsonl`.
pub struct Recorder {
    started: Instant,
    inner: Mutex<(Vec<Op>, Option<std::io::BufWriter<std::fs::File>>)>,
}

impl Recorder {
    pub fn create(path: Option<&Path>) -> anyhow::Result<Self> {
        let file = match path {
            Some(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Self {
            started: Instant::now(),
            inner: Mutex::new((Vec::new(), file)),
        })
    }

    /// Appends an operation event, giving it its index and time.
    pub fn record(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        key: Option<&str>,
        value: serde_json::Value,
        error: Option<String>,
    ) -> Op {
        self.record_with(process, kind, f, key, value, error, None)
    }

    /// [`Recorder::record`] with service-specific `meta`.
    #[allow(clippy::too_many_arguments)]
    pub fn record_with(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        key: Option<&str>,
        value: serde_json::Value,
        error: Option<String>,
        meta: Option<serde_json::Value>,
    ) -> Op {
        let mut inner = self.inner.lock().unwrap();
        let op = Op {
            index: inner.0.len() as u64,
            time: self.started.elapsed().as_secs_f64(),
            process,
            kind,
            f: f.to_string(),
            key: key.map(str::to_string),
            value,
            error,
            meta,
        };
        if let Some(file) = inner.1.as_mut()
            && let Ok(line) = serde_json::to_string(&op)
        {
            let _ = writeln!(file, "{line}");
        }
        inner.0.push(op.clone());
        op
    }

    pub fn ops(&self) -> Vec<Op> {
        self.inner.lock().unwrap().0.clone()
    }

    pub fn flush(&self) -> std::io::Result<()> {
        match self.inner.lock().unwrap().1.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

/// Reads a `history.jsonl`; errors name the file, line and column.
pub fn load(path: &Path) -> anyhow::Result<Vec<Op>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ops = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}:{}: reading", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let op: Op = serde_json::from_str(&line).map_err(|e| {
            let message = super::serde_message(&e);
            distlab_runtime::BadInput(format!(
                "{}:{}:{}: {message}",
                path.display(),
                n + 1,
                e.column()
            ))
        })?;
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_histories_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::create(Some(&path)).unwrap();
        recorder.record(1, OpType::Invoke, "write", Some("k"), 5.into(), None);
        recorder.record(
            1,
            OpType::Info,
            "write",
            Some("k"),
            5.into(),
            Some("timeout".into()),
        );
        recorder.flush().unwrap();
        assert_eq!(load(&path).unwrap(), recorder.ops());
    }

    #[test]
    fn a_bad_line_is_named_by_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        std::fs::write(&path, "{\"index\":0,\"time\":0,\"process\":1,\"type\":\"invoke\",\"f\":\"read\"}\n{\"index\":1,\"type\":\"maybe\"}\n").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("history.jsonl:2:"), "{err}");
    }
}
