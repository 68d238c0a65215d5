//! Prometheus metrics on every daemon (`GET /metrics` on the daemon's own
//! port) and the registry's Prometheus service discovery (`GET
//! /sd/prometheus`), read with the real curl over mutual TLS as
//! Prometheus reads them.

mod support;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use support::{
    Mesh, PATIENCE, curl_get, curl_metrics, eventually, free_port, list, sample, tls_as,
};

#[tokio::test]
async fn every_daemon_serves_its_call_metrics_to_mesh_identities() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &[]).await;
    // Calls to measure: a few Lists, and one refused with INVALID_ARGUMENT.
    for _ in 0..3 {
        list(&registry, "log").await;
    }
    let refused = support::registry_client(&registry)
        .list(gradebook::pb::registry::v1::ListRequest {
            service: "Not A Service".into(),
            include_unhealthy: false,
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::InvalidArgument);

    let (status, body) = curl_metrics(&registry.certs, registry.port, Some("admin"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics text: {body}"
    );
    let ok = sample(
        &body,
        r#"grpc_server_handled_total{grpc_service="gradebook.registry.v1.Registry",grpc_method="List",grpc_code="OK"}"#,
    )
    .unwrap_or_else(|| panic!("List OK counted: {body}"));
    assert!(ok >= 3.0, "{ok} Lists counted: {body}");
    let invalid = sample(
        &body,
        r#"grpc_server_handled_total{grpc_service="gradebook.registry.v1.Registry",grpc_method="List",grpc_code="INVALID_ARGUMENT"}"#,
    );
    assert_eq!(invalid, Some(1.0), "{body}");
    assert!(
        body.contains(r#"grpc_server_handling_seconds_bucket{le="#)
            || body.contains("grpc_server_handling_seconds_bucket{"),
        "latency histogram: {body}"
    );
    assert!(body.contains("grpc_server_in_flight{"), "{body}");
    // The process's own figures.
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
        "tokio_alive_tasks",
    ] {
        let value = sample(&body, name).unwrap_or_else(|| panic!("{name}: {body}"));
        assert!(value > 0.0, "{name} {value}");
    }

    // The log daemon serves its own, on its own port.
    let (status, body) = curl_metrics(&log.certs, log.port, Some("admin"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("grpc_server_started_total{"), "{body}");

    // Without a certificate from the mesh's authority: refused at the
    // handshake (curl gets no HTTP status at all).
    let (status, _) = curl_metrics(&registry.certs, registry.port, None);
    assert_ne!(status, 200, "metrics without a client certificate");

    // The portal takes browsers without certificates on its port: they get
    // 401 from /metrics, a mesh identity gets the metrics.
    let portal = mesh.portal(&registry, &[]).await;
    let (status, body) = curl_metrics(&portal.certs, portal.port, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = curl_metrics(&portal.certs, portal.port, Some("admin"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("# TYPE grpc_server_handled counter"),
        "{body}"
    );
}

#[tokio::test]
async fn the_gradebooks_daemons_report_their_own_work() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let client = gradebook.client();
    let api = format!("{}/api", gradebook.http());
    let created: serde_json::Value = client
        .post(format!("{api}/students"))
        .json(&serde_json::json!({ "first_name": "Mia", "last_name": "Metric" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        let read = client
            .get(format!("{api}/students/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
    }
    let missing = client
        .get(format!("{api}/students/{}", uuid::Uuid::new_v4()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let nowhere = client
        .get(format!("{}/no/such/page", gradebook.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(nowhere.status(), 404);

    // The portal: RED metrics by route, never by id or invented path.
    let portal = &gradebook.portal;
    let (status, body) = curl_metrics(&portal.certs, portal.port, Some("admin"));
    assert_eq!(status, 200, "{body}");
    let reads = sample(
        &body,
        r#"http_server_requests_total{method="GET",route="/api/students/{id}",status="200"}"#,
    )
    .unwrap_or_else(|| panic!("reads counted by route: {body}"));
    assert!(reads >= 3.0, "{reads}");
    assert_eq!(
        sample(
            &body,
            r#"http_server_requests_total{method="GET",route="/api/students/{id}",status="404"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"http_server_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert!(!body.contains(&id), "no label carries an id");
    assert!(
        sample(
            &body,
            r#"http_server_request_duration_seconds_count{method="POST",route="/api/students"}"#
        ) == Some(1.0),
        "{body}"
    );
    assert!(body.contains("http_server_in_flight_requests "), "{body}");

    // The portal's calls to grading, as its balancer saw them: per
    // endpoint (grading's one instance), attempts, failures by kind, the
    // latency and its peak-EWMA estimate, ejections; per channel, retries.
    let grading_instance = list(&gradebook.registry, "grading").await;
    let endpoint = format!(
        r#"service="grading",instance_id="{}",address="{}""#,
        grading_instance[0].instance_id, grading_instance[0].address
    );
    let attempts = sample(&body, &format!("mesh_client_requests_total{{{endpoint}}}"))
        .unwrap_or_else(|| panic!("attempts to grading's instance: {body}"));
    // The create and the reads that missed the read cache (at least the
    // create, the first read and the read of a student that is not there).
    assert!(attempts >= 3.0, "{attempts}: {body}");
    let answered = sample(
        &body,
        &format!("mesh_client_request_duration_seconds_count{{{endpoint}}}"),
    );
    assert_eq!(answered, Some(attempts), "every attempt timed: {body}");
    for outcome in ["unreachable", "unavailable", "broken", "timed_out"] {
        let failures = format!(r#"mesh_client_failures_total{{{endpoint},outcome="{outcome}"}}"#);
        assert_eq!(sample(&body, &failures), Some(0.0), "{failures}: {body}");
    }
    let estimate = sample(
        &body,
        &format!("mesh_client_peak_ewma_seconds{{{endpoint}}}"),
    )
    .unwrap_or_else(|| panic!("the balancer's estimate: {body}"));
    assert!(estimate > 0.0 && estimate < 2.0, "{estimate}");
    assert_eq!(
        sample(&body, &format!("mesh_client_ejected{{{endpoint}}}")),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"mesh_client_retries_total{service="grading"}"#),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"mesh_client_retry_budget_exhausted_total{service="grading"}"#
        ),
        Some(0.0),
        "{body}"
    );

    // Grading: store latency by operation; a student not found is an
    // answer, not a failure of the database.
    let grading = &gradebook.grading;
    let (_, body) = curl_metrics(&grading.certs, grading.port, Some("admin"));
    let gets = sample(
        &body,
        r#"grading_store_seconds_count{operation="get_student"}"#,
    )
    .unwrap_or_else(|| panic!("store reads timed: {body}"));
    // (The portal's read cache answers the other reads itself.)
    assert!(gets >= 1.0, "the missing student was looked up: {gets}");
    assert_eq!(
        sample(
            &body,
            r#"grading_store_seconds_count{operation="create_student"}"#
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"grading_store_errors_total{operation="get_student"}"#
        ),
        None,
        "{body}"
    );

    // Log: what it stored, records and spans, and its commits.
    let log = &gradebook.log;
    let body = eventually("the log daemon has stored spans", PATIENCE, || {
        let (_, body) = curl_metrics(&log.certs, log.port, Some("admin"));
        let spans = sample(&body, "log_spans_ingested_total").unwrap_or(0.0);
        std::future::ready((spans > 0.0).then_some(body))
    })
    .await;
    for name in [
        "log_records_ingested_total",
        "log_ingested_bytes_total",
        "log_commit_seconds_count",
    ] {
        let value = sample(&body, name).unwrap_or_else(|| panic!("{name}: {body}"));
        assert!(value > 0.0, "{name} {value}");
    }
    assert_eq!(
        sample(&body, "log_commit_errors_total"),
        Some(0.0),
        "{body}"
    );
    // Every shipping daemon reports what its shipper sent and dropped.
    let (_, body) = curl_metrics(&grading.certs, grading.port, Some("admin"));
    assert_eq!(
        sample(&body, "log_shipper_dropped_total"),
        Some(0.0),
        "{body}"
    );
    assert!(
        sample(&body, "log_shipper_shipped_total").is_some(),
        "{body}"
    );

    // The registry: its catalog by service and health, the dependents
    // watching it, its changes and its probes.
    let registry = &gradebook.registry;
    let (_, body) = curl_metrics(&registry.certs, registry.port, Some("admin"));
    for service in ["registry", "log", "grading", "portal"] {
        let serving = format!(r#"registry_instances{{service="{service}",health="SERVING"}}"#);
        assert_eq!(sample(&body, &serving), Some(1.0), "{serving}: {body}");
    }
    let unknown = r#"registry_instances{service="grading",health="UNKNOWN"}"#;
    assert_eq!(
        sample(&body, unknown),
        Some(0.0),
        "moved on to SERVING: {body}"
    );
    let added = sample(&body, r#"registry_catalog_changes_total{kind="ADDED"}"#);
    assert_eq!(added, Some(4.0), "{body}");
    let watchers = sample(&body, "registry_watchers").unwrap_or(0.0);
    assert!(
        watchers >= 2.0,
        "grading's and the portal's watches: {body}"
    );
    let probes = sample(&body, "registry_probe_seconds_count").unwrap_or(0.0);
    assert!(probes >= 4.0, "one probe per instance at least: {body}");
    assert_eq!(
        sample(&body, "registry_evictions_total"),
        Some(0.0),
        "{body}"
    );
}

#[tokio::test]
async fn the_registry_answers_prometheus_service_discovery_from_its_catalog() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &[]).await;
    let address = log.address();
    let group = eventually("the log daemon is a SERVING target", PATIENCE, || {
        let address = address.clone();
        let certs = registry.certs.clone();
        let port = registry.port;
        async move {
            let (status, body) = curl_get(&certs, port, "/sd/prometheus", Some("admin"));
            assert_eq!(status, 200, "{body}");
            let groups: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
            groups.into_iter().find(|g| {
                g["targets"] == serde_json::json!([address]) && g["labels"]["health"] == "SERVING"
            })
        }
    })
    .await;
    assert_eq!(group["labels"]["service"], "log", "{group}");
    assert!(
        group["labels"]["instance_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("log-")),
        "{group}"
    );
    assert!(group["labels"]["version"].is_string(), "{group}");
    // Without a mesh certificate: refused at the handshake.
    let (status, _) = curl_get(&registry.certs, registry.port, "/sd/prometheus", None);
    assert_ne!(status, 200);
}

/// A Prometheus server, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts the machine's Prometheus (Debian's package) in `dir`,
    /// discovering its targets at `https://127.0.0.1:{registry_port}/sd/prometheus`
    /// and scraping them over mutual TLS as the `prometheus` identity, every
    /// second. `None` (after a skip message) when it is not installed,
    /// unless `CI` is set.
    fn start(dir: &Path, certs: &Path, registry_port: u16) -> Option<Prometheus> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "prometheus is not installed (on the PATH) and CI is set: install the Debian package `prometheus`"
            );
            eprintln!("skipped: prometheus is not installed (Debian package `prometheus`)");
            return None;
        }
        tls_as(certs, "prometheus");
        // The shipped prometheus.yml, pointed at this test's registry and
        // certificates, scraping every second.
        let shipped =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/prometheus.yml"))
                .expect("the shipped prometheus.yml");
        let config = shipped
            .replace("data/certs/", &format!("{}/", certs.display()))
            .replace("127.0.0.1:50051", &format!("127.0.0.1:{registry_port}"))
            .replace("15s", "1s")
            .replace("scrape_timeout: 5s", "scrape_timeout: 1s");
        assert!(
            config.contains(&format!("127.0.0.1:{registry_port}/sd/prometheus")),
            "the shipped file discovers through the registry: {config}"
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("prometheus-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
            .spawn()
            .expect("start prometheus");
        Some(Prometheus { child, port })
    }

    /// The result of the instant query `query` (empty while it has none).
    async fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={encoded}",
            self.port
        );
        let Ok(response) = reqwest::get(&url).await else {
            return Vec::new();
        };
        let Ok(body) = response.json::<serde_json::Value>().await else {
            return Vec::new();
        };
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn a_real_prometheus_finds_every_daemon_through_the_registry_and_scrapes_it() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let registry = &gradebook.registry;
    let Some(prometheus) = Prometheus::start(mesh.dir.path(), &registry.certs, registry.port)
    else {
        return;
    };
    // Every daemon up, found through the registry with its labels.
    let patience = Duration::from_secs(60);
    for service in ["registry", "log", "grading", "portal"] {
        let query = format!("up{{service=\"{service}\"}}");
        let result = eventually(&format!("Prometheus scrapes {service}"), patience, || {
            let query = query.clone();
            let prometheus = &prometheus;
            async move {
                let result = prometheus.query(&query).await;
                result
                    .iter()
                    .any(|sample| sample["value"][1] == "1")
                    .then_some(result)
            }
        })
        .await;
        let labels = &result[0]["metric"];
        assert_eq!(labels["health"], "SERVING", "{labels}");
        assert!(labels["instance_id"].is_string(), "{labels}");
    }
    // And it has read their request counters: the other daemons'
    // registrations were calls the registry handled.
    let handled = eventually("a non-zero request counter", patience, || {
        let prometheus = &prometheus;
        async move {
            let result = prometheus
                .query(r#"sum(grpc_server_handled_total{service="registry"})"#)
                .await;
            let value: f64 = result.first()?["value"][1].as_str()?.parse().ok()?;
            (value > 0.0).then_some(value)
        }
    })
    .await;
    assert!(handled > 0.0);
}
