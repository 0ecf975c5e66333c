//! The run's timeline: faults applied, processes started and exited, node log events. Kept
//! in memory for the console, appended to `events.jsonl` in the run dir, and broadcast to
//! whoever follows the run live.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// The note the supervisor records as it stops every node at the end of a run: what comes
/// after it (graceful leaves, for one) is the lab tearing down, not the scenario.
pub const STOPPING_CLUSTER: &str = "stopping the cluster";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A node process was started (or restarted) and printed its ready line.
    NodeUp,
    /// A node process exited because the lab stopped it (kill, terminate).
    NodeStopped,
    /// A node process exited on its own: a crash.
    NodeCrashed,
    /// A fault was applied or removed (pause, resume, partition, link, heal...).
    Fault,
    /// Something a node logged with an `event` field (became_leader...).
    NodeEvent,
    /// A scenario step, a mark, a checker verdict.
    Note,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Seconds since the run started.
    pub t: f64,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub what: String,
    /// A node event's own fields (`"term": 3` of a `became_leader`), for checkers.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A saved timeline (`events.jsonl`); errors name the file and line.
pub fn load(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not a timeline event", path.display(), i + 1))
        })
        .collect()
}

pub struct Timeline {
    started: Instant,
    events: Mutex<Vec<Event>>,
    file: Option<Mutex<std::fs::File>>,
    live: broadcast::Sender<Event>,
}

impl Timeline {
    /// A timeline that also appends to `path` (one JSON object per line).
    pub fn create(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(path) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )),
            None => None,
        };
        Ok(Self {
            started: Instant::now(),
            events: Mutex::new(Vec::new()),
            file,
            live: broadcast::channel(1024).0,
        })
    }

    pub fn record(&self, kind: EventKind, node: Option<&str>, what: impl Into<String>) -> Event {
        self.record_with(kind, node, what, serde_json::Map::new())
    }

    /// [`Timeline::record`] with fields a checker may read.
    pub fn record_with(
        &self,
        kind: EventKind,
        node: Option<&str>,
        what: impl Into<String>,
        fields: serde_json::Map<String, serde_json::Value>,
    ) -> Event {
        let event = Event {
            t: self.started.elapsed().as_secs_f64(),
            kind,
            node: node.map(str::to_string),
            what: what.into(),
            fields,
        };
        if let Some(file) = &self.file
            && let Ok(line) = serde_json::to_string(&event)
        {
            let _ = writeln!(file.lock().unwrap(), "{line}");
        }
        // Sent while the history is locked, so `follow` sees every event exactly once.
        let mut events = self.events.lock().unwrap();
        events.push(event.clone());
        let _ = self.live.send(event.clone());
        drop(events);
        event
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// Every event so far, and the ones after it: none missed, none twice.
    pub fn follow(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let events = self.events.lock().unwrap();
        (events.clone(), self.live.subscribe())
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}
