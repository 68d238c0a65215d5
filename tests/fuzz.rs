//! Fuzzing every decoder of untrusted input, on stable Rust, with proptest:
//! structured inputs (the request types with arbitrary field values, the
//! gateway's requests with arbitrary methods, paths, query strings and
//! bodies) and raw random bytes. Every target asserts that nothing panics
//! and that each input is answered with a result or a precise error.
//!
//! `cargo test` runs a short round of each target (`GRADEBOOK_FUZZ_CASES`,
//! default 200 cases); the campaign in the README runs them in release mode
//! with millions of cases: `GRADEBOOK_FUZZ_CASES=... cargo test --release
//! --test fuzz -- --nocapture`. A crash found becomes a regression test in
//! the file it belongs to.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gradebook::grading::service::GradingService;
use gradebook::mesh::{Mesh, MeshConfig, Shutdown};
use gradebook::model::log::{LogFilter, LogRecord};
use gradebook::model::registry::Registration;
use gradebook::pb::grading::v1 as grading_pb;
use gradebook::pb::grading::v1::grading_server::Grading;
use gradebook::pb::log::v1 as log_pb;
use gradebook::pb::registry::v1 as registry_pb;
use gradebook::portal::AppState;
use gradebook::portal::accounts::store::SecretKind;
use gradebook::portal::accounts::{AccountStore, Role};
use gradebook::registry::catalog::Catalog;
use gradebook::registry::health::HealthPolicy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use prost::Message;
use tonic::{Code, Request};
use tower::ServiceExt;

/// Cases per target: a short round by default, the campaign's count when set.
fn cases() -> u32 {
    std::env::var("GRADEBOOK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Text that stresses validation: empty, long, unicode, control characters,
/// and the shapes the services accept.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z][a-z0-9-]{0,20}",
        "[0-9a-f]{32}",
        "[a-z0-9.-]{1,30}:[0-9]{1,6}",
        ".{0,40}",
        "\\PC{0,300}",
        proptest::collection::vec(any::<char>(), 0..80).prop_map(|c| c.into_iter().collect()),
    ]
}

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        -10.0..110.0f64,
        Just(f64::NAN),
        Just(f64::INFINITY)
    ]
}

/// Counts a target's executions for the campaign's report.
fn report(target: &str, executions: u64) {
    eprintln!("fuzz target {target}: {executions} executions, 0 failures");
}

#[test]
fn every_grpc_request_decodes_or_is_refused_precisely() {
    // Raw bytes through every request type's decoder and the domain checks
    // its handler runs first.
    let mut runner = runner();
    let executions = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..512), |bytes| {
            executions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Ok(request) = registry_pb::RegisterRequest::decode(bytes.as_slice()) {
                let _ = Registration::try_from(request);
            }
            let _ = registry_pb::DeregisterRequest::decode(bytes.as_slice());
            let _ = registry_pb::ListRequest::decode(bytes.as_slice());
            let _ = registry_pb::WatchRequest::decode(bytes.as_slice());
            if let Ok(gossip) = registry_pb::GossipMessage::decode(bytes.as_slice()) {
                let _ = gradebook::model::peer::PeerMessage::try_from(gossip);
            }
            if let Ok(write) = log_pb::WriteRequest::decode(bytes.as_slice()) {
                let _ = LogRecord::batch_from_pb(write.records, SystemTime::now());
            }
            if let Ok(query) = log_pb::QueryRequest::decode(bytes.as_slice())
                && let Some(filter) = query.filter
            {
                let _ = LogFilter::try_from(filter);
            }
            let _ = log_pb::TailRequest::decode(bytes.as_slice());
            for decoded in [
                grading_pb::CreateStudentRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::AddGradeRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::ListStudentsRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::GetStudentRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::ListGradesRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::UpdateStudentRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::DeleteStudentRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::UpdateGradeRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::DeleteGradeRequest::decode(bytes.as_slice()).is_ok(),
                grading_pb::WatchGradesRequest::decode(bytes.as_slice()).is_ok(),
            ] {
                let _ = decoded;
            }
            Ok(())
        })
        .unwrap();
    report(
        "grpc-bytes",
        executions.load(std::sync::atomic::Ordering::Relaxed),
    );
}

#[test]
fn maelstrom_nodes_answer_any_line_without_a_panic() {
    // Random lines and structured messages (of every type this node serves,
    // with arbitrary field values) through one initialized node: every
    // output is a well-formed envelope, and the node goes on.
    use gradebook::maelstrom::{MaelstromNode, Output};
    let kinds = prop_oneof![
        Just("init".to_owned()),
        Just("echo".to_owned()),
        Just("generate".to_owned()),
        Just("topology".to_owned()),
        Just("broadcast".to_owned()),
        Just("read".to_owned()),
        Just("gossip".to_owned()),
        "[a-z_]{0,8}".prop_map(|kind: String| kind),
    ];
    let value = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
        proptest::collection::vec(any::<i64>(), 0..4).prop_map(serde_json::Value::from),
    ];
    let message = (kinds, any::<u32>(), value.clone(), value).prop_map(|(kind, id, a, b)| {
        serde_json::json!({
            "src": "c1", "dest": "n0",
            "body": {"type": kind, "msg_id": id, "message": a, "echo": b,
                     "gossip": {"kind": "push", "ranges": a}}
        })
        .to_string()
    });
    let line = prop_oneof![
        message,
        text(),
        proptest::collection::vec(any::<u8>(), 0..256)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ];
    let mut runner = runner();
    let executions = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&proptest::collection::vec(line, 1..8), |lines| {
            executions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut node = MaelstromNode::new(1, 1);
            let init = r#"{"src":"c0","dest":"n0","body":{"type":"init","msg_id":1,"node_id":"n0","node_ids":["n0","n1"]}}"#;
            node.handle_line(init, Duration::ZERO);
            for (i, line) in lines.iter().enumerate() {
                let now = Duration::from_millis(i as u64 * 50);
                let mut out = node.handle_line(line, now);
                out.extend(node.tick(now));
                for item in out {
                    if let Output::Send(envelope) = item {
                        let line = envelope.to_line();
                        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
                        prop_assert!(parsed["body"]["type"].is_string(), "{line}");
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    report(
        "maelstrom-lines",
        executions.load(std::sync::atomic::Ordering::Relaxed),
    );
}

#[test]
fn registrations_go_through_the_catalog_or_are_refused_naming_a_field() {
    let request = (
        text(),
        text(),
        text(),
        text(),
        proptest::collection::btree_map(text(), text(), 0..4),
        proptest::collection::vec(text(), 0..4),
    )
        .prop_map(
            |(service, instance_id, address, version, metadata, requires)| {
                registry_pb::RegisterRequest {
                    service,
                    instance_id,
                    address,
                    version,
                    metadata: metadata.into_iter().collect(),
                    requires,
                }
            },
        );
    let catalog = std::cell::RefCell::new(Catalog::new(
        "fuzz-node".to_owned(),
        HealthPolicy {
            failure_threshold: 2,
            eviction_grace: Duration::from_secs(30),
        },
    ));
    let n = std::cell::Cell::new(0u64);
    runner()
        .run(&request, |request| {
            n.set(n.get() + 1);
            match Registration::try_from(request) {
                Ok(registration) => {
                    let mut catalog = catalog.borrow_mut();
                    let (instance, _) = catalog.register(registration, SystemTime::now(), || {
                        format!("gen-{}", n.get())
                    });
                    let (removed, _) = catalog.deregister(&instance.instance_id, SystemTime::now());
                    prop_assert!(removed);
                }
                Err(invalid) => prop_assert!(invalid.to_string().contains(':'), "{invalid}"),
            }
            Ok(())
        })
        .unwrap();
    report("registry-register", n.get());
}

#[test]
fn log_batches_and_filters_are_stored_or_refused_naming_a_field() {
    let record = (text(), text(), 0i32..8, text(), text(), any::<i64>()).prop_map(
        |(service, instance, level, message, trace_id, seconds)| log_pb::LogRecord {
            timestamp: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            service,
            instance,
            level,
            message,
            fields: Default::default(),
            trace_id,
            span_id: String::new(),
            sequence: 0,
        },
    );
    let filter = (text(), -2i32..8, text(), text(), any::<i64>()).prop_map(
        |(service, min_level, contains, trace_id, seconds)| log_pb::Filter {
            service,
            min_level,
            since: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            until: None,
            contains,
            trace_id,
        },
    );
    let n = std::cell::Cell::new(0u64);
    runner()
        .run(
            &(proptest::collection::vec(record, 0..8), filter),
            |(records, filter)| {
                n.set(n.get() + 1);
                if let Err(invalid) = LogRecord::batch_from_pb(records, SystemTime::now()) {
                    prop_assert!(invalid.to_string().contains("records["), "{invalid}");
                }
                if let Err(invalid) = LogFilter::try_from(filter) {
                    prop_assert!(invalid.to_string().contains("filter."), "{invalid}");
                }
                Ok(())
            },
        )
        .unwrap();
    report("log-write-and-query", n.get());
}

#[test]
fn grading_handlers_answer_every_request_with_a_precise_status() {
    // The real handlers, in process, with the store not open: each request
    // is validated as in production, then answered UNAVAILABLE; a bad one
    // gets INVALID_ARGUMENT first. No other code, and no panic.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = runtime.block_on(async {
        GradingService::new(Arc::new(tokio::sync::OnceCell::new()), Shutdown::new())
    });
    let input = (
        text(),
        text(),
        text(),
        any::<i32>(),
        score(),
        text(),
        any::<u32>(),
    );
    let n = std::cell::Cell::new(0u64);
    runner()
        .run(&input, |(id, first, title, kind, score, token, size)| {
            n.set(n.get() + 1);
            let codes = runtime.block_on(async {
                vec![
                    (service
                        .create_student(Request::new(grading_pb::CreateStudentRequest {
                            first_name: first.clone(),
                            last_name: title.clone(),
                            request_id: token.clone(),
                        }))
                        .await)
                        .err()
                        .map(|status| status.code()),
                    (service
                        .add_grade(Request::new(grading_pb::AddGradeRequest {
                            student_id: id.clone(),
                            title: title.clone(),
                            r#type: kind,
                            score,
                            request_id: token.clone(),
                        }))
                        .await)
                        .err()
                        .map(|status| status.code()),
                    (service
                        .list_students(Request::new(grading_pb::ListStudentsRequest {
                            page_size: size,
                            page_token: token.clone(),
                        }))
                        .await)
                        .err()
                        .map(|status| status.code()),
                    (service
                        .get_student(Request::new(grading_pb::GetStudentRequest {
                            id: id.clone(),
                            grade_page_size: size,
                        }))
                        .await)
                        .err()
                        .map(|status| status.code()),
                    (service
                        .list_grades(Request::new(grading_pb::ListGradesRequest {
                            student_id: id.clone(),
                            page_size: size,
                            page_token: token.clone(),
                        }))
                        .await)
                        .err()
                        .map(|status| status.code()),
                    (service
                        .delete_grade(Request::new(grading_pb::DeleteGradeRequest {
                            student_id: id.clone(),
                            grade_id: first.clone(),
                            request_id: token.clone(),
                        }))
                        .await)
                        .err()
                        .map(|status| status.code()),
                ]
            });
            for code in codes {
                prop_assert!(
                    matches!(code, Some(Code::InvalidArgument | Code::Unavailable)),
                    "{code:?}"
                );
            }
            Ok(())
        })
        .unwrap();
    report("grading-handlers", n.get());
}

#[test]
fn the_json_gateway_answers_every_request_without_a_panic() {
    // The portal's real router, in process, signed in, with no mesh behind
    // it: every request is parsed, checked and answered (4xx for bad input,
    // 503 when it gets as far as calling grading); never 500, never a panic.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (router, token) = runtime.block_on(async {
        let mut config = MeshConfig::new("portal");
        config.registry_url = "http://127.0.0.1:1".into();
        config.ship_logs = false;
        config.requires = vec!["grading".into(), "log".into()];
        let mesh = Mesh::start(config, &Shutdown::new()).unwrap();
        let accounts = AccountStore::open(dir.path()).unwrap();
        accounts
            .add_user("fuzz", Role::Admin, "fuzzing password")
            .unwrap();
        let token = accounts
            .new_secret("fuzz", SecretKind::Token, SystemTime::now())
            .unwrap();
        let state = AppState::new(
            &mesh,
            Duration::from_millis(50),
            false,
            gradebook::portal::ops::DEFAULT_SAMPLE_INTERVAL,
            Arc::new(accounts),
        );
        std::mem::forget(mesh);
        (gradebook::portal::router(state), token)
    });
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PUT"),
        Just("DELETE"),
        Just("PATCH")
    ];
    let path = prop_oneof![
        Just("/api/students".to_owned()),
        Just("/api/students/0123456789abcdef0123456789abcdef".to_owned()),
        Just("/api/students/0123456789abcdef0123456789abcdef/grades".to_owned()),
        Just("/students".to_owned()),
        Just("/logs".to_owned()),
        Just("/login".to_owned()),
        "/[a-z/]{0,30}",
        "/api/students/[^?#]{0,40}",
    ];
    let query = prop_oneof![Just(String::new()), "[a-z_=&%0-9]{0,60}", "\\PC{0,40}"];
    let body = prop_oneof![
        Just(String::new()),
        Just(r#"{"first_name":"A","last_name":"B"}"#.to_owned()),
        Just(r#"{"title":"T","type":"quiz","score":50}"#.to_owned()),
        "\\{\"[a-z_]{1,10}\":\\PC{0,30}\\}",
        "\\PC{0,200}",
    ];
    let content_type = prop_oneof![
        Just("application/json"),
        Just("application/x-www-form-urlencoded"),
        Just("text/plain")
    ];
    let n = std::cell::Cell::new(0u64);
    runner()
        .run(
            &(method, path, query, body, content_type),
            |(method, path, query, body, content_type)| {
                n.set(n.get() + 1);
                let uri = if query.is_empty() {
                    path.clone()
                } else {
                    format!("{path}?{query}")
                };
                let Ok(request) = axum::http::Request::builder()
                    .method(method)
                    .uri(&uri)
                    .header("authorization", format!("Bearer {token}"))
                    .header("content-type", content_type)
                    .body(axum::body::Body::from(body))
                else {
                    // Not a request hyper would hand the portal at all.
                    return Ok(());
                };
                let status = runtime
                    .block_on(router.clone().oneshot(request))
                    .map(|response| response.status())
                    .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                prop_assert!(
                    status != axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "{method} {uri}: {status}"
                );
                Ok(())
            },
        )
        .unwrap();
    report("json-gateway", n.get());
}

#[test]
fn log_segments_recover_from_any_damage() {
    // A valid store, then its newest segment damaged at random (bytes
    // flipped, truncated, garbage appended): opening recovers without a
    // panic and the store takes writes again.
    use gradebook::log::store::{LogStore, Retention};
    let template = tempfile::tempdir().unwrap();
    {
        let mut store = LogStore::open(template.path(), Retention::default()).unwrap();
        let records: Vec<LogRecord> = (0..20)
            .map(|i| LogRecord {
                timestamp: SystemTime::now(),
                service: "fuzz".into(),
                instance: "fuzz-1".into(),
                level: gradebook::model::log::Level::Info,
                message: format!("record {i}"),
                fields: Default::default(),
                trace_id: None,
                span_id: None,
                sequence: 0,
            })
            .collect();
        store.append(vec![records]).unwrap();
    }
    let segment = std::fs::read_dir(template.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let original = std::fs::read(&segment).unwrap();
    let damage = (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    // Fewer cases: each one opens a store on disk.
    let mut runner = TestRunner::new(Config {
        cases: (cases() / 20).max(20),
        failure_persistence: None,
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let n = std::cell::Cell::new(0u64);
    runner
        .run(&damage, |(flips, cut, garbage)| {
            n.set(n.get() + 1);
            let mut bytes = original.clone();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= value;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes.extend(garbage);
            let _ = std::fs::remove_dir_all(dir.path());
            std::fs::create_dir_all(dir.path()).unwrap();
            std::fs::write(dir.path().join(segment.file_name().unwrap()), &bytes).unwrap();
            let mut store = LogStore::open(dir.path(), Retention::default())
                .map_err(|e| TestCaseError::fail(format!("did not open: {e}")))?;
            prop_assert!(store.len() <= 20);
            let after = LogRecord {
                timestamp: SystemTime::now(),
                service: "fuzz".into(),
                instance: "fuzz-1".into(),
                level: gradebook::model::log::Level::Info,
                message: "after".into(),
                fields: Default::default(),
                trace_id: None,
                span_id: None,
                sequence: 0,
            };
            store
                .append(vec![vec![after]])
                .map_err(|e| TestCaseError::fail(format!("no write after recovery: {e}")))?;
            Ok(())
        })
        .unwrap();
    report("log-segment-recovery", n.get());
}
