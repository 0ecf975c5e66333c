//! The cluster metadata the controller quorum replicates (KRaft style): which brokers exist
//! and are alive, which topics exist, and per partition its replicas, its leader, the ISR and
//! the epochs that order every change. A pure state machine: commands come out of the Raft log
//! in the same order on every controller, and each is applied the same way everywhere.
//!
//! The rules:
//! - A broker registers (a new broker epoch each time it starts: the index of its
//!   registration entry) and is live until fenced. The controller leader fences a broker
//!   that stops heartbeating ([`super::liveness`]) and unfences it when it heartbeats again.
//! - Leadership moves off a fenced broker to the first live replica in the ISR (a new leader
//!   epoch); a fenced follower leaves the ISR. With no live ISR member the partition is
//!   offline: no leader, and the ISR keeps its last member, the one replica known to hold
//!   everything committed, so it is elected when it comes back. Unless the topic allows
//!   unclean election: then any live replica leads, and whatever only the ISR held is lost.
//! - Leaders report ISR changes (AlterPartition) naming the epochs they act under; a report
//!   from an old leader or about an old version of the partition is refused.
//! - Every change to a partition bumps its partition epoch; a leader change bumps its leader
//!   epoch too.

use std::collections::BTreeMap;

use distlab_raft::LogId;
use serde::{Deserialize, Serialize};

/// A broker's name (its node id).
pub type BrokerName = String;

/// The replicated metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub brokers: BTreeMap<BrokerName, Broker>,
    pub topics: BTreeMap<String, Topic>,
    /// The first producer id not yet handed out.
    pub next_producer_id: u64,
    /// Unclean elections so far (what the unclean-election scenario counts).
    pub unclean_elections: u64,
    /// Where the next topic's first partition puts its first replica (spreads leaders).
    next_placement: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    /// The index of its latest registration: requests from an older incarnation are refused.
    pub epoch: u64,
    /// Where clients and other brokers reach it.
    pub address: String,
    pub fenced: bool,
    /// The registering broker's clock at registration, for display.
    pub registered_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub config: TopicConfig,
    pub partitions: Vec<Partition>,
}

/// Per-topic settings (Kafka's topic configs of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// `min.insync.replicas`: `acks=all` needs at least this many in the ISR.
    pub min_insync_replicas: u32,
    /// `unclean.leader.election.enable`: elect a replica outside the ISR rather than stay
    /// offline (availability over durability).
    pub unclean_leader_election: bool,
}

impl Default for TopicConfig {
    fn default() -> Self {
        Self {
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// In preference order: the first is the preferred leader.
    pub replicas: Vec<BrokerName>,
    /// `None`: offline (no live replica may lead).
    pub leader: Option<BrokerName>,
    pub leader_epoch: u32,
    pub isr: Vec<BrokerName>,
    /// Bumped by every change (AlterPartition must name the current one).
    pub partition_epoch: u32,
}

/// What changes the metadata. Times come from the proposer, never from the applying node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    RegisterBroker {
        broker: BrokerName,
        address: String,
        now_ms: i64,
    },
    /// From the controller leader (missed heartbeats) or the broker itself (shutting down).
    FenceBroker {
        broker: BrokerName,
        epoch: u64,
        reason: String,
    },
    UnfenceBroker {
        broker: BrokerName,
        epoch: u64,
    },
    CreateTopic {
        name: String,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    },
    /// A partition leader's new ISR.
    AlterPartition {
        topic: String,
        partition: u32,
        leader: BrokerName,
        broker_epoch: u64,
        leader_epoch: u32,
        partition_epoch: u32,
        isr: Vec<BrokerName>,
    },
    AllocateProducerIds {
        count: u64,
    },
}

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// An entry without a command.
    #[default]
    Nothing,
    Registered {
        epoch: u64,
        elections: Vec<Election>,
    },
    Fenced {
        elections: Vec<Election>,
    },
    Unfenced {
        elections: Vec<Election>,
    },
    TopicCreated {
        partitions: Vec<Partition>,
    },
    PartitionAltered {
        partition: Partition,
    },
    ProducerIds {
        first: u64,
        count: u64,
    },
    Refused {
        error: MetadataError,
    },
}

/// A partition's leadership changed (the controller leader logs each for the timeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Election {
    pub topic: String,
    pub partition: u32,
    /// `None`: the partition went offline.
    pub leader: Option<BrokerName>,
    pub leader_epoch: u32,
    /// The leader was not in the ISR: what only the ISR held is lost.
    pub unclean: bool,
}

impl Election {
    /// `partition` (number `index` of `topic`) as its leadership now stands.
    fn of(topic: &str, index: usize, partition: &Partition, unclean: bool) -> Self {
        Self {
            topic: topic.to_string(),
            partition: index as u32,
            leader: partition.leader.clone(),
            leader_epoch: partition.leader_epoch,
            unclean,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "error", content = "detail")]
pub enum MetadataError {
    #[error("no broker {0} is registered")]
    UnknownBroker(BrokerName),
    #[error("broker {broker} epoch {given} is stale: its current registration is epoch {current}")]
    StaleBrokerEpoch {
        broker: BrokerName,
        given: u64,
        current: u64,
    },
    #[error("topic {0} already exists")]
    TopicExists(String),
    #[error("invalid topic: {0}")]
    InvalidTopic(String),
    #[error("{live} live brokers, replication factor {needed} needs as many")]
    NotEnoughBrokers { live: u32, needed: u32 },
    #[error("no partition {partition} of topic {topic}")]
    UnknownTopicOrPartition { topic: String, partition: u32 },
    #[error("{broker} is not the leader of {topic}/{partition} (the leader is {leader:?})")]
    NotLeader {
        topic: String,
        partition: u32,
        broker: BrokerName,
        leader: Option<BrokerName>,
    },
    #[error("leader epoch {given} is fenced: the current one is {current}")]
    FencedLeaderEpoch { given: u32, current: u32 },
    #[error("partition epoch {given} is not the current one, {current}")]
    InvalidUpdateVersion { given: u32, current: u32 },
    #[error("{0}")]
    IneligibleReplica(String),
    #[error("{0}")]
    InvalidRequest(String),
}

/// Topic names: 1 to 249 of ASCII letters, digits, `.`, `_`, `-` (Kafka's rule).
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!(
            "a topic name is 1 to 249 characters; {name:?} has {}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic {name:?}: {c:?} is not allowed (letters, digits, '.', '_', '-')"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a topic name"));
    }
    Ok(())
}

/// At most this many partitions per topic.
pub const MAX_PARTITIONS: u32 = 1024;

impl distlab_raft::memory_machine::Machine for Metadata {
    type Command = Command;
    type Outcome = Outcome;

    fn apply(&mut self, command: &Command, log_id: &LogId) -> Outcome {
        let result = match command {
            Command::RegisterBroker {
                broker,
                address,
                now_ms,
            } => Ok(self.register(broker, address, *now_ms, log_id.index)),
            Command::FenceBroker { broker, epoch, .. } => self.fence(broker, *epoch),
            Command::UnfenceBroker { broker, epoch } => self.unfence(broker, *epoch),
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                config,
            } => self.create_topic(name, *partitions, *replication_factor, *config),
            Command::AlterPartition {
                topic,
                partition,
                leader,
                broker_epoch,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_partition(
                topic,
                *partition,
                (leader, *broker_epoch),
                (*leader_epoch, *partition_epoch),
                isr,
            ),
            Command::AllocateProducerIds { count } => self.allocate_producer_ids(*count),
        };
        result.unwrap_or_else(|error| Outcome::Refused { error })
    }
}

impl Metadata {
    /// The partition `topic`/`partition`, if it exists.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&Partition> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    fn live_brokers(&self) -> Vec<&BrokerName> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.fenced)
            .map(|(name, _)| name)
            .collect()
    }

    fn check_epoch(&self, broker: &str, epoch: u64) -> Result<(), MetadataError> {
        let Some(registered) = self.brokers.get(broker) else {
            return Err(MetadataError::UnknownBroker(broker.to_string()));
        };
        if registered.epoch != epoch {
            return Err(MetadataError::StaleBrokerEpoch {
                broker: broker.to_string(),
                given: epoch,
                current: registered.epoch,
            });
        }
        Ok(())
    }

    /// A broker (re)starts: its previous incarnation, if any, is fenced first (it may have
    /// lost its unflushed tail), then the new one is live.
    fn register(&mut self, broker: &str, address: &str, now_ms: i64, index: u64) -> Outcome {
        let mut elections = Vec::new();
        if let Some(previous) = self.brokers.get(broker).filter(|b| !b.fenced) {
            let epoch = previous.epoch;
            if let Ok(Outcome::Fenced { elections: moved }) = self.fence(broker, epoch) {
                elections = moved;
            }
        }
        self.brokers.insert(
            broker.to_string(),
            Broker {
                epoch: index,
                address: address.to_string(),
                fenced: false,
                registered_ms: now_ms,
            },
        );
        elections.extend(self.elect_offline(broker));
        Outcome::Registered {
            epoch: index,
            elections,
        }
    }

    fn fence(&mut self, broker: &str, epoch: u64) -> Result<Outcome, MetadataError> {
        self.check_epoch(broker, epoch)?;
        let registered = self.brokers.get_mut(broker).expect("checked");
        if registered.fenced {
            return Ok(Outcome::Fenced {
                elections: Vec::new(),
            });
        }
        registered.fenced = true;
        let live: Vec<BrokerName> = self.live_brokers().into_iter().cloned().collect();
        let mut elections = Vec::new();
        for (name, topic) in &mut self.topics {
            let unclean_allowed = topic.config.unclean_leader_election;
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                if !partition.replicas.iter().any(|r| r == broker) {
                    continue;
                }
                if partition.leader.as_deref() == Some(broker) {
                    let clean = partition
                        .replicas
                        .iter()
                        .find(|r| partition.isr.contains(r) && live.contains(r))
                        .cloned();
                    let unclean = partition
                        .replicas
                        .iter()
                        .find(|r| live.contains(r))
                        .cloned();
                    let is_unclean = clean.is_none() && unclean_allowed && unclean.is_some();
                    match (clean, unclean) {
                        (Some(next), _) => {
                            partition.isr.retain(|r| r != broker);
                            partition.leader = Some(next);
                        }
                        (None, Some(any)) if unclean_allowed => {
                            partition.isr = vec![any.clone()];
                            partition.leader = Some(any);
                        }
                        // Offline; the ISR keeps `broker`, the last replica with everything.
                        _ => partition.leader = None,
                    }
                    partition.leader_epoch += 1;
                    partition.partition_epoch += 1;
                    elections.push(Election::of(name, index, partition, is_unclean));
                } else if partition.isr.len() > 1 && partition.isr.iter().any(|r| r == broker) {
                    partition.isr.retain(|r| r != broker);
                    partition.partition_epoch += 1;
                }
            }
        }
        self.count_unclean(&elections);
        Ok(Outcome::Fenced { elections })
    }

    fn unfence(&mut self, broker: &str, epoch: u64) -> Result<Outcome, MetadataError> {
        self.check_epoch(broker, epoch)?;
        let registered = self.brokers.get_mut(broker).expect("checked");
        if !registered.fenced {
            return Ok(Outcome::Unfenced {
                elections: Vec::new(),
            });
        }
        registered.fenced = false;
        let elections = self.elect_offline(broker);
        Ok(Outcome::Unfenced { elections })
    }

    /// `broker` just became live: it leads the offline partitions it may lead.
    fn elect_offline(&mut self, broker: &str) -> Vec<Election> {
        let mut elections = Vec::new();
        for (name, topic) in &mut self.topics {
            let unclean_allowed = topic.config.unclean_leader_election;
            for (index, partition) in topic.partitions.iter_mut().enumerate() {
                if partition.leader.is_some() || !partition.replicas.iter().any(|r| r == broker) {
                    continue;
                }
                let clean = partition.isr.iter().any(|r| r == broker);
                if !clean && !unclean_allowed {
                    continue;
                }
                partition.isr = vec![broker.to_string()];
                partition.leader = Some(broker.to_string());
                partition.leader_epoch += 1;
                partition.partition_epoch += 1;
                elections.push(Election::of(name, index, partition, !clean));
            }
        }
        self.count_unclean(&elections);
        elections
    }

    fn count_unclean(&mut self, elections: &[Election]) {
        self.unclean_elections += elections.iter().filter(|e| e.unclean).count() as u64;
    }

    fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        config: TopicConfig,
    ) -> Result<Outcome, MetadataError> {
        check_topic_name(name).map_err(MetadataError::InvalidTopic)?;
        if self.topics.contains_key(name) {
            return Err(MetadataError::TopicExists(name.to_string()));
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(MetadataError::InvalidTopic(format!(
                "{partitions} partitions: 1 to {MAX_PARTITIONS}"
            )));
        }
        if replication_factor == 0 {
            return Err(MetadataError::InvalidTopic(
                "the replication factor must be at least 1".into(),
            ));
        }
        if config.min_insync_replicas == 0 || config.min_insync_replicas > replication_factor {
            return Err(MetadataError::InvalidTopic(format!(
                "min.insync.replicas {} must be 1 to the replication factor {replication_factor}",
                config.min_insync_replicas
            )));
        }
        let live = self.live_brokers();
        if (live.len() as u32) < replication_factor {
            return Err(MetadataError::NotEnoughBrokers {
                live: live.len() as u32,
                needed: replication_factor,
            });
        }
        let start = self.next_placement as usize;
        let assigned: Vec<Partition> = (0..partitions as usize)
            .map(|p| {
                let replicas: Vec<BrokerName> = (0..replication_factor as usize)
                    .map(|r| live[(start + p + r) % live.len()].clone())
                    .collect();
                Partition {
                    leader: Some(replicas[0].clone()),
                    isr: replicas.clone(),
                    replicas,
                    leader_epoch: 0,
                    partition_epoch: 0,
                }
            })
            .collect();
        self.next_placement += 1;
        self.topics.insert(
            name.to_string(),
            Topic {
                config,
                partitions: assigned.clone(),
            },
        );
        Ok(Outcome::TopicCreated {
            partitions: assigned,
        })
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        index: u32,
        (leader, broker_epoch): (&str, u64),
        (leader_epoch, partition_epoch): (u32, u32),
        isr: &[BrokerName],
    ) -> Result<Outcome, MetadataError> {
        self.check_epoch(leader, broker_epoch)?;
        let live: Vec<BrokerName> = self.live_brokers().into_iter().cloned().collect();
        let unknown = || MetadataError::UnknownTopicOrPartition {
            topic: topic.to_string(),
            partition: index,
        };
        let partition = self
            .topics
            .get_mut(topic)
            .ok_or_else(unknown)?
            .partitions
            .get_mut(index as usize)
            .ok_or_else(unknown)?;
        if partition.leader.as_deref() != Some(leader) {
            return Err(MetadataError::NotLeader {
                topic: topic.to_string(),
                partition: index,
                broker: leader.to_string(),
                leader: partition.leader.clone(),
            });
        }
        if leader_epoch != partition.leader_epoch {
            return Err(MetadataError::FencedLeaderEpoch {
                given: leader_epoch,
                current: partition.leader_epoch,
            });
        }
        if partition_epoch != partition.partition_epoch {
            return Err(MetadataError::InvalidUpdateVersion {
                given: partition_epoch,
                current: partition.partition_epoch,
            });
        }
        if !isr.iter().any(|r| r == leader) {
            return Err(MetadataError::InvalidRequest(format!(
                "the ISR {isr:?} must include its leader {leader}"
            )));
        }
        for member in isr {
            if !partition.replicas.contains(member) {
                return Err(MetadataError::IneligibleReplica(format!(
                    "{member} is not a replica of {topic}/{index}"
                )));
            }
            if !partition.isr.contains(member) && !live.contains(member) {
                return Err(MetadataError::IneligibleReplica(format!(
                    "{member} is fenced: it cannot join the ISR of {topic}/{index}"
                )));
            }
        }
        let mut isr = isr.to_vec();
        isr.sort();
        isr.dedup();
        partition.isr = isr;
        partition.partition_epoch += 1;
        Ok(Outcome::PartitionAltered {
            partition: partition.clone(),
        })
    }

    fn allocate_producer_ids(&mut self, count: u64) -> Result<Outcome, MetadataError> {
        if count == 0 || count > 1_000_000 {
            return Err(MetadataError::InvalidRequest(format!(
                "producer id blocks are 1 to 1000000 ids, not {count}"
            )));
        }
        let first = self.next_producer_id;
        self.next_producer_id += count;
        Ok(Outcome::ProducerIds { first, count })
    }
}

#[cfg(test)]
mod tests;
