//! Starting a node as a child process and waiting until it is ready.
//!
//! The lab, the benchmarks and the end-to-end tests all start nodes this way:
//! - the child runs in its own process group (a Ctrl-C in the lab's terminal reaches the lab,
//!   which then decides what happens to its nodes);
//! - it gets `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the thread that started it even if
//!   that process is SIGKILLed, and `kill_on_drop`, so dropping the handle kills it: no orphans;
//! - its stdout and stderr are drained continuously (a full pipe would freeze the node) into a
//!   bounded tail of recent lines, shown when something goes wrong;
//! - its output can also be appended to a log file (the lab keeps one per node in the run dir);
//! - one task owns the child and reaps it the moment it exits, so supervisors learn of a crash
//!   at once ([`NodeProcess::exit_watch`]);
//! - [`NodeProcess::spawn`] returns once the node printed its [`Ready`] line, or fails with the
//!   node's last lines if it exits or stays silent.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, so spawn nodes from
//! a long-lived thread (a runtime worker or a test's main thread), never from `spawn_blocking`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{oneshot, watch};

use crate::ready::Ready;

/// How many recent output lines a [`NodeProcess`] keeps.
pub const TAIL_LINES: usize = 200;

/// Called with every line a node prints on stdout (the lab puts `event` lines on its timeline).
pub type LineHook = Arc<dyn Fn(&str) + Send + Sync>;

/// How to start a node.
#[derive(Clone)]
pub struct LaunchOptions {
    /// How long the node may take to print its ready line.
    pub ready_timeout: Duration,
    /// Where to append everything the node prints (stdout and stderr), if anywhere.
    pub log_file: Option<PathBuf>,
    /// Sees every stdout line as it arrives.
    pub on_line: Option<LineHook>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(20),
            log_file: None,
            on_line: None,
        }
    }
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// A running node process. Dropping it kills the process.
pub struct NodeProcess {
    pid: u32,
    ready: Ready,
    tail: Tail,
    /// `Some` once the process has exited (and been reaped).
    exit: watch::Receiver<Option<ExitStatus>>,
    /// Dropping this asks the task that owns the child to kill it.
    _owner: oneshot::Sender<()>,
}

impl NodeProcess {
    /// Spawns `command` and waits up to `ready_timeout` for its ready line.
    pub async fn spawn(command: Command, ready_timeout: Duration) -> anyhow::Result<Self> {
        Self::spawn_with(
            command,
            LaunchOptions {
                ready_timeout,
                ..LaunchOptions::default()
            },
        )
        .await
    }

    /// Spawns `command` as [`LaunchOptions`] say and waits for its ready line.
    pub async fn spawn_with(mut command: Command, options: LaunchOptions) -> anyhow::Result<Self> {
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

        let log = match &options.log_file {
            Some(path) => Some(Arc::new(tokio::sync::Mutex::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .with_context(|| format!("opening the node log {}", path.display()))?,
            ))),
            None => None,
        };
        let tail: Tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let (ready_tx, ready_rx) = oneshot::channel();
        let stdout = child.stdout.take().context("child stdout was not piped")?;
        let stderr = child.stderr.take().context("child stderr was not piped")?;
        let hook = options.on_line.clone();
        tokio::spawn(drain(
            stdout,
            tail.clone(),
            log.clone(),
            Some(ready_tx),
            hook,
            "",
        ));
        tokio::spawn(drain(stderr, tail.clone(), log, None, None, "stderr: "));

        // One task owns the child: it reaps it when it exits, or kills it when asked to
        // (the handle is dropped), so an exit is noticed even if nobody is waiting for it.
        let (exit_tx, mut exit) = watch::channel(None);
        let (owner, killed) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = killed => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            if let Ok(status) = status {
                exit_tx.send_replace(Some(status));
            }
        });

        let outcome = tokio::select! {
            ready = tokio::time::timeout(options.ready_timeout, ready_rx) => match ready {
                Ok(Ok(ready)) => Ok(ready),
                Ok(Err(_)) => Err("closed its stdout without a ready line".to_string()),
                Err(_) => Err(format!("printed no ready line within {}", crate::duration::format(options.ready_timeout))),
            },
            status = exit.wait_for(Option::is_some) => Err(match status {
                Ok(status) => format!("exited ({}) before it was ready", status.expect("waited for Some")),
                Err(_) => "could not be waited for".to_string(),
            }),
        };
        match outcome {
            Ok(ready) => Ok(Self {
                pid,
                ready,
                tail,
                exit,
                _owner: owner,
            }),
            Err(reason) => {
                drop(owner); // kills it if it still runs
                let _ = exit.wait_for(Option::is_some).await;
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

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// A receiver that turns `Some` when the process exits (for supervisors).
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    /// Sends `signal` to the node (SIGSTOP, SIGCONT, SIGTERM, SIGKILL...), unless it has
    /// already exited (its pid may then belong to someone else).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        if let Some(status) = self.exit_status() {
            bail!("pid {} already exited ({status})", self.pid);
        }
        signal::kill(Pid::from_raw(self.pid as i32), signal)
            .with_context(|| format!("sending {signal} to pid {}", self.pid))
    }

    /// SIGKILL, then wait until it is reaped.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        let _ = self.signal(Signal::SIGKILL);
        self.wait().await
    }

    /// SIGTERM; SIGKILL if the node is still running after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> anyhow::Result<ExitStatus> {
        // SIGCONT first: a paused node cannot handle SIGTERM.
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(status) => status,
            Err(_) => self.kill().await,
        }
    }

    /// Waits for the node to exit.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let status = self
            .exit
            .wait_for(Option::is_some)
            .await
            .context("the task watching the node is gone")?;
        Ok(status.expect("waited for Some"))
    }

    /// The node's most recent output lines, oldest first.
    pub fn recent_output(&self) -> Vec<String> {
        self.tail.lock().unwrap().iter().cloned().collect()
    }
}

async fn drain(
    stream: impl AsyncRead + Unpin,
    tail: Tail,
    log: Option<Arc<tokio::sync::Mutex<tokio::fs::File>>>,
    mut ready_tx: Option<oneshot::Sender<Ready>>,
    on_line: Option<LineHook>,
    prefix: &'static str,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(hook) = &on_line {
            hook(&line);
        }
        if let Some(log) = &log {
            let mut file = log.lock().await;
            let _ = file.write_all(format!("{prefix}{line}\n").as_bytes()).await;
        }
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

/// Starts a program that is not a distlab node (etcd, which the Project 2 benchmark compares
/// against) under the same rules: its own process group, SIGKILLed if the thread that started
/// it dies and when the handle is dropped; stdout and stderr go to `log`.
pub fn spawn_program(
    mut command: Command,
    log: &std::path::Path,
) -> anyhow::Result<tokio::process::Child> {
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut command);
    command
        .spawn()
        .with_context(|| format!("starting {:?}", command.as_std().get_program()))
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

/// `n` free loopback addresses, for processes that must know each other's before they start.
///
/// They come from below the kernel's ephemeral port range (`ip_local_port_range`): a port
/// the kernel hands out for outgoing connections (the load's own, many of them) could be
/// taken between this check and the process's bind, and the start would fail. A listener
/// started meanwhile still can; then the start fails loudly.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let floor = 10_000.min(ephemeral_low / 2).max(1024);
    anyhow::ensure!(
        floor < ephemeral_low,
        "no ports below the ephemeral range (it starts at {ephemeral_low})"
    );
    let mut rng = rand::rng();
    let mut addrs = Vec::new();
    for _ in 0..10_000 {
        if addrs.len() == n {
            return Ok(addrs);
        }
        let port = rand::Rng::random_range(&mut rng, floor..ephemeral_low);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !addrs.contains(&addr) && std::net::TcpListener::bind(addr).is_ok() {
            addrs.push(addr);
        }
    }
    anyhow::bail!("found no {n} free ports in {floor}..{ephemeral_low}")
}
