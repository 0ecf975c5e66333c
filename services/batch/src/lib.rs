//! Project 4: MapReduce-mini. A coordinator hands map and reduce tasks to workers and finishes
//! every job through worker crashes, slow workers and its own restart.
//!
//! - [`split`]: input files cut into map tasks by size, at line boundaries.
//! - [`task`]: a map task (records through the plugin into sorted partition runs) and a reduce
//!   task (a k-way merge of runs, reduced key by key), the same on a worker and locally.
//! - [`corpus`]: a deterministic Zipf-worded text corpus for benchmarks and demos.
//! - [`local`]: `batch run-local`, a job run sequentially in one process: the reference every
//!   distributed run is compared with.
//! - [`partition`]: which reduce task a key goes to (a stable hash, the same on every machine).
//! - [`plugin`]: the user's map and reduce functions as WebAssembly, run sandboxed (memory cap,
//!   CPU budget, no imports but its output); the shipped ones are C files built by `build.rs`.
//! - [`coordinator`]: the scheduler made real behind gRPC: jobs planned at submission, reduce
//!   output committed by rename, the whole state checkpointed so a restart resumes every job.
//! - [`worker`]: asks for tasks, runs them, serves its map output to reducers (the shuffle).
//! - [`board`]: the coordinator's `/status` detail (the lab's task board reads it).
//! - [`cluster`]: a coordinator and workers as local processes (tests, the benchmark).
//! - [`node`]: `lab node batch --role coordinator|worker` flags; [`client`]: `batch submit`
//!   and `batch status`.
//! - [`scheduler`]: the coordinator's decisions as a pure state machine (leases, retries with
//!   backoff, exclusion of failing workers, late answers refused, lost map outputs re-run,
//!   speculative backups, locality), driven by events and tested without sockets or clocks.

pub mod board;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod coordinator;
pub mod corpus;
pub mod local;
pub mod native;
pub mod node;
pub mod partition;
pub mod plugin;
pub mod scheduler;
pub mod split;
pub mod task;
pub mod worker;
