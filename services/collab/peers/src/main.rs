//! Project 6's trace benchmark: one sequence CRDT replays one editing trace, in this process,
//! and prints what it cost. `lab bench proj6` runs it once per implementation (so each gets a
//! fresh heap and its own peak) and sets the figures side by side.
//!
//! Every implementation is driven the same way: each patch of the trace is a local edit made
//! through the library's ordinary text API (delete, then insert), and with `--grouping patch`
//! (the default) each patch is its own transaction or commit, as a live editor sends each
//! keystroke; `--grouping trace` makes the whole trace one transaction where the library
//! groups edits (yrs, automerge, loro). The final text is checked against the trace's.
//!
//! Phases, one line each:
//! - `replay`: the trace as local edits; time, peak and retained heap, encoded size.
//! - `load`: the encoded document decoded into a fresh replica (the remote path: every
//!   operation integrated as a peer's); time and peak heap, text checked.
//!
//! Heap figures come from a counting global allocator: bytes live at the peak, and bytes still
//! held once the phase is over, both above what was live before it (the trace itself).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use anyhow::{Context, bail};
use distlab_collab::trace::EditTrace;

mod peers;
mod relay;

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap use over one phase.
struct Heap {
    before: usize,
}

impl Heap {
    fn start() -> Heap {
        let before = LIVE.load(Relaxed);
        PEAK.store(before, Relaxed);
        Heap { before }
    }

    /// (peak, retained) above the start.
    fn end(&self) -> (usize, usize) {
        let peak = PEAK.load(Relaxed).saturating_sub(self.before);
        let retained = LIVE.load(Relaxed).saturating_sub(self.before);
        (peak, retained)
    }
}

/// Whether a patch is its own transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Patch,
    Trace,
}

/// A sequence CRDT as this benchmark drives it.
pub trait Replica: Sized {
    fn new(grouping: Grouping) -> anyhow::Result<Self>;
    /// Delete `deleted` characters at `pos`, then insert `inserted` there.
    fn splice(&mut self, pos: usize, deleted: usize, inserted: &str) -> anyhow::Result<()>;
    /// The whole trace, start text included, as local edits.
    fn replay(&mut self, trace: &EditTrace) -> anyhow::Result<()> {
        replay_patches(self, trace)
    }
    fn text(&self) -> anyhow::Result<String>;
    /// The whole document, history included, as the library stores or sends it.
    fn encode(&mut self) -> anyhow::Result<Vec<u8>>;
    /// A fresh replica from `encode`'s bytes.
    fn load(bytes: &[u8]) -> anyhow::Result<Self>;
}

/// Each patch through [`Replica::splice`].
pub fn replay_patches<R: Replica>(replica: &mut R, trace: &EditTrace) -> anyhow::Result<()> {
    if !trace.start.is_empty() {
        replica.splice(0, 0, &trace.start)?;
    }
    for (i, patch) in trace.patches.iter().enumerate() {
        replica
            .splice(patch.pos, patch.deleted, &patch.inserted)
            .with_context(|| format!("patch {i}"))?;
    }
    Ok(())
}

fn check(name: &str, phase: &str, text: &str, trace: &EditTrace) -> anyhow::Result<()> {
    if text != trace.end {
        bail!(
            "{name}: the text after {phase} ({} characters) is not the trace's end text ({} characters)",
            text.chars().count(),
            trace.end.chars().count()
        );
    }
    Ok(())
}

fn measure<R: Replica>(name: &str, trace: &EditTrace, grouping: Grouping) -> anyhow::Result<()> {
    let grouping_name = match grouping {
        Grouping::Patch => "patch",
        Grouping::Trace => "trace",
    };
    let heap = Heap::start();
    let started = Instant::now();
    let mut replica = R::new(grouping)?;
    replica.replay(trace).with_context(|| format!("{name}: replaying"))?;
    let seconds = started.elapsed().as_secs_f64();
    let (peak, retained) = heap.end();
    check(name, "the replay", &replica.text()?, trace)?;
    let encoded = replica.encode()?;
    println!(
        "impl={name} phase=replay grouping={grouping_name} patches={} seconds={seconds:.4} peak_heap_bytes={peak} retained_heap_bytes={retained} encoded_bytes={} chars={}",
        trace.patches.len(),
        encoded.len(),
        trace.end.chars().count()
    );
    drop(replica);

    let heap = Heap::start();
    let started = Instant::now();
    let loaded = R::load(&encoded).with_context(|| format!("{name}: loading its own encoding"))?;
    let seconds = started.elapsed().as_secs_f64();
    let (peak, retained) = heap.end();
    check(name, "loading", &loaded.text()?, trace)?;
    println!(
        "impl={name} phase=load grouping={grouping_name} encoded_bytes={} seconds={seconds:.4} peak_heap_bytes={peak} retained_heap_bytes={retained}",
        encoded.len()
    );
    Ok(())
}

const IMPLS: &str = "distlab, diamond-types, yrs, automerge, loro";

fn usage() -> ! {
    eprintln!(
        "usage: distlab-collab-peers IMPL TRACE [--grouping patch|trace]\n  IMPL: one of {IMPLS}\n       distlab-collab-peers relay-yjs URL WRITERS CHARS WINDOW"
    );
    std::process::exit(2)
}

fn main() -> anyhow::Result<()> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("relay-yjs") {
        return relay::main(&all[1..]);
    }
    let mut args = std::env::args().skip(1);
    let (Some(name), Some(path)) = (args.next(), args.next()) else {
        usage()
    };
    let grouping = match (args.next().as_deref(), args.next().as_deref()) {
        (None, _) => Grouping::Patch,
        (Some("--grouping"), Some("patch")) => Grouping::Patch,
        (Some("--grouping"), Some("trace")) => Grouping::Trace,
        _ => usage(),
    };
    let trace = EditTrace::load(&PathBuf::from(&path))?;
    match name.as_str() {
        "distlab" => measure::<peers::Distlab>(&name, &trace, grouping),
        "diamond-types" => measure::<peers::DiamondTypes>(&name, &trace, grouping),
        "yrs" => measure::<peers::Yrs>(&name, &trace, grouping),
        "automerge" => measure::<peers::Automerge>(&name, &trace, grouping),
        "loro" => measure::<peers::Loro>(&name, &trace, grouping),
        other => bail!("unknown implementation {other:?}: one of {IMPLS}"),
    }
}
