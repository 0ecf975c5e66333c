//! The `cache` binary: `cache serve` runs one node (the same as `lab node cache`).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "cache",
    about = "Project 1: a distributed cache speaking memcached's protocol"
)]
enum Cli {
    /// Runs one cache node.
    Serve(distlab_cache::node::CacheNodeArgs),
}

fn main() -> std::process::ExitCode {
    match Cli::parse() {
        Cli::Serve(args) => distlab_cache::node::run_blocking(args),
    }
}
