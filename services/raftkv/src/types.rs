//! The types Raft replicates: the commands in the log and their outcomes. (How nodes are
//! named, [`Member`] and [`raft_id`], is shared with Project 3: `distlab_raft::member`.)

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Project 2's Raft: proposals (batches of commands) in, one outcome per command out,
    /// members named, snapshots as bytes.
    pub TypeConfig:
        D = Proposal,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub use distlab_raft::{
    LogId, Member, Names, RaftId, SnapshotMeta, StorageError, StoredMembership, raft_id,
};

/// Which client sent a mutation and which of its mutations it is; retries repeat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub client: u64,
    pub seq: u64,
}

/// What a log entry carries: the mutations of one or more client requests, proposed together
/// so that one append, one flush and one replication round serve them all (openraft 0.9
/// appends and flushes each `client_write` on its own, one after another: one entry per
/// request would cost one fsync per request). Applied in order; each command gets its outcome.
/// Entries written when every entry held one command still read, as a batch of one.
/// The commands are shared: the log store keeps recent entries in memory, and openraft clones
/// an entry for each follower it replicates to and for the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ProposalOnDisk")]
pub struct Proposal {
    pub commands: Arc<[Command]>,
}

/// The two shapes a proposal has had on disk: `{"commands": [...]}`, and before batching a
/// bare command, `{"session": ..., "op": ...}`. One struct with every field reads both without
/// buffering (an untagged enum would parse each entry twice).
#[derive(Deserialize)]
struct ProposalOnDisk {
    #[serde(default)]
    commands: Option<Vec<Command>>,
    #[serde(default)]
    session: Option<Session>,
    #[serde(default)]
    op: Option<Op>,
}

impl From<ProposalOnDisk> for Proposal {
    fn from(wire: ProposalOnDisk) -> Self {
        let commands = match (wire.commands, wire.op) {
            (Some(commands), _) => commands,
            (None, Some(op)) => vec![Command {
                session: wire.session,
                op,
            }],
            (None, None) => Vec::new(),
        };
        Self {
            commands: commands.into(),
        }
    }
}

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.commands {
            [one] => write!(f, "{one}"),
            many => write!(f, "{} commands", many.len()),
        }
    }
}

/// What a client's mutation asks the state machine to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// `None`: apply every time it is proposed (no duplicate detection).
    pub session: Option<Session>,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        #[serde(with = "value_text")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Set `new` if the value is `expected` (`None`: if the key is absent).
    Cas {
        key: String,
        #[serde(with = "value_text::option")]
        expected: Option<Vec<u8>>,
        #[serde(with = "value_text")]
        new: Vec<u8>,
    },
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Put,
    Deleted {
        existed: bool,
    },
    Cas {
        swapped: bool,
        #[serde(with = "value_text::option")]
        current: Option<Vec<u8>>,
    },
    /// The session's sequence number is older than the last one applied: a late duplicate of
    /// a mutation whose answer is no longer remembered.
    Stale,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            Op::Put { key, value } => write!(f, "put {key} ({} bytes)", value.len()),
            Op::Delete { key } => write!(f, "delete {key}"),
            Op::Cas { key, .. } => write!(f, "cas {key}"),
        }
    }
}

/// Values in the log, in Raft messages and in session records are JSON; a byte string there
/// is base64 text. (serde_json writes `Vec<u8>` as an array of numbers: four times the size,
/// and most of a node's CPU at a few thousand writes a second.) Arrays written before still
/// read.
mod value_text {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("base64 text or an array of bytes")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            STANDARD.decode(text).map_err(E::custom)
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }

    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => super::serialize(bytes, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            #[derive(Deserialize)]
            struct Text(#[serde(with = "super")] Vec<u8>);
            Ok(Option::<Text>::deserialize(d)?.map(|t| t.0))
        }
    }
}
