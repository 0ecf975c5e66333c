//! Where a remote insertion goes: FugueMax, the rule that makes replicas converge without
//! interleaving concurrent insertions.
//!
//! Weidner, Gentle and Kleppmann, "The Art of the Fugue: Minimizing Interleaving in
//! Collaborative Text Editing" (2023), define Fugue and FugueMax and prove FugueMax
//! *maximally non-interleaving*: two replicas typing at the same place concurrently, forwards
//! or backwards, end up with one's text wholly before the other's, never "hweolrllod". They
//! also show FugueMax equal to Gentle's YjsMod (Yjs's YATA with a changed tie rule), which is
//! the form written here because it needs only each character's two origins.
//!
//! A new character `x` with origins `L` (left) and `R` (right) goes somewhere between them.
//! Scanning the characters `o` between `L` and `R`, comparing *their* origins to `x`'s:
//! - `o` hangs off something left of `L`: `o` belongs to an enclosing insertion; `x` goes
//!   before it;
//! - `o` hangs off `L` too: if `o`'s right origin is left of `R`, `o` may belong before or
//!   after `x` depending on what follows ("scanning"); if it is `R` as well, the two are true
//!   siblings and the lower replica id goes first; if it is right of `R`, `x` goes after `o`;
//! - `o` hangs off something right of `L`: it is inside a sibling's subtree; skip it.
//!
//! The rule runs per character, but a stored run's later characters each hang off the one
//! before, so the scan never stops inside a run: runs are compared by their first character
//! only, and a whole run is integrated at once.
//!
//! Remaining anomaly (the paper's, not ours): an insertion whose neighbours were both deleted
//! concurrently can land next to unrelated text, as in every CRDT of this family.

use crate::causal::Dot;
use crate::sequence::{NewRun, Pos, Sequence};

/// An origin as a place to compare: before everything, a character, or after everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Anchor {
    Start,
    At(Pos),
    End,
}

fn left_anchor(seq: &Sequence, origin: Option<Dot>) -> Anchor {
    origin.map_or(Anchor::Start, |dot| {
        Anchor::At(
            seq.locate(dot)
                .expect("origins are held before an insertion is integrated"),
        )
    })
}

fn right_anchor(seq: &Sequence, origin: Option<Dot>) -> Anchor {
    origin.map_or(Anchor::End, |dot| {
        Anchor::At(
            seq.locate(dot)
                .expect("origins are held before an insertion is integrated"),
        )
    })
}

/// Insert `run` (whose origins the sequence holds, and whose dots it does not) where FugueMax
/// puts it.
pub(crate) fn integrate(seq: &mut Sequence, run: NewRun) {
    let start = match run.origin_left {
        None => crate::sequence::Place::START,
        Some(dot) => seq.place_after(dot).expect("left origin held"),
    };
    if let Some(dot) = run.origin_right {
        // Split so the right origin starts a run: the scan stops at run boundaries. The left
        // origin comes first in the document, so this split does not move `start`.
        seq.place_before(dot).expect("right origin held");
    }
    let left = left_anchor(seq, run.origin_left);
    let right = right_anchor(seq, run.origin_right);

    let mut dest = start;
    let mut at = start;
    let mut scanning = false;
    while let Some((place, other)) = seq.run_at(at) {
        if !scanning {
            dest = place;
        }
        if Some(other.id) == run.origin_right {
            break;
        }
        let other_left = left_anchor(seq, other.origin_left());
        if other_left < left {
            break;
        }
        if other_left == left {
            let other_right = right_anchor(seq, other.origin_right());
            if other_right < right {
                scanning = true;
            } else if other_right == right {
                if run.id.replica < other.id.replica {
                    break;
                }
                scanning = false;
            } else {
                scanning = false;
            }
        }
        at = place.next();
    }
    if !scanning && seq.run_at(at).is_none() {
        dest = at;
    }
    seq.insert(dest, run);
}
