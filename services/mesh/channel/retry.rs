//! Retries: which failures are safe to try again, how long to wait between
//! tries, and the budget that keeps retries from multiplying an outage.
//!
//! Retried: an attempt that got no response (connection refused or reset),
//! an UNAVAILABLE answer, and, only for calls marked [`RetryOnTimeout`]
//! (reads, and writes that carry a request id, which the server
//! deduplicates), an attempt that ran out of its own time. Never retried: any
//! other answer, or anything once the call's deadline has passed. Every
//! retry draws on a [`TpsBudget`] shared by the channel's callers: 20 % of
//! requests plus 10 a second, as in Linkerd.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::codegen::http;
use tower::retry::budget::{Budget, TpsBudget};

use crate::mesh::backoff::Backoff;
use crate::mesh::channel::metrics::RetryMetrics;
use crate::mesh::channel::outcome::{BoxError, Outcome};

/// How long a deposit counts toward the budget.
pub const BUDGET_TTL: Duration = Duration::from_secs(10);
/// Retries a second always allowed.
pub const BUDGET_MIN_PER_SECOND: u32 = 10;
/// Retries allowed as a fraction of requests.
pub const BUDGET_RATIO: f32 = 0.2;
/// Retries of one call at most, whatever the budget.
pub const MAX_RETRIES: u32 = 3;
/// The shortest pause before a retry.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause before a retry.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Marks a call whose attempt may be repeated after it timed out: the
/// server gives the same answer and writes nothing twice (a read, or a write
/// with a request id). Set as a request extension by the typed clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOnTimeout;

/// The deadline of the whole call, as a request extension; set by
/// [`crate::mesh::channel::MeshChannel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadline(pub Instant);

/// The retry budget shared by everyone calling through one channel.
pub fn default_budget() -> Arc<TpsBudget> {
    Arc::new(TpsBudget::new(
        BUDGET_TTL,
        BUDGET_MIN_PER_SECOND,
        BUDGET_RATIO,
    ))
}

/// The retry policy of one call (tower clones it per request).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    budget: Arc<TpsBudget>,
    backoff: Backoff,
    retries: u32,
    metrics: RetryMetrics,
}

impl RetryPolicy {
    /// A policy drawing on `budget`, counting its retries in `metrics`.
    pub fn new(budget: Arc<TpsBudget>, metrics: RetryMetrics) -> Self {
        RetryPolicy {
            budget,
            metrics,
            backoff: Backoff::new(RETRY_BACKOFF_MIN, RETRY_BACKOFF_MAX, 0.5).unwrap_or_default(),
            retries: 0,
        }
    }

    /// Whether an attempt of `request` that ended with `outcome` may be tried
    /// again at `now` (budget aside).
    pub fn may_retry<B>(&self, request: &http::Request<B>, outcome: Outcome, now: Instant) -> bool {
        let safe = match outcome {
            Outcome::Unreachable | Outcome::Unavailable => true,
            Outcome::TimedOut => request.extensions().get::<RetryOnTimeout>().is_some(),
            Outcome::Answered | Outcome::Broken => false,
        };
        let time_left = request
            .extensions()
            .get::<CallDeadline>()
            .is_none_or(|CallDeadline(deadline)| now < *deadline);
        safe && time_left && self.retries < MAX_RETRIES
    }
}

impl<Res> tower::retry::Policy<http::Request<bytes::Bytes>, http::Response<Res>, BoxError>
    for RetryPolicy
{
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        request: &mut http::Request<bytes::Bytes>,
        result: &mut Result<http::Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        let outcome = Outcome::of(result);
        if outcome == Outcome::Answered {
            self.budget.deposit();
            return None;
        }
        if !self.may_retry(request, outcome, Instant::now()) {
            return None;
        }
        if !self.budget.withdraw() {
            self.metrics.budget_exhausted();
            return None;
        }
        self.metrics.retried();
        let delay = self.backoff.delay(self.retries);
        self.retries += 1;
        tracing::debug!(?outcome, retry = self.retries, ?delay, uri = %request.uri(), "retrying a call");
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(
        &mut self,
        request: &http::Request<bytes::Bytes>,
    ) -> Option<http::Request<bytes::Bytes>> {
        let mut clone = http::Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::retry::Policy;

    fn request(retry_on_timeout: bool, deadline: Instant) -> http::Request<bytes::Bytes> {
        let mut request = http::Request::new(bytes::Bytes::from_static(b"x"));
        request.extensions_mut().insert(CallDeadline(deadline));
        if retry_on_timeout {
            request.extensions_mut().insert(RetryOnTimeout);
        }
        request
    }

    fn failed(outcome: Outcome) -> Result<http::Response<()>, BoxError> {
        match outcome {
            Outcome::TimedOut => Err(Box::new(crate::mesh::channel::outcome::AttemptTimedOut)),
            Outcome::Unreachable => {
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
            }
            other => {
                let code = match other {
                    Outcome::Unavailable => "14",
                    Outcome::Broken => "13",
                    _ => "5",
                };
                let mut response = http::Response::new(());
                response
                    .headers_mut()
                    .insert("grpc-status", code.parse().unwrap());
                Ok(response)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_safe_failures_are_retried() {
        let later = Instant::now() + Duration::from_secs(2);
        let policy = RetryPolicy::new(default_budget(), RetryMetrics::default());
        let now = Instant::now();
        let read = request(true, later);
        let write = request(false, later);
        assert!(policy.may_retry(&write, Outcome::Unreachable, now));
        assert!(policy.may_retry(&write, Outcome::Unavailable, now));
        assert!(
            !policy.may_retry(&write, Outcome::TimedOut, now),
            "the write may have happened"
        );
        assert!(policy.may_retry(&read, Outcome::TimedOut, now));
        assert!(!policy.may_retry(&read, Outcome::Broken, now));
        assert!(!policy.may_retry(&read, Outcome::Answered, now));
        assert!(
            !policy.may_retry(&read, Outcome::Unavailable, later),
            "not once the call's deadline has passed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_maximum_and_at_the_budget() {
        let later = Instant::now() + Duration::from_secs(60);
        let mut policy = RetryPolicy::new(default_budget(), RetryMetrics::default());
        let mut read = request(true, later);
        let mut retries = 0;
        while policy
            .retry(&mut read, &mut failed(Outcome::Unavailable))
            .is_some()
        {
            retries += 1;
        }
        assert_eq!(retries, MAX_RETRIES);

        // A fresh budget with no traffic allows its floor of retries (10 a
        // second over the TTL), then nothing: an outage is not multiplied.
        let budget = default_budget();
        let mut allowed = 0;
        for _ in 0..1_000 {
            let mut policy = RetryPolicy::new(budget.clone(), RetryMetrics::default());
            if policy
                .retry(&mut request(true, later), &mut failed(Outcome::Unreachable))
                .is_some()
            {
                allowed += 1;
            }
        }
        let floor = (BUDGET_MIN_PER_SECOND as u64 * BUDGET_TTL.as_secs()) as i32;
        assert!(allowed <= floor + 1, "{allowed} retries allowed");
        assert!(allowed >= floor - 1, "{allowed} retries allowed");

        // Answered requests earn retries: 20 % of them.
        for _ in 0..1_000 {
            let mut policy = RetryPolicy::new(budget.clone(), RetryMetrics::default());
            assert!(
                policy
                    .retry(&mut request(true, later), &mut failed(Outcome::Answered))
                    .is_none()
            );
        }
        let mut earned = 0;
        for _ in 0..1_000 {
            let mut policy = RetryPolicy::new(budget.clone(), RetryMetrics::default());
            if policy
                .retry(&mut request(true, later), &mut failed(Outcome::Unreachable))
                .is_some()
            {
                earned += 1;
            }
        }
        assert!(
            (190..=210).contains(&earned),
            "{earned} retries earned by 1,000 answers"
        );
    }
}
