//! A replica of one text document: local edits, remote operations in any order, the history,
//! deltas for anti-entropy and the document as it was at any past version.
//!
//! Operations are applied in causal order: one whose parents (or earlier dots of its own
//! replica) are not all held waits in `pending` until they are, so a replica can receive
//! operations in any order, twice, or partly (a run it holds a prefix of), and still apply
//! each unit exactly once after everything it was made on top of. That, and FugueMax placing
//! concurrent insertions the same way everywhere ([`crate::fugue`]), is why replicas that hold
//! the same operations hold the same text: convergence, checked by the fuzz tests below.
//!
//! The history is the operations in the order they were applied here (a causal order),
//! run-length merged where one continues another.

use crate::causal::{Dot, Frontier, ReplicaId, VersionVector};
use crate::error::{EditError, OpError, VersionError};
use crate::fugue;
use crate::op::{Body, Op};
use crate::sequence::{NewRun, Sequence};

/// The most characters one operation may carry (a paste of a large file is several).
pub const MAX_OP_CHARS: u64 = 1 << 20;
/// The most operations waiting for missing history before more are refused.
pub const MAX_PENDING: usize = 100_000;
/// How many refusals of waiting operations are kept to report.
const MAX_REFUSED: usize = 100;

/// What applying a remote operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied (with any waiting operations it unblocked).
    Integrated,
    /// Everything in it was already held.
    Duplicate,
    /// Waits for history not held yet.
    Pending,
}

#[derive(Debug)]
pub struct Doc {
    replica: ReplicaId,
    seq: Sequence,
    log: Vec<Op>,
    version: VersionVector,
    frontier: Frontier,
    pending: Vec<Op>,
    /// Operations that waited and were refused when their history arrived.
    refused: Vec<OpError>,
}

impl Doc {
    pub fn new(replica: ReplicaId) -> Doc {
        Doc {
            replica,
            seq: Sequence::default(),
            log: Vec::new(),
            version: VersionVector::new(),
            frontier: Frontier::new(),
            pending: Vec::new(),
            refused: Vec::new(),
        }
    }

    pub fn replica(&self) -> ReplicaId {
        self.replica
    }

    pub fn text(&self) -> String {
        self.seq.text()
    }

    /// Visible characters.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn version(&self) -> &VersionVector {
        &self.version
    }

    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }

    /// The operations applied here, in the order applied (causal), merged into runs.
    pub fn history(&self) -> &[Op] {
        &self.log
    }

    /// Operations waiting for history not held yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Operations that waited, then were refused once their history arrived.
    pub fn refused(&self) -> &[OpError] {
        &self.refused
    }

    /// The last character of `replica` at or before the character `dot` in the document
    /// (deleted or not); `None` for the start.
    pub fn last_of_at_or_before(&self, replica: ReplicaId, dot: Option<Dot>) -> Option<Dot> {
        self.seq.last_of_at_or_before(replica, dot?)
    }

    /// Per replica, the order its characters stand in (tombstones included), as an
    /// [`Order`](crate::intent::Order) digest: what an editor's record of its own typing is
    /// compared with.
    pub fn orders(&self) -> std::collections::BTreeMap<ReplicaId, crate::intent::Order> {
        let mut orders = std::collections::BTreeMap::<ReplicaId, crate::intent::Order>::new();
        for run in self.seq.iter() {
            orders
                .entry(run.id.replica)
                .or_default()
                .push(run.id.seq, run.len);
        }
        orders
    }

    /// Runs the sequence stores, tombstones included (its size).
    pub fn runs(&self) -> usize {
        self.seq.runs()
    }

    /// Insert `text` before the `pos`-th character (chars, not bytes); the operation to send.
    pub fn insert(&mut self, pos: usize, text: &str) -> Result<Option<Op>, EditError> {
        if pos > self.len() {
            return Err(EditError::PositionOutOfRange {
                pos,
                len: self.len(),
            });
        }
        if text.is_empty() {
            return Ok(None);
        }
        let len = text.chars().count() as u64;
        if len > MAX_OP_CHARS {
            return Err(EditError::TooLarge {
                len,
                limit: MAX_OP_CHARS,
            });
        }
        let place = self.seq.place_at_visible(pos);
        let origin_left = self.seq.char_before(place);
        let origin_right = self.seq.char_at(place);
        let id = Dot::new(self.replica, self.version.get(self.replica));
        let op = Op::insert(
            id,
            self.frontier.clone(),
            origin_left,
            origin_right,
            text.to_string(),
        );
        self.seq.insert(
            place,
            NewRun {
                id,
                len,
                origin_left,
                origin_right,
                text,
            },
        );
        self.record(&op);
        Ok(Some(op))
    }

    /// Delete `count` characters from the `pos`-th; the operation to send.
    pub fn delete(&mut self, pos: usize, count: usize) -> Result<Option<Op>, EditError> {
        if pos.checked_add(count).is_none_or(|end| end > self.len()) {
            return Err(EditError::RangeOutOfRange {
                pos,
                count,
                len: self.len(),
            });
        }
        if count == 0 {
            return Ok(None);
        }
        let targets = self.seq.delete_visible(pos, count);
        let id = Dot::new(self.replica, self.version.get(self.replica));
        let op = Op::delete(id, self.frontier.clone(), targets);
        self.record(&op);
        Ok(Some(op))
    }

    /// Apply an operation from another replica (or this one's, echoed back), in whatever
    /// order it arrives. A refused operation changes nothing.
    pub fn apply(&mut self, op: Op) -> Result<Applied, OpError> {
        check_shape(&op)?;
        if op.end().seq <= self.version.get(op.id.replica) {
            return Ok(Applied::Duplicate);
        }
        if !self.ready(&op) {
            if self.pending.len() >= MAX_PENDING {
                return Err(OpError::TooManyPending {
                    id: op.id,
                    count: self.pending.len(),
                    limit: MAX_PENDING,
                });
            }
            if !self.pending.contains(&op) {
                self.pending.push(op);
            }
            return Ok(Applied::Pending);
        }
        self.integrate(op)?;
        self.drain_pending();
        Ok(Applied::Integrated)
    }

    /// The operations this document holds beyond `version`: what a replica at `version`
    /// needs to catch up (a delta, not the whole state).
    pub fn ops_since(&self, version: &VersionVector) -> Vec<Op> {
        self.log
            .iter()
            .filter_map(|op| {
                let held = version.get(op.id.replica);
                if op.end().seq <= held {
                    None
                } else if op.id.seq >= held {
                    Some(op.clone())
                } else {
                    Some(op.suffix_from(held - op.id.seq))
                }
            })
            .collect()
    }

    /// The document as it was at `version` (which this document must have passed through).
    pub fn at(&self, version: &VersionVector) -> Result<Doc, VersionError> {
        if !self.version.includes(version) {
            return Err(VersionError::NotHeld {
                version: version.to_string(),
                held: self.version.to_string(),
            });
        }
        let mut past = Doc::new(self.replica);
        for op in &self.log {
            let keep = version.get(op.id.replica).saturating_sub(op.id.seq);
            if keep == 0 {
                continue;
            }
            let op = op.prefix(keep);
            let id = op.id;
            match past.apply(op) {
                Ok(Applied::Integrated) => {}
                _ => {
                    return Err(VersionError::NotCausallyClosed {
                        version: version.to_string(),
                        id,
                    });
                }
            }
        }
        Ok(past)
    }

    fn ready(&self, op: &Op) -> bool {
        op.id.seq <= self.version.get(op.id.replica)
            && op
                .parents
                .dots()
                .iter()
                .all(|&parent| self.version.contains(parent))
    }

    /// Apply a ready operation: the part not yet held, if everything it names is held.
    fn integrate(&mut self, op: Op) -> Result<(), OpError> {
        let held = self.version.get(op.id.replica);
        let op = if op.id.seq < held {
            op.suffix_from(held - op.id.seq)
        } else {
            op
        };
        self.check_references(&op)?;
        match &op.body {
            Body::Insert {
                origin_left,
                origin_right,
                text,
            } => fugue::integrate(
                &mut self.seq,
                NewRun {
                    id: op.id,
                    len: op.len(),
                    origin_left: *origin_left,
                    origin_right: *origin_right,
                    text,
                },
            ),
            Body::Delete { targets } => {
                for &span in targets {
                    self.seq.delete_span(span);
                }
            }
        }
        self.record(&op);
        Ok(())
    }

    /// Everything an operation names (origins, deleted characters) must be held: it was made
    /// on a history that held them.
    fn check_references(&self, op: &Op) -> Result<(), OpError> {
        let impossible = |missing, what| OpError::CausallyImpossible {
            id: op.id,
            missing,
            what,
        };
        match &op.body {
            Body::Insert {
                origin_left,
                origin_right,
                ..
            } => {
                let left = match origin_left {
                    Some(dot) => Some(
                        self.seq
                            .locate(*dot)
                            .ok_or(impossible(*dot, "left origin"))?,
                    ),
                    None => None,
                };
                let right = match origin_right {
                    Some(dot) => Some(
                        self.seq
                            .locate(*dot)
                            .ok_or(impossible(*dot, "right origin"))?,
                    ),
                    None => None,
                };
                if let (Some(l), Some(r)) = (left, right)
                    && l >= r
                {
                    return Err(OpError::OriginsOutOfOrder {
                        id: op.id,
                        left: origin_left.unwrap(),
                        right: origin_right.unwrap(),
                    });
                }
            }
            Body::Delete { targets } => {
                if let Some(span) = targets.iter().find(|span| !self.seq.holds(**span)) {
                    return Err(impossible(span.start, "deleted character"));
                }
            }
        }
        Ok(())
    }

    /// Note an applied operation in the version, the frontier and the history.
    fn record(&mut self, op: &Op) {
        self.version.advance(op.id.replica, op.end().seq);
        self.frontier.advance(op.parents.dots(), op.last());
        let absorbed = match self.log.last_mut() {
            Some(last) if last.id.replica == op.id.replica => last.absorb(op),
            _ => false,
        };
        if !absorbed {
            self.log.push(op.clone());
        }
    }

    /// Apply every waiting operation that has become ready, until none has.
    fn drain_pending(&mut self) {
        loop {
            let mut progressed = false;
            let mut i = 0;
            while i < self.pending.len() {
                let op = &self.pending[i];
                if op.end().seq <= self.version.get(op.id.replica) {
                    self.pending.swap_remove(i);
                    continue;
                }
                if !self.ready(op) {
                    i += 1;
                    continue;
                }
                let op = self.pending.swap_remove(i);
                if let Err(error) = self.integrate(op) {
                    if self.refused.len() == MAX_REFUSED {
                        self.refused.remove(0);
                    }
                    self.refused.push(error);
                }
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }
}

/// What can be checked of an operation without the document.
fn check_shape(op: &Op) -> Result<(), OpError> {
    if op.is_empty() {
        return Err(OpError::Empty { id: op.id });
    }
    if op.len() > MAX_OP_CHARS {
        return Err(OpError::TooLarge {
            id: op.id,
            len: op.len(),
            limit: MAX_OP_CHARS,
        });
    }
    if let Some(parent) = op
        .parents
        .dots()
        .iter()
        .find(|parent| parent.replica == op.id.replica && parent.seq >= op.id.seq)
    {
        return Err(OpError::ParentNotBefore {
            id: op.id,
            replica: parent.replica,
        });
    }
    Ok(())
}
