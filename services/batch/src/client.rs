//! The client side of `batch submit` and `batch status`: queue a job, read jobs' progress, and
//! follow one to its end with a progress bar per phase (indicatif; plain lines when stderr is
//! not a terminal).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use distlab_proto::batch::v1 as pb;
use distlab_runtime::channel::{TracedChannel, endpoint};
use distlab_runtime::node::run_cli;
use distlab_runtime::telemetry::PropagateTrace;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tonic::service::interceptor::InterceptedService;

use crate::cli::JobArgs;

pub type Client = pb::coordinator_client::CoordinatorClient<TracedChannel>;

/// A client for the coordinator at `addr` (connecting on first use).
pub fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
    let channel = endpoint(addr, Duration::from_secs(2))?
        .timeout(Duration::from_secs(60))
        .connect_lazy();
    Ok(pb::coordinator_client::CoordinatorClient::new(
        InterceptedService::new(channel, PropagateTrace),
    ))
}

/// The job as the wire carries it, paths made absolute (the coordinator and workers may run
/// in other directories).
pub fn job_message(job: &JobArgs, name: Option<String>) -> anyhow::Result<pb::JobDef> {
    let absolute = |p: &std::path::Path| -> anyhow::Result<String> {
        Ok(std::path::absolute(p)?.to_string_lossy().into_owned())
    };
    let plugin_is_file = !crate::plugin::SHIPPED.iter().any(|(n, _)| *n == job.plugin);
    Ok(pb::JobDef {
        plugin: if plugin_is_file {
            absolute(std::path::Path::new(&job.plugin))?
        } else {
            job.plugin.clone()
        },
        arg: job.arg.clone(),
        input: absolute(&job.input)?,
        reduces: job.reduces,
        split_bytes: job.split,
        range_partition: job.range_partition,
        output: absolute(&job.out)?,
        name: name.unwrap_or_default(),
        request_id: format!(
            "cli-{}-{}",
            std::process::id(),
            distlab_runtime::clock::wall_ms()
        ),
    })
}

/// A refusal the user caused (a bad job): exit 2, not 1.
fn classify(status: tonic::Status) -> anyhow::Error {
    let bad = status
        .metadata()
        .get(crate::coordinator::service::ERROR_KIND)
        .is_some_and(|k| k == "bad_job" || k == "unknown_job");
    let message = distlab_runtime::rpc::describe(&status);
    if bad {
        distlab_runtime::BadInput::new(message).into()
    } else {
        anyhow::anyhow!(message)
    }
}

pub fn submit_command(
    addr: SocketAddr,
    job: &JobArgs,
    name: Option<String>,
    follow: bool,
) -> ExitCode {
    let job = job.clone();
    run_cli("batch", "warn", move || async move {
        let mut client = connect(addr)?;
        let message = job_message(&job, name)?;
        let answer = client
            .submit(pb::SubmitRequest { job: Some(message) })
            .await
            .map_err(classify)?
            .into_inner();
        println!("job {}", answer.job);
        eprintln!(
            "job {} queued: {} map tasks, {} reduce tasks",
            answer.job, answer.maps, answer.reduces
        );
        if follow {
            follow_job(&mut client, answer.job).await?;
        }
        Ok(())
    })
}

pub fn status_command(addr: SocketAddr, job: Option<u64>, follow: bool) -> ExitCode {
    run_cli("batch", "warn", move || async move {
        let mut client = connect(addr)?;
        if let (Some(job), true) = (job, follow) {
            return follow_job(&mut client, job).await;
        }
        let jobs = client
            .status(pb::StatusRequest {
                job: job.unwrap_or(0),
            })
            .await
            .map_err(classify)?
            .into_inner()
            .jobs;
        println!(
            "{:>5}  {:<16} {:<8} {:<7} {:>9} {:>9} {:>8}  output",
            "job", "name", "state", "phase", "maps", "reduces", "elapsed"
        );
        for j in &jobs {
            println!(
                "{:>5}  {:<16} {:<8} {:<7} {:>9} {:>9} {:>7.1}s  {}",
                j.id,
                j.name,
                j.state,
                j.phase,
                format!("{}/{}", j.maps_done, j.maps),
                format!("{}/{}", j.reduces_done, j.reduces),
                j.elapsed_ms as f64 / 1000.0,
                j.output
            );
            if !j.error.is_empty() {
                println!("       error: {}", j.error);
            }
        }
        Ok(())
    })
}

/// Shows a job's progress until it is over; an error if it failed.
pub async fn follow_job(client: &mut Client, job: u64) -> anyhow::Result<()> {
    let target = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bars = MultiProgress::with_draw_target(target);
    let style = ProgressStyle::with_template("{prefix:>7} [{bar:40}] {pos}/{len} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let map = bars.add(
        ProgressBar::new(0)
            .with_style(style.clone())
            .with_prefix("map"),
    );
    let reduce = bars.add(ProgressBar::new(0).with_style(style).with_prefix("reduce"));
    let plain = bars.is_hidden();
    let mut last_line = String::new();
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        let answer = client.status(pb::StatusRequest { job }).await;
        let status = match answer {
            Ok(answer) => {
                unreachable_since = None;
                answer.into_inner().jobs.into_iter().next()
            }
            Err(e) if e.code() == tonic::Code::NotFound => return Err(classify(e)),
            Err(e) => {
                // The coordinator may be restarting: keep following for a while.
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > Duration::from_secs(60) {
                    return Err(classify(e));
                }
                map.set_message("(coordinator unreachable)");
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let Some(s) = status else {
            anyhow::bail!("job {job}: the coordinator has no such job");
        };
        map.set_length(s.maps.into());
        map.set_position(s.maps_done.into());
        reduce.set_length(s.reduces.into());
        reduce.set_position(s.reduces_done.into());
        let running = format!("{} running", s.running);
        if s.phase == "map" {
            map.set_message(running);
            reduce.set_message("");
        } else {
            map.set_message("");
            reduce.set_message(running);
        }
        if plain {
            let line = format!(
                "job {job}: {} map {}/{} reduce {}/{}",
                s.state, s.maps_done, s.maps, s.reduces_done, s.reduces
            );
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
        }
        match s.state.as_str() {
            "done" => {
                map.finish();
                reduce.finish();
                eprintln!(
                    "job {job} done in {:.1} s: {}",
                    s.elapsed_ms as f64 / 1000.0,
                    s.output
                );
                return Ok(());
            }
            "failed" => {
                map.abandon();
                reduce.abandon();
                anyhow::bail!("job {job} failed: {}", s.error);
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
