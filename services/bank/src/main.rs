//! The `bank` binary: see [`distlab_bank::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    distlab_bank::cli::run(distlab_bank::cli::Cli::parse())
}
