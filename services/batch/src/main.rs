//! The `batch` binary: see [`distlab_batch::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    distlab_batch::cli::run(distlab_batch::cli::Cli::parse())
}
