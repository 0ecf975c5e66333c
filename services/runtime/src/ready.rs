//! The one line a node prints when it is ready to serve.
//!
//! Nodes bind port 0 and report the ports they got, so the lab never races another process for
//! a port. The line is the first `{"event":"ready",...}` JSON object on the node's stdout; log
//! lines may come before it and after it.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::cli::NodeId;

/// `{"event":"ready","id":"n1","grpc":"127.0.0.1:PORT","admin":"127.0.0.1:PORT","pid":123}`.
/// Services with more listeners (gossip, memcached) add them under `extra`, flattened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub event: String,
    pub id: NodeId,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub pid: u32,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Ready {
    pub const EVENT: &'static str = "ready";

    pub fn new(id: NodeId, grpc: SocketAddr, admin: SocketAddr) -> Self {
        Self {
            event: Self::EVENT.to_string(),
            id,
            grpc,
            admin,
            pid: std::process::id(),
            extra: serde_json::Map::new(),
        }
    }

    /// Reads a ready line; `None` for any other line (a log line, garbage).
    pub fn parse(line: &str) -> Option<Self> {
        let ready: Self = serde_json::from_str(line.trim()).ok()?;
        (ready.event == Self::EVENT).then_some(ready)
    }

    /// Prints the line on stdout in one write, so it never interleaves with a log line.
    pub fn announce(&self) {
        use std::io::Write;
        let mut line = serde_json::to_string(self).expect("a ready line always serializes");
        line.push('\n');
        let mut out = std::io::stdout().lock();
        // If stdout is gone there is nobody to tell; serving is still right.
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_documented_shape() {
        let ready = Ready::new(
            NodeId::parse("n1").unwrap(),
            "127.0.0.1:7000".parse().unwrap(),
            "127.0.0.1:7001".parse().unwrap(),
        );
        let line = serde_json::to_string(&ready).unwrap();
        assert!(line.starts_with(
            r#"{"event":"ready","id":"n1","grpc":"127.0.0.1:7000","admin":"127.0.0.1:7001","pid":"#
        ));
        assert_eq!(Ready::parse(&line), Some(ready));
    }

    #[test]
    fn other_lines_are_not_ready() {
        assert!(Ready::parse(r#"{"level":"INFO","message":"hello"}"#).is_none());
        assert!(Ready::parse(r#"{"event":"became_leader","id":"n1"}"#).is_none());
        assert!(Ready::parse("not json").is_none());
    }
}
