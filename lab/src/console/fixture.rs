//! Fixed, fake cluster states for the console's tests: no processes, no clocks, so a
//! rendering is the same on every run.

use super::app::{App, LoadFigures};
use crate::engine::events::{Event, EventKind};
use crate::engine::model::{ClusterModel, Health, NodeView};
use crate::engine::project;
use crate::engine::supervisor::{NodeInfo, ProcessState};
use crate::engine::workload::LoadSample;

pub fn node(id: &str, state: ProcessState, health: Health) -> NodeView {
    let number: u32 = id.trim_start_matches('n').parse().unwrap_or(0);
    NodeView {
        node: NodeInfo {
            id: id.into(),
            role: "server",
            state,
            pid: (state != ProcessState::Down).then_some(4000 + number),
            grpc: None,
            client: "127.0.0.1:1".parse().unwrap(),
            admin: None,
            restarts: u32::from(state == ProcessState::Down),
            data_dir: std::path::PathBuf::from("/nonexistent"),
        },
        health,
        role: Some("server".into()),
        detail: serde_json::json!({"keys": 8 + number, "tokens": 40 * number, "replays": number - 1}),
        status_age_secs: Some(0.1),
        uptime_secs: Some(60.0 + f64::from(number)),
    }
}

/// A Project 0 console showing these nodes, and nothing else yet.
pub fn with_nodes(nodes: Vec<NodeView>) -> App {
    let mut app = App::new(project::find("proj0").unwrap(), 1);
    app.observe(ClusterModel {
        project: "proj0",
        elapsed_secs: 1.0,
        nodes,
    });
    app
}

/// A Project 0 cluster of four nodes: running, paused, down, unresponsive; a workload with
/// a few seconds of figures; a timeline; a log.
pub fn app() -> App {
    let mut app = with_nodes(vec![
        node("n1", ProcessState::Running, Health::Responsive),
        node("n2", ProcessState::Paused, Health::Unresponsive),
        node("n3", ProcessState::Down, Health::Down),
        node("n4", ProcessState::Running, Health::Unresponsive),
    ]);
    app.model.elapsed_secs = 83.0;
    let sample = |node: &str, ok: u64, errors: u64| LoadSample {
        node: node.into(),
        ok,
        errors,
        p50_ms: Some(1.5),
        p99_ms: Some(7.25),
    };
    for second in 0..12u64 {
        app.sample(&[
            sample("n1", second * second * 3, second / 4),
            sample("n2", second * 10, second * 2),
            sample("n4", second * 5, 0),
        ]);
    }
    app.load = LoadFigures {
        running: true,
        rate: 20.0,
        ..app.load
    };
    let events = [
        (
            0.1,
            EventKind::NodeUp,
            Some("n1"),
            "pid 4001 grpc 127.0.0.1:5001",
        ),
        (12.5, EventKind::Fault, Some("n3"), "kill (SIGKILL)"),
        (
            12.5,
            EventKind::NodeStopped,
            Some("n3"),
            "exited: signal: 9 (SIGKILL)",
        ),
        (30.0, EventKind::Fault, Some("n2"), "pause (SIGSTOP)"),
        (
            41.0,
            EventKind::NodeEvent,
            Some("n1"),
            "store_opened: sled store opened",
        ),
        (50.0, EventKind::Note, None, "mark: storm"),
    ];
    for (t, kind, node, what) in events {
        app.push_event(Event {
            t,
            kind,
            node: node.map(str::to_string),
            what: what.into(),
            fields: Default::default(),
        });
    }
    app.logs = vec![
        r#"{"timestamp":"2026-11-24T03:02:19.223892Z","level":"INFO","message":"sled store opened","event":"store_opened","keys":0,"target":"distlab_kv::store"}"#.into(),
        r#"{"event":"ready","id":"n1","grpc":"127.0.0.1:5001","admin":"127.0.0.1:6001","pid":4001}"#.into(),
        r#"{"timestamp":"2026-11-24T03:02:19.225057Z","level":"WARN","message":"slow fsync","millis":41,"target":"distlab_kv::store"}"#.into(),
        "not json at all".into(),
    ];
    app
}

/// A Project 2 console: a 3-node Raft cluster whose old leader (n3) was killed, n1 leading
/// in term 3 with n2 one entry behind, a snapshot taken; the elections on the timeline.
pub fn raft_app() -> App {
    let raft = |id: &str, role: &str, term: u64, applied: u64, last: u64| {
        let mut view = node(id, ProcessState::Running, Health::Responsive);
        view.role = Some(role.into());
        view.detail = serde_json::json!({
            "term": term, "leader": "n1", "snapshot": 500, "purged": 100, "applied": applied,
            "committed": applied, "last_log_index": last, "log_entries": last - 400,
            "membership": {"joint": false, "voters": 3, "configs": [["n2", "n1", "n3"]], "learners": []},
            "replication": {"n1": {"matched": last, "lag": 0}, "n2": {"matched": 1203, "lag": 1}},
        });
        view
    };
    let mut n3 = raft("n3", "leader", 2, 900, 902);
    n3.node.state = ProcessState::Down;
    n3.node.pid = None;
    n3.health = Health::Down;
    let mut app = App::new(project::find("proj2").unwrap(), 2);
    app.observe(ClusterModel {
        project: "proj2",
        elapsed_secs: 40.0,
        nodes: vec![
            raft("n1", "leader", 3, 1204, 1204),
            raft("n2", "follower", 3, 1203, 1203),
            n3,
        ],
    });
    let event = |t: f64, kind: EventKind, node: &str, what: &str, term: Option<u64>| Event {
        t,
        kind,
        node: Some(node.into()),
        what: what.into(),
        fields: term
            .map(|term| {
                serde_json::json!({ "term": term })
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .unwrap_or_default(),
    };
    for e in [
        event(
            0.3,
            EventKind::NodeEvent,
            "n3",
            "election_started: asking for votes",
            Some(2),
        ),
        event(
            0.4,
            EventKind::NodeEvent,
            "n3",
            "became_leader: became leader in term 2",
            Some(2),
        ),
        event(
            20.0,
            EventKind::NodeStopped,
            "n3",
            "exited: signal: 9 (SIGKILL)",
            None,
        ),
        event(
            20.4,
            EventKind::NodeEvent,
            "n1",
            "election_started: asking for votes",
            Some(3),
        ),
        event(
            20.5,
            EventKind::NodeEvent,
            "n1",
            "became_leader: became leader in term 3",
            Some(3),
        ),
    ] {
        app.push_event(e);
    }
    app
}
