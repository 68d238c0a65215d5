//! What became of one attempt of a call, as the retry policy and outlier
//! ejection see it: answered, or failed in a way that says something about
//! the endpoint (unreachable, UNAVAILABLE, too slow).

use tonic::Code;
use tonic::codegen::http;

/// An error of the channel stack, before it becomes a `tonic::Status`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One attempt did not answer before its own deadline.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the attempt got no answer before its deadline")]
pub struct AttemptTimedOut;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response came: a success, or an error about the request itself
    /// (NOT_FOUND, INVALID_ARGUMENT, ...), which no other endpoint would answer
    /// differently.
    Answered,
    /// No response: the connection was refused or broke before a response.
    Unreachable,
    /// The endpoint answered UNAVAILABLE (draining, or its own dependency is away).
    Unavailable,
    /// The endpoint answered with an error about itself (INTERNAL, UNKNOWN, DATA_LOSS).
    Broken,
    /// No response before the attempt's deadline.
    TimedOut,
}

impl Outcome {
    /// Classifies the result of one attempt.
    pub fn of<B>(result: &Result<http::Response<B>, BoxError>) -> Self {
        match result {
            Ok(response) => match grpc_status(response) {
                Some(Code::Unavailable) => Outcome::Unavailable,
                // The server ran out of the attempt's deadline (tonic answers
                // its own grpc-timeout with CANCELLED).
                Some(Code::Cancelled | Code::DeadlineExceeded) => Outcome::TimedOut,
                Some(Code::Internal | Code::Unknown | Code::DataLoss) => Outcome::Broken,
                _ => Outcome::Answered,
            },
            Err(error) if error.is::<AttemptTimedOut>() => Outcome::TimedOut,
            Err(error) => match error
                .downcast_ref::<tonic::Status>()
                .map(tonic::Status::code)
            {
                Some(Code::DeadlineExceeded) => Outcome::TimedOut,
                Some(Code::Unavailable) | None => Outcome::Unreachable,
                Some(_) => Outcome::Broken,
            },
        }
    }

    /// Whether the endpoint failed (counts toward its ejection).
    pub fn is_endpoint_failure(self) -> bool {
        self != Outcome::Answered
    }
}

/// The gRPC status of a trailers-only response (every unary error), if any.
pub fn grpc_status<B>(response: &http::Response<B>) -> Option<Code> {
    let value = response.headers().get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(value.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: Option<&str>) -> Result<http::Response<()>, BoxError> {
        let mut response = http::Response::new(());
        if let Some(status) = status {
            response
                .headers_mut()
                .insert("grpc-status", status.parse().unwrap());
        }
        Ok(response)
    }

    #[test]
    fn attempts_are_classified_by_what_they_say_about_the_endpoint() {
        assert_eq!(Outcome::of(&answered(None)), Outcome::Answered);
        assert_eq!(Outcome::of(&answered(Some("0"))), Outcome::Answered);
        assert_eq!(
            Outcome::of(&answered(Some("5"))),
            Outcome::Answered,
            "NOT_FOUND"
        );
        assert_eq!(Outcome::of(&answered(Some("14"))), Outcome::Unavailable);
        assert_eq!(Outcome::of(&answered(Some("13"))), Outcome::Broken);
        assert_eq!(
            Outcome::of(&answered(Some("1"))),
            Outcome::TimedOut,
            "CANCELLED"
        );
        assert_eq!(
            Outcome::of(&answered(Some("4"))),
            Outcome::TimedOut,
            "DEADLINE_EXCEEDED"
        );
        let timed_out: Result<http::Response<()>, BoxError> = Err(Box::new(AttemptTimedOut));
        assert_eq!(Outcome::of(&timed_out), Outcome::TimedOut);
        let refused: Result<http::Response<()>, BoxError> =
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
        assert_eq!(Outcome::of(&refused), Outcome::Unreachable);
        assert!(Outcome::of(&refused).is_endpoint_failure());
        assert!(!Outcome::Answered.is_endpoint_failure());
    }
}
