//! Reads another daemon's `GET /metrics` ([`read_metrics`], over the
//! mesh's mutual TLS) and its answer into the few figures the portal's
//! operations view and `gradebook up`'s rollouts need ([`counters`]):
//! requests served so far, those that failed through the server's fault,
//! and the latency histogram's buckets.
//!
//! A daemon of the mesh reports its served gRPC calls
//! (`grpc_server_handled_total`, `grpc_server_handling_seconds`), the portal
//! its HTTP routes (`http_server_requests_total`,
//! `http_server_request_duration_seconds`); whichever is there is read.
//! Streams (`Watch`, `Tail`, `WatchGrades`) and the mesh's own gRPC
//! services (health, reflection) are left out: a stream's latency is its
//! whole life, and they are not the instance's work. The parser reads the
//! text format's sample lines only (`name{labels} value`), enough for the
//! series our own daemons write.

use std::time::Duration;

use http_body_util::BodyExt;
use tonic::codegen::http;
use tonic::transport::Channel;
use tower::ServiceExt;

use crate::mesh::call_end;

/// The largest `/metrics` answer read.
const MAX_SCRAPE_BYTES: usize = 4 * 1024 * 1024;

/// One `GET /metrics` of the instance at `address` through `channel` (a
/// channel to it, for example [`crate::mesh::client::lazy_channel_to`]);
/// `None` when it fails. The caller bounds its time.
pub async fn read_metrics(channel: Channel, address: &str) -> Option<String> {
    let request = http::Request::get(format!("http://{address}/metrics"))
        .body(tonic::body::Body::empty())
        .ok()?;
    let response = channel.oneshot(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_SCRAPE_BYTES)
        .collect()
        .await
        .ok()?
        .to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// Methods whose calls are streams, whose duration says nothing about latency.
const STREAMS: [&str; 3] = ["Watch", "Tail", "WatchGrades"];

/// One instance's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests served.
    pub requests: f64,
    /// Requests that failed through the server's fault (a 5xx, or a gRPC
    /// code that blames the server).
    pub errors: f64,
    /// The latency histogram: (upper bound in seconds, cumulative count),
    /// by bound.
    pub buckets: Vec<(f64, f64)>,
}

impl Counters {
    /// What was counted between `earlier` and these counters, of the same
    /// instance; a restart between them (fewer requests now) counts from
    /// zero.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let restarted = self.requests < earlier.requests;
        let delta = |before: f64, now: f64| {
            if restarted || now < before {
                now
            } else {
                now - before
            }
        };
        let buckets = self
            .buckets
            .iter()
            .map(|(bound, count)| {
                let before = earlier
                    .buckets
                    .iter()
                    .find(|(other, _)| other == bound)
                    .map_or(0.0, |(_, c)| *c);
                (*bound, delta(before, *count))
            })
            .collect();
        Counters {
            requests: delta(earlier.requests, self.requests),
            errors: delta(earlier.errors, self.errors),
            buckets,
        }
    }

    /// Adds `other`'s counts to these (several instances as one), bucket
    /// by bucket.
    pub fn add(&mut self, other: &Counters) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (bound, count) in &other.buckets {
            match self.buckets.iter_mut().find(|(b, _)| b == bound) {
                Some((_, mine)) => *mine += count,
                None => self.buckets.push((*bound, *count)),
            }
        }
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }

    /// The share of requests that failed (0 without a request).
    pub fn error_ratio(&self) -> f64 {
        if self.requests > 0.0 {
            (self.errors / self.requests).min(1.0)
        } else {
            0.0
        }
    }
}

/// The `q` quantile of a cumulative histogram, interpolated linearly
/// within its bucket as Prometheus' `histogram_quantile` does (the top
/// bucket answers with the largest finite bound).
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<Duration> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            let seconds = if bound.is_infinite() {
                lower.0
            } else if count > lower.1 {
                lower.0 + (bound - lower.0) * (rank - lower.1) / (count - lower.1)
            } else {
                bound
            };
            return Some(Duration::from_secs_f64(seconds.max(0.0)));
        }
        lower = (bound, count);
    }
    None
}

/// One sample line: its name, labels and value.
#[derive(Debug, PartialEq)]
struct Line<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Line<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses one sample line; `None` for comments, blank and malformed lines.
fn parse_line(line: &str) -> Option<Line<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let mut chars = inside.char_indices();
        let mut key_start = 0;
        loop {
            // key="value" pairs separated by commas, up to the closing brace.
            let (eq, _) = chars.by_ref().find(|(_, c)| *c == '=' || *c == '}')?;
            if inside[eq..].starts_with('}') {
                rest = &inside[eq + 1..];
                break;
            }
            let key = inside[key_start..eq].trim().trim_start_matches(',').trim();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    '"' => break,
                    other => value.push(other),
                }
            }
            labels.push((key, value));
            key_start = chars.clone().next().map_or(inside.len(), |(i, _)| i);
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Line {
        name,
        labels,
        value,
    })
}

/// Whether a gRPC line counts as the instance's own work.
fn counts(line: &Line<'_>) -> bool {
    let service = line.label("grpc_service").unwrap_or("");
    let method = line.label("grpc_method").unwrap_or("");
    !service.starts_with("grpc.") && !STREAMS.contains(&method)
}

/// Adds `count` to the bucket bounded by `le`.
fn add_bucket(buckets: &mut Vec<(f64, f64)>, le: Option<&str>, count: f64) {
    let Some(bound) = le.and_then(|le| match le {
        "+Inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }) else {
        return;
    };
    match buckets.iter_mut().find(|(b, _)| *b == bound) {
        Some((_, total)) => *total += count,
        None => buckets.push((bound, count)),
    }
}

/// The counters in a `/metrics` answer.
pub fn counters(text: &str) -> Counters {
    let mut grpc = Counters::default();
    let mut http = Counters::default();
    for line in text.lines().filter_map(parse_line) {
        match line.name {
            "grpc_server_handled_total" if counts(&line) => {
                grpc.requests += line.value;
                let code = line.label("grpc_code").and_then(call_end::code_named);
                if code.is_some_and(call_end::blames_server) {
                    grpc.errors += line.value;
                }
            }
            "grpc_server_handling_seconds_bucket" if counts(&line) => {
                add_bucket(&mut grpc.buckets, line.label("le"), line.value);
            }
            "http_server_requests_total" => {
                http.requests += line.value;
                if line.label("status").is_some_and(|s| s.starts_with('5')) {
                    http.errors += line.value;
                }
            }
            "http_server_request_duration_seconds_bucket" => {
                add_bucket(&mut http.buckets, line.label("le"), line.value);
            }
            _ => {}
        }
    }
    // The portal serves HTTP (its gRPC is only health and reflection).
    let mut counters = if http.requests > 0.0 || !http.buckets.is_empty() {
        http
    } else {
        grpc
    };
    counters.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_are_read_with_their_labels_and_the_rest_is_skipped() {
        let line = parse_line(r#"a_total{k="v",q="say \"hi\"",le="+Inf"} 3 # {} 1"#).unwrap();
        assert_eq!(line.name, "a_total");
        assert_eq!(line.label("q"), Some("say \"hi\""));
        assert_eq!(line.label("le"), Some("+Inf"));
        assert_eq!(line.value, 3.0);
        assert_eq!(parse_line("up 1").unwrap().value, 1.0);
        for skipped in [
            "# TYPE a counter",
            "",
            "# EOF",
            "broken{k=v} 1",
            "x{k=\"v\"}",
        ] {
            assert_eq!(parse_line(skipped), None, "{skipped:?}");
        }
    }

    #[test]
    fn a_grpc_daemon_counts_its_own_unary_calls_and_the_faults_that_blame_it() {
        let text = r#"
# TYPE grpc_server_handled counter
grpc_server_handled_total{grpc_service="gradebook.grading.v1.Grading",grpc_method="GetStudent",grpc_code="OK"} 90
grpc_server_handled_total{grpc_service="gradebook.grading.v1.Grading",grpc_method="GetStudent",grpc_code="NOT_FOUND"} 6
grpc_server_handled_total{grpc_service="gradebook.grading.v1.Grading",grpc_method="AddGrade",grpc_code="UNAVAILABLE"} 4
grpc_server_handled_total{grpc_service="gradebook.grading.v1.Grading",grpc_method="WatchGrades",grpc_code="CANCELLED"} 7
grpc_server_handled_total{grpc_service="grpc.health.v1.Health",grpc_method="Watch",grpc_code="OK"} 9
grpc_server_handling_seconds_bucket{grpc_service="gradebook.grading.v1.Grading",grpc_method="GetStudent",le="0.001"} 50
grpc_server_handling_seconds_bucket{grpc_service="gradebook.grading.v1.Grading",grpc_method="AddGrade",le="0.001"} 1
grpc_server_handling_seconds_bucket{grpc_service="gradebook.grading.v1.Grading",grpc_method="GetStudent",le="+Inf"} 96
grpc_server_handling_seconds_bucket{grpc_service="gradebook.grading.v1.Grading",grpc_method="WatchGrades",le="+Inf"} 7
# EOF
"#;
        let counters = counters(text);
        assert_eq!(counters.requests, 100.0);
        assert_eq!(counters.errors, 4.0, "NOT_FOUND is an answer");
        assert_eq!(counters.buckets, vec![(0.001, 51.0), (f64::INFINITY, 96.0)]);
    }

    #[test]
    fn the_portal_counts_its_routes_and_its_5xx() {
        let text = r#"
grpc_server_handled_total{grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="OK"} 3
http_server_requests_total{method="GET",route="/students",status="200"} 10
http_server_requests_total{method="GET",route="/students",status="503"} 2
http_server_request_duration_seconds_bucket{method="GET",route="/students",le="0.5"} 12
"#;
        let counters = counters(text);
        assert_eq!((counters.requests, counters.errors), (12.0, 2.0));
        assert_eq!(counters.buckets, vec![(0.5, 12.0)]);
    }
    #[test]
    fn the_quantile_interpolates_within_its_bucket() {
        let buckets = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&buckets, 0.75), Some(Duration::from_millis(150)));
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.99), None);
        let slow = [(0.1, 0.0), (f64::INFINITY, 10.0)];
        assert_eq!(quantile(&slow, 0.99), Some(Duration::from_millis(100)));
    }

    #[test]
    fn counters_subtract_across_a_restart_and_add_up_across_instances() {
        let earlier = Counters {
            requests: 10.0,
            errors: 1.0,
            buckets: vec![(0.1, 8.0), (f64::INFINITY, 10.0)],
        };
        let later = Counters {
            requests: 30.0,
            errors: 2.0,
            buckets: vec![(0.1, 20.0), (f64::INFINITY, 30.0)],
        };
        let done = later.since(&earlier);
        assert_eq!((done.requests, done.errors), (20.0, 1.0));
        assert_eq!(done.buckets, [(0.1, 12.0), (f64::INFINITY, 20.0)]);
        let restarted = earlier.since(&later);
        assert_eq!(restarted.requests, 10.0, "counted from zero");
        let mut both = done.clone();
        both.add(&done);
        assert_eq!(both.requests, 40.0);
        assert_eq!(both.buckets, [(0.1, 24.0), (f64::INFINITY, 40.0)]);
        assert!((both.error_ratio() - 0.05).abs() < 1e-9);
    }
}
