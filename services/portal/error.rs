//! The portal's one error type: every failure of a page or an API call
//! becomes a [`PortalError`], which maps gRPC status codes to HTTP statuses
//! and hides internal detail from the browser.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tonic::Code;

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

    /// Whether the error is about the request (4xx) rather than the system.
    pub fn is_client_error(&self) -> bool {
        self.status.is_client_error()
    }
}

impl From<tonic::Status> for PortalError {
    fn from(status: tonic::Status) -> Self {
        let (http, code) = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => {
                (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT")
            }
            Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
            Code::FailedPrecondition => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Code::ResourceExhausted => (StatusCode::PAYLOAD_TOO_LARGE, "RESOURCE_EXHAUSTED"),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Code::DeadlineExceeded => (StatusCode::SERVICE_UNAVAILABLE, "DEADLINE_EXCEEDED"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        };
        let message = if http.is_server_error() && http != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code = ?status.code(), message = %status.message(), "grading call failed");
            "internal error".to_owned()
        } else if http == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(code = ?status.code(), message = %status.message(), "a dependency is unavailable");
            "the grading service is unavailable; try again shortly".to_owned()
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

impl IntoResponse for PortalError {
    /// The JSON API's error body: `{"error":{"code":"...","message":"..."}}`.
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        (self.status, Json(body)).into_response()
    }
}
