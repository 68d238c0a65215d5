//! Prometheus metrics on every daemon: `GET /metrics` on the daemon's own
//! port, read with the real curl over mutual TLS as Prometheus reads it.

mod support;

use std::path::Path;
use std::process::Command;

use gradebook::mesh::tls::authority;
use support::{Mesh, list};

/// GETs `https://127.0.0.1:PORT/metrics` with curl, as `identity` (with its
/// certificate) or anonymously; returns the status code and the body.
fn curl_metrics(certs: &Path, port: u16, identity: Option<&str>) -> (u16, String) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "--max-time", "10", "-w", "\n%{http_code}", "--cacert"])
        .arg(certs.join(authority::CA_CERT));
    if let Some(identity) = identity {
        curl.arg("--cert")
            .arg(authority::cert_path(certs, identity))
            .arg("--key")
            .arg(authority::key_path(certs, identity));
    }
    let output = curl
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl runs (it is installed with the tests' tools)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the sample `name{labels}` (labels exactly as encoded).
fn sample(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
}

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
