//! Starting a node as a child process and waiting until it is ready.
//!
//! The lab, the benchmarks and the end-to-end tests all start nodes this way:
//! - the child runs in its own process group (a Ctrl-C in the lab's terminal reaches the lab,
//!   which then decides what happens to its nodes);
//! - it gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the thread that started it even if
//!   that process is SIGKILLed, and `kill_on_drop`, so dropping the handle kills it: no orphans;
//! - its stdout and stderr are drained continuously (a full pipe would freeze the node) into a
//!   bounded tail of recent lines, shown when something goes wrong;
//! - [`NodeProcess::spawn`] returns once the node printed its [`Ready`] line, or fails with the
//!   node's last lines if it exits or stays silent.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so spawn nodes from
//! a long-lived thread (a runtime worker or a test's main thread), never from `spawn_blocking`.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::ready::Ready;

/// How many recent output lines a [`NodeProcess`] keeps.
pub const TAIL_LINES: usize = 200;

/// A running node process. Dropping it kills the process.
pub struct NodeProcess {
    child: Child,
    pid: u32,
    ready: Ready,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl NodeProcess {
    /// Spawns `command` and waits up to `ready_timeout` for its ready line.
    pub async fn spawn(mut command: Command, ready_timeout: Duration) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        die_with_parent(&mut command);
        let shown = format!("{:?}", command.as_std());
        let mut child = command
            .spawn()
            .with_context(|| format!("spawning {shown}"))?;
        let pid = child
            .id()
            .context("the child exited before it could be watched")?;

        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let (ready_tx, ready_rx) = oneshot::channel();
        let stdout = child.stdout.take().context("child stdout was not piped")?;
        let stderr = child.stderr.take().context("child stderr was not piped")?;
        tokio::spawn(drain(stdout, tail.clone(), Some(ready_tx), ""));
        tokio::spawn(drain(stderr, tail.clone(), None, "stderr: "));

        let outcome = tokio::select! {
            ready = tokio::time::timeout(ready_timeout, ready_rx) => match ready {
                Ok(Ok(ready)) => Ok(ready),
                Ok(Err(_)) => Err(None), // stdout closed without a ready line
                Err(_) => Err(Some(format!("printed no ready line within {}", crate::duration::format(ready_timeout)))),
            },
            status = child.wait() => Err(Some(match status {
                Ok(status) => format!("exited ({status}) before it was ready"),
                Err(e) => format!("could not be waited for: {e}"),
            })),
        };
        match outcome {
            Ok(ready) => Ok(Self {
                child,
                pid,
                ready,
                tail,
            }),
            Err(reason) => {
                let reason = match reason {
                    Some(reason) => reason,
                    None => match child.wait().await {
                        Ok(status) => format!("exited ({status}) before it was ready"),
                        Err(e) => format!("closed its stdout before it was ready ({e})"),
                    },
                };
                let _ = child.start_kill();
                let _ = child.wait().await;
                // Let the drain tasks pick up the last lines.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let last = tail
                    .lock()
                    .unwrap()
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                bail!("node {shown} {reason}; its last output:\n{last}")
            }
        }
    }

    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the node (SIGSTOP, SIGCONT, SIGTERM, SIGKILL...).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        signal::kill(Pid::from_raw(self.pid as i32), signal)
            .with_context(|| format!("sending {signal} to pid {}", self.pid))
    }

    /// SIGKILL, then reap.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        let _ = self.child.start_kill();
        Ok(self.child.wait().await?)
    }

    /// SIGTERM; SIGKILL if the node is still running after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        // SIGCONT first: a paused node cannot handle SIGTERM.
        let _ = self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM)?;
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => self.kill().await,
        }
    }

    /// Waits for the node to exit on its own.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        Ok(self.child.wait().await?)
    }

    /// The node's most recent output lines, oldest first.
    pub fn recent_output(&self) -> Vec<String> {
        self.tail.lock().unwrap().iter().cloned().collect()
    }
}

async fn drain(
    stream: impl AsyncRead + Unpin,
    tail: Arc<Mutex<VecDeque<String>>>,
    mut ready_tx: Option<oneshot::Sender<Ready>>,
    prefix: &'static str,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if ready_tx.is_some()
            && let Some(ready) = Ready::parse(&line)
            && let Some(tx) = ready_tx.take()
        {
            let _ = tx.send(ready);
        }
        let mut tail = tail.lock().unwrap();
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(format!("{prefix}{line}"));
    }
}

/// Arranges for the child to get SIGKILL when the thread that spawned it dies.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}
