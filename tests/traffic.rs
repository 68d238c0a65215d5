//! Traffic policies with real processes: set with the real `gradebook
//! route` through one registry node, refused with a clear message when
//! wrong, streamed to watchers through every node, kept by the group when
//! the node it was set through restarts; and honoured by real callers (the
//! portal's calls to two grading instances of different versions).

mod support;

use std::process::{Command, Output};

use gradebook::pb::registry::v1 as pb;
use support::{
    Daemon, HealthServer, Mesh, PATIENCE, TEST_PASSWORD, TEST_USER, Watcher, binary, curl_metrics,
    eventually, list, registry_client_as, sample, signed_in_builder,
};

/// Runs `gradebook route ARGS` against `registry`, as the operators.
fn route(registry: &Daemon, args: &[&str]) -> Output {
    Command::new(binary())
        .arg("route")
        .args(args)
        .arg("--registry")
        .arg(registry.url())
        .env("GRADEBOOK_CERTS", &registry.certs)
        .output()
        .expect("run gradebook route")
}

/// `gradebook route` succeeded; its standard output.
fn routed(registry: &Daemon, args: &[&str]) -> String {
    let output = route(registry, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "route {args:?}: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `gradebook route` failed; its standard error.
fn refused(registry: &Daemon, args: &[&str]) -> String {
    let output = route(registry, args);
    assert!(!output.status.success(), "route {args:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The policies a node lists for `service`, as `gradebook route` shows them.
async fn policies(registry: &Daemon, service: &str) -> Vec<pb::TrafficPolicy> {
    registry_client_as(registry, "admin")
        .list_traffic_policies(pb::ListTrafficPoliciesRequest {
            service: service.into(),
        })
        .await
        .expect("list policies")
        .into_inner()
        .policies
}

/// Registers a bare health server as `id` of "reports" running `version`.
async fn register_report(registry: &Daemon, id: &str, version: &str) -> HealthServer {
    let server = HealthServer::start(&registry.certs, "reports").await;
    registry_client_as(registry, "reports")
        .register(pb::RegisterRequest {
            service: "reports".into(),
            instance_id: id.into(),
            address: server.address.clone(),
            version: version.into(),
            ..Default::default()
        })
        .await
        .expect("register");
    server
}

/// Reads watch events until a policy event comes; returns it.
async fn next_policy(watcher: &mut Watcher) -> pb::TrafficPolicy {
    loop {
        if let pb::watch_event::Event::Policy(policy) = watcher.next(PATIENCE).await {
            return policy;
        }
    }
}

#[tokio::test]
async fn a_policy_set_through_one_node_reaches_every_node_and_outlives_its_restart() {
    let mesh = Mesh::new();
    let mut group = mesh.registry_group(3, &["--peer-dead-after", "2s"]).await;
    let _old = register_report(&group[1], "reports-1", "1.0.0").await;
    let _new = register_report(&group[1], "reports-2", "2.0.0").await;
    eventually("both instances are known to node A", PATIENCE, || async {
        (list(&group[0], "reports").await.len() == 2).then_some(())
    })
    .await;
    let mut watcher = Watcher::open(&group[2], &["reports"]).await;
    let snapshot = watcher.next(PATIENCE).await;
    assert!(
        matches!(&snapshot, pb::watch_event::Event::Snapshot(s) if s.policies.is_empty()),
        "{snapshot:?}"
    );

    let shown = routed(
        &group[0],
        &["reports", "--weight", "2.0.0=10", "--weight", "1.0.0=90"],
    );
    assert!(shown.contains("1.0.0=90, 2.0.0=10"), "{shown}");
    assert!(shown.contains("2.0.0 ("), "the versions run: {shown}");
    // Watchers of another node are told.
    let told = next_policy(&mut watcher).await;
    let Some(pb::traffic_policy::Rule::Weights(weights)) = told.rule else {
        panic!("a weighted policy: {told:?}");
    };
    let pairs: Vec<(String, u32)> = weights
        .weights
        .into_iter()
        .map(|w| (w.version, w.weight))
        .collect();
    assert_eq!(pairs, [("1.0.0".into(), 90), ("2.0.0".into(), 10)]);

    // Wrong policies are refused before anything changes, each saying why.
    let sum = refused(
        &group[0],
        &["reports", "--weight", "2.0.0=10", "--weight", "1.0.0=80"],
    );
    assert!(sum.contains("the weights add up to 90, not 100"), "{sum}");
    let unknown = refused(&group[0], &["reports", "--only", "3.0.0"]);
    assert!(
        unknown.contains(
            r#"version "3.0.0": no instance of "reports" runs it (running: 1.0.0, 2.0.0)"#
        ),
        "{unknown}"
    );
    let syntax = refused(&group[0], &["reports", "--weight", "2.0.0"]);
    assert!(syntax.contains("expected VERSION=WEIGHT"), "{syntax}");
    let both = refused(&group[0], &["reports", "--clear", "--only", "2.0.0"]);
    assert!(both.contains("cannot be used with"), "{both}");
    let denied = registry_client_as(&group[0], "reports")
        .set_traffic_policy(pb::SetTrafficPolicyRequest {
            policy: Some(pb::TrafficPolicy {
                service: "reports".into(),
                rule: Some(pb::traffic_policy::Rule::Only("2.0.0".into())),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("admin"), "{denied:?}");
    for node in &group {
        eventually("every node holds the weights", PATIENCE, || async {
            let held = policies(node, "reports").await;
            (held.len() == 1 && matches!(held[0].rule, Some(pb::traffic_policy::Rule::Weights(_))))
                .then_some(())
        })
        .await;
    }

    // The node it was set through dies, long enough for the others to
    // forget every record it wrote; then it starts again, a new life that
    // remembers nothing: it learns the policy from the others' own records.
    let a_node = support::registry_node(&group[0]).await;
    group[0].kill9();
    for node in [&group[1], &group[2]] {
        eventually(
            "A's records go",
            std::time::Duration::from_secs(30),
            || async {
                let registries = list(node, "registry").await;
                registries
                    .iter()
                    .all(|r| r.instance_id != a_node)
                    .then_some(())
            },
        )
        .await;
    }
    group[0].restart();
    group[0].wait_serving().await;
    eventually("the restarted node holds the policy", PATIENCE, || async {
        (policies(&group[0], "reports").await.len() == 1).then_some(())
    })
    .await;

    // Cleared through another node: watchers are told, no node lists it.
    let shown = routed(&group[2], &["reports", "--clear"]);
    assert!(shown.contains("every healthy instance"), "{shown}");
    let cleared = next_policy(&mut watcher).await;
    assert_eq!(cleared.rule, None, "{cleared:?}");
    for node in &group {
        eventually("no node lists a policy", PATIENCE, || async {
            policies(node, "reports").await.is_empty().then_some(())
        })
        .await;
    }
}

/// How many students each grading instance has created, from its metrics.
fn created(gradings: &[&Daemon]) -> Vec<u64> {
    gradings
        .iter()
        .map(|grading| {
            let (status, body) = curl_metrics(&grading.certs, grading.port, Some("admin"));
            assert_eq!(status, 200, "{body}");
            sample(
                &body,
                r#"grading_store_seconds_count{operation="create_student"}"#,
            )
            .unwrap_or(0.0) as u64
        })
        .collect()
}

/// Creates `n` students through the portal; every request must succeed.
async fn create_students(client: &reqwest::Client, portal: &Daemon, n: usize) {
    let url = format!("http://127.0.0.1:{}/api/students", portal.port);
    for i in 0..n {
        let response = client
            .post(&url)
            .json(&serde_json::json!({"first_name": "Route", "last_name": format!("Test {i}")}))
            .send()
            .await
            .expect("the portal answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    }
}

/// Sets the policy and waits until the portal follows it: writes keep
/// going (each must succeed) until `settled` holds of the counts of what
/// the last `window` writes did on each instance.
async fn until_followed(
    client: &reqwest::Client,
    portal: &Daemon,
    gradings: &[&Daemon],
    window: usize,
    settled: impl Fn(&[u64]) -> bool,
) {
    eventually("the portal follows the policy", PATIENCE, || async {
        let before = created(gradings);
        create_students(client, portal, window).await;
        let after = created(gradings);
        let done: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        settled(&done).then_some(())
    })
    .await;
}

#[tokio::test]
async fn callers_send_by_the_policy_and_fall_back_when_its_version_is_gone() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let old = mesh
        .grading(&registry, "grading-old", &["--report-version", "1.0.0"])
        .await;
    let mut new = mesh
        .grading(&registry, "grading-new", &["--report-version", "2.0.0"])
        .await;
    let portal = mesh.portal(&registry, &[]).await;
    let token = mesh.add_user(TEST_USER, "teacher", TEST_PASSWORD);
    let client = signed_in_builder(&token).build().expect("a client");
    let gradings = [&old, &new];
    eventually("both versions serve", PATIENCE, || async {
        let serving = list(&registry, "grading").await;
        (serving.len() == 2).then_some(())
    })
    .await;
    // The default: both versions serve.
    until_followed(&client, &portal, &gradings, 40, |done| {
        done.iter().all(|n| *n > 0)
    })
    .await;

    // Blue-green: only the new version.
    routed(&registry, &["grading", "--only", "2.0.0"]);
    until_followed(&client, &portal, &gradings, 5, |done| done[0] == 0).await;
    let before = created(&gradings);
    create_students(&client, &portal, 100).await;
    let after = created(&gradings);
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (0, 100),
        "every write to the new version"
    );

    // A canary split: both versions get some of 200.
    routed(
        &registry,
        &["grading", "--weight", "1.0.0=50", "--weight", "2.0.0=50"],
    );
    until_followed(&client, &portal, &gradings, 200, |done| {
        done.iter().all(|n| *n > 0)
    })
    .await;

    // Back to the new version only, then it leaves (drained, deregistered):
    // the old one serves every request, none fails.
    routed(&registry, &["grading", "--only", "2.0.0"]);
    until_followed(&client, &portal, &gradings, 5, |done| done[0] == 0).await;
    let status = new.terminate(PATIENCE).await;
    assert!(status.success(), "drained and exited 0: {status:?}");
    let before = created(&[&old]);
    create_students(&client, &portal, 50).await;
    assert_eq!(
        created(&[&old])[0] - before[0],
        50,
        "the fallback served all"
    );
    let shown = routed(&registry, &[]);
    assert!(shown.contains("only 2.0.0"), "{shown}");
}
