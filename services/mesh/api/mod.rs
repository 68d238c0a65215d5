//! Typed clients of the mesh's services, speaking domain types: the one
//! place where calls get their deadlines, are marked safe to retry, and
//! (later) carry trace headers. Daemons and tools call through these, never
//! through hand-built protobuf requests.
//!
//! # Layout
//!
//! - [`grading`]: [`GradingApi`], students and grades.
//! - [`log`]: [`LogApi`], writing, querying and following log records.
//! - [`log_paging`]: one page over every log instance.
//! - [`registry`]: [`RegistryApi`], the catalog.

pub mod grading;
pub mod log;
pub mod log_paging;
pub mod registry;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

pub use grading::GradingApi;
pub use log::LogApi;
pub use registry::RegistryApi;

use crate::mesh::channel::retry::RetryOnTimeout;
use crate::mesh::discovery::DiscoveryError;

/// Why a call through a typed client failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No instance of the service can be called now.
    #[error(transparent)]
    NoInstance(#[from] DiscoveryError),
    /// The call failed with this status (its code says what to do).
    #[error("{service}: {}", .status.message())]
    Status {
        /// The service called.
        service: &'static str,
        /// The status.
        status: tonic::Status,
    },
    /// The service answered something that does not convert to the domain.
    #[error("malformed answer from {service}: {reason}")]
    Malformed {
        /// The service called.
        service: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl CallError {
    /// The gRPC code of the failure (UNAVAILABLE when no instance could be called).
    pub fn code(&self) -> tonic::Code {
        match self {
            CallError::NoInstance(_) => tonic::Code::Unavailable,
            CallError::Status { status, .. } => status.code(),
            CallError::Malformed { .. } => tonic::Code::Internal,
        }
    }

    /// Whether the service could not answer (down, unreachable, or out of
    /// time), rather than answered no: another instance might answer.
    pub fn is_outage(&self) -> bool {
        matches!(
            self.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        )
    }

    fn malformed(service: &'static str, reason: impl std::fmt::Display) -> Self {
        CallError::Malformed {
            service,
            reason: reason.to_string(),
        }
    }
}

/// Whether a call may be repeated after one of its attempts timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A read, or a write the server deduplicates: yes.
    Safe,
    /// A write that may have happened: no.
    Unsafe,
}

/// Builds a request with `timeout` as its deadline, marked for retries.
pub fn request<T>(message: T, timeout: Duration, retry: Retry) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    if retry == Retry::Safe {
        request.extensions_mut().insert(RetryOnTimeout);
    }
    request
}

/// Opens a streaming call, within `timeout` (only the opening has a
/// deadline), and converts each message with `convert`; a message that does
/// not convert, or the stream's failure, is an error item.
pub async fn stream<M, T, E>(
    service: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<tonic::Streaming<M>>, tonic::Status>>,
    convert: impl Fn(M) -> Result<T, E> + Send + 'static,
) -> Result<BoxStream<'static, Result<T, CallError>>, CallError>
where
    M: Send + 'static,
    T: Send + 'static,
    E: std::fmt::Display,
{
    let messages = crate::mesh::client::deadline(timeout, call)
        .await
        .map_err(|status| CallError::Status { service, status })?
        .into_inner();
    Ok(messages
        .map(move |message| match message {
            Ok(message) => convert(message).map_err(|e| CallError::malformed(service, e)),
            Err(status) => Err(CallError::Status { service, status }),
        })
        .boxed())
}

/// Awaits a unary call, ending it with DEADLINE_EXCEEDED at `timeout` even
/// if nothing below does, and names the service in its error.
pub async fn unary<R>(
    service: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<tonic::Response<R>, tonic::Status>>,
) -> Result<R, CallError> {
    match crate::mesh::client::deadline(timeout, call).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(CallError::Status { service, status }),
    }
}
