//! The `batch` command line: `batch serve` runs a node (the same as `lab node batch`),
//! `batch submit` queues a job on a coordinator (and with `--follow` shows its progress),
//! `batch status` shows jobs, `batch run-local` runs a job in this one process (the reference
//! run), `batch plugins` lists the shipped plugins and `batch corpus` writes benchmark text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use crate::local::{JobDef, output_name, run_local};

#[derive(Debug, Parser)]
#[command(
    name = "batch",
    version,
    about = "MapReduce-mini (distlab Project 4): jobs of WebAssembly map and reduce plugins"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the same as `lab node batch`).
    Serve(Box<crate::node::BatchNodeArgs>),
    /// Queue a job on a coordinator; prints its id (with --follow, its progress, until done).
    Submit {
        #[command(flatten)]
        job: JobArgs,
        /// A label for the job (default: the plugin's name).
        #[arg(long)]
        name: Option<String>,
        /// Show the job's progress until it is done; exit 1 if it fails.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Every job the coordinator remembers, or one (with --follow, until it is done).
    Status {
        job: Option<u64>,
        #[arg(long, requires = "job")]
        follow: bool,
        #[command(flatten)]
        coordinator: CoordinatorArg,
    },
    /// Run a job in this process, one task after another (the reference a distributed run
    /// must equal, after sorting its output lines).
    RunLocal(RunLocalArgs),
    /// List the shipped plugins.
    Plugins,
    /// Write a deterministic text corpus (Zipf-distributed words) for benchmarks and demos.
    Corpus(CorpusArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct CorpusArgs {
    /// How much text (e.g. 64m, 1g).
    #[arg(long, value_parser = parse_size)]
    pub bytes: u64,
    /// Distinct words.
    #[arg(long, default_value_t = 50_000)]
    pub vocabulary: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorArg {
    /// The coordinator's gRPC address.
    #[arg(long = "coordinator", env = "BATCH_COORDINATOR", value_name = "ADDR")]
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunLocalArgs {
    #[command(flatten)]
    pub job: JobArgs,
}

/// A job, as `run-local` and `submit` take it.
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// A shipped plugin (wordcount, indexer, grep, sort, join, chaos) or a .wasm/.wat file.
    #[arg(long)]
    pub plugin: String,
    /// The plugin's argument (grep: the text to find; join: the left input's file prefix).
    #[arg(long, default_value = "")]
    pub arg: String,
    /// The input: a file, a directory, or a glob such as 'data/*.txt'.
    #[arg(long)]
    pub input: PathBuf,
    /// Reduce tasks (output files).
    #[arg(long, default_value_t = 3)]
    pub reduces: u32,
    /// Bytes of input per map task (e.g. 64k, 8m).
    #[arg(long, default_value = "8m", value_parser = parse_size)]
    pub split: u64,
    /// Partition by sampled key ranges, so the outputs read in order are sorted (for sort).
    #[arg(long)]
    pub range_partition: bool,
    /// Where the part-r-NNNNN files go (created; must be empty).
    #[arg(long)]
    pub out: PathBuf,
}

impl JobArgs {
    fn def(&self) -> JobDef {
        JobDef {
            plugin: self.plugin.clone(),
            arg: self.arg.clone(),
            input: self.input.clone(),
            reduces: self.reduces,
            split_bytes: self.split,
            range_partition: self.range_partition,
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    distlab_runtime::size::parse(text).map(|n| n as u64)
}

/// Runs the command; exit 0, 1 if the job failed, 2 for bad input.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => crate::node::run_blocking(*args),
        Command::Submit {
            job,
            name,
            follow,
            coordinator,
        } => crate::client::submit_command(coordinator.addr, &job, name, follow),
        Command::Status {
            job,
            follow,
            coordinator,
        } => crate::client::status_command(coordinator.addr, job, follow),
        Command::Plugins => {
            for (name, bytes) in crate::plugin::SHIPPED {
                println!("{name:<10} {:>6} bytes of WebAssembly", bytes.len());
            }
            ExitCode::SUCCESS
        }
        Command::RunLocal(args) => run_local_command(args),
        Command::Corpus(args) => {
            let parent = args.out.parent().filter(|p| !p.as_os_str().is_empty());
            let written = parent
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::File::create(&args.out))
                .and_then(|file| {
                    let mut out = std::io::BufWriter::new(file);
                    let n = crate::corpus::write(&mut out, args.bytes, args.vocabulary, args.seed)?;
                    std::io::Write::flush(&mut out)?;
                    Ok(n)
                });
            match written {
                Ok(n) => {
                    println!("{}: {n} bytes", args.out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", args.out.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_local_command(args: RunLocalArgs) -> ExitCode {
    let args = args.job;
    let job = args.def();
    let work = match tempfile::Builder::new().prefix("batch-local-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: a scratch directory for map outputs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    match run_local(&job, work.path(), &args.out) {
        Ok(stats) => {
            let secs = started.elapsed().as_secs_f64();
            let input: u64 = stats.maps.iter().map(|m| m.input_bytes).sum();
            let records: u64 = stats.maps.iter().map(|m| m.records).sum();
            let keys: u64 = stats.reduces.iter().map(|r| r.keys).sum();
            println!(
                "{} map tasks, {} reduce tasks: {records} records ({:.1} MB) in {secs:.2} s ({:.1} MB/s), {keys} keys",
                stats.maps.len(),
                stats.reduces.len(),
                input as f64 / 1e6,
                input as f64 / 1e6 / secs.max(1e-9),
            );
            println!(
                "output: {}/{}..{}",
                args.out.display(),
                output_name(0),
                output_name(job.reduces.saturating_sub(1))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            // What the user gave is wrong (no input, R = 0, not a plugin): 2; a failed task: 1.
            if e.starts_with("map task") || e.starts_with("reduce task") {
                ExitCode::FAILURE
            } else {
                ExitCode::from(2)
            }
        }
    }
}
