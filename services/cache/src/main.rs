//! The `cache` binary: `cache serve` runs one node (the same as `lab node cache`); `cache
//! proxy` runs the sidecar an application talks to in memcached's protocol.

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cache",
    about = "Project 1: a distributed cache speaking memcached's protocol"
)]
enum Cli {
    /// Runs one cache node.
    Serve(distlab_cache::node::CacheNodeArgs),
    /// Runs the sidecar: a local memcached endpoint that routes each key to its replicas by
    /// the ring it learns by gossip.
    Proxy(distlab_cache::proxy::ProxyArgs),
}

fn main() -> std::process::ExitCode {
    match Cli::parse() {
        Cli::Serve(args) => distlab_cache::node::run_blocking(args),
        Cli::Proxy(args) => distlab_cache::proxy::run_blocking(args),
    }
}
