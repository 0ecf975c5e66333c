//! A state machine held in memory and snapshotted whole, as JSON: for services whose state is
//! small and read far more often than written (the controller's cluster metadata).
//!
//! The application writes a [`Machine`]: its state, and how a committed command changes it.
//! [`MemoryMachine`] does the rest openraft asks for. Nothing is written per entry: the state
//! is durable through the log, and through snapshots (sled tree `snapshot`, flushed), so a
//! restarted node loads its last snapshot and openraft applies the committed entries after
//! it again. Readers take the state under a lock, or wait for it to change
//! ([`MemoryMachine::subscribe`]: the applied log id, bumped after every batch).

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{Flusher, LogId, SnapshotMeta, StorageError, StoredMembership, Types, storage_error};

/// An application's replicated state and its transitions. `apply` must be deterministic: every
/// node applies the same commands in the same order and must reach the same state (take time
/// from the command, never from the clock).
pub trait Machine: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    type Command;
    /// What a command answers; `Default` answers entries with no command (a new leader's
    /// blank entry, membership changes).
    type Outcome: Default;

    fn apply(&mut self, command: &Self::Command, log_id: &LogId) -> Self::Outcome;
}

/// The state and the Raft bookkeeping that goes with it.
struct State<M> {
    machine: M,
    applied: Option<LogId>,
    membership: StoredMembership,
}

/// The state machine; clones share it (the snapshot builder is a clone).
pub struct MemoryMachine<C, M> {
    state: Arc<Mutex<State<M>>>,
    snapshots: sled::Tree,
    flusher: Flusher,
    applied: Arc<watch::Sender<Option<LogId>>>,
    built: Arc<AtomicU64>,
    _types: std::marker::PhantomData<fn() -> C>,
}

impl<C, M> Clone for MemoryMachine<C, M> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            snapshots: self.snapshots.clone(),
            flusher: self.flusher.clone(),
            applied: self.applied.clone(),
            built: self.built.clone(),
            _types: std::marker::PhantomData,
        }
    }
}

const META: &str = "meta";
const DATA: &str = "data";

impl<C, M> MemoryMachine<C, M>
where
    C: Types<D = M::Command, R = M::Outcome>,
    M: Machine,
{
    /// Opens the machine in `db`: its last snapshot, or an empty state.
    pub fn open(db: &sled::Db, flusher: Flusher) -> anyhow::Result<Self> {
        use anyhow::Context;
        let snapshots = db.open_tree("snapshot")?;
        let mut state = State {
            machine: M::default(),
            applied: None,
            membership: StoredMembership::default(),
        };
        if let Some((meta, data)) = stored(&snapshots)? {
            state.machine = serde_json::from_slice(&data).with_context(|| {
                format!("the stored snapshot {} does not decode", meta.snapshot_id)
            })?;
            state.applied = meta.last_log_id;
            state.membership = meta.last_membership;
        }
        let (applied, _) = watch::channel(state.applied);
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            snapshots,
            flusher,
            applied: Arc::new(applied),
            built: Arc::default(),
            _types: std::marker::PhantomData,
        })
    }

    /// Reads the state as applied so far.
    pub fn read<T>(&self, f: impl FnOnce(&M) -> T) -> T {
        f(&self.state.lock().unwrap().machine)
    }

    /// The id of the last entry applied.
    pub fn applied(&self) -> Option<LogId> {
        *self.applied.borrow()
    }

    /// The id of the last entry applied: changes after each applied batch.
    pub fn subscribe(&self) -> watch::Receiver<Option<LogId>> {
        self.applied.subscribe()
    }

    /// Snapshots built by this node since it started.
    pub fn snapshots_built(&self) -> u64 {
        self.built.load(Ordering::Relaxed)
    }

    async fn store(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let failed = |e: &dyn ToString| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e.to_string(),
            )
        };
        let meta_json = serde_json::to_vec(meta).map_err(|e| failed(&e))?;
        let mut batch = sled::Batch::default();
        batch.insert(META, meta_json);
        batch.insert(DATA, data);
        self.snapshots.apply_batch(batch).map_err(|e| failed(&e))?;
        self.flusher.flush_now().await.map_err(|e| failed(&e))
    }
}

/// The snapshot stored in `tree`, if any.
fn stored(tree: &sled::Tree) -> anyhow::Result<Option<(SnapshotMeta, Vec<u8>)>> {
    let (Some(meta), Some(data)) = (tree.get(META)?, tree.get(DATA)?) else {
        return Ok(None);
    };
    let meta: SnapshotMeta = serde_json::from_slice(&meta)
        .map_err(|e| anyhow::anyhow!("the stored snapshot's metadata does not decode: {e}"))?;
    Ok(Some((meta, data.to_vec())))
}

impl<C, M> RaftSnapshotBuilder<C> for MemoryMachine<C, M>
where
    C: Types<D = M::Command, R = M::Outcome>,
    M: Machine,
{
    async fn build_snapshot(&mut self) -> Result<Snapshot<C>, StorageError> {
        let (meta, data) = {
            let state = self.state.lock().unwrap();
            let data = serde_json::to_vec(&state.machine)
                .map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            let built = self.built.fetch_add(1, Ordering::Relaxed) + 1;
            let snapshot_id = match state.applied {
                Some(id) => format!("{}-{}-{built}", id.leader_id.term, id.index),
                None => format!("0-0-{built}"),
            };
            let meta = SnapshotMeta {
                last_log_id: state.applied,
                last_membership: state.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        self.store(&meta, &data).await?;
        tracing::info!(
            event = "snapshot_built",
            index = meta.last_log_id.map(|id| id.index),
            bytes = data.len(),
            "built a snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<C, M> RaftStateMachine<C> for MemoryMachine<C, M>
where
    C: Types<D = M::Command, R = M::Outcome>,
    M: Machine,
{
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.state.lock().unwrap();
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<M::Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.state.lock().unwrap();
        let mut outcomes = Vec::new();
        for entry in entries {
            state.applied = Some(entry.log_id);
            outcomes.push(match &entry.payload {
                EntryPayload::Blank => M::Outcome::default(),
                EntryPayload::Normal(command) => state.machine.apply(command, &entry.log_id),
                EntryPayload::Membership(membership) => {
                    state.membership =
                        StoredMembership::new(Some(entry.log_id), membership.clone());
                    M::Outcome::default()
                }
            });
        }
        self.applied.send_replace(state.applied);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let machine: M = serde_json::from_slice(&data).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                format!("the leader's snapshot does not decode: {e}"),
            )
        })?;
        self.store(meta, &data).await?;
        {
            let mut state = self.state.lock().unwrap();
            state.machine = machine;
            state.applied = meta.last_log_id;
            state.membership = meta.last_membership.clone();
        }
        self.applied.send_replace(meta.last_log_id);
        tracing::info!(
            event = "snapshot_installed",
            index = meta.last_log_id.map(|id| id.index),
            bytes = data.len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<C>>, StorageError> {
        let stored = stored(&self.snapshots)
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        Ok(stored.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Membership};
    use serde::Deserialize;

    use super::*;
    use crate::Member;

    openraft::declare_raft_types!(
        CounterTypes:
            D = (String, i64),
            R = i64,
            NodeId = u64,
            Node = Member,
            Entry = openraft::Entry<CounterTypes>,
            SnapshotData = Cursor<Vec<u8>>,
            AsyncRuntime = openraft::TokioRuntime,
    );

    /// Named counters: a command adds to one and answers its new value.
    #[derive(Default, Serialize, Deserialize)]
    struct Counters(BTreeMap<String, i64>);

    impl Machine for Counters {
        type Command = (String, i64);
        type Outcome = i64;

        fn apply(&mut self, (name, add): &(String, i64), _: &LogId) -> i64 {
            let value = self.0.entry(name.clone()).or_default();
            *value += add;
            *value
        }
    }

    type Counting = MemoryMachine<CounterTypes, Counters>;

    fn entry(index: u64, payload: EntryPayload<CounterTypes>) -> Entry<CounterTypes> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload,
        }
    }

    fn add(index: u64, name: &str, n: i64) -> Entry<CounterTypes> {
        entry(index, EntryPayload::Normal((name.to_string(), n)))
    }

    fn open(dir: &std::path::Path) -> (sled::Db, Counting) {
        // A closed machine's flush thread lets go of the database once it sees the last
        // handle dropped: until then sled's lock is held.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let db = loop {
            match sled::open(dir) {
                Ok(db) => break db,
                Err(e) if std::time::Instant::now() > deadline => panic!("reopening: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        };
        let flusher = Flusher::start(db.clone(), false).unwrap();
        let machine = Counting::open(&db, flusher).unwrap();
        (db, machine)
    }

    #[tokio::test]
    async fn applies_in_order_and_comes_back_from_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (db, mut machine) = open(dir.path());
        let mut changes = machine.subscribe();
        let members = Membership::new(vec![[1].into()], None);
        let outcomes = machine
            .apply([
                entry(1, EntryPayload::Blank),
                entry(2, EntryPayload::Membership(members)),
                add(3, "a", 5),
                add(4, "a", -2),
                add(5, "b", 1),
            ])
            .await
            .unwrap();
        assert_eq!(outcomes, vec![0, 0, 5, 3, 1]);
        assert!(changes.has_changed().unwrap());
        assert_eq!(changes.borrow_and_update().map(|id| id.index), Some(5));
        let snapshot = machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id.map(|id| id.index), Some(5));
        // Applied after the snapshot: gone on restart until openraft applies it again.
        machine.apply([add(6, "a", 100)]).await.unwrap();
        assert_eq!(machine.read(|m| m.0["a"]), 103);
        drop((db, machine));

        let (_db, mut reopened) = open(dir.path());
        let (applied, membership) = reopened.applied_state().await.unwrap();
        assert_eq!(applied.map(|id| id.index), Some(5));
        assert_eq!(membership.log_id().map(|id| id.index), Some(2));
        assert_eq!(
            reopened.read(|m| m.0.clone()),
            [("a".into(), 3), ("b".into(), 1)].into()
        );
        assert!(reopened.get_current_snapshot().await.unwrap().is_some());
    }

    #[tokio::test]
    async fn installs_a_leaders_snapshot_and_refuses_a_corrupt_one() {
        let leader_dir = tempfile::tempdir().unwrap();
        let (_db, mut leader) = open(leader_dir.path());
        leader.apply([add(1, "x", 7)]).await.unwrap();
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let follower_dir = tempfile::tempdir().unwrap();
        let (_db2, mut follower) = open(follower_dir.path());
        follower.apply([add(1, "y", 1)]).await.unwrap();
        let e = follower
            .install_snapshot(&snapshot.meta, Box::new(Cursor::new(b"{not json".to_vec())))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not decode"), "{e}");
        assert_eq!(follower.read(|m| m.0.clone()), [("y".into(), 1)].into());

        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot)
            .await
            .unwrap();
        assert_eq!(follower.read(|m| m.0.clone()), [("x".into(), 7)].into());
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
    }
}
