//! The portal's read cache with several grading instances on PostgreSQL
//! and two portals, as real processes: a write acknowledged through a
//! portal is in that portal's next read (every time, under concurrent
//! writes through the other portal), a write made through the other portal
//! or straight to grading shows in both portals' reads, and after the
//! instance a portal watches is killed, both portals read what grading holds.

mod support;

use std::collections::BTreeSet;

use gradebook::pb::grading::v1 as pb;
use gradebook::pb::grading::v1::grading_client::GradingClient;
use support::{Daemon, Mesh, PATIENCE, TEST_PASSWORD, TEST_USER, eventually, postgres};

/// The grade ids a portal shows for `student`.
async fn grade_ids(http: &reqwest::Client, portal: &str, student: &str) -> BTreeSet<String> {
    let detail: serde_json::Value = http
        .get(format!("{portal}/api/students/{student}"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("JSON");
    detail["grades"]
        .as_array()
        .expect("grades")
        .iter()
        .filter_map(|g| g["id"].as_str().map(str::to_owned))
        .collect()
}

/// What grading itself holds for `student` (ids of its grades).
async fn held_by_grading(grading: &Daemon, student: &str) -> BTreeSet<String> {
    GradingClient::new(grading.channel())
        .get_student(pb::GetStudentRequest {
            id: student.into(),
            grade_page_size: 0,
        })
        .await
        .expect("GetStudent")
        .into_inner()
        .grades
        .into_iter()
        .map(|g| g.id)
        .collect()
}

async fn add_grade(http: &reqwest::Client, portal: &str, student: &str, title: &str) -> String {
    let grade: serde_json::Value = http
        .post(format!("{portal}/api/students/{student}/grades"))
        .json(&serde_json::json!({"title": title, "type": "test", "score": 70}))
        .send()
        .await
        .expect("write")
        .error_for_status()
        .expect("201")
        .json()
        .await
        .expect("JSON");
    grade["id"].as_str().expect("an id").to_owned()
}

/// Adds a grade straight to a grading instance (past every portal); returns its id.
async fn add_grade_straight(grading: &Daemon, student: &str, title: &str) -> String {
    GradingClient::new(grading.channel())
        .add_grade(pb::AddGradeRequest {
            student_id: student.into(),
            title: title.into(),
            r#type: pb::GradeType::Quiz as i32,
            score: 90.0,
            request_id: String::new(),
        })
        .await
        .expect("AddGrade")
        .into_inner()
        .id
}

#[tokio::test]
async fn cached_reads_stay_true_with_three_grading_instances_and_two_portals() {
    let Some(server) = postgres::server() else {
        return;
    };
    let database = server.database().await;
    let mesh = Mesh::new();
    let registry = mesh.registry(&[]).await;
    let _log = mesh.log(&registry, "log", &[]).await;
    let mut gradings = Vec::new();
    for i in 0..3 {
        let data = format!("grading-{i}");
        gradings.push(
            mesh.grading(&registry, &data, &["--database-url", &database])
                .await,
        );
    }
    let portals = [
        mesh.portal(&registry, &[]).await,
        mesh.portal(&registry, &[]).await,
    ];
    let urls: Vec<String> = portals.iter().map(Daemon::url).collect();
    let token = mesh.add_user(TEST_USER, "teacher", TEST_PASSWORD);
    let http = support::signed_in_builder(&token)
        .build()
        .expect("an HTTP client");
    let students: Vec<String> = eventually("both portals list students", PATIENCE, || async {
        let mut lists = Vec::new();
        for url in &urls {
            let page: serde_json::Value = http
                .get(format!("{url}/api/students"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let ids: Vec<String> = page["students"]
                .as_array()?
                .iter()
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect();
            lists.push(ids);
        }
        (!lists[0].is_empty() && lists[0] == lists[1]).then(|| lists.remove(0))
    })
    .await;

    // Read your writes, every time, with the other portal writing to the
    // same students meanwhile; both portals read every student first so
    // that their caches hold them.
    for url in &urls {
        for student in &students {
            grade_ids(&http, url, student).await;
        }
    }
    let clients: Vec<_> = (0..8)
        .map(|client| {
            let http = http.clone();
            let url = urls[client % 2].clone();
            let students = students.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let student = &students[(client + n) % students.len()];
                    let id = add_grade(&http, &url, student, &format!("ryw {client}-{n}")).await;
                    let seen = grade_ids(&http, &url, student).await;
                    assert!(
                        seen.contains(&id),
                        "client {client}: write {n} not in the next read"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("a client");
    }

    // A write through one portal, and one straight to grading, show in both.
    let through_a = add_grade(&http, &urls[0], &students[0], "through a").await;
    let straight = add_grade_straight(&gradings[2], &students[1], "straight to grading").await;
    for url in &urls {
        for (student, id) in [(&students[0], &through_a), (&students[1], &straight)] {
            eventually("the write shows in every portal", PATIENCE, || async {
                grade_ids(&http, url, student)
                    .await
                    .contains(id)
                    .then_some(())
            })
            .await;
        }
    }

    // Kill the instances one at a time (each portal watches one of them):
    // after each, writes straight to a survivor show in both portals.
    for victim in 0..2 {
        gradings[victim].kill9();
        let survivor = &gradings[2];
        let id = add_grade_straight(survivor, &students[2], &format!("after kill {victim}")).await;
        for url in &urls {
            eventually("a write after the kill shows", PATIENCE, || async {
                grade_ids(&http, url, &students[2])
                    .await
                    .contains(&id)
                    .then_some(())
            })
            .await;
        }
    }

    // In the end every portal shows exactly what grading holds.
    for student in &students {
        let truth = held_by_grading(&gradings[2], student).await;
        for url in &urls {
            eventually("the portal agrees with grading", PATIENCE, || async {
                (grade_ids(&http, url, student).await == truth).then_some(())
            })
            .await;
        }
    }
}
