//! The `kv` binary: see [`distlab_kv::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    distlab_kv::cli::run(distlab_kv::cli::Cli::parse())
}
