//! The `batch` binary: see [`distlab_batch::cli`].

use clap::Parser;

/// mimalloc, as the lab uses: a map task allocates and frees a pair per word it emits.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    distlab_batch::cli::run(distlab_batch::cli::Cli::parse())
}
