//! Faults under load, with real processes: three grading instances on a
//! throwaway PostgreSQL, two log instances, a registry and a portal, and
//! eight clients sending a steady mix of reads and writes through the
//! portal. Each fault must cost no user request (every answer 2xx) and no
//! acknowledged write (each stored exactly once). The tests take turns:
//! each starts its own cluster, and two clusters at once would not fit on
//! two shared cores.

mod support;

use std::time::{Duration, Instant};

use gradebook::mesh::api::{LogApi, RegistryApi};
use gradebook::model::log::LogFilter;
use nix::sys::signal::Signal;
use support::load::{Load, Report};
use support::{Daemon, Mesh, PATIENCE, TEST_PASSWORD, TEST_USER, eventually, postgres};

/// Clients sending load.
const CLIENTS: usize = 8;
/// One request in this many is a write.
const WRITE_EVERY: u64 = 4;
/// Requests answered before a fault, during it, and after it.
const BEFORE: u64 = 150;
const AFTER: u64 = 150;

/// One cluster at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The daemons, then the directory their logs are in (dropped last, so a
/// failing test can still print the daemons' logs).
struct Cluster {
    database: String,
    registry: Daemon,
    logs: Vec<Daemon>,
    gradings: Vec<Daemon>,
    portal: Daemon,
    /// A teacher's API token for the portal.
    token: String,
    mesh: Mesh,
}

impl Cluster {
    /// Starts the cluster; `None` when PostgreSQL is not installed (outside CI).
    async fn start() -> Option<Cluster> {
        let server = postgres::server()?;
        let database = server.database().await;
        let mesh = Mesh::new();
        let registry = mesh.registry(&[]).await;
        let mut logs = Vec::new();
        for i in 1..=2 {
            logs.push(mesh.log(&registry, &format!("log-{i}"), &[]).await);
        }
        let portal = mesh.portal(&registry, &[]).await;
        let token = mesh.add_user(TEST_USER, "teacher", TEST_PASSWORD);
        let mut cluster = Cluster {
            portal,
            token,
            mesh,
            database,
            registry,
            logs,
            gradings: Vec::new(),
        };
        for _ in 0..3 {
            cluster.add_grading().await;
        }
        cluster.wait_healthy("grading", 3).await;
        cluster.wait_healthy("log", 2).await;
        Some(cluster)
    }

    /// Starts one more grading instance on the shared database.
    async fn add_grading(&mut self) -> &Daemon {
        let name = format!("grading-{}", self.gradings.len() + 1);
        let args = ["--database-url", self.database.as_str()];
        let daemon = self.mesh.grading(&self.registry, &name, &args).await;
        self.gradings.push(daemon);
        self.gradings.last().expect("just added")
    }

    fn http(&self) -> String {
        self.portal.url()
    }

    fn registry_api(&self) -> RegistryApi {
        RegistryApi::connect(&self.registry.url(), &self.registry.tls()).expect("registry URL")
    }

    /// Waits until the registry lists `count` healthy instances of `service`.
    async fn wait_healthy(&self, service: &str, count: usize) {
        let registry = self.registry_api();
        eventually(
            &format!("{count} healthy {service} instances"),
            PATIENCE,
            || async {
                let healthy = registry.list(Some(service), false).await.ok()?;
                (healthy.len() == count).then_some(())
            },
        )
        .await;
    }

    /// The demo students' ids.
    async fn students(&self) -> Vec<String> {
        let url = format!("{}/api/students", self.http());
        let http = support::signed_in_builder(&self.token)
            .build()
            .expect("an HTTP client");
        eventually("the portal lists the students", PATIENCE, || {
            let url = url.clone();
            let http = http.clone();
            async move {
                let page: serde_json::Value =
                    http.get(&url).send().await.ok()?.json().await.ok()?;
                let ids: Vec<String> = page["students"]
                    .as_array()?
                    .iter()
                    .filter_map(|s| s["id"].as_str().map(str::to_owned))
                    .collect();
                (!ids.is_empty()).then_some(ids)
            }
        })
        .await
    }

    async fn load(&self) -> Load {
        Load::start(
            &self.http(),
            &self.token,
            self.students().await,
            CLIENTS,
            WRITE_EVERY,
        )
    }
}

/// Asserts the report's promises: no failed request, every acknowledged write once.
async fn assert_nothing_lost(cluster: &Cluster, report: &Report, fault: &str) {
    report.assert_none_failed(&format!("during {fault}"));
    assert!(!report.acknowledged.is_empty(), "{fault}: writes were made");
    report.check_writes(&cluster.http(), &cluster.token).await;
    println!(
        "{fault}: {} requests, 0 failed, {} writes acknowledged and stored once",
        report.answers.len(),
        report.acknowledged.len()
    );
}

#[tokio::test]
async fn kill_9_of_a_grading_instance_fails_no_request_and_loses_no_write() {
    let _turn = TURN.lock().await;
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let load = cluster.load().await;
    load.run_for(BEFORE).await;
    cluster.gradings[0].kill9();
    cluster.wait_healthy("grading", 2).await;
    load.run_for(AFTER).await;
    let report = load.stop().await;
    assert_nothing_lost(&cluster, &report, "kill -9 of grading").await;
}

#[tokio::test]
async fn a_sigstopped_grading_instance_fails_no_request() {
    let _turn = TURN.lock().await;
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let load = cluster.load().await;
    load.run_for(BEFORE).await;
    let from = Instant::now();
    cluster.gradings[1].signal(Signal::SIGSTOP);
    // The fault lasts five seconds of real time; the load runs meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.gradings[1].signal(Signal::SIGCONT);
    let to = Instant::now();
    cluster.wait_healthy("grading", 3).await;
    load.run_for(AFTER).await;
    let report = load.stop().await;
    println!(
        "SIGSTOP of grading for 5 s: p99 during the fault {:?}",
        report.p99_between(from, to)
    );
    assert_nothing_lost(&cluster, &report, "SIGSTOP of grading").await;
}

#[tokio::test]
async fn a_sigstopped_registry_fails_no_request() {
    let _turn = TURN.lock().await;
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let load = cluster.load().await;
    load.run_for(BEFORE).await;
    cluster.registry.signal(Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = load.done();
    cluster.registry.signal(Signal::SIGCONT);
    load.run_for(AFTER).await;
    let report = load.stop().await;
    assert!(
        during > BEFORE,
        "requests were answered while the registry was stopped"
    );
    assert_nothing_lost(&cluster, &report, "SIGSTOP of the registry").await;
}

#[tokio::test]
async fn a_flapping_grading_instance_stalls_nothing() {
    let _turn = TURN.lock().await;
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let load = cluster.load().await;
    load.run_for(BEFORE).await;
    for round in 0..4 {
        let flapper = cluster.add_grading().await;
        let port = flapper.port;
        cluster.wait_healthy("grading", 4).await;
        load.run_for(40).await;
        let mut flapper = cluster.gradings.pop().expect("the flapper");
        assert_eq!(flapper.port, port);
        if round % 2 == 0 {
            let status = flapper.terminate(PATIENCE).await;
            assert!(status.success(), "graceful stop: {status:?}");
        } else {
            flapper.kill9();
        }
        cluster.wait_healthy("grading", 3).await;
        load.run_for(40).await;
    }
    load.run_for(AFTER).await;
    let report = load.stop().await;
    assert_nothing_lost(&cluster, &report, "a flapping grading instance").await;
}

#[tokio::test]
async fn kill_9_of_a_log_instance_loses_nothing_and_the_other_takes_the_records() {
    let _turn = TURN.lock().await;
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let load = cluster.load().await;
    load.run_for(BEFORE).await;
    let killed_at = std::time::SystemTime::now();
    cluster.logs[0].kill9();
    cluster.wait_healthy("log", 1).await;
    load.run_for(AFTER).await;
    let report = load.stop().await;
    assert_nothing_lost(&cluster, &report, "kill -9 of a log instance").await;
    // The registry's record of the kill was shipped while one log instance
    // was dead: it is on the other.
    let survivor = cluster
        .registry_api()
        .list(Some("log"), false)
        .await
        .unwrap();
    let logs = LogApi::at_instances(&survivor, Duration::from_secs(2), &cluster.registry.tls());
    let filter = LogFilter {
        service: Some("registry".into()),
        since: Some(killed_at),
        contains: Some("catalog changed".into()),
        ..LogFilter::default()
    };
    eventually(
        "the registry's records from the outage reach the surviving log instance",
        PATIENCE,
        || async {
            let page = logs.query(&filter, 100).await.ok()?;
            (!page.records.is_empty()).then_some(())
        },
    )
    .await;
}
