//! Three controllers and three brokers as real `log serve` processes on loopback: an
//! idempotent `acks=all` producer loses and duplicates nothing when the partition leader is
//! killed; a paused follower falls out of the ISR and comes back; with too few in-sync
//! replicas `acks=all` is refused; a restarted broker catches up from its own log.

mod support;

use std::time::Duration;

use distlab_log::client::{LogClient, Producer};
use distlab_log::controller::service::refusal_kind;
use distlab_proto::log::v1 as pb;
use distlab_runtime::retry::RetryPolicy;
use nix::sys::signal::Signal;
use support::cluster::{BROKERS, cluster_with_topic};
use support::metadata_until;

fn partition0(metadata: &pb::ClusterMetadata) -> &pb::PartitionInfo {
    &metadata.topics[0].partitions[0]
}

/// Everything a consumer can read from `t`/0, as text.
async fn consume_all(client: &LogClient) -> Vec<String> {
    let records = client.read_all("t", 0).await.unwrap();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.offset, i as u64, "offsets are consecutive");
    }
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_all_loses_and_duplicates_nothing_when_the_leader_is_killed() {
    let (mut cluster, controller) = cluster_with_topic(1, 2).await;
    let client = cluster.client();
    client.refresh_metadata().await.unwrap();
    let producer = Producer::new(client.clone(), pb::Acks::All, true)
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..40 {
        let value = format!("m{i}");
        producer
            .send("t", 0, &[(None, value.as_bytes())])
            .await
            .unwrap();
        acked.push(value);
    }
    let leader = partition0(&controller.metadata(0, Duration::ZERO).await.unwrap())
        .leader
        .clone()
        .unwrap();
    let leader: &'static str = BROKERS.into_iter().find(|b| *b == leader).unwrap();
    cluster.nodes.get_mut(leader).unwrap().kill().await.unwrap();
    for i in 40..80 {
        let value = format!("m{i}");
        producer
            .send("t", 0, &[(None, value.as_bytes())])
            .await
            .unwrap();
        acked.push(value);
    }
    let metadata = controller.metadata(0, Duration::ZERO).await.unwrap();
    let p = partition0(&metadata);
    assert_ne!(p.leader.as_deref(), Some(leader));
    assert!(p.leader_epoch >= 1, "{p:?}");
    assert_eq!(
        consume_all(&client).await,
        acked,
        "every acknowledged message, once, in order"
    );

    // The killed leader comes back on its own log: it truncates to the new leader's epoch
    // boundary, catches up and rejoins the ISR.
    cluster.nodes.remove(leader);
    cluster.start_node(leader).await;
    metadata_until(&controller, "the old leader back in the ISR", |m| {
        partition0(m).isr.len() == 3
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = cluster.status(leader).await;
        let partition = &status["detail"]["partitions"][0];
        if partition["log_end"] == 80 && partition["role"] == "follower" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{leader} did not catch up: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_leaves_the_isr_and_acks_all_needs_min_insync() {
    let (cluster, controller) = cluster_with_topic(1, 2).await;
    let client = cluster.client();
    client.refresh_metadata().await.unwrap();
    let producer = Producer::new(client.clone(), pb::Acks::All, true)
        .await
        .unwrap();
    producer.send("t", 0, &[(None, b"first")]).await.unwrap();
    let metadata = controller.metadata(0, Duration::ZERO).await.unwrap();
    let p = partition0(&metadata).clone();
    let leader = p.leader.clone().unwrap();
    let followers: Vec<&'static str> = BROKERS.into_iter().filter(|b| *b != leader).collect();

    // One follower paused: it leaves the ISR after the lag time; acks=all still works.
    cluster.nodes[followers[0]].signal(Signal::SIGSTOP).unwrap();
    let shrunk = metadata_until(&controller, "ISR shrank", |m| partition0(m).isr.len() == 2).await;
    assert!(!partition0(&shrunk).isr.contains(&followers[0].to_string()));
    producer.send("t", 0, &[(None, b"second")]).await.unwrap();

    // Two paused: the ISR is the leader alone, below min.insync.replicas 2.
    cluster.nodes[followers[1]].signal(Signal::SIGSTOP).unwrap();
    metadata_until(&controller, "ISR is the leader alone", |m| {
        partition0(m).isr.len() == 1
    })
    .await;
    let batch = distlab_log::storage::batch::Batch::build(
        [(None, &b"third"[..], 0)],
        distlab_log::storage::batch::ProducerStamp::NONE,
    );
    let impatient = LogClient::connect_lazy(
        &cluster.addresses(&BROKERS),
        RetryPolicy {
            max_attempts: 1,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(2),
            ..RetryPolicy::default()
        },
    )
    .unwrap();
    impatient.refresh_metadata().await.unwrap();
    let refused = impatient
        .produce("t", 0, &batch, pb::Acks::All)
        .await
        .unwrap_err();
    assert_eq!(
        refusal_kind(&refused),
        Some("not_enough_replicas"),
        "{refused:?}"
    );
    // acks=1 does not care.
    impatient
        .produce("t", 0, &batch, pb::Acks::Leader)
        .await
        .unwrap();

    // Both back: they catch up and rejoin.
    for f in &followers {
        cluster.nodes[f].signal(Signal::SIGCONT).unwrap();
    }
    metadata_until(&controller, "ISR whole again", |m| {
        partition0(m).isr.len() == 3
    })
    .await;
    let values = consume_all(&client).await;
    assert_eq!(values, vec!["first", "second", "third"]);
}
