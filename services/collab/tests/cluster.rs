//! End-to-end: real `collab serve` processes, two servers (two regions) and an editor on each.
//! Concurrent edits converge; an acknowledged edit survives `kill -9` of its server; an
//! editor whose server is down keeps editing and merges when it is back; forged and damaged
//! messages are refused without harm.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use distlab_collab::sync::{Frame, Message};
use distlab_collab::{Dot, Frontier, Op, ReplicaId, VersionVector};
use distlab_runtime::launch::{NodeProcess, free_ports};
use futures_util::{SinkExt, StreamExt};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);

fn serve(
    id: &str,
    listen: &str,
    dir: &Path,
    peers: &[(&str, SocketAddr)],
    extra: &[&str],
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_collab"));
    command
        .args([
            "serve",
            "--id",
            id,
            "--listen",
            listen,
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join(id))
        .args(["--anti-entropy", "200ms"])
        .args(extra);
    for (peer, addr) in peers {
        command.arg("--peer").arg(format!("{peer}={addr}"));
    }
    command
}

async fn start(command: Command) -> NodeProcess {
    NodeProcess::spawn(command, Duration::from_secs(20))
        .await
        .expect("node starts")
}

async fn server(
    id: &str,
    listen: SocketAddr,
    dir: &Path,
    peers: &[(&str, SocketAddr)],
) -> NodeProcess {
    start(serve(
        id,
        &listen.to_string(),
        dir,
        peers,
        &["--role", "server"],
    ))
    .await
}

async fn editor(id: &str, dir: &Path, server: (&str, SocketAddr)) -> NodeProcess {
    start(serve(
        id,
        "127.0.0.1:0",
        dir,
        &[server],
        &["--role", "editor", "--doc", "notes"],
    ))
    .await
}

async fn status(node: &NodeProcess) -> serde_json::Value {
    let url = format!("http://{}/status", node.ready().admin);
    reqwest::get(url)
        .await
        .expect("status")
        .json()
        .await
        .expect("status JSON")
}

async fn text(node: &NodeProcess) -> String {
    let url = format!("http://{}/text", node.ready().grpc);
    reqwest::get(url)
        .await
        .expect("text")
        .text()
        .await
        .expect("text body")
}

async fn edit(node: &NodeProcess, body: serde_json::Value) {
    let url = format!("http://{}/edit", node.ready().grpc);
    let response = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("edit");
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
}

/// The document's digest as `node` reports it.
async fn digest(node: &NodeProcess) -> Option<String> {
    let detail = &status(node).await["detail"];
    let doc = if detail["docs"].is_array() {
        detail["docs"]
            .as_array()?
            .iter()
            .find(|d| d["name"] == "notes")?
            .clone()
    } else {
        detail.clone()
    };
    Some(doc["digest"].as_str()?.to_string())
}

/// Waits until every node reports the same digest; the editors' common text.
async fn converged(editors: &[&NodeProcess], servers: &[&NodeProcess]) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut digests = Vec::new();
        for node in editors.iter().chain(servers) {
            digests.push(digest(node).await);
        }
        if digests[0].is_some() && digests.iter().all(|d| *d == digests[0]) {
            return text(editors[0]).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: {digests:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `node` reports a refusal containing `needle`; its detail then.
async fn refused(node: &NodeProcess, needle: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let detail = status(node).await["detail"].clone();
        let found = detail["refused"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r.as_str().unwrap_or_default().contains(needle))
        });
        if found {
            return detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused with {needle:?}: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn unacked(editor: &NodeProcess) -> u64 {
    status(editor).await["detail"]["unacked_ops"]
        .as_u64()
        .expect("unacked_ops")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_converge_and_acknowledged_edits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(2).unwrap();
    let (p1, p2) = (ports[0], ports[1]);
    let mut s1 = server("s1", p1, dir.path(), &[("s2", p2)]).await;
    let s2 = server("s2", p2, dir.path(), &[("s1", p1)]).await;
    let e1 = editor("e1", dir.path(), ("s1", p1)).await;
    let e2 = editor("e2", dir.path(), ("s2", p2)).await;

    // Concurrent edits in two regions.
    edit(
        &e1,
        serde_json::json!({"insert": {"pos": 0, "text": "hello "}}),
    )
    .await;
    edit(
        &e2,
        serde_json::json!({"insert": {"pos": 0, "text": "world"}}),
    )
    .await;
    let merged = converged(&[&e1, &e2], &[&s1, &s2]).await;
    assert_eq!(merged.len(), 11);
    assert!(
        merged.contains("hello ") && merged.contains("world"),
        "{merged:?}"
    );

    // Acknowledged, then the server is killed without warning.
    edit(
        &e1,
        serde_json::json!({"insert": {"pos": 0, "text": "[saved]"}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while unacked(&e1).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s1.kill().await.unwrap();

    // Offline, e1 keeps editing.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !status(&e1).await["detail"]["connected"].is_null() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected to a dead server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    edit(
        &e1,
        serde_json::json!({"insert": {"pos": 0, "text": "offline "}}),
    )
    .await;
    assert!(text(&e1).await.starts_with("offline [saved]"));

    // s1 back on the same data: it has the acknowledged edit, and everyone merges.
    let s1 = server("s1", p1, dir.path(), &[("s2", p2)]).await;
    let s1_text = status(&s1).await["detail"]["docs"][0]["excerpt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        s1_text.contains("[saved]"),
        "lost an acknowledged edit: {s1_text:?}"
    );
    let merged = converged(&[&e1, &e2], &[&s1, &s2]).await;
    assert!(merged.starts_with("offline [saved]"), "{merged:?}");
    assert_eq!(text(&e2).await, merged);

    // Intention preserved: on both servers, each editor's characters stand in the order it
    // typed them (its record of that, kept apart from the CRDT).
    for e in [&e1, &e2] {
        let detail = status(e).await["detail"].clone();
        let replica = format!("{:016x}", detail["replica"].as_u64().unwrap());
        let typed = &detail["intent"]["order"];
        assert_eq!(typed["chars"], detail["own_ops"], "{detail}");
        for s in [&s1, &s2] {
            let held = &status(s).await["detail"]["docs"][0]["orders"][&replica];
            assert_eq!(held, typed, "{replica} on a server");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_damaged_messages_are_refused_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = server("s1", free_ports(1).unwrap()[0], dir.path(), &[]).await;
    let e1 = editor("e1", dir.path(), ("s1", s1.ready().grpc)).await;
    edit(
        &e1,
        serde_json::json!({"insert": {"pos": 0, "text": "kept"}}),
    )
    .await;
    converged(&[&e1], &[&s1]).await;

    let url = format!("ws://{}/doc", s1.ready().grpc);
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let me = ReplicaId(77);
    let hello = Message::Hello {
        user: "mallory".into(),
        token: String::new(),
        replica: me,
        version: VersionVector::new(),
    };
    let send =
        |frame: Frame| tokio_tungstenite::tungstenite::Message::Binary(frame.encode().into());
    socket.send(send(Frame::new("notes", hello))).await.unwrap();
    // Someone else's replica id.
    let forged = Op::insert(
        Dot::new(ReplicaId(78), 0),
        Frontier::new(),
        None,
        None,
        "x".into(),
    );
    socket
        .send(send(Frame::new("notes", Message::Ops(vec![forged]))))
        .await
        .unwrap();
    // An insertion after a character nobody made.
    let impossible = Op::insert(
        Dot::new(me, 0),
        Frontier::new(),
        Some(Dot::new(ReplicaId(5), 9)),
        None,
        "y".into(),
    );
    socket
        .send(send(Frame::new("notes", Message::Ops(vec![impossible]))))
        .await
        .unwrap();
    // Bytes that are not a frame.
    socket
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![3, 200, 1].into(),
        ))
        .await
        .unwrap();

    let mut reasons = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while reasons.len() < 3 {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("refusals in time")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message
            && let Message::Refused { reason } = Frame::decode(&bytes).unwrap().message
        {
            reasons.push(reason);
        }
    }
    assert!(reasons[0].contains("is not of replica"), "{reasons:?}");
    assert!(
        reasons[1].contains("which its own history does not hold"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("not a sync frame"), "{reasons:?}");
    // Nothing changed.
    assert_eq!(converged(&[&e1], &[&s1]).await, "kept");
    assert_eq!(status(&s1).await["detail"]["refused"], 3);

    // Time travel through the CLI: the history, and the text after its first operation.
    edit(&e1, serde_json::json!({"delete": {"pos": 0, "len": 1}})).await;
    converged(&[&e1], &[&s1]).await;
    let collab = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_collab"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let server = s1.ready().grpc.to_string();
    let history = collab(&["history", "--server", &server, "notes"]);
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(
        lines[0].contains("insert") && lines[0].contains("\"kept\""),
        "{history}"
    );
    assert!(
        lines[1].contains("delete") && lines[1].contains("parents ["),
        "{history}"
    );
    assert_eq!(
        collab(&["history", "--server", &server, "notes", "--at", "1"]),
        "kept\n"
    );
    assert_eq!(
        collab(&["history", "--server", &server, "notes", "--at", "2"]),
        "ept\n"
    );
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_collab"))
        .args(["history", "--server", &server, "nope"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("holds no document"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_list_decides_who_reads_and_who_writes() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.yaml");
    std::fs::write(
        &acl,
        "users: {ada: ada-secret, bob: bob-secret}\ndocs: {notes: {read: [bob], write: [ada]}}\n",
    )
    .unwrap();
    let listen = free_ports(1).unwrap()[0];
    let acl_flag = acl.to_str().unwrap();
    let s1 = start(serve(
        "s1",
        &listen.to_string(),
        dir.path(),
        &[],
        &["--role", "server", "--acl", acl_flag],
    ))
    .await;
    let as_user = |id: &'static str, user: &'static str, token: &'static str| {
        serve(
            id,
            "127.0.0.1:0",
            dir.path(),
            &[("s1", listen)],
            &["--role", "editor", "--user", user, "--token", token],
        )
    };
    let ada = start(as_user("e1", "ada", "ada-secret")).await;
    let bob = start(as_user("e2", "bob", "bob-secret")).await;
    let eve = start(as_user("e3", "bob", "guessed")).await;

    // ada writes; bob reads it.
    edit(
        &ada,
        serde_json::json!({"insert": {"pos": 0, "text": "minutes"}}),
    )
    .await;
    converged(&[&ada, &bob], &[&s1]).await;

    // bob's own edit is refused by the server, with the reason in his status.
    edit(&bob, serde_json::json!({"insert": {"pos": 0, "text": "x"}})).await;
    refused(&bob, "may only read document \"notes\"").await;
    // A wrong token gets nothing at all.
    let detail = refused(&eve, "wrong token").await;
    assert_eq!(detail["chars"], 0);
    // The server's copy is ada's alone.
    let server_doc = &status(&s1).await["detail"]["docs"][0];
    assert_eq!(server_doc["excerpt"], "minutes");
    assert_eq!(text(&ada).await, "minutes");

    // Nobody gets around the list through /replicate: this file has no servers: token.
    let url = format!("ws://{listen}/replicate");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let hello = Message::Hello {
        user: "server:s9".into(),
        token: String::new(),
        replica: ReplicaId(9),
        version: VersionVector::new(),
    };
    socket
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            Frame::new("notes", hello).encode().into(),
        ))
        .await
        .unwrap();
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message {
            match Frame::decode(&bytes).unwrap().message {
                Message::Refused { reason } => {
                    assert!(reason.contains("accepts none"), "{reason}");
                    break;
                }
                other => panic!("an unauthenticated server got {other:?}"),
            }
        }
    }

    // A bad access list stops the server before it starts, naming the problem.
    std::fs::write(&acl, "users: {ada: x}\ndocs: {notes: {read: [bob]}}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collab"))
        .args([
            "serve",
            "--role",
            "server",
            "--id",
            "s9",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("s9"))
        .args(["--acl", acl_flag])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("names user \"bob\""), "{stderr}");
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(all_bytes(&path));
        } else {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_document_is_ciphertext_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = server("s1", free_ports(1).unwrap()[0], dir.path(), &[]).await;
    let with_key = |id: &str| {
        serve(
            id,
            "127.0.0.1:0",
            dir.path(),
            &[("s1", s1.ready().grpc)],
            &["--role", "editor", "--key", "correct horse"],
        )
    };
    let ada = start(with_key("e1")).await;
    let bob = start(with_key("e2")).await;
    edit(
        &ada,
        serde_json::json!({"insert": {"pos": 0, "text": "secret plan"}}),
    )
    .await;
    converged(&[&ada, &bob], &[]).await;
    edit(
        &bob,
        serde_json::json!({"insert": {"pos": 0, "text": "our "}}),
    )
    .await;
    // The editors agree on the text; the server holds every operation (its digest is of the
    // ciphertext).
    converged(&[&ada, &bob], &[]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while status(&s1).await["detail"]["docs"][0]["ops"] != 15 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never got every operation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(text(&ada).await, "our secret plan");
    assert_eq!(text(&bob).await, "our secret plan");
    // The server holds the same structure, in ciphertext of the same length.
    let server_doc = status(&s1).await["detail"]["docs"][0].clone();
    assert_eq!(server_doc["chars"], 15);
    let excerpt = server_doc["excerpt"].as_str().unwrap();
    assert!(
        !excerpt.contains("secret") && !excerpt.contains("our"),
        "{excerpt:?}"
    );
    // Not on its disk either.
    let stored = all_bytes(&dir.path().join("s1"));
    assert!(
        !stored.windows(6).any(|w| w == b"secret"),
        "plaintext on the server's disk"
    );
    // An editor without the key sees only the ciphertext.
    let eve = start(serve(
        "e3",
        "127.0.0.1:0",
        dir.path(),
        &[("s1", s1.ready().grpc)],
        &["--role", "editor"],
    ))
    .await;
    converged(&[&eve], &[&s1]).await;
    assert_eq!(text(&eve).await, excerpt);
}

/// The relay benchmark's load (`lab bench proj6 --phases relay`) against a real server: every
/// character relayed and acknowledged, latencies measured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_benchmark_load_runs_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = server("s1", free_ports(1).unwrap()[0], dir.path(), &[]).await;
    let url = format!("ws://{}/doc", s1.ready().grpc);
    let figures =
        distlab_collab::relay_bench::run(distlab_collab::relay_bench::Ours { url }, 3, 40, 8)
            .await
            .unwrap();
    assert_eq!(figures.chars, 120);
    assert!(figures.acked_per_sec.is_some());
    assert!(figures.p50 <= figures.p99);
    let line = figures.line("distlab", 3, 8);
    assert!(
        line.starts_with("bench=proj6 figure=relay server=distlab writers=3 window=8 chars=120 "),
        "{line}"
    );
    let detail = status(&s1).await["detail"].clone();
    assert_eq!(detail["docs"][0]["chars"], 120, "{detail}");
}
