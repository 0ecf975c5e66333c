//! The XA path as real processes: shards and the ledger on `--store postgres`, each with a
//! throwaway PostgreSQL server in its data dir, their prepared transactions PostgreSQL's own.
//! Transfers commit through `COMMIT PREPARED` and the database agrees with the bank; a
//! participant killed while prepared leaves its transaction in `pg_prepared_xacts`, holding
//! its row locks, and recovers it from there; a coordinator killed before deciding leaves it
//! there until its restart presumes abort and the participant runs `ROLLBACK PREPARED`.
//!
//! Skipped (with a note) where PostgreSQL is not installed, unless DISTLAB_REQUIRE_POSTGRES
//! is set: `.ci/run` installs it and sets it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod support;

use distlab_bank::cluster::{LocalBank, Mode};
use distlab_bank::domain::{account_name, shard_of};
use distlab_proto::bank::v1 as pb;
use rand::{Rng, SeedableRng};
use support::{
    ACCOUNTS, OPENING, across_shards, detail, eventually, flags, prepared, start, transfer,
};

/// Whether to run: PostgreSQL is here, or it must be.
fn postgres_here() -> bool {
    if distlab_bank::postgres::installed() {
        return true;
    }
    assert!(
        std::env::var_os("DISTLAB_REQUIRE_POSTGRES").is_none(),
        "DISTLAB_REQUIRE_POSTGRES is set and PostgreSQL is not installed"
    );
    eprintln!("PostgreSQL is not installed: skipped");
    false
}

/// A connection to participant `id`'s PostgreSQL.
async fn database(dir: &Path, id: &str) -> tokio_postgres::Client {
    let port = std::fs::read_to_string(dir.join(id).join("postgres").join("port")).unwrap();
    let config = format!(
        "host=127.0.0.1 port={} user={} dbname=postgres",
        port.trim(),
        distlab_bank::postgres::USER
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn prepared_in_database(dir: &Path, id: &str) -> Vec<String> {
    database(dir, id)
        .await
        .query("SELECT gid FROM pg_prepared_xacts", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.get(0))
        .collect()
}

async fn database_balances(dir: &Path, id: &str) -> BTreeMap<String, i64> {
    database(dir, id)
        .await
        .query("SELECT account, balance FROM accounts", &[])
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn read_all(bank: &LocalBank) -> BTreeMap<String, i64> {
    let read = bank
        .client()
        .read_all(pb::ReadAllRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        read.total,
        ACCOUNTS as i64 * OPENING,
        "money created or lost"
    );
    read.balances
        .into_iter()
        .map(|b| (b.account, b.balance))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_commit_in_postgres_and_the_databases_agree_with_the_bank() {
    if !postgres_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = Box::leak(Box::new(dir));
    eprintln!("DIR {}", dir.path().display());
    let bank = start(
        dir.path(),
        Mode::TwoPhaseCommit,
        &["--max-attempts", "100"],
        &["--store", "postgres"],
    )
    .await;
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let client = bank.client();
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c);
            let mut done = Vec::new();
            for i in 0..15 {
                let from = account_name(rng.random_range(0..4));
                let mut to = account_name(rng.random_range(0..ACCOUNTS));
                while to == from {
                    to = account_name(rng.random_range(0..ACCOUNTS));
                }
                let amount = rng.random_range(1..=80);
                let answer = client
                    .clone()
                    .transfer(transfer(&format!("c{c}-{i}"), &from, &to, amount))
                    .await
                    .unwrap()
                    .into_inner();
                done.push((from, to, amount, answer.committed, answer.reason));
            }
            done
        }));
    }
    let mut expected: BTreeMap<String, i64> =
        (0..ACCOUNTS).map(|i| (account_name(i), OPENING)).collect();
    let mut committed = 0usize;
    for client in clients {
        for (from, to, amount, ok, reason) in client.await.unwrap() {
            if ok {
                committed += 1;
                *expected.get_mut(&from).unwrap() -= amount;
                *expected.get_mut(&to).unwrap() += amount;
            } else {
                assert!(reason.contains("insufficient funds"), "{reason}");
            }
        }
    }
    assert!(committed > 10, "only {committed} transfers committed");
    assert_eq!(read_all(&bank).await, expected);
    // What the bank says is what the databases hold, and nothing is left prepared.
    let mut in_databases = database_balances(dir.path(), "s1").await;
    in_databases.extend(database_balances(dir.path(), "s2").await);
    assert_eq!(in_databases, expected);
    for id in ["s1", "s2", "ledger"] {
        assert_eq!(
            prepared_in_database(dir.path(), id).await,
            Vec::<String>::new()
        );
        let d = detail(&bank, id).await.unwrap();
        assert_eq!(d["store"], "postgres");
    }
    // The ledger's journal is a table: one row per committed transfer.
    let rows: i64 = database(dir.path(), "ledger")
        .await
        .query_one("SELECT count(*) FROM journal", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows as usize, committed);
    // Saga steps are refused by name on this store.
    let mut shard = pb::participant_client::ParticipantClient::new(bank.channel("s1"));
    let e = shard
        .apply(pb::ApplyRequest {
            key: "k1".into(),
            account: account_name(0),
            delta: 1,
            journal: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("--store postgres"), "{}", e.message());
    assert!(bank.all_alive());
}

/// A participant killed -9 while prepared: its transaction stays in PostgreSQL, prepared and
/// holding its row lock; the restarted participant finds it in pg_prepared_xacts, is in doubt
/// again, and commits it when the coordinator says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_killed_while_prepared_recovers_its_transaction_from_postgres() {
    if !postgres_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bank = start(
        dir.path(),
        Mode::TwoPhaseCommit,
        &["--delay-decision", "4s"],
        &["--store", "postgres"],
    )
    .await;
    let (a, b) = across_shards();
    let victim = format!("s{}", shard_of(&a, 2) + 1);
    let before = read_all(&bank).await;
    let mut client = bank.client();
    let (from, to) = (a.clone(), b.clone());
    let pending =
        tokio::spawn(async move { client.transfer(transfer("t1", &from, &to, 10)).await });
    eventually("the victim prepared", Duration::from_secs(10), || async {
        prepared(&bank, &victim).await == 1
    })
    .await;
    bank.kill(&victim).await.unwrap();
    // The participant is gone and so is its server; started again, the server still has the
    // transaction prepared, and its row lock with it.
    bank.start_node(&victim).await.unwrap();
    let gids = prepared_in_database(dir.path(), &victim).await;
    assert_eq!(gids.len(), 1, "{gids:?}");
    assert!(gids[0].starts_with("distlab/"), "{gids:?}");
    assert_eq!(prepared(&bank, &victim).await, 1, "not recovered");
    let db = database(dir.path(), &victim).await;
    db.batch_execute("SET lock_timeout = '200ms'")
        .await
        .unwrap();
    let blocked = db
        .execute(
            "UPDATE accounts SET balance = balance WHERE account = $1",
            &[&a],
        )
        .await
        .unwrap_err();
    assert_eq!(
        blocked.code(),
        Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "{blocked}"
    );
    let answer = pending.await.unwrap().unwrap().into_inner();
    assert!(answer.committed, "{}", answer.reason);
    eventually(
        "the victim committed its recovered transaction",
        Duration::from_secs(15),
        || async { prepared(&bank, &victim).await == 0 },
    )
    .await;
    assert!(prepared_in_database(dir.path(), &victim).await.is_empty());
    let after = read_all(&bank).await;
    assert_eq!(after[&a], before[&a] - 10);
    assert_eq!(after[&b], before[&b] + 10);
    assert_eq!(database_balances(dir.path(), &victim).await[&a], after[&a]);
    let log = std::fs::read_to_string(dir.path().join(format!("{victim}.log"))).unwrap();
    assert!(log.contains("recovered_prepared"), "{log}");
}

/// The coordinator killed before deciding: the prepared transactions wait in PostgreSQL (in
/// doubt, blocking) until it returns and presumes abort; then ROLLBACK PREPARED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_coordinator_leaves_postgres_prepared_until_it_returns_and_aborts() {
    if !postgres_here() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bank = start(
        dir.path(),
        Mode::TwoPhaseCommit,
        &["--delay-decision", "60s"],
        &["--store", "postgres"],
    )
    .await;
    let (a, b) = across_shards();
    let before = read_all(&bank).await;
    let mut client = bank.client();
    let pending = tokio::spawn(async move { client.transfer(transfer("t1", &a, &b, 10)).await });
    eventually(
        "every participant prepared",
        Duration::from_secs(10),
        || async {
            prepared(&bank, "s1").await == 1
                && prepared(&bank, "s2").await == 1
                && prepared(&bank, "ledger").await == 1
        },
    )
    .await;
    bank.kill("tc").await.unwrap();
    assert!(pending.await.unwrap().is_err());
    eventually("in doubt", Duration::from_secs(10), || async {
        detail(&bank, "s1")
            .await
            .is_some_and(|d| d["prepared"][0]["in_doubt"] == true)
    })
    .await;
    for id in ["s1", "s2", "ledger"] {
        assert_eq!(prepared_in_database(dir.path(), id).await.len(), 1, "{id}");
    }
    bank.set_flags("tc", flags(&[]));
    bank.start_node("tc").await.unwrap();
    eventually("rolled back", Duration::from_secs(15), || async {
        let mut left = 0;
        for id in ["s1", "s2", "ledger"] {
            left += prepared_in_database(dir.path(), id).await.len();
        }
        left == 0
    })
    .await;
    assert_eq!(read_all(&bank).await, before, "presumed abort moved money");
    let rows: i64 = database(dir.path(), "ledger")
        .await
        .query_one("SELECT count(*) FROM journal", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "an aborted transfer reached the journal");
}
