//! Deadlines that travel with a call. Every call the SDK makes has one; a
//! call made while serving a request never outlives that request: the
//! server side reads the caller's `grpc-timeout` into [`scope`], and the
//! client side takes the earlier of its own timeout and what is left of it
//! ([`effective`]). The header's wire format (gRPC over HTTP/2: at most
//! eight digits and a unit) is read and written here.

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tonic::codegen::http::{self, HeaderValue};

/// The header that carries a call's deadline, as a timeout.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

tokio::task_local! {
    /// The deadline of the request being served by this task, if it had one.
    static INCOMING: Instant;
}

/// Runs `future` with `deadline` as the deadline every call it makes must
/// keep. Nested scopes keep the earlier deadline.
pub async fn scope<F: Future>(deadline: Option<Instant>, future: F) -> F::Output {
    let deadline = match (deadline, incoming()) {
        (Some(new), Some(outer)) => Some(new.min(outer)),
        (new, outer) => new.or(outer),
    };
    match deadline {
        Some(deadline) => INCOMING.scope(deadline, future).await,
        None => future.await,
    }
}

/// The deadline of the request this task is serving, if any.
pub fn incoming() -> Option<Instant> {
    INCOMING.try_with(|deadline| *deadline).ok()
}

/// When a call started now with `timeout` must end: `timeout` from now, or
/// the incoming request's deadline if that comes first (never later).
pub fn effective(timeout: Duration) -> Instant {
    let own = Instant::now() + timeout;
    incoming().map_or(own, |incoming| incoming.min(own))
}

/// Reads a `grpc-timeout` value such as `500m` or `2S`; `None` when malformed.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Writes `timeout` as a `grpc-timeout` value: the finest unit that fits in
/// eight digits, rounded down.
pub fn format_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let (amount, unit) = if nanos <= MAX {
        (nanos, 'n')
    } else if nanos / 1_000 <= MAX {
        (nanos / 1_000, 'u')
    } else if nanos / 1_000_000 <= MAX {
        (nanos / 1_000_000, 'm')
    } else if timeout.as_secs() as u128 <= MAX {
        (timeout.as_secs() as u128, 'S')
    } else {
        ((timeout.as_secs() / 3600).min(MAX as u64) as u128, 'H')
    };
    HeaderValue::from_str(&format!("{amount}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

/// The deadline a request's `grpc-timeout` header asks for, from now.
pub fn of_request<B>(request: &http::Request<B>) -> Option<Instant> {
    let value = request.headers().get(GRPC_TIMEOUT)?.to_str().ok()?;
    Some(Instant::now() + parse_timeout(value)?)
}

/// The server side: a tower layer that runs every request inside [`scope`]
/// with the deadline its `grpc-timeout` header gives, so the calls the
/// handler makes keep it. [`crate::mesh::MeshServer`] adds it for every daemon.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateLayer;

impl<S> tower::Layer<S> for PropagateLayer {
    type Service = Propagate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Propagate { inner }
    }
}

/// The service of [`PropagateLayer`].
#[derive(Debug, Clone)]
pub struct Propagate<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Propagate<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let deadline = of_request(&request);
        let future = self.inner.call(request);
        Box::pin(scope(deadline, future))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_trip_through_the_header_format() {
        for (text, duration) in [
            ("1S", Duration::from_secs(1)),
            ("500m", Duration::from_millis(500)),
            ("20u", Duration::from_micros(20)),
            ("7n", Duration::from_nanos(7)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_timeout(text), Some(duration), "{text}");
            let written = format_timeout(duration);
            assert_eq!(
                parse_timeout(written.to_str().unwrap()),
                Some(duration),
                "{written:?}"
            );
        }
        assert_eq!(format_timeout(Duration::from_secs(2)), "2000000u");
        for bad in ["", "S", "1", "1x", "123456789S", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_inside_a_request_never_outlive_it() {
        let start = Instant::now();
        assert_eq!(
            effective(Duration::from_secs(2)),
            start + Duration::from_secs(2)
        );
        scope(Some(start + Duration::from_millis(300)), async {
            assert_eq!(
                effective(Duration::from_secs(2)),
                start + Duration::from_millis(300),
                "the caller's deadline is earlier"
            );
            assert_eq!(
                effective(Duration::from_millis(100)),
                start + Duration::from_millis(100),
                "our own is earlier"
            );
            scope(Some(start + Duration::from_secs(5)), async {
                assert_eq!(
                    incoming(),
                    Some(start + Duration::from_millis(300)),
                    "a nested scope never extends the deadline"
                );
            })
            .await;
        })
        .await;
        assert_eq!(incoming(), None);
    }
}
