//! What the bank's real-process tests share.
#![allow(dead_code)]

use std::time::Duration;

use std::path::Path;

use distlab_bank::cluster::{LocalBank, Mode, NodeCommand};
use distlab_bank::domain::{account_name, shard_of};
use distlab_proto::bank::v1 as pb;
use serde_json::Value;

/// The test banks' shape: accounts, and each one's opening balance.
pub const ACCOUNTS: usize = 20;
pub const OPENING: i64 = 100;

/// Every node's flags for the test banks' shape, then `extra`.
pub fn flags(extra: &[&str]) -> Vec<String> {
    let mut f = vec![
        "--accounts".to_string(),
        ACCOUNTS.to_string(),
        "--opening".to_string(),
        OPENING.to_string(),
    ];
    f.extend(extra.iter().map(|s| s.to_string()));
    f
}

/// A bank of 2 shards run by the `bank` binary: `front_flags` for the coordinator or the
/// orchestrator, `participant_flags` for the shards and the ledger.
pub async fn start(
    dir: &Path,
    mode: Mode,
    front_flags: &[&str],
    participant_flags: &[&str],
) -> LocalBank {
    let command = NodeCommand {
        program: env!("CARGO_BIN_EXE_bank").into(),
        args: vec!["serve".into()],
    };
    let front = flags(front_flags);
    let participants = flags(participant_flags);
    let node_flags = move |id: &str| {
        if id == mode.front() {
            front.clone()
        } else {
            participants.clone()
        }
    };
    LocalBank::start(command, dir, mode, 2, &node_flags)
        .await
        .unwrap()
}

pub fn transfer(id: &str, from: &str, to: &str, amount: i64) -> pb::TransferRequest {
    pb::TransferRequest {
        id: id.into(),
        from: from.into(),
        to: to.into(),
        amount,
    }
}

/// Two accounts on different shards (of 2): (on s1, on s2).
pub fn across_shards() -> (String, String) {
    let on = |k: usize| {
        (0..ACCOUNTS)
            .map(account_name)
            .find(|a| shard_of(a, 2) == k)
            .unwrap()
    };
    (on(0), on(1))
}

/// How many transactions participant `id` holds prepared (0 while it is down).
pub async fn prepared(bank: &LocalBank, id: &str) -> usize {
    detail(bank, id)
        .await
        .and_then(|d| d["prepared"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Node `id`'s `/status` detail (none while it is down).
pub async fn detail(bank: &LocalBank, id: &str) -> Option<Value> {
    let admin = bank.admin(id)?;
    let body: Value = reqwest::get(format!("http://{admin}/status"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some(body["detail"].clone())
}

/// Waits (polling) until `check` holds; fails naming `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
