//! The mesh channel: the SDK's own client stack to one service, built from
//! the dependency view, which every typed client calls through. From the
//! caller down:
//!
//! 1. [`MeshChannel`]: fails at once when the service has no healthy
//!    instance; gives every call a deadline (the caller's `grpc-timeout`, or
//!    the channel's default), never later than the deadline of the request
//!    being served ([`deadline`]); buffers the request body so an attempt
//!    can be replayed; turns every failure into a `tonic::Status` with the
//!    code a caller acts on (UNAVAILABLE, DEADLINE_EXCEEDED).
//! 2. retries ([`retry`]): safe failures only, jittered backoff, a budget.
//! 3. the attempt: a client span when the call is part of a trace
//!    ([`crate::mesh::trace::client`]); its own deadline (shorter than the call's for calls that
//!    may be retried after a timeout), sent as `grpc-timeout`.
//! 4. the version group ([`groups`]): the call's version, chosen once per
//!    call from the service's traffic policy, has a balancer of its own.
//! 5. a bounded buffer in front of the group's balancer (tower `Buffer`).
//! 6. the balancer: tower's power of two choices over peak-EWMA load, fed
//!    by [`discover`] from the view without ever blocking it.
//! 7. per endpoint ([`endpoint`]): peak-EWMA, outlier ejection ([`eject`]),
//!    and the connection itself.
//!
//! # Layout
//!
//! - [`deadline`]: deadlines that travel with a call; `grpc-timeout`.
//! - [`retry`]: what is retried and the retry budget.
//! - [`eject`]: per-endpoint circuit breaking.
//! - [`metrics`]: what the balancer sees, per endpoint, as Prometheus metrics.
//! - [`outcome`]: how an attempt ended.
//! - [`discover`]: the balancers' feed from the view.
//! - [`groups`]: a balancer per version, and which one serves a call.
//! - [`endpoint`]: one endpoint's connection and layers.

pub mod deadline;
pub mod discover;
pub mod eject;
pub mod endpoint;
pub mod groups;
pub mod metrics;
pub mod outcome;
pub mod retry;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::codegen::http;
use tower::ServiceExt;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::retry::Retry;
use tower::util::BoxCloneSyncService;

use crate::mesh::channel::discover::{Route, WatchDiscover};
use crate::mesh::channel::eject::{EjectionBudget, EjectionSettings};
use crate::mesh::channel::endpoint::{AttemptDeadline, balanced_endpoint};
use crate::mesh::channel::groups::{GroupStack, Groups, VersionGroup, group_for};
use crate::mesh::channel::metrics::ChannelMetrics;
use crate::mesh::channel::outcome::{AttemptTimedOut, BoxError};
use crate::mesh::channel::retry::{CallDeadline, RetryOnTimeout, RetryPolicy};
use crate::mesh::client::MAX_MESSAGE_BYTES;
use crate::mesh::tls::Tls;
use crate::mesh::trace::client::TraceAttempts;

/// The deadline of a call whose caller set none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The deadline of one attempt of a call that may be retried after a timeout.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Requests waiting for the balancer at most, per channel.
pub const DEFAULT_BUFFER: usize = 1024;
/// How much later than an attempt's deadline the attempt is abandoned while
/// still waiting for the balancer (the endpoint itself keeps the deadline
/// exactly, so that ejection sees the timeout).
const ATTEMPT_SLACK: Duration = Duration::from_millis(50);

/// How a mesh channel calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelSettings {
    /// The deadline of a call whose caller set none.
    pub call_timeout: Duration,
    /// The deadline of one attempt of a call marked [`RetryOnTimeout`].
    pub attempt_timeout: Duration,
    /// When endpoints are ejected.
    pub ejection: EjectionSettings,
    /// Requests waiting for the balancer at most.
    pub buffer: usize,
}

impl Default for ChannelSettings {
    fn default() -> Self {
        ChannelSettings {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            ejection: EjectionSettings::default(),
            buffer: DEFAULT_BUFFER,
        }
    }
}

type Stack = BoxCloneSyncService<http::Request<Bytes>, http::Response<Body>, BoxError>;

/// A balanced, retrying channel to every healthy instance of one service.
/// Cheap to clone; give it to a tonic client (`GradingClient::new(channel)`).
#[derive(Clone)]
pub struct MeshChannel {
    service: Arc<str>,
    route: watch::Receiver<Arc<Route>>,
    stack: Stack,
    settings: ChannelSettings,
    ejection_budget: Arc<EjectionBudget>,
}

impl std::fmt::Debug for MeshChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshChannel")
            .field("service", &self.service)
            .field("route", &*self.route.borrow())
            .finish_non_exhaustive()
    }
}

impl MeshChannel {
    /// A channel to `service` over the routes published on `route`,
    /// connecting as `tls` says, measured in `metrics`. Must be called
    /// inside a tokio runtime (each version's balancer runs on a task of
    /// its own, which ends when the last clone is dropped).
    pub fn new(
        service: &str,
        route: watch::Receiver<Arc<Route>>,
        settings: ChannelSettings,
        tls: &Tls,
        metrics: &ChannelMetrics,
    ) -> Self {
        let ejection_budget = Arc::new(EjectionBudget::default());
        let budget = ejection_budget.clone();
        let ejection = settings.ejection;
        let connector = tls.connector(service);
        let endpoint_metrics = metrics.clone();
        let name = service.to_owned();
        let routes = route.clone();
        let groups = Groups::new(route.clone(), move |version: &str| {
            let (connector, budget) = (connector.clone(), budget.clone());
            let (endpoint_metrics, name) = (endpoint_metrics.clone(), name.clone());
            let discover =
                WatchDiscover::new(routes.clone(), version, move |id: &str, address: &str| {
                    let measured = endpoint_metrics.endpoint(&name, id, address);
                    balanced_endpoint(
                        address,
                        connector.clone(),
                        ejection,
                        budget.clone(),
                        measured,
                    )
                    .ok()
                });
            GroupStack::new(Buffer::new(Balance::new(discover), settings.buffer.max(1)))
        });
        let attempts = Attempt {
            inner: groups,
            attempt_timeout: settings.attempt_timeout,
        };
        let stack = Retry::new(
            RetryPolicy::new(retry::default_budget(), metrics.retries(service)),
            TraceAttempts::new(attempts),
        );
        MeshChannel {
            service: service.into(),
            route,
            stack: BoxCloneSyncService::new(stack),
            settings,
            ejection_budget,
        }
    }

    /// The service this channel calls.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The healthy endpoints the channel balances over now, and the
    /// service's traffic policy.
    pub fn route(&self) -> Arc<Route> {
        self.route.borrow().clone()
    }

    /// How many endpoints are ejected now.
    pub fn ejected(&self) -> usize {
        self.ejection_budget.ejected()
    }

    /// Turns a failure of the stack into the status a caller acts on.
    fn status_of(&self, error: BoxError, timeout: Duration) -> tonic::Status {
        let service = &self.service;
        if error.is::<AttemptTimedOut>() || error.is::<tokio::time::error::Elapsed>() {
            return tonic::Status::deadline_exceeded(format!(
                "{service} did not answer within {timeout:?}"
            ));
        }
        match error.downcast::<tonic::Status>() {
            Ok(status) => *status,
            Err(error) => tonic::Status::unavailable(format!("{service} is unreachable: {error}")),
        }
    }
}

impl tower::Service<http::Request<Body>> for MeshChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the balancer's business, within each call's deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let channel = self.clone();
        Box::pin(async move {
            let group = {
                let route = channel.route.borrow();
                let (policy_roll, instance_roll) = (rand::random(), rand::random());
                group_for(&route, policy_roll, instance_roll)
                    .map(|chosen| VersionGroup(Arc::from(chosen.version)))
            };
            let Some(group) = group else {
                return Err(tonic::Status::unavailable(format!(
                    "no healthy instance of {:?} is available",
                    &*channel.service
                ))
                .into());
            };
            let timeout = request
                .headers()
                .get(deadline::GRPC_TIMEOUT)
                .and_then(|v| v.to_str().ok())
                .and_then(deadline::parse_timeout)
                .unwrap_or(channel.settings.call_timeout);
            let call_deadline = deadline::effective(timeout);
            let (mut parts, body) = request.into_parts();
            let body = tokio::time::timeout_at(
                call_deadline,
                http_body_util::Limited::new(body, MAX_MESSAGE_BYTES).collect(),
            )
            .await
            .map_err(|_| channel.status_of(Box::new(AttemptTimedOut), timeout))?
            .map_err(|e| tonic::Status::resource_exhausted(format!("request body: {e}")))?
            .to_bytes();
            parts.extensions.insert(CallDeadline(call_deadline));
            parts.extensions.insert(group);
            let request = http::Request::from_parts(parts, body);
            let result = tokio::time::timeout_at(
                call_deadline + ATTEMPT_SLACK * 2,
                channel.stack.clone().oneshot(request),
            )
            .await;
            match result {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(error)) => Err(channel.status_of(error, timeout).into()),
                Err(elapsed) => Err(channel.status_of(Box::new(elapsed), timeout).into()),
            }
        })
    }
}

/// One attempt: sets its deadline (and the `grpc-timeout` the server sees)
/// and abandons it when that passes.
#[derive(Clone)]
struct Attempt<S> {
    inner: S,
    attempt_timeout: Duration,
}

impl<S> tower::Service<http::Request<Bytes>> for Attempt<S>
where
    S: tower::Service<http::Request<Bytes>, Response = http::Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = futures::future::BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Bytes>) -> Self::Future {
        let now = Instant::now();
        let call_deadline = request
            .extensions()
            .get::<CallDeadline>()
            .map_or(now + DEFAULT_CALL_TIMEOUT, |CallDeadline(d)| *d);
        let attempt_deadline = if request.extensions().get::<RetryOnTimeout>().is_some() {
            call_deadline.min(now + self.attempt_timeout)
        } else {
            call_deadline
        };
        request
            .extensions_mut()
            .insert(AttemptDeadline(attempt_deadline));
        request.headers_mut().insert(
            deadline::GRPC_TIMEOUT,
            deadline::format_timeout(attempt_deadline.saturating_duration_since(now)),
        );
        let call = self.inner.call(request);
        Box::pin(async move {
            tokio::time::timeout_at(attempt_deadline + ATTEMPT_SLACK, call)
                .await
                .map_err(|_| BoxError::from(AttemptTimedOut))?
        })
    }
}

#[cfg(test)]
mod tests;
