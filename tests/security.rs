//! The attacks issue 8 found, replayed against real daemons with mutual TLS
//! on (as every test harness daemon runs): each must be refused.

mod support;

use std::time::Duration;

use gradebook::mesh::Tls;
use gradebook::mesh::client::lazy_channel_to;
use gradebook::mesh::tls::{Identity, authority};
use gradebook::pb::log::v1 as log_pb;
use gradebook::pb::log::v1::log_service_client::LogServiceClient;
use gradebook::pb::registry::v1 as pb;
use gradebook::pb::registry::v1::registry_client::RegistryClient;
use support::{
    HealthServer, Mesh, PATIENCE, eventually, list, registry_client, registry_client_as,
};
use tonic::Code;

fn registration(service: &str, id: &str, address: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        service: service.into(),
        instance_id: id.into(),
        address: address.into(),
        version: "6.6.6".into(),
        metadata: Default::default(),
        requires: Vec::new(),
    }
}

#[tokio::test]
async fn registrations_are_bound_to_the_callers_identity() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let grading = mesh.grading(&registry, "grading", &[]).await;
    let real = support::wait_health(&registry, "grading", pb::HealthStatus::Serving).await;

    // A fake grading instance, registered by anyone but grading, is refused.
    let attacker = HealthServer::start(&registry.certs, "attacker").await;
    for identity in ["attacker", "log", "admin"] {
        let status = registry_client_as(&registry, identity)
            .register(registration("grading", "grading-fake", &attacker.address))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{identity}: {status:?}"
        );
        assert!(
            status
                .message()
                .contains("only instances of its own service"),
            "{status:?}"
        );
    }

    // Taking over the real instance's id, even as one's own service, is refused.
    let status = registry_client_as(&registry, "attacker")
        .register(registration(
            "attacker",
            &real.instance_id,
            &attacker.address,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains(&real.instance_id) && status.message().contains("take it over"),
        "{status:?}"
    );
    // So is deregistering it.
    let status = registry_client_as(&registry, "attacker")
        .deregister(pb::DeregisterRequest {
            instance_id: real.instance_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let still: Vec<_> = list(&registry, "grading").await;
    assert_eq!(still.len(), 1, "the real instance is untouched");
    assert_eq!(still[0].address, real.address);

    // A registration of one's own service pointing at someone else's
    // server (grading's) never becomes healthy: the probe wants the
    // registering identity's certificate there.
    registry_client_as(&registry, "attacker")
        .register(registration("attacker", "attacker-1", &grading.address()))
        .await
        .unwrap();
    let refused = support::wait_health(&registry, "attacker", pb::HealthStatus::Unreachable).await;
    assert!(
        refused.last_error.contains("attacker") && refused.last_error.contains("grading"),
        "the probe names the identities: {}",
        refused.last_error
    );

    // The operators may deregister anything.
    let removed = registry_client(&registry)
        .deregister(pb::DeregisterRequest {
            instance_id: "attacker-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.removed);
}

#[tokio::test]
async fn log_records_are_stamped_with_their_writers_identity() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;
    let forged = log_pb::LogRecord {
        timestamp: Some(prost_types::Timestamp {
            seconds: 1_000_000_000,
            nanos: 0,
        }),
        service: "grading".into(),
        instance: "grading-1".into(),
        level: log_pb::Level::Error as i32,
        message: "backdated forgery".into(),
        fields: Default::default(),
        trace_id: String::new(),
        span_id: String::new(),
        sequence: 0,
    };
    let status = support::log_client_as(&log, "portal")
        .write(futures::stream::iter([log_pb::WriteRequest {
            records: vec![forged.clone()],
            ..Default::default()
        }]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("records[0].service"),
        "{status:?}"
    );
    // grading itself may.
    let accepted = support::log_client_as(&log, "grading")
        .write(futures::stream::iter([log_pb::WriteRequest {
            records: vec![forged],
            ..Default::default()
        }]))
        .await
        .unwrap()
        .into_inner()
        .accepted;
    assert_eq!(accepted, 1);
}

/// A call that never reached a service: the connection was refused at the
/// handshake, so the status comes from the transport (it has a source;
/// a service's answer has none). tonic names it UNAVAILABLE, CANCELLED,
/// UNKNOWN or INTERNAL depending on when the server's TLS alert arrived.
fn refused(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
}

#[tokio::test]
async fn clients_without_a_certificate_from_the_mesh_authority_are_refused() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;

    // Plaintext: no handshake, no answer.
    let plaintext = lazy_channel_to(&registry.address(), "registry", &Tls::Off).unwrap();
    let status = RegistryClient::new(plaintext)
        .list(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert!(refused(&status), "{status:?}");

    // A certificate from another authority, even one naming `admin`
    // (the client trusts the mesh's authority, so only the server can
    // refuse it).
    let rogue = tempfile::tempdir().unwrap();
    authority::ensure(
        rogue.path(),
        &[Identity::admin()],
        authority::DEFAULT_CERT_LIFETIME,
        std::time::SystemTime::now(),
    )
    .unwrap();
    std::fs::copy(registry.certs.join("ca.crt"), rogue.path().join("ca.crt")).unwrap();
    let rogue_tls = Tls::load(rogue.path(), Identity::admin()).unwrap();
    for (daemon, service) in [(&registry, "registry"), (&log, "log")] {
        let channel = lazy_channel_to(&daemon.address(), service, &rogue_tls).unwrap();
        let status = LogServiceClient::new(channel)
            .query(log_pb::QueryRequest::default())
            .await
            .unwrap_err();
        assert!(refused(&status), "{service}: {status:?}");
    }

    // The daemons still serve the mesh's own clients.
    eventually("the registry answers its own clients", PATIENCE, || async {
        registry_client(&registry)
            .list(pb::ListRequest::default())
            .await
            .ok()
    })
    .await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_bounded() {
    use tokio::io::AsyncReadExt;
    let mesh = Mesh::new();
    let registry = mesh.registry(&["--max-connections", "16"]).await;
    // 40 sockets that never say anything: more than the daemon serves at
    // once. Each is closed by the daemon once the handshake deadline passes
    // (those past the limit wait in the backlog, then get theirs).
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(
            tokio::net::TcpStream::connect(registry.address())
                .await
                .unwrap(),
        );
    }
    let mut closed = 0;
    for mut socket in idle {
        let mut byte = [0u8; 1];
        // Generous: the later ones wait for slots to free up.
        match tokio::time::timeout(Duration::from_secs(40), socket.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(_)) => panic!("the daemon sent bytes to a silent client"),
            Err(_) => {}
        }
    }
    assert_eq!(
        closed, 40,
        "every silent connection was closed by the daemon"
    );
    // And the daemon serves real clients as before.
    eventually("the registry answers again", PATIENCE, || async {
        (registry.health_status().await == Some(1)).then_some(())
    })
    .await;
}

/// A client that sends its request too slowly does not hold a task and a
/// connection for ever: the portal answers a body that has not arrived
/// within its read timeout with 408 (and closes the connection), and every
/// daemon cuts a gRPC request off at `--request-timeout` with CANCELLED.
#[tokio::test]
async fn requests_that_arrive_too_slowly_are_cut_off() {
    use futures::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tonic::codegen::Service;
    let mesh = Mesh::new();
    let registry = mesh.registry(&["--request-timeout", "1s"]).await;
    let portal = mesh.portal(&registry, &[]).await;

    // HTTP: 10 bytes of a 100-byte body, then nothing.
    let mut socket = tokio::net::TcpStream::connect(portal.address())
        .await
        .unwrap();
    socket
        .write_all(
            b"POST /api/students HTTP/1.1\r\nHost: portal\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"first_na",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, socket.read_to_string(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("DEADLINE_EXCEEDED"), "{answer}");

    // gRPC: the frame header of a 100-byte message and 10 bytes of it.
    let mut prefix = vec![0u8, 0, 0, 0, 100];
    prefix.extend_from_slice(&[0u8; 10]);
    let stalled = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(prefix))])
        .chain(futures::stream::pending());
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri("/gradebook.registry.v1.Registry/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(axum::body::Body::from_stream(
            stalled,
        )))
        .unwrap();
    let mut channel = registry.channel();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, channel.call(request))
        .await
        .expect("answered within the request timeout")
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "CANCELLED: {:?}",
        response.headers()
    );
}

/// What the real curl answers for `url` trusting `ca` (extra arguments
/// first): the HTTP status, or `None` when the TLS handshake failed.
fn curl_status(ca: &std::path::Path, url: &str, extra: &[&str]) -> Option<u16> {
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(extra)
        .arg("--cacert")
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).parse().ok())
        .flatten()
}

/// A portal given a certificate for browsers (`--web-tls-cert`, from an
/// authority of the operator's) presents it to browsers and the mesh's own
/// to mesh clients, which ask for it by name: browsers verify the one, the
/// registry keeps probing the other. A renewed web certificate is served
/// without a restart.
#[tokio::test]
async fn browsers_get_the_web_certificate_and_the_mesh_its_own() {
    let web = tempfile::tempdir().unwrap();
    let www = Identity::new("www").unwrap();
    authority::init(web.path()).unwrap();
    authority::issue(web.path(), &www, Duration::from_secs(3600), &[]).unwrap();
    let (cert, key) = (
        authority::cert_path(web.path(), "www"),
        authority::key_path(web.path(), "www"),
    );
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let portal = mesh
        .portal(
            &registry,
            &["--web-tls-cert", &cert_arg, "--web-tls-key", &key_arg],
        )
        .await;
    let url = format!("https://localhost:{}/readyz", portal.port);
    let web_ca = web.path().join("ca.crt");

    // A browser (curl) verifies the web certificate, not the mesh's.
    let status = eventually("HTTPS with the web certificate", PATIENCE, || async {
        curl_status(&web_ca, &url, &[])
    })
    .await;
    assert!(matches!(status, 200 | 503), "{status}");
    assert_eq!(curl_status(&portal.certs.join("ca.crt"), &url, &[]), None);
    // The registry's probe (mesh name, mesh identity) sees it SERVING.
    eventually("the registry sees the portal serving", PATIENCE, || async {
        list(&registry, "portal")
            .await
            .iter()
            .any(|i| i.health == pb::HealthStatus::Serving as i32)
            .then_some(())
    })
    .await;

    // Renewed for another name too: served from then on, no restart.
    let renamed = format!("https://web.test:{}/readyz", portal.port);
    let resolve = format!("web.test:{}:127.0.0.1", portal.port);
    assert_eq!(
        curl_status(&web_ca, &renamed, &["--resolve", &resolve]),
        None
    );
    authority::issue(
        web.path(),
        &www,
        Duration::from_secs(3600),
        &["web.test".to_owned()],
    )
    .unwrap();
    eventually(
        "the renewed web certificate is served",
        PATIENCE,
        || async { curl_status(&web_ca, &renamed, &["--resolve", &resolve]) },
    )
    .await;

    // It needs TLS: with --insecure the portal refuses to start.
    let output = std::process::Command::new(support::binary())
        .args(["portal", "--insecure", "--listen", "127.0.0.1:0"])
        .args(["--web-tls-cert", &cert_arg, "--web-tls-key", &key_arg])
        .env("GRADEBOOK_DATA_DIR", mesh.dir.path().join("other-portal"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--web-tls-cert needs TLS on"), "{stderr}");
}
