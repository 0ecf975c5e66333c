//! `--role editor`: a client process with its own replica of one document, kept in its data
//! directory, connected to a server over WebSocket (the first of `--servers` that answers).
//!
//! Edits never wait for the network: a local edit changes the replica at once and is pushed
//! if a server is connected. Offline (the server down, or the link cut), the editor keeps
//! editing and redials; on reconnect the `Hello` exchange sends each side exactly what the
//! other lacks, and the CRDT merges with no coordination. An edit counts as saved when a server
//! acknowledges it (`Ack`: stored durably there).
//!
//! Edits come from the simulated typist (`--type-rate`: a person typing at a cursor, some
//! backspaces, now and then a jump elsewhere; seeded) and from `POST /edit` on the editor's
//! `--listen` port (tests and the lab use it); `GET /text` returns the text.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::routing::{get, post};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::causal::{ReplicaId, VersionVector};
use crate::codec::DecodeError;
use crate::crypt::DocKey;
use crate::doc::Doc;
use crate::intent::Intent;
use crate::op::{Body, Op};
use crate::store::Store;
use crate::sync::{Frame, Message, PeerState};
use crate::wire;

/// Another editor's cursor, as last announced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Presence {
    pub user: String,
    pub cursor: Option<u64>,
}

pub struct Editor {
    name: String,
    user: String,
    token: String,
    /// The document's key, when it is encrypted: what goes to the server is sealed.
    key: Option<DocKey>,
    doc: Doc,
    store: Store,
    /// The server connected now, and the queue to it.
    link: Option<(String, mpsc::UnboundedSender<Frame>)>,
    peer: PeerState,
    /// What a server has acknowledged as durable.
    acked: VersionVector,
    others: BTreeMap<ReplicaId, Presence>,
    cursor: usize,
    rng: SmallRng,
    typed: u64,
    /// The order this editor put its own characters in, recorded apart from the CRDT.
    intent: Intent,
    /// Whether the intent was resumed from the store (only later typing is independent).
    intent_resumed: bool,
    refused: Vec<String>,
    reconnects: u64,
}

pub type Shared = Arc<Mutex<Editor>>;

impl Editor {
    /// The editor's replica of `name`, from its store (or new).
    pub fn open(
        name: &str,
        user: &str,
        token: &str,
        key: Option<DocKey>,
        replica: ReplicaId,
        mut store: Store,
        seed: u64,
    ) -> anyhow::Result<Editor> {
        let mut doc = Doc::new(replica);
        for loaded in store.load(replica)? {
            for damage in &loaded.damage {
                tracing::error!(event = "store_damage", doc = %damage.doc, record = damage.record, "{damage}");
            }
            if loaded.name == name {
                doc = loaded.doc;
            }
        }
        let own = doc.orders().remove(&replica);
        let intent_resumed = own.is_some();
        let intent = own.as_ref().map(Intent::resumed).unwrap_or_default();
        Ok(Editor {
            name: name.to_string(),
            user: user.to_string(),
            token: token.to_string(),
            key,
            doc,
            store,
            link: None,
            peer: PeerState::new(),
            acked: VersionVector::new(),
            others: BTreeMap::new(),
            cursor: 0,
            rng: SmallRng::seed_from_u64(seed),
            typed: 0,
            intent,
            intent_resumed,
            refused: Vec::new(),
            reconnects: 0,
        })
    }

    pub fn text(&self) -> String {
        self.doc.text()
    }

    /// A local edit: applied, stored, pushed if connected.
    fn local(&mut self, op: Option<Op>) -> anyhow::Result<()> {
        let Some(op) = op else { return Ok(()) };
        self.store.append(&self.name, std::slice::from_ref(&op))?;
        self.typed += op.len();
        self.push(&[op]);
        Ok(())
    }

    /// Sends the server what it is not known to hold of `ops` (our own only).
    fn push(&mut self, ops: &[Op]) {
        if self.link.is_some() {
            let out = self.peer.forward(ops);
            self.send_ops(out);
        }
    }

    /// Sends `ops` to the server, sealed when the document is encrypted.
    fn send_ops(&self, ops: Vec<Op>) {
        let Some((_, tx)) = &self.link else { return };
        if ops.is_empty() {
            return;
        }
        let ops = match &self.key {
            Some(key) => ops.iter().map(|op| key.seal(op)).collect(),
            None => ops,
        };
        let _ = tx.send(Frame::new(&self.name, Message::Ops(ops)));
    }

    pub fn insert(&mut self, pos: usize, text: &str) -> anyhow::Result<()> {
        let op = self.doc.insert(pos, text)?;
        if let Some(op) = &op
            && let Body::Insert { origin_left, .. } = &op.body
        {
            let after = self
                .doc
                .last_of_at_or_before(op.id.replica, *origin_left)
                .map(|dot| dot.seq);
            self.intent.typed(after, op.id.seq, op.len());
        }
        self.local(op)
    }

    pub fn delete(&mut self, pos: usize, len: usize) -> anyhow::Result<()> {
        let op = self.doc.delete(pos, len)?;
        self.local(op)
    }

    /// One step of the simulated typist.
    fn type_something(&mut self) -> anyhow::Result<()> {
        const LETTERS: &[u8] = b"etaoinshrdlucmfwypvbgkqjxz";
        let len = self.doc.len();
        self.cursor = self.cursor.min(len);
        let roll = self.rng.random_range(0..100);
        if roll < 8 && len > 0 {
            self.cursor = self.rng.random_range(0..=len);
            self.announce();
        } else if roll < 18 && self.cursor > 0 {
            self.cursor -= 1;
            self.delete(self.cursor, 1)?;
        } else {
            let c = if self.rng.random_range(0..6) == 0 {
                ' '
            } else {
                LETTERS[self.rng.random_range(0..LETTERS.len())] as char
            };
            self.insert(self.cursor, &c.to_string())?;
            self.cursor += 1;
        }
        Ok(())
    }

    fn announce(&mut self) {
        if let Some((_, tx)) = &self.link {
            let presence = Message::Presence {
                replica: self.doc.replica(),
                user: self.user.clone(),
                cursor: Some(self.cursor as u64),
            };
            let _ = tx.send(Frame::new(&self.name, presence));
        }
    }

    fn connected(&mut self, server: &str, tx: mpsc::UnboundedSender<Frame>) {
        self.peer = PeerState::new();
        let hello = Message::Hello {
            user: self.user.clone(),
            token: self.token.clone(),
            replica: self.doc.replica(),
            version: self.doc.version().clone(),
        };
        let _ = tx.send(Frame::new(&self.name, hello));
        self.link = Some((server.to_string(), tx));
        self.announce();
    }

    fn disconnected(&mut self) {
        self.link = None;
        self.reconnects += 1;
    }

    fn receive(&mut self, frame: Frame) -> anyhow::Result<()> {
        if frame.doc != self.name {
            return Ok(());
        }
        match frame.message {
            Message::Hello { version, .. } => self.send_own_delta(&version),
            Message::Ops(ops) => {
                let ops = match &self.key {
                    Some(key) => ops.iter().map(|op| key.open(op)).collect(),
                    None => ops,
                };
                let received = self.peer.receive(&mut self.doc, ops);
                if !received.integrated.is_empty() {
                    self.store.append(&self.name, &received.integrated)?;
                }
                for error in received.refused {
                    tracing::warn!(event = "op_refused", %error, "refused a server's operation");
                }
            }
            Message::Ack { version } => self.acked.merge(&version),
            Message::Presence {
                replica,
                user,
                cursor,
            } => {
                self.others.insert(replica, Presence { user, cursor });
            }
            Message::Sync { version } => self.send_own_delta(&version),
            Message::Refused { reason } => {
                tracing::warn!(event = "refused", %reason, "the server refused a message");
                self.refused.push(reason);
                if self.refused.len() > 20 {
                    self.refused.remove(0);
                }
            }
        }
        Ok(())
    }

    /// The server holds `version`: send it what it lacks of our own operations (others' are
    /// theirs to send).
    fn send_own_delta(&mut self, version: &VersionVector) {
        let replica = self.doc.replica();
        let delta: Vec<Op> = self
            .peer
            .on_version(&self.doc, version)
            .into_iter()
            .filter(|op| op.id.replica == replica)
            .collect();
        self.send_ops(delta);
    }

    /// Asks the server for anything missed (anti-entropy), and tells the others where the
    /// cursor is now.
    fn pull(&mut self) {
        self.announce();
        if let Some((_, tx)) = &self.link {
            let sync = Message::Sync {
                version: self.doc.version().clone(),
            };
            let _ = tx.send(Frame::new(&self.name, sync));
        }
    }

    /// The `/status` detail.
    pub fn detail(&self) -> serde_json::Value {
        let own = self.doc.replica();
        let made = self.doc.version().get(own);
        let acked = self.acked.get(own).min(made);
        crate::status::doc_detail(
            &self.name,
            &self.doc,
            serde_json::json!({
                "replica": own.0,
                "user": self.user,
                "connected": self.link.as_ref().map(|(server, _)| server.clone()),
                "online": self.link.is_some(),
                "own_ops": made,
                "acked_ops": acked,
                "unacked_ops": made - acked,
                "typed": self.typed,
                "cursor": self.cursor,
                "others": self.others.values().collect::<Vec<_>>(),
                "refused": self.refused,
                "encrypted": self.key.is_some(),
                "intent": {
                    "order": self.intent.order().to_json(),
                    "resumed": self.intent_resumed,
                },
                "reconnects": self.reconnects,
            }),
        )
    }
}

/// The editor's side of its connection: one of `servers`, the next when one does not answer.
struct Dialler {
    editor: Shared,
    servers: Vec<(String, SocketAddr)>,
    next: usize,
}

impl wire::Dialler for Dialler {
    fn target(&mut self) -> (String, String) {
        let (server, addr) = &self.servers[self.next % self.servers.len()];
        self.next += 1;
        (server.clone(), format!("ws://{addr}/doc"))
    }

    fn opened(&mut self, server: &str, tx: mpsc::UnboundedSender<Frame>) {
        tracing::info!(event = "connected", %server, "online");
        self.editor
            .lock()
            .expect("editor lock")
            .connected(server, tx);
        // The server that answered is the one to try first next time.
        self.next = self.next.saturating_sub(1);
    }

    fn received(&mut self, _: &str, frame: Result<Frame, DecodeError>, _: usize) {
        match frame {
            Ok(frame) => {
                if let Err(error) = self.editor.lock().expect("editor lock").receive(frame) {
                    tracing::error!(event = "store_failed", error = %format!("{error:#}"), "could not store operations");
                }
            }
            Err(error) => {
                tracing::warn!(event = "bad_frame", %error, "the server sent a damaged frame")
            }
        }
    }

    fn closed(&mut self, server: &str) {
        self.editor.lock().expect("editor lock").disconnected();
        tracing::info!(event = "disconnected", %server, "offline; redialling");
    }
}

/// Every `every`, asks the server for what was missed and announces the cursor.
async fn anti_entropy(editor: Shared, every: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => editor.lock().expect("editor lock").pull(),
            () = token.cancelled() => return,
        }
    }
}

/// Types at `rate` edits per second until the node stops.
async fn typist(editor: Shared, rate: f64, token: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(error) = editor.lock().expect("editor lock").type_something() {
                    tracing::error!(event = "edit_failed", error = %format!("{error:#}"), "the typist's edit failed");
                }
            }
            () = token.cancelled() => return,
        }
    }
}

pub fn start(
    editor: &Shared,
    servers: Vec<(String, SocketAddr)>,
    every: Duration,
    rate: f64,
    token: &CancellationToken,
) {
    let dialler = Dialler {
        editor: editor.clone(),
        servers,
        next: 0,
    };
    tokio::spawn(wire::dial_forever(dialler, token.clone()));
    tokio::spawn(anti_entropy(editor.clone(), every, token.clone()));
    if rate > 0.0 {
        tokio::spawn(typist(editor.clone(), rate, token.clone()));
    }
}

/// `POST /type` bodies: `steps` of the simulated typist at once (the lab's workload).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Type {
    pub steps: u32,
}

/// Most typist steps one `POST /type` may ask for.
const MAX_STEPS: u32 = 10_000;

/// `POST /edit` bodies.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Edit {
    Insert { pos: usize, text: String },
    Delete { pos: usize, len: usize },
}

/// The editor's HTTP side: `GET /text`, `POST /edit`, `POST /type`, and
/// `GET /docs/NAME/step?at=N` (its replica's history, as servers serve theirs).
pub fn router(editor: Shared) -> axum::Router {
    axum::Router::new()
        .route(
            "/type",
            post(|AxumState(editor): AxumState<Shared>, body: axum::body::Bytes| async move {
                let ask = match serde_json::from_slice::<Type>(&body) {
                    Ok(ask) if ask.steps <= MAX_STEPS => ask,
                    Ok(ask) => {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!("steps {} is more than {MAX_STEPS}", ask.steps),
                        );
                    }
                    Err(error) => {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!("the body is not {{\"steps\": N}}: {error}"),
                        );
                    }
                };
                let mut editor = editor.lock().expect("editor lock");
                for _ in 0..ask.steps {
                    if let Err(error) = editor.type_something() {
                        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"));
                    }
                }
                let own = editor.doc.replica();
                (StatusCode::OK, editor.doc.version().get(own).to_string())
            }),
        )
        .route(
            "/text",
            get(|AxumState(editor): AxumState<Shared>| async move { editor.lock().expect("editor lock").text() }),
        )
        .route(
            "/docs/{name}/step",
            get(|AxumState(editor): AxumState<Shared>, Path(name): Path<String>, Query(at): Query<crate::server::At>| async move {
                let editor = editor.lock().expect("editor lock");
                if name != editor.name {
                    return Err(crate::server::no_such_doc(&name));
                }
                crate::history::step(&editor.doc, at.at)
                    .map(axum::Json)
                    .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
            }),
        )
        .route(
            "/edit",
            post(|AxumState(editor): AxumState<Shared>, body: axum::body::Bytes| async move {
                let edit: Edit = match serde_json::from_slice(&body) {
                    Ok(edit) => edit,
                    Err(error) => {
                        return (
                            StatusCode::BAD_REQUEST,
                            format!("the body is not an edit ({{\"insert\":{{\"pos\":0,\"text\":\"...\"}}}} or {{\"delete\":{{\"pos\":0,\"len\":1}}}}): {error}"),
                        );
                    }
                };
                let mut editor = editor.lock().expect("editor lock");
                let result = match edit {
                    Edit::Insert { pos, text } => editor.insert(pos, &text),
                    Edit::Delete { pos, len } => editor.delete(pos, len),
                };
                match result {
                    Ok(()) => (StatusCode::OK, editor.text()),
                    Err(error) => (StatusCode::BAD_REQUEST, format!("{error:#}")),
                }
            }),
        )
        .with_state(editor)
}
