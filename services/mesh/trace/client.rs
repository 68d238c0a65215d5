//! The client side of tracing, in the SDK's client stacks (the mesh
//! channel, and the log fan-out): each attempt of a
//! call made from inside a traced span is a client span, child of that
//! span, whose context goes out in the call's `traceparent` (so the
//! server's span is its child). Retries show as sibling attempts. Calls
//! made outside any trace (the mesh's background work) start none.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use opentelemetry::trace::Status;
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::mesh::call_end;
use crate::mesh::trace::{SPAN_TARGET, context_of, propagate};

/// Traces the attempts that pass through. See the module documentation.
#[derive(Debug, Clone)]
pub struct TraceAttempts<S> {
    inner: S,
}

impl<S> TraceAttempts<S> {
    /// Traces the attempts sent to `inner`.
    pub fn new(inner: S) -> Self {
        TraceAttempts { inner }
    }
}

/// The client span of an attempt, child of the current span; `None`
/// outside a trace.
fn client_span<B>(request: &http::Request<B>) -> Option<tracing::Span> {
    let current = tracing::Span::current();
    context_of(&current)?;
    Some(tracing::info_span!(
        target: SPAN_TARGET,
        parent: &current,
        "grpc client",
        otel.name = request.uri().path().trim_start_matches('/'),
        otel.kind = "client",
    ))
}

/// Ends a client span: any status but OK is a failure of the call.
fn end_attempt(span: &tracing::Span, code: Code) {
    span.set_attribute("rpc.grpc.status_code", i64::from(code as i32));
    if code != Code::Ok {
        span.set_status(Status::error(call_end::code_name(code)));
    }
}

impl<S, B, E> tower::Service<http::Request<B>> for TraceAttempts<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = E>,
    S::Future: Send + 'static,
    E: std::fmt::Display,
{
    type Response = http::Response<Body>;
    type Error = E;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(span) = client_span(&request) else {
            return Box::pin(self.inner.call(request));
        };
        if let Some(context) = context_of(&span) {
            propagate::inject(&context, request.headers_mut());
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.instrument(span.clone()).await {
                Ok(response) => Ok(call_end::on_end(response, move |code| {
                    end_attempt(&span, code)
                })),
                Err(error) => {
                    span.set_status(Status::error(error.to_string()));
                    Err(error)
                }
            }
        })
    }
}
