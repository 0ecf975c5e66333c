//! `lab node batch --role coordinator|worker ...` (or `batch serve`): one service, two kinds of
//! node. Both take the node contract's flags; each role has its own besides.

use std::path::PathBuf;
use std::time::Duration;

use distlab_runtime::BadInput;
use distlab_runtime::cli::{NodeArgs, NodeId};
use distlab_runtime::node::Threads;

use crate::plugin::Limits;
use crate::scheduler::{Config, Speculation};
use crate::worker::WorkerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRole {
    /// Plans jobs, hands out tasks under leases, commits output, survives its own restart.
    Coordinator,
    /// Runs map and reduce tasks and serves its map output to reducers.
    Worker,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BatchNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    #[arg(long, value_enum)]
    pub role: NodeRole,

    #[command(flatten)]
    pub coordinator: CoordinatorFlags,

    #[command(flatten)]
    pub worker: WorkerFlags,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CoordinatorFlags {
    /// A worker not heard from for this long loses its tasks (and its map output).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "2s")]
    pub lease: Duration,
    /// Attempts a task may make before its job fails.
    #[arg(long, default_value_t = 4)]
    pub max_attempts: u32,
    /// The wait before retrying a failed task (doubling with each failure, up to 5 s).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "200ms")]
    pub retry_backoff: Duration,
    /// A worker whose attempts fail this many times in a row (its own fault) gets no more work.
    #[arg(long, default_value_t = 3)]
    pub exclude_after: u32,
    /// No backup attempts for stragglers.
    #[arg(long)]
    pub no_speculation: bool,
    /// A backup starts for a task running this many times longer than its phase's median.
    #[arg(long, default_value_t = 2.0)]
    pub speculate_slower: f64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerFlags {
    /// The coordinator's node id (it needs a --peer address). Default: `co`.
    #[arg(long, value_parser = NodeId::parse)]
    pub coordinator_id: Option<NodeId>,
    /// How often the worker tells the coordinator it is alive.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "250ms")]
    pub heartbeat: Duration,
    /// Every task takes this many times as long (a straggler): `10`, or `w3=10` to slow only
    /// the worker w3 (so one flag can be given to every node), or `w2=5,w3=10`.
    #[arg(long, value_parser = Slow::parse, default_value = "1")]
    pub slow: Slow,
    /// A directory of local copies of input files: map tasks over them come here first
    /// (default: `local-input` in the data dir, rescanned every 2 s).
    #[arg(long, value_name = "DIR")]
    pub local_input: Option<PathBuf>,
    /// A plugin instance's memory limit in MiB.
    #[arg(long, default_value_t = 64)]
    pub plugin_memory_mib: usize,
    /// A plugin call's CPU budget (fuel: about one unit per WebAssembly instruction).
    #[arg(long, default_value_t = Limits::default().fuel)]
    pub plugin_fuel: u64,
}

/// `--slow`: a factor for every worker, or for named ones.
#[derive(Debug, Clone, PartialEq)]
pub enum Slow {
    All(f64),
    Only(Vec<(String, f64)>),
}

impl Slow {
    pub fn parse(text: &str) -> Result<Self, String> {
        let factor = |f: &str| -> Result<f64, String> {
            let n: f64 = f.parse().map_err(|_| format!("{f:?} is not a number"))?;
            if !(1.0..=1000.0).contains(&n) {
                return Err(format!("--slow {n} must be between 1 (normal) and 1000"));
            }
            Ok(n)
        };
        if !text.contains('=') {
            return factor(text).map(Slow::All);
        }
        text.split(',')
            .map(|part| {
                let (id, f) = part
                    .split_once('=')
                    .ok_or_else(|| format!("{part:?} is not ID=FACTOR"))?;
                NodeId::parse(id)?;
                Ok((id.to_string(), factor(f)?))
            })
            .collect::<Result<_, String>>()
            .map(Slow::Only)
    }

    /// The factor for worker `id`.
    pub fn of(&self, id: &str) -> f64 {
        match self {
            Slow::All(f) => *f,
            Slow::Only(list) => list.iter().find(|(w, _)| w == id).map_or(1.0, |(_, f)| *f),
        }
    }
}

/// The coordinator's node id when `--coordinator-id` is not given.
pub const DEFAULT_COORDINATOR: &str = "co";

impl CoordinatorFlags {
    pub fn config(&self) -> Result<Config, BadInput> {
        if self.lease < Duration::from_millis(100) {
            return Err(BadInput::new(format!(
                "--lease {:?} is below 100ms: workers would lose their tasks between heartbeats",
                self.lease
            )));
        }
        if self.max_attempts == 0 {
            return Err(BadInput::new("--max-attempts must be at least 1"));
        }
        if self.exclude_after == 0 {
            return Err(BadInput::new("--exclude-after must be at least 1"));
        }
        if self.speculate_slower.is_nan() || self.speculate_slower < 1.0 {
            return Err(BadInput::new(format!(
                "--speculate-slower {} must be at least 1",
                self.speculate_slower
            )));
        }
        Ok(Config {
            lease: self.lease,
            max_attempts: self.max_attempts,
            backoff: self.retry_backoff,
            max_backoff: Duration::from_secs(5).max(self.retry_backoff),
            exclude_after: self.exclude_after,
            speculation: (!self.no_speculation).then(|| Speculation {
                slower: self.speculate_slower,
                ..Speculation::default()
            }),
        })
    }
}

impl WorkerFlags {
    fn check(&self) -> Result<(), BadInput> {
        if self.heartbeat < Duration::from_millis(10) {
            return Err(BadInput::new("--heartbeat must be at least 10ms"));
        }
        if self.plugin_memory_mib == 0 || self.plugin_memory_mib > 4096 {
            return Err(BadInput::new(
                "--plugin-memory-mib must be between 1 and 4096",
            ));
        }
        Ok(())
    }
}

/// The node's command line. A flag given twice takes its last value, so the lab can add a
/// user's flags after its own.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: BatchNodeArgs,
}

/// Checks service flags a user adds to every node (`lab ... --node-flags`) before any node
/// starts.
pub fn check_flags(flags: &[String]) -> Result<(), String> {
    let mut all = vec!["--role".to_string(), "coordinator".to_string()];
    all.extend(flags.iter().cloned());
    distlab_runtime::cli::parse_service_flags::<Cli>("batch", &all).and_then(|cli| {
        cli.args.coordinator.config().map_err(|e| e.to_string())?;
        cli.args.worker.check().map_err(|e| e.to_string())
    })
}

/// `lab node batch ARGS...`: parses the node's flags (a mistake prints usage and exits 2) and
/// runs it.
pub fn main(program: &str, args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from(program)).chain(args);
    match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => run_blocking(cli.args),
        Err(e) => e.exit(),
    }
}

pub fn run_blocking(args: BatchNodeArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    distlab_runtime::node::run_main("batch", &id, "info", Threads::One, || run(args))
}

/// Runs a node of either role until SIGTERM/SIGINT. Bad flags fail with [`BadInput`] before
/// anything is bound or written.
pub async fn run(args: BatchNodeArgs) -> anyhow::Result<()> {
    let config = args.coordinator.config()?;
    args.worker.check()?;
    let node = args.node.validate()?;
    match args.role {
        NodeRole::Coordinator => crate::coordinator::service::run(node, config).await,
        NodeRole::Worker => {
            let id = args
                .worker
                .coordinator_id
                .clone()
                .map_or_else(|| DEFAULT_COORDINATOR.to_string(), |c| c.to_string());
            let coordinator = node
                .peers
                .iter()
                .find(|(p, _)| p.as_str() == id)
                .map(|(_, addr)| *addr)
                .ok_or_else(|| {
                    BadInput::new(format!(
                        "the coordinator {id} has no --peer address (name it with --coordinator-id)"
                    ))
                })?;
            let w = &args.worker;
            let config = WorkerConfig {
                coordinator,
                heartbeat: w.heartbeat,
                slow: w.slow.of(node.id.as_str()),
                local_input: w.local_input.clone(),
                limits: Limits {
                    memory: w.plugin_memory_mib << 20,
                    fuel: w.plugin_fuel,
                },
            };
            crate::worker::run(node, config).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_flags_are_named() {
        let e = check_flags(&["--lease".into(), "10ms".into()]).unwrap_err();
        assert!(e.contains("--lease"), "{e}");
        let e = check_flags(&["--slow".into(), "0.5".into()]).unwrap_err();
        assert!(e.contains("--slow 0.5"), "{e}");
        let e = check_flags(&["--slow".into(), "w3".into()]).unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        let slow = Slow::parse("w2=5,w3=10").unwrap();
        assert_eq!((slow.of("w1"), slow.of("w3")), (1.0, 10.0));
        assert_eq!(Slow::parse("3").unwrap().of("w1"), 3.0);
        let e = check_flags(&["--max-attempts".into(), "0".into()]).unwrap_err();
        assert!(e.contains("--max-attempts"), "{e}");
        assert!(check_flags(&["--no-speculation".into(), "--slow".into(), "10".into()]).is_ok());
    }
}
