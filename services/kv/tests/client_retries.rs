//! The client library's retry behaviour against a fake server that fails, stalls, or refuses
//! on command. The fake is a real tonic server over an in-memory pipe, and the clock is
//! tokio's paused clock: backoff and timeouts are checked exactly, without sleeping.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distlab_kv::client::KvClient;
use distlab_proto::kv::v1 as pb;
use distlab_runtime::retry::RetryPolicy;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tonic::transport::{Endpoint, Server, Uri};
use tonic::{Code, Request, Response, Status};

/// What the fake does with one incoming request.
#[derive(Debug, Clone, Copy)]
enum Step {
    Fail(Code),
    Stall(Duration),
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    token: Vec<u8>,
    grpc_timeout: Option<String>,
}

#[derive(Default)]
struct FakeKv {
    script: Mutex<VecDeque<Step>>,
    seen: Mutex<Vec<Seen>>,
}

impl FakeKv {
    async fn answer<T: Default>(
        &self,
        token: &[u8],
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<T, Status> {
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            token: token.to_vec(),
            grpc_timeout: metadata
                .get("grpc-timeout")
                .map(|v| v.to_str().unwrap().to_string()),
        });
        let step = self.script.lock().unwrap().pop_front();
        match step {
            Some(Step::Fail(code)) => Err(Status::new(code, "injected by the fake")),
            Some(Step::Stall(d)) => {
                tokio::time::sleep(d).await;
                Ok(T::default())
            }
            None => Ok(T::default()),
        }
    }
}

/// The tonic service over a shared fake, so the test keeps a handle to what it saw.
struct FakeService(Arc<FakeKv>);

#[tonic::async_trait]
impl pb::kv_server::Kv for FakeService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let token = request.get_ref().idempotency_token.clone();
        let mut response: pb::PutResponse = self.0.answer(&token, request.metadata()).await?;
        response.version = 1;
        Ok(Response::new(response))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.0
            .answer(&[], request.metadata())
            .await
            .map(Response::new)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let token = request.get_ref().idempotency_token.clone();
        self.0
            .answer(&token, request.metadata())
            .await
            .map(Response::new)
    }
}

/// A client wired to a fake that plays `script`, then answers OK.
async fn fake(script: &[Step], policy: RetryPolicy) -> (KvClient, Arc<FakeKv>) {
    let fake = Arc::new(FakeKv {
        script: Mutex::new(script.iter().copied().collect()),
        ..FakeKv::default()
    });
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let service = pb::kv_server::KvServer::new(FakeService(fake.clone()));
    tokio::spawn(async move {
        Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::once(Ok::<_, std::io::Error>(server_io)))
            .await
    });
    let mut client_io = Some(client_io);
    let channel = Endpoint::from_static("http://fake.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move {
                io.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the fake serves one connection"))
            }
        }))
        .await
        .unwrap();
    (KvClient::with_channel(channel, policy), fake)
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        multiplier: 2.0,
        attempt_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(10),
    }
}

fn seen(fake: &FakeKv) -> Vec<Seen> {
    fake.seen.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn a_put_is_retried_with_the_same_token_and_bounded_backoff() {
    let unavailable = Step::Fail(Code::Unavailable);
    let (client, fake) = fake(&[unavailable, unavailable, unavailable], policy()).await;
    let outcome = client.put("k", "v").await.unwrap();
    assert_eq!(outcome.version, 1);

    let seen = seen(&fake);
    assert_eq!(seen.len(), 4, "3 failures then success");
    assert_eq!(
        (client.metrics().attempts(), client.metrics().retries()),
        (4, 3)
    );
    assert!(!seen[0].token.is_empty(), "a put carries a token");
    assert!(
        seen.iter().all(|s| s.token == seen[0].token),
        "every retry resends the same token"
    );
    for (retry, pair) in seen.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let ceiling = policy().backoff_ceiling(retry as u32 + 1);
        assert!(
            gap <= ceiling + Duration::from_millis(1),
            "retry {} slept {gap:?} > {ceiling:?}",
            retry + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn two_logical_puts_use_two_tokens() {
    let (client, fake) = fake(&[], policy()).await;
    client.put("k", "v").await.unwrap();
    client.put("k", "v").await.unwrap();
    let seen = seen(&fake);
    assert_ne!(seen[0].token, seen[1].token);
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_its_deadline_to_the_server() {
    let (client, fake) = fake(&[], policy()).await;
    client.get("k").await.unwrap();
    let timeout = seen(&fake)[0]
        .grpc_timeout
        .clone()
        .expect("grpc-timeout sent");
    // tonic encodes the attempt timeout (1 s) in the grpc-timeout header.
    assert!(
        timeout == "1000000u" || timeout == "1000m" || timeout == "1S",
        "{timeout}"
    );
}

#[tokio::test(start_paused = true)]
async fn errors_that_retrying_cannot_fix_are_not_retried() {
    for code in [
        Code::InvalidArgument,
        Code::FailedPrecondition,
        Code::NotFound,
        Code::Internal,
    ] {
        let (client, fake) = fake(&[Step::Fail(code)], policy()).await;
        let status = client.put("k", "v").await.unwrap_err();
        assert_eq!(status.code(), code);
        assert_eq!(seen(&fake).len(), 1, "{code:?} was retried");
    }
}

#[tokio::test(start_paused = true)]
async fn a_put_without_a_token_is_never_retried() {
    let (client, fake) = fake(&[Step::Fail(Code::Unavailable)], policy()).await;
    let status = client.put_with_token("k", "v", None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let seen = seen(&fake);
    assert_eq!(seen.len(), 1);
    assert!(seen[0].token.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_attempt_is_cut_off_and_retried() {
    let (client, fake) = fake(&[Step::Stall(Duration::from_secs(30))], policy()).await;
    let started = Instant::now();
    client.get("k").await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(seen(&fake).len(), 2);
    // One attempt timeout, plus at most the first backoff ceiling.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(
        elapsed <= Duration::from_millis(1100) + Duration::from_millis(5),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_overall_deadline_is_respected() {
    let stall = Step::Stall(Duration::from_secs(60));
    let policy = RetryPolicy {
        max_attempts: 100,
        deadline: Duration::from_secs(3),
        ..policy()
    };
    let (client, fake) = fake(&[stall; 100], policy).await;
    let started = Instant::now();
    let status = client.delete("k").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        elapsed <= Duration::from_secs(3) + Duration::from_millis(5),
        "{elapsed:?}"
    );
    assert!(seen(&fake).len() >= 2, "it retried within the deadline");
    assert_eq!(client.metrics().gave_up(), 1);
}
