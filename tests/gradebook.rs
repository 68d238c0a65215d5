//! The gradebook end to end: the four daemons as processes, driven through
//! the portal's JSON API and HTML pages over real HTTP.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Mesh, PATIENCE, eventually};

async fn get(http: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = http.get(url).send().await.expect("GET");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Value,
) -> (StatusCode, Value) {
    let response = http
        .request(method, url)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn error_of(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or_default(),
        body["error"]["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn the_json_api_creates_reads_updates_and_deletes() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let signed_in = gradebook.client();
    let api = format!("{}/api", gradebook.http());

    let (status, demo) = get(&signed_in, &format!("{api}/students")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        demo["students"].as_array().unwrap().len() >= 5,
        "demo data: {demo}"
    );

    let (status, student) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{api}/students"),
        json!({"first_name": "Ada", "last_name": "Lovelace"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{student}");
    let id = student["id"].as_str().unwrap().to_owned();
    assert_eq!(student["average"], Value::Null);

    let grades = format!("{api}/students/{id}/grades");
    let (status, first) = send(
        &signed_in,
        reqwest::Method::POST,
        &grades,
        json!({"title": "Loops quiz", "type": "quiz", "score": 80}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(
        (
            first["title"].as_str(),
            first["type"].as_str(),
            first["score"].as_f64()
        ),
        (Some("Loops quiz"), Some("quiz"), Some(80.0))
    );
    assert!(
        first["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let (status, _) = send(
        &signed_in,
        reqwest::Method::POST,
        &grades,
        json!({"title": "Final", "type": "exam", "score": 95}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, detail) = get(&signed_in, &format!("{api}/students/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["first_name"], "Ada");
    assert_eq!(detail["grades"].as_array().unwrap().len(), 2);
    assert_eq!(detail["average"].as_f64(), Some(87.5));
    assert_eq!(detail["next_grades_page_token"], "", "every grade came");

    // The grades a page at a time.
    let (status, page) = get(&signed_in, &format!("{grades}?page_size=1")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["grades"][0]["title"], "Loops quiz");
    let token = page["next_page_token"].as_str().unwrap();
    assert!(!token.is_empty(), "{page}");
    let (status, page) = get(
        &signed_in,
        &format!("{grades}?page_size=1&page_token={token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["grades"][0]["title"], "Final");
    assert_eq!(page["next_page_token"], "", "the last page");
    for (query, field) in [
        ("page_token=nope", "page_token"),
        ("page_size=1001", "page_size"),
    ] {
        let (status, body) = get(&signed_in, &format!("{grades}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(error_of(&body).1.starts_with(field), "{body}");
    }

    let grade_url = format!("{grades}/{}", first["id"].as_str().unwrap());
    let (status, updated) = send(
        &signed_in,
        reqwest::Method::PUT,
        &grade_url,
        json!({"title": "Loops quiz", "type": "test", "score": 85}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["type"], "test");
    let (_, detail) = get(&signed_in, &format!("{api}/students/{id}")).await;
    assert_eq!(detail["average"].as_f64(), Some(90.0));

    let (status, renamed) = send(
        &signed_in,
        reqwest::Method::PUT,
        &format!("{api}/students/{id}"),
        json!({"first_name": "Augusta Ada", "last_name": "King"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["last_name"], "King");

    let deleted = gradebook.client().delete(&grade_url).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (_, detail) = get(&signed_in, &format!("{api}/students/{id}")).await;
    assert_eq!(detail["grades"].as_array().unwrap().len(), 1);

    let deleted = gradebook
        .client()
        .delete(format!("{api}/students/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, body) = get(&signed_in, &format!("{api}/students/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body).0, "NOT_FOUND");

    let (status, services) = get(&signed_in, &format!("{api}/services")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = services["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["service"].as_str())
        .collect();
    for service in ["registry", "log", "grading", "portal"] {
        assert!(
            names.contains(&service),
            "{service} missing from {services}"
        );
    }
}

#[tokio::test]
async fn bad_input_gets_4xx_with_a_json_error_naming_the_field() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let signed_in = gradebook.client();
    let api = format!("{}/api", gradebook.http());
    let (_, student) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{api}/students"),
        json!({"first_name": "Alan", "last_name": "Turing"}),
    )
    .await;
    let id = student["id"].as_str().unwrap().to_owned();
    let grades = format!("{api}/students/{id}/grades");

    let cases = [
        (
            json!({"title": "Quiz", "type": "quiz", "score": 101}),
            "score",
        ),
        (
            json!({"title": "Quiz", "type": "quiz", "score": -1}),
            "score",
        ),
        (json!({"title": "", "type": "quiz", "score": 50}), "title"),
        (
            json!({"title": "x".repeat(201), "type": "quiz", "score": 50}),
            "title",
        ),
        (
            json!({"title": "Essay", "type": "essay", "score": 50}),
            "type",
        ),
        (json!({"title": "Quiz", "type": "quiz"}), "score"),
    ];
    for (body, field) in cases {
        let (status, error) = send(&signed_in, reqwest::Method::POST, &grades, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {error}");
        let (code, message) = error_of(&error);
        assert_eq!(code, "INVALID_ARGUMENT");
        assert!(
            message.starts_with(field),
            "{body}: {message:?} should name {field}"
        );
    }
    let (status, error) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{api}/students"),
        json!({"first_name": " ", "last_name": "X"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&error).1.starts_with("first_name"), "{error}");

    let malformed = gradebook
        .client()
        .post(&grades)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(error_of(&body).0, "INVALID_ARGUMENT");
    assert!(!error_of(&body).1.is_empty());

    let huge = gradebook
        .client()
        .post(&grades)
        .header("content-type", "application/json")
        .body(format!("{{\"title\": \"{}\"}}", "x".repeat(200_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let (status, error) = get(&signed_in, &format!("{api}/students/not-an-id")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&error).1.starts_with("id"), "{error}");
    let (status, _) = get(
        &signed_in,
        &format!("{api}/students/{}", "0190a8b0-0000-7000-8000-000000000000"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing of the rejected grades was stored.
    let (_, detail) = get(&signed_in, &format!("{api}/students/{id}")).await;
    assert!(detail["grades"].as_array().unwrap().is_empty(), "{detail}");
}

#[tokio::test]
async fn an_acknowledged_grade_survives_kill_9_of_grading() {
    let mesh = Mesh::new();
    let mut gradebook = mesh.gradebook().await;
    let signed_in = gradebook.client();
    let api = format!("{}/api", gradebook.http());
    let (_, student) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{api}/students"),
        json!({"first_name": "Grace", "last_name": "Hopper"}),
    )
    .await;
    let id = student["id"].as_str().unwrap().to_owned();
    let (status, grade) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{api}/students/{id}/grades"),
        json!({"title": "Compilers", "type": "exam", "score": 99}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    gradebook.grading.restart();
    gradebook.grading.wait_serving().await;
    let detail = eventually("the grade is served again after kill -9", PATIENCE, || {
        let url = format!("{api}/students/{id}");
        let signed_in = signed_in.clone();
        async move {
            let (status, detail) = get(&signed_in, &url).await;
            (status == StatusCode::OK).then_some(detail)
        }
    })
    .await;
    let ids: Vec<&str> = detail["grades"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["id"].as_str())
        .collect();
    assert_eq!(ids, [grade["id"].as_str().unwrap()]);
}

/// A student given more grades than the limit allows (as a database from
/// before the limit may hold) stays readable: the portal and the API show
/// the first page with the way to the next, and further grades are refused.
#[tokio::test]
async fn a_student_with_more_grades_than_the_limit_is_read_a_page_at_a_time() {
    use gradebook::model::grading::{MAX_GRADE_PAGE_SIZE, new_id};
    const GRADES: usize = 1500;
    let mesh = Mesh::new();
    let mut gradebook = mesh.gradebook().await;
    let signed_in = gradebook.client();
    let http = gradebook.http();
    let (_, student) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{http}/api/students"),
        json!({"first_name": "Many", "last_name": "Grades"}),
    )
    .await;
    let id = student["id"].as_str().unwrap().to_owned();

    // Written past the store, with grading stopped.
    assert!(gradebook.grading.terminate(PATIENCE).await.success());
    let database = mesh.dir.path().join("grading/grading.db");
    let mut db = rusqlite::Connection::open(&database).unwrap();
    let tx = db.transaction().unwrap();
    for i in 0..GRADES {
        tx.execute(
            "INSERT INTO grades (id, student_id, title, type, score, created_at) \
             VALUES (?1, ?2, ?3, 'quiz', 70, ?4)",
            rusqlite::params![new_id(), id, format!("Old {i:04}"), 1_000_000 + i as i64],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(db);
    gradebook.grading.restart();
    gradebook.grading.wait_serving().await;

    let (status, detail) = eventually("the student is served again", PATIENCE, || {
        let url = format!("{http}/api/students/{id}");
        let signed_in = signed_in.clone();
        async move {
            let (status, detail) = get(&signed_in, &url).await;
            (status != StatusCode::SERVICE_UNAVAILABLE).then_some((status, detail))
        }
    })
    .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(
        detail["grades"].as_array().unwrap().len(),
        MAX_GRADE_PAGE_SIZE
    );
    assert_eq!(detail["average"].as_f64(), Some(70.0));
    let token = detail["next_grades_page_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, rest) = get(
        &signed_in,
        &format!("{http}/api/students/{id}/grades?page_token={token}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let rest = rest["grades"].as_array().unwrap();
    assert_eq!(rest.len(), GRADES - MAX_GRADE_PAGE_SIZE);
    assert_eq!(rest[0]["title"], format!("Old {MAX_GRADE_PAGE_SIZE:04}"));

    // The page shows the first grades and links to the next.
    let page = signed_in
        .get(format!("{http}/students/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&format!("Showing {MAX_GRADE_PAGE_SIZE} of {GRADES} grades")),
        "{html}"
    );
    let next = format!("/students/{id}?grades={token}");
    assert!(html.contains(&next), "a link to the next grades");
    let page = signed_in.get(format!("{http}{next}")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("Old 1499") && !html.contains("Old 0999"));
    assert!(!html.contains("id=\"more-grades\""), "the last page");
    // A grade of a later page can be edited.
    let last = rest.last().unwrap()["id"].as_str().unwrap();
    let edit = signed_in
        .get(format!("{http}/students/{id}/grades/{last}/edit"))
        .send()
        .await
        .unwrap();
    assert_eq!(edit.status(), StatusCode::OK);
    assert!(edit.text().await.unwrap().contains("value=\"Old 1499\""));

    // No room for more.
    let (status, body) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{http}/api/students/{id}/grades"),
        json!({"title": "One more", "type": "quiz", "score": 90}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn with_grading_down_the_portal_answers_503_quickly_and_recovers() {
    let mesh = Mesh::new();
    let mut gradebook = mesh.gradebook().await;
    let signed_in = gradebook.client();
    let api = format!("{}/api", gradebook.http());
    let (_, page) = get(&signed_in, &format!("{api}/students")).await;
    let id = page["students"][0]["id"].as_str().unwrap().to_owned();
    let url = format!("{api}/students/{id}");

    gradebook.grading.kill9();
    // Every answer while grading is down comes within the call deadline (2 s).
    let (status, body) = eventually("the portal answers 503", PATIENCE, || {
        let url = url.clone();
        let signed_in = signed_in.clone();
        async move {
            let started = Instant::now();
            let (status, body) = get(&signed_in, &url).await;
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "answer took {:?}",
                started.elapsed()
            );
            (status == StatusCode::SERVICE_UNAVAILABLE).then_some((status, body))
        }
    })
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(&body).0, "UNAVAILABLE");
    let page = signed_in
        .get(format!("{}/students", gradebook.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.text().await.unwrap().contains("unavailable"));
    let ready = signed_in
        .get(format!("{}/readyz", gradebook.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let alive = signed_in
        .get(format!("{}/healthz", gradebook.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), StatusCode::OK);

    gradebook.grading.restart();
    eventually("the portal recovers on its own", PATIENCE, || {
        let url = url.clone();
        let signed_in = signed_in.clone();
        async move { (get(&signed_in, &url).await.0 == StatusCode::OK).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_html_pages_work_without_javascript() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let http = gradebook.http();
    let client = gradebook
        .client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let students = client.get(format!("{http}/students")).send().await.unwrap();
    assert_eq!(students.status(), StatusCode::OK);
    let html = students.text().await.unwrap();
    assert!(html.contains("name=\"viewport\""));
    assert!(html.contains("<label for=\"first_name\">"));

    let created = client
        .post(format!("{http}/students"))
        .form(&[("first_name", "Katherine"), ("last_name", "Johnson")])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/students/"));

    let bad = client
        .post(format!("{http}{location}/grades"))
        .form(&[("title", "Orbits"), ("type", "test"), ("score", "140")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let html = bad.text().await.unwrap();
    assert!(
        html.contains("id=\"score-error\""),
        "the error is shown next to the score field"
    );
    assert!(
        html.contains("value=\"Orbits\""),
        "the form keeps what was typed"
    );

    let added = client
        .post(format!("{http}{location}/grades"))
        .form(&[("title", "Orbits"), ("type", "test"), ("score", "92")])
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let page = client
        .get(format!("{http}{location}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Orbits") && page.contains("92.0"), "{page}");
    assert!(page.contains("<strong id=\"average\">92.0</strong>"));

    let services = client
        .get(format!("{http}/services"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(services.contains("grading") && services.contains("SERVING"));
    let logs = eventually("the logs page shows records", PATIENCE, || {
        let client = client.clone();
        let url = format!("{http}/logs?service=grading&level=info");
        async move {
            let page = client.get(&url).send().await.ok()?.text().await.ok()?;
            page.contains("grading database opened").then_some(page)
        }
    })
    .await;
    assert!(logs.contains("<select id=\"level\""));
    let missing = client.get(format!("{http}/nowhere")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn changes_stream_to_the_browser_as_server_sent_events() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let signed_in = gradebook.client();
    let api = format!("{}/api", gradebook.http());
    let (_, page) = get(&signed_in, &format!("{api}/students")).await;
    let id = page["students"][0]["id"].as_str().unwrap().to_owned();

    let mut events = tokio::net::TcpStream::connect(("127.0.0.1", gradebook.portal.port))
        .await
        .unwrap();
    let request = format!(
        "GET /api/events?student_id={id} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nAuthorization: Bearer {}\r\n\r\n",
        gradebook.token
    );
    events.write_all(request.as_bytes()).await.unwrap();
    let mut received = String::new();
    let mut chunk = [0u8; 4096];
    while !received.contains("\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, events.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream closed: {received}");
        received.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        received
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{received}"
    );

    let (status, grade) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{api}/students/{id}/grades"),
        json!({"title": "Live", "type": "quiz", "score": 70}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let grade_id = grade["id"].as_str().unwrap().to_owned();
    while !(received.contains("event: change") && received.contains(&grade_id)) {
        let n = tokio::time::timeout(PATIENCE, events.read(&mut chunk))
            .await
            .expect("an event in time")
            .unwrap();
        assert!(n > 0, "stream closed: {received}");
        received.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(received.contains("grade_added"), "{received}");
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_write_answer_the_same_and_write_once() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let signed_in = gradebook.client();
    let api = format!("{}/api", gradebook.http());
    let http = gradebook.client();
    let post = |key: &str, body: Value, student: &str| {
        http.post(format!("{api}/students/{student}/grades"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let (_, student) = send(
        &signed_in,
        reqwest::Method::POST,
        &format!("{api}/students"),
        json!({"first_name": "Idem", "last_name": "Potent"}),
    )
    .await;
    let id = student["id"].as_str().unwrap().to_owned();
    let body = json!({"title": "Once", "type": "quiz", "score": 88});

    let first = post("key-1", body.clone(), &id).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = post("key-1", body.clone(), &id).await.unwrap();
    assert_eq!(again.status(), 201, "a repeat answers as the first did");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let (_, detail) = get(&signed_in, &format!("{api}/students/{id}")).await;
    assert_eq!(
        detail["grades"].as_array().unwrap().len(),
        1,
        "written once"
    );

    // The same key with another body is refused, and writes nothing.
    let other = post(
        "key-1",
        json!({"title": "Twice", "type": "quiz", "score": 10}),
        &id,
    )
    .await
    .unwrap();
    assert_eq!(other.status(), 409);
    let other: Value = other.json().await.unwrap();
    let (code, message) = error_of(&other);
    assert_eq!(code, "ALREADY_EXISTS");
    assert!(message.contains("request_id"), "{message}");
    // A malformed key is the client's fault, named.
    let bad = post("has space", body.clone(), &id).await.unwrap();
    assert_eq!(bad.status(), 400);
    let bad: Value = bad.json().await.unwrap();
    assert!(error_of(&bad).1.starts_with("Idempotency-Key:"), "{bad}");
    let (_, detail) = get(&signed_in, &format!("{api}/students/{id}")).await;
    assert_eq!(detail["grades"].as_array().unwrap().len(), 1);

    // An HTML form submitted twice (its request id made when it was shown)
    // adds one grade.
    let form = [
        ("title", "From the form"),
        ("type", "test"),
        ("score", "70"),
        ("request_id", "form-once"),
    ];
    for _ in 0..2 {
        let response = gradebook
            .client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{}/students/{id}/grades", gradebook.http()))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_redirection(), "{}", response.status());
    }
    let (_, detail) = get(&signed_in, &format!("{api}/students/{id}")).await;
    let titles: Vec<&str> = detail["grades"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["title"].as_str())
        .collect();
    assert_eq!(titles, ["Once", "From the form"]);
    // The form shown carries a fresh request id.
    let page = signed_in
        .get(format!("{}/students/{id}", gradebook.http()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"name="request_id""#),
        "forms carry a request id"
    );
}

#[tokio::test]
async fn every_error_answer_speaks_the_requests_language() {
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let http = gradebook.http();
    let client = gradebook.client();
    let long = "a".repeat(10_000);
    let big = "a".repeat(100_000);
    let cases: Vec<(reqwest::Method, String, Option<String>, StatusCode)> = vec![
        (
            reqwest::Method::GET,
            "/api/nothing".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            reqwest::Method::DELETE,
            "/api/students".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            reqwest::Method::GET,
            "/api/students?page_size=abc".into(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            reqwest::Method::POST,
            "/api/students".into(),
            Some(big.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            reqwest::Method::GET,
            format!("/api/students?q={long}"),
            None,
            StatusCode::URI_TOO_LONG,
        ),
        (
            reqwest::Method::GET,
            "/nowhere".into(),
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            reqwest::Method::PUT,
            "/students".into(),
            None,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            reqwest::Method::POST,
            "/students".into(),
            Some(big),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            reqwest::Method::GET,
            format!("/students?q={long}"),
            None,
            StatusCode::URI_TOO_LONG,
        ),
        // An over-long log filter is the client's fault, not an outage.
        (
            reqwest::Method::GET,
            format!("/logs?service={}", "b".repeat(1000)),
            None,
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, body, expected) in cases {
        let mut request = client.request(method.clone(), format!("{http}{path}"));
        if let Some(body) = body {
            let content_type = if path.starts_with("/api/") {
                "application/json"
            } else {
                "application/x-www-form-urlencoded"
            };
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.unwrap();
        let what = format!("{method} {}", &path[..path.len().min(40)]);
        assert_eq!(response.status(), expected, "{what}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        if path.starts_with("/api/") {
            assert!(
                content_type.starts_with("application/json"),
                "{what}: {content_type}"
            );
            let body: Value = response.json().await.unwrap();
            assert!(
                !error_of(&body).0.is_empty() && !error_of(&body).1.is_empty(),
                "{what}: {body}"
            );
        } else {
            assert!(
                content_type.starts_with("text/html"),
                "{what}: {content_type}"
            );
            let page = response.text().await.unwrap();
            assert!(
                page.contains(&expected.as_u16().to_string()),
                "{what}: {page}"
            );
        }
    }
}

#[tokio::test]
async fn an_http2_body_over_the_limit_gets_413_not_a_reset() {
    // The real curl over HTTP/2 (prior knowledge, as gRPC clients speak
    // it): the answer must arrive, not a reset stream.
    let mesh = Mesh::new();
    let gradebook = mesh.gradebook().await;
    let body = mesh.dir.path().join("big.json");
    std::fs::write(&body, "a".repeat(2_000_000)).unwrap();
    let output = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", gradebook.token)])
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("{}/api/students", gradebook.http()))
        .output()
        .expect("curl is installed (.ci/run installs it)");
    let out = String::from_utf8_lossy(&output.stdout);
    let (json, status) = out.rsplit_once('\n').unwrap_or(("", ""));
    assert_eq!(status, "413 2", "{out}");
    let body: Value = serde_json::from_str(json).unwrap();
    assert_eq!(error_of(&body).0, "RESOURCE_EXHAUSTED", "{body}");
}
