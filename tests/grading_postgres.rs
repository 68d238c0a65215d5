//! Several grading daemons on one throwaway PostgreSQL, as real processes
//! registered with a real registry: changes made through one instance reach
//! WatchGrades streams on another, a write repeated with the same
//! request_id on either instance is stored once, and a daemon started
//! before its database is reachable serves NOT_SERVING until it is.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gradebook::model::grading::{GradeType, IdempotentRequest, NewGrade, NewStudent};
use gradebook::pb::grading::v1 as pb;
use gradebook::pb::grading::v1::grading_client::GradingClient;
use support::postgres::PgServer;
use support::{Daemon, Mesh, PATIENCE, binary, eventually, free_port};
use tonic::Code;
use tonic::transport::Channel;

/// `--database-url URL`, plus a data directory of its own.
fn database_args(mesh: &Mesh, name: &str, url: &str) -> Vec<String> {
    vec![
        "--database-url".into(),
        url.into(),
        "--data-dir".into(),
        mesh.dir.path().join(name).display().to_string(),
    ]
}

/// The next event of `stream`, or a panic after [`PATIENCE`].
async fn next_event(stream: &mut tonic::Streaming<pb::GradeEvent>) -> pb::GradeEvent {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("an event in time")
        .expect("a healthy stream")
        .expect("an open stream")
}

fn client(daemon: &Daemon) -> GradingClient<Channel> {
    GradingClient::new(daemon.channel())
}

#[tokio::test]
async fn two_instances_share_changes_and_request_ids() {
    let Some(server) = support::postgres::server() else {
        return;
    };
    let url = server.database().await;
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let a = mesh
        .member("grading", &registry, database_args(&mesh, "a", &url))
        .await;
    let b = mesh
        .member("grading", &registry, database_args(&mesh, "b", &url))
        .await;
    let (mut on_a, mut on_b) = (client(&a), client(&b));

    let mut watch_b = on_b
        .watch_grades(pb::WatchGradesRequest::default())
        .await
        .expect("watch on B")
        .into_inner();

    // A change made through A reaches the watcher on B.
    let new = NewStudent::new("Katherine", "Johnson").unwrap();
    let create = pb::CreateStudentRequest::from(&new).with_request_id("create-kj");
    let student = on_a
        .create_student(create.clone())
        .await
        .expect("create on A")
        .into_inner();
    let event = next_event(&mut watch_b).await;
    assert_eq!(event.kind, pb::GradeEventKind::StudentCreated as i32);
    assert_eq!(event.student.as_ref().unwrap().id, student.id);
    // The same request on B answers the same student.
    let again = on_b.create_student(create).await.unwrap().into_inner();
    assert_eq!(again, student);

    // An AddGrade repeated with one request id, on A then on B: one grade.
    let grade = NewGrade::new("Orbital mechanics", GradeType::Exam, 98.0).unwrap();
    let add = grade
        .to_add_request(&student.id)
        .with_request_id("add-om-1");
    let first = on_a.add_grade(add.clone()).await.unwrap().into_inner();
    let second = on_b.add_grade(add.clone()).await.unwrap().into_inner();
    assert_eq!(first.id, second.id);
    let detail = on_b
        .get_student(pb::GetStudentRequest {
            id: student.id.clone(),
            grade_page_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(detail.grades.len(), 1);
    assert_eq!(detail.student.unwrap().grade_count, 1);
    let event = next_event(&mut watch_b).await;
    assert_eq!(event.kind, pb::GradeEventKind::GradeAdded as i32);
    assert_eq!(event.grade.unwrap().id, first.id);

    // The same id with another body is refused, naming request_id.
    let other = NewGrade::new("Orbital mechanics", GradeType::Exam, 12.0)
        .unwrap()
        .to_add_request(&student.id)
        .with_request_id("add-om-1");
    let refused = on_b.add_grade(other).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(refused.message().contains("request_id"), "{refused:?}");
    let refused = on_a
        .add_grade(add.with_request_id("bad id"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().starts_with("request_id"), "{refused:?}");

    // A rename through B reaches a watcher of that student on A.
    let mut watch_a = on_a
        .watch_grades(pb::WatchGradesRequest {
            student_id: student.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let rename = NewStudent::new("Katherine", "Goble")
        .unwrap()
        .to_update_request(&student.id);
    on_b.update_student(rename).await.unwrap();
    let event = next_event(&mut watch_a).await;
    assert_eq!(event.kind, pb::GradeEventKind::StudentUpdated as i32);
    assert_eq!(event.student.unwrap().last_name, "Goble");
}

#[tokio::test]
async fn a_daemon_started_before_its_database_serves_once_it_is_reachable() {
    if support::postgres::server().is_none() {
        return;
    }
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let pg_port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{pg_port}/postgres");
    let port = free_port();
    let mut args = vec![
        "grading".to_owned(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--registry".into(),
        registry.url(),
    ];
    args.extend(database_args(&mesh, "late", &url));
    let grading = Daemon::start("grading", port, args, mesh.dir.path());
    eventually("grading answers NOT_SERVING", PATIENCE, || async {
        (grading.health_status().await == Some(2)).then_some(())
    })
    .await;
    let refused = client(&grading)
        .list_students(pb::ListStudentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    let _database = PgServer::start_on(pg_port).expect("PostgreSQL");
    grading.wait_serving().await;
    let page = client(&grading)
        .list_students(pb::ListStudentsRequest::default())
        .await
        .expect("served once the database is reachable")
        .into_inner();
    assert_eq!(page.students.len(), 6, "demo data");
    assert!(grading.stderr().contains("database unavailable"));
}

#[test]
fn a_database_url_that_is_not_postgres_is_refused() {
    for bad in ["not-a-url", "mysql://db/grading"] {
        let mut child = Command::new(binary())
            .args([
                "grading",
                "--listen",
                "127.0.0.1:0",
                "--ship-logs",
                "false",
                "--database-url",
                bad,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gradebook");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("gradebook grading --database-url {bad} did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(!status.success(), "{bad}");
        assert!(stderr.contains("--database-url"), "{bad}: {stderr}");
    }
}
