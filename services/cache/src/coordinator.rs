//! A key's coordinator: where replication, quorums, read repair and hinted handoff happen.
//!
//! Any node accepts any request. A request about one key goes to the key's coordinator, the
//! first of its `N` replicas (by the current placement) that answers: a node that is not it
//! forwards the request, and if that replica does not answer, tries the next. The
//! coordinator:
//! - for a read, asks `R` replicas (itself among them) for their copy, answers the newest,
//!   and sends it to the replicas whose copy was older or missing (read repair);
//! - for a write, first brings its own copy up to date the same way (conditional commands —
//!   add, cas, incr... — decide on the newest copy it can see), runs the command on its own
//!   store (memcached's semantics live in one place: [`crate::store`]), then sends the item's
//!   new state to the other replicas and answers once `W` replicas (itself included) hold
//!   it. A replica that fails gets a hint instead, kept by the first node past the key's
//!   replicas that takes it, and replayed when the replica is back ([`Coordinator::replay_hints`]).
//!
//! Peers are reached through [`Peers`]: gRPC in a node, direct calls in the tests below.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::hints::Hints;
use crate::memcached::{self, Now};
use crate::placement::{MemberId, Placement};
use crate::protocol::{Command, Reply, Value};
use crate::store::{Replica, Store, Stored, Version};

/// How long a quorum read waits on the replicas it asked before it asks one more as well.
const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

/// N, W and R.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Replicas per key (N).
    pub replicas: usize,
    /// Replicas that must hold a write before it is acknowledged (W).
    pub write_quorum: usize,
    /// Replicas asked for a read (R).
    pub read_quorum: usize,
}

impl Settings {
    pub fn validate(&self) -> Result<(), String> {
        let Settings {
            replicas: n,
            write_quorum: w,
            read_quorum: r,
        } = *self;
        if n == 0 {
            return Err("--replicas must be at least 1".into());
        }
        if w == 0 || w > n {
            return Err(format!(
                "--write-quorum must be between 1 and --replicas ({n}), not {w}"
            ));
        }
        if r == 0 || r > n {
            return Err(format!(
                "--read-quorum must be between 1 and --replicas ({n}), not {r}"
            ));
        }
        Ok(())
    }
}

/// A peer that did not answer (down, cut off, too slow) or refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{member}: {message}")]
pub struct PeerError {
    pub member: MemberId,
    pub message: String,
}

/// What a coordinator asks of other nodes. Each call is bounded in time by its implementation.
pub trait Peers: Clone + Send + Sync + 'static {
    /// Asks `to` to take these items' states (if newer than its own); how many it took.
    fn replicate(
        &self,
        to: &str,
        entries: Vec<(Bytes, Replica)>,
    ) -> impl Future<Output = Result<usize, PeerError>> + Send;
    /// Asks `to` for its copy of `key`.
    fn fetch(
        &self,
        to: &str,
        key: Bytes,
    ) -> impl Future<Output = Result<Option<Replica>, PeerError>> + Send;
    /// Asks `to` to keep these for `owner`, who is down.
    fn hint(
        &self,
        to: &str,
        owner: &str,
        entries: Vec<(Bytes, Replica)>,
    ) -> impl Future<Output = Result<usize, PeerError>> + Send;
    /// Asks `to` to coordinate this request, with the version the entry node stamped it
    /// with (plain sets and deletes: see [`Coordinator::handle_stamped`]).
    fn forward(
        &self,
        to: &str,
        command: Command,
        stamp: Option<Version>,
    ) -> impl Future<Output = Result<Reply, PeerError>> + Send;
}

/// Running totals for `/metrics` and the admin page.
#[derive(Debug)]
pub struct Counts {
    /// Requests this node received from clients, by command (`get`, `set`...).
    pub ops: Family<OpLabels, Counter>,
    pub hits: Counter,
    pub misses: Counter,
    pub forwarded: Counter,
    pub read_repairs: Counter,
    pub hints_sent: Counter,
    /// Replica writes neither taken nor hinted: a copy short until the next write or repair.
    pub replica_writes_lost: Counter,
    pub quorum_failures: Counter,
    pub keys_moved: Counter,
    /// From a coordinator's write to a replica holding it (replication lag).
    pub replication_seconds: Histogram,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub kind: &'static str,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            ops: Family::default(),
            hits: Counter::default(),
            misses: Counter::default(),
            forwarded: Counter::default(),
            read_repairs: Counter::default(),
            hints_sent: Counter::default(),
            replica_writes_lost: Counter::default(),
            quorum_failures: Counter::default(),
            keys_moved: Counter::default(),
            replication_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
        }
    }
}

impl Counts {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cache_ops",
            "requests from clients, by command",
            self.ops.clone(),
        );
        for (name, help, counter) in [
            ("cache_hits", "reads that found the key", &self.hits),
            ("cache_misses", "reads that did not", &self.misses),
            (
                "cache_forwarded",
                "requests passed to another coordinator",
                &self.forwarded,
            ),
            (
                "cache_read_repairs",
                "stale copies fixed by a quorum read",
                &self.read_repairs,
            ),
            (
                "cache_hints_sent",
                "writes kept as hints for a replica that was down",
                &self.hints_sent,
            ),
            (
                "cache_replica_writes_lost",
                "replica writes neither taken nor hinted",
                &self.replica_writes_lost,
            ),
            (
                "cache_quorum_failures",
                "requests that did not reach R or W replicas",
                &self.quorum_failures,
            ),
            (
                "cache_keys_moved",
                "key copies sent to new replicas on joins and leaves",
                &self.keys_moved,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "cache_replication_seconds",
            "from a coordinator's write to a replica holding it",
            self.replication_seconds.clone(),
        );
    }
}

pub struct Coordinator<P> {
    me: MemberId,
    settings: Settings,
    store: Arc<Mutex<Store>>,
    hints: Mutex<Hints>,
    placement: RwLock<Arc<dyn Placement>>,
    /// Members of the placement known to be down (dead): not asked, hinted at once.
    down: RwLock<BTreeSet<MemberId>>,
    peers: P,
    started: Instant,
    pub counts: Counts,
}

impl<P: Peers> Coordinator<P> {
    pub fn new(
        me: MemberId,
        settings: Settings,
        store: Arc<Mutex<Store>>,
        hints: Hints,
        placement: Arc<dyn Placement>,
        peers: P,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            settings,
            store,
            hints: Mutex::new(hints),
            placement: RwLock::new(placement),
            down: RwLock::new(BTreeSet::new()),
            peers,
            started: Instant::now(),
            counts: Counts::default(),
        })
    }

    pub fn placement(&self) -> Arc<dyn Placement> {
        self.placement.read().expect("never poisoned").clone()
    }

    /// Installs the placement of a new membership; returns the previous one.
    pub fn set_placement(&self, placement: Arc<dyn Placement>) -> Arc<dyn Placement> {
        std::mem::replace(
            &mut *self.placement.write().expect("never poisoned"),
            placement,
        )
    }

    /// The members of the placement that are down now.
    pub fn set_down(&self, down: BTreeSet<MemberId>) {
        *self.down.write().expect("never poisoned") = down;
    }

    fn is_down(&self, member: &str) -> bool {
        self.down.read().expect("never poisoned").contains(member)
    }

    pub fn hint_depth(&self) -> BTreeMap<MemberId, usize> {
        self.hints.lock().expect("never poisoned").depth()
    }

    fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store.lock().expect("never poisoned"))
    }

    /// Serves a request from a client (`forwarded: false`) or from a node that picked this
    /// one to coordinate it (`forwarded: true`: coordinate, do not forward again).
    pub async fn handle(self: &Arc<Self>, command: Command, forwarded: bool) -> Reply {
        self.handle_stamped(command, forwarded, None).await
    }

    /// [`Self::handle`] for a request whose version was stamped before it got here: by the
    /// client (gRPC Set and Delete carry one, as Cassandra's drivers stamp their writes) or by
    /// the node it entered the cluster at. A plain set or delete is written at that version,
    /// not at the coordinator's clock, so a request that arrives late (held in a frozen
    /// node's socket, retried elsewhere meanwhile, then run when the node wakes) cannot
    /// overwrite writes made after it: it loses to them, last writer wins. Without a stamp,
    /// the entry node stamps it now.
    pub async fn handle_stamped(
        self: &Arc<Self>,
        command: Command,
        forwarded: bool,
        stamp: Option<Version>,
    ) -> Reply {
        // A multi-key get is counted key by key, as it is served.
        let multi_get = matches!(&command, Command::Get { keys, .. } if keys.len() != 1);
        if !forwarded && !multi_get {
            self.counts
                .ops
                .get_or_create(&OpLabels {
                    kind: command.kind(),
                })
                .inc();
        }
        let stamp = match stamp {
            Some(v) if v > 0 => Some(v),
            _ if !forwarded && is_blind_write(&command) => Some(self.with_store(|s| s.stamp())),
            _ => None,
        };
        match &command {
            Command::Get { keys, cas } if keys.len() != 1 => {
                // One coordinator per key.
                memcached::get_each(keys, *cas, |_, one| {
                    Box::pin(self.handle_stamped(one, forwarded, None))
                })
                .await
            }
            Command::FlushAll { .. } if !forwarded => {
                let reply = self.local(&command);
                for member in self.placement().members().to_vec() {
                    if member != self.me && !self.is_down(&member) {
                        let _ = self.peers.forward(&member, command.clone(), None).await;
                    }
                }
                reply
            }
            _ => match command.key().cloned() {
                Some(key) => self.route(key, command, forwarded, stamp).await,
                None => self.local(&command),
            },
        }
    }

    fn local(&self, command: &Command) -> Reply {
        self.with_store(|store| memcached::apply(command, store, Now::read(), self.started))
    }

    async fn route(
        self: &Arc<Self>,
        key: Bytes,
        command: Command,
        forwarded: bool,
        stamp: Option<Version>,
    ) -> Reply {
        let replicas: Vec<MemberId> = self
            .placement()
            .replicas(&key, self.settings.replicas)
            .into_iter()
            .cloned()
            .collect();
        if replicas.is_empty() {
            return Reply::ServerError("no live members".into());
        }
        if !forwarded {
            // The first replica that answers coordinates; this node, when its turn comes.
            for replica in &replicas {
                if *replica == self.me {
                    break;
                }
                if self.is_down(replica) {
                    continue;
                }
                match self.peers.forward(replica, command.clone(), stamp).await {
                    Ok(reply) => {
                        self.counts.forwarded.inc();
                        return reply;
                    }
                    Err(e) => tracing::debug!(error = %e, "coordinator did not answer; next"),
                }
            }
            if !replicas.contains(&self.me) {
                return Reply::ServerError(format!(
                    "no replica of the key answered ({})",
                    replicas.join(", ")
                ));
            }
        }
        match command {
            Command::Get { cas, .. } => self.read(key, &replicas, cas).await,
            write => self.write(key, write, &replicas, stamp).await,
        }
    }

    /// The newest copy among R replicas (this one included if it is one), repairing the
    /// others; `Err` if fewer than R answered.
    async fn quorum_copy(
        self: &Arc<Self>,
        key: &Bytes,
        replicas: &[MemberId],
    ) -> Result<Option<Replica>, Reply> {
        let now = Instant::now();
        let mut copies: Vec<(MemberId, Option<Replica>)> = Vec::new();
        if replicas.contains(&self.me) {
            let mine = self.with_store(|s| s.replica_of(key, now));
            copies.push((self.me.clone(), mine));
        }
        let wanted = self.settings.read_quorum.min(replicas.len());
        // As many replicas as the quorum needs are asked at once; one more is asked when one
        // fails, or when none answered for `HEDGE_AFTER` (Cassandra's speculative retry): a
        // slow or dead replica not yet known down holds a read up that long, not its timeout.
        let others: Vec<MemberId> = replicas
            .iter()
            .filter(|r| **r != self.me && !self.is_down(r))
            .cloned()
            .collect();
        let mut others = others.into_iter().peekable();
        let mut fetches = tokio::task::JoinSet::new();
        let mut asked = 0;
        let mut ask = |fetches: &mut tokio::task::JoinSet<_>, member: MemberId| {
            asked += 1;
            let (peers, key) = (self.peers.clone(), key.clone());
            fetches.spawn(async move {
                let copy = peers.fetch(&member, key).await;
                (member, copy)
            });
        };
        while copies.len() < wanted {
            while copies.len() + fetches.len() < wanted
                && let Some(member) = others.next()
            {
                ask(&mut fetches, member);
            }
            let more = others.peek().is_some();
            tokio::select! {
                done = fetches.join_next() => match done {
                    None => break,
                    Some(Ok((member, Ok(copy)))) => copies.push((member, copy)),
                    Some(Ok((_, Err(e)))) => {
                        tracing::debug!(error = %e, "replica did not answer a read");
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "a replica read failed"),
                },
                () = tokio::time::sleep(HEDGE_AFTER), if more => {
                    ask(&mut fetches, others.next().expect("peeked"));
                }
            }
        }
        if copies.len() < wanted {
            self.counts.quorum_failures.inc();
            return Err(Reply::ServerError(format!(
                "read quorum not reached: {} of {wanted} replicas answered ({asked} asked)",
                copies.len()
            )));
        }
        let newest = copies
            .iter()
            .filter_map(|(_, c)| c.clone())
            .max_by_key(Replica::version);
        if let Some(newest) = &newest {
            for (member, copy) in &copies {
                if copy.as_ref().map(Replica::version) == Some(newest.version()) {
                    continue;
                }
                self.counts.read_repairs.inc();
                if *member == self.me {
                    self.with_store(|s| s.merge(key.clone(), newest.clone(), Instant::now()));
                } else {
                    let (peers, member, entry) = (
                        self.peers.clone(),
                        member.clone(),
                        (key.clone(), newest.clone()),
                    );
                    tokio::spawn(async move {
                        let _ = peers.replicate(&member, vec![entry]).await;
                    });
                }
            }
        }
        Ok(newest)
    }

    async fn read(self: &Arc<Self>, key: Bytes, replicas: &[MemberId], cas: bool) -> Reply {
        let newest = match self.quorum_copy(&key, replicas).await {
            Ok(newest) => newest,
            Err(reply) => return reply,
        };
        let item = match newest {
            Some(Replica::Value {
                value,
                flags,
                expires,
                version,
            }) if expires.is_none_or(|at| at > Instant::now()) => Some(Value {
                key,
                value,
                flags,
                version,
            }),
            _ => None,
        };
        let counter = if item.is_some() {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        counter.inc();
        Reply::Values {
            cas,
            items: item.into_iter().collect(),
        }
    }

    async fn write(
        self: &Arc<Self>,
        key: Bytes,
        command: Command,
        replicas: &[MemberId],
        stamp: Option<Version>,
    ) -> Reply {
        // A plain set needs nothing from the old copy; everything else decides on it.
        let plain_set = matches!(
            command,
            Command::Store {
                mode: crate::store::Mode::Set,
                ..
            }
        );
        if !plain_set && let Err(reply) = self.quorum_copy(&key, replicas).await {
            return reply;
        }
        let (reply, changed) = match stamp.filter(|_| is_blind_write(&command)) {
            Some(version) => self.write_at(&key, &command, version),
            None => {
                let reply = self.local(&command);
                let changed = matches!(
                    reply,
                    Reply::Stored(Stored::Stored)
                        | Reply::Deleted(true)
                        | Reply::Touched(true)
                        | Reply::Number(Some(_))
                );
                (reply, changed)
            }
        };
        if !changed {
            return reply;
        }
        let Some(state) = self.with_store(|s| s.replica_of(&key, Instant::now())) else {
            return reply;
        };
        let others: Vec<MemberId> = replicas
            .iter()
            .filter(|r| **r != self.me)
            .cloned()
            .collect();
        // Acks still needed beyond this node's own copy (none, if it coordinates a key it is
        // not a replica of: a forward that crossed a membership change).
        let own = usize::from(replicas.contains(&self.me));
        let needed = self
            .settings
            .write_quorum
            .min(replicas.len())
            .saturating_sub(own);
        if others.is_empty() || needed == 0 {
            self.spawn_replication(key, state, others, None);
            return reply;
        }
        let (acks, mut acked) = mpsc::channel(others.len());
        self.spawn_replication(key, state, others.clone(), Some(acks));
        let mut held = 0;
        while held < needed {
            match acked.recv().await {
                Some(true) => held += 1,
                Some(false) => {}
                None => break,
            }
        }
        if held < needed {
            self.counts.quorum_failures.inc();
            return Reply::ServerError(format!(
                "write quorum not reached: {} of {} replicas hold it",
                held + own,
                needed + own
            ));
        }
        reply
    }

    /// A plain set or a delete written at `version`: the reply memcached gives, and whether
    /// the local copy changed (not if it already holds something newer: this write lost).
    fn write_at(&self, key: &Bytes, command: &Command, version: Version) -> (Reply, bool) {
        let now = Now::read();
        self.with_store(|store| match command {
            Command::Store {
                data,
                flags,
                exptime,
                ..
            } => {
                let copy = Replica::Value {
                    value: data.clone(),
                    flags: *flags,
                    expires: now.expiry(*exptime),
                    version,
                };
                let changed = store.merge(key.clone(), copy, now.instant);
                (Reply::Stored(Stored::Stored), changed)
            }
            _ => {
                let existed = matches!(
                    store.replica_of(key, now.instant),
                    Some(Replica::Value { .. })
                );
                let changed = store.merge(key.clone(), Replica::Deleted { version }, now.instant);
                (Reply::Deleted(existed), changed)
            }
        })
    }

    /// Sends `state` to each replica on its own task (each reports to `acks` whether it took
    /// it); a replica that fails gets a hint instead.
    fn spawn_replication(
        self: &Arc<Self>,
        key: Bytes,
        state: Replica,
        replicas: Vec<MemberId>,
        acks: Option<mpsc::Sender<bool>>,
    ) {
        for replica in replicas {
            let this = self.clone();
            let (key, state, acks) = (key.clone(), state.clone(), acks.clone());
            tokio::spawn(async move {
                let taken = if this.is_down(&replica) {
                    Err(PeerError {
                        member: replica.clone(),
                        message: "down".into(),
                    })
                } else {
                    let started = Instant::now();
                    let taken = this
                        .peers
                        .replicate(&replica, vec![(key.clone(), state.clone())])
                        .await;
                    if taken.is_ok() {
                        this.counts
                            .replication_seconds
                            .observe(started.elapsed().as_secs_f64());
                    }
                    taken
                };
                if let Some(acks) = acks {
                    let _ = acks.send(taken.is_ok()).await;
                }
                if let Err(e) = taken {
                    tracing::debug!(error = %e, "replica write failed; hinting");
                    this.hand_off(&replica, key, state).await;
                }
            });
        }
    }

    /// Leaves a hint for `owner` on the first node past the key's replicas that takes it.
    async fn hand_off(&self, owner: &str, key: Bytes, state: Replica) {
        let placement = self.placement();
        let n = self.settings.replicas;
        let all = placement.members().len();
        let holders: Vec<MemberId> = placement
            .replicas(&key, all)
            .into_iter()
            .skip(n)
            .filter(|m| !self.is_down(m))
            .cloned()
            .collect();
        for holder in holders {
            let kept = if holder == self.me {
                self.keep_hints(owner, vec![(key.clone(), state.clone())]) > 0
            } else {
                self.peers
                    .hint(&holder, owner, vec![(key.clone(), state.clone())])
                    .await
                    .is_ok_and(|kept| kept > 0)
            };
            if kept {
                self.counts.hints_sent.inc();
                return;
            }
        }
        // No node past the replicas (a small cluster) or none took it: keep it here.
        if self.keep_hints(owner, vec![(key, state)]) > 0 {
            self.counts.hints_sent.inc();
        } else {
            self.counts.replica_writes_lost.inc();
        }
    }

    /// A replica write from a coordinator: takes the states newer than this node's.
    pub fn take_replicas(&self, entries: Vec<(Bytes, Replica)>) -> usize {
        let now = Instant::now();
        self.with_store(|s| {
            entries
                .into_iter()
                .filter(|(key, replica)| s.merge(key.clone(), replica.clone(), now))
                .count()
        })
    }

    /// This node's copy of `key`, for a coordinator's quorum read.
    pub fn copy_of(&self, key: &[u8]) -> Option<Replica> {
        self.with_store(|s| s.replica_of(key, Instant::now()))
    }

    /// Hints a coordinator asks this node to keep for `owner`; how many it kept.
    pub fn keep_hints(&self, owner: &str, entries: Vec<(Bytes, Replica)>) -> usize {
        let now = Instant::now();
        let mut hints = self.hints.lock().expect("never poisoned");
        entries
            .into_iter()
            .filter(|(key, replica)| hints.add(owner, key.clone(), replica.clone(), now))
            .count()
    }

    /// Replays the hints of every owner in `live` (members alive again); how many were
    /// delivered. Failed batches go back in the queue.
    pub async fn replay_hints(&self, live: &[MemberId]) -> usize {
        let mut delivered = 0;
        for owner in live {
            loop {
                let batch = {
                    let mut hints = self.hints.lock().expect("never poisoned");
                    hints.take(owner, 128, Instant::now())
                };
                if batch.is_empty() {
                    break;
                }
                match self.peers.replicate(owner, batch.clone()).await {
                    Ok(_) => delivered += batch.len(),
                    Err(e) => {
                        tracing::debug!(error = %e, "hint replay failed; kept");
                        let mut hints = self.hints.lock().expect("never poisoned");
                        hints.give_back(owner, batch, Instant::now());
                        break;
                    }
                }
            }
        }
        delivered
    }

    /// After a membership change: sends every local key to the members that became its
    /// replicas, and measures the change: of the keys this node answers for as the surviving
    /// first replica under `before`, how many changed primary.
    pub async fn rebalance(&self, before: &dyn Placement, after: &dyn Placement) -> Rebalance {
        let n = self.settings.replicas;
        let members = after.members();
        let keys = self.with_store(|s| s.keys());
        let mut report = Rebalance::default();
        let mut outgoing: BTreeMap<MemberId, Vec<Bytes>> = BTreeMap::new();
        for key in keys {
            let old = before.replicas(&key, n);
            let new = after.replicas(&key, n);
            // Each key is counted once in the cluster: by its first replica still a member.
            if old.iter().find(|m| members.contains(m)) == Some(&&self.me) {
                report.primary_keys += 1;
                if old.first() != new.first() {
                    report.primaries_moved += 1;
                }
            }
            for member in new.iter().filter(|m| !old.contains(m) && ***m != self.me) {
                outgoing
                    .entry((*member).clone())
                    .or_default()
                    .push(key.clone());
            }
        }
        report.copies_sent = self.send_copies(outgoing, "rebalance").await;
        self.counts.keys_moved.inc_by(report.copies_sent as u64);
        report
    }

    /// For a member back from the dead (restarted with nothing, or cut off while keys
    /// changed): sends it a copy of every local key it is a replica of, so its copies are
    /// whole again without waiting for writes or read repairs. How many copies were sent.
    pub async fn resync(&self, member: &str) -> usize {
        let n = self.settings.replicas;
        let placement = self.placement();
        let keys: Vec<Bytes> = self
            .with_store(|s| s.keys())
            .into_iter()
            .filter(|key| placement.replicas(key, n).iter().any(|m| *m == member))
            .collect();
        self.send_copies(BTreeMap::from([(member.to_string(), keys)]), "resync")
            .await
    }

    /// Sends each member the local copies of its keys, in batches; how many were taken.
    async fn send_copies(&self, outgoing: BTreeMap<MemberId, Vec<Bytes>>, why: &str) -> usize {
        let mut sent = 0;
        for (member, keys) in outgoing {
            for chunk in keys.chunks(256) {
                let batch: Vec<(Bytes, Replica)> = chunk
                    .iter()
                    .filter_map(|key| Some((key.clone(), self.copy_of(key)?)))
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                match self.peers.replicate(&member, batch.clone()).await {
                    Ok(_) => sent += batch.len(),
                    Err(e) => {
                        tracing::warn!(error = %e, "{why}: sending keys to {member} failed");
                        break;
                    }
                }
            }
        }
        sent
    }
}

/// A write whose outcome does not depend on what is stored (a plain set, a delete): it can
/// be stamped with its version where it enters the cluster.
pub fn is_blind_write(command: &Command) -> bool {
    matches!(
        command,
        Command::Store {
            mode: crate::store::Mode::Set,
            ..
        } | Command::Delete { .. }
    )
}

/// What a membership change cost one node (see [`Coordinator::rebalance`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rebalance {
    /// (key, member) copies sent to members that became replicas.
    pub copies_sent: usize,
    /// Keys this node counts for the cluster: those whose first surviving replica it is.
    pub primary_keys: usize,
    /// Of those, the keys whose primary changed.
    pub primaries_moved: usize,
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;
    use std::time::Duration;

    use super::*;
    use crate::placement::PlacementKind;
    use crate::protocol;

    /// Nodes in one process: a peer call is a direct call, unless the callee is down (an
    /// error at once) or stuck (a read it never answers).
    #[derive(Default)]
    struct Net {
        nodes: Mutex<BTreeMap<MemberId, Weak<Coordinator<Link>>>>,
        down: Mutex<BTreeSet<MemberId>>,
        stuck: Mutex<BTreeSet<MemberId>>,
    }

    #[derive(Clone)]
    struct Link(Arc<Net>);

    impl Link {
        fn node(&self, to: &str) -> Result<Arc<Coordinator<Link>>, PeerError> {
            let down = self.0.down.lock().unwrap().contains(to);
            let node = self.0.nodes.lock().unwrap().get(to).and_then(Weak::upgrade);
            match node {
                Some(node) if !down => Ok(node),
                _ => Err(PeerError {
                    member: to.into(),
                    message: "down".into(),
                }),
            }
        }
    }

    impl Peers for Link {
        async fn replicate(
            &self,
            to: &str,
            entries: Vec<(Bytes, Replica)>,
        ) -> Result<usize, PeerError> {
            Ok(self.node(to)?.take_replicas(entries))
        }
        async fn fetch(&self, to: &str, key: Bytes) -> Result<Option<Replica>, PeerError> {
            if self.0.stuck.lock().unwrap().contains(to) {
                std::future::pending::<()>().await;
            }
            Ok(self.node(to)?.copy_of(&key))
        }
        async fn hint(
            &self,
            to: &str,
            owner: &str,
            entries: Vec<(Bytes, Replica)>,
        ) -> Result<usize, PeerError> {
            Ok(self.node(to)?.keep_hints(owner, entries))
        }
        fn forward(
            &self,
            to: &str,
            command: Command,
            stamp: Option<Version>,
        ) -> impl Future<Output = Result<Reply, PeerError>> + Send {
            let node = self.node(to);
            // Boxed and named: the coordinator calls this from inside `handle`, which
            // this calls back.
            let reply: std::pin::Pin<Box<dyn Future<Output = Result<Reply, PeerError>> + Send>> =
                Box::pin(async move { Ok(node?.handle_stamped(command, true, stamp).await) });
            reply
        }
    }

    struct Cluster {
        net: Arc<Net>,
        nodes: BTreeMap<MemberId, Arc<Coordinator<Link>>>,
    }

    impl Cluster {
        fn new(n: usize, settings: Settings) -> Self {
            let net = Arc::new(Net::default());
            let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
            let placement: Arc<dyn Placement> =
                Arc::from(PlacementKind::Ring { vnodes: 64 }.build(ids.clone()));
            let nodes: BTreeMap<_, _> = ids
                .iter()
                .map(|id| {
                    let node = Coordinator::new(
                        id.clone(),
                        settings,
                        Arc::new(Mutex::new(Store::new(1 << 24))),
                        Hints::new(1 << 20, Duration::from_secs(60)),
                        placement.clone(),
                        Link(net.clone()),
                    );
                    (id.clone(), node)
                })
                .collect();
            *net.nodes.lock().unwrap() = nodes
                .iter()
                .map(|(id, n)| (id.clone(), Arc::downgrade(n)))
                .collect();
            Self { net, nodes }
        }

        /// `id` starts again with nothing (a killed cache node's restart).
        fn restart(&mut self, id: &str) {
            let old = &self.nodes[id];
            let node = Coordinator::new(
                id.to_string(),
                old.settings,
                Arc::new(Mutex::new(Store::new(1 << 24))),
                Hints::new(1 << 20, Duration::from_secs(60)),
                old.placement(),
                Link(self.net.clone()),
            );
            self.net
                .nodes
                .lock()
                .unwrap()
                .insert(id.to_string(), Arc::downgrade(&node));
            self.nodes.insert(id.to_string(), node);
        }

        async fn run(&self, at: &str, request: &str) -> String {
            let (command, _) = protocol::parse(request.as_bytes()).unwrap().unwrap();
            let reply = self.nodes[at].handle(command, false).await;
            let mut out = Vec::new();
            reply.encode(&mut out);
            String::from_utf8(out).unwrap()
        }

        fn set_down(&self, id: &str, down: bool) {
            let mut set = self.net.down.lock().unwrap();
            if down {
                set.insert(id.into());
            } else {
                set.remove(id);
            }
        }

        /// Which nodes hold a live copy of `key`.
        fn holders(&self, key: &str) -> Vec<String> {
            self.nodes
                .iter()
                .filter(|(_, n)| matches!(n.copy_of(key.as_bytes()), Some(Replica::Value { .. })))
                .map(|(id, _)| id.clone())
                .collect()
        }

        fn replicas_of(&self, key: &str) -> Vec<String> {
            let placement = self.nodes["n1"].placement();
            placement
                .replicas(key.as_bytes(), 3)
                .into_iter()
                .cloned()
                .collect()
        }

        /// Waits for the replication tasks the last write left running.
        async fn settle(&self) {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        }
    }

    const NWR: Settings = Settings {
        replicas: 3,
        write_quorum: 2,
        read_quorum: 2,
    };

    #[tokio::test]
    async fn any_node_serves_any_key_and_writes_reach_all_replicas() {
        let cluster = Cluster::new(5, NWR);
        for i in 0..50 {
            let at = format!("n{}", i % 5 + 1);
            assert_eq!(
                cluster
                    .run(&at, &format!("set k{i} 0 0 2\r\nv{}\r\n", i % 10))
                    .await,
                "STORED\r\n"
            );
        }
        cluster.settle().await;
        for i in 0..50 {
            let key = format!("k{i}");
            assert_eq!(cluster.holders(&key), {
                let mut r = cluster.replicas_of(&key);
                r.sort();
                r
            });
            let at = format!("n{}", (i + 2) % 5 + 1);
            assert_eq!(
                cluster.run(&at, &format!("get {key}\r\n")).await,
                format!("VALUE {key} 0 2\r\nv{}\r\nEND\r\n", i % 10)
            );
        }
        assert!(cluster.nodes.values().any(|n| n.counts.forwarded.get() > 0));
    }

    #[tokio::test]
    async fn with_one_replica_down_writes_succeed_get_hinted_and_the_hint_is_replayed() {
        let cluster = Cluster::new(5, NWR);
        let replicas = cluster.replicas_of("k");
        let down = replicas[1].clone();
        cluster.set_down(&down, true);
        assert_eq!(
            cluster.run("n1", "set k 0 0 1\r\nx\r\n").await,
            "STORED\r\n"
        );
        cluster.settle().await;
        let hinted: usize = cluster
            .nodes
            .values()
            .map(|n| n.hint_depth().get(&down).copied().unwrap_or(0))
            .sum();
        assert_eq!(hinted, 1, "one hint for {down}");
        assert!(!cluster.holders("k").contains(&down));
        // Back: the holder replays, and the owner has it.
        cluster.set_down(&down, false);
        let mut delivered = 0;
        for node in cluster.nodes.values() {
            delivered += node.replay_hints(std::slice::from_ref(&down)).await;
        }
        assert_eq!(delivered, 1);
        assert!(cluster.holders("k").contains(&down));
    }

    #[tokio::test]
    async fn with_two_of_three_replicas_down_a_quorum_write_fails_and_says_so() {
        let cluster = Cluster::new(5, NWR);
        let replicas = cluster.replicas_of("k");
        cluster.set_down(&replicas[1], true);
        cluster.set_down(&replicas[2], true);
        let reply = cluster.run(&replicas[0], "set k 0 0 1\r\nx\r\n").await;
        assert!(
            reply.starts_with("SERVER_ERROR write quorum not reached: 1 of 2"),
            "{reply}"
        );
        let reply = cluster.run(&replicas[0], "get k\r\n").await;
        assert!(
            reply.starts_with("SERVER_ERROR read quorum not reached"),
            "{reply}"
        );
    }

    /// A replica that does not answer (not yet known down) holds a quorum read up for the
    /// hedge delay only: then the next replica is asked as well, and makes the quorum.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_replica_holds_no_quorum_read_up() {
        let cluster = Cluster::new(3, NWR);
        let replicas = cluster.replicas_of("k");
        cluster.run(&replicas[0], "set k 0 0 1\r\nx\r\n").await;
        cluster.settle().await;
        for stuck in &replicas[1..] {
            cluster.net.stuck.lock().unwrap().insert(stuck.clone());
            let read = cluster.run(&replicas[0], "get k\r\n");
            // Paused time: if the read waited on the stuck replica for good, the clock would
            // jump to this timeout at once.
            let reply = tokio::time::timeout(Duration::from_secs(3600), read)
                .await
                .unwrap_or_else(|_| panic!("the read waited on {stuck}"));
            assert_eq!(reply, "VALUE k 0 1\r\nx\r\nEND\r\n");
            cluster.net.stuck.lock().unwrap().clear();
        }
    }

    #[tokio::test]
    async fn a_read_answers_the_newest_copy_and_repairs_the_stale_one() {
        let cluster = Cluster::new(3, NWR);
        let replicas = cluster.replicas_of("k");
        cluster.run("n1", "set k 0 0 3\r\nold\r\n").await;
        cluster.settle().await;
        // One replica misses the second write.
        cluster.set_down(&replicas[2], true);
        cluster.run("n1", "set k 0 0 3\r\nnew\r\n").await;
        cluster.settle().await;
        cluster.set_down(&replicas[2], false);
        // A read at the stale replica, with the first replica down: the second coordinates,
        // asks the stale one for the quorum, answers "new" and repairs the stale copy.
        let stale = &cluster.nodes[&replicas[2]];
        assert!(
            matches!(stale.copy_of(b"k"), Some(Replica::Value { value, .. }) if value == "old")
        );
        cluster.set_down(&replicas[0], true);
        assert_eq!(
            cluster.run(&replicas[2], "get k\r\n").await,
            "VALUE k 0 3\r\nnew\r\nEND\r\n"
        );
        cluster.settle().await;
        assert!(
            matches!(stale.copy_of(b"k"), Some(Replica::Value { value, .. }) if value == "new")
        );
        let repairs: u64 = cluster
            .nodes
            .values()
            .map(|n| n.counts.read_repairs.get())
            .sum();
        assert_eq!(repairs, 1);
    }

    #[tokio::test]
    async fn conditional_commands_decide_on_the_newest_copy() {
        let cluster = Cluster::new(3, NWR);
        let replicas = cluster.replicas_of("n");
        cluster.run("n1", "set n 0 0 1\r\n5\r\n").await;
        cluster.settle().await;
        cluster.set_down(&replicas[2], true);
        cluster.run("n1", "incr n 10\r\n").await;
        cluster.settle().await;
        cluster.set_down(&replicas[2], false);
        // The stale replica coordinates (as if a forwarder picked it): it must not increment
        // its old 5.
        let stale = cluster.nodes[&replicas[2]].clone();
        let (incr, _) = protocol::parse(b"incr n 1\r\n").unwrap().unwrap();
        assert_eq!(stale.handle(incr, true).await, Reply::Number(Some(16)));
        cluster.set_down(&replicas[0], true);
        assert_eq!(cluster.run(&replicas[2], "incr n 1\r\n").await, "17\r\n");
        assert_eq!(
            cluster.run(&replicas[2], "add n 0 0 1\r\nz\r\n").await,
            "NOT_STORED\r\n"
        );
        assert_eq!(
            cluster.run(&replicas[1], "delete n\r\n").await,
            "DELETED\r\n"
        );
        assert_eq!(cluster.run(&replicas[2], "get n\r\n").await, "END\r\n");
    }

    #[tokio::test]
    async fn a_join_moves_keys_to_their_new_replicas_only() {
        let cluster = Cluster::new(4, NWR);
        let keys = 400;
        for i in 0..keys {
            cluster.run("n1", &format!("set k{i} 0 0 1\r\nv\r\n")).await;
        }
        cluster.settle().await;
        let before = cluster.nodes["n1"].placement();
        let after: Arc<dyn Placement> =
            Arc::from(PlacementKind::Ring { vnodes: 64 }.build(["n1", "n2", "n3"]));
        // n4 leaves (say): the others send what n4 held to the new replicas.
        cluster.set_down("n4", true);
        let mut moved = 0;
        let (mut counted, mut primaries_moved) = (0, 0);
        for id in ["n1", "n2", "n3"] {
            cluster.nodes[id].set_placement(after.clone());
            let report = cluster.nodes[id].rebalance(&*before, &*after).await;
            moved += report.copies_sent;
            counted += report.primary_keys;
            primaries_moved += report.primaries_moved;
        }
        // Every key is counted once, by its first surviving replica; the keys whose primary
        // moved are exactly those n4 was primary of.
        assert_eq!(counted, keys);
        let n4_primary = (0..keys)
            .filter(|i| {
                before
                    .primary(format!("k{i}").as_bytes())
                    .is_some_and(|p| p == "n4")
            })
            .count();
        assert_eq!(primaries_moved, n4_primary);
        assert!(n4_primary > 0);
        for i in 0..keys {
            let key = format!("k{i}");
            let holders: BTreeSet<String> = cluster.holders(&key).into_iter().collect();
            assert!(holders.is_superset(&["n1", "n2", "n3"].map(String::from).into()));
        }
        // Each key n4 held gained one replica, sent by each of its two other holders.
        let lost = (0..keys)
            .filter(|i| {
                before
                    .replicas(format!("k{i}").as_bytes(), 3)
                    .iter()
                    .any(|m| *m == "n4")
            })
            .count();
        assert_eq!(moved, 2 * lost);
    }

    #[tokio::test]
    async fn a_late_request_loses_to_the_writes_made_after_it_was_stamped() {
        let cluster = Cluster::new(3, NWR);
        let (set, _) = protocol::parse(b"set k 0 0 3\r\nold\r\n").unwrap().unwrap();
        let stamped_then = cluster.nodes["n1"].with_store(|s| s.stamp());
        cluster.run("n2", "set k 0 0 3\r\nnew\r\n").await;
        cluster.settle().await;
        // The old request turns up now (a frozen node woke up), at any node, forwarded or
        // not: it is still answered, but what it wrote is older than "new".
        for (node, forwarded) in [("n1", false), ("n3", true)] {
            let reply = cluster.nodes[node]
                .handle_stamped(set.clone(), forwarded, Some(stamped_then))
                .await;
            assert_eq!(reply, Reply::Stored(Stored::Stored));
        }
        cluster.settle().await;
        for node in ["n1", "n2", "n3"] {
            assert_eq!(
                cluster.run(node, "get k\r\n").await,
                "VALUE k 0 3\r\nnew\r\nEND\r\n"
            );
        }
        // A stamped delete from before "new" does not delete it either, and says so honestly.
        let (delete, _) = protocol::parse(b"delete k\r\n").unwrap().unwrap();
        let reply = cluster.nodes["n1"]
            .handle_stamped(delete, false, Some(stamped_then))
            .await;
        assert_eq!(reply, Reply::Deleted(true));
        cluster.settle().await;
        assert_eq!(
            cluster.run("n3", "get k\r\n").await,
            "VALUE k 0 3\r\nnew\r\nEND\r\n"
        );
    }

    #[tokio::test]
    async fn a_restarted_member_is_resynced_with_its_keys() {
        let mut cluster = Cluster::new(5, NWR);
        let keys = 200;
        for i in 0..keys {
            cluster.run("n1", &format!("set k{i} 0 0 1\r\nv\r\n")).await;
        }
        cluster.settle().await;
        cluster.restart("n5");
        let owned: Vec<String> = (0..keys)
            .map(|i| format!("k{i}"))
            .filter(|k| cluster.replicas_of(k).iter().any(|m| m == "n5"))
            .collect();
        assert!(
            owned
                .iter()
                .all(|k| !cluster.holders(k).contains(&"n5".into()))
        );
        let mut sent = 0;
        for id in ["n1", "n2", "n3", "n4"] {
            sent += cluster.nodes[id].resync("n5").await;
        }
        // Every other replica sends each key it shares with n5.
        assert_eq!(sent, 2 * owned.len());
        assert!(
            owned
                .iter()
                .all(|k| cluster.holders(k).contains(&"n5".into()))
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(NWR.validate().is_ok());
        let bad = Settings {
            write_quorum: 4,
            ..NWR
        };
        assert!(bad.validate().unwrap_err().contains("--write-quorum"));
        let bad = Settings {
            read_quorum: 0,
            ..NWR
        };
        assert!(bad.validate().unwrap_err().contains("--read-quorum"));
    }
}
