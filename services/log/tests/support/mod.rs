//! What the real-process tests share.

pub mod cluster;

use std::time::Duration;

use distlab_log::controller::client::ControllerClient;
use distlab_proto::log::v1 as pb;

/// The controllers' metadata once `done` holds for it (20 s at most), following its versions
/// with long polls.
pub async fn metadata_until(
    controller: &ControllerClient,
    what: &str,
    done: impl Fn(&pb::ClusterMetadata) -> bool,
) -> pb::ClusterMetadata {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut version = 0;
    loop {
        let metadata = controller
            .metadata(version, Duration::from_secs(1))
            .await
            .unwrap();
        if done(&metadata) {
            return metadata;
        }
        version = metadata.version;
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 20 s: {what}; metadata {metadata:?}"
        );
    }
}
