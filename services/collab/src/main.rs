//! The `collab` binary: see [`distlab_collab::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    distlab_collab::cli::run(distlab_collab::cli::Cli::parse())
}
