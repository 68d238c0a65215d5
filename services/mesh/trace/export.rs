//! Where finished spans go: to the log service, shipped with this daemon's
//! log records ([`ShipSpans`], always), and to an OpenTelemetry collector
//! over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Sampling follows
//! `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`, which the OpenTelemetry
//! SDK reads; the default is parent-based, every trace.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Value;
use opentelemetry::trace::{SpanKind as OtelKind, Status};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};

use crate::mesh::logship::SpanQueue;
use crate::mesh::trace::otlp::{ExportSettings, ExportStats, OtlpExport};
use crate::model::log::trace::{Span, SpanId, SpanKind, SpanStatus, TraceId, sorted_attributes};

/// The variables that turn on the OTLP export.
pub const OTLP_ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Queues every finished, sampled span for the log service, as a span of
/// `service`/`instance`. Never blocks: a full queue drops the span
/// (counted with the log records the shipper drops).
#[derive(Debug)]
pub struct ShipSpans {
    queue: SpanQueue,
    service: String,
    instance: String,
}

impl ShipSpans {
    /// Ships through `queue`, as `service`/`instance`.
    pub fn new(queue: SpanQueue, service: &str, instance: &str) -> Self {
        ShipSpans {
            queue,
            service: service.to_owned(),
            instance: instance.to_owned(),
        }
    }

    /// The span as the log service stores it; `None` for invalid ids.
    fn convert(&self, data: SpanData) -> Option<Span> {
        let context = &data.span_context;
        let parent = SpanId::from_bytes(data.parent_span_id.to_bytes());
        let status = match data.status {
            Status::Unset => SpanStatus::Unset,
            Status::Ok => SpanStatus::Ok,
            Status::Error { description } => SpanStatus::Error(description.into_owned()),
        };
        let kind = match data.span_kind {
            OtelKind::Server | OtelKind::Consumer => SpanKind::Server,
            OtelKind::Client | OtelKind::Producer => SpanKind::Client,
            OtelKind::Internal => SpanKind::Internal,
        };
        Some(Span {
            trace_id: TraceId::from_bytes(context.trace_id().to_bytes())?,
            span_id: SpanId::from_bytes(context.span_id().to_bytes())?,
            parent_span_id: parent,
            service: self.service.clone(),
            instance: self.instance.clone(),
            name: data.name.into_owned(),
            kind,
            start: data.start_time,
            duration: data
                .end_time
                .duration_since(data.start_time)
                .unwrap_or_default(),
            status,
            attributes: sorted_attributes(
                data.attributes
                    .into_iter()
                    .map(|kv| (kv.key.to_string(), value_text(&kv.value)))
                    .collect(),
            ),
            sequence: 0,
        })
    }
}

/// An attribute's value as text.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.as_str().to_owned(),
        other => other.to_string(),
    }
}

impl SpanProcessor for ShipSpans {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if let Some(span) = self.convert(span) {
            self.queue.push(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Whether the OTLP export is asked for.
pub fn otlp_requested() -> bool {
    OTLP_ENDPOINT_VARIABLES
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|value| !value.is_empty()))
}

/// The tracer provider of a daemon: spans to the log service through
/// `queue`, and over OTLP when asked for (with the export's counters).
/// Must be called inside a tokio runtime when the OTLP export is asked
/// for. An OTLP exporter that cannot be built is reported on stderr (this
/// runs before `tracing` is set up) and left out.
pub fn provider(
    queue: SpanQueue,
    service: &str,
    instance: &str,
) -> (SdkTracerProvider, Option<Arc<ExportStats>>) {
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            instance.to_owned(),
        ))
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_span_processor(ShipSpans::new(queue, service, instance));
    let mut stats = None;
    if otlp_requested() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(mut exporter) => {
                exporter.set_resource(&resource);
                let settings = ExportSettings::from_lookup(|name| std::env::var(name).ok());
                let export = OtlpExport::start(exporter, settings);
                stats = Some(export.stats());
                builder = builder.with_span_processor(export);
            }
            Err(error) => eprintln!("warning: no OTLP export of spans: {error}"),
        }
    }
    (builder.build(), stats)
}
