//! Several registry nodes as one group: the catalog replicated between
//! them by gossip (`--peers`), so a registration through any node is
//! listed and watched through every node.

mod support;

use gradebook::pb::registry::v1 as pb;
use support::{
    HealthServer, Mesh, PATIENCE, Watcher, catching_up, eventually, free_port, list,
    registry_client_as, registry_node,
};

/// Waits until `registry` lists `service` with `health` (through its own
/// catalog, whichever node the instance registered through).
async fn listed(
    registry: &support::Daemon,
    service: &str,
    health: pb::HealthStatus,
) -> pb::Instance {
    eventually(
        &format!("{service} {health:?} on node {}", registry.port),
        PATIENCE,
        || async {
            list(registry, service)
                .await
                .into_iter()
                .find(|i| i.health == health as i32)
        },
    )
    .await
}

/// Starts a bare health server of the service "reports" and registers it
/// as `reports-1` through `registry`; keep the server while it should live.
async fn register_reports_through(registry: &support::Daemon) -> HealthServer {
    let server = HealthServer::start(&registry.certs, "reports").await;
    let registered = registry_client_as(registry, "reports")
        .register(pb::RegisterRequest {
            service: "reports".into(),
            instance_id: "reports-1".into(),
            address: server.address.clone(),
            version: "1".into(),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(registered.instance.unwrap().instance_id, "reports-1");
    server
}

#[tokio::test]
async fn a_registration_through_one_node_is_listed_and_watched_through_every_node() {
    let mesh = Mesh::new();
    let group = mesh.registry_group(3, &[]).await;
    let (a, b, c) = (&group[0], &group[1], &group[2]);
    let mut watcher = Watcher::open(c, &["log"]).await;
    watcher.snapshot().await;

    // The log service registers through A; A monitors it; B and C learn
    // of it, SERVING, by gossip.
    let mut log = mesh.log(a, "log", &[]).await;
    let on_a = listed(a, "log", pb::HealthStatus::Serving).await;
    for node in [b, c] {
        let there = listed(node, "log", pb::HealthStatus::Serving).await;
        assert_eq!(there.instance_id, on_a.instance_id);
        assert_eq!(there.address, on_a.address);
    }
    let (kind, instance, _) = watcher
        .until(PATIENCE, |_, i| {
            i.health == pb::HealthStatus::Serving as i32
        })
        .await;
    assert!(matches!(
        kind,
        pb::ChangeKind::Added | pb::ChangeKind::HealthChanged
    ));
    assert_eq!(instance.instance_id, on_a.instance_id);

    // It stops: deregistered through A, removed everywhere.
    assert!(log.terminate(PATIENCE).await.success());
    let (kind, _, _) = watcher
        .until(PATIENCE, |kind, i| {
            kind == pb::ChangeKind::Removed && i.instance_id == on_a.instance_id
        })
        .await;
    assert_eq!(kind, pb::ChangeKind::Removed);
    for node in [a, b, c] {
        eventually("the log service is gone everywhere", PATIENCE, || async {
            list(node, "log").await.is_empty().then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn an_instance_deregistered_through_another_node_is_gone_everywhere_for_good() {
    let mesh = Mesh::new();
    let group = mesh.registry_group(3, &[]).await;
    let (a, b, c) = (&group[0], &group[1], &group[2]);
    let _server = register_reports_through(a).await;
    listed(c, "reports", pb::HealthStatus::Serving).await;

    // An operator removes it through B (A owns and monitors it).
    let removed = registry_client_as(b, "admin")
        .deregister(pb::DeregisterRequest {
            instance_id: "reports-1".into(),
        })
        .await
        .expect("deregister through B")
        .into_inner();
    assert!(removed.removed);
    for node in [a, b, c] {
        eventually("gone on every node", PATIENCE, || async {
            list(node, "reports").await.is_empty().then_some(())
        })
        .await;
    }
    // And it does not come back (A's record, older, stays superseded):
    // watched over two anti-entropy rounds (one a second).
    let window = std::time::Instant::now();
    while window.elapsed() < std::time::Duration::from_secs(2) {
        for node in [a, b, c] {
            assert!(list(node, "reports").await.is_empty(), "it came back");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn peer_messages_from_strangers_or_malformed_are_refused_and_change_nothing() {
    use gradebook::pb::registry::v1::gossip_message::Kind;
    use gradebook::pb::registry::v1::peer_client::PeerClient;
    use tonic::Code;
    let mesh = Mesh::new();
    let group = mesh.registry_group(2, &[]).await;
    let node = &group[0];
    let instance = pb::Instance {
        service: "forged".into(),
        instance_id: "forged-1".into(),
        address: "127.0.0.1:1".into(),
        health: pb::HealthStatus::Serving as i32,
        record_version: Some(pb::RecordVersion {
            counter: u64::MAX / 2,
            origin: "evil".into(),
        }),
        ..Default::default()
    };
    let push = |cluster: &str, protocol: pb::PeerProtocol, from: u64, to: u64| pb::GossipMessage {
        protocol: protocol as i32,
        cluster: cluster.into(),
        from: "127.0.0.1:9".into(),
        kind: Some(Kind::Push(pb::Push {
            ranges: vec![pb::CatalogRange {
                origin: Some(pb::Origin {
                    node: "127.0.0.1:9".into(),
                    generation: 1,
                }),
                from,
                to,
                reset: false,
                updates: vec![pb::CatalogUpdate {
                    instance_id: "forged-1".into(),
                    seq: 1,
                    record: Some(pb::catalog_update::Record::Instance(instance.clone())),
                }],
            }],
        })),
    };
    let good = push("gradebook", pb::PeerProtocol::V1, 0, 1);
    let cases = [
        (
            "admin",
            good.clone(),
            Code::PermissionDenied,
            "registry nodes",
        ),
        (
            "registry",
            push("other", pb::PeerProtocol::V1, 0, 1),
            Code::FailedPrecondition,
            "cluster",
        ),
        (
            "registry",
            push("gradebook", pb::PeerProtocol::Unspecified, 0, 1),
            Code::FailedPrecondition,
            "protocol",
        ),
        (
            "registry",
            push("gradebook", pb::PeerProtocol::V1, 1, 1),
            Code::InvalidArgument,
            "push.ranges[0]",
        ),
    ];
    for (identity, message, code, names) in cases {
        let status = PeerClient::new(node.channel_as(identity))
            .gossip(message)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{identity}: {status:?}");
        assert!(status.message().contains(names), "{status:?}");
    }
    assert!(
        list(node, "forged").await.is_empty(),
        "nothing reached the catalog"
    );
    // Only the registry's own identity gets through (a compromised
    // registry certificate is a compromised registry).
    PeerClient::new(node.channel_as("registry"))
        .gossip(good)
        .await
        .expect("a registry node's message");
    listed(node, "forged", pb::HealthStatus::Serving).await;
}

#[tokio::test]
async fn when_its_registry_node_dies_an_instance_moves_to_another_and_dependents_never_see_it_go() {
    let mesh = Mesh::new();
    let mut group = mesh.registry_group(3, &[]).await;
    let b_node = registry_node(&group[1]).await;
    // The log service knows every node and registers through the first.
    let data = mesh.dir.path().join("log").display().to_string();
    let log = mesh
        .member_of(
            "log",
            &[&group[0], &group[1], &group[2]],
            vec!["--data-dir".into(), data],
        )
        .await;
    let serving = listed(&group[2], "log", pb::HealthStatus::Serving).await;
    let mut dependent = Watcher::open(&group[2], &["log"]).await;
    let snapshot = dependent.snapshot().await;
    assert_eq!(snapshot.len(), 1);

    group[0].kill9();
    // Within 3 s it is registered through B (the next node): C lists B's
    // record of it.
    let started = std::time::Instant::now();
    let moved = eventually(
        "the instance moves to B",
        std::time::Duration::from_secs(3),
        || async {
            list(&group[2], "log").await.into_iter().find(|i| {
                i.record_version
                    .as_ref()
                    .is_some_and(|v| v.origin == b_node)
            })
        },
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(moved.instance_id, serving.instance_id);
    assert_eq!(
        moved.health,
        pb::HealthStatus::Serving as i32,
        "its health went along"
    );
    let on_b = listed(&group[1], "log", pb::HealthStatus::Serving).await;
    assert_eq!(on_b.instance_id, serving.instance_id);
    // The dependent watching C saw no removal and no health change.
    while let Ok(Some(event)) = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        dependent.stream.message(),
    )
    .await
    .map(Result::ok)
    .map(Option::flatten)
    {
        if let Some(pb::watch_event::Event::Change(change)) = event.event {
            let instance = change.instance.clone().unwrap_or_default();
            assert!(
                change.kind != pb::ChangeKind::Removed as i32
                    && instance.health == pb::HealthStatus::Serving as i32,
                "the dependent saw {change:?}"
            );
        }
    }
    drop(log);
}

#[tokio::test]
async fn the_records_of_a_node_that_died_for_good_go_after_the_grace() {
    let mesh = Mesh::new();
    let mut group = mesh.registry_group(3, &["--peer-dead-after", "2s"]).await;
    let c_node = registry_node(&group[2]).await;
    // A bare server registered through C: nothing will register it again.
    let _server = register_reports_through(&group[2]).await;
    listed(&group[0], "reports", pb::HealthStatus::Serving).await;

    group[2].kill9();
    // A and B find C dead, and forget what only C owned: the instance and
    // C's own record.
    for node in [&group[0], &group[1]] {
        eventually(
            "C's records go",
            std::time::Duration::from_secs(30),
            || async {
                let reports = list(node, "reports").await;
                let registries = list(node, "registry").await;
                (reports.is_empty() && registries.iter().all(|r| r.instance_id != c_node))
                    .then_some(())
            },
        )
        .await;
    }
}

/// The portal's dependency watch fails over with its registration: after
/// kill -9 of the registry node everything used, a grading instance that
/// registers afterwards (through another node) reaches the portal's view,
/// and the portal serves through it once the first grading is gone.
#[tokio::test]
async fn a_watcher_whose_node_dies_resumes_on_another_with_a_fresh_view() {
    let mesh = Mesh::new();
    let mut group = mesh.registry_group(3, &[]).await;
    let nodes = [&group[0], &group[1], &group[2]];
    let data = |name: &str| {
        vec![
            "--data-dir".to_owned(),
            mesh.dir.path().join(name).display().to_string(),
        ]
    };
    let _log = mesh.member_of("log", &nodes, data("log")).await;
    let mut first = mesh.member_of("grading", &nodes, data("grading")).await;
    let portal = mesh.member_of("portal", &nodes, data("portal")).await;
    let token = mesh.add_user(support::TEST_USER, "admin", support::TEST_PASSWORD);
    let http = support::signed_in_builder(&token).build().unwrap();
    let students = format!("http://127.0.0.1:{}/api/students", portal.port);
    let answers = || {
        let (http, url) = (http.clone(), students.clone());
        async move { (http.get(&url).send().await.ok()?.status() == 200).then_some(()) }
    };
    eventually("the portal serves", PATIENCE, answers).await;

    group[0].kill9();
    // A second grading instance (same database), given every node,
    // registers through B (A is dead).
    let nodes = [&group[0], &group[1], &group[2]];
    let _second = mesh.member_of("grading", &nodes, data("grading")).await;
    first.kill9();
    // Only the second can answer now: the portal must have learnt of it
    // from its watch, resumed on a node that is alive.
    eventually(
        "the portal serves through the second grading",
        PATIENCE,
        answers,
    )
    .await;
}

#[tokio::test]
async fn a_restarted_node_catches_up_by_anti_entropy() {
    let mesh = Mesh::new();
    let mut group = mesh.registry_group(3, &[]).await;
    let _server = register_reports_through(&group[0]).await;
    listed(&group[2], "reports", pb::HealthStatus::Serving).await;
    // C restarts with nothing: nobody pushes it the old registration, so
    // only anti-entropy can bring it.
    group[2].restart();
    group[2].wait_serving().await;
    let caught_up = listed(&group[2], "reports", pb::HealthStatus::Serving).await;
    assert_eq!(caught_up.instance_id, "reports-1");
}

#[tokio::test]
async fn a_node_says_it_is_catching_up_until_a_peer_answers_then_sends_a_fresh_snapshot() {
    let mesh = Mesh::new();
    let (early, late) = (free_port(), free_port());
    let peers = format!("127.0.0.1:{early},127.0.0.1:{late}");
    // The early node starts alone: its peer is not up, so it cannot have
    // caught up with the group, and says so.
    let early_node = mesh.registry_peer(early, &peers, &[]);
    early_node.wait_serving().await;
    assert_eq!(
        catching_up(&early_node).await,
        Some(true),
        "a node that has met no peer is catching up"
    );
    let mut watcher = Watcher::open(&early_node, &[]).await;
    match watcher.next(PATIENCE).await {
        pb::watch_event::Event::Snapshot(snapshot) => assert!(snapshot.catching_up),
        other => panic!("the stream starts with a snapshot, not {other:?}"),
    }
    // Its peer comes up: one exchange, and the early node has caught up.
    let late_node = mesh.registry_peer(late, &peers, &[]);
    late_node.wait_serving().await;
    // Changes may come first (the late node registering itself); each
    // wait is bounded by `next`'s patience.
    let fresh = loop {
        match watcher.next(PATIENCE).await {
            pb::watch_event::Event::Snapshot(snapshot) => break snapshot,
            pb::watch_event::Event::Change(_) | pb::watch_event::Event::Policy(_) => continue,
        }
    };
    assert!(!fresh.catching_up, "{fresh:?}");
    assert_eq!(catching_up(&early_node).await, Some(false));
    // A node alone by configuration never catches up with anyone.
    let alone = mesh.registry(&[]).await;
    assert_eq!(
        catching_up(&alone).await,
        Some(false),
        "a node without peers is never catching up"
    );
}
