use super::*;
use crate::types::{Command, Op, Proposal, Session};

fn open(dir: &std::path::Path) -> (sled::Db, StateMachine) {
    // A previous instance's flush thread lets go of the database shortly after its handles
    // are dropped: wait for the lock (a reopened node is a new process in real life).
    let started = std::time::Instant::now();
    let db = loop {
        match sled::open(dir.join("db")) {
            Ok(db) => break db,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(10) => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    };
    let flusher = Flusher::start(db.clone(), false).unwrap();
    let machine = StateMachine::open(&db, flusher).unwrap();
    (db, machine)
}

fn entry(index: u64, session: Option<(u64, u64)>, op: Op) -> Entry {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal {
            commands: vec![Command {
                session: session.map(|(client, seq)| Session { client, seq }),
                op,
            }]
            .into(),
        }),
    }
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn commands_apply_in_order_and_duplicates_are_answered_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut sm) = open(dir.path());
    let cas = |expected: Option<&str>, new: &str| Op::Cas {
        key: "k".into(),
        expected: expected.map(|e| e.as_bytes().to_vec()),
        new: new.as_bytes().to_vec(),
    };
    let outcomes = sm
        .apply(vec![
            entry(1, Some((7, 1)), cas(None, "a")),
            entry(2, Some((7, 2)), cas(Some("a"), "b")),
            // A retry of seq 2 in the same batch: answered as the first, not applied again.
            entry(3, Some((7, 2)), cas(Some("a"), "b")),
            entry(4, Some((8, 1)), cas(Some("a"), "c")),
        ])
        .await
        .unwrap()
        .concat();
    assert_eq!(
        outcomes[0],
        Outcome::Cas {
            swapped: true,
            current: None
        }
    );
    assert_eq!(
        outcomes[1],
        Outcome::Cas {
            swapped: true,
            current: Some(b"a".to_vec())
        }
    );
    assert_eq!(outcomes[2], outcomes[1]);
    assert_eq!(
        outcomes[3],
        Outcome::Cas {
            swapped: false,
            current: Some(b"b".to_vec())
        }
    );
    // A retry in a later batch too; an older sequence number is stale.
    let later = sm
        .apply(vec![
            entry(5, Some((7, 2)), cas(Some("a"), "b")),
            entry(6, Some((7, 1)), put("k", "z")),
            entry(7, None, Op::Delete { key: "k".into() }),
        ])
        .await
        .unwrap()
        .concat();
    assert_eq!(later[0], outcomes[1]);
    assert_eq!(later[1], Outcome::Stale);
    assert_eq!(later[2], Outcome::Deleted { existed: true });
    assert_eq!(sm.get("k").unwrap(), None);
    assert_eq!(sm.stats.duplicates.load(Ordering::Relaxed), 2);
    assert_eq!(sm.applied().unwrap().map(|l| l.index), Some(7));
    assert_eq!(sm.sessions(), 2);
}

#[tokio::test]
async fn a_snapshot_restores_the_state_on_another_node_and_survives_an_interrupted_install() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut leader) = open(&dir.path().join("a"));
    let entries: Vec<Entry> = (1..=50)
        .map(|i| {
            entry(
                i,
                Some((1, i)),
                put(&format!("k{}", i % 10), &i.to_string()),
            )
        })
        .collect();
    leader.apply(entries).await.unwrap();
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(50));

    let follower_dir = dir.path().join("b");
    {
        let (_db, mut follower) = open(&follower_dir);
        follower
            .apply(vec![entry(1, None, put("stale", "x"))])
            .await
            .unwrap();
        follower
            .install_snapshot(&snapshot.meta, snapshot.snapshot.clone())
            .await
            .unwrap();
        assert_eq!(follower.get("stale").unwrap(), None);
        assert_eq!(follower.get("k3").unwrap(), Some(b"43".to_vec()));
        assert_eq!(follower.applied().unwrap().map(|l| l.index), Some(50));
        assert_eq!(follower.sessions(), 1);
        // Simulate a crash in the middle of an install: the state machine lost its state,
        // the stored snapshot is intact.
        follower.sm.clear().unwrap();
        follower.sm.flush().unwrap();
    }
    let (_db, follower) = open(&follower_dir);
    assert_eq!(follower.get("k3").unwrap(), Some(b"43".to_vec()));
    assert_eq!(follower.applied().unwrap().map(|l| l.index), Some(50));
}

#[test]
fn corrupt_snapshot_data_is_refused_with_a_reason() {
    let mut data = Vec::new();
    encode_pair(&mut data, b"d/k", b"v");
    assert_eq!(decode_pairs(&data).unwrap().len(), 1);
    let cut = &data[..data.len() - 1];
    assert!(
        decode_pairs(cut)
            .unwrap_err()
            .to_string()
            .contains("cut short")
    );
    let mut odd = Vec::new();
    encode_pair(&mut odd, b"m/applied", b"x");
    assert!(
        decode_pairs(&odd)
            .unwrap_err()
            .to_string()
            .contains("unexpected key")
    );
}

/// One entry may carry many clients' commands (the leader batches them): each gets its own
/// outcome, in order, and a retry inside the same entry is answered, not applied.
#[tokio::test]
async fn a_proposal_applies_its_commands_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, mut sm) = open(dir.path());
    let command = |client, seq, op| Command {
        session: Some(Session { client, seq }),
        op,
    };
    let batch = Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 1),
        payload: EntryPayload::Normal(Proposal {
            commands: vec![
                command(1, 1, put("a", "1")),
                command(2, 1, Op::Delete { key: "a".into() }),
                command(1, 1, put("a", "1")),
                command(3, 1, put("b", "2")),
            ]
            .into(),
        }),
    };
    let outcomes = sm.apply(vec![batch]).await.unwrap();
    assert_eq!(
        outcomes,
        [vec![
            Outcome::Put,
            Outcome::Deleted { existed: true },
            Outcome::Put,
            Outcome::Put
        ]]
    );
    assert_eq!(
        sm.get("a").unwrap(),
        None,
        "the retry was not applied again"
    );
    assert_eq!(sm.get("b").unwrap(), Some(b"2".to_vec()));
}

/// Entries written when each held one command still read, as a proposal of one.
#[test]
fn proposals_read_both_shapes() {
    let one = Command {
        session: None,
        op: put("k", "v"),
    };
    let old = serde_json::to_vec(&one).unwrap();
    let read: Proposal = serde_json::from_slice(&old).unwrap();
    assert_eq!(&*read.commands, std::slice::from_ref(&one));
    let new = Proposal {
        commands: vec![one.clone(), one].into(),
    };
    let read: Proposal = serde_json::from_slice(&serde_json::to_vec(&new).unwrap()).unwrap();
    assert_eq!(read, new);
}

/// Values travel as base64 text; entries written with byte arrays still read.
#[test]
fn values_are_text_and_old_arrays_still_read() {
    let cas = Op::Cas {
        key: "k".into(),
        expected: Some(b"old".to_vec()),
        new: b"new".to_vec(),
    };
    let text = serde_json::to_string(&cas).unwrap();
    assert!(text.contains("\"bmV3\""), "{text}");
    assert_eq!(serde_json::from_str::<Op>(&text).unwrap(), cas);
    let old = r#"{"Cas":{"key":"k","expected":[111,108,100],"new":[110,101,119]}}"#;
    assert_eq!(serde_json::from_str::<Op>(old).unwrap(), cas);
    let absent = r#"{"Cas":{"key":"k","expected":null,"new":"bmV3"}}"#;
    assert!(matches!(
        serde_json::from_str::<Op>(absent).unwrap(),
        Op::Cas { expected: None, .. }
    ));
}
