//! What the portal records of each HTTP request it routes: the request's
//! server span is named after its route (`GET /api/students/{id}`, so that
//! traces group by route, not by id), and the RED metrics of the route are
//! counted: `http_server_requests_total` (by method, route and status),
//! `http_server_request_duration_seconds` (by method and route) and
//! `http_server_in_flight_requests`. Labels name only the portal's routes
//! (a path that matches none counts as `unmatched`), so a client cannot
//! grow the metrics by inventing paths.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::mesh::metrics::{Metrics, latency_histogram};
use crate::portal::AppState;

/// The route label of a request that matches no route.
pub const UNMATCHED: &str = "unmatched";

/// A route, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    method: String,
    route: String,
}

/// A route and the status of its answer, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    method: String,
    route: String,
    status: u16,
}

/// The portal's HTTP metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<Answered, Counter>,
    duration: Family<Route, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
        }
    }
}

impl HttpMetrics {
    /// The metrics, registered in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let this = HttpMetrics::default();
        metrics.register(
            "http_server_requests",
            "HTTP requests answered, by route and status",
            this.requests.clone(),
        );
        metrics.register_with_unit(
            "http_server_request_duration",
            "Time from a request's arrival to its response's headers, by route",
            Unit::Seconds,
            this.duration.clone(),
        );
        metrics.register(
            "http_server_in_flight_requests",
            "HTTP requests being handled now",
            this.in_flight.clone(),
        );
        this
    }
}

/// The middleware: names the span and measures the request.
pub async fn observe_request(
    State(app): State<AppState>,
    route: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    // Requests that match no route (answered by the fallback) count as one.
    let route = route.map_or_else(|| UNMATCHED.to_owned(), |r| r.as_str().to_owned());
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let metrics = &app.http_metrics;
    let labels = Route {
        method: request.method().as_str().to_owned(),
        route,
    };
    let span = tracing::Span::current();
    span.context()
        .span()
        .update_name(format!("{} {}", labels.method, labels.route));
    span.set_attribute("http.route", labels.route.clone());
    metrics.in_flight.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.in_flight.dec();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&Answered {
            method: labels.method,
            route: labels.route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
