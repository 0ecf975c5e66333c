//! The flags every Raft node takes (timing, snapshots, fsync) and the openraft config they
//! make, checked before anything starts; and which nodes form the first cluster.

use std::time::Duration;

use distlab_runtime::BadInput;
use openraft::{Config, SnapshotPolicy};

/// `--fsync`: whether Raft waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// An entry counts as stored (and a vote as given) only once flushed: what Raft's safety
    /// proof assumes.
    Always,
    /// Never wait (sled flushes every 500 ms): faster, but a node that crashes can forget
    /// entries it acknowledged, so a "committed" write can be lost if a majority crashes
    /// together, and it can forget its vote and vote twice in one term (two leaders).
    Never,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RaftFlags {
    #[arg(long, value_enum, default_value = "always")]
    pub fsync: Fsync,

    /// How often the leader sends heartbeats.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "50ms")]
    pub heartbeat: Duration,

    /// A follower that hears no leader for about this long starts an election: openraft waits
    /// the leader's lease (1.5 x this) plus a random timeout between this and 1.5 x this.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "250ms")]
    pub election_timeout: Duration,

    /// Build a snapshot after this many entries were applied since the last one; the log
    /// behind it is purged.
    #[arg(long, default_value_t = 5000)]
    pub snapshot_every: u64,

    /// Entries kept behind a snapshot, so a briefly lagging follower catches up from the log
    /// rather than a snapshot.
    #[arg(long, default_value_t = 500)]
    pub keep_log: u64,
}

impl RaftFlags {
    /// openraft's config for a cluster called `cluster_name`, or what is wrong with the flags.
    pub fn config(&self, cluster_name: &str) -> Result<Config, BadInput> {
        let ms = |d: Duration| d.as_millis() as u64;
        if self.heartbeat.is_zero() || ms(self.heartbeat) * 3 > ms(self.election_timeout) {
            return Err(BadInput::new(format!(
                "--heartbeat {} must be at least 1ms and at most a third of --election-timeout {}",
                distlab_runtime::duration::format(self.heartbeat),
                distlab_runtime::duration::format(self.election_timeout)
            )));
        }
        if self.snapshot_every == 0 {
            return Err(BadInput::new("--snapshot-every must be at least 1"));
        }
        let config = Config {
            cluster_name: cluster_name.into(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout),
            election_timeout_max: ms(self.election_timeout) * 3 / 2,
            install_snapshot_timeout: 2000,
            max_payload_entries: 512,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_log,
            purge_batch_size: 256,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| BadInput::new(format!("raft configuration: {e}")))
    }

    /// The flags as the status page shows them.
    pub fn describe(&self, config: &Config) -> serde_json::Value {
        serde_json::json!({
            "fsync": self.fsync,
            "heartbeat_ms": config.heartbeat_interval,
            "election_timeout_ms": [config.election_timeout_min, config.election_timeout_max],
            "snapshot_every": self.snapshot_every,
            "keep_log": self.keep_log,
        })
    }
}

/// The first cluster's members: `given` (a flag naming them), or this node and all its peers.
/// Each must be this node or have a `--peer` address; `flag` names the flag in the error.
pub fn first_members(
    me: &str,
    peers: &[&str],
    given: &[String],
    flag: &str,
) -> Result<Vec<String>, BadInput> {
    let members: Vec<String> = if given.is_empty() {
        std::iter::once(me)
            .chain(peers.iter().copied())
            .map(String::from)
            .collect()
    } else {
        given.to_vec()
    };
    if let Some(unknown) = members
        .iter()
        .find(|m| m.as_str() != me && !peers.contains(&m.as_str()))
    {
        return Err(BadInput::new(format!(
            "{flag} names {unknown}, which has no --peer address"
        )));
    }
    Ok(members)
}
