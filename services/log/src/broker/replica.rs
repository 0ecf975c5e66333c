//! One partition on one broker: its log, and whether this broker leads it (with the leader's
//! view of its followers, `replication::LeaderState`), follows it, or waits (offline).
//!
//! Everything here is synchronous and local: the broker's service and tasks lock a replica,
//! call one method, and do their waiting and networking outside the lock. Changes to the log
//! end and the high watermark are published on a watch channel, which long-polling fetches
//! and `acks=all` produces wait on.

use std::collections::BTreeSet;
use std::path::Path;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::replication::{
    FetchOutcome, LeaderState, Leadership, ReplicationConfig, ReplicationError,
};
use crate::storage::batch::Batch;
use crate::storage::partition::{AppendError, Appended, LogConfig, PartitionLog, ReadError};

/// How far a replica's log goes: what waiters watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ends {
    pub log_end: u64,
    pub high_watermark: u64,
}

/// This broker's part in a partition.
#[derive(Debug)]
pub enum Role {
    Leader {
        state: LeaderState,
        /// The partition epoch of the metadata this leadership was last told (AlterPartition
        /// must name it).
        partition_epoch: u32,
    },
    Follower {
        leader: String,
        leader_epoch: u32,
        /// Stops this follower's fetcher.
        fetcher: CancellationToken,
    },
    /// No leader (or not told yet): nothing is served.
    Offline { leader_epoch: u32 },
}

/// Why a request to this replica was refused; each maps to a `log-error` kind.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("this broker does not lead {0}")]
    NotLeader(String),
    #[error("leader epoch {given} is not the current one ({current})")]
    FencedLeaderEpoch { given: u32, current: u32 },
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("{0}")]
    Sequence(String),
    #[error(transparent)]
    OutOfRange(crate::storage::partition::OutOfRange),
    #[error("storage: {0:#}")]
    Io(anyhow::Error),
}

impl ReplicaError {
    /// The `log-error` kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotLeader(_) => "not_leader_or_follower",
            Self::FencedLeaderEpoch { .. } => "fenced_leader_epoch",
            Self::Replication(ReplicationError::NotEnoughReplicas { .. }) => "not_enough_replicas",
            Self::Replication(ReplicationError::NotEnoughReplicasAfterAppend { .. }) => {
                "not_enough_replicas_after_append"
            }
            Self::Replication(ReplicationError::NotAReplica(_)) => "not_leader_or_follower",
            Self::Sequence(why) if why.contains("epoch") => "invalid_producer_epoch",
            Self::Sequence(_) => "out_of_order_sequence",
            Self::OutOfRange(_) => "offset_out_of_range",
            Self::Io(_) => "storage_error",
        }
    }
}

/// What a fetch read.
#[derive(Debug)]
pub struct Fetched {
    pub records: Vec<u8>,
    pub ends: Ends,
    pub log_start: u64,
    pub leader_epoch: u32,
    /// The follower's fetch moved the high watermark or asks for an ISR expansion.
    pub outcome: FetchOutcome,
}

pub struct Replica {
    pub name: String,
    log: PartitionLog,
    role: Role,
    /// Followers: the leader's high watermark as last fetched (at most this log's end).
    high_watermark: u64,
    ends: watch::Sender<Ends>,
}

impl Replica {
    /// Opens (recovering) the partition's log in `dir`; it starts offline.
    pub fn open(name: &str, dir: &Path, config: LogConfig) -> anyhow::Result<Self> {
        // Recovery logs what it cut or rebuilt itself.
        let (log, _recoveries) = PartitionLog::open(dir, config)?;
        let ends = Ends {
            log_end: log.log_end_offset(),
            high_watermark: 0,
        };
        Ok(Self {
            name: name.to_string(),
            log,
            role: Role::Offline { leader_epoch: 0 },
            high_watermark: 0,
            ends: watch::channel(ends).0,
        })
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn log_mut(&mut self) -> &mut PartitionLog {
        &mut self.log
    }

    pub fn ends(&self) -> Ends {
        Ends {
            log_end: self.log.log_end_offset(),
            high_watermark: self.high_watermark(),
        }
    }

    pub fn high_watermark(&self) -> u64 {
        match &self.role {
            Role::Leader { state, .. } => state.high_watermark(),
            _ => self.high_watermark,
        }
    }

    pub fn watch(&self) -> watch::Receiver<Ends> {
        self.ends.subscribe()
    }

    fn publish(&self) {
        let ends = self.ends();
        self.ends.send_if_modified(|old| {
            let changed = *old != ends;
            *old = ends;
            changed
        });
    }

    pub fn leader_epoch(&self) -> u32 {
        match &self.role {
            Role::Leader { state, .. } => state.leader_epoch(),
            Role::Follower { leader_epoch, .. } | Role::Offline { leader_epoch } => *leader_epoch,
        }
    }

    /// This broker leads from now on, in `leadership.leader_epoch`.
    pub fn become_leader(
        &mut self,
        leadership: Leadership,
        partition_epoch: u32,
        config: ReplicationConfig,
        now_ms: i64,
    ) {
        self.stop_fetcher();
        let epoch = leadership.leader_epoch;
        let hw = self.high_watermark();
        let state = LeaderState::new(leadership, self.log.log_end_offset(), hw, now_ms, config);
        tracing::info!(event = "became_partition_leader", partition = %self.name, leader_epoch = epoch, log_end = self.log.log_end_offset(), "{}: leading in epoch {epoch}", self.name);
        self.role = Role::Leader {
            state,
            partition_epoch,
        };
        self.publish();
    }

    /// The controller's view of this leadership changed without a new leader epoch (its ISR,
    /// e.g. a follower was fenced): adopt it.
    pub fn leader_metadata(&mut self, isr: BTreeSet<String>, partition_epoch: u32) {
        let log_end = self.log.log_end_offset();
        if let Role::Leader {
            state,
            partition_epoch: known,
        } = &mut self.role
            && partition_epoch > *known
        {
            *known = partition_epoch;
            state.isr_committed(isr, log_end);
        }
        self.publish();
    }

    /// This broker follows `leader` in `leader_epoch`; `fetcher` stops the fetch task.
    pub fn become_follower(&mut self, leader: &str, leader_epoch: u32, fetcher: CancellationToken) {
        let hw = self.high_watermark();
        self.stop_fetcher();
        self.high_watermark = hw.min(self.log.log_end_offset());
        self.role = Role::Follower {
            leader: leader.to_string(),
            leader_epoch,
            fetcher,
        };
        self.publish();
    }

    pub fn become_offline(&mut self, leader_epoch: u32) {
        let hw = self.high_watermark();
        self.stop_fetcher();
        self.high_watermark = hw;
        self.role = Role::Offline { leader_epoch };
        self.publish();
    }

    fn stop_fetcher(&self) {
        if let Role::Follower { fetcher, .. } = &self.role {
            fetcher.cancel();
        }
    }

    fn leader_state(&mut self) -> Result<&mut LeaderState, ReplicaError> {
        match &mut self.role {
            Role::Leader { state, .. } => Ok(state),
            _ => Err(ReplicaError::NotLeader(self.name.clone())),
        }
    }

    /// A producer's batch, at the leader. For `acks=all` the ISR must be large enough first.
    pub fn produce(
        &mut self,
        batch: &Batch,
        acks_all: bool,
        now_ms: i64,
    ) -> Result<(Appended, u32), ReplicaError> {
        let state = self.leader_state()?;
        if acks_all {
            state.check_acks_all()?;
        }
        let epoch = state.leader_epoch();
        let appended = self
            .log
            .append_as_leader(batch, epoch, now_ms)
            .map_err(|e| match e {
                AppendError::Sequence(e) => ReplicaError::Sequence(e.to_string()),
                AppendError::Io(e) => ReplicaError::Io(e),
            })?;
        let log_end = self.log.log_end_offset();
        self.leader_state()?.on_append(log_end);
        self.publish();
        Ok((appended, epoch))
    }

    /// Where an `acks=all` produce ending at `last_offset` stands: `None` while it waits.
    pub fn acks_all_outcome(&self, last_offset: u64) -> Result<Option<()>, ReplicaError> {
        match &self.role {
            Role::Leader { state, .. } => match state.acks_all_outcome(last_offset) {
                None => Ok(None),
                Some(result) => Ok(Some(result?)),
            },
            _ => Err(ReplicaError::NotLeader(self.name.clone())),
        }
    }

    /// A fetch at the leader: a follower's (`replica`) reads to the log end and tells the
    /// leader how far it got; a consumer's reads to the high watermark.
    pub fn fetch(
        &mut self,
        offset: u64,
        max_bytes: usize,
        replica: Option<&str>,
        epoch: Option<u32>,
        now_ms: i64,
    ) -> Result<Fetched, ReplicaError> {
        let log_end = self.log.log_end_offset();
        let state = self.leader_state()?;
        let current = state.leader_epoch();
        if let Some(given) = epoch
            && given != current
        {
            return Err(ReplicaError::FencedLeaderEpoch { given, current });
        }
        let (outcome, limit) = match replica {
            Some(follower) => {
                let outcome = state.on_fetch(follower, offset, log_end, now_ms)?;
                (outcome, log_end)
            }
            None => (FetchOutcome::default(), state.high_watermark()),
        };
        if outcome.high_watermark.is_some() {
            self.publish();
        }
        let records = self
            .log
            .read(offset, max_bytes, limit)
            .map_err(|e| match e {
                ReadError::OutOfRange(r) => ReplicaError::OutOfRange(r),
                ReadError::Io(e) => ReplicaError::Io(e),
            })?;
        Ok(Fetched {
            records,
            ends: self.ends(),
            log_start: self.log.log_start_offset(),
            leader_epoch: current,
            outcome,
        })
    }

    /// Followers in the ISR that fell behind for too long: the ISR to propose without them.
    pub fn check_lag(&mut self, now_ms: i64) -> Option<(BTreeSet<String>, u32, u32)> {
        let Role::Leader {
            state,
            partition_epoch,
        } = &mut self.role
        else {
            return None;
        };
        let proposed = state.check_lag(now_ms)?;
        Some((proposed, state.leader_epoch(), *partition_epoch))
    }

    /// The controller committed the ISR this leader proposed.
    pub fn isr_committed(&mut self, isr: BTreeSet<String>, partition_epoch: u32) {
        let log_end = self.log.log_end_offset();
        if let Role::Leader {
            state,
            partition_epoch: known,
        } = &mut self.role
        {
            *known = partition_epoch;
            state.isr_committed(isr, log_end);
        }
        self.publish();
    }

    pub fn isr_rejected(&mut self) {
        if let Role::Leader { state, .. } = &mut self.role {
            state.isr_rejected();
        }
    }

    /// The current epochs of this leadership, for an ISR proposal.
    pub fn leader_epochs(&self) -> Option<(u32, u32)> {
        match &self.role {
            Role::Leader {
                state,
                partition_epoch,
            } => Some((state.leader_epoch(), *partition_epoch)),
            _ => None,
        }
    }

    /// A follower copies batches its leader sent (they start at this log's end) and learns the
    /// leader's high watermark.
    pub fn append_replicated(
        &mut self,
        batches: &[Batch],
        leader_hw: u64,
        now_ms: i64,
    ) -> Result<(), ReplicaError> {
        for batch in batches {
            self.log.append(batch, now_ms).map_err(ReplicaError::Io)?;
        }
        self.high_watermark = leader_hw.min(self.log.log_end_offset());
        self.publish();
        Ok(())
    }

    /// A follower cuts its log at `offset` (it diverged from its new leader there).
    pub fn truncate_to(&mut self, offset: u64) -> Result<u64, ReplicaError> {
        let before = self.log.log_end_offset();
        let end = self.log.truncate_to(offset).map_err(ReplicaError::Io)?;
        if end < before {
            tracing::warn!(event = "log_truncated", partition = %self.name, from = before, to = end, "{}: truncated {} diverged messages ({before} -> {end})", self.name, before - end);
        }
        self.high_watermark = self.high_watermark.min(end);
        self.publish();
        Ok(end)
    }
}
