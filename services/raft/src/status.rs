//! A Raft node's state in names, as status pages and client APIs show it: the membership, the
//! node's role, and the Raft fields of `/status` detail the lab's Raft view draws.

use openraft::{RaftMetrics, ServerState};
use serde_json::{Map, Value, json};

use crate::{Member, Names, RaftId};

/// A membership config in names.
pub struct Members {
    /// Every voter (of both configs during joint consensus).
    pub voters: Vec<String>,
    /// The configs: one, or old and new during joint consensus.
    pub configs: Vec<Vec<String>>,
    pub learners: Vec<String>,
}

impl Members {
    /// The membership `metrics` report, named.
    pub fn of(metrics: &RaftMetrics<RaftId, Member>, names: &Names) -> Self {
        let membership = metrics.membership_config.membership();
        Self {
            voters: membership.voter_ids().map(|id| names.name(id)).collect(),
            configs: membership
                .get_joint_config()
                .iter()
                .map(|config| config.iter().map(|id| names.name(*id)).collect())
                .collect(),
            learners: membership.learner_ids().map(|id| names.name(id)).collect(),
        }
    }
}

/// `leader`, `follower`, `candidate`, `learner` (a node not, or not yet, a voter).
pub fn role_name(state: ServerState, members: &Members, me: &str) -> String {
    match state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Follower if members.learners.iter().any(|l| l == me) => "learner",
        ServerState::Follower => "follower",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
    .to_string()
}

/// The Raft part of a node's `/status` detail: role, term, leader, vote, the log's indexes
/// (last, committed, applied, snapshot, purged), membership, and on a leader how far each
/// follower has replicated. A service adds its own fields beside these.
pub fn raft_detail(
    m: &RaftMetrics<RaftId, Member>,
    names: &Names,
    me: &str,
    committed: u64,
) -> Map<String, Value> {
    let name = |id: u64| names.name(id);
    let members = Members::of(m, names);
    let last = m.last_log_index.unwrap_or(0);
    let replication = m.replication.as_ref().map(|followers| {
        followers
            .iter()
            .filter(|(id, _)| **id != m.id)
            .map(|(id, matched)| {
                let matched = matched.map(|l| l.index);
                (
                    name(*id),
                    json!({
                        "matched": matched,
                        "lag": last.saturating_sub(matched.unwrap_or(0)),
                    }),
                )
            })
            .collect::<Map<_, _>>()
    });
    let detail = json!({
        "role": role_name(m.state, &members, me),
        "term": m.current_term,
        "leader": m.current_leader.map(name),
        "vote": {
            "term": m.vote.leader_id().term,
            "for": m.vote.leader_id().voted_for().map(name),
            "committed": m.vote.is_committed(),
        },
        "last_log_index": m.last_log_index,
        "committed": committed,
        "applied": m.last_applied.map(|l| l.index),
        "snapshot": m.snapshot.map(|l| l.index),
        "purged": m.purged.map(|l| l.index),
        // The entries between the purge point and the end of the log.
        "log_entries": m.last_log_index.map_or(0, |last| last + 1 - m.purged.map_or(0, |p| p.index + 1)),
        "membership": {
            "joint": members.configs.len() > 1,
            "voters": members.voters.len(),
            "configs": members.configs,
            "learners": members.learners,
        },
        "replication": replication,
        "millis_since_quorum_ack": m.millis_since_quorum_ack,
    });
    match detail {
        Value::Object(map) => map,
        _ => unreachable!("a JSON object"),
    }
}
