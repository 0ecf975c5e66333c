//! Batching client mutations into log entries.
//!
//! openraft 0.9 handles each `client_write` alone: it appends the entry and waits for the flush
//! before it looks at the next one. With one entry per request, a leader does at most one
//! request per fsync, however many clients wait. So requests go through here: one task takes
//! every mutation waiting, proposes them as one [`Proposal`] (one entry: one append, one
//! flush, one replication round), and hands each request its own outcome. At most
//! [`IN_FLIGHT`] proposals are open at once, so while one is being flushed and replicated the
//! next batch fills up: under load, batches grow by themselves; alone, a request goes at once.
//! Why two: with one open, clients whose requests arrive in groups (each connection's
//! requests come in together) settle into taking turns: a group that misses a proposal waits
//! for it to finish, and each proposal carries one group. With 16 clients over two
//! connections, one open did 3,400 puts/s and two 4,700 (64 clients over five nodes: 5,800
//! and 8,300); four were no better than two. (All clients on one connection are one group:
//! there one open did about 13% better than two.)

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::types::{Command, Member, Outcome, Proposal, Raft, RaftId};

/// Proposals open at once (see the module doc for why one).
pub const IN_FLIGHT: usize = 2;

/// Commands in one proposal at most (a bound on an entry's size: values are at most 1 MiB
/// each through gRPC, and followers receive entries in batches of their own).
pub const MAX_COMMANDS: usize = 256;

pub type WriteError = RaftError<RaftId, ClientWriteError<RaftId, Member>>;

/// What a request gets back: its outcome and the index of the entry that carried it.
pub type Written = Result<(Outcome, u64), WriteError>;

struct Waiting {
    command: Command,
    reply: oneshot::Sender<Written>,
}

/// Handle to the batching task; the task ends when every handle is dropped.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Waiting>,
}

impl Proposer {
    pub fn start(raft: Raft) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, waiting));
        Self { queue }
    }

    /// Proposes `command` (with whatever else is waiting) and returns its outcome once the
    /// entry is committed and applied.
    pub async fn propose(&self, command: Command) -> Written {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.queue
            .send(Waiting { command, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let open = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS {
            match waiting.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let (commands, replies): (Vec<Command>, Vec<_>) =
                batch.into_iter().map(|w| (w.command, w.reply)).unzip();
            let written = raft
                .client_write(Proposal {
                    commands: commands.into(),
                })
                .await;
            drop(permit);
            match written {
                Ok(response) => {
                    let index = response.log_id.index;
                    for (reply, outcome) in replies.into_iter().zip(response.data) {
                        let _ = reply.send(Ok((outcome, index)));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}
