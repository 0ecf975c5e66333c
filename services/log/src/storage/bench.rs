//! `lab bench proj3 --phases storage`: what one partition's log can do on this disk, below any
//! network: appends of batched messages under each fsync policy, then sequential reads of
//! what was written. It bounds what a broker can reach (the broker adds the network,
//! replication and the consumers).
//!
//! One line per figure, e.g.
//! `bench=proj3 phase=storage op=append message_bytes=1024 batch_records=64 fsync=100ms seconds=5.000 messages=... mb_per_sec=... msgs_per_sec=... p50_batch_us=... p99_batch_us=...`
//!
//! The log keeps at most `--retention` bytes (retention runs as segments roll), so a long run
//! does not fill the disk.

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;

use super::batch::{Batch, HeaderFields, ProducerStamp, split};
use super::partition::{FsyncPolicy, LogConfig, PartitionLog};

#[derive(Debug, Clone, clap::Args)]
pub struct StorageBenchArgs {
    /// Message sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1024")]
    pub message_bytes: Vec<usize>,
    /// Bytes of messages per batch (a producer's `batch.size`).
    #[arg(long, default_value_t = 64 * 1024)]
    pub batch_bytes: usize,
    /// Fsync policies to measure: every-batch, never, or an interval.
    #[arg(long, value_delimiter = ',', default_value = "100ms,every-batch")]
    pub fsync: Vec<String>,
    /// Measured time per figure.
    #[arg(long, value_parser = distlab_runtime::duration::parse, default_value = "5s")]
    pub duration: Duration,
    /// Segment size.
    #[arg(long, default_value_t = 64 << 20)]
    pub segment_bytes: u64,
    /// Most bytes the log keeps while the bench runs.
    #[arg(long, default_value_t = 1 << 30)]
    pub retention: u64,
}

pub fn run(args: &StorageBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch_bytes > 0
            && !args.duration.is_zero()
            && args.message_bytes.iter().all(|m| *m > 0),
        "--batch-bytes, --duration and --message-bytes must be above zero"
    );
    let policies: Vec<(String, FsyncPolicy)> = args
        .fsync
        .iter()
        .map(|p| {
            Ok((
                p.clone(),
                FsyncPolicy::parse(p).map_err(anyhow::Error::msg)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    for &message_bytes in &args.message_bytes {
        for (name, policy) in &policies {
            append_and_read(args, message_bytes, name, *policy)?;
        }
    }
    Ok(())
}

fn append_and_read(
    args: &StorageBenchArgs,
    message_bytes: usize,
    policy_name: &str,
    policy: FsyncPolicy,
) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("distlab-bench-proj3-")
        .tempdir()
        .context("creating a scratch directory")?;
    let config = LogConfig {
        segment_bytes: args.segment_bytes,
        segment_age: None,
        retention_bytes: Some(args.retention),
        retention_age: None,
        fsync: policy,
        ..LogConfig::default()
    };
    let (mut log, _) = PartitionLog::open(dir.path(), config)?;
    let records = (args.batch_bytes / message_bytes).max(1);
    let value = vec![b'x'; message_bytes];
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    let mut segments = log.segment_count();
    while started.elapsed() < args.duration {
        let now_ms = distlab_runtime::clock::wall_ms();
        // Built per batch, as a broker receives a new one per produce request.
        let batch = Batch::build(
            (0..records).map(|_| (None, value.as_slice(), now_ms)),
            ProducerStamp::NONE,
        );
        let sent = Instant::now();
        log.append_as_leader(&batch, 1, now_ms)?;
        latency.saturating_record(sent.elapsed().as_micros() as u64);
        messages += records as u64;
        bytes += (records * message_bytes) as u64;
        if log.segment_count() != segments {
            log.enforce_retention(now_ms)?;
            segments = log.segment_count();
        }
    }
    log.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "bench=proj3 phase=storage op=append message_bytes={message_bytes} batch_records={records} fsync={policy_name} seconds={seconds:.3} messages={messages} mb_per_sec={:.1} msgs_per_sec={:.0} p50_batch_us={} p99_batch_us={}",
        bytes as f64 / seconds / 1e6,
        messages as f64 / seconds,
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
    );

    // Read back everything retention kept, 1 MiB per read, as a consumer's fetches would.
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let (mut offset, mut read_messages, mut read_bytes) = (start, 0u64, 0u64);
    let started = Instant::now();
    while offset < end {
        let chunk = log
            .read(offset, 1 << 20, end)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(!chunk.is_empty(), "no progress reading at offset {offset}");
        read_bytes += chunk.len() as u64;
        for batch in split(chunk.into())? {
            read_messages += u64::from(batch.record_count());
            offset = batch.next_offset();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "bench=proj3 phase=storage op=read message_bytes={message_bytes} fsync={policy_name} seconds={seconds:.3} messages={read_messages} mb_per_sec={:.1} msgs_per_sec={:.0} checked=crc",
        read_bytes as f64 / seconds.max(1e-9) / 1e6,
        read_messages as f64 / seconds.max(1e-9),
    );
    Ok(())
}
