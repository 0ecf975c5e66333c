//! The supervisor against real nodes: process faults, restarts through the proxies, crash
//! detection, and no orphans when the lab itself is SIGKILLed.

use std::time::Duration;

use distlab_kv::client::{ClientOptions, KvClient};
use distlab_runtime::retry::RetryPolicy;
use lab::engine::events::EventKind;
use lab::engine::project;
use lab::engine::supervisor::{ProcessState, Supervisor};

const LAB: &str = env!("CARGO_BIN_EXE_lab");

fn client(addr: std::net::SocketAddr) -> KvClient {
    let policy = RetryPolicy {
        max_attempts: 3,
        attempt_timeout: Duration::from_millis(500),
        deadline: Duration::from_secs(2),
        ..RetryPolicy::default()
    };
    KvClient::connect_lazy(addr, ClientOptions { policy, tls: None }).unwrap()
}

async fn cluster(nodes: usize, runs: &std::path::Path) -> Supervisor {
    let proj0 = project::find("proj0").unwrap();
    let supervisor = Supervisor::new(project::ClusterSpec::new(proj0, nodes, 7), runs, LAB.into())
        .await
        .unwrap();
    supervisor.start_all().await.unwrap();
    supervisor
}

#[tokio::test]
async fn kill_restart_pause_resume_through_the_proxies() {
    let runs = tempfile::tempdir().unwrap();
    let supervisor = cluster(2, runs.path()).await;
    let nodes = supervisor.nodes().await;
    assert!(
        nodes
            .iter()
            .all(|n| n.state == ProcessState::Running && n.pid.is_some())
    );
    let n1 = client(nodes[0].client);
    n1.put("k", "v").await.unwrap();

    supervisor.kill("n1").await.unwrap();
    assert_eq!(supervisor.nodes().await[0].state, ProcessState::Down);
    assert!(n1.get("k").await.is_err(), "a killed node does not answer");

    // Same data dir, a new process (and usually a new port); clients keep the proxy address.
    supervisor.restart("n1").await.unwrap();
    let after = supervisor.nodes().await;
    assert_eq!(after[0].restarts, 1);
    assert_ne!(after[0].pid, nodes[0].pid, "a new process");
    assert_eq!(
        n1.get("k").await.unwrap().unwrap().value,
        b"v",
        "the write survived the SIGKILL"
    );

    supervisor.pause("n2").await.unwrap();
    assert_eq!(supervisor.nodes().await[1].state, ProcessState::Paused);
    let n2 = client(nodes[1].client);
    let stalled = n2.get("k").await.unwrap_err();
    assert_eq!(stalled.code(), tonic::Code::DeadlineExceeded, "{stalled:?}");
    supervisor.resume("n2").await.unwrap();
    assert_eq!(n2.get("k").await.unwrap(), None);

    let kinds: Vec<_> = supervisor
        .timeline()
        .events()
        .iter()
        .map(|e| (e.kind, e.what.clone()))
        .collect();
    assert!(
        kinds
            .iter()
            .any(|(k, w)| *k == EventKind::Fault && w.starts_with("kill"))
    );
    assert!(
        kinds
            .iter()
            .any(|(k, w)| *k == EventKind::Fault && w.starts_with("pause"))
    );
    assert!(
        !kinds.iter().any(|(k, _)| *k == EventKind::NodeCrashed),
        "lab-made exits are not crashes"
    );
    assert!(supervisor.run_dir().path().join("n1/node.log").exists());
    supervisor.stop_all().await;
}

#[tokio::test]
async fn an_exit_the_lab_did_not_cause_is_recorded_as_a_crash() {
    let runs = tempfile::tempdir().unwrap();
    let supervisor = cluster(1, runs.path()).await;
    let pid = supervisor.nodes().await[0].pid.unwrap();
    let mut events = supervisor.timeline().subscribe();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let crash = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = events.recv().await.unwrap();
            if event.kind == EventKind::NodeCrashed {
                return event;
            }
        }
    })
    .await
    .expect("the crash is noticed");
    assert_eq!(crash.node.as_deref(), Some("n1"));
    assert!(crash.what.contains("signal: 9"), "{}", crash.what);
    assert_eq!(supervisor.nodes().await[0].state, ProcessState::Down);
}

/// Whether `pid` is gone (or a zombie nobody has reaped yet: it runs nothing).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn sigkill_the_lab_and_no_node_survives() {
    use std::io::BufRead;
    let runs = tempfile::tempdir().unwrap();
    let mut lab = std::process::Command::new(LAB)
        .args(["up", "proj0", "--nodes", "3", "--runs-dir"])
        .arg(runs.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(lab.stdout.take().unwrap());
    let mut pids = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if line.starts_with(r#"{"event":"cluster_up""#) {
            let up: serde_json::Value = serde_json::from_str(&line).unwrap();
            pids = up["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["pid"].as_u64().unwrap() as u32)
                .collect();
            break;
        }
    }
    assert_eq!(pids.len(), 3, "the cluster came up");
    assert!(pids.iter().all(|pid| !gone(*pid)));

    lab.kill().unwrap(); // SIGKILL: the lab gets no chance to clean up
    lab.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|pid| gone(*pid)) {
        assert!(
            std::time::Instant::now() < deadline,
            "orphans left: {:?}",
            pids.iter().filter(|p| !gone(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `lab up` stops its cluster on a SIGINT sent the moment it says the cluster is up: the
/// signal lands while it prints the addresses, before it waits for Ctrl-C, and must not be
/// lost (it once was: a `ctrl_c()` made for the wait heard only later signals).
#[test]
fn lab_up_stops_on_a_sigint_sent_as_soon_as_the_cluster_is_up() {
    use std::io::BufRead;
    let runs = tempfile::tempdir().unwrap();
    let mut lab = std::process::Command::new(LAB)
        .args(["up", "proj0", "--nodes", "1", "--runs-dir"])
        .arg(runs.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(lab.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with(r#"{"event":"cluster_up""#) {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "lab up ended early"
        );
    }
    let pid = nix::unistd::Pid::from_raw(lab.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let rest =
        std::thread::spawn(move || stdout.lines().map(Result::unwrap).collect::<Vec<String>>());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = lab.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = lab.kill();
            panic!("lab up did not stop on SIGINT: {:?}", rest.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest = rest.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(rest.iter().any(|l| l.starts_with("stopped;")), "{rest:?}");
}

/// The model shows a paused node as unresponsive within a few polls, while the others stay
/// responsive: polling one node never waits on another.
#[tokio::test]
async fn the_model_sees_a_paused_node_as_unresponsive() {
    use lab::engine::model::{Health, spawn_poller};
    let runs = tempfile::tempdir().unwrap();
    let supervisor = std::sync::Arc::new(cluster(2, runs.path()).await);
    let model = spawn_poller(supervisor.clone());
    let wait_for = |want: [Health; 2]| {
        let mut model = model.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    model.changed().await.unwrap();
                    let m = model.borrow_and_update().clone();
                    if m.nodes.iter().map(|n| n.health).collect::<Vec<_>>() == want {
                        return m;
                    }
                }
            })
            .await
            .expect("the model reached the expected health")
        }
    };
    let up = wait_for([Health::Responsive, Health::Responsive]).await;
    assert_eq!(up.nodes[0].role.as_deref(), Some("server"));
    assert_eq!(up.nodes[0].detail["config"]["store"], "sled");

    supervisor.pause("n2").await.unwrap();
    let paused = wait_for([Health::Responsive, Health::Unresponsive]).await;
    assert_eq!(
        paused.nodes[1].role.as_deref(),
        Some("server"),
        "last known role kept"
    );
    supervisor.resume("n2").await.unwrap();
    wait_for([Health::Responsive, Health::Responsive]).await;
    supervisor.kill("n1").await.unwrap();
    wait_for([Health::Down, Health::Responsive]).await;
    supervisor.stop_all().await;
}

#[tokio::test]
async fn a_cluster_grows_by_its_spares_and_no_further() {
    let runs = tempfile::tempdir().unwrap();
    let supervisor = cluster(1, runs.path()).await;
    assert_eq!(supervisor.ids(), ["n1"], "spares are not members");
    assert_eq!(supervisor.nodes().await.len(), 1);
    assert!(
        supervisor.kill("n2").await.is_err(),
        "a spare cannot be faulted before it is added"
    );

    assert_eq!(supervisor.add_node().await.unwrap(), "n2");
    let nodes = supervisor.nodes().await;
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1].state, ProcessState::Running);
    let n2 = client(nodes[1].client);
    n2.put("k", "v").await.unwrap();
    assert!(
        supervisor
            .timeline()
            .events()
            .iter()
            .any(|e| e.what == "add-node" && e.node.as_deref() == Some("n2"))
    );

    assert_eq!(supervisor.add_node().await.unwrap(), "n3");
    let e = supervisor.add_node().await.unwrap_err().to_string();
    assert!(e.contains("cannot grow beyond 3 nodes"), "{e}");
    supervisor.stop_all().await;
}
