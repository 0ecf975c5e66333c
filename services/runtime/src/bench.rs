//! Closed-loop load for the benchmarks (`lab bench proj0`, `lab bench proj2`...): C clients,
//! each sending its next request as soon as the previous one answered, for a warm-up that is
//! not recorded and then a measured time. Latency goes into an HDR histogram per client,
//! merged at the end.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::Context;
use hdrhistogram::Histogram;

/// The two operations every key-value benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
        }
    }
}

/// What one measured run of load did.
#[derive(Debug, Clone)]
pub struct Figure {
    pub seconds: f64,
    /// Requests that succeeded within the measured time.
    pub ops: u64,
    pub errors: u64,
    /// Latency of the successful requests, in microseconds.
    pub latency_us: Histogram<u64>,
}

impl Figure {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }

    pub fn us_at(&self, quantile: f64) -> u64 {
        self.latency_us.value_at_quantile(quantile)
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `clients` loops; client `i` calls the closure `make(i)` returned, again and again,
/// until `warmup + duration` has passed. Requests sent during the warm-up are not recorded.
pub async fn closed_loop<M, F, Fut, T, E>(
    clients: usize,
    warmup: Duration,
    duration: Duration,
    mut make: M,
) -> anyhow::Result<Figure>
where
    M: FnMut(usize) -> F,
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, E>> + Send,
{
    let measure_from = Instant::now() + warmup;
    let stop_at = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients.max(1) {
        let mut call = make(i);
        tasks.spawn(async move {
            let mut latency = new_histogram();
            let (mut ops, mut errors) = (0u64, 0u64);
            loop {
                let sent = Instant::now();
                if sent >= stop_at {
                    break;
                }
                let ok = call().await.is_ok();
                if sent < measure_from {
                    continue;
                }
                if ok {
                    ops += 1;
                    latency.saturating_record(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (ops, errors, latency)
        });
    }
    let mut figure = Figure {
        seconds: duration.as_secs_f64(),
        ops: 0,
        errors: 0,
        latency_us: new_histogram(),
    };
    while let Some(done) = tasks.join_next().await {
        let (ops, errors, latency) = done.context("a load client panicked")?;
        figure.ops += ops;
        figure.errors += errors;
        figure
            .latency_us
            .add(latency)
            .context("merging latency histograms")?;
    }
    Ok(figure)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls made in the warm-up are not counted; failures are counted apart.
    #[tokio::test(start_paused = true)]
    async fn the_warm_up_is_not_recorded_and_errors_are_counted() {
        let figure = closed_loop(
            2,
            Duration::from_millis(100),
            Duration::from_millis(1000),
            |i| {
                let mut n = 0u32;
                move || {
                    n += 1;
                    let fail = i == 1 && n.is_multiple_of(2);
                    async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        if fail { Err(()) } else { Ok(()) }
                    }
                }
            },
        )
        .await
        .unwrap();
        // Each client makes ~110 calls of 10 ms; ~100 of them after the warm-up.
        let recorded = figure.ops + figure.errors;
        assert!((195..=205).contains(&recorded), "{figure:?}");
        assert!((45..=55).contains(&figure.errors), "{figure:?}");
        assert!(figure.us_at(0.5) >= 10_000, "{figure:?}");
    }
}
