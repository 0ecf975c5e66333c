//! Operations: what replicas send each other and what a document's history holds.
//!
//! An operation is a run of units by one replica: an insertion of `n` characters typed left to
//! right (dots `id .. id+n`), or the deletion of `n` characters (dots `id .. id+n`, one per
//! deleted character, so deletes count in version vectors like inserts do). Run-length
//! encoding is why typing is cheap: a replica that types a sentence makes one operation, not
//! one per key (diamond-types' observation). A run is defined unit by unit, so any suffix of
//! it is an operation too: a receiver that already holds a prefix takes the rest
//! ([`Op::suffix_from`]).
//!
//! An insertion names its neighbours when it was made: `origin_left`, the character just
//! before the insertion point (deleted or not; `None` at the start), and `origin_right`, the
//! character just after (`None` at the end). The first character has those origins; each
//! later one has the character before it as its left origin and the same right origin.
//! A deletion names the characters it removes, as runs of consecutive dots ([`Span`]).

use crate::causal::{Dot, Frontier};

/// `len` consecutive dots of one replica, from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub start: Dot,
    pub len: u64,
}

impl Span {
    pub fn end(&self) -> Dot {
        self.start.plus(self.len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Body {
    Insert {
        origin_left: Option<Dot>,
        origin_right: Option<Dot>,
        text: String,
    },
    Delete {
        targets: Vec<Span>,
    },
}

/// One operation: `len` units by `id.replica` from `id.seq`, made when its replica's history
/// was `parents`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Op {
    pub id: Dot,
    pub parents: Frontier,
    pub body: Body,
    /// Units: characters inserted or deleted. Kept beside the body because counting the
    /// characters of a long insertion is not free.
    len: u64,
}

impl Op {
    pub fn insert(
        id: Dot,
        parents: Frontier,
        origin_left: Option<Dot>,
        origin_right: Option<Dot>,
        text: String,
    ) -> Op {
        let len = text.chars().count() as u64;
        Op {
            id,
            parents,
            body: Body::Insert {
                origin_left,
                origin_right,
                text,
            },
            len,
        }
    }

    pub fn delete(id: Dot, parents: Frontier, targets: Vec<Span>) -> Op {
        let len = targets.iter().map(|span| span.len).sum();
        Op {
            id,
            parents,
            body: Body::Delete { targets },
            len,
        }
    }

    /// Characters inserted or deleted: how many dots the operation takes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The dot after this operation's last.
    pub fn end(&self) -> Dot {
        self.id.plus(self.len)
    }

    pub fn last(&self) -> Dot {
        self.id.plus(self.len - 1)
    }

    pub fn kind(&self) -> &'static str {
        match self.body {
            Body::Insert { .. } => "insert",
            Body::Delete { .. } => "delete",
        }
    }

    /// The units from `skip` on, as an operation of its own (its parent is the unit before).
    pub fn suffix_from(&self, skip: u64) -> Op {
        if skip == 0 {
            return self.clone();
        }
        assert!(skip < self.len, "a suffix must keep at least one unit");
        let id = self.id.plus(skip);
        let before = Dot::new(id.replica, id.seq - 1);
        let parents = Frontier::from_dots(vec![before]);
        match &self.body {
            Body::Insert {
                origin_right, text, ..
            } => {
                let at = byte_offset(text, skip as usize);
                Op::insert(
                    id,
                    parents,
                    Some(before),
                    *origin_right,
                    text[at..].to_string(),
                )
            }
            Body::Delete { targets } => {
                Op::delete(id, parents, skip_spans(targets, skip, u64::MAX))
            }
        }
    }

    /// The first `keep` units, as an operation of its own.
    pub fn prefix(&self, keep: u64) -> Op {
        if keep >= self.len {
            return self.clone();
        }
        match &self.body {
            Body::Insert {
                origin_left,
                origin_right,
                text,
            } => Op::insert(
                self.id,
                self.parents.clone(),
                *origin_left,
                *origin_right,
                text[..byte_offset(text, keep as usize)].to_string(),
            ),
            Body::Delete { targets } => {
                Op::delete(self.id, self.parents.clone(), skip_spans(targets, 0, keep))
            }
        }
    }

    /// Append `next` (the same replica's following operation, made right after this one with
    /// nothing in between) if the two read as one run; whether it did.
    pub fn absorb(&mut self, next: &Op) -> bool {
        if next.id != self.end() || !next.parents.is_only(self.last()) {
            return false;
        }
        match (&mut self.body, &next.body) {
            (
                Body::Insert {
                    origin_right, text, ..
                },
                Body::Insert {
                    origin_left: next_left,
                    origin_right: next_right,
                    text: next_text,
                },
            ) if *next_left == Some(self.id.plus(self.len - 1)) && next_right == origin_right => {
                text.push_str(next_text);
                self.len += next.len;
                true
            }
            (
                Body::Delete { targets },
                Body::Delete {
                    targets: next_targets,
                },
            ) => {
                for &span in next_targets {
                    push_span(targets, span);
                }
                self.len += next.len;
                true
            }
            _ => false,
        }
    }
}

/// Append `span` to `spans`, extending the last one when they are consecutive.
pub(crate) fn push_span(spans: &mut Vec<Span>, span: Span) {
    match spans.last_mut() {
        Some(last) if last.end() == span.start => last.len += span.len,
        _ => spans.push(span),
    }
}

/// The units `skip .. skip+keep` of a list of spans.
fn skip_spans(spans: &[Span], mut skip: u64, mut keep: u64) -> Vec<Span> {
    let mut out = Vec::new();
    for span in spans {
        if keep == 0 {
            break;
        }
        if skip >= span.len {
            skip -= span.len;
            continue;
        }
        let len = (span.len - skip).min(keep);
        out.push(Span {
            start: span.start.plus(skip),
            len,
        });
        keep -= len;
        skip = 0;
    }
    out
}

/// The byte offset of the `chars`-th character of `text` (its length past the end).
pub(crate) fn byte_offset(text: &str, chars: usize) -> usize {
    if text.is_ascii() {
        return chars.min(text.len());
    }
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(at, _)| at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::ReplicaId;

    const A: ReplicaId = ReplicaId(7);

    fn dot(seq: u64) -> Dot {
        Dot::new(A, seq)
    }

    #[test]
    fn a_suffix_of_an_insertion_hangs_off_the_unit_before_it() {
        let op = Op::insert(dot(10), Frontier::new(), None, Some(dot(3)), "héllo".into());
        let rest = op.suffix_from(2);
        assert_eq!(rest.id, dot(12));
        assert_eq!(rest.len(), 3);
        assert!(rest.parents.is_only(dot(11)));
        assert_eq!(
            rest.body,
            Body::Insert {
                origin_left: Some(dot(11)),
                origin_right: Some(dot(3)),
                text: "llo".into()
            }
        );
        assert_eq!(
            op.prefix(2).body,
            Body::Insert {
                origin_left: None,
                origin_right: Some(dot(3)),
                text: "hé".into()
            }
        );
    }

    #[test]
    fn a_suffix_of_a_deletion_skips_whole_and_partial_spans() {
        let op = Op::delete(
            dot(0),
            Frontier::new(),
            vec![
                Span {
                    start: Dot::new(ReplicaId(1), 5),
                    len: 2,
                },
                Span {
                    start: Dot::new(ReplicaId(2), 0),
                    len: 3,
                },
            ],
        );
        assert_eq!(op.len(), 5);
        assert_eq!(
            op.suffix_from(3).body,
            Body::Delete {
                targets: vec![Span {
                    start: Dot::new(ReplicaId(2), 1),
                    len: 2
                }]
            }
        );
        assert_eq!(
            op.prefix(1).body,
            Body::Delete {
                targets: vec![Span {
                    start: Dot::new(ReplicaId(1), 5),
                    len: 1
                }]
            }
        );
    }

    #[test]
    fn typing_absorbs_into_one_run_and_a_jump_does_not() {
        let mut op = Op::insert(dot(0), Frontier::new(), None, None, "ab".into());
        let next = Op::insert(
            dot(2),
            Frontier::from_dots(vec![dot(1)]),
            Some(dot(1)),
            None,
            "c".into(),
        );
        assert!(op.absorb(&next));
        assert_eq!(op.len(), 3);
        let elsewhere = Op::insert(
            dot(3),
            Frontier::from_dots(vec![dot(2)]),
            Some(dot(0)),
            Some(dot(1)),
            "x".into(),
        );
        assert!(!op.absorb(&elsewhere));
        let deletion = Op::delete(
            dot(3),
            Frontier::from_dots(vec![dot(2)]),
            vec![Span {
                start: dot(2),
                len: 1,
            }],
        );
        assert!(!op.absorb(&deletion));
    }
}
