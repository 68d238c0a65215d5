//! The JSON API of traces: `GET /api/traces` (recent or slowest traces,
//! filtered) and
//! `GET /api/traces/{trace_id}` (every span of one trace, from every
//! daemon), read from the log service.

use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::model::log::trace::{
    DEFAULT_TRACES_PAGE, MAX_TRACES_PAGE, Span, TraceId, TraceQuery, TraceSummary,
};
use crate::portal::AppState;
use crate::portal::error::PortalError;

/// A point in time as the API writes it (RFC 3339, microseconds, UTC).
fn time_text(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// Milliseconds, with microseconds as the fraction.
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// A span as the API shows it.
pub fn span_json(span: &Span) -> serde_json::Value {
    let status_message = match &span.status {
        crate::model::log::trace::SpanStatus::Error(message) => message.as_str(),
        _ => "",
    };
    serde_json::json!({
        "span_id": span.span_id.to_string(),
        "parent_span_id": span.parent_span_id.map(|id| id.to_string()),
        "service": span.service,
        "instance_id": span.instance,
        "name": span.name,
        "kind": span.kind.as_str(),
        "start": time_text(span.start),
        "duration_ms": millis(span.duration),
        "status": span.status.as_str(),
        "status_message": status_message,
        "attributes": span
            .attributes
            .iter()
            .map(|(key, value)| (key.clone(), serde_json::Value::from(value.as_str())))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// A trace's summary as the API shows it.
fn summary_json(summary: &TraceSummary) -> serde_json::Value {
    serde_json::json!({
        "trace_id": summary.trace_id.to_string(),
        "root_service": summary.root_service,
        "root_name": summary.root_name,
        "start": time_text(summary.start),
        "duration_ms": millis(summary.duration),
        "span_count": summary.span_count,
        "error_count": summary.error_count,
        "services": summary.services,
    })
}

/// The parameters of `GET /api/traces` and of the `/traces` page; every
/// one optional, empty meaning "any" (as a form sends them).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TracesParams {
    /// Only traces that touched this service.
    #[serde(default)]
    pub service: String,
    /// Only traces with a failed span: `true` (or `on`, as a checkbox says).
    #[serde(default)]
    pub errors_only: String,
    /// Only traces that took at least this many milliseconds.
    #[serde(default)]
    pub min_duration_ms: String,
    /// `recent` (the default: newest first) or `slowest` (the slowest of
    /// the newest thousand).
    #[serde(default)]
    pub order: String,
    /// At most this many traces (1 to 1000, default 50).
    #[serde(default)]
    pub limit: String,
}

/// How a list of traces is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceOrder {
    /// Newest first.
    Recent,
    /// Slowest first.
    Slowest,
}

impl TracesParams {
    /// The query these parameters ask for, and the order; a bad parameter
    /// is named.
    pub fn query(&self) -> Result<(TraceQuery, TraceOrder), PortalError> {
        let min_duration = match self.min_duration_ms.trim() {
            "" => None,
            text => match text.parse::<f64>() {
                Ok(ms) if ms.is_finite() && ms >= 0.0 => Some(Duration::from_secs_f64(ms / 1000.0)),
                _ => {
                    return Err(PortalError::bad_request(format!(
                        "min_duration_ms: {text:?} is not a number of milliseconds of zero or more"
                    )));
                }
            },
        };
        let errors_only = match self.errors_only.trim() {
            "" | "false" => false,
            "true" | "on" => true,
            other => {
                return Err(PortalError::bad_request(format!(
                    "errors_only: {other:?} is neither true nor false"
                )));
            }
        };
        let order = match self.order.trim() {
            "" | "recent" => TraceOrder::Recent,
            "slowest" => TraceOrder::Slowest,
            other => {
                return Err(PortalError::bad_request(format!(
                    "order: {other:?} is neither recent nor slowest"
                )));
            }
        };
        let limit = match self.limit.trim() {
            "" => DEFAULT_TRACES_PAGE,
            text => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_TRACES_PAGE).contains(&limit) => limit,
                _ => {
                    return Err(PortalError::bad_request(format!(
                        "limit: {text:?} is not between 1 and {MAX_TRACES_PAGE}"
                    )));
                }
            },
        };
        let query = TraceQuery {
            service: Some(self.service.trim().to_owned()).filter(|s| !s.is_empty()),
            errors_only,
            min_duration,
            since: None,
            limit,
        };
        Ok((query, order))
    }
}

/// The traces `params` ask for, from every log instance, in their order.
pub async fn find_traces(
    app: &AppState,
    params: &TracesParams,
) -> Result<Vec<TraceSummary>, PortalError> {
    let (query, order) = params.query()?;
    match order {
        TraceOrder::Recent => app.recent_traces(&query).await,
        TraceOrder::Slowest => {
            let wide = TraceQuery {
                limit: MAX_TRACES_PAGE,
                ..query.clone()
            };
            let mut traces = app.recent_traces(&wide).await?;
            traces.sort_by_key(|t| std::cmp::Reverse(t.duration));
            traces.truncate(query.limit);
            Ok(traces)
        }
    }
}

/// Parses a trace id from a path, naming the parameter when it is bad.
pub fn parse_trace_id(text: &str) -> Result<TraceId, PortalError> {
    text.parse()
        .map_err(|e| PortalError::bad_request(format!("trace_id: {e}")))
}

async fn recent_traces(
    State(app): State<AppState>,
    Query(params): Query<TracesParams>,
) -> Result<Response, PortalError> {
    let traces = find_traces(&app, &params).await?;
    let traces: Vec<_> = traces.iter().map(summary_json).collect();
    Ok(Json(serde_json::json!({ "traces": traces })).into_response())
}

async fn get_trace(
    State(app): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Response, PortalError> {
    let trace = parse_trace_id(&trace_id)?;
    let spans = app.trace(trace).await?;
    let spans: Vec<_> = spans.iter().map(span_json).collect();
    Ok(Json(serde_json::json!({ "trace_id": trace.to_string(), "spans": spans })).into_response())
}

/// The `/api/traces` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/traces", get(recent_traces))
        .route("/api/traces/{trace_id}", get(get_trace))
}
