//! The whole channel over real sockets: one instance that refuses
//! connections and one real gRPC server (the health service), inside a
//! real trace. A call whose first attempt meets the refusing instance is
//! retried on the other; the trace shows both attempts and the metrics
//! count the retry, the failure and the ejection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::{Status, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};
use tokio::sync::watch;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::mesh::metrics::Metrics;
use crate::mesh::trace::{SPAN_TARGET, context_of};

/// Keeps every finished span.
#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl Collect {
    fn spans(&self) -> Vec<SpanData> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl SpanProcessor for Collect {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
    fn on_end(&self, span: SpanData) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// A real health server on a port of its own, until the test ends.
async fn health_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (_reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    address
}

/// An address where nothing listens.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_retried_call_shows_both_attempts_and_is_counted() {
    let collect = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(collect.clone())
        .build();
    // As a daemon has it: only the spans of traces become OpenTelemetry spans.
    let subscriber = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("test"))
            .with_filter(filter_fn(|meta| meta.target() == SPAN_TARGET)),
    );
    let _default = tracing::subscriber::set_default(subscriber);

    let live = health_server().await;
    let dead = closed_port().await;
    let endpoint = |address: &String| crate::mesh::channel::discover::Endpoint {
        address: address.clone(),
        version: "1".into(),
    };
    let endpoints = Arc::new(crate::mesh::channel::discover::Route {
        endpoints: [
            ("dead".to_owned(), endpoint(&dead)),
            ("live".to_owned(), endpoint(&live)),
        ]
        .into(),
        policy: Default::default(),
    });
    // The balancer picks between two untried endpoints at random: a fresh
    // channel each time, until a first attempt has met the dead one
    // (twenty tries fail to with a chance of one in a million).
    for _ in 0..20 {
        let metrics = Metrics::new();
        let channel_metrics = ChannelMetrics::register(&metrics);
        let (_publish, view) = watch::channel(endpoints.clone());
        let channel = MeshChannel::new(
            "health",
            view,
            ChannelSettings::default(),
            &Tls::Off,
            &channel_metrics,
        );
        let root = tracing::info_span!(target: SPAN_TARGET, "test call", otel.kind = "server");
        let context = context_of(&root).expect("the root is traced");
        let (trace, root_id) = {
            let span = context.span();
            (
                span.span_context().trace_id(),
                span.span_context().span_id(),
            )
        };
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .instrument(root.clone())
            .await;
        assert!(answer.is_ok(), "every call is answered: {answer:?}");
        drop(root);

        let attempts: Vec<SpanData> = collect
            .spans()
            .into_iter()
            .filter(|span| span.span_context.trace_id() == trace && span.parent_span_id == root_id)
            .collect();
        let text = metrics.encode();
        if attempts.len() == 1 {
            assert!(text.contains(r#"mesh_client_retries_total{service="health"} 0"#));
            continue;
        }
        assert_eq!(
            attempts.len(),
            2,
            "the attempt and its retry: {attempts:#?}"
        );
        for attempt in &attempts {
            assert_eq!(attempt.name, "grpc.health.v1.Health/Check");
            assert_eq!(attempt.span_kind, opentelemetry::trace::SpanKind::Client);
        }
        assert!(
            matches!(attempts[0].status, Status::Error { .. }),
            "the first attempt failed: {:?}",
            attempts[0].status
        );
        assert!(
            !matches!(attempts[1].status, Status::Error { .. }),
            "the retry was answered: {:?}",
            attempts[1].status
        );
        assert!(attempts[0].end_time <= attempts[1].start_time);
        let dead_labels = format!(r#"service="health",instance_id="dead",address="{dead}""#);
        for line in [
            r#"mesh_client_retries_total{service="health"} 1"#.to_owned(),
            format!(r#"mesh_client_failures_total{{{dead_labels},outcome="unreachable"}} 1"#),
            format!("mesh_client_ejections_total{{{dead_labels}}} 1"),
            format!("mesh_client_ejected{{{dead_labels}}} 1"),
        ] {
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        return;
    }
    panic!("no first attempt met the dead instance in twenty tries");
}
