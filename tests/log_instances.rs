//! Several log instances: writes balanced over them and retried on another
//! when one dies (no acknowledged record lost), queries and tails fanned
//! out to every instance and merged, and an instance that does not answer
//! named instead of failing the query. Real processes, the SDK's own
//! `LogApi` as the client.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use gradebook::mesh::api::{LogApi, RegistryApi};
use gradebook::model::log::{Level, LogFilter, LogRecord};
use nix::sys::signal::Signal;
use support::{Mesh, PATIENCE, eventually};

/// A registry and two log instances, both listed healthy.
struct TwoLogs {
    log_a: support::Daemon,
    log_b: support::Daemon,
    instances: Vec<gradebook::model::registry::Instance>,
    registry: support::Daemon,
    _mesh: Mesh,
}

impl TwoLogs {
    async fn start() -> TwoLogs {
        let mesh = Mesh::new();
        let registry = mesh.registry(&[]).await;
        let log_a = mesh
            .log(&registry, "log-a", &["--ship-logs", "false"])
            .await;
        let log_b = mesh
            .log(&registry, "log-b", &["--ship-logs", "false"])
            .await;
        let registry_api = RegistryApi::connect(
            &registry.url(),
            &support::tls_as(&registry.certs, "loadgen"),
        )
        .unwrap();
        let instances = eventually("both log instances are healthy", PATIENCE, || async {
            let listed = registry_api.list(Some("log"), false).await.ok()?;
            (listed.len() == 2).then_some(listed)
        })
        .await;
        TwoLogs {
            log_a,
            log_b,
            instances,
            registry,
            _mesh: mesh,
        }
    }
}

fn record(n: usize) -> LogRecord {
    LogRecord {
        timestamp: SystemTime::now(),
        service: "loadgen".into(),
        instance: "loadgen-1".into(),
        level: Level::Info,
        message: format!("record {n}"),
        fields: Default::default(),
        trace_id: None,
        span_id: None,
        sequence: 0,
    }
}

fn only_loadgen() -> LogFilter {
    LogFilter {
        service: Some("loadgen".into()),
        ..LogFilter::default()
    }
}

/// Every record of the log, paging through the merged view.
async fn everything(logs: &LogApi) -> (Vec<LogRecord>, usize) {
    let mut all = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = logs
            .query_page(&only_loadgen(), 7, &token)
            .await
            .expect("query");
        assert!(page.unanswered.is_empty(), "{:?}", page.unanswered);
        pages += 1;
        all.extend(page.records);
        if page.next_page_token.is_empty() {
            return (all, pages);
        }
        token = page.next_page_token;
    }
}

#[tokio::test]
async fn writes_survive_the_kill_of_a_log_instance_and_queries_merge_every_instance() {
    let TwoLogs {
        mut log_a,
        log_b,
        instances,
        registry,
        _mesh,
    } = TwoLogs::start().await;
    let logs = LogApi::at_instances(
        &instances,
        Duration::from_secs(2),
        &support::tls_as(&registry.certs, "loadgen"),
    );

    // Writes, one record a batch; instance A is killed a third of the way in.
    let mut acknowledged = BTreeSet::new();
    let mut failed = 0;
    for n in 0..300 {
        if n == 100 {
            log_a.kill9();
        }
        match logs.write(&vec![record(n)].into()).await {
            Ok(()) => {
                acknowledged.insert(format!("record {n}"));
            }
            Err(error) => {
                eprintln!("write {n} failed: {error}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 0, "every write lands on an instance that is alive");

    // A comes back with its data; the merged log has every acknowledged record.
    log_a.restart();
    log_a.wait_serving().await;
    let (all, pages) = everything(&logs).await;
    let found: BTreeSet<String> = all.iter().map(|r| r.message.clone()).collect();
    let lost: Vec<&String> = acknowledged.difference(&found).collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    assert!(pages >= 300 / 7, "paged in pages of 7: {pages}");
    let from_b: Vec<LogRecord> = LogApi::at_instances(
        &instances
            .iter()
            .filter(|i| i.address == log_b.address())
            .cloned()
            .collect::<Vec<_>>(),
        Duration::from_secs(2),
        &support::tls_as(&registry.certs, "loadgen"),
    )
    .query(&only_loadgen(), 1000)
    .await
    .unwrap()
    .records;
    let on_b: BTreeSet<String> = from_b.into_iter().map(|r| r.message).collect();
    for n in 100..300 {
        assert!(
            on_b.contains(&format!("record {n}")),
            "record {n}, written while A was dead, is on B"
        );
    }
    // Newest first across instances (A and B interleave by time).
    assert!(
        all.windows(2).all(|w| w[0].timestamp >= w[1].timestamp),
        "merged newest first"
    );
}

#[tokio::test]
async fn a_log_instance_that_does_not_answer_is_named_and_tails_follow_every_instance() {
    let TwoLogs {
        log_a,
        log_b: _log_b,
        instances,
        registry,
        _mesh,
    } = TwoLogs::start().await;
    let logs = LogApi::at_instances(
        &instances,
        Duration::from_millis(500),
        &support::tls_as(&registry.certs, "loadgen"),
    );
    let mut tail = logs.tail(&only_loadgen(), 0).await.expect("tail both");
    for n in 0..20 {
        logs.write(&vec![record(n)].into()).await.expect("write");
    }
    let mut followed = BTreeSet::new();
    while followed.len() < 20 {
        let next = tokio::time::timeout(PATIENCE, tail.next())
            .await
            .expect("a tailed record in time")
            .expect("the tail goes on")
            .expect("a record");
        followed.insert(next.message);
    }

    log_a.signal(Signal::SIGSTOP);
    let a_id = instances
        .iter()
        .find(|i| i.address == log_a.address())
        .map(|i| i.instance_id.clone())
        .unwrap();
    // The stop takes effect asynchronously: poll until a query names A.
    let page = eventually("a query names the stopped instance", PATIENCE, || async {
        let page = logs.query(&only_loadgen(), 100).await.expect("B answers");
        (page.unanswered == [a_id.clone()]).then_some(page)
    })
    .await;
    assert!(!page.records.is_empty(), "B's records are there");
    log_a.signal(Signal::SIGCONT);
    let page = logs.query(&only_loadgen(), 100).await.expect("both answer");
    assert!(page.unanswered.is_empty());
    assert_eq!(page.records.len(), 20);
}
