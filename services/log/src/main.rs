//! The `log` binary: see [`distlab_log::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    distlab_log::cli::run(distlab_log::cli::Cli::parse())
}
