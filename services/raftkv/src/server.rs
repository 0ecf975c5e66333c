//! The client-facing gRPC service of a raftkv node, `raftkv.v1.RaftKv` (its peers talk to
//! `raft.v1.Raft`, `distlab_raft::RaftRpc`).
//!
//! A client request flows: client -> leader's [`KvApi`] -> the [`Proposer`] (batched with
//! the other mutations waiting) -> `Raft::client_write` (append to the leader's log,
//! replicate, flushed on a majority = committed) -> the state machine applies it -> its
//! outcome is the reply. A follower answers FAILED_PRECONDITION with metadata
//! `raft-leader` naming the leader it knows; the client retries there (nothing is forwarded).
//! Reads depend on `--read-mode` (see [`ReadMode`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use distlab_proto::raftkv::v1 as pb;
use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{ChangeMembers, ServerState};
use prost::bytes::Bytes;
use tonic::{Request, Response, Status};

use distlab_raft::{LeaseClock, Members, role_name};

use crate::metrics::RaftKvMetrics;
use crate::proposer::Proposer;
use crate::store::StateMachine;
use crate::types::{Command, Member, Names, Op, Outcome, Raft, RaftId, Session, raft_id};

/// How the leader serves reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadMode {
    /// Confirm leadership with a heartbeat round to a majority, then read once the state
    /// machine applied everything committed before the read: linearizable.
    ReadIndex,
    /// Skip the heartbeat round while the leader's lease runs (see `lease.rs`): linearizable
    /// as long as clocks drift less than the safety margin; falls back to read-index when the
    /// lease has lapsed.
    Lease,
    /// Read this node's state machine, leader or not: fast, stale on purpose (for teaching;
    /// the linearizability checker catches it).
    Local,
}

/// Client-facing: the key-value API.
pub struct KvApi {
    pub raft: Raft,
    pub me: RaftId,
    pub machine: StateMachine,
    pub names: Names,
    pub read_mode: ReadMode,
    pub lease_clock: Arc<LeaseClock>,
    pub lease: Duration,
    pub metrics: RaftKvMetrics,
    /// Where mutations go: batched into log entries.
    pub proposer: Proposer,
}

/// Writes and reads longer than this are answered UNAVAILABLE (the client retries).
const WAIT_LIMIT: Duration = Duration::from_secs(10);

impl KvApi {
    fn not_leader(&self, forward: &ForwardToLeader<RaftId, Member>) -> Status {
        distlab_raft::leader::not_leader(forward, &self.names)
    }

    async fn write(&self, session: Option<pb::Session>, op: Op) -> Result<(Outcome, u64), Status> {
        let command = Command {
            session: session.map(|s| Session {
                client: s.client,
                seq: s.seq,
            }),
            op,
        };
        let started = Instant::now();
        self.metrics.proposals.inc();
        let written = tokio::time::timeout(WAIT_LIMIT, self.proposer.propose(command))
            .await
            .map_err(|_| Status::unavailable("the write was not committed in time"))?;
        match written {
            Ok((outcome, index)) => {
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                if outcome == Outcome::Stale {
                    return Err(Status::unknown(
                        "a newer mutation of this session was applied; this one's answer is forgotten",
                    ));
                }
                Ok((outcome, index))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(self.not_leader(&forward))
            }
            Err(e) => Err(Status::unavailable(format!("raft: {e}"))),
        }
    }

    /// Waits until it is safe to read this node's state machine under the read mode.
    async fn before_read(&self) -> Result<(), Status> {
        match self.read_mode {
            ReadMode::Local => Ok(()),
            ReadMode::ReadIndex => self.read_index().await,
            ReadMode::Lease if self.has_lease() => {
                self.metrics.lease_reads.inc();
                Ok(())
            }
            ReadMode::Lease => self.read_index().await,
        }
    }

    async fn read_index(&self) -> Result<(), Status> {
        self.metrics.read_index_reads.inc();
        let confirmed = tokio::time::timeout(WAIT_LIMIT, self.raft.ensure_linearizable())
            .await
            .map_err(|_| Status::unavailable("leadership could not be confirmed in time"))?;
        match confirmed {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(self.not_leader(&forward))
            }
            Err(e) => Err(Status::unavailable(format!("raft: {e}"))),
        }
    }

    /// Whether this node may read its state machine as it is: it leads, a majority of every
    /// config accepted its AppendEntries within the lease, and it has applied an entry of its
    /// own term (so everything earlier leaders committed is applied too). Nothing to wait for
    /// after that: a write acknowledged to anyone was applied here before its answer left,
    /// and the state machine only moves forward. Read from openraft's metrics, without a
    /// round trip to its core task.
    fn has_lease(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let vote = metrics.vote;
        metrics.state == ServerState::Leader
            && vote.leader_id().voted_for() == Some(self.me)
            && metrics.last_applied.map(|id| id.leader_id.term) == Some(vote.leader_id().term)
            && self
                .lease_clock
                .remaining(
                    self.me,
                    vote,
                    metrics.membership_config.membership().get_joint_config(),
                    self.lease,
                )
                .is_some()
    }

    fn read(&self, key: &str) -> Result<Option<Vec<u8>>, Status> {
        self.machine
            .get(key)
            .map_err(|e| Status::internal(format!("reading the state machine: {e}")))
    }

    /// The membership now, after the change committed at `index`.
    fn membership_reply(&self, index: u64) -> Response<pb::MembershipResponse> {
        let members = Members::of(&self.raft.metrics().borrow(), &self.names);
        Response::new(pb::MembershipResponse {
            voters: members.voters,
            learners: members.learners,
            index,
        })
    }

    fn membership_error(&self, e: RaftError<RaftId, ClientWriteError<RaftId, Member>>) -> Status {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                self.not_leader(&forward)
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Status::failed_precondition(format!("membership change refused: {e}"))
            }
            e => Status::unavailable(format!("raft: {e}")),
        }
    }
}

fn check_key(key: &str) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument("key must not be empty"));
    }
    if key.len() > 4096 {
        return Err(Status::invalid_argument(format!(
            "key is {} bytes; at most 4096",
            key.len()
        )));
    }
    Ok(())
}

/// Values above this are refused (Raft replicates every byte to every node).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

fn check_value(value: &[u8]) -> Result<(), Status> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Status::invalid_argument(format!(
            "value is {} bytes; at most {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl pb::raft_kv_server::RaftKv for KvApi {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        check_value(&request.value)?;
        let op = Op::Put {
            key: request.key,
            value: request.value.to_vec(),
        };
        let (_, index) = self.write(request.session, op).await?;
        Ok(Response::new(pb::PutResponse { index }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        self.before_read().await?;
        let value = self.read(&request.key)?;
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.map(Bytes::from).unwrap_or_default(),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        let (outcome, index) = self
            .write(request.session, Op::Delete { key: request.key })
            .await?;
        let existed = matches!(outcome, Outcome::Deleted { existed: true });
        Ok(Response::new(pb::DeleteResponse { existed, index }))
    }

    async fn compare_and_set(
        &self,
        request: Request<pb::CompareAndSetRequest>,
    ) -> Result<Response<pb::CompareAndSetResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        check_value(&request.new_value)?;
        let op = Op::Cas {
            key: request.key,
            expected: request.expected.map(|e| e.to_vec()),
            new: request.new_value.to_vec(),
        };
        let (outcome, index) = self.write(request.session, op).await?;
        let Outcome::Cas { swapped, current } = outcome else {
            return Err(Status::internal(format!(
                "a cas was answered with {outcome:?}"
            )));
        };
        Ok(Response::new(pb::CompareAndSetResponse {
            swapped,
            current: current.map(Bytes::from),
            index,
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let members = Members::of(&metrics, &self.names);
        Ok(Response::new(pb::StatusResponse {
            id: self.names.name(self.me),
            role: role_name(metrics.state, &members, &self.names.name(self.me)),
            term: metrics.current_term,
            leader: metrics
                .current_leader
                .map(|id| self.names.name(id))
                .unwrap_or_default(),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied: metrics.last_applied.map(|id| id.index).unwrap_or(0),
            voters: members.voters,
            learners: members.learners,
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let name = request.into_inner().id;
        distlab_runtime::cli::NodeId::parse(&name).map_err(Status::invalid_argument)?;
        let id = raft_id(&name);
        // A follower refuses (NotLeader); only the leader's progress goes on the timeline.
        self.raft
            .add_learner(id, Member { name: name.clone() }, true)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(event = "membership_change", node = %name, "{name} caught up as a learner; promoting it to voter (joint consensus)");
        let reply = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(event = "membership_change", node = %name, "{name} is a voter");
        Ok(self.membership_reply(reply.log_id.index))
    }

    async fn remove_member(
        &self,
        request: Request<pb::MemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let name = request.into_inner().id;
        let id = raft_id(&name);
        let reply = self
            .raft
            .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
            .await
            .map_err(|e| self.membership_error(e))?;
        tracing::info!(event = "membership_change", node = %name, "{name} removed (joint consensus)");
        Ok(self.membership_reply(reply.log_id.index))
    }
}
