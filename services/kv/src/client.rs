//! The Project 0 client library: what an application links to talk to a kv node.
//!
//! Every call runs under the shared [`RetryPolicy`]: attempts bounded by a timeout (also sent
//! to the server as `grpc-timeout`), retries with full-jitter backoff, one overall deadline.
//! Mutations carry an idempotency token generated once per logical call and resent on every
//! retry, which is what makes retrying them safe. A mutation sent without a token is not
//! retried at all: the client cannot know whether a failed attempt was applied.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use distlab_proto::kv::v1 as pb;
use distlab_runtime::retry::{Attempt, ClientMetrics, Idempotence, RetryPolicy};
use distlab_runtime::telemetry::PropagateTrace;
use distlab_runtime::tls::TlsFiles;
use prost::bytes::Bytes;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::store::{PutOutcome, Token, Versioned};

type Rpc = pb::kv_client::KvClient<InterceptedService<Channel, PropagateTrace>>;

/// How a client connects and retries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    pub policy: RetryPolicy,
    pub tls: Option<TlsFiles>,
}

/// A cheap-to-clone handle; clones share the connection and the metrics.
#[derive(Clone)]
pub struct KvClient {
    rpc: Rpc,
    policy: RetryPolicy,
    metrics: ClientMetrics,
}

impl KvClient {
    /// A client for the node at `addr`. Connects on first use and reconnects as needed, so a
    /// node that is down now is retried like any other unavailable node.
    pub fn connect_lazy(addr: SocketAddr, options: ClientOptions) -> anyhow::Result<Self> {
        options
            .policy
            .validate()
            .map_err(|e| anyhow::anyhow!("retry policy: {e}"))?;
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .with_context(|| format!("{addr} is not a usable address"))?
            .connect_timeout(options.policy.attempt_timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true);
        if let Some(tls) = &options.tls {
            endpoint = endpoint
                .tls_config(tls.client_config())
                .context("configuring TLS from --tls-cert/--tls-key/--tls-ca")?;
        }
        Ok(Self::with_channel(endpoint.connect_lazy(), options.policy))
    }

    /// A client over an existing channel (tests use an in-memory one).
    pub fn with_channel(channel: Channel, policy: RetryPolicy) -> Self {
        let max = usize::MAX;
        Self {
            rpc: pb::kv_client::KvClient::with_interceptor(channel, PropagateTrace)
                .max_decoding_message_size(max),
            policy,
            metrics: ClientMetrics::default(),
        }
    }

    pub fn metrics(&self) -> &ClientMetrics {
        &self.metrics
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Stores `value` under `key` with a fresh idempotency token, retrying safely.
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<PutOutcome, Status> {
        self.put_with_token(key, value, Some(Token::random())).await
    }

    /// Stores `value` under `key` with the given token (reuse one to replay a logical PUT);
    /// `None` sends it without one, and then it is not retried.
    pub async fn put_with_token(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        token: Option<Token>,
    ) -> Result<PutOutcome, Status> {
        let request = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            idempotency_token: token_bytes(&token),
        };
        let response = self
            .call(idempotence(&token), |mut rpc, attempt| {
                let request = request.clone();
                async move { rpc.put(with_timeout(request, attempt)).await }
            })
            .await?;
        Ok(PutOutcome {
            version: response.version,
            created: response.created,
        })
    }

    /// Reads `key`; `None` when it does not exist. Always retried (reads are idempotent).
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Versioned>, Status> {
        let request = pb::GetRequest { key: key.into() };
        let response = self
            .call(Idempotence::Idempotent, |mut rpc, attempt| {
                let request = request.clone();
                async move { rpc.get(with_timeout(request, attempt)).await }
            })
            .await?;
        Ok(response.found.then(|| Versioned {
            value: response.value.to_vec(),
            version: response.version,
        }))
    }

    /// Removes `key` with a fresh idempotency token; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<bool, Status> {
        self.delete_with_token(key, Some(Token::random())).await
    }

    pub async fn delete_with_token(
        &self,
        key: impl Into<Bytes>,
        token: Option<Token>,
    ) -> Result<bool, Status> {
        let request = pb::DeleteRequest {
            key: key.into(),
            idempotency_token: token_bytes(&token),
        };
        let response = self
            .call(idempotence(&token), |mut rpc, attempt| {
                let request = request.clone();
                async move { rpc.delete(with_timeout(request, attempt)).await }
            })
            .await?;
        Ok(response.existed)
    }

    async fn call<T, F, Fut>(
        &self,
        idempotence: Idempotence,
        mut attempt_fn: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Rpc, Attempt) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.policy
            .call(idempotence, &self.metrics, |attempt| {
                let fut = attempt_fn(self.rpc.clone(), attempt);
                async move { fut.await.map(tonic::Response::into_inner) }
            })
            .await
    }
}

fn idempotence(token: &Option<Token>) -> Idempotence {
    match token {
        Some(_) => Idempotence::Idempotent,
        None => Idempotence::NotIdempotent,
    }
}

fn token_bytes(token: &Option<Token>) -> Bytes {
    token
        .as_ref()
        .map(|t| Bytes::copy_from_slice(t.as_bytes()))
        .unwrap_or_default()
}

fn with_timeout<T>(message: T, attempt: Attempt) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(attempt.timeout);
    request
}
