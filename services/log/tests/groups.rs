//! Consumer groups against real `log serve` processes: a group reads every acknowledged
//! message while a member joins, a member crashes (its session expires and its partitions
//! move), and the coordinator broker is killed (the new one replays the committed offsets
//! from `__consumer_offsets`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use distlab_log::client::{LogClient, Producer};
use distlab_log::consumer::{GroupConfig, GroupConsumer};
use distlab_log::group::TopicPartition;
use distlab_proto::log::v1 as pb;
use support::cluster::cluster_with_topic;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What a member read: who, in which generation, where, what.
#[derive(Debug, Clone)]
struct Read {
    member: String,
    generation: u32,
    partition: TopicPartition,
    offset: u64,
    value: String,
}

fn config(client_id: &str) -> GroupConfig {
    let mut config = GroupConfig::new("g", client_id, vec!["t".into()]);
    config.session_timeout = Duration::from_secs(1);
    config.rebalance_timeout = Duration::from_secs(1);
    config.heartbeat_every = Duration::from_millis(100);
    config
}

/// Polls and commits in a loop until `stop`; hands the consumer back.
fn run_member(
    mut consumer: GroupConsumer,
    reads: mpsc::UnboundedSender<Read>,
    stop: CancellationToken,
) -> JoinHandle<GroupConsumer> {
    tokio::spawn(async move {
        loop {
            let polled = tokio::select! {
                polled = consumer.poll(Duration::from_millis(200)) => polled,
                () = stop.cancelled() => return consumer,
            };
            let Ok(polled) = polled else { continue };
            for c in polled {
                let _ = reads.send(Read {
                    member: consumer.member_id().to_string(),
                    generation: consumer.generation(),
                    partition: c.partition,
                    offset: c.record.offset,
                    value: String::from_utf8_lossy(&c.record.value).into_owned(),
                });
            }
            let _ = consumer.commit().await;
        }
    })
}

/// Sends `m-i` for each i in `range` to partition i % 3; remembers what was acknowledged.
async fn produce(producer: &Producer, range: std::ops::Range<u32>, sent: &mut BTreeSet<String>) {
    for i in range {
        let value = format!("m-{i}");
        producer
            .send("t", i % 3, &[(None, value.as_bytes())])
            .await
            .unwrap();
        sent.insert(value);
    }
}

/// Collects reads until every sent value was read (20 s at most).
async fn read_until_all(
    reads: &mut mpsc::UnboundedReceiver<Read>,
    log: &mut Vec<Read>,
    sent: &BTreeSet<String>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let seen: BTreeSet<&String> = log.iter().map(|r| &r.value).collect();
        let missing: Vec<&String> = sent.iter().filter(|v| !seen.contains(v)).collect();
        if missing.is_empty() {
            return;
        }
        match tokio::time::timeout_at(deadline, reads.recv()).await {
            Ok(Some(read)) => log.push(read),
            _ => panic!(
                "not read within 20 s: {} of {} messages, e.g. {:?}",
                missing.len(),
                sent.len(),
                &missing[..missing.len().min(5)]
            ),
        }
    }
}

/// The group's description once `done` holds (20 s at most).
async fn group_until(
    client: &LogClient,
    what: &str,
    done: impl Fn(&pb::GroupDescription) -> bool,
) -> pb::GroupDescription {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let g = client.describe_group("g").await.unwrap();
        if done(&g) {
            return g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 20 s: {what}; group {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assigned(g: &pb::GroupDescription) -> Vec<BTreeSet<u32>> {
    g.members
        .iter()
        .map(|m| m.assignment.iter().map(|p| p.partition).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_reads_everything_through_rebalances_and_a_coordinator_failover() {
    let (mut cluster, _controller) = cluster_with_topic(3, 2).await;
    let client = cluster.client();
    client.refresh_metadata().await.unwrap();
    let producer = Producer::new(client.clone(), pb::Acks::All, true)
        .await
        .unwrap();
    let (to_log, mut reads) = mpsc::unbounded_channel();
    let mut log = Vec::new();
    let mut sent = BTreeSet::new();

    // One member: it gets every partition.
    produce(&producer, 0..60, &mut sent).await;
    let stop_a = CancellationToken::new();
    let a = run_member(
        GroupConsumer::new(client.clone(), config("a")),
        to_log.clone(),
        stop_a.clone(),
    );
    read_until_all(&mut reads, &mut log, &sent).await;
    let g = group_until(&client, "a alone, stable", |g| {
        g.state == "stable" && g.members.len() == 1
    })
    .await;
    assert_eq!(assigned(&g), vec![BTreeSet::from([0, 1, 2])]);

    // A second member joins: the partitions are split between the two.
    let b = run_member(
        GroupConsumer::new(client.clone(), config("b")),
        to_log.clone(),
        CancellationToken::new(),
    );
    let g = group_until(&client, "a and b, stable", |g| {
        g.state == "stable" && g.members.len() == 2
    })
    .await;
    let split = assigned(&g);
    assert!(split.iter().all(|s| !s.is_empty()), "{split:?}");
    assert_eq!(split[0].union(&split[1]).count(), 3, "{split:?}");
    produce(&producer, 60..120, &mut sent).await;
    read_until_all(&mut reads, &mut log, &sent).await;

    // b crashes (no leave): its session expires and a takes its partitions.
    b.abort();
    let _ = b.await;
    produce(&producer, 120..180, &mut sent).await;
    let g = group_until(&client, "b expired, a alone", |g| {
        g.state == "stable" && g.members.len() == 1
    })
    .await;
    assert_eq!(assigned(&g), vec![BTreeSet::from([0, 1, 2])]);
    let reason = &g.last_rebalance.as_ref().unwrap().reason;
    assert!(reason.contains("session expired"), "{reason}");
    read_until_all(&mut reads, &mut log, &sent).await;

    // The coordinator is killed: a finds the new one and goes on.
    let coordinator = client.find_coordinator("g").await.unwrap();
    let killed: &'static str = ["b1", "b2", "b3"]
        .into_iter()
        .find(|b| *b == coordinator)
        .unwrap();
    cluster.nodes.get_mut(killed).unwrap().kill().await.unwrap();
    cluster.nodes.remove(killed);
    produce(&producer, 180..240, &mut sent).await;
    read_until_all(&mut reads, &mut log, &sent).await;
    let g = group_until(&client, "a at the new coordinator", |g| {
        g.state == "stable" && g.members.len() == 1
    })
    .await;
    assert_ne!(g.coordinator, killed);

    // a leaves, having committed everything it read: the committed offsets are the ends.
    stop_a.cancel();
    a.await.unwrap().close().await.unwrap();
    let g = group_until(&client, "empty", |g| g.state == "empty").await;
    let mut ends = BTreeMap::new();
    for p in 0..3 {
        ends.insert(p, client.list_offsets("t", p).await.unwrap().high_watermark);
    }
    let committed: BTreeMap<u32, u64> = g
        .partitions
        .iter()
        .map(|p| (p.partition, p.committed.unwrap()))
        .collect();
    assert_eq!(committed, ends);

    // A new member starts from the committed offsets (replayed by the new coordinator):
    // nothing already read comes back.
    let mut c = GroupConsumer::new(client.clone(), config("c"));
    for _ in 0..3 {
        let polled = c.poll(Duration::from_millis(200)).await.unwrap();
        assert!(polled.is_empty(), "read again: {polled:?}");
    }
    assert_eq!(c.assignment().len(), 3);
    c.close().await.unwrap();

    // Each member read each partition in offset order within a generation.
    let mut last: BTreeMap<(String, u32, u32), u64> = BTreeMap::new();
    for r in &log {
        let key = (r.member.clone(), r.generation, r.partition.partition);
        if let Some(previous) = last.insert(key, r.offset) {
            assert!(r.offset > previous, "out of order: {r:?} after {previous}");
        }
    }
}
