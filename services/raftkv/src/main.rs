//! The `raftkv` binary: see [`distlab_raftkv::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    distlab_raftkv::cli::run(distlab_raftkv::cli::Cli::parse())
}
