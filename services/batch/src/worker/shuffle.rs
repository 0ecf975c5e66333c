//! The shuffle's serving side: a worker keeps its committed map outputs on its own disk and
//! streams one partition's run to the reducer that asks (through the lab's link proxy, so a
//! cut link or a dead worker makes the fetch fail and the map run again).
//!
//! Layout under the data dir: `maps/job-J/map-M-aA/part-R` (see [`map_dir`]).

use std::path::{Path, PathBuf};
use std::pin::Pin;

use distlab_proto::batch::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::scheduler::{AttemptId, JobId};
use crate::task::run_path;

/// Bytes per streamed chunk.
const CHUNK: usize = 256 * 1024;

/// Where map attempt `attempt` of task `map` of `job` writes its runs.
pub fn map_dir(data_dir: &Path, job: JobId, map: u32, attempt: AttemptId) -> PathBuf {
    job_dir(data_dir, job).join(format!("map-{map}-a{attempt}"))
}

/// Every map output of `job` on this worker.
pub fn job_dir(data_dir: &Path, job: JobId) -> PathBuf {
    data_dir.join("maps").join(format!("job-{job}"))
}

pub struct ShuffleApi {
    pub data_dir: PathBuf,
}

type RunStream = Pin<Box<dyn Stream<Item = Result<pb::RunChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::shuffle_server::Shuffle for ShuffleApi {
    type FetchRunStream = RunStream;

    async fn fetch_run(
        &self,
        request: Request<pb::FetchRunRequest>,
    ) -> Result<Response<RunStream>, Status> {
        let r = request.into_inner();
        let path = run_path(
            &map_dir(&self.data_dir, r.job, r.map, r.attempt),
            r.partition,
        );
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
            Status::not_found(format!(
                "job {} map {} attempt {} partition {}: {e}",
                r.job, r.map, r.attempt, r.partition
            ))
        })?;
        let stream = async_stream(move |tx| async move {
            loop {
                let mut buf = vec![0; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx
                            .send(Ok(pb::RunChunk { data: buf.into() }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "reading {}: {e}",
                                path.display()
                            ))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task through a small channel (backpressure: the task waits while the
/// reducer is slow).
fn async_stream<F, Fut>(produce: F) -> RunStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::RunChunk, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(produce(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
