//! A node's life: bind, announce, serve, drain.
//!
//! ```text
//! validate flags -> Node::bind (both listeners; port 0 resolved) -> service builds its state
//!   -> Node::serve: print the ready line, serve gRPC + admin until SIGTERM/SIGINT
//!   -> stop accepting, finish in-flight requests (at most shutdown::GRACE) -> return
//! ```
//! The service flushes its stores after [`Node::serve`] returns. [`run_main`] wraps all of it
//! for a binary: telemetry, the tokio runtime, and exit codes (2 for bad input, 1 otherwise).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::BadInput;
use crate::admin::{self, NodeIdentity, NodeStatus};
use crate::cli::{NodeId, ValidNodeArgs};
use crate::ready::Ready;
use crate::rpc::{RpcLayer, RpcMetrics};
use crate::shutdown;
use crate::telemetry::{self, LogOutput};

/// A node whose listeners are bound but which does not serve yet.
pub struct Node {
    args: ValidNodeArgs,
    identity: NodeIdentity,
    grpc: TcpListener,
    admin: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    registry: Registry,
    rpc_metrics: RpcMetrics,
    shutdown: CancellationToken,
    ready_extra: serde_json::Map<String, serde_json::Value>,
}

impl Node {
    /// Binds the gRPC and admin listeners. Connections that arrive before [`Node::serve`]
    /// wait in the listen backlog.
    pub async fn bind(
        args: ValidNodeArgs,
        project: &'static str,
        service: &'static str,
    ) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("--listen {}: cannot bind the gRPC port", args.listen))?;
        let admin = TcpListener::bind(args.admin)
            .await
            .with_context(|| format!("--admin {}: cannot bind the admin port", args.admin))?;
        let mut registry = Registry::default();
        let rpc_metrics = RpcMetrics::register(&mut registry);
        Ok(Self {
            identity: NodeIdentity {
                id: args.id.clone(),
                project,
                service,
                started: Instant::now(),
            },
            grpc_addr: grpc.local_addr()?,
            admin_addr: admin.local_addr()?,
            grpc,
            admin,
            args,
            registry,
            rpc_metrics,
            shutdown: CancellationToken::new(),
            ready_extra: serde_json::Map::new(),
        })
    }

    /// [`Node::bind`], plus a UDP socket on the gRPC port number (for services that gossip:
    /// one `--peer` address serves both). With `--listen` port 0 the kernel picks a TCP port
    /// whose UDP twin may be taken (by any UDP socket on the machine): then it tries again
    /// with another port, up to 20 times.
    pub async fn bind_with_udp(
        args: ValidNodeArgs,
        project: &'static str,
        service: &'static str,
    ) -> anyhow::Result<(Self, tokio::net::UdpSocket)> {
        let mut attempts = 0;
        loop {
            let node = Self::bind(args.clone(), project, service).await?;
            match tokio::net::UdpSocket::bind(node.grpc_addr).await {
                Ok(socket) => return Ok((node, socket)),
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && args.listen.port() == 0
                        && attempts < 20 =>
                {
                    attempts += 1;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot bind UDP {} beside the gRPC port", node.grpc_addr)
                    });
                }
            }
        }
    }

    pub fn args(&self) -> &ValidNodeArgs {
        &self.args
    }

    pub fn id(&self) -> &NodeId {
        &self.args.id
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the service registers its own metrics before serving.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Cancelled when the node is asked to shut down; background tasks should stop on it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Adds a field to the ready line (another listener's address, say).
    pub fn add_ready_field(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.ready_extra.insert(key.to_string(), value.into());
    }

    /// Prints the ready line and serves `routes` (gRPC) and the admin API until shutdown.
    pub async fn serve(self, routes: Routes, status: Arc<dyn NodeStatus>) -> anyhow::Result<()> {
        let mut server = Server::builder();
        if let Some(tls) = &self.args.tls {
            server = server
                .tls_config(tls.server_config())
                .context("configuring TLS from --tls-cert/--tls-key/--tls-ca")?;
        }
        let (listening, listener, rpc_metrics) = self.split();
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let grpc = server
            .layer(RpcLayer::new(rpc_metrics))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, listening.token.clone().cancelled_owned());
        let grpc = async move { grpc.await.map_err(anyhow::Error::from) };
        listening.run("gRPC", grpc, status).await
    }

    /// Like [`Node::serve`], for a service that speaks HTTP (and WebSocket) on its `--listen`
    /// port instead of gRPC: `app` serves there. TLS flags are refused (not supported here).
    pub async fn serve_http(
        self,
        app: axum::Router,
        status: Arc<dyn NodeStatus>,
    ) -> anyhow::Result<()> {
        if self.args.tls.is_some() {
            return Err(BadInput(format!(
                "--tls-cert: the {} service serves plain HTTP and WebSocket on loopback; TLS is not supported",
                self.identity.service
            ))
            .into());
        }
        let (listening, listener, _) = self.split();
        let shutdown = listening.token.clone();
        let http = async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .map_err(anyhow::Error::from)
        };
        listening.run("HTTP", http, status).await
    }

    /// What every kind of main server leaves to [`Listening::run`], its listener, and the RPC
    /// metrics a gRPC server reports into.
    fn split(self) -> (Listening, TcpListener, RpcMetrics) {
        let listening = Listening {
            args: self.args,
            identity: self.identity,
            admin: self.admin,
            grpc_addr: self.grpc_addr,
            admin_addr: self.admin_addr,
            registry: self.registry,
            ready_extra: self.ready_extra,
            token: self.shutdown,
        };
        (listening, self.grpc, self.rpc_metrics)
    }
}

/// A node whose main server is built: what is left to do is the same for every kind of server.
struct Listening {
    args: ValidNodeArgs,
    identity: NodeIdentity,
    admin: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    registry: Registry,
    ready_extra: serde_json::Map<String, serde_json::Value>,
    token: CancellationToken,
}

impl Listening {
    /// Serves the admin API beside `server`, prints the ready line, and runs until shutdown
    /// (draining `server` for at most [`shutdown::GRACE`]).
    async fn run(
        self,
        kind: &str,
        server: impl std::future::Future<Output = anyhow::Result<()>>,
        status: Arc<dyn NodeStatus>,
    ) -> anyhow::Result<()> {
        let token = self.token;
        shutdown::cancel_on_signal(token.clone()).context("installing signal handlers")?;

        let admin_app = admin::router(self.identity.clone(), status, Arc::new(self.registry));
        let admin_shutdown = token.clone();
        let admin_listener = self.admin;
        let admin_task = tokio::spawn(async move {
            axum::serve(admin_listener, admin_app)
                .with_graceful_shutdown(async move { admin_shutdown.cancelled().await })
                .await
        });
        tokio::pin!(server);

        let mut ready = Ready::new(self.args.id.clone(), self.grpc_addr, self.admin_addr);
        ready.extra = self.ready_extra;
        ready.announce();
        tracing::info!(
            event = "node_started",
            id = %self.args.id,
            grpc = %self.grpc_addr,
            admin = %self.admin_addr,
            tls = self.args.tls.is_some(),
            "serving"
        );

        tokio::select! {
            result = &mut server => result.with_context(|| format!("{kind} server failed"))?,
            () = token.cancelled() => {
                match tokio::time::timeout(shutdown::GRACE, &mut server).await {
                    Ok(result) => result.with_context(|| format!("{kind} server failed while draining"))?,
                    Err(_) => tracing::warn!(
                        grace_secs = shutdown::GRACE.as_secs(),
                        "in-flight requests did not finish in time; exiting anyway"
                    ),
                }
            }
        }
        token.cancel();
        match tokio::time::timeout(std::time::Duration::from_secs(2), admin_task).await {
            Ok(Ok(result)) => result.context("admin server failed")?,
            Ok(Err(join)) => return Err(anyhow::anyhow!("admin server panicked: {join}")),
            Err(_) => {} // a poller holding a connection open must not delay exit
        }
        Ok(())
    }
}

/// Which tokio scheduler a process runs its async main on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// A worker thread per core (tokio's multi-thread scheduler): for a process that has the
    /// machine to itself, like a single kv node under its benchmark.
    PerCore,
    /// Every task on the main thread (tokio's current-thread scheduler). For processes that
    /// share two cores with several others, like the nodes of a Raft cluster and the load that
    /// drives them: a request there is a chain of hand-offs between tasks, and on the
    /// multi-thread scheduler each hand-off may wake another thread, a context switch that
    /// costs more than the work handed off. Measured on Project 2: 3 nodes and their client
    /// each on one thread did 30% more writes/s than with a worker per core (and than with
    /// only the nodes, or only the client, on one). Blocking calls (sled, a flush) must stay
    /// short or go to a thread of their own: they stall every task of the process.
    One,
}

/// Runs a node's async main with telemetry (JSON logs on stdout, at `default_filter` unless
/// `RUST_LOG` says otherwise) and a tokio runtime, and turns its outcome into an exit code: 0,
/// 2 for [`BadInput`], 1 for anything else.
pub fn run_main<F, Fut>(
    service: &str,
    instance: &str,
    default_filter: &str,
    threads: Threads,
    main: F,
) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    run_with(
        service,
        instance,
        LogOutput::JsonStdout,
        default_filter,
        threads,
        main,
    )
}

/// [`run_main`] for command-line tools: human logs on stderr at `default_filter`, a worker
/// per core.
pub fn run_cli<F, Fut>(service: &str, default_filter: &str, main: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    run_cli_on(Threads::PerCore, service, default_filter, main)
}

/// [`run_cli`] on the scheduler `threads` says.
pub fn run_cli_on<F, Fut>(
    threads: Threads,
    service: &str,
    default_filter: &str,
    main: F,
) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    run_with(
        service,
        "cli",
        LogOutput::HumanStderr,
        default_filter,
        threads,
        main,
    )
}

fn run_with<F, Fut>(
    service: &str,
    instance: &str,
    output: LogOutput,
    default_filter: &str,
    threads: Threads,
    main: F,
) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let telemetry = match telemetry::init(service, instance, output, default_filter) {
        Ok(telemetry) => telemetry,
        Err(e) => return report(&e, output),
    };
    let runtime = match threads {
        Threads::PerCore => tokio::runtime::Runtime::new(),
        Threads::One => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            return report(
                &anyhow::Error::new(e).context("starting the tokio runtime"),
                output,
            );
        }
    };
    let outcome = runtime.block_on(main());
    drop(runtime);
    drop(telemetry);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e, output),
    }
}

fn report(error: &anyhow::Error, output: LogOutput) -> ExitCode {
    let message = match error.downcast_ref::<tonic::Status>() {
        Some(status) => crate::rpc::describe(status),
        None => format!("{error:#}"),
    };
    eprintln!("error: {message}");
    if error.downcast_ref::<BadInput>().is_some() {
        return ExitCode::from(2);
    }
    if output == LogOutput::JsonStdout {
        // On the node's log too, so the lab's timeline shows why the node died.
        tracing::error!(event = "node_failed", error = %message, "exiting");
    }
    ExitCode::FAILURE
}
