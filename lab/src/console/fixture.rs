//! Fixed, fake cluster states for the console's tests: no processes, no clocks, so a
//! rendering is the same on every run.

use super::app::{App, LoadFigures};
use crate::engine::events::{Event, EventKind};
use crate::engine::model::{ClusterModel, Health, NodeView};
use crate::engine::project;
use crate::engine::supervisor::{NodeInfo, ProcessState};
use crate::engine::workload::LoadSample;

pub fn node(id: &str, state: ProcessState, health: Health) -> NodeView {
    let number: u32 = id
        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
        .parse()
        .unwrap_or(1);
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

/// A Project 3 console on view `view`: brokers b1-b3 with b3 killed (its replicas offline) and
/// b2 fallen out of events/0's ISR; consumer g2 killed, g1 holding every partition with a
/// backlog; the ISR and rebalance events on the timeline.
pub fn log_app(view: usize) -> App {
    let running = |id: &str, role: &'static str, detail: serde_json::Value| {
        let mut v = node(id, ProcessState::Running, Health::Responsive);
        v.node.role = role;
        v.role = Some(role.into());
        v.detail = detail;
        v
    };
    let partition = |name: &str, role: &str, leader: &str, isr: &[&str], ends: (u64, u64)| {
        serde_json::json!({
            "name": name, "role": role, "leader": leader, "leader_epoch": 1,
            "replicas": ["b1", "b2", "b3"], "isr": isr,
            "log_start": 0, "log_end": ends.0, "high_watermark": ends.1,
        })
    };
    let group = serde_json::json!({
        "group": "lab", "state": "stable", "generation": 4, "rebalances": 3,
        "last_rebalance": {"generation": 4, "took_ms": 535, "reason": "g2-b1e0-2's session expired", "members": 1},
        "partitions": {
            "events/0": {"committed": 1480, "high_watermark": 1500, "lag": 20, "member": "g1-b1e0-1"},
            "events/1": {"committed": 1490, "high_watermark": 1490, "lag": 0, "member": "g1-b1e0-1"},
        },
    });
    let b1 = running(
        "b1",
        "broker",
        serde_json::json!({
            "epoch": 9, "metadata_version": 40,
            "partitions": [
                partition("events/0", "leader", "b1", &["b1"], (1520, 1500)),
                partition("events/1", "follower", "b2", &["b2", "b1"], (1490, 1490)),
                partition("__consumer_offsets/0", "leader", "b1", &["b1", "b2"], (300, 300)),
            ],
            "groups": [group],
        }),
    );
    let b2 = running(
        "b2",
        "broker",
        serde_json::json!({
            "epoch": 10, "metadata_version": 40,
            "partitions": [
                partition("events/0", "follower", "b1", &["b1"], (900, 900)),
                partition("events/1", "leader", "b2", &["b2", "b1"], (1490, 1490)),
                partition("__consumer_offsets/0", "follower", "b1", &["b1", "b2"], (300, 300)),
            ],
            "groups": [],
        }),
    );
    let mut b3 = running("b3", "broker", serde_json::json!({}));
    b3.node.state = ProcessState::Down;
    b3.node.pid = None;
    b3.health = Health::Down;
    let g1 = running(
        "g1",
        "consumer",
        serde_json::json!({
            "state": "member", "member": "g1-b1e0-1", "generation": 4,
            "assignment": ["events/0", "events/1"], "total_lag": 20,
            "config": {"group": "lab"},
        }),
    );
    let mut g2 = running(
        "g2",
        "consumer",
        serde_json::json!({
            "state": "member", "member": "g2-b1e0-2", "generation": 3,
            "assignment": ["events/1"], "total_lag": 0, "config": {"group": "lab"},
        }),
    );
    g2.node.state = ProcessState::Down;
    g2.node.pid = None;
    g2.health = Health::Down;
    let mut app = App::new(project::find("proj3").unwrap(), 3);
    app.view = view;
    app.observe(ClusterModel {
        project: "proj3",
        elapsed_secs: 30.0,
        nodes: vec![b1, b2, b3, g1, g2],
    });
    for lag in [0, 2, 1, 0, 3, 40, 180, 260, 120, 60, 20] {
        app.model.nodes[3].detail["total_lag"] = lag.into();
        app.model.nodes[3].detail["lag"] =
            serde_json::json!({"events/0": lag, "events/1": lag / 4});
        app.sample(&[]);
    }
    for (t, node, what) in [
        (
            12.0,
            "b1",
            "isr_shrink_proposed: events/0: followers fell behind; proposing ISR [b1]",
        ),
        (12.1, "c1", "isr_changed: events/0: ISR [b1]"),
        (
            18.0,
            "b2",
            "rebalance_started: group lab: rebalancing (g2-b1e0-2's session expired)",
        ),
        (
            18.5,
            "b2",
            "rebalance_completed: group lab: generation 4 with 1 members after 535 ms",
        ),
        (
            18.6,
            "g1",
            "joined_generation: joined generation 4 as g1-b1e0-1 with [events/0, events/1]",
        ),
    ] {
        app.push_event(Event {
            t,
            kind: EventKind::NodeEvent,
            node: Some(node.into()),
            what: what.into(),
            fields: Default::default(),
        });
    }
    app
}
