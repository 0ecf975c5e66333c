//! The gRPC `kv.v1.Kv` service: request validation, then the store.
//!
//! Deadlines: tonic's server reads each request's `grpc-timeout` and drops the handler's
//! future when it passes, so work for a caller that stopped waiting stops too. A mutation is
//! atomic in the store (value and token together), so being dropped mid-way cannot leave
//! half of it behind.

use std::sync::Arc;

use distlab_proto::kv::v1 as pb;
use tonic::{Request, Response, Status};

use crate::metrics::KvMetrics;
use crate::store::{self, Store, StoreError, Token};

/// Size limits on keys and values; violations are `INVALID_ARGUMENT` naming the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    fn check_key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key must not be empty"));
        }
        if key.len() > self.max_key_bytes {
            return Err(Status::invalid_argument(format!(
                "key is {} bytes; the limit is {} bytes (--max-key-bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), Status> {
        if value.len() > self.max_value_bytes {
            return Err(Status::invalid_argument(format!(
                "value is {} bytes; the limit is {} bytes (--max-value-bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// The largest request message worth decoding: anything bigger is refused by tonic
    /// before it is read into memory. Twice the limits, so a value somewhat over the limit
    /// still gets the clearer message above.
    pub fn max_message_bytes(&self) -> usize {
        (self.max_key_bytes + self.max_value_bytes).saturating_mul(2) + 64 * 1024
    }
}

pub struct KvService {
    store: Arc<dyn Store>,
    limits: Limits,
    metrics: KvMetrics,
}

impl KvService {
    pub fn new(store: Arc<dyn Store>, limits: Limits, metrics: KvMetrics) -> Self {
        Self {
            store,
            limits,
            metrics,
        }
    }

    /// The tonic server for this service, with the message size limit applied.
    pub fn into_server(self) -> pb::kv_server::KvServer<Self> {
        let max = self.limits.max_message_bytes();
        pb::kv_server::KvServer::new(self).max_decoding_message_size(max)
    }
}

fn token(bytes: &[u8]) -> Result<Option<Token>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    Token::new(bytes.to_vec())
        .map(Some)
        .map_err(Status::invalid_argument)
}

fn status(e: StoreError) -> Status {
    match e {
        StoreError::TokenMismatch => Status::invalid_argument(e.to_string()),
        StoreError::Corrupt { .. } => {
            tracing::error!(event = "store_corrupt", error = %e, "corrupt record");
            Status::data_loss(e.to_string())
        }
        StoreError::Storage(_) => {
            tracing::error!(event = "store_failed", error = %e, "storage failure");
            Status::internal(e.to_string())
        }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        self.limits.check_key(&request.key)?;
        self.limits.check_value(&request.value)?;
        let token = token(&request.idempotency_token)?;
        let applied = self
            .store
            .put(
                &request.key,
                &request.value,
                token.as_ref(),
                store::now_ms(),
            )
            .map_err(status)?;
        self.store.persist().await.map_err(status)?;
        if applied.replayed {
            self.metrics.replayed("put");
            tracing::debug!(
                version = applied.outcome.version,
                "idempotent replay of a put"
            );
        }
        Ok(Response::new(pb::PutResponse {
            version: applied.outcome.version,
            created: applied.outcome.created,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let request = request.into_inner();
        self.limits.check_key(&request.key)?;
        let found = self.store.get(&request.key).map_err(status)?;
        Ok(Response::new(match found {
            Some(v) => pb::GetResponse {
                found: true,
                value: v.value.into(),
                version: v.version,
            },
            None => pb::GetResponse::default(),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let request = request.into_inner();
        self.limits.check_key(&request.key)?;
        let token = token(&request.idempotency_token)?;
        let applied = self
            .store
            .delete(&request.key, token.as_ref(), store::now_ms())
            .map_err(status)?;
        self.store.persist().await.map_err(status)?;
        if applied.replayed {
            self.metrics.replayed("delete");
        }
        Ok(Response::new(pb::DeleteResponse {
            existed: applied.outcome.existed,
        }))
    }
}
