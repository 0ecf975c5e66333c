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
    /// A document's causal history as a server holds it: each operation with its parents, and
    /// with `--at N` the text as it was after the first N of them.
    History {
        /// The document.
        doc: String,
        /// A server's address (its --listen).
        #[arg(long, env = "COLLAB_SERVER", value_name = "ADDR")]
        server: std::net::SocketAddr,
        /// Print the text after the first N operations instead.
        #[arg(long)]
        at: Option<usize>,
    },
    /// Replay an editing trace (josephg/editing-traces JSON, gzip or not) as one replica's
    /// edits; prints the time, the document's size and its encoding's.
    Replay { trace: PathBuf },
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => crate::node::run_blocking(*args),
        Command::History { doc, server, at } => {
            distlab_runtime::node::run_cli("collab", "warn", || async move {
                history(server, &doc, at).await
            })
        }
        Command::Replay { trace } => match replay(&trace) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn history(server: std::net::SocketAddr, doc: &str, at: Option<usize>) -> anyhow::Result<()> {
    use anyhow::Context;
    crate::server::check_doc_name(doc).map_err(distlab_runtime::BadInput)?;
    let get = |path: String| async move {
        let url = format!("http://{server}{path}");
        let response = reqwest::get(&url)
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(status.is_success(), "{url}: {status}: {body}");
        Ok::<_, anyhow::Error>(body)
    };
    if let Some(n) = at {
        println!("{}", get(format!("/docs/{doc}/text?at={n}")).await?);
        return Ok(());
    }
    let entries: Vec<crate::history::Entry> =
        serde_json::from_str(&get(format!("/docs/{doc}/history")).await?)
            .context("reading the history")?;
    for e in &entries {
        let what = match (&e.text, e.targets.is_empty()) {
            (Some(text), _) => format!(
                "after {} before {} {:?}",
                e.origin_left.as_deref().unwrap_or("start"),
                e.origin_right.as_deref().unwrap_or("end"),
                text
            ),
            (None, false) => e.targets.join(" "),
            (None, true) => String::new(),
        };
        println!(
            "#{:<5} {:<24} {:<6} {:>5}  parents [{}]  {what}",
            e.index,
            e.id,
            e.kind,
            e.len,
            e.parents.join(" ")
        );
    }
    Ok(())
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
