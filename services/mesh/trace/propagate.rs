//! W3C Trace Context in HTTP headers (gRPC metadata are HTTP/2 headers):
//! the context of a span goes out as `traceparent` and `tracestate`, and a
//! request's headers give the remote parent of the span that handles it.
//! OpenTelemetry's `TraceContextPropagator` does the parsing and printing.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries a trace and its parent span.
pub const TRACEPARENT: &str = "traceparent";

/// Writes `context`'s span into `headers` (nothing when it has none).
pub fn inject(context: &opentelemetry::Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// The remote parent `headers` carry; an empty context when they carry
/// none, or one that does not parse.
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Headers as OpenTelemetry writes them.
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    /// Sets the header, but not an empty one: an empty `tracestate` says
    /// nothing, and every traced response and call would carry it.
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        let name = match key {
            TRACEPARENT => Ok(HeaderName::from_static(TRACEPARENT)),
            other => HeaderName::from_bytes(other.as_bytes()),
        };
        if let (Ok(name), Ok(value)) = (name, HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Headers as OpenTelemetry reads them.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn a_traceparent_goes_in_and_out_unchanged() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let context = extract(&headers);
        let span = context.span();
        assert!(span.span_context().is_valid());
        assert!(span.span_context().is_sampled());
        let mut out = HeaderMap::new();
        inject(&context, &mut out);
        assert_eq!(out[TRACEPARENT], headers[TRACEPARENT]);

        let mut garbage = HeaderMap::new();
        garbage.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-zz-00f067aa0ba902b7-01"),
        );
        assert!(!extract(&garbage).span().span_context().is_valid());
    }
}
