//! Distributed tracing, W3C Trace Context end to end. Every request that
//! enters a daemon from outside the mesh's own plumbing runs inside a
//! server span whose parent comes from the request's `traceparent`
//! ([`layer`]); every call the SDK's channel makes from inside a span is a
//! client span whose context travels in the call's metadata ([`client`]).
//! Spans are `tracing` spans of target [`SPAN_TARGET`], turned into
//! OpenTelemetry spans by `tracing-opentelemetry`; finished spans are
//! shipped with the log records to the log service, which stores them
//! ([`export`]), and also sent over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! is set. Sampling is parent-based, its ratio set by the standard
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (default: every
//! trace).
//!
//! # Layout
//!
//! - [`propagate`]: `traceparent`/`tracestate` in and out of HTTP headers.
//! - [`layer`]: the server side, in the SDK's one server builder.
//! - [`client`]: the client side, in the SDK's one channel.
//! - [`export`]: where finished spans go.
//! - [`otlp`]: the bounded, counted OTLP export.

pub mod client;
pub mod export;
pub mod layer;
pub mod otlp;
pub mod propagate;

use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::model::log::trace::{SpanId, TraceId};

/// The `tracing` target of every span that becomes part of a trace. Other
/// spans stay local to the process's logs.
pub const SPAN_TARGET: &str = "gradebook::mesh::trace";

/// The OpenTelemetry context of a `tracing` span, when it is part of a
/// trace.
pub fn context_of(span: &tracing::Span) -> Option<opentelemetry::Context> {
    if span.is_none() {
        return None;
    }
    let context = span.context();
    context.span().span_context().is_valid().then_some(context)
}

/// The trace and span of a `tracing` span, when it is part of a trace.
pub fn ids_of(span: &tracing::Span) -> Option<(TraceId, SpanId)> {
    let context = context_of(span)?;
    let otel = context.span();
    let span_context = otel.span_context();
    Some((
        TraceId::from_bytes(span_context.trace_id().to_bytes())?,
        SpanId::from_bytes(span_context.span_id().to_bytes())?,
    ))
}

/// An internal span called `name`, child of the current span, for a step
/// worth seeing in a trace (a database call, a group commit); a disabled
/// span when the current span is not part of a trace.
pub fn child_span(name: &str) -> tracing::Span {
    let current = tracing::Span::current();
    if context_of(&current).is_none() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: SPAN_TARGET,
        parent: &current,
        "step",
        otel.name = name,
        otel.kind = "internal",
    )
}

/// The trace the current request belongs to, if any: for error pages and
/// responses that quote it.
pub fn current_trace_id() -> Option<TraceId> {
    ids_of(&tracing::Span::current()).map(|(trace, _)| trace)
}
