//! The portal's one error type: every failure of a page or an API call
//! becomes a [`PortalError`], which maps gRPC status codes to HTTP statuses
//! and hides internal detail from the browser. [`uniform`] makes the
//! answers the framework produces itself (404 and 405 of the router, 413 of
//! the body limit, 400 of a bad query string or form) speak the same way:
//! the JSON error body under `/api`, an HTML page elsewhere.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tonic::Code;

use crate::mesh::api::CallError;

/// A failed request, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PortalError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code, e.g. `INVALID_ARGUMENT`.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl PortalError {
    /// A 400 for input the portal itself rejects.
    pub fn bad_request(message: impl Into<String>) -> Self {
        PortalError {
            status: StatusCode::BAD_REQUEST,
            code: "INVALID_ARGUMENT",
            message: message.into(),
        }
    }

    /// A 404 for a page or resource that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        PortalError {
            status: StatusCode::NOT_FOUND,
            code: "NOT_FOUND",
            message: message.into(),
        }
    }

    /// A 503 for a dependency that cannot be reached now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        PortalError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "UNAVAILABLE",
            message: message.into(),
        }
    }

    /// A 401: nobody is signed in.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        PortalError {
            status: StatusCode::UNAUTHORIZED,
            code: "UNAUTHENTICATED",
            message: message.into(),
        }
    }

    /// A 403: the signed-in user (or the request's origin) may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        PortalError {
            status: StatusCode::FORBIDDEN,
            code: "PERMISSION_DENIED",
            message: message.into(),
        }
    }

    /// A 429: too many tries; `Retry-After` says when to try again.
    pub fn too_many(message: impl Into<String>) -> Self {
        PortalError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "RESOURCE_EXHAUSTED",
            message: message.into(),
        }
    }

    /// Whether the error is about the request (4xx) rather than the system.
    pub fn is_client_error(&self) -> bool {
        self.status.is_client_error()
    }
}

impl From<tonic::Status> for PortalError {
    fn from(status: tonic::Status) -> Self {
        PortalError::from_status("a dependency", &status)
    }
}

impl PortalError {
    /// The answer for a call to `service` that failed with `status`: the
    /// request's own fault is 4xx with grading's message; an outage is 503
    /// (no instance could answer; try again) or 504 (the deadline passed),
    /// never 500; only a real fault of ours is 500, with no detail.
    pub fn from_status(service: &str, status: &tonic::Status) -> Self {
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
            }
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Code::ResourceExhausted => (StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_EXHAUSTED"),
            Code::Unavailable | Code::Cancelled | Code::Aborted => {
                (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
            }
            Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        let message = if http == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(%service, code = ?status.code(), message = %status.message(), "call failed");
            "internal error".to_owned()
        } else if http.is_server_error() {
            tracing::warn!(%service, code = ?status.code(), message = %status.message(), "a dependency is unavailable");
            if http == StatusCode::GATEWAY_TIMEOUT {
                format!("the {service} service did not answer in time; try again shortly")
            } else {
                format!("the {service} service is unavailable; try again shortly")
            }
        } else {
            status.message().to_owned()
        };
        PortalError {
            status: http,
            code,
            message,
        }
    }
}

impl From<crate::mesh::DiscoveryError> for PortalError {
    fn from(error: crate::mesh::DiscoveryError) -> Self {
        PortalError::unavailable(format!(
            "a required service is unavailable ({error}); try again shortly"
        ))
    }
}

impl From<CallError> for PortalError {
    fn from(error: CallError) -> Self {
        match error {
            CallError::NoInstance(error) => PortalError::from(error),
            CallError::Status { service, status } => PortalError::from_status(service, &status),
            CallError::Malformed { service, reason } => {
                tracing::error!(%service, %reason, "malformed answer");
                PortalError {
                    status: StatusCode::BAD_GATEWAY,
                    code: "INTERNAL",
                    message: "internal error".into(),
                }
            }
        }
    }
}

/// How long a client should wait before trying again after a 503, in seconds.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// Adds `Retry-After` to an outage's answer, so retrying clients back off.
pub fn with_retry_after(status: StatusCode, mut response: Response) -> Response {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

impl IntoResponse for PortalError {
    /// The JSON API's error body: `{"error":{"code":"...","message":"..."}}`,
    /// with the request's `"trace_id"` when it is traced.
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(trace) = crate::mesh::trace::current_trace_id() {
            error["trace_id"] = trace.to_string().into();
        }
        let body = serde_json::json!({ "error": error });
        with_retry_after(self.status, (self.status, Json(body)).into_response())
    }
}

/// The largest framework error text carried over into the new body.
const MAX_ERROR_TEXT: usize = 4096;
/// The longest request target the portal reads (as nginx's default buffer);
/// longer ones get 414 in the request's language. (Past 64 KiB, hyper itself
/// answers a bare 414 before any of this runs.)
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The middleware: an error answer that is not in the request's language
/// (JSON under `/api`, HTML elsewhere) is rewritten into it, keeping its
/// status and the headers that tell the client what to do (`Allow`,
/// `Retry-After`, `WWW-Authenticate`).
pub async fn uniform(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::header;
    let api = request.uri().path().starts_with("/api/");
    let too_long = request
        .uri()
        .path_and_query()
        .is_some_and(|target| target.as_str().len() > MAX_URI_BYTES);
    let response = if too_long {
        let error = PortalError {
            status: StatusCode::URI_TOO_LONG,
            code: code_of(StatusCode::URI_TOO_LONG),
            message: format!("the request target is over {MAX_URI_BYTES} bytes"),
        };
        return if api {
            error.into_response()
        } else {
            crate::portal::pages::error_page(&error)
        };
    } else {
        next.run(request).await
    };
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let wanted = if api { "application/json" } else { "text/html" };
    if content_type.starts_with(wanted) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ERROR_TEXT)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let error = PortalError {
        status,
        code: code_of(status),
        message,
    };
    let mut rewritten = if api {
        error.into_response()
    } else {
        crate::portal::pages::error_page(&error)
    };
    for name in [header::ALLOW, header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            rewritten.headers_mut().insert(name, value.clone());
        }
    }
    rewritten
}

/// The error body's code for an HTTP status the framework chose.
pub fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::URI_TOO_LONG
        | StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => "DEADLINE_EXCEEDED",
        status if status.is_client_error() => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    }
}

/// The most of an oversize request body read (and thrown away) before the
/// 413 is sent: HTTP/2 clients discard an answer that arrives while their
/// body is still being sent and the stream is reset (curl reports only
/// "stream closed"), so a body within this bound is read to its end first.
pub const MAX_DRAINED_BYTES: usize = 16 * 1024 * 1024;
/// How long draining an oversize body may take.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a request's body may take to arrive; a client that sends it
/// more slowly (holding a connection and a task) is answered 408.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The middleware that reads every request's body before a handler runs:
/// one whose declared body is over `max` bytes is answered 413 after its
/// body has been read through (within [`MAX_DRAINED_BYTES`] and
/// [`DRAIN_TIMEOUT`]); a body that turns out longer than `max` gets 413
/// too, and one that does not arrive within [`BODY_READ_TIMEOUT`] gets 408
/// and the connection is closed. Answers are in the request's language.
pub async fn read_bodies(
    max: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use http_body_util::BodyExt;
    let api = request.uri().path().starts_with("/api/");
    let answer = |error: PortalError| {
        if api {
            error.into_response()
        } else {
            crate::portal::pages::error_page(&error)
        }
    };
    let too_large = |size: String| PortalError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: code_of(StatusCode::PAYLOAD_TOO_LARGE),
        message: format!("the request body is {size}, over the limit of {max}"),
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(declared) = declared.filter(|length| *length > max) {
        if declared <= MAX_DRAINED_BYTES {
            let drained = http_body_util::Limited::new(request.into_body(), MAX_DRAINED_BYTES);
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained.collect()).await;
        }
        return answer(too_large(format!("{declared} bytes")));
    }
    let (parts, body) = request.into_parts();
    let read = http_body_util::Limited::new(body, max).collect();
    match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(collected)) => {
            let body = axum::body::Body::from(collected.to_bytes());
            next.run(axum::extract::Request::from_parts(parts, body))
                .await
        }
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            answer(too_large("longer".into()))
        }
        Ok(Err(_)) => answer(PortalError::bad_request(
            "the request body could not be read",
        )),
        Err(_) => {
            let mut response = answer(PortalError {
                status: StatusCode::REQUEST_TIMEOUT,
                code: code_of(StatusCode::REQUEST_TIMEOUT),
                message: format!(
                    "the request body did not arrive within {}s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            });
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}
