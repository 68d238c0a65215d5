//! The server side of tracing, in the SDK's one server builder: every
//! request a daemon serves runs inside a server span whose parent is the
//! caller's span when the request carries a `traceparent`. The span lasts
//! until the response's end (a stream's whole life) and records the gRPC
//! status or HTTP status; an HTTP response carries `traceparent` back, so
//! that a user can quote the trace of what they saw.
//!
//! The mesh's own plumbing is not traced: health checks, reflection, the
//! registry's calls, log writes (which carry the spans themselves), and
//! the `/metrics` and `/sd/prometheus` scrapes.

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
use crate::mesh::tls::require::is_grpc;
use crate::mesh::trace::{SPAN_TARGET, context_of, propagate};

/// Path prefixes that are the mesh's plumbing, never traced.
const UNTRACED: [&str; 6] = [
    "/grpc.health.v1.",
    "/grpc.reflection.",
    "/gradebook.registry.v1.",
    "/gradebook.log.v1.LogService/Write",
    "/metrics",
    "/sd/",
];

/// Whether requests to `path` are traced.
pub fn is_traced(path: &str) -> bool {
    !UNTRACED.iter().any(|prefix| path.starts_with(prefix))
}

/// Wraps a server's services with [`TraceRequests`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceRequestsLayer;

impl<S> tower::Layer<S> for TraceRequestsLayer {
    type Service = TraceRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceRequests { inner }
    }
}

/// Runs every traced request inside its server span. See the module
/// documentation.
#[derive(Debug, Clone)]
pub struct TraceRequests<S> {
    inner: S,
}

/// The server span of a request.
fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let path = request.uri().path();
    let span = if is_grpc(request) {
        // The name says the service and method (`rpc.service`,
        // `rpc.method`); a span carries no attribute that repeats it.
        tracing::info_span!(
            target: SPAN_TARGET,
            "grpc server",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
        )
    } else {
        tracing::info_span!(
            target: SPAN_TARGET,
            "http server",
            otel.name = format!("{} {}", request.method(), path),
            otel.kind = "server",
        )
    };
    // Fails only for a span that is not recorded.
    let _ = span.set_parent(propagate::extract(request.headers()));
    span
}

/// Ends a gRPC server span with its status.
fn end_grpc(span: &tracing::Span, code: Code) {
    span.set_attribute("rpc.grpc.status_code", i64::from(code as i32));
    if call_end::blames_server(code) {
        span.set_status(Status::error(call_end::code_name(code)));
    }
}

impl<S, B> tower::Service<http::Request<B>> for TraceRequests<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !is_traced(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let grpc = is_grpc(&request);
        let span = server_span(&request);
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let result = response.instrument(span.clone()).await;
            let Ok(mut response) = result else {
                span.set_status(Status::error("the request failed before a response"));
                return result;
            };
            if grpc {
                return Ok(call_end::on_end(response, move |code| {
                    end_grpc(&span, code)
                }));
            }
            let status = response.status();
            span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.set_status(Status::error(status.to_string()));
            }
            if let Some(context) = context_of(&span) {
                propagate::inject(&context, response.headers_mut());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumbing_is_not_traced_and_the_gradebook_is() {
        assert!(!is_traced("/grpc.health.v1.Health/Check"));
        assert!(!is_traced("/gradebook.registry.v1.Registry/Watch"));
        assert!(!is_traced("/gradebook.log.v1.LogService/Write"));
        assert!(!is_traced("/metrics"));
        assert!(is_traced("/gradebook.log.v1.LogService/Query"));
        assert!(is_traced("/gradebook.grading.v1.Grading/AddGrade"));
        assert!(is_traced("/students/3"));
        assert!(call_end::blames_server(Code::Internal));
        assert!(!call_end::blames_server(Code::NotFound));
    }
}
