//! The log service, tested as a real process: write, query, tail,
//! persistence across restarts (graceful and kill -9), bad input, and the
//! SDK shipping daemons' own records to it.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gradebook::pb::log::v1 as pb;
use support::{Mesh, PATIENCE, eventually, log_client, log_client_as};
use tonic::Code;

fn record(service: &str, level: pb::Level, message: &str, trace: &str) -> pb::LogRecord {
    pb::LogRecord {
        timestamp: None,
        service: service.into(),
        instance: format!("{service}-1"),
        level: level as i32,
        message: message.into(),
        fields: [("student".to_string(), "42".to_string())].into(),
        trace_id: trace.into(),
        span_id: String::new(),
        sequence: 0,
    }
}

async fn write(
    log: &support::Daemon,
    batches: Vec<Vec<pb::LogRecord>>,
) -> Result<u64, tonic::Status> {
    // A writer writes only its own service's records: the first record names it.
    let writer = batches
        .first()
        .and_then(|batch| batch.first())
        .map(|record| record.service.clone())
        .unwrap_or_else(|| "grading".to_owned());
    let requests: Vec<pb::WriteRequest> = batches
        .into_iter()
        .map(|records| pb::WriteRequest {
            records,
            ..Default::default()
        })
        .collect();
    log_client_as(log, &writer)
        .write(futures::stream::iter(requests))
        .await
        .map(|r| r.into_inner().accepted)
}

async fn query(
    log: &support::Daemon,
    filter: pb::Filter,
    page_size: u32,
    token: &str,
) -> pb::QueryResponse {
    log_client(log)
        .query(pb::QueryRequest {
            filter: Some(filter),
            page_size,
            page_token: token.into(),
        })
        .await
        .expect("query")
        .into_inner()
}

fn by_service(service: &str) -> pb::Filter {
    pb::Filter {
        service: service.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn write_then_query_with_filters_and_paging() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;
    let accepted = write(
        &log,
        vec![vec![
            record("grading", pb::Level::Info, "grade added", "t-1"),
            record("grading", pb::Level::Error, "database locked", "t-2"),
        ]],
    )
    .await
    .unwrap();
    assert_eq!(accepted, 2);
    // Each service writes its own records.
    let accepted = write(
        &log,
        vec![vec![record(
            "portal",
            pb::Level::Warn,
            "slow request",
            "t-1",
        )]],
    )
    .await
    .unwrap();
    assert_eq!(accepted, 1);
    let accepted = write(
        &log,
        vec![vec![record("grading", pb::Level::Debug, "cache miss", "")]],
    )
    .await
    .unwrap();
    assert_eq!(accepted, 1);

    let all = query(&log, by_service("grading"), 10, "").await;
    let messages: Vec<_> = all.records.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(
        messages,
        ["cache miss", "database locked", "grade added"],
        "newest first"
    );
    assert!(
        all.records
            .windows(2)
            .all(|w| w[0].sequence > w[1].sequence)
    );
    assert!(
        all.records.iter().all(|r| r.timestamp.is_some()),
        "the service stamps missing timestamps"
    );

    let errors = query(
        &log,
        pb::Filter {
            min_level: pb::Level::Warn as i32,
            ..Default::default()
        },
        10,
        "",
    )
    .await;
    let messages: Vec<_> = errors.records.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(messages, ["slow request", "database locked"]);

    let traced = query(
        &log,
        pb::Filter {
            trace_id: "t-1".into(),
            ..Default::default()
        },
        10,
        "",
    )
    .await;
    assert_eq!(traced.records.len(), 2);
    let text = query(
        &log,
        pb::Filter {
            contains: "LOCKED".into(),
            ..Default::default()
        },
        10,
        "",
    )
    .await;
    assert_eq!(text.records.len(), 1);
    assert_eq!(text.records[0].fields["student"], "42");

    let future = SystemTime::now() + Duration::from_secs(3600);
    let since_future = query(
        &log,
        pb::Filter {
            since: Some(prost_types::Timestamp {
                seconds: future.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64,
                nanos: 0,
            }),
            ..Default::default()
        },
        10,
        "",
    )
    .await;
    assert!(since_future.records.is_empty());

    // Paging: 2 + 1, no overlap, then no token.
    let first = query(&log, by_service("grading"), 2, "").await;
    assert_eq!(first.records.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = query(&log, by_service("grading"), 2, &first.next_page_token).await;
    assert_eq!(second.records.len(), 1);
    assert_eq!(second.records[0].message, "grade added");
    assert!(second.next_page_token.is_empty());
}

#[tokio::test]
async fn tail_streams_new_matching_records() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;
    write(
        &log,
        vec![vec![record("grading", pb::Level::Info, "old", "")]],
    )
    .await
    .unwrap();
    let mut tail = log_client(&log)
        .tail(pb::TailRequest {
            filter: Some(by_service("grading")),
            backlog: 5,
        })
        .await
        .unwrap()
        .into_inner();
    let backlog = tokio::time::timeout(PATIENCE, tail.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(backlog.message, "old");
    write(
        &log,
        vec![vec![record(
            "portal",
            pb::Level::Info,
            "not for this tail",
            "",
        )]],
    )
    .await
    .unwrap();
    write(
        &log,
        vec![vec![record("grading", pb::Level::Info, "new", "")]],
    )
    .await
    .unwrap();
    let live = tokio::time::timeout(PATIENCE, tail.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(live.message, "new");
}

#[tokio::test]
async fn acknowledged_records_survive_restart_and_kill_9() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let mut log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;
    let batch: Vec<_> = (0..100)
        .map(|i| record("grading", pb::Level::Info, &format!("record {i}"), ""))
        .collect();
    assert_eq!(write(&log, vec![batch]).await.unwrap(), 100);

    // Graceful restart.
    assert!(log.terminate(PATIENCE).await.success());
    let mut log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;
    assert_eq!(
        query(&log, by_service("grading"), 1000, "")
            .await
            .records
            .len(),
        100
    );

    // kill -9 right after the acknowledgement.
    assert_eq!(
        write(
            &log,
            vec![vec![record("grading", pb::Level::Info, "last words", "")]]
        )
        .await
        .unwrap(),
        1
    );
    log.kill9();
    let log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;
    let stored = query(&log, by_service("grading"), 1000, "").await.records;
    assert_eq!(stored.len(), 101);
    assert_eq!(stored[0].message, "last words");
    let sequences: std::collections::BTreeSet<_> = stored.iter().map(|r| r.sequence).collect();
    assert_eq!(
        sequences.len(),
        101,
        "sequences stay unique across restarts"
    );
}

#[tokio::test]
async fn bad_input_is_rejected_whole_with_a_precise_status() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &["--ship-logs", "false"]).await;

    let status = write(
        &log,
        vec![vec![
            record("grading", pb::Level::Info, "fine", ""),
            record("", pb::Level::Info, "no service", ""),
        ]],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("records[1].service"),
        "{}",
        status.message()
    );

    let status = write(
        &log,
        vec![vec![record(
            "grading",
            pb::Level::Unspecified,
            "no level",
            "",
        )]],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("records[0].level"),
        "{}",
        status.message()
    );

    let status = write(
        &log,
        vec![vec![record(
            "grading",
            pb::Level::Info,
            &"x".repeat(20_000),
            "",
        )]],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("records[0].message"),
        "{}",
        status.message()
    );

    // Over the transport's message limit.
    let status = write(
        &log,
        vec![vec![record(
            "grading",
            pb::Level::Info,
            &"x".repeat(5 << 20),
            "",
        )]],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let status = log_client(&log)
        .query(pb::QueryRequest {
            filter: None,
            page_size: 5000,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_size"),
        "{}",
        status.message()
    );
    let status = log_client(&log)
        .query(pb::QueryRequest {
            filter: None,
            page_size: 10,
            page_token: "garbage".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("page_token"),
        "{}",
        status.message()
    );

    // Nothing of the rejected batches was stored.
    assert!(
        query(&log, by_service("grading"), 100, "")
            .await
            .records
            .is_empty()
    );
}

#[tokio::test]
async fn daemons_ship_their_own_records_to_the_log_service() {
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let log = mesh.log(&registry, "log", &[]).await;
    // The registry logs every catalog change, and finds the log service
    // through its own catalog.
    let shipped = eventually("registry records in the log service", PATIENCE, || async {
        let records = query(&log, by_service("registry"), 100, "").await.records;
        records
            .into_iter()
            .find(|r| r.message.contains("catalog changed"))
    })
    .await;
    assert_eq!(shipped.level, pb::Level::Info as i32);
    assert!(
        ["ADDED", "HEALTH_CHANGED", "UPDATED", "REMOVED"]
            .contains(&shipped.fields["change"].as_str()),
        "structured fields are kept: {:?}",
        shipped.fields
    );
    assert_eq!(shipped.fields["target"], "gradebook::registry::core");
    assert!(!shipped.instance.is_empty());
}
