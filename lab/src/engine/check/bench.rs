//! `lab bench checker`: the linearizability checker on a synthetic history. Target: a
//! 10,000-operation history over 10 keys with 20 concurrent clients checks in under 1 s.

use std::time::Instant;

use super::linearizable;

#[derive(Debug, Clone, clap::Args)]
pub struct CheckerBenchArgs {
    #[arg(long, default_value_t = 10_000)]
    pub operations: usize,
    #[arg(long, default_value_t = 10)]
    pub keys: usize,
    #[arg(long, default_value_t = 20)]
    pub clients: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(args: &CheckerBenchArgs) -> anyhow::Result<()> {
    let history = linearizable::synthetic_history(
        args.seed,
        args.operations,
        args.keys.max(1),
        args.clients.max(1),
    );
    let started = Instant::now();
    let verdict = linearizable::check(&history, &super::Budget::default());
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "bench=checker figure=linearizable operations={} keys={} clients={} valid={} seconds={seconds:.3}",
        args.operations, args.keys, args.clients, verdict.valid
    );
    anyhow::ensure!(
        verdict.valid,
        "a synthetic history must be linearizable: {}",
        verdict.summary
    );
    Ok(())
}
