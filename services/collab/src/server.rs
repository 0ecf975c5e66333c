//! `--role server`: a relay and durable store for documents, replicating to the other servers.
//!
//! - Editors connect to `/doc` (WebSocket) and open documents with `Hello`; the browser client
//!   is served at `/` and connects there too.
//! - Servers connect to each other's `/replicate`. Each server dials every `--peer` and uses
//!   its own connection to push new operations and to pull (`Sync` every `--anti-entropy`);
//!   on a connection it accepted it only answers. So each direction of replication goes
//!   through the dialler's link (the lab's proxy), and a server that missed messages catches
//!   up by the next pull, with deltas only.
//! - An editor's operations are acknowledged (`Ack`) once stored durably; relayed at once.
//!
//! All documents live in one [`State`] behind a mutex: every handler holds it only to apply
//! a message and queue what to send (unbounded per-connection queues, never awaited under
//! the lock); flushing to disk happens outside it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::acl::{Access, Acl};
use crate::causal::{ReplicaId, VersionVector};
use crate::doc::Doc;
use crate::op::Op;
use crate::store::{Damage, Store};
use crate::sync::{Frame, Message, PeerState};
use crate::wire;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An editor (or a browser tab): pushed every new operation, acknowledged.
    Editor,
    /// A server that dialled us: answered, never pushed to.
    ServerIn,
    /// A server we dialled: pushed to, pulled from.
    ServerOut(String),
}

type ConnId = u64;

struct Conn {
    kind: Kind,
    tx: mpsc::UnboundedSender<Frame>,
    /// Per document open on this connection, what the peer holds.
    docs: HashMap<String, PeerState>,
    /// The replica an editor said it is: the only one whose operations it may introduce.
    replica: Option<ReplicaId>,
    /// The documents an editor may only read.
    read_only: std::collections::BTreeSet<String>,
    user: String,
}

/// Byte and operation counts for the delta-sync figures.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Traffic {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub ops_sent: u64,
    pub bytes_received: u64,
    pub ops_received: u64,
}

pub struct State {
    id: String,
    replica: ReplicaId,
    docs: BTreeMap<String, Doc>,
    store: Store,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    damage: Vec<Damage>,
    refused: u64,
    traffic: Traffic,
    acl: Option<Acl>,
}

pub type Shared = Arc<Mutex<State>>;

/// A document name: 1 to 64 of letters, digits, `-`, `_` and `.`.
pub fn check_doc_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("document name {name:?} must be 1 to 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "document name {name:?} contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

impl State {
    /// Opens the store in `data_dir` and loads every document; damage is reported, not fatal.
    pub fn open(
        id: &str,
        replica: ReplicaId,
        store: Store,
        acl: Option<Acl>,
    ) -> anyhow::Result<State> {
        let mut store = store;
        let mut docs = BTreeMap::new();
        let mut damage = Vec::new();
        for loaded in store.load(replica)? {
            for d in &loaded.damage {
                tracing::error!(event = "store_damage", doc = %d.doc, record = d.record, reason = %d.reason, "{d}");
            }
            damage.extend(loaded.damage);
            docs.insert(loaded.name, loaded.doc);
        }
        Ok(State {
            id: id.to_string(),
            replica,
            docs,
            store,
            conns: HashMap::new(),
            next_conn: 0,
            damage,
            refused: 0,
            traffic: Traffic::default(),
            acl,
        })
    }

    fn send(&mut self, conn: ConnId, frame: Frame) {
        if let Some(c) = self.conns.get(&conn) {
            if let Message::Ops(ops) = &frame.message {
                self.traffic.ops_sent += ops.len() as u64;
            }
            self.traffic.frames_sent += 1;
            let _ = c.tx.send(frame);
        }
    }

    fn connect(&mut self, kind: Kind, tx: mpsc::UnboundedSender<Frame>) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let announce = matches!(kind, Kind::ServerOut(_));
        self.conns.insert(
            conn,
            Conn {
                kind,
                tx,
                docs: HashMap::new(),
                replica: None,
                read_only: Default::default(),
                user: String::new(),
            },
        );
        if announce {
            let names: Vec<String> = self.docs.keys().cloned().collect();
            for name in names {
                self.hello_to(conn, &name);
            }
        }
        conn
    }

    fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// Opens `doc` towards a server we dialled: our Hello, which it answers with a delta.
    fn hello_to(&mut self, conn: ConnId, doc: &str) {
        let version = self
            .docs
            .get(doc)
            .map(|d| d.version().clone())
            .unwrap_or_default();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.docs.entry(doc.to_string()).or_default();
        }
        let hello = Message::Hello {
            user: format!("server:{}", self.id),
            token: self.server_token(),
            replica: self.replica,
            version,
        };
        self.send(conn, Frame::new(doc, hello));
    }

    /// Handles one frame from `conn`; what it returns must be made durable and then
    /// acknowledged: (document, version to acknowledge).
    fn receive(
        &mut self,
        conn: ConnId,
        frame: Frame,
        bytes: usize,
    ) -> Option<(String, VersionVector)> {
        self.traffic.bytes_received += bytes as u64;
        let Frame { doc: name, message } = frame;
        let kind = self.conns.get(&conn)?.kind.clone();
        match message {
            Message::Hello {
                user,
                token,
                replica,
                version,
            } => {
                if let Err(reason) = check_doc_name(&name) {
                    self.refuse(conn, &name, reason);
                    return None;
                }
                let access = match (&self.acl, &kind) {
                    (Some(acl), Kind::Editor) => acl.check(&user, &token, &name),
                    (Some(acl), Kind::ServerIn) => acl.check_server(&token).map(|()| Access::Write),
                    _ => Ok(Access::Write),
                };
                let access = match access {
                    Ok(access) => access,
                    Err(reason) => {
                        self.refuse(conn, &name, reason);
                        return None;
                    }
                };
                if access == Access::Read {
                    self.conns.get_mut(&conn)?.read_only.insert(name.clone());
                }
                let created = !self.docs.contains_key(&name);
                let doc = self
                    .docs
                    .entry(name.clone())
                    .or_insert_with(|| Doc::new(self.replica));
                let c = self.conns.get_mut(&conn)?;
                if kind == Kind::Editor {
                    c.replica = Some(replica);
                }
                c.user = user;
                let peer = c.docs.entry(name.clone()).or_default();
                let delta = peer.on_version(doc, &version);
                let our_version = doc.version().clone();
                // Our version, so the peer pushes what we lack; not back to a server that is
                // answering our own Hello (it already knows it).
                if !matches!(kind, Kind::ServerOut(_)) {
                    let hello = Message::Hello {
                        user: format!("server:{}", self.id),
                        token: self.server_token(),
                        replica: self.replica,
                        version: our_version,
                    };
                    self.send(conn, Frame::new(&name, hello));
                }
                if !delta.is_empty() {
                    self.send(conn, Frame::new(&name, Message::Ops(delta)));
                }
                if created {
                    // Other regions learn of the document.
                    let outs: Vec<ConnId> = self.server_outs();
                    for out in outs {
                        self.hello_to(out, &name);
                    }
                }
                None
            }
            Message::Sync { version } => {
                let opened = self.conns.get(&conn)?.docs.contains_key(&name);
                let (Some(doc), true) = (self.docs.get(&name), opened) else {
                    self.refuse_unopened(conn, &name);
                    return None;
                };
                let peer = self.conns.get_mut(&conn)?.docs.get_mut(&name)?;
                let delta = peer.on_version(doc, &version);
                if !delta.is_empty() {
                    self.send(conn, Frame::new(&name, Message::Ops(delta)));
                }
                None
            }
            Message::Ops(ops) => self.receive_ops(conn, &kind, &name, ops),
            Message::Presence {
                replica,
                user,
                cursor,
            } => {
                if !self.conns.get(&conn)?.docs.contains_key(&name) {
                    self.refuse_unopened(conn, &name);
                    return None;
                }
                if kind == Kind::Editor && self.conns.get(&conn)?.replica != Some(replica) {
                    self.refuse(
                        conn,
                        &name,
                        format!("presence for replica {replica}, which this connection is not"),
                    );
                    return None;
                }
                let to: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|&(&id, c)| {
                        id != conn
                            && c.docs.contains_key(&name)
                            && (c.kind == Kind::Editor
                                || (kind == Kind::Editor && matches!(c.kind, Kind::ServerOut(_))))
                    })
                    .map(|(&id, _)| id)
                    .collect();
                for id in to {
                    let presence = Message::Presence {
                        replica,
                        user: user.clone(),
                        cursor,
                    };
                    self.send(id, Frame::new(&name, presence));
                }
                None
            }
            Message::Ack { .. } => None,
            Message::Refused { reason } => {
                tracing::warn!(event = "refused_by_peer", doc = %name, %reason, "a peer refused our message");
                None
            }
        }
    }

    fn receive_ops(
        &mut self,
        conn: ConnId,
        kind: &Kind,
        name: &str,
        ops: Vec<Op>,
    ) -> Option<(String, VersionVector)> {
        self.traffic.ops_received += ops.len() as u64;
        let c = self.conns.get_mut(&conn)?;
        if !c.docs.contains_key(name) {
            self.refuse_unopened(conn, name);
            return None;
        }
        if c.read_only.contains(name) {
            let reason = format!(
                "user {:?} may only read document {name:?}: operations refused",
                c.user
            );
            self.refuse(conn, name, reason);
            return None;
        }
        // An editor introduces only its own operations: anything else is a forgery.
        if *kind == Kind::Editor {
            let own = c.replica;
            if let Some(op) = ops.iter().find(|op| Some(op.id.replica) != own) {
                let reason = format!(
                    "operation {} is not of replica {}, which this editor said it is: refused",
                    op.id,
                    own.map_or("?".into(), |r| r.to_string())
                );
                self.refuse(conn, name, reason);
                return None;
            }
        }
        let held: Vec<(ReplicaId, u64)> =
            ops.iter().map(|op| (op.id.replica, op.end().seq)).collect();
        let from_server = c.user.strip_prefix("server:").map(str::to_string);
        let doc = self.docs.get_mut(name)?;
        let peer = c.docs.get_mut(name)?;
        let received = peer.receive(doc, ops);
        // A server that pushed these to us holds them: our own connection to it must not
        // send them back.
        if let (Kind::ServerIn, Some(server)) = (kind, from_server) {
            for c in self.conns.values_mut() {
                if c.kind == Kind::ServerOut(server.clone())
                    && let Some(peer) = c.docs.get_mut(name)
                {
                    for &(replica, count) in &held {
                        peer.holds(replica, count);
                    }
                }
            }
        }
        let version = doc.version().clone();
        for error in &received.refused {
            tracing::warn!(event = "op_refused", doc = %name, %error, "refused an operation");
        }
        if !received.refused.is_empty() {
            let reasons: Vec<String> = received.refused.iter().map(ToString::to_string).collect();
            self.refuse(conn, name, reasons.join("; "));
        }
        if received.integrated.is_empty() {
            // Nothing new (duplicates, or waiting for history): what we hold is durable.
            return (*kind == Kind::Editor).then(|| (name.to_string(), version));
        }
        if let Err(error) = self.store.append(name, &received.integrated) {
            tracing::error!(event = "store_failed", doc = %name, error = %format!("{error:#}"), "could not store operations");
            return None;
        }
        // Pushed to every editor and every server we dialled that does not hold them.
        let targets: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|&(&id, c)| id != conn && c.docs.contains_key(name) && c.kind != Kind::ServerIn)
            .map(|(&id, _)| id)
            .collect();
        for id in targets {
            let Some(peer) = self.conns.get_mut(&id).and_then(|c| c.docs.get_mut(name)) else {
                continue;
            };
            let out = peer.forward(&received.integrated);
            if !out.is_empty() {
                self.send(id, Frame::new(name, Message::Ops(out)));
            }
        }
        (*kind == Kind::Editor).then(|| (name.to_string(), version))
    }

    /// What this server presents to the servers it dials.
    fn server_token(&self) -> String {
        self.acl
            .as_ref()
            .map_or(String::new(), |acl| acl.server_token().to_string())
    }

    fn refuse_unopened(&mut self, conn: ConnId, doc: &str) {
        self.refuse(
            conn,
            doc,
            format!("document {doc:?} is not open: send Hello first"),
        );
    }

    fn refuse(&mut self, conn: ConnId, doc: &str, reason: String) {
        self.refused += 1;
        tracing::warn!(event = "refused", doc, %reason, "refused a message");
        self.send(conn, Frame::new(doc, Message::Refused { reason }));
    }

    fn server_outs(&self) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(c.kind, Kind::ServerOut(_)))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Anti-entropy: every server we dialled is asked for what we lack of every document.
    fn pull(&mut self) {
        let outs = self.server_outs();
        for conn in outs {
            let names: Vec<String> = self.docs.keys().cloned().collect();
            for name in names {
                let opened = self
                    .conns
                    .get(&conn)
                    .is_some_and(|c| c.docs.contains_key(&name));
                if !opened {
                    self.hello_to(conn, &name);
                    continue;
                }
                let version = self.docs[&name].version().clone();
                self.send(conn, Frame::new(&name, Message::Sync { version }));
            }
        }
    }

    /// The `/status` detail.
    pub fn detail(&self) -> serde_json::Value {
        let docs: Vec<serde_json::Value> = self
            .docs
            .iter()
            .map(|(name, doc)| {
                let editors = self
                    .conns
                    .values()
                    .filter(|c| c.kind == Kind::Editor && c.docs.contains_key(name))
                    .count();
                // Where each replica's characters stand: what the lab compares with the
                // order each editor typed its own in (`collab_intention`).
                let orders: serde_json::Map<String, serde_json::Value> = doc
                    .orders()
                    .iter()
                    .map(|(replica, order)| (replica.to_string(), order.to_json()))
                    .collect();
                crate::status::doc_detail(
                    name,
                    doc,
                    serde_json::json!({ "editors": editors, "orders": orders }),
                )
            })
            .collect();
        let servers: Vec<String> = self
            .conns
            .values()
            .filter_map(|c| match &c.kind {
                Kind::ServerOut(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        serde_json::json!({
            "replica": self.replica.0,
            "docs": docs,
            "connections": self.conns.len(),
            "servers_connected": servers,
            "refused": self.refused,
            "store_damage": self.damage.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "traffic": self.traffic,
        })
    }
}

/// Serves one WebSocket connection of `kind` until it closes.
async fn serve_socket(
    state: Shared,
    kind: Kind,
    flusher: distlab_runtime::flusher::Flusher,
    socket: WebSocket,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let conn = state.lock().expect("state lock").connect(kind, tx.clone());
    let state_out = state.clone();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let bytes = frame.encode();
            state_out.lock().expect("state lock").traffic.bytes_sent += bytes.len() as u64;
            if sink.send(WsMessage::Binary(bytes.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let bytes = match message {
            WsMessage::Binary(bytes) => bytes,
            WsMessage::Close(_) => break,
            _ => continue,
        };
        let to_ack = match Frame::decode(&bytes) {
            Ok(frame) => state
                .lock()
                .expect("state lock")
                .receive(conn, frame, bytes.len()),
            Err(error) => {
                let mut s = state.lock().expect("state lock");
                s.refuse(conn, "", format!("not a sync frame: {error}"));
                None
            }
        };
        if let Some((doc, version)) = to_ack {
            let tx = tx.clone();
            let flusher = flusher.clone();
            // Acknowledged once on disk; the next frame is handled meanwhile.
            tokio::spawn(async move {
                if flusher.flush().await.is_ok() {
                    let _ = tx.send(Frame::new(&doc, Message::Ack { version }));
                }
            });
        }
    }
    state.lock().expect("state lock").disconnect(conn);
    drop(tx);
    let _ = writer.await;
}

/// Our connection to server `peer`: we push and pull on it; redialled when it ends.
struct Replication {
    state: Shared,
    peer: String,
    addr: SocketAddr,
    conn: Option<ConnId>,
}

impl wire::Dialler for Replication {
    fn target(&mut self) -> (String, String) {
        (self.peer.clone(), format!("ws://{}/replicate", self.addr))
    }

    fn opened(&mut self, peer: &str, tx: mpsc::UnboundedSender<Frame>) {
        tracing::info!(event = "server_connected", %peer, "replicating");
        let kind = Kind::ServerOut(peer.to_string());
        self.conn = Some(self.state.lock().expect("state lock").connect(kind, tx));
    }

    fn received(
        &mut self,
        peer: &str,
        frame: Result<Frame, crate::codec::DecodeError>,
        bytes: usize,
    ) {
        let Some(conn) = self.conn else { return };
        match frame {
            Ok(frame) => {
                self.state
                    .lock()
                    .expect("state lock")
                    .receive(conn, frame, bytes);
            }
            Err(error) => {
                tracing::warn!(event = "bad_frame", %peer, %error, "a server sent a damaged frame")
            }
        }
    }

    fn sent(&mut self, bytes: usize) {
        self.state.lock().expect("state lock").traffic.bytes_sent += bytes as u64;
    }

    fn closed(&mut self, peer: &str) {
        if let Some(conn) = self.conn.take() {
            self.state.lock().expect("state lock").disconnect(conn);
        }
        tracing::info!(event = "server_disconnected", %peer, "lost the connection; redialling");
    }
}

#[derive(Clone)]
struct App {
    state: Shared,
    flusher: distlab_runtime::flusher::Flusher,
}

/// The HTTP side: the browser page, editors' and servers' WebSockets.
pub fn router(state: Shared, flusher: distlab_runtime::flusher::Flusher) -> axum::Router {
    let app = App { state, flusher };
    axum::Router::new()
        .route("/", get(crate::web::page))
        .route("/app/{file}", get(crate::web::module))
        .route("/docs/{name}/history", get(history))
        .route("/docs/{name}/text", get(text))
        .route("/docs/{name}/step", get(step))
        .route(
            "/doc",
            get(
                |AxumState(app): AxumState<App>, ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(move |socket| {
                        serve_socket(app.state, Kind::Editor, app.flusher, socket)
                    })
                },
            ),
        )
        .route(
            "/replicate",
            get(
                |AxumState(app): AxumState<App>, ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(move |socket| {
                        serve_socket(app.state, Kind::ServerIn, app.flusher, socket)
                    })
                },
            ),
        )
        .with_state(app)
}

/// `GET /docs/NAME/history`: every operation, in the order this server integrated them.
async fn history(
    AxumState(app): AxumState<App>,
    Path(name): Path<String>,
) -> Result<axum::Json<Vec<crate::history::Entry>>, (StatusCode, String)> {
    let state = app.state.lock().expect("state lock");
    let doc = state.docs.get(&name).ok_or_else(|| no_such_doc(&name))?;
    Ok(axum::Json(crate::history::entries(doc)))
}

/// `?at=N`: the text after the first N operations of the history.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct At {
    pub(crate) at: Option<usize>,
}

/// `GET /docs/NAME/text[?at=N]`: the text now, or as it was after N operations.
async fn text(
    AxumState(app): AxumState<App>,
    Path(name): Path<String>,
    Query(at): Query<At>,
) -> Result<String, (StatusCode, String)> {
    let state = app.state.lock().expect("state lock");
    let doc = state.docs.get(&name).ok_or_else(|| no_such_doc(&name))?;
    match at.at {
        None => Ok(doc.text()),
        Some(n) => crate::history::text_after(doc, n)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// `GET /docs/NAME/step[?at=N]`: the version after N operations (the latest without `at`),
/// the operation that made it and the text then: what the console's history view shows.
async fn step(
    AxumState(app): AxumState<App>,
    Path(name): Path<String>,
    Query(at): Query<At>,
) -> Result<axum::Json<crate::history::Step>, (StatusCode, String)> {
    let state = app.state.lock().expect("state lock");
    let doc = state.docs.get(&name).ok_or_else(|| no_such_doc(&name))?;
    crate::history::step(doc, at.at)
        .map(axum::Json)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

pub(crate) fn no_such_doc(name: &str) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("this server holds no document {name:?}"),
    )
}

/// Starts replication to every peer server and the anti-entropy timer.
pub fn start_replication(
    state: &Shared,
    peers: &BTreeMap<String, SocketAddr>,
    every: Duration,
    token: &CancellationToken,
) {
    for (peer, &addr) in peers {
        let replication = Replication {
            state: state.clone(),
            peer: peer.clone(),
            addr,
            conn: None,
        };
        tokio::spawn(wire::dial_forever(replication, token.clone()));
    }
    let state = state.clone();
    let token = token.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => state.lock().expect("state lock").pull(),
                () = token.cancelled() => return,
            }
        }
    });
}
