//! A follower's replication loop for one partition: first cut the log where it diverged from
//! the new leader (the end, on the leader, of this replica's latest leader epoch: KIP-101),
//! then fetch from the log end over and over (long polls), appending what comes and learning
//! the leader's high watermark. Each fetch tells the leader how far this replica got: that is
//! how the leader tracks the ISR and moves the high watermark.
//!
//! Stops when cancelled (the metadata named another leader or epoch).

use std::sync::Arc;
use std::time::Duration;

use distlab_proto::log::v1 as pb;
use tokio_util::sync::CancellationToken;

use super::{Broker, partition_name};
use crate::replication::truncation_point;
use crate::storage::batch::split;

/// Bytes per fetch at most.
const FETCH_BYTES: u32 = 1 << 20;
/// How long the leader may hold a fetch that finds nothing new.
const FETCH_WAIT: Duration = Duration::from_millis(500);

pub async fn follow(
    broker: Arc<Broker>,
    topic: String,
    partition: u32,
    leader: String,
    leader_epoch: u32,
    stop: CancellationToken,
) {
    let name = partition_name(&topic, partition);
    let Some(mut rpc) = broker.peers.get(&leader).cloned() else {
        tracing::error!(
            partition = name,
            leader,
            "no --peer address for the leader; cannot follow it"
        );
        return;
    };
    let Some(replica) = broker.replica(&topic, partition) else {
        return;
    };
    let mut truncated = false;
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        let step = async {
            if !truncated {
                truncate(&mut rpc, &topic, partition, &replica).await?;
                truncated = true;
            }
            let offset = replica.lock().unwrap().log().log_end_offset();
            let mut request = tonic::Request::new(pb::FetchRequest {
                topic: topic.clone(),
                partition,
                offset,
                max_bytes: FETCH_BYTES,
                max_wait_ms: FETCH_WAIT.as_millis() as u32,
                replica: broker.me.clone(),
                leader_epoch,
                check_epoch: true,
            });
            request.set_timeout(FETCH_WAIT + Duration::from_secs(2));
            let reply = rpc.fetch(request).await?.into_inner();
            let batches = split(reply.records.clone()).map_err(|e| {
                tonic::Status::data_loss(format!("the leader sent a corrupt batch: {e}"))
            })?;
            let mut r = replica.lock().unwrap();
            if r.log().log_end_offset() != offset {
                // Truncated or written meanwhile: fetch again from the new end.
                return Ok(());
            }
            r.append_replicated(
                &batches,
                reply.high_watermark,
                distlab_runtime::clock::wall_ms(),
            )
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
            Ok::<(), tonic::Status>(())
        };
        let result = tokio::select! {
            result = step => result,
            () = stop.cancelled() => return,
        };
        match result {
            Ok(()) => failures = 0,
            Err(status) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::info!(partition = name, leader, error = %distlab_runtime::rpc::describe(&status), "fetching from the leader failed; retrying");
                }
                let pause = Duration::from_millis(50 * u64::from(failures.min(10)));
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

/// Asks the leader where this replica's latest epoch ends in its log, and cuts there.
async fn truncate(
    rpc: &mut super::BrokerRpc,
    topic: &str,
    partition: u32,
    replica: &std::sync::Mutex<super::replica::Replica>,
) -> Result<(), tonic::Status> {
    let latest = replica.lock().unwrap().log().epochs().latest();
    let Some(latest) = latest else {
        return Ok(());
    };
    let mut request = tonic::Request::new(pb::OffsetsForLeaderEpochRequest {
        topic: topic.to_string(),
        partition,
        leader_epoch: latest.epoch,
    });
    request.set_timeout(Duration::from_secs(2));
    let answer = rpc.offsets_for_leader_epoch(request).await?.into_inner();
    let leader_answer = answer
        .found
        .then_some((answer.leader_epoch, answer.end_offset));
    let mut r = replica.lock().unwrap();
    let log_end = r.log().log_end_offset();
    let cut = truncation_point(r.log().epochs(), log_end, leader_answer);
    if cut < log_end {
        r.truncate_to(cut)
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
    }
    Ok(())
}
