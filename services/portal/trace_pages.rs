//! The operators' pages of traces, server-rendered, no script needed:
//! `/traces` (recent or slowest traces, filtered by service, failure and
//! duration) and `/traces/{id}` (a waterfall: every span of every daemon on
//! one time axis, as a tree, with its service, name, duration and status,
//! and the log records of that trace beside it).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use crate::model::log::LogFilter;
use crate::model::log::trace::{Span, SpanId};
use crate::portal::AppState;
use crate::portal::pages::{layout, page};
use crate::portal::trace_api::{TracesParams, find_traces, parse_trace_id};

/// How many log records of a trace its page shows at most.
const TRACE_LOG_RECORDS: u32 = 200;

/// A duration as people read it: `850 µs`, `12.3 ms`, `1.25 s`.
fn duration_text(duration: Duration) -> String {
    let micros = duration.as_micros();
    if micros < 1000 {
        format!("{micros} µs")
    } else if micros < 1_000_000 {
        format!("{:.1} ms", micros as f64 / 1000.0)
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}

/// A point in time, to the millisecond, UTC.
fn time_text(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

async fn traces(State(app): State<AppState>, Query(params): Query<TracesParams>) -> Response {
    page(
        async {
            let found = find_traces(&app, &params).await?;
            let longest = found.iter().map(|t| t.duration).max().unwrap_or_default();
            let slowest = params.order.trim() == "slowest";
            let body = html! {
                h1 { "Traces" }
                form method="get" action="/traces" {
                    label for="service" { "Service" }
                    input id="service" name="service" value=(params.service);
                    label for="min_duration_ms" { "At least (ms)" }
                    input id="min_duration_ms" name="min_duration_ms" type="number" min="0" step="any" value=(params.min_duration_ms);
                    label for="order" { "Order" }
                    select id="order" name="order" {
                        option value="recent" selected[!slowest] { "Most recent" }
                        option value="slowest" selected[slowest] { "Slowest" }
                    }
                    label { input type="checkbox" name="errors_only" value="true" checked[params.errors_only == "true"]; " Only failed traces" }
                    p { button type="submit" { "Filter" } }
                }
                @if found.is_empty() {
                    p { "No trace matches." }
                } @else {
                    div.table-wrap {
                        table {
                            thead { tr { th { "Started" } th { "Root" } th.num { "Duration" } th { "" } th.num { "Spans" } th { "Services" } } }
                            tbody {
                                @for t in &found {
                                    tr {
                                        td { a href={ "/traces/" (t.trace_id) } { (time_text(t.start)) } }
                                        td {
                                            (t.root_service) ": " (t.root_name)
                                            @if t.error_count > 0 { " " span.status-error { "failed" } }
                                        }
                                        td.num { (duration_text(t.duration)) }
                                        td { (bar(Duration::ZERO, t.duration, longest, t.error_count > 0)) }
                                        td.num { (t.span_count) }
                                        td { (t.services.iter().cloned().collect::<Vec<_>>().join(", ")) }
                                    }
                                }
                            }
                        }
                    }
                }
            };
            Ok(Html(layout("Traces", body).into_string()).into_response())
        }
        .await,
    )
}

/// A bar on a lane of `total`: from `offset` for `length`.
fn bar(offset: Duration, length: Duration, total: Duration, failed: bool) -> Markup {
    let total = total.as_secs_f64().max(1e-9);
    let left = (offset.as_secs_f64() / total * 100.0).clamp(0.0, 100.0);
    let width = (length.as_secs_f64() / total * 100.0).clamp(0.0, 100.0 - left);
    html! {
        div.lane role="img" aria-label={ "from " (duration_text(offset)) " for " (duration_text(length)) } {
            span class=[failed.then_some("error")] style={ "left:" (format!("{left:.2}")) "%;width:" (format!("{width:.2}")) "%" } {}
        }
    }
}

/// The spans in tree order (each after its parent, siblings by start),
/// with their depth. Spans whose parent is not stored start trees of
/// their own.
pub fn tree_order(spans: &[Span]) -> Vec<(usize, &Span)> {
    let known: HashMap<SpanId, &Span> = spans.iter().map(|s| (s.span_id, s)).collect();
    let mut children: HashMap<Option<SpanId>, Vec<&Span>> = HashMap::new();
    for span in spans {
        let parent = span.parent_span_id.filter(|p| known.contains_key(p));
        children.entry(parent).or_default().push(span);
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| (s.start, s.span_id));
    }
    let mut ordered = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, &Span)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|s| (0, *s)).collect())
        .unwrap_or_default();
    while let Some((depth, span)) = stack.pop() {
        ordered.push((depth, span));
        if let Some(kids) = children.get(&Some(span.span_id)) {
            stack.extend(kids.iter().rev().map(|s| (depth + 1, *s)));
        }
    }
    ordered
}

async fn trace(State(app): State<AppState>, Path(trace_id): Path<String>) -> Response {
    page(
        async {
            let trace = parse_trace_id(&trace_id)?;
            let spans = app.trace(trace).await?;
            let filter = LogFilter {
                trace_id: Some(trace.to_string()),
                ..LogFilter::default()
            };
            // The records are a help beside the spans: without the log
            // service's answer, the page still shows the waterfall.
            let records = app
                .recent_logs(&filter, TRACE_LOG_RECORDS)
                .await
                .map(|page| page.records)
                .unwrap_or_default();
            let start = spans.iter().map(|s| s.start).min().unwrap_or(SystemTime::UNIX_EPOCH);
            let end = spans.iter().map(Span::end).max().unwrap_or(start);
            let total = end.duration_since(start).unwrap_or_default();
            let failed = spans.iter().filter(|s| s.status.is_error()).count();
            let body = html! {
                h1 { "Trace" }
                p {
                    code { (trace) } " · started " (time_text(start)) " · " (duration_text(total))
                    " · " (spans.len()) " spans"
                    @if failed > 0 { " · " span.status-error { (failed) " failed" } }
                }
                p.meta { "Timeline: 0 to " (duration_text(total)) ", one bar per span." }
                ol.waterfall {
                    @for (depth, span) in tree_order(&spans) {
                        li style={ "padding-left:" (format!("{:.1}", depth as f64 * 0.9)) "rem" } {
                            div { strong title=(span.span_id) { (span.name) } }
                            div.meta {
                                span title=(span.instance) { (span.service) } " · " (span.kind.as_str())
                                " · " (duration_text(span.duration)) " · "
                                @match &span.status {
                                    crate::model::log::trace::SpanStatus::Error(message) => span.status-error title=(message) { "error: " (message) },
                                    other => (other.as_str()),
                                }
                            }
                            (bar(span.start.duration_since(start).unwrap_or_default(), span.duration, total, span.status.is_error()))
                        }
                    }
                }
                h2 { "Log records of this trace" }
                @if records.is_empty() {
                    p { "No log record of this trace." }
                } @else {
                    div.table-wrap {
                        table {
                            thead { tr { th { "Time" } th { "Level" } th { "Service" } th { "Message" } } }
                            tbody {
                                @for r in records.iter().rev() {
                                    tr {
                                        td { (time_text(r.timestamp)) }
                                        td { (r.level.as_str()) }
                                        td { (r.service) }
                                        td { (r.message) @for (k, v) in &r.fields { " " small { (k) "=" (v) } } }
                                    }
                                }
                            }
                        }
                    }
                }
                p { a href={ "/logs?trace=" (trace) } { "These records in the log view" } " · " a href="/traces" { "All traces" } }
            };
            Ok(Html(layout("Trace", body).into_string()).into_response())
        }
        .await,
    )
}

/// The `/traces` pages.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/traces", get(traces))
        .route("/traces/{trace_id}", get(trace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::log::trace::{SpanKind, SpanStatus};

    fn span(id: &str, parent: Option<&str>, start_ms: u64) -> Span {
        Span {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap(),
            span_id: id.parse().unwrap(),
            parent_span_id: parent.map(|p| p.parse().unwrap()),
            service: "portal".into(),
            instance: "portal-1".into(),
            name: id.into(),
            kind: SpanKind::Server,
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(start_ms),
            duration: Duration::from_millis(1),
            status: SpanStatus::Unset,
            attributes: Vec::new(),
            sequence: 0,
        }
    }

    #[test]
    fn spans_are_shown_as_a_tree_and_durations_as_people_read_them() {
        let spans = [
            span("00000000000000b2", Some("00000000000000a1"), 5),
            span("00000000000000c3", Some("00000000000000b2"), 6),
            span("00000000000000a1", None, 0),
            span("00000000000000b1", Some("00000000000000a1"), 2),
            span("00000000000000d4", Some("00000000000000ff"), 1),
        ];
        let order: Vec<(usize, String)> = tree_order(&spans)
            .into_iter()
            .map(|(depth, s)| (depth, s.name.clone()))
            .collect();
        let expected = [
            (0, "00000000000000a1"),
            (1, "00000000000000b1"),
            (1, "00000000000000b2"),
            (2, "00000000000000c3"),
            (0, "00000000000000d4"),
        ];
        let expected: Vec<(usize, String)> =
            expected.iter().map(|(d, n)| (*d, n.to_string())).collect();
        assert_eq!(order, expected);
        assert_eq!(duration_text(Duration::from_micros(850)), "850 µs");
        assert_eq!(duration_text(Duration::from_micros(12_340)), "12.3 ms");
        assert_eq!(duration_text(Duration::from_millis(1250)), "1.25 s");
    }
}
