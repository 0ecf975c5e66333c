//! Starting a Raft node: its sled database with the flush thread, and the first cluster.
//!
//! The nodes of the first cluster each call openraft's `initialize` with the same membership
//! when their log is empty (doing it on every member is allowed: they all propose the same
//! first entry); a restarted node finds its log and does nothing.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use crate::{Flusher, Member, Types, raft_id};

/// Opens (or creates) `dir/raft.sled` and starts its flush thread. With `fsync` false nothing
/// waits for the disk (sled still flushes every 500 ms).
pub fn open_store(dir: &Path, fsync: bool) -> anyhow::Result<(sled::Db, Flusher)> {
    let path = dir.join("raft.sled");
    let db = sled::Config::new()
        .path(&path)
        .flush_every_ms(Some(500))
        .open()
        .with_context(|| format!("opening the Raft store at {}", path.display()))?;
    let flusher = Flusher::start(db.clone(), !fsync).context("starting the flush thread")?;
    Ok((db, flusher))
}

/// Forms the first cluster of `members`, unless this node's log says it already exists.
pub async fn initialize<C: Types>(raft: &openraft::Raft<C>, members: &[String]) {
    match raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "reading Raft's state");
            return;
        }
    }
    let members: BTreeMap<u64, Member> = members
        .iter()
        .map(|name| (raft_id(name), Member { name: name.clone() }))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!(
            event = "cluster_initialized",
            "proposed the first membership"
        ),
        // Another member's initialization reached this node first: nothing to do.
        Err(e) => tracing::info!(error = %e, "not initializing"),
    }
}
