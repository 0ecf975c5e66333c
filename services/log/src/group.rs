//! Consumer groups, as the coordinator sees one: a pure state machine (time comes in as an
//! argument) that the broker hosting the group drives from join, sync, heartbeat, leave and
//! commit requests and a timer.
//!
//! The protocol is Kafka's classic one, with the assignment computed here (as in Kafka's
//! newer KIP-848 protocol) rather than by a leader member:
//! - A consumer **joins**: the group starts a rebalance (`PreparingRebalance`). Members of the
//!   last generation must join again; the rebalance completes when all have, or when
//!   `rebalance_timeout` passes (the missing ones are dropped). The group gets a new
//!   **generation**, the assignor splits the subscribed partitions, and the state is
//!   `Stable`.
//! - A member **syncs** to get its partitions for that generation.
//! - It **heartbeats** within its session timeout; a heartbeat answered "rebalance in
//!   progress" tells it to join again. A member silent past its session timeout is removed
//!   (a rebalance), as is one that **leaves**.
//! - Offsets are **committed** by members of the current generation only (a zombie from an
//!   older generation is refused, so it cannot move a partition's offset after it was
//!   reassigned). A member may still commit while a rebalance is being prepared (its
//!   generation is still the current one): it commits what it read before it rejoins.
//! - A member waiting in a join is not expired: the rebalance timeout bounds its wait.

use std::collections::{BTreeMap, BTreeSet};

/// A partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl From<&distlab_proto::log::v1::GroupPartition> for TopicPartition {
    fn from(p: &distlab_proto::log::v1::GroupPartition) -> Self {
        Self::new(p.topic.clone(), p.partition)
    }
}

impl From<TopicPartition> for distlab_proto::log::v1::GroupPartition {
    fn from(tp: TopicPartition) -> Self {
        Self {
            topic: tp.topic,
            partition: tp.partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// How a generation's partitions are split among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// Per topic: consecutive ranges, the first members one more when it does not divide.
    Range,
    /// Every subscribed partition dealt in turn to the members subscribed to its topic.
    RoundRobin,
}

impl Assignor {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "range" => Ok(Self::Range),
            "roundrobin" | "round-robin" => Ok(Self::RoundRobin),
            other => Err(format!(
                "unknown assignor {other:?}: expected range or roundrobin"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Range => "range",
            Self::RoundRobin => "roundrobin",
        }
    }

    /// Splits the partitions of `topics` (name -> partition count) among `subscriptions`
    /// (member -> topics). Every member gets an entry, maybe empty.
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<String>>,
        topics: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, Vec<TopicPartition>> {
        let mut out: BTreeMap<String, Vec<TopicPartition>> = subscriptions
            .keys()
            .map(|m| (m.clone(), Vec::new()))
            .collect();
        let subscribers = |topic: &str| -> Vec<&String> {
            subscriptions
                .iter()
                .filter(|(_, t)| t.contains(topic))
                .map(|(m, _)| m)
                .collect()
        };
        match self {
            Self::Range => {
                for (topic, &count) in topics {
                    let members = subscribers(topic);
                    if members.is_empty() {
                        continue;
                    }
                    let (each, extra) = (
                        count as usize / members.len(),
                        count as usize % members.len(),
                    );
                    let mut next = 0u32;
                    for (i, member) in members.iter().enumerate() {
                        let take = each + usize::from(i < extra);
                        for _ in 0..take {
                            out.get_mut(*member)
                                .expect("every member")
                                .push(TopicPartition {
                                    topic: topic.clone(),
                                    partition: next,
                                });
                            next += 1;
                        }
                    }
                }
            }
            Self::RoundRobin => {
                let members: Vec<&String> = subscriptions.keys().collect();
                if members.is_empty() {
                    return out;
                }
                let mut turn = 0usize;
                for (topic, &count) in topics {
                    for partition in 0..count {
                        // The next member in turn that subscribes to this topic.
                        let Some(offset) = (0..members.len()).find(|k| {
                            subscriptions[members[(turn + k) % members.len()]].contains(topic)
                        }) else {
                            break;
                        };
                        let member = members[(turn + offset) % members.len()];
                        out.get_mut(member)
                            .expect("every member")
                            .push(TopicPartition {
                                topic: topic.clone(),
                                partition,
                            });
                        turn = (turn + offset + 1) % members.len();
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to join the next generation.
    PreparingRebalance,
    /// A generation with its assignment.
    Stable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub client_id: String,
    pub topics: BTreeSet<String>,
    pub session_timeout_ms: i64,
    pub last_heard_ms: i64,
    /// Joined since the current rebalance began.
    joined: bool,
}

/// How a rebalance went, for the lag view and the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebalance {
    pub generation: u32,
    pub reason: String,
    pub started_ms: i64,
    pub took_ms: i64,
    pub members: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("unknown member {0}: join the group again")]
    UnknownMember(String),
    #[error("generation {got} is not the group's ({current}): join the group again")]
    IllegalGeneration { got: u32, current: u32 },
    #[error("the group is rebalancing: join again")]
    RebalanceInProgress,
    #[error("the group uses the {group} assignor, not {asked}")]
    InconsistentAssignor {
        group: &'static str,
        asked: &'static str,
    },
}

impl GroupError {
    /// The `log-error` kind a refusal carries.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownMember(_) => "unknown_member_id",
            Self::IllegalGeneration { .. } => "illegal_generation",
            Self::RebalanceInProgress => "rebalance_in_progress",
            Self::InconsistentAssignor { .. } => "inconsistent_group_protocol",
        }
    }
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::PreparingRebalance => "preparing_rebalance",
            Self::Stable => "stable",
        }
    }
}

/// What a joining member is told once its generation forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub member_id: String,
    pub generation: u32,
    pub members: Vec<String>,
    pub assignor: &'static str,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    state: GroupState,
    generation: u32,
    members: BTreeMap<String, Member>,
    assignment: BTreeMap<String, Vec<TopicPartition>>,
    assignor: Assignor,
    rebalance_timeout_ms: i64,
    /// When the current rebalance began, and why.
    rebalancing: Option<(i64, String)>,
    /// Time the current rebalance does not count against its timeout: the coordinator was
    /// not running (see [`Group::excuse_absence`]).
    rebalance_excused_ms: i64,
    last_rebalance: Option<Rebalance>,
    rebalances: u32,
    /// The partition counts of the subscribed topics the assignment was made with: a change
    /// (a topic created or grown) starts a rebalance.
    assigned_counts: BTreeMap<String, u32>,
    /// Part of every member id this group gives, so ids from another incarnation of the group
    /// (an earlier coordinator) are never given again.
    incarnation: String,
    next_member: u64,
}

impl Group {
    /// A group without members. `incarnation` goes into the member ids it gives (e.g. the
    /// coordinator and its leader epoch): unique per coordinator incarnation.
    pub fn new(id: &str, assignor: Assignor, rebalance_timeout_ms: i64, incarnation: &str) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            members: BTreeMap::new(),
            assignment: BTreeMap::new(),
            assignor,
            rebalance_timeout_ms,
            rebalancing: None,
            rebalance_excused_ms: 0,
            last_rebalance: None,
            rebalances: 0,
            assigned_counts: BTreeMap::new(),
            incarnation: incarnation.to_string(),
            next_member: 0,
        }
    }

    pub fn assignor(&self) -> Assignor {
        self.assignor
    }

    /// Completed rebalances since this group was formed here.
    pub fn rebalances(&self) -> u32 {
        self.rebalances
    }

    /// When the current rebalance began, and why (`None` unless preparing one).
    pub fn rebalancing(&self) -> Option<&(i64, String)> {
        self.rebalancing.as_ref()
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn members(&self) -> &BTreeMap<String, Member> {
        &self.members
    }

    pub fn assignment(&self) -> &BTreeMap<String, Vec<TopicPartition>> {
        &self.assignment
    }

    pub fn last_rebalance(&self) -> Option<&Rebalance> {
        self.last_rebalance.as_ref()
    }

    /// Every topic some member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect()
    }

    /// A consumer joins (`member_id` empty the first time: one is given). Returns the member
    /// id; the join is answered by [`Group::joined`] once the generation forms.
    /// `assignor`: the one the member asks for; a group without members adopts it, one with
    /// members refuses another. `rebalance_timeout_ms`, likewise, is the first member's.
    pub fn join(
        &mut self,
        member_id: &str,
        client_id: &str,
        topics: BTreeSet<String>,
        session_timeout_ms: i64,
        now_ms: i64,
    ) -> Result<String, GroupError> {
        let id = if member_id.is_empty() {
            self.next_member += 1;
            format!("{client_id}-{}-{}", self.incarnation, self.next_member)
        } else if self.members.contains_key(member_id) {
            member_id.to_string()
        } else {
            return Err(GroupError::UnknownMember(member_id.to_string()));
        };
        let changed = self.members.get(&id).is_none_or(|m| m.topics != topics);
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                client_id: client_id.to_string(),
                topics,
                session_timeout_ms,
                last_heard_ms: now_ms,
                joined: true,
            },
        );
        if self.state != GroupState::PreparingRebalance
            && (changed || self.state == GroupState::Stable)
        {
            let reason = if changed {
                format!("{id} joined")
            } else {
                format!("{id} rejoined")
            };
            self.begin_rebalance(reason, now_ms);
            self.members.get_mut(&id).expect("inserted").joined = true;
        }
        Ok(id)
    }

    /// Sets the assignor and rebalance timeout for the next members, if the group has none
    /// (a group with members keeps its own; asking for another assignor is refused).
    pub fn adopt(
        &mut self,
        assignor: Assignor,
        rebalance_timeout_ms: i64,
    ) -> Result<(), GroupError> {
        if self.members.is_empty() {
            self.assignor = assignor;
            self.rebalance_timeout_ms = rebalance_timeout_ms;
            Ok(())
        } else if assignor != self.assignor {
            Err(GroupError::InconsistentAssignor {
                group: self.assignor.name(),
                asked: assignor.name(),
            })
        } else {
            Ok(())
        }
    }

    /// The answer to `member_id`'s join, once its generation formed (`None`: keep waiting).
    pub fn joined(&self, member_id: &str) -> Option<Joined> {
        let member = self.members.get(member_id)?;
        (self.state == GroupState::Stable && member.joined).then(|| Joined {
            member_id: member_id.to_string(),
            generation: self.generation,
            members: self.members.keys().cloned().collect(),
            assignor: self.assignor.name(),
        })
    }

    /// `member_id`'s partitions in `generation`.
    pub fn sync(
        &mut self,
        member_id: &str,
        generation: u32,
        now_ms: i64,
    ) -> Result<Vec<TopicPartition>, GroupError> {
        self.check_member(member_id, generation, now_ms)?;
        Ok(self.assignment.get(member_id).cloned().unwrap_or_default())
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: u32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        self.check_member(member_id, generation, now_ms)
    }

    /// Whether `member_id` may commit offsets in `generation`: the current one, also while
    /// the next is being prepared.
    pub fn check_commit(
        &mut self,
        member_id: &str,
        generation: u32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        match self.check_member(member_id, generation, now_ms) {
            Err(GroupError::RebalanceInProgress) if generation == self.generation => Ok(()),
            other => other,
        }
    }

    pub fn leave(&mut self, member_id: &str, now_ms: i64) -> Result<(), GroupError> {
        if self.members.remove(member_id).is_none() {
            return Err(GroupError::UnknownMember(member_id.to_string()));
        }
        self.assignment.remove(member_id);
        self.member_gone(format!("{member_id} left"), now_ms);
        Ok(())
    }

    /// Time passes: members silent past their session timeout are removed; a rebalance past
    /// its timeout completes without the members that did not rejoin; one that everybody
    /// rejoined completes; a stable group whose subscribed topics changed their partition
    /// counts (one was created, say) rebalances. `topics`: partition counts of the topics.
    /// Returns the removed members.
    pub fn tick(&mut self, now_ms: i64, topics: &BTreeMap<String, u32>) -> Vec<String> {
        if self.state == GroupState::Stable {
            let counts = self.subscribed_counts(topics);
            if counts != self.assigned_counts {
                let changed: Vec<&String> = counts
                    .keys()
                    .chain(self.assigned_counts.keys())
                    .filter(|t| counts.get(*t) != self.assigned_counts.get(*t))
                    .collect();
                let reason = format!("the partitions of {} changed", changed[0]);
                self.begin_rebalance(reason, now_ms);
            }
        }
        let preparing = self.state == GroupState::PreparingRebalance;
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| !(preparing && m.joined))
            .filter(|m| now_ms.saturating_sub(m.last_heard_ms) > m.session_timeout_ms)
            .map(|m| m.id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
            self.assignment.remove(id);
            self.member_gone(format!("{id}'s session expired"), now_ms);
        }
        let mut dropped = expired;
        if let Some((started, _)) = &self.rebalancing {
            let waited = now_ms.saturating_sub(*started) - self.rebalance_excused_ms;
            let timed_out = waited >= self.rebalance_timeout_ms;
            if timed_out {
                let missing: Vec<String> = self
                    .members
                    .values()
                    .filter(|m| !m.joined)
                    .map(|m| m.id.clone())
                    .collect();
                for id in &missing {
                    self.members.remove(id);
                }
                dropped.extend(missing);
            }
            if self.members.values().all(|m| m.joined) {
                self.complete_rebalance(now_ms, topics);
            }
        }
        dropped
    }

    /// The coordinator did not run for the `absent_ms` before `now_ms` (its process was
    /// stopped, or starved): nobody could reach it, so that time counts against no member's
    /// session and not against the rebalance timeout. No member is taken as heard after
    /// `now_ms`.
    pub fn excuse_absence(&mut self, absent_ms: i64, now_ms: i64) {
        for member in self.members.values_mut() {
            member.last_heard_ms = member.last_heard_ms.saturating_add(absent_ms).min(now_ms);
        }
        if self.rebalancing.is_some() {
            self.rebalance_excused_ms += absent_ms;
        }
    }

    /// The partition counts of the topics some member subscribes to.
    fn subscribed_counts(&self, topics: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let subscribed = self.subscribed_topics();
        topics
            .iter()
            .filter(|(t, _)| subscribed.contains(*t))
            .map(|(t, c)| (t.clone(), *c))
            .collect()
    }

    fn check_member(
        &mut self,
        member_id: &str,
        generation: u32,
        now_ms: i64,
    ) -> Result<(), GroupError> {
        let member = self
            .members
            .get_mut(member_id)
            .ok_or_else(|| GroupError::UnknownMember(member_id.to_string()))?;
        member.last_heard_ms = now_ms;
        if self.state == GroupState::PreparingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration {
                got: generation,
                current: self.generation,
            });
        }
        Ok(())
    }

    fn member_gone(&mut self, reason: String, now_ms: i64) {
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.rebalancing = None;
            self.assignment.clear();
        } else if self.state != GroupState::PreparingRebalance {
            self.begin_rebalance(reason, now_ms);
        }
    }

    fn begin_rebalance(&mut self, reason: String, now_ms: i64) {
        self.state = GroupState::PreparingRebalance;
        self.rebalancing = Some((now_ms, reason));
        self.rebalance_excused_ms = 0;
        for member in self.members.values_mut() {
            member.joined = false;
        }
    }

    fn complete_rebalance(&mut self, now_ms: i64, topics: &BTreeMap<String, u32>) {
        let Some((started, reason)) = self.rebalancing.take() else {
            return;
        };
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            return;
        }
        self.generation += 1;
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.topics.clone()))
            .collect();
        let subscribed = self.subscribed_counts(topics);
        self.assignment = self.assignor.assign(&subscriptions, &subscribed);
        self.assigned_counts = subscribed;
        self.state = GroupState::Stable;
        self.rebalances += 1;
        self.last_rebalance = Some(Rebalance {
            generation: self.generation,
            reason,
            started_ms: started,
            took_ms: now_ms - started,
            members: self.members.len(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|t| t.to_string()).collect()
    }

    fn tp(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }

    fn counts(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(t, c)| (t.to_string(), *c)).collect()
    }

    #[test]
    fn range_gives_consecutive_runs_per_topic_the_first_members_one_more() {
        let subs: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), topics(&["t", "u"])),
            ("b".to_string(), topics(&["t", "u"])),
        ]
        .into();
        let out = Assignor::Range.assign(&subs, &counts(&[("t", 3), ("u", 3)]));
        assert_eq!(
            out["a"],
            vec![tp("t", 0), tp("t", 1), tp("u", 0), tp("u", 1)]
        );
        assert_eq!(out["b"], vec![tp("t", 2), tp("u", 2)]);
    }

    #[test]
    fn round_robin_deals_across_topics_and_skips_members_not_subscribed() {
        let subs: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), topics(&["t", "u"])),
            ("b".to_string(), topics(&["t", "u"])),
            ("c".to_string(), topics(&["u"])),
        ]
        .into();
        let out = Assignor::RoundRobin.assign(&subs, &counts(&[("t", 3), ("u", 3)]));
        let total: usize = out.values().map(Vec::len).sum();
        assert_eq!(total, 6);
        assert!(out["c"].iter().all(|p| p.topic == "u"));
        assert_eq!(out["a"], vec![tp("t", 0), tp("t", 2), tp("u", 2)]);
        assert_eq!(out["b"], vec![tp("t", 1), tp("u", 0)]);
        assert_eq!(out["c"], vec![tp("u", 1)]);
        assert!(Assignor::parse("sticky").is_err());
    }

    /// Two consumers join, get a generation and disjoint partitions; a third joins, the
    /// others are told to rejoin by their heartbeats; one dies and its session expires.
    #[test]
    fn members_join_rebalance_and_expire() {
        let partitions = counts(&[("orders", 4)]);
        let mut group = Group::new("g", Assignor::Range, 3_000, "i1");
        let a = group
            .join("", "app", topics(&["orders"]), 1_000, 0)
            .unwrap();
        let b = group
            .join("", "app", topics(&["orders"]), 1_000, 10)
            .unwrap();
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(group.joined(&a), None, "waits for the generation");
        group.tick(20, &partitions);
        assert_eq!(group.state(), GroupState::Stable);
        let joined = group.joined(&a).unwrap();
        assert_eq!(joined.generation, 1);
        assert_eq!(joined.members, vec![a.clone(), b.clone()]);
        let pa = group.sync(&a, 1, 30).unwrap();
        let pb = group.sync(&b, 1, 30).unwrap();
        assert_eq!((pa.len(), pb.len()), (2, 2));
        assert!(pa.iter().all(|p| !pb.contains(p)));
        assert_eq!(group.last_rebalance().unwrap().took_ms, 20);

        // A third member: a rebalance; the others' heartbeats tell them to rejoin.
        let c = group
            .join("", "app", topics(&["orders"]), 1_000, 100)
            .unwrap();
        assert_eq!(
            group.heartbeat(&a, 1, 110),
            Err(GroupError::RebalanceInProgress)
        );
        group.tick(120, &partitions);
        assert_eq!(
            group.state(),
            GroupState::PreparingRebalance,
            "a and b not back yet"
        );
        group
            .join(&a, "app", topics(&["orders"]), 1_000, 130)
            .unwrap();
        group
            .join(&b, "app", topics(&["orders"]), 1_000, 140)
            .unwrap();
        group.tick(150, &partitions);
        assert_eq!(group.generation(), 2);
        assert_eq!(group.last_rebalance().unwrap().took_ms, 50);
        // A zombie of generation 1 may not commit.
        assert_eq!(
            group.check_commit(&a, 1, 160),
            Err(GroupError::IllegalGeneration { got: 1, current: 2 })
        );
        assert_eq!(group.check_commit(&a, 2, 160), Ok(()));
        assert!(a.starts_with("app-i1-"), "{a}");

        // c dies: no heartbeat for longer than its session timeout.
        for t in [500, 900, 1_100] {
            group.heartbeat(&a, 2, t).unwrap();
            group.heartbeat(&b, 2, t).unwrap();
            group.tick(t, &partitions);
        }
        assert_eq!(group.tick(1_201, &partitions), vec![c.clone()]);
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        // While it prepares, the current generation may still commit what it read.
        assert_eq!(group.check_commit(&a, 2, 1_201), Ok(()));
        assert_eq!(group.rebalances(), 2);
        assert_eq!(
            group.heartbeat(&c, 2, 1_202),
            Err(GroupError::UnknownMember(c))
        );
        group
            .join(&a, "app", topics(&["orders"]), 1_000, 1_210)
            .unwrap();
        group
            .join(&b, "app", topics(&["orders"]), 1_000, 1_220)
            .unwrap();
        group.tick(1_230, &partitions);
        assert_eq!(group.generation(), 3);
        assert_eq!(group.sync(&a, 3, 1_240).unwrap().len(), 2);
    }

    #[test]
    fn a_member_that_does_not_rejoin_in_time_is_dropped() {
        let partitions = counts(&[("t", 2)]);
        let mut group = Group::new("g", Assignor::RoundRobin, 500, "i1");
        let a = group.join("", "x", topics(&["t"]), 10_000, 0).unwrap();
        let b = group.join("", "x", topics(&["t"]), 10_000, 0).unwrap();
        group.tick(1, &partitions);
        group.leave(&a, 100).unwrap();
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        let c = group.join("", "x", topics(&["t"]), 10_000, 150).unwrap();
        // b never rejoins (it is stuck): the rebalance completes without it at 600.
        assert!(group.tick(550, &partitions).is_empty());
        assert_eq!(group.tick(600, &partitions), vec![b]);
        assert_eq!(group.sync(&c, 2, 610).unwrap().len(), 2);
        group.leave(&c, 700).unwrap();
        assert_eq!(group.state(), GroupState::Empty);
    }

    /// A member that rejoined waits for the others without a heartbeat: its session does not
    /// expire meanwhile (the rebalance timeout bounds the wait); an assignor other than the
    /// group's is refused while it has members.
    #[test]
    fn a_member_waiting_in_a_join_does_not_expire() {
        let partitions = counts(&[("t", 2)]);
        let mut group = Group::new("g", Assignor::Range, 5_000, "i1");
        let a = group.join("", "x", topics(&["t"]), 1_000, 0).unwrap();
        let b = group.join("", "x", topics(&["t"]), 1_000, 0).unwrap();
        group.tick(1, &partitions);
        assert_eq!(
            group.adopt(Assignor::RoundRobin, 5_000),
            Err(GroupError::InconsistentAssignor {
                group: "range",
                asked: "roundrobin"
            })
        );
        // a rejoins at 10 and waits; b's heartbeat at 900 is told to rejoin, but b is stuck.
        group.join(&a, "x", topics(&["t"]), 1_000, 10).unwrap();
        assert_eq!(
            group.heartbeat(&b, 1, 900),
            Err(GroupError::RebalanceInProgress)
        );
        assert_eq!(
            group.tick(1_011, &partitions),
            Vec::<String>::new(),
            "a is waiting in its join"
        );
        assert_eq!(group.tick(1_901, &partitions), vec![b]);
        assert_eq!(group.joined(&a).unwrap().generation, 2);
        group.leave(&a, 5_020).unwrap();
        assert_eq!(group.adopt(Assignor::RoundRobin, 2_000), Ok(()));
    }

    /// A coordinator that was stopped for longer than the sessions expires nobody for it:
    /// the time it was away counts against no session and not against a rebalance timeout;
    /// time after it is back counts as usual.
    #[test]
    fn the_time_the_coordinator_was_away_expires_nobody() {
        let partitions = counts(&[("t", 2)]);
        let mut group = Group::new("g", Assignor::Range, 2_000, "i1");
        let a = group.join("", "x", topics(&["t"]), 1_000, 0).unwrap();
        let b = group.join("", "x", topics(&["t"]), 1_000, 0).unwrap();
        group.tick(1, &partitions);
        group.heartbeat(&a, 1, 500).unwrap();
        group.heartbeat(&b, 1, 900).unwrap();

        // Stopped from 1_000 to 6_000: back, it excuses the 5 s before its first tick.
        group.excuse_absence(5_000, 6_000);
        assert!(group.tick(6_000, &partitions).is_empty());
        assert_eq!(group.state(), GroupState::Stable);
        // a was last heard 500 ms before the stop: its session ends 500 ms after it.
        assert_eq!(group.tick(6_501, &partitions), vec![a]);
        assert_eq!(group.state(), GroupState::PreparingRebalance);

        // Stopped again mid-rebalance (b has not rejoined): the rebalance timeout (2 s from
        // 6_501) does not run while the coordinator is away, b's session is renewed.
        group.excuse_absence(3_000, 9_600);
        assert!(group.tick(9_600, &partitions).is_empty(), "b is excused");
        group.join(&b, "x", topics(&["t"]), 1_000, 9_700).unwrap();
        group.tick(9_701, &partitions);
        assert_eq!(group.generation(), 2);
        assert_eq!(group.sync(&b, 2, 9_702).unwrap().len(), 2);
    }

    /// Members subscribed to a topic that does not exist yet get nothing; once it is created
    /// the group rebalances and the partitions are assigned.
    #[test]
    fn a_topic_created_after_the_subscription_starts_a_rebalance() {
        let mut group = Group::new("g", Assignor::Range, 5_000, "i1");
        let a = group.join("", "x", topics(&["later"]), 10_000, 0).unwrap();
        group.tick(1, &counts(&[("other", 4)]));
        assert_eq!(group.sync(&a, 1, 2).unwrap(), vec![]);
        group.tick(3, &counts(&[("other", 4)]));
        assert_eq!(group.state(), GroupState::Stable, "nothing changed");
        group.tick(4, &counts(&[("other", 4), ("later", 2)]));
        assert_eq!(group.state(), GroupState::PreparingRebalance);
        assert_eq!(
            group.rebalancing().unwrap().1,
            "the partitions of later changed"
        );
        group.join(&a, "x", topics(&["later"]), 10_000, 5).unwrap();
        group.tick(6, &counts(&[("other", 4), ("later", 2)]));
        assert_eq!(group.sync(&a, 2, 7).unwrap().len(), 2);
    }
}
