//! `lab node collab --role server|editor ...` (or `collab serve`): a document server, or an
//! editor with its own replica. Servers replicate to the servers among their `--peer`s; an
//! editor connects to one of them. See [`crate::server`] and [`crate::editor`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_runtime::BadInput;
use distlab_runtime::admin::NodeStatus;
use distlab_runtime::cli::NodeArgs;
use distlab_runtime::node::{Node, Threads};

use crate::causal::ReplicaId;
use crate::store::Store;
use crate::{editor, server};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Relays and stores documents; replicates to the other servers.
    Server,
    /// A client with its own replica of one document; types if `--type-rate` is set.
    Editor,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CollabNodeArgs {
    #[command(flatten)]
    pub node: NodeArgs,

    #[arg(long, value_enum)]
    pub role: Role,

    /// The servers, comma-separated (default: every peer; a server skips its own id). A server
    /// replicates to all the others. An editor starts with the one its number picks (e1 the
    /// first, e2 the second, e3 the first again...) and moves on when that one does not
    /// answer.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,

    /// Editor: the document it edits.
    #[arg(long, default_value = "notes")]
    pub doc: String,
    /// Editor: the user name shown to others and checked by a server's `--acl` (default: the
    /// node id).
    #[arg(long)]
    pub user: Option<String>,
    /// Editor: the token that proves it is `--user`, where the server has an `--acl`.
    #[arg(long, env = "COLLAB_TOKEN", default_value = "", hide_env_values = true)]
    pub token: String,
    /// Editor: the document's passphrase: inserted text is enciphered before it leaves and
    /// deciphered when it arrives, so servers store only ciphertext (every editor of the
    /// document needs the same one).
    #[arg(long, env = "COLLAB_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Server: who may connect and what each may do with each document (YAML; see
    /// `distlab_collab::acl`). Without it every editor may read and write everything.
    #[arg(long)]
    pub acl: Option<std::path::PathBuf>,
    /// Editor: the simulated typist's edits per second (0: no typist).
    #[arg(long, default_value_t = 0.0)]
    pub type_rate: f64,
    /// Editor: the typist's random seed (mixed with the replica id, so editors differ).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// How often each side asks the other for what it lacks (anti-entropy).
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "1s")]
    pub anti_entropy: Duration,
    /// Acknowledge operations before they are on disk (faster; a crash loses them).
    #[arg(long)]
    pub no_fsync: bool,
}

#[derive(Debug, clap::Parser)]
#[command(
    name = "lab node collab",
    about = "A collab server or editor (distlab Project 6)"
)]
pub struct Cli {
    #[command(flatten)]
    pub args: CollabNodeArgs,
}

/// Checks a flag list as the lab would pass it, without starting anything.
pub fn check_flags(flags: &[String]) -> Result<(), String> {
    let mut all = vec!["--role".to_string(), "server".to_string()];
    all.extend(flags.iter().cloned());
    distlab_runtime::cli::parse_service_flags::<Cli>("collab", &all)
        .and_then(|cli| cli.args.check().map_err(|e| e.to_string()))
}

/// `lab node collab ARGS...`.
pub fn main(program: &str, args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let argv = std::iter::once(std::ffi::OsString::from(program)).chain(args);
    match <Cli as clap::Parser>::try_parse_from(argv) {
        Ok(cli) => run_blocking(cli.args),
        Err(e) => e.exit(),
    }
}

pub fn run_blocking(args: CollabNodeArgs) -> std::process::ExitCode {
    let id = args.node.id.to_string();
    distlab_runtime::node::run_main("collab", &id, "info", Threads::One, || run(args))
}

impl CollabNodeArgs {
    fn check(&self) -> Result<(), BadInput> {
        if !(0.0..=1000.0).contains(&self.type_rate) {
            return Err(BadInput::new(format!(
                "--type-rate {}: edits per second must be 0 to 1000",
                self.type_rate
            )));
        }
        if self.anti_entropy.is_zero() {
            return Err(BadInput::new("--anti-entropy must be more than 0"));
        }
        server::check_doc_name(&self.doc).map_err(|e| BadInput::new(format!("--doc: {e}")))?;
        Ok(())
    }
}

/// The servers among the peers, in `--servers` order (or id order); never this node.
fn servers(
    args: &CollabNodeArgs,
    own: &str,
    peers: &BTreeMap<distlab_runtime::cli::NodeId, SocketAddr>,
) -> Result<Vec<(String, SocketAddr)>, BadInput> {
    if args.servers.is_empty() {
        return Ok(peers
            .iter()
            .map(|(id, &addr)| (id.to_string(), addr))
            .collect());
    }
    args.servers
        .iter()
        .filter(|id| id.as_str() != own)
        .map(|id| {
            peers
                .iter()
                .find(|(peer, _)| peer.as_str() == id)
                .map(|(peer, &addr)| (peer.to_string(), addr))
                .ok_or_else(|| BadInput::new(format!("--servers {id}: not one of the --peer ids")))
        })
        .collect()
}

/// A node's replica id: a hash of its node id, the same across restarts.
pub fn replica_of(id: &str) -> ReplicaId {
    ReplicaId(distlab_runtime::hash::fnv1a(id.bytes()))
}

struct ServerStatus(server::Shared);

impl NodeStatus for ServerStatus {
    fn role(&self) -> String {
        "server".into()
    }

    fn detail(&self) -> serde_json::Value {
        self.0.lock().expect("state lock").detail()
    }
}

struct EditorStatus(editor::Shared);

impl NodeStatus for EditorStatus {
    fn role(&self) -> String {
        "editor".into()
    }

    fn detail(&self) -> serde_json::Value {
        self.0.lock().expect("editor lock").detail()
    }
}

pub async fn run(args: CollabNodeArgs) -> anyhow::Result<()> {
    args.check()?;
    let node_args = args.node.validate()?;
    let servers = servers(&args, node_args.id.as_str(), &node_args.peers)?;
    let data_dir = node_args
        .data_dir
        .clone()
        .ok_or_else(|| BadInput::new("--data-dir is required: documents are stored there"))?;
    let id = node_args.id.to_string();
    let replica = replica_of(&id);
    // Read before anything binds: a bad file is bad input.
    let acl = match &args.acl {
        Some(path) => {
            Some(crate::acl::Acl::load(path).map_err(|e| BadInput::new(format!("{e:#}")))?)
        }
        None => None,
    };
    let node = Node::bind(node_args, "proj6", "collab").await?;
    let token = node.shutdown_token();
    let store = Store::open(&data_dir, !args.no_fsync)?;
    match args.role {
        Role::Server => {
            let flusher = store.flusher();
            let state = Arc::new(Mutex::new(server::State::open(&id, replica, store, acl)?));
            let peers = servers.into_iter().collect();
            server::start_replication(&state, &peers, args.anti_entropy, &token);
            let app = server::router(state.clone(), flusher);
            node.serve_http(app, Arc::new(ServerStatus(state))).await
        }
        Role::Editor => {
            if servers.is_empty() {
                return Err(BadInput::new("an editor needs a server: give --peer ID=ADDR").into());
            }
            let user = args.user.clone().unwrap_or_else(|| id.clone());
            // e2 starts with the second server, and so on.
            let mut servers = servers;
            let number: usize = id
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .unwrap_or(1);
            let first = number.saturating_sub(1) % servers.len();
            servers.rotate_left(first);
            let editor = Arc::new(Mutex::new(editor::Editor::open(
                &args.doc,
                &user,
                &args.token,
                args.key
                    .as_deref()
                    .map(|key| crate::crypt::DocKey::new(&args.doc, key)),
                replica,
                store,
                args.seed ^ replica.0,
            )?));
            editor::start(&editor, servers, args.anti_entropy, args.type_rate, &token);
            let app = editor::router(editor.clone());
            node.serve_http(app, Arc::new(EditorStatus(editor))).await
        }
    }
}
