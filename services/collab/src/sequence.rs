//! The ordered list of every character a document ever held, deleted ones kept as tombstones:
//! the structure the sequence CRDT ([`crate::fugue`]) inserts into.
//!
//! Characters are stored as runs ([`Run`]): consecutive dots of one replica that sit next to
//! each other with the same right origin, so a typed sentence is one entry. Runs live in
//! chunks of at most [`MAX_RUNS`], each knowing how many visible characters it holds, so
//!
//! - a visible position is found by walking chunk counts from a cached cursor (edits cluster:
//!   the next edit is usually in the chunk of the last), then runs within one chunk;
//! - a dot is found through a per-replica index from run start to chunk, then within one chunk.
//!
//! That is square-root decomposition rather than a B-tree: simpler to read, and with runs and
//! the cursor it stays close to a tree on real editing traces (`lab bench proj6` measures it).
//!
//! Positions handed out ([`Place`], [`Pos`]) are valid until the next change; every change
//! ends by [`Sequence::settle`]-ing the chunks it touched, which may split them.

use std::collections::BTreeMap;

use crate::causal::{Dot, ReplicaId};
use crate::op::{Span, byte_offset, push_span};

/// Runs per chunk before it is split in two.
pub(crate) const MAX_RUNS: usize = 32;

/// Consecutive characters by one replica: dots `id .. id+len`, the first with the given
/// origins, each later one with the character before it as its left origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub id: Dot,
    pub len: u64,
    /// The origins (meaningful where `flags` says they exist) and whether the run is deleted,
    /// packed: an `Option<Dot>` takes 24 bytes, and every insertion shifts the runs after it
    /// in its chunk.
    left: Dot,
    right: Dot,
    flags: u8,
    /// Its `len` characters: these bytes of the sequence's text arena (kept for tombstones
    /// too). An arena rather than a string per run: a new run, a split and a typed character
    /// then allocate nothing.
    text: TextRange,
}

/// Bytes `start..end` of a [`Sequence`]'s text arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TextRange {
    start: u32,
    end: u32,
}

const HAS_LEFT: u8 = 1;
const HAS_RIGHT: u8 = 2;
const DELETED: u8 = 4;
const NO_DOT: Dot = Dot {
    replica: ReplicaId(0),
    seq: 0,
};

impl Run {
    fn new(
        id: Dot,
        len: u64,
        origin_left: Option<Dot>,
        origin_right: Option<Dot>,
        deleted: bool,
        text: TextRange,
    ) -> Run {
        let flags = if origin_left.is_some() { HAS_LEFT } else { 0 }
            | if origin_right.is_some() { HAS_RIGHT } else { 0 }
            | if deleted { DELETED } else { 0 };
        Run {
            id,
            len,
            left: origin_left.unwrap_or(NO_DOT),
            right: origin_right.unwrap_or(NO_DOT),
            flags,
            text,
        }
    }

    pub fn origin_left(&self) -> Option<Dot> {
        (self.flags & HAS_LEFT != 0).then_some(self.left)
    }

    pub fn origin_right(&self) -> Option<Dot> {
        (self.flags & HAS_RIGHT != 0).then_some(self.right)
    }

    pub fn deleted(&self) -> bool {
        self.flags & DELETED != 0
    }

    fn delete(&mut self) {
        self.flags |= DELETED;
    }

    pub fn last(&self) -> Dot {
        self.id.plus(self.len - 1)
    }

    fn visible(&self) -> usize {
        if self.deleted() { 0 } else { self.len as usize }
    }

    /// Keep the first `at` characters, return the rest as a run of its own.
    fn split_off(&mut self, at: u64, arena: &str) -> Run {
        debug_assert!(at > 0 && at < self.len);
        let text = &arena[self.text.start as usize..self.text.end as usize];
        let cut = self.text.start + byte_offset(text, at as usize) as u32;
        let tail = Run::new(
            self.id.plus(at),
            self.len - at,
            Some(self.id.plus(at - 1)),
            self.origin_right(),
            self.deleted(),
            TextRange {
                start: cut,
                end: self.text.end,
            },
        );
        self.len = at;
        self.text.end = cut;
        tail
    }

    /// Whether `next`, placed right after this run, reads as its continuation (and the run's
    /// text ends the arena, so the next characters extend it there).
    fn continues_with(&self, next: &NewRun, arena: &str) -> bool {
        next.id == self.id.plus(self.len)
            && next.origin_left == Some(self.last())
            && next.origin_right == self.origin_right()
            && !self.deleted()
            && self.text.end as usize == arena.len()
    }
}

/// An insertion about to go in: a run's identity and origins, its text borrowed (typing
/// usually extends the run before it, and then no new text is allocated).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRun<'a> {
    pub id: Dot,
    pub len: u64,
    pub origin_left: Option<Dot>,
    pub origin_right: Option<Dot>,
    pub text: &'a str,
}

impl NewRun<'_> {
    fn into_run(self, arena: &mut String) -> Run {
        Run::new(
            self.id,
            self.len,
            self.origin_left,
            self.origin_right,
            false,
            append(arena, self.text),
        )
    }
}

/// Appends `text` to the arena; where it went.
fn append(arena: &mut String, text: &str) -> TextRange {
    let start = arena.len();
    arena.push_str(text);
    assert!(
        arena.len() <= u32::MAX as usize,
        "a document's text arena is limited to 4 GiB"
    );
    TextRange {
        start: start as u32,
        end: arena.len() as u32,
    }
}

#[derive(Debug)]
struct Chunk {
    /// Stable name, for the dot index (chunks move when one before them splits).
    id: u32,
    runs: Vec<Run>,
    visible: usize,
}

/// A gap between runs: before run `run` of chunk `chunk` (`run` may be the chunk's length:
/// its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub chunk: usize,
    pub run: usize,
}

impl Place {
    pub const START: Place = Place { chunk: 0, run: 0 };

    pub fn next(self) -> Place {
        Place {
            run: self.run + 1,
            ..self
        }
    }
}

/// A character's position, ordered as the document orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    chunk: usize,
    run: usize,
    offset: u64,
}

/// Chunk ids to positions; positions from `stale_from` on are out of date.
#[derive(Debug)]
struct ChunkIndex {
    positions: Vec<u32>,
    stale_from: usize,
}

#[derive(Debug)]
pub(crate) struct Sequence {
    chunks: Vec<Chunk>,
    /// Chunk id to its index in `chunks`, renumbered lazily: a split moves every later chunk,
    /// and typing splits often while only remote operations look characters up.
    chunk_index: std::cell::RefCell<ChunkIndex>,
    /// Per replica, each run's first seq to the id of the chunk holding it.
    runs_by_dot: BTreeMap<ReplicaId, BTreeMap<u64, u32>>,
    visible: usize,
    /// The chunk of the last visible-position lookup and the visible characters before it.
    cursor: (usize, usize),
    /// Every character ever inserted, in the order inserted: runs name their text in it.
    arena: String,
}

impl Default for Sequence {
    fn default() -> Sequence {
        Sequence {
            chunks: vec![Chunk {
                id: 0,
                runs: Vec::new(),
                visible: 0,
            }],
            chunk_index: std::cell::RefCell::new(ChunkIndex {
                positions: vec![0],
                stale_from: 1,
            }),
            runs_by_dot: BTreeMap::new(),
            visible: 0,
            cursor: (0, 0),
            arena: String::new(),
        }
    }
}

impl Sequence {
    /// Visible characters.
    pub fn len(&self) -> usize {
        self.visible
    }

    /// Runs stored (tombstones included): what the structure costs.
    pub fn runs(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.runs.len()).sum()
    }

    pub fn text(&self) -> String {
        let mut text = String::with_capacity(self.visible);
        for run in self.iter() {
            if !run.deleted() {
                text.push_str(self.text_of(run));
            }
        }
        text
    }

    /// A run's characters.
    pub fn text_of(&self, run: &Run) -> &str {
        &self.arena[run.text.start as usize..run.text.end as usize]
    }

    /// Where the character `dot` is.
    pub fn locate(&self, dot: Dot) -> Option<Pos> {
        let (&start, &chunk_id) = self
            .runs_by_dot
            .get(&dot.replica)?
            .range(..=dot.seq)
            .next_back()?;
        let chunk = self.chunk_position(chunk_id);
        let first = Dot::new(dot.replica, start);
        let run = self.chunks[chunk]
            .runs
            .iter()
            .position(|run| run.id == first);
        let run = run.expect("the dot index names the chunk that holds each run");
        (dot.seq - start < self.chunks[chunk].runs[run].len).then_some(Pos {
            chunk,
            run,
            offset: dot.seq - start,
        })
    }

    /// The run at `place` or the first after it, and where it is; `None` at the end.
    pub fn run_at(&self, mut place: Place) -> Option<(Place, &Run)> {
        while place.run >= self.chunks[place.chunk].runs.len() {
            if place.chunk + 1 == self.chunks.len() {
                return None;
            }
            place = Place {
                chunk: place.chunk + 1,
                run: 0,
            };
        }
        Some((place, &self.chunks[place.chunk].runs[place.run]))
    }

    /// The character just before `place`, deleted or not.
    pub fn char_before(&self, place: Place) -> Option<Dot> {
        if place.run > 0 {
            return Some(self.chunks[place.chunk].runs[place.run - 1].last());
        }
        self.chunks[..place.chunk]
            .iter()
            .rev()
            .find_map(|chunk| chunk.runs.last().map(Run::last))
    }

    /// The character at `place`, deleted or not.
    pub fn char_at(&self, place: Place) -> Option<Dot> {
        self.run_at(place).map(|(_, run)| run.id)
    }

    /// The gap just before the `pos`-th visible character (after any tombstones before it),
    /// or the end when `pos` is the length. `pos` must not be past the end.
    pub fn place_at_visible(&mut self, pos: usize) -> Place {
        assert!(
            pos <= self.visible,
            "position {pos} past the end ({})",
            self.visible
        );
        let (mut chunk, mut before) = self.cursor;
        chunk = chunk.min(self.chunks.len() - 1);
        while before > pos {
            chunk -= 1;
            before -= self.chunks[chunk].visible;
        }
        while before + self.chunks[chunk].visible <= pos && chunk + 1 < self.chunks.len() {
            before += self.chunks[chunk].visible;
            chunk += 1;
        }
        self.cursor = (chunk, before);
        if pos == self.visible {
            let last = self.chunks.len() - 1;
            return Place {
                chunk: last,
                run: self.chunks[last].runs.len(),
            };
        }
        let mut rest = pos - before;
        for (run, r) in self.chunks[chunk].runs.iter().enumerate() {
            let visible = r.visible();
            if rest < visible {
                return self.split(Pos {
                    chunk,
                    run,
                    offset: rest as u64,
                });
            }
            rest -= visible;
        }
        unreachable!("a chunk's visible count is the sum of its runs'")
    }

    /// The gap just before the character `dot` (splitting its run there).
    pub fn place_before(&mut self, dot: Dot) -> Option<Place> {
        let pos = self.locate(dot)?;
        Some(self.split(pos))
    }

    /// The gap just after the character `dot` (splitting its run there).
    pub fn place_after(&mut self, dot: Dot) -> Option<Place> {
        let pos = self.locate(dot)?;
        Some(self.split(Pos {
            offset: pos.offset + 1,
            ..pos
        }))
    }

    /// Split the run at `pos` so that its character starts a run; the gap before it.
    fn split(&mut self, pos: Pos) -> Place {
        let chunk = &mut self.chunks[pos.chunk];
        let place = Place {
            chunk: pos.chunk,
            run: pos.run,
        };
        if pos.offset == 0 {
            return place;
        }
        if pos.offset == chunk.runs[pos.run].len {
            return place.next();
        }
        let tail = chunk.runs[pos.run].split_off(pos.offset, &self.arena);
        self.runs_by_dot
            .entry(tail.id.replica)
            .or_default()
            .insert(tail.id.seq, chunk.id);
        chunk.runs.insert(pos.run + 1, tail);
        place.next()
    }

    /// Put `run` at `place`, as a continuation of the run before it when it reads as one.
    pub fn insert(&mut self, mut place: Place, run: NewRun) {
        if place.run == 0 && place.chunk > 0 {
            // The end of the previous chunk is the same gap, and has a run to continue.
            place = Place {
                chunk: place.chunk - 1,
                run: self.chunks[place.chunk - 1].runs.len(),
            };
        }
        let visible = run.len as usize;
        let chunk = &mut self.chunks[place.chunk];
        match place
            .run
            .checked_sub(1)
            .map(|before| &mut chunk.runs[before])
        {
            Some(before) if before.continues_with(&run, &self.arena) => {
                before.len += run.len;
                before.text.end = append(&mut self.arena, run.text).end;
            }
            _ => {
                self.runs_by_dot
                    .entry(run.id.replica)
                    .or_default()
                    .insert(run.id.seq, chunk.id);
                chunk.runs.insert(place.run, run.into_run(&mut self.arena));
            }
        }
        self.count_visible(place.chunk, visible as isize);
        self.settle(&[place.chunk]);
    }

    /// Delete `len` visible characters from the `pos`-th; the dots deleted, in document order.
    pub fn delete_visible(&mut self, pos: usize, len: usize) -> Vec<Span> {
        assert!(pos + len <= self.visible, "deleting past the end");
        let mut spans = Vec::new();
        let mut touched: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        let mut place = self.place_at_visible(pos);
        let mut rest = len as u64;
        while rest > 0 {
            let (at, run) = self.run_at(place).expect("deletion within the document");
            place = at;
            if run.deleted() {
                place = place.next();
                continue;
            }
            if run.len > rest {
                self.split(Pos {
                    chunk: place.chunk,
                    run: place.run,
                    offset: rest,
                });
            }
            let run = &mut self.chunks[place.chunk].runs[place.run];
            run.delete();
            push_span(
                &mut spans,
                Span {
                    start: run.id,
                    len: run.len,
                },
            );
            rest -= run.len;
            let deleted = run.len as isize;
            self.count_visible(place.chunk, -deleted);
            touched.push(place.chunk);
            place = place.next();
        }
        self.settle(&touched);
        spans
    }

    /// Delete the characters of `span` (all held here: the caller checked), wherever they
    /// are; those already deleted stay so. How many were visible.
    pub fn delete_span(&mut self, span: Span) -> u64 {
        let end = span.end();
        let mut at = span.start;
        let mut touched: smallvec::SmallVec<[usize; 4]> = smallvec::SmallVec::new();
        let mut newly = 0;
        while at.seq < end.seq {
            let place = self
                .place_before(at)
                .expect("the caller checked the span is held");
            let run = &self.chunks[place.chunk].runs[place.run];
            if run.len > end.seq - at.seq {
                self.split(Pos {
                    chunk: place.chunk,
                    run: place.run,
                    offset: end.seq - at.seq,
                });
            }
            let run = &mut self.chunks[place.chunk].runs[place.run];
            at = at.plus(run.len);
            if !run.deleted() {
                run.delete();
                newly += run.len;
                let deleted = run.len as isize;
                self.count_visible(place.chunk, -deleted);
                touched.push(place.chunk);
            }
        }
        self.settle(&touched);
        newly
    }

    /// Whether every dot of `span` is held.
    pub fn holds(&self, span: Span) -> bool {
        let mut at = span.start;
        while at.seq < span.end().seq {
            let Some(pos) = self.locate(at) else {
                return false;
            };
            let run = &self.chunks[pos.chunk].runs[pos.run];
            at = at.plus(run.len - pos.offset);
        }
        true
    }

    fn count_visible(&mut self, chunk: usize, delta: isize) {
        self.chunks[chunk].visible = self.chunks[chunk]
            .visible
            .checked_add_signed(delta)
            .unwrap();
        self.visible = self.visible.checked_add_signed(delta).unwrap();
        if chunk < self.cursor.0 {
            self.cursor.1 = self.cursor.1.checked_add_signed(delta).unwrap();
        }
    }

    /// Split the chunks (indexes as they were before the change) grown past [`MAX_RUNS`].
    fn settle(&mut self, touched: &[usize]) {
        if touched
            .iter()
            .all(|&c| self.chunks[c].runs.len() <= MAX_RUNS)
        {
            return;
        }
        let mut touched = touched.to_vec();
        touched.sort_unstable();
        touched.dedup();
        // From the last, so splitting one does not move the others.
        for &chunk in touched.iter().rev() {
            while self.chunks[chunk].runs.len() > MAX_RUNS {
                let keep = self.chunks[chunk].runs.len() - MAX_RUNS / 2;
                self.split_chunk(chunk, keep);
            }
        }
    }

    /// Move the runs of chunk `chunk` from `keep` on into a new chunk after it.
    fn split_chunk(&mut self, chunk: usize, keep: usize) {
        let id = self.chunk_index.get_mut().positions.len() as u32;
        // Room for the chunk to fill up to where it splits again without growing.
        let mut runs = Vec::with_capacity(MAX_RUNS + 1);
        runs.extend(self.chunks[chunk].runs.drain(keep..));
        let visible: usize = runs.iter().map(Run::visible).sum();
        self.chunks[chunk].visible -= visible;
        for run in &runs {
            self.runs_by_dot
                .get_mut(&run.id.replica)
                .expect("every run is indexed")
                .insert(run.id.seq, id);
        }
        self.chunks.insert(chunk + 1, Chunk { id, runs, visible });
        let index = self.chunk_index.get_mut();
        index.positions.push(0);
        index.stale_from = index.stale_from.min(chunk + 1);
        if self.cursor.0 > chunk {
            self.cursor.0 += 1;
        }
    }

    /// Where the chunk `id` is in `chunks` (renumbering the stale part of the index first).
    fn chunk_position(&self, id: u32) -> usize {
        let mut index = self.chunk_index.borrow_mut();
        if index.stale_from < self.chunks.len() {
            for (position, chunk) in self.chunks.iter().enumerate().skip(index.stale_from) {
                index.positions[chunk.id as usize] = position as u32;
            }
            index.stale_from = self.chunks.len();
        }
        index.positions[id as usize] as usize
    }

    /// Every run in document order, tombstones included.
    pub fn iter(&self) -> impl Iterator<Item = &Run> {
        self.chunks.iter().flat_map(|chunk| &chunk.runs)
    }

    /// The last character of `replica` at or before the character `dot` (deleted or not).
    pub fn last_of_at_or_before(&self, replica: ReplicaId, dot: Dot) -> Option<Dot> {
        let pos = self.locate(dot)?;
        let run = &self.chunks[pos.chunk].runs[pos.run];
        if run.id.replica == replica {
            return Some(run.id.plus(pos.offset));
        }
        let before = self.chunks[pos.chunk].runs[..pos.run].iter().rev();
        let earlier = self.chunks[..pos.chunk]
            .iter()
            .rev()
            .flat_map(|chunk| chunk.runs.iter().rev());
        before
            .chain(earlier)
            .find(|run| run.id.replica == replica)
            .map(Run::last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ReplicaId = ReplicaId(1);

    fn typed(seq: &mut Sequence, next: &mut u64, pos: usize, text: &str) {
        let place = seq.place_at_visible(pos);
        let run = NewRun {
            id: Dot::new(A, *next),
            len: text.chars().count() as u64,
            origin_left: seq.char_before(place),
            origin_right: seq.char_at(place),
            text,
        };
        *next += run.len;
        seq.insert(place, run);
    }

    #[test]
    fn typing_forward_is_one_run() {
        let (mut seq, mut next) = (Sequence::default(), 0);
        for (i, c) in "hello".chars().enumerate() {
            typed(&mut seq, &mut next, i, &c.to_string());
        }
        assert_eq!(seq.text(), "hello");
        assert_eq!(seq.runs(), 1);
    }

    #[test]
    fn a_middle_insert_splits_and_a_delete_leaves_tombstones() {
        let (mut seq, mut next) = (Sequence::default(), 0);
        typed(&mut seq, &mut next, 0, "held");
        typed(&mut seq, &mut next, 3, "lo wor");
        assert_eq!(seq.text(), "hello word");
        let spans = seq.delete_visible(2, 3);
        assert_eq!(seq.text(), "he word");
        assert_eq!(
            spans,
            vec![
                Span {
                    start: Dot::new(A, 2),
                    len: 1
                },
                Span {
                    start: Dot::new(A, 4),
                    len: 2
                },
            ]
        );
        assert_eq!(seq.len(), 7);
        assert!(
            seq.iter()
                .any(|run| run.deleted() && seq.text_of(run) == "l")
        );
        // Inserting where the tombstones are goes after them.
        let place = seq.place_at_visible(2);
        assert_eq!(seq.char_before(place), Some(Dot::new(A, 5)));
    }

    #[test]
    fn many_runs_split_chunks_and_every_dot_is_still_found() {
        let (mut seq, mut next) = (Sequence::default(), 0);
        // Typing backwards: every character its own run.
        for i in 0..1000 {
            typed(
                &mut seq,
                &mut next,
                0,
                &char::from(b'a' + (i % 26) as u8).to_string(),
            );
        }
        assert!(seq.chunks.len() > 1000 / MAX_RUNS);
        for seq_no in 0..1000 {
            assert!(seq.locate(Dot::new(A, seq_no)).is_some(), "{seq_no}");
        }
        assert!(seq.locate(Dot::new(A, 1000)).is_none());
        let text = seq.text();
        assert_eq!(text.len(), 1000);
        // Positions found through the cursor from either side agree with the text.
        for pos in [999, 3, 500, 0, 998, 64, 65] {
            let place = seq.place_at_visible(pos);
            let dot = seq.char_at(place).unwrap();
            assert_eq!(dot, Dot::new(A, 999 - pos as u64));
        }
        let spans = seq.delete_visible(10, 500);
        assert_eq!(spans.iter().map(|s| s.len).sum::<u64>(), 500);
        assert_eq!(seq.text(), format!("{}{}", &text[..10], &text[510..]));
        assert!(seq.holds(Span {
            start: Dot::new(A, 0),
            len: 1000
        }));
        assert!(!seq.holds(Span {
            start: Dot::new(A, 990),
            len: 11
        }));
    }
}
