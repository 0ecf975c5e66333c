//! The flags every node takes, whatever its service.
//!
//! The lab starts every node the same way; services add their own flags after these by
//! flattening [`NodeArgs`] into their clap struct. [`NodeArgs::validate`] runs before anything
//! binds or writes, so a typo never leaves a half-started node behind.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::BadInput;
use crate::tls::TlsFiles;

/// A node's id within its cluster: `n1`, `broker-2`... Letters, digits, `-` and `_`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a node id must not be empty".into());
        }
        if text.len() > 64 {
            return Err(format!("node id {text:?} is longer than 64 characters"));
        }
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "node id {text:?} contains {c:?}; use letters, digits, '-' and '_'"
            ));
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `--peer n2=127.0.0.1:7001`: the address this node must use to reach peer `n2`. Under the lab
/// that address is a link proxy, not the peer itself, which is how network faults get in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn parse(text: &str) -> Result<Self, String> {
        let (id, addr) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not ID=ADDR (for example n2=127.0.0.1:7001)"))?;
        let id = NodeId::parse(id)?;
        let addr = addr
            .parse()
            .map_err(|_| format!("peer {id}: {addr:?} is not an IP:PORT address"))?;
        Ok(Self { id, addr })
    }
}

/// The flags of the node contract. Services flatten this into their own clap struct.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// This node's id, unique in its cluster (letters, digits, '-' and '_').
    #[arg(long, value_parser = NodeId::parse)]
    pub id: NodeId,

    /// Address of the gRPC server. Port 0 picks a free port; the ready line tells which.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Address of the admin HTTP server (/status, /metrics, /healthz).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,

    /// Directory for this node's durable state; created if missing.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// How to reach a peer: ID=ADDR. Repeat for each peer.
    #[arg(long = "peer", value_name = "ID=ADDR", value_parser = Peer::parse)]
    pub peers: Vec<Peer>,

    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Everything [`NodeArgs::validate`] established, ready to use.
#[derive(Debug, Clone)]
pub struct ValidNodeArgs {
    pub id: NodeId,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: Option<PathBuf>,
    pub peers: BTreeMap<NodeId, SocketAddr>,
    pub tls: Option<TlsFiles>,
}

impl NodeArgs {
    /// Checks what clap cannot: peers are unique and not this node, the data dir is a usable
    /// directory, the TLS files exist and parse. Creates the data dir if it is missing.
    pub fn validate(&self) -> Result<ValidNodeArgs, BadInput> {
        let mut peers = BTreeMap::new();
        for peer in &self.peers {
            if peer.id == self.id {
                return Err(BadInput(format!(
                    "--peer {}={}: a node is not its own peer (--id is {})",
                    peer.id, peer.addr, self.id
                )));
            }
            if peers.insert(peer.id.clone(), peer.addr).is_some() {
                return Err(BadInput(format!(
                    "--peer {}: given more than once",
                    peer.id
                )));
            }
        }
        if let Some(dir) = &self.data_dir {
            prepare_data_dir(dir)?;
        }
        Ok(ValidNodeArgs {
            id: self.id.clone(),
            listen: self.listen,
            admin: self.admin,
            data_dir: self.data_dir.clone(),
            peers,
            tls: self.tls.load()?,
        })
    }
}

/// Parses a service's own flags alone, as a user adds them to every node of a cluster
/// (`--read-mode lease`): the node contract's flags get placeholder values. `Err` is clap's
/// first line, without its `error: ` prefix. The service's parser should let a flag given
/// twice override itself (`args_override_self`), so later flags can override earlier ones.
pub fn parse_service_flags<P: clap::Parser>(program: &str, flags: &[String]) -> Result<P, String> {
    let contract = [
        "--id",
        "placeholder",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ];
    let argv = std::iter::once(program)
        .chain(contract)
        .chain(flags.iter().map(String::as_str));
    P::try_parse_from(argv).map_err(|e| {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        first.strip_prefix("error: ").unwrap_or(first).to_string()
    })
}

/// Makes sure `dir` is a directory this process can write, creating it if needed.
pub fn prepare_data_dir(dir: &Path) -> Result<(), BadInput> {
    let shown = dir.display();
    if dir.exists() && !dir.is_dir() {
        return Err(BadInput(format!(
            "--data-dir {shown}: exists but is not a directory"
        )));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| BadInput(format!("--data-dir {shown}: cannot create it: {e}")))?;
    let probe = dir.join(".distlab-write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| BadInput(format!("--data-dir {shown}: not writable: {e}")))?;
    Ok(())
}

/// mTLS flags: all three or none. Plain TCP is the default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate this process presents (enables mTLS with --tls-key and --tls-ca).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM certificate of the CA the other side's certificate must be signed by.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Reads the three files, or returns `None` when none was given.
    pub fn load(&self) -> Result<Option<TlsFiles>, BadInput> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => TlsFiles::read(cert, key, ca).map(Some),
            _ => Err(BadInput(
                "--tls-cert, --tls-key and --tls-ca go together: give all three or none".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        node: NodeArgs,
    }

    fn parse(args: &[&str]) -> Result<NodeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("node").chain(args.iter().copied())).map(|c| c.node)
    }

    #[test]
    fn defaults_bind_loopback_port_zero() {
        let args = parse(&["--id", "n1"]).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:0");
        assert_eq!(args.admin.to_string(), "127.0.0.1:0");
        assert!(args.validate().unwrap().tls.is_none());
    }

    #[test]
    fn malformed_peer_names_the_problem() {
        let err = parse(&["--id", "n1", "--peer", "n2:7000"]).unwrap_err();
        assert!(err.to_string().contains("is not ID=ADDR"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = parse(&["--id", "n1", "--peer", "n2=localhost"]).unwrap_err();
        assert!(err.to_string().contains("not an IP:PORT"), "{err}");
    }

    #[test]
    fn bad_node_ids_are_refused() {
        assert!(parse(&["--id", "n 1"]).is_err());
        assert!(parse(&["--id", ""]).is_err());
        assert!(NodeId::parse("broker-2_a").is_ok());
    }

    #[test]
    fn own_and_duplicate_peers_are_refused() {
        let own = parse(&["--id", "n1", "--peer", "n1=127.0.0.1:1"]).unwrap();
        assert!(own.validate().unwrap_err().0.contains("not its own peer"));
        let dup = parse(&[
            "--id",
            "n1",
            "--peer",
            "n2=127.0.0.1:1",
            "--peer",
            "n2=127.0.0.1:2",
        ])
        .unwrap();
        assert!(dup.validate().unwrap_err().0.contains("more than once"));
    }

    #[test]
    fn data_dir_that_is_a_file_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        let args = parse(&["--id", "n1", "--data-dir", path]).unwrap();
        let err = args.validate().unwrap_err().0;
        assert!(
            err.contains("not a directory") && err.contains(path),
            "{err}"
        );
    }

    #[test]
    fn partial_tls_flags_are_refused() {
        let args = parse(&["--id", "n1", "--tls-cert", "c.pem"]).unwrap();
        assert!(args.validate().unwrap_err().0.contains("go together"));
    }
}
