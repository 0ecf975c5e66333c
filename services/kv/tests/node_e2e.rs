//! Project 0 end to end: the real `kv` binary, on port 0, driven over gRPC and HTTP.

mod support;

use std::time::Duration;

use distlab_kv::store::Token;
use support::{admin_get, client, kv, metric, start, start_with_log};
use tonic::Code;

#[tokio::test]
async fn put_get_delete_and_the_metrics_move() {
    let node = start(&["--id", "n1"]).await;
    let kv = client(&node);

    let put = kv.put("color", "blue").await.unwrap();
    assert_eq!((put.version, put.created), (1, true));
    assert_eq!(kv.put("color", "green").await.unwrap().version, 2);
    let got = kv.get("color").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.version), (&b"green"[..], 2));
    assert!(kv.delete("color").await.unwrap());
    assert!(!kv.delete("color").await.unwrap());
    assert_eq!(kv.get("color").await.unwrap(), None);

    assert_eq!(
        metric(
            &node,
            r#"rpc_requests_total{method="kv.v1.Kv/Put",code="OK"}"#
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &node,
            r#"rpc_requests_total{method="kv.v1.Kv/Get",code="OK"}"#
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &node,
            r#"rpc_requests_total{method="kv.v1.Kv/Delete",code="OK"}"#
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &node,
            r#"rpc_duration_seconds_count{method="kv.v1.Kv/Put"}"#
        )
        .await,
        2.0
    );

    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&node, "/status").await).unwrap();
    assert_eq!(status["id"], "n1");
    assert_eq!(status["project"], "proj0");
    assert_eq!(status["role"], "server");
    assert_eq!(status["pid"], node.pid());
    assert_eq!(status["detail"]["config"]["store"], "mem");
    assert_eq!(status["detail"]["keys"], 0);
    assert_eq!(admin_get(&node, "/healthz").await.trim(), "ok");
}

/// SIGKILL gives the node no chance to flush: whatever was acknowledged must already be on
/// disk, data and idempotency tokens alike. A retry after the restart must find its token and
/// not apply the write again (the version stays 1, the replay counter moves).
#[tokio::test]
async fn sigkill_and_restart_keep_data_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let token = Token::random();

    let mut first = start(&["--id", "n1", "--data-dir", data_dir]).await;
    let kv = client(&first);
    let put = kv
        .put_with_token("k", "v1", Some(token.clone()))
        .await
        .unwrap();
    assert_eq!(put.version, 1);
    for i in 0..50 {
        kv.put(format!("key-{i}"), format!("value-{i}"))
            .await
            .unwrap();
    }
    first.kill().await.unwrap();

    let second = start(&["--id", "n1", "--data-dir", data_dir]).await;
    let kv = client(&second);
    let retry = kv.put_with_token("k", "v1", Some(token)).await.unwrap();
    assert_eq!(retry.version, 1, "the retried PUT was not applied again");
    assert_eq!(kv.get("k").await.unwrap().unwrap().version, 1);
    for i in 0..50 {
        let got = kv
            .get(format!("key-{i}"))
            .await
            .unwrap()
            .expect("acknowledged write survives");
        assert_eq!(got.value, format!("value-{i}").into_bytes());
    }
    assert_eq!(
        metric(&second, r#"kv_idempotent_replays_total{op="put"}"#).await,
        1.0
    );
}

/// With `--sync never` acknowledged writes may sit in memory, but a graceful shutdown
/// (SIGTERM) must flush them.
#[tokio::test]
async fn sigterm_drains_and_flushes_even_without_sync() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let mut node = start(&["--id", "n1", "--data-dir", data_dir, "--sync", "never"]).await;
    let kv = client(&node);
    for i in 0..100 {
        kv.put(format!("key-{i}"), "v").await.unwrap();
    }
    let status = node.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "graceful exit, got {status}");
    assert!(
        node.recent_output()
            .iter()
            .any(|l| l.contains(r#""event":"node_stopped""#))
    );

    let node = start(&["--id", "n1", "--data-dir", data_dir]).await;
    let kv = client(&node);
    for i in 0..100 {
        assert!(
            kv.get(format!("key-{i}")).await.unwrap().is_some(),
            "key-{i} lost"
        );
    }
}

#[tokio::test]
async fn invalid_requests_are_refused_with_the_limit_named() {
    let node = start(&[
        "--id",
        "n1",
        "--max-value-bytes",
        "1000",
        "--max-key-bytes",
        "16",
    ])
    .await;
    let kv = client(&node);

    let empty = kv.put("", "v").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert!(empty.message().contains("must not be empty"), "{empty:?}");

    let big = kv.put("k", vec![0u8; 2000]).await.unwrap_err();
    assert_eq!(big.code(), Code::InvalidArgument);
    assert!(
        big.message().contains("2000 bytes") && big.message().contains("1000 bytes"),
        "{big:?}"
    );

    let long_key = kv.get("a-key-longer-than-16").await.unwrap_err();
    assert!(
        long_key.message().contains("--max-key-bytes"),
        "{long_key:?}"
    );

    // Refusals are not retried, and nothing was stored.
    assert_eq!(kv.metrics().retries(), 0);
    assert_eq!(
        metric(
            &node,
            r#"rpc_requests_total{method="kv.v1.Kv/Put",code="INVALID_ARGUMENT"}"#
        )
        .await,
        2.0
    );
    let status: serde_json::Value =
        serde_json::from_str(&admin_get(&node, "/status").await).unwrap();
    assert_eq!(status["detail"]["keys"], 0);
}

#[test]
fn bad_flags_exit_2_naming_the_problem() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let file_path = file.path().to_str().unwrap();
    let under_file = format!("{file_path}/sub");
    let cases: &[(&[&str], &str)] = &[
        (
            &["serve", "--id", "n1", "--peer", "n2:7000"],
            "is not ID=ADDR",
        ),
        (&["serve", "--id", "n 1"], "contains ' '"),
        (&["serve", "--id", "n1", "--listen", "nowhere"], "--listen"),
        (
            &["serve", "--id", "n1", "--data-dir", file_path],
            "not a directory",
        ),
        (
            &["serve", "--id", "n1", "--data-dir", &under_file],
            "cannot create it",
        ),
        (
            &["serve", "--id", "n1", "--store", "sled"],
            "needs --data-dir",
        ),
        (
            &["serve", "--id", "n1", "--tls-cert", "x.pem"],
            "go together",
        ),
        (
            &["serve", "--id", "n1", "--token-ttl", "soon"],
            "expected a duration",
        ),
        (&["serve", "--id", "n1", "--bogus"], "--bogus"),
        (&["get", "k"], "--addr"),
    ];
    for (args, expected) in cases {
        let out = kv(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "kv {args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "kv {args:?}: expected {expected:?} in {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("ready"),
            "kv {args:?} started anyway"
        );
    }
}

#[test]
fn a_corrupt_store_is_reported_with_its_path_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kv.sled");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::write(db.join("conf"), b"\xff\xfe not a sled config").unwrap();
    let out = kv(
        &[
            "serve",
            "--id",
            "n1",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kv.sled"), "{stderr}");
    assert_eq!(
        std::fs::read(db.join("conf")).unwrap(),
        b"\xff\xfe not a sled config"
    );
}

/// The CLI starts a trace and sends its `traceparent`; the node's log lines for that request
/// carry the same trace id.
#[tokio::test]
async fn the_trace_id_travels_from_client_to_server_logs() {
    let node = start_with_log(&["--id", "n1"], "debug").await;
    let addr = node.ready().grpc.to_string();
    let out = tokio::task::spawn_blocking(move || {
        kv(
            &["get", "nothing", "--addr", &addr],
            &[("RUST_LOG", "info")],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let trace_id = stderr
        .split("trace_id=")
        .nth(1)
        .map(|rest| rest.chars().take(32).collect::<String>())
        .unwrap_or_else(|| panic!("the CLI logs its trace id: {stderr}"));
    assert_eq!(trace_id.len(), 32);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let output = node.recent_output();
        if let Some(line) = output.iter().find(|l| l.contains(&trace_id)) {
            assert!(line.contains("kv.v1.Kv/Get"), "{line}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node log line with trace {trace_id}: {output:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
