//! `lab bench proj4`: MapReduce-mini's throughput against the obvious alternatives, measured
//! in the same run on the same generated corpus (deterministic Zipf-worded text, 1 GB by
//! default, `--bytes` for less).
//!
//! - `wordcount`: the word count plugin run sequentially in this process (`batch run-local`'s
//!   code: the framework's floor), the shell pipeline `tr -s ' ' '\n' | sort | uniq -c`
//!   (`LC_ALL=C`, which is what makes GNU sort fast), and real `lab node batch` clusters of a
//!   coordinator and 1, 2 and 4 workers (`--workers`), submit to output in place.
//! - `sort`: the sort plugin with a sampled range partitioner (globally sorted output), run
//!   sequentially, against GNU `sort` (`LC_ALL=C`), and on the clusters.
//! - `plugin`: word count's map over every line of the corpus, as the WebAssembly plugin the
//!   workers run (sandboxed: fuel, memory limit, copies in and out) and as the same C function
//!   compiled natively (`distlab_batch::native`): what the sandbox costs, file reading excluded.
//! - `speculation`: a coordinator and three workers, one 10x slower (`--slow w3=10`), the
//!   word count with speculative backups and without: the job time saved.
//!
//! One line per figure, e.g.
//! `bench=proj4 job=wordcount runner=cluster workers=2 bytes=1073741824 seconds=41.2 mb_per_sec=26.1 vs_sequential=0.81`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use distlab_batch::cluster::{LocalCluster, NodeCommand};
use distlab_batch::local::{JobDef, run_local};
use distlab_proto::batch::v1 as pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Wordcount,
    Sort,
    Plugin,
    Speculation,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Proj4BenchArgs {
    /// Phases to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "wordcount,sort,plugin,speculation"
    )]
    pub phases: Vec<Phase>,
    /// Corpus size (e.g. 1g, 200m).
    #[arg(long, default_value = "1g", value_parser = parse_size)]
    pub bytes: u64,
    /// Cluster sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Bytes per map task.
    #[arg(long, default_value = "16m", value_parser = parse_size)]
    pub split: u64,
    /// Reduce tasks.
    #[arg(long, default_value_t = 4)]
    pub reduces: u32,
    /// How much slower the straggler is in the speculation phase.
    #[arg(long, default_value_t = 10.0)]
    pub slow: f64,
    /// Bytes per map task in the speculation phase: by default one map per corpus file
    /// (64 MiB). A straggler costs about one of its tasks, so with many small tasks there is
    /// little for a backup to save (16m over 1 GB: 7%).
    #[arg(long, default_value = "64m", value_parser = parse_size)]
    pub speculation_split: u64,
    /// Where the corpus and outputs go (default: a temporary directory, removed after).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

fn parse_size(text: &str) -> Result<u64, String> {
    distlab_runtime::size::parse(text).map(|n| n as u64)
}

/// What one run measured.
struct Measured {
    seconds: f64,
}

fn line(job: &str, runner: &str, extra: &str, bytes: u64, m: &Measured, baseline: Option<f64>) {
    let mbps = bytes as f64 / 1e6 / m.seconds.max(1e-9);
    let ratio = baseline.map_or(String::new(), |b| {
        format!(" vs_sequential={:.2}", mbps / b.max(1e-9))
    });
    println!(
        "bench=proj4 job={job} runner={runner}{extra} bytes={bytes} seconds={:.2} mb_per_sec={mbps:.1}{ratio}",
        m.seconds
    );
}

/// Writes the corpus: files of at most 64 MiB, at least 4 (so every cluster has maps to
/// share even with big splits).
fn corpus(dir: &Path, bytes: u64) -> anyhow::Result<PathBuf> {
    let input = dir.join("input");
    std::fs::create_dir_all(&input)?;
    let files = (bytes.div_ceil(64 << 20)).max(4);
    for i in 0..files {
        let path = input.join(format!("part-{i:03}.txt"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        distlab_batch::corpus::write(&mut out, bytes / files, 50_000, i + 1)?;
        std::io::Write::flush(&mut out)?;
    }
    Ok(input)
}

fn input_bytes(input: &Path) -> anyhow::Result<(u64, Vec<PathBuf>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let bytes = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    Ok((bytes, files))
}

fn sequential(job: &JobDef, scratch: &Path) -> anyhow::Result<Measured> {
    let out = scratch.join("sequential-out");
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    run_local(job, &scratch.join("sequential-work"), &out).map_err(anyhow::Error::msg)?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(scratch.join("sequential-work"));
    Ok(Measured { seconds })
}

/// Runs `script` with `sh -c` (C locale), its output to `out`.
fn shell(script: &str, out: &Path) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("LC_ALL", "C")
        .stdout(std::fs::File::create(out)?)
        .status()
        .with_context(|| format!("running {script}"))?;
    anyhow::ensure!(status.success(), "{script}: {status}");
    Ok(Measured {
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn quoted(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| format!("'{}'", f.display()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Word count's map over every line of `files`, WebAssembly and native, each timed over the
/// same bytes in memory; both must emit the same number of pairs.
fn plugin_forms(files: &[PathBuf], bytes: u64) -> anyhow::Result<()> {
    use distlab_batch::plugin::{Limits, Plugin, resolve};
    let wasm = Plugin::load(&resolve("wordcount")?)?;
    let mut wasm = wasm.instance(Limits::default(), b"", 1)?;
    let (mut wasm_time, mut native_time) = (Duration::ZERO, Duration::ZERO);
    let (mut wasm_pairs, mut native_pairs) = (0usize, 0usize);
    for file in files {
        let text = std::fs::read(file).with_context(|| file.display().to_string())?;
        let name = file.to_string_lossy();
        let started = Instant::now();
        for record in text.split(|&b| b == b'\n') {
            wasm_pairs += wasm.map(name.as_bytes(), record)?.len();
        }
        wasm_time += started.elapsed();
        let started = Instant::now();
        for record in text.split(|&b| b == b'\n') {
            native_pairs += distlab_batch::native::wordcount_map(name.as_bytes(), record).len();
        }
        native_time += started.elapsed();
    }
    anyhow::ensure!(
        wasm_pairs == native_pairs,
        "the WebAssembly word count emitted {wasm_pairs} pairs, the native one {native_pairs}"
    );
    let wasm = Measured {
        seconds: wasm_time.as_secs_f64(),
    };
    let native = Measured {
        seconds: native_time.as_secs_f64(),
    };
    line("wordcount-map", "plugin", " form=wasm", bytes, &wasm, None);
    line(
        "wordcount-map",
        "plugin",
        " form=native",
        bytes,
        &native,
        None,
    );
    println!(
        "bench=proj4 phase=plugin job=wordcount-map bytes={bytes} wasm_vs_native={:.2}",
        native.seconds / wasm.seconds.max(1e-9)
    );
    Ok(())
}

/// Starts a cluster of `workers`, runs `job` once, and stops the cluster.
async fn on_cluster(
    exe: &Path,
    scratch: &Path,
    name: &str,
    workers: usize,
    coordinator_flags: &[&str],
    worker_flags: &dyn Fn(&str) -> Vec<String>,
    job: &JobDef,
) -> anyhow::Result<Measured> {
    let dir = scratch.join(format!("cluster-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let command = NodeCommand {
        program: exe.to_path_buf(),
        args: vec!["node".into(), "batch".into()],
    };
    let cluster =
        LocalCluster::start(command, &dir, workers, coordinator_flags, worker_flags).await?;
    // Every worker registers with its first request for work.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let message = pb::JobDef {
        plugin: job.plugin.clone(),
        arg: job.arg.clone(),
        input: job.input.to_string_lossy().into_owned(),
        reduces: job.reduces,
        split_bytes: job.split_bytes,
        range_partition: job.range_partition,
        output: dir.join("out").to_string_lossy().into_owned(),
        name: name.into(),
        request_id: name.into(),
    };
    let started = Instant::now();
    let id = cluster.submit(message).await?;
    let status = cluster.finished(id, Duration::from_secs(3600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        status.state == "done",
        "{name}: the job {}: {}",
        status.state,
        status.error
    );
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measured { seconds })
}

pub async fn run(args: &Proj4BenchArgs, exe: PathBuf) -> anyhow::Result<()> {
    let temporary;
    let scratch = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temporary = tempfile::Builder::new()
                .prefix("distlab-bench-proj4-")
                .tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    let input = corpus(&scratch, args.bytes)?;
    let (bytes, files) = input_bytes(&input)?;
    let job = |plugin: &str, range: bool| JobDef {
        plugin: plugin.into(),
        arg: String::new(),
        input: input.clone(),
        reduces: args.reduces,
        split_bytes: args.split,
        range_partition: range,
    };
    let none = |_: &str| Vec::new();
    if args.phases.contains(&Phase::Wordcount) {
        let wordcount = job("wordcount", false);
        let base = sequential(&wordcount, &scratch)?;
        line("wordcount", "sequential", "", bytes, &base, None);
        let base_mbps = bytes as f64 / 1e6 / base.seconds;
        let pipeline = format!("cat {} | tr -s ' ' '\\n' | sort | uniq -c", quoted(&files));
        let m = shell(&pipeline, &scratch.join("shell-wordcount.txt"))?;
        line("wordcount", "shell", "", bytes, &m, Some(base_mbps));
        for &workers in &args.workers {
            let m =
                on_cluster(&exe, &scratch, "wordcount", workers, &[], &none, &wordcount).await?;
            line(
                "wordcount",
                "cluster",
                &format!(" workers={workers}"),
                bytes,
                &m,
                Some(base_mbps),
            );
        }
    }
    if args.phases.contains(&Phase::Sort) {
        let sort = job("sort", true);
        let base = sequential(&sort, &scratch)?;
        line("sort", "sequential", "", bytes, &base, None);
        let base_mbps = bytes as f64 / 1e6 / base.seconds;
        let m = shell(
            &format!("sort {}", quoted(&files)),
            &scratch.join("gnu-sort.txt"),
        )?;
        line("sort", "gnu-sort", "", bytes, &m, Some(base_mbps));
        for &workers in &args.workers {
            let m = on_cluster(&exe, &scratch, "sort", workers, &[], &none, &sort).await?;
            line(
                "sort",
                "cluster",
                &format!(" workers={workers}"),
                bytes,
                &m,
                Some(base_mbps),
            );
        }
    }
    if args.phases.contains(&Phase::Plugin) {
        plugin_forms(&files, bytes)?;
    }
    if args.phases.contains(&Phase::Speculation) {
        let split = args.speculation_split;
        let wordcount = JobDef {
            split_bytes: split,
            ..job("wordcount", false)
        };
        let slow = format!("w3={}", args.slow);
        let flags = |_: &str| vec!["--slow".to_string(), slow.clone()];
        let with = on_cluster(&exe, &scratch, "speculation-on", 3, &[], &flags, &wordcount).await?;
        let without = on_cluster(
            &exe,
            &scratch,
            "speculation-off",
            3,
            &["--no-speculation"],
            &flags,
            &wordcount,
        )
        .await?;
        println!(
            "bench=proj4 phase=speculation workers=3 slow_worker=w3 slow={} bytes={bytes} split={split} with_seconds={:.2} without_seconds={:.2} saved_pct={:.0}",
            args.slow,
            with.seconds,
            without.seconds,
            (1.0 - with.seconds / without.seconds.max(1e-9)) * 100.0
        );
    }
    Ok(())
}
