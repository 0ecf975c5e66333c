//! The client-side retry policy every distlab client library uses.
//!
//! A call gets at most `max_attempts` attempts, each bounded by `attempt_timeout`, all within
//! one overall `deadline`. Between attempts it sleeps a random time between zero and an
//! exponentially growing ceiling ("full jitter", from the AWS architecture blog's study of
//! backoff): clients that failed together do not retry together.
//!
//! Only what is safe is retried:
//! - only codes that mean "try again" ([`is_retryable`]): the server was unreachable,
//!   overloaded, timed out, or aborted the request;
//! - only [`Idempotence::Idempotent`] calls. A failed attempt may still have been applied
//!   (the reply was lost, not the request), so a call is retried only if applying it twice is
//!   harmless: reads, and writes that carry an idempotency token.

use std::future::Future;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::time::Instant;
use tonic::{Code, Status};

/// Whether applying a call twice is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotence {
    Idempotent,
    NotIdempotent,
}

/// One attempt of a call: its number (from 1) and how long it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (>= 1).
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry.
    pub initial_backoff: Duration,
    /// The ceiling never grows past this.
    pub max_backoff: Duration,
    /// Growth of the ceiling per retry (>= 1.0).
    pub multiplier: f64,
    /// Longest a single attempt may take; also sent to the server as its `grpc-timeout`.
    pub attempt_timeout: Duration,
    /// Longest the whole call may take, retries and sleeps included.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            attempt_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(5),
        }
    }
}

/// Whether another attempt may succeed after `status`: a code that means "try again", or a
/// connection that broke before the answer came (tonic reports that as `Unknown`, "transport
/// error", for instance when a proxy accepts the connection and then loses the server).
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
    ) || connection_lost(status)
}

/// The attempt failed in the transport, not in the server.
pub fn connection_lost(status: &Status) -> bool {
    status.code() == Code::Unknown
        && std::error::Error::source(status).is_some_and(|e| e.is::<tonic::transport::Error>())
}

/// Counters a client exposes about its retries.
#[derive(Debug, Clone, Default)]
pub struct ClientMetrics {
    attempts: Counter,
    retries: Counter,
    gave_up: Counter,
}

impl ClientMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "client_attempts",
            "RPC attempts sent by clients, first tries and retries",
            self.attempts.clone(),
        );
        registry.register(
            "client_retries",
            "RPC attempts that were retries",
            self.retries.clone(),
        );
        registry.register(
            "client_gave_up",
            "calls that failed after retrying (attempts or deadline exhausted)",
            self.gave_up.clone(),
        );
    }

    pub fn attempts(&self) -> u64 {
        self.attempts.get()
    }

    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    pub fn gave_up(&self) -> u64 {
        self.gave_up.get()
    }
}

impl RetryPolicy {
    /// Checks the numbers make sense; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(format!(
                "multiplier must be >= 1.0, got {}",
                self.multiplier
            ));
        }
        if self.attempt_timeout.is_zero() || self.deadline.is_zero() {
            return Err("attempt_timeout and deadline must be greater than zero".into());
        }
        Ok(())
    }

    /// The backoff ceiling before retry number `retry` (1 = the first retry).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let growth = self.multiplier.powi(retry.saturating_sub(1).min(64) as i32);
        let ceiling = self.initial_backoff.as_secs_f64() * growth;
        Duration::from_secs_f64(ceiling.min(self.max_backoff.as_secs_f64()))
    }

    /// A full-jitter sleep before retry number `retry`: uniform in `[0, ceiling]`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff_ceiling(retry).as_nanos() as u64;
        Duration::from_nanos(rand::rng().random_range(0..=ceiling))
    }

    /// Runs `op` until it succeeds, fails with a code not worth retrying, runs out of
    /// attempts, or the deadline passes. Each attempt is cut off at its timeout.
    pub async fn call<T, F, Fut>(
        &self,
        idempotence: Idempotence,
        metrics: &ClientMetrics,
        mut op: F,
    ) -> Result<T, Status>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let max_attempts = match idempotence {
            Idempotence::Idempotent => self.max_attempts.max(1),
            Idempotence::NotIdempotent => 1,
        };
        let mut number = 0;
        let last = loop {
            number += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = self.attempt_timeout.min(remaining);
            metrics.attempts.inc();
            let attempt_started = Instant::now();
            let no_answer = || {
                Status::deadline_exceeded(format!(
                    "attempt {number} got no answer within {}",
                    crate::duration::format(timeout)
                ))
            };
            let result = match tokio::time::timeout(timeout, op(Attempt { number, timeout })).await
            {
                // tonic's own grpc-timeout timer may fire first and say CANCELLED: it means
                // the same thing, and callers should see one code for it.
                Ok(Err(status))
                    if status.code() == Code::Cancelled && attempt_started.elapsed() >= timeout =>
                {
                    Err(no_answer())
                }
                Ok(result) => result,
                Err(_) => Err(no_answer()),
            };
            let status = match result {
                Ok(value) => return Ok(value),
                Err(status) => status,
            };
            if !is_retryable(&status) {
                return Err(status);
            }
            if number >= max_attempts {
                break status;
            }
            let sleep = self.backoff(number);
            // No point sleeping if no attempt could follow before the deadline.
            if Instant::now() + sleep >= deadline {
                break status;
            }
            tracing::debug!(attempt = number, code = ?status.code(), sleep_ms = sleep.as_millis() as u64, "retrying");
            metrics.retries.inc();
            tokio::time::sleep(sleep).await;
        };
        metrics.gave_up.inc();
        let elapsed = started.elapsed();
        let code = if elapsed >= self.deadline || number < max_attempts {
            Code::DeadlineExceeded
        } else {
            last.code()
        };
        let mut gave_up = Status::new(
            code,
            format!(
                "gave up after {number} attempt(s) in {} (deadline {}); last error: {:?}: {}",
                crate::duration::format(Duration::from_millis(elapsed.as_millis() as u64)),
                crate::duration::format(self.deadline),
                last.code(),
                last.message()
            ),
        );
        // The last answer's metadata (a service's error kind, a leader hint) still applies.
        *gave_up.metadata_mut() = last.metadata().clone();
        Err(gave_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            multiplier: 2.0,
            attempt_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(30),
        }
    }

    /// Runs a fake server closure that fails its first `failures` attempts with `code`,
    /// recording when each attempt started.
    async fn run(
        policy: &RetryPolicy,
        idempotence: Idempotence,
        failures: u32,
        code: Code,
    ) -> (Result<u32, Status>, Vec<Instant>, ClientMetrics) {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let metrics = ClientMetrics::default();
        let seen = starts.clone();
        let result = policy
            .call(idempotence, &metrics, |attempt| {
                seen.lock().unwrap().push(Instant::now());
                async move {
                    if attempt.number <= failures {
                        Err(Status::new(code, "injected"))
                    } else {
                        Ok(attempt.number)
                    }
                }
            })
            .await;
        let starts = starts.lock().unwrap().clone();
        (result, starts, metrics)
    }

    #[test]
    fn ceiling_grows_exponentially_and_is_capped() {
        let p = policy();
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(3), Duration::from_millis(400));
        assert_eq!(p.backoff_ceiling(9), Duration::from_millis(400));
        for retry in 1..10 {
            assert!(p.backoff(retry) <= p.backoff_ceiling(retry));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_with_backoff_within_bounds() {
        let p = policy();
        let (result, starts, metrics) =
            run(&p, Idempotence::Idempotent, 3, Code::Unavailable).await;
        assert_eq!(result.unwrap(), 4);
        assert_eq!(starts.len(), 4);
        assert_eq!(
            (metrics.attempts(), metrics.retries(), metrics.gave_up()),
            (4, 3, 0)
        );
        for (i, pair) in starts.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap <= p.backoff_ceiling(i as u32 + 1),
                "gap {i} was {gap:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_with_the_last_code() {
        let p = policy();
        let (result, starts, metrics) =
            run(&p, Idempotence::Idempotent, 99, Code::Unavailable).await;
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("gave up after 5 attempt(s)"),
            "{status:?}"
        );
        assert_eq!(starts.len(), 5);
        assert_eq!(metrics.gave_up(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_codes_are_returned_at_once() {
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::Internal,
        ] {
            let (result, starts, _) = run(&policy(), Idempotence::Idempotent, 1, code).await;
            assert_eq!(result.unwrap_err().code(), code);
            assert_eq!(starts.len(), 1, "{code:?} was retried");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_that_are_not_idempotent_are_never_retried() {
        let (result, starts, _) =
            run(&policy(), Idempotence::NotIdempotent, 1, Code::Unavailable).await;
        assert_eq!(result.unwrap_err().code(), Code::Unavailable);
        assert_eq!(starts.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_attempts_are_cut_off_and_the_deadline_holds() {
        let p = RetryPolicy {
            max_attempts: 100,
            attempt_timeout: Duration::from_millis(300),
            deadline: Duration::from_secs(2),
            ..policy()
        };
        let metrics = ClientMetrics::default();
        let started = Instant::now();
        let result: Result<(), Status> = p
            .call(Idempotence::Idempotent, &metrics, |attempt| async move {
                assert!(attempt.timeout <= Duration::from_millis(300));
                tokio::time::sleep(Duration::from_secs(60)).await; // a server that hangs
                Ok(())
            })
            .await;
        let elapsed = started.elapsed();
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(elapsed <= Duration::from_secs(2), "took {elapsed:?}");
        assert!(
            metrics.attempts() >= 4,
            "only {} attempts",
            metrics.attempts()
        );
    }
}
