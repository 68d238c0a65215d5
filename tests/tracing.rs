//! Distributed tracing end to end, with the real daemons: a request to the
//! portal that carries a W3C `traceparent` is one trace across the portal
//! and grading (server span, client span, grading's server span and its
//! store step, each with the right parent), stored by the log service and
//! read back through the portal's `/api/traces`; the log records made while
//! handling it carry its trace and span ids; every response quotes its
//! trace, error bodies too; the mesh's own plumbing makes no traces.

mod support;

use std::collections::HashMap;

use serde_json::Value;
use support::{Gradebook, Mesh, PATIENCE, curl_metrics, eventually, sample};

/// A random W3C trace id (32 hex digits).
fn new_trace_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The trace id of a `traceparent` header value.
fn trace_of(traceparent: &str) -> String {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {traceparent}");
    assert_eq!(parts[0], "00", "version 00: {traceparent}");
    parts[1].to_owned()
}

/// Polls `/api/traces/{trace}` until it holds `spans` spans or more.
async fn trace_with(gradebook: &Gradebook, trace: &str, spans: usize) -> Vec<Value> {
    let client = gradebook.client();
    let url = format!("{}/api/traces/{trace}", gradebook.http());
    eventually(
        &format!("trace {trace} has {spans} spans"),
        PATIENCE,
        || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let response = client.get(&url).send().await.ok()?;
                if response.status() != 200 {
                    return None;
                }
                let body: Value = response.json().await.ok()?;
                let found = body["spans"].as_array()?.clone();
                (found.len() >= spans).then_some(found)
            }
        },
    )
    .await
}

/// The one span of `spans` that `matches`.
fn one<'a>(spans: &'a [Value], what: &str, matches: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(found.len(), 1, "one {what} in {spans:#?}");
    found[0]
}

#[tokio::test]
async fn a_portal_request_is_one_trace_from_the_portal_through_grading_to_its_store() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let client = gradebook.client();
    let trace = new_trace_id();
    let caller_span = "00f067aa0ba902b7";

    let response = client
        .post(format!("{}/api/students", gradebook.http()))
        .header("traceparent", format!("00-{trace}-{caller_span}-01"))
        .json(&serde_json::json!({ "first_name": "Ada", "last_name": "Traced" }))
        .send()
        .await
        .expect("create a student");
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let quoted = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        trace_of(&quoted),
        trace,
        "the response quotes the caller's trace"
    );
    let student: Value = response.json().await.unwrap();
    let student_id = student["id"].as_str().unwrap().to_owned();

    // Portal server, portal client, grading server, grading's store step.
    let spans = trace_with(&gradebook, &trace, 4).await;
    let portal = one(&spans, "portal server span", |s| {
        s["service"] == "portal" && s["kind"] == "server"
    });
    assert_eq!(portal["name"], "POST /api/students");
    assert_eq!(portal["parent_span_id"], caller_span, "child of the caller");
    assert_eq!(portal["attributes"]["http.response.status_code"], "201");
    let call = one(&spans, "portal client span", |s| {
        s["service"] == "portal" && s["kind"] == "client"
    });
    assert_eq!(call["name"], "gradebook.grading.v1.Grading/CreateStudent");
    assert_eq!(call["parent_span_id"], portal["span_id"]);
    assert_eq!(call["attributes"]["rpc.grpc.status_code"], "0");
    let served = one(&spans, "grading server span", |s| {
        s["service"] == "grading" && s["kind"] == "server"
    });
    assert_eq!(served["name"], "gradebook.grading.v1.Grading/CreateStudent");
    assert_eq!(served["parent_span_id"], call["span_id"]);
    assert!(
        served["instance_id"]
            .as_str()
            .unwrap()
            .starts_with("grading")
    );
    let store = one(&spans, "grading store span", |s| {
        s["service"] == "grading" && s["kind"] == "internal"
    });
    assert_eq!(store["name"], "store create_student");
    assert_eq!(store["parent_span_id"], served["span_id"]);
    for span in &spans {
        assert_eq!(span["status"], "unset", "nothing failed: {span:#}");
        assert!(span["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    let portal_ms = portal["duration_ms"].as_f64().unwrap();
    let grading_ms = served["duration_ms"].as_f64().unwrap();
    assert!(
        portal_ms >= grading_ms,
        "the portal's span covers grading's"
    );

    // Grading's record of the change carries the trace and its span.
    let logs = support::log_client(&gradebook.log);
    let record = eventually("grading's record of the trace", PATIENCE, || {
        let mut logs = logs.clone();
        let trace = trace.clone();
        async move {
            let page = logs
                .query(gradebook::pb::log::v1::QueryRequest {
                    filter: Some(gradebook::pb::log::v1::Filter {
                        trace_id: trace,
                        service: "grading".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            page.records
                .into_iter()
                .find(|r| r.message == "student created")
        }
    })
    .await;
    assert_eq!(record.fields["student_id"], student_id);
    assert_eq!(record.span_id, served["span_id"].as_str().unwrap());

    // The trace is listed among grading's recent traces.
    let listed: Value = client
        .get(format!(
            "{}/api/traces?service=grading&limit=1000",
            gradebook.http()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let summary = listed["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trace_id"] == trace.as_str())
        .unwrap_or_else(|| panic!("trace {trace} listed: {listed:#}"));
    assert_eq!(summary["root_service"], "portal");
    assert_eq!(summary["span_count"], spans.len());
    assert_eq!(summary["error_count"], 0);
    assert_eq!(
        summary["services"],
        serde_json::json!(["grading", "portal"])
    );
}

#[tokio::test]
async fn every_response_quotes_its_trace_and_bad_trace_queries_name_the_field() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let client = gradebook.client();
    let api = format!("{}/api", gradebook.http());

    // No traceparent: the portal starts a trace and says which.
    let missing = client
        .get(format!("{api}/students/{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let trace = trace_of(missing.headers()["traceparent"].to_str().unwrap());
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "NOT_FOUND");
    assert_eq!(body["error"]["trace_id"], trace.as_str(), "{body}");
    // Grading's NOT_FOUND is the caller's failure: the client span says
    // so, the server span does not.
    let spans = trace_with(&gradebook, &trace, 3).await;
    let call = one(&spans, "client span", |s| s["kind"] == "client");
    assert_eq!(call["status"], "error");
    assert_eq!(call["attributes"]["rpc.grpc.status_code"], "5");
    let served = one(&spans, "grading span", |s| {
        s["service"] == "grading" && s["kind"] == "server"
    });
    assert_eq!(served["status"], "unset");

    // Pages quote it too.
    let page = client
        .get(format!(
            "{}/students/{}",
            gradebook.http(),
            uuid::Uuid::new_v4()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    let trace = trace_of(page.headers()["traceparent"].to_str().unwrap());
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&trace),
        "the error page quotes {trace}: {html}"
    );

    // Bad queries.
    let bad = client
        .get(format!("{api}/traces/not-a-trace"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("trace_id: must be 32"), "{message}");
    let unknown = client
        .get(format!("{api}/traces/{}", new_trace_id()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let bad_limit = client
        .get(format!("{api}/traces?limit=0"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_limit.status(), 400);
    let body: Value = bad_limit.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("limit:"),
        "{body}"
    );
}

#[tokio::test]
async fn the_mesh_plumbing_makes_no_traces() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let client = gradebook.client();
    // One traced request, so that the span store is known to work...
    let response = client
        .get(format!("{}/api/students", gradebook.http()))
        .send()
        .await
        .unwrap();
    let trace = trace_of(response.headers()["traceparent"].to_str().unwrap());
    trace_with(&gradebook, &trace, 3).await;
    // ...while health checks, registrations, watches and log writes ran
    // all along: no stored trace starts with one. (A trace whose first
    // spans are not shipped yet may show a later span as its root.)
    let listed: Value = client
        .get(format!("{}/api/traces?limit=1000", gradebook.http()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut roots: HashMap<String, usize> = HashMap::new();
    for summary in listed["traces"].as_array().unwrap() {
        *roots
            .entry(summary["root_name"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let plumbing = [
        "grpc.health.v1.",
        "grpc.reflection.",
        "gradebook.registry.v1.",
        "gradebook.log.v1.LogService/Write",
    ];
    assert!(
        roots
            .keys()
            .all(|name| !plumbing.iter().any(|prefix| name.starts_with(prefix))),
        "the plumbing starts no trace: {roots:?}"
    );
    assert!(roots.contains_key("GET /api/students"), "{roots:?}");
    assert!(roots.contains_key("GET /readyz"), "{roots:?}");
}

/// The independent OTLP receiver (`tests/otlp_receiver.py`), killed when
/// dropped.
struct OtlpReceiver {
    child: std::process::Child,
    port: u16,
    spans: std::path::PathBuf,
}

impl OtlpReceiver {
    /// Starts it, or `None` when Python lacks `grpcio` or
    /// `opentelemetry-proto` outside CI (CI installs them).
    fn start(dir: &std::path::Path) -> Option<OtlpReceiver> {
        use std::io::BufRead;
        let usable = std::process::Command::new("python3")
            .args([
                "-c",
                "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
            ])
            .output()
            .is_ok_and(|o| o.status.success());
        if !usable {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI installs grpcio and opentelemetry-proto"
            );
            eprintln!("skipped: python3 with grpcio and opentelemetry-proto is not installed");
            return None;
        }
        let spans = dir.join("otlp-spans.jsonl");
        let mut child = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otlp_receiver.py"
            ))
            .arg(&spans)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut first)
            .expect("the receiver prints its port");
        let port = first.trim().parse().expect("a port");
        Some(OtlpReceiver { child, port, spans })
    }

    /// The spans received so far.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.spans)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn spans_go_to_an_otlp_collector_and_sampling_follows_the_standard_variables() {
    let receiver_dir = tempfile::tempdir().unwrap();
    let Some(receiver) = OtlpReceiver::start(receiver_dir.path()) else {
        return;
    };
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);
    // No trace starts here on its own; a caller's sampled trace goes on.
    let mesh = Mesh::with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0"),
    ]);
    let gradebook = mesh.gradebook().await;
    let client = gradebook.client();
    let students = format!("{}/api/students", gradebook.http());

    let unsampled = client.get(&students).send().await.unwrap();
    assert_eq!(unsampled.status(), 200);
    let header = unsampled.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.ends_with("-00"), "not sampled: {header}");
    let unsampled_trace = trace_of(&header);

    let trace = new_trace_id();
    let sampled = client
        .get(&students)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(sampled.status(), 200);
    let stored = trace_with(&gradebook, &trace, 4).await;

    // The collector gets the same spans, with each daemon as a resource.
    let exported = eventually("the collector has the trace", PATIENCE, || {
        let found: Vec<Value> = receiver
            .received()
            .into_iter()
            .filter(|s| s["trace_id"] == trace.as_str())
            .collect();
        let services: std::collections::BTreeSet<String> = found
            .iter()
            .filter_map(|s| s["service"].as_str().map(str::to_owned))
            .collect();
        std::future::ready((found.len() >= stored.len() && services.len() == 2).then_some(found))
    })
    .await;
    for span in &stored {
        let twin = one(&exported, "exported twin", |e| {
            e["span_id"] == span["span_id"]
        });
        assert_eq!(twin["service"], span["service"]);
        assert_eq!(twin["instance"], span["instance_id"]);
        assert_eq!(twin["name"], span["name"]);
        let parent = span["parent_span_id"].as_str().unwrap_or_default();
        assert_eq!(twin["parent_span_id"], parent);
    }

    // The unsampled request's spans were never kept: the portal shipped
    // them (if it had any) before the sampled trace's, which are stored.
    let unknown = client
        .get(format!("{}/api/traces/{unsampled_trace}", gradebook.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(
        receiver
            .received()
            .iter()
            .all(|s| s["trace_id"] != unsampled_trace.as_str()),
        "nothing of the unsampled trace is exported"
    );
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_a_dead_collector_slows_nothing() {
    // A collector that accepts connections into its backlog and never
    // answers: the export must not hold any request up. Its queue (made
    // small here) fills, and the spans it drops are counted.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mesh = Mesh::with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
    ]);
    let gradebook = mesh.gradebook().await;
    let client = gradebook
        .client_builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .unwrap();
    let students = format!("{}/api/students", gradebook.http());

    for garbage in [
        "00-zz-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "not a traceparent at all",
    ] {
        let response = client
            .get(&students)
            .header("traceparent", garbage)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "{garbage:?} is ignored, not an error"
        );
        let trace = trace_of(response.headers()["traceparent"].to_str().unwrap());
        assert!(!garbage.contains(&trace), "a new trace for {garbage:?}");
        // The portal's server span, the portal's call, grading's span and
        // its store step: the portal's own span ends (and ships) last.
        let spans = trace_with(&gradebook, &trace, 4).await;
        let root = one(&spans, "root", |s| {
            s["kind"] == "server" && s["service"] == "portal"
        });
        assert!(root["parent_span_id"].is_null(), "a root: {root:#}");
    }

    let mut failed = 0;
    for _ in 0..50 {
        match client.get(&students).send().await {
            Ok(response) if response.status() == 200 => {}
            _ => failed += 1,
        }
    }
    assert_eq!(failed, 0, "requests while the collector never answers");
    let portal = &gradebook.portal;
    let (_, metrics) = curl_metrics(&portal.certs, portal.port, Some("admin"));
    let dropped = sample(&metrics, "otlp_exporter_spans_dropped_total").unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "the full queue's drops are counted: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "otlp_exporter_spans_exported_total"),
        Some(0.0),
        "{metrics}"
    );
    // The log service still got every span: the export is beside it.
    assert_eq!(
        sample(&metrics, "log_shipper_dropped_total"),
        Some(0.0),
        "{metrics}"
    );
    drop(silent);
}
