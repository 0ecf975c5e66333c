//! The sync protocol: what editors and servers say to each other over a WebSocket, and what
//! one side of a connection does with what it hears. Editors and servers speak the same
//! protocol; a server replicating to another server is, to it, one more peer.
//!
//! Causal broadcast by anti-entropy: each side tells the other what it holds (a version
//! vector, in `Hello` and then `Sync`); the other answers with exactly the operations beyond
//! it (`Ops`, a delta, never the whole document). Live edits are pushed as they happen to
//! every peer not known to hold them. Operations travel in the order their sender integrated
//! them, so a receiver rarely buffers; one that arrives early waits in the document's pending
//! buffer. A lost connection loses nothing: on reconnect the `Hello` exchange sends what was
//! missed. A server acknowledges what it holds durably (`Ack`), which is what an editor may
//! count as saved.
//!
//! ```text
//! frame    = kind:u8 doc:str body                 (one WebSocket binary message)
//! Hello  1   user:str token:str replica:varint version   opens the document here
//! Sync   2   version                              "I hold this; send me what I lack"
//! Ops    3   count:varint op*                     operations (codec records)
//! Ack    4   version                              the server holds this durably
//! Presence 5 replica:varint user:str cursor:varint  (cursor + 1; 0 = none; not stored)
//! Refused  6 reason:str                           the last message was refused, and why
//! version  = count:varint (replica:varint held:varint)*
//! ```

use crate::Applied;
use crate::causal::{ReplicaId, VersionVector};
use crate::codec::{self, DecodeError, Decoder};
use crate::doc::Doc;
use crate::error::OpError;
use crate::op::Op;

const HELLO: u8 = 1;
const SYNC: u8 = 2;
const OPS: u8 = 3;
const ACK: u8 = 4;
const PRESENCE: u8 = 5;
const REFUSED: u8 = 6;

/// Longest document name, user name or refusal reason accepted.
pub const MAX_NAME: usize = 256;
const MAX_REASON: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Opens `doc` on this connection: who speaks, and what it holds.
    Hello {
        user: String,
        /// What proves it is `user` (`--acl` on the server); empty where none is needed.
        token: String,
        replica: ReplicaId,
        version: VersionVector,
    },
    /// What the sender holds; the receiver answers with what lies beyond it.
    Sync { version: VersionVector },
    /// Operations, in an order the receiver can apply.
    Ops(Vec<Op>),
    /// The server holds `version` durably.
    Ack { version: VersionVector },
    /// Where a user's cursor is, as a character position; ephemeral, never stored.
    Presence {
        replica: ReplicaId,
        user: String,
        cursor: Option<u64>,
    },
    /// The receiver's last message was refused.
    Refused { reason: String },
}

/// A message about one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub doc: String,
    pub message: Message,
}

impl Frame {
    pub fn new(doc: &str, message: Message) -> Frame {
        Frame {
            doc: doc.to_string(),
            message,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let kind = match &self.message {
            Message::Hello { .. } => HELLO,
            Message::Sync { .. } => SYNC,
            Message::Ops(_) => OPS,
            Message::Ack { .. } => ACK,
            Message::Presence { .. } => PRESENCE,
            Message::Refused { .. } => REFUSED,
        };
        out.push(kind);
        codec::put_string(&mut out, &self.doc);
        match &self.message {
            Message::Hello {
                user,
                token,
                replica,
                version,
            } => {
                codec::put_string(&mut out, user);
                codec::put_string(&mut out, token);
                codec::put_varint(&mut out, replica.0);
                codec::put_version(&mut out, version);
            }
            Message::Sync { version } | Message::Ack { version } => {
                codec::put_version(&mut out, version)
            }
            Message::Ops(ops) => {
                codec::put_varint(&mut out, ops.len() as u64);
                for op in ops {
                    codec::encode_op(op, &mut out);
                }
            }
            Message::Presence {
                replica,
                user,
                cursor,
            } => {
                codec::put_varint(&mut out, replica.0);
                codec::put_string(&mut out, user);
                codec::put_varint(&mut out, cursor.map_or(0, |c| c + 1));
            }
            Message::Refused { reason } => codec::put_string(&mut out, reason),
        }
        out
    }

    /// One frame, all of `bytes`; a frame with bytes left over is refused too.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let mut d = Decoder::new(bytes);
        let kind = d.byte()?;
        let doc = d.string("document name", MAX_NAME)?;
        let message = match kind {
            HELLO => Message::Hello {
                user: d.string("user name", MAX_NAME)?,
                token: d.string("token", MAX_NAME)?,
                replica: ReplicaId(d.varint()?),
                version: d.version()?,
            },
            SYNC => Message::Sync {
                version: d.version()?,
            },
            OPS => {
                let mut ops = Vec::new();
                for _ in 0..d.length("operation")? {
                    ops.push(d.op()?);
                }
                Message::Ops(ops)
            }
            ACK => Message::Ack {
                version: d.version()?,
            },
            PRESENCE => Message::Presence {
                replica: ReplicaId(d.varint()?),
                user: d.string("user name", MAX_NAME)?,
                cursor: d.varint()?.checked_sub(1),
            },
            REFUSED => Message::Refused {
                reason: d.string("reason", MAX_REASON)?,
            },
            kind => return Err(d.error(format!("unknown message kind {kind}"))),
        };
        if !d.at_end() {
            return Err(d.error("bytes after the end of the message"));
        }
        Ok(Frame { doc, message })
    }
}

/// One side's view of one peer for one document: what the peer is known to hold, so that
/// nothing is sent twice and nothing it lacks is left unsent.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    known: VersionVector,
}

/// What applying a peer's operations did.
#[derive(Debug, Default)]
pub struct Received {
    /// Operations newly integrated here (the received ones, and any pending ones they
    /// released), in causal order: what to store and pass on.
    pub integrated: Vec<Op>,
    /// Operations refused, with why; the rest still applied.
    pub refused: Vec<OpError>,
}

impl PeerState {
    pub fn new() -> PeerState {
        PeerState::default()
    }

    /// What the peer is known to hold.
    pub fn known(&self) -> &VersionVector {
        &self.known
    }

    /// The peer said it holds `version` (`Hello`, `Sync`): the operations it lacks.
    pub fn on_version(&mut self, doc: &Doc, version: &VersionVector) -> Vec<Op> {
        self.known.merge(version);
        let delta = doc.ops_since(&self.known);
        self.sent(&delta);
        delta
    }

    /// Of newly integrated `ops`, those the peer is not known to hold (and from now on is).
    pub fn forward(&mut self, ops: &[Op]) -> Vec<Op> {
        let mut out = Vec::new();
        for op in ops {
            let held = self.known.get(op.id.replica);
            if op.end().seq <= held {
                continue;
            }
            out.push(if op.id.seq >= held {
                op.clone()
            } else {
                op.suffix_from(held - op.id.seq)
            });
        }
        self.sent(&out);
        out
    }

    /// The peer sent `ops`: it holds them. Applies each to `doc`.
    pub fn receive(&mut self, doc: &mut Doc, ops: Vec<Op>) -> Received {
        let before = doc.version().clone();
        let mut received = Received::default();
        for op in ops {
            let (replica, end) = (op.id.replica, op.end().seq);
            match doc.apply(op) {
                Ok(Applied::Integrated | Applied::Duplicate | Applied::Pending) => {
                    self.known.advance(replica, end)
                }
                Err(error) => received.refused.push(error),
            }
        }
        if doc.version() != &before {
            received.integrated = doc.ops_since(&before);
        }
        received
    }

    /// The peer holds `replica`'s first `count` operations (it sent them by another way).
    pub fn holds(&mut self, replica: ReplicaId, count: u64) {
        self.known.advance(replica, count);
    }

    fn sent(&mut self, ops: &[Op]) {
        for op in ops {
            self.known.advance(op.id.replica, op.end().seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causal::Dot;

    fn frames() -> Vec<Frame> {
        let mut doc = Doc::new(ReplicaId(7));
        let op = doc.insert(0, "héllo").unwrap().unwrap();
        let version: VersionVector = [(ReplicaId(7), 5), (ReplicaId(u64::MAX), 1)]
            .into_iter()
            .collect();
        vec![
            Frame::new(
                "notes",
                Message::Hello {
                    user: "ada".into(),
                    token: "s3cret".into(),
                    replica: ReplicaId(7),
                    version: version.clone(),
                },
            ),
            Frame::new(
                "notes",
                Message::Sync {
                    version: version.clone(),
                },
            ),
            Frame::new("notes", Message::Ops(vec![op])),
            Frame::new("notes", Message::Ops(Vec::new())),
            Frame::new("notes", Message::Ack { version }),
            Frame::new(
                "notes",
                Message::Presence {
                    replica: ReplicaId(7),
                    user: "ada".into(),
                    cursor: Some(0),
                },
            ),
            Frame::new(
                "notes",
                Message::Presence {
                    replica: ReplicaId(7),
                    user: "ada".into(),
                    cursor: None,
                },
            ),
            Frame::new(
                "ü",
                Message::Refused {
                    reason: "no".into(),
                },
            ),
        ]
    }

    #[test]
    fn frames_round_trip() {
        for frame in frames() {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn damaged_frames_are_refused_with_the_place() {
        let bytes = frames()[0].encode();
        // Every truncation is refused, never a panic or a shorter frame.
        for cut in 0..bytes.len() {
            assert!(Frame::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        let error = Frame::decode(&extra).unwrap_err();
        assert_eq!(error.offset, bytes.len());
        assert!(error.reason.contains("bytes after the end"), "{error}");
        let mut kind = bytes;
        kind[0] = 42;
        assert!(
            Frame::decode(&kind)
                .unwrap_err()
                .reason
                .contains("unknown message kind 42")
        );
        let long_name = Frame::new(
            &"x".repeat(MAX_NAME + 1),
            Message::Sync {
                version: VersionVector::new(),
            },
        );
        assert!(
            Frame::decode(&long_name.encode())
                .unwrap_err()
                .reason
                .contains("over the limit")
        );
    }

    /// Two replicas and a relay between them, as an editor, a server and an editor.
    #[test]
    fn a_version_exchange_sends_exactly_what_is_missing() {
        let mut a = Doc::new(ReplicaId(1));
        let mut server = Doc::new(ReplicaId(100));
        let mut b = Doc::new(ReplicaId(2));
        let op1 = a.insert(0, "abc").unwrap().unwrap();
        let op2 = a.insert(3, "def").unwrap().unwrap();
        let (mut server_sees_a, mut a_sees_server) = (PeerState::new(), PeerState::new());
        let mut server_sees_b = PeerState::new();

        // a says hello with nothing known of the server: the server holds nothing to send.
        assert!(server_sees_a.on_version(&server, a.version()).is_empty());
        // The server says hello: a sends everything it has, once, as one op (typing merges).
        let delta = a_sees_server.on_version(&a, server.version());
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0].len(), 6);
        assert!(
            a_sees_server.forward(&[op1, op2]).is_empty(),
            "already sent"
        );
        let received = server_sees_a.receive(&mut server, delta);
        assert_eq!(received.integrated.len(), 1);
        assert!(received.refused.is_empty());
        // Relayed to b, but never back to a, which holds it.
        assert!(server_sees_a.forward(&received.integrated).is_empty());
        let to_b = server_sees_b.forward(&received.integrated);
        PeerState::new().receive(&mut b, to_b);
        assert_eq!(b.text(), "abcdef");

        // b, offline, types; a types; each catches up with a delta of the other's edit only.
        let b_op = b.insert(0, ">").unwrap().unwrap();
        let a_op = a.insert(6, "!").unwrap().unwrap();
        server_sees_a.receive(&mut server, vec![a_op]);
        server_sees_b.receive(&mut server, vec![b_op]);
        let to_a = server_sees_a.on_version(&server, a.version());
        assert_eq!(to_a.len(), 1, "only b's insertion: {to_a:?}");
        assert_eq!(to_a[0].id, Dot::new(ReplicaId(2), 0));
        PeerState::new().receive(&mut a, to_a);
        let to_b = server_sees_b.on_version(&server, b.version());
        assert_eq!(to_b.len(), 1, "only a's insertion: {to_b:?}");
        PeerState::new().receive(&mut b, to_b);
        assert_eq!(a.text(), ">abcdef!");
        assert_eq!(b.text(), a.text());
        assert_eq!(server.text(), a.text());
    }

    #[test]
    fn a_partly_held_operation_is_sent_from_where_the_peer_stops() {
        let mut a = Doc::new(ReplicaId(1));
        a.insert(0, "abc").unwrap();
        let mut b = Doc::new(ReplicaId(2));
        let mut peer = PeerState::new();
        PeerState::new().receive(&mut b, a.ops_since(&VersionVector::new()));
        a.insert(3, "def").unwrap();
        // a's log holds one run "abcdef"; b holds the first 3.
        assert_eq!(a.history().len(), 1);
        let delta = peer.on_version(&a, b.version());
        assert_eq!(delta.len(), 1);
        assert_eq!(delta[0].id, Dot::new(ReplicaId(1), 3));
        assert_eq!(delta[0].len(), 3);
        PeerState::new().receive(&mut b, delta);
        assert_eq!(b.text(), "abcdef");
    }

    #[test]
    fn refused_operations_are_reported_and_the_rest_applied() {
        let mut a = Doc::new(ReplicaId(1));
        let good = a.insert(0, "ok").unwrap().unwrap();
        // An insertion naming an origin nobody made, with no parents to wait for.
        let forged = Op::insert(
            Dot::new(ReplicaId(3), 0),
            crate::Frontier::new(),
            Some(Dot::new(ReplicaId(9), 5)),
            None,
            "x".into(),
        );
        let mut b = Doc::new(ReplicaId(2));
        let received = PeerState::new().receive(&mut b, vec![forged, good]);
        assert_eq!(received.refused.len(), 1, "{:?}", received.refused);
        assert_eq!(received.integrated.len(), 1);
        assert_eq!(b.text(), "ok");
    }
}
