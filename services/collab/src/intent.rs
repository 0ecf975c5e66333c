//! Intention preservation, checked: the order an editor put its own characters in, recorded
//! apart from the CRDT as it types, so that any replica can be compared with it afterwards.
//!
//! When a person types, each new stretch of text goes right after some character of their own
//! (or at the start, before all of them). Whatever the others do concurrently, a correct
//! sequence CRDT keeps those relations: the person's characters stand, in every replica, in
//! the order they were put in (deleted ones as tombstones, where they were). An editor keeps
//! that order as [`Intent`] (a list of runs of its own sequence numbers, updated on each local
//! insertion from nothing but "after which of my characters"); every replica can compute the
//! order a replica's characters stand in ([`crate::Doc::orders`]); both reduce to an
//! [`Order`] digest, and the lab's `collab_intention` check compares the editors' with the
//! servers'.

use distlab_runtime::hash::fnv1a;

/// A replica's characters in some order, as maximal runs of consecutive sequence numbers
/// (however a structure split them), reduced to a digest.
#[derive(Debug, Clone, Default)]
pub struct Order {
    runs: Vec<(u64, u64)>,
    chars: u64,
}

impl Order {
    /// The next `len` characters in order are `start .. start+len`.
    pub fn push(&mut self, start: u64, len: u64) {
        self.chars += len;
        match self.runs.last_mut() {
            Some((last_start, last_len)) if *last_start + *last_len == start => *last_len += len,
            _ => self.runs.push((start, len)),
        }
    }

    /// Characters in the order.
    pub fn chars(&self) -> u64 {
        self.chars
    }

    /// Equal digests, equal orders.
    pub fn digest(&self) -> String {
        let mut bytes = Vec::with_capacity(self.runs.len() * 4);
        for &(start, len) in &self.runs {
            crate::codec::put_varint(&mut bytes, start);
            crate::codec::put_varint(&mut bytes, len);
        }
        format!("{:016x}", fnv1a(bytes.iter().copied()))
    }

    /// As `/status` reports it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "digest": self.digest(), "chars": self.chars })
    }
}

/// The order an editor put its own characters in: runs of its sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct Intent {
    runs: Vec<(u64, u64)>,
    /// The run the last insertion went into (typing goes on there).
    last: usize,
}

impl Intent {
    /// The order a replica's characters stand in now, taken as what was meant: where an
    /// editor restarts from its store, only what it types afterwards is recorded independently.
    pub fn resumed(order: &Order) -> Intent {
        Intent {
            runs: order.runs.clone(),
            last: order.runs.len().saturating_sub(1),
        }
    }

    /// The characters `start .. start+len` were typed right after our own character `after`
    /// (`None`: before all of ours).
    pub fn typed(&mut self, after: Option<u64>, start: u64, len: u64) {
        let at = match after {
            None => 0,
            Some(after) => {
                let run = self.find(after);
                let (run_start, run_len) = self.runs[run];
                let cut = after + 1 - run_start;
                if cut < run_len {
                    self.runs[run] = (run_start, cut);
                    self.runs.insert(run + 1, (after + 1, run_len - cut));
                }
                run + 1
            }
        };
        if at > 0 && self.runs[at - 1].0 + self.runs[at - 1].1 == start {
            self.runs[at - 1].1 += len;
            self.last = at - 1;
        } else {
            self.runs.insert(at, (start, len));
            self.last = at;
        }
    }

    /// The run holding `seq` (typing usually continues the last one).
    fn find(&self, seq: u64) -> usize {
        let holds = |&(start, len): &(u64, u64)| start <= seq && seq < start + len;
        if self.runs.get(self.last).is_some_and(holds) {
            return self.last;
        }
        self.runs
            .iter()
            .position(holds)
            .expect("an editor's own characters are in its intent")
    }

    pub fn order(&self) -> Order {
        let mut order = Order::default();
        for &(start, len) in &self.runs {
            order.push(start, len);
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::ReplicaId;
    use crate::doc::Doc;

    const ME: ReplicaId = ReplicaId(5);

    /// An editor's insert, recorded the way the editor records it.
    fn insert(doc: &mut Doc, intent: &mut Intent, pos: usize, text: &str) -> crate::Op {
        let op = doc.insert(pos, text).unwrap().unwrap();
        let crate::Body::Insert { origin_left, .. } = &op.body else {
            unreachable!()
        };
        let after = doc.last_of_at_or_before(ME, *origin_left).map(|d| d.seq);
        intent.typed(after, op.id.seq, op.len());
        op
    }

    #[test]
    fn the_recorded_order_matches_the_document_through_concurrent_edits() {
        let mut mine = Doc::new(ME);
        let mut other = Doc::new(ReplicaId(9));
        let mut intent = Intent::default();
        let mut ops = vec![insert(&mut mine, &mut intent, 0, "hello world")];
        other.apply(ops[0].clone()).unwrap();
        // The other replica types inside our text and deletes some of it.
        let theirs = [
            other.insert(5, ", dear").unwrap().unwrap(),
            other.delete(0, 2).unwrap().unwrap(),
        ];
        // Meanwhile: typing in the middle, at the start, backwards.
        ops.push(insert(&mut mine, &mut intent, 6, "big "));
        ops.push(insert(&mut mine, &mut intent, 0, ">"));
        for pos in [3, 3, 3] {
            ops.push(insert(&mut mine, &mut intent, pos, "x"));
        }
        for op in theirs.iter().cloned() {
            mine.apply(op).unwrap();
        }
        let end = mine.len();
        ops.push(insert(&mut mine, &mut intent, end, "!"));
        for op in ops {
            other.apply(op).unwrap();
        }
        assert_eq!(mine.text(), other.text());
        let want = intent.order();
        for doc in [&mine, &other] {
            let got = &doc.orders()[&ME];
            assert_eq!(got.chars(), want.chars());
            assert_eq!(got.digest(), want.digest(), "{}", doc.text());
        }
        // A different order digests differently.
        let mut wrong = Intent::default();
        wrong.typed(None, 0, 11);
        wrong.typed(Some(10), 11, 4);
        assert_ne!(wrong.order().digest(), want.digest());
    }
}
