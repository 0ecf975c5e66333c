//! The `collab` command line: `collab serve` runs a node (the same as `lab node collab`),
//! `collab replay` replays an editing trace into a fresh document and says what it cost.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "collab",
    version,
    about = "Collaborative documents on a sequence CRDT (distlab Project 6)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the same as `lab node collab`).
    Serve(Box<crate::node::CollabNodeArgs>),
    /// Replay an editing trace (josephg/editing-traces JSON, gzip or not) as one replica's
    /// edits; prints the time, the document's size and its encoding's.
    Replay { trace: PathBuf },
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => crate::node::run_blocking(*args),
        Command::Replay { trace } => match replay(&trace) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn replay(path: &std::path::Path) -> anyhow::Result<()> {
    let trace = crate::trace::EditTrace::load(path)?;
    let started = Instant::now();
    let doc = trace.replay()?;
    let seconds = started.elapsed().as_secs_f64();
    let encoded = crate::codec::encode_ops(doc.history()).len();
    println!(
        "patches={} seconds={seconds:.4} chars={} runs={} log_entries={} encoded_bytes={encoded}",
        trace.patches.len(),
        doc.len(),
        doc.runs(),
        doc.history().len()
    );
    Ok(())
}
