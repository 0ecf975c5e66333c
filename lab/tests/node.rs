//! `lab node <service>` starts a node of any linked service from the one `lab` binary.

use std::time::Duration;

use distlab_kv::client::{ClientOptions, KvClient};
use distlab_runtime::launch::NodeProcess;
use tokio::process::Command;

#[tokio::test]
async fn lab_node_kv_serves_project_0() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command.args([
        "node",
        "kv",
        "--id",
        "n7",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let mut node = NodeProcess::spawn(command, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(node.ready().id.as_str(), "n7");
    let client = KvClient::connect_lazy(node.ready().grpc, ClientOptions::default()).unwrap();
    client.put("k", "v").await.unwrap();
    assert_eq!(client.get("k").await.unwrap().unwrap().value, b"v");
    let status = node.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn lab_node_rejects_bad_flags_with_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(["node", "kv", "--id", "n1", "--peer", "n1=127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not its own peer"));
}
