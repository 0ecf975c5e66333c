//! The saga bank as real processes: concurrent transfers that conserve money and apply each
//! step once (checked against the shards' step records and the ledger), a destination shard
//! that is down (the credit fenced, the debit refunded; the dead-letter queue when it stays
//! down), and an orchestrator killed with sagas in flight (resumed from its log).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use distlab_bank::cluster::{LocalBank, Mode};
use distlab_bank::domain::account_name;
use distlab_proto::bank::v1 as pb;
use rand::{Rng, SeedableRng};
use support::{ACCOUNTS, OPENING, across_shards, detail, eventually, start, transfer};

const TOTAL: i64 = ACCOUNTS as i64 * OPENING;

/// Every balance, once the bank is quiet: the total must be exact.
async fn balances(bank: &LocalBank) -> BTreeMap<String, i64> {
    let read = bank
        .client()
        .read_all(pb::ReadAllRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.in_flight_after, 0, "quiet, nothing in flight");
    assert_eq!(read.total, TOTAL, "money created or destroyed");
    read.balances
        .into_iter()
        .map(|b| (b.account, b.balance))
        .collect()
}

/// Every step record of participant `id`, oldest first.
async fn steps(bank: &LocalBank, id: &str) -> Vec<pb::Step> {
    let mut client = pb::participant_client::ParticipantClient::new(bank.channel(id));
    let mut all = Vec::new();
    loop {
        let from = all.last().map_or(0, |s: &pb::Step| s.seq + 1);
        let page = client
            .steps(pb::StepsRequest { from, limit: 500 })
            .await
            .unwrap()
            .into_inner()
            .steps;
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Per step key, its states in order, over every shard.
async fn step_history(bank: &LocalBank) -> BTreeMap<String, Vec<String>> {
    let mut history: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for shard in ["s1", "s2"] {
        for step in steps(bank, shard).await {
            history.entry(step.key).or_default().push(step.state);
        }
    }
    history
}

async fn journal_len(bank: &LocalBank) -> usize {
    let mut client = pb::participant_client::ParticipantClient::new(bank.channel("ledger"));
    client
        .journal(pb::JournalRequest {
            from: 0,
            limit: 10_000,
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .len()
}

/// `clients` clients, each sending `per_client` seeded random transfers, retrying each (same
/// id) until it has an answer; every answer, by id.
async fn run_transfers(
    bank: pb::bank_client::BankClient<tonic::transport::Channel>,
    clients: u64,
    per_client: usize,
) -> Vec<(pb::TransferRequest, pb::TransferResponse)> {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = bank.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(100 + c);
            let mut done = Vec::new();
            for i in 0..per_client {
                let from = account_name(rng.random_range(0..ACCOUNTS));
                let mut to = account_name(rng.random_range(0..ACCOUNTS));
                while to == from {
                    to = account_name(rng.random_range(0..ACCOUNTS));
                }
                let request = transfer(&format!("c{c}-{i}"), &from, &to, rng.random_range(1..=60));
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let answer = loop {
                    match client.clone().transfer(request.clone()).await {
                        Ok(answer) => break answer.into_inner(),
                        Err(e) => {
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "{}: no answer: {e}",
                                request.id
                            );
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                done.push((request, answer));
            }
            done
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// What the answers say the balances must be, and that the step records agree: each completed
/// transfer's debit and credit applied once, each refused one's debit refused and nothing
/// else.
async fn check_against_steps(
    bank: &LocalBank,
    answers: &[(pb::TransferRequest, pb::TransferResponse)],
) -> (BTreeMap<String, i64>, usize) {
    let history = step_history(bank).await;
    let mut expected: BTreeMap<String, i64> =
        (0..ACCOUNTS).map(|i| (account_name(i), OPENING)).collect();
    let mut completed = 0;
    for (t, answer) in answers {
        let debit = history.get(&format!("{}/debit", t.id)).cloned();
        let credit = history.get(&format!("{}/credit", t.id)).cloned();
        match answer.state.as_str() {
            // Committed: past the pivot, answered before the ledger and notify steps ran.
            "completed" | "committed" => {
                assert!(answer.committed);
                completed += 1;
                *expected.get_mut(&t.from).unwrap() -= t.amount;
                *expected.get_mut(&t.to).unwrap() += t.amount;
                assert_eq!(debit, Some(vec!["applied".into()]), "{}", t.id);
                assert_eq!(credit, Some(vec!["applied".into()]), "{}", t.id);
            }
            "refused" => {
                assert!(answer.reason.contains("insufficient funds"), "{answer:?}");
                assert_eq!(debit, Some(vec!["refused".into()]), "{}", t.id);
                assert_eq!(credit, None, "{}", t.id);
            }
            "compensated" => {
                // Nothing moved in the end: a debit refunded or fenced, a credit fenced.
                for states in debit.iter().chain(credit.iter()) {
                    let last = states.last().unwrap();
                    assert!(
                        last == "reversed" || last == "fenced",
                        "{}: {states:?}",
                        t.id
                    );
                }
            }
            other => panic!("{}: ended {other}: {answer:?}", t.id),
        }
    }
    (expected, completed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_transfers_conserve_money_and_apply_each_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let bank = start(dir.path(), Mode::Saga, &[], &[]).await;
    let answers = run_transfers(bank.client(), 6, 25).await;
    let (expected, completed) = check_against_steps(&bank, &answers).await;
    assert!(completed > answers.len() / 2, "{completed} completed");
    assert_eq!(balances(&bank).await, expected);
    // Committed sagas finish their ledger and notify steps after the answer.
    eventually(
        "every committed saga completed",
        Duration::from_secs(10),
        || async { detail(&bank, "orch").await.unwrap()["in_flight_count"] == 0 },
    )
    .await;
    assert_eq!(
        journal_len(&bank).await,
        completed,
        "the ledger journalled each once"
    );
    let orch = detail(&bank, "orch").await.unwrap();
    assert_eq!(orch["mode"], "saga");
    assert_eq!(orch["completed"], completed);
    assert_eq!(orch["in_flight_count"], 0);
    assert_eq!(
        orch["outbox"]["depth"], completed,
        "without brokers every completion waits in the outbox"
    );

    // A retry returns the first outcome and moves nothing; a reused id and bad input are
    // refused.
    let (t, first) = answers.iter().find(|(_, a)| a.committed).unwrap();
    let mut client = bank.client();
    let again = client.transfer(t.clone()).await.unwrap().into_inner();
    assert!(first.committed && again.committed, "{again:?}");
    assert_eq!(again.state, "completed");
    assert_eq!(balances(&bank).await, expected);
    let reused = client
        .transfer(pb::TransferRequest {
            amount: t.amount + 1,
            ..t.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{reused}");
    let bad = client
        .transfer(transfer("bad", &t.from, &t.from, 5))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
    assert!(bank.all_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_shard_down_fences_the_credit_and_refunds_the_debit() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = start(
        dir.path(),
        Mode::Saga,
        &[
            "--step-timeout",
            "300ms",
            "--forward-attempts",
            "2",
            "--must-finish-attempts",
            "4",
        ],
        &[],
    )
    .await;
    let (a, b) = across_shards();
    bank.kill("s2").await.unwrap();

    // The credit cannot be confirmed and the fence cannot reach s2 either: after its attempts
    // the saga is parked, its money in flight, until an operator acts.
    let mut client = bank.client();
    let parked = client
        .transfer(transfer("t1", &a, &b, 30))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(parked.state, "dead_lettered", "{parked:?}");
    assert!(!parked.committed);
    let orch = detail(&bank, "orch").await.unwrap();
    assert_eq!(orch["dead_lettered"], 1);
    assert_eq!(orch["money_in_flight"], 30);
    let mut dlq = pb::dead_letters_client::DeadLettersClient::new(bank.channel("orch"));
    let listed = dlq
        .list(pb::DeadLettersRequest {})
        .await
        .unwrap()
        .into_inner()
        .sagas;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].step.as_str()),
        ("t1", "fence_credit")
    );
    let unknown = dlq
        .retry(pb::DeadLetterRequest {
            id: "nope".into(),
            all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // s2 back, the retry fences the credit (it never landed) and refunds the debit.
    bank.start_node("s2").await.unwrap();
    let retried = dlq
        .retry(pb::DeadLetterRequest {
            id: String::new(),
            all: true,
        })
        .await
        .unwrap()
        .into_inner()
        .ids;
    assert_eq!(retried, vec!["t1".to_string()]);
    let t1 = transfer("t1", &a, &b, 30);
    eventually("t1 compensated", Duration::from_secs(10), || {
        let mut client = client.clone();
        let t1 = t1.clone();
        async move {
            client
                .transfer(t1)
                .await
                .is_ok_and(|r| r.into_inner().state == "compensated")
        }
    })
    .await;
    let after = balances(&bank).await;
    assert_eq!((after[&a], after[&b]), (OPENING, OPENING));

    // Down again, but back within the compensation's attempts: compensated without the queue.
    bank.kill("s2").await.unwrap();
    let waiting = tokio::spawn({
        let mut client = client.clone();
        let (a, b) = (a.clone(), b.clone());
        async move { client.transfer(transfer("t2", &a, &b, 20)).await }
    });
    eventually("t2 compensating", Duration::from_secs(10), || async {
        detail(&bank, "orch").await.is_some_and(|d| {
            d["in_flight"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["phase"] == "fence_credit"))
        })
    })
    .await;
    bank.start_node("s2").await.unwrap();
    let t2 = waiting.await.unwrap().unwrap().into_inner();
    assert_eq!(t2.state, "compensated", "{t2:?}");
    assert!(t2.reason.contains("credit"), "{t2:?}");
    let history = step_history(&bank).await;
    assert_eq!(history["t2/credit"], vec!["fenced".to_string()]);
    assert_eq!(
        history["t2/debit"],
        vec!["applied".to_string(), "reversed".to_string()]
    );
    let after = balances(&bank).await;
    assert_eq!((after[&a], after[&b]), (OPENING, OPENING));
    assert!(bank.all_alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_killed_with_sagas_in_flight_resumes_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut bank = start(dir.path(), Mode::Saga, &[], &[]).await;
    // The clients retry each transfer with its id until it answers: across the restart too
    // (the orchestrator comes back on the same address).
    let running = tokio::spawn(run_transfers(bank.client(), 4, 40));
    let in_flight = |bank: &LocalBank| {
        let admin = bank.admin("orch");
        async move {
            let Some(admin) = admin else { return 0 };
            let Ok(reply) = reqwest::get(format!("http://{admin}/status")).await else {
                return 0;
            };
            let body: serde_json::Value = reply.json().await.unwrap_or_default();
            body["detail"]["in_flight_count"].as_u64().unwrap_or(0)
        }
    };
    eventually("some sagas completed", Duration::from_secs(20), || async {
        detail(&bank, "orch")
            .await
            .is_some_and(|d| d["completed"].as_u64().unwrap_or(0) >= 20)
    })
    .await;
    // With s2 down, every client's next saga that touches s2 stalls in a step or its
    // compensation: the orchestrator is killed with those in flight.
    bank.kill("s2").await.unwrap();
    eventually("sagas stalled on s2", Duration::from_secs(20), || async {
        in_flight(&bank).await >= 3
    })
    .await;
    bank.kill("orch").await.unwrap();
    bank.start_node("orch").await.unwrap();
    let resumed = in_flight(&bank).await;
    assert!(resumed >= 3, "the restart resumed {resumed} sagas");
    bank.start_node("s2").await.unwrap();
    let answers = running.await.unwrap();
    let (expected, completed) = check_against_steps(&bank, &answers).await;
    assert!(completed > 0);
    assert_eq!(balances(&bank).await, expected);
    eventually("every saga finished", Duration::from_secs(20), || async {
        in_flight(&bank).await == 0
    })
    .await;
    assert_eq!(
        journal_len(&bank).await,
        completed,
        "the ledger journalled each once"
    );
    assert!(bank.all_alive());
}

/// Anti-entropy (either mode): a shard that skips every third credit drifts from the
/// ledger; a pass finds exactly the accounts it shorted, repairs them, and the next finds
/// nothing.
async fn drift_is_found_and_repaired(bank: &LocalBank) {
    let (a, b) = across_shards();
    let mut client = bank.client();
    // Credits to b land on s2, which skips every third.
    for i in 0..6 {
        let answer = client
            .transfer(transfer(&format!("d{i}"), &a, &b, 10))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.committed, "{answer:?}");
    }
    // A pass right after the last answer may find its commit still reaching a participant:
    // those accounts are not judged until it has.
    let mut found = pb::ReconcileResponse::default();
    for _ in 0..100 {
        found = client
            .reconcile(pb::ReconcileRequest { repair: false })
            .await
            .unwrap()
            .into_inner();
        if found.uncertain.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found.drifts.len(), 1, "{found:?}");
    let d = &found.drifts[0];
    assert_eq!(
        (d.account.as_str(), d.expected - d.balance),
        (b.as_str(), 20)
    );
    assert!(!d.repaired);
    assert!(d.transfers.contains(&"d5".to_string()), "{d:?}");
    let repaired = client
        .reconcile(pb::ReconcileRequest { repair: true })
        .await
        .unwrap()
        .into_inner();
    assert!(repaired.drifts.iter().all(|d| d.repaired), "{repaired:?}");
    let again = client
        .reconcile(pb::ReconcileRequest { repair: false })
        .await
        .unwrap()
        .into_inner();
    assert!(again.drifts.is_empty(), "{again:?}");
    let read = client
        .read_all(pb::ReadAllRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        read.total, TOTAL,
        "the repair put back what the skipped credits lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_credit_is_found_and_repaired_by_anti_entropy() {
    let dir = tempfile::tempdir().unwrap();
    for mode in [Mode::Saga, Mode::TwoPhaseCommit] {
        let dir = dir.path().join(format!("{mode:?}"));
        let skip = ["--skip-credit-every", "s2=3"];
        let bank = start(&dir, mode, &skip, &skip).await;
        drift_is_found_and_repaired(&bank).await;
        assert!(bank.all_alive());
    }
}
