//! The registry, tested as a real process over real gRPC: registration,
//! watches, failure detection (kill -9, SIGSTOP), eviction, re-registration
//! after a registry restart, graceful shutdown, and bad input.

mod support;

use std::time::Duration;

use gradebook::pb::registry::v1 as pb;
use nix::sys::signal::Signal;
use support::{
    HealthServer, Mesh, PATIENCE, Watcher, eventually, list, registry_client, registry_client_as,
    registry_node, wait_health,
};
use tonic::Code;

fn registration(service: &str, id: &str, address: &str) -> pb::RegisterRequest {
    pb::RegisterRequest {
        service: service.into(),
        instance_id: id.into(),
        address: address.into(),
        version: "1.0.0".into(),
        metadata: [("zone".to_string(), "a".to_string())].into(),
        requires: vec!["log".into()],
    }
}

#[tokio::test]
async fn register_list_and_deregister() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    // The test plays a `reports` service: its certificate registers, and
    // its health server answers the registry's probes.
    let reports = HealthServer::start(&registry.certs, "reports").await;
    let mut client = registry_client_as(&registry, "reports");
    let response = client
        .register(registration("reports", "reports-1", &reports.address))
        .await
        .unwrap()
        .into_inner();
    let instance = response.instance.unwrap();
    assert_eq!(instance.instance_id, "reports-1");
    assert_eq!(instance.requires, ["log"]);
    assert!(!response.registry_node.is_empty());

    let healthy = wait_health(&registry, "reports", pb::HealthStatus::Serving).await;
    assert_eq!(healthy.metadata["zone"], "a");
    let listed = client
        .list(pb::ListRequest {
            service: "reports".into(),
            include_unhealthy: false,
        })
        .await
        .unwrap()
        .into_inner()
        .instances;
    assert_eq!(listed.len(), 1);

    // Registering again is idempotent: same record version, one instance.
    let again = client
        .register(registration("reports", "reports-1", &reports.address))
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(list(&registry, "reports").await.len(), 1);
    assert_eq!(again.record_version, listed[0].record_version);

    // A generated id when none is given.
    let generated = client
        .register(registration("reports", "", &reports.address))
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert!(
        generated.instance_id.starts_with("reports-"),
        "{}",
        generated.instance_id
    );
    assert_eq!(list(&registry, "reports").await.len(), 2);

    let removed = client
        .deregister(pb::DeregisterRequest {
            instance_id: "reports-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.removed);
    let again = client
        .deregister(pb::DeregisterRequest {
            instance_id: "reports-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.removed);
    let left: Vec<_> = list(&registry, "reports")
        .await
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(left, [generated.instance_id]);
}

#[tokio::test]
async fn unhealthy_instances_are_listed_only_on_request() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let mut client = registry_client_as(&registry, "ghost");
    // Nothing listens on this port: connection refused.
    let dead = format!("127.0.0.1:{}", support::free_port());
    client
        .register(registration("ghost", "ghost-1", &dead))
        .await
        .unwrap();
    let down = wait_health(&registry, "ghost", pb::HealthStatus::Unreachable).await;
    assert!(down.last_error.contains("connect"), "{}", down.last_error);
    let healthy = client
        .list(pb::ListRequest {
            service: "ghost".into(),
            include_unhealthy: false,
        })
        .await
        .unwrap()
        .into_inner()
        .instances;
    assert!(healthy.is_empty());
}

#[tokio::test]
async fn watch_sends_a_snapshot_then_changes_in_order() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let alpha = HealthServer::start(&registry.certs, "alpha").await;
    let beta = HealthServer::start(&registry.certs, "beta").await;
    let gamma = HealthServer::start(&registry.certs, "gamma").await;
    registry_client_as(&registry, "alpha")
        .register(registration("alpha", "alpha-1", &alpha.address))
        .await
        .unwrap();
    wait_health(&registry, "alpha", pb::HealthStatus::Serving).await;

    let mut watcher = Watcher::open(&registry, &["alpha", "beta"]).await;
    let snapshot = watcher.snapshot().await;
    let ids: Vec<_> = snapshot.iter().map(|i| i.instance_id.as_str()).collect();
    assert_eq!(ids, ["alpha-1"]);

    let mut client = registry_client_as(&registry, "beta");
    client
        .register(registration("beta", "beta-1", &beta.address))
        .await
        .unwrap();
    // A service nobody watches here: must not show up.
    registry_client_as(&registry, "gamma")
        .register(registration("gamma", "gamma-1", &gamma.address))
        .await
        .unwrap();
    let (kind, added) = watcher.change(PATIENCE).await;
    assert_eq!(
        (kind, added.instance_id.as_str()),
        (pb::ChangeKind::Added, "beta-1")
    );
    assert_eq!(added.health, pb::HealthStatus::Unknown as i32);
    let (kind, serving) = watcher.change(PATIENCE).await;
    assert_eq!(
        (kind, serving.instance_id.as_str()),
        (pb::ChangeKind::HealthChanged, "beta-1")
    );
    assert_eq!(serving.health, pb::HealthStatus::Serving as i32);

    let mut updated = registration("beta", "beta-1", &beta.address);
    updated.version = "2.0.0".into();
    client.register(updated).await.unwrap();
    let (kind, after_update) = watcher.change(PATIENCE).await;
    assert_eq!(kind, pb::ChangeKind::Updated);
    assert_eq!(after_update.version, "2.0.0");

    client
        .deregister(pb::DeregisterRequest {
            instance_id: "beta-1".into(),
        })
        .await
        .unwrap();
    let (kind, removed) = watcher.change(PATIENCE).await;
    assert_eq!(
        (kind, removed.instance_id.as_str()),
        (pb::ChangeKind::Removed, "beta-1")
    );

    // Every change carries a strictly newer version of the record.
    let versions: Vec<u64> = [&added, &serving, &after_update, &removed]
        .iter()
        .map(|i| i.record_version.as_ref().unwrap().counter)
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    for instance in [&added, &serving, &after_update, &removed] {
        assert_eq!(
            instance.record_version.as_ref().unwrap().origin,
            registry_node(&registry).await
        );
    }
}

#[tokio::test]
async fn a_reconnecting_watcher_gets_a_fresh_snapshot() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let mut client = registry_client_as(&registry, "delta");
    let mut watcher = Watcher::open(&registry, &["delta"]).await;
    assert!(watcher.snapshot().await.is_empty());
    drop(watcher);
    // Changes while disconnected...
    client
        .register(registration("delta", "delta-1", &registry.address()))
        .await
        .unwrap();
    client
        .register(registration("delta", "delta-2", &registry.address()))
        .await
        .unwrap();
    client
        .deregister(pb::DeregisterRequest {
            instance_id: "delta-1".into(),
        })
        .await
        .unwrap();
    // ...are all in the next snapshot.
    let mut watcher = Watcher::open(&registry, &["delta"]).await;
    let ids: Vec<_> = watcher
        .snapshot()
        .await
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(ids, ["delta-2"]);
}

#[tokio::test]
async fn a_killed_instance_is_down_at_once_and_its_dependents_are_told() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let mut log = mesh.log(&registry, "log", &[]).await;
    let serving = wait_health(&registry, "log", pb::HealthStatus::Serving).await;
    let mut dependent = Watcher::open(&registry, &["log"]).await;
    dependent.snapshot().await;

    log.kill9();
    let (_, down, took) = dependent
        .until(PATIENCE, |kind, i| {
            kind == pb::ChangeKind::HealthChanged && i.instance_id == serving.instance_id
        })
        .await;
    assert_eq!(down.health, pb::HealthStatus::Unreachable as i32);
    assert!(took < Duration::from_secs(1), "kill -9 seen after {took:?}");
    assert!(
        support::registry_client(&registry)
            .list(pb::ListRequest {
                service: "log".into(),
                include_unhealthy: false
            })
            .await
            .unwrap()
            .into_inner()
            .instances
            .is_empty(),
        "a dead instance leaves the healthy set"
    );

    // A new process at the same address is a new instance: it registers
    // and turns healthy, and the old record is not mistaken for it.
    log.restart();
    let (_, up, _) = dependent
        .until(PATIENCE, |kind, i| {
            kind == pb::ChangeKind::HealthChanged && i.health == pb::HealthStatus::Serving as i32
        })
        .await;
    assert_ne!(up.instance_id, serving.instance_id);
    assert_eq!(up.address, serving.address);
    let old = list(&registry, "log")
        .await
        .into_iter()
        .find(|i| i.instance_id == serving.instance_id)
        .unwrap();
    assert_ne!(old.health, pb::HealthStatus::Serving as i32);
}

#[tokio::test]
async fn a_killed_instance_with_a_fixed_id_comes_back_healthy() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let mut log = mesh
        .log(&registry, "log", &["--instance-id", "log-fixed"])
        .await;
    wait_health(&registry, "log", pb::HealthStatus::Serving).await;
    let mut dependent = Watcher::open(&registry, &["log"]).await;
    dependent.snapshot().await;
    log.kill9();
    let (_, down, _) = dependent
        .until(PATIENCE, |kind, _| kind == pb::ChangeKind::HealthChanged)
        .await;
    assert_eq!(down.health, pb::HealthStatus::Unreachable as i32);
    log.restart();
    let (_, up, _) = dependent
        .until(PATIENCE, |kind, _| kind == pb::ChangeKind::HealthChanged)
        .await;
    assert_eq!(
        (up.instance_id.as_str(), up.health),
        ("log-fixed", pb::HealthStatus::Serving as i32)
    );
    assert_eq!(list(&registry, "log").await.len(), 1);
}

#[tokio::test]
async fn a_hung_instance_is_down_within_the_bound_and_back_on_sigcont() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &[]).await;
    let serving = wait_health(&registry, "log", pb::HealthStatus::Serving).await;
    let mut dependent = Watcher::open(&registry, &["log"]).await;
    dependent.snapshot().await;

    log.signal(Signal::SIGSTOP);
    let (_, down, took) = dependent
        .until(PATIENCE, |kind, i| {
            kind == pb::ChangeKind::HealthChanged && i.instance_id == serving.instance_id
        })
        .await;
    assert_eq!(down.health, pb::HealthStatus::Unreachable as i32);
    // Defaults: a PING every 1 s that must be answered within 500 ms: at
    // most 1.5 s, well within the 3 s promised.
    assert!(
        took <= Duration::from_secs(3),
        "SIGSTOP seen after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(400),
        "a hung process is not a crash: {took:?}"
    );

    log.signal(Signal::SIGCONT);
    let (_, up, _) = dependent
        .until(PATIENCE, |kind, i| {
            kind == pb::ChangeKind::HealthChanged && i.instance_id == serving.instance_id
        })
        .await;
    assert_eq!(up.health, pb::HealthStatus::Serving as i32);
}

#[tokio::test]
async fn instances_down_past_the_grace_are_evicted() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&["--eviction-grace", "1s"]).await;
    let mut log = mesh.log(&registry, "log", &[]).await;
    let serving = wait_health(&registry, "log", pb::HealthStatus::Serving).await;
    let mut dependent = Watcher::open(&registry, &["log"]).await;
    dependent.snapshot().await;
    log.kill9();
    let (_, removed, took) = dependent
        .until(PATIENCE, |kind, i| {
            kind == pb::ChangeKind::Removed && i.instance_id == serving.instance_id
        })
        .await;
    assert_eq!(removed.health, pb::HealthStatus::Unreachable as i32);
    assert!(
        took >= Duration::from_secs(1),
        "evicted before the grace: {took:?}"
    );
    assert!(list(&registry, "log").await.is_empty());
}

#[tokio::test]
async fn after_a_registry_restart_every_instance_registers_again_on_its_own() {
    let mesh = Mesh::new();
    let mut registry = mesh.registry(&[]).await;
    let _log = mesh.log(&registry, "log", &[]).await;
    let before = wait_health(&registry, "log", pb::HealthStatus::Serving).await;
    let node_before = registry_node(&registry).await;

    registry.restart();
    registry.wait_serving().await;
    assert_ne!(
        registry_node(&registry).await,
        node_before,
        "a new registry node"
    );
    let after = wait_health(&registry, "log", pb::HealthStatus::Serving).await;
    assert_eq!(after.instance_id, before.instance_id);
    assert_eq!(after.address, before.address);
}

#[tokio::test]
async fn sigterm_reports_not_serving_deregisters_and_exits_zero() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let mut log = mesh.log(&registry, "log", &[]).await;
    let serving = wait_health(&registry, "log", pb::HealthStatus::Serving).await;
    let mut dependent = Watcher::open(&registry, &["log"]).await;
    dependent.snapshot().await;

    let started = std::time::Instant::now();
    let status = log.terminate(PATIENCE).await;
    assert!(status.success(), "exit status {status:?}");
    // Nothing in flight: no need to wait out the 10 s drain grace.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    let (kind, instance, _) = dependent
        .until(PATIENCE, |_, i| i.instance_id == serving.instance_id)
        .await;
    assert_eq!(kind, pb::ChangeKind::HealthChanged);
    assert_eq!(instance.health, pb::HealthStatus::NotServing as i32);
    let (kind, _, _) = dependent
        .until(PATIENCE, |_, i| i.instance_id == serving.instance_id)
        .await;
    assert_eq!(kind, pb::ChangeKind::Removed);
    assert!(list(&registry, "log").await.is_empty());

    // The registry stops cleanly too, without registering itself again
    // while it goes (its own watch ends with it).
    let mut registry = registry;
    assert!(registry.terminate(PATIENCE).await.success());
    let stderr = registry.stderr();
    assert!(
        !stderr.contains("registering again") && stderr.contains("deregistered"),
        "{stderr}"
    );
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_naming_the_field() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let mut client = registry_client(&registry);
    let cases: Vec<(pb::RegisterRequest, &str)> = vec![
        (
            registration("", "x", "127.0.0.1:1"),
            "service: must not be empty",
        ),
        (
            registration("Bad_Name", "x", "127.0.0.1:1"),
            "service: \"Bad_Name\"",
        ),
        (registration("ok", "x", ""), "address: must not be empty"),
        (
            registration("ok", "x", "no-port"),
            "address: \"no-port\" is not host:port",
        ),
        (
            registration("ok", "x", "host:99999"),
            "address: \"host:99999\" has no valid port",
        ),
        (registration("ok", "bad id", "host:1"), "instance_id:"),
        (
            pb::RegisterRequest {
                requires: vec!["log".into(), "".into()],
                ..registration("ok", "x", "h:1")
            },
            "requires[1]: must not be empty",
        ),
    ];
    for (request, expected) in cases {
        let status = client.register(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().contains(expected),
            "{:?} should contain {expected:?}",
            status.message()
        );
    }
    let status = client
        .deregister(pb::DeregisterRequest {
            instance_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("instance_id:"));
    let status = client
        .watch(pb::WatchRequest {
            services: vec!["ok".into(), "NOT OK".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("services[1]:"),
        "{}",
        status.message()
    );

    // Oversize: far over the registry's 64 KiB request limit.
    let mut huge = registration("ok", "x", "h:1");
    huge.metadata.insert("blob".into(), "x".repeat(100_000));
    let status = client.register(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Within the size limit but over a field limit.
    let mut big_value = registration("ok", "x", "h:1");
    big_value.metadata.insert("k".into(), "x".repeat(300));
    let status = client.register(big_value).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("metadata[k]:"),
        "{}",
        status.message()
    );

    // Bytes that are not a RegisterRequest: INVALID_ARGUMENT, not INTERNAL.
    let status = malformed_register(&registry).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Nothing of the rejected requests was stored, and the registry is fine.
    assert!(list(&registry, "ok").await.is_empty());
    eventually("registry still serving", PATIENCE, || async {
        (registry.health_status().await == Some(1)).then_some(())
    })
    .await;
}

/// A message whose field 1 is a number where `RegisterRequest` has a string:
/// valid protobuf bytes that do not decode as the request.
#[derive(Clone, PartialEq, prost::Message)]
struct NotARegisterRequest {
    #[prost(uint64, tag = "1")]
    service: u64,
}

/// Calls `Register` with a malformed request body.
async fn malformed_register(registry: &support::Daemon) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(registry.channel());
    grpc.ready().await.expect("connected");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/gradebook.registry.v1.Registry/Register",
    );
    let codec = tonic_prost::ProstCodec::<NotARegisterRequest, pb::RegisterResponse>::default();
    grpc.unary(
        tonic::Request::new(NotARegisterRequest { service: 42 }),
        path,
        codec,
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn a_daemon_registers_the_version_it_is_told_to_report() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let _log = mesh
        .log(&registry, "log", &["--report-version", "2.0.0-canary"])
        .await;
    let instances = eventually("the log instance listed", PATIENCE, || async {
        let instances = list(&registry, "log").await;
        (!instances.is_empty()).then_some(instances)
    })
    .await;
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0].version, "2.0.0-canary");
}
