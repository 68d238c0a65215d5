//! When a gRPC call ends, and with which status: a response wrapper that
//! calls back once, at the trailers (with their `grpc-status`), at the end
//! of the body, or when the body is dropped unfinished (the other side went
//! away: `CANCELLED`). A call that fails at once carries its status in the
//! headers and has no body ("trailers-only"). The server's metrics and the
//! spans of traces, on either side of a call, end this way.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tonic::Code;
use tonic::body::Body;
use tonic::codegen::http;

/// Wraps `response` so that `on_end` is called once with the call's final
/// status code.
pub fn on_end<F>(response: http::Response<Body>, on_end: F) -> http::Response<Body>
where
    F: FnOnce(Code) + Send + 'static,
{
    let header_code = response.headers().get("grpc-status").map(code_of);
    let (parts, body) = response.into_parts();
    let body = EndingBody {
        inner: body,
        on_end: Some(Box::new(on_end)),
        header_code,
    };
    http::Response::from_parts(parts, Body::new(body))
}

/// A body that reports its call's end. See the module documentation.
struct EndingBody {
    inner: Body,
    on_end: Option<Box<dyn FnOnce(Code) + Send>>,
    header_code: Option<Code>,
}

impl EndingBody {
    fn finish(&mut self, code: Code) {
        if let Some(on_end) = self.on_end.take() {
            on_end(code);
        }
    }
}

impl http_body::Body for EndingBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = trailers.get("grpc-status").map_or(Code::Unknown, code_of);
                    this.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.finish(status.code()),
            Poll::Ready(None) => {
                let code = this.header_code.unwrap_or(Code::Unknown);
                this.finish(code);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for EndingBody {
    fn drop(&mut self) {
        let code = self.header_code.unwrap_or(Code::Cancelled);
        self.finish(code);
    }
}

/// The status code a `grpc-status` value names.
pub fn code_of(value: &http::HeaderValue) -> Code {
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Unknown, Code::from_i32)
}

/// Whether a call that ended with `code` failed through the server's
/// fault, as OpenTelemetry's conventions for gRPC servers say (the other
/// codes are answers about the request).
pub fn blames_server(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The code whose [`code_name`] is `name`.
pub fn code_named(name: &str) -> Option<Code> {
    (0..=16)
        .map(Code::from_i32)
        .find(|code| code_name(*code) == name)
}

/// The name of `code` as the gRPC specification spells it (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::{Arc, Mutex};

    fn recorder() -> (Arc<Mutex<Vec<Code>>>, impl FnOnce(Code) + Send + 'static) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (seen, move |code| sink.lock().unwrap().push(code))
    }

    #[tokio::test]
    async fn the_end_is_reported_once_from_trailers_headers_or_a_drop() {
        assert_eq!(
            code_of(&http::HeaderValue::from_static("14")),
            Code::Unavailable
        );
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");

        // Trailers-only: the status is in the headers.
        let (seen, callback) = recorder();
        let response = http::Response::builder()
            .header("grpc-status", "5")
            .body(Body::empty())
            .unwrap();
        let body = on_end(response, callback).into_body();
        let _ = body.collect().await;
        assert_eq!(*seen.lock().unwrap(), [Code::NotFound]);

        // Dropped before its end: the caller went away.
        let (seen, callback) = recorder();
        let response = http::Response::new(Body::empty());
        drop(on_end(response, callback));
        assert_eq!(*seen.lock().unwrap(), [Code::Cancelled]);
    }
}
