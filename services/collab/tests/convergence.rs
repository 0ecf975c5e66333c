//! The sequence CRDT's correctness properties, driven through the public API.
//!
//! - Convergence: replicas editing concurrently, receiving each other's operations in random
//!   order, duplicated and delayed, end with the same text once they hold the same operations.
//! - Run-level integration is exact: each replica's text equals what a per-character
//!   reference of the FugueMax rule (a plain vector, the paper's pseudocode) makes of the same
//!   history. A bug in run splitting, chunking or the cursor shows up as a difference here.
//! - No interleaving: concurrent typing at one place, forwards or backwards, stays in blocks.
//! - Intention preserved: each replica's characters stand, everywhere, in the order it typed
//!   them (recorded apart from the CRDT, [`Intent`]).
//! - Deltas, time travel and refusals behave as documented.

use distlab_collab::intent::Intent;
use distlab_collab::{
    Applied, Body, Doc, Dot, Frontier, Op, OpError, ReplicaId, Span, VersionVector,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The per-character FugueMax (YjsMod) of the paper, on a vector: slow and obviously right.
#[derive(Default)]
struct Reference {
    items: Vec<Item>,
}

#[derive(Clone, Copy)]
struct Item {
    id: Dot,
    origin_left: Option<Dot>,
    origin_right: Option<Dot>,
    ch: char,
    deleted: bool,
}

impl Reference {
    fn index(&self, dot: Dot) -> usize {
        self.items
            .iter()
            .position(|item| item.id == dot)
            .expect("held")
    }

    fn integrate(&mut self, id: Dot, left_origin: Option<Dot>, right_origin: Option<Dot>, c: char) {
        let left = left_origin.map_or(-1, |dot| self.index(dot) as i64);
        let right = right_origin.map_or(self.items.len() as i64, |dot| self.index(dot) as i64);
        let mut dest = left + 1;
        let mut scanning = false;
        let mut i = left + 1;
        loop {
            if !scanning {
                dest = i;
            }
            if i == self.items.len() as i64 || i == right {
                break;
            }
            let other = self.items[i as usize];
            let oleft = other.origin_left.map_or(-1, |dot| self.index(dot) as i64);
            let oright = other
                .origin_right
                .map_or(self.items.len() as i64, |dot| self.index(dot) as i64);
            if oleft < left {
                break;
            }
            if oleft == left {
                if oright < right {
                    scanning = true;
                } else if oright == right {
                    if id.replica < other.id.replica {
                        break;
                    }
                    scanning = false;
                } else {
                    scanning = false;
                }
            }
            i += 1;
        }
        self.items.insert(
            dest as usize,
            Item {
                id,
                origin_left: left_origin,
                origin_right: right_origin,
                ch: c,
                deleted: false,
            },
        );
    }

    fn apply(&mut self, op: &Op) {
        match &op.body {
            Body::Insert {
                origin_left,
                origin_right,
                text,
            } => {
                let mut left = *origin_left;
                for (k, c) in text.chars().enumerate() {
                    let id = op.id.plus(k as u64);
                    self.integrate(id, left, *origin_right, c);
                    left = Some(id);
                }
            }
            Body::Delete { targets } => {
                for span in targets {
                    for k in 0..span.len {
                        let i = self.index(span.start.plus(k));
                        self.items[i].deleted = true;
                    }
                }
            }
        }
    }

    fn text(&self) -> String {
        self.items
            .iter()
            .filter(|item| !item.deleted)
            .map(|item| item.ch)
            .collect()
    }
}

fn reference_text(doc: &Doc) -> String {
    let mut reference = Reference::default();
    for op in doc.history() {
        reference.apply(op);
    }
    reference.text()
}

fn random_text(rng: &mut SmallRng) -> String {
    let alphabet = ['a', 'b', 'c', 'x', 'y', 'é', '🦀', ' '];
    (0..rng.random_range(1..=4))
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

/// One local edit at a random place: mostly typing, some deletions.
fn random_edit(doc: &mut Doc, rng: &mut SmallRng) -> Option<Op> {
    let len = doc.len();
    if len > 0 && rng.random_bool(0.3) {
        let pos = rng.random_range(0..len);
        let count = rng.random_range(1..=(len - pos).min(5));
        doc.delete(pos, count).unwrap()
    } else {
        let pos = rng.random_range(0..=len);
        doc.insert(pos, &random_text(rng)).unwrap()
    }
}

/// Note in `intent` where the insertion `op`, just made on `doc`, put its own characters.
fn record_intent(doc: &Doc, intent: &mut Intent, op: &Op) {
    if let Body::Insert { origin_left, .. } = &op.body {
        let after = doc.last_of_at_or_before(op.id.replica, *origin_left);
        intent.typed(after.map(|d| d.seq), op.id.seq, op.len());
    }
}

/// `replicas` replicas, `steps` random steps (edits and deliveries in random order, with
/// duplicates), then everything delivered; returns the replicas and, per replica, the order
/// it typed its own characters in.
fn fuzz(seed: u64, replicas: usize, steps: usize) -> (Vec<Doc>, Vec<Intent>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Replica ids out of order with their index, so ties are not decided by creation order.
    let mut docs: Vec<Doc> = (0..replicas)
        .map(|i| {
            Doc::new(ReplicaId(
                (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed,
            ))
        })
        .collect();
    let mut inboxes: Vec<Vec<Op>> = vec![Vec::new(); replicas];
    let mut intents = vec![Intent::default(); replicas];
    for _ in 0..steps {
        let r = rng.random_range(0..replicas);
        if rng.random_bool(0.4) {
            if let Some(op) = random_edit(&mut docs[r], &mut rng) {
                record_intent(&docs[r], &mut intents[r], &op);
                for (other, inbox) in inboxes.iter_mut().enumerate() {
                    if other != r {
                        inbox.push(op.clone());
                    }
                }
            }
        } else if !inboxes[r].is_empty() {
            let i = rng.random_range(0..inboxes[r].len());
            // Sometimes delivered and kept (a duplicate to come), usually taken.
            let op = if rng.random_bool(0.1) {
                inboxes[r][i].clone()
            } else {
                inboxes[r].swap_remove(i)
            };
            docs[r].apply(op).unwrap();
        }
    }
    for r in 0..replicas {
        while !inboxes[r].is_empty() {
            let i = rng.random_range(0..inboxes[r].len());
            let op = inboxes[r].swap_remove(i);
            docs[r].apply(op).unwrap();
        }
    }
    (docs, intents)
}

/// Intention preserved: in every replica, each replica's characters stand in the order it
/// typed them.
fn assert_intentions(seed: u64, docs: &[Doc], intents: &[Intent]) {
    for doc in docs {
        let orders = doc.orders();
        for (typist, intent) in docs.iter().zip(intents) {
            let want = intent.order();
            if want.chars() == 0 {
                continue;
            }
            let got = &orders[&typist.replica()];
            assert_eq!(
                (got.chars(), got.digest()),
                (want.chars(), want.digest()),
                "seed {seed}: {}'s characters out of the order it typed them in",
                typist.replica()
            );
        }
    }
}

#[test]
fn replicas_converge_under_random_order_duplicates_and_delay() {
    for seed in 0..60 {
        let (docs, intents) = fuzz(seed, 2 + (seed as usize % 4), 400);
        assert_intentions(seed, &docs, &intents);
        let text = docs[0].text();
        for doc in &docs {
            assert_eq!(doc.text(), text, "seed {seed}: replicas differ");
            assert_eq!(doc.version(), docs[0].version(), "seed {seed}");
            assert_eq!(doc.pending(), 0, "seed {seed}");
            assert_eq!(
                reference_text(doc),
                text,
                "seed {seed}: runs disagree with the reference"
            );
        }
    }
}

#[test]
fn a_long_seeded_run_converges() {
    let (docs, intents) = fuzz(0x5eed, 5, 6000);
    assert_intentions(0x5eed, &docs, &intents);
    let text = docs[0].text();
    assert!(
        text.chars().count() > 100,
        "the run should build a real document"
    );
    for doc in &docs {
        assert_eq!(doc.text(), text);
        assert_eq!(reference_text(doc), text);
    }
}

fn type_forwards(doc: &mut Doc, at: usize, text: &str) -> Vec<Op> {
    text.chars()
        .enumerate()
        .map(|(k, c)| doc.insert(at + k, &c.to_string()).unwrap().unwrap())
        .collect()
}

fn type_backwards(doc: &mut Doc, at: usize, text: &str) -> Vec<Op> {
    text.chars()
        .rev()
        .map(|c| doc.insert(at, &c.to_string()).unwrap().unwrap())
        .collect()
}

fn exchange(a: &mut Doc, a_ops: Vec<Op>, b: &mut Doc, b_ops: Vec<Op>) {
    for op in b_ops {
        a.apply(op).unwrap();
    }
    for op in a_ops {
        b.apply(op).unwrap();
    }
    assert_eq!(a.text(), b.text());
}

#[test]
fn concurrent_typing_at_one_place_does_not_interleave() {
    for (forwards_a, forwards_b) in [(true, true), (false, false), (true, false), (false, true)] {
        let mut a = Doc::new(ReplicaId(1));
        let mut b = Doc::new(ReplicaId(2));
        let base = a.insert(0, "[]").unwrap().unwrap();
        b.apply(base).unwrap();
        let a_ops = if forwards_a {
            type_forwards(&mut a, 1, "hello")
        } else {
            type_backwards(&mut a, 1, "hello")
        };
        let b_ops = if forwards_b {
            type_forwards(&mut b, 1, "WORLD")
        } else {
            type_backwards(&mut b, 1, "WORLD")
        };
        exchange(&mut a, a_ops, &mut b, b_ops);
        let text = a.text();
        assert!(
            text == "[helloWORLD]" || text == "[WORLDhello]",
            "forwards {forwards_a}/{forwards_b}: {text}"
        );
    }
}

#[test]
fn typing_runs_are_stored_as_runs() {
    let mut a = Doc::new(ReplicaId(1));
    type_forwards(&mut a, 0, "a sentence typed one key at a time");
    assert_eq!(a.history().len(), 1, "one operation in the history");
    assert_eq!(a.runs(), 1, "one run in the sequence");
}

#[test]
fn a_delta_brings_a_replica_up_to_date_and_no_further() {
    let (docs, _) = fuzz(7, 3, 300);
    let (a, b) = (&docs[0], &docs[1]);
    let mut late = Doc::new(ReplicaId(99));
    let half = a.at(&a.version().iter().map(|(r, n)| (r, n / 2)).collect());
    // Half of every replica's operations is not necessarily a version a passed through; when
    // it is, the late replica starts there, otherwise from nothing.
    if let Ok(half) = half {
        for op in half.history() {
            late.apply(op.clone()).unwrap();
        }
    }
    let delta = a.ops_since(late.version());
    let all: u64 = a.history().iter().map(Op::len).sum();
    let sent: u64 = delta.iter().map(Op::len).sum();
    assert_eq!(
        sent,
        all - late.version().total(),
        "exactly the missing units"
    );
    for op in delta {
        assert_ne!(late.apply(op).unwrap(), Applied::Duplicate);
    }
    assert_eq!(late.text(), a.text());
    assert_eq!(late.text(), b.text());
    assert!(a.ops_since(a.version()).is_empty());
}

#[test]
fn the_document_at_a_past_version_is_what_it_was() {
    let mut rng = SmallRng::seed_from_u64(3);
    let mut a = Doc::new(ReplicaId(1));
    let mut b = Doc::new(ReplicaId(2));
    let mut seen = Vec::new();
    for step in 0..200 {
        let (doc, other) = if step % 3 == 0 {
            (&mut b, &mut a)
        } else {
            (&mut a, &mut b)
        };
        if let Some(op) = random_edit(doc, &mut rng) {
            other.apply(op).unwrap();
        }
        seen.push((a.version().clone(), a.text()));
    }
    for (version, text) in seen.iter().step_by(17) {
        assert_eq!(&a.at(version).unwrap().text(), text);
    }
    let ahead: VersionVector = [(ReplicaId(1), 10_000)].into_iter().collect();
    assert!(a.at(&ahead).is_err());
}

#[test]
fn operations_out_of_causal_order_wait_for_their_history() {
    let mut a = Doc::new(ReplicaId(1));
    let first = a.insert(0, "abc").unwrap().unwrap();
    let second = a.insert(1, "X").unwrap().unwrap();
    let third = a.delete(0, 1).unwrap().unwrap();
    let mut b = Doc::new(ReplicaId(2));
    assert_eq!(b.apply(third.clone()).unwrap(), Applied::Pending);
    assert_eq!(b.apply(second).unwrap(), Applied::Pending);
    assert_eq!(b.text(), "");
    assert_eq!(b.apply(first.clone()).unwrap(), Applied::Integrated);
    assert_eq!(b.pending(), 0);
    assert_eq!(b.text(), a.text());
    assert_eq!(b.apply(first).unwrap(), Applied::Duplicate);
    assert_eq!(b.apply(third).unwrap(), Applied::Duplicate);
}

#[test]
fn causally_impossible_operations_are_refused_and_change_nothing() {
    let mut a = Doc::new(ReplicaId(1));
    let base = a.insert(0, "abc").unwrap().unwrap();
    let mut b = Doc::new(ReplicaId(2));
    b.apply(base.clone()).unwrap();
    let before = (b.text(), b.version().clone());
    let parents = Frontier::from_dots(vec![base.last()]);

    // A left origin nobody made.
    let ghost = Dot::new(ReplicaId(1), 50);
    let forged = Op::insert(
        Dot::new(ReplicaId(3), 0),
        parents.clone(),
        Some(ghost),
        None,
        "x".into(),
    );
    assert!(matches!(
        b.apply(forged),
        Err(OpError::CausallyImpossible {
            what: "left origin",
            ..
        })
    ));
    // Origins the wrong way round.
    let backwards = Op::insert(
        Dot::new(ReplicaId(3), 0),
        parents.clone(),
        Some(base.id.plus(2)),
        Some(base.id),
        "x".into(),
    );
    assert!(matches!(
        b.apply(backwards),
        Err(OpError::OriginsOutOfOrder { .. })
    ));
    // Deleting characters that do not exist.
    let delete = Op::delete(
        Dot::new(ReplicaId(3), 0),
        parents.clone(),
        vec![Span {
            start: base.id.plus(1),
            len: 5,
        }],
    );
    assert!(matches!(
        b.apply(delete),
        Err(OpError::CausallyImpossible {
            what: "deleted character",
            ..
        })
    ));
    // A parent at or after the operation itself: would wait forever.
    let circular = Op::insert(
        Dot::new(ReplicaId(3), 4),
        Frontier::from_dots(vec![Dot::new(ReplicaId(3), 4)]),
        None,
        None,
        "x".into(),
    );
    assert!(matches!(
        b.apply(circular),
        Err(OpError::ParentNotBefore { .. })
    ));
    assert_eq!((b.text(), b.version().clone()), before);
    // And the document still takes good operations.
    let good = a.insert(3, "d").unwrap().unwrap();
    b.apply(good).unwrap();
    assert_eq!(b.text(), "abcd");
}

#[test]
fn local_edits_outside_the_document_are_refused() {
    let mut a = Doc::new(ReplicaId(1));
    a.insert(0, "abc").unwrap();
    assert!(a.insert(4, "x").is_err());
    assert!(a.delete(2, 2).is_err());
    assert!(a.delete(usize::MAX, 2).is_err());
    assert_eq!(a.text(), "abc");
    assert_eq!(a.insert(3, "").unwrap(), None);
}
