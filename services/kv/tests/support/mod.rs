//! Starting real kv nodes for end-to-end tests, and reading what they expose.

#![allow(dead_code)] // each test file uses its own subset

use std::time::Duration;

use distlab_kv::client::{ClientOptions, KvClient};
use distlab_runtime::launch::NodeProcess;
use distlab_runtime::retry::RetryPolicy;
use tokio::process::Command;

pub const KV: &str = env!("CARGO_BIN_EXE_kv");

/// `kv serve ARGS` on ports 0 with extra environment, waiting for its ready line.
pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> NodeProcess {
    let mut command = Command::new(KV);
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(env.iter().copied());
    NodeProcess::spawn(command, Duration::from_secs(20))
        .await
        .expect("the kv node starts")
}

/// `kv serve ARGS`, logging at `RUST_LOG=log_level`.
pub async fn start_with_log(args: &[&str], log_level: &str) -> NodeProcess {
    start_with_env(args, &[("RUST_LOG", log_level)]).await
}

pub async fn start(args: &[&str]) -> NodeProcess {
    start_with_log(args, "info").await
}

/// A client with short timeouts, so a test that fails, fails fast.
pub fn client(node: &NodeProcess) -> KvClient {
    KvClient::connect_lazy(
        node.ready().grpc,
        ClientOptions {
            policy: quick_policy(),
            tls: None,
        },
    )
    .unwrap()
}

pub fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        attempt_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

pub async fn admin_get(node: &NodeProcess, path: &str) -> String {
    let url = format!("http://{}{path}", node.ready().admin);
    reqwest::get(&url).await.unwrap().text().await.unwrap()
}

/// The value of one sample in `/metrics`, e.g. `rpc_requests_total{method="kv.v1.Kv/Put",code="OK"}`;
/// 0 when the series does not exist yet.
pub async fn metric(node: &NodeProcess, series: &str) -> f64 {
    let text = admin_get(node, "/metrics").await;
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Runs the `kv` binary to completion (for flag errors and the CLI).
pub fn kv(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(KV)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running kv")
}
