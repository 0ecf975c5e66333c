//! `cache.v1` over gRPC: the service a node serves, and [`GrpcPeers`], how its coordinator
//! reaches the other nodes (through the `--peer` addresses, so the lab's link proxies stay in
//! the path).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use distlab_proto::cache::v1 as pb;
use pb::cache_client::CacheClient;
use pb::cache_server::{Cache, CacheServer};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::coordinator::{Coordinator, PeerError, Peers};
use crate::placement::MemberId;
use crate::protocol::{self, Command, Reply};
use crate::store::{MAX_KEY_LEN, Mode, Replica, Stored, Version};

/// An item's state on the wire: expiry as remaining milliseconds (an `Instant` means nothing
/// on another machine).
pub fn entry(key: Bytes, replica: &Replica, now: Instant) -> pb::Entry {
    match replica {
        Replica::Value {
            value,
            flags,
            expires,
            version,
        } => pb::Entry {
            key,
            version: *version,
            deleted: false,
            value: value.clone(),
            flags: *flags,
            // An item that expires has at least 1 ms left on the wire (0 means never).
            ttl_ms: expires.map_or(0, |at| {
                (at.saturating_duration_since(now).as_millis() as u64).max(1)
            }),
        },
        Replica::Deleted { version } => pb::Entry {
            key,
            version: *version,
            deleted: true,
            ..Default::default()
        },
    }
}

/// The state an entry carries, and its key.
pub fn replica(entry: pb::Entry, now: Instant) -> (Bytes, Replica) {
    let state = if entry.deleted {
        Replica::Deleted {
            version: entry.version,
        }
    } else {
        Replica::Value {
            value: entry.value,
            flags: entry.flags,
            expires: (entry.ttl_ms > 0).then(|| now + Duration::from_millis(entry.ttl_ms)),
            version: entry.version,
        }
    };
    (entry.key, state)
}

fn entries(list: Vec<pb::Entry>) -> Vec<(Bytes, Replica)> {
    let now = Instant::now();
    list.into_iter().map(|e| replica(e, now)).collect()
}

fn to_entries(list: &[(Bytes, Replica)]) -> Vec<pb::Entry> {
    let now = Instant::now();
    list.iter().map(|(k, r)| entry(k.clone(), r, now)).collect()
}

fn check_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Status::invalid_argument(format!(
            "a key is 1 to {MAX_KEY_LEN} bytes, not {}",
            key.len()
        )));
    }
    if key.iter().any(|b| b.is_ascii_control() || *b == b' ') {
        return Err(Status::invalid_argument(
            "a key has no spaces or control characters (memcached's rule)",
        ));
    }
    Ok(())
}

/// A coordinator's error reply as a gRPC status.
fn status_of(reply: Reply) -> Status {
    match reply {
        Reply::ClientError(message) => Status::invalid_argument(message),
        Reply::ServerError(message) => Status::unavailable(message),
        Reply::Stored(Stored::TooLarge) => {
            Status::resource_exhausted("the value is larger than the cache's memory")
        }
        other => Status::internal(format!("unexpected reply {other:?}")),
    }
}

/// The gRPC service of a node.
pub struct CacheService<P> {
    coordinator: Arc<Coordinator<P>>,
}

impl<P: Peers> CacheService<P> {
    pub fn new(coordinator: Arc<Coordinator<P>>) -> CacheServer<Self> {
        CacheServer::new(Self { coordinator })
    }
}

#[tonic::async_trait]
impl<P: Peers> Cache for CacheService<P> {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let key = request.into_inner().key;
        check_key(&key)?;
        let command = Command::Get {
            keys: vec![key],
            cas: true,
        };
        match self.coordinator.handle(command, false).await {
            Reply::Values { items, .. } => Ok(Response::new(match items.into_iter().next() {
                Some(item) => pb::GetResponse {
                    found: true,
                    value: item.value,
                    flags: item.flags,
                    version: item.version,
                },
                None => pb::GetResponse::default(),
            })),
            other => Err(status_of(other)),
        }
    }

    async fn set(
        &self,
        request: Request<pb::SetRequest>,
    ) -> Result<Response<pb::SetResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        if request.value.len() > protocol::MAX_VALUE {
            return Err(Status::invalid_argument(format!(
                "a value is at most {} bytes, not {}",
                protocol::MAX_VALUE,
                request.value.len()
            )));
        }
        // Whole seconds, rounded up: the memcached command's unit.
        let exptime = request.ttl_ms.div_ceil(1000) as i64;
        let stamp = Some(request.version);
        let command = Command::Store {
            mode: Mode::Set,
            key: request.key,
            flags: request.flags,
            exptime,
            data: request.value,
            noreply: false,
        };
        match self.coordinator.handle_stamped(command, false, stamp).await {
            Reply::Stored(Stored::Stored) => Ok(Response::new(pb::SetResponse {})),
            other => Err(status_of(other)),
        }
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        check_key(&request.key)?;
        let command = Command::Delete {
            key: request.key,
            noreply: false,
        };
        let stamp = Some(request.version);
        match self.coordinator.handle_stamped(command, false, stamp).await {
            Reply::Deleted(deleted) => Ok(Response::new(pb::DeleteResponse { deleted })),
            other => Err(status_of(other)),
        }
    }

    async fn execute(
        &self,
        request: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let request = request.into_inner();
        let bytes = request.request;
        let command = match protocol::parse(&bytes) {
            Ok(Some((command, used))) if used == bytes.len() => command,
            Ok(_) => return Err(Status::invalid_argument("not one whole memcached request")),
            Err(e) => return Err(Status::invalid_argument(e.reply)),
        };
        let stamp = Some(request.version);
        let reply = self.coordinator.handle_stamped(command, true, stamp).await;
        let reply = serde_json::to_vec(&reply).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ExecuteResponse {
            reply: reply.into(),
        }))
    }

    async fn replicate(
        &self,
        request: Request<pb::ReplicateRequest>,
    ) -> Result<Response<pb::ReplicateResponse>, Status> {
        let taken = self
            .coordinator
            .take_replicas(entries(request.into_inner().entries));
        Ok(Response::new(pb::ReplicateResponse {
            taken: taken as u32,
        }))
    }

    async fn fetch(
        &self,
        request: Request<pb::FetchRequest>,
    ) -> Result<Response<pb::FetchResponse>, Status> {
        let key = request.into_inner().key;
        let copy = self.coordinator.copy_of(&key);
        Ok(Response::new(pb::FetchResponse {
            entry: copy.map(|c| entry(key, &c, Instant::now())),
        }))
    }

    async fn hint(
        &self,
        request: Request<pb::HintRequest>,
    ) -> Result<Response<pb::HintResponse>, Status> {
        let request = request.into_inner();
        let kept = self
            .coordinator
            .keep_hints(&request.owner, entries(request.entries));
        Ok(Response::new(pb::HintResponse { kept: kept as u32 }))
    }
}

/// The other nodes, by id, over gRPC; each call bounded by `timeout`.
#[derive(Clone)]
pub struct GrpcPeers {
    clients: Arc<BTreeMap<MemberId, CacheClient<Channel>>>,
    timeout: Duration,
}

impl GrpcPeers {
    /// Lazily connected clients for every `--peer` address.
    pub fn new(peers: &BTreeMap<MemberId, SocketAddr>, timeout: Duration) -> anyhow::Result<Self> {
        let clients = peers
            .iter()
            .map(|(id, addr)| {
                // `timeout` bounds every call on the client's side too: a peer behind a cut
                // link proxy accepts and never answers.
                let channel = distlab_runtime::channel::endpoint(*addr, timeout)?
                    .timeout(timeout)
                    .connect_lazy();
                Ok((id.clone(), CacheClient::new(channel)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            clients: Arc::new(clients),
            timeout,
        })
    }

    fn client(&self, to: &str) -> Result<CacheClient<Channel>, PeerError> {
        self.clients.get(to).cloned().ok_or_else(|| PeerError {
            member: to.into(),
            message: "no --peer address for this member".into(),
        })
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    fn error(to: &str, status: Status) -> PeerError {
        PeerError {
            member: to.into(),
            message: distlab_runtime::rpc::describe(&status),
        }
    }
}

impl Peers for GrpcPeers {
    async fn replicate(&self, to: &str, list: Vec<(Bytes, Replica)>) -> Result<usize, PeerError> {
        let entries = to_entries(&list);
        let reply = self
            .client(to)?
            .replicate(self.request(pb::ReplicateRequest { entries }))
            .await
            .map_err(|s| Self::error(to, s))?;
        Ok(reply.into_inner().taken as usize)
    }

    async fn fetch(&self, to: &str, key: Bytes) -> Result<Option<Replica>, PeerError> {
        let reply = self
            .client(to)?
            .fetch(self.request(pb::FetchRequest { key }))
            .await
            .map_err(|s| Self::error(to, s))?;
        let now = Instant::now();
        Ok(reply.into_inner().entry.map(|e| replica(e, now).1))
    }

    async fn hint(
        &self,
        to: &str,
        owner: &str,
        list: Vec<(Bytes, Replica)>,
    ) -> Result<usize, PeerError> {
        let entries = to_entries(&list);
        let reply = self
            .client(to)?
            .hint(self.request(pb::HintRequest {
                owner: owner.to_string(),
                entries,
            }))
            .await
            .map_err(|s| Self::error(to, s))?;
        Ok(reply.into_inner().kept as usize)
    }

    async fn forward(
        &self,
        to: &str,
        command: Command,
        stamp: Option<Version>,
    ) -> Result<Reply, PeerError> {
        let mut request = Vec::new();
        command.encode(&mut request);
        let reply = self
            .client(to)?
            .execute(self.request(pb::ExecuteRequest {
                request: request.into(),
                version: stamp.unwrap_or(0),
            }))
            .await
            .map_err(|s| Self::error(to, s))?;
        serde_json::from_slice(&reply.into_inner().reply).map_err(|e| PeerError {
            member: to.into(),
            message: format!("a reply that does not decode: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_expiry_as_time_left() {
        let now = Instant::now();
        let value = Replica::Value {
            value: Bytes::from("v"),
            flags: 3,
            expires: Some(now + Duration::from_secs(5)),
            version: 9,
        };
        let wire = entry(Bytes::from("k"), &value, now);
        assert_eq!((wire.ttl_ms, wire.flags, wire.version), (5000, 3, 9));
        let (key, back) = replica(wire, now);
        assert_eq!((key, back), (Bytes::from("k"), value));
        let deleted = Replica::Deleted { version: 4 };
        assert_eq!(
            replica(entry(Bytes::from("k"), &deleted, now), now).1,
            deleted
        );
        let forever = Replica::Value {
            value: Bytes::from("v"),
            flags: 0,
            expires: None,
            version: 1,
        };
        assert_eq!(entry(Bytes::from("k"), &forever, now).ttl_ms, 0);
    }

    #[test]
    fn keys_are_checked_as_memcached_does() {
        assert!(check_key(b"ok").is_ok());
        assert!(check_key(b"").is_err());
        assert!(check_key(b"a b").is_err());
        assert!(check_key(&[b'k'; 251]).is_err());
    }
}
