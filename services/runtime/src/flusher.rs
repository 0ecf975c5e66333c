//! Making writes durable: one thread that flushes sled for everyone who is waiting.
//!
//! Raft may acknowledge an entry only once it is on disk, and a vote only once it is on disk,
//! so appends and votes wait for a flush; a two-phase-commit participant may vote yes only once
//! its prepared record is. Waiters queue here; the thread takes every waiter
//! queued so far, runs one blocking `Db::flush`, and answers them all: a group commit, with
//! exactly one flush in progress at a time.
//!
//! Why not sled's `flush_async`: when many flushes run at once they can occupy all of sled's
//! I/O threads waiting for a write that is queued behind them, and the store wedges (we hit it
//! in Project 0; sled issues #1241 and #1308). One flusher thread cannot do that.

use std::sync::mpsc;

/// What to do once the data written so far is durable (or the flush failed).
type Callback = Box<dyn FnOnce(std::io::Result<()>) + Send>;

/// Someone waiting for the data written so far to be durable.
enum Waiter {
    /// A callback (openraft's for an append): called once the entries are flushed.
    Call(Callback),
    Notify(tokio::sync::oneshot::Sender<std::io::Result<()>>),
}

/// Handle to the flush thread; the thread ends when every handle is dropped.
#[derive(Clone)]
pub struct Flusher {
    queue: mpsc::Sender<Waiter>,
    /// `--fsync never`: answer at once and leave flushing to sled's own timer.
    skip: bool,
}

impl Flusher {
    pub fn start(db: sled::Db, skip: bool) -> std::io::Result<Self> {
        let (queue, waiting) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("sled-flush".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    batch.extend(waiting.try_iter());
                    let result = db.flush().map(|_| ());
                    for waiter in batch {
                        let result = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::other(format!("flushing sled: {e}"))),
                        };
                        match waiter {
                            Waiter::Call(callback) => callback(result),
                            Waiter::Notify(tx) => {
                                let _ = tx.send(result);
                            }
                        }
                    }
                }
            })?;
        Ok(Self { queue, skip })
    }

    /// Calls `callback` once everything written so far is durable (at once with `--fsync
    /// never`).
    pub fn after_flush(&self, callback: impl FnOnce(std::io::Result<()>) + Send + 'static) {
        if self.skip {
            callback(Ok(()));
            return;
        }
        if let Err(mpsc::SendError(Waiter::Call(callback))) =
            self.queue.send(Waiter::Call(Box::new(callback)))
        {
            callback(Err(std::io::Error::other("the flush thread is gone")));
        }
    }

    /// Returns once everything written so far is durable (at once with `--fsync never`).
    pub async fn flush(&self) -> std::io::Result<()> {
        if self.skip {
            return Ok(());
        }
        self.flush_now().await
    }

    /// Returns once everything written so far is durable, whatever the fsync mode (snapshots
    /// and shutdown).
    pub async fn flush_now(&self) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue
            .send(Waiter::Notify(tx))
            .map_err(|_| std::io::Error::other("the flush thread is gone"))?;
        rx.await
            .map_err(|_| std::io::Error::other("the flush thread is gone"))?
    }
}
