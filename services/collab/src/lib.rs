//! Project 6: collaborative text documents on a sequence CRDT written here.
//!
//! # Layout
//! - [`causal`]: dots, version vectors and frontiers: who wrote what, what a replica holds.
//! - [`op`]: operations (runs of inserted or deleted characters) as replicas exchange them.
//! - `sequence`: every character ever inserted, in document order, tombstones kept, in
//!   chunked runs with a cursor: the structure insertions go into.
//! - `fugue`: FugueMax, where a remote insertion goes so that replicas converge and
//!   concurrent insertions do not interleave.
//! - [`doc`]: a replica: local edits, remote operations in any order (causal delivery with a
//!   pending buffer), history, deltas since a version, the text at a past version.
//! - [`history`]: time travel: the causal history as a person reads it, the text after any
//!   prefix of it.
//! - [`codec`]: the binary encoding of operations for storage and sync, checked on decode.
//! - [`store`]: a server's durable documents (sled), damage reported and skipped.
//! - [`sync`]: the protocol editors and servers speak (version exchange, deltas, acks,
//!   presence) and one side's bookkeeping of what a peer holds.
//! - [`server`], [`editor`], [`node`]: the processes: a server relays and stores documents
//!   and replicates to other servers; an editor keeps its own replica, types, goes offline
//!   and merges. [`wire`] is their WebSocket client side, [`status`] what they report.
//! - [`acl`]: per-document access control on a server: who may connect, read, write.
//! - [`crypt`]: per-document encryption between editors: servers store ciphertext.
//! - [`web`]: the browser client served at `/` (TypeScript in `web/src`, compiled to
//!   `web/dist`): the same CRDT, codec and protocol, run in the tab.
//! - [`relay_bench`]: the relay benchmark's writers and reader, for our servers and (in the
//!   peers benchmark) a Yjs server alike.
//! - [`trace`]: real editing traces (automerge-paper), replayed for tests and benchmarks.
//!
//! A keystroke flows: [`Doc::insert`] finds the place in the sequence, names its neighbours as
//! origins, stores the run and returns the [`Op`] to send; a replica receiving it calls
//! [`Doc::apply`], which waits for missing history, then lets FugueMax place it.

pub mod acl;
pub mod causal;
pub mod cli;
pub mod codec;
pub mod crypt;
pub mod doc;
pub mod editor;
pub mod error;
mod fugue;
pub mod history;
pub mod intent;
pub mod node;
pub mod op;
pub mod relay_bench;
mod sequence;
pub mod server;
pub mod status;
pub mod store;
pub mod sync;
pub mod trace;
pub mod web;
pub mod wire;

pub use causal::{Dot, Frontier, ReplicaId, VersionVector};
pub use doc::{Applied, Doc};
pub use error::{EditError, OpError, VersionError};
pub use op::{Body, Op, Span};
