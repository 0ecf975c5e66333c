//! The 2PC bank as real processes: concurrent transfers that conserve money exactly (checked
//! against a model of every committed transfer, and by whole-bank reads taken while they run),
//! and the failures two-phase commit is known for: a coordinator killed before its decision
//! (participants in doubt, blocked, until it returns and presumes abort), killed after it
//! (the commit finished by its restart), a participant killed while prepared.

use std::collections::BTreeMap;
use std::time::Duration;

mod support;

use distlab_bank::cluster::{LocalBank, Mode};
use distlab_bank::domain::{account_name, shard_of};
use distlab_proto::bank::v1 as pb;
use rand::{Rng, SeedableRng};
use support::{
    ACCOUNTS, OPENING, across_shards, detail, eventually, flags, prepared, start, transfer,
};

async fn balances(bank: &LocalBank) -> BTreeMap<String, i64> {
    let read = bank
        .client()
        .read_all(pb::ReadAllRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        read.total,
        ACCOUNTS as i64 * OPENING,
        "money created or destroyed"
    );
    read.balances
        .into_iter()
        .map(|b| (b.account, b.balance))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_move_exactly_the_committed_money() {
    let dir = tempfile::tempdir().unwrap();
    let bank = start(
        dir.path(),
        Mode::TwoPhaseCommit,
        &["--max-attempts", "100"],
        &[],
    )
    .await;
    let total = ACCOUNTS as i64 * OPENING;
    let stop = tokio_util::sync::CancellationToken::new();
    // A reader of every balance, all along: 2PC's reads see the exact total, always.
    let reader = {
        let client = bank.client();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.is_cancelled() {
                let mut client = client.clone();
                if let Ok(read) = client.read_all(pb::ReadAllRequest {}).await {
                    assert_eq!(read.into_inner().total, total, "a read saw money in flight");
                    reads += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            reads
        })
    };
    let mut clients = Vec::new();
    for c in 0..6u64 {
        let client = bank.client();
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c);
            let mut done = Vec::new();
            for i in 0..25 {
                // Half the transfers touch the three hot accounts.
                let pick = |rng: &mut rand::rngs::StdRng| {
                    if rng.random_bool(0.5) {
                        account_name(rng.random_range(0..3))
                    } else {
                        account_name(rng.random_range(0..ACCOUNTS))
                    }
                };
                let from = pick(&mut rng);
                let mut to = pick(&mut rng);
                while to == from {
                    to = account_name(rng.random_range(0..ACCOUNTS));
                }
                let amount = rng.random_range(1..=60);
                let id = format!("c{c}-{i}");
                let answer = client
                    .clone()
                    .transfer(transfer(&id, &from, &to, amount))
                    .await
                    .unwrap()
                    .into_inner();
                done.push((id, from, to, amount, answer.committed, answer.reason));
            }
            done
        }));
    }
    let mut expected: BTreeMap<String, i64> =
        (0..ACCOUNTS).map(|i| (account_name(i), OPENING)).collect();
    let mut committed = 0;
    let mut insufficient = 0;
    for client in clients {
        for (id, from, to, amount, ok, reason) in client.await.unwrap() {
            if ok {
                committed += 1;
                *expected.get_mut(&from).unwrap() -= amount;
                *expected.get_mut(&to).unwrap() += amount;
            } else {
                // Lock conflicts are retried until the transaction wins (wait-die keeps its
                // age): only a lack of funds may abort a transfer here.
                assert!(
                    reason.contains("insufficient funds"),
                    "{id} aborted for another reason: {reason}"
                );
                insufficient += 1;
            }
        }
    }
    stop.cancel();
    let reads = reader.await.unwrap();
    assert!(reads > 0, "no whole-bank read completed");
    assert!(
        committed > insufficient,
        "{committed} committed, {insufficient} refused"
    );
    // Every committed transfer moved its money once; nothing else moved any.
    assert_eq!(balances(&bank).await, expected);
    // The ledger journalled each committed transfer once.
    eventually(
        "the ledger journalled every commit",
        Duration::from_secs(10),
        || async {
            detail(&bank, "ledger")
                .await
                .is_some_and(|d| d["counters"]["committed"] == committed)
        },
    )
    .await;
    // A retried transfer returns its first outcome and moves nothing again; its id with
    // another amount, and bad transfers, are refused.
    let (a, b) = across_shards();
    let mut client = bank.client();
    let first = client
        .transfer(transfer("again", &a, &b, 1))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .transfer(transfer("again", &a, &b, 1))
        .await
        .unwrap()
        .into_inner();
    assert!(first.committed && again.committed);
    let after = balances(&bank).await;
    assert_eq!(after[&a], expected[&a] - 1);
    let reused = client
        .transfer(transfer("again", &a, &b, 2))
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused:?}");
    for (bad, why) in [
        (transfer("b1", "acct-9999", &b, 1), "unknown from account"),
        (transfer("b2", &a, &a, 1), "both"),
        (transfer("b3", &a, &b, -5), "positive"),
        (transfer("b4", &a, &b, i64::MAX), "more money"),
    ] {
        let e = client.transfer(bad).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains(why), "{}", e.message());
    }
    assert_eq!(
        balances(&bank).await,
        after,
        "refused transfers moved money"
    );
    // Each refusal is recorded.
    eventually(
        "the refusals in the coordinator's log",
        Duration::from_secs(5),
        || async {
            let log = std::fs::read_to_string(dir.path().join("tc.log")).unwrap_or_default();
            log.matches("transfer_refused").count() == 5
        },
    )
    .await;
    assert!(bank.all_alive());
}

/// The blocking 2PC is known for, shown: participants that voted yes and lost their
/// coordinator keep their locks and stay in doubt; the restarted coordinator finds no commit
/// record and presumes abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_before_deciding_leaves_participants_in_doubt_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = start(
        dir.path(),
        Mode::TwoPhaseCommit,
        &["--delay-decision", "60s"],
        &[],
    )
    .await;
    let (a, b) = across_shards();
    let before = balances(&bank).await;
    let mut client = bank.client();
    let pending = tokio::spawn(async move { client.transfer(transfer("t1", &a, &b, 10)).await });
    eventually("both shards prepared", Duration::from_secs(10), || async {
        prepared(&bank, "s1").await == 1 && prepared(&bank, "s2").await == 1
    })
    .await;
    bank.kill("tc").await.unwrap();
    assert!(
        pending.await.unwrap().is_err(),
        "the client saw its coordinator die"
    );
    eventually(
        "the shards report the transaction in doubt",
        Duration::from_secs(10),
        || async {
            detail(&bank, "s1")
                .await
                .is_some_and(|d| d["prepared"][0]["in_doubt"] == true)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for shard in ["s1", "s2"] {
        let d = detail(&bank, shard).await.unwrap();
        assert_eq!(
            d["prepared"].as_array().unwrap().len(),
            1,
            "{shard} gave up its prepare alone"
        );
        assert!(
            d["locked"].as_u64().unwrap() >= 1,
            "{shard} let go of its locks"
        );
        assert!(d["counters"]["outcome_queries"].as_u64().unwrap() > 0);
    }
    bank.set_flags("tc", flags(&[]));
    bank.start_node("tc").await.unwrap();
    eventually("the doubt resolved", Duration::from_secs(10), || async {
        prepared(&bank, "s1").await == 0 && prepared(&bank, "s2").await == 0
    })
    .await;
    assert_eq!(balances(&bank).await, before, "presumed abort moved money");
    let (a, b) = across_shards();
    let next = bank
        .client()
        .transfer(transfer("t2", &a, &b, 10))
        .await
        .unwrap()
        .into_inner();
    assert!(
        next.committed,
        "the accounts stayed locked: {}",
        next.reason
    );
}

/// A commit decision in the log survives the coordinator: killed after deciding, before any
/// participant heard, it finishes the commit when it restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_after_deciding_commits_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = start(
        dir.path(),
        Mode::TwoPhaseCommit,
        &["--delay-outcome", "60s", "--in-doubt-after", "60s"],
        &[],
    )
    .await;
    let (a, b) = across_shards();
    let before = balances(&bank).await;
    let answer = bank
        .client()
        .transfer(transfer("t1", &a, &b, 10))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.committed);
    assert_eq!(prepared(&bank, "s1").await + prepared(&bank, "s2").await, 2);
    bank.kill("tc").await.unwrap();
    bank.set_flags("tc", flags(&[]));
    bank.start_node("tc").await.unwrap();
    eventually(
        "the commit reached both shards",
        Duration::from_secs(10),
        || async { prepared(&bank, "s1").await == 0 && prepared(&bank, "s2").await == 0 },
    )
    .await;
    let after = balances(&bank).await;
    assert_eq!(after[&a], before[&a] - 10);
    assert_eq!(after[&b], before[&b] + 10);
}

/// A participant killed while prepared comes back with its prepared record and its locks,
/// and applies the outcome when it learns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_while_prepared_recovers_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = start(
        dir.path(),
        Mode::TwoPhaseCommit,
        &["--delay-decision", "3s"],
        &[],
    )
    .await;
    let (a, b) = across_shards();
    let victim = format!("s{}", shard_of(&a, 2) + 1);
    let before = balances(&bank).await;
    let mut client = bank.client();
    let (from, to) = (a.clone(), b.clone());
    let pending =
        tokio::spawn(async move { client.transfer(transfer("t1", &from, &to, 10)).await });
    eventually("the victim prepared", Duration::from_secs(10), || async {
        prepared(&bank, &victim).await == 1
    })
    .await;
    bank.kill(&victim).await.unwrap();
    bank.start_node(&victim).await.unwrap();
    assert_eq!(
        prepared(&bank, &victim).await,
        1,
        "the prepare did not survive kill -9"
    );
    let answer = pending.await.unwrap().unwrap().into_inner();
    assert!(answer.committed, "{}", answer.reason);
    eventually(
        "the victim applied the commit",
        Duration::from_secs(10),
        || async { prepared(&bank, &victim).await == 0 },
    )
    .await;
    let after = balances(&bank).await;
    assert_eq!(after[&a], before[&a] - 10);
    assert_eq!(after[&b], before[&b] + 10);
    let log = std::fs::read_to_string(dir.path().join(format!("{victim}.log"))).unwrap();
    assert!(log.contains("recovered_prepared"), "{log}");
}
