//! `lab`: the distlab console.
//!
//! For now it runs nodes: `lab node <service> --id n1 ...` starts one node of any service
//! linked into it, so a fresh clone needs one `cargo build` and no per-service binaries.
//! The cluster engine (`lab up`, `lab scenario`) and the console (`lab run`) build on this:
//! they start their nodes by running this same executable (`std::env::current_exe()`).

use std::process::ExitCode;

use clap::Parser;
use distlab_runtime::node::Threads;
use lab::engine::project::split_flags;

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "distlab: run local clusters of distributed systems, break them, watch what happens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run one node of a service (this is how the lab starts its nodes).
    #[command(disable_help_flag = true)]
    Node {
        /// The service (kv...) or its project (proj0...); `lab list` shows them.
        #[arg(allow_hyphen_values = true)]
        service: String,
        /// The node's flags (--id, --listen, --admin, --data-dir, --peer, and the service's
        /// own); `lab node kv --help` lists them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Open the console on a new cluster of PROJ: live views, keys that inject faults, the
    /// command palette (`:`). `?` lists the keys; `q` quits and stops the cluster.
    Run(lab::console::RunArgs),
    /// List the projects, their roles and default sizes.
    List,
    /// Start a project's cluster headless and keep it up until Ctrl-C: every node's addresses
    /// are printed, so curl and the project CLIs can be pointed at it.
    Up {
        /// The project: proj0...
        project: String,
        /// Nodes in the cluster [default: the project's own]
        #[arg(long)]
        nodes: Option<usize>,
        /// Where run directories go.
        #[arg(long, default_value = "runs")]
        runs_dir: std::path::PathBuf,
        /// Seed for every random choice (link losses, jitter...).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Service flags added to every node: `--node-flags "--read-mode lease"`.
        #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
        node_flags: Option<String>,
    },
    /// Run a scenario headless: a cluster, a workload, faults, checks. Exit 0 only if every
    /// check passed (1 if one failed, 2 for bad input).
    Scenario {
        /// The scenario file (see scenarios/README.md).
        file: std::path::PathBuf,
        /// Seed for every random choice [default: the scenario's, or 1]
        #[arg(long)]
        seed: Option<u64>,
        /// Where run directories go.
        #[arg(long, default_value = "runs")]
        runs_dir: std::path::PathBuf,
        /// Print the report as JSON instead of the summary.
        #[arg(long)]
        json: bool,
        /// Also draw the console, with no terminal attached, into this asciicast v2 file.
        #[arg(long)]
        record: Option<std::path::PathBuf>,
        /// The recorded console's size, WIDTHxHEIGHT.
        #[arg(long, default_value = "120x36", value_parser = parse_size)]
        size: (u16, u16),
        /// Service flags added to every node after the scenario's `node_flags` (they win where
        /// both set one): `--node-flags "--read-mode lease"`.
        #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
        node_flags: Option<String>,
        /// Run only this one of the scenario's `variants` [default: every one, in turn].
        #[arg(long)]
        variant: Option<String>,
        /// Run it under N seeds (the seed, seed+1, ...) and print a table: each run's verdict
        /// and figures, their spread, the seeds that failed (exit 1 if any did).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: Option<u32>,
        /// What a checker may spend before it answers "unknown" (exit 3 if one does and none
        /// failed): TIME[,MEMORY].
        #[arg(long, value_name = "TIME[,MEMORY]", default_value = "120s,2g", value_parser = lab::engine::check::Budget::parse)]
        check_budget: lab::engine::check::Budget,
    },
    /// Run the checkers again on a saved run: by default the ones its scenario asked for
    /// (RUN_DIR/scenario.yaml), over RUN_DIR/history.jsonl and events.jsonl. Exit 0 if every
    /// check passed, 1 if one failed, 2 for bad input, 3 if a checker could not decide
    /// within its budget (and none failed).
    Check {
        /// A run directory, or a history.jsonl file (checked for linearizability by default).
        run: std::path::PathBuf,
        /// Run this checker instead (repeatable).
        #[arg(long = "checker", value_enum)]
        checkers: Vec<CheckerName>,
        /// What a checker may spend before it answers "unknown": TIME[,MEMORY].
        #[arg(long, value_name = "TIME[,MEMORY]", default_value = "120s,2g", value_parser = lab::engine::check::Budget::parse)]
        check_budget: lab::engine::check::Budget,
    },
    /// Benchmark a project (starts its nodes, prints one line per figure).
    Bench {
        #[command(subcommand)]
        project: ProjectBench,
    },
}

/// The checkers by the names scenario files use (`election_safety`); the kebab-case spelling
/// (`election-safety`) is taken too.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CheckerName {
    /// Registers: read, write, cas, delete per key.
    Linearizable,
    /// No write applied twice (Project 0's key versions).
    #[value(name = "applied_once", alias = "applied-once")]
    AppliedOnce,
    /// The share of operations that succeeded, per fault window (no minimum).
    Availability,
    /// At most one leader per term (Raft), from the timeline's became_leader events.
    #[value(name = "election_safety", alias = "election-safety")]
    ElectionSafety,
    /// Every acknowledged write (or a newer one) readable at the end (Project 1).
    #[value(name = "no_lost_writes", alias = "no-lost-writes")]
    NoLostWrites,
    /// Keys moved per join or leave <= 1.25 x K/N, from ring_changed events (Project 1).
    #[value(name = "key_movement", alias = "key-movement")]
    KeyMovement,
    /// Every hint delivered by the end, from hints_pending/hints_drained events (Project 1).
    #[value(name = "hints_drained", alias = "hints-drained")]
    HintsDrained,
    /// Acknowledged messages all read at the end, once, in order (Project 3).
    #[value(name = "log_delivery", alias = "log-delivery")]
    LogDelivery,
    /// The consumer group read every message, caught up; rebalances and lag (Project 3).
    #[value(name = "group_delivery", alias = "group-delivery")]
    GroupDelivery,
    /// Every job done, its output equal to the sequential run's (Project 4).
    #[value(name = "batch_jobs", alias = "batch-jobs")]
    BatchJobs,
    /// No late or double commit; speculation and lost map outputs counted (Project 4).
    #[value(name = "batch_commits", alias = "batch-commits")]
    BatchCommits,
    /// Every whole-bank read saw the exact total (Project 5).
    #[value(name = "bank_total", alias = "bank-total")]
    BankTotal,
    /// Balances equal the opening plus the journal, each transfer once (Project 5).
    #[value(name = "bank_transfers", alias = "bank-transfers")]
    BankTransfers,
    /// Each completed or compensated transfer notified once (Project 5, saga mode).
    #[value(name = "bank_notifications", alias = "bank-notifications")]
    BankNotifications,
    /// Every replica holds the same text once quiet (Project 6).
    #[value(name = "collab_convergence", alias = "collab-convergence")]
    CollabConvergence,
    /// Every acknowledged edit held by every server (Project 6).
    #[value(name = "collab_acked", alias = "collab-acked")]
    CollabAcked,
    /// Each editor's characters in the order it typed them, on every server (Project 6).
    #[value(name = "collab_intention", alias = "collab-intention")]
    CollabIntention,
}

impl CheckerName {
    fn spec(self) -> lab::engine::scenario::CheckSpec {
        use lab::engine::scenario::CheckSpec;
        match self {
            CheckerName::Linearizable => CheckSpec::Linearizable,
            CheckerName::AppliedOnce => CheckSpec::AppliedOnce,
            CheckerName::Availability => CheckSpec::Availability { min: None },
            CheckerName::ElectionSafety => CheckSpec::ElectionSafety,
            CheckerName::NoLostWrites => CheckSpec::NoLostWrites,
            CheckerName::KeyMovement => CheckSpec::KeyMovement,
            CheckerName::HintsDrained => CheckSpec::HintsDrained,
            CheckerName::LogDelivery => CheckSpec::LogDelivery,
            CheckerName::GroupDelivery => CheckSpec::GroupDelivery,
            CheckerName::BatchJobs => CheckSpec::BatchJobs,
            CheckerName::BatchCommits => CheckSpec::BatchCommits,
            CheckerName::BankTotal => CheckSpec::BankTotal,
            CheckerName::BankTransfers => CheckSpec::BankTransfers,
            CheckerName::BankNotifications => CheckSpec::BankNotifications,
            CheckerName::CollabConvergence => CheckSpec::CollabConvergence,
            CheckerName::CollabAcked => CheckSpec::CollabAcked,
            CheckerName::CollabIntention => CheckSpec::CollabIntention,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
enum ProjectBench {
    /// Project 0: closed-loop PUT and GET load against one kv node.
    Proj0(distlab_kv::bench::BenchArgs),
    /// Project 1: one cache node vs stock memcached, a 5-node cluster, failure detection
    /// time, SWIM under 5% loss.
    Proj1(lab::projects::proj1::bench::Proj1BenchArgs),
    /// Project 2: Raft KV writes, reads (read-index vs lease), snapshots, failover, and
    /// etcd under the same load.
    Proj2(lab::projects::proj2::bench::Proj2BenchArgs),
    /// Project 3: one partition's log alone; then brokers (1 with acks=1, 3 with RF 3 and
    /// acks=all): produce and consume throughput, end-to-end latency.
    Proj3(lab::projects::proj3::bench::Proj3BenchArgs),
    /// Project 4: word count and sort on a generated corpus, sequential vs the shell pipeline
    /// and GNU sort vs clusters of 1, 2 and 4 workers; speculation's saving with a straggler.
    Proj4(lab::projects::proj4::bench::Proj4BenchArgs),
    /// Project 5: transfers per second and latency, 2PC and saga over 2 and 4 shards, uniform
    /// and hot accounts, beside single-node PostgreSQL transactions.
    Proj5(lab::projects::proj5::bench::Proj5BenchArgs),
    /// Project 6: the automerge-paper editing trace replayed into our sequence CRDT and into
    /// diamond-types, yrs, automerge and loro: time, heap, encoded size, load time.
    Proj6(lab::projects::proj6::bench::Proj6BenchArgs),
    /// The lab's link proxies: added round-trip latency and throughput with no faults.
    Links(lab::engine::link::bench::LinkBenchArgs),
    /// The linearizability checker on a synthetic 10,000-operation history.
    Checker(lab::engine::check::bench::CheckerBenchArgs),
    /// The console's own CPU use, with a 5-node Project 0 cluster under load.
    Console(lab::console::ConsoleBenchArgs),
}

/// `120x36` -> (120, 36); the console needs at least 80x24.
fn parse_size(text: &str) -> Result<(u16, u16), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("{text:?}: expected WIDTHxHEIGHT, e.g. 120x36"))?;
    let w: u16 = w.parse().map_err(|_| format!("{w:?} is not a width"))?;
    let h: u16 = h.parse().map_err(|_| format!("{h:?} is not a height"))?;
    if w < lab::console::ui::MIN_WIDTH || h < lab::console::ui::MIN_HEIGHT {
        return Err(format!(
            "{w}x{h} is smaller than the console's minimum, {}x{}",
            lab::console::ui::MIN_WIDTH,
            lab::console::ui::MIN_HEIGHT
        ));
    }
    Ok((w, h))
}

/// `lab node --help`: what the command does and the services it runs (each service's own
/// flags are behind `lab node SERVICE --help`).
fn node_help() -> String {
    let mut out = String::from(
        "Run one node of a service in the foreground (this is how the lab starts its nodes).\n\n\
         Usage: lab node SERVICE --id n1 --listen 127.0.0.1:0 --admin 127.0.0.1:0 --data-dir DIR \
         [--peer n2=ADDR ...] [service flags]\n\nServices:\n",
    );
    for project in lab::engine::project::all() {
        out += &format!(
            "  {:<8} {} ({})\n",
            project.service, project.title, project.name
        );
    }
    out += "\n`lab node SERVICE --help` lists a service's flags.\n";
    out
}

/// mimalloc, not the system allocator: a node serving a request allocates and frees many
/// small buffers (HTTP/2 frames, protobuf, sled), and glibc's malloc and free were a fifth of
/// a raftkv leader's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::List => {
            let mut out = String::from("projects (`lab run PROJ` opens the console on one):\n");
            for project in lab::engine::project::all() {
                let roles: Vec<_> = project.roles.iter().map(|r| r.name).collect();
                let nodes = if project.console_nodes() == project.default_nodes {
                    format!("{} nodes", project.default_nodes)
                } else {
                    format!(
                        "{} nodes in lab run, {} in lab up and scenarios",
                        project.console_nodes(),
                        project.default_nodes
                    )
                };
                out += &format!(
                    "  {:<7} {}\n          roles: {} · {nodes}\n",
                    project.name,
                    project.title,
                    roles.join(", "),
                );
            }
            out += &lab::headless::list_scenarios();
            // Written at once, and a reader that stops early (`lab list | head`) is no error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            ExitCode::SUCCESS
        }
        Command::Run(args) => lab::console::run(args),
        Command::Scenario {
            file,
            seed,
            runs_dir,
            json,
            record,
            size,
            node_flags,
            variant,
            repeat,
            check_budget,
        } => lab::headless::run(lab::headless::ScenarioArgs {
            file,
            seed,
            runs_dir,
            json,
            node_flags: split_flags(node_flags.as_deref().unwrap_or_default()),
            record: record.map(|path| (path, size)),
            variant,
            repeat,
            check_budget,
        }),
        Command::Check {
            run,
            checkers,
            check_budget,
        } => lab::check::run(
            run,
            checkers.into_iter().map(CheckerName::spec).collect(),
            &check_budget,
        ),
        Command::Up {
            project,
            nodes,
            runs_dir,
            seed,
            node_flags,
        } => distlab_runtime::node::run_cli("lab", "warn", || {
            let flags = split_flags(node_flags.as_deref().unwrap_or_default());
            lab::up::run(project, nodes, runs_dir, seed, flags)
        }),
        Command::Node { service, .. } if ["--help", "-h", "help"].contains(&service.as_str()) => {
            print!("{}", node_help());
            ExitCode::SUCCESS
        }
        Command::Node { service, args } => match lab::engine::project::find_service(&service) {
            Ok(project) => (project.node_main)(&format!("lab node {}", project.service), args),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Bench { project } => match project {
            ProjectBench::Proj0(args) => {
                distlab_runtime::node::run_cli("lab", "warn", || async move {
                    let program = std::env::current_exe()?;
                    let node = distlab_kv::bench::NodeCommand {
                        program,
                        args: vec!["node".into(), "kv".into()],
                    };
                    distlab_kv::bench::run(&args, node).await?;
                    Ok(())
                })
            }
            ProjectBench::Proj1(args) => {
                // One thread for the load, as for Project 2: the nodes need the cores.
                distlab_runtime::node::run_cli_on(Threads::One, "lab", "warn", || async move {
                    let exe = std::env::current_exe()?;
                    lab::projects::proj1::bench::run(&args, exe).await
                })
            }
            ProjectBench::Proj2(args) => {
                // The load shares the cores with the cluster it drives: one thread, like the
                // nodes (see `Threads::One`).
                distlab_runtime::node::run_cli_on(Threads::One, "lab", "warn", || async move {
                    let exe = std::env::current_exe()?;
                    lab::projects::proj2::bench::run(&args, exe).await
                })
            }
            ProjectBench::Proj3(args) => {
                // One thread for the load: the brokers need the cores.
                distlab_runtime::node::run_cli_on(Threads::One, "lab", "warn", || async move {
                    let exe = std::env::current_exe()?;
                    lab::projects::proj3::bench::run(&args, exe).await
                })
            }
            ProjectBench::Proj5(args) => {
                distlab_runtime::node::run_cli("lab", "warn", || async move {
                    let exe = std::env::current_exe()?;
                    lab::projects::proj5::bench::run(&args, exe).await
                })
            }
            ProjectBench::Proj4(args) => {
                // One thread here: the workers need the cores (the sequential run is measured
                // before any cluster starts).
                distlab_runtime::node::run_cli_on(Threads::One, "lab", "warn", || async move {
                    let exe = std::env::current_exe()?;
                    lab::projects::proj4::bench::run(&args, exe).await
                })
            }
            ProjectBench::Proj6(args) => match lab::projects::proj6::bench::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    ExitCode::FAILURE
                }
            },
            ProjectBench::Checker(args) => match lab::engine::check::bench::run(&args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
            ProjectBench::Console(args) => {
                distlab_runtime::node::run_cli("lab", "warn", || async move {
                    let runs = std::env::temp_dir().join("distlab-bench-runs");
                    lab::console::bench(&args, &runs).await
                })
            }
            ProjectBench::Links(args) => {
                distlab_runtime::node::run_cli("lab", "warn", || async move {
                    lab::engine::link::bench::run(&args).await
                })
            }
        },
    }
}
