//! `lab node log --role controller|broker|consumer ...`: one service, three kinds of node. All
//! take the node contract's flags and `--controllers` (which nodes form the controller
//! quorum); each role has its own flags besides.

use distlab_runtime::BadInput;
use distlab_runtime::cli::{NodeArgs, NodeId};
use distlab_runtime::node::Threads;

use crate::broker::node::BrokerFlags;
use crate::consumer::node::ConsumerFlags;
use crate::controller::node::ControllerFlags;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRole {
    /// A member of the controller quorum (Raft over the cluster metadata).
    Controller,
    /// A broker: partitions' logs, produce and fetch, replication, group coordination.
    Broker,
    /// A consumer group member (what the lab kills to watch a rebalance).
    Consumer,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    #[arg(long, value_enum)]
    pub role: NodeRole,

    /// The controller quorum's node ids, comma-separated (each but this node needs a --peer
    /// address). Default, for a controller: this node and every --peer.
    #[arg(long, value_delimiter = ',', value_parser = NodeId::parse)]
    pub controllers: Vec<NodeId>,

    #[command(flatten)]
    pub controller: ControllerFlags,

    #[command(flatten)]
    pub broker: BrokerFlags,
    #[command(flatten)]
    pub consumer: ConsumerFlags,
}

/// The node's command line. A flag given twice takes its last value, so the lab can add a
/// user's flags after its own.
#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: LogNodeArgs,
}

impl LogNodeArgs {
    /// The controller quorum, checked against the peers.
    fn quorum(&self) -> Result<Vec<String>, BadInput> {
        let me = self.node.id.to_string();
        let peers: Vec<String> = self.node.peers.iter().map(|p| p.id.to_string()).collect();
        let given: Vec<String> = self.controllers.iter().map(|c| c.to_string()).collect();
        if given.is_empty() && self.role != NodeRole::Controller {
            return Err(BadInput::new(
                "a broker or consumer needs --controllers (the controller quorum's node ids)",
            ));
        }
        let quorum = distlab_raft::flags::first_members(
            &me,
            &peers.iter().map(String::as_str).collect::<Vec<_>>(),
            &given,
            "--controllers",
        )?;
        match self.role {
            NodeRole::Controller if !quorum.contains(&me) => Err(BadInput::new(format!(
                "--controllers {} does not name this controller ({me})",
                quorum.join(",")
            ))),
            NodeRole::Broker | NodeRole::Consumer if quorum.contains(&me) => Err(BadInput::new(
                format!("--controllers names this node ({me}), which is not a controller"),
            )),
            _ => Ok(quorum),
        }
    }

    /// Everything that can be checked before the node starts.
    fn check(&self) -> Result<(), BadInput> {
        self.quorum()?;
        match self.role {
            NodeRole::Controller => self.controller.check().map(|_| ()),
            NodeRole::Broker => self.broker.log_config().map(|_| ()),
            NodeRole::Consumer => self.consumer.check(),
        }
    }
}

/// Checks service flags a user adds to every node (`lab ... --node-flags`) before any node
/// starts: `Err` says what the node would refuse. (Role and quorum come from the lab.)
pub fn check_flags(flags: &[String]) -> Result<(), String> {
    let mut all = vec![
        "--role".to_string(),
        "controller".to_string(),
        "--controllers".to_string(),
        "c1".to_string(),
    ];
    all.extend(flags.iter().cloned());
    distlab_runtime::cli::parse_service_flags::<Cli>("log", &all).and_then(|cli| {
        cli.args.controller.check().map_err(|e| e.to_string())?;
        cli.args
            .broker
            .log_config()
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// `lab node log ARGS...`: parses the node's flags (a mistake prints usage and exits 2) and
/// runs it.
pub fn main(program: &str, args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from(program)).chain(args);
    match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => run_blocking(cli.args),
        Err(e) => e.exit(),
    }
}

pub fn run_blocking(args: LogNodeArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    // openraft narrates every vote and replication step at INFO; the lab's log pane and
    // timeline want this node's own events.
    distlab_runtime::node::run_main("log", &id, "info,openraft=warn", Threads::One, || run(args))
}

/// Runs a node of either role until SIGTERM/SIGINT. Bad flags fail with [`BadInput`] before
/// anything is bound or written.
pub async fn run(args: LogNodeArgs) -> anyhow::Result<()> {
    args.check()?;
    let quorum = args.quorum()?;
    let node_args = args.node.validate()?;
    match args.role {
        NodeRole::Controller => {
            crate::controller::node::run(node_args, quorum, args.controller).await
        }
        NodeRole::Broker => crate::broker::node::run(node_args, quorum, args.broker).await,
        NodeRole::Consumer => crate::consumer::node::run(node_args, quorum, args.consumer).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<LogNodeArgs, String> {
        let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        distlab_runtime::cli::parse_service_flags::<Cli>("log", &flags).map(|cli| cli.args)
    }

    #[test]
    fn the_quorum_must_be_known_peers_and_match_the_role() {
        let base = ["--peer", "c2=127.0.0.1:7002", "--peer", "b1=127.0.0.1:7101"];
        let with = |extra: &[&str]| {
            let mut flags: Vec<&str> = vec!["--id", "c1"];
            flags.extend(base);
            flags.extend(extra);
            parse(&flags)
        };
        let args = with(&["--role", "controller", "--controllers", "c1,c2"]).unwrap();
        assert_eq!(args.quorum().unwrap(), vec!["c1", "c2"]);
        let args = with(&["--role", "controller", "--controllers", "c1,c3"]).unwrap();
        let e = args.quorum().unwrap_err().to_string();
        assert!(e.contains("c3, which has no --peer address"), "{e}");
        let args = with(&["--role", "controller", "--controllers", "c2"]).unwrap();
        assert!(
            args.quorum()
                .unwrap_err()
                .to_string()
                .contains("does not name this controller")
        );
        let args = with(&["--role", "broker"]).unwrap();
        assert!(
            args.quorum()
                .unwrap_err()
                .to_string()
                .contains("needs --controllers")
        );
        let args = with(&["--role", "consumer", "--controllers", "c1,c2"]).unwrap();
        assert!(
            args.quorum()
                .unwrap_err()
                .to_string()
                .contains("not a controller")
        );
        let args = with(&["--role", "consumer", "--controllers", "c2"]).unwrap();
        let e = args.check().unwrap_err().to_string();
        assert!(e.contains("needs --topic"), "{e}");
        assert!(parse(&["--id", "c1", "--role", "janitor"]).is_err());
        let e = check_flags(&["--broker-session-timeout".into(), "10ms".into()]).unwrap_err();
        assert!(e.contains("below 100ms"), "{e}");
        let e = check_flags(&["--heartbeat".into(), "1s".into()]).unwrap_err();
        assert!(e.contains("--heartbeat 1s"), "{e}");
    }
}
