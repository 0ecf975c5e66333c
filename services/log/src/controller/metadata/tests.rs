use distlab_raft::memory_machine::Machine;
use openraft::CommittedLeaderId;

use super::*;

/// Applies commands as the Raft log would, numbering entries from 1.
struct Log {
    metadata: Metadata,
    index: u64,
}

impl Log {
    fn new() -> Self {
        Self {
            metadata: Metadata::default(),
            index: 0,
        }
    }

    fn apply(&mut self, command: Command) -> Outcome {
        self.index += 1;
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), self.index);
        self.metadata.apply(&command, &log_id)
    }

    fn register(&mut self, broker: &str) -> u64 {
        match self.apply(Command::RegisterBroker {
            broker: broker.into(),
            address: format!("127.0.0.1:{}", 9000 + self.index),
            now_ms: 0,
        }) {
            Outcome::Registered { epoch, .. } => epoch,
            other => panic!("registering {broker}: {other:?}"),
        }
    }

    fn epoch(&self, broker: &str) -> u64 {
        self.metadata.brokers[broker].epoch
    }

    fn fence(&mut self, broker: &str) -> Vec<Election> {
        let epoch = self.epoch(broker);
        match self.apply(Command::FenceBroker {
            broker: broker.into(),
            epoch,
            reason: "test".into(),
        }) {
            Outcome::Fenced { elections } => elections,
            other => panic!("fencing {broker}: {other:?}"),
        }
    }

    fn unfence(&mut self, broker: &str) -> Vec<Election> {
        let epoch = self.epoch(broker);
        match self.apply(Command::UnfenceBroker {
            broker: broker.into(),
            epoch,
        }) {
            Outcome::Unfenced { elections } => elections,
            other => panic!("unfencing {broker}: {other:?}"),
        }
    }

    fn create(&mut self, name: &str, partitions: u32, rf: u32, config: TopicConfig) -> Outcome {
        self.apply(Command::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            config,
        })
    }

    fn partition(&self, topic: &str, index: u32) -> Partition {
        self.metadata.partition(topic, index).unwrap().clone()
    }

    fn alter(&mut self, topic: &str, index: u32, isr: &[&str]) -> Outcome {
        let p = self.partition(topic, index);
        let leader = p.leader.clone().unwrap();
        self.apply(Command::AlterPartition {
            topic: topic.into(),
            partition: index,
            broker_epoch: self.epoch(&leader),
            leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: isr.iter().map(|s| s.to_string()).collect(),
        })
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn refused(outcome: Outcome) -> MetadataError {
    match outcome {
        Outcome::Refused { error } => error,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn three_brokers() -> Log {
    let mut log = Log::new();
    for b in ["b1", "b2", "b3"] {
        log.register(b);
    }
    log
}

#[test]
fn a_topic_spreads_replicas_and_leaders_over_the_live_brokers() {
    let mut log = three_brokers();
    let Outcome::TopicCreated { partitions } = log.create("t", 3, 3, TopicConfig::default()) else {
        panic!("not created")
    };
    assert_eq!(partitions[0].replicas, names(&["b1", "b2", "b3"]));
    assert_eq!(partitions[1].replicas, names(&["b2", "b3", "b1"]));
    assert_eq!(partitions[2].replicas, names(&["b3", "b1", "b2"]));
    for p in &partitions {
        assert_eq!(p.leader.as_ref(), Some(&p.replicas[0]));
        assert_eq!(p.isr, p.replicas);
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
    }
    // The next topic starts one broker further on.
    log.create("u", 1, 1, TopicConfig::default());
    assert_eq!(log.partition("u", 0).replicas, names(&["b2"]));
    // A fenced broker gets no new replicas.
    log.fence("b3");
    log.create("v", 2, 2, TopicConfig::default());
    for i in 0..2 {
        assert!(!log.partition("v", i).replicas.contains(&"b3".to_string()));
    }
}

#[test]
fn bad_topics_are_refused_with_the_reason() {
    let mut log = three_brokers();
    log.create("t", 1, 1, TopicConfig::default());
    let cases = [
        ("t", 1, 1, 1, "already exists"),
        ("", 1, 1, 1, "1 to 249"),
        ("a/b", 1, 1, 1, "'/' is not allowed"),
        ("x", 0, 1, 1, "0 partitions"),
        ("x", 1, 0, 1, "at least 1"),
        ("x", 1, 4, 1, "3 live brokers, replication factor 4"),
        ("x", 1, 2, 3, "min.insync.replicas 3"),
    ];
    for (name, partitions, rf, min_insync, expected) in cases {
        let config = TopicConfig {
            min_insync_replicas: min_insync,
            ..TopicConfig::default()
        };
        let error = refused(log.create(name, partitions, rf, config)).to_string();
        assert!(error.contains(expected), "{name:?}: {error}");
    }
    assert_eq!(log.metadata.topics.len(), 1);
}

#[test]
fn fencing_a_leader_moves_leadership_to_the_next_in_sync_replica() {
    let mut log = three_brokers();
    log.create("t", 3, 3, TopicConfig::default());
    let elections = log.fence("b1");
    // b1 led partition 0 only.
    assert_eq!(
        elections,
        vec![Election {
            topic: "t".into(),
            partition: 0,
            leader: Some("b2".into()),
            leader_epoch: 1,
            unclean: false,
        }]
    );
    let p0 = log.partition("t", 0);
    assert_eq!(p0.isr, names(&["b2", "b3"]));
    assert_eq!(p0.partition_epoch, 1);
    // Where b1 followed, it left the ISR; the leader epoch stays.
    let p1 = log.partition("t", 1);
    assert_eq!(p1.leader.as_deref(), Some("b2"));
    assert_eq!(p1.isr, names(&["b2", "b3"]));
    assert_eq!((p1.leader_epoch, p1.partition_epoch), (0, 1));
    // Coming back does not put it back in any ISR: its leader must see it catch up.
    assert!(log.unfence("b1").is_empty());
    assert_eq!(log.partition("t", 1).isr, names(&["b2", "b3"]));
}

#[test]
fn with_no_live_in_sync_replica_a_partition_waits_offline_for_the_last_one() {
    let mut log = three_brokers();
    log.create("t", 1, 3, TopicConfig::default());
    log.alter("t", 0, &["b1"]);
    let elections = log.fence("b1");
    assert_eq!(elections[0].leader, None);
    let p = log.partition("t", 0);
    assert_eq!((p.leader.clone(), p.isr.clone()), (None, names(&["b1"])));
    assert_eq!(p.leader_epoch, 1);
    // b2 and b3 are live but out of sync: no clean election.
    assert!(log.unfence("b2").is_empty());
    assert_eq!(log.metadata.unclean_elections, 0);
    // The last in-sync replica comes back and leads.
    let elections = log.unfence("b1");
    assert_eq!(elections.len(), 1);
    assert!(!elections[0].unclean);
    let p = log.partition("t", 0);
    assert_eq!(p.leader.as_deref(), Some("b1"));
    assert_eq!(p.leader_epoch, 2);
}

#[test]
fn unclean_election_trades_the_isrs_data_for_availability() {
    let mut log = three_brokers();
    let config = TopicConfig {
        unclean_leader_election: true,
        ..TopicConfig::default()
    };
    log.create("t", 1, 3, config);
    log.alter("t", 0, &["b1"]);
    let elections = log.fence("b1");
    assert_eq!(elections[0].leader.as_deref(), Some("b2"));
    assert!(elections[0].unclean);
    let p = log.partition("t", 0);
    assert_eq!(p.isr, names(&["b2"]));
    assert_eq!(log.metadata.unclean_elections, 1);
    // The unclean leader dies too: the last live replica takes over, uncleanly again.
    let elections = log.fence("b2");
    assert_eq!(elections[0].leader.as_deref(), Some("b3"));
    assert!(elections[0].unclean);
    // All down, then one outside the ISR comes back: it leads, uncleanly.
    log.fence("b3");
    assert_eq!(log.partition("t", 0).leader, None);
    assert_eq!(log.partition("t", 0).isr, names(&["b3"]));
    let elections = log.unfence("b1");
    assert_eq!(elections[0].leader.as_deref(), Some("b1"));
    assert!(elections[0].unclean);
    assert_eq!(log.metadata.unclean_elections, 3);
}

#[test]
fn a_restarted_broker_gets_a_new_epoch_and_its_old_incarnation_is_fenced() {
    let mut log = three_brokers();
    log.create("t", 1, 3, TopicConfig::default());
    let old = log.epoch("b1");
    let new = log.register("b1");
    assert!(new > old);
    // Its leadership moved (it may have lost an unflushed tail) and it left the ISR.
    let p = log.partition("t", 0);
    assert_eq!(p.leader.as_deref(), Some("b2"));
    assert_eq!(p.isr, names(&["b2", "b3"]));
    // The old incarnation's requests are refused.
    let error = refused(log.apply(Command::UnfenceBroker {
        broker: "b1".into(),
        epoch: old,
    }));
    assert!(
        matches!(error, MetadataError::StaleBrokerEpoch { .. }),
        "{error}"
    );
    let error = refused(log.apply(Command::FenceBroker {
        broker: "b9".into(),
        epoch: 1,
        reason: "test".into(),
    }));
    assert_eq!(error, MetadataError::UnknownBroker("b9".into()));
}

#[test]
fn isr_changes_come_only_from_the_current_leader_at_the_current_version() {
    let mut log = three_brokers();
    log.create("t", 1, 3, TopicConfig::default());
    let Outcome::PartitionAltered { partition } = log.alter("t", 0, &["b1", "b2"]) else {
        panic!("not altered")
    };
    assert_eq!(partition.isr, names(&["b1", "b2"]));
    assert_eq!(partition.partition_epoch, 1);

    let request =
        |leader: &str, leader_epoch, partition_epoch, isr: &[&str]| Command::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: leader.into(),
            broker_epoch: 0,
            leader_epoch,
            partition_epoch,
            isr: names(isr),
        };
    let with_epoch = |mut command: Command, epoch| {
        if let Command::AlterPartition { broker_epoch, .. } = &mut command {
            *broker_epoch = epoch;
        }
        command
    };
    let b1 = log.epoch("b1");
    let b2 = log.epoch("b2");
    let cases = [
        (
            with_epoch(request("b2", 0, 1, &["b2"]), b2),
            "not the leader",
        ),
        (
            with_epoch(request("b1", 7, 1, &["b1"]), b1),
            "leader epoch 7 is fenced",
        ),
        (
            with_epoch(request("b1", 0, 0, &["b1"]), b1),
            "partition epoch 0",
        ),
        (
            with_epoch(request("b1", 0, 1, &["b2"]), b1),
            "must include its leader",
        ),
        (
            with_epoch(request("b1", 0, 1, &["b1", "b9"]), b1),
            "b9 is not a replica",
        ),
        (
            with_epoch(request("b1", 0, 1, &["b1"]), b1 + 100),
            "is stale",
        ),
    ];
    for (command, expected) in cases {
        let error = refused(log.apply(command)).to_string();
        assert!(error.contains(expected), "{expected}: {error}");
    }
    // A fenced replica cannot rejoin.
    log.fence("b3");
    let error = refused(log.alter("t", 0, &["b1", "b2", "b3"])).to_string();
    assert!(error.contains("b3 is fenced"), "{error}");
    assert_eq!(log.partition("t", 0).isr, names(&["b1", "b2"]));
}

#[test]
fn producer_ids_come_in_disjoint_blocks() {
    let mut log = Log::new();
    let block = |log: &mut Log, count| match log.apply(Command::AllocateProducerIds { count }) {
        Outcome::ProducerIds { first, count } => (first, count),
        other => panic!("{other:?}"),
    };
    assert_eq!(block(&mut log, 100), (0, 100));
    assert_eq!(block(&mut log, 10), (100, 10));
    refused(log.apply(Command::AllocateProducerIds { count: 0 }));
    assert_eq!(log.metadata.next_producer_id, 110);
}

#[test]
fn commands_and_metadata_survive_json() {
    let mut log = three_brokers();
    log.create("t", 2, 2, TopicConfig::default());
    let json = serde_json::to_string(&log.metadata).unwrap();
    let back: Metadata = serde_json::from_str(&json).unwrap();
    assert_eq!(back, log.metadata);
    let command = Command::AlterPartition {
        topic: "t".into(),
        partition: 1,
        leader: "b2".into(),
        broker_epoch: 2,
        leader_epoch: 0,
        partition_epoch: 0,
        isr: names(&["b2"]),
    };
    let json = serde_json::to_string(&command).unwrap();
    assert!(json.contains(r#""command":"alter_partition""#), "{json}");
    assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), command);
}
