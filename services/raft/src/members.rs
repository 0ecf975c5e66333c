//! A Raft membership and a node's role, in names: what status pages and client APIs show.

use openraft::{RaftMetrics, ServerState};

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
