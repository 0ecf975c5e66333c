//! Reaching a Raft group's leader: the "not the leader" answer a follower gives, naming the
//! leader it knows, and the client side that follows it.
//!
//! A follower answers FAILED_PRECONDITION with metadata [`LEADER_HINT`] naming the leader
//! (empty if it knows none); nothing is forwarded. [`LeaderClient`] knows every node, guesses
//! which leads, follows hints and moves on from nodes that do not answer, under the shared
//! [`RetryPolicy`]. Project 2's client and Project 3's controller client both run their calls
//! through it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use distlab_runtime::retry::{Attempt, ClientMetrics, Idempotence, RetryPolicy};
use openraft::error::ForwardToLeader;
use tonic::Status;

use crate::{Member, Names, RaftId};

/// The metadata that marks a "not the leader" answer, naming the leader (empty if unknown).
pub const LEADER_HINT: &str = "raft-leader";

/// The answer to a request only the leader serves, from a node that is not it.
pub fn not_leader(forward: &ForwardToLeader<RaftId, Member>, names: &Names) -> Status {
    let leader = forward
        .leader_node
        .as_ref()
        .map(|m| m.name.clone())
        .or_else(|| forward.leader_id.map(|id| names.name(id)));
    let mut status = Status::failed_precondition(match &leader {
        Some(name) => format!("not the leader; the leader is {name}"),
        None => "not the leader; no leader is known right now".to_string(),
    });
    // Always present on this answer, empty when no leader is known: it is how clients tell
    // "not here" from other refusals. Node ids are ASCII letters, digits, '-' and '_'.
    let hint = leader
        .unwrap_or_default()
        .parse()
        .expect("node ids are valid metadata");
    status.metadata_mut().insert(LEADER_HINT, hint);
    status
}

/// Calls to whichever node of a group leads. Clones share the leader guess.
#[derive(Clone)]
pub struct LeaderClient<Rpc> {
    nodes: Arc<Vec<(String, Rpc)>>,
    /// Index in `nodes` of the node believed to lead.
    leader: Arc<AtomicUsize>,
    policy: RetryPolicy,
    metrics: ClientMetrics,
}

impl<Rpc: Clone> LeaderClient<Rpc> {
    /// A client of `nodes` (name, address), one lazily connected channel per node, each
    /// wrapped in its RPC client by `rpc`.
    pub fn connect_lazy(
        nodes: &[(String, std::net::SocketAddr)],
        policy: RetryPolicy,
        rpc: impl Fn(distlab_runtime::channel::TracedChannel) -> Rpc,
    ) -> anyhow::Result<Self> {
        let rpcs = distlab_runtime::channel::per_node(nodes, &policy)?
            .into_iter()
            .map(|(name, channel)| (name, rpc(channel)))
            .collect();
        Ok(Self::new(rpcs, policy))
    }

    /// `nodes`: every node's name and its RPC client (at least one).
    pub fn new(nodes: Vec<(String, Rpc)>, policy: RetryPolicy) -> Self {
        assert!(!nodes.is_empty(), "a leader client needs a node");
        Self {
            nodes: Arc::new(nodes),
            leader: Arc::new(AtomicUsize::new(0)),
            policy,
            metrics: ClientMetrics::default(),
        }
    }

    /// Another client over the same connections with its own leader guess (starting from
    /// this one's).
    pub fn fork(&self) -> Self {
        Self {
            nodes: self.nodes.clone(),
            leader: Arc::new(AtomicUsize::new(self.leader.load(Ordering::Relaxed))),
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }

    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The node this client currently sends to.
    pub fn leader_guess(&self) -> String {
        self.nodes[self.leader.load(Ordering::Relaxed) % self.nodes.len()]
            .0
            .clone()
    }

    /// The RPC client of node `name`.
    pub fn node(&self, name: &str) -> Option<Rpc> {
        self.nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, rpc)| rpc.clone())
    }

    /// Runs one call under the retry policy, at the node believed to lead, following leader
    /// hints and moving on from nodes that do not answer. Every attempt gets its timeout
    /// ([`with_timeout`]).
    ///
    /// A node that did not answer during this call is not tried again in it while another
    /// node might answer, and a hint naming it is ignored: a follower cut off with an old
    /// leader still names that leader, and following the hint back to it would loop between
    /// the two until the deadline while the majority, with its new leader, is one hop away.
    pub async fn call<T, F, Fut>(&self, mut attempt_fn: F) -> Result<T, Status>
    where
        F: FnMut(Rpc, Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let n = self.nodes.len();
        let silent = Silent::default();
        // The node of an attempt the policy's own timer cut off (it never returned here).
        let unanswered = AtomicUsize::new(NONE);
        self.policy
            .call(Idempotence::Idempotent, &self.metrics, |attempt| {
                let cut_off = unanswered.swap(NONE, Ordering::Relaxed);
                if cut_off != NONE {
                    silent.mark(cut_off);
                    self.move_on(cut_off, None, &silent);
                }
                let index = self.leader.load(Ordering::Relaxed) % n;
                unanswered.store(index, Ordering::Relaxed);
                let (name, rpc) = &self.nodes[index];
                let fut = attempt_fn(rpc.clone(), attempt);
                let (silent, unanswered) = (&silent, &unanswered);
                async move {
                    let result = fut.await;
                    unanswered.store(NONE, Ordering::Relaxed);
                    match result {
                        Ok(reply) => Ok(reply.into_inner()),
                        Err(status) => Err(self.redirect(index, name, status, silent)),
                    }
                }
            })
            .await
    }

    /// [`LeaderClient::call`] for the common case: every attempt sends a copy of `request`
    /// with the attempt's timeout, through `send` (`|mut rpc, r| async move { rpc.get(r).await }`).
    pub async fn unary<Req, T, F, Fut>(&self, request: &Req, send: F) -> Result<T, Status>
    where
        Req: Clone,
        F: Fn(Rpc, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(|rpc, attempt| send(rpc, with_timeout(request.clone(), attempt)))
            .await
    }

    /// After a failed attempt at node `index`: where to go next, and whether to retry (a
    /// redirect is retried: the answer was "not here", not "failed").
    fn redirect(&self, index: usize, name: &str, status: Status, silent: &Silent) -> Status {
        let not_leader = status.metadata().contains_key(LEADER_HINT);
        if !not_leader {
            if !distlab_runtime::retry::is_retryable(&status) {
                return status;
            }
            silent.mark(index);
        }
        let hint = status
            .metadata()
            .get(LEADER_HINT)
            .and_then(|v| v.to_str().ok())
            .and_then(|leader| self.nodes.iter().position(|(n, _)| n == leader));
        self.move_on(index, hint, silent);
        if not_leader {
            Status::unavailable(format!("{name}: {}", status.message()))
        } else {
            status
        }
    }

    /// Points the client away from node `index`: at `hint` if it may answer, else at the
    /// next node that has not been silent in this call (or simply the next one, if all were).
    fn move_on(&self, index: usize, hint: Option<usize>, silent: &Silent) {
        let n = self.nodes.len();
        let next = match hint {
            Some(leader) if leader != index && !silent.has(leader) => leader,
            _ => (1..=n)
                .map(|step| (index + step) % n)
                .find(|&i| i != index && !silent.has(i))
                .unwrap_or((index + 1) % n),
        };
        let _ = self
            .leader
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// No attempt in flight.
const NONE: usize = usize::MAX;

/// The nodes that did not answer during one call (a bit per node; a cluster has at most 18).
#[derive(Default)]
struct Silent(AtomicU64);

impl Silent {
    fn mark(&self, index: usize) {
        self.0.fetch_or(1 << (index % 64), Ordering::Relaxed);
    }

    fn has(&self, index: usize) -> bool {
        self.0.load(Ordering::Relaxed) & (1 << (index % 64)) != 0
    }
}

/// `message` as a request that gives up when `attempt` times out.
pub fn with_timeout<T>(message: T, attempt: Attempt) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(attempt.timeout);
    request
}
